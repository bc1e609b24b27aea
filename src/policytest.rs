//! `lakeward policy test`: policy unit tests written as files.
//!
//! Each file in `<policy dir>/tests/*.toml` holds `[[test]]` entries: a role,
//! its attributes and purpose, a query, and the expected outcome — refused
//! with a SQLSTATE, exact rows, a row count, or columns that must be NULL in
//! every row. Tests run in-process through the server's statement pipeline
//! (`crate::query`: catalog dialect, gate, purpose, access, session
//! functions, result names, plan, verify) against real Delta tables.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use serde::Deserialize;

use crate::engine::Engine;
use crate::policy::compile::Subject;
use crate::policy::{Policy, Purpose};

/// One policy test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub site: Option<String>,
    pub purpose: String,
    #[serde(default)]
    pub break_glass: bool,
    pub sql: String,
    pub expect: Expect,
}

/// What a test expects; several checks may be combined.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The query is refused with this SQLSTATE.
    pub denied: Option<String>,
    /// Exact result rows, as text (`NULL` for NULL), in order.
    pub rows: Option<Vec<Vec<String>>>,
    pub row_count: Option<usize>,
    /// Columns that are NULL in every row.
    #[serde(default)]
    pub null_columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    test: Vec<PolicyTest>,
}

/// Outcome of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    /// `None` when the test passed; otherwise what differed.
    pub failure: Option<String>,
}

/// Read every `tests/*.toml` under `dir` (sorted by file name).
pub fn load_tests(dir: &Path) -> anyhow::Result<Vec<(String, PolicyTest)>> {
    let tests_dir = dir.join("tests");
    let mut files: Vec<_> = std::fs::read_dir(&tests_dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", tests_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let parsed: TestFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(parsed.test.into_iter().map(|t| (name.clone(), t)));
    }
    Ok(out)
}

enum Outcome {
    Denied(String),
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

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
    if crate::enforce::access_for(engine, policy, Some(&subject)).is_none() {
        // Unknown role or a purpose the role may not declare: the server
        // refuses such a session at startup or at `SET lakeward.purpose`.
        return Outcome::Denied("42501".into());
    }
    let stmt = match crate::rewrite::gate::parse(&t.sql, Default::default()).and_then(|mut v| {
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
    let (state, plan) = (planned.state, planned.plan);
    let columns: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut stream = match engine.execute(&state, plan, planned.optimised).await {
        Ok(s) => s,
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
pub async fn run(
    engine: &Engine,
    policy: &Policy,
    tests: &[(String, PolicyTest)],
) -> Vec<TestResult> {
    let mut results = Vec::with_capacity(tests.len());
    let policy = Arc::new(policy.clone());
    for (file, t) in tests {
        let outcome = run_query(engine, &policy, t).await;
        let e = &t.expect;
        let failure = match (&outcome, &e.denied) {
            (Outcome::Denied(code), Some(want)) if code == want => None,
            (Outcome::Denied(code), Some(want)) => {
                Some(format!("expected refusal {want}, got refusal {code}"))
            }
            (Outcome::Denied(code), None) => Some(format!("expected rows, got refusal {code}")),
            (Outcome::Rows { rows, .. }, Some(want)) => Some(format!(
                "expected refusal {want}, got {} row(s)",
                rows.len()
            )),
            (Outcome::Rows { columns, rows }, None) => {
                let mut problems = Vec::new();
                if let Some(want) = &e.rows
                    && want != rows
                {
                    let show = |r: &Vec<Vec<String>>| {
                        r.iter()
                            .take(10)
                            .map(|row| format!("    {}", row.join(" | ")))
                            .collect::<Vec<_>>()
                            .join("\n")
                    };
                    problems.push(format!(
                        "rows differ\n  expected:\n{}\n  got:\n{}",
                        show(want),
                        show(rows)
                    ));
                }
                if let Some(n) = e.row_count
                    && n != rows.len()
                {
                    problems.push(format!("expected {n} row(s), got {}", rows.len()));
                }
                for c in &e.null_columns {
                    match columns.iter().position(|x| x == c) {
                        None => problems.push(format!("no column {c} in the result")),
                        Some(i) => {
                            let bad = rows.iter().filter(|r| r[i] != "NULL").count();
                            if bad > 0 {
                                problems.push(format!("column {c} is not NULL in {bad} row(s)"));
                            }
                        }
                    }
                }
                (!problems.is_empty()).then(|| problems.join("\n"))
            }
        };
        results.push(TestResult {
            file: file.clone(),
            name: t.name.clone(),
            failure,
        });
    }
    results
}
