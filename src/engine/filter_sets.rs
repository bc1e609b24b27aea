//! Row filters of the form `key IN (SELECT id FROM table WHERE …)` as
//! shared membership sets.
//!
//! A policy may scope one table through another: the demo's clinicians see
//! the observations of their site's encounters, `encounter_id IN (SELECT
//! encounter_id FROM clinical.encounters WHERE site_id = principal.site)`.
//! Planned as written, every statement on the table builds a hash table of
//! the subquery's answer (a site's encounters: a hundred thousand ids at
//! 100,000 patients, a million at 1,000,000) before it can return one row,
//! which dominated a clinician's point lookup of one patient's
//! observations. The answer changes only when the subquery's table gets a
//! new Delta version, so it is computed once per version and subject
//! binding, shared by every session, and probed per row through a
//! membership function in the raw context — as consent sets are
//! (`engine::consent`).
//!
//! Only a subquery whose answer is a function of one table's version takes
//! this path: `SELECT <column> FROM <schema.table> [AS a] [WHERE <cond>]`
//! with no join, grouping, ordering, limit, set operation or `DISTINCT ON`,
//! a condition without function calls or subqueries (constants, columns,
//! comparisons, `AND`/`OR`/`NOT`, `IN` lists, `IS [NOT] NULL`, `BETWEEN`,
//! `LIKE`), an integer column, and only as a top-level conjunct of the row
//! filter, not negated. There `x IN (…)` and `member(x)` admit the same
//! rows: both are true for members, and for others false or NULL, which a
//! filter treats alike. Any other filter is planned as written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, Expr, GroupByExpr, Query, SelectItem, SetExpr, Statement, TableFactor,
};

use super::consent::{IdSet, MemberSource, Published, membership_udf};
use super::delta::LatestDeltaProvider;

/// Prefix of the membership functions of filter sets (raw context only;
/// the gate refuses every `lakeward_*` call a client writes).
pub(crate) const FILTER_SET_PREFIX: &str = "lakeward_filter_set_";

/// The ids one filter subquery answers, for its table's newest version.
pub(crate) struct FilterSet {
    ctx: SessionContext,
    query: Query,
    source: Arc<LatestDeltaProvider>,
    function: String,
    /// Serialises recomputation; the table version `current` reflects.
    computed: tokio::sync::Mutex<Option<u64>>,
    current: Published,
}

impl std::fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterSet")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl MemberSource for FilterSet {
    fn function(&self) -> &str {
        &self.function
    }

    fn snapshot(&self) -> Option<Arc<IdSet>> {
        self.current.get()
    }
}

impl FilterSet {
    /// Make the set the answer for the table's newest version (computed
    /// once per version, whoever asks first).
    pub(crate) async fn refresh(&self) -> DfResult<()> {
        let version = self
            .source
            .refreshed_version()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut computed = self.computed.lock().await;
        if *computed == Some(version) {
            return Ok(());
        }
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(Statement::Query(
                Box::new(self.query.clone()),
            ))))
            .await?;
        let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        let mut ids = Vec::new();
        for b in &batches {
            let column = datafusion::arrow::compute::cast(b.column(0), &DataType::Int64)?;
            let column = column
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("filter set type".into()))?;
            ids.extend(column.iter().flatten());
        }
        let set = IdSet::from_ids(ids);
        tracing::debug!(function = %self.function, version, ids = set.len(), "filter set computed");
        self.current.publish(set);
        *computed = Some(version);
        Ok(())
    }
}

/// The filter sets of one raw context, by subquery text (principal values
/// bound: one set per site).
#[derive(Default)]
pub(crate) struct FilterSets {
    registered: Mutex<HashMap<String, Arc<FilterSet>>>,
}

impl FilterSets {
    /// How many subquery filters are answered from sets.
    pub(crate) fn len(&self) -> usize {
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Rewrites the top-level conjuncts of `filter` that qualify (module
    /// documentation) into membership probes, returning the filter and the
    /// sets it now reads. `raw` holds the tables subqueries read.
    pub(crate) async fn rewrite(
        &self,
        ctx: &SessionContext,
        raw: &super::secure::RawTables,
        filter: Expr,
    ) -> (Expr, Vec<Arc<FilterSet>>) {
        let mut conjuncts = Vec::new();
        split_and(filter, &mut conjuncts);
        let mut sets = Vec::new();
        let mut out = Vec::with_capacity(conjuncts.len());
        for c in conjuncts {
            match self.set_for(ctx, raw, &c).await {
                Some((column, set)) => {
                    out.push(Expr::Function(ast::Function {
                        name: ast::ObjectName::from(vec![ast::Ident::new(set.function.clone())]),
                        uses_odbc_syntax: false,
                        parameters: ast::FunctionArguments::None,
                        args: ast::FunctionArguments::List(ast::FunctionArgumentList {
                            duplicate_treatment: None,
                            args: vec![ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                                column,
                            ))],
                            clauses: vec![],
                        }),
                        filter: None,
                        null_treatment: None,
                        over: None,
                        within_group: vec![],
                    }));
                    sets.push(set);
                }
                None => out.push(c),
            }
        }
        let filter = out
            .into_iter()
            .reduce(|a, b| Expr::BinaryOp {
                left: Box::new(a),
                op: ast::BinaryOperator::And,
                right: Box::new(b),
            })
            .unwrap_or(Expr::Value(ast::Value::Boolean(true).into()));
        (filter, sets)
    }

    /// The set answering conjunct `c`, with the probed column, when `c`
    /// qualifies.
    async fn set_for(
        &self,
        ctx: &SessionContext,
        raw: &super::secure::RawTables,
        c: &Expr,
    ) -> Option<(Expr, Arc<FilterSet>)> {
        let Expr::InSubquery {
            expr,
            subquery,
            negated: false,
        } = c
        else {
            return None;
        };
        if !matches!(
            expr.as_ref(),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_)
        ) {
            return None;
        }
        let table = plain_subquery_table(subquery)?;
        let key = subquery.to_string();
        {
            let registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(set) = registered.get(&key) {
                return Some((expr.as_ref().clone(), set.clone()));
            }
        }
        let source = raw.provider(&table).await.and_then(|p| {
            let any: Arc<dyn std::any::Any + Send + Sync> = p;
            any.downcast::<LatestDeltaProvider>().ok()
        })?;
        // The answer must be an integer column (what the set holds).
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(Statement::Query(
                subquery.clone(),
            ))))
            .await
            .ok()?;
        let fields = plan.schema().fields();
        if fields.len() != 1 || !fields[0].data_type().is_integer() {
            return None;
        }
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = registered.get(&key) {
            return Some((expr.as_ref().clone(), set.clone()));
        }
        let set = Arc::new(FilterSet {
            ctx: ctx.clone(),
            query: subquery.as_ref().clone(),
            source,
            function: format!("{FILTER_SET_PREFIX}{}", registered.len()),
            computed: tokio::sync::Mutex::new(None),
            current: Published::default(),
        });
        ctx.register_udf(membership_udf(set.clone()));
        registered.insert(key, set.clone());
        Some((expr.as_ref().clone(), set))
    }
}

/// `a AND b AND …` as its conjuncts, parentheses around a conjunct
/// removed (the policy compiler parenthesises each filter it combines).
fn split_and(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
        }
        Expr::Nested(inner) => split_and(*inner, out),
        e => out.push(e),
    }
}

/// The `schema.table` a qualifying subquery reads (module documentation),
/// or `None`.
fn plain_subquery_table(q: &Query) -> Option<String> {
    if q.with.is_some()
        || q.order_by.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
    {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let simple_select = s.distinct.is_none()
        && s.top.is_none()
        && s.into.is_none()
        && s.lateral_views.is_empty()
        && s.having.is_none()
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.prewhere.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.from.len() == 1
        && s.from[0].joins.is_empty();
    if !simple_select {
        return None;
    }
    let [SelectItem::UnnamedExpr(Expr::Identifier(_) | Expr::CompoundIdentifier(_))] =
        s.projection.as_slice()
    else {
        return None;
    };
    let TableFactor::Table {
        name, args: None, ..
    } = &s.from[0].relation
    else {
        return None;
    };
    if let Some(w) = &s.selection
        && !plain_condition(w)
    {
        return None;
    }
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [schema, table] => Some(format!("{schema}.{table}")),
        _ => None,
    }
}

/// A condition whose value depends only on the row and constants: no
/// function call (no clock, no session), no subquery.
fn plain_condition(e: &Expr) -> bool {
    let mut plain = true;
    let _ = ast::visit_expressions(e, |e| {
        if matches!(
            e,
            Expr::Function(_)
                | Expr::Subquery(_)
                | Expr::InSubquery { .. }
                | Expr::Exists { .. }
                | Expr::TypedString { .. }
        ) {
            plain = false;
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    });
    plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn expr(sql: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_expr()
            .unwrap()
    }

    fn qualifies(sql: &str) -> bool {
        match expr(sql) {
            Expr::InSubquery {
                subquery,
                negated: false,
                ..
            } => plain_subquery_table(&subquery).is_some(),
            _ => false,
        }
    }

    #[test]
    fn only_single_table_subqueries_of_plain_conditions_qualify() {
        assert!(qualifies(
            "encounter_id IN (SELECT encounter_id FROM clinical.encounters WHERE site_id = 'S01')"
        ));
        assert!(qualifies("x IN (SELECT e.id FROM s.t AS e)"));
        for refused in [
            "x NOT IN (SELECT id FROM s.t)",
            "x IN (SELECT id FROM s.t WHERE ts > now())",
            "x IN (SELECT id FROM s.t WHERE y IN (SELECT y FROM s.u))",
            "x IN (SELECT DISTINCT id FROM s.t)",
            "x IN (SELECT id FROM s.t LIMIT 5)",
            "x IN (SELECT id FROM s.t ORDER BY id)",
            "x IN (SELECT id FROM s.t GROUP BY id)",
            "x IN (SELECT id FROM s.t JOIN s.u ON true)",
            "x IN (SELECT id FROM s.t, s.u)",
            "x IN (SELECT id + 1 FROM s.t)",
            "x IN (SELECT id FROM t)",
            "x IN (SELECT id FROM s.t UNION SELECT id FROM s.u)",
        ] {
            assert!(!qualifies(refused), "{refused}");
        }
    }

    #[test]
    fn conjuncts_split_through_parentheses_only_for_and() {
        let mut out = Vec::new();
        split_and(
            expr("a = 1 AND (b = 2 AND c = 3) AND (d = 4 OR e = 5)"),
            &mut out,
        );
        assert_eq!(out.len(), 4);
    }
}
