//! Opaque identifiers: keyed permutations of fixed domains.
//!
//! No identifier the generator writes is a function anyone can compute from
//! another column: MRN digits, SSN digits, encounter, observation and claim
//! ids are each the image of a unique index (derived from the patient id and
//! a per-patient sequence number) under a keyed pseudo-random permutation of
//! a fixed domain. A permutation maps distinct indexes to distinct ids, so ids
//! are unique without a per-row set, and because the domain is fixed (not a
//! function of the number of patients), `N` patients stay a prefix of `M > N`.
//!
//! The permutation is a 4-round balanced Feistel network over `2·h` bits with
//! a SplitMix64 round function keyed from `(seed, domain label)`, restricted
//! to `0..n` by cycle walking (re-encrypt until the value falls into the
//! domain; fewer than 4 rounds of walking on average since `n > 2^(2h-2)`).
//! This is for synthetic data: it hides structure (no monotone, affine or
//! digit-embedding relation between an id and the patient id), it is not a
//! cipher meant to resist an attacker who knows the seed.

/// SplitMix64's finaliser: a bijective 64-bit mixer.
#[inline]
const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A keyed permutation of `0..n`.
#[derive(Debug, Clone)]
pub(super) struct KeyedPermutation {
    n: u64,
    half_bits: u32,
    mask: u64,
    keys: [u64; 4],
}

impl KeyedPermutation {
    /// The permutation of `0..n` (`2 <= n <= 2^62`) keyed by `seed` and a
    /// domain `label` (different labels give unrelated permutations).
    pub(super) fn new(seed: u64, label: &str, n: u64) -> Self {
        assert!(
            (2..=1 << 62).contains(&n),
            "permutation domain out of range"
        );
        // Smallest even bit count covering 0..n.
        let bits = 64 - (n - 1).leading_zeros();
        let half_bits = bits.div_ceil(2);
        let mut k = mix64(seed ^ 0x6C61_6B65_7761_7264); // "lakeward"
        for b in label.bytes() {
            k = mix64(k ^ u64::from(b));
        }
        let mut keys = [0u64; 4];
        for (i, key) in keys.iter_mut().enumerate() {
            k = mix64(k.wrapping_add(0x9E37_79B9_7F4A_7C15 ^ i as u64));
            *key = k;
        }
        Self {
            n,
            half_bits,
            mask: (1u64 << half_bits) - 1,
            keys,
        }
    }

    #[inline]
    fn feistel(&self, v: u64) -> u64 {
        let (mut l, mut r) = (v >> self.half_bits, v & self.mask);
        for k in self.keys {
            let f = mix64(r ^ k) & self.mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The image of `x` (`x < n`; larger values are reduced modulo `n`).
    #[inline]
    pub(super) fn apply(&self, x: u64) -> u64 {
        let mut y = self.feistel(x % self.n);
        while y >= self.n {
            y = self.feistel(y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_permutation_of_small_domains() {
        for n in [2u64, 3, 10, 100, 1000, 4096, 5000] {
            let p = KeyedPermutation::new(42, "t", n);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.apply(x);
                assert!(y < n, "{y} outside 0..{n}");
                assert!(!seen[y as usize], "collision in 0..{n}");
                seen[y as usize] = true;
            }
        }
    }

    #[test]
    fn keyed_by_seed_and_label() {
        let a = KeyedPermutation::new(42, "mrn", 100_000_000);
        let b = KeyedPermutation::new(43, "mrn", 100_000_000);
        let c = KeyedPermutation::new(42, "ssn", 100_000_000);
        let same = |p: &KeyedPermutation, q: &KeyedPermutation| {
            (0..1000).filter(|&x| p.apply(x) == q.apply(x)).count()
        };
        assert!(same(&a, &b) < 5);
        assert!(same(&a, &c) < 5);
        assert_eq!(same(&a, &a.clone()), 1000);
    }

    #[test]
    fn consecutive_inputs_are_not_ordered() {
        // Neighbouring indexes land far apart and in no particular order.
        let p = KeyedPermutation::new(7, "encounter", 1 << 34);
        let ys: Vec<u64> = (0..10_000).map(|x| p.apply(x)).collect();
        let ascending = ys.windows(2).filter(|w| w[0] < w[1]).count();
        assert!((4_000..6_000).contains(&ascending), "{ascending}");
        let close = ys
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) < 1 << 20)
            .count();
        assert!(close < 20, "{close}");
    }
}
