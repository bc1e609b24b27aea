//! Selects over system catalogs that are always empty in lakeward answer
//! no rows without planning their expressions.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, JoinOperator, Query, Select, SelectItem, SetExpr, Statement,
    TableFactor, Value, Visit, VisitMut, VisitorMut,
};
use datafusion_pg_catalog::sql::rules::SqlStatementRewriteRule;

use super::FindAggregate;
use super::columns::pg_column_name;
use super::detection::lower_parts;

/// System catalogs that are always empty in lakeward: it has no row
/// security policies (its policy is its own), triggers, inheritance,
/// publications, sequences, foreign tables, defaults or enums.
const EMPTY_CATALOGS: &[&str] = &[
    "pg_attrdef",
    "pg_db_role_setting",
    "pg_default_acl",
    "pg_enum",
    "pg_event_trigger",
    "pg_foreign_data_wrapper",
    "pg_foreign_server",
    "pg_foreign_table",
    "pg_inherits",
    "pg_largeobject",
    "pg_partitioned_table",
    "pg_policy",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_seclabel",
    "pg_sequence",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
    "pg_subscription",
    "pg_subscription_rel",
    "pg_trigger",
    "pg_user_mapping",
];

/// Catalogs lakeward keeps empty but typed (its tables declare no keys or
/// indexes): a query that reads their key arrays needs the types, so only
/// the statement's outermost SELECT (whose columns go to the client) is
/// answered without rows by [`EmptyCatalogSelect`].
const EMPTY_KEY_CATALOGS: &[&str] = &["pg_index", "pg_constraint"];

fn is_empty_catalog(f: &TableFactor, outermost: bool) -> bool {
    match f {
        TableFactor::Table {
            name, args: None, ..
        } => {
            let parts = lower_parts(name);
            let table = match parts.as_slice() {
                [t] => t,
                [s, t] if s == "pg_catalog" => t,
                _ => return false,
            };
            EMPTY_CATALOGS.contains(&table.as_str())
                || (outermost && EMPTY_KEY_CATALOGS.contains(&table.as_str()))
        }
        _ => false,
    }
}

/// A SELECT that reads only always-empty catalogs (no aggregate, no GROUP
/// BY) has no rows: it becomes `SELECT NULL AS <name>, … WHERE false`,
/// keeping its column names. Clients ask these (psql's `\d` asks for row
/// security policies and publications) with expressions DataFusion cannot
/// plan over the exported column types.
#[derive(Debug)]
pub(super) struct EmptyCatalogSelect;

impl EmptyCatalogSelect {
    fn rewrite_select(select: &mut Select, outermost: bool) {
        // Rows need every comma-separated FROM item to have rows; an inner
        // join with an empty catalog has none, and a left join keeps an
        // empty left side empty.
        // A select that unnests a key catalog's arrays as a table
        // (`CROSS JOIN UNNEST(conkey)`, ADBC's constraint listing) reads
        // nothing a nested query could need the types of: it has no rows
        // at any depth.
        let unnests = select.from.iter().any(|t| {
            matches!(t.relation, TableFactor::UNNEST { .. })
                || t.joins
                    .iter()
                    .any(|j| matches!(j.relation, TableFactor::UNNEST { .. }))
        });
        let outermost = outermost || unnests;
        let only_empty = select.from.iter().any(|t| {
            let mut empty = is_empty_catalog(&t.relation, outermost);
            for j in &t.joins {
                match j.join_operator {
                    JoinOperator::Join(_)
                    | JoinOperator::Inner(_)
                    | JoinOperator::CrossJoin(_)
                    | JoinOperator::LeftSemi(_)
                    | JoinOperator::Semi(_) => empty |= is_empty_catalog(&j.relation, outermost),
                    JoinOperator::Left(_)
                    | JoinOperator::LeftOuter(_)
                    | JoinOperator::LeftAnti(_)
                    | JoinOperator::Anti(_) => {}
                    _ => empty = false,
                }
            }
            empty
        });
        if !only_empty {
            return;
        }
        // GROUP BY over no rows makes no groups, so no rows whatever the
        // select list (taken only for the unnesting select, whose columns
        // no nested query reads); without GROUP BY, an aggregate or HAVING
        // makes one.
        let groups =
            unnests && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if !e.is_empty());
        if !groups {
            if !matches!(&select.group_by, GroupByExpr::Expressions(..)) || select.having.is_some()
            {
                return;
            }
            let mut aggregates = false;
            let _ = select
                .projection
                .visit(&mut FindAggregate(&mut aggregates, 0));
            if aggregates {
                return;
            }
        }
        let mut used = std::collections::BTreeSet::new();
        for (i, item) in select.projection.iter_mut().enumerate() {
            let name = match item {
                SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                SelectItem::UnnamedExpr(Expr::Identifier(id)) => id.value.clone(),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                    p.last().map(|i| i.value.clone()).unwrap_or_default()
                }
                SelectItem::UnnamedExpr(e) => {
                    pg_column_name(e).unwrap_or_else(|| format!("column{}", i + 1))
                }
                // `*` over an empty catalog: no rows, one placeholder column.
                _ => "?column?".to_owned(),
            };
            // DataFusion refuses duplicate names; PostgreSQL clients read
            // such columns by position.
            let name = if used.insert(name.clone()) {
                name
            } else {
                format!("{name}_{}", i + 1)
            };
            *item = SelectItem::ExprWithAlias {
                expr: Expr::value(Value::Null),
                alias: Ident::with_quote('"', name),
            };
        }
        // The statement keeps its parameters (a driver binds as many as it
        // wrote, 08P01 otherwise), typed as written where they were cast.
        let kept = placeholders(select);
        select.from.clear();
        select.selection = Some(kept.into_iter().fold(
            Expr::value(Value::Boolean(false)),
            |acc, p| Expr::BinaryOp {
                left: Box::new(acc),
                op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
                right: Box::new(Expr::IsNull(Box::new(p))),
            },
        ));
    }
}

/// The parameters (`$n`) a select mentions, each once, with the cast it
/// was written with (`$1::INTEGER`), before its expressions are dropped.
fn placeholders(select: &Select) -> Vec<Expr> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(select, |e| {
        let name = match e {
            Expr::Cast { expr, .. } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::Placeholder(n) => Some(n.clone()),
                    _ => None,
                },
                _ => None,
            },
            Expr::Value(v) => match &v.value {
                Value::Placeholder(n) => Some(n.clone()),
                _ => None,
            },
            _ => None,
        };
        if let Some(n) = name
            && seen.insert(n)
        {
            out.push(e.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

impl EmptyCatalogSelect {
    /// Rewrites the selects of `q`'s body; true when none reads a table.
    fn rewrite_query(q: &mut Query, outermost: bool) {
        fn walk(body: &mut SetExpr, outermost: bool) -> bool {
            match body {
                SetExpr::Select(select) => {
                    EmptyCatalogSelect::rewrite_select(select, outermost);
                    select.from.is_empty()
                }
                SetExpr::SetOperation { left, right, .. } => {
                    let l = walk(left, outermost);
                    let r = walk(right, outermost);
                    l && r
                }
                _ => false,
            }
        }
        // ORDER BY over the rewritten select would name columns of tables
        // that are no longer read.
        if walk(q.body.as_mut(), outermost) && matches!(q.body.as_ref(), SetExpr::Select(_)) {
            q.order_by = None;
        }
    }
}

impl SqlStatementRewriteRule for EmptyCatalogSelect {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
                EmptyCatalogSelect::rewrite_query(q, false);
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        if let Statement::Query(q) = &mut s {
            EmptyCatalogSelect::rewrite_query(q, true);
        }
        s
    }
}
