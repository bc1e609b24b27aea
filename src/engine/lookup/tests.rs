//! Key indexes against the rows they index: every lookup through an index
//! (row selection or cached rows) returns exactly what reading the files
//! whole returns, across new versions and pseudonym searches.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;

use super::Lookups;
use crate::audit::delta::AuditTable;
use crate::engine::delta::LatestDeltaProvider;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("grp", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// Rows for `ids` in the given (unsorted) order: `grp` = id % 7 (NULL for
/// multiples of 11), `name` = "n<id>".
fn rows(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(Int64Array::from(
                ids.iter()
                    .map(|i| (i % 11 != 0).then_some(i % 7))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// 1..=n in a scrambled order (a writer that did not sort by key).
fn scrambled(n: i64) -> Vec<i64> {
    let mut v: Vec<i64> = (1..=n).collect();
    let len = v.len();
    for i in 0..len {
        v.swap(i, (i * 7919 + 13) % len);
    }
    v
}

/// The ids a query returns, sorted.
async fn ids(ctx: &SessionContext, sql: &str) -> Vec<i64> {
    let mut out = crate::engine::snapshot_scan::tests::ids(ctx, sql).await;
    out.sort_unstable();
    out
}

/// Files the physical plan reads (cached rows read none).
async fn files_read(ctx: &SessionContext, sql: &str) -> usize {
    crate::engine::snapshot_scan::tests::files_scanned(ctx, sql).await
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what}: not ready after 5 s");
}

const QUERIES: &[&str] = &[
    "id = 17",
    "id = 300",
    "id = 0",
    "id IN (5, 150, 299, 1000)",
    "grp = 3",
    "grp IN (1, 6)",
    "grp = 3 AND id > 200",
    "name = 'n42'",
    "name IN ('n1', 'n250', 'nope')",
    "id = 17 OR id = 18",
    "id > 290",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_through_indexes_return_exactly_what_full_reads_return() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("t").to_string_lossy().into_owned();
    let t = AuditTable::open_or_create(&loc, schema()).await.unwrap();
    // Three files, keys scrambled across them: file statistics prune
    // nothing, only an index can.
    let all = scrambled(300);
    for (k, chunk) in all.chunks(100).enumerate() {
        t.append(vec![rows(chunk)], "w", k as i64 + 1)
            .await
            .unwrap();
    }
    let p = LatestDeltaProvider::open(&loc).await.unwrap();
    assert!(p.uses_snapshot_scan());
    let lookup = p.lookup().clone();
    let ctx = SessionContext::new();
    p.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", Arc::new(p)).unwrap();
    for udf in crate::engine::masks::mask_udfs(&[9u8; 32]) {
        ctx.register_udf(udf);
    }
    // The oracle: the same rows in memory.
    let oracle = SessionContext::new();
    let mem = datafusion::datasource::MemTable::try_new(schema(), vec![vec![rows(&all)]]).unwrap();
    oracle.register_table("t", Arc::new(mem)).unwrap();

    let check = |stage: &'static str| {
        let (ctx, oracle) = (&ctx, &oracle);
        async move {
            for q in QUERIES {
                let sql = format!("SELECT id FROM t WHERE {q}");
                assert_eq!(
                    ids(ctx, &sql).await,
                    ids(oracle, &sql).await,
                    "{stage}: {q}"
                );
            }
        }
    };
    check("no index").await;
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE id = 17").await, 3);

    let lookups = Lookups::new([("t".to_owned(), lookup.clone())].into());
    let config = crate::config::LookupConfig {
        index_memory_mb: 16,
        cache_tables: vec![],
        cache_memory_mb: 16,
    };
    lookups.configure(&config, &ctx);
    lookups.set_keys("t", vec!["id".into(), "grp".into(), "name".into()], false);
    wait_for("key indexes", || lookup.indexed_files().0 == 3).await;
    check("key index").await;
    // One file holds id 17: only that one is read.
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE id = 17").await, 1);
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE id = 0").await, 0);

    // A new version: its file is read whole until indexed, then by index.
    t.append(vec![rows(&[301, 17, 302])], "w", 4).await.unwrap();
    all_with(&oracle, &all, &[301, 17, 302]);
    check("new version, new file not indexed yet").await;
    wait_for("new file", || lookup.indexed_files().0 == 4).await;
    check("new version indexed").await;
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE id = 301").await, 1);
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE id = 17").await, 2);

    // Hot rows: the same answers from memory, no file opened.
    lookups.set_keys("t", vec!["id".into(), "grp".into(), "name".into()], true);
    wait_for("cached rows", || lookup.indexed_files() == (4, 4)).await;
    check("cached").await;
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE id = 17").await, 0);
    // A scan that is no key lookup still reads the files.
    assert_eq!(files_read(&ctx, "SELECT id FROM t WHERE grp >= 0").await, 4);

    // Pseudonym search: the first asks for the index, later ones use it.
    let pseudo = |id: i64| {
        crate::engine::masks::LakewardPseudonym::new(&[9u8; 32])
            .int64_pseudonyms("encounter", [id].into_iter())
            .unwrap()[0]
    };
    let sql = format!(
        "SELECT id FROM t WHERE lakeward_pseudonym(id, 'encounter') IN ({}, {}, 7)",
        pseudo(17),
        pseudo(250)
    );
    assert_eq!(ids(&ctx, &sql).await, vec![17, 17, 250]);
    wait_for("pseudonym index", || lookup.pseudonym_indexes() == 4).await;
    assert_eq!(ids(&ctx, &sql).await, vec![17, 17, 250]);
    assert_eq!(files_read(&ctx, &sql).await, 0);
}

/// The oracle's table after an append.
fn all_with(oracle: &SessionContext, all: &[i64], more: &[i64]) {
    let mem =
        datafusion::datasource::MemTable::try_new(schema(), vec![vec![rows(all), rows(more)]])
            .unwrap();
    oracle.deregister_table("t").unwrap();
    oracle.register_table("t", Arc::new(mem)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_over_the_budget_is_not_built_and_lookups_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("t").to_string_lossy().into_owned();
    let t = AuditTable::open_or_create(&loc, schema()).await.unwrap();
    t.append(vec![rows(&scrambled(300))], "w", 1).await.unwrap();
    let p = LatestDeltaProvider::open(&loc).await.unwrap();
    let lookup = p.lookup().clone();
    let ctx = SessionContext::new();
    p.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", Arc::new(p)).unwrap();
    let lookups = Lookups::new([("t".to_owned(), lookup.clone())].into());
    // 300 rows × 12 bytes × 100 keys is more than 0 MiB: nothing fits.
    let config = crate::config::LookupConfig {
        index_memory_mb: 0,
        cache_tables: vec![],
        cache_memory_mb: 0,
    };
    lookups.configure(&config, &ctx);
    lookups.set_keys("t", vec!["id".into()], false);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(lookup.indexed_files(), (0, 0));
    assert_eq!(ids(&ctx, "SELECT id FROM t WHERE id = 42").await, vec![42]);
}
