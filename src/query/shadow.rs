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
    let live_access = access_for(engine, &live.policy, live.subject.as_ref());
    let shadow_access = access_for(engine, &policy, live.subject.as_ref());
    // The same access under both (the shadow policy changes nothing for
    // this role, purpose and site): the same plan, the same outcome. Only
    // the subjects a candidate policy changes pay for a second planning.
    if same_access(live_access.as_ref(), shadow_access.as_ref())
        && live.policy.consent == policy.consent
    {
        return Some(ShadowVerdict {
            policy_version: policy.version.clone(),
            allowed: live_plan.is_some(),
            differences: Vec::new(),
        });
    }
    let shadow = Principal {
        subject: live.subject.clone(),
        purpose: live.purpose,
        policy: policy.clone(),
        shadow: None,
        search_path: live.search_path.clone(),
        facts: live.facts.clone(),
    };
    let planned = Box::pin(plan_query(engine, &shadow, stmt)).await;
    // Both reports list the columns their optimised plans read.
    let live_report = live_plan.map(|p| &p.report);
    let shadow_report = planned.as_ref().ok().map(|p| &p.report);
    Some(ShadowVerdict {
        policy_version: policy.version.clone(),
        allowed: planned.is_ok(),
        differences: differences(
            live_access.as_ref(),
            shadow_access.as_ref(),
            live_report,
            shadow_report,
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

/// Do two access contexts give the same access (whatever their policy
/// versions)?
fn same_access(a: Option<&AccessContext>, b: Option<&AccessContext>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.subject == b.subject
                && a.tables == b.tables
                && a.denied == b.denied
                && a.aggregation == b.aggregation
        }
        _ => false,
    }
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
