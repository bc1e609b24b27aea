//! tokio-postgres against a real server: simple and extended protocol, every
//! SPEC §2 type in text and binary, typed parameters, portals, streaming.

use chrono::{NaiveDate, NaiveDateTime};
use futures::{StreamExt, pin_mut};
use rust_decimal::Decimal;
use tokio_postgres::SimpleQueryMessage;

use crate::support::{connect, server, sqlstate, visible_patients};

fn simple_rows(msgs: Vec<SimpleQueryMessage>) -> Vec<tokio_postgres::SimpleQueryRow> {
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_protocol_group_by_site() {
    let client = connect(server().addr).await;
    let rows = simple_rows(
        client
            .simple_query(
                "SELECT site_id, count(*) AS n FROM clinical.patients GROUP BY 1 ORDER BY 1",
            )
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 12, "12 sites");
    assert_eq!(rows[0].get("site_id"), Some("S01"));
    let total: u64 = rows
        .iter()
        .map(|r| r.get("n").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, visible_patients("operations"));
}

#[tokio::test]
async fn extended_protocol_reports_types_and_decodes_binary() {
    let client = connect(server().addr).await;
    let stmt = client
        .prepare(
            "SELECT p.patient_id, p.ssn, p.birth_date, p.deceased, c.billed_amount, c.service_date \
             FROM clinical.patients p JOIN claims.claims c ON c.patient_id = p.patient_id \
             ORDER BY c.claim_id LIMIT 1",
        )
        .await
        .unwrap();
    let types: Vec<_> = stmt
        .columns()
        .iter()
        .map(|c| c.type_().name().to_owned())
        .collect();
    assert_eq!(types, ["int8", "text", "date", "bool", "numeric", "date"]);
    let row = client.query_one(&stmt, &[]).await.unwrap();
    let id: i64 = row.get(0);
    assert!(id > 0);
    // The analyst's policy hides the SSN: NULL, still typed text.
    let ssn: Option<String> = row.get(1);
    assert_eq!(ssn, None);
    let _: NaiveDate = row.get(2);
    let _: bool = row.get(3);
    let amount: Decimal = row.get(4);
    assert_eq!(amount.scale(), 2);
}

/// Every SPEC §2 type, fetched in binary (extended) and in text (simple), must
/// give the same values.
#[tokio::test]
async fn every_type_round_trips_in_text_and_binary() {
    let client = connect(server().addr).await;
    let sql = "SELECT e.encounter_id, e.encounter_type, e.admit_ts, o.value_num, c.allowed_amount, \
               p.birth_date, p.deceased \
               FROM clinical.encounters e \
               JOIN clinical.observations o ON o.encounter_id = e.encounter_id \
               JOIN clinical.patients p ON p.patient_id = e.patient_id \
               JOIN claims.claims c ON c.patient_id = p.patient_id \
               WHERE c.allowed_amount IS NOT NULL \
               ORDER BY o.observation_id, c.claim_id LIMIT 1";
    let b = client.query_one(sql, &[]).await.unwrap();
    let t = simple_rows(client.simple_query(sql).await.unwrap()).remove(0);

    let id: i64 = b.get(0);
    assert_eq!(t.get(0).unwrap(), id.to_string());
    let kind: String = b.get(1);
    assert_eq!(t.get(1).unwrap(), kind);
    let ts: NaiveDateTime = b.get(2);
    let text_ts = NaiveDateTime::parse_from_str(t.get(2).unwrap(), "%Y-%m-%d %H:%M:%S%.f").unwrap();
    assert_eq!(ts, text_ts);
    let v: f64 = b.get(3);
    assert_eq!(t.get(3).unwrap().parse::<f64>().unwrap(), v);
    let amount: Decimal = b.get(4);
    assert_eq!(t.get(4).unwrap().parse::<Decimal>().unwrap(), amount);
    let d: NaiveDate = b.get(5);
    assert_eq!(t.get(5).unwrap(), d.format("%Y-%m-%d").to_string());
    let dead: bool = b.get(6);
    assert_eq!(t.get(6).unwrap(), if dead { "t" } else { "f" });
}

/// A bound parameter of each type finds the row it came from.
#[tokio::test]
async fn parameters_of_each_type() {
    let client = connect(server().addr).await;
    let row = client
        .query_one(
            "SELECT c.claim_id, c.patient_id, c.payer, c.service_date, c.billed_amount, p.deceased \
             FROM claims.claims c JOIN clinical.patients p ON p.patient_id = c.patient_id \
             ORDER BY c.claim_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (claim_id, patient_id, payer, date, amount, dead): (
        i64,
        i64,
        String,
        NaiveDate,
        Decimal,
        bool,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    let found = client
        .query(
            "SELECT c.claim_id FROM claims.claims c JOIN clinical.patients p ON p.patient_id = c.patient_id \
             WHERE c.patient_id = $1 AND c.payer = $2 AND c.service_date = $3 AND c.billed_amount = $4 \
             AND p.deceased = $5",
            &[&patient_id, &payer, &date, &amount, &dead],
        )
        .await
        .unwrap();
    assert!(found.iter().any(|r| r.get::<_, i64>(0) == claim_id));

    let obs = client
        .query_one("SELECT observation_id, value_num, observed_at FROM clinical.observations ORDER BY observation_id LIMIT 1", &[])
        .await
        .unwrap();
    let (oid, v, at): (i64, f64, NaiveDateTime) = (obs.get(0), obs.get(1), obs.get(2));
    let again = client
        .query_one(
            "SELECT observation_id FROM clinical.observations WHERE value_num = $1 AND observed_at = $2 AND observation_id = $3",
            &[&v, &at, &oid],
        )
        .await
        .unwrap();
    assert_eq!(again.get::<_, i64>(0), oid);
}

#[tokio::test]
async fn portal_is_fetched_in_chunks() {
    let mut client = connect(server().addr).await;
    let tx = client.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT patient_id FROM clinical.patients ORDER BY patient_id")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut chunks = 0;
    loop {
        let rows = tx.query_portal(&portal, 300).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 300);
        chunks += 1;
        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    tx.commit().await.unwrap();
    assert_eq!(seen.len() as u64, visible_patients("operations"));
    assert_eq!(chunks, visible_patients("operations").div_ceil(300));
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "rows come in order, none repeated"
    );
}

#[tokio::test]
async fn a_million_rows_stream_through() {
    let client = connect(server().addr).await;
    // observations × 25 patients: more than a million rows, never held whole.
    let sql = "SELECT o.observation_id, o.value_num, x.patient_id FROM clinical.observations o \
               CROSS JOIN (SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 25) x \
               LIMIT 1000000";
    let stream = client
        .query_raw(sql, std::iter::empty::<i64>())
        .await
        .unwrap();
    pin_mut!(stream);
    let mut n = 0u64;
    while let Some(row) = stream.next().await {
        row.unwrap();
        n += 1;
    }
    assert_eq!(n, 1_000_000);
}

#[tokio::test]
async fn session_functions_and_settings() {
    let client = connect(server().addr).await;
    let row = client
        .query_one("SELECT version(), current_user, current_database()", &[])
        .await
        .unwrap();
    let v: String = row.get(0);
    assert!(v.starts_with("PostgreSQL 15"), "{v}");
    assert_eq!(row.get::<_, String>(1), "analyst");
    assert_eq!(row.get::<_, String>(2), "lakeward");

    client
        .batch_execute("SET application_name = 'wire-test'; SET extra_float_digits = 3")
        .await
        .unwrap();
    let rows = simple_rows(client.simple_query("SHOW application_name").await.unwrap());
    assert_eq!(rows[0].get(0), Some("wire-test"));
    client
        .batch_execute("BEGIN; SELECT 1; COMMIT; ROLLBACK")
        .await
        .unwrap();

    client
        .batch_execute("SET search_path = clinical")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM patients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as u64, visible_patients("operations"));
}

#[tokio::test]
async fn read_only_and_engine_settings_are_refused() {
    let client = connect(server().addr).await;
    for sql in [
        "INSERT INTO clinical.patients (patient_id) VALUES (1)",
        "DELETE FROM clinical.patients",
        "CREATE TABLE x (a int)",
        "DROP TABLE clinical.patients",
        "COPY clinical.patients TO '/tmp/out.csv'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let e = client.simple_query(sql).await.expect_err(sql);
        let code = sqlstate(&e).unwrap_or_default();
        // CREATE EXTERNAL TABLE is not even PostgreSQL syntax: 42601 is a refusal too.
        assert!(
            ["42501", "0A000", "42601"].contains(&code.as_str()),
            "{sql}: {code} {e}"
        );
    }
    // The session is still usable.
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn errors_have_sqlstates_and_no_data() {
    let client = connect(server().addr).await;
    let cases = [
        ("SELECT * FROM clinical.nope", "42P01"),
        ("SELECT nope FROM clinical.patients", "42703"),
        ("SELEC 1", "42601"),
        ("SELECT 1/0", "22012"),
    ];
    for (sql, code) in cases {
        let e = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql}: {e}");
    }
    // A failing cast over stored data never echoes the value.
    let e = client
        .simple_query("SELECT CAST(payer AS BIGINT) FROM claims.claims")
        .await
        .expect_err("cast");
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22P02");
    let names = simple_rows(
        client
            .simple_query("SELECT DISTINCT payer FROM claims.claims")
            .await
            .unwrap(),
    );
    for r in names {
        let name = r.get(0).unwrap();
        assert!(!db.message().contains(name), "error message leaked a value");
    }
}

/// EXPLAIN shows the barrier, never the policy's filters or consent logic.
#[tokio::test]
async fn explain_does_not_reveal_policy() {
    let client = crate::support::connect_role(server().addr, "clinician", "treatment").await;
    let rows = simple_rows(
        client
            .simple_query(
                "EXPLAIN SELECT p.patient_id FROM clinical.patients p WHERE p.zip LIKE '0%'",
            )
            .await
            .unwrap(),
    );
    let text: String = rows
        .iter()
        .map(|r| format!("{} {}\n", r.get(0).unwrap_or(""), r.get(1).unwrap_or("")))
        .collect();
    assert!(text.contains("PolicyBarrier"), "{text}");
    for secret in ["S01", "consent", "granted", "lakeward_rank", "site_id"] {
        assert!(!text.contains(secret), "EXPLAIN leaked {secret}: {text}");
    }
}

/// A cursor pages through its rows with FETCH, and ends when the session's
/// access rules change (here the purpose of use): rows authorised for one
/// purpose are not handed out under another.
#[test]
fn cursors_page_and_end_when_access_rules_change() {
    crate::support::runtime().block_on(async {
        let c = connect(server().addr).await;
        c.batch_execute(
            "BEGIN; DECLARE c CURSOR FOR SELECT patient_id FROM patients ORDER BY patient_id",
        )
        .await
        .expect("declare");
        let rows = |msgs: Vec<SimpleQueryMessage>| {
            msgs.into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let first = rows(c.simple_query("FETCH 2 FROM c").await.expect("fetch"));
        let next = rows(
            c.simple_query("FETCH FORWARD 3 FROM c")
                .await
                .expect("fetch"),
        );
        assert_eq!(first.len(), 2);
        assert_eq!(next.len(), 3);
        assert!(first[1] < next[0], "{first:?} then {next:?}");
        c.batch_execute("SET lakeward.purpose = 'payment'")
            .await
            .expect("set purpose");
        let e = c.simple_query("FETCH 1 FROM c").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
        c.batch_execute("ROLLBACK").await.expect("rollback");
        let e = c.simple_query("FETCH 1 FROM c").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("34000"));
    });
}
