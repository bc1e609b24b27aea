//! `to_char`: a date, timestamp or interval written through a compiled
//! template, as PostgreSQL's `DCH_to_char` writes it (English names, the
//! C locale's `lc_time`).

use std::fmt::Write as _;

use super::calendar::{
    POSTGRES_EPOCH_JDATE, USECS_PER_DAY, date2isoweek, date2isoyear, date2isoyearday, date2j,
    j2date, j2day,
};
use super::pattern::{Case, FM, Key, Node, TH_UPPER, TM, Template};
use super::{PgResult, datetime_error};

pub(super) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
pub(super) const MONTHS_SHORT: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
pub(super) const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
pub(super) const DAYS_SHORT: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
/// Roman month numerals, December first (the order parsing needs).
pub(super) const ROMAN_MONTHS: [&str; 12] = [
    "XII", "XI", "X", "IX", "VIII", "VII", "VI", "V", "IV", "III", "II", "I",
];

/// The broken-down value `to_char` formats (PostgreSQL's `TmToChar`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Tm {
    pub year: i64,
    pub mon: i64,
    pub mday: i64,
    pub hour: i64,
    pub min: i64,
    pub sec: i64,
    /// Microseconds.
    pub fsec: i64,
    /// Day of the week, 0 = Sunday.
    pub wday: i64,
    /// Day of the year, 1-based.
    pub yday: i64,
    /// Time zone abbreviation (`TZ`); none for values without a zone.
    pub tzn: Option<&'static str>,
    /// Offset east of UTC in seconds.
    pub gmtoff: i64,
    /// An interval (or time of day): calendar fields are refused.
    pub is_interval: bool,
}

impl Tm {
    /// A timestamp in microseconds since 1970-01-01 00:00:00, shown in UTC;
    /// `zoned` values (timestamptz, date) print `UTC` for `TZ`.
    pub(super) fn from_unix_micros(micros: i64, zoned: bool) -> PgResult<Tm> {
        let days = micros.div_euclid(USECS_PER_DAY);
        let time = micros.rem_euclid(USECS_PER_DAY);
        let jd = days + super::calendar::UNIX_EPOCH_JDATE;
        let (year, mon, mday) = j2date(jd).ok_or_else(timestamp_out_of_range)?;
        let secs = time / 1_000_000;
        Ok(Tm {
            year,
            mon,
            mday,
            hour: secs / 3600,
            min: secs / 60 % 60,
            sec: secs % 60,
            fsec: time % 1_000_000,
            wday: j2day(jd),
            yday: jd - date2j(year, 1, 1) + 1,
            tzn: zoned.then_some("UTC"),
            gmtoff: 0,
            is_interval: false,
        })
    }

    /// An interval of months, days and microseconds (a time of day is an
    /// interval of microseconds), split as PostgreSQL's `interval2itm`.
    pub(super) fn from_interval(months: i64, days: i64, micros: i64) -> Tm {
        let hour = micros / 3_600_000_000;
        let rest = micros - hour * 3_600_000_000;
        let min = rest / 60_000_000;
        let rest = rest - min * 60_000_000;
        let sec = rest / 1_000_000;
        let fsec = rest - sec * 1_000_000;
        let year = months / 12;
        let mon = months % 12;
        Tm {
            year,
            mon,
            mday: days,
            hour,
            min,
            sec,
            fsec,
            wday: 0,
            // Approximates the span in days, as PostgreSQL does.
            yday: (year * 12 + mon) * 30 + days,
            tzn: None,
            gmtoff: 0,
            is_interval: true,
        }
    }
}

fn timestamp_out_of_range() -> crate::error::SqlError {
    datetime_error("22008", "timestamp out of range")
}

fn invalid_for_interval() -> crate::error::SqlError {
    datetime_error(
        "22007",
        "invalid format specification for an interval value (intervals are not tied to specific calendar dates)",
    )
}

/// Years before 1 AD count 1 BC, 2 BC, …; interval years are as they are.
fn adjust_year(year: i64, is_interval: bool) -> i64 {
    if is_interval || year > 0 {
        year
    } else {
        -(year - 1)
    }
}

/// The ordinal suffix of a number written in decimal.
fn ordinal(num: &str, upper: bool) -> &'static str {
    let bytes = num.as_bytes();
    let last = bytes.last().copied().unwrap_or(b'0');
    let teen = bytes.len() > 1 && bytes[bytes.len() - 2] == b'1';
    let lower = match last {
        _ if teen => "th",
        b'1' => "st",
        b'2' => "nd",
        b'3' => "rd",
        _ => "th",
    };
    match (upper, lower) {
        (false, s) => s,
        (true, "st") => "ST",
        (true, "nd") => "ND",
        (true, "rd") => "RD",
        (true, _) => "TH",
    }
}

fn cased(out: &mut String, name: &str, case: Case) {
    match case {
        Case::Upper => out.extend(name.chars().map(|c| c.to_ascii_uppercase())),
        Case::Lower => out.extend(name.chars().map(|c| c.to_ascii_lowercase())),
        Case::Title => out.push_str(name),
    }
}

/// Write `tm` through `template` into `out` (cleared first).
pub(super) fn to_char(template: &Template, tm: &Tm, out: &mut String) -> PgResult<()> {
    out.clear();
    let mut num = String::new();
    for node in &template.nodes {
        let (kw, suffix) = match node {
            Node::Action { kw, suffix } => (*kw, *suffix),
            Node::Char(c) | Node::Separator(c) | Node::Space(c) => {
                out.push(*c);
                continue;
            }
        };
        let fm = suffix & FM != 0;
        let tm_mode = suffix & TM != 0;
        // Numeric fields are written to `num` first, then get their
        // ordinal suffix.
        num.clear();
        // "%0*d": zero-padded to `width`, the sign counting in the width.
        let mut pad = |value: i64, width: usize| {
            let width = if fm { 0 } else { width };
            let _ = write!(num, "{value:0width$}");
        };
        let signed = |v: i64, w: usize| if v >= 0 { w } else { w + 1 };
        match kw.key {
            Key::Meridiem { dots, lower } => {
                let pm = tm.hour % 24 >= 12;
                out.push_str(match (pm, dots, lower) {
                    (false, true, false) => "A.M.",
                    (true, true, false) => "P.M.",
                    (false, false, false) => "AM",
                    (true, false, false) => "PM",
                    (false, true, true) => "a.m.",
                    (true, true, true) => "p.m.",
                    (false, false, true) => "am",
                    (true, false, true) => "pm",
                });
                continue;
            }
            Key::Hh12 => {
                let h = match tm.hour % 12 {
                    0 => 12,
                    h => h,
                };
                pad(h, signed(tm.hour, 2));
            }
            Key::Hh24 => pad(tm.hour, signed(tm.hour, 2)),
            Key::Mi => pad(tm.min, signed(tm.min, 2)),
            Key::Ss => pad(tm.sec, signed(tm.sec, 2)),
            Key::Ff(digits) => {
                let divisor = 10_i64.pow(6 - u32::from(digits));
                let width = usize::from(digits);
                let _ = write!(num, "{:0width$}", tm.fsec / divisor);
            }
            Key::Ms => {
                let _ = write!(num, "{:03}", tm.fsec / 1000);
            }
            Key::Us => {
                let _ = write!(num, "{:06}", tm.fsec);
            }
            Key::Ssss => {
                let _ = write!(num, "{}", tm.hour * 3600 + tm.min * 60 + tm.sec);
            }
            Key::Tz { lower } => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                if let Some(tzn) = tm.tzn {
                    cased(out, tzn, if lower { Case::Lower } else { Case::Title });
                }
                continue;
            }
            Key::Tzh => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let sign = if tm.gmtoff >= 0 { '+' } else { '-' };
                let _ = write!(out, "{sign}{:02}", tm.gmtoff.abs() / 3600);
                continue;
            }
            Key::Tzm => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let _ = write!(out, "{:02}", tm.gmtoff.abs() % 3600 / 60);
                continue;
            }
            Key::Of => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let sign = if tm.gmtoff >= 0 { '+' } else { '-' };
                let width = if fm { 0 } else { 2 };
                let _ = write!(out, "{sign}{:0width$}", tm.gmtoff.abs() / 3600);
                if tm.gmtoff.abs() % 3600 != 0 {
                    let _ = write!(out, ":{:02}", tm.gmtoff.abs() % 3600 / 60);
                }
                continue;
            }
            Key::Era { dots, lower } => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let bc = tm.year <= 0;
                out.push_str(match (bc, dots, lower) {
                    (true, true, false) => "B.C.",
                    (false, true, false) => "A.D.",
                    (true, false, false) => "BC",
                    (false, false, false) => "AD",
                    (true, true, true) => "b.c.",
                    (false, true, true) => "a.d.",
                    (true, false, true) => "bc",
                    (false, false, true) => "ad",
                });
                continue;
            }
            Key::MonthName(case) | Key::MonthAbbrev(case) => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let Some(index) = usize::try_from(tm.mon - 1).ok().filter(|i| *i < 12) else {
                    continue;
                };
                if matches!(kw.key, Key::MonthName(_)) {
                    name_field(out, MONTHS[index], case, fm || tm_mode);
                } else {
                    cased(out, MONTHS_SHORT[index], case);
                }
                continue;
            }
            Key::DayName(case) | Key::DayAbbrev(case) => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let index = usize::try_from(tm.wday.rem_euclid(7)).unwrap_or(0);
                if matches!(kw.key, Key::DayName(_)) {
                    name_field(out, DAYS[index], case, fm || tm_mode);
                } else {
                    cased(out, DAYS_SHORT[index], case);
                }
                continue;
            }
            Key::Mm => pad(tm.mon, signed(tm.mon, 2)),
            Key::Ddd => pad(tm.yday, 3),
            Key::Iddd => pad(date2isoyearday(tm.year, tm.mon, tm.mday), 3),
            Key::Dd => pad(tm.mday, 2),
            Key::D => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let _ = write!(num, "{}", tm.wday + 1);
            }
            Key::Id => {
                if tm.is_interval {
                    return Err(invalid_for_interval());
                }
                let _ = write!(num, "{}", if tm.wday == 0 { 7 } else { tm.wday });
            }
            Key::Ww => pad((tm.yday - 1) / 7 + 1, 2),
            Key::Iw => pad(date2isoweek(tm.year, tm.mon, tm.mday), 2),
            Key::Q => {
                if tm.mon == 0 {
                    continue;
                }
                let _ = write!(num, "{}", (tm.mon - 1) / 3 + 1);
            }
            Key::Cc => {
                let century = if tm.is_interval {
                    tm.year / 100
                } else if tm.year > 0 {
                    (tm.year - 1) / 100 + 1
                } else {
                    tm.year / 100 - 1
                };
                if (-99..=99).contains(&century) {
                    pad(century, signed(century, 2));
                } else {
                    let _ = write!(num, "{century}");
                }
            }
            Key::YearComma => {
                let year = adjust_year(tm.year, tm.is_interval);
                let thousands = year / 1000;
                let _ = write!(num, "{thousands},{:03}", year - thousands * 1000);
            }
            Key::Year(digits) | Key::IsoYear(digits) => {
                let adjusted = adjust_year(tm.year, tm.is_interval);
                let year = if matches!(kw.key, Key::Year(_)) {
                    adjusted
                } else {
                    adjust_year(date2isoyear(tm.year, tm.mon, tm.mday), tm.is_interval)
                };
                match digits {
                    4 => pad(year, signed(adjusted, 4)),
                    3 => pad(year % 1000, signed(adjusted, 3)),
                    2 => pad(year % 100, signed(adjusted, 2)),
                    _ => {
                        let _ = write!(num, "{}", year % 10);
                    }
                }
            }
            Key::Roman { lower } => {
                if tm.mon == 0 && tm.year == 0 {
                    continue;
                }
                let index = if tm.mon == 0 {
                    if tm.year >= 0 { 0 } else { 11 }
                } else if tm.mon < 0 {
                    -(tm.mon + 1)
                } else {
                    12 - tm.mon
                };
                let numeral = usize::try_from(index)
                    .ok()
                    .and_then(|i| ROMAN_MONTHS.get(i))
                    .copied()
                    .unwrap_or("");
                let start = out.len();
                cased(out, numeral, if lower { Case::Lower } else { Case::Title });
                if !fm {
                    while out.len() - start < 4 {
                        out.push(' ');
                    }
                }
                continue;
            }
            Key::W => {
                let _ = write!(num, "{}", (tm.mday - 1) / 7 + 1);
            }
            Key::J => {
                let _ = write!(num, "{}", date2j(tm.year, tm.mon, tm.mday));
            }
            Key::Fx => continue,
        }
        out.push_str(&num);
        if node.has_ordinal() {
            out.push_str(ordinal(&num, suffix & TH_UPPER != 0));
        }
    }
    Ok(())
}

/// A month or day name, blank-padded to nine characters unless in fill
/// (or translation) mode.
fn name_field(out: &mut String, name: &str, case: Case, unpadded: bool) {
    let start = out.len();
    cased(out, name, case);
    if !unpadded {
        while out.len() - start < 9 {
            out.push(' ');
        }
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) to 1970-01-01.
pub(super) fn postgres_to_unix_micros(micros: i64) -> Option<i64> {
    micros.checked_add((POSTGRES_EPOCH_JDATE - super::calendar::UNIX_EPOCH_JDATE) * USECS_PER_DAY)
}
