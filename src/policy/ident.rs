//! Identifier rules shared by the engine, the policy and the rewrite.

/// A plain lower-case SQL identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes):
/// what an unquoted name folds to, so it needs no quoting anywhere.
pub fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}
