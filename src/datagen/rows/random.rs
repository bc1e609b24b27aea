//! The random source of a chunk: a ChaCha8 stream and the distributions
//! drawn from it.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// ChaCha8 stream for `(seed, stream)`; `stream` is the chunk index (or a
/// reserved value for global tables such as the provider pool).
pub(super) fn chunk_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[0..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&stream.to_le_bytes());
    s[16..32].copy_from_slice(b"lakeward-datagen");
    ChaCha8Rng::from_seed(s)
}

pub(super) struct Rand {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Rand {
    pub(super) fn new(rng: ChaCha8Rng) -> Self {
        Self { rng, spare: None }
    }

    /// Uniform in `0..n` (multiply-shift; bias is < 2^-32, irrelevant here).
    #[inline]
    pub(super) fn below(&mut self, n: u32) -> u32 {
        ((self.rng.next_u32() as u64 * n as u64) >> 32) as u32
    }

    #[inline]
    pub(super) fn idx(&mut self, n: usize) -> usize {
        self.below(n as u32) as usize
    }

    /// Uniform in `lo..hi` (requires `hi > lo`).
    #[inline]
    pub(super) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo) as u64 as u128;
        lo + ((self.rng.next_u64() as u128 * span) >> 64) as i64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(super) fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    #[inline]
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    #[inline]
    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.idx(items.len())]
    }

    /// Standard normal (Box-Muller, caching the second value).
    pub(super) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    #[inline]
    pub(super) fn gauss(&mut self, mean: f64, sd: f64) -> f64 {
        mean + sd * self.normal()
    }

    /// Exponential with the given mean.
    #[inline]
    pub(super) fn exp(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }
}

#[inline]
pub(super) fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}
