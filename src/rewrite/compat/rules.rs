//! The catalog-dialect rewrite rules and the order they run in.

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, GroupByExpr, Ident, ObjectName, OrderByExpr, OrderByKind, Query, SelectItem,
    SetExpr, Statement, TableFactor, UnaryOperator, Value, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, PrependUnqualifiedPgTableName, RemoveSubqueryFromProjection,
    ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation, RewritePgCatalogOperator,
    RewriteRegCastToSubquery, SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

use super::empty_catalogs::EmptyCatalogSelect;
use super::recursive_subquery::CorrelatedRecursiveSubquery;
use super::{FindAggregate, call, map_exprs};

/// `ARRAY(SELECT x FROM … ORDER BY …)` becomes the scalar subquery
/// `(SELECT array_agg(x ORDER BY …) FROM …)`, which DataFusion plans (psql's
/// `\d` asks for policy role lists this way).
#[derive(Debug)]
struct ArraySubquery;

impl ArraySubquery {
    fn to_array_agg(query: &Query) -> Option<Query> {
        let mut q = query.clone();
        let SetExpr::Select(select) = q.body.as_mut() else {
            return None;
        };
        let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
            select.projection.as_slice()
        else {
            return None;
        };
        let item = item.clone();
        let order_by: Vec<OrderByExpr> = match q.order_by.take().map(|o| o.kind) {
            None => vec![],
            Some(OrderByKind::Expressions(exprs)) => exprs
                .into_iter()
                .map(|mut o| {
                    // `ORDER BY 1` names the single output column.
                    if matches!(&o.expr, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "1")) {
                        o.expr = item.clone();
                    }
                    o
                })
                .collect(),
            Some(OrderByKind::All(_)) => return None,
        };
        let mut clauses = vec![];
        if !order_by.is_empty() {
            clauses.push(FunctionArgumentClause::OrderBy(order_by));
        }
        let agg = call("array_agg", vec![item], clauses);
        select.projection = vec![SelectItem::UnnamedExpr(agg)];
        Some(q)
    }
}

impl SqlStatementRewriteRule for ArraySubquery {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                if let Expr::Function(f) = e
                    && f.name.0.len() == 1
                    && f.name.0[0]
                        .as_ident()
                        .is_some_and(|i| i.value.eq_ignore_ascii_case("array"))
                    && let FunctionArguments::Subquery(q) = &f.args
                    && let Some(agg) = ArraySubquery::to_array_agg(q)
                {
                    *e = Expr::Subquery(Box::new(agg));
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

/// `'pg_catalog.array_in'::regproc` becomes `'array_in'`: the exported
/// `pg_type.typinput`/`typoutput` columns hold procedure names, not OIDs
/// (pgJDBC's type cache compares them this way).
#[derive(Debug)]
struct RegprocName;

impl SqlStatementRewriteRule for RegprocName {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                if let Expr::Cast {
                    expr, data_type, ..
                } = e
                    && matches!(
                        data_type.to_string().to_lowercase().as_str(),
                        "regproc" | "pg_catalog.regproc"
                    )
                    && let Expr::Value(v) = expr.as_ref()
                    && let Value::SingleQuotedString(name) = &v.value
                {
                    let bare = name.strip_prefix("pg_catalog.").unwrap_or(name).to_owned();
                    *e = Expr::value(Value::SingleQuotedString(bare));
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

/// The `regproc` columns of the exported catalogs, which hold procedure
/// names (`boolrecv`) and `-` for none.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
    "prosupport",
    "aggtransfn",
    "aggfinalfn",
    "aggcombinefn",
    "aggserialfn",
    "aggdeserialfn",
    "aggmtransfn",
    "aggminvtransfn",
    "aggmfinalfn",
    "oprcode",
    "oprrest",
    "oprjoin",
    "rngcanonical",
    "rngsubdiff",
];

/// `typreceive != 0` (a `regproc` column against the oid 0, "no
/// function") becomes `typreceive != '-'`: the exported columns hold names,
/// and `0` prints as `-` in PostgreSQL (ADBC's type query at connect).
#[derive(Debug)]
struct RegprocZero;

fn is_regproc_column(e: &Expr) -> bool {
    let name = match e {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => i,
            None => return false,
        },
        _ => return false,
    };
    REGPROC_COLUMNS.contains(&name.value.to_ascii_lowercase().as_str())
}

fn is_zero(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "0"))
}

impl SqlStatementRewriteRule for RegprocZero {
    fn rewrite(&self, mut s: Statement) -> Statement {
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                if let Expr::BinaryOp { left, op, right } = e
                    && matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq)
                {
                    let none = || Expr::value(Value::SingleQuotedString("-".into()));
                    if is_regproc_column(left) && is_zero(right) {
                        **right = none();
                    } else if is_regproc_column(right) && is_zero(left) {
                        **left = none();
                    }
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

/// `x IN (SELECT … FROM generate_series(…) i, string_to_array(
/// current_setting('search_path'), ',') s)` — Grafana's "is this schema on
/// the search path" — becomes `array_has(current_schemas(false), x)`, which
/// the session binder then fills with the session's own path.
#[derive(Debug)]
struct SearchPathMembership;

fn mentions_search_path(q: &Query) -> bool {
    struct F(bool);
    impl Visitor for F {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e
                && matches!(&v.value, Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("search_path"))
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    let table_function = select
        .from
        .iter()
        .any(|t| matches!(&t.relation, TableFactor::Table { args: Some(_), .. }));
    let mut f = F(false);
    let _ = select.from.visit(&mut f);
    table_function && f.0
}

impl SqlStatementRewriteRule for SearchPathMembership {
    fn rewrite(&self, s: Statement) -> Statement {
        map_exprs(s, |e| {
            if let Expr::InSubquery {
                expr,
                subquery,
                negated,
            } = e
                && mentions_search_path(subquery)
            {
                // No subquery remains, so the test may sit anywhere, ORDER BY
                // included (Grafana sorts by it).
                let has = call(
                    "array_has",
                    vec![
                        call(
                            "current_schemas",
                            vec![Expr::value(Value::Boolean(false))],
                            vec![],
                        ),
                        expr.as_ref().clone(),
                    ],
                    vec![],
                );
                *e = if *negated {
                    Expr::UnaryOp {
                        op: UnaryOperator::Not,
                        expr: Box::new(Expr::Nested(Box::new(has))),
                    }
                } else {
                    has
                };
            }
        })
    }
}

/// `to_regclass('x')`, `to_regtype('x')`, … become the casts
/// `'x'::regclass`, … that the oid-alias rule then resolves (NULL when the
/// object is not in this session's catalog).
#[derive(Debug)]
struct ToRegFunctions;

impl SqlStatementRewriteRule for ToRegFunctions {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                let Expr::Function(f) = e else {
                    return ControlFlow::Continue(());
                };
                let Some(name) = f.name.0.last().and_then(|p| p.as_ident()) else {
                    return ControlFlow::Continue(());
                };
                let target = match name.value.to_lowercase().as_str() {
                    "to_regclass" => "regclass",
                    "to_regtype" => "regtype",
                    "to_regnamespace" => "regnamespace",
                    "to_regproc" => "regproc",
                    _ => return ControlFlow::Continue(()),
                };
                let FunctionArguments::List(l) = &f.args else {
                    return ControlFlow::Continue(());
                };
                let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = l.args.as_slice() else {
                    return ControlFlow::Continue(());
                };
                *e = Expr::Cast {
                    kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                    expr: Box::new(arg.clone()),
                    data_type: DataType::Custom(ObjectName::from(vec![Ident::new(target)]), vec![]),
                    array: false,
                    format: None,
                };
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

/// `(expr).field` becomes `get_field(expr, 'field')` (JDBC's primary-key
/// query reads `(information_schema._pg_expandarray(i.indkey)).n`).
#[derive(Debug)]
struct FieldAccess;

impl SqlStatementRewriteRule for FieldAccess {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                let Expr::CompoundFieldAccess { root, access_chain } = e else {
                    return ControlFlow::Continue(());
                };
                let fields: Option<Vec<String>> = access_chain
                    .iter()
                    .map(|a| match a {
                        AccessExpr::Dot(Expr::Identifier(i)) => Some(if i.quote_style.is_some() {
                            i.value.clone()
                        } else {
                            i.value.to_lowercase()
                        }),
                        _ => None,
                    })
                    .collect();
                let Some(fields) = fields else {
                    return ControlFlow::Continue(());
                };
                let mut out = root.as_ref().clone();
                for f in fields {
                    out = call(
                        "get_field",
                        vec![out, Expr::value(Value::SingleQuotedString(f))],
                        vec![],
                    );
                }
                *e = out;
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}

/// A scalar subquery that is not aggregated, grouped or limited, such as
/// `(SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid)`,
/// becomes `(SELECT max(…) …)`: the same answer for the single row an OID
/// lookup finds, in the aggregated form DataFusion decorrelates.
#[derive(Debug)]
struct AggregateScalarSubquery;

impl SqlStatementRewriteRule for AggregateScalarSubquery {
    fn rewrite(&self, mut s: Statement) -> Statement {
        struct V;
        impl VisitorMut for V {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
                let Expr::Subquery(q) = e else {
                    return ControlFlow::Continue(());
                };
                if q.limit_clause.is_some() || q.fetch.is_some() {
                    return ControlFlow::Continue(());
                }
                let SetExpr::Select(select) = q.body.as_mut() else {
                    return ControlFlow::Continue(());
                };
                let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
                    || select.having.is_some()
                    || select.distinct.is_some();
                let mut aggregates = false;
                let _ = select
                    .projection
                    .visit(&mut FindAggregate(&mut aggregates, 0));
                if grouped || aggregates {
                    return ControlFlow::Continue(());
                }
                if let [
                    SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. },
                ] = select.projection.as_mut_slice()
                {
                    let inner = std::mem::replace(item, Expr::value(Value::Null));
                    *item = call("max", vec![inner], vec![]);
                    q.order_by = None;
                }
                ControlFlow::Continue(())
            }
        }
        let _ = VisitMut::visit(&mut s, &mut V);
        s
    }
}
/// The lower-cased unqualified name and the plain positional arguments of
/// a call such as `pg_catalog.generate_subscripts(a, 1)`.
fn plain_call(e: &Expr) -> Option<(String, Vec<Expr>)> {
    let Expr::Function(f) = e else {
        return None;
    };
    if f.over.is_some() || f.filter.is_some() {
        return None;
    }
    let name = f.name.0.last()?.as_ident()?.value.to_lowercase();
    let FunctionArguments::List(l) = &f.args else {
        return None;
    };
    if !l.clauses.is_empty() || l.duplicate_treatment.is_some() {
        return None;
    }
    let args = l
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((name, args))
}

/// `generate_subscripts(a, d)`, a set-returning function SQLAlchemy pairs
/// with `unnest(a)` to number index keys, becomes
/// `unnest(generate_series(1, array_length(a, d)))`: the same subscripts,
/// zipped with the neighbouring `unnest` as PostgreSQL zips them.
#[derive(Debug)]
struct GenerateSubscripts;

impl SqlStatementRewriteRule for GenerateSubscripts {
    fn rewrite(&self, s: Statement) -> Statement {
        map_exprs(s, |e| {
            if let Some((name, args)) = plain_call(e)
                && name == "generate_subscripts"
                && args.len() == 2
            {
                let one = Expr::value(Value::Number("1".into(), false));
                let length = call("array_length", args, vec![]);
                let series = call("generate_series", vec![one, length], vec![]);
                *e = call("unnest", vec![series], vec![]);
            }
        })
    }
}

/// Object and column comments: lakeward's tables carry none, so
/// `obj_description(…)`, `col_description(…)` and `shobj_description(…)`
/// become a NULL text without evaluating their arguments (Metabase passes
/// `format('%I.%I', schema, table)::regclass`, a per-row name lookup).
#[derive(Debug)]
struct NoComments;

impl SqlStatementRewriteRule for NoComments {
    fn rewrite(&self, s: Statement) -> Statement {
        map_exprs(s, |e| {
            if let Some((name, _)) = plain_call(e)
                && matches!(
                    name.as_str(),
                    "obj_description" | "col_description" | "shobj_description"
                )
            {
                *e = Expr::Cast {
                    kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                    expr: Box::new(Expr::value(Value::Null)),
                    data_type: DataType::Text,
                    array: false,
                    format: None,
                };
            }
        })
    }
}

/// `x = ANY($n)` and `x <> ALL($n)` with a bare parameter: the parameter
/// becomes `parse_text_array($n)`. A client that binds the array with
/// no parameter type sends its text (`{"p", "f", "r"}`: ADBC lists tables
/// with `c.relkind = ANY($2)`), which the function reads as PostgreSQL
/// reads an array literal; an array of another element type passes
/// through unchanged.
#[derive(Debug)]
struct UntypedArrayParameter;

impl SqlStatementRewriteRule for UntypedArrayParameter {
    fn rewrite(&self, s: Statement) -> Statement {
        map_exprs(s, |e| {
            let right = match e {
                Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => right,
                _ => return,
            };
            if matches!(right.as_ref(), Expr::Value(v) if matches!(v.value, Value::Placeholder(_)))
            {
                let parameter = right.as_ref().clone();
                // (the function `engine::catalog::text_array` registers)
                **right = call("parse_text_array", vec![parameter], vec![]);
            }
        })
    }
}

pub(super) fn rules() -> &'static [Arc<dyn SqlStatementRewriteRule>] {
    static RULES: OnceLock<Vec<Arc<dyn SqlStatementRewriteRule>>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            Arc::new(SearchPathMembership),
            Arc::new(EmptyCatalogSelect),
            Arc::new(ArraySubquery),
            Arc::new(GenerateSubscripts),
            Arc::new(NoComments),
            Arc::new(AliasDuplicatedProjectionRewrite),
            Arc::new(ResolveUnqualifiedIdentifier),
            Arc::new(UntypedArrayParameter),
            Arc::new(RewriteArrayAnyAllOperation),
            Arc::new(PrependUnqualifiedPgTableName),
            Arc::new(StripCallableQualifier),
            Arc::new(FixArrayLiteral),
            Arc::new(CurrentUserVariableToSessionUserFunctionCall),
            Arc::new(StripCollate),
            Arc::new(RewritePgCatalogOperator),
            Arc::new(ToRegFunctions),
            Arc::new(RegprocName),
            Arc::new(RegprocZero),
            Arc::new(RewriteRegCastToSubquery::new()),
            Arc::new(CorrelatedRecursiveSubquery),
            Arc::new(RemoveSubqueryFromProjection),
            Arc::new(AggregateScalarSubquery),
            Arc::new(FieldAccess),
        ]
    })
}
