//! Rule: session functions become literals.
//!
//! `current_user`, `session_user`, `current_database()`, `current_schema()`,
//! `version()`, `pg_backend_pid()` and friends are answered from the session,
//! not by the engine: the rewrite binds them as literals in the AST, so the
//! same plan cache entry can never answer with another session's identity.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Array, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    SelectItem, Statement, Value, VisitMut, VisitorMut,
};

/// What the literals are bound to.
#[derive(Debug, Clone, Default)]
pub struct SessionFacts {
    pub user: String,
    pub database: String,
    pub schema: String,
    pub backend_pid: i32,
    pub version: String,
    /// `search_path` schemas in order, for `current_schemas()`.
    pub search_path: Vec<String>,
    /// Configuration parameters by lower-case name, for `current_setting()`.
    pub settings: std::collections::BTreeMap<String, String>,
}

/// The literal arguments of a call, when every argument is one.
fn literal_args(args: &FunctionArguments) -> Option<Vec<Value>> {
    let FunctionArguments::List(l) = args else {
        return None;
    };
    l.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => Some(v.value.clone()),
            _ => None,
        })
        .collect()
}

/// `current_schemas(bool)` and `current_setting(text [, bool])`.
fn replacement_with_args(
    name: &str,
    args: &FunctionArguments,
    facts: &SessionFacts,
) -> Option<Expr> {
    let s = |v: &str| Expr::value(Value::SingleQuotedString(v.to_owned()));
    let values = literal_args(args)?;
    match (name, values.as_slice()) {
        ("current_schemas", [Value::Boolean(implicit)]) => {
            let mut schemas: Vec<Expr> = Vec::new();
            if *implicit && !facts.search_path.iter().any(|p| p == "pg_catalog") {
                schemas.push(s("pg_catalog"));
            }
            schemas.extend(facts.search_path.iter().map(|p| s(p)));
            Some(Expr::Array(Array {
                elem: schemas,
                named: true,
            }))
        }
        ("current_setting", [Value::SingleQuotedString(n), rest @ ..]) => {
            let missing_ok = matches!(rest, [Value::Boolean(true)]);
            match facts.settings.get(&n.to_lowercase()) {
                Some(v) => Some(s(v)),
                None if missing_ok => Some(Expr::Cast {
                    kind: CastKind::Cast,
                    expr: Box::new(Expr::value(Value::Null)),
                    data_type: DataType::Text,
                    array: false,
                    format: None,
                }),
                None => None,
            }
        }
        _ => None,
    }
}

fn replacement(name: &str, args: &FunctionArguments, facts: &SessionFacts) -> Option<Expr> {
    let no_args = match args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    if !no_args {
        return replacement_with_args(name, args, facts);
    }
    let s = |v: &str| Some(Expr::value(Value::SingleQuotedString(v.to_owned())));
    match name {
        "current_user" | "session_user" | "user" | "current_role" | "getpgusername" => {
            s(&facts.user)
        }
        "current_database" | "current_catalog" => s(&facts.database),
        "current_schema" => s(&facts.schema),
        "version" => s(&facts.version),
        // int4, as in PostgreSQL.
        "pg_backend_pid" => Some(Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(Expr::value(Value::Number(
                facts.backend_pid.to_string(),
                false,
            ))),
            data_type: DataType::Integer(None),
            array: false,
            format: None,
        }),
        _ => None,
    }
}

fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(f) if f.name.0.len() == 1 || is_pg_catalog(&f.name.0) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        _ => None,
    }
}

fn is_pg_catalog(parts: &[datafusion::sql::sqlparser::ast::ObjectNamePart]) -> bool {
    parts.len() == 2
        && parts[0]
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog"))
}

struct Binder<'a> {
    facts: &'a SessionFacts,
    /// A literal that only holds for this connection (its backend pid).
    connection_specific: bool,
}

impl VisitorMut for Binder<'_> {
    type Break = ();

    fn pre_visit_select(
        &mut self,
        select: &mut datafusion::sql::sqlparser::ast::Select,
    ) -> ControlFlow<()> {
        // Keep PostgreSQL's column name (`current_user`, `version`) for a bare
        // function in the select list once it becomes a literal.
        for item in select.projection.iter_mut() {
            if let SelectItem::UnnamedExpr(expr) = item
                && let Some(name) = function_name(expr)
                && let Expr::Function(f) = &*expr
                && replacement(&name, &f.args, self.facts).is_some()
            {
                let expr = std::mem::replace(expr, Expr::value(Value::Null));
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::new(name),
                };
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(name) = function_name(expr)
            && let Expr::Function(f) = &*expr
            && let Some(v) = replacement(&name, &f.args, self.facts)
        {
            // A setting can change within the session without changing
            // the plan key.
            self.connection_specific |= name == "pg_backend_pid" || name == "current_setting";
            *expr = v;
        }
        ControlFlow::Continue(())
    }
}

/// Bind session functions in `stmt` to literals. Returns `true` when a bound
/// literal holds for this connection only (`pg_backend_pid()`): such a
/// statement must not be shared through the plan cache.
pub(crate) fn bind_session_functions(stmt: &mut Statement, facts: &SessionFacts) -> bool {
    let mut binder = Binder {
        facts,
        connection_specific: false,
    };
    let _ = stmt.visit(&mut binder);
    binder.connection_specific
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::gate::{ParseLimits, parse};

    #[test]
    fn binds_identity_functions_as_literals() {
        let facts = SessionFacts {
            user: "alice".into(),
            database: "lakeward".into(),
            schema: "public".into(),
            backend_pid: 7,
            version: "PostgreSQL 15.0".into(),
            search_path: vec!["clinical".into(), "public".into()],
            settings: [("application_name".to_owned(), "psql".to_owned())].into(),
        };
        let mut s = parse(
            "SELECT current_user, current_database(), version(), pg_backend_pid() + 1",
            ParseLimits::default(),
        )
        .unwrap()
        .remove(0);
        assert!(bind_session_functions(&mut s, &facts));
        assert_eq!(
            s.to_string(),
            "SELECT 'alice' AS current_user, 'lakeward' AS current_database, 'PostgreSQL 15.0' AS version, CAST(7 AS INTEGER) + 1"
        );
        let mut s = parse(
            "SELECT current_schemas(true), current_setting('Application_Name'), current_setting('nope', true)",
            ParseLimits::default(),
        )
        .unwrap()
        .remove(0);
        assert!(bind_session_functions(&mut s, &facts));
        assert_eq!(
            s.to_string(),
            "SELECT ARRAY['pg_catalog', 'clinical', 'public'] AS current_schemas, 'psql' AS current_setting, CAST(NULL AS TEXT) AS current_setting"
        );
    }
}
