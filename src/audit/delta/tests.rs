use crate::engine::delta::LatestDeltaProvider;
use datafusion::catalog::TableProvider as _;
use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, BooleanArray, Int64Array, ListBuilder, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::TryStreamExt;

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("instance", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "tables",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new("note", DataType::Utf8, true),
        Field::new("allowed", DataType::Boolean, false),
    ]))
}

/// Rows `seqs` of `instance`.
fn batch(instance: &str, seqs: std::ops::Range<i64>) -> RecordBatch {
    let n = (seqs.end - seqs.start) as usize;
    let mut tables = ListBuilder::new(StringBuilder::new());
    for s in seqs.clone() {
        if s % 3 == 0 {
            tables.append_null();
        } else {
            tables.values().append_value(format!("clinical.t{s}"));
            tables.values().append_null();
            tables.append(true);
        }
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![instance; n])),
            Arc::new(Int64Array::from_iter_values(seqs.clone())),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    seqs.clone().map(|s| 1_767_225_600_000_000 + s),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(tables.finish()),
            Arc::new(StringArray::from_iter(
                seqs.clone().map(|s| (s % 2 == 0).then(|| format!("n{s}"))),
            )),
            Arc::new(BooleanArray::from_iter(seqs.map(|s| Some(s % 5 != 0)))),
        ],
    )
    .expect("test batch")
}

async fn scan_all(t: &AuditTable) -> Vec<RecordBatch> {
    let stream = t.scan().await.expect("scan");
    assert_eq!(stream.schema(), t.schema());
    stream.try_collect().await.expect("scan stream")
}

/// `(instance, seq)` of every scanned row.
async fn keys(t: &AuditTable) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in scan_all(t).await {
        let inst = b
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("utf8");
        let seq = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        for i in 0..b.num_rows() {
            out.push((inst.value(i).to_string(), seq.value(i)));
        }
    }
    out.sort();
    out
}

fn loc(dir: &tempfile::TempDir) -> String {
    dir.path().join("access_log").to_string_lossy().into_owned()
}

#[tokio::test]
async fn append_is_exactly_once_per_txn_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = AuditTable::open_or_create(&loc(&dir), schema())
        .await
        .expect("create");
    assert_eq!(t.version().await.expect("version"), 0);
    assert_eq!(t.committed_version("a").await.expect("txn"), None);

    assert!(
        t.append(vec![batch("a", 1..6)], "a", 10)
            .await
            .expect("append 10")
    );
    assert!(
        t.append(vec![batch("a", 6..9), batch("a", 9..11)], "a", 20)
            .await
            .expect("append 20")
    );
    assert_eq!(t.committed_version("a").await.expect("txn"), Some(20));
    assert_eq!(t.committed_version("b").await.expect("txn"), None);
    assert_eq!(t.version().await.expect("version"), 2);
    let expected: Vec<_> = (1..11).map(|s| ("a".to_string(), s)).collect();
    assert_eq!(keys(&t).await, expected);

    // Re-shipping an already committed batch (same or older version) is a no-op.
    assert!(
        !t.append(vec![batch("a", 6..11)], "a", 20)
            .await
            .expect("dup 20")
    );
    assert!(
        !t.append(vec![batch("a", 6..11)], "a", 15)
            .await
            .expect("dup 15")
    );
    assert_eq!(t.version().await.expect("version"), 2);
    assert_eq!(keys(&t).await, expected);

    // An empty append still records the transaction.
    assert!(t.append(vec![], "a", 21).await.expect("empty append"));
    assert_eq!(t.committed_version("a").await.expect("txn"), Some(21));
    assert_eq!(keys(&t).await.len(), 10);
}

#[tokio::test]
async fn rejects_batches_of_another_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = AuditTable::open_or_create(&loc(&dir), schema())
        .await
        .expect("create");
    let other = Arc::new(Schema::new(vec![Field::new("seq", DataType::Int64, false)]));
    let b = RecordBatch::try_new(other, vec![Arc::new(Int64Array::from(vec![1]))]).expect("batch");
    let err = t.append(vec![b], "a", 1).await.expect_err("bad batch");
    assert!(
        matches!(err, AuditTableError::BatchSchema { index: 0, .. }),
        "{err}"
    );
    assert_eq!(t.version().await.expect("version"), 0);
}

#[tokio::test]
async fn reopen_checks_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = loc(&dir);
    let t = AuditTable::open_or_create(&l, schema())
        .await
        .expect("create");
    t.append(vec![batch("a", 1..4)], "a", 3)
        .await
        .expect("append");
    drop(t);

    let t = AuditTable::open_or_create(&l, schema())
        .await
        .expect("reopen");
    assert_eq!(t.committed_version("a").await.expect("txn"), Some(3));
    assert_eq!(keys(&t).await.len(), 3);

    // A different type.
    let mut fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[1] = Field::new("seq", DataType::Int32, false);
    let err = AuditTable::open_or_create(&l, Arc::new(Schema::new(fields.clone())))
        .await
        .expect_err("type mismatch");
    match &err {
        AuditTableError::SchemaMismatch { column, .. } => assert_eq!(column, "seq"),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("`seq`"), "{err}");

    // A column the record gained (patient accounting added some): an
    // older table gains it, the columns it had are kept as they are.
    fields[1] = Field::new("seq", DataType::Int64, false);
    fields.push(Field::new("extra", DataType::Utf8, true));
    let upgraded = AuditTable::open_or_create(&l, Arc::new(Schema::new(fields.clone())))
        .await
        .expect("a trailing new column is added");
    let before = upgraded.version().await.unwrap();
    let reopened = AuditTable::open_or_create(&l, Arc::new(Schema::new(fields.clone())))
        .await
        .expect("reopened with the new column");
    // Added once: reopening commits nothing.
    assert_eq!(reopened.version().await.unwrap(), before);
    // The table now has a column the older schema does not.
    let err = AuditTable::open_or_create(&l, schema())
        .await
        .expect_err("extra column");
    match &err {
        AuditTableError::SchemaMismatch { column, .. } => assert_eq!(column, "extra"),
        other => panic!("unexpected {other}"),
    }

    // A missing column.
    fields.truncate(3);
    let err = AuditTable::open_or_create(&l, Arc::new(Schema::new(fields)))
        .await
        .expect_err("missing column");
    match &err {
        AuditTableError::SchemaMismatch { column, .. } => assert_eq!(column, "tables"),
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn table_is_append_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = loc(&dir);
    AuditTable::open_or_create(&l, schema())
        .await
        .expect("create");
    let url = deltalake::ensure_table_uri(&l).expect("url");
    let table = deltalake::open_table(url).await.expect("open");
    let state = table.snapshot().expect("state");
    assert_eq!(
        state
            .metadata()
            .configuration()
            .get("delta.appendOnly")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(state.table_config().append_only, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_different_app_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = loc(&dir);
    let t1 = Arc::new(AuditTable::open_or_create(&l, schema()).await.expect("t1"));
    let t2 = Arc::new(AuditTable::open_or_create(&l, schema()).await.expect("t2"));
    const BATCHES: i64 = 8;
    let run = |t: Arc<AuditTable>, inst: &'static str| {
        tokio::spawn(async move {
            for i in 0..BATCHES {
                let seqs = i * 5 + 1..i * 5 + 6;
                let last = seqs.end - 1;
                assert!(
                    t.append(vec![batch(inst, seqs)], inst, last)
                        .await
                        .expect("append")
                );
            }
        })
    };
    let (a, b) = tokio::join!(run(t1.clone(), "i1"), run(t2.clone(), "i2"));
    a.expect("writer 1");
    b.expect("writer 2");

    for t in [&t1, &t2] {
        assert_eq!(
            t.committed_version("i1").await.expect("txn"),
            Some(BATCHES * 5)
        );
        assert_eq!(
            t.committed_version("i2").await.expect("txn"),
            Some(BATCHES * 5)
        );
        assert_eq!(t.version().await.expect("version"), 2 * BATCHES);
    }
    let got = keys(&t1).await;
    let mut expected: Vec<_> = ["i1", "i2"]
        .iter()
        .flat_map(|i| (1..=BATCHES * 5).map(move |s| (i.to_string(), s)))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    let unique: BTreeSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_the_same_app_id_commit_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = loc(&dir);
    let t1 = Arc::new(AuditTable::open_or_create(&l, schema()).await.expect("t1"));
    let t2 = Arc::new(AuditTable::open_or_create(&l, schema()).await.expect("t2"));
    let go = |t: Arc<AuditTable>| {
        tokio::spawn(async move { t.append(vec![batch("i", 1..6)], "i", 5).await })
    };
    let (a, b) = tokio::join!(go(t1.clone()), go(t2.clone()));
    let a = a.expect("task").expect("append 1");
    let b = b.expect("task").expect("append 2");
    assert!(a ^ b, "exactly one commit: {a} {b}");
    assert_eq!(keys(&t1).await.len(), 5);
    assert_eq!(t1.committed_version("i").await.expect("txn"), Some(5));
}

async fn count(ctx: &SessionContext) -> i64 {
    let batches = ctx
        .sql("SELECT count(*) AS n FROM access_log")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("count")
        .value(0)
}

#[tokio::test]
async fn latest_provider_sees_new_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = loc(&dir);
    let t = AuditTable::open_or_create(&l, schema())
        .await
        .expect("create");
    t.append(vec![batch("a", 1..8)], "a", 7)
        .await
        .expect("append");

    let provider = LatestDeltaProvider::open(&l).await.expect("provider");
    let names: Vec<_> = provider
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let want: Vec<_> = schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, want);
    let ctx = SessionContext::new();
    ctx.register_table("access_log", Arc::new(provider))
        .expect("register");
    assert_eq!(count(&ctx).await, 7);

    t.append(vec![batch("a", 8..12)], "a", 11)
        .await
        .expect("append");
    assert_eq!(count(&ctx).await, 11);

    // Projection and filters go through deltalake's provider.
    let rows: usize = ctx
        .sql("SELECT seq FROM access_log WHERE seq > 9 AND instance = 'a'")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect")
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 2);

    let missing = dir.path().join("nope").to_string_lossy().into_owned();
    let err = LatestDeltaProvider::open(&missing)
        .await
        .expect_err("missing");
    assert!(
        matches!(err, crate::engine::delta::DeltaError::NotATable { .. }),
        "{err}"
    );
    assert!(!dir.path().join("nope").exists());
}

#[tokio::test]
async fn all_column_types_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = AuditTable::open_or_create(&loc(&dir), schema())
        .await
        .expect("create");
    let input = batch("x", 0..30);
    t.append(vec![input.clone()], "x", 29)
        .await
        .expect("append");
    let out = scan_all(&t).await;
    let out = datafusion::arrow::compute::concat_batches(&schema(), &out).expect("concat");
    assert_eq!(out.schema(), schema());
    for (f, c) in schema().fields().iter().zip(out.columns()) {
        assert_eq!(c.data_type(), f.data_type(), "column {}", f.name());
    }
    // Order is unspecified in general; one file written in order reads back in order.
    assert_eq!(out, input);
    let tables = out.column(3);
    assert!(tables.is_null(0));
    assert!(!tables.is_null(1));
}
