//! Reading text through a compiled template, as PostgreSQL 15's
//! `DCH_from_char` reads it (lenient mode): the fields found, not yet a date.
//!
//! Error messages name the pattern field at fault, never the input text.

use super::format::{DAYS, DAYS_SHORT, MONTHS, MONTHS_SHORT, ROMAN_MONTHS};
use super::pattern::{DateMode, Key, KeyWord, Node, Template, is_separator_byte, is_space_byte};
use super::{PgResult, datetime_error};
use crate::error::SqlError;

/// The fields read from the input (PostgreSQL's `TmFromChar`); zero means
/// "not given".
#[derive(Debug, Default)]
pub(super) struct FromChar {
    pub mode: DateMode,
    pub hh: i64,
    pub pm: i64,
    pub mi: i64,
    pub ss: i64,
    pub ssss: i64,
    pub d: i64,
    pub dd: i64,
    pub ddd: i64,
    pub mm: i64,
    pub ms: i64,
    pub year: i64,
    pub bc: i64,
    pub ww: i64,
    pub w: i64,
    pub cc: i64,
    pub j: i64,
    pub us: i64,
    pub yysz: i64,
    pub clock12: bool,
    pub tzsign: i64,
    pub tzh: i64,
    pub tzm: i64,
    pub ff: i64,
}

pub(super) fn invalid(message: String) -> SqlError {
    datetime_error("22007", message)
}

pub(super) fn field_overflow() -> SqlError {
    datetime_error("22008", "date/time field value out of range")
}

const AMPM: [&str; 4] = ["am", "pm", "AM", "PM"];
const AMPM_DOTS: [&str; 4] = ["a.m.", "p.m.", "A.M.", "P.M."];
const ADBC: [&str; 4] = ["ad", "bc", "AD", "BC"];
const ADBC_DOTS: [&str; 4] = ["a.d.", "b.c.", "A.D.", "B.C."];

/// Reads the input through the template.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: &'a [Node],
}

impl Reader<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Skip one character (a whole UTF-8 sequence).
    fn skip_char(&mut self) {
        if let Some(b) = self.peek() {
            let len = match b {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xff => 4,
                _ => 1,
            };
            self.pos = (self.pos + len).min(self.input.len());
        }
    }

    fn skip_spaces(&mut self) -> i64 {
        let mut skipped = 0;
        while self.peek().is_some_and(is_space_byte) {
            self.pos += 1;
            skipped += 1;
        }
        skipped
    }

    /// Is the field after node `i` known not to be digits, so that the
    /// field at `i` may read any number of digits?
    fn next_is_separator(&self, i: usize) -> bool {
        if self.nodes[i].has_ordinal() {
            return true;
        }
        match self.nodes.get(i + 1) {
            None => true,
            Some(Node::Action { kw, .. }) => !kw.is_digit,
            Some(Node::Char(c) | Node::Separator(c) | Node::Space(c)) => !c.is_ascii_digit(),
        }
    }

    /// Read an integer field of `len` characters (any length in fill mode
    /// or before a separator) into `dest`; returns the characters consumed,
    /// leading blanks included.
    fn int_field(
        &mut self,
        dest: Option<&mut i64>,
        len: usize,
        i: usize,
        kw: &KeyWord,
    ) -> PgResult<usize> {
        let init = self.pos;
        self.skip_spaces();
        let value = if self.nodes[i].is_fill_mode() || self.next_is_separator(i) {
            let (used, value) = strtol(&self.input[init..]);
            self.pos = init + used;
            value
        } else {
            let end = (self.pos + len).min(self.input.len());
            let copy = &self.input[self.pos..end];
            if copy.len() < len {
                return Err(invalid(format!(
                    "source string too short for \"{}\" formatting field (it needs {len} characters; if the source string is not fixed-width, try the FM modifier)",
                    kw.name
                )));
            }
            let (used, value) = strtol(copy);
            if used > 0 && used < len {
                return Err(invalid(format!(
                    "invalid value for \"{}\": the field needs {len} digits (if the source string is not fixed-width, try the FM modifier)",
                    kw.name
                )));
            }
            self.pos += used;
            value
        };
        if self.pos == init {
            return Err(invalid(format!(
                "invalid value for \"{}\": the value must be an integer",
                kw.name
            )));
        }
        let value = value.filter(|v| i32::try_from(*v).is_ok()).ok_or_else(|| {
            datetime_error(
                "22008",
                format!("value for \"{}\" in source string is out of range", kw.name),
            )
        })?;
        if let Some(dest) = dest {
            set_field(dest, value, kw)?;
        }
        Ok(self.pos - init)
    }

    /// Match one of `names` (ASCII, case-insensitive, the name a prefix of
    /// the input); returns its index.
    fn one_of(&mut self, names: &[&str], kw: &KeyWord) -> PgResult<i64> {
        let rest = &self.input[self.pos..];
        for (index, name) in names.iter().enumerate() {
            let name = name.as_bytes();
            if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                self.pos += name.len();
                return Ok(index as i64);
            }
        }
        Err(invalid(format!(
            "invalid value for \"{}\": the given value did not match any of the allowed values for this field",
            kw.name
        )))
    }

    /// Skip an ordinal suffix (`TH`) after a field that has one.
    fn skip_ordinal(&mut self, i: usize) {
        if self.nodes[i].has_ordinal() {
            self.skip_char();
            self.skip_char();
        }
    }
}

/// C `strtol` (base 10): blanks, a sign, digits. Returns the bytes used (0
/// when there are no digits) and the value (`None` when it overflows).
fn strtol(s: &[u8]) -> (usize, Option<i64>) {
    let mut i = 0;
    while s.get(i).copied().is_some_and(is_space_byte) {
        i += 1;
    }
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut value: Option<i64> = Some(0);
    while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(i64::from(d - b'0')));
        i += 1;
    }
    if i == start {
        return (0, Some(0));
    }
    (i, value.map(|v| if negative { -v } else { v }))
}

/// Set a field once: a second, different value for it is an error.
fn set_field(dest: &mut i64, value: i64, kw: &KeyWord) -> PgResult<()> {
    if *dest != 0 && *dest != value {
        return Err(invalid(format!(
            "conflicting values for \"{}\" field in formatting string (this value contradicts a previous setting for the same field type)",
            kw.name
        )));
    }
    *dest = value;
    Ok(())
}

/// Two- and three-digit years are taken near 2020.
fn adjust_partial_year_to_2020(year: i64) -> i64 {
    if year < 70 {
        year + 2000
    } else if year < 100 {
        year + 1900
    } else if year < 520 {
        year + 2000
    } else if year < 1000 {
        year + 1000
    } else {
        year
    }
}

/// C `sscanf(s, "%d,%03d%n")` for `Y,YYY`: (thousands, rest, bytes used).
fn year_with_comma(s: &[u8]) -> Option<(i64, i64, usize)> {
    let (used, thousands) = strtol(s);
    if used == 0 || s.get(used) != Some(&b',') {
        return None;
    }
    let mut i = used + 1;
    while s.get(i).copied().is_some_and(is_space_byte) {
        i += 1;
    }
    // At most three characters, a sign included.
    let end = (i + 3).min(s.len());
    let (used_rest, rest) = strtol(&s[i..end]);
    if used_rest == 0 {
        return None;
    }
    Some((thousands?, rest?, i + used_rest))
}

pub(super) fn from_char(template: &Template, input: &str) -> PgResult<FromChar> {
    let mut out = FromChar::default();
    let mut r = Reader {
        input: input.as_bytes(),
        pos: 0,
        nodes: &template.nodes,
    };
    let mut fx = false;
    // Characters skipped beyond those the template asked for.
    let mut extra_skip: i64 = 0;
    for (i, node) in template.nodes.iter().enumerate() {
        if r.at_end() {
            break;
        }
        let is_fx = matches!(node, Node::Action { kw, .. } if kw.key == Key::Fx);
        if !fx && !is_fx && (matches!(node, Node::Action { .. }) || i == 0) {
            extra_skip += r.skip_spaces();
        }
        let (kw, _suffix) = match node {
            Node::Space(_) | Node::Separator(_) => {
                if !fx {
                    // One blank or separator of the template matches one of
                    // the input, or nothing.
                    extra_skip -= 1;
                    if r.peek()
                        .is_some_and(|b| is_space_byte(b) || is_separator_byte(b))
                    {
                        r.pos += 1;
                        extra_skip += 1;
                    }
                } else {
                    r.skip_char();
                }
                continue;
            }
            Node::Char(_) => {
                // Literal text consumes one character, whatever it is.
                if !fx && extra_skip > 0 {
                    extra_skip -= 1;
                } else {
                    r.skip_char();
                }
                continue;
            }
            Node::Action { kw, suffix } => (*kw, *suffix),
        };
        if kw.mode != DateMode::None {
            if out.mode == DateMode::None {
                out.mode = kw.mode;
            } else if out.mode != kw.mode {
                return Err(invalid(
                    "invalid combination of date conventions: do not mix Gregorian and ISO week date conventions in a formatting template".to_owned(),
                ));
            }
        }
        let len = kw.len();
        match kw.key {
            Key::Fx => fx = true,
            Key::Meridiem { dots, .. } => {
                let value = r.one_of(if dots { &AMPM_DOTS } else { &AMPM }, kw)?;
                set_field(&mut out.pm, value % 2, kw)?;
                out.clock12 = true;
            }
            Key::Hh12 => {
                r.int_field(Some(&mut out.hh), 2, i, kw)?;
                out.clock12 = true;
                r.skip_ordinal(i);
            }
            Key::Hh24 => {
                r.int_field(Some(&mut out.hh), 2, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Mi => {
                r.int_field(Some(&mut out.mi), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Ss => {
                r.int_field(Some(&mut out.ss), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Ms => {
                let used = r.int_field(Some(&mut out.ms), 3, i, kw)?;
                // 25 is 0.25 and 250 is 0.25 too; 025 is 0.025.
                out.ms *= match used {
                    1 => 100,
                    2 => 10,
                    _ => 1,
                };
                r.skip_ordinal(i);
            }
            Key::Ff(_) | Key::Us => {
                let digits = match kw.key {
                    Key::Ff(n) => {
                        out.ff = i64::from(n);
                        usize::from(n)
                    }
                    _ => 6,
                };
                let used = r.int_field(Some(&mut out.us), digits, i, kw)?;
                out.us *= match used {
                    1 => 100_000,
                    2 => 10_000,
                    3 => 1000,
                    4 => 100,
                    5 => 10,
                    _ => 1,
                };
                r.skip_ordinal(i);
            }
            Key::Ssss => {
                r.int_field(Some(&mut out.ssss), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Tz { .. } | Key::Of => {
                return Err(datetime_error(
                    "0A000",
                    format!(
                        "formatting field \"{}\" is only supported in to_char",
                        kw.name
                    ),
                ));
            }
            Key::Tzh => {
                // A minus sign may have been skipped as a separator.
                match r.peek() {
                    Some(b @ (b'+' | b'-' | b' ')) => {
                        out.tzsign = if b == b'-' { -1 } else { 1 };
                        r.pos += 1;
                    }
                    _ => {
                        let minus_before = r.pos > 0 && r.input.get(r.pos - 1) == Some(&b'-');
                        out.tzsign = if extra_skip > 0 && minus_before {
                            -1
                        } else {
                            1
                        };
                    }
                }
                r.int_field(Some(&mut out.tzh), 2, i, kw)?;
            }
            Key::Tzm => {
                if out.tzsign == 0 {
                    out.tzsign = 1;
                }
                r.int_field(Some(&mut out.tzm), 2, i, kw)?;
            }
            Key::Era { dots, .. } => {
                let value = r.one_of(if dots { &ADBC_DOTS } else { &ADBC }, kw)?;
                set_field(&mut out.bc, value % 2, kw)?;
            }
            Key::MonthName(_) => {
                let value = r.one_of(&MONTHS, kw)?;
                set_field(&mut out.mm, value + 1, kw)?;
            }
            Key::MonthAbbrev(_) => {
                let value = r.one_of(&MONTHS_SHORT, kw)?;
                set_field(&mut out.mm, value + 1, kw)?;
            }
            Key::Mm => {
                r.int_field(Some(&mut out.mm), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::DayName(_) => {
                let value = r.one_of(&DAYS, kw)?;
                set_field(&mut out.d, value, kw)?;
                out.d += 1;
            }
            Key::DayAbbrev(_) => {
                let value = r.one_of(&DAYS_SHORT, kw)?;
                set_field(&mut out.d, value, kw)?;
                out.d += 1;
            }
            Key::Ddd => {
                r.int_field(Some(&mut out.ddd), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Iddd => {
                r.int_field(Some(&mut out.ddd), 3, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Dd => {
                r.int_field(Some(&mut out.dd), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::D => {
                r.int_field(Some(&mut out.d), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Id => {
                r.int_field(Some(&mut out.d), 1, i, kw)?;
                // Shift to the Gregorian numbering, Sunday = 1.
                out.d += 1;
                if out.d > 7 {
                    out.d = 1;
                }
                r.skip_ordinal(i);
            }
            Key::Ww | Key::Iw => {
                r.int_field(Some(&mut out.ww), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Q => {
                // Read and ignored: which day of the quarter would it be?
                r.int_field(None, len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::Cc => {
                r.int_field(Some(&mut out.cc), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::YearComma => {
                let (thousands, rest, used) =
                    year_with_comma(&r.input[r.pos..]).ok_or_else(|| {
                        invalid("invalid value for \"Y,YYY\" in the source string".to_owned())
                    })?;
                let year = thousands
                    .checked_mul(1000)
                    .and_then(|t| t.checked_add(rest))
                    .filter(|y| i32::try_from(*y).is_ok())
                    .ok_or_else(|| {
                        datetime_error(
                            "22008",
                            "value for \"Y,YYY\" in source string is out of range",
                        )
                    })?;
                set_field(&mut out.year, year, kw)?;
                out.yysz = 4;
                r.pos += used;
                r.skip_ordinal(i);
            }
            Key::Year(4) | Key::IsoYear(4) => {
                r.int_field(Some(&mut out.year), len, i, kw)?;
                out.yysz = 4;
                r.skip_ordinal(i);
            }
            Key::Year(digits) | Key::IsoYear(digits) => {
                let used = r.int_field(Some(&mut out.year), len, i, kw)?;
                if used < 4 {
                    out.year = adjust_partial_year_to_2020(out.year);
                }
                out.yysz = i64::from(digits);
                r.skip_ordinal(i);
            }
            Key::Roman { .. } => {
                // Case-insensitive; longer numerals come first (VIII before V).
                let value = r.one_of(&ROMAN_MONTHS, kw)?;
                set_field(&mut out.mm, 12 - value, kw)?;
            }
            Key::W => {
                r.int_field(Some(&mut out.w), len, i, kw)?;
                r.skip_ordinal(i);
            }
            Key::J => {
                r.int_field(Some(&mut out.j), len, i, kw)?;
                r.skip_ordinal(i);
            }
        }
        // Blanks after a field are skipped.
        if !fx {
            extra_skip = r.skip_spaces();
        }
    }
    Ok(out)
}
