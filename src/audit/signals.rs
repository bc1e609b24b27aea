//! Unusual-access signals (SPEC seed: "monitor PHI access patterns and
//! alert on anomalous queries"), computed from completed statements and the
//! patients each one touched (SPEC §9).
//!
//! [`Detector::observe`] takes one completed statement ([`StatementAccess`])
//! and returns the signals it raises:
//!
//! | signal | fires when | how often |
//! |---|---|---|
//! | `patient_volume` | the user's distinct patients of the local day exceed `max(min_patients, factor × baseline)`; baseline = median (or mean) of the user's daily counts on active days of the previous `baseline_days` days; a user with no such day (new, or back after a long absence) is held to `min_patients` alone | once per user per local day |
//! | `off_hours` | the statement touched a patient outside the working hours (`work_start`–`work_end` local time on `work_days`, in `time_zone`) | per statement |
//! | `break_glass_frequency` | the user's break-glass statements in the rolling 24 h ending at this one exceed `break_glass_per_day` | at most once per user per 24 h |
//! | `cross_site_read` | a user with a site, not under break-glass, was returned a patient the directory places at another site | per statement |
//! | `shared_surname` | a returned patient's surname key equals the user's | per statement |
//!
//! "Touched" is `returned` by default, or `returned ∪ aggregated`
//! (`touched = "returned_or_aggregated"`); it is what `patient_volume` and
//! `off_hours` count. `cross_site_read` and `shared_surname` look at
//! `returned` only (an aggregate discloses no one's row).
//!
//! Nothing here keeps a name or a data value: patients are 64-bit ids in
//! roaring bitmaps, surnames are keyed hashes ([`surname_key`]), and a
//! signal's `detail` holds numbers (counts, thresholds, a local time of
//! day) only.
//!
//! State is bounded: per user, the open day's patient set (closed, down to
//! its count, once a day has passed without the user), at most
//! `baseline_days` daily counts, the break-glass times of the last 24 h
//! (at most [`BREAK_GLASS_WINDOW_CAP`]); a user not seen for more than
//! `baseline_days` days is forgotten. Days are local days of `time_zone`.
//!
//! A [`Detector`] is a single-threaded state machine (`Send`, not shared):
//! feed it from one task, in roughly completion order. A statement whose
//! timestamp falls on a day earlier than the user's open day (it started
//! before midnight and finished after another statement of the new day) is
//! counted in the open day; one for a day already closed is left out of
//! `patient_volume`.

// Until the audit feeds a detector, only the tests use this module.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDateTime, NaiveTime, Timelike, Utc, Weekday};
use datafusion::arrow::array::timezone::Tz;
use hmac::{Hmac, Mac};
use roaring::RoaringTreemap;
use serde::Deserialize;
use sha2::Sha256;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The most break-glass times kept per user (the rolling 24 h window); a
/// `break_glass_frequency` detail then says "at least".
pub(crate) const BREAK_GLASS_WINDOW_CAP: usize = 4096;
/// Aggregate-only statements per user kept for the differencing signal.
pub(crate) const AGGREGATE_WINDOW: usize = 16;
/// How far back the differencing signal compares (one hour).
const AGGREGATE_WINDOW_MICROS: i64 = 3_600_000_000;

/// The largest `break_glass_per_day` accepted.
const MAX_BREAK_GLASS_PER_DAY: u32 = 1000;

/// The largest `baseline_days` accepted.
const MAX_BASELINE_DAYS: u32 = 366;

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Which patients of a statement count as touched for `patient_volume` and
/// `off_hours`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Touched {
    /// Patients with a row that reached the client.
    #[default]
    Returned,
    /// Those and the patients that only contributed to aggregates.
    ReturnedOrAggregated,
}

/// How a user's daily counts make a baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineStat {
    /// Robust to the odd heavy day (and to earlier anomalies).
    #[default]
    Median,
    Mean,
}

/// The signals' settings. Every field has a default; [`Self::problems`]
/// lists what is wrong with a configuration ([`Detector::new`] refuses it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    /// What `patient_volume` and `off_hours` count.
    pub touched: Touched,
    /// The zone of working hours and of days: a UTC offset (`+01:00`,
    /// `-0500`, `+09`) or an IANA zone name (`Europe/Paris`, `UTC`).
    pub time_zone: String,
    /// Start of working hours, local `HH:MM`, inclusive.
    pub work_start: String,
    /// End of working hours, local `HH:MM`, exclusive. Earlier than
    /// `work_start`: the shift runs past midnight (its weekday is the
    /// day it starts). Equal to `work_start`: working days are worked
    /// around the clock (all seven days and `00:00`–`00:00` turn
    /// `off_hours` off).
    pub work_end: String,
    /// Working weekdays: `mon` … `sun`.
    pub work_days: Vec<String>,
    /// The baseline covers the user's active days (days with at least one
    /// patient touched) among this many days before the current one.
    pub baseline_days: u32,
    pub baseline: BaselineStat,
    /// `patient_volume` fires above `factor` × baseline …
    pub factor: f64,
    /// … and never at or below this many patients (the only bound for a
    /// user without baseline).
    pub min_patients: u64,
    /// `break_glass_frequency` fires when a user's break-glass statements
    /// in 24 h exceed this.
    pub break_glass_per_day: u32,
    /// Where the cross-site and shared-surname signals read each patient's
    /// site and surname (read by lakeward itself, never shown; an empty
    /// table name turns both signals off), and how often it is re-read.
    pub patients_table: String,
    pub patient_key: String,
    pub site_column: String,
    pub surname_column: String,
    pub directory_refresh_secs: u64,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            touched: Touched::Returned,
            time_zone: "UTC".to_owned(),
            work_start: "07:00".to_owned(),
            work_end: "19:00".to_owned(),
            work_days: WEEKDAYS[..5].iter().map(|d| (*d).to_owned()).collect(),
            baseline_days: 30,
            baseline: BaselineStat::Median,
            factor: 3.0,
            min_patients: 50,
            break_glass_per_day: 3,
            patients_table: "clinical.patients".to_owned(),
            patient_key: "patient_id".to_owned(),
            site_column: "site_id".to_owned(),
            surname_column: "last_name".to_owned(),
            directory_refresh_secs: 600,
        }
    }
}

/// The parts of a configuration the detector works with.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    tz: Tz,
    start: NaiveTime,
    end: NaiveTime,
    /// Indexed by days from Monday.
    days: [bool; 7],
}

impl SignalConfig {
    /// Every problem of this configuration (empty: valid), each naming its
    /// field (the caller prefixes the section).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = self.resolve().err().unwrap_or_default();
        use crate::policy::ident::is_plain_ident;
        let table_ok = self.patients_table.is_empty()
            || self
                .patients_table
                .split_once('.')
                .is_some_and(|(s, t)| is_plain_ident(s) && is_plain_ident(t));
        if !table_ok {
            problems.push("patients_table must be schema.table (or empty: off)".to_owned());
        }
        for (field, v) in [
            ("patient_key", &self.patient_key),
            ("site_column", &self.site_column),
            ("surname_column", &self.surname_column),
        ] {
            if !is_plain_ident(v) {
                problems.push(format!("{field} must be a plain column name"));
            }
        }
        problems
    }

    fn resolve(&self) -> Result<Resolved, Vec<String>> {
        let mut problems = Vec::new();
        let tz = Tz::from_str(&self.time_zone)
            .map_err(|_| {
                problems.push(format!(
                    "time_zone {:?} is neither a UTC offset (+01:00) nor an IANA zone name (Europe/Paris)",
                    self.time_zone
                ))
            })
            .ok();
        let mut time = |field: &str, v: &str| {
            let t = NaiveTime::parse_from_str(v, "%H:%M").ok();
            if t.is_none() {
                problems.push(format!("{field} {v:?} is not a time of day HH:MM"));
            }
            t
        };
        let start = time("work_start", &self.work_start);
        let end = time("work_end", &self.work_end);
        let mut days = [false; 7];
        for d in &self.work_days {
            match WEEKDAYS.iter().position(|w| w == d) {
                Some(i) => days[i] = true,
                None => problems.push(format!(
                    "work_days: {d:?} is not one of mon, tue, wed, thu, fri, sat, sun"
                )),
            }
        }
        if !(1..=MAX_BASELINE_DAYS).contains(&self.baseline_days) {
            problems.push(format!(
                "baseline_days must be between 1 and {MAX_BASELINE_DAYS}"
            ));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            problems.push("factor must be a number greater than 0".to_owned());
        }
        if self.break_glass_per_day > MAX_BREAK_GLASS_PER_DAY {
            problems.push(format!(
                "break_glass_per_day must be at most {MAX_BREAK_GLASS_PER_DAY}"
            ));
        }
        match (tz, start, end) {
            (Some(tz), Some(start), Some(end)) if problems.is_empty() => Ok(Resolved {
                tz,
                start,
                end,
                days,
            }),
            _ => Err(problems),
        }
    }
}

// ---------------------------------------------------------------------------
// Surname keys
// ---------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a surname key is never equal to a pseudonym or any
/// other HMAC made with the same key.
const SURNAME_DOMAIN: &[u8] = b"lakeward-surname:";

/// Surname keys under one secret key, for hashing many surnames (a
/// directory of every patient). Keeps the keyed MAC state, not the key.
#[derive(Clone)]
pub struct SurnameKeyer {
    mac: HmacSha256,
}

impl std::fmt::Debug for SurnameKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SurnameKeyer")
    }
}

impl SurnameKeyer {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
            .expect("HMAC-SHA-256 accepts keys of any length");
        mac.update(SURNAME_DOMAIN);
        SurnameKeyer { mac }
    }

    /// See [`surname_key`].
    pub(crate) fn key(&self, surname: &str) -> Option<u64> {
        let mut mac = self.mac.clone();
        let mut buf = [0u8; 4];
        let mut any = false;
        for c in surname
            .chars()
            .flat_map(char::to_lowercase)
            .filter(|c| c.is_alphabetic())
        {
            let (folded, n) = match c {
                'ς' => (['σ', 'σ'], 1),
                'ß' => (['s', 's'], 2),
                c => ([c, c], 1),
            };
            for c in &folded[..n] {
                mac.update(c.encode_utf8(&mut buf).as_bytes());
            }
            any = true;
        }
        if !any {
            return None;
        }
        let tag = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        Some(u64::from_be_bytes(first))
    }
}

/// The keyed hash `shared_surname` compares: the first 8 bytes (big-endian)
/// of `HMAC-SHA-256(key, "lakeward-surname:" || normalised)`, where
/// normalised is the surname Unicode-lowercased with every character that
/// is not a letter dropped (spaces, hyphens, apostrophes, digits: `"
/// O'Brien-Smith "` and `"obriensmith"` are one key), and the two case
/// foldings lowercase misses in names: final sigma `ς` is `σ`, `ß` is
/// `ss` (`ΣΩΚΡΑΤΗΣ`/`Σωκρατης`, `STRASSE`/`Straße`). No letter left: no
/// key. Precomposed and decomposed accents differ (a combining accent is
/// dropped, a precomposed letter kept): give NFC text, as stored text
/// usually is; a mismatch only misses a signal.
///
/// The user's key and the directory's patient keys must come from the same
/// secret key. Keep that key out of the policy and the audit: with it, a
/// guessed surname can be checked against a hash.
#[cfg(test)]
pub(crate) fn surname_key(key: &[u8], surname: &str) -> Option<u64> {
    SurnameKeyer::new(key).key(surname)
}

// ---------------------------------------------------------------------------
// Inputs and outputs
// ---------------------------------------------------------------------------

/// What the signals need to know about patients, by patient id.
pub(crate) trait PatientDirectory {
    /// The patient's site, if known.
    fn site(&self, patient: i64) -> Option<&str>;
    /// The patient's [`surname_key`], if the patient has one.
    fn surname_key(&self, patient: i64) -> Option<u64>;
}

/// One completed statement and the patients it touched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatementAccess<'a> {
    /// The statement's audit event.
    pub(crate) event_id: &'a str,
    pub(crate) user: &'a str,
    /// The statement's time, microseconds since the Unix epoch (UTC).
    pub(crate) ts_micros: i64,
    /// The user's site, for users scoped to one (clinicians).
    pub(crate) user_site: Option<&'a str>,
    /// [`surname_key`] of the user's surname.
    pub(crate) user_surname_key: Option<u64>,
    /// The statement ran under break-glass.
    pub(crate) break_glass: bool,
    /// Patients with a row that reached the client (ids cast bit for bit
    /// from `i64`).
    pub(crate) returned: &'a RoaringTreemap,
    /// Patients that only contributed to aggregates.
    pub(crate) aggregated: &'a RoaringTreemap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SignalKind {
    PatientVolume,
    OffHours,
    BreakGlassFrequency,
    CrossSiteRead,
    SharedSurname,
    AggregateDifferencing,
}

impl SignalKind {
    /// Every kind, in the order [`Detector::observe`] reports them.
    #[cfg(test)]
    pub(crate) const ALL: [SignalKind; 6] = [
        SignalKind::PatientVolume,
        SignalKind::OffHours,
        SignalKind::BreakGlassFrequency,
        SignalKind::CrossSiteRead,
        SignalKind::SharedSurname,
        SignalKind::AggregateDifferencing,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SignalKind::PatientVolume => "patient_volume",
            SignalKind::OffHours => "off_hours",
            SignalKind::BreakGlassFrequency => "break_glass_frequency",
            SignalKind::CrossSiteRead => "cross_site_read",
            SignalKind::SharedSurname => "shared_surname",
            SignalKind::AggregateDifferencing => "aggregate_differencing",
        }
    }
}

impl std::fmt::Display for SignalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One unusual-access signal, raised by the statement `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signal {
    pub(crate) kind: SignalKind,
    pub(crate) user: String,
    pub(crate) event_id: String,
    pub(crate) ts_micros: i64,
    /// How many patients the signal concerns: the day's distinct patients
    /// (`patient_volume`), the statement's touched patients (`off_hours`,
    /// `break_glass_frequency`), the returned patients of other sites
    /// (`cross_site_read`) or sharing the user's surname (`shared_surname`).
    pub(crate) patients: u64,
    /// Numbers only (counts, thresholds, local time of day), never a name
    /// or a data value.
    pub(crate) detail: String,
}

// ---------------------------------------------------------------------------
// Detector
// ---------------------------------------------------------------------------

/// The unusual-access detector: per-user state over the statements it is
/// fed (see the module docs).
pub(crate) struct Detector {
    cfg: SignalConfig,
    r: Resolved,
    users: HashMap<String, UserState>,
    /// The newest local day seen (days from the common era).
    newest_day: Option<i32>,
}

struct UserState {
    /// The newest local day the user was seen.
    last_day: i32,
    /// The newest day closed (moved to `history`), `i32::MIN` if none.
    last_closed: i32,
    open: Option<OpenDay>,
    /// Distinct patients of closed days with at least one, oldest first,
    /// within `baseline_days` of the newest day.
    history: VecDeque<(i32, u64)>,
    /// Break-glass statement times, sorted, within 24 h of the newest.
    break_glass: VecDeque<i64>,
    break_glass_fired: Option<i64>,
    /// The patients of the user's recent aggregate-only statements under an
    /// aggregation policy, with their times, newest last.
    aggregates: VecDeque<(i64, RoaringTreemap)>,
}

struct OpenDay {
    day: i32,
    touched: RoaringTreemap,
    fired: bool,
    /// `(baseline, active days)` from `history` when the day opened.
    baseline: Option<(f64, usize)>,
    /// `patient_volume` fires above this.
    threshold: u64,
}

impl UserState {
    fn new(day: i32) -> Self {
        UserState {
            last_day: day,
            last_closed: i32::MIN,
            open: None,
            history: VecDeque::new(),
            break_glass: VecDeque::new(),
            break_glass_fired: None,
            aggregates: VecDeque::new(),
        }
    }

    /// Move the open day's count to the history.
    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            let n = o.touched.len();
            if n > 0 {
                self.history.push_back((o.day, n));
            }
            self.last_closed = o.day;
        }
    }

    fn prune(&mut self, oldest_kept: i32) {
        while self.history.front().is_some_and(|&(d, _)| d < oldest_kept) {
            self.history.pop_front();
        }
    }

    /// The day a statement of `day` counts in, opened if need be; `None`
    /// for a day already closed.
    fn day_for(&mut self, day: i32, cfg: &SignalConfig) -> Option<&mut OpenDay> {
        let open_day = self.open.as_ref().map(|o| o.day);
        if open_day.is_some_and(|d| d >= day) {
            return self.open.as_mut();
        }
        if open_day.is_none() && day <= self.last_closed {
            return None;
        }
        self.close();
        self.prune(day - cfg.baseline_days as i32);
        let baseline = baseline(cfg.baseline, self.history.iter().map(|&(_, n)| n));
        let threshold = match baseline {
            // `n > factor × b` ⟺ `n > ⌊factor × b⌋` for whole n; the cast
            // saturates.
            Some((b, _)) => cfg.min_patients.max((cfg.factor * b).floor() as u64),
            None => cfg.min_patients,
        };
        Some(self.open.insert(OpenDay {
            day,
            touched: RoaringTreemap::new(),
            fired: false,
            baseline,
            threshold,
        }))
    }
}

/// The baseline of daily counts and how many days it covers; `None`
/// without any day.
fn baseline(stat: BaselineStat, counts: impl Iterator<Item = u64>) -> Option<(f64, usize)> {
    let mut v: Vec<u64> = counts.collect();
    if v.is_empty() {
        return None;
    }
    let b = match stat {
        BaselineStat::Mean => v.iter().map(|&n| n as f64).sum::<f64>() / v.len() as f64,
        BaselineStat::Median => {
            v.sort_unstable();
            let m = v.len() / 2;
            if v.len() % 2 == 1 {
                v[m] as f64
            } else {
                (v[m - 1] as f64 + v[m] as f64) / 2.0
            }
        }
    };
    Some((b, v.len()))
}

impl Detector {
    /// A detector with no history. Errors list every problem of `cfg`
    /// ([`SignalConfig::problems`]), joined by `; `.
    pub(crate) fn new(cfg: SignalConfig) -> Result<Self, String> {
        let r = cfg.resolve().map_err(|p| p.join("; "))?;
        Ok(Detector {
            cfg,
            r,
            users: HashMap::new(),
            newest_day: None,
        })
    }

    /// Users with state (for tests and a gauge).
    #[cfg(test)]
    pub(crate) fn tracked_users(&self) -> usize {
        self.users.len()
    }

    /// The signals `s` raises, in [`SignalKind::ALL`] order. Cost: the
    /// union of the touched set into the user's day, plus one pass over
    /// `returned` when the user has a site (and no break-glass) or a
    /// surname key; no allocation per patient.
    pub(crate) fn observe(
        &mut self,
        s: &StatementAccess<'_>,
        dir: &dyn PatientDirectory,
    ) -> Vec<Signal> {
        let mut out = Vec::new();
        let both = self.cfg.touched == Touched::ReturnedOrAggregated;
        let touched = if both {
            s.returned.union_len(s.aggregated)
        } else {
            s.returned.len()
        };
        let signal = |kind, patients, detail| Signal {
            kind,
            user: s.user.to_owned(),
            event_id: s.event_id.to_owned(),
            ts_micros: s.ts_micros,
            patients,
            detail,
        };

        // Time-based signals (a timestamp chrono cannot place has none).
        if let Some(local) = DateTime::<Utc>::from_timestamp_micros(s.ts_micros)
            .map(|t| t.with_timezone(&self.r.tz).naive_local())
        {
            let day = local.date().num_days_from_ce();
            self.advance(day);
            let cfg = &self.cfg;
            if !self.users.contains_key(s.user) {
                self.users.insert(s.user.to_owned(), UserState::new(day));
            }
            let user = self.users.get_mut(s.user).expect("just inserted");
            user.last_day = user.last_day.max(day);

            if let Some(o) = user.day_for(day, cfg) {
                o.touched |= s.returned;
                if both {
                    o.touched |= s.aggregated;
                }
                let n = o.touched.len();
                if !o.fired && n > o.threshold {
                    o.fired = true;
                    let detail = match o.baseline {
                        Some((b, days)) => format!(
                            "{n} patients today, baseline {b:.1} ({} of {days} active days), threshold {}",
                            match cfg.baseline {
                                BaselineStat::Median => "median",
                                BaselineStat::Mean => "mean",
                            },
                            o.threshold
                        ),
                        None => format!(
                            "{n} patients today, no baseline yet, threshold {}",
                            o.threshold
                        ),
                    };
                    out.push(signal(SignalKind::PatientVolume, n, detail));
                }
            }

            if touched > 0 && !working(&self.r, local) {
                let detail = format!(
                    "{touched} patients at {:02}:{:02} local time ({}), working hours {}-{}",
                    local.hour(),
                    local.minute(),
                    WEEKDAYS[local.weekday().num_days_from_monday() as usize],
                    self.r.start.format("%H:%M"),
                    self.r.end.format("%H:%M"),
                );
                out.push(signal(SignalKind::OffHours, touched, detail));
            }

            if s.break_glass {
                let limit = cfg.break_glass_per_day as usize;
                let ts = s.ts_micros;
                let w = &mut user.break_glass;
                let at = w.partition_point(|&t| t <= ts);
                w.insert(at, ts);
                let newest = *w.back().expect("just inserted");
                while w.front().is_some_and(|&t| t <= newest - MICROS_PER_DAY) {
                    w.pop_front();
                }
                while w.len() > BREAK_GLASS_WINDOW_CAP {
                    w.pop_front();
                }
                // The rolling 24 h ending at this statement: (ts − 24 h, ts].
                let count = w.partition_point(|&t| t <= ts)
                    - w.partition_point(|&t| t <= ts - MICROS_PER_DAY);
                let rested = user
                    .break_glass_fired
                    .is_none_or(|f| ts >= f + MICROS_PER_DAY);
                if count > limit && rested {
                    user.break_glass_fired = Some(ts);
                    let at_least = if w.len() == BREAK_GLASS_WINDOW_CAP {
                        "at least "
                    } else {
                        ""
                    };
                    let detail =
                        format!("{at_least}{count} break-glass statements in 24 h, limit {limit}");
                    out.push(signal(SignalKind::BreakGlassFrequency, touched, detail));
                }
            }
        }

        // Returned-patient signals: one pass over `returned`.
        let site = s.user_site.filter(|_| !s.break_glass);
        let surname = s.user_surname_key;
        if (site.is_some() || surname.is_some()) && !s.returned.is_empty() {
            let (mut other_site, mut same_surname) = (0u64, 0u64);
            for p in s.returned.iter() {
                let p = p as i64;
                if let Some(us) = site
                    && dir.site(p).is_some_and(|ps| ps != us)
                {
                    other_site += 1;
                }
                if let Some(k) = surname
                    && dir.surname_key(p) == Some(k)
                {
                    same_surname += 1;
                }
            }
            let returned = s.returned.len();
            if other_site > 0 {
                let detail = format!(
                    "{other_site} of {returned} returned patients belong to other sites, no break-glass"
                );
                out.push(signal(SignalKind::CrossSiteRead, other_site, detail));
            }
            if same_surname > 0 {
                let detail = format!(
                    "{same_surname} of {returned} returned patients share the user's surname"
                );
                out.push(signal(SignalKind::SharedSurname, same_surname, detail));
            }
        }
        out
    }

    /// The differencing signal of a statement run under an aggregation
    /// policy of minimum `min` (SPEC §8): two aggregate-only statements of
    /// one user within an hour whose patient sets, each of at least `min`
    /// patients, differ by 1 to `min` − 1 patients — the shape of a
    /// differencing attack (a cohort, then the same cohort without one
    /// patient), which per-statement suppression cannot stop. Compared
    /// with the user's last [`AGGREGATE_WINDOW`] such statements; one
    /// compressed-bitmap symmetric difference each.
    pub(crate) fn observe_aggregate(
        &mut self,
        s: &StatementAccess<'_>,
        min: u32,
    ) -> Option<Signal> {
        if !s.returned.is_empty() || s.aggregated.len() < u64::from(min) {
            return None;
        }
        let day = DateTime::<Utc>::from_timestamp_micros(s.ts_micros)?
            .with_timezone(&self.r.tz)
            .date_naive()
            .num_days_from_ce();
        let user = self
            .users
            .entry(s.user.to_owned())
            .or_insert_with(|| UserState::new(day));
        let recent = &mut user.aggregates;
        while recent
            .front()
            .is_some_and(|(t, _)| *t <= s.ts_micros - AGGREGATE_WINDOW_MICROS)
        {
            recent.pop_front();
        }
        let closest = recent
            .iter()
            .filter_map(|(t, set)| {
                let d = set.symmetric_difference_len(s.aggregated);
                (d > 0 && d < u64::from(min)).then_some((d, *t))
            })
            .min();
        recent.push_back((s.ts_micros, s.aggregated.clone()));
        while recent.len() > AGGREGATE_WINDOW {
            recent.pop_front();
        }
        let (d, t) = closest?;
        Some(Signal {
            kind: SignalKind::AggregateDifferencing,
            user: s.user.to_owned(),
            event_id: s.event_id.to_owned(),
            ts_micros: s.ts_micros,
            patients: d,
            detail: format!(
                "two aggregates {} s apart differ by {d} patients, minimum group size {min}",
                (s.ts_micros - t).max(0) / 1_000_000
            ),
        })
    }

    /// On a new newest day: forget users idle for more than
    /// `baseline_days`, close days the users have left behind (their
    /// patient sets become counts), drop counts out of every baseline.
    fn advance(&mut self, day: i32) {
        if self.newest_day.is_some_and(|n| n >= day) {
            return;
        }
        self.newest_day = Some(day);
        let oldest_kept = day - self.cfg.baseline_days as i32;
        self.users.retain(|_, u| {
            if u.last_day < oldest_kept {
                return false;
            }
            if u.open.as_ref().is_some_and(|o| o.day < day - 1) {
                u.close();
            }
            u.prune(oldest_kept);
            true
        });
    }
}

/// Is local time `t` within working hours?
fn working(r: &Resolved, t: NaiveDateTime) -> bool {
    let (time, wd) = (t.time(), t.weekday());
    let works = |d: Weekday| r.days[d.num_days_from_monday() as usize];
    if r.start == r.end {
        works(wd)
    } else if r.start < r.end {
        works(wd) && r.start <= time && time < r.end
    } else {
        // Overnight: the evening of a working day, or the morning after.
        (works(wd) && time >= r.start) || (works(wd.pred()) && time < r.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const KEY: &[u8] = b"surname test key";

    /// UTC microseconds of a wall-clock time (2024-01-01 is a Monday).
    fn ts(y: i32, m: u32, d: u32, h: u32, mi: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    fn set(ids: impl IntoIterator<Item = i64>) -> RoaringTreemap {
        ids.into_iter().map(|p| p as u64).collect()
    }

    #[derive(Default)]
    struct Dir {
        sites: HashMap<i64, String>,
        surnames: HashMap<i64, u64>,
    }

    impl PatientDirectory for Dir {
        fn site(&self, patient: i64) -> Option<&str> {
            self.sites.get(&patient).map(String::as_str)
        }
        fn surname_key(&self, patient: i64) -> Option<u64> {
            self.surnames.get(&patient).copied()
        }
    }

    /// Off-hours never fires: every day worked around the clock.
    fn quiet() -> SignalConfig {
        SignalConfig {
            work_start: "00:00".into(),
            work_end: "00:00".into(),
            work_days: WEEKDAYS.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn stmt<'a>(
        user: &'a str,
        ts_micros: i64,
        returned: &'a RoaringTreemap,
        aggregated: &'a RoaringTreemap,
    ) -> StatementAccess<'a> {
        StatementAccess {
            event_id: "ev",
            user,
            ts_micros,
            user_site: None,
            user_surname_key: None,
            break_glass: false,
            returned,
            aggregated,
        }
    }

    /// The kinds `user` raises by returning `returned` at `at`.
    fn kinds_of(
        det: &mut Detector,
        user: &str,
        at: i64,
        returned: &RoaringTreemap,
    ) -> Vec<SignalKind> {
        let none = RoaringTreemap::new();
        det.observe(&stmt(user, at, returned, &none), &Dir::default())
            .into_iter()
            .map(|s| s.kind)
            .collect()
    }

    const VOL: &[SignalKind] = &[SignalKind::PatientVolume];

    // --- surname keys -----------------------------------------------------

    #[test]
    fn surname_keys_are_normalised() {
        let k = |s| surname_key(KEY, s);
        assert!(k("obrien").is_some());
        assert_eq!(k("  O'Brien "), k("obrien"));
        assert_eq!(k("OBRIEN"), k("obrien"));
        assert_eq!(k("Smith-Jones"), k("smith jones"));
        assert_eq!(k("Smith-Jones"), k("SMITHJONES2"));
        assert_eq!(k("MÜLLER"), k("müller"));
        assert_eq!(k("ΣΩΚΡΆΤΗΣ"), k("Σωκράτης"));
        assert_eq!(k("STRASSE"), k("Straße"));
        assert_ne!(k("müller"), k("muller"));
        assert_ne!(k("smith"), k("smyth"));
        assert_eq!(k(""), None);
        assert_eq!(k("   "), None);
        assert_eq!(k("12-3 '"), None);
    }

    #[test]
    fn surname_keys_depend_on_the_key() {
        let a = surname_key(b"key one", "Garcia").unwrap();
        let b = surname_key(b"key two", "Garcia").unwrap();
        assert_ne!(a, b);
        // The reusable keyer gives the function's value.
        let keyer = SurnameKeyer::new(b"key one");
        assert_eq!(keyer.key("garcia"), Some(a));
        assert_eq!(format!("{keyer:?}"), "SurnameKeyer");
    }

    // --- configuration ----------------------------------------------------

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = SignalConfig::default();
        assert!(c.problems().is_empty());
        assert_eq!(c.touched, Touched::Returned);
        assert_eq!(
            (c.work_start.as_str(), c.work_end.as_str()),
            ("07:00", "19:00")
        );
        assert_eq!(c.work_days, ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!(c.time_zone, "UTC");
        assert_eq!(c.baseline_days, 30);
        assert_eq!(c.baseline, BaselineStat::Median);
        assert_eq!(c.factor, 3.0);
        assert_eq!(c.min_patients, 50);
        assert_eq!(c.break_glass_per_day, 3);
        // An empty TOML section is the default.
        assert_eq!(toml::from_str::<SignalConfig>("").unwrap(), c);
    }

    #[test]
    fn config_from_toml_and_its_problems() {
        let c: SignalConfig = toml::from_str(
            r#"
            touched = "returned_or_aggregated"
            time_zone = "Europe/Paris"
            work_days = ["mon", "sat"]
            baseline = "mean"
            factor = 2.5
            "#,
        )
        .unwrap();
        assert_eq!(c.touched, Touched::ReturnedOrAggregated);
        assert_eq!(c.baseline, BaselineStat::Mean);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(toml::from_str::<SignalConfig>("factr = 2.0").is_err());

        let bad = SignalConfig {
            time_zone: "Mars/Olympus".into(),
            work_start: "25:00".into(),
            work_end: "7pm".into(),
            work_days: vec!["monday".into()],
            baseline_days: 0,
            factor: f64::NAN,
            break_glass_per_day: 5000,
            ..Default::default()
        };
        let p = bad.problems();
        assert_eq!(p.len(), 7, "{p:?}");
        for field in [
            "time_zone",
            "work_start",
            "work_end",
            "work_days",
            "baseline_days",
            "factor",
            "break_glass_per_day",
        ] {
            assert!(p.iter().any(|m| m.starts_with(field)), "{field}: {p:?}");
        }
        let err = Detector::new(bad).err().unwrap();
        assert!(err.contains("; "));
        for tz in ["+01:00", "-0530", "+09", "UTC", "America/New_York"] {
            let c = SignalConfig {
                time_zone: tz.into(),
                ..Default::default()
            };
            assert!(c.problems().is_empty(), "{tz}");
        }
    }

    #[test]
    fn kinds_are_named() {
        let names: Vec<_> = SignalKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "patient_volume",
                "off_hours",
                "break_glass_frequency",
                "cross_site_read",
                "shared_surname",
                "aggregate_differencing"
            ]
        );
        assert_eq!(SignalKind::OffHours.to_string(), "off_hours");
    }

    #[test]
    fn detector_is_send() {
        fn send<T: Send>() {}
        send::<Detector>();
    }

    // --- aggregate_differencing -------------------------------------------

    #[test]
    fn two_aggregates_differing_by_a_few_patients_are_flagged() {
        let mut det = Detector::new(quiet()).unwrap();
        let none = RoaringTreemap::new();
        let t = ts(2024, 1, 1, 9, 0);
        let cohort = set(0..100);
        let all_but_one = set(1..100);
        // The first aggregate is the baseline of the comparison.
        assert!(
            det.observe_aggregate(&stmt("u", t, &none, &cohort), 11)
                .is_none()
        );
        // Another user's aggregate is compared with their own only.
        assert!(
            det.observe_aggregate(&stmt("v", t + 1, &none, &all_but_one), 11)
                .is_none()
        );
        let s = det
            .observe_aggregate(&stmt("u", t + 60_000_000, &none, &all_but_one), 11)
            .expect("a cohort and the cohort without one patient");
        assert_eq!((s.kind, s.patients), (SignalKind::AggregateDifferencing, 1));
        assert_eq!(
            s.detail,
            "two aggregates 60 s apart differ by 1 patients, minimum group size 11"
        );
        // One far from the others: nothing.
        assert!(
            det.observe_aggregate(&stmt("u", t + 62_000_000, &none, &set(0..500)), 11)
                .is_none()
        );
        // Statements that returned rows, or sets under the minimum, are not
        // aggregates under the policy.
        let few = set(0..5);
        assert!(
            det.observe_aggregate(&stmt("u", t + 63_000_000, &few, &set(2..100)), 11)
                .is_none()
        );
        assert!(
            det.observe_aggregate(&stmt("u", t + 64_000_000, &none, &few), 11)
                .is_none()
        );
        // More than an hour apart: not compared.
        let later = t + 2 * 3_600_000_000;
        assert!(
            det.observe_aggregate(&stmt("u", later, &none, &set(2..100)), 11)
                .is_none()
        );
    }

    // --- patient_volume ---------------------------------------------------

    #[test]
    fn new_user_is_held_to_min_patients_once_a_day() {
        let mut det = Detector::new(quiet()).unwrap();
        let t = ts(2024, 1, 1, 9, 0);
        assert!(kinds_of(&mut det, "u", t, &set(0..30)).is_empty());
        // Patients already counted today do not count again: 50 distinct.
        assert!(kinds_of(&mut det, "u", t + 1, &set(10..50)).is_empty());
        let none = RoaringTreemap::new();
        let one = set([50]);
        let sigs = det.observe(&stmt("u", t + 2, &one, &none), &Dir::default());
        assert_eq!(sigs.len(), 1);
        let s = &sigs[0];
        assert_eq!(s.kind, SignalKind::PatientVolume);
        assert_eq!((s.patients, s.user.as_str(), s.ts_micros), (51, "u", t + 2));
        assert_eq!(s.detail, "51 patients today, no baseline yet, threshold 50");
        // Once per day.
        assert!(kinds_of(&mut det, "u", t + 3, &set(100..1000)).is_empty());
        // Another user has their own count.
        assert!(kinds_of(&mut det, "v", t + 4, &set(0..50)).is_empty());
    }

    #[test]
    fn baseline_median_times_factor() {
        let mut det = Detector::new(quiet()).unwrap();
        // A new user's first day is held to min_patients alone; from the
        // second on, the baseline is 100 (threshold 300).
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 1, 10, 0), &set(0..100)),
            VOL
        );
        for d in 2..=5 {
            assert!(kinds_of(&mut det, "u", ts(2024, 1, d, 10, 0), &set(0..100)).is_empty());
        }
        // Baseline 100 → threshold 300.
        let t = ts(2024, 1, 6, 10, 0);
        assert!(kinds_of(&mut det, "u", t, &set(0..300)).is_empty());
        let none = RoaringTreemap::new();
        let more = set(300..301);
        let sigs = det.observe(&stmt("u", t + 1, &more, &none), &Dir::default());
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].patients, 301);
        assert_eq!(
            sigs[0].detail,
            "301 patients today, baseline 100.0 (median of 5 active days), threshold 300"
        );
        assert!(kinds_of(&mut det, "u", t + 2, &set(0..5000)).is_empty());
        // Next day: the median of [100 ×5, 5000] is still 100.
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 7, 10, 0), &set(0..300)).is_empty());
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 7, 11, 0), &set(0..301)),
            VOL
        );
    }

    #[test]
    fn min_patients_bounds_a_small_baseline() {
        let mut det = Detector::new(quiet()).unwrap();
        kinds_of(&mut det, "u", ts(2024, 1, 1, 10, 0), &set(0..5));
        // Baseline 5 → factor gives 15, min_patients 50 holds.
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 2, 10, 0), &set(0..50)).is_empty());
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 2, 11, 0), &set([50])),
            VOL
        );
    }

    #[test]
    fn median_and_mean_baselines() {
        let run = |stat| {
            let mut det = Detector::new(SignalConfig {
                baseline: stat,
                ..quiet()
            })
            .unwrap();
            for (d, n) in [(1, 10), (2, 10), (3, 10), (4, 10), (5, 1000)] {
                kinds_of(&mut det, "u", ts(2024, 1, d, 10, 0), &set(0..n));
            }
            kinds_of(&mut det, "u", ts(2024, 1, 6, 10, 0), &set(0..60))
        };
        // Median 10: threshold 50; mean 208: threshold 624.
        assert_eq!(run(BaselineStat::Median), VOL);
        assert!(run(BaselineStat::Mean).is_empty());
        assert_eq!(
            baseline(BaselineStat::Median, [4u64, 1, 3, 2].into_iter()),
            Some((2.5, 4))
        );
        assert_eq!(baseline(BaselineStat::Mean, std::iter::empty()), None);
    }

    #[test]
    fn baseline_covers_only_recent_active_days() {
        let cfg = SignalConfig {
            baseline_days: 3,
            ..quiet()
        };
        // Within the window: baseline 1000 (threshold 3000).
        let mut det = Detector::new(cfg.clone()).unwrap();
        kinds_of(&mut det, "u", ts(2024, 1, 1, 10, 0), &set(0..1000));
        kinds_of(&mut det, "u", ts(2024, 1, 2, 10, 0), &set(0..1000));
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 4, 10, 0), &set(0..2000)).is_empty());
        // Days 2 and 4 make the baseline of day 5 (day 1 is out): median
        // 1500, threshold 4500.
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 5, 10, 0), &set(0..4500)).is_empty());
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 5, 11, 0), &set([4500])),
            VOL
        );

        // Days with no patient are not active days: they do not pull the
        // baseline down.
        let mut det = Detector::new(cfg.clone()).unwrap();
        kinds_of(&mut det, "u", ts(2024, 1, 1, 10, 0), &set(0..1000));
        kinds_of(&mut det, "u", ts(2024, 1, 2, 10, 0), &RoaringTreemap::new());
        kinds_of(&mut det, "u", ts(2024, 1, 3, 10, 0), &RoaringTreemap::new());
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 4, 10, 0), &set(0..3000)).is_empty());

        // Back after a long absence: no baseline, min_patients only.
        let mut det = Detector::new(cfg).unwrap();
        kinds_of(&mut det, "u", ts(2024, 1, 1, 10, 0), &set(0..1000));
        kinds_of(&mut det, "u", ts(2024, 1, 2, 10, 0), &set(0..1000));
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 10, 10, 0), &set(0..51)),
            VOL
        );
    }

    #[test]
    fn aggregated_patients_count_when_configured() {
        let agg = set(0..100);
        let none = RoaringTreemap::new();
        let dir = Dir::default();
        let t = ts(2024, 1, 1, 10, 0);
        let mut det = Detector::new(quiet()).unwrap();
        assert!(det.observe(&stmt("u", t, &none, &agg), &dir).is_empty());
        let mut det = Detector::new(SignalConfig {
            touched: Touched::ReturnedOrAggregated,
            ..quiet()
        })
        .unwrap();
        let ret = set(50..60);
        let sigs = det.observe(&stmt("u", t, &ret, &agg), &dir);
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].patients, 100);
    }

    #[test]
    fn days_roll_over_at_local_midnight() {
        // 13:59 and 14:00 UTC are 23:59 and 00:00 (next day) at +10:00.
        let (before, after) = (ts(2024, 1, 1, 13, 59), ts(2024, 1, 1, 14, 0));
        let mut utc = Detector::new(quiet()).unwrap();
        assert!(kinds_of(&mut utc, "u", before, &set(0..40)).is_empty());
        assert_eq!(kinds_of(&mut utc, "u", after, &set(100..140)), VOL);
        let mut east = Detector::new(SignalConfig {
            time_zone: "+10:00".into(),
            ..quiet()
        })
        .unwrap();
        assert!(kinds_of(&mut east, "u", before, &set(0..40)).is_empty());
        assert!(kinds_of(&mut east, "u", after, &set(100..140)).is_empty());
    }

    #[test]
    fn late_statements_count_in_the_open_day() {
        let mut det = Detector::new(quiet()).unwrap();
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 2, 0, 1), &set(0..40)).is_empty());
        // Started before midnight, finished after: counted today.
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 1, 23, 59), &set(40..51)),
            VOL
        );
    }

    // --- off_hours --------------------------------------------------------

    #[test]
    fn off_hours_outside_working_hours_and_days() {
        let mut det = Detector::new(SignalConfig::default()).unwrap();
        let p = set([7]);
        let off = |det: &mut Detector, at| kinds_of(det, "u", at, &p) == [SignalKind::OffHours];
        // Monday 2024-01-01.
        assert!(!off(&mut det, ts(2024, 1, 1, 7, 0)));
        assert!(!off(&mut det, ts(2024, 1, 1, 18, 59)));
        assert!(off(&mut det, ts(2024, 1, 1, 6, 59)));
        assert!(off(&mut det, ts(2024, 1, 1, 19, 0)));
        // Every statement fires.
        assert!(off(&mut det, ts(2024, 1, 1, 19, 1)));
        // Saturday noon.
        assert!(off(&mut det, ts(2024, 1, 6, 12, 0)));
        // No patient touched: nothing.
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 6, 12, 0), &RoaringTreemap::new()).is_empty());

        let none = RoaringTreemap::new();
        let three = set([1, 2, 3]);
        let sigs = det.observe(
            &stmt("u", ts(2024, 1, 7, 2, 5), &three, &none),
            &Dir::default(),
        );
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].patients, 3);
        assert_eq!(
            sigs[0].detail,
            "3 patients at 02:05 local time (sun), working hours 07:00-19:00"
        );
        // Aggregated-only patients are not touched by default.
        assert!(
            det.observe(
                &stmt("u", ts(2024, 1, 7, 2, 6), &none, &three),
                &Dir::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn off_hours_in_a_zone() {
        let mut det = Detector::new(SignalConfig {
            time_zone: "Europe/Paris".into(),
            ..Default::default()
        })
        .unwrap();
        let p = set([7]);
        // Summer (UTC+2): 05:30 UTC is 07:30 in Paris.
        assert!(kinds_of(&mut det, "u", ts(2024, 7, 1, 5, 30), &p).is_empty());
        // Winter (UTC+1): 06:30 UTC is 07:30, 17:30 is 18:30, 18:30 is 19:30.
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 8, 6, 30), &p).is_empty());
        assert!(kinds_of(&mut det, "u", ts(2024, 1, 8, 17, 30), &p).is_empty());
        assert_eq!(
            kinds_of(&mut det, "u", ts(2024, 1, 8, 18, 30), &p),
            [SignalKind::OffHours]
        );
        // In UTC, 05:30 is early.
        let mut utc = Detector::new(SignalConfig::default()).unwrap();
        assert_eq!(
            kinds_of(&mut utc, "u", ts(2024, 7, 1, 5, 30), &p),
            [SignalKind::OffHours]
        );
    }

    #[test]
    fn overnight_shifts() {
        let mut det = Detector::new(SignalConfig {
            work_start: "19:00".into(),
            work_end: "07:00".into(),
            ..Default::default()
        })
        .unwrap();
        let p = set([7]);
        let mut off = |at| !kinds_of(&mut det, "u", at, &p).is_empty();
        assert!(!off(ts(2024, 1, 5, 23, 0))); // Friday night
        assert!(!off(ts(2024, 1, 6, 3, 0))); // the shift that began Friday
        assert!(off(ts(2024, 1, 6, 23, 0))); // Saturday night
        assert!(off(ts(2024, 1, 8, 3, 0))); // Monday early: Sunday is off
        assert!(off(ts(2024, 1, 8, 12, 0))); // Monday noon
        assert!(!off(ts(2024, 1, 8, 19, 0)));
    }

    // --- break_glass_frequency --------------------------------------------

    #[test]
    fn break_glass_frequency_over_a_rolling_day() {
        let mut det = Detector::new(quiet()).unwrap();
        let dir = Dir::default();
        let none = RoaringTreemap::new();
        let p = set([1, 2]);
        let t0 = ts(2024, 1, 1, 8, 0);
        const H: i64 = 3_600_000_000;
        let mut bg = |at: i64| {
            det.observe(
                &StatementAccess {
                    break_glass: true,
                    ..stmt("u", at, &p, &none)
                },
                &dir,
            )
        };
        for h in 0..3 {
            assert!(bg(t0 + h * H).is_empty());
        }
        let sigs = bg(t0 + 3 * H);
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].kind, SignalKind::BreakGlassFrequency);
        assert_eq!(sigs[0].patients, 2);
        assert_eq!(sigs[0].detail, "4 break-glass statements in 24 h, limit 3");
        // Still above the limit the same day: quiet.
        assert!(bg(t0 + 4 * H).is_empty());
        // (t0+2h, t0+26h] holds 3h, 4h, 26h; (t0+3h, t0+27h] holds 4h, 26h, 27h.
        assert!(bg(t0 + 26 * H).is_empty());
        assert!(bg(t0 + 27 * H).is_empty());
        // A new crossing more than 24 h after the last signal fires again.
        assert_eq!(bg(t0 + 27 * H + H / 2).len(), 1);
        assert!(det.users["u"].break_glass.len() <= 5);
    }

    #[test]
    fn break_glass_spread_out_or_mixed_does_not_fire() {
        let mut det = Detector::new(quiet()).unwrap();
        let dir = Dir::default();
        let none = RoaringTreemap::new();
        const H: i64 = 3_600_000_000;
        let t0 = ts(2024, 1, 1, 8, 0);
        for i in 0..6 {
            let s = StatementAccess {
                break_glass: true,
                ..stmt("u", t0 + i * 9 * H, &none, &none)
            };
            assert!(det.observe(&s, &dir).is_empty(), "{i}");
        }
        // Ordinary statements in between do not count.
        let mut det = Detector::new(quiet()).unwrap();
        for i in 0..10 {
            let s = StatementAccess {
                break_glass: [0, 4, 8].contains(&i),
                ..stmt("u", t0 + i * H, &none, &none)
            };
            assert!(det.observe(&s, &dir).is_empty(), "{i}");
        }
    }

    // --- cross_site_read and shared_surname -------------------------------

    fn directory() -> Dir {
        let mut dir = Dir::default();
        for p in 0..10 {
            dir.sites
                .insert(p, if p < 8 { "north" } else { "south" }.to_owned());
        }
        // Patient 10 has no known site.
        dir.surnames.insert(3, surname_key(KEY, "Nguyen").unwrap());
        dir.surnames.insert(9, surname_key(KEY, "NGUYEN").unwrap());
        dir.surnames.insert(4, surname_key(KEY, "Tran").unwrap());
        dir
    }

    #[test]
    fn cross_site_reads() {
        let mut det = Detector::new(quiet()).unwrap();
        let dir = directory();
        let none = RoaringTreemap::new();
        let t = ts(2024, 1, 1, 10, 0);
        let own = set([0, 1, 7, 10]);
        let mixed = set([0, 8, 9, 10]);
        let at_north = |returned| StatementAccess {
            user_site: Some("north"),
            ..stmt("u", t, returned, &none)
        };
        assert!(det.observe(&at_north(&own), &dir).is_empty());
        let sigs = det.observe(&at_north(&mixed), &dir);
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].kind, SignalKind::CrossSiteRead);
        assert_eq!(sigs[0].patients, 2);
        assert_eq!(
            sigs[0].detail,
            "2 of 4 returned patients belong to other sites, no break-glass"
        );
        // Under break-glass, without a site, or only aggregated: nothing.
        let bg = StatementAccess {
            break_glass: true,
            ..at_north(&mixed)
        };
        assert!(det.observe(&bg, &dir).is_empty());
        assert!(det.observe(&stmt("u", t, &mixed, &none), &dir).is_empty());
        let agg = StatementAccess {
            returned: &none,
            aggregated: &mixed,
            ..at_north(&none)
        };
        assert!(det.observe(&agg, &dir).is_empty());
    }

    #[test]
    fn shared_surnames() {
        let mut det = Detector::new(quiet()).unwrap();
        let dir = directory();
        let none = RoaringTreemap::new();
        let t = ts(2024, 1, 1, 10, 0);
        let returned = set([1, 3, 4, 9, 10]);
        let nguyen = |returned, key| StatementAccess {
            user_surname_key: key,
            ..stmt("u", t, returned, &none)
        };
        let key = surname_key(KEY, " nguyen");
        let sigs = det.observe(&nguyen(&returned, key), &dir);
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].kind, SignalKind::SharedSurname);
        assert_eq!(sigs[0].patients, 2);
        assert_eq!(
            sigs[0].detail,
            "2 of 5 returned patients share the user's surname"
        );
        // Under break-glass too (the classic case).
        let bg = StatementAccess {
            break_glass: true,
            ..nguyen(&returned, key)
        };
        assert_eq!(det.observe(&bg, &dir).len(), 1);
        // Another key, no key, or no matching patient: nothing.
        let other = surname_key(b"another key", "Nguyen");
        assert!(det.observe(&nguyen(&returned, other), &dir).is_empty());
        assert!(det.observe(&nguyen(&returned, None), &dir).is_empty());
        let unrelated = set([1, 4, 10]);
        assert!(det.observe(&nguyen(&unrelated, key), &dir).is_empty());
        // Patient ids are i64, bit for bit.
        let mut dir = Dir::default();
        dir.surnames.insert(-5, key.unwrap());
        let negative = set([-5]);
        assert_eq!(det.observe(&nguyen(&negative, key), &dir).len(), 1);
    }

    #[test]
    fn several_signals_in_order() {
        let mut det = Detector::new(SignalConfig::default()).unwrap();
        let dir = directory();
        let none = RoaringTreemap::new();
        let returned = set(0..60);
        let s = StatementAccess {
            user_site: Some("north"),
            user_surname_key: surname_key(KEY, "Nguyen"),
            ..stmt("u", ts(2024, 1, 6, 23, 0), &returned, &none)
        };
        let kinds: Vec<_> = det.observe(&s, &dir).into_iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SignalKind::PatientVolume,
                SignalKind::OffHours,
                SignalKind::CrossSiteRead,
                SignalKind::SharedSurname
            ]
        );
    }

    // --- bounded state ----------------------------------------------------

    #[test]
    fn state_is_bounded() {
        let mut det = Detector::new(SignalConfig {
            baseline_days: 3,
            ..quiet()
        })
        .unwrap();
        // Thirty days of activity keep at most three counts.
        for d in 1..=30 {
            kinds_of(&mut det, "b", ts(2024, 1, d, 10, 0), &set(0..10));
            assert!(det.users["b"].history.len() <= 3);
        }
        // A user's day is closed (set → count) once a day has passed
        // without them.
        kinds_of(&mut det, "a", ts(2024, 1, 30, 10, 0), &set(0..10));
        kinds_of(&mut det, "b", ts(2024, 2, 1, 10, 0), &set(0..10));
        let a = &det.users["a"];
        assert!(a.open.is_none());
        assert_eq!(a.history.back(), Some(&(ts_day(2024, 1, 30), 10)));
        // A statement for a closed day is left out of the volume.
        assert!(kinds_of(&mut det, "a", ts(2024, 1, 30, 23, 0), &set(0..1000)).is_empty());
        assert!(det.users["a"].open.is_none());
        // Idle for more than baseline_days (a: last seen January 30):
        // forgotten.
        assert_eq!(det.tracked_users(), 2);
        kinds_of(&mut det, "b", ts(2024, 2, 2, 10, 0), &set(0..10));
        assert_eq!(det.tracked_users(), 2);
        kinds_of(&mut det, "b", ts(2024, 2, 3, 10, 0), &set(0..10));
        assert_eq!(det.tracked_users(), 1);
        assert!(!det.users.contains_key("a"));
    }

    fn ts_day(y: i32, m: u32, d: u32) -> i32 {
        NaiveDate::from_ymd_opt(y, m, d).unwrap().num_days_from_ce()
    }
}
