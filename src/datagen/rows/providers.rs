//! The provider pool (NPIs per site) and the site weights: derived from
//! the seed alone, the same for every chunk.

use crate::datagen::vocab;

use super::NPIS_PER_SITE;
use super::random::{Rand, chunk_rng};

/// Provider pool: NPIs per site, derived from the seed alone so every chunk
/// (and every run) sees the same providers.
pub(super) struct Providers {
    pub(super) npis: Vec<String>, // site-major: site * NPIS_PER_SITE + k
}

pub(super) fn luhn_npi_check_digit(nine: &[u8; 9]) -> u8 {
    // NPI check digit = Luhn over "80840" + the first 9 digits.
    let mut digits = [0u8; 14];
    digits[..5].copy_from_slice(&[8, 0, 8, 4, 0]);
    digits[5..].copy_from_slice(nine);
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = *d as u32;
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    ((10 - (sum % 10)) % 10) as u8
}

impl Providers {
    pub(super) fn new(seed: u64) -> Self {
        let mut r = Rand::new(chunk_rng(seed, u64::MAX));
        let mut npis = Vec::with_capacity(vocab::SITES.len() * NPIS_PER_SITE);
        for _ in 0..vocab::SITES.len() * NPIS_PER_SITE {
            let mut nine = [0u8; 9];
            nine[0] = 1;
            for d in nine.iter_mut().skip(1) {
                *d = r.below(10) as u8;
            }
            let check = luhn_npi_check_digit(&nine);
            let mut s = String::with_capacity(10);
            for d in nine {
                s.push((b'0' + d) as char);
            }
            s.push((b'0' + check) as char);
            npis.push(s);
        }
        Self { npis }
    }
}

/// Cumulative site weights.
pub(super) fn site_cumulative() -> ([u32; 12], u32) {
    let mut cum = [0u32; 12];
    let mut acc = 0;
    for (i, s) in vocab::SITES.iter().enumerate() {
        acc += s.weight;
        cum[i] = acc;
    }
    (cum, acc)
}
