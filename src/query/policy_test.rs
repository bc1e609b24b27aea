//! `lakeward policy test`: each test's query runs in-process through the
//! server's statement pipeline (`crate::query`: catalog dialect, gate,
//! purpose, access, session functions, result names, plan, verify,
//! execute) as the test's principal, against real Delta tables, unaudited
//! and without limits.

use std::sync::Arc;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;

use crate::engine::Engine;
use crate::policy::compile::Subject;
use crate::policy::test_file::{Outcome, PolicyTest, TestResult, judge};
use crate::policy::{Policy, Purpose};

async fn run_query(engine: &Engine, policy: &Arc<Policy>, t: &PolicyTest) -> Outcome {
    let Some(purpose) = Purpose::parse(&t.purpose) else {
        return Outcome::Denied("22023".into());
    };
    let subject = Subject {
        user: "policy-test".into(),
        role: t.role.clone(),
        site: t.site.clone(),
        purpose,
        break_glass: t.break_glass && policy.role(&t.role).is_some_and(|r| r.break_glass),
    };
    run_sql(engine, policy, subject, &t.sql).await
}

/// One statement through the server's pipeline as `subject` under `policy`,
/// unaudited and without limits: its rows as text, or the SQLSTATE that
/// refused it. `policy test` judges tests with it; `policy diff` counts
/// the rows each role sees with it.
pub(crate) async fn run_sql(
    engine: &Engine,
    policy: &Arc<Policy>,
    subject: Subject,
    sql: &str,
) -> Outcome {
    if crate::enforce::access_for(engine, policy, Some(&subject)).is_none() {
        // Unknown role or a purpose the role may not declare: the server
        // refuses such a session at startup or at `SET lakeward.purpose`.
        return Outcome::Denied("42501".into());
    }
    let stmt = match crate::rewrite::gate::parse(sql, Default::default()).and_then(|mut v| {
        if v.len() == 1 {
            Ok(v.remove(0))
        } else {
            Err(crate::error::SqlError::new(
                "42601",
                "one statement per test",
            ))
        }
    }) {
        Ok(s) => s,
        Err(e) => return Outcome::Denied(e.code.into()),
    };
    // The server's pipeline (`crate::query`): catalog dialect, gate,
    // purpose, access, session functions, result names, plan, verify.
    let stmt = match crate::query::classify(stmt) {
        Ok(crate::rewrite::gate::StatementKind::Query(s)) => s,
        Ok(_) => return Outcome::Denied("0A000".into()),
        Err(e) => return Outcome::Denied(e.code.into()),
    };
    let principal = crate::query::Principal::detached(policy.clone(), subject, "policy-test");
    let planned = match crate::query::plan_query(engine, &principal, stmt).await {
        Ok(p) => p,
        Err(e) => return Outcome::Denied(e.code.into()),
    };
    let columns: Vec<String> = planned
        .result_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let execution = crate::query::execute::Execution {
        engine,
        limits: None,
        audit: &mut None,
        auditor: None,
        cancel: Default::default(),
        activity: None,
    };
    let plan = crate::query::execute::Plan {
        state: &planned.state,
        plan: planned.plan,
        optimised: planned.optimised,
        reads_audit: false,
    };
    let mut stream = match crate::query::execute::execute(execution, plan).await {
        Ok(running) => running.batches,
        Err(e) => return Outcome::Denied(e.code.into()),
    };
    let mut rows = Vec::new();
    let opts = FormatOptions::default().with_null("NULL");
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return Outcome::Denied(crate::engine::errors::to_sql_error(&e).code.into()),
        };
        let fmts: Vec<_> = match batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect()
        {
            Ok(f) => f,
            Err(_) => return Outcome::Denied("XX000".into()),
        };
        for i in 0..batch.num_rows() {
            rows.push(fmts.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    Outcome::Rows { columns, rows }
}

/// Run `tests` against `engine` under `policy`.
pub(crate) async fn run(
    engine: &Engine,
    policy: &Policy,
    tests: &[(String, PolicyTest)],
) -> Vec<TestResult> {
    let mut results = Vec::with_capacity(tests.len());
    let policy = Arc::new(policy.clone());
    for (file, t) in tests {
        let outcome = run_query(engine, &policy, t).await;
        results.push(TestResult {
            file: file.clone(),
            name: t.name.clone(),
            failure: judge(t, &outcome),
        });
    }
    results
}
