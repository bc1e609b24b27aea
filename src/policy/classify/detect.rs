//! Identifier detectors for `lakeward policy check --classify`.
//!
//! The check samples every served column (a bounded number of rows per data
//! file) and asks, per column, which identifier classes its values look like:
//! SSNs, phone numbers, e-mail addresses, MRN-like codes, person names, birth
//! dates, ZIP codes, free text, unique record keys. This module is the pure
//! logic: a [`ColumnSample`] accumulates counters while values stream by and
//! [`ColumnSample::classes`] decides at the end.
//!
//! Privacy: a sampled value is inspected once, in [`ColumnSample::add`], and
//! then dropped. Nothing here prints, logs, returns or keeps a value — the
//! state is counters, a year histogram and keyed 64-bit hashes (for
//! distinctness), and the result is a list of classes. The `Debug` output of a
//! sample shows counts only.
//!
//! Decisions are share-based (a class applies when most non-NULL values match
//! its pattern) and need a minimum sample, so a handful of odd values neither
//! makes nor breaks a class. Column-name hints (`patient_ssn`, `HomePhone`,
//! `dob`, `zip_code`) are used only where the values alone are ambiguous: bare
//! digit strings, integer-typed identifiers, text dates.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// The column's logical type, as far as detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleType {
    Integer,
    Float,
    Decimal,
    Text,
    Date,
    Timestamp,
    Boolean,
    Other,
}

/// One sampled value (NULLs are not passed in; they are counted with
/// [`ColumnSample::add_null`]). Deliberately not `Debug`: a value has no
/// business being formatted.
#[derive(Clone, Copy)]
pub enum SampleValue<'a> {
    /// Any integer column, widened to `i64`.
    Int(i64),
    Text(&'a str),
    /// days since 1970-01-01
    Date(i32),
    /// microseconds since the epoch, UTC
    Timestamp(i64),
    /// Anything else (floats, decimals, booleans, binary): counted, never
    /// inspected.
    Other,
}

/// Identifier classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdClass {
    Ssn,
    Phone,
    Email,
    Mrn,
    PersonName,
    BirthDate,
    Zip5,
    FreeText,
    RecordId,
}

impl IdClass {
    /// Every class, in report order.
    pub const ALL: [IdClass; 9] = [
        IdClass::Ssn,
        IdClass::Phone,
        IdClass::Email,
        IdClass::Mrn,
        IdClass::PersonName,
        IdClass::BirthDate,
        IdClass::Zip5,
        IdClass::FreeText,
        IdClass::RecordId,
    ];

    /// The name used in reports and in the policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            IdClass::Ssn => "ssn",
            IdClass::Phone => "phone",
            IdClass::Email => "email",
            IdClass::Mrn => "mrn",
            IdClass::PersonName => "person_name",
            IdClass::BirthDate => "birth_date",
            IdClass::Zip5 => "zip5",
            IdClass::FreeText => "free_text",
            IdClass::RecordId => "record_id",
        }
    }
}

// ---------------------------------------------------------------------------
// Thresholds
// ---------------------------------------------------------------------------

/// Below this many non-NULL values a column gets no class at all: shares over
/// a handful of values mean nothing.
const MIN_SAMPLED: u64 = 20;

/// Most classes apply when at least 4/5 of the non-NULL values match.
const MOST: (u64, u64) = (4, 5);

/// Person names apply from 3/5: real name columns carry rare names that no
/// built-in list knows.
const NAME_SHARE: (u64, u64) = (3, 5);

/// A name column has more than a handful of distinct values; categorical
/// columns whose few values happen to be surnames (race `White`/`Black`, eye
/// colour `Brown`/`Green`) do not.
const NAME_MIN_DISTINCT: u64 = 10;

/// MRN-like codes identify patients, so a column of them is mostly distinct.
/// A patient's MRN repeated on every encounter row is not flagged there; it is
/// flagged in the table where it is the key. Short code vocabularies never are.
const MRN_DISTINCT: (u64, u64) = (9, 10);

/// Share of 10-digit, Luhn-valid values that marks a column of National
/// Provider Identifiers (random 10-digit codes pass the check 1 time in 10).
const NPI_SHARE: (u64, u64) = (95, 100);

/// Five bare digits without a ZIP name hint: ZIP codes of a real population
/// spread over many values, procedure-code vocabularies over few.
const ZIP_MIN_DISTINCT: u64 = 100;

/// Free text: long values of several words, mostly distinct (a categorical
/// vocabulary of long labels repeats).
const FREE_TEXT_MIN_CHARS: u64 = 30;
const FREE_TEXT_MIN_WORDS: u64 = 4;
const FREE_TEXT_DISTINCT: (u64, u64) = (1, 2);

/// Record keys: every sampled value distinct, over a sample large enough for
/// that to mean something. The tolerance absorbs 64-bit hash collisions.
const RECORD_ID_MIN_SAMPLED: u64 = 100;
const RECORD_ID_DISTINCT: (u64, u64) = (999, 1000);

/// Birth dates lie in `[1880-01-01, today]` and a population's spread over
/// decades; service dates cover a few years. Shares tolerate sentinel dates
/// (`1900-01-01`, `9999-12-31`) and the span ignores the extreme 1 % on each
/// side, so a single typo neither hides nor creates a birth-date column.
const BIRTH_FIRST_YEAR: i32 = 1880;
const BIRTH_MIN_SPAN_YEARS: i32 = 30;
const BIRTH_IN_RANGE: (u64, u64) = (99, 100);
/// Timestamps count as dates when (nearly) all sit on one whole hour of the
/// day, or two adjacent ones (local midnight stored as UTC, across DST).
const DATE_ONLY_TIMESTAMPS: (u64, u64) = (99, 100);
/// Year histogram range; years outside it are counted as out of range.
const LAST_YEAR: i32 = 2199;

/// Distinct-value tracking keeps at most this many hashes per column: about
/// 1 MiB of hash table in the worst case, whatever the number of files
/// sampled (see [`Distinct`] for how uniqueness is judged beyond it).
const DISTINCT_CAP: usize = 50_000;

const US_PER_HOUR: i64 = 3_600_000_000;
const US_PER_DAY: i64 = 24 * US_PER_HOUR;

/// `part / whole >= num / den`, exactly (integers, no rounding surprises).
fn share(part: u64, whole: u64, (num, den): (u64, u64)) -> bool {
    whole > 0 && u128::from(part) * u128::from(den) >= u128::from(whole) * u128::from(num)
}

// ---------------------------------------------------------------------------
// The column sample
// ---------------------------------------------------------------------------

/// Accumulates one column's sample (across all the files of a table), then
/// decides with [`ColumnSample::classes`].
///
/// Holds no value: per-pattern match counters, text length totals, a year
/// histogram for date-like values, and keyed hashes for distinctness (see
/// [`Distinct`]). Memory is bounded whatever the number of values: at most
/// [`DISTINCT_CAP`] hashes plus a 320-year histogram.
pub struct ColumnSample {
    ty: SampleType,
    hints: Hints,
    sampled: u64,
    nulls: u64,
    m: Matches,
    /// Allocated at the first date-like value.
    dates: Option<Box<DateStats>>,
    distinct: Distinct,
}

/// Per-pattern match counts (each over non-NULL values).
#[derive(Default)]
struct Matches {
    ssn: u64,
    phone: u64,
    email: u64,
    /// MRN-shaped: optional short letter prefix, then 6–12 digits (or an
    /// integer in an MRN-named column).
    mrn: u64,
    /// 10-digit Luhn-valid NPIs (a subset of `mrn`).
    npi: u64,
    /// 8-digit values that read as `YYYYMMDD` dates (a subset of `mrn`).
    compact_date: u64,
    name: u64,
    zip: u64,
    /// Text totals, for the free-text averages.
    chars: u64,
    words: u64,
}

impl ColumnSample {
    pub fn new(column_name: &str, ty: SampleType) -> Self {
        ColumnSample {
            ty,
            hints: Hints::from_column_name(column_name),
            sampled: 0,
            nulls: 0,
            m: Matches::default(),
            dates: None,
            distinct: Distinct::new(),
        }
    }

    /// Counts one non-NULL value. The value is inspected here and not kept.
    pub fn add(&mut self, v: SampleValue<'_>) {
        self.sampled += 1;
        self.distinct.offer(&v);
        match v {
            SampleValue::Int(i) => self.add_int(i),
            SampleValue::Text(s) => self.add_text(s),
            SampleValue::Date(d) => self.date_stats().add_day(i64::from(d)),
            SampleValue::Timestamp(t) => self.date_stats().add_timestamp(t),
            SampleValue::Other => {}
        }
    }

    pub fn add_null(&mut self) {
        self.nulls += 1;
    }

    /// Non-NULL values seen.
    pub fn sampled(&self) -> u64 {
        self.sampled
    }

    pub fn nulls(&self) -> u64 {
        self.nulls
    }

    /// The classes the sample supports, sorted and deduplicated. `today` (days
    /// since the epoch) bounds plausible birth dates.
    pub fn classes(&self, today_days_since_epoch: i32) -> Vec<IdClass> {
        let n = self.sampled;
        let mut out = Vec::new();
        if n < MIN_SAMPLED {
            return out;
        }
        let textual = matches!(self.ty, SampleType::Text | SampleType::Other);
        let integer = self.ty == SampleType::Integer;
        let m = &self.m;
        let most = |k: u64| share(k, n, MOST);

        // Provider identifiers are public, not patient data: a column of NPIs
        // gets no class (not even a record key).
        if textual && share(m.npi, n, NPI_SHARE) {
            return out;
        }

        if textual || integer {
            // Integer columns only match these with a name hint (see add_int).
            if most(m.ssn) {
                out.push(IdClass::Ssn);
            }
            if most(m.phone) {
                out.push(IdClass::Phone);
            }
            let zip_evidence = self.hints.zip
                || (textual
                    && !self.hints.not_zip
                    && self.distinct.estimated_distinct() >= ZIP_MIN_DISTINCT);
            if most(m.zip) && zip_evidence {
                out.push(IdClass::Zip5);
            }
        }
        if self.birth_dates(today_days_since_epoch) {
            out.push(IdClass::BirthDate);
        }
        if textual {
            if most(m.email) {
                out.push(IdClass::Email);
            }
            if share(m.name, n, NAME_SHARE)
                && self.distinct.estimated_distinct() >= NAME_MIN_DISTINCT
            {
                out.push(IdClass::PersonName);
            }
        }
        // MRN is the fallback for digit codes no more specific class explains
        // (bare SSNs, bare phone numbers, ZIP+4 without a dash, YYYYMMDD).
        let explained = out.iter().any(|c| {
            matches!(
                c,
                IdClass::Ssn | IdClass::Phone | IdClass::Zip5 | IdClass::BirthDate
            )
        });
        if (textual || integer)
            && !explained
            && most(m.mrn)
            && !share(m.compact_date, m.mrn, MOST)
            && self.distinct.ratio_at_least(MRN_DISTINCT)
        {
            out.push(IdClass::Mrn);
        }
        let free_text = textual
            && m.chars >= FREE_TEXT_MIN_CHARS * n
            && m.words >= FREE_TEXT_MIN_WORDS * n
            && self.distinct.ratio_at_least(FREE_TEXT_DISTINCT);
        if free_text {
            out.push(IdClass::FreeText);
        }
        if matches!(self.ty, SampleType::Integer | SampleType::Text)
            && !free_text
            && n >= RECORD_ID_MIN_SAMPLED
            && self.distinct.ratio_at_least(RECORD_ID_DISTINCT)
        {
            out.push(IdClass::RecordId);
        }
        out.sort();
        out.dedup();
        out
    }

    fn date_stats(&mut self) -> &mut DateStats {
        self.dates.get_or_insert_with(|| Box::new(DateStats::new()))
    }

    /// Integers match identifier classes only when the column name says what
    /// they are: an unnamed 9-digit integer is as likely a claim number as an
    /// SSN stored without its dashes.
    fn add_int(&mut self, i: i64) {
        let h = self.hints;
        let m = &mut self.m;
        // Leading zeros are lost in integers: area 001 is 1,010,001.
        if h.ssn && (1_000_000..=999_999_999).contains(&i) {
            m.ssn += 1;
        }
        if h.phone
            && ((2_000_000_000..=9_999_999_999).contains(&i)
                || (12_000_000_000..=19_999_999_999).contains(&i))
        {
            m.phone += 1;
        }
        if h.zip && (501..=99_950).contains(&i) {
            m.zip += 1;
        }
        if h.mrn && (1..=999_999_999_999).contains(&i) {
            m.mrn += 1;
        }
        // Birth dates stored as YYYYMMDD integers.
        if h.birth
            && (10_000_101..=99_991_231).contains(&i)
            && let Some(day) = compact_date(i as u32)
        {
            self.date_stats().add_day(day);
        }
    }

    fn add_text(&mut self, s: &str) {
        let h = self.hints;
        let m = &mut self.m;
        m.chars += s.chars().count() as u64;
        m.words += s.split_whitespace().count() as u64;
        let v = s.trim();
        let mut buf = [0u8; SHAPE_MAX];
        if let Some(shape) = shape_of(v, &mut buf) {
            if is_ssn_shape(shape, h.ssn) {
                m.ssn += 1;
            }
            if is_zip_shape(shape, h.zip) {
                m.zip += 1;
            }
            if is_mrn_shape(shape) {
                m.mrn += 1;
                if shape.len() == 10 && is_npi(v.as_bytes()) {
                    m.npi += 1;
                }
                if shape.len() == 8 && v.parse::<u32>().ok().and_then(compact_date).is_some() {
                    m.compact_date += 1;
                }
            }
            if is_phone(v, h.phone) {
                m.phone += 1;
            }
            if is_email(v) {
                m.email += 1;
            }
        } else if v.len() <= MAX_EMAIL && is_email(v) {
            // Longer than a shape, still a plausible address.
            m.email += 1;
        }
        if is_person_name(v) {
            m.name += 1;
        }
        if h.birth
            && let Some(day) = parse_text_date(v)
        {
            self.date_stats().add_day(day);
        }
    }

    fn birth_dates(&self, today: i32) -> bool {
        let Some(d) = &self.dates else {
            return false;
        };
        let n = self.sampled;
        match self.ty {
            SampleType::Date | SampleType::Timestamp => {
                share(d.count, n, BIRTH_IN_RANGE)
                    && (d.timestamps == 0 || d.date_only_timestamps())
                    && d.spans_a_population(today)
            }
            SampleType::Text | SampleType::Other | SampleType::Integer if self.hints.birth => {
                share(d.count, n, MOST) && d.spans_a_population(today)
            }
            _ => false,
        }
    }
}

/// Counts only: a sample's `Debug` output never shows values or hashes.
impl fmt::Debug for ColumnSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnSample")
            .field("ty", &self.ty)
            .field("sampled", &self.sampled)
            .field("nulls", &self.nulls)
            .field("estimated_distinct", &self.distinct.estimated_distinct())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Distinctness
// ---------------------------------------------------------------------------

/// Distinct-value ratio of a column, from keyed 64-bit hashes of its values.
///
/// The hashes are keyed per sample (`RandomState`), so what is held in memory
/// is not a digest anyone can precompute from a list of candidate values.
///
/// Bounded by hash-based sampling: every value whose hash has its top `level`
/// bits zero is tracked with its occurrence count, the others are skipped.
/// When more than [`DISTINCT_CAP`] hashes are tracked, `level` goes up by one
/// and the hashes (and their occurrences) that no longer qualify are dropped,
/// which halves the set. Because a value is tracked with all of its
/// occurrences or not at all, `tracked hashes / tracked occurrences` estimates
/// the distinct ratio of the whole stream (every file, not only the first
/// ones), and is exact while the column has fewer than `DISTINCT_CAP` distinct
/// values.
struct Distinct {
    key: RandomState,
    counts: HashMap<u64, u64>,
    level: u32,
    /// Occurrences of the tracked hashes.
    tracked: u64,
}

impl Distinct {
    fn new() -> Self {
        Distinct {
            key: RandomState::new(),
            counts: HashMap::new(),
            level: 0,
            tracked: 0,
        }
    }

    fn admits(level: u32, h: u64) -> bool {
        level == 0 || h >> (64 - level.min(63)) == 0
    }

    fn offer(&mut self, v: &SampleValue<'_>) {
        // A type tag keeps e.g. Int(5) and Date(5) apart; `Other` values all
        // hash alike (they cannot be told apart, so they count as repeats).
        let h = match *v {
            SampleValue::Int(i) => self.key.hash_one((0u8, i)),
            SampleValue::Text(s) => self.key.hash_one((1u8, s)),
            SampleValue::Date(d) => self.key.hash_one((2u8, d)),
            SampleValue::Timestamp(t) => self.key.hash_one((3u8, t)),
            SampleValue::Other => self.key.hash_one(4u8),
        };
        if !Self::admits(self.level, h) {
            return;
        }
        *self.counts.entry(h).or_insert(0) += 1;
        self.tracked += 1;
        while self.counts.len() > DISTINCT_CAP && self.level < 63 {
            self.level += 1;
            let level = self.level;
            let mut dropped = 0u64;
            self.counts.retain(|&h, &mut c| {
                let keep = Self::admits(level, h);
                if !keep {
                    dropped += c;
                }
                keep
            });
            self.tracked -= dropped;
        }
    }

    /// Distinct / total over the tracked values, at least `num / den`.
    fn ratio_at_least(&self, ratio: (u64, u64)) -> bool {
        share(self.counts.len() as u64, self.tracked, ratio)
    }

    /// Estimated number of distinct values in the stream.
    fn estimated_distinct(&self) -> u64 {
        (self.counts.len() as u64) << self.level
    }

    #[cfg(test)]
    fn tracked_hashes(&self) -> usize {
        self.counts.len()
    }
}

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

/// Date-like values of a column: a histogram by calendar year (no day kept),
/// and for timestamps, how many sit on each whole UTC hour.
struct DateStats {
    count: u64,
    /// Years `BIRTH_FIRST_YEAR..=LAST_YEAR`.
    years: Vec<u64>,
    timestamps: u64,
    /// Timestamps on a whole hour, by UTC hour of day.
    hours: [u64; 24],
}

impl DateStats {
    fn new() -> Self {
        DateStats {
            count: 0,
            years: vec![0; (LAST_YEAR - BIRTH_FIRST_YEAR + 1) as usize],
            timestamps: 0,
            hours: [0; 24],
        }
    }

    fn add_day(&mut self, day: i64) {
        self.count += 1;
        let y = year_of_day(day);
        if (BIRTH_FIRST_YEAR..=LAST_YEAR).contains(&y) {
            self.years[(y - BIRTH_FIRST_YEAR) as usize] += 1;
        }
    }

    fn add_timestamp(&mut self, micros: i64) {
        self.timestamps += 1;
        let time_of_day = micros.rem_euclid(US_PER_DAY);
        if time_of_day % US_PER_HOUR == 0 {
            self.hours[(time_of_day / US_PER_HOUR) as usize] += 1;
        }
        self.add_day(micros.div_euclid(US_PER_DAY));
    }

    /// Timestamps that carry a date only: midnight UTC, or local midnight
    /// stored in UTC (one hour, or two adjacent ones across DST changes).
    fn date_only_timestamps(&self) -> bool {
        let best = (0..24)
            .map(|h| self.hours[h] + self.hours[(h + 1) % 24])
            .max()
            .unwrap_or(0);
        share(best, self.timestamps, DATE_ONLY_TIMESTAMPS)
    }

    /// Nearly all values between 1880 and today (to the year: a value later
    /// in the current year still counts), spreading over at least
    /// [`BIRTH_MIN_SPAN_YEARS`] between the 1st and 99th percentile years.
    fn spans_a_population(&self, today: i32) -> bool {
        let this_year = year_of_day(i64::from(today)).min(LAST_YEAR);
        if this_year < BIRTH_FIRST_YEAR {
            return false;
        }
        let bins = &self.years[..=(this_year - BIRTH_FIRST_YEAR) as usize];
        let in_range: u64 = bins.iter().sum();
        if !share(in_range, self.count, BIRTH_IN_RANGE) {
            return false;
        }
        let trim = in_range / 100;
        let low = year_at_rank(bins, trim);
        let high = year_at_rank(bins, in_range - 1 - trim);
        high - low >= BIRTH_MIN_SPAN_YEARS
    }
}

/// Year of the value at 0-based `rank` in a year histogram.
fn year_at_rank(bins: &[u64], rank: u64) -> i32 {
    let mut seen = 0;
    for (i, &c) in bins.iter().enumerate() {
        seen += c;
        if seen > rank {
            return BIRTH_FIRST_YEAR + i as i32;
        }
    }
    BIRTH_FIRST_YEAR + bins.len() as i32 - 1
}

/// Days since 1970-01-01 of a proleptic Gregorian date (no validation).
const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = ((m + 9) % 12) as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Calendar year of a day number.
fn year_of_day(day: i64) -> i32 {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let y = yoe + era * 400 + i64::from(mp >= 10);
    y.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Day number of a valid date with a year in 1800..=2199.
fn civil_day(y: i64, m: u32, d: u32) -> Option<i64> {
    let month_len = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => return None,
    };
    ((1800..=2199).contains(&y) && (1..=month_len).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// `YYYYMMDD` as a number.
fn compact_date(v: u32) -> Option<i64> {
    civil_day(i64::from(v / 10_000), (v / 100) % 100, v % 100)
}

/// Text dates: `YYYY-MM-DD` (optionally followed by a time), `YYYY/MM/DD`,
/// `MM/DD/YYYY`, `M/D/YYYY`, `MM-DD-YYYY`, `YYYYMMDD`.
fn parse_text_date(v: &str) -> Option<i64> {
    let date = v.split([' ', 'T']).next()?;
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        return compact_date(date.parse().ok()?);
    }
    let mut parts = date.split(['-', '/']);
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let num = |s: &str, lens: std::ops::RangeInclusive<usize>| -> Option<u32> {
        (lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if a.len() == 4 {
        civil_day(i64::from(num(a, 4..=4)?), num(b, 1..=2)?, num(c, 1..=2)?)
    } else {
        civil_day(i64::from(num(c, 4..=4)?), num(a, 1..=2)?, num(b, 1..=2)?)
    }
}

// ---------------------------------------------------------------------------
// Column-name hints
// ---------------------------------------------------------------------------

/// What the column name says (only the flags are kept, not the name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Hints {
    ssn: bool,
    phone: bool,
    birth: bool,
    zip: bool,
    /// Procedure-code style names: five bare digits are not ZIP codes there.
    not_zip: bool,
    mrn: bool,
}

/// How a hint word is looked for in a column name.
#[derive(Clone, Copy)]
enum HintRule {
    /// Equal to a name token (`tel` must not match `telemetry`).
    Token,
    /// A token starts or ends with it (`patientssn`, `zipcode`, `homefax`).
    Affix,
    /// Anywhere in the name with separators removed (`date_of_birth`,
    /// `telephone_number`): for words too long to occur by accident.
    Substring,
}

const SSN_HINTS: &[(&str, HintRule)] = &[
    ("ssn", HintRule::Affix),
    ("tin", HintRule::Token),
    ("social", HintRule::Substring),
    ("socsec", HintRule::Substring),
    ("taxpayer", HintRule::Substring),
];
const PHONE_HINTS: &[(&str, HintRule)] = &[
    ("phone", HintRule::Substring),
    ("mobile", HintRule::Substring),
    ("tel", HintRule::Token),
    ("cell", HintRule::Token),
    ("fax", HintRule::Affix),
];
const BIRTH_HINTS: &[(&str, HintRule)] = &[
    ("birth", HintRule::Substring),
    ("dob", HintRule::Affix),
    ("bday", HintRule::Affix),
];
const ZIP_HINTS: &[(&str, HintRule)] = &[
    ("zip", HintRule::Affix),
    ("postal", HintRule::Substring),
    ("postcode", HintRule::Substring),
];
const NOT_ZIP_HINTS: &[(&str, HintRule)] = &[
    ("cpt", HintRule::Substring),
    ("hcpcs", HintRule::Substring),
    ("procedure", HintRule::Substring),
    ("proc", HintRule::Substring),
    ("code", HintRule::Substring),
    ("icd", HintRule::Substring),
    ("drg", HintRule::Substring),
];
const MRN_HINTS: &[(&str, HintRule)] = &[
    ("mrn", HintRule::Affix),
    ("medicalrecord", HintRule::Substring),
];

impl Hints {
    fn from_column_name(name: &str) -> Self {
        let tokens = name_tokens(name);
        let joined = tokens.concat();
        let any = |hints: &[(&str, HintRule)]| {
            hints.iter().any(|&(w, rule)| match rule {
                HintRule::Token => tokens.iter().any(|t| t == w),
                HintRule::Affix => tokens.iter().any(|t| t.starts_with(w) || t.ends_with(w)),
                HintRule::Substring => joined.contains(w),
            })
        };
        Hints {
            ssn: any(SSN_HINTS),
            phone: any(PHONE_HINTS),
            birth: any(BIRTH_HINTS),
            zip: any(ZIP_HINTS),
            not_zip: any(NOT_ZIP_HINTS),
            mrn: any(MRN_HINTS),
        }
    }
}

/// Lower-case tokens of a column name: split on anything not ASCII
/// alphanumeric, on camelCase boundaries (`HomePhone`, `PatientSSN`,
/// `ZIPCode`) and between letters and digits (`zip5`).
fn name_tokens(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if !cur.is_empty() {
            let p = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let boundary = (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                || (p.is_ascii_digit() != c.is_ascii_digit())
                || (p.is_ascii_uppercase() && c.is_ascii_uppercase() && next_lower);
            if boundary {
                tokens.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    tokens
}

// ---------------------------------------------------------------------------
// Value patterns
// ---------------------------------------------------------------------------

/// Longest value that gets a shape; identifier patterns are all shorter.
const SHAPE_MAX: usize = 32;
/// Longest plausible e-mail address (RFC 5321 path limit).
const MAX_EMAIL: usize = 254;

/// The shape of a short ASCII value: digits become `d`, letters `a`, other
/// characters stay. `None` for longer or non-ASCII values. Written into a
/// stack buffer, so nothing about the value outlives the call.
fn shape_of<'b>(v: &str, buf: &'b mut [u8; SHAPE_MAX]) -> Option<&'b [u8]> {
    let b = v.as_bytes();
    if b.is_empty() || b.len() > SHAPE_MAX || !v.is_ascii() {
        return None;
    }
    for (o, &c) in buf.iter_mut().zip(b) {
        *o = if c.is_ascii_digit() {
            b'd'
        } else if c.is_ascii_alphabetic() {
            b'a'
        } else {
            c
        };
    }
    Some(&buf[..b.len()])
}

fn all_digits(shape: &[u8]) -> bool {
    shape.iter().all(|&b| b == b'd')
}

/// `ddd-dd-dddd`, `ddd dd dddd`; nine bare digits only in an SSN-named column.
/// No validity rules: synthetic and test SSNs use never-issued areas.
fn is_ssn_shape(shape: &[u8], hint: bool) -> bool {
    shape == b"ddd-dd-dddd"
        || shape == b"ddd dd dddd"
        || (hint && shape.len() == 9 && all_digits(shape))
}

/// `ddddd`, `ddddd-dddd`; nine bare digits (ZIP+4) only in a ZIP-named column.
fn is_zip_shape(shape: &[u8], hint: bool) -> bool {
    (shape.len() == 5 && all_digits(shape))
        || shape == b"ddddd-dddd"
        || (hint && shape.len() == 9 && all_digits(shape))
}

/// MRN-like: up to 4 letters, an optional `-` after them, then 6–12 digits
/// (`MRN00012345`, `A1234567`, `00412345`). ICD-10 (`E11.9`), LOINC
/// (`4548-4`), CPT (`99213`) and site codes (`S01`) do not have this shape.
fn is_mrn_shape(shape: &[u8]) -> bool {
    let letters = shape.iter().take_while(|&&b| b == b'a').count();
    if letters > 4 {
        return false;
    }
    let mut digits = &shape[letters..];
    if letters > 0 && digits.first() == Some(&b'-') {
        digits = &digits[1..];
    }
    (6..=12).contains(&digits.len()) && all_digits(digits)
}

/// A National Provider Identifier: 10 digits whose Luhn check over
/// `80840` + the digits holds.
fn is_npi(v: &[u8]) -> bool {
    if v.len() != 10 || !v.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b"80840"
        .iter()
        .chain(v)
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b - b'0');
            match i % 2 {
                0 => d,
                _ if d * 2 > 9 => d * 2 - 9,
                _ => d * 2,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// North American numbers (`617-555-0143`, `(212) 555-0143`, `617.555.0143`,
/// `617 555 0143`, optionally `+1 `/`1-` first and an extension after),
/// E.164 (`+` and 8–15 digits), and bare 10 digits (11 with a leading `1`)
/// only in a phone-named column.
fn is_phone(v: &str, hint: bool) -> bool {
    let v = strip_extension(v);
    if let Some(rest) = v.strip_prefix('+') {
        if (8..=15).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        return rest
            .strip_prefix('1')
            .is_some_and(|r| nanp(strip_separator(r)));
    }
    if let Some(rest) = v.strip_prefix('1')
        && matches!(rest.bytes().next(), Some(b'-' | b' ' | b'.'))
        && nanp(&rest[1..])
    {
        return true;
    }
    if nanp(v) {
        return true;
    }
    let b = v.as_bytes();
    hint && b.iter().all(u8::is_ascii_digit)
        && match b.len() {
            10 => b[0] >= b'2',
            11 => b[0] == b'1' && b[1] >= b'2',
            _ => false,
        }
}

fn strip_separator(v: &str) -> &str {
    v.strip_prefix([' ', '-', '.']).unwrap_or(v)
}

/// A ten-digit North American number with separators.
fn nanp(v: &str) -> bool {
    const SHAPES: [&[u8]; 7] = [
        b"ddd-ddd-dddd",
        b"ddd.ddd.dddd",
        b"ddd ddd dddd",
        b"(ddd) ddd-dddd",
        b"(ddd)ddd-dddd",
        b"(ddd) ddd dddd",
        b"(ddd)-ddd-dddd",
    ];
    let mut buf = [0u8; SHAPE_MAX];
    shape_of(v, &mut buf).is_some_and(|s| SHAPES.contains(&s))
}

/// Drops a trailing extension (`x12`, ` ext. 12`, ` ext 12345`).
fn strip_extension(v: &str) -> &str {
    let Some(i) = v.rfind(['x', 'X']) else {
        return v;
    };
    let (mut head, mut tail) = (&v[..i], &v[i + 1..]);
    if let (Some(h), Some(t)) = (head.strip_suffix(['e', 'E']), tail.strip_prefix(['t', 'T'])) {
        head = h;
        tail = t;
    }
    let tail = tail.strip_prefix(['.', ':']).unwrap_or(tail).trim_start();
    if (1..=6).contains(&tail.len()) && tail.bytes().all(|b| b.is_ascii_digit()) {
        head.trim_end()
    } else {
        v
    }
}

/// `local@domain.tld`: one `@`, no whitespace, a dotted domain of valid
/// labels ending in an alphabetic TLD of 2+ letters.
fn is_email(v: &str) -> bool {
    if v.len() > MAX_EMAIL {
        return false;
    }
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    if !local_ok || domain.contains('@') {
        return false;
    }
    let mut labels = domain.split('.').peekable();
    let mut count = 0;
    while let Some(label) = labels.next() {
        count += 1;
        let b = label.as_bytes();
        let label_ok = !b.is_empty()
            && b.len() <= 63
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-');
        if !label_ok {
            return false;
        }
        if labels.peek().is_none() {
            return count >= 2 && b.len() >= 2 && b.iter().all(u8::is_ascii_alphabetic);
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Person names
// ---------------------------------------------------------------------------

/// Titles, suffixes and credentials, skipped wherever they appear.
const HONORIFICS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "miss", "mx", "prof", "jr", "sr", "ii", "iii", "iv", "md", "do",
    "phd", "rn", "np", "pa", "dds", "esq",
];

/// A person name: one token from the name lists (`Mary`, `SMITH`,
/// `O'Brien`, `Smith-Jones`), or two or three tokens whose first and last
/// are (`Mary Smith`, `Mary A. Smith`, `Smith, Mary`, `Dr. Mary Smith Jr.`).
fn is_person_name(v: &str) -> bool {
    if v.is_empty() || v.len() > 64 {
        return false;
    }
    // "Last, First Middle" reads as "First Middle Last".
    let (given, family) = match v.split_once(',') {
        Some((family, given)) if !given.contains(',') => (given, family),
        Some(_) => return false,
        None => (v, ""),
    };
    let mut toks = [""; 3];
    let mut n = 0;
    for raw in given.split_whitespace().chain(family.split_whitespace()) {
        let t = raw.trim_matches(['.', ',']);
        if t.is_empty() || HONORIFICS.iter().any(|h| t.eq_ignore_ascii_case(h)) {
            continue;
        }
        if n == toks.len() {
            return false;
        }
        toks[n] = t;
        n += 1;
    }
    match n {
        1 => name_token(toks[0]),
        2 => name_token(toks[0]) && name_token(toks[1]),
        3 => name_token(toks[0]) && name_token(toks[2]) && middle_token(toks[1]),
        _ => false,
    }
}

/// A token from the lists; hyphenated tokens when every part is.
fn name_token(t: &str) -> bool {
    let set = name_set();
    !t.is_empty()
        && t.split('-').all(|part| {
            let mut buf = [0u8; 24];
            fold_name(part, &mut buf).is_some_and(|k| set.contains(k))
        })
}

/// A middle name or initial: letters (and `-`, `'`) only.
fn middle_token(t: &str) -> bool {
    t.chars()
        .all(|c| c.is_alphabetic() || c == '-' || c == '\'' || c == '’')
}

/// Lower-case ASCII key of a name part (apostrophes dropped, common Latin-1
/// accents folded), in a stack buffer. `None` if anything else is in it.
fn fold_name<'b>(part: &str, buf: &'b mut [u8; 24]) -> Option<&'b str> {
    let mut n = 0;
    for c in part.chars() {
        if c == '\'' || c == '’' {
            continue;
        }
        let f = fold_char(c)?;
        *buf.get_mut(n)? = f;
        n += 1;
    }
    if n == 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

fn fold_char(c: char) -> Option<u8> {
    if c.is_ascii_alphabetic() {
        return Some(c.to_ascii_lowercase() as u8);
    }
    Some(match c.to_lowercase().next()? {
        'à'..='å' => b'a',
        'ç' => b'c',
        'è'..='ë' => b'e',
        'ì'..='ï' => b'i',
        'ñ' => b'n',
        'ò'..='ö' | 'ø' => b'o',
        'ù'..='ü' => b'u',
        'ý' | 'ÿ' => b'y',
        _ => return None,
    })
}

fn name_set() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| GIVEN_NAMES.iter().chain(SURNAMES).copied().collect())
}

/// Common US given names, female and male (lower case). Words that are also
/// months or ordinary category values (`april`, `june`, `will`, `hope`,
/// `virginia`, `christian`) are left out on purpose.
#[rustfmt::skip]
const GIVEN_NAMES: &[&str] = &[
    // female
    "mary", "patricia", "jennifer", "linda", "elizabeth", "barbara", "susan", "jessica",
    "sarah", "karen", "lisa", "nancy", "betty", "sandra", "margaret", "ashley", "kimberly",
    "emily", "donna", "michelle", "carol", "amanda", "melissa", "deborah", "stephanie",
    "dorothy", "rebecca", "sharon", "laura", "cynthia", "amy", "kathleen", "angela", "shirley",
    "brenda", "emma", "anna", "pamela", "nicole", "samantha", "katherine", "christine", "helen",
    "debra", "rachel", "carolyn", "janet", "maria", "catherine", "heather", "diane", "olivia",
    "julie", "joyce", "victoria", "ruth", "lauren", "kelly", "christina", "joan", "evelyn",
    "judith", "andrea", "hannah", "megan", "cheryl", "jacqueline", "martha", "madison",
    "teresa", "gloria", "sara", "janice", "ann", "kathryn", "abigail", "sophia", "frances",
    "jean", "alice", "judy", "isabella", "julia", "grace", "amber", "denise", "danielle",
    "marilyn", "beverly", "charlotte", "natalie", "theresa", "diana", "brittany", "doris",
    "kayla", "alexis", "lori", "marie", "ava", "mia", "chloe", "zoe", "nora", "aaliyah", "ana",
    "fatima", "guadalupe", "keisha", "rosa", "carmen", "elena", "lucy", "ella", "harper",
    "amelia", "lily", "avery", "layla", "scarlett", "leah", "audrey", "claire", "stella",
    "hailey", "jasmine", "tiffany", "wendy", "tammy", "vanessa", "erin", "tracy", "monica",
    "veronica", "yolanda", "sofia", "camila", "valeria", "ximena", "lucia", "gabriela",
    // male
    "james", "robert", "john", "michael", "david", "william", "richard", "joseph", "thomas",
    "christopher", "charles", "daniel", "matthew", "anthony", "mark", "donald", "steven",
    "paul", "andrew", "joshua", "kenneth", "kevin", "brian", "george", "timothy", "ronald",
    "edward", "jason", "jeffrey", "ryan", "jacob", "gary", "nicholas", "eric", "jonathan",
    "stephen", "larry", "justin", "scott", "brandon", "benjamin", "samuel", "gregory",
    "alexander", "frank", "patrick", "raymond", "jack", "dennis", "jerry", "tyler", "aaron",
    "jose", "adam", "nathan", "henry", "douglas", "zachary", "peter", "kyle", "noah", "ethan",
    "jeremy", "walter", "keith", "roger", "terry", "austin", "sean", "gerald", "carl",
    "harold", "dylan", "arthur", "lawrence", "jordan", "jesse", "bryan", "billy", "bruce",
    "gabriel", "joe", "logan", "albert", "willie", "alan", "eugene", "russell", "vincent",
    "philip", "bobby", "johnny", "bradley", "roy", "ralph", "louis", "randy", "wayne",
    "elijah", "liam", "mason", "lucas", "oliver", "aiden", "jackson", "mateo", "luis",
    "carlos", "juan", "miguel", "antonio", "jamal", "tyrone", "mohammed", "muhammad", "ahmed",
    "hector", "victor", "jorge", "francisco", "ricardo", "manuel", "fernando", "pedro",
    "diego", "howard", "fred", "marcus", "darius", "andre", "derek", "travis", "shawn", "chad",
    "cody", "evan", "caleb", "isaac", "owen", "connor", "luke", "nathaniel", "ian", "cameron",
    "eli", "leo",
];

/// Common US surnames (lower case, apostrophes dropped: `obrien`). Surnames
/// that are everyday words in other columns (`may`, `day`, `long`, `price`,
/// `little`, `love`) are left out on purpose; payer and plan names must never
/// be added.
#[rustfmt::skip]
const SURNAMES: &[&str] = &[
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
    "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor",
    "moore", "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "sanchez",
    "clark", "ramirez", "lewis", "robinson", "walker", "young", "allen", "king", "wright",
    "scott", "torres", "nguyen", "hill", "flores", "green", "adams", "nelson", "baker", "hall",
    "rivera", "campbell", "mitchell", "carter", "roberts", "gomez", "phillips", "evans",
    "turner", "diaz", "parker", "cruz", "edwards", "collins", "reyes", "stewart", "morris",
    "morales", "murphy", "cook", "rogers", "gutierrez", "ortiz", "morgan", "cooper",
    "peterson", "bailey", "reed", "kelly", "howard", "ramos", "kim", "cox", "ward",
    "richardson", "watson", "brooks", "chavez", "wood", "james", "bennett", "gray", "mendoza",
    "ruiz", "hughes", "alvarez", "castillo", "sanders", "patel", "myers", "ross", "foster",
    "jimenez", "powell", "jenkins", "perry", "russell", "sullivan", "bell", "coleman",
    "butler", "henderson", "barnes", "gonzales", "fisher", "vasquez", "simmons", "romero",
    "jordan", "patterson", "alexander", "hamilton", "graham", "reynolds", "griffin", "wallace",
    "moreno", "west", "cole", "hayes", "bryant", "herrera", "gibson", "ellis", "tran",
    "medina", "aguilar", "stevens", "murray", "ford", "castro", "marshall", "owens",
    "harrison", "fernandez", "mcdonald", "woods", "washington", "kennedy", "wells", "vargas",
    "henry", "chen", "freeman", "webb", "tucker", "guzman", "burns", "crawford", "olson",
    "simpson", "porter", "hunter", "gordon", "mendez", "silva", "shaw", "snyder", "mason",
    "dixon", "munoz", "hicks", "holmes", "palmer", "wagner", "robertson", "boyd", "salazar",
    "warren", "mills", "meyer", "schmidt", "garza", "daniels", "ferguson", "nichols",
    "stephens", "soto", "weaver", "ryan", "gardner", "payne", "grant", "dunn", "kelley",
    "spencer", "hawkins", "arnold", "pierce", "vazquez", "hansen", "peters", "santos", "hart",
    "bradley", "knight", "elliott", "cunningham", "duncan", "armstrong", "hudson", "carroll",
    "lane", "riley", "andrews", "alvarado", "delgado", "berry", "perkins", "hoffman",
    "johnston", "matthews", "pena", "richards", "contreras", "willis", "carpenter", "lawrence",
    "sandoval", "guerrero", "george", "chapman", "rios", "estrada", "ortega", "watkins",
    "greene", "nunez", "wheeler", "valdez", "harper", "burke", "larson", "santiago",
    "maldonado", "morrison", "franklin", "carlson", "austin", "dominguez", "carr", "lawson",
    "jacobs", "obrien", "oconnor", "lynch", "singh", "khan", "cohen", "wang", "li", "zhang",
    "liu", "wong", "park", "yang", "huang", "wu", "pham", "le",
];

#[cfg(test)]
mod tests {
    use super::*;
    use IdClass::*;

    /// 2026-01-15.
    const TODAY: i32 = days_from_civil(2026, 1, 15) as i32;

    /// xorshift64*: small, deterministic, good enough for test data.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
            &xs[self.below(xs.len() as u64) as usize]
        }
        fn chance(&mut self, p: f64) -> bool {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
        }
    }

    fn text(name: &str, values: &[String]) -> Vec<IdClass> {
        let mut s = ColumnSample::new(name, SampleType::Text);
        for v in values {
            s.add(SampleValue::Text(v));
        }
        s.classes(TODAY)
    }

    fn ints(name: &str, values: &[i64]) -> Vec<IdClass> {
        let mut s = ColumnSample::new(name, SampleType::Integer);
        for &v in values {
            s.add(SampleValue::Int(v));
        }
        s.classes(TODAY)
    }

    fn dates(name: &str, days: &[i32]) -> Vec<IdClass> {
        let mut s = ColumnSample::new(name, SampleType::Date);
        for &d in days {
            s.add(SampleValue::Date(d));
        }
        s.classes(TODAY)
    }

    fn make(n: usize, seed: u64, mut f: impl FnMut(&mut Rng, usize) -> String) -> Vec<String> {
        let mut r = Rng::new(seed);
        (0..n).map(|i| f(&mut r, i)).collect()
    }

    fn day(y: i64, m: u32, d: u32) -> i32 {
        days_from_civil(y, m, d) as i32
    }

    fn days_between(r: &mut Rng, from: i32, to: i32) -> i32 {
        from + r.below((to - from + 1) as u64) as i32
    }

    fn npi_pool(n: usize, seed: u64) -> Vec<String> {
        let mut r = Rng::new(seed);
        let mut out = Vec::new();
        while out.len() < n {
            let nine = format!("1{:08}", r.below(100_000_000));
            let npi = (0..10)
                .map(|c| format!("{nine}{c}"))
                .find(|s| is_npi(s.as_bytes()))
                .unwrap();
            if !out.contains(&npi) {
                out.push(npi);
            }
        }
        out
    }

    const ICD10: &[&str] = &[
        "E11.9", "E11.65", "I10", "J45.909", "E78.5", "N18.30", "J44.9", "I48.91", "I50.9",
        "E66.9", "F32.9", "J06.9", "M54.50", "R51.9", "N39.0", "K21.9", "F41.1", "Z23", "Z00.00",
        "S93.401A", "J18.9", "A41.9", "U07.1", "I21.4", "S01.81XA", "R55",
    ];
    const LOINC: &[&str] = &[
        "4548-4", "2345-7", "2093-3", "2085-9", "13457-7", "2160-0", "718-7", "8480-6", "8462-4",
        "8867-4", "39156-5", "29463-7", "8302-2", "2571-8", "33914-3",
    ];
    const PAYERS: &[&str] = &[
        "Medicare",
        "Medicaid",
        "Aetna",
        "BlueCross BlueShield",
        "Cigna",
        "UnitedHealthcare",
        "Humana",
        "Kaiser Permanente",
        "Self-Pay",
    ];
    const DENIALS: &[&str] = &[
        "CO-16 Missing or invalid claim information",
        "CO-50 Not medically necessary",
        "CO-97 Service bundled with another procedure",
        "CO-29 Timely filing limit expired",
        "CO-197 Precertification or authorization absent",
        "PR-1 Deductible amount",
        "CO-18 Duplicate claim",
        "CO-22 Coordination of benefits",
        "CO-109 Service not covered by this payer",
        "CO-27 Coverage terminated before date of service",
    ];
    const FIRST: &[&str] = &[
        "Mary",
        "Patricia",
        "Jennifer",
        "Linda",
        "Elizabeth",
        "Susan",
        "Jessica",
        "Sarah",
        "Maria",
        "Sophia",
        "Olivia",
        "Emma",
        "Aaliyah",
        "Guadalupe",
        "Chloe",
        "Grace",
        "James",
        "Robert",
        "John",
        "Michael",
        "David",
        "William",
        "Jose",
        "Luis",
        "Carlos",
        "Mohammed",
        "Liam",
        "Noah",
        "Mateo",
        "Jamal",
        "Sean",
    ];
    const LAST: &[&str] = &[
        "Smith",
        "Johnson",
        "Williams",
        "Brown",
        "Jones",
        "Garcia",
        "Miller",
        "Davis",
        "Rodriguez",
        "Martinez",
        "Nguyen",
        "Chen",
        "Patel",
        "Kim",
        "O'Brien",
        "Smith-Jones",
        "Murphy",
        "Rivera",
        "Lee",
        "Wang",
    ];
    /// Names no common-name list knows.
    const RARE: &[&str] = &[
        "Zebulon", "Thaddeus", "Okafor", "Mensah", "Haddad", "Yamamoto", "Kowalski", "Ottoline",
    ];

    fn person(r: &mut Rng, form: usize) -> String {
        fn name(r: &mut Rng, pool: &'static [&'static str]) -> &'static str {
            let pool = if r.chance(0.1) { RARE } else { pool };
            pool[r.below(pool.len() as u64) as usize]
        }
        let (f, l) = (name(r, FIRST), name(r, LAST));
        match form % 4 {
            0 => format!("{f} {l}"),
            1 => format!("{l}, {f}"),
            2 => format!("{f} {}. {l}", (b'A' + r.below(26) as u8) as char),
            _ => format!("{} {}", f.to_uppercase(), l.to_uppercase()),
        }
    }

    fn note(r: &mut Rng) -> String {
        const WORDS: &[&str] = &[
            "patient",
            "reports",
            "mild",
            "chest",
            "pain",
            "since",
            "yesterday",
            "denies",
            "fever",
            "cough",
            "shortness",
            "of",
            "breath",
            "history",
            "hypertension",
            "on",
            "lisinopril",
            "advised",
            "follow",
            "up",
            "in",
            "two",
            "weeks",
            "labs",
            "ordered",
            "blood",
            "pressure",
            "elevated",
            "today",
            "discussed",
            "diet",
            "exercise",
            "and",
            "medication",
            "adherence",
            "knee",
            "swelling",
            "improved",
            "after",
            "therapy",
            "sleep",
            "poor",
            "anxiety",
            "noted",
            "referred",
            "to",
            "cardiology",
            "for",
            "echo",
        ];
        let n = 8 + r.below(18) as usize;
        let words: Vec<&str> = (0..n).map(|_| *r.pick(WORDS)).collect();
        let mut s = words.join(" ");
        s.push('.');
        s
    }

    // -- each class fires on realistic data ---------------------------------

    #[test]
    fn ssn_dashed() {
        let v = make(1000, 1, |r, _| {
            format!(
                "9{:02}-{:02}-{:04}",
                r.below(100),
                1 + r.below(99),
                1 + r.below(9999)
            )
        });
        let c = text("ssn", &v);
        assert!(c.contains(&Ssn), "{c:?}");
        assert!(!c.contains(&Mrn) && !c.contains(&Phone) && !c.contains(&Zip5));
        // Spaces instead of dashes, in a column whose name says nothing.
        let v: Vec<String> = v.iter().map(|s| s.replace('-', " ")).collect();
        assert!(text("identifier", &v).contains(&Ssn));
    }

    #[test]
    fn ssn_bare_digits_need_a_name_hint() {
        let v = make(500, 2, |r, _| format!("9{:08}", r.below(100_000_000)));
        assert!(text("patient_ssn", &v).contains(&Ssn));
        assert!(text("SocialSecurityNumber", &v).contains(&Ssn));
        let c = text("member_number", &v);
        assert!(!c.contains(&Ssn), "{c:?}");
        // Without a hint, unique 9-digit codes read as MRN-like codes.
        assert!(c.contains(&Mrn));
        // Integer SSNs (leading zeros lost) with a hint.
        let n: Vec<i64> = (0..500).map(|i| 900_010_001 + i * 17).collect();
        assert_eq!(ints("ssn", &n), vec![Ssn, RecordId]);
        assert_eq!(ints("amount_cents", &n), vec![RecordId]);
    }

    #[test]
    fn phone_formats() {
        let v = make(600, 3, |r, _| {
            format!(
                "{}-555-01{:02}",
                r.pick(&["617", "212", "215"]),
                r.below(100)
            )
        });
        assert_eq!(text("phone", &v), vec![Phone]);
        // Formats mixed in one column, name says nothing.
        let v = make(600, 4, |r, i| {
            let (a, x) = (r.pick(&["212", "617", "303"]), r.below(10_000));
            match i % 8 {
                0 => format!("({a}) 555-{x:04}"),
                1 => format!("{a}.555.{x:04}"),
                2 => format!("{a} 555 {x:04}"),
                3 => format!("+1 {a}-555-{x:04}"),
                4 => format!("1-{a}-555-{x:04}"),
                5 => format!("+1{a}555{x:04}"),
                6 => format!("{a}-555-{x:04} ext. {}", r.below(500)),
                _ => format!("+4420{:08}", r.below(100_000_000)),
            }
        });
        let c = text("contact", &v);
        assert!(c.contains(&Phone), "{c:?}");
        assert!(!c.contains(&Mrn));
    }

    #[test]
    fn phone_bare_digits_need_a_name_hint() {
        let v = make(500, 5, |r, _| format!("617555{:04}", r.below(10_000)));
        assert!(text("HomePhone", &v).contains(&Phone));
        assert!(text("fax", &v).contains(&Phone));
        assert!(!text("account_number", &v).contains(&Phone));
        let n: Vec<i64> = (0..300).map(|i| 6_175_550_000 + i).collect();
        assert!(ints("mobile_number", &n).contains(&Phone));
        assert!(!ints("account_number", &n).contains(&Phone));
    }

    #[test]
    fn email() {
        let v = make(800, 6, |r, _| {
            format!(
                "{}.{}{}@{}",
                r.pick(FIRST).to_lowercase(),
                r.pick(&["smith", "garcia", "obrien", "nguyen"]),
                r.below(100_000),
                r.pick(&["example.org", "example.com", "mail.example.co.uk"])
            )
        });
        let c = text("email", &v);
        assert!(c.contains(&Email), "{c:?}");
        assert!(!c.contains(&PersonName) && !c.contains(&FreeText));
        for bad in [
            "a@b",
            "a b@example.org",
            "a@@example.org",
            "@example.org",
            "a@ex.c0m",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_email("mary.smith1234@example.org"));
    }

    #[test]
    fn mrn_forms() {
        let mut r = Rng::new(7);
        let mut ids: Vec<u64> = (0..2000).map(|i| i * 7919 + r.below(7000)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mrn: Vec<String> = ids.iter().map(|i| format!("MRN{i:08}")).collect();
        assert_eq!(text("mrn", &mrn), vec![Mrn, RecordId]);
        let a: Vec<String> = ids
            .iter()
            .map(|i| format!("A{:07}", i % 10_000_000))
            .collect();
        assert!(text("chart_no", &a).contains(&Mrn));
        let dashed: Vec<String> = ids.iter().map(|i| format!("PT-{i:09}")).collect();
        assert!(text("patient_ref", &dashed).contains(&Mrn));
        let bare: Vec<String> = ids
            .iter()
            .map(|i| format!("00{:06}", i % 1_000_000))
            .collect();
        assert!(text("medical_record_number", &bare).contains(&Mrn));
        // Integer MRNs only with a hint.
        let n: Vec<i64> = ids.iter().map(|&i| 412_345 + i as i64).collect();
        assert_eq!(ints("MRN", &n), vec![Mrn, RecordId]);
        assert_eq!(ints("encounter_id", &n), vec![RecordId]);
    }

    #[test]
    fn mrn_needs_high_cardinality() {
        // The patient's MRN repeated on every encounter row.
        let v = make(2000, 8, |r, _| format!("MRN{:08}", r.below(400)));
        assert!(!text("mrn", &v).contains(&Mrn));
    }

    #[test]
    fn person_names() {
        let first = make(1000, 9, |r, _| {
            if r.chance(0.1) {
                r.pick(RARE).to_string()
            } else {
                r.pick(FIRST).to_string()
            }
        });
        assert_eq!(text("first_name", &first), vec![PersonName]);
        let last = make(1000, 10, |r, _| {
            if r.chance(0.1) {
                r.pick(RARE).to_string()
            } else {
                r.pick(LAST).to_string()
            }
        });
        assert_eq!(text("last_name", &last), vec![PersonName]);
        let full = make(1000, 11, person);
        assert!(text("patient_name", &full).contains(&PersonName));
        for ok in [
            "Mary Smith",
            "Smith, Mary",
            "Mary A. Smith",
            "SMITH, MARY A",
            "Dr. Mary Smith Jr.",
            "José García",
            "Sean O’Brien",
        ] {
            assert!(is_person_name(ok), "{ok}");
        }
        for no in [
            "Mary 42 Smith",
            "Smith & Sons",
            "Mary Ann Lee Smith",
            "J. Smith",
            "",
        ] {
            assert!(!is_person_name(no), "{no}");
        }
    }

    #[test]
    fn birth_dates_typed() {
        let (from, to) = (day(1925, 1, 1), day(2020, 12, 31));
        let mut r = Rng::new(12);
        let d: Vec<i32> = (0..1000).map(|_| days_between(&mut r, from, to)).collect();
        assert_eq!(dates("birth_date", &d), vec![BirthDate]);
        // The type decides, not the name.
        assert_eq!(dates("d1", &d), vec![BirthDate]);
        // Timestamps at midnight UTC, and at local midnight stored in UTC.
        for offset_h in [0i64, 5] {
            let mut s = ColumnSample::new("birth_ts", SampleType::Timestamp);
            for (i, &x) in d.iter().enumerate() {
                let dst = (i % 2) as i64;
                s.add(SampleValue::Timestamp(
                    i64::from(x) * US_PER_DAY + (offset_h - dst) * US_PER_HOUR,
                ));
            }
            assert_eq!(s.classes(TODAY), vec![BirthDate]);
        }
        // A few sentinel dates do not hide the column.
        let mut d2 = d.clone();
        d2.extend([day(1800, 1, 1), day(9999, 12, 31)]);
        assert_eq!(dates("dob", &d2), vec![BirthDate]);
    }

    #[test]
    fn birth_dates_text_need_a_name_hint() {
        let (from, to) = (day(1925, 1, 1), day(2020, 12, 31));
        let mut r = Rng::new(13);
        let v: Vec<String> = (0..600)
            .map(|i| {
                let d = i64::from(days_between(&mut r, from, to));
                let (y, m, dd) = civil(d);
                match i % 3 {
                    0 => format!("{y:04}-{m:02}-{dd:02}"),
                    1 => format!("{m:02}/{dd:02}/{y:04}"),
                    _ => format!("{m}/{dd}/{y:04}"),
                }
            })
            .collect();
        assert!(text("dob", &v).contains(&BirthDate));
        assert!(text("DateOfBirth", &v).contains(&BirthDate));
        assert!(!text("visit_day", &v).contains(&BirthDate));
        // YYYYMMDD, as text and as integers.
        let compact: Vec<String> = v[..200]
            .iter()
            .filter_map(|s| parse_text_date(s))
            .map(|d| {
                let (y, m, dd) = civil(d);
                format!("{y:04}{m:02}{dd:02}")
            })
            .collect();
        let c = text("pt_dob", &compact);
        assert!(c.contains(&BirthDate) && !c.contains(&Mrn), "{c:?}");
        // Without a hint, YYYYMMDD is not an MRN either.
        assert!(!text("yyyymmdd", &compact).contains(&Mrn));
        let n: Vec<i64> = compact.iter().map(|s| s.parse().unwrap()).collect();
        assert!(ints("birthdate", &n).contains(&BirthDate));
    }

    #[test]
    fn zip5() {
        const ZIP3: &[&str] = &[
            "021", "024", "100", "112", "191", "606", "770", "900", "981", "303", "850", "802",
            "036", "692",
        ];
        let v = make(1000, 14, |r, _| {
            format!("{}{:02}", r.pick(ZIP3), r.below(100))
        });
        assert_eq!(text("zip", &v), vec![Zip5]);
        // No hint, but many distinct values and no code-like name.
        assert_eq!(text("residence", &v), vec![Zip5]);
        let plus4: Vec<String> = v
            .iter()
            .map(|z| format!("{z}-{:04}", z.len() * 7))
            .collect();
        assert!(text("postal_code", &plus4).contains(&Zip5));
        let n: Vec<i64> = v.iter().map(|z| z.parse().unwrap()).collect();
        assert!(ints("ZIPCode", &n).contains(&Zip5));
        assert!(!ints("quantity", &n).contains(&Zip5));
    }

    #[test]
    fn free_text() {
        let v = make(500, 15, |r, _| note(r));
        let c = text("note_text", &v);
        assert_eq!(c, vec![FreeText], "free text is not also a record key");
    }

    #[test]
    fn record_ids() {
        let n: Vec<i64> = (1..=1000).collect();
        assert_eq!(ints("claim_id", &n), vec![RecordId]);
        let v = make(500, 16, |r, _| {
            format!("{:016x}-{:08x}", r.next(), r.next() as u32)
        });
        assert_eq!(text("event_uuid", &v), vec![RecordId]);
        // Too few values to call it unique.
        assert!(ints("claim_id", &n[..99]).is_empty());
    }

    // -- and does not fire where it must not ------------------------------

    #[test]
    fn codes_are_not_identifiers() {
        let icd = make(1000, 17, |r, _| r.pick(ICD10).to_string());
        assert!(text("primary_dx", &icd).is_empty());
        let loinc = make(1000, 18, |r, _| r.pick(LOINC).to_string());
        assert!(text("loinc_code", &loinc).is_empty());
        let sites = make(1000, 19, |r, _| format!("S{:02}", 1 + r.below(12)));
        assert!(text("site_id", &sites).is_empty());
        let sex = make(1000, 20, |r, _| r.pick(&["F", "M", "U"]).to_string());
        assert!(text("sex", &sex).is_empty());
    }

    #[test]
    fn cpt_codes_are_not_zip_codes() {
        let mut r = Rng::new(21);
        let pool: Vec<String> = (0..70)
            .map(|_| format!("{}", 10_000 + r.below(90_000)))
            .collect();
        let v = make(2000, 22, |r, _| r.pick(&pool).clone());
        assert!(text("cpt_code", &v).is_empty());
        // Even a large code vocabulary, when the name says procedure codes.
        let v = make(3000, 23, |r, _| format!("{}", 10_000 + r.below(90_000)));
        let c = text("procedure", &v);
        assert!(!c.contains(&Zip5), "{c:?}");
    }

    #[test]
    fn npis_are_not_mrns() {
        let pool = npi_pool(480, 24);
        let v = make(3000, 25, |r, _| r.pick(&pool).clone());
        assert!(text("attending_npi", &v).is_empty());
        // The provider table itself, every NPI once.
        assert!(text("npi", &pool).is_empty());
        // Random 10-digit codes are not NPIs (1 in 10 passes the check).
        let codes = make(1000, 26, |r, _| format!("{:010}", r.below(10_000_000_000)));
        assert!(text("account_number", &codes).contains(&Mrn));
    }

    #[test]
    fn payers_are_not_names() {
        let v = make(1000, 27, |r, _| r.pick(PAYERS).to_string());
        assert!(text("payer", &v).is_empty());
        for p in PAYERS {
            assert!(!is_person_name(p), "{p}");
        }
        let set = name_set();
        for w in [
            "medicare",
            "medicaid",
            "aetna",
            "bluecross",
            "blueshield",
            "cigna",
            "unitedhealthcare",
            "humana",
            "kaiser",
            "permanente",
            "self",
            "pay",
        ] {
            assert!(!set.contains(w), "{w}");
        }
    }

    #[test]
    fn categorical_surnames_are_not_names() {
        // Mostly a surname, but only a handful of distinct values.
        let race = [
            "White",
            "White",
            "White",
            "White",
            "White",
            "White",
            "White",
            "Black",
            "Asian",
            "Black or African American",
            "Other",
        ];
        let v = make(1000, 28, |r, _| r.pick(&race).to_string());
        assert!(text("race", &v).is_empty());
    }

    #[test]
    fn service_dates_are_not_birth_dates() {
        let (from, to) = (day(2019, 1, 1), day(2024, 12, 31));
        let mut r = Rng::new(29);
        let d: Vec<i32> = (0..2000).map(|_| days_between(&mut r, from, to)).collect();
        assert!(dates("service_date", &d).is_empty());
        // One typo in 1919 does not stretch the span.
        let mut d2 = d.clone();
        d2.push(day(1919, 3, 1));
        assert!(dates("service_date", &d2).is_empty());
        // Timestamps with a time of day are events, whatever their span.
        let (from, to) = (day(1960, 1, 1), day(2024, 12, 31));
        let mut s = ColumnSample::new("admit_ts", SampleType::Timestamp);
        for _ in 0..2000 {
            let d = i64::from(days_between(&mut r, from, to));
            s.add(SampleValue::Timestamp(
                d * US_PER_DAY + r.below(US_PER_DAY as u64) as i64,
            ));
        }
        assert!(s.classes(TODAY).is_empty());
        // Dates in the future (expiry dates) are not birth dates.
        let (from, to) = (day(2000, 1, 1), day(2060, 12, 31));
        let d: Vec<i32> = (0..2000).map(|_| days_between(&mut r, from, to)).collect();
        assert!(dates("expires_on", &d).is_empty());
    }

    #[test]
    fn lab_values_and_booleans() {
        let mut s = ColumnSample::new("value_num", SampleType::Float);
        for _ in 0..1000 {
            s.add(SampleValue::Other);
        }
        assert!(s.classes(TODAY).is_empty());
        // Even if floats arrive rendered as text.
        let mut s = ColumnSample::new("value_num", SampleType::Float);
        let v = make(1000, 30, |r, _| {
            format!("{:.1}", r.below(2000) as f64 / 10.0)
        });
        for x in &v {
            s.add(SampleValue::Text(x));
        }
        assert!(s.classes(TODAY).is_empty());
        let mut s = ColumnSample::new("deceased", SampleType::Boolean);
        for _ in 0..1000 {
            s.add(SampleValue::Other);
        }
        assert!(s.classes(TODAY).is_empty());
        let mut s = ColumnSample::new("billed_amount", SampleType::Decimal);
        for _ in 0..1000 {
            s.add(SampleValue::Other);
        }
        assert!(s.classes(TODAY).is_empty());
    }

    #[test]
    fn repeated_denial_reasons_are_not_free_text() {
        let v = make(1000, 31, |r, _| r.pick(DENIALS).to_string());
        assert!(text("denial_reason", &v).is_empty());
    }

    #[test]
    fn repeated_patient_ids_are_not_record_ids() {
        let mut r = Rng::new(32);
        let n: Vec<i64> = (0..2000).map(|_| 1 + r.below(600) as i64).collect();
        assert!(ints("patient_id", &n).is_empty());
    }

    // -- sample size, NULLs, memory ----------------------------------------

    #[test]
    fn fewer_than_twenty_values_give_no_class() {
        let v = make(20, 33, |r, _| {
            format!("9{:02}-45-{:04}", r.below(100), r.below(9999))
        });
        assert!(text("ssn", &v[..19]).is_empty());
        assert_eq!(text("ssn", &v), vec![Ssn]);
    }

    #[test]
    fn nulls_do_not_count_against_shares() {
        let v = make(30, 34, |r, _| {
            format!("9{:02}-45-{:04}", r.below(100), r.below(9999))
        });
        let mut s = ColumnSample::new("ssn", SampleType::Text);
        for (i, x) in v.iter().enumerate() {
            s.add(SampleValue::Text(x));
            for _ in 0..(i % 50) {
                s.add_null();
            }
        }
        for _ in 0..1000 {
            s.add_null();
        }
        assert_eq!(s.sampled(), 30);
        assert_eq!(s.nulls(), 1000 + (0..30).sum::<u64>());
        assert_eq!(s.classes(TODAY), vec![Ssn]);
        // Only NULLs: nothing.
        let mut s = ColumnSample::new("ssn", SampleType::Text);
        (0..500).for_each(|_| s.add_null());
        assert!(s.classes(TODAY).is_empty());
    }

    #[test]
    fn memory_is_bounded_and_uniqueness_survives_the_cap() {
        // The sample is counters plus a bounded hash table: its inline size
        // is small and fixed, and it never holds a value.
        assert!(std::mem::size_of::<ColumnSample>() <= 256);
        let mut s = ColumnSample::new("observation_id", SampleType::Integer);
        for i in 0..1_000_000 {
            s.add(SampleValue::Int(i));
        }
        assert!(s.distinct.tracked_hashes() <= DISTINCT_CAP);
        assert_eq!(s.sampled(), 1_000_000);
        assert_eq!(s.classes(TODAY), vec![RecordId]);
        let est = s.distinct.estimated_distinct();
        assert!((700_000..=1_300_000).contains(&est), "{est}");

        // Every value four times, spread over the whole stream: the repeats
        // are seen even though they come long after the cap was reached.
        let mut s = ColumnSample::new("patient_id", SampleType::Integer);
        for _ in 0..4 {
            for i in 0..250_000 {
                s.add(SampleValue::Int(i));
            }
        }
        assert!(s.distinct.tracked_hashes() <= DISTINCT_CAP);
        assert!(s.classes(TODAY).is_empty());
    }

    #[test]
    fn debug_output_shows_no_values() {
        let v = make(100, 35, |r, _| {
            format!("9{:02}-45-{:04}", r.below(100), r.below(9999))
        });
        let mut s = ColumnSample::new("ssn", SampleType::Text);
        v.iter().for_each(|x| s.add(SampleValue::Text(x)));
        let dbg = format!("{s:?}");
        assert!(v.iter().all(|x| !dbg.contains(x.as_str())), "{dbg}");
        assert!(dbg.contains("sampled: 100"));
    }

    // -- building blocks ------------------------------------------------------

    #[test]
    fn class_names() {
        let names: Vec<&str> = IdClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "ssn",
                "phone",
                "email",
                "mrn",
                "person_name",
                "birth_date",
                "zip5",
                "free_text",
                "record_id"
            ]
        );
        let mut sorted = IdClass::ALL;
        sorted.sort();
        assert_eq!(sorted, IdClass::ALL);
    }

    #[test]
    fn column_name_hints() {
        let h = Hints::from_column_name;
        assert!(h("patient_ssn").ssn && h("PatientSSN").ssn && h("SSNNumber").ssn);
        assert!(h("taxpayer_id").ssn && h("TIN").ssn);
        assert!(!h("business_name").ssn && !h("destination").ssn);
        assert!(h("HomePhone").phone && h("telephone").phone && h("tel").phone);
        assert!(h("CellNumber").phone && h("home_fax").phone);
        assert!(!h("telemetry_id").phone && !h("cellularity").phone);
        assert!(h("DateOfBirth").birth && h("DOB").birth && h("pt_dob").birth);
        assert!(h("ZIPCode").zip && h("zip5").zip && h("postal_code").zip);
        assert!(h("cpt_code").not_zip && h("procedure").not_zip && h("HCPCS").not_zip);
        assert!(!h("residence").not_zip);
        assert!(h("mrn").mrn && h("medical_record_number").mrn && h("ptMRN").mrn);
        assert_eq!(name_tokens("ZIPCode"), ["zip", "code"]);
        assert_eq!(name_tokens("home_phone1"), ["home", "phone", "1"]);
    }

    #[test]
    fn shapes() {
        let mut buf = [0u8; SHAPE_MAX];
        assert!(is_mrn_shape(shape_of("MRN00012345", &mut buf).unwrap()));
        assert!(is_mrn_shape(shape_of("A1234567", &mut buf).unwrap()));
        assert!(is_mrn_shape(shape_of("00412345", &mut buf).unwrap()));
        for no in [
            "E11.9",
            "I10",
            "4548-4",
            "99213",
            "S01",
            "ABCDE1234567",
            "MRN1234",
        ] {
            assert!(!is_mrn_shape(shape_of(no, &mut buf).unwrap()), "{no}");
        }
        assert!(is_phone("(212) 555-0143", false));
        assert!(is_phone("617-555-0143 x12", false));
        assert!(is_phone("+442071838750", false));
        assert!(!is_phone("6175550143", false) && is_phone("6175550143", true));
        assert!(!is_phone("617-55-0143", true));
    }

    #[test]
    fn calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-40_000i64, -1, 0, 59, 60, 11_016, 20_000, 60_000] {
            let (y, m, dd) = civil(d);
            assert_eq!(days_from_civil(y, m, dd), d);
            assert_eq!(i64::from(year_of_day(d)), y);
        }
        assert_eq!(
            parse_text_date("02/29/2000"),
            Some(days_from_civil(2000, 2, 29))
        );
        assert_eq!(parse_text_date("02/29/1900"), None);
        assert_eq!(
            parse_text_date("1985-03-02T00:00:00"),
            Some(days_from_civil(1985, 3, 2))
        );
        assert_eq!(parse_text_date("13/01/1985"), None);
    }

    #[test]
    fn name_lists() {
        assert!(GIVEN_NAMES.len() >= 240, "{}", GIVEN_NAMES.len());
        assert!(SURNAMES.len() >= 240, "{}", SURNAMES.len());
        for n in GIVEN_NAMES.iter().chain(SURNAMES) {
            assert!(
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase()),
                "{n}"
            );
        }
        for w in [
            "april",
            "may",
            "june",
            "august",
            "will",
            "hope",
            "virginia",
            "christian",
        ] {
            assert!(!name_set().contains(w), "{w}");
        }
    }

    /// (year, month, day) of a day number (tests only).
    fn civil(day: i64) -> (i64, u32, u32) {
        let z = day + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}
