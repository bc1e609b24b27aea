//! Policy unit tests written as files (`lakeward policy test`): the file
//! format, loading and judging an outcome. Running them is
//! `query::policy_test`, through the server's statement pipeline.
//!
//! Each file in `<policy dir>/tests/*.toml` holds `[[test]]` entries: a role,
//! its attributes and purpose, a query, and the expected outcome — refused
//! with a SQLSTATE, exact rows, a row count, or columns that must be NULL in
//! every row.

use std::path::Path;

use serde::Deserialize;

/// One policy test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyTest {
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
pub(crate) struct Expect {
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
pub(crate) struct TestResult {
    pub file: String,
    pub name: String,
    /// `None` when the test passed; otherwise what differed.
    pub failure: Option<String>,
}

/// Read every `tests/*.toml` under `dir` (sorted by file name).
pub(crate) fn load_tests(dir: &Path) -> anyhow::Result<Vec<(String, PolicyTest)>> {
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

/// What running a test's query produced.
pub(crate) enum Outcome {
    /// Refused with this SQLSTATE.
    Denied(String),
    /// Rows as text (`NULL` for NULL).
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

/// What differs between `outcome` and what `t` expects (`None`: passed).
pub(crate) fn judge(t: &PolicyTest, outcome: &Outcome) -> Option<String> {
    let e = &t.expect;
    match (outcome, &e.denied) {
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
    }
}
