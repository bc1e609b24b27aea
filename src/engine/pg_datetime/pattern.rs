//! PostgreSQL datetime template patterns: the template text compiled into a
//! list of [`Node`]s, as PostgreSQL's `parse_format` does for `to_char`,
//! `to_date` and `to_timestamp` (not the standard mode of SQL/JSON).
//!
//! Compiling never fails: text that is not a keyword is copied (to_char) or
//! skipped (parsing) as PostgreSQL does.

/// Letter case of a name field (`MONTH`, `Month`, `month`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Case {
    Upper,
    Title,
    Lower,
}

/// What a keyword stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    /// `AM`, `PM`, `A.M.`, … (`PM` and `AM` format alike).
    Meridiem {
        dots: bool,
        lower: bool,
    },
    /// `AD`, `BC`, `A.D.`, … (`BC` and `AD` format alike).
    Era {
        dots: bool,
        lower: bool,
    },
    Cc,
    DayName(Case),
    DayAbbrev(Case),
    Ddd,
    Dd,
    D,
    /// `FF1` … `FF6`: fractional seconds with that many digits.
    Ff(u8),
    Fx,
    Hh24,
    /// `HH` and `HH12`.
    Hh12,
    Iddd,
    Id,
    Iw,
    /// `IYYY`, `IYY`, `IY`, `I`: the last n digits of the ISO year.
    IsoYear(u8),
    J,
    Mi,
    Mm,
    MonthName(Case),
    MonthAbbrev(Case),
    Ms,
    Of,
    Q,
    Roman {
        lower: bool,
    },
    /// `SSSS` and `SSSSS`: seconds past midnight.
    Ssss,
    Ss,
    Tzh,
    Tzm,
    Tz {
        lower: bool,
    },
    Us,
    Ww,
    W,
    /// `Y,YYY`.
    YearComma,
    /// `YYYY`, `YYY`, `YY`, `Y`: the last n digits of the year.
    Year(u8),
}

/// The date convention a keyword belongs to (parsing may not mix them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum DateMode {
    #[default]
    None,
    Gregorian,
    IsoWeek,
}

/// One entry of the keyword table.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KeyWord {
    pub name: &'static str,
    pub key: Key,
    /// Does the field read and write digits?
    pub is_digit: bool,
    pub mode: DateMode,
}

impl KeyWord {
    /// The field width used when parsing fixed-width input.
    pub(super) fn len(&self) -> usize {
        self.name.len()
    }
}

const fn kw(name: &'static str, key: Key, is_digit: bool, mode: DateMode) -> KeyWord {
    KeyWord {
        name,
        key,
        is_digit,
        mode,
    }
}

use Case::{Lower, Title, Upper};
use DateMode::{Gregorian as G, IsoWeek as I, None as N};

/// PostgreSQL's keyword table, in its order: among the keywords that start
/// with the same character the first that matches wins, so longer keywords
/// come before their prefixes (`DDD`, `DD`, `D`).
static KEYWORDS: &[KeyWord] = &[
    kw(
        "A.D.",
        Key::Era {
            dots: true,
            lower: false,
        },
        false,
        N,
    ),
    kw(
        "A.M.",
        Key::Meridiem {
            dots: true,
            lower: false,
        },
        false,
        N,
    ),
    kw(
        "AD",
        Key::Era {
            dots: false,
            lower: false,
        },
        false,
        N,
    ),
    kw(
        "AM",
        Key::Meridiem {
            dots: false,
            lower: false,
        },
        false,
        N,
    ),
    kw(
        "B.C.",
        Key::Era {
            dots: true,
            lower: false,
        },
        false,
        N,
    ),
    kw(
        "BC",
        Key::Era {
            dots: false,
            lower: false,
        },
        false,
        N,
    ),
    kw("CC", Key::Cc, true, N),
    kw("DAY", Key::DayName(Upper), false, N),
    kw("DDD", Key::Ddd, true, G),
    kw("DD", Key::Dd, true, G),
    kw("DY", Key::DayAbbrev(Upper), false, N),
    kw("Day", Key::DayName(Title), false, N),
    kw("Dy", Key::DayAbbrev(Title), false, N),
    kw("D", Key::D, true, G),
    kw("FF1", Key::Ff(1), true, N),
    kw("FF2", Key::Ff(2), true, N),
    kw("FF3", Key::Ff(3), true, N),
    kw("FF4", Key::Ff(4), true, N),
    kw("FF5", Key::Ff(5), true, N),
    kw("FF6", Key::Ff(6), true, N),
    kw("FX", Key::Fx, false, N),
    kw("HH24", Key::Hh24, true, N),
    kw("HH12", Key::Hh12, true, N),
    kw("HH", Key::Hh12, true, N),
    kw("IDDD", Key::Iddd, true, I),
    kw("ID", Key::Id, true, I),
    kw("IW", Key::Iw, true, I),
    kw("IYYY", Key::IsoYear(4), true, I),
    kw("IYY", Key::IsoYear(3), true, I),
    kw("IY", Key::IsoYear(2), true, I),
    kw("I", Key::IsoYear(1), true, I),
    kw("J", Key::J, true, N),
    kw("MI", Key::Mi, true, N),
    kw("MM", Key::Mm, true, G),
    kw("MONTH", Key::MonthName(Upper), false, G),
    kw("MON", Key::MonthAbbrev(Upper), false, G),
    kw("MS", Key::Ms, true, N),
    kw("Month", Key::MonthName(Title), false, G),
    kw("Mon", Key::MonthAbbrev(Title), false, G),
    kw("OF", Key::Of, false, N),
    kw(
        "P.M.",
        Key::Meridiem {
            dots: true,
            lower: false,
        },
        false,
        N,
    ),
    kw(
        "PM",
        Key::Meridiem {
            dots: false,
            lower: false,
        },
        false,
        N,
    ),
    kw("Q", Key::Q, true, N),
    kw("RM", Key::Roman { lower: false }, false, G),
    kw("SSSSS", Key::Ssss, true, N),
    kw("SSSS", Key::Ssss, true, N),
    kw("SS", Key::Ss, true, N),
    kw("TZH", Key::Tzh, false, N),
    kw("TZM", Key::Tzm, true, N),
    kw("TZ", Key::Tz { lower: false }, false, N),
    kw("US", Key::Us, true, N),
    kw("WW", Key::Ww, true, G),
    kw("W", Key::W, true, G),
    kw("Y,YYY", Key::YearComma, true, G),
    kw("YYYY", Key::Year(4), true, G),
    kw("YYY", Key::Year(3), true, G),
    kw("YY", Key::Year(2), true, G),
    kw("Y", Key::Year(1), true, G),
    kw(
        "a.d.",
        Key::Era {
            dots: true,
            lower: true,
        },
        false,
        N,
    ),
    kw(
        "a.m.",
        Key::Meridiem {
            dots: true,
            lower: true,
        },
        false,
        N,
    ),
    kw(
        "ad",
        Key::Era {
            dots: false,
            lower: true,
        },
        false,
        N,
    ),
    kw(
        "am",
        Key::Meridiem {
            dots: false,
            lower: true,
        },
        false,
        N,
    ),
    kw(
        "b.c.",
        Key::Era {
            dots: true,
            lower: true,
        },
        false,
        N,
    ),
    kw(
        "bc",
        Key::Era {
            dots: false,
            lower: true,
        },
        false,
        N,
    ),
    kw("cc", Key::Cc, true, N),
    kw("day", Key::DayName(Lower), false, N),
    kw("ddd", Key::Ddd, true, G),
    kw("dd", Key::Dd, true, G),
    kw("dy", Key::DayAbbrev(Lower), false, N),
    kw("d", Key::D, true, G),
    kw("ff1", Key::Ff(1), true, N),
    kw("ff2", Key::Ff(2), true, N),
    kw("ff3", Key::Ff(3), true, N),
    kw("ff4", Key::Ff(4), true, N),
    kw("ff5", Key::Ff(5), true, N),
    kw("ff6", Key::Ff(6), true, N),
    kw("fx", Key::Fx, false, N),
    kw("hh24", Key::Hh24, true, N),
    kw("hh12", Key::Hh12, true, N),
    kw("hh", Key::Hh12, true, N),
    kw("iddd", Key::Iddd, true, I),
    kw("id", Key::Id, true, I),
    kw("iw", Key::Iw, true, I),
    kw("iyyy", Key::IsoYear(4), true, I),
    kw("iyy", Key::IsoYear(3), true, I),
    kw("iy", Key::IsoYear(2), true, I),
    kw("i", Key::IsoYear(1), true, I),
    kw("j", Key::J, true, N),
    kw("mi", Key::Mi, true, N),
    kw("mm", Key::Mm, true, G),
    kw("month", Key::MonthName(Lower), false, G),
    kw("mon", Key::MonthAbbrev(Lower), false, G),
    kw("ms", Key::Ms, true, N),
    kw("of", Key::Of, false, N),
    kw(
        "p.m.",
        Key::Meridiem {
            dots: true,
            lower: true,
        },
        false,
        N,
    ),
    kw(
        "pm",
        Key::Meridiem {
            dots: false,
            lower: true,
        },
        false,
        N,
    ),
    kw("q", Key::Q, true, N),
    kw("rm", Key::Roman { lower: true }, false, G),
    kw("sssss", Key::Ssss, true, N),
    kw("ssss", Key::Ssss, true, N),
    kw("ss", Key::Ss, true, N),
    kw("tzh", Key::Tzh, false, N),
    kw("tzm", Key::Tzm, true, N),
    kw("tz", Key::Tz { lower: true }, false, N),
    kw("us", Key::Us, true, N),
    kw("ww", Key::Ww, true, G),
    kw("w", Key::W, true, G),
    kw("y,yyy", Key::YearComma, true, G),
    kw("yyyy", Key::Year(4), true, G),
    kw("yyy", Key::Year(3), true, G),
    kw("yy", Key::Year(2), true, G),
    kw("y", Key::Year(1), true, G),
];

/// Keyword modifiers (PostgreSQL's suffix bits).
pub(super) const FM: u8 = 0x01;
pub(super) const TH_UPPER: u8 = 0x02;
pub(super) const TH_LOWER: u8 = 0x04;
pub(super) const SP: u8 = 0x08;
pub(super) const TM: u8 = 0x10;

/// Prefix modifiers: fill mode and translation mode.
const PREFIXES: &[(&str, u8)] = &[("FM", FM), ("fm", FM), ("TM", TM), ("tm", TM)];
/// Postfix modifiers: ordinal suffixes and spell mode (accepted, ignored).
const POSTFIXES: &[(&str, u8)] = &[("TH", TH_UPPER), ("th", TH_LOWER), ("SP", SP)];

/// One element of a compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Node {
    /// A keyword with its modifier bits.
    Action { kw: &'static KeyWord, suffix: u8 },
    /// Literal text: quoted text, or a character that is no keyword.
    Char(char),
    /// ASCII punctuation outside quotes.
    Separator(char),
    /// White space outside quotes.
    Space(char),
}

impl Node {
    pub(super) fn is_fill_mode(&self) -> bool {
        matches!(self, Node::Action { suffix, .. } if suffix & FM != 0)
    }

    pub(super) fn has_ordinal(&self) -> bool {
        matches!(self, Node::Action { suffix, .. } if suffix & (TH_UPPER | TH_LOWER) != 0)
    }
}

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Template {
    pub nodes: Vec<Node>,
}

/// ASCII printable and neither letter nor digit (PostgreSQL's separators).
pub(super) fn is_separator_byte(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b.is_ascii_alphanumeric()
}

/// C `isspace` in the C locale.
pub(super) fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn keyword_at(rest: &str) -> Option<&'static KeyWord> {
    let first = *rest.as_bytes().first()?;
    KEYWORDS
        .iter()
        .filter(|k| k.name.as_bytes()[0] == first)
        .find(|k| rest.starts_with(k.name))
}

fn modifier_at(rest: &str, table: &[(&str, u8)]) -> Option<(usize, u8)> {
    table
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .map(|(name, bit)| (name.len(), *bit))
}

/// Compile a template the way PostgreSQL parses it for `to_char`,
/// `to_date` and `to_timestamp`.
pub(super) fn compile(fmt: &str) -> Template {
    let mut nodes = Vec::with_capacity(fmt.len());
    let mut pos = 0;
    while pos < fmt.len() {
        let mut suffix = 0;
        // A prefix is consumed even when no keyword follows it.
        if let Some((len, bit)) = modifier_at(&fmt[pos..], PREFIXES) {
            suffix |= bit;
            pos += len;
        }
        if pos >= fmt.len() {
            break;
        }
        if let Some(kw) = keyword_at(&fmt[pos..]) {
            pos += kw.name.len();
            if let Some((len, bit)) = modifier_at(&fmt[pos..], POSTFIXES) {
                suffix |= bit;
                pos += len;
            }
            nodes.push(Node::Action { kw, suffix });
            continue;
        }
        let rest = &fmt[pos..];
        if rest.starts_with('"') {
            // Quoted literal text; a backslash quotes the next character.
            let mut chars = rest.char_indices().skip(1).peekable();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => nodes.push(Node::Char(escaped)),
                        None => nodes.push(Node::Char('\\')),
                    },
                    c => nodes.push(Node::Char(c)),
                }
            }
            pos += end;
            continue;
        }
        // Outside quotes a backslash only escapes a double quote.
        let rest = if rest.starts_with("\\\"") {
            pos += 1;
            &rest[1..]
        } else {
            rest
        };
        let Some(c) = rest.chars().next() else {
            break;
        };
        pos += c.len_utf8();
        let node = if c.is_ascii() && is_separator_byte(c as u8) {
            Node::Separator(c)
        } else if c.is_ascii() && is_space_byte(c as u8) {
            Node::Space(c)
        } else {
            Node::Char(c)
        };
        nodes.push(node);
    }
    Template { nodes }
}
