//! `to_date` and `to_timestamp`: the fields read from the text (see
//! [`super::read`]) made into a date or a timestamp, as PostgreSQL 15's
//! `do_to_timestamp`, `to_date` and `to_timestamp` make them.
//!
//! Error messages name the problem, never the input text.

use super::calendar::{
    POSTGRES_EPOCH_JDATE, USECS_PER_DAY, USECS_PER_SEC, date2j, days_in_month, is_leap, isoweek2j,
    j2date,
};
use super::pattern::{DateMode, Template};
use super::read::{field_overflow, from_char, invalid};
use super::{PgResult, datetime_error};
use crate::error::SqlError;

/// The value read, before it becomes a date or a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parsed {
    pub year: i64,
    pub mon: i64,
    pub mday: i64,
    pub hour: i64,
    pub min: i64,
    pub sec: i64,
    pub fsec: i64,
    /// Offset east of UTC in seconds, when the input gave one (`TZH`/`TZM`).
    pub offset: Option<i64>,
    /// Fractional-second precision asked for with `FFn` (0: none).
    pub fprec: i64,
}

/// Read `input` through `template` (PostgreSQL's `do_to_timestamp`).
pub(super) fn parse(template: &Template, input: &str) -> PgResult<Parsed> {
    let mut f = from_char(template, input)?;
    let (mut year, mut mon, mut mday) = (0_i64, 1_i64, 1_i64);
    let (mut hour, mut min, mut sec) = (0_i64, 0_i64, 0_i64);
    let (mut has_year, mut has_month, mut has_day) = (false, false, false);

    if f.ssss != 0 {
        hour = f.ssss / 3600;
        min = f.ssss % 3600 / 60;
        sec = f.ssss % 60;
    }
    if f.ss != 0 {
        sec = f.ss;
    }
    if f.mi != 0 {
        min = f.mi;
    }
    if f.hh != 0 {
        hour = f.hh;
    }
    if f.clock12 {
        if !(1..=12).contains(&hour) {
            return Err(invalid(
                "hour is invalid for the 12-hour clock (use the 24-hour clock, or give an hour between 1 and 12)".to_owned(),
            ));
        }
        if f.pm != 0 && hour < 12 {
            hour += 12;
        } else if f.pm == 0 && hour == 12 {
            hour = 0;
        }
    }

    if f.year != 0 {
        if f.cc != 0 && f.yysz <= 2 {
            // CC and YY (or Y): the year within the given century.
            if f.bc != 0 {
                f.cc = -f.cc;
            }
            year = f.year % 100;
            if year != 0 {
                if f.cc >= 0 {
                    year += (f.cc - 1) * 100;
                } else {
                    year = (f.cc + 1) * 100 - year + 1;
                }
            } else {
                year = f.cc * 100 + if f.cc >= 0 { 0 } else { 1 };
            }
        } else {
            // A four-digit year wins over CC.
            year = f.year;
            if f.bc != 0 {
                year = -year;
            }
            if year < 0 {
                year += 1;
            }
        }
        has_year = true;
    } else if f.cc != 0 {
        // The first year of the century.
        if f.bc != 0 {
            f.cc = -f.cc;
        }
        year = if f.cc >= 0 {
            (f.cc - 1) * 100 + 1
        } else {
            f.cc * 100 + 1
        };
        has_year = true;
    }

    if f.j != 0 {
        (year, mon, mday) = j2date(f.j).ok_or_else(field_overflow)?;
        (has_year, has_month, has_day) = (true, true, true);
    }

    if f.ww != 0 {
        if f.mode == DateMode::IsoWeek {
            let mut jd = isoweek2j(year, f.ww);
            if f.d != 0 {
                // From Sunday = 1 to the ISO week, which starts on Monday.
                jd += if f.d > 1 { f.d - 2 } else { 6 };
            }
            (year, mon, mday) = j2date(jd).ok_or_else(field_overflow)?;
            (has_year, has_month, has_day) = (true, true, true);
        } else {
            f.ddd = (f.ww - 1) * 7 + 1;
        }
    }

    if f.w != 0 {
        f.dd = (f.w - 1) * 7 + 1;
    }
    if f.dd != 0 {
        mday = f.dd;
        has_day = true;
    }
    if f.mm != 0 {
        mon = f.mm;
        has_month = true;
    }

    if f.ddd != 0 && (mon <= 1 || mday <= 1) {
        // Month and day from the day of the year.
        if year == 0 && f.bc == 0 {
            return Err(invalid(
                "cannot calculate day of year without year information".to_owned(),
            ));
        }
        if f.mode == DateMode::IsoWeek {
            let j0 = isoweek2j(year, 1) - 1;
            (year, mon, mday) = j2date(j0 + f.ddd).ok_or_else(field_overflow)?;
            (has_year, has_month, has_day) = (true, true, true);
        } else {
            const SUMS: [[i64; 13]; 2] = [
                [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365],
                [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 366],
            ];
            let sums = &SUMS[usize::from(is_leap(year))];
            let month = (1..=12).find(|m| f.ddd <= sums[*m]).unwrap_or(13);
            if mon <= 1 {
                mon = month as i64;
            }
            if mday <= 1 {
                mday = f.ddd - sums[month - 1];
            }
            (has_month, has_day) = (true, true);
        }
    }

    let fsec = f.ms * 1000 + f.us;

    // Range checks of the date fields that were given.
    if has_year || has_month || has_day {
        if has_month && !(1..=12).contains(&mon) {
            return Err(field_overflow());
        }
        if has_day && !(1..=31).contains(&mday) {
            return Err(field_overflow());
        }
        if has_year && has_month && has_day && mday > days_in_month(year, mon) {
            return Err(field_overflow());
        }
    }
    if !(0..24).contains(&hour)
        || !(0..60).contains(&min)
        || !(0..60).contains(&sec)
        || !(0..USECS_PER_SEC).contains(&fsec)
    {
        return Err(field_overflow());
    }

    let offset = if f.tzsign != 0 {
        if !(0..=15).contains(&f.tzh) || !(0..60).contains(&f.tzm) {
            return Err(datetime_error(
                "22009",
                "time zone displacement out of range",
            ));
        }
        Some(f.tzsign * (f.tzh * 3600 + f.tzm * 60))
    } else {
        None
    };

    Ok(Parsed {
        year,
        mon,
        mday,
        hour,
        min,
        sec,
        fsec,
        offset,
        fprec: f.ff,
    })
}

/// PostgreSQL's Julian-day range check (4713-11-01 BC … 5874898-06 AD).
fn valid_julian(year: i64, mon: i64) -> bool {
    (year > -4713 || (year == -4713 && mon >= 11))
        && (year < 5_874_898 || (year == 5_874_898 && mon < 6))
}

fn date_out_of_range() -> SqlError {
    datetime_error("22008", "date out of range")
}

/// `to_date`: days since 1970-01-01.
pub(super) fn to_date(template: &Template, input: &str) -> PgResult<i32> {
    let p = parse(template, input)?;
    if !valid_julian(p.year, p.mon) {
        return Err(date_out_of_range());
    }
    let jd = date2j(p.year, p.mon, p.mday);
    // PostgreSQL's date range: Julian day 0 up to (not including) 2147483494.
    if !(0..2_147_483_494).contains(&jd) {
        return Err(date_out_of_range());
    }
    i32::try_from(jd - super::calendar::UNIX_EPOCH_JDATE).map_err(|_| date_out_of_range())
}

/// `to_timestamp`: microseconds since 1970-01-01 00:00:00 UTC. Without an
/// offset in the input the value is read in UTC, the session time zone.
pub(super) fn to_timestamp(template: &Template, input: &str) -> PgResult<i64> {
    let p = parse(template, input)?;
    let out_of_range = || datetime_error("22008", "timestamp out of range");
    if !valid_julian(p.year, p.mon) {
        return Err(out_of_range());
    }
    let days = date2j(p.year, p.mon, p.mday) - POSTGRES_EPOCH_JDATE;
    let time = ((p.hour * 60 + p.min) * 60 + p.sec) * USECS_PER_SEC + p.fsec;
    let local = days
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(time))
        .ok_or_else(out_of_range)?;
    let mut result = local
        .checked_sub(p.offset.unwrap_or(0) * USECS_PER_SEC)
        .ok_or_else(out_of_range)?;
    // PostgreSQL's timestamp range: 4714-11-24 BC 00:00 … 294277-01-01 00:00.
    const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
    const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
    if !(MIN_TIMESTAMP..END_TIMESTAMP).contains(&result) {
        return Err(out_of_range());
    }
    if (1..6).contains(&p.fprec) {
        // Round to the precision of FFn, halves away from zero.
        let scale = 10_i64.pow(6 - p.fprec as u32);
        let half = scale / 2;
        result = if result >= 0 {
            (result + half) / scale * scale
        } else {
            -((-result + half) / scale * scale)
        };
    }
    super::format::postgres_to_unix_micros(result).ok_or_else(out_of_range)
}
