//! The access audit: every connection attempt and statement is a record,
//! durable before the first row, queried by auditors with SQL, chained and
//! signed so that `lakeward audit verify` names the first tampered record,
//! and free of PHI and secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, pin_mut};
use lakeward::audit::record::{AuditRecord, RecordBody};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::process::{lakeward, text};
use crate::support::{self, connect_role, server, sqlstate, start, temp_dir, token};

pub async fn as_user(
    addr: std::net::SocketAddr,
    user: &str,
    role: &str,
    site: Option<&str>,
    purpose: &str,
) -> Client {
    support::try_connect_with(
        addr,
        user,
        &token(user, role, site),
        "require",
        Some(purpose),
    )
    .await
    .expect("connect")
}

/// Rows of a simple query as text (NULL as "NULL").
pub async fn text_rows(c: &Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_statement_is_recorded_and_auditors_read_it_with_sql() {
    let addr = server().addr;
    let user = "audit_clin_a";
    let c = as_user(addr, user, "clinician", Some("S01"), "treatment").await;
    let rows = text_rows(
        &c,
        "SELECT patient_id, last_name FROM clinical.patients WHERE last_name = 'Zz-Sentinel-Lit' OR patient_id < 40 ORDER BY 1",
    )
    .await;
    assert!(
        !rows.is_empty(),
        "the clinician sees some of patients 1..39"
    );
    let e = c
        .simple_query("SELECT count(*) FROM audit.access_log")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42601"));
    drop(c);

    let auditor = connect_role(addr, "auditor", "operations").await;
    let records = text_rows(
        &auditor,
        &format!(
            "SELECT event, decision, coalesce(statement_kind, ''), coalesce(query_fingerprint, ''), \
             array_to_string(tables, ','), coalesce(sqlstate, ''), coalesce(CAST(rows_returned AS VARCHAR), ''), \
             coalesce(purpose, ''), array_to_string(roles, ',') \
             FROM audit.access_log WHERE \"user\" = '{user}' ORDER BY seq"
        ),
    )
    .await;
    let find = |pred: &dyn Fn(&Vec<String>) -> bool| records.iter().find(|r| pred(r)).cloned();
    assert!(
        find(&|r| r[0] == "connect" && r[1] == "allowed" && r[8] == "clinician").is_some(),
        "{records:?}"
    );
    let stmt =
        find(&|r| r[0] == "statement" && r[4] == "clinical.patients").expect("statement record");
    assert_eq!(stmt[1], "allowed");
    assert_eq!(stmt[2], "SELECT");
    assert_eq!(stmt[7], "treatment");
    assert!(
        stmt[3].contains("last_name = ?") && stmt[3].contains("patient_id < ?"),
        "{}",
        stmt[3]
    );
    assert!(
        !stmt[3].contains("Sentinel") && !stmt[3].contains("40"),
        "{}",
        stmt[3]
    );
    let done =
        find(&|r| r[0] == "completion" && r[4] == "clinical.patients").expect("completion record");
    assert_eq!(done[6], rows.len().to_string(), "rows_returned");
    let denied = find(&|r| r[1] == "denied").expect("denied record");
    assert_eq!(
        (denied[2].as_str(), denied[5].as_str()),
        ("SELECT", "42501")
    );
    let syntax = find(&|r| r[5] == "42601").expect("syntax error record");
    assert_eq!(
        (syntax[1].as_str(), syntax[2].as_str(), syntax[3].as_str()),
        ("error", "UNKNOWN", "")
    );

    // The views answer the usual questions.
    let denied = text_rows(
        &auditor,
        &format!("SELECT count(*) FROM audit.denied_attempts WHERE \"user\" = '{user}'"),
    )
    .await;
    assert_eq!(denied[0][0], "1");
    let joined = text_rows(
        &auditor,
        &format!(
            "SELECT CAST(rows_returned AS VARCHAR), decision FROM audit.statements \
             WHERE \"user\" = '{user}' AND array_to_string(tables, ',') = 'clinical.patients'"
        ),
    )
    .await;
    assert_eq!(
        joined,
        vec![vec![rows.len().to_string(), "allowed".to_owned()]]
    );
    for view in ["break_glass_access", "access_by_purpose", "daily_activity"] {
        text_rows(&auditor, &format!("SELECT * FROM audit.{view} LIMIT 5")).await;
    }

    // The auditor's own queries are audited, and visible to the next one.
    let own = text_rows(
        &auditor,
        "SELECT count(*) FROM audit.access_log WHERE \"user\" = 'auditor' AND event = 'statement' \
         AND query_fingerprint LIKE '%FROM audit.denied_attempts%'",
    )
    .await;
    assert_ne!(own[0][0], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_auditor_reads_the_audit_log() {
    let addr = server().addr;
    for (role, purpose) in [
        ("clinician", "treatment"),
        ("analyst", "operations"),
        ("researcher", "research"),
    ] {
        let c = connect_role(addr, role, purpose).await;
        for sql in [
            "SELECT count(*) FROM audit.access_log",
            "SELECT * FROM datafusion.audit.access_log",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM \"audit\".\"access_log\")",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{role}: {sql}");
        }
        // The views do not exist for them at all.
        let e = c
            .simple_query("SELECT * FROM audit.break_glass_access")
            .await
            .unwrap_err();
        assert!(sqlstate(&e).is_some(), "{role}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_is_audited_with_its_justification() {
    let addr = server().addr;
    let user = "audit_clin_bg";
    let c = as_user(addr, user, "clinician", Some("S01"), "treatment").await;
    c.batch_execute("SET lakeward.break_glass = 'ED trauma bay 3, unconscious transfer'")
        .await
        .unwrap();
    text_rows(&c, "SELECT count(*) FROM clinical.patients").await;
    c.batch_execute("RESET lakeward.break_glass").await.unwrap();
    text_rows(&c, "SELECT count(*) FROM clinical.encounters").await;
    let auditor = connect_role(addr, "auditor", "operations").await;
    let rows = text_rows(
        &auditor,
        &format!(
            "SELECT justification, array_to_string(tables, ',') FROM audit.break_glass_access \
             WHERE \"user\" = '{user}' AND statement_kind = 'SELECT'"
        ),
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            "ED trauma bay 3, unconscious transfer".to_owned(),
            "clinical.patients".to_owned()
        ]],
        "only the statement run under break-glass is listed"
    );
    // The question as an auditor asks it.
    let who = text_rows(
        &auditor,
        "SELECT DISTINCT \"user\", justification FROM audit.break_glass_access \
         WHERE array_has(tables, 'clinical.patients') AND ts > now() - INTERVAL '1 day'",
    )
    .await;
    assert!(
        who.contains(&vec![
            user.to_owned(),
            "ED trauma bay 3, unconscious transfer".to_owned()
        ]),
        "{who:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_statement_record_is_on_disk_before_the_first_row() {
    let mut dir = None;
    let s = start(|c| dir = c.audit.dir.clone());
    let dir = dir.expect("audit dir");
    let c = as_user(s.addr, "audit_stream", "analyst", None, "operations").await;
    let sql = "SELECT encounter_id, primary_dx FROM clinical.encounters";
    let stream = c.query_raw(sql, Vec::<String>::new()).await.unwrap();
    pin_mut!(stream);
    let first = stream.next().await.expect("a row");
    assert!(first.is_ok());
    // The first row is here: the statement record must already be durable;
    // the statement has not completed.
    let on_disk = lakeward::audit::wal::read_after(&dir, 0).unwrap();
    let stmt = on_disk
        .iter()
        .find(|r| r.body.event == "statement" && r.body.query_fingerprint.as_deref() == Some(sql))
        .expect("statement record in the segment log before the first row");
    assert!(
        !on_disk
            .iter()
            .any(|r| r.body.parent_event_id.as_deref() == Some(&stmt.body.event_id)),
        "no completion while rows are still streaming"
    );
    let mut n = 1;
    while let Some(r) = stream.next().await {
        r.unwrap();
        n += 1;
    }
    // The completion follows with the row count.
    let mut completion = None;
    for _ in 0..100 {
        completion = lakeward::audit::wal::read_after(&dir, 0)
            .unwrap()
            .into_iter()
            .find(|r| r.body.parent_event_id.as_deref() == Some(&stmt.body.event_id));
        if completion.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(completion.expect("completion").body.rows_returned, Some(n));
    drop(c);
    s.shutdown();
}

// ---------------------------------------------------------------------------
// Tamper evidence
// ---------------------------------------------------------------------------

/// A demo-layout folder (keys/, audit-wal/, audit/access_log) whose audit
/// log holds `n` records written by a real audit store.
async fn written_log(n: usize) -> (PathBuf, Vec<AuditRecord>) {
    let root = temp_dir("lakeward-it-audit-tamper");
    let config = lakeward::config::Config::demo(&root, "127.0.0.1:0".parse().unwrap());
    lakeward::audit::chain::SigningKey::generate_to_file(&lakeward::config::demo_audit_key_path(
        &root,
    ))
    .unwrap();
    let mut settings = lakeward::cli::audit_settings(&config).unwrap();
    settings.checkpoint_every_records = 5;
    let auditor = lakeward::audit::Auditor::open(settings).await.unwrap();
    for i in 0..n {
        // Every record is the completion of a statement that returned
        // patient 1000 + i.
        let patients: roaring::RoaringTreemap = [1000 + i as u64].into_iter().collect();
        auditor
            .record(RecordBody {
                event_id: format!("ev-{i}"),
                ts: 1_800_000_000_000_000 + i as i64,
                event: "completion".into(),
                user: "u".into(),
                decision: "allowed".into(),
                rows_returned: Some(i as i64),
                patients_returned: lakeward::audit::patients::encode(&patients),
                patient_id_min: Some(1000 + i as i64),
                patient_id_max: Some(1000 + i as i64),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    auditor.close().await;
    let records = lakeward::audit::wal::read_after(&root.join("audit-wal"), 0).unwrap();
    assert_eq!(records.len(), n);
    (root, records)
}

/// Copy of `root`'s layout whose table holds `records` (and no segments).
async fn tampered_copy(root: &Path, records: &[AuditRecord]) -> PathBuf {
    let copy = temp_dir("lakeward-it-audit-tampered");
    std::fs::create_dir_all(copy.join("keys")).unwrap();
    std::fs::create_dir_all(copy.join("audit-wal")).unwrap();
    for f in ["audit-signing.pem", "audit-signing.pem.pub"] {
        std::fs::copy(root.join("keys").join(f), copy.join("keys").join(f)).unwrap();
    }
    std::fs::copy(
        root.join("audit-wal/checkpoints.jsonl"),
        copy.join("audit-wal/checkpoints.jsonl"),
    )
    .unwrap();
    let table = lakeward::audit::delta::AuditTable::open_or_create(
        &copy.join("audit/access_log").display().to_string(),
        lakeward::audit::record::schema(),
    )
    .await
    .unwrap();
    if !records.is_empty() {
        let batch = lakeward::audit::record::to_batch(records).unwrap();
        table.append(vec![batch], "tamper", 1).await.unwrap();
    }
    copy
}

fn verify_cli(dir: &Path) -> (bool, String) {
    verify_cli_args(&["--data-dir", dir.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_the_first_tampered_record() {
    let (root, records) = written_log(20).await;
    let (ok, text) = verify_cli(&root);
    assert!(ok, "{text}");
    assert!(text.contains("audit log whole: 20 records"), "{text}");
    let untouched = tampered_copy(&root, &records).await;
    let (ok, text) = verify_cli(&untouched);
    assert!(ok, "an exact copy verifies: {text}");

    let edit = |f: &dyn Fn(&mut Vec<AuditRecord>)| {
        let mut v = records.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<AuditRecord>, &str)> = vec![
        (
            "modified",
            edit(&|v| v[6].body.rows_returned = Some(999)),
            "record 7 (event_id ev-6): content does not match",
        ),
        (
            "patient id",
            edit(&|v| {
                let other: roaring::RoaringTreemap = [4242u64].into_iter().collect();
                v[6].body.patients_returned = lakeward::audit::patients::encode(&other);
            }),
            "record 7 (event_id ev-6): content does not match",
        ),
        (
            "patient bounds",
            edit(&|v| v[6].body.patient_id_max = Some(4242)),
            "record 7 (event_id ev-6): content does not match",
        ),
        (
            "deleted",
            edit(&|v| {
                v.remove(6);
            }),
            "record 7: missing",
        ),
        (
            "inserted",
            edit(&|v| {
                let mut forged = v[6].clone();
                forged.body.event_id = "forged".into();
                v.push(forged);
            }),
            "record 7",
        ),
        (
            "reordered",
            edit(&|v| {
                let (a, b) = (v[6].body.seq, v[7].body.seq);
                v[6].body.seq = b;
                v[7].body.seq = a;
            }),
            "record 7",
        ),
        (
            "truncated",
            edit(&|v| v.truncate(17)),
            "record 20: missing, but a signed checkpoint",
        ),
    ];
    for (name, tampered, expected) in cases {
        let dir = tampered_copy(&root, &tampered).await;
        let (ok, text) = verify_cli(&dir);
        assert!(!ok, "{name}: verify must fail: {text}");
        assert!(text.contains("audit log NOT whole"), "{name}: {text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in {text}"
        );
    }

    // The same edits in the segment log (records not yet in the table).
    let dir = tampered_copy(&root, &[]).await;
    let segments = dir.join("audit-wal/segments");
    std::fs::create_dir_all(&segments).unwrap();
    let mut lines: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    lines[6] = lines[6].replace("\"rows_returned\":6", "\"rows_returned\":7");
    std::fs::write(
        segments.join(format!("{:020}.log", 1)),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let (ok, text) = verify_cli(&dir);
    assert!(
        !ok && text.contains("record 7 (event_id ev-6): content does not match"),
        "{text}"
    );

    // The patient index: an exact one verifies; a row removed, a row
    // altered (another patient) or a row added is caught.
    let indexed_copy = |rows: Option<datafusion::arrow::array::RecordBatch>| {
        let root = root.clone();
        let records = records.clone();
        async move {
            let dir = tampered_copy(&root, &records).await;
            let index =
                lakeward::audit::index::open(&dir.join("audit/access_log").display().to_string())
                    .await
                    .unwrap();
            let app = lakeward::audit::app_id(&records[0].body.instance);
            index
                .append(rows.into_iter().collect(), &app, 20)
                .await
                .unwrap();
            dir
        }
    };
    let exact = lakeward::audit::index::to_batch(&records).unwrap().unwrap();
    assert_eq!(exact.num_rows(), 20, "one index row per returned patient");
    let (ok, text) = verify_cli(&indexed_copy(Some(exact.clone())).await);
    assert!(ok, "an exact index verifies: {text}");
    let seq_of = |b: &datafusion::arrow::array::RecordBatch, row: usize| {
        b.column_by_name("seq")
            .unwrap()
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(row)
    };
    let row7 = (0..exact.num_rows())
        .find(|r| seq_of(&exact, *r) == 7)
        .unwrap();
    let without = |b: &datafusion::arrow::array::RecordBatch, row: usize| {
        let keep: datafusion::arrow::array::BooleanArray =
            (0..b.num_rows()).map(|r| Some(r != row)).collect();
        datafusion::arrow::compute::filter_record_batch(b, &keep).unwrap()
    };
    let altered = {
        let mut v = records.clone();
        let other: roaring::RoaringTreemap = [1000u64 + 6 + 4096].into_iter().collect();
        v[6].body.patients_returned = lakeward::audit::patients::encode(&other);
        lakeward::audit::index::to_batch(&v[6..7]).unwrap().unwrap()
    };
    let with_altered = datafusion::arrow::compute::concat_batches(
        &exact.schema(),
        &[without(&exact, row7), altered.clone()],
    )
    .unwrap();
    let added =
        datafusion::arrow::compute::concat_batches(&exact.schema(), &[exact.clone(), altered])
            .unwrap();
    for (name, rows) in [
        ("index row removed", without(&exact, row7)),
        ("index row altered", with_altered),
        ("index row added", added),
    ] {
        let (ok, text) = verify_cli(&indexed_copy(Some(rows)).await);
        assert!(
            !ok && text.contains("record 7") && text.contains("patient index"),
            "{name}: {text}"
        );
    }

    // A forged checkpoint (signature edited) is caught too.
    let dir = tampered_copy(&root, &records).await;
    let cp = dir.join("audit-wal/checkpoints.jsonl");
    let text = std::fs::read_to_string(&cp).unwrap();
    let forged = text.replacen("\"signature\":\"", "\"signature\":\"AAAA", 1);
    std::fs::write(&cp, forged).unwrap();
    let (ok, text) = verify_cli(&dir);
    assert!(!ok && text.contains("forged checkpoint"), "{text}");
}

// ---------------------------------------------------------------------------
// No PHI, no secrets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn no_data_value_token_or_literal_reaches_logs_or_the_audit_log() {
    let ctx = support::raw_context(support::data_dir()).await;
    let patients = support::raw_patients(&ctx).await;
    let seen = patients
        .iter()
        .find(|p| p.site == "S01" && p.ssn.is_some() && p.phone.is_some() && p.email.is_some())
        .expect("an S01 patient");
    let other = patients
        .iter()
        .find(|p| p.site == "S02" && p.ssn.is_some())
        .expect("an S02 patient");
    let audit_dir = temp_dir("lakeward-it-sentinel-audit");
    let mut served = support::serve_binary(None, &audit_dir);
    let user = "sentinel_clin";
    let tok = token(user, "clinician", Some("S01"));
    let c = support::try_connect_with(served.addr(), user, &tok, "require", Some("treatment"))
        .await
        .unwrap();
    let literal = "Qx-Sentinel-7731";
    // PHI comes back to the client (it is this clinician's patient)...
    let row = c
        .query_one(
            &format!(
                "SELECT first_name, last_name, ssn, phone, email FROM clinical.patients WHERE patient_id = {}",
                seen.id
            ),
            &[],
        )
        .await
        .unwrap();
    let full_ssn = seen.ssn.as_ref().unwrap();
    assert_eq!(
        row.get::<_, String>(2),
        format!("***-**-{}", &full_ssn[full_ssn.len() - 4..])
    );
    // ...and literals, parameters and failing casts carry other values.
    text_rows(
        &c,
        &format!(
            "SELECT count(*) FROM clinical.patients WHERE ssn = '{}' OR last_name = '{literal}'",
            other.ssn.as_ref().unwrap()
        ),
    )
    .await;
    c.query(
        "SELECT patient_id FROM clinical.patients WHERE email = $1",
        &[&seen.email.as_ref().unwrap().as_str()],
    )
    .await
    .unwrap();
    let e = c
        .simple_query(&format!(
            "SELECT CAST(ssn AS INT) FROM clinical.patients WHERE patient_id = {}",
            seen.id
        ))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains(seen.ssn.as_ref().unwrap()));
    drop(c);
    // A refused login with a token-shaped password.
    let bad = format!("{tok}x");
    assert!(
        support::try_connect_with(served.addr(), user, &bad, "require", Some("treatment"))
            .await
            .is_err()
    );
    served.stop();

    // Everything lakeward wrote: its log, its segment log and checkpoints,
    // and its rows of the audit table.
    let mut outputs = served.log.lock().unwrap().join("\n");
    for entry in walk(&audit_dir) {
        outputs.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
    }
    let mine = shared_table_records(|r| r.body.user == user).await;
    for r in &mine {
        outputs.push_str(&serde_json::to_string(r).unwrap());
    }
    let mine = mine.len();
    assert!(
        mine >= 5,
        "the sentinel session was audited ({mine} records)"
    );
    assert!(
        outputs.contains("SELECT count(*) FROM clinical.patients WHERE ssn = ? OR last_name = ?")
    );
    let mut forbidden: Vec<String> = vec![
        literal.to_owned(),
        tok.clone(),
        seen.ssn.clone().unwrap(),
        seen.phone.clone().unwrap(),
        seen.email.clone().unwrap(),
        seen.mrn.clone(),
        other.ssn.clone().unwrap(),
    ];
    forbidden.extend(
        [&seen.last, &seen.first]
            .into_iter()
            .filter(|n| n.len() >= 7)
            .cloned(),
    );
    for value in forbidden {
        assert!(
            !outputs.contains(&value),
            "a data value, literal or token leaked into lakeward's output"
        );
    }
}

/// Every file below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_failed_logins_and_cancels_are_recorded_too() {
    let addr = server().addr;
    // A failed login.
    let bad = format!("{}x", token("audit_badlogin", "analyst", None));
    assert!(
        support::try_connect_with(addr, "audit_badlogin", &bad, "require", Some("operations"))
            .await
            .is_err()
    );
    // An analyst trying the audit log: refused, and the refusal recorded.
    let analyst = as_user(addr, "audit_nosy", "analyst", None, "operations").await;
    let e = analyst
        .simple_query("SELECT \"user\" FROM audit.access_log")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    // A cancelled statement.
    let token_ = analyst.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(support::tls_client_config());
        token_.cancel_query(tls).await.unwrap();
    });
    let e = analyst
        .simple_query(
            "SELECT count(*) AS long_one FROM clinical.observations a CROSS JOIN clinical.observations b \
             WHERE a.value_num + b.value_num > 1e12",
        )
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));

    let auditor = connect_role(addr, "auditor", "operations").await;
    let login = text_rows(
        &auditor,
        "SELECT decision, coalesce(reason, ''), coalesce(sqlstate, '') FROM audit.access_log \
         WHERE \"user\" = 'audit_badlogin' AND event = 'connect'",
    )
    .await;
    assert_eq!(login.len(), 1, "{login:?}");
    assert_eq!(login[0][0], "denied");
    assert!(
        !login[0][1].is_empty() && login[0][2].starts_with("28"),
        "{login:?}"
    );
    let nosy = text_rows(
        &auditor,
        "SELECT event, decision, sqlstate, statement_kind FROM audit.access_log \
         WHERE \"user\" = 'audit_nosy' AND event <> 'connect' ORDER BY seq",
    )
    .await;
    assert_eq!(
        nosy[0],
        vec!["statement", "denied", "42501", "SELECT"],
        "the analyst's refusal is itself recorded: {nosy:?}"
    );
    // The cancelled statement: a statement record, then an error completion.
    let cancelled: Vec<_> = nosy.iter().filter(|r| r[2] == "57014").collect();
    assert_eq!(cancelled.len(), 1, "{nosy:?}");
    assert_eq!(cancelled[0][..2], ["completion", "error"]);
    assert!(nosy.iter().any(|r| r[..2] == ["statement", "allowed"]));
}

/// A refused login records the startup user name as the client sent it.
/// The auditor must see that no token vouched for that name, and must
/// still see a refusal after verification as the token's subject.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_login_shows_the_user_name_as_claimed_not_verified() {
    let addr = server().addr;
    // Someone presents their own valid token under another person's name.
    let impostor = token("audit_impostor", "analyst", None);
    assert!(
        support::try_connect_with(
            addr,
            "audit_claimed_victim",
            &impostor,
            "require",
            Some("operations")
        )
        .await
        .is_err()
    );
    // A valid token whose only role the policy does not know: refused after
    // the token was verified, so the name is the token's subject.
    let janitor = token("audit_verified_janitor", "janitor", None);
    assert!(
        support::try_connect_with(
            addr,
            "audit_verified_janitor",
            &janitor,
            "require",
            Some("operations")
        )
        .await
        .is_err()
    );

    let auditor = connect_role(addr, "auditor", "operations").await;
    let seen = text_rows(
        &auditor,
        "SELECT \"user\", CAST(user_verified AS VARCHAR), coalesce(reason, ''), sqlstate \
         FROM audit.denied_attempts WHERE event = 'connect' \
         AND \"user\" IN ('audit_claimed_victim', 'audit_verified_janitor') ORDER BY \"user\"",
    )
    .await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0][0], "audit_claimed_victim");
    assert_eq!(
        seen[0][1], "false",
        "a claimed name shown as verified: {seen:?}"
    );
    assert!(seen[0][2].contains("unverified"), "{seen:?}");
    assert_eq!(seen[0][3], "28P01");
    assert_eq!(seen[1][0], "audit_verified_janitor");
    assert_eq!(seen[1][1], "true", "{seen:?}");
    assert!(!seen[1][2].contains("unverified"), "{seen:?}");
    // The raw log says it too, in the refused record's reason.
    let raw = text_rows(
        &auditor,
        "SELECT coalesce(reason, ''), coalesce(session_id, 'NULL') FROM audit.access_log \
         WHERE event = 'connect' AND \"user\" = 'audit_claimed_victim'",
    )
    .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(raw[0][0].starts_with("user_mismatch"), "{raw:?}");
    assert!(raw[0][0].contains("unverified"), "{raw:?}");
    // Nothing was recorded under the impostor's own (verified) name.
    let own = text_rows(
        &auditor,
        "SELECT count(*) FROM audit.access_log WHERE \"user\" = 'audit_impostor'",
    )
    .await;
    assert_eq!(own[0][0], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_row_is_sent_while_the_audit_writer_is_held() {
    // Every fsync is held for 1.5 s (fault injection in the writer).
    let audit_dir = temp_dir("lakeward-it-held-audit");
    let served = support::serve_binary_with(
        None,
        &audit_dir,
        None,
        &[("LAKEWARD_AUDIT_TEST_FSYNC_DELAY_MS", "1500")],
    );
    let c = as_user(served.addr(), "audit_held", "analyst", None, "operations").await;
    let sql = "SELECT patient_id AS held FROM clinical.patients";
    let sent = std::time::Instant::now();
    let stream = c.query_raw(sql, Vec::<String>::new()).await.unwrap();
    pin_mut!(stream);
    stream.next().await.expect("a row").unwrap();
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "the first row came {waited:?} after the query: before its record was durable"
    );
    assert!(
        lakeward::audit::wal::read_after(&audit_dir, 0)
            .unwrap()
            .iter()
            .any(|r| r.body.query_fingerprint.as_deref() == Some(sql)),
        "the record is on disk when the row arrives"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_whose_record_cannot_be_written_is_refused_without_rows() {
    // Fault injection: every audit write fails while `fail` exists.
    let audit_dir = temp_dir("lakeward-it-failing-audit");
    let fail = audit_dir.join("fail-writes");
    let fail_env = fail.to_str().expect("utf-8 path").to_owned();
    let served = support::serve_binary_with(
        None,
        &audit_dir,
        None,
        &[("LAKEWARD_AUDIT_TEST_FAIL_WHILE", fail_env.as_str())],
    );
    let c = as_user(
        served.addr(),
        "audit_failing",
        "analyst",
        None,
        "operations",
    )
    .await;
    let sql = "SELECT patient_id FROM clinical.patients WHERE patient_id <= 3";
    assert_eq!(c.query(sql, &[]).await.expect("audit writable").len(), 3);

    std::fs::write(&fail, b"").expect("fault file");
    for attempt in ["simple", "extended"] {
        let refused = match attempt {
            "simple" => c.simple_query(sql).await.map(|m| m.len()),
            _ => c.query(sql, &[]).await.map(|r| r.len()),
        };
        let e = refused.expect_err("a statement ran without a durable record");
        assert_eq!(sqlstate(&e).as_deref(), Some("58030"), "{attempt}: {e}");
    }

    // Writable again: the next batch continues a clean segment.
    std::fs::remove_file(&fail).expect("fault file");
    assert_eq!(
        c.query(sql, &[]).await.expect("audit writable again").len(),
        3
    );
    let on_disk = lakeward::audit::wal::read_after(&audit_dir, 0).expect("segment log");
    let seqs: Vec<i64> = on_disk.iter().map(|r| r.body.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "records after the failure continue the chain without a gap: {seqs:?}"
    );
    assert_eq!(
        on_disk
            .iter()
            .filter(|r| r.body.event == "statement"
                && r.body.decision == "allowed"
                && r.body
                    .query_fingerprint
                    .as_deref()
                    .is_some_and(|f| f.contains("clinical.patients")))
            .count(),
        2,
        "only the two statements that ran have statement records"
    );
}

/// `kill -9` lakeward while four clients run statements; restart on the
/// same chain; repeat. Every statement a client saw rows for has its
/// record, no record is duplicated, and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn crashes_under_load_lose_no_record_and_duplicate_none() {
    let audit_dir = temp_dir("lakeward-it-crash-audit");
    let instance = format!("crash-{}", std::process::id());
    let mut seen: Vec<String> = Vec::new();
    let mut config = None;
    for round in 0..3 {
        let mut served = support::serve_binary_with(None, &audit_dir, Some(&instance), &[]);
        config = Some(served.config.clone());
        let addr = served.addr();
        let mut clients = Vec::new();
        for client in 0..4 {
            clients.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let Ok(c) = support::try_connect_with(
                    addr,
                    "audit_crash",
                    &token("audit_crash", "analyst", None),
                    "require",
                    Some("operations"),
                )
                .await
                else {
                    return got;
                };
                for i in 0.. {
                    let alias = format!("q_{round}_{client}_{i}");
                    match c
                        .simple_query(&format!("SELECT count(*) AS {alias} FROM claims.claims"))
                        .await
                    {
                        Ok(m) if m.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))) => {
                            got.push(alias)
                        }
                        _ => break,
                    }
                }
                got
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        let _ = served.child.kill(); // SIGKILL
        let _ = served.child.wait();
        for c in clients {
            seen.extend(c.await.unwrap());
        }
    }
    assert!(seen.len() > 10, "the load ran ({} statements)", seen.len());
    // A last clean run ships what the crashes left in the segment log.
    let mut last = support::serve_binary_with(None, &audit_dir, Some(&instance), &[]);
    last.stop();

    let mine = shared_table_records(|r| r.body.instance == instance).await;
    let mut seqs: Vec<i64> = mine.iter().map(|r| r.body.seq).collect();
    seqs.sort();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "no record is in the table twice");
    assert_eq!(
        seqs,
        (1..=n as i64).collect::<Vec<_>>(),
        "no gap in the chain"
    );
    for alias in &seen {
        assert!(
            mine.iter().any(|r| r.body.event == "statement"
                && r.body
                    .query_fingerprint
                    .as_deref()
                    .is_some_and(|f| f.contains(alias.as_str()))),
            "{alias}: rows were sent but no record exists"
        );
    }
    let out = lakeward(&[
        "audit",
        "verify",
        "--config",
        config.unwrap().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The records of the shared audit table (the one every test server writes)
/// that satisfy `keep`.
async fn shared_table_records(keep: impl Fn(&AuditRecord) -> bool) -> Vec<AuditRecord> {
    let demo = lakeward::config::Config::demo(support::data_dir(), "127.0.0.1:0".parse().unwrap());
    let table = lakeward::audit::delta::AuditTable::open_or_create(
        &demo.audit.table_location(&demo.data).unwrap(),
        lakeward::audit::record::schema(),
    )
    .await
    .unwrap();
    let mut stream = table.scan().await.unwrap();
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.extend(
            lakeward::audit::record::from_batch(&b.unwrap())
                .unwrap()
                .into_iter()
                .filter(|r| keep(r)),
        );
    }
    out
}

fn verify_cli_args(args: &[&str]) -> (bool, String) {
    let out = lakeward(&[&["audit", "verify"], args].concat());
    (out.status.success(), text(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_accepts_the_keys_of_a_rotation_and_never_creates_a_table() {
    let (root, _) = written_log(12).await;
    let root_s = root.to_str().unwrap();
    let current = root.join("keys/audit-signing.pem.pub");
    let other_dir = temp_dir("lakeward-it-audit-otherkey");
    let other_key = other_dir.join("audit-signing.pem");
    lakeward::audit::chain::SigningKey::generate_to_file(&other_key).unwrap();
    let other = other_dir.join("audit-signing.pem.pub");
    assert!(other.exists() && current.exists());

    // Only a foreign key: every checkpoint looks forged.
    let (ok, text) = verify_cli_args(&[
        "--data-dir",
        root_s,
        "--public-key",
        other.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("forged checkpoint"), "{text}");
    // The retired and the current key together: whole.
    let (ok, text) = verify_cli_args(&[
        "--data-dir",
        root_s,
        "--public-key",
        other.to_str().unwrap(),
        "--public-key",
        current.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("audit log whole: 12 records"), "{text}");

    // A mistyped location is an error, and nothing is created there.
    let missing = root.join("no-such-demo");
    let (ok, text) = verify_cli_args(&[
        "--data-dir",
        missing.to_str().unwrap(),
        "--public-key",
        current.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("no Delta table"), "{text}");
    assert!(!text.contains("audit log whole"), "{text}");
    assert!(
        !missing.exists(),
        "audit verify created {}",
        missing.display()
    );
}
