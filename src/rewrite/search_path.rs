//! Rule: resolve unqualified table names through the session's `search_path`.
//!
//! PostgreSQL looks an unqualified name up in `pg_catalog` first (unless the
//! path names it elsewhere), then in each schema of `search_path` in order;
//! the first schema holding a relation of that name wins. DataFusion has one
//! default schema only, so lakeward qualifies the names in the AST before
//! planning. `exists` answers from the session's secured catalog: a table the
//! session may not query is never found, exactly as if it did not exist.
//! Names left unresolved stay unqualified and fail at planning (42P01), or
//! are refused by the grant check when they name a denied table of the first
//! schema.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, Statement, VisitMut, VisitorMut,
};

/// Parse a `search_path` setting into schema names, in order. `$user` is
/// dropped (lakeward has no per-user schemas); quoted names keep their case.
pub(crate) fn parse_search_path(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(q) => q.replace("\"\"", "\""),
                None => s.to_lowercase(),
            },
        )
        .filter(|s| s != "$user")
        .collect()
}

/// The schemas an unqualified name is looked up in, in order.
pub(crate) fn effective_path(path: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(path.len() + 1);
    if !path.iter().any(|s| s == "pg_catalog") {
        out.push("pg_catalog".to_owned());
    }
    out.extend(path.iter().cloned());
    out
}

/// Qualify every unqualified relation name of `stmt` that is not a CTE in
/// scope with the first schema of the effective path that has it.
pub(crate) fn qualify(stmt: &mut Statement, path: &[String], exists: &dyn Fn(&str, &str) -> bool) {
    struct Q<'a> {
        scopes: Vec<Vec<String>>,
        path: Vec<String>,
        exists: &'a dyn Fn(&str, &str) -> bool,
    }
    impl VisitorMut for Q<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            let names = q
                .with
                .as_ref()
                .map(|w| w.cte_tables.iter().map(|c| normal(&c.alias.name)).collect())
                .unwrap_or_default();
            self.scopes.push(names);
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.scopes.pop();
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &mut ObjectName) -> ControlFlow<()> {
            let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
                return ControlFlow::Continue(());
            };
            let table = normal(ident);
            if self.scopes.iter().any(|s| s.contains(&table)) {
                return ControlFlow::Continue(());
            }
            if let Some(schema) = self.path.iter().find(|s| (self.exists)(s, &table)) {
                let ident = ident.clone();
                *name = ObjectName(vec![
                    ObjectNamePart::Identifier(Ident::with_quote('"', schema.clone())),
                    ObjectNamePart::Identifier(ident),
                ]);
            }
            ControlFlow::Continue(())
        }
    }
    let mut q = Q {
        scopes: Vec::new(),
        path: effective_path(path),
        exists,
    };
    let _ = stmt.visit(&mut q);
}

/// Give every CTE whose name contains a dot a name without one, and the
/// one-part references to it in its scope that name. DataFusion looks a
/// relation up among the CTEs by its printed name, so a CTE
/// `"clinical.patients"` would otherwise answer for the two-part name
/// `clinical.patients` (and `"datafusion.clinical.patients"` for the
/// three-part one); PostgreSQL's quoted one-part name is one name, dots
/// and all. A renamed reference keeps the name it was written with as its
/// alias, so `"clinical.patients".ssn` still resolves.
pub(crate) fn isolate_dotted_ctes(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{TableAlias, TableFactor, Visit, Visitor};
    use std::collections::{BTreeMap, BTreeSet};

    // Every CTE name and relation name part of the statement, so that a new
    // name is unused.
    struct Names {
        used: BTreeSet<String>,
        dotted: BTreeSet<String>,
    }
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            for cte in q.with.iter().flat_map(|w| w.cte_tables.iter()) {
                let name = normal(&cte.alias.name);
                if name.contains('.') {
                    self.dotted.insert(name.clone());
                }
                self.used.insert(name);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            for p in &name.0 {
                if let ObjectNamePart::Identifier(i) = p {
                    self.used.insert(normal(i));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names {
        used: BTreeSet::new(),
        dotted: BTreeSet::new(),
    };
    let _ = Visit::visit(&*stmt, &mut names);
    if names.dotted.is_empty() {
        return;
    }
    let mut renamed = BTreeMap::new();
    let mut n = 0;
    for old in names.dotted {
        let new = loop {
            n += 1;
            let candidate = format!("lakeward_cte_{n}");
            if !names.used.contains(&candidate) {
                break candidate;
            }
        };
        renamed.insert(old, new);
    }

    struct Rename {
        scopes: crate::rewrite::gate::CteScopes,
        renamed: BTreeMap<String, String>,
    }
    impl VisitorMut for Rename {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            // Scope by the names as written, then rename the definitions.
            self.scopes.enter(q);
            for cte in q.with.iter_mut().flat_map(|w| w.cte_tables.iter_mut()) {
                if let Some(new) = self.renamed.get(&normal(&cte.alias.name)) {
                    cte.alias.name = Ident::new(new.clone());
                }
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            self.scopes.leave(q);
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = t
            else {
                return ControlFlow::Continue(());
            };
            let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
                return ControlFlow::Continue(());
            };
            let written = normal(ident);
            let Some(new) = self.renamed.get(&written) else {
                return ControlFlow::Continue(());
            };
            if !self.scopes.contains(&written) {
                return ControlFlow::Continue(());
            }
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: ident.clone(),
                    columns: vec![],
                    at: None,
                });
            }
            *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(new.clone()))]);
            ControlFlow::Continue(())
        }
    }
    let mut r = Rename {
        scopes: crate::rewrite::gate::CteScopes::loose(),
        renamed,
    };
    let _ = stmt.visit(&mut r);
}

fn normal(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::gate::{ParseLimits, parse};

    #[test]
    fn search_path_settings_parse() {
        assert_eq!(parse_search_path("\"$user\", public"), ["public"]);
        assert_eq!(
            parse_search_path("Clinical, \"Claims\" ,public"),
            ["clinical", "Claims", "public"]
        );
        assert_eq!(
            effective_path(&["clinical".into()]),
            ["pg_catalog", "clinical"]
        );
    }

    #[test]
    fn a_cte_name_with_a_dot_is_one_name() {
        let rewritten = |sql: &str| {
            let mut stmt = parse(sql, ParseLimits::default()).unwrap().remove(0);
            isolate_dotted_ctes(&mut stmt);
            stmt.to_string()
        };
        assert_eq!(
            rewritten(
                "WITH \"clinical.patients\" AS (SELECT 'x' AS ssn) SELECT * FROM clinical.patients, \"clinical.patients\""
            ),
            "WITH lakeward_cte_1 AS (SELECT 'x' AS ssn) SELECT * FROM clinical.patients, lakeward_cte_1 AS \"clinical.patients\""
        );
        // Recursive self-references follow; an unused new name is chosen.
        assert_eq!(
            rewritten(
                "WITH RECURSIVE \"a.b\"(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM \"a.b\" x WHERE n < 3) SELECT * FROM \"a.b\", lakeward_cte_1"
            ),
            "WITH RECURSIVE lakeward_cte_2 (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM lakeward_cte_2 x WHERE n < 3) SELECT * FROM lakeward_cte_2 AS \"a.b\", lakeward_cte_1"
        );
        // Out of the CTE's scope the quoted name stays (and names no table).
        assert_eq!(
            rewritten("SELECT * FROM (WITH \"a.b\" AS (SELECT 1) SELECT 1) s, \"a.b\""),
            "SELECT * FROM (WITH lakeward_cte_1 AS (SELECT 1) SELECT 1) s, \"a.b\""
        );
        let plain = "WITH x AS (SELECT 1) SELECT * FROM x";
        assert_eq!(rewritten(plain), plain);
    }

    #[test]
    fn names_resolve_in_path_order_and_ctes_shadow() {
        let exists = |s: &str, t: &str| {
            matches!(
                (s, t),
                ("clinical", "patients") | ("claims", "claims") | ("pg_catalog", "pg_class")
            )
        };
        let mut stmt = parse(
            "WITH x AS (SELECT 1) SELECT * FROM patients, claims, pg_class, x, nothing, clinical.encounters",
            ParseLimits::default(),
        )
        .unwrap()
        .remove(0);
        qualify(&mut stmt, &["clinical".into(), "claims".into()], &exists);
        let text = stmt.to_string();
        assert!(text.contains("FROM \"clinical\".patients, \"claims\".claims, \"pg_catalog\".pg_class, x, nothing, clinical.encounters"), "{text}");
    }
}
