//! Pure, deterministic row generation: one chunk of patients -> five RecordBatches.
//!
//! Everything in this module is a function of `(seed, chunk_index, first_patient_id, n)`.
//! No clocks, no hash maps, no global state.
//!
//! Files:
//!
//! - `mod.rs`: the time and identifier constants, [`ChunkBatches`], the
//!   generator state and [`chunk_batches`], which drives it patient by patient.
//! - `random.rs`: the ChaCha8 stream and its distributions.
//! - `providers.rs`: the provider pool and the site weights.
//! - `columns.rs`: the column buffers of the five tables.
//! - `keys.rs`: the keyed permutations behind opaque identifiers.
//! - `patient.rs`, `encounters.rs`, `observations.rs`, `claims.rs`,
//!   `consents.rs`: the rows of each table.
//! - `tests.rs`: unit tests.

use datafusion::arrow::array::RecordBatch;

mod claims;
mod columns;
mod consents;
mod encounters;
mod keys;
mod observations;
mod patient;
mod providers;
mod random;

use columns::{ClaimCols, ConsentCols, EncounterCols, ObservationCols, PatientCols};
use keys::IdKeys;
use providers::{Providers, site_cumulative};
use random::{Rand, chunk_rng};

pub(super) const MICROS_PER_SECOND: i64 = 1_000_000;
pub(super) const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub(super) const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
pub(super) const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub const fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

const fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// The fixed "today" of the synthetic world: 2026-01-01 (days since epoch).
pub const ANCHOR_DAY: i32 = days_from_civil(2026, 1, 1);
/// 2026-01-01T00:00:00 in microseconds since epoch.
pub const ANCHOR_TS: i64 = ANCHOR_DAY as i64 * MICROS_PER_DAY;

const MAX_ENCOUNTERS_PER_PATIENT: usize = 60;
const MAX_OBS_PER_ENCOUNTER: i64 = 99;

// Record ids (see `super::ids`): each is a keyed permutation of a unique
// index, never a function of the patient id anyone can compute.
//
// * encounter index `(patient_id - 1) * 64 + k` (k < 61 encounters), over
//   `0..2^34` (patient ids up to 2^28); `encounter_id` = image + 1;
// * observation index `encounter index * 128 + seq` (seq 1..=99), over
//   `0..2^42`; `observation_id` = image + 1;
// * claim index `encounter index * 16 + j` (j < 9 claim lines), over
//   `0..2^38`; `claim_id` = image + 1.
const ENCOUNTER_INDEX_BITS: u32 = 6;
const ENCOUNTER_DOMAIN: u64 = 1 << 34;
const OBSERVATION_INDEX_BITS: u32 = 7;
const OBSERVATION_DOMAIN: u64 = 1 << 42;
const CLAIM_INDEX_BITS: u32 = 4;
const CLAIM_DOMAIN: u64 = 1 << 38;
/// MRNs are `MRN` + 8 digits: at most 10^8 patients get distinct MRNs.
pub const MAX_PATIENTS: u64 = 100_000_000;
const MRN_DOMAIN: u64 = MAX_PATIENTS;
/// Email local parts carry a keyed 6-digit number (not the patient id).
const EMAIL_NUMBER_DOMAIN: u64 = 1_000_000;
// Every index fits its field and its domain, for every patient id up to
// MAX_PATIENTS (claim lines: at most 9 per encounter).
const _: () = {
    assert!(MAX_ENCOUNTERS_PER_PATIENT < 1 << ENCOUNTER_INDEX_BITS);
    assert!(MAX_OBS_PER_ENCOUNTER < 1 << OBSERVATION_INDEX_BITS);
    assert!(9 <= 1 << CLAIM_INDEX_BITS);
    assert!(MAX_PATIENTS << ENCOUNTER_INDEX_BITS <= ENCOUNTER_DOMAIN);
    assert!(ENCOUNTER_DOMAIN << OBSERVATION_INDEX_BITS <= OBSERVATION_DOMAIN);
    assert!(ENCOUNTER_DOMAIN << CLAIM_INDEX_BITS <= CLAIM_DOMAIN);
};
const NPIS_PER_SITE: usize = 40;

/// The RecordBatches of all five tables for one chunk of patients.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkBatches {
    pub patients: RecordBatch,
    pub encounters: RecordBatch,
    pub observations: RecordBatch,
    pub claims: RecordBatch,
    pub consents: RecordBatch,
}

impl ChunkBatches {
    /// The batches in [`super::TABLES`] order.
    pub fn into_array(self) -> [RecordBatch; 5] {
        [
            self.patients,
            self.encounters,
            self.observations,
            self.claims,
            self.consents,
        ]
    }
}

struct Gen<'a> {
    ids: &'a IdKeys,
    r: Rand,
    providers: &'a Providers,
    site_cum: [u32; 12],
    site_total: u32,
    buf: String,
    // per-patient scratch
    enc_scratch: Vec<(i64, u8)>,
    ts_scratch: Vec<i64>,

    patients: PatientCols,
    encounters: EncounterCols,
    observations: ObservationCols,
    claims: ClaimCols,
    consents: ConsentCols,
}

const ET_INPATIENT: u8 = 0;
const ET_OUTPATIENT: u8 = 1;
const ET_EMERGENCY: u8 = 2;

/// Lab panels drawn during an encounter (each becomes a lab claim).
#[derive(Default)]
struct Labs {
    a1c: bool,
    glucose: bool,
    lipid: bool,
    bmp: bool,
    cmp: bool,
    cbc: bool,
    creat: bool,
}

/// Generate all five tables for patients `first_patient_id .. first_patient_id + n`.
///
/// Pure and deterministic: the output depends only on the arguments. The
/// generator for a given `(seed, chunk_index)` is a single ChaCha8 stream, so a
/// shorter chunk is a prefix of a longer one.
pub fn chunk_batches(seed: u64, chunk_index: u64, first_patient_id: i64, n: usize) -> ChunkBatches {
    let providers = Providers::new(seed);
    let ids = IdKeys::new(seed);
    let (site_cum, site_total) = site_cumulative();
    let mut g = Gen {
        ids: &ids,
        r: Rand::new(chunk_rng(seed, chunk_index)),
        providers: &providers,
        site_cum,
        site_total,
        buf: String::with_capacity(64),
        enc_scratch: Vec::with_capacity(MAX_ENCOUNTERS_PER_PATIENT + 1),
        ts_scratch: Vec::with_capacity(4),
        patients: PatientCols::new(n),
        encounters: EncounterCols::new(n * 6),
        observations: ObservationCols::new(n * 24),
        claims: ClaimCols::new(n * 7),
        consents: ConsentCols::new(n * 5),
    };
    for i in 0..n {
        let p = g.patient(first_patient_id + i as i64);
        g.emit_patient(&p);
        g.encounters_for(&p);
        g.consents_for(&p);
    }
    ChunkBatches {
        patients: g.patients.finish(),
        encounters: g.encounters.finish(),
        observations: g.observations.finish(),
        claims: g.claims.finish(),
        consents: g.consents.finish(),
    }
}

#[cfg(test)]
mod tests;
