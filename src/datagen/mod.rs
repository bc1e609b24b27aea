//! Deterministic synthetic healthcare data generator (no real PHI, ever).
//!
//! Writes five Delta tables under `<data_dir>/<schema>/<table>`:
//! `clinical.patients`, `clinical.encounters`, `clinical.observations`,
//! `claims.claims` and `governance.consents`.
//!
//! * **Deterministic**: the content (row order included) is a function of
//!   `(seed, patients)` only. Patients are generated in fixed-size chunks of
//!   [`CHUNK_PATIENTS`]; chunk `i` uses its own ChaCha8 stream seeded from
//!   `(seed, i)`, and all dates are relative to the fixed anchor 2026-01-01
//!   ([`ANCHOR_DAY`]). Generating `N` patients yields a prefix of `M > N`.
//! * **Streaming**: each chunk's batches are handed to one Delta
//!   `RecordBatchWriter` per table and flushed into one parquet file per table
//!   per chunk (so each file covers a contiguous patient_id range, which makes
//!   file statistics useful for pruning). Memory is bounded by a few chunks.
//! * **Atomic-ish**: every table is created by a single Delta commit (version 0)
//!   holding the schema *and* all data files, issued after all data is written.
//!   A failed run leaves no `_delta_log`, only unreferenced parquet files.
//!
//! * **Opaque identifiers** (SPEC §2): no id, MRN or other value is
//!   computable from another column. `patient_id` is dense (`1..=N`, in
//!   generation order: consent bitmaps rely on dense patient keys) and
//!   nothing derives from it in a way anyone can compute: MRN digits, SSN
//!   digits, the number in an e-mail address and the encounter,
//!   observation and claim ids are images of unique indexes under keyed
//!   permutations of fixed domains ([`ids`]), keyed from the seed. They are
//!   unique (a permutation never collides), deterministic, and independent
//!   of the number of patients, so prefixes stay prefixes. Record ids are
//!   therefore not sorted: a point lookup on `encounter_id` is not narrowed
//!   by file statistics, one on `patient_id` still is (rows are written
//!   patient by patient). At most [`MAX_PATIENTS`] patients (8-digit MRNs).

mod ids;
mod rows;
mod schema;
pub(crate) mod vocab;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::parquet::basic::{Compression, Encoding};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use tokio::sync::mpsc;

pub use rows::{ANCHOR_DAY, ANCHOR_TS, ChunkBatches, MAX_PATIENTS, chunk_batches, days_from_civil};

/// Options of a generation run.
#[derive(Debug, Clone)]
pub struct DatagenOptions {
    /// Root directory, or an object-store URL (`s3://bucket/lake`); tables
    /// go to `<data_dir>/<schema>/<table>`.
    pub data_dir: PathBuf,
    /// Number of patients (all other tables scale with it).
    pub patients: u64,
    /// RNG seed (the CLI default is 42).
    pub seed: u64,
}

/// Result of a generation run.
#[derive(Debug, Clone)]
pub struct DatagenReport {
    /// `("clinical.patients", rows)`, ... in [`TABLES`] order.
    pub tables: Vec<(String, u64)>,
    pub elapsed: Duration,
}

/// The five (schema, table) names, in a fixed order.
pub const TABLES: [(&str, &str); 5] = [
    ("clinical", "patients"),
    ("clinical", "encounters"),
    ("clinical", "observations"),
    ("claims", "claims"),
    ("governance", "consents"),
];

/// Patients per chunk (= per parquet file). Part of the determinism contract:
/// changing it changes the generated data.
pub const CHUNK_PATIENTS: u64 = 65_536;

/// Arrow schema of each table (used by tests and docs).
pub fn table_schema(schema: &str, table: &str) -> Option<SchemaRef> {
    match (schema, table) {
        ("clinical", "patients") => Some(schema::patients()),
        ("clinical", "encounters") => Some(schema::encounters()),
        ("clinical", "observations") => Some(schema::observations()),
        ("claims", "claims") => Some(schema::claims()),
        ("governance", "consents") => Some(schema::consents()),
        _ => None,
    }
}

/// Directory of a generated table.
pub fn table_dir(data_dir: &Path, schema: &str, table: &str) -> PathBuf {
    data_dir.join(schema).join(table)
}

/// Columns that are (nearly) unique per row: dictionary encoding would only
/// burn CPU before falling back, so it is disabled for them.
const HIGH_CARDINALITY: &[&str] = &[
    "patient_id",
    "encounter_id",
    "observation_id",
    "claim_id",
    "mrn",
    "ssn",
    "phone",
    "email",
    "admit_ts",
    "discharge_ts",
    "observed_at",
    "recorded_at",
    "expires_at",
    "billed_amount",
    "allowed_amount",
];

/// Integer id columns: delta-encoded (`patient_id` ascends, so it is tiny;
/// the record ids are keyed permutations, which still fit in ~35-43 bits).
const SORTED_IDS: &[&str] = &["patient_id", "encounter_id", "observation_id", "claim_id"];

fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_created_by(format!("lakeward datagen {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY)
        // Pages of at most 8,192 rows: a point lookup that file statistics
        // and the page index narrow to one page decodes 8,192 values per
        // column, not a whole row group.
        .set_data_page_row_count_limit(8192);
    for f in schema.fields() {
        let name = f.name().as_str();
        if HIGH_CARDINALITY.contains(&name) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(name), false);
        }
        if SORTED_IDS.contains(&name) {
            b = b.set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
        }
    }
    b.build()
}

/// Streams the batches of one table into parquet files (one per chunk) and
/// returns the resulting add actions plus the row count.
async fn write_table(
    table_url: String,
    schema: SchemaRef,
    mut rx: mpsc::Receiver<RecordBatch>,
) -> anyhow::Result<(Vec<Add>, u64)> {
    let props = writer_properties(&schema);
    let mut writer = RecordBatchWriter::try_new(&table_url, schema, None, None)
        .with_context(|| format!("opening writer for {table_url}"))?
        .with_writer_properties(props);
    let mut adds = Vec::new();
    let mut rows = 0u64;
    while let Some(batch) = rx.recv().await {
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows() as u64;
        let res = async {
            writer.write(batch).await?;
            writer.flush().await
        }
        .await;
        match res {
            Ok(a) => adds.extend(a),
            Err(e) => {
                writer.reset();
                return Err(e).with_context(|| format!("writing {table_url}"));
            }
        }
    }
    Ok((adds, rows))
}

/// Generate the five tables. Fails (before writing anything) if any of the
/// table directories already contains a `_delta_log`.
pub async fn generate(opts: &DatagenOptions) -> anyhow::Result<DatagenReport> {
    let started = Instant::now();
    if opts.patients > MAX_PATIENTS {
        bail!("at most {MAX_PATIENTS} patients (MRNs have 8 digits)");
    }

    let existing: Vec<String> = TABLES
        .iter()
        .filter(|(s, t)| table_dir(&opts.data_dir, s, t).join("_delta_log").exists())
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    if !existing.is_empty() {
        bail!(
            "Delta table(s) already exist under {}: {}",
            opts.data_dir.display(),
            existing.join(", ")
        );
    }

    let mut urls = Vec::with_capacity(TABLES.len());
    for (s, t) in TABLES {
        let root = opts.data_dir.to_string_lossy();
        if root.contains("://") {
            // Object storage: the table's URL under the root; creating a
            // table that exists there fails at commit.
            urls.push(format!("{}/{s}/{t}", root.trim_end_matches('/')));
            continue;
        }
        let dir = table_dir(&opts.data_dir, s, t);
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            tracing::warn!(
                dir = %dir.display(),
                "table directory is not empty but has no _delta_log (leftover of a failed run?); \
                 existing files are left alone and will not be part of the table"
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir_str = dir
            .to_str()
            .with_context(|| format!("non UTF-8 path {}", dir.display()))?;
        let url = deltalake::ensure_table_uri(dir_str)?;
        urls.push(url.to_string());
    }

    // One writer task per table; each consumes its batches in chunk order.
    let mut senders = Vec::with_capacity(TABLES.len());
    let mut writers = Vec::with_capacity(TABLES.len());
    for ((s, t), url) in TABLES.iter().zip(&urls) {
        let (tx, rx) = mpsc::channel::<RecordBatch>(1);
        let schema = table_schema(s, t).expect("known table");
        senders.push(tx);
        writers.push(tokio::spawn(write_table(url.clone(), schema, rx)));
    }

    // Generation runs on a blocking thread and overlaps with parquet encoding.
    let (seed, patients) = (opts.seed, opts.patients);
    let generator = tokio::task::spawn_blocking(move || {
        let chunks = patients.div_ceil(CHUNK_PATIENTS);
        for chunk in 0..chunks {
            let first = chunk * CHUNK_PATIENTS;
            let n = CHUNK_PATIENTS.min(patients - first) as usize;
            let batches = chunk_batches(seed, chunk, first as i64 + 1, n);
            tracing::debug!(chunk, chunks, "datagen chunk generated");
            for (tx, batch) in senders.iter().zip(batches.into_array()) {
                if tx.blocking_send(batch).is_err() {
                    // The writer failed; its error is reported below.
                    return;
                }
            }
            tracing::info!(
                patients_done = first + n as u64,
                patients_total = patients,
                "datagen progress"
            );
        }
    });
    let gen_result = generator.await;

    let mut written = Vec::with_capacity(TABLES.len());
    let mut first_err: Option<anyhow::Error> = None;
    for w in writers {
        match w.await {
            Ok(Ok(r)) => written.push(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::Error::new(e).context("datagen writer task"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    gen_result.context("datagen generator task")?;

    // Commit: one CREATE per table carrying the schema and all data files.
    let mut tables = Vec::with_capacity(TABLES.len());
    for (((s, t), url), (adds, rows)) in TABLES.iter().zip(urls).zip(written) {
        let schema = table_schema(s, t).expect("known table");
        let delta_schema = StructType::try_from_arrow(schema.as_ref())?;
        CreateBuilder::new()
            .with_location(url)
            .with_table_name(*t)
            .with_comment("Synthetic data generated by lakeward datagen; contains no real PHI")
            .with_columns(delta_schema.fields().cloned())
            .with_actions(adds.into_iter().map(Action::Add))
            .await
            .with_context(|| format!("committing {s}.{t}"))?;
        tables.push((format!("{s}.{t}"), rows));
    }

    let elapsed = started.elapsed();
    tracing::info!(?elapsed, patients, "datagen finished");
    Ok(DatagenReport { tables, elapsed })
}

#[cfg(test)]
mod tests;
