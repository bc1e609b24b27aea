//! Catalog-statement detection: does a statement use the catalog dialect,
//! and does it read nothing but system catalogs?

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, ObjectName, Query, Statement, TableFactor, Visit, Visitor,
};

/// Schemas whose tables are system catalogs.
pub(crate) const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

pub(super) fn lower_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| {
                    if i.quote_style.is_some() {
                        i.value.clone()
                    } else {
                        i.value.to_lowercase()
                    }
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Is `name` (as written) a system-catalog relation?
pub(crate) fn is_system_relation(name: &ObjectName) -> bool {
    let parts = lower_parts(name);
    match parts.as_slice() {
        [t] => t.starts_with("pg_"),
        [s, _] | [_, s, _] => SYSTEM_SCHEMAS.contains(&s.as_str()),
        _ => false,
    }
}

fn is_oid_alias(t: &DataType) -> bool {
    let name = t.to_string().to_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    matches!(
        name,
        "regclass"
            | "regtype"
            | "regproc"
            | "regprocedure"
            | "regnamespace"
            | "regoper"
            | "regrole"
    )
}

/// Does the statement read the system catalog or use its dialect?
pub(crate) fn is_catalog_statement(stmt: &Statement) -> bool {
    struct Find(bool);
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            if is_system_relation(name) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let hit = match e {
                Expr::Function(f) => {
                    f.name.0.len() > 1
                        && f.name.0[0]
                            .as_ident()
                            .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog"))
                }
                Expr::Cast { data_type, .. } => is_oid_alias(data_type),
                _ => false,
            };
            if hit {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Find(false);
    let _ = stmt.visit(&mut f);
    f.0
}

/// Does the statement read system catalogs only? Every relation it names
/// is a system relation or one of its own CTEs in scope (as DataFusion
/// scopes them: a CTE's own body does not see it, except the recursive
/// term of a `WITH RECURSIVE` CTE, `… UNION [ALL] <term>`, where its name
/// is the rows of the previous step: [`recursive_references`]). A table function call
/// (`generate_series(…)`, Grafana's `string_to_array(…) s`) reads no
/// relation by its name (its arguments are walked like the rest); which
/// table functions may run is the gate's decision
/// ([`crate::rewrite::gate::classify_catalog`] allows the catalog row
/// generators only). A statement naming no relation at all reads no table
/// either.
pub(crate) fn reads_only_system_relations(stmt: &Statement) -> bool {
    struct Only {
        scopes: crate::rewrite::gate::CteScopes,
        /// The relation about to be visited is a table function's name.
        function: bool,
        other: bool,
        /// Addresses of the names that are a recursive CTE's reference to
        /// itself.
        recursive: std::collections::HashSet<usize>,
    }
    impl Visitor for Only {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.scopes.enter(q);
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.scopes.leave(q);
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            self.function = matches!(t, TableFactor::Table { args: Some(_), .. });
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let ok = std::mem::take(&mut self.function)
                || is_system_relation(name)
                || self
                    .recursive
                    .contains(&(name as *const ObjectName as usize))
                || matches!(lower_parts(name).as_slice(), [t] if self.scopes.contains(t));
            if ok {
                ControlFlow::Continue(())
            } else {
                self.other = true;
                ControlFlow::Break(())
            }
        }
    }
    let mut v = Only {
        scopes: crate::rewrite::gate::CteScopes::exact(),
        function: false,
        other: false,
        recursive: recursive_references(stmt),
    };
    let _ = stmt.visit(&mut v);
    !v.other
}

/// The relation names (by address) that are a `WITH RECURSIVE` CTE's
/// reference to itself: its one-part name inside the recursive term of its
/// body, `<anchor> UNION [ALL] <term>`, which DataFusion plans as the rows
/// of the previous step. Anywhere else the name is resolved as DataFusion
/// resolves it (the anchor does not see the CTE).
fn recursive_references(stmt: &Statement) -> std::collections::HashSet<usize> {
    use datafusion::sql::sqlparser::ast::{SetExpr, SetOperator};
    struct Named<'a>(&'a str, std::collections::HashSet<usize>);
    impl Visitor for Named<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            if matches!(lower_parts(name).as_slice(), [t] if t == self.0) {
                self.1.insert(name as *const ObjectName as usize);
            }
            ControlFlow::Continue(())
        }
    }
    struct Recursive(std::collections::HashSet<usize>);
    impl Visitor for Recursive {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            let Some(with) = q.with.as_ref().filter(|w| w.recursive) else {
                return ControlFlow::Continue(());
            };
            for cte in &with.cte_tables {
                if let SetExpr::SetOperation {
                    op: SetOperator::Union,
                    right,
                    ..
                } = cte.query.body.as_ref()
                {
                    let name = lower_parts(&ObjectName::from(vec![cte.alias.name.clone()]));
                    let mut named = Named(&name[0], Default::default());
                    let _ = right.visit(&mut named);
                    self.0.extend(named.1);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut r = Recursive(Default::default());
    let _ = stmt.visit(&mut r);
    r.0
}
