//! The caches never serve a stale answer: a new Delta version of a data
//! table, a new consent record and a consent that expires are all seen by
//! the next statement after the refresh interval, by simple queries and by
//! statements prepared (and cached) before the change. (A new policy
//! version is covered in `reload.rs`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use deltalake::protocol::SaveMode;

use crate::support::{
    TestServer, connect_role, off_runtime, raw_context, runtime, start_over, temp_dir,
    test_auth_settings,
};

/// How old a snapshot may get in these servers.
const REFRESH: Duration = Duration::from_millis(300);

/// A server over its own small dataset (the shared one is never written).
pub(crate) fn private_server() -> (PathBuf, TestServer) {
    let (dir, server, _) = private_server_and_engine();
    (dir, server)
}

/// [`private_server`] with the engine it serves.
pub(crate) fn private_server_and_engine() -> (PathBuf, TestServer, Arc<lakeward::engine::Engine>) {
    let (dir, engine) = private_engine();
    let root = dir.clone();
    let server = start_over(
        engine.clone(),
        move |c| {
            c.data.root = Some(root);
            c.data.refresh_ms = REFRESH.as_millis() as u64;
        },
        test_auth_settings(),
    );
    (dir, server, engine)
}

/// An engine over its own small dataset.
fn private_engine() -> (PathBuf, Arc<lakeward::engine::Engine>) {
    let dir = temp_dir("lakeward-it-caches");
    let mut config = lakeward::config::Config::demo(&dir, "127.0.0.1:0".parse().unwrap());
    config.data.refresh_ms = REFRESH.as_millis() as u64;
    let data = config.data.clone();
    let audit_table = config.audit.table_location(&data).expect("audit table");
    let d = dir.clone();
    let engine = off_runtime(move || {
        runtime().block_on(async move {
            lakeward::datagen::generate(&lakeward::datagen::DatagenOptions {
                data_dir: d,
                patients: 400,
                seed: 7,
            })
            .await
            .expect("datagen");
            lakeward::audit::delta::AuditTable::open_or_create(
                &audit_table,
                lakeward::audit::record::schema(),
            )
            .await
            .expect("audit table");
            lakeward::engine::open_from_config(
                &data,
                &Default::default(),
                &[7u8; 32],
                Some(&audit_table),
            )
            .await
            .expect("engine")
        })
    });
    // As `serve` does: key indexes and hot rows for point lookups (the
    // consent sets are left cold: a test here warms them).
    off_runtime(|| {
        runtime().block_on(async {
            engine.configure_lookups(&lakeward::config::LookupConfig::default());
            engine.apply_lookup_keys(&lakeward::policy::Policy::load(None).expect("policy"));
        })
    });
    (dir, Arc::new(engine))
}

/// Append `batches` to the Delta table `schema/table` under `dir`.
pub(crate) async fn append(dir: &Path, schema: &str, table: &str, batches: Vec<RecordBatch>) {
    let path = dir.join(schema).join(table);
    let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
    let t = deltalake::open_table(url).await.expect("open");
    t.write(batches)
        .with_save_mode(SaveMode::Append)
        .await
        .expect("append");
}

/// The Arrow schema of a Delta table as stored.
pub(crate) async fn stored_schema(dir: &Path, schema: &str, table: &str) -> SchemaRef {
    let path = dir.join(schema).join(table);
    let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
    let t = deltalake::open_table(url).await.expect("open");
    datafusion::catalog::TableProvider::schema(t.table_provider().await.unwrap().as_ref())
}

/// Wait longer than the refresh interval.
pub(crate) async fn past_refresh() {
    tokio::time::sleep(REFRESH + Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_new_delta_version_reaches_simple_and_cached_prepared_statements() {
    let (dir, server) = private_server();
    let client = connect_role(server.addr, "analyst", "operations").await;
    let count = "SELECT count(*) FROM claims.claims";
    let prepared = client.prepare(count).await.unwrap();
    let before: i64 = client.query_one(&prepared, &[]).await.unwrap().get(0);
    // Three claims the analyst sees, appended again as a new version.
    let ids: Vec<i64> = client
        .query(
            "SELECT claim_id FROM claims.claims ORDER BY claim_id LIMIT 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 3);
    let raw = raw_context(&dir).await;
    let rows = raw
        .sql(&format!(
            "SELECT * FROM claims WHERE claim_id IN ({})",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    append(&dir, "claims", "claims", rows).await;
    past_refresh().await;
    let simple: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(simple, before + 3, "the simple query reads the new version");
    let cached: i64 = client.query_one(&prepared, &[]).await.unwrap().get(0);
    assert_eq!(
        cached,
        before + 3,
        "the statement prepared before reads it too"
    );
    // Another session (another cache entry path) agrees.
    let other = connect_role(server.addr, "analyst", "operations").await;
    let again: i64 = other.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(again, before + 3);
    server.shutdown();
}

/// One consent record, cast to the stored schema of `governance.consents`.
pub(crate) fn consent(
    schema: &SchemaRef,
    patient: i64,
    purpose: &str,
    granted: bool,
    recorded_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> RecordBatch {
    let ts = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| {
            let text: ArrayRef = match f.name().as_str() {
                "patient_id" => Arc::new(Int64Array::from(vec![patient])),
                "purpose" => Arc::new(StringArray::from(vec![purpose])),
                "granted" => Arc::new(BooleanArray::from(vec![granted])),
                "recorded_at" => Arc::new(StringArray::from(vec![ts(recorded_at)])),
                "expires_at" => Arc::new(StringArray::from(vec![expires_at.map(ts)])),
                other => panic!("unexpected consent column {other}"),
            };
            cast(&text, f.data_type()).expect("cast to the stored type")
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

#[tokio::test]
async fn consent_sets_follow_new_records_and_expiry() {
    let (dir, server) = private_server();
    let researcher = connect_role(server.addr, "researcher", "research").await;
    let analyst = connect_role(server.addr, "analyst", "operations").await;
    let count = "SELECT count(*) FROM clinical.patients";
    let prepared = researcher.prepare(count).await.unwrap();
    let opted_in: i64 = researcher.query_one(&prepared, &[]).await.unwrap().get(0);
    let all_ops: i64 = analyst.query_one(count, &[]).await.unwrap().get(0);

    // A patient with no research or operations record: hidden from research
    // (opt-in), visible for operations (opt-out). The researcher's ids are
    // pseudonyms, so the raw table names one.
    let raw = raw_context(&dir).await;
    let consents = {
        let path = dir.join("governance").join("consents");
        let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
        let t = deltalake::open_table(url).await.unwrap();
        t.update_datafusion_session(&raw.state()).unwrap();
        raw.register_table("consents", t.table_provider().await.unwrap())
            .unwrap();
        "consents"
    };
    let candidate: i64 = {
        let sql = format!(
            "SELECT min(patient_id) FROM patients WHERE patient_id NOT IN \
             (SELECT patient_id FROM {consents} WHERE purpose IN ('research', 'operations'))"
        );
        let b = raw.sql(&sql).await.unwrap().collect().await.unwrap();
        let ids = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(
            ids.is_valid(0),
            "the dataset has a patient without such records"
        );
        ids.value(0)
    };
    let schema = stored_schema(&dir, "governance", "consents").await;
    let now = chrono::Utc::now();

    // Opt in: visible from the next statement after the refresh.
    append(
        &dir,
        "governance",
        "consents",
        vec![consent(&schema, candidate, "research", true, now, None)],
    )
    .await;
    past_refresh().await;
    let n: i64 = researcher.query_one(&prepared, &[]).await.unwrap().get(0);
    assert_eq!(n, opted_in + 1, "a new grant is seen");

    // A later refusal wins.
    append(
        &dir,
        "governance",
        "consents",
        vec![consent(
            &schema,
            candidate,
            "research",
            false,
            now + chrono::Duration::seconds(1),
            None,
        )],
    )
    .await;
    past_refresh().await;
    let n: i64 = researcher.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(n, opted_in, "a later refusal is seen");

    // An operations opt-out that expires in eight seconds: hidden, then
    // visible again once it has expired, with no new Delta version. (Eight,
    // not less: a loaded CI machine must see it before it expires.) The
    // patient also has an operations grant that never expires (Spark's
    // 9999-12-31 sentinel), which decides once the opt-out has expired.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(8);
    let never = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap()
        .and_utc();
    append(
        &dir,
        "governance",
        "consents",
        vec![
            consent(
                &schema,
                candidate,
                "operations",
                true,
                now + chrono::Duration::seconds(1),
                Some(never),
            ),
            consent(
                &schema,
                candidate,
                "operations",
                false,
                now + chrono::Duration::seconds(2),
                Some(expires),
            ),
        ],
    )
    .await;
    past_refresh().await;
    let hidden: i64 = analyst.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(hidden, all_ops - 1, "the opt-out is seen");
    assert!(!analyst_sees(&analyst, candidate).await);
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    let back: i64 = analyst.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(
        back, all_ops,
        "the expired opt-out no longer hides the patient"
    );
    assert!(analyst_sees(&analyst, candidate).await);
    server.shutdown();
}

/// Whether the analyst's patients include `id` (a bound parameter).
async fn analyst_sees(client: &tokio_postgres::Client, id: i64) -> bool {
    client
        .query_opt(
            "SELECT patient_id FROM clinical.patients WHERE patient_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn consent_sets_are_computed_ahead_once_per_consent_version() {
    use lakeward::engine::Warmed;
    let (dir, engine) = private_engine();
    let policy = lakeward::policy::Policy::load(None).expect("demo policy");
    // treatment, payment, operations (opt-out) and research (opt-in).
    let all = |computed| Warmed {
        current: 4,
        computed,
    };
    assert_eq!(engine.warm(&policy).await, all(4), "computed at start-up");
    assert_eq!(engine.warm(&policy).await, all(0), "still current");

    // A new consent version: each set is computed again, once.
    let schema = stored_schema(&dir, "governance", "consents").await;
    let now = chrono::Utc::now();
    append(
        &dir,
        "governance",
        "consents",
        vec![consent(&schema, 1, "research", true, now, None)],
    )
    .await;
    past_refresh().await;
    assert_eq!(engine.warm(&policy).await, all(4), "new consent version");
    assert_eq!(engine.warm(&policy).await, all(0), "current again");
}
