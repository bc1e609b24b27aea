//! libpq's `options` startup parameter.

use crate::error::SqlError;

/// Parse libpq's `options` startup parameter: `-c name=value --name=value`.
pub(crate) fn parse_options(options: &str) -> Result<Vec<(String, String)>, SqlError> {
    let mut out = Vec::new();
    let mut words = split_options(options).into_iter();
    while let Some(w) = words.next() {
        let assignment = if w == "-c" {
            words.next().ok_or_else(|| {
                SqlError::fatal("22023", "invalid command-line argument: -c needs a value")
            })?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_owned()
        } else {
            return Err(SqlError::fatal(
                "22023",
                "invalid command-line argument in options",
            ));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| {
            SqlError::fatal(
                "22023",
                "invalid command-line argument: expected name=value",
            )
        })?;
        out.push((
            name.trim().replace('-', "_").to_lowercase(),
            value.to_owned(),
        ));
    }
    Ok(out)
}

/// Split on unescaped whitespace; `\ ` keeps a space inside a value (libpq rule).
fn split_options(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}
