//! Result columns named as PostgreSQL names them.
//!
//! PostgreSQL names an unnamed select-list expression after the function
//! it calls (`count`), the column it reads, `case`, `exists`, the first
//! column of a scalar subquery, or `?column?`; and it allows two result
//! columns with one name (`SELECT *, ssn`). DataFusion refuses duplicate
//! names in a projection, so a column whose PostgreSQL name is not unique
//! is planned under an internal alias and given its PostgreSQL name back
//! in the result's description ([`ResultNames::shown_as`]).

use datafusion::sql::sqlparser::ast::{Expr, Ident, SelectItem, SetExpr, Statement, Value};

/// The column name PostgreSQL gives an unnamed select-list expression:
/// the function's name for a call (`count`), the column's for a cast of a
/// column, `case` for CASE, `exists` for EXISTS, the first column of a
/// scalar subquery and `?column?` otherwise. `None`: DataFusion's name is
/// already PostgreSQL's (a column, a wildcard).
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
        Expr::Exists { .. } => Some("exists".to_owned()),
        Expr::Subquery(q) => Some(first_column_name(&q.body).unwrap_or_else(unnamed)),
        _ => Some(unnamed()),
    }
}

fn unnamed() -> String {
    "?column?".to_owned()
}

/// The PostgreSQL name of the first column of a query body, when it can be
/// told from the text (not for a wildcard).
fn first_column_name(body: &SetExpr) -> Option<String> {
    match body {
        SetExpr::Select(s) => s.projection.first().and_then(item_name),
        SetExpr::SetOperation { left, .. } => first_column_name(left),
        SetExpr::Query(q) => first_column_name(&q.body),
        _ => None,
    }
}

/// The PostgreSQL name of one select item; `None` for a wildcard.
fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        SelectItem::UnnamedExpr(e) => pg_column_name(e).or_else(|| natural_name(e)),
        _ => None,
    }
}

/// The name DataFusion itself gives a column reference.
fn natural_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// Result columns planned under an internal alias, with the name the
/// client is told.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResultNames(Vec<(String, String)>);

impl ResultNames {
    /// The name the client is told for the planned column `name`, when
    /// it was aliased internally.
    pub fn shown_as(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(internal, _)| internal == name)
            .map(|(_, shown)| shown.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The internal alias of the select item at `position`.
fn internal_alias(position: usize) -> String {
    format!("__lakeward_result_{position}")
}

/// Name the result columns of a query the way PostgreSQL does (`count`,
/// not `count(*)`), so clients that read columns by name find them. Only
/// the outermost select list is renamed (the leftmost of a set operation).
/// A column whose name is not unique among the result's columns (or any
/// unnamed column beside a wildcard, whose names are not known before
/// planning) is aliased internally; the returned [`ResultNames`] gives
/// those columns their names back after planning.
pub(crate) fn postgres_column_names(stmt: &mut Statement) -> ResultNames {
    let Statement::Query(q) = stmt else {
        return ResultNames::default();
    };
    let mut body = q.body.as_mut();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    let SetExpr::Select(select) = body else {
        return ResultNames::default();
    };
    let has_wildcard = select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let names: Vec<Option<String>> = select.projection.iter().map(item_name).collect();
    let count = |name: &str| names.iter().filter(|n| n.as_deref() == Some(name)).count();
    let mut renamed = Vec::new();
    for (position, (item, name)) in select.projection.iter_mut().zip(names.iter()).enumerate() {
        let Some(name) = name else { continue };
        let unique = count(name) == 1 && !has_wildcard;
        match item {
            // A unique name DataFusion would print otherwise (`count(*)`).
            SelectItem::UnnamedExpr(e) if unique && pg_column_name(e).is_some() => {
                let expr = std::mem::replace(e, Expr::value(Value::Null));
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('"', name.clone()),
                };
            }
            // A unique column reference keeps DataFusion's name.
            SelectItem::UnnamedExpr(_) if unique => {}
            SelectItem::UnnamedExpr(e) => {
                let internal = internal_alias(position);
                let expr = std::mem::replace(e, Expr::value(Value::Null));
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('"', internal.clone()),
                };
                renamed.push((internal, name.clone()));
            }
            // Two columns given one alias by the user: PostgreSQL allows it
            // (and refuses an ORDER BY on that alias as ambiguous).
            SelectItem::ExprWithAlias { alias, .. } if count(name) > 1 => {
                let internal = internal_alias(position);
                *alias = Ident::with_quote('"', internal.clone());
                renamed.push((internal, name.clone()));
            }
            _ => {}
        }
    }
    ResultNames(renamed)
}
