//! Reading Delta tables: [`LatestDeltaProvider`], the DataFusion table
//! provider every served table (and `audit.access_log`) is read through, and
//! the helpers that open a table location.
//!
//! The provider keeps the loaded snapshot and looks for a newer version when
//! it is older than the table's refresh interval. Each loaded version is read
//! by lakeward's snapshot scan ([`super::snapshot_scan::SnapshotScan`]) when
//! the table qualifies, else by deltalake's provider (wrapped so float
//! conditions never prune). A table whose protocol needs a reader feature
//! neither scan reads correctly is refused ([`DeltaError::UnsupportedFeature`]),
//! never read wrong.
//!
//! Error messages carry locations (with credentials and query strings
//! removed), column names and types, never row data.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::{DeltaTable, DeltaTableError};
use tokio::sync::Mutex;

/// Errors opening or reading a Delta table.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The location is not a valid table location (bad URL, unknown scheme,
    /// local directory that cannot be created).
    #[error("invalid Delta table location {location}: {source}")]
    Location {
        /// The location as given (credentials and query removed when it is a URL).
        location: String,
        /// The underlying error.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// The table does not exist (where it must).
    #[error("no Delta table at {location}")]
    NotATable {
        /// The table location.
        location: String,
    },
    /// The table needs a Delta reader feature (or protocol version) that
    /// lakeward cannot read: refused when the table is opened, never read
    /// wrong.
    #[error("Delta table {location} needs a reader feature lakeward cannot read ({message})")]
    UnsupportedFeature {
        /// The table location.
        location: String,
        /// The Delta kernel's words, naming the feature.
        message: String,
    },
    /// The table's schema changed after the provider was opened.
    #[error("Delta table {location}: schema mismatch at column `{column}`: {detail}")]
    SchemaMismatch {
        /// The table location.
        location: String,
        /// The first differing column.
        column: String,
        /// What differs.
        detail: String,
    },
    /// A Delta operation failed.
    #[error("Delta table {location}: {operation} failed: {source}")]
    Delta {
        /// The table location.
        location: String,
        /// The operation (open, refresh, ...).
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Building a scan failed.
    #[error("Delta table {location}: {operation} failed: {source}")]
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

/// Resolves `location` and loads the newest table version. Returns the table
/// (with no state when there is no Delta table yet) and the location string
/// fit for messages and logs: plain paths as given, URLs without user info,
/// query or fragment.
pub(crate) async fn load_location(location: &str) -> Result<(DeltaTable, String), DeltaError> {
    let shown = if location.contains("://") {
        match deltalake::ensure_table_uri(location) {
            Ok(u) => {
                let mut u = u.clone();
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.to_string()
            }
            Err(_) => "<unparsable URL>".to_string(),
        }
    } else {
        location.to_string()
    };
    let url = deltalake::ensure_table_uri(location).map_err(|source| DeltaError::Location {
        location: shown.clone(),
        source: Box::new(source),
    })?;
    let table = DeltaTable::try_from_url(url)
        .await
        .map_err(|source| match unsupported_feature(&source) {
            Some(message) => DeltaError::UnsupportedFeature {
                location: shown.clone(),
                message,
            },
            None => DeltaError::Delta {
                location: shown.clone(),
                operation: "open",
                source: Box::new(source),
            },
        })?;
    Ok((table, shown))
}

/// The Delta kernel's refusal of a protocol it cannot read (`Unsupported:
/// Feature 'x' is not supported`, an unknown reader version), if `e` is one.
/// The kernel's error type is not re-exported by deltalake, so its message
/// is matched; the reader conformance suite holds a table with an unknown
/// reader feature that keeps this match honest.
fn unsupported_feature(e: &DeltaTableError) -> Option<String> {
    if !matches!(e, DeltaTableError::KernelError(_)) {
        return None;
    }
    let text = e.to_string();
    let at = text.find("Unsupported: ")?;
    Some(text[at + "Unsupported: ".len()..].to_owned())
}

/// [`load_location`] for a table that must exist: a location holding no
/// Delta table is [`DeltaError::NotATable`], and a missing local folder
/// is not created (resolving a local location would create it).
pub(crate) async fn load_existing(location: &str) -> Result<(DeltaTable, String), DeltaError> {
    if !location.contains("://") && !std::path::Path::new(location).exists() {
        return Err(DeltaError::NotATable {
            location: location.to_string(),
        });
    }
    let (table, shown) = load_location(location).await?;
    if table.version().is_none() {
        return Err(DeltaError::NotATable { location: shown });
    }
    Ok((table, shown))
}

/// Maps a Delta error of `operation` on the table at `location`.
pub(crate) fn delta_err(
    location: &str,
    operation: &'static str,
) -> impl FnOnce(DeltaTableError) -> DeltaError {
    let location = location.to_string();
    move |source| DeltaError::Delta {
        location,
        operation,
        source: Box::new(source),
    }
}

/// The provider serving the snapshot of one table version.
struct Loaded {
    version: u64,
    provider: Arc<dyn TableProvider>,
}

/// A DataFusion table provider over a Delta table that always serves the
/// newest snapshot.
///
/// On every `scan` it refreshes the table (incrementally: only new commit
/// files are read; when nothing changed this is one listing of `_delta_log`)
/// and delegates to deltalake's own provider for that snapshot, so
/// projection, filter pushdown and Parquet pruning still apply. The schema is
/// fixed when the provider is opened; a later schema change of the table
/// makes scans fail instead of returning differently shaped rows. The
/// provider is read-only (no `INSERT`). lakeward serves `audit.access_log` to
/// auditors through it, so an auditor sees records shipped a moment ago.
pub struct LatestDeltaProvider {
    location: String,
    schema: SchemaRef,
    table: Mutex<DeltaTable>,
    loaded: RwLock<Loaded>,
    /// How old the loaded snapshot may get before a scan looks for a newer
    /// version (zero: every scan looks).
    refresh: Duration,
    /// When the newest version was last looked for.
    checked: std::sync::Mutex<std::time::Instant>,
    /// The served table name, for the snapshot metrics.
    metrics_name: std::sync::OnceLock<String>,
    /// Which scan reads each loaded version.
    scan: crate::config::ScanChoice,
    /// Key indexes and hot rows of this table's point lookups, handed to
    /// the snapshot scan of every version.
    lookup: Arc<super::lookup::TableLookup>,
}

impl fmt::Debug for LatestDeltaProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestDeltaProvider")
            .field("location", &self.location)
            .field("columns", &self.schema.fields().len())
            .finish_non_exhaustive()
    }
}

/// Builds deltalake's provider for the snapshot loaded in `table`.
async fn build_provider(
    location: &str,
    table: &DeltaTable,
    scan: crate::config::ScanChoice,
    lookup: &Arc<super::lookup::TableLookup>,
) -> Result<Loaded, DeltaError> {
    let state = table.snapshot().map_err(delta_err(location, "open"))?;
    let version = state.version();
    // Column mapping in `id` mode matches a Parquet column to a table
    // column by field id. Both scans match by physical name, which reads
    // the wrong column where a file's names and field ids disagree (files
    // converted from Iceberg after a rename): refused rather than read wrong.
    if format!("{:?}", state.table_config().column_mapping_mode) == "Some(Id)" {
        return Err(DeltaError::UnsupportedFeature {
            location: location.to_string(),
            message: "delta.columnMapping.mode = id: lakeward reads Parquet columns by physical name, not by field id".into(),
        });
    }
    let provider: Arc<dyn TableProvider> = match table.table_provider().await {
        Ok(p) => p,
        Err(source) => {
            // deltalake's provider checks the reader features itself: a
            // feature the kernel reads but deltalake's scan does not
            // (type widening) is read by lakeward's scan when the table
            // qualifies, and refused by name otherwise.
            let text = source.to_string();
            let Some(at) = text.find("Unsupported table features required: ") else {
                return Err(DeltaError::DataFusion {
                    location: location.to_string(),
                    operation: "building the table provider",
                    source: Box::new(source),
                });
            };
            let refused = DeltaError::UnsupportedFeature {
                location: location.to_string(),
                message: text[at..].to_owned(),
            };
            if scan != crate::config::ScanChoice::Auto {
                return Err(refused);
            }
            use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
            let Ok(schema) = state.schema().as_ref().try_into_arrow() else {
                return Err(refused);
            };
            let schema: datafusion::arrow::datatypes::Schema = schema;
            return match super::snapshot_scan::SnapshotScan::try_new(
                table,
                Arc::new(schema),
                Some(lookup),
            ) {
                Ok(scan) => Ok(Loaded {
                    version,
                    provider: snapshot_scan(location, version, scan),
                }),
                Err(why) => {
                    tracing::debug!(location, version, reason = %why, "no scan reads this table");
                    Err(refused)
                }
            };
        }
    };
    // Plain tables are scanned from a file list with statistics kept in
    // memory for this version; the others through deltalake's provider.
    let chosen = match scan {
        crate::config::ScanChoice::Auto => {
            super::snapshot_scan::SnapshotScan::try_new(table, provider.schema(), Some(lookup))
        }
        crate::config::ScanChoice::Deltalake => Err("[data] scan = \"deltalake\"".to_owned()),
    };
    let provider = match chosen {
        Ok(scan) => snapshot_scan(location, version, scan),
        Err(why) => {
            tracing::debug!(location, version, reason = %why, "deltalake scan");
            Arc::new(super::snapshot_scan::FloatSafe::new(provider)) as Arc<dyn TableProvider>
        }
    };
    Ok(Loaded { version, provider })
}

/// A version read by lakeward's snapshot scan (logged at debug level: the
/// operator's way to see which scan each table version got).
fn snapshot_scan(
    location: &str,
    version: u64,
    scan: super::snapshot_scan::SnapshotScan,
) -> Arc<dyn TableProvider> {
    tracing::debug!(
        location,
        version,
        files = scan.file_count(),
        "snapshot scan"
    );
    Arc::new(scan)
}

impl LatestDeltaProvider {
    /// Opens the existing Delta table at `location` (a local directory path
    /// or a URL) at its newest version; every scan looks for a newer one.
    pub async fn open(location: &str) -> Result<Self, DeltaError> {
        Self::open_with_refresh(location, Duration::ZERO).await
    }

    /// [`open`](Self::open), looking for a newer version only when the
    /// loaded snapshot is older than `refresh`: between looks, scans reuse
    /// the loaded snapshot (its file list and statistics) without touching
    /// `_delta_log`.
    pub async fn open_with_refresh(location: &str, refresh: Duration) -> Result<Self, DeltaError> {
        Self::open_with(location, refresh, crate::config::ScanChoice::Auto).await
    }

    /// [`open_with_refresh`](Self::open_with_refresh) with the scan that
    /// reads each version (`[data] scan`).
    pub async fn open_with(
        location: &str,
        refresh: Duration,
        scan: crate::config::ScanChoice,
    ) -> Result<Self, DeltaError> {
        let (table, shown) = load_existing(location).await?;
        let lookup = super::lookup::TableLookup::new();
        let loaded = build_provider(&shown, &table, scan, &lookup).await?;
        Ok(LatestDeltaProvider {
            location: shown,
            schema: loaded.provider.schema(),
            table: Mutex::new(table),
            loaded: RwLock::new(loaded),
            refresh,
            checked: std::sync::Mutex::new(std::time::Instant::now()),
            metrics_name: std::sync::OnceLock::new(),
            scan,
            lookup,
        })
    }

    /// The table's point-lookup indexes.
    pub(crate) fn lookup(&self) -> &Arc<super::lookup::TableLookup> {
        &self.lookup
    }

    /// Report this table's snapshot version and refresh time under `name`
    /// (`lakeward_delta_table_version`, `lakeward_delta_snapshot_age_seconds`).
    pub fn set_metrics_name(&self, name: String) {
        let _ = self.metrics_name.set(name);
    }

    /// The version of the loaded snapshot.
    pub fn version(&self) -> u64 {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version
    }

    /// Whether the loaded snapshot is read by lakeward's snapshot scan
    /// (file list and statistics in memory) rather than deltalake's
    /// provider.
    pub fn uses_snapshot_scan(&self) -> bool {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded.provider.is::<super::snapshot_scan::SnapshotScan>()
    }

    /// Registers the store lakeward's snapshot scan reads this table's
    /// files from with `runtime` (nothing for a table on deltalake's
    /// provider, which registers its own).
    pub(crate) fn register_scan_store(
        &self,
        runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    ) {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        if let Some(scan) = loaded
            .provider
            .downcast_ref::<super::snapshot_scan::SnapshotScan>()
        {
            scan.version_files().register_store(runtime);
        }
    }

    /// Registers the table's object store with a DataFusion session.
    pub fn update_datafusion_session(&self, session: &dyn Session) -> Result<(), DeltaError> {
        let table = self.table.try_lock().map_err(|_| DeltaError::NotATable {
            location: self.location.clone(),
        })?;
        table
            .update_datafusion_session(session)
            .map_err(delta_err(&self.location, "open"))
    }

    /// The version a scan would read now (looking for a newer one when the
    /// loaded snapshot is older than the refresh interval).
    pub async fn refreshed_version(&self) -> Result<u64, DeltaError> {
        self.for_scan().await?;
        Ok(self.version())
    }

    /// The provider to scan with: the loaded one while it is younger than
    /// the refresh interval, else the newest.
    async fn for_scan(&self) -> Result<Arc<dyn TableProvider>, DeltaError> {
        if !self.refresh.is_zero() {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.elapsed() < self.refresh {
                return Ok(self.current());
            }
            // One scan looks; the others keep the loaded snapshot meanwhile.
            *checked = std::time::Instant::now();
        }
        self.latest().await
    }

    /// The provider of the newest table version (refreshing first).
    async fn latest(&self) -> Result<Arc<dyn TableProvider>, DeltaError> {
        let mut table = self.table.lock().await;
        table.update_incremental(None).await.map_err(|source| {
            match unsupported_feature(&source) {
                Some(message) => {
                    tracing::error!(location = %self.location, %message, "the newest version of a served table needs a reader feature lakeward cannot read; scans of it are refused");
                    DeltaError::UnsupportedFeature {
                        location: self.location.clone(),
                        message,
                    }
                }
                None => delta_err(&self.location, "refresh")(source),
            }
        })?;
        let version = table
            .snapshot()
            .map_err(delta_err(&self.location, "refresh"))?
            .version();
        if let Some(name) = self.metrics_name.get() {
            let m = crate::metrics::Metrics::global();
            m.set_table_version(name, version as u64);
            m.set_snapshot_time(name, std::time::SystemTime::now());
        }
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if loaded.version == version {
                return Ok(loaded.provider.clone());
            }
        }
        let fresh = build_provider(&self.location, &table, self.scan, &self.lookup).await?;
        if fresh.provider.schema().fields() != self.schema.fields() {
            return Err(DeltaError::SchemaMismatch {
                location: self.location.clone(),
                column: first_differing_column(&self.schema, &fresh.provider.schema()),
                detail: format!(
                    "the table schema changed at version {version} after the provider was opened"
                ),
            });
        }
        let provider = fresh.provider.clone();
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(provider)
    }

    /// The provider of the newest version, for lakeward's own reads
    /// (bounded samples of `policy check --classify`).
    pub(crate) async fn newest(&self) -> Result<Arc<dyn TableProvider>, DeltaError> {
        self.latest().await
    }

    /// The provider currently loaded (no refresh).
    fn current(&self) -> Arc<dyn TableProvider> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .provider
            .clone()
    }
}

/// Name of the first column where `a` and `b` differ (name or type).
fn first_differing_column(a: &SchemaRef, b: &SchemaRef) -> String {
    let (fa, fb) = (a.fields(), b.fields());
    for i in 0..fa.len().max(fb.len()) {
        match (fa.get(i), fb.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), _) => return x.name().clone(),
            (None, Some(y)) => return y.name().clone(),
            (None, None) => break,
        }
    }
    String::new()
}

#[async_trait]
impl TableProvider for LatestDeltaProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.current().supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<datafusion::common::Statistics> {
        self.current().statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let provider = self
            .for_scan()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        provider.scan(state, projection, filters, limit).await
    }
}
