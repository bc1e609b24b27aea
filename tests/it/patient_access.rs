//! Patient access accounting (SPEC §9): after the analyst, the clinician
//! (with and without break-glass) and the researcher ran statements, the
//! auditor's `audit.patient_access` lists exactly the statements that
//! touched a patient, each with the right disclosure class, against a truth
//! computed from the raw data.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::audit::{as_user, text_rows};
use crate::support::oracle::{consented_patients, raw_context, raw_patients, raw_rows};
use crate::support::{connect_role, data_dir, server, sqlstate};

/// Patient ids of a raw query's first column.
async fn raw_ids(sql: &str) -> BTreeSet<i64> {
    let ctx = raw_context(data_dir()).await;
    raw_rows(&ctx, sql)
        .await
        .into_iter()
        .filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok()))
        .collect()
}

/// `(user, disclosure, tables)` of every row of `audit.patient_access` for
/// one patient and the given users, sorted.
async fn accesses(auditor: &Client, patient: i64, users: &[&str]) -> Vec<(String, String, String)> {
    let users = users
        .iter()
        .map(|u| format!("'{u}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut rows: Vec<(String, String, String)> = text_rows(
        auditor,
        &format!(
            "SELECT \"user\", disclosure, array_to_string(tables, ',') FROM audit.patient_access \
             WHERE patient_id = {patient} AND \"user\" IN ({users})"
        ),
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect();
    rows.sort();
    rows
}

fn row(user: &str, disclosure: &str, tables: &str) -> (String, String, String) {
    (user.to_owned(), disclosure.to_owned(), tables.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auditor_sees_exactly_who_touched_a_patient_and_how() {
    let addr = server().addr;
    let dir = data_dir();
    let ctx = raw_context(dir).await;
    let patients = raw_patients(&ctx).await;
    let treatment = consented_patients("treatment");
    let operations = consented_patients("operations");
    let research = consented_patients("research");
    let with_encounters =
        raw_ids("SELECT DISTINCT patient_id FROM encounters ORDER BY patient_id").await;
    // X: a patient of site S01 every purpose may see, with encounters.
    let x = patients
        .iter()
        .find(|p| {
            p.site == "S01"
                && treatment.contains(&p.id)
                && operations.contains(&p.id)
                && research.contains(&p.id)
                && with_encounters.contains(&p.id)
        })
        .expect("a patient every purpose sees")
        .id;
    // Y: a patient of another site, seen under treatment.
    let y = patients
        .iter()
        .find(|p| p.site != "S01" && treatment.contains(&p.id))
        .expect("a patient of another site")
        .id;
    // Z: a patient the analyst sees that no statement below names.
    let z = patients
        .iter()
        .find(|p| p.id != x && p.id != y && operations.contains(&p.id) && !research.contains(&p.id))
        .map(|p| p.id);

    let (analyst, clinician, researcher) = ("pa_analyst", "pa_clinician", "pa_researcher");
    let a = as_user(addr, analyst, "analyst", None, "operations").await;
    // Returned: a row of X's encounters.
    let got = text_rows(
        &a,
        &format!("SELECT encounter_id, patient_id FROM clinical.encounters WHERE patient_id = {x}"),
    )
    .await;
    assert!(!got.is_empty());
    // Aggregated: everyone the analyst may see.
    text_rows(&a, "SELECT count(*) FROM clinical.patients").await;
    // A semi-join: X's row returned (the deciding side only decides).
    text_rows(
        &a,
        &format!(
            "SELECT patient_id FROM clinical.patients WHERE patient_id IN \
             (SELECT patient_id FROM clinical.encounters WHERE patient_id = {x})"
        ),
    )
    .await;
    // A grouping: aggregated.
    text_rows(
        &a,
        &format!(
            "SELECT site_id, count(*) FROM clinical.encounters WHERE patient_id IN ({x}, {y}) GROUP BY site_id"
        ),
    )
    .await;

    let c = as_user(addr, clinician, "clinician", Some("S01"), "treatment").await;
    text_rows(
        &c,
        &format!("SELECT first_name FROM clinical.patients WHERE patient_id = {x}"),
    )
    .await;
    // Another site's patient without break-glass: no row, no access.
    let none = text_rows(
        &c,
        &format!("SELECT first_name FROM clinical.patients WHERE patient_id = {y}"),
    )
    .await;
    assert!(none.is_empty());
    // With break-glass: returned, with the justification.
    c.batch_execute("BEGIN; SET LOCAL lakeward.break_glass = 'ED bay 2, unconscious transfer'")
        .await
        .unwrap();
    let seen = text_rows(
        &c,
        &format!("SELECT first_name FROM clinical.patients WHERE patient_id = {y}"),
    )
    .await;
    assert_eq!(seen.len(), 1);
    c.batch_execute("COMMIT").await.unwrap();

    let r = as_user(addr, researcher, "researcher", None, "research").await;
    text_rows(&r, "SELECT count(*) FROM clinical.patients").await;

    let auditor = connect_role(addr, "auditor", "operations").await;
    let users = [analyst, clinician, researcher];
    assert_eq!(
        accesses(&auditor, x, &users).await,
        vec![
            row(analyst, "aggregated", "clinical.encounters"),
            row(analyst, "aggregated", "clinical.patients"),
            row(analyst, "returned", "clinical.encounters"),
            row(analyst, "returned", "clinical.encounters,clinical.patients"),
            row(clinician, "returned", "clinical.patients"),
            row(researcher, "aggregated", "clinical.patients"),
        ],
        "patient {x}"
    );
    // Y: the analyst's grouping, and the break-glass read only.
    assert_eq!(
        accesses(&auditor, y, &users).await,
        {
            let mut v = vec![row(clinician, "returned", "clinical.patients")];
            if operations.contains(&y) {
                if with_encounters.contains(&y) {
                    v.push(row(analyst, "aggregated", "clinical.encounters"));
                }
                v.push(row(analyst, "aggregated", "clinical.patients"));
            }
            if research.contains(&y) {
                v.push(row(researcher, "aggregated", "clinical.patients"));
            }
            v.sort();
            v
        },
        "patient {y}"
    );
    let bg = text_rows(
        &auditor,
        &format!(
            "SELECT break_glass, purpose, statement_kind FROM audit.patient_access \
             WHERE patient_id = {y} AND \"user\" = '{clinician}'"
        ),
    )
    .await;
    assert_eq!(
        bg,
        vec![vec![
            "ED bay 2, unconscious transfer".to_owned(),
            "treatment".to_owned(),
            "SELECT".to_owned()
        ]]
    );
    // Z: only the analyst's count of everyone.
    if let Some(z) = z {
        assert_eq!(
            accesses(&auditor, z, &users).await,
            vec![row(analyst, "aggregated", "clinical.patients")],
            "patient {z}"
        );
    }
    // A patient condition is answered from the patient index, and a
    // disclosure condition there keeps exactly the rows it names.
    let plan = text_rows(
        &auditor,
        &format!("EXPLAIN SELECT * FROM audit.patient_access WHERE patient_id = {x}"),
    )
    .await;
    assert!(
        plan.iter()
            .flatten()
            .any(|c| c.contains("PatientAccess: index")),
        "{plan:?}"
    );
    let returned: Vec<Vec<String>> = text_rows(
        &auditor,
        &format!(
            "SELECT \"user\", array_to_string(tables, ',') FROM audit.patient_access \
             WHERE patient_id = {x} AND disclosure = 'returned' ORDER BY 1, 2"
        ),
    )
    .await;
    let mut expected: Vec<Vec<String>> = accesses(&auditor, x, &users)
        .await
        .into_iter()
        .filter(|(_, d, _)| d == "returned")
        .map(|(u, _, t)| vec![u, t])
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(
        returned
            .into_iter()
            .filter(|r| users.contains(&r[0].as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    // Whole sets, without a patient condition: the researcher's count
    // aggregated exactly the patients who opted in to research.
    let counted: BTreeSet<i64> = text_rows(
        &auditor,
        &format!(
            "SELECT patient_id FROM audit.patient_access WHERE \"user\" = '{researcher}' \
             AND disclosure = 'aggregated'"
        ),
    )
    .await
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect();
    assert_eq!(counted, research);
    // The clinician's break-glass-free statements touched only S01.
    let s01: BTreeSet<i64> = patients
        .iter()
        .filter(|p| p.site == "S01")
        .map(|p| p.id)
        .collect();
    let clin: BTreeSet<i64> = text_rows(
        &auditor,
        &format!(
            "SELECT patient_id FROM audit.patient_access WHERE \"user\" = '{clinician}' \
             AND break_glass IS NULL"
        ),
    )
    .await
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect();
    assert!(clin.is_subset(&s01), "{clin:?}");

    // The auditor's question is itself audited.
    let audited = text_rows(
        &auditor,
        "SELECT count(*) FROM audit.access_log WHERE \"user\" = 'auditor' \
         AND array_has(tables, 'audit.patient_access') AND event = 'statement'",
    )
    .await;
    assert!(audited[0][0].parse::<i64>().unwrap() >= 4, "{audited:?}");

    // Nobody else reads it.
    for (role, purpose) in [
        ("analyst", "operations"),
        ("clinician", "treatment"),
        ("researcher", "research"),
    ] {
        let other = connect_role(addr, role, purpose).await;
        let e = other
            .simple_query("SELECT * FROM audit.patient_access")
            .await
            .unwrap_err();
        assert!(sqlstate(&e).is_some(), "{role}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_closed_early_accounts_only_the_rows_it_sent() {
    let addr = server().addr;
    let user = "pa_portal";
    let mut a = as_user(addr, user, "analyst", None, "operations").await;
    let tx = a.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT patient_id FROM clinical.patients ORDER BY patient_id")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let first: Vec<i64> = tx
        .query_portal(&portal, 3)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(first.len(), 3);
    drop(portal);
    tx.commit().await.unwrap();
    let auditor = connect_role(addr, "auditor", "operations").await;
    // The portal's completion record is queued when it closes: wait for it.
    let mut got = BTreeSet::new();
    for _ in 0..50 {
        got = text_rows(
            &auditor,
            &format!("SELECT patient_id FROM audit.patient_access WHERE \"user\" = '{user}'"),
        )
        .await
        .into_iter()
        .map(|r| r[0].parse::<i64>().unwrap())
        .collect();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got, first.into_iter().collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_cannot_pass_its_own_values_off_as_patient_keys() {
    let addr = server().addr;
    let a = as_user(addr, "pa_forger", "analyst", None, "operations").await;
    for sql in [
        "SELECT 424242 AS \"__lakeward_patient_0\", patient_id FROM clinical.patients LIMIT 1",
        "SELECT * FROM (SELECT patient_id AS \"__lakeward_patient_1\" FROM clinical.encounters) t LIMIT 1",
    ] {
        let e = a.simple_query(sql).await.unwrap_err();
        assert!(sqlstate(&e).is_some(), "{sql}");
    }
    // A statement over no patient-keyed table may use any name.
    let rows = text_rows(&a, "SELECT 1 AS \"__lakeward_patient_0\"").await;
    assert_eq!(rows, vec![vec!["1".to_owned()]]);
}

/// A point lookup (`patient_id = X` on the shown key) names its patient in
/// its statement record, durable before its first row, and does not wait
/// for its completion. `kill -9` while such a statement's portal is open
/// (one row sent, its completion never written): the next start writes the
/// completion, accounting the patient as returned, before it serves. A
/// lookup that found nobody and completed is not accounted.
#[tokio::test(flavor = "multi_thread")]
async fn a_point_lookup_cut_by_a_crash_is_accounted_at_the_next_start() {
    use crate::support::{serve_binary_with, temp_dir};
    let operations = consented_patients("operations");
    let many = raw_ids(
        "SELECT patient_id FROM encounters GROUP BY patient_id HAVING count(*) >= 2 \
         ORDER BY patient_id",
    )
    .await;
    let x = *many
        .iter()
        .find(|p| operations.contains(p))
        .expect("a patient with two encounters");
    let nobody = 1_000_000_000i64;
    let user = format!("pa_crash_{}", std::process::id());
    let audit_dir = temp_dir("lakeward-it-pinned-audit");
    let instance = format!("pinned-{}", std::process::id());

    let mut served = serve_binary_with(None, &audit_dir, Some(&instance), &[]);
    let mut a = as_user(served.addr(), &user, "analyst", None, "operations").await;
    a.simple_query(&format!(
        "SELECT patient_id AS pinned_nobody FROM clinical.patients WHERE patient_id = {nobody}"
    ))
    .await
    .expect("a lookup that finds nobody");
    let tx = a.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT encounter_id AS pinned_cut FROM clinical.encounters WHERE patient_id = $1")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[&x]).await.unwrap();
    let first = tx.query_portal(&portal, 1).await.unwrap();
    assert_eq!(first.len(), 1, "one row sent, the portal suspended");
    let _ = served.child.kill(); // SIGKILL
    let _ = served.child.wait();
    drop(portal);
    drop(tx);
    drop(a);

    let mut again = serve_binary_with(None, &audit_dir, Some(&instance), &[]);
    let auditor = connect_role(again.addr(), "auditor", "operations").await;
    let rows = text_rows(
        &auditor,
        &format!(
            "SELECT l.query_fingerprint, l.event, l.patient_id_min, l.patient_id_max \
             FROM audit.access_log l WHERE l.\"user\" = '{user}' AND l.event = 'statement' \
             AND l.query_fingerprint LIKE '%pinned%' ORDER BY l.seq"
        ),
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0][0].contains("pinned_nobody"), "{rows:?}");
    assert_eq!(
        rows[0][2],
        nobody.to_string(),
        "the statement record names its patient"
    );
    assert!(rows[1][0].contains("pinned_cut"), "{rows:?}");
    assert_eq!(
        (rows[1][2].as_str(), rows[1][3].as_str()),
        (x.to_string().as_str(), x.to_string().as_str())
    );
    let completions = text_rows(
        &auditor,
        &format!(
            "SELECT s.query_fingerprint, c.sqlstate, c.reason FROM audit.access_log c \
             JOIN audit.access_log s ON s.event_id = c.parent_event_id \
             WHERE c.\"user\" = '{user}' AND c.event = 'completion' \
             AND s.query_fingerprint LIKE '%pinned%' ORDER BY c.seq"
        ),
    )
    .await;
    assert_eq!(completions.len(), 2, "{completions:?}");
    assert!(completions[1][0].contains("pinned_cut"), "{completions:?}");
    assert_eq!(completions[1][1], "57P02", "{completions:?}");
    assert!(completions[1][2].contains("recovered"), "{completions:?}");
    assert_eq!(
        text_rows(
            &auditor,
            &format!(
                "SELECT patient_id, disclosure FROM audit.patient_access \
                 WHERE \"user\" = '{user}' ORDER BY patient_id"
            ),
        )
        .await,
        vec![vec![x.to_string(), "returned".to_owned()]],
        "the cut lookup's patient, returned; the lookup that found nobody, nothing"
    );
    again.stop();
    // Recovered once: a third start writes nothing more.
    let mut third = serve_binary_with(None, &audit_dir, Some(&instance), &[]);
    let auditor = connect_role(third.addr(), "auditor", "operations").await;
    assert_eq!(
        text_rows(
            &auditor,
            &format!(
                "SELECT count(*) FROM audit.access_log WHERE \"user\" = '{user}' \
                 AND event = 'completion' AND reason LIKE 'recovered%'"
            ),
        )
        .await,
        vec![vec!["1".to_owned()]],
        "one recovered completion"
    );
    third.stop();
}

/// The patients `user`'s statements touched, by disclosure class.
async fn touched_by(auditor: &Client, user: &str, disclosure: &str) -> BTreeSet<i64> {
    text_rows(
        auditor,
        &format!(
            "SELECT patient_id FROM audit.patient_access WHERE \"user\" = '{user}' \
             AND disclosure = '{disclosure}'"
        ),
    )
    .await
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect()
}

/// `SELECT count(*) FROM table` by one user, and the same with a condition
/// that keeps every row by another (a key column carried to the
/// aggregate): both account the same patients, as aggregated. `whole`:
/// whether the first is to be accounted from the key indexes (`None`:
/// either). Returns the patients.
async fn whole_and_keyed(
    addr: std::net::SocketAddr,
    auditor: &Client,
    n: usize,
    role: &str,
    purpose: &str,
    table: &str,
    whole: Option<bool>,
) -> BTreeSet<i64> {
    let (w_user, k_user) = (format!("wt_whole_{n}"), format!("wt_keyed_{n}"));
    let w = as_user(addr, &w_user, role, None, purpose).await;
    let plan = text_rows(&w, &format!("EXPLAIN ANALYZE SELECT count(*) FROM {table}")).await;
    if let Some(expected) = whole {
        assert_eq!(
            plan.iter().flatten().any(|c| c.contains("whole table")),
            expected,
            "{role} {table}: {plan:?}"
        );
    }
    let k = as_user(addr, &k_user, role, None, purpose).await;
    let plan = text_rows(
        &k,
        &format!("EXPLAIN ANALYZE SELECT count(*) FROM {table} WHERE patient_id <> -1"),
    )
    .await;
    assert!(
        !plan.iter().flatten().any(|c| c.contains("whole table")),
        "{role} {table}: {plan:?}"
    );
    let by_index = touched_by(auditor, &w_user, "aggregated").await;
    let by_column = touched_by(auditor, &k_user, "aggregated").await;
    assert!(!by_index.is_empty(), "{role} {table}");
    assert_eq!(by_index, by_column, "{role} {table}");
    assert!(touched_by(auditor, &w_user, "returned").await.is_empty());
    by_index
}

/// An aggregate over every row a table admits (no condition, no row
/// filter) is accounted from the key indexes, without a key column: the
/// same patients as a key column carried to the aggregate gives, for an
/// opt-out and an opt-in purpose, before a new Delta version's file is
/// indexed (the key column again) and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_over_a_whole_table_is_accounted_from_the_key_indexes() {
    let (dir, server, engine) = crate::caches::private_server_and_engine();
    crate::lookups::wait_for_indexes(|| engine.lookups_ready()).await;
    let addr = server.addr;
    let auditor = connect_role(addr, "auditor", "operations").await;
    let mut n = 0;
    for (role, purpose) in [("analyst", "operations"), ("researcher", "research")] {
        for table in ["clinical.patients", "clinical.encounters", "claims.claims"] {
            n += 1;
            whole_and_keyed(addr, &auditor, n, role, purpose, table, Some(true)).await;
        }
    }
    // Under an aggregation policy the whole-table scan also carries the
    // key (for the group cells): the same patients as with a condition.
    for (i, table) in ["clinical.patients", "clinical.encounters", "claims.claims"]
        .iter()
        .enumerate()
    {
        let (w_user, k_user) = (format!("wt_rwhole_{i}"), format!("wt_rkeyed_{i}"));
        let w = as_user(addr, &w_user, "reporter", None, "operations").await;
        let k = as_user(addr, &k_user, "reporter", None, "operations").await;
        let whole = text_rows(
            &w,
            &format!("SELECT site_id, count(*) FROM {table} GROUP BY site_id"),
        )
        .await;
        let keyed = text_rows(
            &k,
            &format!(
                "SELECT site_id, count(*) FROM {table} WHERE patient_id <> -1 GROUP BY site_id"
            ),
        )
        .await;
        assert!(!whole.is_empty());
        assert_eq!(whole.len(), keyed.len(), "{table}");
        let by_index = touched_by(&auditor, &w_user, "aggregated").await;
        assert!(!by_index.is_empty(), "{table}");
        assert_eq!(
            by_index,
            touched_by(&auditor, &k_user, "aggregated").await,
            "{table}"
        );
    }
    // GROUP BY over projections and an alias, and DISTINCT: whole too.
    let a = as_user(addr, "wt_grouped", "analyst", None, "operations").await;
    let plan = text_rows(
        &a,
        "EXPLAIN ANALYZE SELECT s, count(*) FROM (SELECT upper(site_id) AS s FROM clinical.encounters) e GROUP BY s",
    )
    .await;
    assert!(
        plan.iter().flatten().any(|c| c.contains("whole table")),
        "{plan:?}"
    );
    let plan = text_rows(
        &a,
        "EXPLAIN ANALYZE SELECT DISTINCT payer FROM claims.claims",
    )
    .await;
    assert!(
        plan.iter().flatten().any(|c| c.contains("whole table")),
        "{plan:?}"
    );
    // The clinician's site filter is a row filter: a key column.
    let c = as_user(addr, "wt_clinician", "clinician", Some("S01"), "treatment").await;
    let plan = text_rows(
        &c,
        "EXPLAIN ANALYZE SELECT count(*) FROM clinical.encounters",
    )
    .await;
    assert!(
        !plan.iter().flatten().any(|c| c.contains("whole table")),
        "{plan:?}"
    );

    // A new version appends the encounters of a new patient: accounted at
    // once (its file has no index yet), and through the index later.
    let raw = crate::support::raw_context(&dir).await;
    // (Ids are opaque: the newcomer's is far from every other.)
    let source: i64 =
        crate::support::oracle::raw_rows(&raw, "SELECT max(patient_id) FROM encounters").await[0]
            [0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let newcomer = source + 1_000_000_000_000;
    let copy = raw
        .sql(&format!(
            "SELECT * REPLACE (patient_id + 1000000000000 AS patient_id, encounter_id + 1000000000000 AS encounter_id) \
             FROM encounters WHERE patient_id = {source}"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(copy.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    crate::caches::append(&dir, "clinical", "encounters", copy).await;
    crate::caches::past_refresh().await;
    let first = whole_and_keyed(
        addr,
        &auditor,
        100,
        "analyst",
        "operations",
        "clinical.encounters",
        None,
    )
    .await;
    assert!(first.contains(&newcomer));
    crate::lookups::wait_for_indexes(|| engine.lookups_ready()).await;
    let again = whole_and_keyed(
        addr,
        &auditor,
        101,
        "analyst",
        "operations",
        "clinical.encounters",
        Some(true),
    )
    .await;
    assert_eq!(again, first);
}
