//! The reader conformance suite: Delta tables written the way Spark and
//! Databricks write them (deletion vectors, column mapping, v2 checkpoints,
//! checkpoint-only logs, liquid clustering and row tracking, change data
//! feed, timestampNtz, type widening, partition values of every type,
//! vacuumed files, INT96 beside microsecond timestamps), built by an
//! independent writer (`tests/conformance/make_tables.py`: pyarrow for the
//! Parquet files, Delta logs written after the protocol's specification).
//!
//! The expected rows come from what the generator wrote, never from
//! lakeward. Every table is read over the wire by `lakeward serve`, through
//! both of lakeward's scans (`[data] scan = "auto"` and `"deltalake"`), as
//! a role that sees every column and as one whose `phi.direct` columns are
//! masked to NULL, and every pruning query of a table returns the ids the
//! generator computed. A table whose protocol needs an unknown reader
//! feature is left out by name while the others are served.
//!
//! A second test serves the demo consents rewritten as Spark 3.1 writes
//! them (INT96 timestamps, `9999-12-31` for "never expires") and checks that
//! every opt-in and opt-out consent set is the same as with the consents
//! lakeward wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::support::{
    ServeOpts, Served, connect_role, data_dir, serve_binary_opts, sqlstate, temp_dir, token,
    try_connect_with,
};

#[derive(Debug, Deserialize)]
struct Expected {
    tables: BTreeMap<String, Table>,
    refused: BTreeMap<String, Refused>,
    #[serde(default)]
    not_built: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Table {
    about: String,
    snapshot_scan: bool,
    columns: Vec<Column>,
    rows: Vec<Vec<Option<String>>>,
    queries: Vec<Query>,
    /// Scans that refuse the table by name (scan → words the refusal names).
    #[serde(default)]
    refused: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Column {
    name: String,
    pg_type: String,
    tag: String,
}

#[derive(Debug, Deserialize)]
struct Query {
    #[serde(rename = "where")]
    predicate: String,
    ids: Vec<i64>,
}

#[derive(Debug, Deserialize)]
struct Refused {
    feature: String,
}

/// The generated fixtures (built once per test run) and what they hold.
fn fixtures() -> &'static (PathBuf, Expected) {
    static FIXTURES: OnceLock<(PathBuf, Expected)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let out = temp_dir("lakeward-it-conformance");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/make_tables.py");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("python3 runs (CI installs pyarrow: .ci/run)");
        assert!(
            status.success(),
            "{} failed: is pyarrow installed (python3 -m pip install pyarrow)?",
            script.display()
        );
        let text = std::fs::read_to_string(out.join("expected.json")).expect("expected.json");
        let expected: Expected = serde_json::from_str(&text).expect("expected.json parses");
        (out, expected)
    })
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A policy granting `reader` every column of the conformance tables and
/// `masked` every column but the `phi.direct` ones (NULL).
fn write_policy(expected: &Expected) -> PathBuf {
    let dir = temp_dir("lakeward-it-conformance-policy");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules");
    let mut tables = String::new();
    for (name, t) in &expected.tables {
        tables.push_str(&format!("[tables.\"conformance.{name}\".columns]\n"));
        for c in &t.columns {
            tables.push_str(&format!("{} = [\"{}\"]\n", quote(&c.name), c.tag));
        }
    }
    // The consent table the policy requires (the shared dataset's).
    tables.push_str(
        "[tables.\"governance.consents\"]\npatient_key = \"patient_id\"\n\
         [tables.\"governance.consents\".columns]\npatient_id = [\"patient_key\"]\n\
         purpose = [\"safe\"]\ngranted = [\"safe\"]\nrecorded_at = [\"phi.date\"]\n\
         expires_at = [\"phi.date\"]\n",
    );
    std::fs::write(dir.join("tables.toml"), tables).unwrap();
    std::fs::write(dir.join("masks.toml"), "[masks.null]\nkind = \"null\"\n").unwrap();
    std::fs::write(
        dir.join("roles.toml"),
        r#"[roles.reader]
description = "Reads every column of the conformance tables"
purposes = ["operations"]
tables = ["conformance.*"]
[roles.reader.columns]
"tag:phi.direct" = "visible"

[roles.masked]
description = "Reads the conformance tables with direct identifiers masked"
purposes = ["operations"]
tables = ["conformance.*"]
[roles.masked.columns]
"tag:phi.direct" = "null"
"#,
    )
    .unwrap();
    std::fs::write(dir.join("row_filters.toml"), "").unwrap();
    std::fs::copy(shipped.join("consent.toml"), dir.join("consent.toml")).unwrap();
    dir
}

/// `lakeward serve` over the conformance lake with `scan`.
fn serve(out: &Path, policy: &Path, scan: &str) -> Served {
    let refused: String = fixtures()
        .1
        .refused
        .keys()
        .map(|t| {
            format!(
                "\"conformance.{t}\" = \"{}\"\n",
                out.join("refused/conformance").join(t).display()
            )
        })
        .collect();
    let data_extra = format!(
        "scan = \"{scan}\"\n[data.tables]\n\"governance.consents\" = \"{}\"\n{refused}",
        data_dir().join("governance/consents").display()
    );
    let lake = out.join("lake");
    serve_binary_opts(ServeOpts {
        policy_dir: Some(policy),
        audit_dir: &temp_dir("lakeward-it-conformance-audit"),
        data_root: Some(lake.to_str().unwrap()),
        data_extra: &data_extra,
        audit_table: Some(
            temp_dir("lakeward-it-conformance-audit-table")
                .join("access_log")
                .to_str()
                .unwrap(),
        ),
        ..Default::default()
    })
}

/// The rows of a simple-query result as text (NULL as `None`).
async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).map(str::to_owned))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .collect()
}

/// Reads every conformance table as `role` and compares it with what the
/// generator wrote; returns the mismatches (empty when all agree).
async fn check_tables(served: &Served, scan: &str, role: &str, expected: &Expected) -> Vec<String> {
    let client = try_connect_with(
        served.addr(),
        role,
        &token(role, role, None),
        "require",
        Some("operations"),
    )
    .await
    .expect("connect");
    let mut problems = Vec::new();
    for (name, t) in &expected.tables {
        if let Some(feature) = t.refused.get(scan) {
            // Refused by name, never read wrong.
            match client
                .simple_query(&format!("SELECT * FROM conformance.{name}"))
                .await
            {
                Ok(_) => problems.push(format!("{name}: read, but this scan must refuse it")),
                Err(e) if sqlstate(&e).as_deref() == Some("0A000") => {}
                Err(e) => problems.push(format!("{name}: refused with {e}, expected 0A000")),
            }
            let log = served.log.lock().unwrap().join("\n");
            if !log.contains(&format!("conformance.{name}")) || !log.contains(feature.as_str()) {
                problems.push(format!("{name}: the log does not name {feature}"));
            }
            continue;
        }
        let cols: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM conformance.{name} ORDER BY id",
            cols.join(", ")
        );
        let got = match client.simple_query(&sql).await {
            Ok(_) => text_rows(&client, &sql).await,
            Err(e) => {
                problems.push(format!("{name} ({}): {sql}: {e}", t.about));
                continue;
            }
        };
        let want: Vec<Vec<Option<String>>> = t
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&t.columns)
                    .map(|(v, c)| {
                        if role == "masked" && c.tag == "phi.direct" {
                            None
                        } else {
                            v.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        if got.len() != want.len() {
            problems.push(format!(
                "{name} as {role}: {} rows, expected {}",
                got.len(),
                want.len()
            ));
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            for ((gv, wv), c) in g.iter().zip(w).zip(&t.columns) {
                if !same_text(gv.as_deref(), wv.as_deref(), &c.pg_type) {
                    problems.push(format!(
                        "{name} as {role}, row {i}, column {} ({}): got {gv:?}, expected {wv:?}",
                        c.name, c.pg_type
                    ));
                }
            }
        }
        // A masked column reads as NULL in a WHERE clause too: the
        // pruning queries are checked for the role that sees every column.
        let queries = if role == "reader" {
            &t.queries[..]
        } else {
            &[]
        };
        for q in queries {
            let sql = format!(
                "SELECT id FROM conformance.{name} WHERE {} ORDER BY id",
                q.predicate
            );
            match client.simple_query(&sql).await {
                Ok(_) => {
                    let ids: Vec<i64> = text_rows(&client, &sql)
                        .await
                        .into_iter()
                        .map(|r| r[0].as_deref().unwrap_or("").parse().unwrap_or(i64::MIN))
                        .collect();
                    if ids != q.ids {
                        problems.push(format!(
                            "{name} as {role}: WHERE {}: ids {ids:?}, expected {:?}",
                            q.predicate, q.ids
                        ));
                    }
                }
                Err(e) => problems.push(format!("{name}: WHERE {}: {e}", q.predicate)),
            }
        }
    }
    problems
}

/// Whether two text values are the same PostgreSQL value. Text is compared
/// as is, except that a timestamp's fraction may be printed with trailing
/// zeros (`00:00:00.000000+00` and `00:00:00+00` are the same instant).
fn same_text(got: Option<&str>, want: Option<&str>, pg_type: &str) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) if pg_type.starts_with("timestamp") => {
            canonical_timestamp(g) == canonical_timestamp(w)
        }
        (Some(g), Some(w)) => g == w,
        _ => false,
    }
}

fn canonical_timestamp(t: &str) -> String {
    let (body, zone) = match t.rfind(['+', '-']) {
        Some(i) if i > 10 => (&t[..i], &t[i..]),
        _ => (t, ""),
    };
    let body = match body.split_once('.') {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{fraction}")
            }
        }
        None => body.to_owned(),
    };
    let zone = zone.strip_suffix(":00").unwrap_or(zone);
    format!("{body}{zone}")
}

/// Which scan the server logged for `table` (`snapshot scan` or
/// `deltalake scan`).
fn scan_of(served: &Served, table: &str) -> Option<&'static str> {
    let needle = format!("conformance/{table}");
    let log = served.log.lock().unwrap();
    log.iter().rev().find_map(|l| {
        if !l.contains(&needle) {
            None
        } else if l.contains("snapshot scan") {
            Some("snapshot scan")
        } else if l.contains("deltalake scan") {
            Some("deltalake scan")
        } else {
            None
        }
    })
}

#[tokio::test]
async fn spark_and_databricks_tables_read_exactly_as_written_through_both_scans() {
    let (out, expected) = fixtures();
    assert!(
        expected.tables.len() >= 12,
        "the suite covers every fixture: {:?}",
        expected.tables.keys().collect::<Vec<_>>()
    );
    for nb in &expected.not_built {
        eprintln!("conformance fixture not built here: {nb}");
    }
    let policy = write_policy(expected);
    let mut problems = Vec::new();
    for scan in ["auto", "deltalake"] {
        let mut served = serve(out, &policy, scan);
        for role in ["reader", "masked"] {
            for p in check_tables(&served, scan, role, expected).await {
                problems.push(format!("[scan {scan}] {p}"));
            }
        }
        // Each table went through the scan this run asked for.
        for (name, t) in &expected.tables {
            if t.refused.contains_key(scan) {
                continue;
            }
            let want = if scan == "auto" && t.snapshot_scan {
                "snapshot scan"
            } else {
                "deltalake scan"
            };
            let got = scan_of(&served, name);
            if got != Some(want) {
                problems.push(format!(
                    "[scan {scan}] {name}: read by {got:?}, expected {want}"
                ));
            }
        }
        // A table needing an unknown reader feature is left out by name,
        // the others served; a query naming it is refused.
        let client = connect_role(served.addr(), "reader", "operations").await;
        for (name, r) in &expected.refused {
            let e = client
                .simple_query(&format!("SELECT * FROM conformance.{name}"))
                .await
                .expect_err("an unreadable table is refused");
            assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
            let log = served.log.lock().unwrap().join("\n");
            assert!(
                log.contains(&format!("conformance.{name}")) && log.contains(&r.feature),
                "the log names the table and the feature {}",
                r.feature
            );
        }
        served.stop();
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The patient ids `role` sees in clinical.patients under `purpose`.
async fn visible(served: &Served, role: &str, purpose: &str) -> BTreeSet<String> {
    let client = connect_role(served.addr(), role, purpose).await;
    text_rows(&client, "SELECT patient_id FROM clinical.patients")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn consents_written_by_spark_with_int96_never_expires_sentinels_give_the_same_consent_sets() {
    let spark = temp_dir("lakeward-it-spark-consents").join("consents");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/make_tables.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("spark-consents")
        .arg(data_dir().join("governance/consents"))
        .arg(&spark)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "spark-consents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("sentinel"), "{report}");

    let lakeward_written = serve_binary_opts(ServeOpts {
        audit_dir: &temp_dir("lakeward-it-consents-audit-a"),
        ..Default::default()
    });
    let extra = format!(
        "[data.tables]\n\"governance.consents\" = \"{}\"\n",
        spark.display()
    );
    let spark_written = serve_binary_opts(ServeOpts {
        audit_dir: &temp_dir("lakeward-it-consents-audit-b"),
        data_extra: &extra,
        ..Default::default()
    });
    // Opt-in (research) and opt-out (operations, treatment at one site).
    for (role, purpose) in [
        ("researcher", "research"),
        ("analyst", "operations"),
        ("clinician", "treatment"),
    ] {
        let a = visible(&lakeward_written, role, purpose).await;
        let b = visible(&spark_written, role, purpose).await;
        assert!(!a.is_empty(), "{role}/{purpose} sees patients");
        assert_eq!(
            a.len(),
            b.len(),
            "{role}/{purpose}: {} patients with lakeward-written consents, {} with Spark-written",
            a.len(),
            b.len()
        );
        assert_eq!(a, b, "{role}/{purpose}: the same patients");
    }
    // The copy holds a 9999-12-31 sentinel wherever lakeward's table says
    // "never expires" (NULL), and lakeward's scan reads it as written.
    let never = |dir: PathBuf| async move {
        let ctx = datafusion::prelude::SessionContext::new_with_config(
            lakeward::engine::spark_compatible_reads(datafusion::prelude::SessionConfig::new()),
        );
        let p = lakeward::engine::delta::LatestDeltaProvider::open(dir.to_str().unwrap())
            .await
            .expect("open consents");
        p.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("consents", std::sync::Arc::new(p))
            .unwrap();
        crate::support::raw_rows(
            &ctx,
            "SELECT count(*) FILTER (WHERE expires_at IS NULL), \
                    count(*) FILTER (WHERE CAST(expires_at AS DATE) = DATE '9999-12-31'), \
                    count(*) FILTER (WHERE expires_at < TIMESTAMP '1900-01-01') \
             FROM consents",
        )
        .await
    };
    let original = never(data_dir().join("governance/consents")).await;
    let copy = never(spark.clone()).await;
    let nulls = original[0][0].clone().unwrap();
    assert_ne!(
        nulls, "0",
        "the demo consents have records that never expire"
    );
    assert_eq!(
        copy[0],
        vec![Some("0".to_owned()), Some(nulls), Some("0".to_owned())],
        "every NULL became a 9999-12-31 sentinel, read as 9999 (not wrapped into the 1800s)"
    );
}

#[tokio::test]
async fn dates_outside_year_1_to_9999_are_refused_at_the_wire_never_sent_wrong() {
    let server = crate::support::server();
    let client = connect_role(server.addr, "analyst", "operations").await;
    // 9999-12-31 ("never") and 0001-01-01 ("unknown") are sent as written.
    let rows = text_rows(
        &client,
        "SELECT DATE '9999-12-31', DATE '0001-01-01', CAST(2932896 AS INT)::date",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            Some("9999-12-31".to_owned()),
            Some("0001-01-01".to_owned()),
            Some("9999-12-31".to_owned())
        ]]
    );
    // Past 9999 (chrono would print +248381-…, or NULL further out) and
    // before year 1: 22008, in text and in binary format.
    for sql in [
        "SELECT CAST(90000000 AS INT)::date",
        "SELECT CAST(2000000000 AS INT)::date",
        "SELECT CAST(-900000 AS INT)::date",
    ] {
        let e = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("22008"), "{sql}: {e}");
        let e = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("22008"), "{sql}: {e}");
    }
    // The session is still usable.
    assert_eq!(text_rows(&client, "SELECT 1").await.len(), 1);
}
