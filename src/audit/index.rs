//! The patient index of the audit log (SPEC §9): the Delta table
//! `<access_log>.patient_index` that answers "which statements touched
//! patient X" without reading every statement's patient set.
//!
//! A completion record's patient sets (`super::patients`) are whole-set
//! bitmaps: an aggregate over a million patients holds a million ids, and
//! finding one patient in years of them means reading every such set. The
//! index splits each set by patient id into chunks of 4,096 ids: one row
//! per (record, disclosure, chunk) with the chunk number, the members of
//! the chunk (a sorted list of 16-bit offsets when short, a 512-byte bitmap
//! when not), and the record's place in its chain (`instance`, `seq`) and
//! time. A lookup of patient X reads only the rows of X's chunk, and the
//! table is laid out so that those rows sit together:
//!
//! * partitioned by `month` (`YYYY-MM` of the record time, UTC), so
//!   compaction rewrites one month and retention drops whole months;
//! * each shipped batch is written sorted by chunk, and compaction
//!   ([`compact`]) Z-orders a month's files by `chunk` into few files of
//!   small row groups, so Parquet statistics skip everything but X's chunk.
//!
//! The index is derived data: the chained completion records stay the
//! authority. It is written by the same shipper, in a commit carrying the
//! same application transaction as the records it indexes (exactly once,
//! caught up after a crash), and `audit verify` recomputes it from the
//! records ([`digest_of_record`]): a removed, added or altered index row is
//! a finding.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sha2::{Digest, Sha256};

use super::delta::{AuditTable, AuditTableError};
use super::record::{AuditRecord, event};

/// Ids per chunk: 2^12.
pub const CHUNK_BITS: u32 = 12;
const CHUNK_IDS: usize = 1 << CHUNK_BITS;
const BITMAP_BYTES: usize = CHUNK_IDS / 8;
/// The longest member list (2 bytes a member, shorter than the bitmap).
const LIST_MAX: usize = BITMAP_BYTES / 2 - 1;

/// The partition column.
pub const MONTH: &str = "month";

/// The chunk of a patient id (arithmetic shift: negative ids have negative
/// chunks, in order).
pub fn chunk_of(id: i64) -> i64 {
    id >> CHUNK_BITS
}

/// A patient id's offset in its chunk.
fn offset_of(id: i64) -> u16 {
    (id & (CHUNK_IDS as i64 - 1)) as u16
}

/// The members of a chunk from its sorted, distinct offsets.
pub fn encode_members(offsets: &[u16]) -> Vec<u8> {
    if offsets.len() <= LIST_MAX {
        offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
    } else {
        let mut bits = vec![0u8; BITMAP_BYTES];
        for o in offsets {
            let o = usize::from(*o) % CHUNK_IDS;
            bits[o / 8] |= 1 << (o % 8);
        }
        bits
    }
}

/// Whether a chunk's members hold `id` (whose chunk it is).
pub fn contains(members: &[u8], id: i64) -> bool {
    let o = offset_of(id);
    if members.len() == BITMAP_BYTES {
        let o = usize::from(o);
        return members[o / 8] & (1 << (o % 8)) != 0;
    }
    let n = members.len() / 2;
    let at = |i: usize| u16::from_le_bytes([members[2 * i], members[2 * i + 1]]);
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match at(mid).cmp(&o) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    false
}

/// The index's location beside the audit table's: `<location>.patient_index`
/// (a name table discovery never serves: it is not an identifier).
pub fn location(table: &str) -> String {
    format!("{}.patient_index", table.trim_end_matches('/'))
}

/// The index schema (`month`, the partition column, last).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("chunk", DataType::Int64, false),
        Field::new("returned", DataType::Boolean, false),
        Field::new("members", DataType::Binary, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("instance", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new(MONTH, DataType::Utf8, false),
    ]))
}

/// `YYYY-MM` of a time in microseconds since the epoch (UTC).
pub fn month_of(ts_micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(ts_micros)
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_else(|| "0000-00".to_owned())
}

/// One index row, before it becomes a batch row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub chunk: i64,
    pub returned: bool,
    pub members: Vec<u8>,
}

/// The chunks of one patient set, ascending by chunk.
fn chunks(set: &roaring::RoaringTreemap, returned: bool, out: &mut Vec<Row>) {
    let mut current: Option<i64> = None;
    let mut offsets: Vec<u16> = Vec::new();
    let flush = |chunk: Option<i64>, offsets: &mut Vec<u16>, out: &mut Vec<Row>| {
        if let Some(chunk) = chunk
            && !offsets.is_empty()
        {
            offsets.sort_unstable();
            offsets.dedup();
            out.push(Row {
                chunk,
                returned,
                members: encode_members(offsets),
            });
        }
        offsets.clear();
    };
    for id in super::patients::ids(set) {
        let c = chunk_of(id);
        if current != Some(c) {
            flush(current, &mut offsets, out);
            current = Some(c);
        }
        offsets.push(offset_of(id));
    }
    flush(current, &mut offsets, out);
}

/// A reader over a serialized set.
struct Bytes<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    }
}

/// Pushes the rows of one 65,536-id container's sorted offsets.
fn push_offsets(base: i64, values: &[u16], returned: bool, out: &mut Vec<Row>) {
    let mut i = 0;
    while i < values.len() {
        let sub = values[i] >> CHUNK_BITS;
        let j = i + values[i..].partition_point(|v| v >> CHUNK_BITS == sub);
        let offsets: Vec<u16> = values[i..j]
            .iter()
            .map(|v| v & (CHUNK_IDS as u16 - 1))
            .collect();
        out.push(Row {
            chunk: chunk_of(base) + i64::from(sub),
            returned,
            members: encode_members(&offsets),
        });
        i = j;
    }
}

/// The chunks of a set straight from its portable serialization (the
/// 64-bit extension of the Roaring format), container by container: a
/// bitmap container's 512-byte slices are a dense chunk's members as they
/// are, so an aggregate over a million patients is split without visiting
/// its ids. `None` when the bytes are not a set this reader knows (the
/// caller then decodes them with the Roaring library).
fn chunks_serialized(bytes: &[u8], returned: bool, out: &mut Vec<Row>) -> Option<()> {
    const NO_RUNS: u32 = 12346;
    const RUNS: u32 = 12347;
    let mut r = Bytes { b: bytes, pos: 0 };
    let buckets = r.u64()?;
    for _ in 0..buckets {
        let high = u64::from(r.u32()?);
        let cookie = r.u32()?;
        let (n, runs) = if cookie == NO_RUNS {
            (r.u32()? as usize, None)
        } else if cookie & 0xFFFF == RUNS {
            let n = (cookie >> 16) as usize + 1;
            (n, Some(r.take(n.div_ceil(8))?))
        } else {
            return None;
        };
        let descs = r.take(n.checked_mul(4)?)?;
        if runs.is_none() || n >= 4 {
            r.take(n.checked_mul(4)?)?;
        }
        for i in 0..n {
            let key = u64::from(u16::from_le_bytes([descs[4 * i], descs[4 * i + 1]]));
            let card = usize::from(u16::from_le_bytes([descs[4 * i + 2], descs[4 * i + 3]])) + 1;
            let base = ((high << 32) | (key << 16)) as i64;
            let is_run = runs.is_some_and(|b| b[i / 8] >> (i % 8) & 1 == 1);
            if is_run {
                let count = usize::from(r.u16()?);
                let mut values: Vec<u16> = Vec::new();
                for _ in 0..count {
                    let start = r.u16()?;
                    let len = r.u16()?;
                    values.extend(
                        (u32::from(start)..=u32::from(start) + u32::from(len)).map(|v| v as u16),
                    );
                }
                push_offsets(base, &values, returned, out);
            } else if card > 4096 {
                let bits = r.take(8192)?;
                for (sub, slice) in bits.chunks_exact(BITMAP_BYTES).enumerate() {
                    let count: u32 = slice.iter().map(|b| b.count_ones()).sum();
                    if count == 0 {
                        continue;
                    }
                    let members = if count as usize <= LIST_MAX {
                        let offsets: Vec<u16> = (0..CHUNK_IDS as u16)
                            .filter(|o| slice[usize::from(*o) / 8] >> (o % 8) & 1 == 1)
                            .collect();
                        encode_members(&offsets)
                    } else {
                        slice.to_vec()
                    };
                    out.push(Row {
                        chunk: chunk_of(base) + sub as i64,
                        returned,
                        members,
                    });
                }
            } else {
                let raw = r.take(card * 2)?;
                let values: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]))
                    .collect();
                push_offsets(base, &values, returned, out);
            }
        }
    }
    (r.pos == bytes.len()).then_some(())
}

/// The rows of one set's text: from its serialization when it reads as
/// one, else through the Roaring library.
fn chunks_of_text(text: &str, returned: bool, out: &mut Vec<Row>) -> Result<(), String> {
    use base64::Engine as _;
    let before = out.len();
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.trim())
        && chunks_serialized(&bytes, returned, out).is_some()
    {
        return Ok(());
    }
    out.truncate(before);
    let set = super::patients::decode(text)?;
    chunks(&set, returned, out);
    Ok(())
}

/// The index rows of one record (none unless it is a completion with a
/// patient set). A set that does not decode is an error: the record is
/// not what lakeward wrote.
pub fn rows_of(r: &AuditRecord) -> Result<Vec<Row>, String> {
    let b = &r.body;
    let mut out = Vec::new();
    if b.event != event::COMPLETION {
        return Ok(out);
    }
    for (text, returned) in [
        (&b.patients_returned, true),
        (&b.patients_aggregated, false),
    ] {
        if let Some(text) = text {
            chunks_of_text(text, returned, &mut out)?;
        }
    }
    Ok(out)
}

/// An order-independent digest of a record's index rows: `audit verify`
/// compares the digest of the rows found in the index with the digest of
/// the rows the record implies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsDigest {
    /// The wrapping sum of the rows' SHA-256 prefixes.
    sum: u128,
    rows: u64,
}

impl RowsDigest {
    /// Adds one row.
    pub fn add(&mut self, chunk: i64, returned: bool, members: &[u8]) {
        let mut h = Sha256::new();
        h.update(chunk.to_le_bytes());
        h.update([u8::from(returned)]);
        h.update(members);
        let d = h.finalize();
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&d[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(prefix));
        self.rows += 1;
    }

    /// Rows added.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// The digest of the rows a record implies.
pub fn digest_of_record(r: &AuditRecord) -> Result<RowsDigest, String> {
    let mut d = RowsDigest::default();
    for row in rows_of(r)? {
        d.add(row.chunk, row.returned, &row.members);
    }
    Ok(d)
}

/// The index batch of `records` (rows sorted by chunk, then chain place),
/// or `None` when they imply no row. Records whose sets do not decode are
/// skipped with an error logged (their own chain hash still covers them;
/// `audit verify` reports the difference).
pub fn to_batch(records: &[AuditRecord]) -> Result<Option<RecordBatch>, String> {
    let mut all: Vec<(Row, usize)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match rows_of(r) {
            Ok(rows) => all.extend(rows.into_iter().map(|row| (row, i))),
            Err(e) => tracing::error!(
                incident = "audit_index_failed",
                seq = r.body.seq,
                error = %e,
                "a completion record's patient set cannot be indexed"
            ),
        }
    }
    if all.is_empty() {
        return Ok(None);
    }
    all.sort_by_key(|(row, i)| (row.chunk, *i));
    let n = all.len();
    let mut chunk = Int64Builder::with_capacity(n);
    let mut returned = BooleanBuilder::with_capacity(n);
    let mut members = BinaryBuilder::with_capacity(n, n * 8);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut instance = StringBuilder::with_capacity(n, n * 8);
    let mut seq = Int64Builder::with_capacity(n);
    let mut month = StringBuilder::with_capacity(n, n * 7);
    let mut months: BTreeMap<usize, String> = BTreeMap::new();
    for (row, i) in &all {
        let r = &records[*i].body;
        chunk.append_value(row.chunk);
        returned.append_value(row.returned);
        members.append_value(&row.members);
        ts.append_value(r.ts);
        instance.append_value(&r.instance);
        seq.append_value(r.seq);
        let m = months.entry(*i).or_insert_with(|| month_of(r.ts));
        month.append_value(m);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(chunk.finish()),
        Arc::new(returned.finish()),
        Arc::new(members.finish()),
        Arc::new(ts.finish()),
        Arc::new(instance.finish()),
        Arc::new(seq.finish()),
        Arc::new(month.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Index rows built by [`to_batch`] at different times, as one batch in
/// the index's order (by chunk, then record).
pub fn sorted(batches: &[RecordBatch]) -> Result<RecordBatch, String> {
    use datafusion::arrow::compute::{
        SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
    };
    if let [one] = batches {
        return Ok(one.clone());
    }
    let all = concat_batches(&schema(), batches).map_err(|e| e.to_string())?;
    let key = |name: &str| -> Result<SortColumn, String> {
        Ok(SortColumn {
            values: all
                .column_by_name(name)
                .ok_or_else(|| format!("index rows without {name}"))?
                .clone(),
            options: None,
        })
    };
    let order =
        lexsort_to_indices(&[key("chunk")?, key("seq")?], None).map_err(|e| e.to_string())?;
    take_record_batch(&all, &order).map_err(|e| e.to_string())
}

/// The binary value at `row` of a column of any Arrow binary type.
pub fn binary_at(column: &dyn Array, row: usize) -> Option<&[u8]> {
    if column.is_null(row) {
        return None;
    }
    if let Some(a) = column.as_binary_opt::<i32>() {
        return Some(a.value(row));
    }
    if let Some(a) = column.as_binary_opt::<i64>() {
        return Some(a.value(row));
    }
    column.as_binary_view_opt().map(|a| a.value(row))
}

/// The text at `row` of a string column of any Arrow string type.
pub fn text_at(column: &dyn Array, row: usize) -> Option<&str> {
    if column.is_null(row) {
        return None;
    }
    if let Some(a) = column.as_string_opt::<i32>() {
        return Some(a.value(row));
    }
    if let Some(a) = column.as_string_opt::<i64>() {
        return Some(a.value(row));
    }
    column.as_string_view_opt().map(|a| a.value(row))
}

/// How index files are written: small row groups (a lookup reads one
/// chunk's), zstd (the bitmaps of dense chunks).
fn writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::{Compression, ZstdLevel};
    deltalake::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

/// How often a serving instance compacts the index, and the files a month
/// gathers (one per shipped batch) before it is compacted.
pub const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
pub const COMPACT_MIN_FILES: usize = 32;

/// Rows per row group of index files.
const ROW_GROUP_ROWS: usize = 8192;

/// Opens (creating when absent) the patient index of the audit table at
/// `table` (its location, see [`location`]).
pub async fn open(table: &str) -> Result<AuditTable, AuditTableError> {
    Ok(
        AuditTable::open_or_create_partitioned(&location(table), schema(), &[MONTH])
            .await?
            .with_writer_properties(writer_properties()),
    )
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReindexStats {
    /// Completion records with a patient set read.
    pub records: u64,
    /// Index rows written.
    pub rows: u64,
    /// Commits made.
    pub commits: u64,
}

/// Buffered index rows before a rebuild writes them.
const REINDEX_BUFFER_BYTES: usize = 256 << 20;

/// Indexes the completion records of `instance` with `after < seq <= upto`
/// read from the audit table `log` into `index`, then claims `upto` as the
/// index's application-transaction version for the instance. Rows are
/// written in commits of about 256 MiB, each sorted by chunk; only the last
/// commit claims the version, so an interrupted rebuild is redone from
/// `after` (its partial commits are then duplicates `audit verify` reports:
/// rebuild into an empty index).
pub async fn reindex(
    log: &AuditTable,
    index: &AuditTable,
    instance: &str,
    after: i64,
    upto: i64,
) -> Result<ReindexStats, AuditTableError> {
    use datafusion::prelude::{SessionContext, col, lit};
    use futures::StreamExt;
    let df_err = |operation: &'static str| {
        let location = log.location().to_owned();
        move |source: datafusion::error::DataFusionError| AuditTableError::DataFusion {
            location,
            operation,
            source: Box::new(source),
        }
    };
    let provider = log.provider().await?;
    let ctx = SessionContext::new();
    let frame = ctx
        .read_table(provider)
        .map_err(df_err("reindex"))?
        .filter(
            col("event")
                .eq(lit(event::COMPLETION))
                .and(col("instance").eq(lit(instance)))
                .and(col("seq").gt(lit(after)))
                .and(col("seq").lt_eq(lit(upto)))
                .and(
                    col("patients_returned")
                        .is_not_null()
                        .or(col("patients_aggregated").is_not_null()),
                ),
        )
        .map_err(df_err("reindex"))?
        .select_columns(&[
            "instance",
            "seq",
            "ts",
            "patients_returned",
            "patients_aggregated",
        ])
        .map_err(df_err("reindex"))?;
    let mut stream = frame.execute_stream().await.map_err(df_err("reindex"))?;
    let mut stats = ReindexStats::default();
    let mut buffered: Vec<AuditRecord> = Vec::new();
    let mut bytes = 0usize;
    let flush = |records: Vec<AuditRecord>| async move {
        match to_batch(&records) {
            Ok(Some(batch)) => {
                let rows = batch.num_rows() as u64;
                index.append_unclaimed(vec![batch]).await?;
                Ok::<u64, AuditTableError>(rows)
            }
            Ok(None) => Ok(0),
            Err(message) => Err(AuditTableError::BatchSchema {
                location: index.location().to_owned(),
                index: 0,
                detail: message,
            }),
        }
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err("reindex"))?;
        let ts = datafusion::arrow::compute::cast(
            batch.column(2),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .map_err(|e| df_err("reindex")(e.into()))?;
        let ts = ts.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let text = |i: usize| text_at(batch.column(i).as_ref(), row).map(str::to_owned);
            let mut r = AuditRecord {
                body: super::record::RecordBody::default(),
                prev_hash: String::new(),
                hash: String::new(),
            };
            r.body.event = event::COMPLETION.to_owned();
            r.body.instance = text(0).unwrap_or_default();
            r.body.seq = batch
                .column(1)
                .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
                .map_or(0, |a| a.value(row));
            r.body.ts = ts.value(row);
            r.body.patients_returned = text(3);
            r.body.patients_aggregated = text(4);
            bytes += r.body.patients_returned.as_ref().map_or(0, String::len)
                + r.body.patients_aggregated.as_ref().map_or(0, String::len);
            buffered.push(r);
            stats.records += 1;
        }
        if bytes >= REINDEX_BUFFER_BYTES {
            stats.rows += flush(std::mem::take(&mut buffered)).await?;
            stats.commits += 1;
            bytes = 0;
        }
    }
    if !buffered.is_empty() {
        stats.rows += flush(buffered).await?;
        stats.commits += 1;
    }
    index
        .append(Vec::new(), &super::app_id(instance), upto)
        .await?;
    stats.commits += 1;
    Ok(stats)
}

/// Brings the index up to date for every instance of the audit table:
/// each instance's records shipped (its application-transaction version
/// in the table) but not indexed are indexed ([`reindex`]). Returns what
/// was done per instance.
pub async fn catch_up(
    log: &AuditTable,
    index: &AuditTable,
) -> Result<Vec<(String, ReindexStats)>, AuditTableError> {
    use datafusion::prelude::{SessionContext, col};
    use futures::StreamExt;
    let df_err = |source: datafusion::error::DataFusionError| AuditTableError::DataFusion {
        location: log.location().to_owned(),
        operation: "list instances",
        source: Box::new(source),
    };
    let ctx = SessionContext::new();
    let frame = ctx
        .read_table(log.provider().await?)
        .map_err(df_err)?
        .aggregate(vec![col("instance")], vec![])
        .map_err(df_err)?;
    let mut instances = std::collections::BTreeSet::new();
    let mut stream = frame.execute_stream().await.map_err(df_err)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err)?;
        for row in 0..batch.num_rows() {
            if let Some(i) = text_at(batch.column(0).as_ref(), row) {
                instances.insert(i.to_owned());
            }
        }
    }
    let mut done = Vec::new();
    for instance in instances {
        let app = super::app_id(&instance);
        let shipped = log.committed_version(&app).await?.unwrap_or(0);
        let indexed = index.committed_version(&app).await?.unwrap_or(0);
        if indexed < shipped {
            done.push((
                instance.clone(),
                reindex(log, index, &instance, indexed, shipped).await?,
            ));
        }
    }
    Ok(done)
}

/// Compacts every month of the index with more than `min_files` files
/// ([`compact`]). Returns (months compacted, files removed, files added).
pub async fn compact_all(
    index: &AuditTable,
    min_files: usize,
) -> Result<(u64, u64, u64), AuditTableError> {
    let mut total = (0, 0, 0);
    for (month, files) in index.partition_file_counts(MONTH).await? {
        if files > min_files.max(1) {
            let (removed, added) = compact(index, &month).await?;
            total.0 += 1;
            total.1 += removed;
            total.2 += added;
        }
    }
    Ok(total)
}

/// Z-orders the files of one month of the index at `table` by chunk (a
/// sort: one column), into files of small row groups so that a lookup's
/// statistics skip all but one chunk's rows. Returns (files removed, files
/// added). Compaction changes no row (`dataChange = false`), so an
/// append-only index allows it.
pub async fn compact(table: &AuditTable, month: &str) -> Result<(u64, u64), AuditTableError> {
    table
        .zorder_partition(MONTH, month, &["chunk"], ROW_GROUP_ROWS)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_short_and_dense() {
        let short: Vec<u16> = vec![3, 700, 4095];
        let m = encode_members(&short);
        assert_eq!(m.len(), 6);
        for id in [3_i64, 700, 4095] {
            assert!(contains(&m, 4096 * 5 + id));
        }
        assert!(!contains(&m, 4096 * 5 + 4));
        let dense: Vec<u16> = (0..4096u16).filter(|o| o % 3 != 0).collect();
        let m = encode_members(&dense);
        assert_eq!(m.len(), BITMAP_BYTES);
        assert!(contains(&m, 1));
        assert!(!contains(&m, 3));
        assert!(!contains(&encode_members(&[]), 0));
    }

    #[test]
    fn sets_split_into_chunks() {
        let set: roaring::RoaringTreemap = [1u64, 4095, 4096, 1_000_000, (-3i64) as u64]
            .into_iter()
            .collect();
        let mut rows = Vec::new();
        chunks(&set, true, &mut rows);
        let found: Vec<i64> = rows.iter().map(|r| r.chunk).collect();
        assert_eq!(found, vec![0, 1, 1_000_000 >> 12, -1]);
        for id in [1i64, 4095, 4096, 1_000_000, -3] {
            let row = rows.iter().find(|r| r.chunk == chunk_of(id)).unwrap();
            assert!(contains(&row.members, id), "{id}");
        }
        assert!(!contains(&rows[0].members, 2));
    }

    #[test]
    fn serialized_sets_split_like_decoded_ones() {
        let mut sets: Vec<roaring::RoaringTreemap> = Vec::new();
        // Arrays, a dense bitmap container with a sparse chunk, runs,
        // several buckets and negative ids.
        sets.push([1u64, 5, 4096, 70_000].into_iter().collect());
        let mut dense = roaring::RoaringTreemap::new();
        for id in 0..200_000u64 {
            if id % 17 != 0 && !(8192..12288).contains(&id) {
                dense.insert(id);
            }
        }
        dense.insert(9000);
        sets.push(dense);
        let mut runs = roaring::RoaringTreemap::new();
        runs.insert_range(10..50_000);
        runs.insert_range(1 << 33..(1 << 33) + 5000);
        runs.insert((-3i64) as u64);
        sets.push(runs);
        let mut few: roaring::RoaringTreemap = (0..300u64).map(|i| i * 13).collect();
        few.insert(1 << 40);
        sets.push(few);
        for (i, set) in sets.iter().enumerate() {
            let text = super::super::patients::encode(set).unwrap();
            let mut fast = Vec::new();
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .unwrap();
            assert!(
                chunks_serialized(&bytes, false, &mut fast).is_some(),
                "set {i}"
            );
            let mut slow = Vec::new();
            chunks(set, false, &mut slow);
            assert_eq!(fast, slow, "set {i}");
        }
        assert!(chunks_serialized(&[1, 2, 3], true, &mut Vec::new()).is_none());
    }

    #[test]
    fn rows_built_at_different_times_are_committed_in_chunk_order() {
        use super::super::record::RecordBody;
        let record = |seq: i64, ids: &[u64]| AuditRecord {
            body: RecordBody {
                seq,
                event: event::COMPLETION.into(),
                patients_returned: super::super::patients::encode(&ids.iter().copied().collect()),
                ..RecordBody::default()
            },
            prev_hash: String::new(),
            hash: String::new(),
        };
        let first = to_batch(&[record(1, &[9000, 5])]).unwrap().unwrap();
        let second = to_batch(&[record(2, &[1, 20_000])]).unwrap().unwrap();
        let all = sorted(&[first, second]).unwrap();
        let column = |name: &str| -> Vec<i64> {
            all.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        assert_eq!(column("chunk"), [0, 0, 2, 4]);
        assert_eq!(column("seq"), [1, 2, 1, 2]);
    }

    #[test]
    fn digest_is_order_independent() {
        let mut a = RowsDigest::default();
        a.add(1, true, &[1, 0]);
        a.add(2, false, &[2, 0]);
        let mut b = RowsDigest::default();
        b.add(2, false, &[2, 0]);
        b.add(1, true, &[1, 0]);
        assert_eq!(a, b);
        let mut c = RowsDigest::default();
        c.add(1, true, &[1, 0]);
        c.add(2, true, &[2, 0]);
        assert_ne!(a, c);
        assert_eq!(month_of(0), "1970-01");
    }
}
