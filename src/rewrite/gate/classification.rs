//! Sorting a parsed statement into a [`StatementKind`] (the allow-list),
//! the refusals for everything else, and the query-shape checks.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};

use super::{CteScopes, StatementKind, normalize};
use crate::error::SqlError;

/// Sort one parsed statement into a [`StatementKind`], or refuse it.
pub fn classify(stmt: Statement) -> Result<StatementKind, SqlError> {
    classify_with(stmt, false)
}

/// [`classify`] for a catalog statement: `generate_series(…)`, a pure
/// row generator PostgreSQL drivers use to walk `search_path` and array
/// bounds, and `pg_get_keywords()`, the SQL keyword list JDBC drivers
/// read, are accepted as table functions there (nothing else is).
pub fn classify_catalog(stmt: Statement) -> Result<StatementKind, SqlError> {
    classify_with(stmt, true)
}

fn classify_with(stmt: Statement, generators: bool) -> Result<StatementKind, SqlError> {
    let check_query_shape = |q: &Query| check_query_shape(q, generators);
    match stmt {
        Statement::Query(ref q) => {
            check_query_shape(q)?;
            Ok(StatementKind::Query(Box::new(stmt)))
        }
        Statement::Explain { ref statement, .. } => {
            // EXPLAIN ANALYZE runs the query: planned, limited and audited
            // like it; its metrics stop at the policy barrier.
            match statement.as_ref() {
                Statement::Query(q) => {
                    check_query_shape(q)?;
                    Ok(StatementKind::Explain(Box::new(stmt)))
                }
                _ => Err(SqlError::new(
                    "0A000",
                    "EXPLAIN is supported for queries only",
                )),
            }
        }
        Statement::Set(set) => classify_set(set),
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
            // `SHOW transaction isolation level` is the one multi-word form;
            // otherwise the parts are a dotted name (`lakeward.purpose`).
            let name = if words == ["transaction", "isolation", "level"] {
                "transaction_isolation".to_owned()
            } else {
                words.join(".")
            };
            Ok(StatementKind::Show { name })
        }
        Statement::Reset(r) => Ok(StatementKind::Reset {
            name: match r.reset {
                ast::Reset::ALL => None,
                ast::Reset::ConfigurationParameter(n) => Some(object_name_lower(&n)),
            },
        }),
        Statement::StartTransaction { .. } => Ok(StatementKind::Begin),
        Statement::Commit { .. } => Ok(StatementKind::Commit),
        Statement::Rollback {
            savepoint: None, ..
        } => Ok(StatementKind::Rollback),
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Ok(StatementKind::RollbackTo {
            name: normalize(&name),
        }),
        Statement::Savepoint { name } => Ok(StatementKind::Savepoint {
            name: normalize(&name),
        }),
        Statement::ReleaseSavepoint { name } => Ok(StatementKind::Release {
            name: normalize(&name),
        }),
        Statement::Discard { object_type } => Ok(match object_type {
            ast::DiscardObject::ALL => StatementKind::DiscardAll,
            ast::DiscardObject::PLANS => StatementKind::NoOp {
                tag: "DISCARD PLANS",
            },
            ast::DiscardObject::SEQUENCES => StatementKind::NoOp {
                tag: "DISCARD SEQUENCES",
            },
            ast::DiscardObject::TEMP => StatementKind::NoOp {
                tag: "DISCARD TEMP",
            },
        }),
        Statement::Deallocate { name, .. } => Ok(StatementKind::Deallocate {
            name: (!(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")))
                .then(|| normalize(&name)),
        }),
        Statement::Declare { mut stmts } if stmts.len() == 1 => {
            let d = stmts.remove(0);
            let (Some(query), [name]) = (d.for_query, d.names.as_slice()) else {
                return Err(SqlError::new(
                    "0A000",
                    "only DECLARE … CURSOR FOR <query> is supported",
                ));
            };
            if d.binary == Some(true) {
                return Err(SqlError::new("0A000", "binary cursors are not supported"));
            }
            check_query_shape(&query)?;
            Ok(StatementKind::Declare {
                name: normalize(name),
                query: Box::new(Statement::Query(query)),
            })
        }
        Statement::Fetch {
            name,
            direction,
            into: None,
            ..
        } => {
            let number = |v: &ast::ValueWithSpan| match &v.value {
                ast::Value::Number(n, _) => n
                    .parse::<usize>()
                    .map_err(|_| SqlError::new("22023", "invalid FETCH count")),
                _ => Err(SqlError::new("22023", "invalid FETCH count")),
            };
            let count = match direction {
                ast::FetchDirection::Count { limit }
                | ast::FetchDirection::Forward { limit: Some(limit) } => Some(number(&limit)?),
                ast::FetchDirection::Next | ast::FetchDirection::Forward { limit: None } => Some(1),
                ast::FetchDirection::All | ast::FetchDirection::ForwardAll => None,
                _ => {
                    return Err(SqlError::new(
                        "0A000",
                        "cursors are forward-only: FETCH [FORWARD] n | ALL | NEXT",
                    ));
                }
            };
            Ok(StatementKind::Fetch {
                name: normalize(&name),
                count,
            })
        }
        Statement::Copy { .. } => match super::copy::classify_copy(stmt)? {
            StatementKind::Copy { query, options } => {
                if let Statement::Query(q) = query.as_ref() {
                    check_query_shape(q)?;
                }
                Ok(StatementKind::Copy { query, options })
            }
            _ => Err(SqlError::internal()),
        },
        Statement::Prepare {
            name,
            data_types,
            mut statement,
        } => {
            cast_declared_parameters(&mut statement, &data_types);
            Ok(StatementKind::Prepare {
                name: normalize(&name),
                statement,
            })
        }
        Statement::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            into,
            using,
            output: false,
            default: false,
            ..
        } if into.is_empty() && using.is_empty() => match name.0.as_slice() {
            [part] => match part.as_ident() {
                Some(ident) => Ok(StatementKind::Execute {
                    name: normalize(ident),
                    params: parameters,
                }),
                None => Err(SqlError::new("42601", "EXECUTE needs a statement name")),
            },
            _ => Err(SqlError::new("42601", "EXECUTE needs a statement name")),
        },
        Statement::Close { cursor } => Ok(StatementKind::Close {
            name: match cursor {
                ast::CloseCursor::All => None,
                ast::CloseCursor::Specific { name } => Some(normalize(&name)),
            },
        }),
        other => Err(refusal(&other)),
    }
}

/// `PREPARE q (int, date) AS …`: each `$n` with a declared type becomes
/// `$n::type`, so the value bound at `EXECUTE` is read as that type.
fn cast_declared_parameters(stmt: &mut Statement, types: &[ast::DataType]) {
    if types.is_empty() {
        return;
    }
    let _ = ast::visit_expressions_mut(stmt, |e| {
        if let ast::Expr::Value(v) = e
            && let ast::Value::Placeholder(p) = &v.value
            && let Some(ty) = p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| types.get(i))
        {
            let inner = std::mem::replace(e, ast::Expr::value(ast::Value::Null));
            *e = ast::Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(inner),
                data_type: ty.clone(),
                array: false,
                format: None,
            };
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The refusal for a statement kind outside the allow-list.
fn refusal(stmt: &Statement) -> SqlError {
    match stmt {
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_)
        | Statement::Copy { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateFunction(_)
        | Statement::Drop { .. }
        | Statement::AlterTable(_)
        | Statement::Grant(_)
        | Statement::Revoke(_) => {
            SqlError::new("42501", "permission denied: lakeward is read-only")
        }
        _ => SqlError::new("0A000", "statement kind is not supported by lakeward"),
    }
}

fn classify_set(set: ast::Set) -> Result<StatementKind, SqlError> {
    match set {
        ast::Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            let local = match scope {
                None | Some(ast::ContextModifier::Session) => false,
                Some(ast::ContextModifier::Local) => true,
                Some(ast::ContextModifier::Global) => {
                    return Err(SqlError::new("0A000", "SET GLOBAL is not supported"));
                }
            };
            let name = object_name_lower(&variable);
            let value = set_value(&values)?;
            Ok(StatementKind::Set { name, value, local })
        }
        ast::Set::SetTimeZone { local, value } => Ok(StatementKind::Set {
            name: "timezone".into(),
            value: set_value(&[value])?,
            local,
        }),
        ast::Set::SetNames { charset_name, .. } => Ok(StatementKind::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value),
            local: false,
        }),
        ast::Set::SetTransaction { .. } => Ok(StatementKind::NoOp { tag: "SET" }),
        _ => Err(SqlError::new("0A000", "this form of SET is not supported")),
    }
}

/// Turn the right-hand side of `SET` into text. Only literals and bare
/// identifiers are accepted; `DEFAULT` gives `None`.
fn set_value(values: &[Expr]) -> Result<Option<String>, SqlError> {
    let mut parts = Vec::with_capacity(values.len());
    for v in values {
        let text = match v {
            Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s)
                | ast::Value::DoubleQuotedString(s)
                | ast::Value::EscapedStringLiteral(s) => s.clone(),
                ast::Value::Number(n, _) => n.clone(),
                ast::Value::Boolean(b) => b.to_string(),
                _ => return Err(SqlError::new("22023", "invalid value for SET")),
            },
            Expr::Identifier(i)
                if i.value.eq_ignore_ascii_case("default") && i.quote_style.is_none() =>
            {
                return Ok(None);
            }
            Expr::Identifier(i) => i.value.clone(),
            Expr::UnaryOp {
                op: ast::UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => format!("-{n}"),
                    _ => return Err(SqlError::new("22023", "invalid value for SET")),
                },
                _ => return Err(SqlError::new("22023", "invalid value for SET")),
            },
            _ => return Err(SqlError::new("22023", "invalid value for SET")),
        };
        parts.push(text);
    }
    Ok(Some(parts.join(", ")))
}

/// Lower-cased dotted name, as PostgreSQL folds configuration parameter names.
pub fn object_name_lower(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The table functions a catalog statement may call.
pub const CATALOG_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "pg_get_keywords"];

/// Refuse query shapes that read outside the registered tables or write:
/// table functions (`read_parquet(...)`), `SELECT ... INTO`, locking clauses,
/// and quoted file paths used as table names.
fn check_query_shape(q: &Query, generators: bool) -> Result<(), SqlError> {
    struct Shape(Option<SqlError>, bool, CteScopes);
    impl Visitor for Shape {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            let bad = match t {
                // A quoted one-part name is one name, dots and all: the
                // name of a CTE in scope (which the planner reads under a
                // name of its own, see `search_path::isolate_dotted_ctes`).
                // Paths and URLs stay refused whatever a CTE is called.
                TableFactor::Table {
                    name, args: None, ..
                } if matches!(name.0.as_slice(), [p] if p.as_ident().is_some_and(|i| {
                    !i.value.contains('/')
                        && !i.value.contains(':')
                        && self.2.contains(&normalize(i))
                })) =>
                {
                    None
                }
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } if self.1
                    && name.0.len() == 1
                    && name.0[0].as_ident().is_some_and(|i| {
                        CATALOG_TABLE_FUNCTIONS
                            .iter()
                            .any(|f| i.value.eq_ignore_ascii_case(f))
                    }) =>
                {
                    None
                }
                TableFactor::Table { args: Some(_), .. } | TableFactor::Function { .. } => {
                    Some("table functions are not allowed")
                }
                TableFactor::Table { name, .. }
                    if name.0.iter().any(|p| {
                        p.as_ident().is_some_and(|i| {
                            i.quote_style.is_some()
                                && (i.value.contains('/')
                                    || i.value.contains(':')
                                    || i.value.contains('.'))
                        })
                    }) =>
                {
                    Some("file or URL table references are not allowed")
                }
                TableFactor::Table { .. }
                | TableFactor::Derived { .. }
                | TableFactor::NestedJoin { .. } => None,
                _ => Some("table functions are not allowed"),
            };
            if let Some(msg) = bad {
                self.0 = Some(SqlError::new("42501", format!("permission denied: {msg}")));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e
                && f.name.0.iter().any(|p| {
                    p.as_ident()
                        .is_some_and(|i| i.value.to_lowercase().starts_with("lakeward_"))
                })
            {
                self.0 = Some(SqlError::new("42883", "function does not exist"));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.2.leave(q);
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.2.enter(q);
            if !q.locks.is_empty() {
                self.0 = Some(SqlError::new(
                    "0A000",
                    "row locking is not supported by lakeward",
                ));
                return ControlFlow::Break(());
            }
            if let SetExpr::Select(s) = q.body.as_ref()
                && s.into.is_some()
            {
                self.0 = Some(SqlError::new(
                    "42501",
                    "permission denied: lakeward is read-only",
                ));
                return ControlFlow::Break(());
            }
            if matches!(
                q.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            ) {
                self.0 = Some(SqlError::new(
                    "42501",
                    "permission denied: lakeward is read-only",
                ));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Shape(None, generators, CteScopes::loose());
    let _ = q.visit(&mut v);
    match v.0 {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
