//! Opaque identifiers: the keyed permutations behind MRNs, SSNs, e-mail
//! numbers and record ids.

use std::fmt::Write as _;

use crate::datagen::ids::KeyedPermutation;

use super::{
    CLAIM_DOMAIN, CLAIM_INDEX_BITS, EMAIL_NUMBER_DOMAIN, ENCOUNTER_DOMAIN, ENCOUNTER_INDEX_BITS,
    MRN_DOMAIN, OBSERVATION_DOMAIN, OBSERVATION_INDEX_BITS,
};

const SSN_GROUPS: u64 = 99;
const SSN_SERIALS: u64 = 9_999;
/// Fictitious SSNs: area 900-999 (never issued by the SSA), group 01-99,
/// serial 0001-9999.
const SSN_DOMAIN: u64 = 100 * SSN_GROUPS * SSN_SERIALS; // 98,990,100

/// The keyed permutations behind every opaque identifier of one seed.
pub(super) struct IdKeys {
    mrn: KeyedPermutation,
    ssn: KeyedPermutation,
    pub(super) email: KeyedPermutation,
    encounter: KeyedPermutation,
    observation: KeyedPermutation,
    claim: KeyedPermutation,
}

impl IdKeys {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            mrn: KeyedPermutation::new(seed, "mrn", MRN_DOMAIN),
            ssn: KeyedPermutation::new(seed, "ssn", SSN_DOMAIN),
            email: KeyedPermutation::new(seed, "email", EMAIL_NUMBER_DOMAIN),
            encounter: KeyedPermutation::new(seed, "encounter", ENCOUNTER_DOMAIN),
            observation: KeyedPermutation::new(seed, "observation", OBSERVATION_DOMAIN),
            claim: KeyedPermutation::new(seed, "claim", CLAIM_DOMAIN),
        }
    }

    /// The encounter index of a patient's `k`-th encounter (0-based).
    #[inline]
    pub(super) fn encounter_index(pid: i64, k: usize) -> u64 {
        ((pid as u64 - 1) << ENCOUNTER_INDEX_BITS) | k as u64
    }

    #[inline]
    pub(super) fn encounter_id(&self, index: u64) -> i64 {
        self.encounter.apply(index) as i64 + 1
    }

    #[inline]
    pub(super) fn observation_id(&self, encounter_index: u64, seq: i64) -> i64 {
        let index = (encounter_index << OBSERVATION_INDEX_BITS) | seq as u64;
        self.observation.apply(index) as i64 + 1
    }

    #[inline]
    pub(super) fn claim_id(&self, encounter_index: u64, line: usize) -> i64 {
        let index = (encounter_index << CLAIM_INDEX_BITS) | line as u64;
        self.claim.apply(index) as i64 + 1
    }
}

/// The MRN of a patient: `MRN` + 8 digits, a keyed permutation of the
/// patient id over 0..10^8 (unique for up to [`MAX_PATIENTS`] patients).
pub(super) fn write_mrn(buf: &mut String, keys: &IdKeys, pid: i64) {
    let _ = write!(buf, "MRN{:08}", keys.mrn.apply(pid as u64 - 1));
}

/// Unique fictitious SSN for a patient id: a keyed permutation of `pid`
/// onto area 900-999, group 01-99, serial 0001-9999 (unique for the first
/// 98,990,100 patients).
pub(super) fn write_ssn(buf: &mut String, keys: &IdKeys, pid: i64) {
    const GROUPS: u64 = SSN_GROUPS;
    const SERIALS: u64 = SSN_SERIALS;
    let x = keys.ssn.apply((pid as u64 - 1) % SSN_DOMAIN);
    let area = 900 + x / (GROUPS * SERIALS);
    let rem = x % (GROUPS * SERIALS);
    let group = 1 + rem / SERIALS;
    let serial = 1 + rem % SERIALS;
    let _ = write!(buf, "{area:03}-{group:02}-{serial:04}");
}
