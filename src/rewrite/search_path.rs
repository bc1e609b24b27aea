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
pub fn parse_search_path(setting: &str) -> Vec<String> {
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
pub fn effective_path(path: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(path.len() + 1);
    if !path.iter().any(|s| s == "pg_catalog") {
        out.push("pg_catalog".to_owned());
    }
    out.extend(path.iter().cloned());
    out
}

/// Qualify every unqualified relation name of `stmt` that is not a CTE in
/// scope with the first schema of the effective path that has it.
pub fn qualify(stmt: &mut Statement, path: &[String], exists: &dyn Fn(&str, &str) -> bool) {
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
