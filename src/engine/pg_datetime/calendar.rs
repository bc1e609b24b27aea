//! PostgreSQL's calendar arithmetic on Julian day numbers (proleptic
//! Gregorian), with its integer semantics: fields may be out of their
//! usual range (day 30 of February is day 1 or 2 of March).

/// Julian day of 2000-01-01, PostgreSQL's epoch.
pub(super) const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;
/// Julian day of 1970-01-01.
pub(super) const UNIX_EPOCH_JDATE: i64 = 2_440_588;
pub(super) const USECS_PER_DAY: i64 = 86_400_000_000;
pub(super) const USECS_PER_SEC: i64 = 1_000_000;

/// Julian day number of a (year, month, day); `year` 0 is 1 BC.
pub(super) fn date2j(year: i64, month: i64, day: i64) -> i64 {
    let (m, y) = if month > 2 {
        (month + 1, year + 4800)
    } else {
        (month + 13, year + 4799)
    };
    let century = y / 100;
    let mut julian = y * 365 - 32167;
    julian += y / 4 - century + century / 4;
    julian + 7834 * m / 256 + day
}

/// (year, month, day) of a Julian day number; `None` below day 0.
pub(super) fn j2date(jd: i64) -> Option<(i64, i64, i64)> {
    if !(0..=i64::from(i32::MAX)).contains(&jd) {
        return None;
    }
    let mut julian = jd + 32044;
    let mut quad = julian / 146_097;
    let extra = (julian - quad * 146_097) * 4 + 3;
    julian += 60 + quad * 3 + extra / 146_097;
    quad = julian / 1461;
    julian -= quad * 1461;
    let mut y = julian * 4 / 1461;
    julian = if y != 0 {
        (julian + 305) % 365
    } else {
        (julian + 306) % 366
    } + 123;
    y += quad * 4;
    let year = y - 4800;
    let quad = julian * 2141 / 65536;
    let day = julian - 7834 * quad / 256;
    let month = (quad + 10) % 12 + 1;
    Some((year, month, day))
}

/// Day of the week of a Julian day, 0 = Sunday.
pub(super) fn j2day(jd: i64) -> i64 {
    (jd + 1).rem_euclid(7)
}

pub(super) fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

pub(super) fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Julian day of the Monday of ISO week `week` of ISO year `year`.
pub(super) fn isoweek2j(year: i64, week: i64) -> i64 {
    let day4 = date2j(year, 1, 4);
    let day0 = j2day(day4 - 1);
    (week - 1) * 7 + (day4 - day0)
}

/// ISO 8601 week number of a date.
pub(super) fn date2isoweek(year: i64, month: i64, day: i64) -> i64 {
    let dayn = date2j(year, month, day);
    let mut day4 = date2j(year, 1, 4);
    let mut day0 = j2day(day4 - 1);
    if dayn < day4 - day0 {
        day4 = date2j(year - 1, 1, 4);
        day0 = j2day(day4 - 1);
    }
    let mut result = (dayn - (day4 - day0)) / 7 + 1;
    if result >= 52 {
        day4 = date2j(year + 1, 1, 4);
        day0 = j2day(day4 - 1);
        if dayn >= day4 - day0 {
            result = (dayn - (day4 - day0)) / 7 + 1;
        }
    }
    result
}

/// ISO 8601 week-numbering year of a date.
pub(super) fn date2isoyear(year: i64, month: i64, day: i64) -> i64 {
    let mut year = year;
    let dayn = date2j(year, month, day);
    let mut day4 = date2j(year, 1, 4);
    let mut day0 = j2day(day4 - 1);
    if dayn < day4 - day0 {
        day4 = date2j(year - 1, 1, 4);
        day0 = j2day(day4 - 1);
        year -= 1;
    }
    let result = (dayn - (day4 - day0)) / 7 + 1;
    if result >= 52 {
        day4 = date2j(year + 1, 1, 4);
        day0 = j2day(day4 - 1);
        if dayn >= day4 - day0 {
            year += 1;
        }
    }
    year
}

/// Day of the ISO 8601 week-numbering year (1 … 371).
pub(super) fn date2isoyearday(year: i64, month: i64, day: i64) -> i64 {
    date2j(year, month, day) - isoweek2j(date2isoyear(year, month, day), 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn julian_days_round_trip() {
        assert_eq!(date2j(2000, 1, 1), POSTGRES_EPOCH_JDATE);
        assert_eq!(date2j(1970, 1, 1), UNIX_EPOCH_JDATE);
        for jd in [0, 1, 1_721_426, 2_299_161, 2_451_545, 2_460_000, 5_373_484] {
            let (y, m, d) = j2date(jd).expect("in range");
            assert_eq!(date2j(y, m, d), jd);
        }
        assert_eq!(j2date(-1), None);
        // 2000-01-01 was a Saturday.
        assert_eq!(j2day(POSTGRES_EPOCH_JDATE), 6);
    }

    #[test]
    fn iso_weeks_at_year_boundaries() {
        // 2021-01-03 belongs to week 53 of 2020; 2024-12-30 to week 1 of 2025.
        assert_eq!(date2isoweek(2021, 1, 3), 53);
        assert_eq!(date2isoyear(2021, 1, 3), 2020);
        assert_eq!(date2isoweek(2024, 12, 30), 1);
        assert_eq!(date2isoyear(2024, 12, 30), 2025);
        assert_eq!(date2isoyearday(2024, 12, 30), 1);
    }
}
