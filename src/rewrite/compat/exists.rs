//! `EXISTS (subquery)` where DataFusion cannot plan it.
//!
//! DataFusion plans `EXISTS` as a semi (or anti) join only when it is a
//! conjunct of a `WHERE` or `HAVING` clause; in a select list, a `CASE`
//! or under `OR` it stops with an internal error. PostgreSQL tools write
//! it there (`SELECT EXISTS (SELECT 1 FROM … WHERE … = p.id)`), so such an
//! `EXISTS` becomes the correlated count DataFusion decorrelates:
//! `(coalesce((SELECT count(*) FROM … WHERE …), 0) > 0)` (`= 0` for
//! `NOT EXISTS`). Only a subquery whose row count is its `WHERE`'s is
//! counted in place (a plain `SELECT … FROM … WHERE …`, any select list
//! without a function, `GROUP BY` without `HAVING`); any other shape is
//! counted as a derived table, which DataFusion plans when the subquery
//! reads no outer column (otherwise its refusal becomes a clear 0A000 in
//! `engine::errors`). Conjuncts of `WHERE`/`HAVING` are left alone:
//! they are already joins.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, Query, Select, SelectFlavor, SelectItem, SetExpr, Statement, TableAlias,
    TableFactor, TableWithJoins, UnaryOperator, Value, Visit, VisitMut, Visitor, VisitorMut,
};

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;

use super::call;

/// Rewrite every `EXISTS` of `stmt` DataFusion cannot plan where it
/// stands (see the module documentation).
pub(crate) fn exists_outside_filters(stmt: &mut Statement) {
    let _ = VisitMut::visit(stmt, &mut EachQuery);
}

/// Visits every query of a statement (nested ones included).
struct EachQuery;

impl VisitorMut for EachQuery {
    type Break = ();
    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        in_body(&mut q.body);
        ControlFlow::Continue(())
    }
}

fn in_body(body: &mut SetExpr) {
    match body {
        SetExpr::Select(s) => in_select(s),
        SetExpr::SetOperation { left, right, .. } => {
            in_body(left);
            in_body(right);
        }
        _ => {}
    }
}

fn in_select(s: &mut Select) {
    for item in &mut s.projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => outside(e),
            _ => {}
        }
    }
    if let Some(w) = &mut s.selection {
        in_filter(w);
    }
    if let Some(h) = &mut s.having {
        in_filter(h);
    }
}

/// A filter: its top-level conjuncts that are `[NOT] EXISTS` stay (joins);
/// everything else is rewritten.
fn in_filter(e: &mut Expr) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            in_filter(left);
            in_filter(right);
        }
        Expr::Nested(inner) => in_filter(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } if is_exists(expr) => {}
        Expr::Exists { .. } => {}
        other => outside(other),
    }
}

fn is_exists(e: &Expr) -> bool {
    match e {
        Expr::Exists { .. } => true,
        Expr::Nested(inner) => is_exists(inner),
        _ => false,
    }
}

/// Rewrite the `EXISTS` of `e` that are not inside a nested query (those
/// are the nested query's own, visited on their own by [`EachQuery`]).
fn outside(e: &mut Expr) {
    let _ = VisitMut::visit(e, &mut Shallow(0));
}

struct Shallow(usize);

impl VisitorMut for Shallow {
    type Break = ();
    fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.0 += 1;
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.0 = self.0.saturating_sub(1);
        ControlFlow::Continue(())
    }
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if self.0 == 0
            && let Expr::Exists { subquery, negated } = e
        {
            let count = counted(subquery).unwrap_or_else(|| counted_derived(subquery));
            let compared = Expr::BinaryOp {
                left: Box::new(call(
                    "coalesce",
                    vec![
                        Expr::Subquery(Box::new(count)),
                        Expr::value(Value::Number("0".into(), false)),
                    ],
                    vec![],
                )),
                op: if *negated {
                    BinaryOperator::Eq
                } else {
                    BinaryOperator::Gt
                },
                right: Box::new(Expr::value(Value::Number("0".into(), false))),
            };
            *e = Expr::Nested(Box::new(compared));
        }
        ControlFlow::Continue(())
    }
}

/// `SELECT count(*) FROM … WHERE …` of an `EXISTS` subquery whose row
/// count is its `WHERE`'s; `None` for any other shape.
fn counted(q: &Query) -> Option<Query> {
    if q.with.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
        || q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let grouped = match &s.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => !exprs.is_empty() || !modifiers.is_empty(),
        GroupByExpr::All(_) => true,
    };
    if s.having.is_some()
        || s.qualify.is_some()
        || s.top.is_some()
        || s.into.is_some()
        || s.prewhere.is_some()
        || !s.connect_by.is_empty()
        || !s.lateral_views.is_empty()
        || !s.named_window.is_empty()
        || s.from.is_empty()
        || (!grouped && calls_a_function(&s.projection))
    {
        return None;
    }
    let mut select = s.as_ref().clone();
    select.projection = vec![SelectItem::UnnamedExpr(count_star())];
    select.distinct = None;
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    select.sort_by = vec![];
    Some(Query {
        body: Box::new(SetExpr::Select(Box::new(select))),
        order_by: None,
        ..q.clone()
    })
}

/// `SELECT count(*) FROM (<subquery>) AS exists_rows`: exact for any
/// shape, and planned when the subquery reads no outer column (a
/// correlated one stays refused, with the 0A000 of `engine::errors`).
fn counted_derived(q: &Query) -> Query {
    Query {
        with: None,
        body: Box::new(SetExpr::Select(Box::new(Select {
            select_token: AttachedToken::empty(),
            optimizer_hints: vec![],
            distinct: None,
            select_modifiers: None,
            top: None,
            top_before_distinct: false,
            projection: vec![SelectItem::UnnamedExpr(count_star())],
            exclude: None,
            into: None,
            from: vec![TableWithJoins {
                relation: TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(q.clone()),
                    alias: Some(TableAlias {
                        explicit: true,
                        name: Ident::new("exists_rows"),
                        columns: vec![],
                        at: None,
                    }),
                    sample: None,
                },
                joins: vec![],
            }],
            lateral_views: vec![],
            prewhere: None,
            selection: None,
            connect_by: vec![],
            group_by: GroupByExpr::Expressions(vec![], vec![]),
            cluster_by: vec![],
            distribute_by: vec![],
            sort_by: vec![],
            having: None,
            named_window: vec![],
            qualify: None,
            window_before_qualify: false,
            value_table_mode: None,
            flavor: SelectFlavor::Standard,
        }))),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: vec![],
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: vec![],
    }
}

/// Whether a select list calls a function (which may be an aggregate:
/// one row whatever the `WHERE` finds).
fn calls_a_function(items: &[SelectItem]) -> bool {
    struct Finds(bool);
    impl Visitor for Finds {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Function(_)) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finds(false);
    for item in items {
        let _ = item.visit(&mut f);
    }
    f.0
}

fn count_star() -> Expr {
    let Expr::Function(mut f) = call("count", vec![], vec![]) else {
        return Expr::value(Value::Null);
    };
    f.args = FunctionArguments::List(FunctionArgumentList {
        duplicate_treatment: None,
        args: vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)],
        clauses: vec![],
    });
    Expr::Function(f)
}
