//! `policy check`, `policy test` and `policy explain`, and the served
//! tables' columns as the policy checker reads them.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::OutputFormat;

pub(super) async fn policy_check(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    format: OutputFormat,
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
    match format {
        OutputFormat::Text => print!("{}", crate::policy::check::render_text(&report)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
