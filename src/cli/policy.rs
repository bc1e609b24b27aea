//! `policy check`, `policy test` and `policy explain`, and the served
//! tables' columns as the policy checker reads them.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::OutputFormat;

/// `policy check`; with `classify` (rows per data file), the column
/// classification as well.
pub(super) async fn policy_check(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    format: OutputFormat,
    classify: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy_reporting(policy_dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let locations = crate::engine::discover_tables(data_dir)?;
    let engine = crate::engine::Engine::open(&locations).await?;
    let mut report = crate::policy::check::check(&policy, &engine_schemas(&engine));
    // A table the engine cannot read is the data's problem, not the
    // policy's, but it fails the check: queries on it would be refused.
    report
        .errors
        .extend(engine.unreadable_tables().values().cloned());
    let classified = match classify {
        Some(rows) => Some(classify_columns(&engine, &policy, rows).await?),
        None => None,
    };
    match (format, &classified) {
        (OutputFormat::Text, None) => print!("{}", crate::policy::check::render_text(&report)),
        (OutputFormat::Text, Some(c)) => {
            print!("{}", crate::policy::classify::render_text(c));
            for e in &report.errors {
                println!("error (policy check): {e}");
            }
        }
        (OutputFormat::Json, None) => println!("{}", serde_json::to_string_pretty(&report)?),
        (OutputFormat::Json, Some(c)) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "check": report, "classify": c }))?
        ),
    }
    let classify_failed = classified.as_ref().is_some_and(|c| !c.errors.is_empty());
    Ok(if report.errors.is_empty() && !classify_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sample every served table (`rows` per data file, raw) into the
/// detectors and judge the columns against `policy`.
async fn classify_columns(
    engine: &crate::engine::Engine,
    policy: &crate::policy::Policy,
    rows: usize,
) -> anyhow::Result<crate::policy::classify::ClassifyReport> {
    use crate::policy::classify::{
        TableSample, add_batch, detect::ColumnSample, judge, sample_type,
    };
    let mut samples = std::collections::BTreeMap::new();
    let mut tables = Vec::new();
    for info in engine.tables().values() {
        let name = info.name.to_string();
        let mut columns: Vec<(String, ColumnSample)> = info
            .schema
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name().clone(),
                    ColumnSample::new(f.name(), sample_type(f.data_type())),
                )
            })
            .collect();
        let sampled = engine
            .sample_rows(&info.name, rows, &mut |batch| {
                add_batch(&mut columns, batch)
            })
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        tables.push(TableSample {
            table: name.clone(),
            files: sampled.files,
            rows: sampled.rows,
            per_file: sampled.per_file,
        });
        samples.insert(name, columns);
    }
    let today = (chrono::Utc::now().timestamp() / 86_400) as i32;
    Ok(judge(policy, tables, &samples, rows, today))
}

/// `lakeward policy diff`: exit 0 when no access widens, 1 when some does
/// (or may), 2 when either policy does not load.
pub(super) async fn policy_diff(
    from: &Path,
    to: &Path,
    data_dir: Option<&Path>,
    site: &str,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    use crate::policy::diff::{RowCount, diff, render_text, subjects};
    let (Some(old), Some(new)) = (
        load_policy_reporting(Some(from)),
        load_policy_reporting(Some(to)),
    ) else {
        return Ok(ExitCode::from(2));
    };
    let engine = match data_dir {
        Some(d) => Some(crate::engine::Engine::open(&crate::engine::discover_tables(d)?).await?),
        None => None,
    };
    // The served tables' columns; without tables, the columns either
    // policy classifies.
    let schemas: std::collections::BTreeMap<String, Vec<String>> = match &engine {
        Some(e) => engine_schemas(e)
            .into_iter()
            .map(|(t, cols)| (t, cols.into_iter().map(|(c, _)| c).collect()))
            .collect(),
        None => {
            let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for (t, rules) in old.tables.iter().chain(new.tables.iter()) {
                let cols = m.entry(t.clone()).or_default();
                for c in rules.columns.keys() {
                    if !cols.contains(c) {
                        cols.push(c.clone());
                    }
                }
            }
            m
        }
    };
    let mut report = diff(&old, &new, &schemas, site);
    if let Some(engine) = &engine {
        let (old, new) = (Arc::new(old), Arc::new(new));
        for subject in subjects(&old, &new, site) {
            for table in schemas.keys() {
                let before = count_rows(engine, &old, &subject, table).await;
                let after = count_rows(engine, &new, &subject, table).await;
                if before.is_none() && after.is_none() {
                    continue;
                }
                report.rows.push(RowCount {
                    role: subject.role.clone(),
                    purpose: subject.purpose.to_string(),
                    break_glass: subject.break_glass,
                    table: table.clone(),
                    before,
                    after,
                });
            }
        }
        report.add_row_changes();
    }
    match format {
        OutputFormat::Text => print!("{}", render_text(&report)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "from_version": report.from_version,
                "to_version": report.to_version,
                "site": report.site,
                "widens": report.widens(),
                "widened_roles": report.widened_roles(),
                "changes": report.changes,
                "rows": report.rows,
            }))?
        ),
    }
    Ok(if report.widens() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The rows `subject` sees in `table` under `policy`: `SELECT count(*)`
/// through the server's pipeline (the secured table: row filters, consent,
/// the aggregation policy). `None` when refused.
async fn count_rows(
    engine: &crate::engine::Engine,
    policy: &Arc<crate::policy::Policy>,
    subject: &crate::policy::compile::Subject,
    table: &str,
) -> Option<u64> {
    use crate::policy::test_file::Outcome;
    let quoted = table
        .split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".");
    let sql = format!("SELECT count(*) FROM {quoted}");
    match crate::query::policy_test::run_sql(engine, policy, subject.clone(), &sql).await {
        Outcome::Rows { rows, .. } => rows.first()?.first()?.parse().ok(),
        Outcome::Denied(_) => None,
    }
}

/// Load a policy for a policy command; print every problem (file:line) on failure.
fn load_policy_reporting(dir: Option<&Path>) -> Option<crate::policy::Policy> {
    match crate::policy::Policy::load(dir) {
        Ok(p) => Some(p),
        Err(e) => {
            for p in &e.problems {
                println!("error: {p}");
            }
            None
        }
    }
}

pub(super) async fn policy_test(
    policy_dir: &Path,
    data_dir: Option<&Path>,
    patients: u64,
) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy_reporting(Some(policy_dir)) else {
        return Ok(ExitCode::FAILURE);
    };
    let tests = crate::policy::test_file::load_tests(policy_dir)?;
    let dir = match data_dir {
        Some(d) => d.to_owned(),
        None => {
            let d = std::env::temp_dir().join(format!(
                "lakeward-policy-test-{}-{}",
                std::process::id(),
                patients
            ));
            if crate::engine::discover_tables(&d)
                .map(|t| t.is_empty())
                .unwrap_or(true)
            {
                let opts = crate::datagen::DatagenOptions {
                    data_dir: d.clone(),
                    patients,
                    seed: 42,
                };
                crate::datagen::generate(&opts).await?;
            }
            d
        }
    };
    let key: [u8; 32] = rand::random();
    let engine =
        crate::engine::Engine::open_with_key(&crate::engine::discover_tables(&dir)?, &key).await?;
    let results = crate::query::policy_test::run(&engine, &policy, &tests).await;
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for r in &results {
        match &r.failure {
            None => println!("ok      {} :: {}", r.file, r.name),
            Some(f) => println!(
                "FAILED  {} :: {}\n{}",
                r.file,
                r.name,
                f.lines()
                    .map(|l| format!("        {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    println!(
        "\n{} passed, {} failed (policy version {})",
        results.len() - failed,
        failed,
        policy.version
    );
    if data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if failed == 0 && !results.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) async fn policy_explain(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    role: &str,
    purpose: &str,
    site: Option<String>,
    break_glass: bool,
    sql: &str,
) -> anyhow::Result<ExitCode> {
    use crate::policy::compile::Subject;
    let policy = Arc::new(crate::policy::Policy::load(policy_dir)?);
    let purpose = crate::policy::Purpose::parse(purpose)
        .ok_or_else(|| anyhow::anyhow!("unknown purpose {purpose:?}"))?;
    let engine = crate::engine::Engine::open(&crate::engine::discover_tables(data_dir)?).await?;
    let subject = Subject {
        user: "policy-explain".into(),
        role: role.to_owned(),
        site,
        purpose,
        break_glass: break_glass && policy.role(role).is_some_and(|r| r.break_glass),
    };
    // The access context a session of this subject gets (cached, as the
    // server's), and the server's pipeline for each statement.
    let Some(access) = crate::enforce::access_for(&engine, &policy, Some(&subject)) else {
        println!(
            "-- role {role} may not declare purpose {purpose} (or the role is unknown): every query is refused"
        );
        return Ok(ExitCode::FAILURE);
    };
    let principal = crate::query::Principal::detached(policy.clone(), subject, "policy-explain");
    let stmts =
        crate::rewrite::gate::parse(sql, Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "-- policy version {}, role {role}, purpose {purpose}{}",
        policy.version,
        if break_glass { ", break-glass on" } else { "" }
    );
    let default_schema = principal
        .search_path
        .first()
        .cloned()
        .unwrap_or_else(|| "public".into());
    let mut seen = std::collections::BTreeSet::new();
    for stmt in stmts {
        println!("{stmt};");
        // Through the server's pipeline: refused here means refused there.
        let verdict = match crate::query::classify(stmt.clone()) {
            Ok(crate::rewrite::gate::StatementKind::Query(q))
            | Ok(crate::rewrite::gate::StatementKind::Explain(q)) => {
                crate::query::plan_query(&engine, &principal, q).await.err()
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        match verdict {
            Some(e) => println!("-- refused: {} {}", e.code, e.message),
            None => println!("-- allowed"),
        }
        // Unqualified names resolve through the role's search path, as in a
        // session.
        let mut resolved = stmt;
        let served = engine.column_lists();
        crate::rewrite::search_path::qualify(
            &mut resolved,
            &principal.search_path,
            &|s: &str, t: &str| served.contains_key(&format!("{s}.{t}")),
        );
        for r in crate::rewrite::gate::referenced_tables(&resolved, &default_schema) {
            let Some((s, t)) = r.schema_table else {
                continue;
            };
            let name = format!("{s}.{t}");
            if !seen.insert(name.clone()) {
                continue;
            }
            match access.tables.get(&name) {
                Some(a) => {
                    let text = engine
                        .explain_secured(&name, a, &policy.consent)
                        .await
                        .unwrap_or_default();
                    println!(
                        "\n-- {name} is read as (rules: {}):\n{text};",
                        a.rules.join(", ")
                    );
                }
                None if engine.column_lists().contains_key(&name) => {
                    println!("\n-- {name}: refused (42501)")
                }
                None => println!("\n-- {name}: no such table (42P01)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn column_type(t: &datafusion::arrow::datatypes::DataType) -> crate::policy::compile::ColumnType {
    use crate::policy::compile::ColumnType as C;
    use datafusion::arrow::datatypes::DataType as D;
    match t {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => C::Text,
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            C::Integer
        }
        D::Decimal128(..) | D::Decimal256(..) => C::Decimal,
        D::Float16 | D::Float32 | D::Float64 => C::Float,
        D::Date32 | D::Date64 => C::Date,
        D::Timestamp(..) => C::Timestamp,
        D::Boolean => C::Boolean,
        _ => C::Other,
    }
}

/// `schema.table` → `(column, type)` of every served table.
/// Column names and types of every served table. `audit.access_log` is
/// always served (lakeward creates it), so its schema is known even before
/// the table exists on disk.
pub(super) fn engine_schemas(
    engine: &crate::engine::Engine,
) -> std::collections::BTreeMap<String, Vec<(String, crate::policy::compile::ColumnType)>> {
    let columns = |schema: &datafusion::arrow::datatypes::Schema| {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), column_type(f.data_type())))
            .collect()
    };
    let mut out: std::collections::BTreeMap<_, _> = engine
        .tables()
        .values()
        .map(|t| (t.name.to_string(), columns(&t.schema)))
        .collect();
    out.entry("audit.access_log".to_owned())
        .or_insert_with(|| columns(&crate::audit::record::schema()));
    out
}
