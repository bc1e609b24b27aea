//! The shadow policy (SPEC §10): a server started with `shadow_policy_dir`
//! plans every statement under that policy as well — never executes it
//! twice — and its audit record says whether the shadow policy would have
//! refused it and which columns it would have shown differently
//! (`audit.shadow_differences`).
//!
//! The verdict is computed at planning, so a plan served from the plan
//! cache carries the verdict of its planning (the cache key holds both
//! policy versions): with a shadow policy on, a statement seen before
//! costs nothing more.

use std::collections::BTreeSet;

use super::{PlannedQuery, Principal, Statement, plan_query};
use crate::enforce::{AccessReport, ShadowVerdict, access_for};
use crate::engine::Engine;
use crate::policy::compile::{AccessContext, ColumnAccess};
use crate::rewrite::gate::StatementKind;

/// The principal's statement planned under its shadow policy, compared
/// with the live plan's report (`None`: the live policy refused it).
/// `None` when the principal has no shadow policy.
pub async fn verdict(
    engine: &Engine,
    live: &Principal,
    stmt: Box<Statement>,
    live_plan: Option<&PlannedQuery>,
) -> Option<ShadowVerdict> {
    let policy = live.shadow.clone()?;
    let shadow = Principal {
        subject: live.subject.clone(),
        purpose: live.purpose,
        policy: policy.clone(),
        shadow: None,
        search_path: live.search_path.clone(),
        facts: live.facts.clone(),
    };
    let planned = Box::pin(plan_query(engine, &shadow, stmt)).await;
    let live_report = live_plan.map(read);
    let shadow_report = planned.as_ref().ok().map(read);
    let live_access = access_for(engine, &live.policy, live.subject.as_ref());
    let shadow_access = access_for(engine, &policy, live.subject.as_ref());
    Some(ShadowVerdict {
        policy_version: policy.version.clone(),
        allowed: planned.is_ok(),
        differences: differences(
            live_access.as_ref(),
            shadow_access.as_ref(),
            live_report.as_ref(),
            shadow_report.as_ref(),
        ),
    })
}

/// The shadow verdict of a statement the live policy refused (or failed to
/// plan): its query planned under the shadow policy alone. A statement the
/// gate refuses is refused under any policy.
pub async fn verdict_of_refused(
    engine: &Engine,
    live: &Principal,
    stmt: Statement,
) -> Option<ShadowVerdict> {
    let policy = live.shadow.as_ref()?;
    let refused = || ShadowVerdict {
        policy_version: policy.version.clone(),
        allowed: false,
        differences: Vec::new(),
    };
    let query = match super::classify(stmt) {
        Ok(StatementKind::Query(q) | StatementKind::Explain(q)) => q,
        // The query inside is classified on its own, as the server does.
        Ok(
            StatementKind::Declare { query: q, .. }
            | StatementKind::Copy { query: q, .. }
            | StatementKind::Prepare { statement: q, .. },
        ) => match super::classify(*q) {
            Ok(StatementKind::Query(q) | StatementKind::Explain(q)) => q,
            Ok(_) => return None,
            Err(_) => return Some(refused()),
        },
        // Settings, transactions, cursors: nothing the policy plans.
        Ok(_) => return None,
        Err(_) => return Some(refused()),
    };
    verdict(engine, live, query, None).await
}

/// The tables and columns a plan reads once its projections are pushed
/// into its scans (the access report of an unoptimised plan lists every
/// column of a table whose scan has no projection yet: `count(*)` would
/// "read" them all).
fn read(p: &PlannedQuery) -> AccessReport {
    let optimised;
    let plan = if p.optimised {
        &p.plan
    } else {
        match p.state.optimize(&p.plan) {
            Ok(o) => {
                optimised = o;
                &optimised
            }
            Err(_) => return p.report.clone(),
        }
    };
    crate::enforce::verify_plan(plan, None, &p.report.policy_version)
        .unwrap_or_else(|_| p.report.clone())
}

/// What the two policies treat differently among what the statement reads
/// under either of them.
fn differences(
    live: Option<&AccessContext>,
    shadow: Option<&AccessContext>,
    live_report: Option<&AccessReport>,
    shadow_report: Option<&AccessReport>,
) -> Vec<String> {
    let reports = || live_report.into_iter().chain(shadow_report);
    let tables: BTreeSet<&String> = reports().flat_map(|r| r.tables.iter()).collect();
    let columns: BTreeSet<&String> = reports().flat_map(|r| r.columns.iter()).collect();
    let mut out = Vec::new();
    for column in columns {
        let Some((table, name)) = column.rsplit_once('.') else {
            continue;
        };
        if column_access(live, table, name) != column_access(shadow, table, name) {
            out.push(column.clone());
        }
    }
    for table in tables {
        let rows = |c: Option<&AccessContext>| {
            c.and_then(|c| c.tables.get(table.as_str())).map(|t| {
                (
                    t.row_filter.as_ref().map(|f| f.to_string()),
                    t.consent.clone(),
                )
            })
        };
        if rows(live) != rows(shadow) {
            out.push(format!("{table} (rows)"));
        }
    }
    let aggregation = |c: Option<&AccessContext>| c.and_then(|c| c.aggregation);
    let patient_keyed = reports().any(|r| !r.tables.is_empty());
    if patient_keyed && aggregation(live) != aggregation(shadow) {
        out.push("(aggregation)".to_owned());
    }
    out
}

/// How a context shows one column: `None` when its table is refused.
fn column_access<'a>(
    context: Option<&'a AccessContext>,
    table: &str,
    column: &str,
) -> Option<&'a ColumnAccess> {
    let t = context?.tables.get(table)?;
    Some(
        t.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, a)| a)
            .unwrap_or(&ColumnAccess::Null),
    )
}
