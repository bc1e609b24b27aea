//! Result columns named as PostgreSQL names them.

use datafusion::sql::sqlparser::ast::{Expr, Ident, SelectItem, SetExpr, Statement, Value};

/// The column name PostgreSQL gives an unnamed select-list expression:
/// the function's name for a call (`count`), the column's for a cast of a
/// column, `case` for CASE and `?column?` otherwise. `None`: DataFusion's
/// name is already PostgreSQL's (a column, a wildcard).
pub(super) fn pg_column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Identifier(i) => Some(i.value.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
            inner => pg_column_name(inner),
        },
        Expr::Nested(inner) => pg_column_name(inner),
        Expr::Case { .. } => Some("case".to_owned()),
        _ => Some("?column?".to_owned()),
    }
}

/// Name the result columns of a query the way PostgreSQL does (`count`,
/// not `count(*)`), so clients that read columns by name find them. Only
/// the outermost select list is renamed, and only where the new name is
/// unique among the result's columns (DataFusion refuses duplicates).
pub(crate) fn postgres_column_names(stmt: &mut Statement) {
    let Statement::Query(q) = stmt else { return };
    let mut body = q.body.as_mut();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    let SetExpr::Select(select) = body else {
        return;
    };
    let existing: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.clone()),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                p.last().map(|i| i.value.clone())
            }
            _ => None,
        })
        .collect();
    let proposed: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => pg_column_name(e),
            _ => None,
        })
        .collect();
    let count = |name: &str| {
        existing
            .iter()
            .chain(proposed.iter())
            .filter(|n| n.as_deref() == Some(name))
            .count()
    };
    for (item, name) in select.projection.iter_mut().zip(proposed.iter()) {
        if let Some(name) = name
            && count(name) == 1
            && let SelectItem::UnnamedExpr(e) = item
        {
            let expr = std::mem::replace(e, Expr::value(Value::Null));
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: Ident::with_quote('"', name.clone()),
            };
        }
    }
}
