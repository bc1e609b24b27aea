//! The scan of a printed statement, as PostgreSQL lexes it, for the string
//! constants and quoted identifiers the tree walk left.

use super::{Names, PLACEHOLDER};

/// The printed statement, scanned as PostgreSQL lexes it: string
/// constants (single-quoted, with an `E`/`N`/`X`/`B`/`U&` prefix or not,
/// and dollar-quoted) become `?`; a double-quoted identifier stays when it
/// names something (printed by [`safe_ident`]) and becomes `?` otherwise.
/// An unterminated constant or identifier swallows the rest of the text.
pub(super) fn scrub_text(text: &str, names: &Names<'_>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_word = i > 0 && word_char(chars[i - 1]);
        match c {
            '\'' => {
                // A prefix letter belongs to the constant (`E'…'`, `U&'…'`).
                let backslashes = strip_string_prefix(&mut out);
                i = end_of_string(&chars, i + 1, backslashes);
                out.push_str(PLACEHOLDER);
            }
            '"' => {
                let (value, next) = quoted_ident(&chars, i + 1);
                match value {
                    Some(v) if names.resolves(&v) => out.push_str(&safe_ident(&v)),
                    _ => out.push_str(PLACEHOLDER),
                }
                i = next;
            }
            '$' if !after_word => match dollar_tag(&chars, i) {
                Some(tag) => {
                    i = end_of_dollar_quote(&chars, i + tag.chars().count(), &tag);
                    out.push_str(PLACEHOLDER);
                }
                None => {
                    out.push('$');
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Removes a string-constant prefix (`E`, `N`, `X`, `B`, `U&`) written
/// right before a quote from `out`; true for `E` (backslash escapes).
fn strip_string_prefix(out: &mut String) -> bool {
    let word_start = out
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_' || *c == '&')
        .last()
        .map(|(i, _)| i)
        .unwrap_or(out.len());
    let word = out[word_start..].to_ascii_uppercase();
    match word.as_str() {
        "E" | "N" | "X" | "B" | "U&" => {
            out.truncate(word_start);
            word == "E"
        }
        _ => false,
    }
}

/// The index after the closing quote of a string constant whose text
/// starts at `i` (`''` is a quote; with `backslashes`, `\` escapes the
/// next character).
fn end_of_string(chars: &[char], mut i: usize, backslashes: bool) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' if backslashes => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The value of a double-quoted identifier whose text starts at `i`, and
/// the index after its closing quote (`None`: unterminated).
fn quoted_ident(chars: &[char], mut i: usize) -> (Option<String>, usize) {
    let mut value = String::new();
    while i < chars.len() {
        match chars[i] {
            '"' if chars.get(i + 1) == Some(&'"') => {
                value.push('"');
                i += 2;
            }
            '"' => return (Some(value), i + 1),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (None, chars.len())
}

/// The opening `$tag$` (or `$$`) of a dollar-quoted constant at `i`.
fn dollar_tag(chars: &[char], i: usize) -> Option<String> {
    let mut j = i + 1;
    if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while chars
        .get(j)
        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
    {
        j += 1;
    }
    (chars.get(j) == Some(&'$')).then(|| chars[i..=j].iter().collect())
}

/// The index after the closing `tag` of a dollar-quoted constant whose
/// text starts at `i`.
fn end_of_dollar_quote(chars: &[char], i: usize, tag: &str) -> usize {
    let tag: Vec<char> = tag.chars().collect();
    let mut j = i;
    while j + tag.len() <= chars.len() {
        if chars[j..j + tag.len()] == tag[..] {
            return j + tag.len();
        }
        j += 1;
    }
    chars.len()
}

/// A kept identifier, quoted so that the fingerprint holds no `'` and no
/// `$` (nothing a reader could take for a constant): `"…"` when it holds
/// neither (nor a control character), else PostgreSQL's `U&"…"` with those
/// characters (and `\`) escaped.
fn safe_ident(value: &str) -> String {
    let unsafe_char = |c: char| c == '\'' || c == '$' || c.is_control();
    if !value.chars().any(unsafe_char) {
        return format!("\"{}\"", value.replace('"', "\"\""));
    }
    let mut out = String::from("U&\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => {
                let n = c as u32;
                if n <= 0xFFFF {
                    out.push_str(&format!("\\{n:04X}"));
                } else {
                    out.push_str(&format!("\\+{n:06X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
