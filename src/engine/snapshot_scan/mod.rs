//! lakeward's scan of one Delta snapshot.
//!
//! deltalake's provider replays the snapshot's file actions through the
//! Delta kernel and parses their JSON statistics on every scan. For a point
//! lookup that replay costs more than reading the one page that holds the
//! row. [`SnapshotScan`] does that work once per table version instead:
//!
//! - the file list (path, size, modification time) and each file's
//!   statistics (row count, per-column minimum, maximum and null count) are
//!   read from the snapshot when the version is loaded;
//! - at scan time, the pushed filters are turned into a DataFusion
//!   [`PruningPredicate`] evaluated over those statistics in memory, so files
//!   that cannot hold a matching row are never opened;
//! - a key probe (`key = constant`, `key IN (…)` on a policy lookup key)
//!   asks the table's key indexes ([`crate::engine::lookup`]) which rows of
//!   each file may hold those keys: files holding none are not opened,
//!   the others are read with a row selection (only the pages holding
//!   those rows, through the offset index), or taken from the hot-row
//!   cache when every file's rows are in memory;
//! - the remaining files are read by DataFusion's Parquet source with the
//!   same predicate (row-group and page-index pruning), through the runtime's
//!   file metadata cache, so a footer and its page index are fetched once per
//!   file rather than once per statement.
//!
//! Only plain tables take this path: reader protocol version 1, or 3 with
//! no reader feature but `timestampNtz` and `typeWidening` (no column
//! mapping, no deletion vectors), no partition columns, and file paths
//! inside the table folder.
//! Any other table is served by deltalake's own provider
//! ([`SnapshotScan::try_new`] says why).
//!
//! Statistics are only used to skip files, never to answer a query, and only
//! where Delta's bounds are safe for that: integer and date columns as
//! written, timestamps widened by a millisecond (Delta stores them truncated
//! to milliseconds). String bounds may be truncated prefixes, so string
//! columns are not pruned on. The filters stay `Inexact`: DataFusion still
//! applies every predicate to every row read.
//!
//! Files:
//!
//! - `mod.rs`: [`SnapshotScan`], its eligibility check, the file list and
//!   the scan.
//! - `stats.rs`: the files' Delta statistics as DataFusion pruning
//!   statistics, and which column types are pruned on.
//! - `float_safe.rs`: [`FloatSafe`] and the plan node that keeps
//!   conditions on float columns away from Parquet pruning.
//! - `tests.rs`: unit tests.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetRowSelection,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectMeta, ObjectStore};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;

mod float_safe;
mod stats;

pub(crate) use float_safe::FloatSafe;
pub(crate) use float_safe::NoFloatPruning;
use float_safe::mentions_float;
use stats::{FileStatistics, file_statistics};

/// One data file of the snapshot.
#[derive(Debug)]
pub(crate) struct DataFile {
    pub(crate) meta: ObjectMeta,
    /// Rows, from the file's Delta statistics.
    pub(crate) rows: Option<u64>,
}

/// One snapshot version's data files and how to read them: what the scan
/// and the key-index builder ([`crate::engine::lookup`]) share.
#[derive(Debug)]
pub(crate) struct VersionFiles {
    pub(crate) schema: SchemaRef,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    pub(crate) files: Vec<DataFile>,
}

/// A table provider over one Delta snapshot version with its file list and
/// statistics in memory (see the module documentation).
#[derive(Debug)]
pub(crate) struct SnapshotScan {
    version: Arc<VersionFiles>,
    stats: FileStatistics,
    /// The table's key indexes and hot rows (point lookups).
    lookup: Option<Arc<crate::engine::lookup::TableLookup>>,
}

/// Why a snapshot is left to deltalake's provider.
pub(crate) type Ineligible = String;

/// Reader features that only name a column type the Parquet reader decodes
/// as it is: a table that needs no other feature is read by this scan.
/// `timestampNtz` (timestamps without a time zone, as the demo's clinical
/// tables have) changes how a column is typed, not which files or rows
/// belong to the snapshot. `typeWidening` (byte → short → int → long,
/// float → double, wider decimals, date → timestamp_ntz) leaves older files
/// with the narrower Parquet type, which the Parquet reader casts to the
/// table's type; their statistics are parsed as the table's type, and a
/// bound that does not parse is unknown (the file is read). deltalake's
/// own scan does not read `typeWidening` tables.
const PLAIN_READER_FEATURES: &[&str] = &["timestampNtz", "typeWidening"];

impl SnapshotScan {
    /// The scan of `table`'s loaded snapshot with the Arrow `schema` the
    /// table is served with, or why this table needs deltalake's provider.
    pub(crate) fn try_new(
        table: &DeltaTable,
        schema: SchemaRef,
        lookup: Option<&Arc<crate::engine::lookup::TableLookup>>,
    ) -> std::result::Result<Self, Ineligible> {
        let state = table
            .snapshot()
            .map_err(|_| "no snapshot loaded".to_string())?;
        let protocol = state.protocol();
        let features: Vec<String> = protocol
            .reader_features()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        let plain = match protocol.min_reader_version() {
            1 => features.is_empty(),
            3 => features
                .iter()
                .all(|f| PLAIN_READER_FEATURES.contains(&f.as_str())),
            _ => false,
        };
        if !plain {
            return Err(format!(
                "reader protocol version {} with reader features [{}] (column mapping, deletion vectors or another feature this scan does not implement)",
                protocol.min_reader_version(),
                features.join(", ")
            ));
        }
        if !state.metadata().partition_columns().is_empty() {
            return Err("partitioned table".into());
        }
        let log_store = table.log_store();
        let mut root = log_store.root_url().clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let store_url = ObjectStoreUrl::parse(&root[..url::Position::BeforePath])
            .map_err(|_| "table root is not an object store URL".to_string())?;

        let mut files = Vec::new();
        let mut stats_json = Vec::new();
        for view in state.log_data().iter() {
            if view.deletion_vector_descriptor().is_some() {
                return Err("a file has a deletion vector".into());
            }
            let path = view.path();
            if !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '='))
                || path.starts_with('/')
                || path
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err("a file path outside the plain table layout".into());
            }
            let url = root.join(&path).map_err(|_| {
                "a file path that does not resolve under the table root".to_string()
            })?;
            let location = StorePath::from_url_path(url.path())
                .map_err(|_| "a file path that is not an object store path".to_string())?;
            let size =
                u64::try_from(view.size()).map_err(|_| "a negative file size".to_string())?;
            let last_modified = chrono::DateTime::from_timestamp_millis(view.modification_time())
                .unwrap_or_default();
            let parsed: Option<serde_json::Value> =
                view.stats().and_then(|s| serde_json::from_str(&s).ok());
            let rows = parsed
                .as_ref()
                .and_then(|v| v.get("numRecords"))
                .and_then(serde_json::Value::as_u64);
            files.push(DataFile {
                meta: ObjectMeta {
                    location,
                    last_modified,
                    size,
                    e_tag: None,
                    version: None,
                },
                rows,
            });
            stats_json.push(parsed);
        }
        let stats = file_statistics(&schema, &stats_json);
        let version = Arc::new(VersionFiles {
            schema,
            store_url,
            store: log_store.root_object_store(None),
            files,
        });
        if let Some(l) = lookup {
            l.version_loaded(&version);
        }
        Ok(SnapshotScan {
            version,
            stats,
            lookup: lookup.cloned(),
        })
    }

    /// The snapshot's data files (for per-file reads).
    pub(crate) fn version_files(&self) -> &Arc<VersionFiles> {
        &self.version
    }

    /// Number of data files in the snapshot.
    pub(crate) fn file_count(&self) -> usize {
        self.version.files.len()
    }

    /// Which files may hold rows matching `predicate` (all when unknown).
    fn keep(&self, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Vec<bool> {
        let all = || vec![true; self.version.files.len()];
        let Some(predicate) = predicate else {
            return all();
        };
        if self.version.files.is_empty() {
            return all();
        }
        match PruningPredicateBuilder::new()
            .with_file_schema(self.version.schema.clone())
            .try_build(predicate.clone())
            .and_then(|p| p.prune(&self.stats))
        {
            Ok(keep) if keep.len() == self.version.files.len() => keep,
            _ => all(),
        }
    }

    fn statistics_of<'a>(&self, files: impl Iterator<Item = &'a DataFile>) -> Statistics {
        let mut stats = Statistics::new_unknown(&self.version.schema);
        let (mut rows, mut bytes, mut rows_known) = (0usize, 0usize, true);
        for f in files {
            match f.rows {
                Some(r) => rows = rows.saturating_add(usize::try_from(r).unwrap_or(usize::MAX)),
                None => rows_known = false,
            }
            bytes = bytes.saturating_add(usize::try_from(f.meta.size).unwrap_or(usize::MAX));
        }
        if rows_known {
            stats.num_rows = Precision::Inexact(rows);
        }
        stats.total_byte_size = Precision::Inexact(bytes);
        stats
    }
}

#[async_trait]
impl TableProvider for SnapshotScan {
    fn schema(&self) -> SchemaRef {
        self.version.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics_of(self.version.files.iter()))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The filters as one physical predicate over the file schema. One
        // that cannot be planned here prunes nothing (DataFusion still
        // applies it above the scan).
        let version = &self.version;
        let df_schema = DFSchema::try_from(version.schema.clone())?;
        let predicate = conjunction(filters.iter().cloned().map(unnormalize_col))
            .and_then(|e| state.create_physical_expr(e, &df_schema).ok());
        let keep = self.keep(predicate.as_ref());
        let mut selected: Vec<&DataFile> = version
            .files
            .iter()
            .zip(&keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect();
        // Key probes: the rows each file's key index names.
        let mut hits = self.lookup.as_ref().and_then(|l| {
            let probes = crate::engine::lookup::keys::probes(filters);
            if probes.is_empty() {
                return None;
            }
            let paths: Vec<(&StorePath, u64)> = selected
                .iter()
                .map(|f| (&f.meta.location, f.meta.size))
                .collect();
            l.select(&probes, &paths)
        });
        if let Some(h) = &mut hits {
            // Files the index says hold none of the keys are not read.
            let mut i = 0;
            selected.retain(|_| {
                let hit = &h[i];
                i += 1;
                hit.as_ref().is_none_or(|hit| !hit.rows.is_empty())
            });
            h.retain(|hit| hit.as_ref().is_none_or(|hit| !hit.rows.is_empty()));
        }
        let projected = match projection {
            Some(p) => Arc::new(version.schema.project(p)?),
            None => version.schema.clone(),
        };
        if selected.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // Every file's rows are in memory: no file is opened.
        if let Some(h) = &hits
            && limit.is_none()
            && let Some(batches) = cached_rows(h, projection)
        {
            return Ok(MemorySourceConfig::try_new_exec(
                &[batches],
                projected,
                None,
            )?);
        }
        let statistics = self.statistics_of(selected.iter().copied());
        let files: Vec<PartitionedFile> = selected
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let file = version.partitioned_file(f);
                match hits.as_ref().and_then(|h| h[i].as_ref()) {
                    Some(hit) => file.with_extension(ParquetRowSelection::new(row_selection(
                        &hit.rows, hit.total,
                    ))),
                    None => file,
                }
            })
            .collect();
        let groups = FileGroup::new(files).split_files(state.config().target_partitions().max(1));
        let mut source = version.parquet_source(state)?;
        // Parquet's row-group and page statistics leave NaN out of a float
        // column's bounds, and DataFusion's pruning compares `min <= NaN <=
        // max` in total order, dropping row groups that `= 'NaN'` (true for
        // NaN, as in PostgreSQL) matches: conditions on float columns prune
        // nothing here (they are still applied above the scan).
        let parquet_predicate = conjunction(
            filters
                .iter()
                .flat_map(datafusion::logical_expr::utils::split_conjunction)
                .filter(|e| !self.mentions_float(e))
                .cloned()
                .map(unnormalize_col),
        )
        .and_then(|e| state.create_physical_expr(e, &df_schema).ok());
        if let Some(p) = parquet_predicate {
            source = source.with_predicate(p);
        }
        let config = FileScanConfigBuilder::new(version.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(Arc::new(NoFloatPruning::new(
            DataSourceExec::from_data_source(config),
        )))
    }
}

/// The named rows of every file, projected, when every file's rows are
/// cached.
fn cached_rows(
    hits: &[Option<crate::engine::lookup::Hit>],
    projection: Option<&Vec<usize>>,
) -> Option<Vec<RecordBatch>> {
    hits.iter()
        .map(|hit| {
            let hit = hit.as_ref()?;
            let all = hit.cached.as_ref()?;
            let all = match projection {
                Some(p) => all.project(p).ok()?,
                None => all.clone(),
            };
            let rows = UInt32Array::from(hit.rows.clone());
            take_record_batch(&all, &rows).ok()
        })
        .collect()
}

/// A selection of `rows` (ascending) out of a file of `total` rows.
fn row_selection(rows: &[u32], total: u64) -> RowSelection {
    let mut selectors = Vec::with_capacity(rows.len() * 2 + 1);
    let mut at: u64 = 0;
    for &r in rows {
        let r = u64::from(r);
        if r >= total {
            break;
        }
        if r > at {
            selectors.push(RowSelector::skip((r - at) as usize));
        }
        selectors.push(RowSelector::select(1));
        at = r + 1;
    }
    if total > at {
        selectors.push(RowSelector::skip((total - at) as usize));
    }
    RowSelection::from(selectors)
}

impl VersionFiles {
    /// A data file as DataFusion's file source takes it.
    fn partitioned_file(&self, f: &DataFile) -> PartitionedFile {
        let mut stats = Statistics::new_unknown(&self.schema);
        if let Some(r) = f.rows {
            stats.num_rows = Precision::Inexact(usize::try_from(r).unwrap_or(usize::MAX));
        }
        PartitionedFile::new_from_meta(f.meta.clone()).with_statistics(Arc::new(stats))
    }

    /// Register the store this version's files are read from with
    /// `runtime`, under the URL the scan's plans name: a process that runs
    /// decoded plans without planning the scan itself (a `lakeward
    /// worker`) reads the files through it.
    pub(crate) fn register_store(&self, runtime: &datafusion::execution::runtime_env::RuntimeEnv) {
        if runtime.object_store(&self.store_url).is_err() {
            runtime.register_object_store(self.store_url.as_ref(), self.store.clone());
        }
    }

    /// The Parquet source every read of this version goes through: the
    /// runtime's footer and page-index cache, the page index on.
    fn parquet_source(&self, state: &dyn Session) -> Result<ParquetSource> {
        let runtime = state.runtime_env();
        self.register_store(runtime);
        let store = runtime.object_store(&self.store_url)?;
        let options = state.default_table_options().parquet;
        let hint = options.global.metadata_size_hint;
        let reader = CachedParquetFileReaderFactory::new(
            store,
            runtime.cache_manager.get_file_metadata_cache(),
        );
        let mut source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(options)
            .with_enable_page_index(true)
            .with_parquet_file_reader_factory(Arc::new(reader));
        if let Some(h) = hint {
            source = source.with_metadata_size_hint(h);
        }
        Ok(source)
    }

    /// Every row of file `index`, in file order, in one partition, with
    /// the table's schema (the columns `projection` names): what the key
    /// index builder reads.
    pub(crate) async fn read_file(
        &self,
        state: &dyn Session,
        index: usize,
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let f = self.files.get(index).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("no such data file".into())
        })?;
        let source = self.parquet_source(state)?;
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(vec![FileGroup::new(vec![self.partitioned_file(f)])])
            .with_projection_indices(projection.cloned())?
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

impl SnapshotScan {
    /// Whether `e` reads a floating-point column.
    fn mentions_float(&self, e: &Expr) -> bool {
        mentions_float(&self.version.schema, e)
    }
}

#[cfg(test)]
pub(crate) mod tests;
