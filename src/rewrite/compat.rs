//! Rule: PostgreSQL catalog dialect for catalog statements.
//!
//! Clients introspect with PostgreSQL-only syntax DataFusion does not plan:
//! `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`, `'t'::regclass`,
//! `x = ANY('{a,b}')`, scalar subqueries in the select list, unqualified
//! `pg_class`. `datafusion-pg-catalog`'s AST rewrite rules translate these.
//! They are applied to *catalog statements* only: statements that use the
//! catalog dialect (name a system schema, a `pg_*` relation, a
//! `pg_catalog.` function or an oid-alias cast) **and read nothing but
//! system catalogs** (plus their own CTEs and the catalog row generators).
//! Some rules trade exactness for compatibility (a correlated subquery in a
//! select list becomes NULL, `generate_series` is allowed as a table), which
//! is acceptable for a metadata browser and not for a query over patient
//! data: a statement that reads any other relation gets none of them, and
//! the gate's shape checks in full, whatever catalog calls it also makes.
//!
//! Nothing here widens access: the rewritten statement is planned over the
//! session's secured catalog and verified like any other.

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArgumentList, FunctionArguments, GroupByExpr, Ident,
    JoinOperator, ObjectName, OrderByExpr, OrderByKind, Query, Select, SelectItem, SetExpr,
    Statement, TableFactor, UnaryOperator, Value, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, PrependUnqualifiedPgTableName, RemoveSubqueryFromProjection,
    ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation, RewritePgCatalogOperator,
    RewriteRegCastToSubquery, SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

/// Schemas whose tables are system catalogs.
pub const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

fn lower_parts(name: &ObjectName) -> Vec<String> {
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
pub fn is_system_relation(name: &ObjectName) -> bool {
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
pub fn is_catalog_statement(stmt: &Statement) -> bool {
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
/// scopes them: a CTE's own body does not see it). A table function call
/// (`generate_series(…)`, Grafana's `string_to_array(…) s`) reads no
/// relation by its name (its arguments are walked like the rest); which
/// table functions may run is the gate's decision
/// ([`crate::rewrite::gate::classify_catalog`] allows the catalog row
/// generators only). A statement naming no relation at all reads no table
/// either.
pub fn reads_only_system_relations(stmt: &Statement) -> bool {
    struct Only {
        scopes: crate::rewrite::gate::CteScopes,
        /// The relation about to be visited is a table function's name.
        function: bool,
        other: bool,
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
    };
    let _ = stmt.visit(&mut v);
    !v.other
}

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
struct EmptyCatalogSelect;

impl EmptyCatalogSelect {
    fn rewrite_select(select: &mut Select, outermost: bool) {
        // Rows need every comma-separated FROM item to have rows; an inner
        // join with an empty catalog has none, and a left join keeps an
        // empty left side empty.
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
        let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
            || select.having.is_some();
        if !only_empty || grouped {
            return;
        }
        let mut aggregates = false;
        let _ = select
            .projection
            .visit(&mut FindAggregate(&mut aggregates, 0));
        if aggregates {
            return;
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
        select.from.clear();
        select.selection = Some(Expr::value(Value::Boolean(false)));
    }
}

/// Finds an aggregate call outside nested queries.
struct FindAggregate<'a>(&'a mut bool, usize);

impl Visitor for FindAggregate<'_> {
    type Break = ();
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.1 += 1;
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.1 -= 1;
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.1 == 0
            && let Expr::Function(f) = e
            && f.over.is_none()
            && f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                matches!(
                    i.value.to_lowercase().as_str(),
                    "count"
                        | "sum"
                        | "min"
                        | "max"
                        | "avg"
                        | "array_agg"
                        | "string_agg"
                        | "bool_and"
                        | "bool_or"
                        | "every"
                )
            })
        {
            *self.0 = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
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

/// Applies `f` to every expression of `s`, children first.
fn map_exprs(mut s: Statement, f: impl FnMut(&mut Expr)) -> Statement {
    struct V<F>(F);
    impl<F: FnMut(&mut Expr)> VisitorMut for V<F> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            (self.0)(e);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(&mut s, &mut V(f));
    s
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

/// A constant string expression: a literal, a cast of one to a string
/// type, a parenthesised one or a concatenation of them.
fn constant_string(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            _ => None,
        },
        Expr::Nested(inner) => constant_string(inner),
        Expr::Cast {
            expr,
            data_type:
                DataType::Text
                | DataType::Varchar(_)
                | DataType::CharacterVarying(_)
                | DataType::String(_),
            ..
        } => constant_string(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat,
            right,
        } => Some(constant_string(left)? + &constant_string(right)?),
        _ => None,
    }
}

/// `pattern` written with escape character `escape` (none when `None`),
/// rewritten for the backslash escape DataFusion implements. `None` when
/// the pattern ends in a lone escape character (PostgreSQL refuses it).
fn backslash_pattern(pattern: &str, escape: Option<char>) -> Option<String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            let next = chars.next()?;
            if matches!(next, '%' | '_' | '\\') {
                out.push('\\');
            }
            out.push(next);
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `LIKE`/`ILIKE` with an `ESCAPE` other than the backslash (SQLAlchemy
/// writes `NOT LIKE 'pg/_' || '%' ESCAPE '/'`): DataFusion executes only
/// the backslash, so a constant pattern is rewritten to the same pattern
/// in backslash form. Applies to every statement: it changes how a pattern
/// is written, never what it matches.
pub fn portable_like(stmt: &mut Statement) {
    let s = std::mem::replace(
        stmt,
        Statement::Commit {
            chain: false,
            end: false,
            modifier: None,
        },
    );
    *stmt = map_exprs(s, |e| {
        let (Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        }) = e
        else {
            return;
        };
        let Some(v) = escape_char.as_ref() else {
            return;
        };
        let escape = match &v.value {
            Value::SingleQuotedString(s) => {
                let mut cs = s.chars();
                match (cs.next(), cs.next()) {
                    (None, _) => None,
                    (Some(c), None) => Some(c),
                    _ => return,
                }
            }
            _ => return,
        };
        if escape == Some('\\') {
            return;
        }
        if let Some(text) = constant_string(pattern)
            && let Some(rewritten) = backslash_pattern(&text, escape)
        {
            **pattern = Expr::value(Value::SingleQuotedString(rewritten));
            *escape_char = None;
        }
    });
}

/// `name(args…)` with optional argument clauses, as an AST call.
pub fn call(name: &str, args: Vec<Expr>, clauses: Vec<FunctionArgumentClause>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn rules() -> &'static [Arc<dyn SqlStatementRewriteRule>] {
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
            Arc::new(RewriteArrayAnyAllOperation),
            Arc::new(PrependUnqualifiedPgTableName),
            Arc::new(StripCallableQualifier),
            Arc::new(FixArrayLiteral),
            Arc::new(CurrentUserVariableToSessionUserFunctionCall),
            Arc::new(StripCollate),
            Arc::new(RewritePgCatalogOperator),
            Arc::new(ToRegFunctions),
            Arc::new(RegprocName),
            Arc::new(RewriteRegCastToSubquery::new()),
            Arc::new(RemoveSubqueryFromProjection),
            Arc::new(AggregateScalarSubquery),
            Arc::new(FieldAccess),
        ]
    })
}

/// Apply the catalog-dialect rules when `stmt` is a catalog statement: it
/// uses the catalog dialect and reads system catalogs only. Returns whether
/// it was one (and was rewritten).
pub fn rewrite_catalog_statement(stmt: &mut Statement) -> bool {
    if !is_catalog_statement(stmt) || !reads_only_system_relations(stmt) {
        return false;
    }
    let mut s = std::mem::replace(
        stmt,
        Statement::Commit {
            chain: false,
            end: false,
            modifier: None,
        },
    );
    for rule in rules() {
        s = rule.rewrite(s);
    }
    *stmt = s;
    true
}

/// The column name PostgreSQL gives an unnamed select-list expression:
/// the function's name for a call (`count`), the column's for a cast of a
/// column, `case` for CASE and `?column?` otherwise. `None`: DataFusion's
/// name is already PostgreSQL's (a column, a wildcard).
fn pg_column_name(e: &Expr) -> Option<String> {
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
pub fn postgres_column_names(stmt: &mut Statement) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::gate::{ParseLimits, parse};

    fn stmt(sql: &str) -> Statement {
        parse(sql, ParseLimits::default()).unwrap().remove(0)
    }

    #[test]
    fn only_catalog_statements_are_rewritten() {
        let mut s = stmt(
            "SELECT (SELECT count(*) FROM claims.claims c WHERE c.patient_id = p.patient_id) FROM clinical.patients p",
        );
        let before = s.to_string();
        assert!(!rewrite_catalog_statement(&mut s));
        assert_eq!(s.to_string(), before);

        let mut s = stmt(
            "SELECT c.relname FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(patients)$' COLLATE pg_catalog.default",
        );
        assert!(rewrite_catalog_statement(&mut s));
        let text = s.to_string();
        assert!(text.contains("pg_catalog.pg_class"), "{text}");
        assert!(!text.contains("COLLATE"), "{text}");
        assert!(is_catalog_statement(&stmt(
            "SELECT 'clinical.patients'::regclass"
        )));
        assert!(is_catalog_statement(&stmt(
            "SELECT * FROM information_schema.tables"
        )));
        assert!(!is_catalog_statement(&stmt(
            "SELECT * FROM clinical.patients"
        )));
        let mut s = stmt(
            "SELECT array_to_string(array(select rolname from pg_catalog.pg_roles where oid = 1 order by 1), ',')",
        );
        assert!(rewrite_catalog_statement(&mut s));
        let text = s.to_string();
        assert!(
            text.contains("(SELECT array_agg(rolname ORDER BY rolname) FROM"),
            "{text}"
        );
    }

    #[test]
    fn statements_that_read_other_relations_are_never_catalog_statements() {
        for sql in [
            "SELECT count(*) FROM clinical.patients, generate_series(1,3) WHERE 'x'::regclass IS NULL",
            "SELECT pg_catalog.version(), count(*) FROM clinical.patients",
            "SELECT (SELECT count(*) FROM claims.claims c WHERE c.patient_id = p.patient_id) FROM clinical.patients p WHERE 'x'::regclass IS NULL",
            "SELECT c.relname FROM pg_catalog.pg_class c WHERE EXISTS (SELECT 1 FROM clinical.patients)",
            "SELECT * FROM pg_catalog.pg_class, patients",
            // A CTE's own body does not see it: the inner `patients` is a table.
            "WITH patients AS (SELECT * FROM patients) SELECT * FROM patients, pg_catalog.pg_class",
            "SELECT * FROM pg_catalog.pg_class, (SELECT 1 FROM generate_series(1, (SELECT count(*) FROM clinical.patients)))",
        ] {
            let mut s = stmt(sql);
            let before = s.to_string();
            assert!(is_catalog_statement(&s), "{sql}");
            assert!(!rewrite_catalog_statement(&mut s), "{sql}");
            assert_eq!(s.to_string(), before, "{sql}");
        }
        for sql in [
            "SELECT 'clinical.patients'::regclass",
            "SELECT pg_catalog.version()",
            "WITH t AS (SELECT relname FROM pg_catalog.pg_class) SELECT * FROM t, generate_series(1, 2)",
            "SELECT * FROM pg_get_keywords()",
            "SELECT string_agg(word, ',') FROM pg_catalog.pg_get_keywords()",
            "SELECT * FROM information_schema.tables WHERE table_schema = 'clinical'",
            // Which table functions run is the gate's call.
            "SELECT * FROM pg_catalog.pg_class, string_to_array('a,b', ',') s",
        ] {
            assert!(reads_only_system_relations(&stmt(sql)), "{sql}");
        }
        let mut s = stmt("SELECT * FROM pg_catalog.pg_class, read_parquet('/x')");
        assert!(rewrite_catalog_statement(&mut s));
        assert_eq!(
            crate::rewrite::gate::classify_catalog(s).unwrap_err().code,
            "42501"
        );
    }

    #[test]
    fn like_escapes_become_backslash_escapes() {
        let rewritten = |sql: &str| {
            let mut s = stmt(sql);
            portable_like(&mut s);
            s.to_string()
        };
        assert_eq!(
            rewritten("SELECT n FROM t WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'"),
            r"SELECT n FROM t WHERE n NOT LIKE 'pg\_%'"
        );
        // A backslash is an ordinary character under another escape, and
        // an escaped escape is the character itself.
        assert_eq!(
            rewritten(r"SELECT 1 WHERE a ILIKE 'x\y!!z!%' ESCAPE '!'"),
            r"SELECT 1 WHERE a ILIKE 'x\\y!z\%'"
        );
        assert_eq!(backslash_pattern("a%b", None).as_deref(), Some("a%b"));
        assert_eq!(backslash_pattern(r"a\b", None).as_deref(), Some(r"a\\b"));
        // A pattern ending in the escape, or not constant, is left for
        // the engine to refuse.
        assert_eq!(backslash_pattern("ab/", Some('/')), None);
        let kept = "SELECT 1 FROM t WHERE a LIKE b ESCAPE '/'";
        assert_eq!(rewritten(kept), kept);
    }

    #[test]
    fn set_returning_catalog_functions_are_translated() {
        let mut s = stmt(
            "SELECT k.ord FROM (SELECT unnest(ix.indkey) AS attnum, generate_subscripts(ix.indkey, 1) AS ord FROM pg_index ix) k",
        );
        assert!(rewrite_catalog_statement(&mut s));
        let text = s.to_string();
        assert!(
            text.contains("unnest(generate_series(1, array_length(ix.indkey, 1))) AS ord"),
            "{text}"
        );
        let mut s = stmt(
            "SELECT col_description(format('%I.%I', c.table_schema, c.table_name)::regclass, 1) FROM information_schema.columns c",
        );
        assert!(rewrite_catalog_statement(&mut s));
        let text = s.to_string();
        assert!(text.contains("CAST(NULL AS TEXT)"), "{text}");
        assert!(!text.contains("regclass"), "{text}");
    }

    #[test]
    fn selects_over_empty_catalogs_answer_no_rows() {
        let mut s = stmt(
            "SELECT pol.polname, pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') AS roles FROM pg_catalog.pg_policy pol WHERE pol.polrelid = '1' ORDER BY 1",
        );
        assert!(rewrite_catalog_statement(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT NULL AS \"polname\", NULL AS \"roles\" WHERE false"
        );
        let mut s = stmt("SELECT count(*) FROM pg_catalog.pg_policy");
        assert!(rewrite_catalog_statement(&mut s));
        assert!(s.to_string().contains("FROM pg_catalog.pg_policy"), "{s}");
    }

    #[test]
    fn result_columns_are_named_like_postgres() {
        let mut s = stmt(
            "SELECT count(*), site_id, sum(x)::int, 1 + 1, p.a, CASE WHEN true THEN 1 END, max(y) AS m, min(z), min(w) FROM t p",
        );
        postgres_column_names(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT count(*) AS \"count\", site_id, sum(x)::INT AS \"sum\", 1 + 1 AS \"?column?\", p.a, CASE WHEN true THEN 1 END AS \"case\", max(y) AS m, min(z), min(w) FROM t p"
        );
    }
}
