//! PostgreSQL behaviours analysts' tools rely on: result columns named as
//! PostgreSQL names them (duplicates included), SQL `PREPARE` / `EXECUTE`
//! / `DEALLOCATE` under the rules in force at each `EXECUTE`, `EXPLAIN
//! ANALYZE` that stops at the policy barrier, `EXISTS` in a select list,
//! and a clear refusal for the correlated subqueries DataFusion cannot
//! plan.

use std::collections::BTreeSet;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::audit::{as_user, text_rows};
use crate::support::{data_dir, raw_context, raw_patients, server, sqlstate};

/// Column names and rows of a simple query.
async fn named_rows(c: &Client, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                names = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => {}
        }
    }
    (names, rows)
}

async fn refused(c: &Client, sql: &str) -> (String, String) {
    let e = c.simple_query(sql).await.expect_err(sql);
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    (sqlstate(&e).unwrap_or_default(), message)
}

#[tokio::test(flavor = "multi_thread")]
async fn result_columns_are_named_as_postgresql_names_them_duplicates_included() {
    let c = as_user(
        server().addr,
        "names",
        "clinician",
        Some("S01"),
        "treatment",
    )
    .await;
    let raw = raw_patients(&raw_context(data_dir()).await).await;

    // `*` and a column it already holds: both kept, one name twice.
    let sql = "SELECT *, ssn FROM clinical.patients ORDER BY patient_id LIMIT 20";
    let (names, rows) = named_rows(&c, sql).await;
    assert_eq!(names.iter().filter(|n| *n == "ssn").count(), 2, "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("ssn"));
    let first_ssn = names.iter().position(|n| n == "ssn").expect("ssn");
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(row[first_ssn], row[row.len() - 1], "the same masked value");
        let id: i64 = row[0].parse().expect("patient_id");
        let p = raw.iter().find(|p| p.id == id).expect("a raw patient");
        assert_eq!(p.site, "S01", "the clinician's row scope");
        if let Some(ssn) = &p.ssn {
            assert_ne!(&row[first_ssn], ssn, "the SSN stays masked");
            assert!(row[first_ssn].ends_with(&ssn[ssn.len() - 4..]));
        }
    }
    // The extended protocol's Describe says the same.
    let stmt = c.prepare(sql).await.expect("prepare");
    let described: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
    assert_eq!(described, names);

    // Two scalar subqueries, two literals, two equal aliases.
    let (names, rows) = named_rows(
        &c,
        "SELECT (SELECT count(*) FROM clinical.patients), (SELECT count(*) FROM clinical.encounters)",
    )
    .await;
    assert_eq!(names, ["count", "count"]);
    let patients = text_rows(&c, "SELECT count(*) FROM clinical.patients").await;
    let encounters = text_rows(&c, "SELECT count(*) FROM clinical.encounters").await;
    assert_eq!(
        rows,
        vec![vec![patients[0][0].clone(), encounters[0][0].clone()]]
    );
    let (names, rows) = named_rows(&c, "SELECT 1, 2 + 3, 'a' AS x, 'b' AS x").await;
    assert_eq!(names, ["?column?", "?column?", "x", "x"]);
    assert_eq!(rows, vec![vec!["1", "5", "a", "b"]]);
    let (names, _) = named_rows(
        &c,
        "SELECT count(*), max(birth_date), CASE WHEN true THEN 1 END, EXISTS (SELECT 1 FROM clinical.encounters) FROM clinical.patients",
    )
    .await;
    assert_eq!(names, ["count", "max", "case", "exists"]);

    // COPY's CSV header carries the same names.
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(
        c.copy_out("COPY (SELECT patient_id, ssn, ssn FROM clinical.patients LIMIT 1) TO STDOUT (FORMAT csv, HEADER)")
            .await
            .expect("copy"),
    )
    .await
    .expect("copy data");
    let csv = String::from_utf8(chunks.concat()).expect("utf-8");
    assert_eq!(csv.lines().next(), Some("patient_id,ssn,ssn"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_prepare_and_execute_run_under_the_rules_in_force_at_each_execute() {
    let addr = server().addr;
    let user = "sqlprep";
    let c = as_user(addr, user, "clinician", Some("S01"), "treatment").await;
    let raw = raw_patients(&raw_context(data_dir()).await).await;
    let ours = raw
        .iter()
        .find(|p| p.site == "S01")
        .expect("an S01 patient");
    let theirs = raw
        .iter()
        .find(|p| p.site != "S01")
        .expect("another site's patient");

    c.batch_execute(
        "PREPARE sites AS SELECT DISTINCT site_id FROM clinical.patients ORDER BY 1; \
         PREPARE one (bigint) AS SELECT patient_id, ssn FROM clinical.patients WHERE patient_id = $1",
    )
    .await
    .expect("PREPARE");
    let sites = |rows: Vec<Vec<String>>| rows.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    assert_eq!(sites(text_rows(&c, "EXECUTE sites").await), ["S01"]);
    let mine = text_rows(&c, &format!("EXECUTE one({})", ours.id)).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0][0], ours.id.to_string());
    if let Some(ssn) = &ours.ssn {
        assert_ne!(&mine[0][1], ssn, "masked for a clinician");
    }
    assert!(
        text_rows(&c, &format!("EXECUTE one('{}')", theirs.id))
            .await
            .is_empty(),
        "another site's patient is outside the row scope"
    );

    // SET LOCAL break-glass: the same statement sees every site for the
    // transaction, then the site filter again after ROLLBACK.
    c.batch_execute(
        "BEGIN; SET LOCAL lakeward.break_glass = 'unconscious patient brought in by ambulance'",
    )
    .await
    .expect("break-glass");
    assert!(sites(text_rows(&c, "EXECUTE sites").await).len() > 1);
    assert_eq!(
        text_rows(&c, &format!("EXECUTE one({})", theirs.id))
            .await
            .len(),
        1
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(sites(text_rows(&c, "EXECUTE sites").await), ["S01"]);

    // In a failed transaction EXECUTE is refused like any statement.
    c.batch_execute("BEGIN").await.expect("begin");
    assert!(c.simple_query("SELECT * FROM nope").await.is_err());
    assert_eq!(refused(&c, "EXECUTE sites").await.0, "25P02");
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // PostgreSQL's errors for names, counts and values.
    assert_eq!(refused(&c, "PREPARE sites AS SELECT 1").await.0, "42P05");
    assert_eq!(refused(&c, "EXECUTE one(1, 2)").await.0, "42601");
    assert_eq!(refused(&c, "EXECUTE one('not a number')").await.0, "22P02");
    assert_eq!(refused(&c, "EXECUTE one(patient_id)").await.0, "0A000");
    assert_eq!(refused(&c, "EXECUTE nothing").await.0, "26000");
    assert_eq!(
        refused(&c, "PREPARE w AS SELECT * FROM governance.consents")
            .await
            .0,
        "42501",
        "a PREPARE is checked against the grants at once"
    );
    c.batch_execute("DEALLOCATE sites")
        .await
        .expect("DEALLOCATE");
    assert_eq!(refused(&c, "EXECUTE sites").await.0, "26000");

    // No purpose, no reading: checked again at EXECUTE.
    c.batch_execute("RESET lakeward.purpose")
        .await
        .expect("reset");
    assert_eq!(
        refused(&c, &format!("EXECUTE one({})", ours.id)).await.0,
        "42501"
    );
    c.batch_execute("SET lakeward.purpose = 'treatment'")
        .await
        .expect("purpose");
    assert_eq!(
        text_rows(&c, &format!("EXECUTE one({})", ours.id))
            .await
            .len(),
        1
    );

    // DISCARD ALL deallocates them; DEALLOCATE ALL too.
    c.batch_execute("DISCARD ALL; SET lakeward.purpose = 'treatment'")
        .await
        .expect("discard all");
    assert_eq!(
        refused(&c, &format!("EXECUTE one({})", ours.id)).await.0,
        "26000"
    );
    c.batch_execute("PREPARE again AS SELECT 1; DEALLOCATE ALL")
        .await
        .expect("deallocate all");
    assert_eq!(refused(&c, "EXECUTE again").await.0, "26000");
    drop(c);

    // Each EXECUTE is audited as the statement it ran, with its tables;
    // the values passed to EXECUTE never reach the audit log.
    let auditor = as_user(addr, "names_auditor", "auditor", None, "operations").await;
    let records = text_rows(
        &auditor,
        &format!(
            "SELECT statement_kind, query_fingerprint, array_to_string(tables, ',') \
             FROM audit.access_log WHERE \"user\" = '{user}' AND event = 'statement' \
             AND decision = 'allowed' AND statement_kind <> 'PREPARE' \
             AND query_fingerprint LIKE '%patient_id = %'"
        ),
    )
    .await;
    assert!(records.len() >= 4, "{records:?}");
    for r in &records {
        assert_eq!(r[0], "SELECT");
        assert!(r[1].contains("$1"), "{r:?}");
        assert_eq!(r[2], "clinical.patients");
    }
    let all = text_rows(
        &auditor,
        &format!("SELECT query_fingerprint FROM audit.access_log WHERE \"user\" = '{user}'"),
    )
    .await;
    let values = [ours.id.to_string(), theirs.id.to_string()];
    for f in all.iter().map(|r| &r[0]) {
        // Words of the fingerprint (`$1` stays one word).
        let leaked = f
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '$'))
            .any(|w| values.iter().any(|v| v == w));
        assert!(!leaked, "a value passed to EXECUTE reached the audit log: {f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_analyze_shows_the_users_operators_and_nothing_below_the_barrier() {
    let addr = server().addr;
    let user = "explainer";
    let c = as_user(addr, user, "clinician", Some("S01"), "treatment").await;
    let rows = text_rows(
        &c,
        "EXPLAIN ANALYZE SELECT p.zip, count(*) FROM clinical.patients p \
         JOIN clinical.encounters e ON e.patient_id = p.patient_id GROUP BY p.zip",
    )
    .await;
    let text: String = rows
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("metrics=[output_rows="), "{text}");
    assert!(
        text.contains("AggregateExec") && text.contains("HashJoinExec"),
        "{text}"
    );
    assert!(
        text.contains("PolicyBarrier: table=clinical.patients"),
        "{text}"
    );
    assert!(
        text.contains("PolicyBarrier: table=clinical.encounters"),
        "{text}"
    );
    // Nothing of the policy subtree: no scan, no row filter, no mask.
    for hidden in [
        "DataSourceExec",
        "Parquet",
        "DeltaScan",
        "S01",
        "consent",
        "ssn",
        "mask",
    ] {
        assert!(
            !text.contains(hidden),
            "EXPLAIN ANALYZE shows {hidden:?}: {text}"
        );
    }
    drop(c);
    // It ran the query: audited with the tables it read.
    let auditor = as_user(addr, "explain_auditor", "auditor", None, "operations").await;
    let records = text_rows(
        &auditor,
        &format!(
            "SELECT statement_kind, decision, array_to_string(tables, ',') FROM audit.access_log \
             WHERE \"user\" = '{user}' AND event = 'statement'"
        ),
    )
    .await;
    assert_eq!(
        records,
        vec![vec![
            "EXPLAIN".to_owned(),
            "allowed".to_owned(),
            "clinical.encounters,clinical.patients".to_owned()
        ]]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exists_in_a_select_list_and_correlated_lateral_subqueries() {
    let c = as_user(
        server().addr,
        "exists",
        "clinician",
        Some("S01"),
        "treatment",
    )
    .await;
    // Reference: the patients with an inpatient encounter, by a join.
    let with: BTreeSet<String> = text_rows(
        &c,
        "SELECT DISTINCT e.patient_id FROM clinical.encounters e \
         WHERE e.encounter_type = 'inpatient'",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let rows = text_rows(
        &c,
        "SELECT p.patient_id, \
           EXISTS (SELECT 1 FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.encounter_type = 'inpatient'), \
           NOT EXISTS (SELECT e.encounter_id FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.encounter_type = 'inpatient'), \
           CASE WHEN EXISTS (SELECT 1 FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.encounter_type = 'inpatient') THEN 'y' ELSE 'n' END \
         FROM clinical.patients p ORDER BY 1",
    )
    .await;
    assert!(!rows.is_empty());
    let mut seen = (0, 0);
    for r in &rows {
        let has = with.contains(&r[0]);
        if has {
            seen.0 += 1
        } else {
            seen.1 += 1
        }
        let want = if has {
            ["t", "f", "y"]
        } else {
            ["f", "t", "n"]
        };
        assert_eq!(r[1..], want, "patient {}", r[0]);
    }
    assert!(seen.0 > 0 && seen.1 > 0, "both answers occur: {seen:?}");
    // Under OR (not a join any more) and uncorrelated with an aggregate.
    let or = text_rows(
        &c,
        "SELECT count(*) FROM clinical.patients p WHERE p.sex = 'U' OR \
         EXISTS (SELECT 1 FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.encounter_type = 'inpatient')",
    )
    .await;
    let sex_u = text_rows(
        &c,
        "SELECT count(*) FROM clinical.patients p WHERE p.sex = 'U' AND NOT \
         EXISTS (SELECT 1 FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.encounter_type = 'inpatient')",
    )
    .await;
    let visible_with = rows.iter().filter(|r| with.contains(&r[0])).count();
    let extra: usize = sex_u[0][0].parse().expect("count");
    assert_eq!(or[0][0], (visible_with + extra).to_string());
    assert_eq!(
        text_rows(
            &c,
            "SELECT EXISTS (SELECT max(encounter_id) FROM clinical.encounters WHERE false), \
             EXISTS (SELECT 1 FROM clinical.encounters LIMIT 0)"
        )
        .await,
        vec![vec!["t", "f"]]
    );

    // A correlated LATERAL that aggregates is planned; one that does not
    // is refused with a message naming the construct.
    let lateral = text_rows(
        &c,
        "SELECT p.patient_id, l.n FROM clinical.patients p, \
         LATERAL (SELECT count(*) AS n FROM clinical.encounters e WHERE e.patient_id = p.patient_id) l \
         ORDER BY 1",
    )
    .await;
    let counts = text_rows(
        &c,
        "SELECT p.patient_id, count(e.encounter_id) FROM clinical.patients p \
         LEFT JOIN clinical.encounters e ON e.patient_id = p.patient_id GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(lateral, counts);
    let (code, message) = refused(
        &c,
        "SELECT p.patient_id, l.encounter_id FROM clinical.patients p CROSS JOIN LATERAL \
         (SELECT encounter_id FROM clinical.encounters e WHERE e.patient_id = p.patient_id ORDER BY 1 LIMIT 1) l",
    )
    .await;
    assert_eq!(code, "0A000");
    assert!(message.contains("correlated LATERAL"), "{message}");
    let (code, message) = refused(
        &c,
        "SELECT p.patient_id IN (SELECT patient_id FROM clinical.encounters) FROM clinical.patients p",
    )
    .await;
    assert_eq!(code, "0A000");
    assert!(message.starts_with("IN (subquery)"), "{message}");
}
