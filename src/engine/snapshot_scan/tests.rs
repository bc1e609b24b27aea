use datafusion::arrow::array::{Date32Array, Int64Array, TimestampMicrosecondArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};

use super::stats::scalar;
use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("born", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

fn stats(v: serde_json::Value) -> Option<serde_json::Value> {
    Some(v)
}

#[test]
fn bounds_are_read_per_file_and_unknown_stays_null() {
    let files = vec![
        stats(serde_json::json!({
            "numRecords": 10,
            "minValues": {"id": 1, "name": "a", "born": "1970-01-02", "ts": "2026-01-01T00:00:00.123Z"},
            "maxValues": {"id": 10, "name": "b", "born": "1970-01-03", "ts": "2026-01-01T00:00:00.456Z"},
            "nullCount": {"id": 0, "name": 1, "born": 0, "ts": 0}
        })),
        None,
        stats(
            serde_json::json!({"numRecords": 5, "minValues": {"id": 11}, "maxValues": {"id": "x"}}),
        ),
    ];
    let s = file_statistics(&schema(), &files);
    assert_eq!(s.num_containers(), 3);
    // Strings are never pruned on (Delta may truncate their bounds).
    assert!(s.min_values(&Column::from_name("name")).is_none());
    let min = s.min_values(&Column::from_name("id")).unwrap();
    let min = min.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(
        min.iter().collect::<Vec<_>>(),
        vec![Some(1), None, Some(11)]
    );
    let max = s.max_values(&Column::from_name("id")).unwrap();
    let max = max.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(max.iter().collect::<Vec<_>>(), vec![Some(10), None, None]);
    let born = s.max_values(&Column::from_name("born")).unwrap();
    let born = born.as_any().downcast_ref::<Date32Array>().unwrap();
    assert_eq!(born.value(0), 2);
    // A timestamp's upper bound covers the rest of its millisecond.
    let ts = s.max_values(&Column::from_name("ts")).unwrap();
    let ts = ts
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(ts.value(0) % 1_000_000, 456_999);
    let rows = s.row_counts().unwrap();
    let rows = rows.as_any().downcast_ref::<UInt64Array>().unwrap();
    assert_eq!(
        rows.iter().collect::<Vec<_>>(),
        vec![Some(10), None, Some(5)]
    );
}

/// `ts` with the time zone `tz`, or without one (Delta `timestampNtz`).
fn table_schema(tz: Option<&str>) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into)),
            true,
        ),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// Rows `ids`, `ts` = id seconds and 500 µs after 2026-01-01.
fn rows(
    ids: std::ops::RangeInclusive<i64>,
    tz: Option<&str>,
) -> datafusion::arrow::array::RecordBatch {
    let ids: Vec<i64> = ids.collect();
    let base = 1_767_225_600_000_000i64;
    let ts: Vec<i64> = ids.iter().map(|i| base + i * 1_000_000 + 500).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    let ts = TimestampMicrosecondArray::from(ts);
    let ts = match tz {
        Some(tz) => ts.with_timezone(tz),
        None => ts,
    };
    datafusion::arrow::array::RecordBatch::try_new(
        table_schema(tz),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(ts),
            Arc::new(datafusion::arrow::array::StringArray::from(names)),
        ],
    )
    .unwrap()
}

async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> usize {
    ctx.sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

/// How many data files the physical plan of `sql` reads.
pub(crate) async fn files_scanned(ctx: &datafusion::prelude::SessionContext, sql: &str) -> usize {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    text.matches(".parquet").count()
}

#[tokio::test]
async fn files_are_pruned_in_memory_and_every_matching_row_is_read() {
    pruned_in_memory(
        Some("UTC"),
        "TIMESTAMP '2026-01-01T00:00:20Z'",
        "TIMESTAMP '2026-01-01T00:00:20.000400Z'",
        "TIMESTAMP '2026-01-01T00:00:05Z'",
    )
    .await;
}

/// A table whose timestamps have no time zone carries the `timestampNtz`
/// reader feature (protocol 3): it is read by this scan all the same.
#[tokio::test]
async fn timestamp_ntz_tables_are_read_by_the_snapshot_scan() {
    pruned_in_memory(
        None,
        "TIMESTAMP '2026-01-01T00:00:20'",
        "TIMESTAMP '2026-01-01T00:00:20.000400'",
        "TIMESTAMP '2026-01-01T00:00:05'",
    )
    .await;
}

async fn pruned_in_memory(tz: Option<&str>, at20: &str, at20_400: &str, at5: &str) {
    use crate::audit::delta::AuditTable;
    use crate::engine::delta::LatestDeltaProvider;
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("t").to_string_lossy().into_owned();
    let t = AuditTable::open_or_create(&loc, table_schema(tz))
        .await
        .unwrap();
    // Three commits, three files: ids 1-10, 11-20, 21-30.
    for k in 0..3i64 {
        t.append(vec![rows(k * 10 + 1..=k * 10 + 10, tz)], "w", k + 1)
            .await
            .unwrap();
    }
    let p = LatestDeltaProvider::open(&loc).await.unwrap();
    assert!(p.uses_snapshot_scan(), "{tz:?}: snapshot scan");
    let ctx = datafusion::prelude::SessionContext::new();
    p.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", Arc::new(p)).unwrap();

    let after20 = format!("ts > {at20}");
    let after20_400 = format!("ts >= {at20_400}");
    let before5 = format!("ts < {at5}");
    for (filter, rows, files) in [
        ("id = 15", 1, 1),
        ("id > 25", 5, 1),
        ("id BETWEEN 9 AND 12", 4, 2),
        ("id IN (3, 29)", 2, 2),
        ("id = 31", 0, 0),
        ("name = 'n15'", 1, 3), // strings are not pruned on
        // Delta keeps timestamp bounds to the millisecond: the row at
        // +20 s 500 µs is past the file's recorded maximum (+20 s 000).
        (after20.as_str(), 11, 2),
        (after20_400.as_str(), 11, 2),
        (before5.as_str(), 4, 1),
    ] {
        let sql = format!("SELECT * FROM t WHERE {filter}");
        assert_eq!(count(&ctx, &sql).await, rows, "{tz:?} {filter}: rows");
        assert_eq!(
            files_scanned(&ctx, &sql).await,
            files,
            "{tz:?} {filter}: files"
        );
    }
    assert_eq!(count(&ctx, "SELECT * FROM t").await, 30);

    // A new version is a new file list: the appended rows are found.
    t.append(vec![rows(31..=40, tz)], "w", 4).await.unwrap();
    assert_eq!(count(&ctx, "SELECT * FROM t WHERE id = 31").await, 1);
    assert_eq!(count(&ctx, "SELECT * FROM t").await, 40);
}

/// A Parquet file as Spark 3 writes timestamps by default: INT96
/// (Julian day and nanoseconds of the day), here `id` and `BIG_DATE`.
fn write_int96_file(path: &std::path::Path, rows: &[(i64, Option<(i64, i64)>)]) {
    use datafusion::parquet::data_type::Int96;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::parquet::file::writer::SerializedFileWriter;
    use datafusion::parquet::schema::parser::parse_message_type;
    let schema = Arc::new(
        parse_message_type("message spark_schema { required int64 id; optional int96 BIG_DATE; }")
            .unwrap(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut w =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let defs: Vec<i16> = rows.iter().map(|r| i16::from(r.1.is_some())).collect();
    // Unix day 0 is Julian day 2,440,588.
    let values: Vec<Int96> = rows
        .iter()
        .filter_map(|r| r.1)
        .map(|(unix_day, nanos)| {
            let mut v = Int96::new();
            v.set_data(
                nanos as u32,
                (nanos >> 32) as u32,
                (unix_day + 2_440_588) as u32,
            );
            v
        })
        .collect();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<datafusion::parquet::data_type::Int64Type>()
        .write_batch(&ids, None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<datafusion::parquet::data_type::Int96Type>()
        .write_batch(&values, Some(&defs), None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
}

/// Spark's "end of time" sentinels written as INT96 (as delta-rs'
/// `table_with_edge_timestamps`, Spark 3.1) read back as 9999-12-31 and
/// 9999-12-30, not as 1816 (nanoseconds overflowing past 2262), and a
/// filter agrees with what is shown.
#[tokio::test]
async fn int96_timestamps_are_read_as_spark_wrote_them() {
    use crate::engine::delta::LatestDeltaProvider;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("edge");
    std::fs::create_dir_all(table.join("_delta_log")).unwrap();
    // 9999-12-31 and 9999-12-30 at midnight, 1900-01-01 12:00, null.
    let rows = [
        (1, Some((2_932_896, 0))),
        (2, Some((2_932_895, 0))),
        (3, Some((-25_567, 43_200_000_000_000))),
        (4, None),
    ];
    let file = "part-00000-spark.snappy.parquet";
    write_int96_file(&table.join(file), &rows);
    let size = std::fs::metadata(table.join(file)).unwrap().len();
    let schema = serde_json::json!({"type": "struct", "fields": [
        {"name": "id", "type": "long", "nullable": false, "metadata": {}},
        {"name": "BIG_DATE", "type": "timestamp", "nullable": true, "metadata": {}}
    ]});
    let log = [
        serde_json::json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
        serde_json::json!({"metaData": {
            "id": "00000000-0000-0000-0000-000000000001",
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema.to_string(),
            "partitionColumns": [], "configuration": {}, "createdTime": 1_600_000_000_000i64
        }}),
        serde_json::json!({"add": {
            "path": file, "partitionValues": {}, "size": size,
            "modificationTime": 1_600_000_000_000i64, "dataChange": true,
            "stats": serde_json::json!({
                "numRecords": 4,
                "minValues": {"id": 1, "BIG_DATE": "1900-01-01T12:00:00.000Z"},
                "maxValues": {"id": 4, "BIG_DATE": "9999-12-31T00:00:00.000Z"},
                "nullCount": {"id": 0, "BIG_DATE": 1}
            }).to_string()
        }}),
    ];
    let text: String = log.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(table.join("_delta_log/00000000000000000000.json"), text).unwrap();

    let loc = table.to_string_lossy().into_owned();
    let p = LatestDeltaProvider::open(&loc).await.unwrap();
    assert!(p.uses_snapshot_scan());
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        crate::engine::spark_compatible_reads(datafusion::prelude::SessionConfig::new()),
    );
    p.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("edge", Arc::new(p)).unwrap();
    let shown = ctx
        .sql(r#"SELECT CAST("BIG_DATE" AS VARCHAR) AS d FROM edge ORDER BY id"#)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&shown)
        .unwrap()
        .to_string();
    for expected in [
        "9999-12-31T00:00:00Z",
        "9999-12-30T00:00:00Z",
        "1900-01-01T12:00:00Z",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    assert!(!text.contains("1816"), "{text}");
    // Filters agree with what is shown (with and without pruning).
    for (filter, n) in [
        (r#""BIG_DATE" < TIMESTAMP '1900-01-02'"#, 1),
        (r#""BIG_DATE" < TIMESTAMP '1900-01-01'"#, 0),
        (r#""BIG_DATE" > TIMESTAMP '2262-01-01'"#, 2),
        (r#"CAST("BIG_DATE" AS DATE) = DATE '9999-12-31'"#, 1),
        (r#"CAST("BIG_DATE" AS DATE) >= DATE '9999-12-30'"#, 2),
        (r#""BIG_DATE" IS NULL"#, 1),
    ] {
        let sql = format!("SELECT * FROM edge WHERE {filter}");
        assert_eq!(count(&ctx, &sql).await, n, "{filter}");
    }
}

/// Every type a Delta table holds, over five files whose value ranges
/// differ: NaN and ±0 in floats, decimals, strings longer than Delta's
/// 32-character statistics prefix, dates and timestamps up to
/// 9999-12-31, timestamps with and without a time zone, sub-millisecond
/// values beyond the millisecond bounds Delta writes, booleans, nulls.
fn typed_rows(file: i64) -> datafusion::arrow::array::RecordBatch {
    use datafusion::arrow::array::{
        BooleanArray, Decimal128Array, Float64Array, Int32Array, StringArray,
    };
    let ids: Vec<i64> = (file * 20..file * 20 + 20).collect();
    let opt = |id: i64, every: i64| id % every != 0;
    let floats = [
        f64::NAN,
        -0.0,
        0.0,
        1.5,
        -1.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
    ];
    let long = "a".repeat(40);
    let base = 1_767_225_600_000_000i64;
    let end_of_time = 253_402_214_400_000_000i64;
    let ts: Vec<Option<i64>> = ids
        .iter()
        .map(|&id| {
            opt(id, 29).then(|| {
                if id % 23 == 0 {
                    end_of_time
                } else {
                    base + id * 1_000_000 + (id % 3) * 333
                }
            })
        })
        .collect();
    let schema = typed_schema();
    datafusion::arrow::array::RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int32Array::from(
                ids.iter()
                    .map(|&id| opt(id, 9).then(|| ((id * 7) % 50 - 25) as i32))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|&id| opt(id, 10).then(|| floats[(id as usize) % floats.len()]))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(
                    ids.iter()
                        .map(|&id| opt(id, 11).then(|| i128::from((id * 137) % 10_000 - 5_000)))
                        .collect::<Vec<_>>(),
                )
                .with_precision_and_scale(12, 2)
                .unwrap(),
            ),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|&id| {
                        opt(id, 13).then(|| {
                            if id % 3 == 0 {
                                format!("{long}{}", char::from(b'a' + file as u8))
                            } else {
                                format!("s{id:03}")
                            }
                        })
                    })
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Date32Array::from(
                ids.iter()
                    .map(|&id| {
                        opt(id, 19).then(|| {
                            if id % 17 == 0 {
                                2_932_896
                            } else {
                                -25_567 + (id as i32) * 400
                            }
                        })
                    })
                    .collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(ts)),
            Arc::new(BooleanArray::from(
                ids.iter()
                    .map(|&id| opt(id, 5).then_some(id % 2 == 0))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn typed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("i32", DataType::Int32, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("dec", DataType::Decimal128(12, 2), true),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "ntz",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("b", DataType::Boolean, true),
    ]))
}

/// The first (BIGINT) column of a query's rows, in the order returned.
pub(crate) async fn ids(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<i64> {
    first_column(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// The first (BIGINT) column of `batches`, in order.
pub(crate) fn first_column(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

/// Pruning never drops a matching row: each predicate returns the same
/// rows from the Delta table (files pruned by their Delta statistics,
/// row groups and pages by their Parquet statistics) as from the same
/// rows held in memory, where nothing is pruned.
#[tokio::test]
async fn pruning_agrees_with_the_decoded_values_for_every_type() {
    use crate::audit::delta::AuditTable;
    use crate::engine::delta::LatestDeltaProvider;
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("typed").to_string_lossy().into_owned();
    let t = AuditTable::open_or_create(&loc, typed_schema())
        .await
        .unwrap();
    let mut all = Vec::new();
    for file in 0..5 {
        let batch = typed_rows(file);
        all.push(batch.clone());
        t.append(vec![batch], "w", file + 1).await.unwrap();
    }
    let p = LatestDeltaProvider::open(&loc).await.unwrap();
    assert!(p.uses_snapshot_scan());
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        crate::engine::spark_compatible_reads(datafusion::prelude::SessionConfig::new()),
    );
    p.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", Arc::new(p)).unwrap();
    let mem = datafusion::datasource::MemTable::try_new(typed_schema(), vec![all]).unwrap();
    ctx.register_table("m", Arc::new(mem)).unwrap();
    // deltalake's own provider over the same table (the scan of tables
    // with deletion vectors, column mapping or partitions).
    let dl = deltalake::open_table(deltalake::ensure_table_uri(&loc).unwrap())
        .await
        .unwrap();
    let dl = FloatSafe::new(dl.table_provider().await.unwrap());
    ctx.register_table("dl", Arc::new(dl)).unwrap();

    let long = "a".repeat(40);
    let predicates = [
        "id = 15".to_owned(),
        "id > 85".into(),
        "id BETWEEN 19 AND 21".into(),
        "id < 5 OR id > 95".into(),
        "i32 < -20".into(),
        "i32 = 0".into(),
        "i32 IN (1, 2, 3)".into(),
        "i32 IS NULL".into(),
        "f64 = 0.0".into(),
        "f64 = -0.0".into(),
        "f64 = 'NaN'::double".into(),
        "f64 = 'NaN'::double OR id = 3".into(),
        "f64 < 0".into(),
        "f64 > 1".into(),
        "f64 IS NULL".into(),
        "isnan(f64)".into(),
        "dec > 40.00".into(),
        "dec = 1.37".into(),
        "dec < -49.00".into(),
        "dec IS NULL".into(),
        format!("s = '{long}c'"),
        format!("s > '{long}'"),
        format!("s >= '{long}c'"),
        "s LIKE 'aaaa%'".into(),
        "s < 's010'".into(),
        "s IS NULL".into(),
        "d = DATE '9999-12-31'".into(),
        "d < DATE '1950-01-01'".into(),
        "d > DATE '2000-01-01'".into(),
        "d IS NULL".into(),
        "ts = TIMESTAMP '2026-01-01T00:00:20.000666Z'".into(),
        "ts > TIMESTAMP '2026-01-01T00:00:20Z'".into(),
        "ts >= TIMESTAMP '2026-01-01T00:00:20.000500Z'".into(),
        "ts < TIMESTAMP '2026-01-01T00:00:05Z'".into(),
        "ts > TIMESTAMP '2262-01-01T00:00:00Z'".into(),
        "CAST(ts AS DATE) = DATE '9999-12-31'".into(),
        "ts IS NULL".into(),
        "ntz < TIMESTAMP '2026-01-01T00:00:05'".into(),
        "ntz >= TIMESTAMP '2026-01-01T00:01:10.000333'".into(),
        "ntz IS NULL".into(),
        "b".into(),
        "NOT b".into(),
        "b IS NULL".into(),
        "i32 > 0 AND d < DATE '2000-01-01'".into(),
    ];
    let mut pruned = 0;
    for predicate in &predicates {
        let from_table = ids(
            &ctx,
            &format!("SELECT id FROM t WHERE {predicate} ORDER BY id"),
        )
        .await;
        let in_memory = ids(
            &ctx,
            &format!("SELECT id FROM m WHERE {predicate} ORDER BY id"),
        )
        .await;
        assert_eq!(from_table, in_memory, "{predicate}");
        let by_deltalake = ids(
            &ctx,
            &format!("SELECT id FROM dl WHERE {predicate} ORDER BY id"),
        )
        .await;
        assert_eq!(by_deltalake, in_memory, "deltalake's scan: {predicate}");
        if files_scanned(&ctx, &format!("SELECT id FROM t WHERE {predicate}")).await < 5 {
            pruned += 1;
        }
    }
    assert!(
        pruned >= 10,
        "files were pruned for {pruned} predicates only"
    );
}

/// Parquet statistics leave NaN out of a float column's bounds, and
/// DataFusion's row-group pruning compares `min <= NaN <= max` in total
/// order: `f64 = 'NaN'` (true for NaN, as in PostgreSQL) found no row
/// in the table while the same rows in memory gave them. Conditions on
/// float columns no longer reach the Parquet source, by the scan's own
/// predicate nor by the physical optimiser's filter pushdown.
#[tokio::test]
async fn nan_equality_is_not_pruned_away() {
    use crate::audit::delta::AuditTable;
    use crate::engine::delta::LatestDeltaProvider;
    let dir = tempfile::tempdir().unwrap();
    let loc = dir.path().join("nan").to_string_lossy().into_owned();
    let t = AuditTable::open_or_create(&loc, typed_schema())
        .await
        .unwrap();
    t.append(vec![typed_rows(0)], "w", 1).await.unwrap();
    let p = LatestDeltaProvider::open(&loc).await.unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    p.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", Arc::new(p)).unwrap();
    let nan = ids(
        &ctx,
        "SELECT id FROM t WHERE f64 = 'NaN'::double ORDER BY id",
    )
    .await;
    assert_eq!(nan, vec![8, 16]);
}

#[test]
fn timestamp_ntz_bounds_are_read_as_delta_writes_them() {
    let dt = DataType::Timestamp(TimeUnit::Microsecond, None);
    let at = |s: &str, upper| scalar(&dt, &serde_json::json!(s), upper);
    let base = 1_609_556_461_000_000i64; // 2021-01-02 03:01:01
    assert_eq!(
        at("2021-01-02 03:01:01", false),
        Some(ScalarValue::TimestampMicrosecond(Some(base), None))
    );
    assert_eq!(
        at("2021-01-02 03:01:01.244", true),
        Some(ScalarValue::TimestampMicrosecond(
            Some(base + 244_999),
            None
        ))
    );
    assert_eq!(
        at("2021-01-02 03:01:01", false),
        at("2021-01-02T03:01:01", false)
    );
    assert_eq!(at("not a time", false), None);
}

#[test]
fn out_of_range_values_are_unknown_not_wrapped() {
    let dt = DataType::Int8;
    assert_eq!(scalar(&dt, &serde_json::json!(300), false), None);
    assert_eq!(
        scalar(&dt, &serde_json::json!(-3), false),
        Some(ScalarValue::Int8(Some(-3)))
    );
    assert_eq!(
        scalar(&DataType::Utf8, &serde_json::json!("a"), false),
        None
    );
}
