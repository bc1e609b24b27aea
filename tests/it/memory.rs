//! One statement must never take the server down: a statement that does not
//! fit the engine's memory budget fails alone with 53200 (or spills and
//! answers correctly), is audited, and every other session keeps answering.

use std::time::Duration;

use lakeward::config::MemoryConfig;
use tokio_postgres::SimpleQueryMessage;

use crate::support::{
    connect_role, engine_with_memory, sqlstate, start_over, temp_dir, test_auth_settings, token,
    try_connect_with,
};

fn first_cell(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

/// The mistyped join of the report: every encounter of a site paired with
/// every other, each pair's ids concatenated, counted distinct.
const RUNAWAY: &str = "SELECT count(DISTINCT CAST(a.encounter_id AS TEXT) || '/' || CAST(b.encounter_id AS TEXT)) \
     FROM clinical.encounters a JOIN clinical.encounters b ON a.site_id = b.site_id";

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_over_the_memory_budget_fails_alone_and_is_audited() {
    let spill = temp_dir("lakeward-it-spill");
    let engine = engine_with_memory(&MemoryConfig {
        limit_mb: 32,
        spill_dir: Some(spill.clone()),
        spill_max_mb: 64,
        statement_max_percent: 50,
    });
    assert_eq!(engine.memory_budget().limit_bytes, 32 * 1024 * 1024);
    let s = start_over(engine.clone(), |_| {}, test_auth_settings());
    let user = "memory_runaway";
    let analyst = try_connect_with(
        s.addr,
        user,
        &token(user, "analyst", None),
        "require",
        Some("operations"),
    )
    .await
    .expect("connect");
    let pairs: i64 = first_cell(
        &analyst
            .simple_query(
                "SELECT sum(n * n) FROM (SELECT count(*) AS n FROM clinical.encounters GROUP BY site_id) t",
            )
            .await
            .unwrap(),
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(pairs > 1_000_000, "the join is large: {pairs} pairs");

    // A clinician's point lookups run beside it, and keep answering.
    let clinician = connect_role(s.addr, "clinician", "treatment").await;
    let lookups = tokio::spawn(async move {
        let mut answered = 0u32;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let rows = clinician
                .query(
                    "SELECT patient_id, site_id FROM clinical.patients WHERE patient_id = $1",
                    &[&(1 + i64::from(answered % 500))],
                )
                .await
                .expect("a point lookup beside the runaway statement");
            assert!(rows.len() <= 1);
            answered += 1;
        }
        answered
    });
    let runaway = analyst.simple_query(RUNAWAY).await;
    match &runaway {
        Err(e) => {
            assert_eq!(sqlstate(e).as_deref(), Some("53200"), "{e}");
            let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap();
            assert!(
                msg.contains("memory.limit_mb") || msg.contains("memory.spill_max_mb"),
                "{msg}"
            );
        }
        Ok(msgs) => assert_eq!(
            first_cell(msgs).unwrap().parse::<i64>().unwrap(),
            pairs,
            "a spilled answer is the right one"
        ),
    }
    assert!(lookups.await.unwrap() > 0);
    // The same session goes on.
    let one = first_cell(&analyst.simple_query("SELECT 1").await.unwrap());
    assert_eq!(one.as_deref(), Some("1"));

    if runaway.is_err() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let auditor = connect_role(s.addr, "auditor", "operations").await;
        let recorded = auditor
            .simple_query(&format!(
                "SELECT count(*) FROM audit.access_log WHERE \"user\" = '{user}' AND sqlstate = '53200'"
            ))
            .await
            .unwrap();
        assert_eq!(first_cell(&recorded).as_deref(), Some("1"));
    }
    // Nothing of the statement stays on disk.
    let left: Vec<_> = crate::audit::walk(&spill);
    assert!(left.is_empty(), "spill files left behind: {left:?}");
    s.shutdown();
}

/// A role's memory budget (`[limits.roles.<role>] max_memory_mb`) stops
/// that role's statement inside the engine's budget, with a message naming
/// the role limit; another role is not affected.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_budget_stops_the_role_statement_not_others() {
    let s = crate::support::start(|c| {
        c.limits.roles.insert(
            "analyst".into(),
            lakeward::config::RoleLimitsConfig {
                max_memory_mb: Some(16),
                ..Default::default()
            },
        );
    });
    let analyst = connect_role(s.addr, "analyst", "operations").await;
    let e = analyst.simple_query(RUNAWAY).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("53200"), "{e}");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap();
    assert!(msg.contains("limits.max_memory_mb"), "{msg}");
    // Counted among the limits that ended a statement.
    let metrics = lakeward::metrics::Metrics::global().encode();
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("lakeward_limits_exceeded_total") && l.contains("limit=\"memory\""))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(counted >= 1.0, "{metrics}");
    let clinician = connect_role(s.addr, "clinician", "treatment").await;
    let n = first_cell(
        &clinician
            .simple_query("SELECT count(*) FROM clinical.encounters a JOIN clinical.encounters b ON a.encounter_id = b.encounter_id")
            .await
            .unwrap(),
    );
    assert!(n.is_some());
    s.shutdown();
}

/// `lakeward_<name>` from the process's metrics (0 when absent).
fn metric(name: &str) -> f64 {
    lakeward::metrics::Metrics::global()
        .encode()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// A sort and a hash aggregation far larger than the budget spill to disk
/// and answer correctly; the spill is counted and its files are gone when
/// the statements end.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_sort_and_a_large_aggregation_spill_and_answer_correctly() {
    let spill = temp_dir("lakeward-it-spill-sort");
    let engine = engine_with_memory(&MemoryConfig {
        limit_mb: 48,
        spill_dir: Some(spill.clone()),
        spill_max_mb: 1024,
        statement_max_percent: 100,
    });
    let s = start_over(engine.clone(), |_| {}, test_auth_settings());
    let analyst = connect_role(s.addr, "analyst", "operations").await;
    let total: usize = first_cell(
        &analyst
            .simple_query("SELECT count(*) FROM clinical.observations")
            .await
            .unwrap(),
    )
    .unwrap()
    .parse()
    .unwrap();
    // Each observation sixteen times, with sort keys of 100 bytes: more
    // than the 36 MiB a statement's sorts may hold, in batches that each fit.
    assert!(total * 16 * 100 > 64 << 20, "{total} observations");
    let spilled_before = metric("lakeward_statements_spilled_total");

    let rows = analyst
        .simple_query(
            "SELECT CAST(observation_id AS TEXT) || '-' || CAST(v.i AS TEXT) \
             FROM clinical.observations, (VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15), (16)) v(i) \
             ORDER BY lpad(CAST(observation_id AS TEXT) || '-' || CAST(v.i AS TEXT), 100, 'x')",
        )
        .await
        .expect("a sort larger than the budget spills");
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), total * 16, "every row, once");
    let mut expected = ids.clone();
    // Left-padded with 'x', which sorts after every digit: longer ids first.
    expected.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    assert!(ids == expected, "the spilled sort is in order");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), total * 16);

    // Sixteen groups per observation, each with a 100-byte key.
    let agg = analyst
        .simple_query(
            "SELECT count(*), sum(n), min(n), max(n) FROM ( \
               SELECT lpad(CAST(observation_id AS TEXT) || '-' || CAST(v.i AS TEXT), 100, 'x') AS k, count(*) AS n \
               FROM clinical.observations, (VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15), (16)) v(i) GROUP BY 1) t",
        )
        .await
        .expect("a hash aggregation larger than the budget spills");
    let row = agg
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..4)
                    .map(|i| r.get(i).unwrap_or_default().to_owned())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        row,
        vec![
            (total * 16).to_string(),
            (total * 16).to_string(),
            "1".into(),
            "1".into()
        ]
    );
    assert!(
        metric("lakeward_statements_spilled_total") >= spilled_before + 2.0,
        "both statements spilled"
    );
    assert!(metric("lakeward_spilled_bytes_total") > 0.0);
    drop(analyst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.memory_gauges().spill_files, 0);
    let left: Vec<_> = crate::audit::walk(&spill);
    assert!(left.is_empty(), "spill files left behind: {left:?}");
    s.shutdown();
}
