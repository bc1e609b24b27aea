//! A correlated scalar subquery over a recursive CTE becomes NULL.
//!
//! asyncpg's type introspection finds a domain's base type with
//! `(WITH RECURSIVE typebases(oid, depth) AS (… WHERE t2.oid = t.oid …)
//! SELECT oid FROM typebases ORDER BY depth DESC LIMIT 1)`, where `t` is a
//! relation of the enclosing query. DataFusion cannot decorrelate a
//! recursive CTE (the statement fails whatever it asks), so, as for the
//! correlated select-list subqueries `datafusion-pg-catalog` removes, the
//! subquery answers NULL. Catalog statements only; lakeward serves no
//! column of a domain type, so the answer clients lose is the base type of
//! the information-schema domains.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Query, Statement, TableFactor, Value, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion_pg_catalog::sql::rules::SqlStatementRewriteRule;

#[derive(Debug)]
pub(super) struct CorrelatedRecursiveSubquery;

impl SqlStatementRewriteRule for CorrelatedRecursiveSubquery {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                if let Expr::Subquery(q) = e
                    && q.with.as_ref().is_some_and(|w| w.recursive)
                    && is_correlated(q)
                {
                    *e = Expr::value(Value::Null);
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

/// Whether `q` names a column through a relation it does not define
/// itself (a table, its alias, a derived table or a CTE of `q`).
fn is_correlated(q: &Query) -> bool {
    struct Names(HashSet<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(cte.alias.name.value.to_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            match t {
                TableFactor::Table { name, alias, .. } => {
                    if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                        self.0.insert(last.value.to_lowercase());
                    }
                    if let Some(a) = alias {
                        self.0.insert(a.name.value.to_lowercase());
                    }
                }
                TableFactor::Derived { alias: Some(a), .. } => {
                    self.0.insert(a.name.value.to_lowercase());
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    struct Outer<'a>(&'a HashSet<String>, bool);
    impl Visitor for Outer<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = e
                && parts.len() >= 2
                && !self
                    .0
                    .contains(&parts[parts.len() - 2].value.to_lowercase())
            {
                self.1 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(HashSet::new());
    let _ = q.visit(&mut names);
    let mut outer = Outer(&names.0, false);
    let _ = q.visit(&mut outer);
    outer.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::gate::{ParseLimits, parse};

    fn rewritten(sql: &str) -> String {
        let s = parse(sql, ParseLimits::default())
            .expect("parses")
            .remove(0);
        CorrelatedRecursiveSubquery.rewrite(s).to_string()
    }

    #[test]
    fn only_a_correlated_recursive_subquery_becomes_null() {
        let text = rewritten(
            "SELECT t.oid, (CASE WHEN t.typtype = 'd' THEN (WITH RECURSIVE b(oid, depth) AS (\
             SELECT t2.typbasetype, 0 FROM pg_type t2 WHERE t2.oid = t.oid UNION ALL \
             SELECT t2.typbasetype, b.depth + 1 FROM pg_type t2, b WHERE b.oid = t2.oid) \
             SELECT oid FROM b ORDER BY depth DESC LIMIT 1) ELSE NULL END) FROM pg_type t",
        );
        assert!(text.contains("THEN NULL ELSE NULL"), "{text}");

        // The statement is a catalog statement: the recursive term's
        // reference to its CTE is not a table, the anchor's would be.
        let recursive = "WITH RECURSIVE b(n) AS (SELECT oid FROM pg_type UNION ALL \
                         SELECT b.n + 1 FROM b WHERE b.n < 3) SELECT * FROM b";
        assert!(crate::rewrite::compat::reads_only_system_relations(
            &parse(recursive, ParseLimits::default()).expect("parses")[0]
        ));
        let anchored = "WITH RECURSIVE b(n) AS (SELECT n FROM b UNION ALL \
                        SELECT b.n + 1 FROM b WHERE b.n < 3) SELECT * FROM b";
        assert!(!crate::rewrite::compat::reads_only_system_relations(
            &parse(anchored, ParseLimits::default()).expect("parses")[0]
        ));

        for kept in [
            // Recursive, not correlated.
            "SELECT (WITH RECURSIVE b(n) AS (SELECT 1 UNION ALL SELECT b.n + 1 FROM b WHERE b.n < 3) \
             SELECT max(b.n) FROM b) FROM pg_type t",
            // Correlated, not recursive.
            "SELECT (SELECT max(c.relname) FROM pg_class c WHERE c.oid = t.typrelid) FROM pg_type t",
        ] {
            assert!(!rewritten(kept).contains("NULL"), "{kept}");
        }
    }
}
