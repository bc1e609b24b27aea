//! Rule: PostgreSQL catalog dialect for catalog statements.
//!
//! Clients introspect with PostgreSQL-only syntax DataFusion does not plan:
//! `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`, `'t'::regclass`,
//! `x = ANY('{a,b}')`, scalar subqueries in the select list, unqualified
//! `pg_class`. `datafusion-pg-catalog`'s AST rewrite rules translate these.
//! They are applied to *catalog statements* only: statements that use the
//! catalog dialect (name a system schema, a `pg_*` relation, a
//! `pg_catalog.` function or an oid-alias cast) **and read nothing but
//! system catalogs** (plus their own CTEs and the catalog row generators).
//! Some rules trade exactness for compatibility (a correlated subquery in a
//! select list becomes NULL, `generate_series` is allowed as a table), which
//! is acceptable for a metadata browser and not for a query over patient
//! data: a statement that reads any other relation gets none of them, and
//! the gate's shape checks in full, whatever catalog calls it also makes.
//!
//! Nothing here widens access: the rewritten statement is planned over the
//! session's secured catalog and verified like any other.
//!
//! The files:
//! - `detection.rs`: which statements are catalog statements
//!   ([`is_catalog_statement`], [`reads_only_system_relations`]);
//! - `rules.rs`: the catalog-dialect rewrite rules, lakeward's own and
//!   `datafusion-pg-catalog`'s, in the order they run;
//! - `empty_catalogs.rs`: the rule that answers selects over always-empty
//!   catalogs without rows;
//! - `recursive_subquery.rs`: the rule that answers a correlated scalar
//!   subquery over a recursive CTE with NULL;
//! - `like.rs`: [`portable_like`], the `LIKE … ESCAPE` rewrite applied to
//!   every statement;
//! - `columns.rs`: [`postgres_column_names`], result columns named as
//!   PostgreSQL names them;
//! - `exists.rs`: [`exists_outside_filters`], `EXISTS` in a select list
//!   (or under `OR`) as the correlated count DataFusion can plan;
//! - `tests.rs`: the unit tests.
//!
//! This file holds the entry point, [`rewrite_catalog_statement`], and the
//! AST helpers the rules share.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, Query, Statement, VisitMut, Visitor, VisitorMut,
};

mod columns;
mod detection;
mod empty_catalogs;
mod exists;
mod like;
mod recursive_subquery;
mod rules;
#[cfg(test)]
mod tests;

pub(crate) use columns::{ResultNames, postgres_column_names};
pub(crate) use detection::{SYSTEM_SCHEMAS, is_catalog_statement, reads_only_system_relations};
pub(crate) use exists::exists_outside_filters;
pub(crate) use like::{backslash_pattern, portable_like};
use rules::rules;

/// Apply the catalog-dialect rules when `stmt` is a catalog statement: it
/// uses the catalog dialect and reads system catalogs only. Returns whether
/// it was one (and was rewritten).
pub(crate) fn rewrite_catalog_statement(stmt: &mut Statement) -> bool {
    if !is_catalog_statement(stmt) || !reads_only_system_relations(stmt) {
        return false;
    }
    let mut s = std::mem::replace(
        stmt,
        Statement::Commit {
            chain: false,
            end: false,
            modifier: None,
        },
    );
    for rule in rules() {
        s = rule.rewrite(s);
    }
    *stmt = s;
    true
}

/// Applies `f` to every expression of `s`, children first.
fn map_exprs(mut s: Statement, f: impl FnMut(&mut Expr)) -> Statement {
    struct V<F>(F);
    impl<F: FnMut(&mut Expr)> VisitorMut for V<F> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            (self.0)(e);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(&mut s, &mut V(f));
    s
}

/// `name(args…)` with optional argument clauses, as an AST call.
pub(crate) fn call(name: &str, args: Vec<Expr>, clauses: Vec<FunctionArgumentClause>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Finds an aggregate call outside nested queries.
struct FindAggregate<'a>(&'a mut bool, usize);

impl Visitor for FindAggregate<'_> {
    type Break = ();
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.1 += 1;
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.1 -= 1;
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.1 == 0
            && let Expr::Function(f) = e
            && f.over.is_none()
            && f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                matches!(
                    i.value.to_lowercase().as_str(),
                    "count"
                        | "sum"
                        | "min"
                        | "max"
                        | "avg"
                        | "array_agg"
                        | "string_agg"
                        | "bool_and"
                        | "bool_or"
                        | "every"
                )
            })
        {
            *self.0 = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}
