//! Rule: session functions become literals.
//!
//! `current_user`, `session_user`, `current_database()`, `current_schema()`,
//! `version()`, `pg_backend_pid()` and friends are answered from the session,
//! not by the engine: the rewrite binds them as literals in the AST, so the
//! same plan cache entry can never answer with another session's identity.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, FunctionArguments, Ident, SelectItem, Statement, Value, VisitMut,
    VisitorMut,
};

/// What the literals are bound to.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    pub user: String,
    pub database: String,
    pub schema: String,
    pub backend_pid: i32,
    pub version: String,
}

fn replacement(name: &str, args: &FunctionArguments, facts: &SessionFacts) -> Option<Expr> {
    let no_args = match args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    if !no_args {
        return None;
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
            self.connection_specific |= name == "pg_backend_pid";
            *expr = v;
        }
        ControlFlow::Continue(())
    }
}

/// Bind session functions in `stmt` to literals. Returns `true` when a bound
/// literal holds for this connection only (`pg_backend_pid()`): such a
/// statement must not be shared through the plan cache.
pub fn bind_session_functions(stmt: &mut Statement, facts: &SessionFacts) -> bool {
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
    }
}
