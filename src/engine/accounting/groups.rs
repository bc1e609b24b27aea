//! Aggregation policies (SPEC §8): small-cell suppression in the plan.
//!
//! A role bound to an aggregation policy (`[roles.<role>.aggregation]`,
//! `min_group_size`, 11 by default: CMS cell-size suppression) sees
//! patient-keyed tables only through aggregates whose every group covers
//! at least that many distinct patients. Enforcement runs on the final
//! logical plan, after the policy rewrite and the optimiser, before the
//! physical plan, in two steps:
//!
//! 1. [`check`] refuses (42501) every statement over a patient-keyed table
//!    that is not one aggregation over row-level operators: a row-level
//!    query; `ROLLUP`, `CUBE`, `GROUPING SETS`; a window function over
//!    patient rows (a window over the groups, above the aggregation, sees
//!    only what suppression left); an
//!    aggregate of an aggregate or of a `DISTINCT` (groups re-split); a
//!    `UNION` or join of aggregates (complementary cells within one
//!    statement); a subquery over patient rows in a condition or a select
//!    list (a scalar `count` of a filtered subquery); a patient-keyed table
//!    above the aggregation; an aggregate function that returns individual
//!    values (`array_agg`, `string_agg`, `first_value`, …: only an
//!    allow-list of summarising functions passes); `EXPLAIN ANALYZE`,
//!    whose per-operator row counts are cells before suppression.
//! 2. [`suppress`] rewrites the aggregation, with the stored patient key of
//!    every scan carried to its input (the accounting rewrite's key
//!    columns, so consent and row filters apply first). When every
//!    aggregate merges from its groups' values, in one pass
//!    (`super::cells`): the aggregation also carries each group's patients
//!    per key until they reach the minimum, and a node above it releases
//!    the groups that cover the minimum for every key and merges the
//!    others into one remainder group whose grouping columns are NULL,
//!    dropped while it is still too small. Otherwise in two: the distinct
//!    patients of each group per key; the rows of groups below the minimum
//!    relabelled into the remainder (a left join on the small groups,
//!    NULL-safe); the aggregation again over the relabelled rows; and a
//!    filter keeping only groups that cover the minimum for every key.
//!    `HAVING`, `ORDER BY` and `LIMIT` above apply to what is left.
//!
//! A group whose grouping columns are genuinely NULL and the remainder are
//! one group (both show NULL): it still covers the minimum. Differencing
//! across statements is not prevented here (docs/policy-language.md).

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, NullEquality, Result, ScalarValue};
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, JoinType, LogicalPlan, LogicalPlanBuilder, Projection,
    expr::AggregateFunction,
};

/// Counts the rows it is evaluated on (the groups below the minimum) into
/// the statement's account; returns true for each. Made per statement by
/// the rewrite, never registered where a statement could name it.
#[derive(Debug)]
struct SuppressedGroups {
    sets: Arc<super::PatientSets>,
    signature: datafusion::logical_expr::Signature,
}

impl PartialEq for SuppressedGroups {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.sets, &other.sets)
    }
}
impl Eq for SuppressedGroups {}
impl std::hash::Hash for SuppressedGroups {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "lakeward_suppressed_group".hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for SuppressedGroups {
    fn name(&self) -> &str {
        "lakeward_suppressed_group"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _arg_types: &[datafusion::arrow::datatypes::DataType],
    ) -> Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<datafusion::logical_expr::ColumnarValue> {
        let rows = args.number_rows;
        self.sets.add_suppressed(rows as u64);
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            datafusion::arrow::array::BooleanArray::from(vec![true; rows]),
        )))
    }
}

/// The session's aggregation policy (a session config extension set when
/// its secured catalog is built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupPolicy {
    pub min_group_size: u32,
}

/// Aggregate functions that summarise a group without returning one of
/// its members' values as such.
const SUMMARIES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "variance",
    "variance_pop",
    "variance_samp",
    "corr",
    "covar",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "regr_avgx",
    "regr_avgy",
    "regr_sxx",
    "regr_syy",
    "regr_sxy",
    "bool_and",
    "bool_or",
    "approx_distinct",
    "median",
    "approx_median",
    "approx_percentile_cont",
    "percentile_cont",
];

fn refused(what: &str, min: u32) -> String {
    format!("{what}: this role sees only aggregates of at least {min} patients per group")
}

/// Whether the statement may run under the policy. `Ok(false)`: it reads
/// no patient-keyed table (the policy does not apply); `Ok(true)`: it is
/// one aggregation to suppress; `Err`: refused, with the reason.
pub(crate) fn check(plan: &LogicalPlan, min: u32) -> std::result::Result<bool, String> {
    // A patient-keyed table whose key cannot be carried (not an integer
    // column) cannot have its groups counted: refused, not let through.
    let mut uncountable = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && let Some(t) = provider.downcast_ref::<crate::engine::secure::SecuredTable>()
            && t.patient_keyed()
            && !t.accounted()
        {
            uncountable = true;
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if uncountable {
        return Err(refused("a table whose patient key is not an integer", min));
    }
    if !super::plan::reads_patients(plan) {
        return Ok(false);
    }
    // No subquery expression over patient rows, anywhere.
    let mut subquery = false;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_subqueries(|sub| {
            if super::plan::reads_patients(sub) {
                subquery = true;
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if subquery {
        return Err(refused("a subquery over patient rows", min));
    }
    above(plan, min).map(|()| true)
}

/// The operators above the one aggregation.
fn above(plan: &LogicalPlan, min: u32) -> std::result::Result<(), String> {
    match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Explain(_) => match &plan.inputs()[..] {
            [input] => above(input, min),
            _ => Err(refused("this statement", min)),
        },
        // Its row counts per operator are cells (a filter's rows before
        // suppression).
        LogicalPlan::Analyze(_) => Err(refused("EXPLAIN ANALYZE", min)),
        LogicalPlan::Aggregate(a) => aggregation(a, min),
        // Over the groups left after suppression (a rank of groups).
        LogicalPlan::Window(_) => match &plan.inputs()[..] {
            [input] => above(input, min),
            _ => Err(refused("this statement", min)),
        },
        LogicalPlan::Union(_) => Err(refused("a UNION over patient rows", min)),
        LogicalPlan::Distinct(_) => Err(refused(
            "DISTINCT rows of patients (use GROUP BY with an aggregate)",
            min,
        )),
        _ if !super::plan::reads_patients(plan) => Ok(()),
        LogicalPlan::TableScan(_) | LogicalPlan::Join(_) => Err(refused(
            "a row-level query (aggregate with GROUP BY instead)",
            min,
        )),
        _ => Err(refused("this statement", min)),
    }
}

/// The aggregation itself, and what it reads.
fn aggregation(a: &Aggregate, min: u32) -> std::result::Result<(), String> {
    if a.group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(refused("ROLLUP, CUBE and GROUPING SETS", min));
    }
    for e in &a.aggr_expr {
        let mut bad: Option<String> = None;
        let _ = e.apply(|e| {
            if let Expr::AggregateFunction(AggregateFunction { func, .. }) = e
                && !SUMMARIES.contains(&func.name().to_ascii_lowercase().as_str())
            {
                bad = Some(func.name().to_owned());
                return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        if let Some(name) = bad {
            return Err(refused(&format!("{name}() returns individual values"), min));
        }
    }
    below(&a.input, min)
}

/// The row-level operators the aggregation reads.
fn below(plan: &LogicalPlan, min: u32) -> std::result::Result<(), String> {
    match plan {
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => {
            if super::plan::reads_patients(plan) {
                Err(refused("an aggregate over an aggregate or DISTINCT", min))
            } else {
                Ok(())
            }
        }
        LogicalPlan::Window(_) => Err(refused("a window function", min)),
        LogicalPlan::TableScan(_)
        | LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::Values(_)
        | LogicalPlan::EmptyRelation(_) => {
            for input in plan.inputs() {
                below(input, min)?;
            }
            Ok(())
        }
        _ if !super::plan::reads_patients(plan) => Ok(()),
        _ => Err(refused("this statement", min)),
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// `agg` over `input` (its input as the accounting rewrite left it,
/// carrying the key columns `keys`), with small groups suppressed.
/// `tap` records the rows' patients (a pass-through over a plan carrying
/// `keys`). Returns a plan with `agg`'s output schema.
///
/// Aggregates that merge from their groups' values take one pass over
/// the rows (`super::cells`); any other keeps the two-pass plan.
pub(crate) fn suppress(
    agg: &Aggregate,
    input: LogicalPlan,
    keys: &[String],
    min: u32,
    sets: &Arc<super::PatientSets>,
    tap: impl FnOnce(LogicalPlan) -> LogicalPlan,
) -> Result<LogicalPlan> {
    match mergeable(agg) {
        Some(merging) => one_pass(agg, merging, input, keys, min, sets, tap),
        None => two_pass(agg, input, keys, min, sets, tap),
    }
}

/// How each of an aggregation's aggregates merges into the remainder row.
struct Merging {
    merges: Vec<super::cells::Merge>,
    /// Hidden aggregates (an `avg`'s sum and count).
    hidden: Vec<Expr>,
    /// The arguments of `count(DISTINCT …)`.
    distinct: Vec<Expr>,
}

/// `None` when some aggregate does not merge from values (a `FILTER`, an
/// ordered aggregate, a statistic like `stddev`, a non-float `avg`).
fn mergeable(agg: &Aggregate) -> Option<Merging> {
    use super::cells::Merge;
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    let groups = agg.group_expr.len();
    let shown = groups + agg.aggr_expr.len();
    let mut m = Merging {
        merges: Vec::new(),
        hidden: Vec::new(),
        distinct: Vec::new(),
    };
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return None;
        };
        if params.filter.is_some() || !params.order_by.is_empty() {
            return None;
        }
        let args = &params.args;
        let float = agg.schema.fields().get(groups + i)?.data_type()
            == &datafusion::arrow::datatypes::DataType::Float64;
        let merge = match (func.name(), params.distinct, &args[..]) {
            ("count", false, _) | ("sum", false, _) => Merge::Sum,
            ("count", true, [x]) => {
                m.distinct.push(x.clone());
                Merge::Distinct(m.distinct.len() - 1)
            }
            ("min", _, _) => Merge::Min,
            ("max", _, _) => Merge::Max,
            ("bool_and", _, _) => Merge::And,
            ("bool_or", _, _) => Merge::Or,
            ("avg" | "mean", false, [x]) if float => {
                let at = shown + m.hidden.len();
                m.hidden.push(sum(datafusion::logical_expr::cast(
                    x.clone(),
                    datafusion::arrow::datatypes::DataType::Float64,
                )));
                m.hidden.push(count(x.clone()));
                Merge::Avg {
                    sum: at,
                    count: at + 1,
                }
            }
            _ => return None,
        };
        m.merges.push(merge);
    }
    Some(m)
}

/// One aggregation carrying each group's cell, released by
/// [`super::cells::ReleaseCells`].
fn one_pass(
    agg: &Aggregate,
    merging: Merging,
    input: LogicalPlan,
    keys: &[String],
    min: u32,
    sets: &Arc<super::PatientSets>,
    tap: impl FnOnce(LogicalPlan) -> LogicalPlan,
) -> Result<LogicalPlan> {
    use super::cells::{CellSpec, CellUdaf, Release, ReleaseCells};
    let groups = agg.group_expr.len();
    // The all-NULL group keeps its distinct values (it shares the
    // remainder's row), so it is told apart from the others.
    let null_flag = groups > 0 && !merging.distinct.is_empty();
    let mut args: Vec<Expr> = keys.iter().map(|k| column(k)).collect();
    args.extend(merging.distinct.iter().cloned());
    if null_flag
        && let Some(flag) = agg
            .group_expr
            .iter()
            .map(|g| g.clone().unalias().is_null())
            .reduce(Expr::and)
    {
        args.push(flag);
    }
    let spec = CellSpec {
        keys: keys.len(),
        distinct: merging.distinct.len(),
        null_flag,
        min: u64::from(min),
    };
    let cell = datafusion::logical_expr::AggregateUDF::new_from_impl(CellUdaf::new(spec))
        .call(args)
        .alias("__lakeward_cell");
    let mut aggr = agg.aggr_expr.clone();
    aggr.extend(
        merging
            .hidden
            .into_iter()
            .enumerate()
            .map(|(j, e)| e.alias(format!("__lakeward_h{j}"))),
    );
    aggr.push(cell);
    let cell_at = groups + aggr.len() - 1;
    let aggregated = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::new(tap(input)),
        agg.group_expr.clone(),
        aggr,
    )?);
    let release = Release {
        groups,
        merges: merging.merges,
        cell: cell_at,
        keys: keys.len(),
        distinct: merging.distinct.len(),
        null_flag,
        min: u64::from(min),
    };
    let node = ReleaseCells::new(aggregated, release, sets.clone())?;
    back_to(
        agg,
        LogicalPlan::Extension(datafusion::logical_expr::Extension {
            node: Arc::new(node),
        }),
    )
}

/// The two-pass plan: group sizes first, then the rows relabelled.
fn two_pass(
    agg: &Aggregate,
    input: LogicalPlan,
    keys: &[String],
    min: u32,
    sets: &Arc<super::PatientSets>,
    tap: impl FnOnce(LogicalPlan) -> LogicalPlan,
) -> Result<LogicalPlan> {
    let counted = Arc::new(datafusion::logical_expr::ScalarUDF::new_from_impl(
        SuppressedGroups {
            sets: sets.clone(),
            signature: datafusion::logical_expr::Signature::any(
                1,
                datafusion::logical_expr::Volatility::Volatile,
            ),
        },
    ));
    use datafusion::functions_aggregate::count::count_distinct;
    let sizes: Vec<Expr> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| count_distinct(column(k)).alias(format!("__lakeward_n{i}")))
        .collect();
    let min_lit = || Expr::Literal(ScalarValue::Int64(Some(i64::from(min))), None);
    let groups = agg.group_expr.len();
    // Every column of the input, then the grouping values.
    let mut with_groups: Vec<Expr> = input
        .schema()
        .iter()
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect();
    let g_names: Vec<String> = (0..groups).map(|j| format!("__lakeward_g{j}")).collect();
    for (j, g) in agg.group_expr.iter().enumerate() {
        with_groups.push(g.clone().alias(&g_names[j]));
    }
    let input = Arc::new(input);
    let relabelled = if groups == 0 {
        input.as_ref().clone()
    } else {
        let i1 = LogicalPlan::Projection(Projection::try_new(with_groups, input.clone())?);
        // The groups below the minimum for some key.
        let small = LogicalPlanBuilder::from(i1.clone())
            .aggregate(g_names.iter().map(|g| column(g)), sizes.clone())?
            .filter(
                (0..keys.len())
                    .map(|i| column(&format!("__lakeward_n{i}")).lt(min_lit()))
                    .reduce(Expr::or)
                    .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(false)), None)),
            )?
            .project(
                g_names
                    .iter()
                    .enumerate()
                    .map(|(j, g)| column(g).alias(format!("__lakeward_s{j}")))
                    .chain([counted
                        .call(vec![column("__lakeward_n0")])
                        .alias("__lakeward_small")]),
            )?
            .build()?;
        let s_names: Vec<String> = (0..groups).map(|j| format!("__lakeward_s{j}")).collect();
        let joined = LogicalPlanBuilder::from(i1.clone())
            .join_detailed(
                small,
                JoinType::Left,
                (
                    g_names
                        .iter()
                        .map(|g| Column::from_name(g))
                        .collect::<Vec<_>>(),
                    s_names
                        .iter()
                        .map(|s| Column::from_name(s))
                        .collect::<Vec<_>>(),
                ),
                None,
                NullEquality::NullEqualsNull,
            )?
            .build()?;
        // The input's columns, and each grouping value (NULL for the rows
        // of a small group).
        let mut exprs: Vec<Expr> = i1
            .schema()
            .iter()
            .filter(|(_, f)| !g_names.iter().any(|g| g == f.name()))
            .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
            .collect();
        for (j, g) in g_names.iter().enumerate() {
            exprs.push(
                datafusion::logical_expr::when(column("__lakeward_small").is_null(), column(g))
                    .end()?
                    .alias(format!("__lakeward_r{j}")),
            );
        }
        LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(joined))?)
    };
    let tapped = tap(relabelled);
    let mut aggr = agg.aggr_expr.clone();
    aggr.extend(sizes);
    let regrouped = LogicalPlanBuilder::from(tapped)
        .aggregate(
            (0..groups).map(|j| column(&format!("__lakeward_r{j}"))),
            aggr,
        )?
        .build()?;
    let kept = LogicalPlan::Filter(Filter::try_new(
        (0..keys.len())
            .map(|i| column(&format!("__lakeward_n{i}")).gt_eq(min_lit()))
            .reduce(Expr::and)
            .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(false)), None)),
        Arc::new(regrouped),
    )?);
    back_to(agg, kept)
}

/// `plan`'s columns renamed to `agg`'s output columns, by position.
fn back_to(agg: &Aggregate, kept: LogicalPlan) -> Result<LogicalPlan> {
    let out = agg.schema.clone();
    let got = kept.schema().clone();
    let exprs: Vec<Expr> = out
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let (gq, gf) = got.qualified_field(i);
            Expr::Column(Column::new(gq.cloned(), gf.name())).alias_qualified(q.cloned(), f.name())
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(kept),
    )?))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The aggregation of `sql`'s optimised plan.
    async fn aggregation(ctx: &SessionContext, sql: &str) -> Aggregate {
        let plan = ctx
            .sql(sql)
            .await
            .and_then(|df| df.into_optimized_plan())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut found = None;
        let _ = plan.apply(|node| {
            if let LogicalPlan::Aggregate(a) = node {
                found = Some(a.clone());
                return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        found.unwrap_or_else(|| panic!("{sql}: no aggregation"))
    }

    #[tokio::test]
    async fn aggregates_that_merge_from_their_values_take_one_pass() {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE t (p BIGINT, g VARCHAR, x DOUBLE, i INT, d DECIMAL(12,2), b BOOLEAN)",
        )
        .await
        .unwrap();
        for sql in [
            "SELECT g, count(*), count(x), sum(i), sum(d), min(g), max(d), avg(x), avg(i), \
             bool_and(b), bool_or(b), count(DISTINCT i) FROM t GROUP BY g",
            "SELECT count(*) FROM t",
        ] {
            let a = aggregation(&ctx, sql).await;
            let m = mergeable(&a).unwrap_or_else(|| panic!("{sql}: not one pass"));
            assert_eq!(m.merges.len(), a.aggr_expr.len());
        }
        let a = aggregation(
            &ctx,
            "SELECT g, avg(x), count(DISTINCT i) FROM t GROUP BY g",
        )
        .await;
        let m = mergeable(&a).unwrap();
        // avg: a hidden sum and count after the statement's columns.
        assert_eq!(
            m.merges,
            vec![
                super::super::cells::Merge::Avg { sum: 3, count: 4 },
                super::super::cells::Merge::Distinct(0)
            ]
        );
        assert_eq!((m.hidden.len(), m.distinct.len()), (2, 1));
        for sql in [
            "SELECT g, stddev(x) FROM t GROUP BY g",
            "SELECT g, avg(d) FROM t GROUP BY g",
            "SELECT g, count(*) FILTER (WHERE x > 1) FROM t GROUP BY g",
            "SELECT g, median(x) FROM t GROUP BY g",
        ] {
            let a = aggregation(&ctx, sql).await;
            assert!(mergeable(&a).is_none(), "{sql}: one pass");
        }
    }
}
