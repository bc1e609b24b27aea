//! The Delta table `audit.access_log`: the durable, queryable end of the
//! audit pipeline.
//!
//! Audit records are first written to the local fsync'd segment log
//! (`super::wal`) and then shipped here in batches. This module knows nothing
//! about the record columns: it is generic over the Arrow schema the caller
//! passes (the record layout is decided in `super::record`).
//!
//! * [`AuditTable`] opens (or creates, with `delta.appendOnly = true`) the
//!   table and appends batches **exactly once**: every append is a single
//!   Delta commit carrying an application transaction (`txn` action)
//!   `(app_id, version)`. The shipper of one lakeward instance uses its own
//!   `app_id` and a monotonically increasing version (e.g. the highest
//!   record `seq` of the batch); an append whose version is not above the
//!   committed one is skipped, so a batch re-shipped after a crash between
//!   the Delta commit and the local acknowledgement is not duplicated.
//! * Auditors read the table through [`crate::engine::delta::LatestDeltaProvider`]
//!   with a zero refresh interval, so they see records shipped a moment ago.
//!
//! Opening a location uses the engine's Delta helpers
//! ([`crate::engine::delta`]); this module writes.
//!
//! Error messages carry locations (with credentials and query strings
//! removed), column names and types, never row data.
//!
//! Files: `mod.rs` (this module), `tests.rs` (unit tests).

use std::fmt;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{SendableRecordBatchStream, execute_stream};
use datafusion::prelude::SessionContext;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::engine::delta::{load_existing, load_location};

/// How many times [`AuditTable::append`] tries to commit before giving up on
/// concurrent-commit conflicts (each try refreshes the table first).
pub const MAX_COMMIT_ATTEMPTS: u32 = 10;

/// Errors of the Delta side of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditTableError {
    /// The Arrow schema cannot be expressed as a Delta schema.
    #[error("audit table {location}: the Arrow schema has no Delta equivalent: {message}")]
    UnsupportedSchema {
        /// The table location.
        location: String,
        /// What could not be converted (column names and types only).
        message: String,
    },
    /// The existing table's schema differs from the expected one.
    #[error("audit table {location}: schema mismatch at column `{column}`: {detail}")]
    SchemaMismatch {
        /// The table location.
        location: String,
        /// The first differing column (in the expected column order).
        column: String,
        /// What differs.
        detail: String,
    },
    /// A batch handed to [`AuditTable::append`] does not have the table schema.
    #[error("audit table {location}: batch {index} does not have the audit schema: {detail}")]
    BatchSchema {
        /// The table location.
        location: String,
        /// Position of the offending batch in the appended `Vec`.
        index: usize,
        /// What differs (column names and types only).
        detail: String,
    },
    /// Opening or reading the table failed ([`crate::engine::delta`]).
    #[error(transparent)]
    Table(#[from] crate::engine::delta::DeltaError),
    /// A Delta operation failed.
    #[error("audit table {location}: {operation} failed: {source}")]
    Delta {
        /// The table location.
        location: String,
        /// The operation (open, create, refresh, append, ...).
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Appending kept conflicting with concurrent commits.
    #[error(
        "audit table {location}: append of {app_id} version {version} still conflicted with \
         concurrent commits after {attempts} attempts: {source}"
    )]
    ConflictRetriesExhausted {
        /// The table location.
        location: String,
        /// The application id of the append.
        app_id: String,
        /// The application transaction version of the append.
        version: i64,
        /// Number of commit attempts made.
        attempts: u32,
        /// The last conflict.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Planning or running a scan failed.
    #[error("audit table {location}: {operation} failed: {source}")]
    DataFusion {
        /// The table location.
        location: String,
        /// The operation.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<DataFusionError>,
    },
}

/// Maps a Delta error of `operation` on the audit table at `location`.
fn delta_err(
    location: &str,
    operation: &'static str,
) -> impl FnOnce(DeltaTableError) -> AuditTableError {
    let location = location.to_string();
    move |source| AuditTableError::Delta {
        location,
        operation,
        source: Box::new(source),
    }
}

/// The Delta schema of `schema`.
fn delta_schema_of(location: &str, schema: &SchemaRef) -> Result<StructType, AuditTableError> {
    StructType::try_from_arrow(schema.as_ref()).map_err(|e| AuditTableError::UnsupportedSchema {
        location: location.to_string(),
        message: e.to_string(),
    })
}

/// Checks that `actual` (the table's schema) has the columns of `expected`,
/// in the same order, with the same Delta types. Nullability is not compared.
fn check_schema(
    location: &str,
    expected: &StructType,
    actual: &StructType,
) -> Result<(), AuditTableError> {
    let mismatch = |column: &str, detail: String| AuditTableError::SchemaMismatch {
        location: location.to_string(),
        column: column.to_string(),
        detail,
    };
    let mut actual_fields = actual.fields();
    for want in expected.fields() {
        match actual_fields.next() {
            None => {
                return Err(mismatch(
                    want.name(),
                    "the table has no such column".to_string(),
                ));
            }
            Some(have) if have.name() != want.name() => {
                return Err(mismatch(
                    want.name(),
                    format!("the table has column `{}` at this position", have.name()),
                ));
            }
            Some(have) if have.data_type() != want.data_type() => {
                return Err(mismatch(
                    want.name(),
                    format!(
                        "the table has type {}, expected {}",
                        have.data_type(),
                        want.data_type()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = actual_fields.next() {
        return Err(mismatch(
            extra.name(),
            "the table has this column, the expected schema does not".to_string(),
        ));
    }
    Ok(())
}

/// Whether `e` is a lost race against another writer's commit, which a
/// refresh-and-retry can resolve.
fn is_commit_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// Backoff before commit attempt `attempt + 1` (attempt counts from 1): 20 ms
/// doubling up to 640 ms, plus up to 15 ms of jitter so that competing
/// writers spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.saturating_sub(1).min(5);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 16)
        .unwrap_or(0);
    Duration::from_millis(base + jitter)
}

/// The Delta table `audit.access_log`, generic over its Arrow schema.
///
/// All operations first bring the table to its newest version, so several
/// handles (in this process or in other lakeward instances) can share one
/// table. The handle is `Send + Sync`; share it behind an `Arc`. Operations
/// on one handle are serialized by an internal lock.
pub struct AuditTable {
    location: String,
    schema: SchemaRef,
    table: Mutex<DeltaTable>,
    /// How appended files are written (`None`: deltalake's defaults).
    writer: Option<deltalake::parquet::file::properties::WriterProperties>,
}

impl fmt::Debug for AuditTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditTable")
            .field("location", &self.location)
            .field("columns", &self.schema.fields().len())
            .finish_non_exhaustive()
    }
}

impl AuditTable {
    /// Opens the Delta table at `location` (a local directory path or a URL
    /// such as `file:///…` or `s3://…`; object stores other than the local
    /// file system need their deltalake handlers registered), creating it when
    /// absent with `schema` and the table property `delta.appendOnly = true`.
    ///
    /// When the table exists, its schema must have the same column names, in
    /// the same order, with the same (Delta) types as `schema`; otherwise
    /// [`AuditTableError::SchemaMismatch`] names the first differing column.
    /// Two processes creating the table at the same moment is fine: the loser
    /// of the creation race opens the winner's table.
    pub async fn open_or_create(
        location: &str,
        schema: SchemaRef,
    ) -> Result<AuditTable, AuditTableError> {
        Self::open_with(location, schema, true, &[]).await
    }

    /// [`open_or_create`](Self::open_or_create) for a table partitioned by
    /// `partitions` (string columns, last in `schema`), such as the patient
    /// index (`super::index`).
    pub async fn open_or_create_partitioned(
        location: &str,
        schema: SchemaRef,
        partitions: &[&str],
    ) -> Result<AuditTable, AuditTableError> {
        Self::open_with(location, schema, true, partitions).await
    }

    /// Opens the audit table at `location` without ever creating it: a
    /// location holding no Delta table is
    /// [`DeltaError::NotATable`](crate::engine::delta::DeltaError::NotATable).
    /// Readers (`lakeward audit verify`) use this, so a mistyped location
    /// fails instead of verifying a fresh, empty table.
    pub async fn open_existing(
        location: &str,
        schema: SchemaRef,
    ) -> Result<AuditTable, AuditTableError> {
        Self::open_with(location, schema, false, &[]).await
    }

    async fn open_with(
        location: &str,
        schema: SchemaRef,
        create: bool,
        partitions: &[&str],
    ) -> Result<AuditTable, AuditTableError> {
        let (mut table, shown) = if create {
            load_location(location).await?
        } else {
            load_existing(location).await?
        };
        let expected = delta_schema_of(&shown, &schema)?;
        if table.version().is_none() {
            let created = CreateBuilder::new()
                .with_log_store(table.log_store())
                .with_columns(expected.fields().cloned())
                .with_partition_columns(partitions.iter().copied())
                .with_configuration_property(TableProperty::AppendOnly, Some("true"))
                .with_comment("lakeward audit log (append-only)")
                .with_save_mode(SaveMode::Ignore)
                .await;
            match created {
                Ok(t) => {
                    tracing::info!(location = %shown, "created the Delta audit table");
                    table = t;
                }
                Err(create_err) => {
                    // Maybe another writer created it in the meantime.
                    if table.load().await.is_err() || table.version().is_none() {
                        return Err(delta_err(&shown, "create")(create_err));
                    }
                }
            }
        }
        // A table written before columns were added to the record (patient
        // accounting) gains them: the old columns must match as they are.
        let missing: Vec<_> = {
            let state = table.snapshot().map_err(delta_err(&shown, "open"))?;
            let have = state.schema().fields().count();
            let prefix =
                StructType::try_new(expected.fields().take(have).cloned()).map_err(|e| {
                    AuditTableError::UnsupportedSchema {
                        location: shown.clone(),
                        message: e.to_string(),
                    }
                })?;
            check_schema(&shown, &prefix, state.schema().as_ref())?;
            expected.fields().skip(have).cloned().collect()
        };
        if !missing.is_empty() {
            match table.clone().add_columns().with_fields(missing).await {
                Ok(t) => {
                    tracing::info!(location = %shown, "added the new record columns to the Delta audit table");
                    table = t;
                }
                Err(e) => {
                    // Another instance may have added them meanwhile.
                    table.load().await.map_err(delta_err(&shown, "open"))?;
                    tracing::debug!(location = %shown, error = %e, "adding record columns");
                }
            }
        }
        let state = table.snapshot().map_err(delta_err(&shown, "open"))?;
        check_schema(&shown, &expected, state.schema().as_ref())?;
        let append_only = state
            .metadata()
            .configuration()
            .get(TableProperty::AppendOnly.as_ref())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !append_only {
            tracing::warn!(
                location = %shown,
                "the Delta audit table is not append-only (delta.appendOnly is not true)"
            );
        }
        Ok(AuditTable {
            location: shown,
            schema,
            table: Mutex::new(table),
            writer: None,
        })
    }

    /// Writes appended files with `props` (row group size, compression).
    pub fn with_writer_properties(
        mut self,
        props: deltalake::parquet::file::properties::WriterProperties,
    ) -> AuditTable {
        self.writer = Some(props);
        self
    }

    /// A DataFusion provider over the newest snapshot (for filtered reads).
    pub async fn provider(
        &self,
    ) -> Result<std::sync::Arc<dyn datafusion::catalog::TableProvider>, AuditTableError> {
        let mut table = self.table.lock().await;
        self.refresh(&mut table).await?;
        table
            .table_provider()
            .await
            .map_err(|source| AuditTableError::DataFusion {
                location: self.location.clone(),
                operation: "scan planning",
                source: Box::new(source),
            })
    }

    /// The table location, as shown in messages (URLs without credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The Arrow schema of the table's records (as passed at opening).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Brings `table` to the newest committed version.
    async fn refresh(&self, table: &mut DeltaTable) -> Result<(), AuditTableError> {
        table
            .update_incremental(None)
            .await
            .map_err(delta_err(&self.location, "refresh"))
    }

    /// The application-transaction version of `app_id` in the loaded state.
    async fn txn_version(
        &self,
        table: &DeltaTable,
        app_id: &str,
    ) -> Result<Option<i64>, AuditTableError> {
        let state = table
            .snapshot()
            .map_err(delta_err(&self.location, "read application transaction"))?;
        state
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(delta_err(&self.location, "read application transaction"))
    }

    /// The highest application-transaction version committed for `app_id`
    /// (Delta `txn` action), or `None` when `app_id` never committed. Always
    /// reads the newest table version first.
    pub async fn committed_version(&self, app_id: &str) -> Result<Option<i64>, AuditTableError> {
        let mut table = self.table.lock().await;
        self.refresh(&mut table).await?;
        self.txn_version(&table, app_id).await
    }

    /// The current (newest) Delta table version.
    pub async fn version(&self) -> Result<i64, AuditTableError> {
        let mut table = self.table.lock().await;
        self.refresh(&mut table).await?;
        let version = table
            .snapshot()
            .map_err(delta_err(&self.location, "read version"))?
            .version();
        Ok(i64::try_from(version).unwrap_or(i64::MAX))
    }

    /// Rebuilds `batches` on the table schema, checking column names and types.
    fn conform(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, AuditTableError> {
        let bad = |index: usize, detail: String| AuditTableError::BatchSchema {
            location: self.location.clone(),
            index,
            detail,
        };
        let want = self.schema.fields();
        let mut out = Vec::with_capacity(batches.len().max(1));
        for (index, batch) in batches.into_iter().enumerate() {
            let have_schema = batch.schema();
            let have = have_schema.fields();
            if have.len() != want.len() {
                return Err(bad(
                    index,
                    format!("{} columns, expected {}", have.len(), want.len()),
                ));
            }
            for (h, w) in have.iter().zip(want.iter()) {
                if h.name() != w.name() || h.data_type() != w.data_type() {
                    return Err(bad(
                        index,
                        format!(
                            "column `{}` of type {}, expected `{}` of type {}",
                            h.name(),
                            h.data_type(),
                            w.name(),
                            w.data_type()
                        ),
                    ));
                }
            }
            let rebuilt = RecordBatch::try_new_with_options(
                self.schema.clone(),
                batch.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )
            .map_err(|e| bad(index, e.to_string()))?;
            out.push(rebuilt);
        }
        if out.is_empty() {
            // Still commit the transaction so the version advances.
            out.push(RecordBatch::new_empty(self.schema.clone()));
        }
        Ok(out)
    }

    /// Appends `batches` (all with the table schema) in **one** Delta commit
    /// carrying the application transaction `(app_id, version)`.
    ///
    /// Exactly-once: when `committed_version(app_id) >= version` already,
    /// nothing is written and `Ok(false)` is returned. Concurrent commits of
    /// other writers are retried (refreshing and re-checking the transaction
    /// version each time, at most [`MAX_COMMIT_ATTEMPTS`] times with a small
    /// backoff). Returns `Ok(true)` once committed. An empty `batches` commits
    /// the transaction alone.
    ///
    /// A failed attempt may leave unreferenced data files in the table
    /// directory (never part of the table; `VACUUM` removes them).
    pub async fn append(
        &self,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<bool, AuditTableError> {
        self.commit(batches, Some((app_id, version))).await
    }

    /// Appends `batches` in one commit that claims no application
    /// transaction (a rebuild writing in several commits claims its version
    /// with its last [`append`](Self::append)).
    pub async fn append_unclaimed(&self, batches: Vec<RecordBatch>) -> Result<(), AuditTableError> {
        self.commit(batches, None).await.map(|_| ())
    }

    async fn commit(
        &self,
        batches: Vec<RecordBatch>,
        txn: Option<(&str, i64)>,
    ) -> Result<bool, AuditTableError> {
        let (app_id, version) = txn.unwrap_or(("", 0));
        let batches = self.conform(batches)?;
        let mut table = self.table.lock().await;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.refresh(&mut table).await?;
            if txn.is_some()
                && let Some(committed) = self.txn_version(&table, app_id).await?
                && committed >= version
            {
                tracing::debug!(
                    location = %self.location,
                    app_id,
                    version,
                    committed,
                    "audit batch already committed; skipped"
                );
                return Ok(false);
            }
            let props = match txn {
                Some(_) => CommitProperties::default()
                    .with_application_transaction(Transaction::new(app_id, version)),
                None => CommitProperties::default(),
            };
            let mut write = table
                .clone()
                .write(batches.iter().cloned())
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(props);
            if let Some(w) = &self.writer {
                write = write.with_writer_properties(w.clone());
            }
            let result = write.await;
            match result {
                Ok(updated) => {
                    *table = updated;
                    return Ok(true);
                }
                Err(e) if is_commit_conflict(&e) => {
                    if attempt >= MAX_COMMIT_ATTEMPTS {
                        return Err(AuditTableError::ConflictRetriesExhausted {
                            location: self.location.clone(),
                            app_id: app_id.to_string(),
                            version,
                            attempts: attempt,
                            source: Box::new(e),
                        });
                    }
                    tracing::debug!(
                        location = %self.location,
                        app_id,
                        version,
                        attempt,
                        error = %e,
                        "audit append conflicted with a concurrent commit; retrying"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(delta_err(&self.location, "append")(e)),
            }
        }
    }

    /// The number of data files of each value of the partition column
    /// `column` in the newest snapshot.
    pub async fn partition_file_counts(
        &self,
        column: &str,
    ) -> Result<std::collections::BTreeMap<String, usize>, AuditTableError> {
        let mut table = self.table.lock().await;
        self.refresh(&mut table).await?;
        let state = table
            .snapshot()
            .map_err(delta_err(&self.location, "list files"))?;
        let mut counts = std::collections::BTreeMap::new();
        for file in state.log_data().iter() {
            let value = file
                .partition_values_map()
                .get(column)
                .cloned()
                .flatten()
                .unwrap_or_default();
            *counts.entry(value).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Rewrites the files of one partition (`column = value`) Z-ordered by
    /// `columns`, in row groups of `row_group_rows` rows (a compaction:
    /// `dataChange = false`, allowed on an append-only table). Returns
    /// (files removed, files added).
    pub async fn zorder_partition(
        &self,
        column: &str,
        value: &str,
        columns: &[&str],
        row_group_rows: usize,
    ) -> Result<(u64, u64), AuditTableError> {
        use deltalake::kernel::schema::partitions::{FilterOp, FilterValue};
        use deltalake::operations::optimize::OptimizeType;
        use deltalake::parquet::basic::{Compression, ZstdLevel};
        use deltalake::parquet::file::properties::WriterProperties;
        // Appends go on meanwhile (they conflict with no file compaction
        // removes); the next refresh sees the compacted files.
        let table = {
            let mut table = self.table.lock().await;
            self.refresh(&mut table).await?;
            table.clone()
        };
        let filters = [(column, FilterOp::Eq, FilterValue::Scalar(value))];
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows.max(1024)))
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let (_, metrics) = table
            .optimize()
            .with_type(OptimizeType::ZOrder(
                columns.iter().map(|c| (*c).to_owned()).collect(),
            ))
            .with_filters(&filters)
            .with_writer_properties(props)
            .await
            .map_err(delta_err(&self.location, "compact"))?;
        Ok((metrics.num_files_removed, metrics.num_files_added))
    }

    /// Streams every row of the newest snapshot as record batches with
    /// [`Self::schema`] (column types are cast back from what the Parquet
    /// reader produces, e.g. string views). Row order is unspecified.
    pub async fn scan(&self) -> Result<SendableRecordBatchStream, AuditTableError> {
        let provider = self.provider().await?;
        let df_err = |operation: &'static str| {
            let location = self.location.clone();
            move |source| AuditTableError::DataFusion {
                location,
                operation,
                source: Box::new(source),
            }
        };
        let ctx = SessionContext::new();
        let state = ctx.state();
        let plan = provider
            .scan(&state, None, &[], None)
            .await
            .map_err(df_err("scan planning"))?;
        let stream = execute_stream(plan, ctx.task_ctx()).map_err(df_err("scan"))?;
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let converted = stream.map(move |batch| conform_scanned(&schema, batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            out_schema, converted,
        )))
    }
}

/// Casts a scanned batch (columns in table order) to `schema`.
fn conform_scanned(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, DataFusionError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let idx = batch.schema().index_of(field.name())?;
        let column = batch.column(idx);
        if column.data_type() == field.data_type() {
            columns.push(column.clone());
        } else {
            columns.push(cast(column, field.data_type())?);
        }
    }
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

#[cfg(test)]
mod tests;
