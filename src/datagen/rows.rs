//! Pure, deterministic row generation: one chunk of patients -> five RecordBatches.
//!
//! Everything in this file is a function of `(seed, chunk_index, first_patient_id, n)`.
//! No clocks, no hash maps, no global state.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, Date32Array, Decimal128Builder, Float64Array,
    Int64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ids::KeyedPermutation;
use super::schema;
use super::vocab::{self, cpt, loinc};

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

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

// ---------------------------------------------------------------------------
// Random helpers
// ---------------------------------------------------------------------------

/// ChaCha8 stream for `(seed, stream)`; `stream` is the chunk index (or a
/// reserved value for global tables such as the provider pool).
pub fn chunk_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[0..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&stream.to_le_bytes());
    s[16..32].copy_from_slice(b"lakeward-datagen");
    ChaCha8Rng::from_seed(s)
}

struct Rand {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Rand {
    fn new(rng: ChaCha8Rng) -> Self {
        Self { rng, spare: None }
    }

    /// Uniform in `0..n` (multiply-shift; bias is < 2^-32, irrelevant here).
    #[inline]
    fn below(&mut self, n: u32) -> u32 {
        ((self.rng.next_u32() as u64 * n as u64) >> 32) as u32
    }

    #[inline]
    fn idx(&mut self, n: usize) -> usize {
        self.below(n as u32) as usize
    }

    /// Uniform in `lo..hi` (requires `hi > lo`).
    #[inline]
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo) as u64 as u128;
        lo + ((self.rng.next_u64() as u128 * span) >> 64) as i64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    #[inline]
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    #[inline]
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.idx(items.len())]
    }

    /// Standard normal (Box-Muller, caching the second value).
    fn normal(&mut self) -> f64 {
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
    fn gauss(&mut self, mean: f64, sd: f64) -> f64 {
        mean + sd * self.normal()
    }

    /// Exponential with the given mean.
    #[inline]
    fn exp(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }
}

#[inline]
fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

// ---------------------------------------------------------------------------
// Per-generation constants (derived from the seed only)
// ---------------------------------------------------------------------------

/// Provider pool: NPIs per site, derived from the seed alone so every chunk
/// (and every run) sees the same providers.
struct Providers {
    npis: Vec<String>, // site-major: site * NPIS_PER_SITE + k
}

fn luhn_npi_check_digit(nine: &[u8; 9]) -> u8 {
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
    fn new(seed: u64) -> Self {
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
fn site_cumulative() -> ([u32; 12], u32) {
    let mut cum = [0u32; 12];
    let mut acc = 0;
    for (i, s) in vocab::SITES.iter().enumerate() {
        acc += s.weight;
        cum[i] = acc;
    }
    (cum, acc)
}

// ---------------------------------------------------------------------------
// Column buffers
// ---------------------------------------------------------------------------

struct PatientCols {
    id: Vec<i64>,
    mrn: StringBuilder,
    first: StringBuilder,
    last: StringBuilder,
    ssn: StringBuilder,
    birth: Vec<i32>,
    sex: StringBuilder,
    zip: StringBuilder,
    phone: StringBuilder,
    email: StringBuilder,
    site: StringBuilder,
    deceased: BooleanBuilder,
}

impl PatientCols {
    fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            mrn: StringBuilder::with_capacity(n, n * 11),
            first: StringBuilder::with_capacity(n, n * 7),
            last: StringBuilder::with_capacity(n, n * 7),
            ssn: StringBuilder::with_capacity(n, n * 11),
            birth: Vec::with_capacity(n),
            sex: StringBuilder::with_capacity(n, n),
            zip: StringBuilder::with_capacity(n, n * 5),
            phone: StringBuilder::with_capacity(n, n * 12),
            email: StringBuilder::with_capacity(n, n * 30),
            site: StringBuilder::with_capacity(n, n * 3),
            deceased: BooleanBuilder::with_capacity(n),
        }
    }

    fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(self.mrn.finish()),
            Arc::new(self.first.finish()),
            Arc::new(self.last.finish()),
            Arc::new(self.ssn.finish()),
            Arc::new(Date32Array::from(self.birth)),
            Arc::new(self.sex.finish()),
            Arc::new(self.zip.finish()),
            Arc::new(self.phone.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.site.finish()),
            Arc::new(self.deceased.finish()),
        ];
        RecordBatch::try_new(schema::patients(), cols).expect("patients batch matches schema")
    }
}

struct EncounterCols {
    id: Vec<i64>,
    patient: Vec<i64>,
    site: StringBuilder,
    admit: Vec<i64>,
    discharge: TimestampMicrosecondBuilder,
    etype: StringBuilder,
    dx: StringBuilder,
    npi: StringBuilder,
}

impl EncounterCols {
    fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            patient: Vec::with_capacity(n),
            site: StringBuilder::with_capacity(n, n * 3),
            admit: Vec::with_capacity(n),
            discharge: TimestampMicrosecondBuilder::with_capacity(n),
            etype: StringBuilder::with_capacity(n, n * 10),
            dx: StringBuilder::with_capacity(n, n * 6),
            npi: StringBuilder::with_capacity(n, n * 10),
        }
    }

    fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(self.site.finish()),
            Arc::new(TimestampMicrosecondArray::from(self.admit)),
            Arc::new(self.discharge.finish()),
            Arc::new(self.etype.finish()),
            Arc::new(self.dx.finish()),
            Arc::new(self.npi.finish()),
        ];
        RecordBatch::try_new(schema::encounters(), cols).expect("encounters batch matches schema")
    }
}

struct ObservationCols {
    id: Vec<i64>,
    patient: Vec<i64>,
    encounter: Vec<i64>,
    code: StringBuilder,
    value: Vec<f64>,
    unit: StringBuilder,
    at: Vec<i64>,
}

impl ObservationCols {
    fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            patient: Vec::with_capacity(n),
            encounter: Vec::with_capacity(n),
            code: StringBuilder::with_capacity(n, n * 6),
            value: Vec::with_capacity(n),
            unit: StringBuilder::with_capacity(n, n * 6),
            at: Vec::with_capacity(n),
        }
    }

    fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(Int64Array::from(self.encounter)),
            Arc::new(self.code.finish()),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(self.unit.finish()),
            Arc::new(TimestampMicrosecondArray::from(self.at)),
        ];
        RecordBatch::try_new(schema::observations(), cols)
            .expect("observations batch matches schema")
    }
}

struct ClaimCols {
    id: Vec<i64>,
    patient: Vec<i64>,
    site: StringBuilder,
    payer: StringBuilder,
    service_date: Vec<i32>,
    cpt: StringBuilder,
    icd10: StringBuilder,
    billed: Vec<i128>,
    allowed: Decimal128Builder,
    status: StringBuilder,
    denial: StringBuilder,
}

impl ClaimCols {
    fn new(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            patient: Vec::with_capacity(n),
            site: StringBuilder::with_capacity(n, n * 3),
            payer: StringBuilder::with_capacity(n, n * 10),
            service_date: Vec::with_capacity(n),
            cpt: StringBuilder::with_capacity(n, n * 5),
            icd10: StringBuilder::with_capacity(n, n * 6),
            billed: Vec::with_capacity(n),
            allowed: Decimal128Builder::with_capacity(n),
            status: StringBuilder::with_capacity(n, n * 5),
            denial: StringBuilder::with_capacity(n, n * 4),
        }
    }

    fn finish(mut self) -> RecordBatch {
        let billed = datafusion::arrow::array::Decimal128Array::from(self.billed)
            .with_precision_and_scale(12, 2)
            .expect("valid decimal precision");
        let allowed = self
            .allowed
            .finish()
            .with_precision_and_scale(12, 2)
            .expect("valid decimal precision");
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(self.site.finish()),
            Arc::new(self.payer.finish()),
            Arc::new(Date32Array::from(self.service_date)),
            Arc::new(self.cpt.finish()),
            Arc::new(self.icd10.finish()),
            Arc::new(billed),
            Arc::new(allowed),
            Arc::new(self.status.finish()),
            Arc::new(self.denial.finish()),
        ];
        RecordBatch::try_new(schema::claims(), cols).expect("claims batch matches schema")
    }
}

struct ConsentCols {
    patient: Vec<i64>,
    purpose: StringBuilder,
    granted: Vec<bool>,
    recorded: Vec<i64>,
    expires: TimestampMicrosecondBuilder,
}

impl ConsentCols {
    fn new(n: usize) -> Self {
        Self {
            patient: Vec::with_capacity(n),
            purpose: StringBuilder::with_capacity(n, n * 9),
            granted: Vec::with_capacity(n),
            recorded: Vec::with_capacity(n),
            expires: TimestampMicrosecondBuilder::with_capacity(n),
        }
    }

    fn finish(mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.patient)),
            Arc::new(self.purpose.finish()),
            Arc::new(BooleanArray::from(self.granted)),
            Arc::new(TimestampMicrosecondArray::from(self.recorded)),
            Arc::new(self.expires.finish()),
        ];
        RecordBatch::try_new(schema::consents(), cols).expect("consents batch matches schema")
    }
}

// ---------------------------------------------------------------------------
// Patient model
// ---------------------------------------------------------------------------

struct Patient {
    id: i64,
    site: usize,
    age: i32,
    birth_day: i32,
    sex: usize, // index into vocab::SEXES
    conditions: u16,
    payer: u8,
    // physiological baselines
    sys: f64,
    dia: f64,
    hr: f64,
    height_cm: f64,
    bmi: f64,
    a1c: f64,
    chol: f64,
    hdl: f64,
    creat: f64,
    hgb: f64,
}

impl Patient {
    fn has(&self, c: u16) -> bool {
        self.conditions & c != 0
    }
}

/// Prevalence of each chronic condition (order of `vocab::CHRONIC_DX`) by age band.
const PREVALENCE: [[f64; 10]; 4] = [
    // diab  htn   asthma hld   ckd   copd  afib  hf    obes  depr
    [0.003, 0.01, 0.09, 0.01, 0.002, 0.0, 0.0, 0.001, 0.15, 0.03], // 0-17
    [
        0.04, 0.12, 0.08, 0.10, 0.01, 0.005, 0.003, 0.003, 0.30, 0.09,
    ], // 18-44
    [0.14, 0.38, 0.07, 0.35, 0.05, 0.05, 0.02, 0.02, 0.38, 0.09],  // 45-64
    [0.24, 0.60, 0.06, 0.50, 0.15, 0.11, 0.09, 0.08, 0.30, 0.07],  // 65+
];

const SSN_GROUPS: u64 = 99;
const SSN_SERIALS: u64 = 9_999;
/// Fictitious SSNs: area 900-999 (never issued by the SSA), group 01-99,
/// serial 0001-9999.
const SSN_DOMAIN: u64 = 100 * SSN_GROUPS * SSN_SERIALS; // 98,990,100

/// The keyed permutations behind every opaque identifier of one seed.
pub(super) struct IdKeys {
    mrn: KeyedPermutation,
    ssn: KeyedPermutation,
    email: KeyedPermutation,
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
    fn encounter_index(pid: i64, k: usize) -> u64 {
        ((pid as u64 - 1) << ENCOUNTER_INDEX_BITS) | k as u64
    }

    #[inline]
    fn encounter_id(&self, index: u64) -> i64 {
        self.encounter.apply(index) as i64 + 1
    }

    #[inline]
    fn observation_id(&self, encounter_index: u64, seq: i64) -> i64 {
        let index = (encounter_index << OBSERVATION_INDEX_BITS) | seq as u64;
        self.observation.apply(index) as i64 + 1
    }

    #[inline]
    fn claim_id(&self, encounter_index: u64, line: usize) -> i64 {
        let index = (encounter_index << CLAIM_INDEX_BITS) | line as u64;
        self.claim.apply(index) as i64 + 1
    }
}

/// The MRN of a patient: `MRN` + 8 digits, a keyed permutation of the
/// patient id over 0..10^8 (unique for up to [`MAX_PATIENTS`] patients).
fn write_mrn(buf: &mut String, keys: &IdKeys, pid: i64) {
    let _ = write!(buf, "MRN{:08}", keys.mrn.apply(pid as u64 - 1));
}

/// Unique fictitious SSN for a patient id: a keyed permutation of `pid`
/// onto area 900-999, group 01-99, serial 0001-9999 (unique for the first
/// 98,990,100 patients).
fn write_ssn(buf: &mut String, keys: &IdKeys, pid: i64) {
    const GROUPS: u64 = SSN_GROUPS;
    const SERIALS: u64 = SSN_SERIALS;
    let x = keys.ssn.apply((pid as u64 - 1) % SSN_DOMAIN);
    let area = 900 + x / (GROUPS * SERIALS);
    let rem = x % (GROUPS * SERIALS);
    let group = 1 + rem / SERIALS;
    let serial = 1 + rem % SERIALS;
    let _ = write!(buf, "{area:03}-{group:02}-{serial:04}");
}

fn push_alpha_lower(buf: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            buf.push(c.to_ascii_lowercase());
        }
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

impl<'a> Gen<'a> {
    fn pick_site(&mut self) -> usize {
        let x = self.r.below(self.site_total);
        self.site_cum.iter().position(|&c| x < c).unwrap_or(11)
    }

    fn patient(&mut self, id: i64) -> Patient {
        let r = &mut self.r;
        // Age at the anchor date: ~3% are over 89 (HIPAA Safe Harbor aggregation).
        let age: i32 = if r.chance(0.03) {
            90 + (r.exp(4.0) as i32).min(14)
        } else {
            let v = r.unit();
            if v < 0.21 {
                r.below(18) as i32
            } else if v < 0.78 {
                18 + r.below(47) as i32
            } else {
                65 + r.below(25) as i32
            }
        };
        // Born in year 2025 - age, so the age on 2026-01-01 is `age` (+1 if born Jan 1).
        let year = 2025 - age;
        let year_len = if is_leap(year) { 366 } else { 365 };
        let birth_day = days_from_civil(year, 1, 1) + r.below(year_len) as i32;

        let s = r.unit();
        let sex = if s < 0.495 {
            0
        } else if s < 0.993 {
            1
        } else {
            2
        };
        let band = match age {
            0..=17 => 0,
            18..=44 => 1,
            45..=64 => 2,
            _ => 3,
        };
        let mut conditions = 0u16;
        for (i, (flag, _)) in vocab::CHRONIC_DX.iter().enumerate() {
            if r.chance(PREVALENCE[band][i]) {
                conditions |= flag;
            }
        }
        let payer = if age >= 65 {
            let u = r.unit();
            if u < 0.86 {
                vocab::PAYER_MEDICARE
            } else if u < 0.98 {
                r.pick(&vocab::COMMERCIAL_PAYERS)
            } else {
                vocab::PAYER_SELF
            }
        } else {
            let medicaid = if age < 18 { 0.40 } else { 0.18 };
            let u = r.unit();
            if u < medicaid {
                vocab::PAYER_MEDICAID
            } else if u < medicaid + 0.06 {
                vocab::PAYER_SELF
            } else {
                r.pick(&vocab::COMMERCIAL_PAYERS)
            }
        };

        let has = |c: u16| conditions & c != 0;
        let child = age < 18;
        let sys = if child {
            r.gauss(102.0, 7.0)
        } else {
            112.0
                + 0.3 * (age - 20).max(0) as f64
                + if has(vocab::COND_HTN) { 14.0 } else { 0.0 }
                + r.gauss(0.0, 9.0)
        };
        let dia = if child {
            r.gauss(62.0, 6.0)
        } else {
            72.0 + if has(vocab::COND_HTN) { 8.0 } else { 0.0 } + r.gauss(0.0, 6.0)
        };
        let hr = if age < 10 {
            r.gauss(95.0, 12.0)
        } else {
            r.gauss(74.0, 9.0)
        };
        let height_cm = if child {
            (52.0 + age as f64 * 6.3 + r.gauss(0.0, 4.0)).min(185.0)
        } else {
            match sex {
                0 => r.gauss(162.0, 6.5),
                1 => r.gauss(176.0, 7.0),
                _ => r.gauss(169.0, 8.0),
            }
        };
        let bmi = if child {
            r.gauss(17.5, 2.5) + if has(vocab::COND_OBESITY) { 6.0 } else { 0.0 }
        } else {
            r.gauss(25.5, 4.0)
                + if has(vocab::COND_OBESITY) { 7.0 } else { 0.0 }
                + if has(vocab::COND_DIABETES) { 2.0 } else { 0.0 }
        }
        .clamp(13.0, 60.0);
        let a1c = if has(vocab::COND_DIABETES) {
            r.gauss(7.6, 1.3).clamp(5.8, 13.5)
        } else if !child && r.chance(0.12) {
            r.gauss(6.0, 0.2) // prediabetes
        } else {
            r.gauss(5.3, 0.3)
        };
        let chol = r.gauss(190.0, 30.0) + if has(vocab::COND_HLD) { 30.0 } else { 0.0 };
        let hdl = r.gauss(50.0, 11.0) + if sex == 0 { 8.0 } else { 0.0 };
        let creat = if has(vocab::COND_CKD) {
            r.gauss(1.8, 0.4)
        } else {
            r.gauss(0.85, 0.15) + if sex == 1 { 0.15 } else { 0.0 }
        }
        .max(0.3);
        let hgb = match sex {
            1 => r.gauss(15.0, 1.1),
            _ => r.gauss(13.4, 1.0),
        };
        let site = self.pick_site();
        Patient {
            id,
            site,
            age,
            birth_day,
            sex,
            conditions,
            payer,
            sys,
            dia,
            hr,
            height_cm,
            bmi,
            a1c,
            chol,
            hdl,
            creat,
            hgb,
        }
    }

    fn emit_patient(&mut self, p: &Patient) {
        let r = &mut self.r;
        let cols = &mut self.patients;
        let buf = &mut self.buf;
        cols.id.push(p.id);
        buf.clear();
        write_mrn(buf, self.ids, p.id);
        cols.mrn.append_value(&*buf);
        let first = match p.sex {
            0 => r.pick(vocab::FEMALE_FIRST_NAMES),
            1 => r.pick(vocab::MALE_FIRST_NAMES),
            _ => {
                if r.chance(0.5) {
                    r.pick(vocab::FEMALE_FIRST_NAMES)
                } else {
                    r.pick(vocab::MALE_FIRST_NAMES)
                }
            }
        };
        let last = r.pick(vocab::LAST_NAMES);
        cols.first.append_value(first);
        cols.last.append_value(last);
        if r.chance(0.02) {
            cols.ssn.append_null();
        } else {
            buf.clear();
            write_ssn(buf, self.ids, p.id);
            cols.ssn.append_value(&*buf);
        }
        cols.birth.push(p.birth_day);
        cols.sex.append_value(vocab::SEXES[p.sex]);
        let site = &vocab::SITES[p.site];
        // Patients mostly live in their home site's area, sometimes elsewhere.
        let zip_site = if r.chance(0.9) {
            site
        } else {
            &vocab::SITES[r.idx(12)]
        };
        buf.clear();
        buf.push_str(r.pick(zip_site.zip3));
        let _ = write!(buf, "{:02}", r.below(100));
        cols.zip.append_value(&*buf);
        if r.chance(0.04) {
            cols.phone.append_null();
        } else {
            buf.clear();
            let _ = write!(buf, "{}-555-01{:02}", zip_site.area_code, r.below(100));
            cols.phone.append_value(&*buf);
        }
        if r.chance(0.10) {
            cols.email.append_null();
        } else {
            buf.clear();
            push_alpha_lower(buf, first);
            buf.push('.');
            push_alpha_lower(buf, last);
            let n = self.ids.email.apply(p.id as u64 - 1);
            let _ = write!(buf, "{n}@{}", r.pick(&vocab::EMAIL_DOMAINS));
            cols.email.append_value(&*buf);
        }
        cols.site.append_value(site.id);
        let p_dead = match p.age {
            90.. => 0.18,
            75..=89 => 0.07,
            65..=74 => 0.03,
            _ => 0.004,
        };
        cols.deceased.append_value(r.chance(p_dead));
    }

    fn encounters_for(&mut self, p: &Patient) {
        let r = &mut self.r;
        let n_cond = p.conditions.count_ones().min(4) as f64;
        let mean = match p.age {
            0..=1 => 5.0,
            2..=17 => 2.2,
            18..=44 => 2.8,
            45..=64 => 4.2,
            _ => 6.5,
        } + 0.9 * n_cond;
        let n = ((r.exp(mean) + 0.5) as usize).min(MAX_ENCOUNTERS_PER_PATIENT);

        let window_start = (ANCHOR_DAY - 5 * 365).max(p.birth_day);
        let window_days = (ANCHOR_DAY - window_start).max(1) as u32;
        let p_inpatient = if p.age >= 65 { 0.07 } else { 0.04 };
        self.enc_scratch.clear();
        for _ in 0..n {
            let u = r.unit();
            let et = if u < p_inpatient {
                ET_INPATIENT
            } else if u < p_inpatient + 0.14 {
                ET_EMERGENCY
            } else {
                ET_OUTPATIENT
            };
            let day = window_start as i64 + r.below(window_days) as i64;
            let tod = match et {
                // clinic slots 08:00-16:45, every 15 minutes
                ET_OUTPATIENT => 8 * MICROS_PER_HOUR + r.below(36) as i64 * 15 * MICROS_PER_MINUTE,
                _ => r.below(86_400) as i64 * MICROS_PER_SECOND,
            };
            self.enc_scratch.push((day * MICROS_PER_DAY + tod, et));
        }
        // A few patients are in hospital right now (open inpatient encounter).
        let p_current = if p.age >= 65 { 0.015 } else { 0.003 };
        let current_admission =
            r.chance(p_current) && self.enc_scratch.len() < MAX_ENCOUNTERS_PER_PATIENT;
        if current_admission {
            let admit = ANCHOR_TS - r.range(2 * MICROS_PER_HOUR, 4 * MICROS_PER_DAY);
            self.enc_scratch
                .push((admit.max(p.birth_day as i64 * MICROS_PER_DAY), ET_INPATIENT));
        }
        self.enc_scratch.sort_unstable();

        let home = p.site;
        let mut scratch = std::mem::take(&mut self.enc_scratch);
        for (k, &(admit, et)) in scratch.iter().enumerate() {
            let is_current = current_admission
                && k + 1 == scratch.len()
                && et == ET_INPATIENT
                && admit > ANCHOR_TS - 5 * MICROS_PER_DAY;
            self.encounter(p, k, admit, et, home, is_current);
        }
        scratch.clear();
        self.enc_scratch = scratch;
    }

    #[allow(clippy::too_many_arguments)]
    fn encounter(
        &mut self,
        p: &Patient,
        k: usize,
        admit: i64,
        et: u8,
        home: usize,
        is_current: bool,
    ) {
        let enc_index = IdKeys::encounter_index(p.id, k);
        let enc_id = self.ids.encounter_id(enc_index);
        let r = &mut self.r;
        let site = if r.chance(0.85) {
            home
        } else {
            let s = r.idx(11);
            if s >= home { s + 1 } else { s }
        };
        let planned_discharge = match et {
            ET_OUTPATIENT => admit + (15 + r.below(76) as i64) * MICROS_PER_MINUTE,
            ET_EMERGENCY => admit + r.range(2 * MICROS_PER_HOUR, 12 * MICROS_PER_HOUR),
            _ => {
                let days = (1.0 + r.exp(3.0)).min(30.0);
                admit + (days * MICROS_PER_DAY as f64) as i64
            }
        };
        // Open encounters: still admitted at the anchor, or (rarely) never closed in the EHR.
        let discharge = if is_current || planned_discharge > ANCHOR_TS || r.chance(0.002) {
            None
        } else {
            Some(planned_discharge)
        };
        let end = discharge.unwrap_or_else(|| {
            planned_discharge
                .min(ANCHOR_TS)
                .max(admit + MICROS_PER_HOUR)
        });

        // Primary diagnosis.
        let preventive = et == ET_OUTPATIENT && r.chance(0.12);
        let dx: &'static str = if preventive {
            if p.age < 18 {
                vocab::DX_CHILD_EXAM
            } else {
                vocab::DX_ADULT_EXAM
            }
        } else {
            let p_chronic = match et {
                ET_OUTPATIENT => 0.6,
                ET_EMERGENCY => 0.15,
                _ => 0.5,
            };
            if p.conditions != 0 && r.chance(p_chronic) {
                let mut flags = [0usize; 10];
                let mut m = 0;
                for (i, (flag, _)) in vocab::CHRONIC_DX.iter().enumerate() {
                    if p.has(*flag) {
                        flags[m] = i;
                        m += 1;
                    }
                }
                let i = flags[r.idx(m)];
                if i == 0 && p.a1c >= 9.0 {
                    vocab::DX_DIABETES_HYPERGLYCEMIA
                } else {
                    vocab::CHRONIC_DX[i].1
                }
            } else {
                match et {
                    ET_OUTPATIENT => {
                        if p.age < 12 && r.chance(0.25) {
                            "H66.90"
                        } else {
                            r.pick(vocab::OUTPATIENT_ACUTE_DX)
                        }
                    }
                    ET_EMERGENCY => r.pick(vocab::EMERGENCY_DX),
                    _ => r.pick(vocab::INPATIENT_DX),
                }
            }
        };
        let npi_idx = site * NPIS_PER_SITE + r.idx(NPIS_PER_SITE);

        let e = &mut self.encounters;
        e.id.push(enc_id);
        e.patient.push(p.id);
        e.site.append_value(vocab::SITES[site].id);
        e.admit.push(admit);
        e.discharge.append_option(discharge);
        e.etype.append_value(vocab::ENCOUNTER_TYPES[et as usize]);
        e.dx.append_value(dx);
        e.npi.append_value(&self.providers.npis[npi_idx]);

        let labs = self.observations_for(p, enc_id, enc_index, et, preventive, admit, end);
        if !(et == ET_INPATIENT && discharge.is_none()) {
            self.claims_for(p, enc_index, et, preventive, k == 0, site, admit, dx, &labs);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observations_for(
        &mut self,
        p: &Patient,
        enc_id: i64,
        enc_index: u64,
        et: u8,
        preventive: bool,
        admit: i64,
        end: i64,
    ) -> Labs {
        let mut o = ObsEmitter {
            ids: self.ids,
            seq: 0,
            enc_id,
            enc_index,
            admit,
            dur: (end - admit).max(MICROS_PER_MINUTE),
        };
        let cols = &mut self.observations;
        let r = &mut self.r;
        let mut labs = Labs::default();
        let diabetic = p.has(vocab::COND_DIABETES);
        let child = p.age < 18;
        match et {
            ET_OUTPATIENT => {
                let f = (0.02, 0.25);
                if preventive {
                    o.vital(cols, r, p, loinc::SYSTOLIC, f);
                    o.vital(cols, r, p, loinc::DIASTOLIC, f);
                    o.vital(cols, r, p, loinc::HEART_RATE, f);
                    o.vital(cols, r, p, loinc::WEIGHT, f);
                    if r.chance(0.5) {
                        o.vital(cols, r, p, loinc::HEIGHT, f);
                        o.vital(cols, r, p, loinc::BMI, f);
                    }
                    if !child {
                        labs.lipid = r.chance(0.35);
                        labs.a1c = (p.age >= 35 || diabetic) && r.chance(0.3);
                        labs.cbc = r.chance(0.2);
                        labs.cmp = r.chance(0.2);
                    }
                } else {
                    if r.chance(0.75) {
                        o.vital(cols, r, p, loinc::SYSTOLIC, f);
                        o.vital(cols, r, p, loinc::DIASTOLIC, f);
                    }
                    if r.chance(0.3) {
                        o.vital(cols, r, p, loinc::HEART_RATE, f);
                    }
                    if r.chance(if child { 0.6 } else { 0.2 }) {
                        o.vital(cols, r, p, loinc::WEIGHT, f);
                    }
                    if r.chance(0.05) {
                        o.vital(cols, r, p, loinc::BMI, f);
                    }
                    if r.chance(0.06) {
                        o.vital(cols, r, p, loinc::TEMP, f);
                    }
                    let resp = p.has(vocab::COND_ASTHMA) || p.has(vocab::COND_COPD);
                    if r.chance(if resp { 0.4 } else { 0.03 }) {
                        o.vital(cols, r, p, loinc::SPO2, f);
                    }
                    if diabetic {
                        labs.a1c = r.chance(0.45);
                        labs.glucose = r.chance(0.2);
                    } else if p.age >= 35 {
                        labs.a1c = r.chance(0.03);
                        labs.glucose = r.chance(0.04);
                    }
                    labs.lipid = r.chance(if p.has(vocab::COND_HLD) {
                        0.2
                    } else if p.age >= 40 {
                        0.03
                    } else {
                        0.0
                    });
                    labs.creat = r.chance(if p.has(vocab::COND_CKD) { 0.4 } else { 0.02 });
                    labs.bmp = r.chance(if p.has(vocab::COND_HTN) { 0.08 } else { 0.03 });
                    labs.cbc = r.chance(0.04);
                }
                o.labs(cols, r, p, &labs, (0.3, 0.95), false);
            }
            ET_EMERGENCY => {
                let f = (0.01, 0.15);
                for (code, p_vital) in [
                    (loinc::SYSTOLIC, 0.9),
                    (loinc::DIASTOLIC, 0.9),
                    (loinc::HEART_RATE, 0.9),
                    (loinc::TEMP, 0.6),
                    (loinc::SPO2, 0.6),
                ] {
                    if r.chance(p_vital) {
                        o.vital(cols, r, p, code, f);
                    }
                }
                labs.cbc = r.chance(0.35);
                labs.bmp = r.chance(0.25);
                labs.glucose = r.chance(if diabetic { 0.5 } else { 0.08 });
                labs.creat = !labs.bmp && r.chance(0.1);
                o.labs(cols, r, p, &labs, (0.2, 0.9), true);
            }
            _ => {
                // Inpatient: a round of vitals (and often labs) per hospital day, up to 2.
                let days = ((end - admit) / MICROS_PER_DAY).clamp(0, 1) + 1;
                for d in 0..days {
                    let lo = d as f64 / days as f64;
                    let hi = (d + 1) as f64 / days as f64;
                    let f = (lo, lo + (hi - lo) * 0.3);
                    for code in [
                        loinc::SYSTOLIC,
                        loinc::DIASTOLIC,
                        loinc::HEART_RATE,
                        loinc::TEMP,
                    ] {
                        o.vital(cols, r, p, code, f);
                    }
                    if r.chance(0.5) {
                        o.vital(cols, r, p, loinc::SPO2, f);
                    }
                    let mut day_labs = Labs {
                        cbc: r.chance(if d == 0 { 0.7 } else { 0.2 }),
                        bmp: r.chance(if d == 0 { 0.6 } else { 0.2 }),
                        glucose: diabetic && r.chance(0.6),
                        a1c: d == 0 && diabetic && r.chance(0.5),
                        ..Labs::default()
                    };
                    day_labs.creat = !day_labs.bmp && r.chance(0.2);
                    o.labs(
                        cols,
                        r,
                        p,
                        &day_labs,
                        (lo + (hi - lo) * 0.35, hi * 0.999),
                        true,
                    );
                    labs.cbc |= day_labs.cbc;
                    labs.bmp |= day_labs.bmp;
                    labs.glucose |= day_labs.glucose;
                    labs.a1c |= day_labs.a1c;
                    labs.creat |= day_labs.creat;
                }
            }
        }
        labs
    }

    #[allow(clippy::too_many_arguments)]
    fn claims_for(
        &mut self,
        p: &Patient,
        enc_index: u64,
        et: u8,
        preventive: bool,
        first_visit: bool,
        site: usize,
        admit: i64,
        dx: &'static str,
        labs: &Labs,
    ) {
        let r = &mut self.r;
        let mut items: [usize; 9] = [usize::MAX; 9];
        let mut n = 0;
        if r.chance(0.96) {
            items[n] = match et {
                ET_OUTPATIENT if preventive => match p.age {
                    0..=17 => cpt::P99392,
                    18..=39 => cpt::P99395,
                    40..=64 => cpt::P99396,
                    _ => cpt::P99397,
                },
                ET_OUTPATIENT if first_visit && r.chance(0.4) => {
                    if r.chance(0.6) {
                        cpt::E99203
                    } else {
                        cpt::E99204
                    }
                }
                ET_OUTPATIENT => {
                    let u = r.unit();
                    if u < 0.10 {
                        cpt::E99212
                    } else if u < 0.60 {
                        cpt::E99213
                    } else if u < 0.92 {
                        cpt::E99214
                    } else {
                        cpt::E99215
                    }
                }
                ET_EMERGENCY => {
                    let u = r.unit();
                    if u < 0.35 {
                        cpt::ED99283
                    } else if u < 0.75 {
                        cpt::ED99284
                    } else {
                        cpt::ED99285
                    }
                }
                _ => {
                    if r.chance(0.45) {
                        cpt::IP99222
                    } else {
                        cpt::IP99223
                    }
                }
            };
            n += 1;
        }
        for (drawn, code) in [
            (labs.a1c, cpt::LAB_A1C),
            (labs.glucose && !labs.cmp, cpt::LAB_GLUCOSE),
            (labs.lipid, cpt::LAB_LIPID),
            (labs.bmp && !labs.cmp, cpt::LAB_BMP),
            (labs.cmp, cpt::LAB_CMP),
            (labs.cbc, cpt::LAB_CBC),
            (labs.creat, cpt::LAB_CREAT),
        ] {
            if drawn {
                items[n] = code;
                n += 1;
            }
        }

        let service_day = admit.div_euclid(MICROS_PER_DAY) as i32;
        let days_ago = ANCHOR_DAY - service_day;
        let c = &mut self.claims;
        for (j, &item) in items[..n].iter().enumerate() {
            let payer = if r.chance(0.04) {
                r.idx(vocab::PAYERS.len()) as u8
            } else {
                p.payer
            };
            let (code, _, base_cents) = vocab::CPT_CODES[item];
            let billed = (base_cents as f64 * (0.85 + 0.5 * r.unit())).round() as i128;
            let (p_pending, p_denied) = if days_ago < 30 {
                (0.6, 0.04)
            } else if days_ago < 90 {
                (0.08, 0.09)
            } else {
                (0.005, 0.095)
            };
            let u = r.unit();
            let status = if u < p_pending {
                2
            } else if u < p_pending + p_denied && payer != vocab::PAYER_SELF {
                1
            } else {
                0
            };
            let allowed = match status {
                0 => {
                    let factor = match payer {
                        vocab::PAYER_MEDICARE => r.gauss(0.42, 0.04),
                        vocab::PAYER_MEDICAID => r.gauss(0.33, 0.03),
                        vocab::PAYER_SELF => r.gauss(0.60, 0.05),
                        _ => r.gauss(0.62, 0.08),
                    }
                    .clamp(0.15, 1.0);
                    Some((billed as f64 * factor).round() as i128)
                }
                1 => Some(0),
                _ => None,
            };
            c.id.push(self.ids.claim_id(enc_index, j));
            c.patient.push(p.id);
            c.site.append_value(vocab::SITES[site].id);
            c.payer.append_value(vocab::PAYERS[payer as usize]);
            c.service_date.push(service_day);
            c.cpt.append_value(code);
            c.icd10.append_value(dx);
            c.billed.push(billed);
            c.allowed.append_option(allowed);
            c.status.append_value(vocab::CLAIM_STATUSES[status]);
            if status == 1 {
                c.denial.append_value(r.pick(vocab::DENIAL_REASONS));
            } else {
                c.denial.append_null();
            }
        }
    }

    fn consents_for(&mut self, p: &Patient) {
        let r = &mut self.r;
        let earliest =
            (ANCHOR_TS - 10 * 365 * MICROS_PER_DAY).max(p.birth_day as i64 * MICROS_PER_DAY);
        for (purpose_idx, purpose) in vocab::CONSENT_PURPOSES.iter().enumerate() {
            let research = purpose_idx == 3;
            let u = r.unit();
            let n = if research {
                if u < 0.20 {
                    0
                } else if u < 0.75 {
                    1
                } else if u < 0.92 {
                    2
                } else {
                    3
                }
            } else if u < 0.08 {
                0
            } else if u < 0.82 {
                1
            } else if u < 0.96 {
                2
            } else {
                3
            };
            if n == 0 {
                continue;
            }
            self.ts_scratch.clear();
            for _ in 0..n {
                self.ts_scratch.push(r.range(earliest, ANCHOR_TS));
            }
            self.ts_scratch.sort_unstable();
            // The latest record decides; earlier ones may say the opposite.
            let final_granted = if research {
                r.chance(0.45)
            } else {
                !r.chance(0.035)
            };
            for (i, &recorded) in self.ts_scratch.iter().enumerate() {
                let granted = if i + 1 == n {
                    final_granted
                } else if r.chance(0.6) {
                    !final_granted
                } else {
                    final_granted
                };
                let p_expiring = if research { 0.45 } else { 0.12 };
                let expires = if r.chance(p_expiring) {
                    let years = if research {
                        r.range(2, 7)
                    } else {
                        r.range(1, 4)
                    };
                    Some(recorded + years * 365 * MICROS_PER_DAY)
                } else {
                    None
                };
                let c = &mut self.consents;
                c.patient.push(p.id);
                c.purpose.append_value(purpose);
                c.granted.push(granted);
                c.recorded.push(recorded);
                c.expires.append_option(expires);
            }
        }
    }
}

struct ObsEmitter<'a> {
    ids: &'a IdKeys,
    seq: i64,
    enc_id: i64,
    enc_index: u64,
    admit: i64,
    dur: i64,
}

impl ObsEmitter<'_> {
    #[inline]
    fn push(
        &mut self,
        cols: &mut ObservationCols,
        r: &mut Rand,
        p: &Patient,
        code: usize,
        value: f64,
        frac: (f64, f64),
    ) {
        if self.seq >= MAX_OBS_PER_ENCOUNTER {
            return;
        }
        self.seq += 1;
        let f = frac.0 + (frac.1 - frac.0) * r.unit();
        let (c, _, unit) = vocab::LOINC_CODES[code];
        cols.id
            .push(self.ids.observation_id(self.enc_index, self.seq));
        cols.patient.push(p.id);
        cols.encounter.push(self.enc_id);
        cols.code.append_value(c);
        cols.value.push(value);
        cols.unit.append_value(unit);
        cols.at.push(self.admit + (self.dur as f64 * f) as i64);
    }

    fn vital(
        &mut self,
        cols: &mut ObservationCols,
        r: &mut Rand,
        p: &Patient,
        code: usize,
        frac: (f64, f64),
    ) {
        let v = match code {
            loinc::SYSTOLIC => (p.sys + r.gauss(0.0, 8.0)).clamp(70.0, 230.0).round(),
            loinc::DIASTOLIC => (p.dia + r.gauss(0.0, 6.0)).clamp(35.0, 140.0).round(),
            loinc::HEART_RATE => (p.hr + r.gauss(0.0, 8.0)).clamp(35.0, 190.0).round(),
            loinc::TEMP => {
                if r.chance(0.08) {
                    round_to(r.gauss(38.6, 0.5).clamp(37.6, 41.0), 1)
                } else {
                    round_to(r.gauss(36.8, 0.3), 1)
                }
            }
            loinc::SPO2 => {
                let base = if p.has(vocab::COND_COPD) { 93.5 } else { 97.5 };
                (base + r.gauss(0.0, 1.3)).clamp(80.0, 100.0).round()
            }
            loinc::WEIGHT => {
                let h = p.height_cm / 100.0;
                round_to((p.bmi * h * h + r.gauss(0.0, 1.0)).max(2.0), 1)
            }
            loinc::HEIGHT => round_to(p.height_cm + r.gauss(0.0, 0.5), 1),
            loinc::BMI => round_to(p.bmi + r.gauss(0.0, 0.4), 1),
            _ => unreachable!("not a vital sign"),
        };
        self.push(cols, r, p, code, v, frac);
    }

    fn labs(
        &mut self,
        cols: &mut ObservationCols,
        r: &mut Rand,
        p: &Patient,
        labs: &Labs,
        frac: (f64, f64),
        acute: bool,
    ) {
        if labs.a1c {
            let v = round_to((p.a1c + r.gauss(0.0, 0.35)).clamp(4.0, 15.0), 1);
            self.push(cols, r, p, loinc::HBA1C, v, frac);
        }
        if labs.glucose || labs.bmp || labs.cmp {
            let eag = 28.7 * p.a1c - 46.7;
            let v = (eag + r.gauss(0.0, 18.0) + if acute { 15.0 } else { 0.0 })
                .clamp(45.0, 550.0)
                .round();
            self.push(cols, r, p, loinc::GLUCOSE, v, frac);
        }
        if labs.lipid {
            let chol = (p.chol + r.gauss(0.0, 12.0)).clamp(90.0, 400.0).round();
            let hdl = (p.hdl + r.gauss(0.0, 4.0)).clamp(15.0, 120.0).round();
            let trig = r.gauss(140.0, 40.0).clamp(40.0, 500.0);
            let ldl = (chol - hdl - trig / 5.0).max(20.0).round();
            self.push(cols, r, p, loinc::CHOL, chol, frac);
            self.push(cols, r, p, loinc::HDL, hdl, frac);
            self.push(cols, r, p, loinc::LDL, ldl, frac);
        }
        if labs.bmp || labs.cmp {
            let na = r.gauss(140.0, 2.5).round();
            let k = round_to(r.gauss(4.2, 0.35).clamp(2.5, 6.5), 1);
            self.push(cols, r, p, loinc::SODIUM, na, frac);
            self.push(cols, r, p, loinc::POTASSIUM, k, frac);
        }
        if labs.bmp || labs.cmp || labs.creat {
            let creat = round_to((p.creat + r.gauss(0.0, 0.08)).clamp(0.2, 9.0), 2);
            self.push(cols, r, p, loinc::CREATININE, creat, frac);
            if p.age >= 18 {
                let mut egfr = 175.0 * creat.powf(-1.154) * (p.age as f64).powf(-0.203);
                if p.sex == 0 {
                    egfr *= 0.742;
                }
                self.push(
                    cols,
                    r,
                    p,
                    loinc::EGFR,
                    egfr.clamp(4.0, 150.0).round(),
                    frac,
                );
            }
        }
        if labs.cbc {
            let hgb = round_to((p.hgb + r.gauss(0.0, 0.5)).clamp(5.0, 20.0), 1);
            let wbc = if acute {
                r.gauss(9.5, 3.0)
            } else {
                r.gauss(7.0, 1.8)
            };
            self.push(cols, r, p, loinc::HEMOGLOBIN, hgb, frac);
            self.push(
                cols,
                r,
                p,
                loinc::WBC,
                round_to(wbc.clamp(1.5, 30.0), 1),
                frac,
            );
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn anchor_is_2026_01_01() {
        assert_eq!(ANCHOR_DAY, 20_454);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1900, 1, 1), -25_567);
    }

    #[test]
    fn npi_check_digit_matches_known_example() {
        // CMS example: 123456789 -> check digit 3 (NPI 1234567893).
        assert_eq!(luhn_npi_check_digit(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), 3);
    }

    #[test]
    fn ssn_and_mrn_are_bijections_on_small_ranges() {
        let keys = IdKeys::new(42);
        let mut ssns = std::collections::BTreeSet::new();
        let mut mrns = std::collections::BTreeSet::new();
        let mut buf = String::new();
        for pid in 1..=50_000 {
            buf.clear();
            write_ssn(&mut buf, &keys, pid);
            assert!(buf.starts_with('9'), "{buf}");
            assert!(ssns.insert(buf.clone()), "duplicate ssn {buf}");
            buf.clear();
            write_mrn(&mut buf, &keys, pid);
            assert_eq!(buf.len(), 11, "{buf}");
            assert!(mrns.insert(buf.clone()), "duplicate mrn {buf}");
        }
    }

    #[test]
    fn record_ids_fit_their_domains() {
        let keys = IdKeys::new(42);
        // The last patient id the domains cover, the most encounters,
        // observations and claim lines one encounter can have.
        let pid = MAX_PATIENTS as i64;
        let last = IdKeys::encounter_index(pid, MAX_ENCOUNTERS_PER_PATIENT);
        assert!(last < ENCOUNTER_DOMAIN);
        let e = keys.encounter_id(last);
        assert!(e >= 1 && e as u64 <= ENCOUNTER_DOMAIN);
        let o = keys.observation_id(last, MAX_OBS_PER_ENCOUNTER);
        assert!(o >= 1 && o as u64 <= OBSERVATION_DOMAIN);
        let c = keys.claim_id(last, 8);
        assert!(c >= 1 && c as u64 <= CLAIM_DOMAIN);
    }
}
