//! `COPY … TO STDOUT`: the same rows, masks and row scope as the query
//! itself, in text, CSV and binary, audited as a COPY with its row count;
//! every other COPY stays refused.

use futures::{StreamExt, TryStreamExt, pin_mut};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;

use crate::audit::{as_user, text_rows};
use crate::support::psql::{PsqlConn, psql};
use crate::support::{
    connect_role, data_dir, raw_context, raw_patients, runtime, server, sqlstate, temp_dir, token,
};

/// Everything a `COPY … TO STDOUT` sent, as text.
async fn copy_text(c: &Client, sql: &str) -> String {
    let stream = c
        .copy_out(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy data");
    String::from_utf8(chunks.concat()).expect("utf-8")
}

const PATIENTS: &str = "SELECT patient_id, mrn, ssn, last_name, birth_date, zip, deceased \
                        FROM clinical.patients ORDER BY patient_id LIMIT 200";

#[tokio::test(flavor = "multi_thread")]
async fn copy_text_and_csv_send_the_rows_the_query_returns() {
    let addr = server().addr;
    for (role, purpose) in [
        ("analyst", "operations"),
        ("clinician", "treatment"),
        ("researcher", "research"),
    ] {
        let c = connect_role(addr, role, purpose).await;
        let rows = text_rows(&c, PATIENTS).await;
        assert!(!rows.is_empty(), "{role} sees patients");

        // Text format: tab-separated, \N for NULL.
        let text = copy_text(&c, &format!("COPY ({PATIENTS}) TO STDOUT")).await;
        let want: String = rows
            .iter()
            .map(|r| {
                let fields: Vec<&str> = r
                    .iter()
                    .map(|v| if v == "NULL" { "\\N" } else { v.as_str() })
                    .collect();
                format!("{}\n", fields.join("\t"))
            })
            .collect();
        assert_eq!(text, want, "{role}: COPY text = the query's rows");

        // CSV with a header: empty unquoted field for NULL.
        let csv = copy_text(
            &c,
            &format!("COPY ({PATIENTS}) TO STDOUT WITH (FORMAT csv, HEADER true)"),
        )
        .await;
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("patient_id,mrn,ssn,last_name,birth_date,zip,deceased")
        );
        let body: Vec<Vec<String>> = lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        let want_csv: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| {
                        if v == "NULL" {
                            String::new()
                        } else {
                            v.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        assert_eq!(body, want_csv, "{role}: COPY csv = the query's rows");

        match role {
            // Masked columns stay masked in COPY.
            "analyst" => assert!(rows.iter().all(|r| r[2] == "NULL" && r[3] == "NULL")),
            "clinician" => assert!(
                rows.iter()
                    .all(|r| r[2] == "NULL" || r[2].starts_with("***-**-"))
                    && rows.iter().any(|r| r[2].starts_with("***-**-"))
            ),
            "researcher" => assert!(rows.iter().all(|r| r[1] == "NULL" && r[2] == "NULL")),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_binary_decodes_to_the_same_values() {
    let c = connect_role(server().addr, "clinician", "treatment").await;
    let sql = "SELECT patient_id, ssn, birth_date, deceased FROM clinical.patients \
               ORDER BY patient_id LIMIT 500";
    let want: Vec<(i64, Option<String>, chrono::NaiveDate, bool)> = c
        .query(sql, &[])
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let stream = c
        .copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
        .await
        .expect("copy binary");
    let rows = BinaryCopyOutStream::new(stream, &[Type::INT8, Type::TEXT, Type::DATE, Type::BOOL]);
    pin_mut!(rows);
    let mut got = Vec::new();
    while let Some(row) = rows.next().await {
        let r = row.expect("binary row");
        got.push((r.get(0), r.get(1), r.get(2), r.get(3)));
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // An empty result is a header and a trailer.
    let stream = c
        .copy_out(
            "COPY (SELECT patient_id FROM clinical.patients WHERE false) TO STDOUT (FORMAT binary)",
        )
        .await
        .expect("empty binary copy");
    let rows = BinaryCopyOutStream::new(stream, &[Type::INT8]);
    pin_mut!(rows);
    assert!(rows.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_of_a_table_keeps_the_row_scope_and_is_audited_as_copy() {
    let addr = server().addr;
    let user = "copy_clin";
    let c = as_user(addr, user, "clinician", Some("S01"), "treatment").await;
    let text = copy_text(&c, "COPY clinical.patients (patient_id, site_id) TO STDOUT").await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| l.ends_with("\tS01")),
        "a clinician's COPY holds site S01 only"
    );
    let count = text_rows(&c, "SELECT count(*) FROM clinical.patients").await[0][0].clone();
    assert_eq!(lines.len().to_string(), count);
    drop(c);

    let auditor = connect_role(addr, "auditor", "operations").await;
    let records = text_rows(
        &auditor,
        &format!(
            "SELECT statement_kind, decision, CAST(rows_returned AS VARCHAR), array_to_string(tables, ',') \
             FROM audit.access_log WHERE \"user\" = '{user}' AND statement_kind = 'COPY' \
             AND event = 'completion'"
        ),
    )
    .await;
    assert_eq!(
        records,
        vec![vec![
            "COPY".to_owned(),
            "allowed".to_owned(),
            count,
            "clinical.patients".to_owned()
        ]]
    );
}

/// The sites a clinician's COPY of `clinical.patients` holds.
async fn copied_sites(c: &Client, stmt: &tokio_postgres::Statement) -> Vec<String> {
    let stream = c.copy_out(stmt).await.expect("copy");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy data");
    let text = String::from_utf8(chunks.concat()).expect("utf-8");
    let mut sites: Vec<String> = text.lines().map(str::to_owned).collect();
    sites.sort();
    sites.dedup();
    sites
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_copy_follows_break_glass_set_local_rollback_and_discard_all() {
    let c = as_user(
        server().addr,
        "copy_bg",
        "clinician",
        Some("S01"),
        "treatment",
    )
    .await;
    let stmt = c
        .prepare("COPY (SELECT DISTINCT site_id FROM clinical.patients) TO STDOUT")
        .await
        .expect("prepare COPY");
    assert_eq!(copied_sites(&c, &stmt).await, vec!["S01"]);

    // SET LOCAL break-glass lifts the site filter for this transaction
    // only: the same prepared COPY is re-planned, then re-planned back.
    c.batch_execute(
        "BEGIN; SET LOCAL lakeward.break_glass = 'unconscious patient brought in by ambulance'",
    )
    .await
    .expect("break-glass");
    assert!(
        copied_sites(&c, &stmt).await.len() > 1,
        "all sites under break-glass"
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(copied_sites(&c, &stmt).await, vec!["S01"]);

    // In a failed transaction COPY is refused like any statement.
    c.batch_execute("BEGIN").await.expect("begin");
    assert!(c.simple_query("SELECT * FROM nope").await.is_err());
    let Err(e) = c.copy_out(&stmt).await else {
        panic!("COPY ran in an aborted transaction");
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"));
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // A session-level break-glass ends with DISCARD ALL.
    c.batch_execute("SET lakeward.break_glass = 'unconscious patient brought in by ambulance'")
        .await
        .expect("break-glass");
    assert!(copied_sites(&c, &stmt).await.len() > 1);
    c.batch_execute("DISCARD ALL").await.expect("discard all");
    // DISCARD ALL also clears the purpose: nothing is read until it is
    // declared again.
    c.batch_execute("SET lakeward.purpose = 'treatment'")
        .await
        .expect("purpose");
    let stmt = c
        .prepare("COPY (SELECT DISTINCT site_id FROM clinical.patients) TO STDOUT")
        .await
        .expect("prepare again after DISCARD ALL");
    assert_eq!(copied_sites(&c, &stmt).await, vec!["S01"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_to_a_file_or_a_program_and_bad_options_are_refused() {
    let c = connect_role(server().addr, "analyst", "operations").await;
    for (sql, code) in [
        ("COPY clinical.patients FROM STDIN", "42501"),
        (
            "COPY clinical.patients TO '/tmp/lakeward-copy-out'",
            "42501",
        ),
        ("COPY (SELECT 1) TO PROGRAM 'cat'", "42501"),
        ("COPY (SELECT 1) TO STDOUT (FORMAT binary, HEADER)", "42601"),
        ("COPY (SELECT 1) TO STDOUT (FORMAT xml)", "22023"),
        ("COPY (SELECT 1) TO STDOUT (QUOTE '''')", "0A000"),
        ("COPY (SELECT 1) TO STDOUT (ENCODING 'LATIN1')", "0A000"),
        ("COPY (SELECT ssn FROM clinical.nope) TO STDOUT", "42P01"),
        ("COPY governance.consents TO STDOUT", "42501"),
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql}: {e}");
    }
    // The connection is usable afterwards.
    assert_eq!(text_rows(&c, "SELECT 1").await, vec![vec!["1".to_owned()]]);
}

#[test]
fn psql_backslash_copy_writes_the_masked_rows_to_a_file() {
    let addr = server().addr;
    let dir = temp_dir("copy-psql");
    let file = dir.join("patients.csv");
    let tok = token("analyst", "analyst", None);
    let conn = PsqlConn {
        port: addr.port(),
        user: "analyst",
        password: &tok,
        sslmode: "require",
        purpose: "operations",
        application_name: None,
    };
    let out = psql(
        &conn,
        &[
            "-c",
            &format!(
                "\\copy (SELECT patient_id, ssn, mrn FROM clinical.patients ORDER BY 1 LIMIT 50) TO '{}' WITH (FORMAT csv, HEADER)",
                file.display()
            ),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "COPY 50");
    let raw: std::collections::HashMap<i64, String> = runtime()
        .block_on(async { raw_patients(&raw_context(data_dir()).await).await })
        .into_iter()
        .map(|p| (p.id, p.mrn))
        .collect();
    let written = std::fs::read_to_string(&file).expect("psql wrote the file");
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("patient_id,ssn,mrn"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 50);
    for r in rows {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f[1], "", "ssn is NULL for the analyst");
        let id: i64 = f[0].parse().expect("patient_id");
        let mrn = raw.get(&id).expect("a real patient");
        assert!(!f[2].is_empty() && f[2] != mrn, "mrn is a pseudonym");
    }
}
