//! The tables a statement reads, and the CTE scopes that tell a CTE from
//! a table along the way.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement, Visit, Visitor};

use super::normalize;

/// A table a statement refers to, resolved like DataFusion resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// `None` when a three-part name names another catalog.
    pub schema_table: Option<(String, String)>,
}

/// The CTE names in scope at each point of a walk over a statement: call
/// [`CteScopes::enter`] from `pre_visit_query` and [`CteScopes::leave`]
/// from `post_visit_query`. Names are compared as DataFusion normalises
/// them (unquoted folds to lower case), as one part whatever they contain:
/// `"clinical.patients"` is one name, never the two-part name.
///
/// - [`CteScopes::loose`]: every CTE of an enclosing `WITH` is in scope
///   everywhere below it, its own body and earlier siblings' bodies
///   included. Use it where calling something a CTE that the planner
///   resolves as a table can only turn a result into an error.
/// - [`CteScopes::exact`]: as DataFusion plans, a CTE is in scope in the
///   bodies of the CTEs after it and in the query body; a recursive CTE's
///   own body is counted as *not* seeing itself (a self-reference in the
///   static term is a table for DataFusion). Use it where calling a table a
///   CTE would be unsafe.
#[derive(Debug, Default)]
pub struct CteScopes {
    frames: Vec<CteFrame>,
    exact: bool,
}

#[derive(Debug)]
struct CteFrame {
    names: Vec<String>,
    /// Addresses of the CTE bodies, to know which body is being walked.
    bodies: Vec<usize>,
    /// How many of `names` are in scope now.
    visible: usize,
}

fn address(q: &Query) -> usize {
    q as *const Query as usize
}

impl CteScopes {
    pub fn loose() -> CteScopes {
        CteScopes {
            frames: Vec::new(),
            exact: false,
        }
    }

    pub fn exact() -> CteScopes {
        CteScopes {
            frames: Vec::new(),
            exact: true,
        }
    }

    /// Entering `q` (its WITH clause, if any, comes into scope).
    pub fn enter(&mut self, q: &Query) {
        if self.exact
            && let Some(f) = self.frames.last_mut()
            && let Some(i) = f.bodies.iter().position(|b| *b == address(q))
        {
            f.visible = i;
        }
        let (names, bodies): (Vec<String>, Vec<usize>) = q
            .with
            .as_ref()
            .map(|w| {
                (
                    w.cte_tables
                        .iter()
                        .map(|c| normalize(&c.alias.name))
                        .collect(),
                    w.cte_tables.iter().map(|c| address(&c.query)).collect(),
                )
            })
            .unwrap_or_default();
        let visible = names.len();
        self.frames.push(CteFrame {
            names,
            bodies,
            visible,
        });
    }

    /// Leaving `q`.
    pub fn leave(&mut self, q: &Query) {
        self.frames.pop();
        if let Some(f) = self.frames.last_mut()
            && f.bodies.contains(&address(q))
        {
            f.visible = f.names.len();
        }
    }

    /// Is the one-part name `name` (normalised) a CTE here?
    pub fn contains(&self, name: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.names[..f.visible].iter().any(|n| n == name))
    }
}

/// Every table reference of `stmt` that is not one of its CTEs, resolved
/// against `default_schema` (one-part names) and the `datafusion` catalog.
pub fn referenced_tables(stmt: &Statement, default_schema: &str) -> Vec<TableRef> {
    /// CTE names are in scope inside the query that defines them (its WITH
    /// bodies and its body), not outside it. A mistake here could only turn a
    /// 42501 into a 42P01: denied tables are absent from a session's catalog.
    struct Refs<'a> {
        scopes: CteScopes,
        default_schema: &'a str,
        out: Vec<TableRef>,
    }
    impl Visitor for Refs<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.scopes.enter(q);
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.scopes.leave(q);
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| p.as_ident().map(normalize).unwrap_or_default())
                .collect();
            let r = match parts.as_slice() {
                [t] if self.scopes.contains(t) => None,
                [t] => Some(TableRef {
                    schema_table: Some((self.default_schema.to_owned(), t.clone())),
                }),
                [s, t] => Some(TableRef {
                    schema_table: Some((s.clone(), t.clone())),
                }),
                [c, s, t] if c == "datafusion" => Some(TableRef {
                    schema_table: Some((s.clone(), t.clone())),
                }),
                _ => Some(TableRef { schema_table: None }),
            };
            self.out.extend(r);
            ControlFlow::Continue(())
        }
    }
    let mut v = Refs {
        scopes: CteScopes::loose(),
        default_schema,
        out: Vec::new(),
    };
    let _ = stmt.visit(&mut v);
    v.out
}

/// Does the statement name any relation that is not one of its own CTEs
/// or a system-catalog table?
pub fn reads_tables(stmt: &Statement) -> bool {
    referenced_tables(stmt, "public").iter().any(|r| {
        !matches!(&r.schema_table, Some((s, _)) if crate::rewrite::compat::SYSTEM_SCHEMAS.contains(&s.as_str()))
    })
}
