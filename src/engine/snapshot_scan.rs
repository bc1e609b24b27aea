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

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectMeta, ObjectStore};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;

/// One data file of the snapshot.
#[derive(Debug)]
struct DataFile {
    meta: ObjectMeta,
    rows: Option<u64>,
}

/// Per-column bounds of every file, in file order (a null entry: unknown).
#[derive(Debug)]
struct ColumnBounds {
    min: ArrayRef,
    max: ArrayRef,
    nulls: ArrayRef,
}

/// The statistics of every file, as [`PruningStatistics`] over "one
/// container per file".
#[derive(Debug)]
struct FileStatistics {
    files: usize,
    columns: HashMap<String, ColumnBounds>,
    rows: ArrayRef,
}

impl PruningStatistics for FileStatistics {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.columns.get(column.name()).map(|c| c.min.clone())
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.columns.get(column.name()).map(|c| c.max.clone())
    }

    fn num_containers(&self) -> usize {
        self.files
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.columns.get(column.name()).map(|c| c.nulls.clone())
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(self.rows.clone())
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// A table provider over one Delta snapshot version with its file list and
/// statistics in memory (see the module documentation).
#[derive(Debug)]
pub struct SnapshotScan {
    schema: SchemaRef,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    files: Vec<DataFile>,
    stats: FileStatistics,
}

/// Why a snapshot is left to deltalake's provider.
pub type Ineligible = String;

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
    pub fn try_new(table: &DeltaTable, schema: SchemaRef) -> std::result::Result<Self, Ineligible> {
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
        Ok(SnapshotScan {
            schema,
            store_url,
            store: log_store.root_object_store(None),
            files,
            stats,
        })
    }

    /// Number of data files in the snapshot.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Which files may hold rows matching `predicate` (all when unknown).
    fn keep(&self, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Vec<bool> {
        let all = || vec![true; self.files.len()];
        let Some(predicate) = predicate else {
            return all();
        };
        if self.files.is_empty() {
            return all();
        }
        match PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .try_build(predicate.clone())
            .and_then(|p| p.prune(&self.stats))
        {
            Ok(keep) if keep.len() == self.files.len() => keep,
            _ => all(),
        }
    }

    fn statistics_of<'a>(&self, files: impl Iterator<Item = &'a DataFile>) -> Statistics {
        let mut stats = Statistics::new_unknown(&self.schema);
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

/// The per-column bounds of `files` (their parsed Delta statistics) for the
/// columns whose Delta bounds are safe to prune on.
fn file_statistics(schema: &SchemaRef, files: &[Option<serde_json::Value>]) -> FileStatistics {
    let rows: ArrayRef = Arc::new(UInt64Array::from_iter(files.iter().map(|f| {
        f.as_ref()
            .and_then(|v| v.get("numRecords"))
            .and_then(serde_json::Value::as_u64)
    })));
    let mut columns = HashMap::new();
    if files.is_empty() {
        return FileStatistics {
            files: 0,
            columns,
            rows,
        };
    }
    for field in schema.fields() {
        let dt = field.data_type();
        if !prunable(dt) {
            continue;
        }
        let name = field.name();
        let stat = |kind: &str, f: &Option<serde_json::Value>| {
            f.as_ref()
                .and_then(|v| v.get(kind))
                .and_then(|m| m.get(name.as_str()))
                .cloned()
        };
        let bound = |kind: &str, upper: bool| -> Option<ArrayRef> {
            let values = files.iter().map(|f| {
                stat(kind, f)
                    .and_then(|v| scalar(dt, &v, upper))
                    .map_or_else(|| ScalarValue::try_new_null(dt), Ok)
            });
            let values: Result<Vec<_>> = values.collect();
            values.ok().and_then(|v| ScalarValue::iter_to_array(v).ok())
        };
        let (Some(min), Some(max)) = (bound("minValues", false), bound("maxValues", true)) else {
            continue;
        };
        let nulls: ArrayRef = Arc::new(UInt64Array::from_iter(
            files
                .iter()
                .map(|f| stat("nullCount", f).and_then(|v| v.as_u64())),
        ));
        columns.insert(name.clone(), ColumnBounds { min, max, nulls });
    }
    FileStatistics {
        files: files.len(),
        columns,
        rows,
    }
}

/// Column types whose Delta statistics bound every value of the file.
fn prunable(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Microsecond, _)
    )
}

/// A Delta statistics value as a scalar of `dt`; an upper bound of a
/// timestamp is widened to the end of its millisecond.
fn scalar(dt: &DataType, v: &serde_json::Value, upper: bool) -> Option<ScalarValue> {
    Some(match dt {
        DataType::Int8 => ScalarValue::Int8(Some(i8::try_from(v.as_i64()?).ok()?)),
        DataType::Int16 => ScalarValue::Int16(Some(i16::try_from(v.as_i64()?).ok()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i32::try_from(v.as_i64()?).ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(v.as_i64()?)),
        DataType::UInt8 => ScalarValue::UInt8(Some(u8::try_from(v.as_u64()?).ok()?)),
        DataType::UInt16 => ScalarValue::UInt16(Some(u16::try_from(v.as_u64()?).ok()?)),
        DataType::UInt32 => ScalarValue::UInt32(Some(u32::try_from(v.as_u64()?).ok()?)),
        DataType::UInt64 => ScalarValue::UInt64(Some(v.as_u64()?)),
        DataType::Date32 => {
            let d = chrono::NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d").ok()?;
            let days = d
                .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?)
                .num_days();
            ScalarValue::Date32(Some(i32::try_from(days).ok()?))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let text = v.as_str()?;
            // With a time zone Delta writes RFC 3339 (`…Z`); without one
            // (`timestampNtz`) the wall-clock time with no offset, as
            // `2021-01-02 04:41:01.244`. A wall-clock bound with an offset
            // other than `Z` would be ambiguous: it is unknown, not shifted.
            let micros = match tz {
                Some(_) => chrono::DateTime::parse_from_rfc3339(text)
                    .ok()?
                    .timestamp_micros(),
                None => {
                    let text = text.strip_suffix('Z').unwrap_or(text);
                    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                        .iter()
                        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())?
                        .and_utc()
                        .timestamp_micros()
                }
            };
            let micros = if upper {
                micros.checked_add(999)?
            } else {
                micros
            };
            ScalarValue::TimestampMicrosecond(Some(micros), tz.clone())
        }
        _ => return None,
    })
}

#[async_trait]
impl TableProvider for SnapshotScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        Some(self.statistics_of(self.files.iter()))
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
        let df_schema = DFSchema::try_from(self.schema.clone())?;
        let predicate = conjunction(filters.iter().cloned().map(unnormalize_col))
            .and_then(|e| state.create_physical_expr(e, &df_schema).ok());
        let keep = self.keep(predicate.as_ref());
        let selected: Vec<&DataFile> = self
            .files
            .iter()
            .zip(&keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect();
        if selected.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let statistics = self.statistics_of(selected.iter().copied());
        let files: Vec<PartitionedFile> = selected
            .iter()
            .map(|f| {
                let mut stats = Statistics::new_unknown(&self.schema);
                if let Some(r) = f.rows {
                    stats.num_rows = Precision::Inexact(usize::try_from(r).unwrap_or(usize::MAX));
                }
                PartitionedFile::new_from_meta(f.meta.clone()).with_statistics(Arc::new(stats))
            })
            .collect();
        let groups = FileGroup::new(files).split_files(state.config().target_partitions().max(1));

        let runtime = state.runtime_env();
        if runtime.object_store(&self.store_url).is_err() {
            runtime.register_object_store(self.store_url.as_ref(), self.store.clone());
        }
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
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
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

impl SnapshotScan {
    /// Whether `e` reads a floating-point column.
    fn mentions_float(&self, e: &Expr) -> bool {
        mentions_float(&self.schema, e)
    }
}

/// Whether `e` reads a floating-point column of `schema`.
fn mentions_float(schema: &SchemaRef, e: &Expr) -> bool {
    e.column_refs().iter().any(|c| {
        schema
            .field_with_name(&c.name)
            .is_ok_and(|f| is_float(f.data_type()))
    })
}

/// deltalake's provider (the scan of tables with deletion vectors, column
/// mapping or partitions) with the same rule as [`SnapshotScan`]:
/// conditions on float columns are not handed to it (they are applied
/// above the scan), so that its Parquet pruning cannot drop NaN rows.
#[derive(Debug)]
pub struct FloatSafe {
    inner: Arc<dyn TableProvider>,
}

impl FloatSafe {
    pub fn new(inner: Arc<dyn TableProvider>) -> FloatSafe {
        FloatSafe { inner }
    }
}

#[async_trait]
impl TableProvider for FloatSafe {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = self.inner.schema();
        let others: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|e| !mentions_float(&schema, e))
            .collect();
        let mut answers = self.inner.supports_filters_pushdown(&others)?.into_iter();
        Ok(filters
            .iter()
            .map(|e| {
                if mentions_float(&schema, e) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    answers
                        .next()
                        .unwrap_or(TableProviderFilterPushDown::Unsupported)
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let others: Vec<Expr> = filters
            .iter()
            .filter(|e| !mentions_float(&schema, e))
            .cloned()
            .collect();
        let plan = self.inner.scan(state, projection, &others, limit).await?;
        Ok(Arc::new(NoFloatPruning::new(plan)))
    }
}

fn is_float(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

/// The Parquet scan, as it is, except that the physical optimiser's filter
/// pushdown does not hand it conditions on float columns (see
/// [`SnapshotScan::scan`]: the Parquet source would prune on them, and drop
/// row groups holding NaN). Other conditions, and the dynamic filters of
/// joins and top-k, pass through to the scan.
#[derive(Debug)]
struct NoFloatPruning {
    inner: Arc<dyn ExecutionPlan>,
}

impl NoFloatPruning {
    fn new(inner: Arc<dyn ExecutionPlan>) -> NoFloatPruning {
        NoFloatPruning { inner }
    }
}

impl datafusion::physical_plan::DisplayAs for NoFloatPruning {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        write!(f, "NoFloatPruning")
    }
}

impl ExecutionPlan for NoFloatPruning {
    fn name(&self) -> &str {
        "NoFloatPruning"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        self.inner.properties()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn child_stats_requests(
        &self,
        partition: Option<usize>,
    ) -> Vec<datafusion::physical_plan::ChildStats> {
        vec![datafusion::physical_plan::ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &datafusion::physical_plan::StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(input_stats
            .first()
            .cloned()
            .unwrap_or_else(|| Arc::new(Statistics::new_unknown(&self.inner.schema()))))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(inner), true) => Ok(Arc::new(NoFloatPruning::new(inner))),
            _ => datafusion::common::internal_err!("NoFloatPruning has one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: datafusion::physical_plan::filter_pushdown::FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<datafusion::physical_plan::filter_pushdown::FilterDescription> {
        use datafusion::physical_plan::filter_pushdown::{
            ChildFilterDescription, FilterDescription,
        };
        let schema = self.inner.schema();
        let allowed = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !is_float(f.data_type()))
            .map(|(i, _)| i)
            .collect();
        Ok(FilterDescription::new().with_child(
            ChildFilterDescription::from_child_with_allowed_indices(
                &parent_filters,
                allowed,
                &self.inner,
            )?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Date32Array, Int64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

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

    async fn files_scanned(ctx: &datafusion::prelude::SessionContext, sql: &str) -> usize {
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
            parse_message_type(
                "message spark_schema { required int64 id; optional int96 BIG_DATE; }",
            )
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
                        .map(|&id| opt(id, 5).then(|| id % 2 == 0))
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

    async fn ids(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<i64> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
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
}
