//! Point lookups through key indexes and the hot-row cache return exactly
//! what a full scan returns, for every role, with break-glass, after a
//! consent change, across new Delta versions (an append and a delete
//! that rewrites a file) and policy reloads that drop and restore the
//! keys: no stale row.
//!
//! The oracle is the same statement with the key compared through an
//! expression (`key + 0 = k`): not a key probe, so it reads every file, under
//! the very same policy, in the same session.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::caches::{append, past_refresh};
use crate::support::{connect_role, raw_context};

/// Rows of a simple query as text, sorted.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out: Vec<Vec<Option<String>>> = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// `table`'s rows whose `key` is `value`, by the key (index) and by an
/// expression (full scan): equal, and the count.
async fn agree(client: &Client, who: &str, table: &str, key: &str, value: &str) -> usize {
    let by_key = rows(
        client,
        &format!("SELECT * FROM {table} WHERE {key} = {value}"),
    )
    .await;
    let scanned = rows(
        client,
        &format!("SELECT * FROM {table} WHERE {key} + 0 = {value}"),
    )
    .await;
    assert_eq!(by_key, scanned, "{who}: {table}.{key} = {value}");
    let listed = rows(
        client,
        &format!("SELECT * FROM {table} WHERE {key} IN ({value}, -1)"),
    )
    .await;
    assert_eq!(listed, scanned, "{who}: {table}.{key} IN ({value}, -1)");
    scanned.len()
}

/// `agree` for the analyst's rows of one patient in `table`.
async fn analyst_by_patient(client: &Client, table: &str, patient: i64) -> usize {
    agree(client, "analyst", table, "patient_id", &patient.to_string()).await
}

/// Integer values of one column of a query (raw, before any policy).
async fn raw_ids(dir: &std::path::Path, sql: &str) -> Vec<i64> {
    use datafusion::arrow::array::Int64Array;
    let ctx = raw_context(dir).await;
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let a = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Int64,
            )
            .unwrap();
            let a = a.as_any().downcast_ref::<Int64Array>().unwrap().clone();
            a.iter().flatten().collect::<Vec<_>>()
        })
        .collect()
}

/// Every lookup key of the demo policy, for some keys of each.
async fn every_key_agrees(client: &Client, who: &str, keys: &Keys) -> usize {
    let mut found = 0;
    for p in &keys.patients {
        let p = p.to_string();
        found += agree(client, who, "clinical.patients", "patient_id", &p).await;
        found += agree(client, who, "clinical.encounters", "patient_id", &p).await;
        found += agree(client, who, "clinical.observations", "patient_id", &p).await;
        found += agree(client, who, "claims.claims", "patient_id", &p).await;
        // A join driven by the key: the key's condition reaches the other
        // side through the join's equality (both sides probe an index).
        let join = "SELECT e.encounter_id, e.admit_ts, o.* FROM clinical.encounters e \
                    JOIN clinical.observations o ON o.patient_id = e.patient_id \
                    AND o.encounter_id = e.encounter_id WHERE";
        let by_key = rows(client, &format!("{join} e.patient_id = {p}")).await;
        let scanned = rows(client, &format!("{join} e.patient_id + 0 = {p}")).await;
        assert_eq!(
            by_key, scanned,
            "{who}: encounters ⋈ observations, patient {p}"
        );
        found += scanned.len();
    }
    for e in &keys.encounters {
        let e = e.to_string();
        found += agree(client, who, "clinical.encounters", "encounter_id", &e).await;
        found += agree(client, who, "clinical.observations", "encounter_id", &e).await;
    }
    for c in &keys.claims {
        found += agree(client, who, "claims.claims", "claim_id", &c.to_string()).await;
    }
    found
}

/// A small seeded generator (xorshift) choosing keys at random.
struct Pick(u64);

impl Pick {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` values of `all` chosen at random (repeats possible).
    fn some(&mut self, all: Vec<i64>, n: usize) -> Vec<i64> {
        assert!(!all.is_empty());
        (0..n)
            .map(|_| all[(self.next() % all.len() as u64) as usize])
            .collect()
    }
}

struct Keys {
    patients: Vec<i64>,
    encounters: Vec<i64>,
    claims: Vec<i64>,
}

/// Keys as a de-identified role sees them: its pseudonyms of the same rows.
async fn pseudonyms(client: &Client, sql: &str) -> Vec<i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

pub(crate) async fn wait_for_indexes(engine_ready: impl Fn() -> bool) {
    for _ in 0..600 {
        if engine_ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("key indexes not built within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_equal_full_scans_for_every_role_across_consent_and_new_versions() {
    let (dir, server, engine) = crate::caches::private_server_and_engine();
    wait_for_indexes(|| engine.lookups_ready()).await;
    let hits_before = index_hits();

    // Some keys of each kind, spread over the table (ids are opaque, so
    // they are read from the raw tables), plus keys that exist nowhere.
    // Random keys (the seed is printed; LAKEWARD_TEST_SEED replays a run).
    let seed = std::env::var("LAKEWARD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("key lookup differential: LAKEWARD_TEST_SEED={seed}");
    let mut rng = Pick(seed | 1);
    let mut patients = rng.some(raw_ids(&dir, "SELECT patient_id FROM patients").await, 12);
    patients.extend([0, 999_999_999]);
    let mut encounters = rng.some(
        raw_ids(&dir, "SELECT encounter_id FROM encounters").await,
        8,
    );
    encounters.push(-5);
    let claims = rng.some(raw_ids(&dir, "SELECT claim_id FROM claims").await, 6);
    let keys = Keys {
        patients,
        encounters,
        claims,
    };

    let analyst = connect_role(server.addr, "analyst", "operations").await;
    let clinician = connect_role(server.addr, "clinician", "treatment").await;
    let found = every_key_agrees(&analyst, "analyst", &keys).await;
    assert!(found > 20, "the analyst's lookups find rows ({found})");
    every_key_agrees(&clinician, "clinician S01", &keys).await;
    // Break-glass lifts the site filter: other sites' rows, by key too.
    clinician
        .batch_execute("BEGIN; SET LOCAL lakeward.break_glass = 'unconscious patient, ED bay 3'")
        .await
        .unwrap();
    let bg = every_key_agrees(&clinician, "clinician S01 in break-glass", &keys).await;
    clinician.batch_execute("COMMIT").await.unwrap();
    assert!(bg >= found / 2, "break-glass lookups find rows ({bg})");

    // A consent change: an operations opt-out hides a patient from the
    // analyst (opt-out model) on the key path as on the full path; a later
    // grant brings the patient back.
    let consents = crate::caches::stored_schema(&dir, "governance", "consents").await;
    let now = chrono::Utc::now();
    let mut visible = None;
    for &p in &keys.patients {
        let n = analyst_by_patient(&analyst, "clinical.encounters", p).await;
        if n > 0 {
            visible = Some((p, n));
            break;
        }
    }
    let (withdrawn, seen) = visible.expect("a chosen patient with encounters the analyst sees");
    for (granted, at) in [(false, now), (true, now + chrono::Duration::seconds(1))] {
        append(
            &dir,
            "governance",
            "consents",
            vec![crate::caches::consent(
                &consents,
                withdrawn,
                "operations",
                granted,
                at,
                None,
            )],
        )
        .await;
        past_refresh().await;
        let expect = if granted { seen } else { 0 };
        for table in [
            "clinical.patients",
            "clinical.encounters",
            "clinical.observations",
            "claims.claims",
        ] {
            let n = analyst_by_patient(&analyst, table, withdrawn).await;
            if table == "clinical.encounters" {
                assert_eq!(n, expect, "consent granted = {granted}");
            } else if !granted {
                assert_eq!(n, 0, "{table}: the opt-out hides the patient");
            }
        }
        every_key_agrees(&analyst, "analyst after a consent change", &keys).await;
    }

    // The researcher searches by pseudonym: the pseudonym index answers.
    let researcher = connect_role(server.addr, "researcher", "research").await;
    let p_enc = pseudonyms(
        &researcher,
        "SELECT encounter_id FROM clinical.encounters ORDER BY admit_ts LIMIT 6",
    )
    .await;
    let p_pat = pseudonyms(
        &researcher,
        "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 6",
    )
    .await;
    let p_keys = Keys {
        patients: p_pat.clone(),
        encounters: p_enc.clone(),
        claims: vec![],
    };
    assert!(!p_enc.is_empty() && !p_pat.is_empty());
    let first = every_key_agrees(&researcher, "researcher", &p_keys).await;
    assert!(first > 0);
    // Once the pseudonym indexes exist, the same answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        every_key_agrees(&researcher, "researcher (pseudonym index)", &p_keys).await,
        first
    );

    // A new Delta version appends a patient's rows: seen at once (the new
    // file is read whole until it is indexed, then through its index).
    let raw = raw_context(&dir).await;
    // (A patient with encounters the analyst sees: the one whose consent
    // was withdrawn and granted again above.)
    let p = withdrawn;
    let copy = raw
        .sql(&format!("SELECT * FROM encounters WHERE patient_id = {p}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let copied: usize = copy.iter().map(|b| b.num_rows()).sum();
    assert!(copied > 0);
    let before = analyst_by_patient(&analyst, "clinical.encounters", p).await;
    append(&dir, "clinical", "encounters", copy).await;
    past_refresh().await;
    let after = analyst_by_patient(&analyst, "clinical.encounters", p).await;
    assert_eq!(after, before + copied, "appended rows are found by key");
    wait_for_indexes(|| engine.lookups_ready()).await;
    assert_eq!(
        analyst_by_patient(&analyst, "clinical.encounters", p).await,
        before + copied
    );

    // A delete rewrites the file holding a patient (a cached table): the
    // removed file's rows and index are gone at the next version.
    let mut victim = None;
    for &p in &keys.patients {
        if analyst_by_patient(&analyst, "clinical.patients", p).await == 1 {
            victim = Some(p);
            break;
        }
    }
    let victim = victim.expect("a chosen patient the analyst sees");
    let url = deltalake::ensure_table_uri(dir.join("clinical/patients").to_str().unwrap()).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    table
        .delete()
        .with_predicate(format!("patient_id = {victim}"))
        .await
        .expect("delete");
    past_refresh().await;
    assert_eq!(
        analyst_by_patient(&analyst, "clinical.patients", victim).await,
        0,
        "a deleted row is not served from a removed file's cache"
    );
    wait_for_indexes(|| engine.lookups_ready()).await;
    every_key_agrees(&analyst, "analyst after the delete", &keys).await;
    every_key_agrees(&clinician, "clinician after the delete", &keys).await;

    assert!(
        index_hits() > hits_before,
        "lookups went through the key indexes"
    );

    // A policy reload (SIGHUP applies the new policy's keys at warm-up)
    // that drops every lookup key: the indexes go, the answers stay; and
    // one that brings them back.
    let mut keyless = lakeward::policy::Policy::load(None).unwrap();
    for t in keyless.tables.values_mut() {
        t.lookup_keys.clear();
    }
    engine.apply_lookup_keys(&keyless);
    every_key_agrees(&analyst, "analyst, no lookup keys", &keys).await;
    engine.apply_lookup_keys(&lakeward::policy::Policy::load(None).unwrap());
    wait_for_indexes(|| engine.lookups_ready()).await;
    every_key_agrees(&clinician, "clinician, keys back", &keys).await;
    server.shutdown();
}

/// Key scans answered through an index so far (process-wide).
fn index_hits() -> u64 {
    let text = lakeward::metrics::Metrics::global().encode();
    text.lines()
        .find(|l| {
            l.starts_with("lakeward_cache_requests_total{")
                && l.contains("cache=\"key_index\"")
                && l.contains("result=\"hit\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The clinician's observations are scoped by a subquery over encounters
/// (`encounter_id IN (SELECT encounter_id FROM clinical.encounters WHERE
/// site_id = principal.site)`), answered from a set computed per
/// encounters version: a new version that moves an encounter to the
/// clinician's site shows its observations at the next statement, by key
/// and in aggregate, as a break-glass session of the same clinician
/// (no site filter, the same consent) counts them with the subquery
/// written out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subquery_row_filter_follows_new_versions_of_the_table_it_reads() {
    let (dir, server, engine) = crate::caches::private_server_and_engine();
    let clinician = connect_role(server.addr, "clinician", "treatment").await;
    let raw = raw_context(&dir).await;
    let visible = async |c: &Client| -> i64 {
        c.query_one("SELECT count(*) FROM clinical.observations", &[])
            .await
            .unwrap()
            .get(0)
    };
    // The oracle: a break-glass session of the same clinician (no site
    // filter, the same consent) counting with the subquery written out.
    let bg = connect_role(server.addr, "clinician", "treatment").await;
    bg.batch_execute("BEGIN; SET LOCAL lakeward.break_glass = 'oracle for the site filter'")
        .await
        .unwrap();
    let oracle = async |sql: &str| -> i64 { bg.query_one(sql, &[]).await.unwrap().get(0) };
    let in_s01 = "SELECT count(*) FROM clinical.observations WHERE encounter_id IN (SELECT encounter_id FROM clinical.encounters WHERE site_id = 'S01')";
    let expected = oracle(in_s01).await;
    assert_eq!(
        visible(&clinician).await,
        expected,
        "the site's observations"
    );
    assert_eq!(engine.filter_sets(), 1, "the site filter reads a set");

    // An encounter of another site with observations the clinician's
    // consent admits, moved to S01 by a new version (appended again with
    // site S01).
    let moved: i64 = bg
        .query_one(
            "SELECT e.encounter_id FROM clinical.encounters e JOIN clinical.observations o ON o.encounter_id = e.encounter_id WHERE e.site_id <> 'S01' ORDER BY e.encounter_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let its = oracle(&format!(
        "SELECT count(*) FROM clinical.observations WHERE encounter_id = {moved}"
    ))
    .await;
    assert!(its > 0);
    bg.batch_execute("COMMIT").await.unwrap();
    let row = raw
        .sql(&format!(
            "SELECT * FROM encounters WHERE encounter_id = {moved}"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row = with_site(&row[0], "S01");
    append(&dir, "clinical", "encounters", vec![row]).await;
    past_refresh().await;
    assert_eq!(
        visible(&clinician).await,
        expected + its,
        "the moved encounter's observations are the clinician's now"
    );
    let by_key = agree(
        &clinician,
        "clinician",
        "clinical.observations",
        "encounter_id",
        &moved.to_string(),
    )
    .await;
    assert_eq!(by_key as i64, its);
    server.shutdown();
}

/// `batch` with every `site_id` set to `site`.
fn with_site(
    batch: &datafusion::arrow::array::RecordBatch,
    site: &str,
) -> datafusion::arrow::array::RecordBatch {
    let i = batch.schema().index_of("site_id").unwrap();
    let mut columns = batch.columns().to_vec();
    let sites = datafusion::arrow::array::StringArray::from(vec![site; batch.num_rows()]);
    columns[i] = datafusion::arrow::compute::cast(&sites, batch.column(i).data_type()).unwrap();
    datafusion::arrow::array::RecordBatch::try_new(batch.schema(), columns).unwrap()
}
