//! DataFusion errors → PostgreSQL SQLSTATE with a sanitised message.
//!
//! Execution errors can quote data (Arrow's cast errors print the value that
//! failed), so no execution message is ever passed on: each class of failure
//! gets a fixed message. Planning messages name identifiers and types; they are
//! passed on with every quoted literal replaced by `'?'`.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;

use crate::error::SqlError;

/// The statement alone ran out of the engine's memory budget or of spill
/// space: a fixed message naming the limit and how to change it (DataFusion's
/// own text names operators, never data, but is not passed on either).
fn resources_exhausted(msg: &str) -> SqlError {
    crate::metrics::Metrics::global().limit_exceeded(crate::metrics::Limit::Memory);
    // DataFusion's text names the operator (consumer) and sizes, never
    // data: for the operator, in the log only.
    tracing::info!(detail = %first_line(msg), "statement ran out of memory");
    if msg.contains(super::memory::STATEMENT_BUDGET_EXHAUSTED) {
        SqlError::new(
            "53200",
            "out of memory: the statement needs more than one statement's share of the engine's budget (memory.statement_max_percent of memory.limit_mb); narrow the statement (filters, fewer groups, LIMIT) or ask the operator to raise the budget",
        )
    } else if msg.contains(super::memory::ROLE_BUDGET_EXHAUSTED) {
        SqlError::new(
            "53200",
            "out of memory: the statement needs more memory than this role's budget allows (limits.max_memory_mb); narrow the statement (filters, fewer groups, LIMIT) or ask the operator to raise the budget",
        )
    } else if msg.contains("disk") || msg.contains("spill") {
        SqlError::new(
            "53200",
            "out of memory: the statement needs more spill space than the engine allows (memory.spill_max_mb); narrow the statement or ask the operator to raise the limit",
        )
    } else {
        SqlError::new(
            "53200",
            "out of memory: the statement needs more memory than the engine's budget allows (memory.limit_mb); narrow the statement (filters, fewer groups, LIMIT) or ask the operator to raise the budget",
        )
    }
}

/// Map a DataFusion error to a client-facing error.
pub(crate) fn to_sql_error(err: &DataFusionError) -> SqlError {
    match err {
        DataFusionError::Context(_, inner) => to_sql_error(inner),
        DataFusionError::Diagnostic(_, inner) => to_sql_error(inner),
        DataFusionError::Shared(inner) => to_sql_error(inner),
        DataFusionError::Collection(errs) => errs
            .first()
            .map(to_sql_error)
            .unwrap_or_else(SqlError::internal),
        DataFusionError::SQL(_, _) => SqlError::new("42601", "syntax error"),
        DataFusionError::SchemaError(e, _) => schema_error(e),
        DataFusionError::Plan(msg) => plan_error(msg),
        DataFusionError::NotImplemented(msg) => unsupported_construct(msg).unwrap_or_else(|| {
            SqlError::new(
                "0A000",
                format!("not supported: {}", redact_literals(first_line(msg))),
            )
        }),
        DataFusionError::ArrowError(e, _) => arrow_error(e),
        DataFusionError::ResourcesExhausted(msg) => resources_exhausted(msg),
        DataFusionError::Execution(msg) => execution_error(msg),
        DataFusionError::External(e) => {
            if let Some(df) = e.downcast_ref::<DataFusionError>() {
                to_sql_error(df)
            } else if let Some(a) = e.downcast_ref::<ArrowError>() {
                arrow_error(a)
            } else if let Some(sql) = e.downcast_ref::<SqlError>() {
                // Functions of lakeward's own (`pg_datetime`) report a
                // PostgreSQL SQLSTATE with a message that names no value.
                sql.clone()
            } else if let Some(super::delta::DeltaError::UnsupportedFeature { .. }) =
                e.downcast_ref::<super::delta::DeltaError>()
            {
                SqlError::new(
                    "0A000",
                    "a table's newest Delta version needs a reader feature lakeward cannot read; the table is not read (the server log names the feature)",
                )
            } else {
                SqlError::new("XX000", "query execution failed")
            }
        }
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_) => SqlError::new("58030", "could not read table data"),
        DataFusionError::ExecutionJoin(_) => SqlError::new("XX000", "query execution failed"),
        DataFusionError::Configuration(_) => {
            SqlError::new("42501", "permission denied: settings are fixed")
        }
        _ => SqlError::internal(),
    }
}

/// A subquery shape DataFusion's planner could not turn into a join
/// (its message prints the plan's internal expression): named for the
/// user, with what to write instead.
fn unsupported_construct(msg: &str) -> Option<SqlError> {
    let line = first_line(msg);
    let expr = line.strip_prefix("Physical plan does not support logical expression ")?;
    let text = if expr.starts_with("OuterReferenceColumn") {
        "a subquery that reads columns of the outer query (a correlated LATERAL subquery, or a correlated subquery without an aggregate) is not supported here: write it as a join, or aggregate it (LATERAL (SELECT count(*) … WHERE … = outer.col) is supported)"
    } else if expr.starts_with("Exists") {
        "EXISTS (subquery) is not supported in this position: use it as a condition of WHERE, or compare a count (SELECT count(*) … ) > 0"
    } else if expr.starts_with("InSubquery") {
        "IN (subquery) is not supported in this position: use it as a condition of WHERE, or write it as a join"
    } else if expr.starts_with("ScalarSubquery") {
        "this scalar subquery is not supported here: a correlated scalar subquery must aggregate (count, max, …); or write it as a join"
    } else {
        return None;
    };
    Some(SqlError::new("0A000", text))
}

fn schema_error(e: &SchemaError) -> SqlError {
    match e {
        SchemaError::FieldNotFound { field, .. } => SqlError::new(
            "42703",
            format!("column \"{}\" does not exist", field.name()),
        ),
        SchemaError::AmbiguousReference { field } => SqlError::new(
            "42702",
            format!("column reference \"{}\" is ambiguous", field.name()),
        ),
        SchemaError::DuplicateQualifiedField { name, .. }
        | SchemaError::DuplicateUnqualifiedField { name } => SqlError::new(
            "42701",
            format!("column \"{name}\" specified more than once"),
        ),
    }
}

fn plan_error(msg: &str) -> SqlError {
    let line = first_line(msg);
    if let Some(rest) = line.strip_prefix("table '")
        && let Some(name) = rest.strip_suffix("' not found")
    {
        // DataFusion names the relation with its internal catalog first
        // (`datafusion.pg_catalog.pg_x`); the client named schema.table.
        let name = name
            .strip_prefix(super::CATALOG)
            .and_then(|n| n.strip_prefix('.'))
            .unwrap_or(name);
        return SqlError::new("42P01", format!("relation \"{name}\" does not exist"));
    }
    if let Some(rest) = line.strip_prefix("Invalid function '") {
        let name = rest.split('\'').next().unwrap_or("");
        return SqlError::new("42883", format!("function {name} does not exist"));
    }
    if line.contains("No function matches") || line.contains("does not support") {
        return SqlError::new("42883", redact_literals(line));
    }
    if line.contains("Placeholder") || line.contains("placeholder") {
        return SqlError::new("42P18", redact_literals(line));
    }
    if line.contains("Cannot infer common")
        || line.contains("Cannot coerce")
        || line.contains("type")
    {
        return SqlError::new("42804", redact_literals(line));
    }
    SqlError::new("42601", redact_literals(line))
}

fn arrow_error(e: &ArrowError) -> SqlError {
    match e {
        ArrowError::DivideByZero => SqlError::new("22012", "division by zero"),
        ArrowError::CastError(_) | ArrowError::ParseError(_) => {
            SqlError::new("22P02", "invalid input syntax for a type conversion")
        }
        ArrowError::ArithmeticOverflow(_) | ArrowError::ComputeError(_) => {
            SqlError::new("22003", "numeric value out of range")
        }
        ArrowError::ExternalError(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                to_sql_error(df)
            } else {
                SqlError::new("XX000", "query execution failed")
            }
        }
        ArrowError::MemoryError(_) => SqlError::new("53200", "out of memory"),
        _ => SqlError::new("XX000", "query execution failed"),
    }
}

fn execution_error(msg: &str) -> SqlError {
    // Fixed messages only: execution messages may quote data.
    let lower = msg.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        SqlError::new("22012", "division by zero")
    } else if lower.contains("cast") || lower.contains("parse") {
        SqlError::new("22P02", "invalid input syntax for a type conversion")
    } else if lower.contains("overflow") {
        SqlError::new("22003", "numeric value out of range")
    } else {
        SqlError::new("XX000", "query execution failed")
    }
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or("")
}

/// Replace every single-quoted run with `'?'` so that literals never leave.
pub(crate) fn redact_literals(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '\'' {
            if in_quote {
                out.push_str("?'");
            } else {
                out.push('\'');
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(c);
        }
    }
    if in_quote {
        out.push_str("?'");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_quoted_literals() {
        assert_eq!(
            redact_literals("Cannot cast string 'Smith' to Int32"),
            "Cannot cast string '?' to Int32"
        );
        assert_eq!(redact_literals("unterminated 'abc"), "unterminated '?'");
    }

    #[test]
    fn cast_errors_never_echo_values() {
        let e = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string 'Jane Doe' to value of Int32 type".into(),
            )),
            None,
        );
        let s = to_sql_error(&e);
        assert_eq!(s.code, "22P02");
        assert!(!s.message.contains("Jane"));
        let e = DataFusionError::Execution("Cast error: Cannot cast string '123-45-6789'".into());
        assert!(!to_sql_error(&e).message.contains("123-45"));
    }

    #[test]
    fn unknown_table_is_42p01() {
        let e = DataFusionError::Plan("table 'datafusion.public.nope' not found".into());
        assert_eq!(to_sql_error(&e).code, "42P01");
    }
}
