//! `LIKE`/`ILIKE` patterns with another escape than the backslash,
//! rewritten in the backslash form DataFusion executes.

use datafusion::sql::sqlparser::ast::{BinaryOperator, DataType, Expr, Statement, Value};

use super::map_exprs;

/// A constant string expression: a literal, a cast of one to a string
/// type, a parenthesised one or a concatenation of them.
fn constant_string(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            _ => None,
        },
        Expr::Nested(inner) => constant_string(inner),
        Expr::Cast {
            expr,
            data_type:
                DataType::Text
                | DataType::Varchar(_)
                | DataType::CharacterVarying(_)
                | DataType::String(_),
            ..
        } => constant_string(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat,
            right,
        } => Some(constant_string(left)? + &constant_string(right)?),
        _ => None,
    }
}

/// `pattern` written with escape character `escape` (none when `None`),
/// rewritten for the backslash escape DataFusion implements. `None` when
/// the pattern ends in a lone escape character (PostgreSQL refuses it).
pub(crate) fn backslash_pattern(pattern: &str, escape: Option<char>) -> Option<String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            let next = chars.next()?;
            if matches!(next, '%' | '_' | '\\') {
                out.push('\\');
            }
            out.push(next);
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `LIKE`/`ILIKE` with an `ESCAPE` other than the backslash (SQLAlchemy
/// writes `NOT LIKE 'pg/_' || '%' ESCAPE '/'`, or `$1 || '%'` when the
/// driver binds parameters): DataFusion executes only the backslash, so a
/// constant pattern is rewritten to the same pattern in backslash form, and
/// any other pattern is wrapped in `like_escape(pattern, escape)`. Applies to every statement: it changes how a pattern
/// is written, never what it matches.
pub(crate) fn portable_like(stmt: &mut Statement) {
    let s = std::mem::replace(
        stmt,
        Statement::Commit {
            chain: false,
            end: false,
            modifier: None,
        },
    );
    *stmt = map_exprs(s, |e| {
        let (Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        }) = e
        else {
            return;
        };
        let Some(v) = escape_char.as_ref() else {
            return;
        };
        let escape = match &v.value {
            Value::SingleQuotedString(s) => {
                let mut cs = s.chars();
                match (cs.next(), cs.next()) {
                    (None, _) => None,
                    (Some(c), None) => Some(c),
                    _ => return,
                }
            }
            _ => return,
        };
        if escape == Some('\\') {
            return;
        }
        match constant_string(pattern) {
            Some(text) => {
                if let Some(rewritten) = backslash_pattern(&text, escape) {
                    **pattern = Expr::value(Value::SingleQuotedString(rewritten));
                    *escape_char = None;
                }
            }
            // A pattern known only when the statement runs (a bound
            // parameter): PostgreSQL's `like_escape` converts it then.
            None => {
                let escape_text = escape.map(String::from).unwrap_or_default();
                let p = std::mem::replace(&mut **pattern, Expr::value(Value::Null));
                **pattern = super::call(
                    "like_escape",
                    vec![p, Expr::value(Value::SingleQuotedString(escape_text))],
                    vec![],
                );
                *escape_char = None;
            }
        }
    });
}
