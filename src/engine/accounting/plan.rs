//! The accounting rewrite of a statement's optimised logical plan: patient
//! key columns from each secured scan of a patient-keyed table, carried up
//! to where rows end (a [`PatientTap`]) or to the result (trailing
//! columns the row encoder strips). See the module above for the rule.
//!
//! Every node keeps its own columns, in order; key columns are added after
//! them (projections), beside them (joins, windows) or nowhere (a tap ends
//! them). Key columns have names no statement can write
//! (`__lakeward_patient_<n>`, one per scan), so they are found by name.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::{
    Distinct, Extension, JoinType, LogicalPlan, Projection, Subquery, TableScan, TableScanBuilder,
    Union,
};
use datafusion::prelude::Expr;

use super::tap::PatientTap;
use super::{Disclosure, KEY_COLUMN, PatientSets};
use crate::engine::secure::{AccountedTable, SecuredTable};

/// A statement's plan with its accounting.
pub(crate) struct Accounted {
    pub plan: LogicalPlan,
    /// Trailing key columns of the result (patients of the rows sent).
    pub key_columns: usize,
}

/// Rewrite `plan` so that running it fills `sets`. A plan that reads no
/// patient-keyed table is returned unchanged.
///
/// With `groups` (an aggregation policy's minimum group size, the plan
/// having passed `groups::check`), the one aggregation over patient rows
/// is rewritten to suppress small groups (`groups::suppress`).
pub(crate) fn account(
    plan: LogicalPlan,
    sets: &Arc<PatientSets>,
    groups: Option<u32>,
) -> Result<Accounted> {
    if !reads_patients(&plan) {
        return Ok(Accounted {
            plan,
            key_columns: 0,
        });
    }
    // Key columns are found by name: a statement that names a column like
    // one (`AS "__lakeward_patient_0"`) is refused rather than accounted
    // by a value it chose.
    if names_a_key_column(&plan) {
        return datafusion::common::plan_err!(
            "column names starting with {KEY_COLUMN} are reserved"
        );
    }
    let mut cx = Cx {
        sets: sets.clone(),
        next: 0,
        groups,
    };
    let (plan, keys) = track(plan, &mut cx)?;
    // Fail closed: a policy's aggregation that the walk did not reach is
    // not run unsuppressed (an EXPLAIN runs nothing).
    if cx.groups.is_some() && !matches!(plan, LogicalPlan::Explain(_)) {
        return datafusion::common::plan_err!("aggregation policy: no aggregation to suppress");
    }
    if keys.is_empty() {
        return Ok(Accounted {
            plan,
            key_columns: 0,
        });
    }
    // The statement's columns in their order, then the keys.
    let mut exprs = columns_except(&plan, &keys);
    for k in &keys {
        exprs.push(key_column(&plan, k)?);
    }
    let plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(plan))?);
    Ok(Accounted {
        plan,
        key_columns: keys.len(),
    })
}

/// The one patient every accounted scan of `plan` (in subqueries too) is
/// pinned to by a condition `key = constant` on the shown, unmasked
/// patient key (a point lookup), or `None`. Such a pushed condition is
/// also evaluated above its scan (`Inexact`), so no row of another
/// patient reaches a tap or the result; the statement's completion
/// checks it all the same (`audit::events::Completion::finish`).
pub(crate) fn pinned(plan: &LogicalPlan) -> Option<i64> {
    use crate::engine::lookup::keys::{KeyKind, Probe, probes};
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut pin: Option<i64> = None;
    let mut unpinned = false;
    let _ = plan.apply_with_subqueries(|node| {
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let Some(provider) = accounted_source(scan) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let column = provider
            .downcast_ref::<SecuredTable>()
            .and_then(SecuredTable::pin_column);
        // The same `key = constant` conditions point lookups probe with.
        let here = probes(&scan.filters).into_iter().find_map(|p| match p {
            Probe::Key { column: c, values } if Some(c.as_str()) == column => match &values[..] {
                [v] => KeyKind::Int.key_of(v).map(|k| k as i64),
                _ => None,
            },
            _ => None,
        });
        match (here, pin) {
            (Some(x), None) => pin = Some(x),
            (Some(x), Some(p)) if x == p => {}
            _ => {
                unpinned = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if unpinned { None } else { pin }
}

/// Whether `plan` is only operators that keep rows whole (projections,
/// filters, sorts, limits, aliases) over one scan of a patient-keyed
/// table, with no subquery: then, when [`pinned`] names the patient that
/// scan is pinned to, every row of the result is that patient's, and the
/// row encoder records the patient with the first row it sends instead of
/// reading a key column (`PatientSets::row_patient`).
pub(crate) fn rows_of_pinned_scan(plan: &LogicalPlan) -> bool {
    if has_subqueries(plan) {
        return false;
    }
    match plan {
        LogicalPlan::TableScan(scan) => accounted_source(scan).is_some(),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_) => match &plan.inputs()[..] {
            [input] => rows_of_pinned_scan(input),
            _ => false,
        },
        _ => false,
    }
}

/// Whether the node's own expressions hold a subquery.
fn has_subqueries(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_subqueries(|_| {
        found = true;
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop)
    });
    found
}

/// Whether any node's output (in subqueries too) has a column named like a
/// key column.
fn names_a_key_column(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if node
            .schema()
            .fields()
            .iter()
            .any(|f| f.name().starts_with(KEY_COLUMN))
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether any scan (in subqueries too) reads a patient-keyed secured table.
pub(crate) fn reads_patients(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && accounted_source(scan).is_some()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn accounted_source(scan: &TableScan) -> Option<Arc<dyn datafusion::catalog::TableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    provider
        .downcast_ref::<SecuredTable>()
        .is_some_and(SecuredTable::accounted)
        .then_some(provider)
}

struct Cx {
    sets: Arc<PatientSets>,
    next: usize,
    /// The aggregation policy's minimum group size, until the aggregation
    /// it applies to is rewritten.
    groups: Option<u32>,
}

/// The node rebuilt over `inputs` with its own expressions.
fn rebuild(plan: &LogicalPlan, inputs: Vec<LogicalPlan>) -> Result<LogicalPlan> {
    plan.with_new_exprs(plan.expressions(), inputs)
}

fn inputs_of(plan: &LogicalPlan) -> Vec<LogicalPlan> {
    plan.inputs().into_iter().cloned().collect()
}

/// `plan` with its key columns `keys` recorded as `class` and dropped.
fn strip(plan: LogicalPlan, keys: Vec<String>, class: Disclosure, cx: &Cx) -> Result<LogicalPlan> {
    if keys.is_empty() {
        return Ok(plan);
    }
    let tap = LogicalPlan::Extension(Extension {
        node: Arc::new(PatientTap {
            input: plan,
            keys: keys.clone(),
            class,
            sets: cx.sets.clone(),
        }),
    });
    let exprs = columns_except(&tap, &keys);
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(tap),
    )?))
}

/// Column expressions for every column of `plan` but `keys`, in order.
fn columns_except(plan: &LogicalPlan, keys: &[String]) -> Vec<Expr> {
    plan.schema()
        .iter()
        .filter(|(_, f)| !keys.iter().any(|k| k == f.name()))
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect()
}

/// The key column `name` of `plan`'s output.
fn key_column(plan: &LogicalPlan, name: &str) -> Result<Expr> {
    let (q, f) = plan.schema().qualified_field_with_unqualified_name(name)?;
    Ok(Expr::Column(Column::new(q.cloned(), f.name())))
}

/// Rewrite `plan`; returns it with the key columns its output carries.
fn track(plan: LogicalPlan, cx: &mut Cx) -> Result<(LogicalPlan, Vec<String>)> {
    // Subqueries left in this node's expressions (uncorrelated scalar
    // subqueries): a value computed from their rows is shown when the
    // node is a projection, else it only decides.
    let class = if matches!(plan, LogicalPlan::Projection(_)) {
        Disclosure::Returned
    } else {
        Disclosure::Aggregated
    };
    let plan = plan
        .map_subqueries(|sub| match sub {
            LogicalPlan::Subquery(s) => {
                let (inner, keys) = track(s.subquery.as_ref().clone(), cx)?;
                let inner = strip(inner, keys, class, cx)?;
                Ok(Transformed::yes(LogicalPlan::Subquery(Subquery {
                    subquery: Arc::new(inner),
                    outer_ref_columns: s.outer_ref_columns,
                    spans: s.spans,
                })))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    match &plan {
        LogicalPlan::TableScan(scan) => {
            let Some(provider) = accounted_source(scan) else {
                return Ok((plan, vec![]));
            };
            let (name, projection) = key_projection(scan, provider.as_ref(), cx);
            let source = provider_as_source(Arc::new(AccountedTable::new(provider, name.clone())));
            let scan = TableScanBuilder::new(scan.table_name.clone(), source)
                .with_projection(Some(projection))
                .with_filters(scan.filters.clone())
                .with_fetch(scan.fetch)
                .with_statistics_requests(scan.statistics_requests.clone())
                .build()?;
            Ok((LogicalPlan::TableScan(scan), vec![name]))
        }
        LogicalPlan::Projection(p) => {
            let (input, keys) = track(p.input.as_ref().clone(), cx)?;
            let mut exprs = p.expr.clone();
            for k in &keys {
                exprs.push(key_column(&input, k)?);
            }
            let plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?);
            Ok((plan, keys))
        }
        // Rows pass whole: the keys pass with them.
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Window(_) => {
            let (input, keys) = track_one(&plan, cx)?;
            Ok((rebuild(&plan, vec![input])?, keys))
        }
        LogicalPlan::Join(j) => {
            let (left, lk) = track(j.left.as_ref().clone(), cx)?;
            let (right, rk) = track(j.right.as_ref().clone(), cx)?;
            let (left, lk, right, rk) = match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    (left, lk, right, rk)
                }
                // The right side only decides which left rows pass.
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                    let right = strip(right, rk, Disclosure::Aggregated, cx)?;
                    (left, lk, right, vec![])
                }
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                    let left = strip(left, lk, Disclosure::Aggregated, cx)?;
                    (left, vec![], right, rk)
                }
            };
            let plan = rebuild(&plan, vec![left, right])?;
            Ok((plan, [lk, rk].concat()))
        }
        // The aggregation under an aggregation policy: small groups
        // suppressed, over the keys of its rows.
        LogicalPlan::Aggregate(a) if cx.groups.is_some() && reads_patients(&plan) => {
            let min = cx.groups.take().unwrap_or(u32::MAX);
            // Over a whole table, its scan records the patients (from the
            // key indexes) and still carries the key for the cells.
            let (input, keys, recorded) = match whole_keyed(&a.input, cx) {
                Some(r) => {
                    let (input, keys) = r?;
                    (input, keys, true)
                }
                None => {
                    let (input, keys) = track(a.input.as_ref().clone(), cx)?;
                    (input, keys, false)
                }
            };
            if keys.is_empty() {
                return datafusion::common::plan_err!("aggregation without patient keys");
            }
            let sets = cx.sets.clone();
            let tap_keys = keys.clone();
            let plan =
                super::groups::suppress(a, input, &keys, min, &sets.clone(), move |input| {
                    if recorded {
                        return input;
                    }
                    LogicalPlan::Extension(Extension {
                        node: Arc::new(PatientTap {
                            input,
                            keys: tap_keys,
                            class: Disclosure::Aggregated,
                            sets,
                        }),
                    })
                })?;
            Ok((plan, vec![]))
        }
        // An aggregate over every row of one table: its patients come
        // from the table's key indexes, with no key column (see `whole`).
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(Distinct::All(_))
            if let Some(input) = inputs_of(&plan).pop().and_then(|i| whole(&i, cx)) =>
        {
            Ok((rebuild(&plan, vec![input?])?, vec![]))
        }
        // Rows end in groups: the patients fed an aggregate.
        LogicalPlan::Aggregate(_)
        | LogicalPlan::Distinct(Distinct::All(_))
        | LogicalPlan::Analyze(_) => {
            let (input, keys) = track_one(&plan, cx)?;
            let input = strip(input, keys, Disclosure::Aggregated, cx)?;
            Ok((rebuild(&plan, vec![input])?, vec![]))
        }
        LogicalPlan::Union(_) => union(plan, cx),
        // Not executed.
        LogicalPlan::Explain(_) => Ok((plan, vec![])),
        // Anything else: the rows of each input count as returned (the
        // conservative account), and the node keeps its own schema.
        _ => {
            let mut inputs = Vec::new();
            for input in inputs_of(&plan) {
                let (input, keys) = track(input, cx)?;
                inputs.push(strip(input, keys, Disclosure::Returned, cx)?);
            }
            if inputs.is_empty() {
                return Ok((plan, vec![]));
            }
            Ok((rebuild(&plan, inputs)?, vec![]))
        }
    }
}

/// A fresh key column's name for `scan` of `provider`, and the scan's
/// projection with that column (the provider's last) added.
fn key_projection(
    scan: &TableScan,
    provider: &dyn datafusion::catalog::TableProvider,
    cx: &mut Cx,
) -> (String, Vec<usize>) {
    let name = format!("{KEY_COLUMN}_{}", cx.next);
    cx.next += 1;
    let visible = provider.schema().fields().len();
    let mut projection = scan
        .projection
        .clone()
        .unwrap_or_else(|| (0..visible).collect());
    projection.push(visible);
    (name, projection)
}

/// The secured table `scan` reads, when every row it admits is read: no
/// condition of the statement, no limit, no row filter for the role.
fn whole_source(scan: &TableScan) -> Option<Arc<dyn datafusion::catalog::TableProvider>> {
    let provider = accounted_source(scan)?;
    (scan.filters.is_empty()
        && scan.fetch.is_none()
        && provider
            .downcast_ref::<SecuredTable>()
            .is_some_and(SecuredTable::accounted_whole))
    .then_some(provider)
}

/// `plan` rebuilt over a whole-table scan, when it is only projections
/// and aliases (with no subquery) over a scan of a secured table with no
/// row filter, no condition of the statement and no limit: every row the
/// table admits reaches the aggregate above. `None` when it is not.
fn whole(plan: &LogicalPlan, cx: &Cx) -> Option<Result<LogicalPlan>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = whole_source(scan)?;
            let source =
                provider_as_source(Arc::new(AccountedTable::whole(provider, cx.sets.clone())));
            Some(
                TableScanBuilder::new(scan.table_name.clone(), source)
                    .with_projection(scan.projection.clone())
                    .with_statistics_requests(scan.statistics_requests.clone())
                    .build()
                    .map(LogicalPlan::TableScan),
            )
        }
        LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {
            if has_subqueries(plan) {
                return None;
            }
            let input = whole(inputs_of(plan).pop().as_ref()?, cx)?;
            Some(input.and_then(|input| rebuild(plan, vec![input])))
        }
        _ => None,
    }
}

/// As [`whole`], with the scan's patient key carried up as a key column
/// (for an aggregation policy's cells): the plan and its key columns.
fn whole_keyed(plan: &LogicalPlan, cx: &mut Cx) -> Option<Result<(LogicalPlan, Vec<String>)>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = whole_source(scan)?;
            let (name, projection) = key_projection(scan, provider.as_ref(), cx);
            let source = provider_as_source(Arc::new(AccountedTable::whole_keyed(
                provider,
                name.clone(),
                cx.sets.clone(),
            )));
            Some(
                TableScanBuilder::new(scan.table_name.clone(), source)
                    .with_projection(Some(projection))
                    .with_statistics_requests(scan.statistics_requests.clone())
                    .build()
                    .map(|scan| (LogicalPlan::TableScan(scan), vec![name])),
            )
        }
        LogicalPlan::Projection(p) => {
            if has_subqueries(plan) {
                return None;
            }
            let (input, keys) = match whole_keyed(&p.input, cx)? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let mut exprs = p.expr.clone();
            for k in &keys {
                match key_column(&input, k) {
                    Ok(e) => exprs.push(e),
                    Err(e) => return Some(Err(e)),
                }
            }
            Some(
                Projection::try_new(exprs, Arc::new(input))
                    .map(|p| (LogicalPlan::Projection(p), keys)),
            )
        }
        LogicalPlan::SubqueryAlias(_) => {
            if has_subqueries(plan) {
                return None;
            }
            let (input, keys) = match whole_keyed(inputs_of(plan).pop().as_ref()?, cx)? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            Some(rebuild(plan, vec![input]).map(|p| (p, keys)))
        }
        _ => None,
    }
}

fn track_one(plan: &LogicalPlan, cx: &mut Cx) -> Result<(LogicalPlan, Vec<String>)> {
    match inputs_of(plan).pop() {
        Some(input) => track(input, cx),
        None => datafusion::common::internal_err!("node without input"),
    }
}

/// `UNION ALL` passes rows whole: every branch carries every branch's key
/// columns (NULL where it has none). If the union's columns would not come
/// out as they were, each branch's patients count as returned there.
fn union(plan: LogicalPlan, cx: &mut Cx) -> Result<(LogicalPlan, Vec<String>)> {
    let mut branches = Vec::new();
    for input in inputs_of(&plan) {
        branches.push(track(input, cx)?);
    }
    let all: Vec<String> = branches.iter().flat_map(|(_, k)| k.clone()).collect();
    if all.is_empty() {
        let inputs = branches.into_iter().map(|(p, _)| p).collect();
        return Ok((rebuild(&plan, inputs)?, vec![]));
    }
    let mut padded = Vec::new();
    for (branch, keys) in &branches {
        let mut exprs = columns_except(branch, keys);
        for k in &all {
            exprs.push(if keys.contains(k) {
                key_column(branch, k)?
            } else {
                Expr::Literal(ScalarValue::Int64(None), None).alias(k)
            });
        }
        padded.push(Arc::new(LogicalPlan::Projection(Projection::try_new(
            exprs,
            Arc::new(branch.clone()),
        )?)));
    }
    let same_columns = |candidate: &LogicalPlan| {
        let original = plan.schema();
        let n = original.fields().len();
        candidate.schema().fields().len() == n + all.len()
            && original
                .iter()
                .zip(candidate.schema().iter())
                .all(|((q1, f1), (q2, f2))| q1 == q2 && f1.name() == f2.name())
    };
    if let Ok(u) = Union::try_new_with_loose_types(padded) {
        let candidate = LogicalPlan::Union(u);
        if same_columns(&candidate) {
            return Ok((candidate, all));
        }
    }
    let mut inputs = Vec::new();
    for (branch, keys) in branches {
        inputs.push(strip(branch, keys, Disclosure::Returned, cx)?);
    }
    Ok((rebuild(&plan, inputs)?, vec![]))
}
