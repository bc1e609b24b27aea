//! Finding Delta tables and registering them with DataFusion.

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::execution::context::SessionContext;

use super::{EngineError, TableInfo};
use crate::policy::ident::is_plain_ident;

/// A `schema.table` name, both parts lower-case identifiers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// Parse `schema.table`; both parts must be plain lower-case identifiers
    /// (`[a-z_][a-z0-9_]*`), which is what unquoted SQL names fold to.
    pub fn parse(s: &str) -> Option<TableName> {
        let (schema, table) = s.split_once('.')?;
        (is_plain_ident(schema) && is_plain_ident(table)).then(|| TableName {
            schema: schema.to_owned(),
            table: table.to_owned(),
        })
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Where one table's Delta log lives (local path or object-store URL).
#[derive(Debug, Clone)]
pub struct TableLocation {
    pub name: TableName,
    pub url: String,
    /// How old the served snapshot may get before a scan looks for a newer
    /// version: zero for the audit table (it grows while lakeward runs and
    /// auditors expect to see the last statement), a few seconds for data.
    pub refresh: std::time::Duration,
    /// Which scan reads the table (`[data] scan`).
    pub scan: crate::config::ScanChoice,
}

/// The snapshot age after which a data table looks for a new version.
pub const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Every `<root>/<schema>/<table>/_delta_log` under a data folder, sorted.
/// Folders whose names are not plain identifiers are skipped.
pub fn discover_tables(root: &Path) -> Result<Vec<TableLocation>, EngineError> {
    let scan = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| EngineError::Scan {
            path: p.to_owned(),
            source,
        })
    };
    let mut found = Vec::new();
    for schema_dir in scan(root)? {
        let schema_dir = schema_dir.map_err(|source| EngineError::Scan {
            path: root.to_owned(),
            source,
        })?;
        let Some(schema) = schema_dir.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !schema_dir.path().is_dir() || !is_plain_ident(&schema) {
            continue;
        }
        for table_dir in scan(&schema_dir.path())? {
            let table_dir = table_dir.map_err(|source| EngineError::Scan {
                path: schema_dir.path(),
                source,
            })?;
            let Some(table) = table_dir.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_plain_ident(&table) || !table_dir.path().join("_delta_log").is_dir() {
                continue;
            }
            found.push(TableLocation {
                name: TableName {
                    schema: schema.clone(),
                    table,
                },
                url: table_dir.path().to_string_lossy().into_owned(),
                refresh: DEFAULT_REFRESH,
                scan: crate::config::ScanChoice::Auto,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Whether a configured location is an object-store URL (`s3://…`) rather
/// than a local path.
pub fn is_url(location: &str) -> bool {
    location.contains("://")
}

/// Every `<root>/<schema>/<table>/_delta_log/` under an object-store URL
/// (`s3://bucket/lake`), sorted; credentials and endpoint come from the
/// environment (`AWS_*`). Prefixes whose names are not plain identifiers
/// are skipped.
pub async fn discover_tables_url(root: &str) -> Result<Vec<TableLocation>, EngineError> {
    use deltalake::logstore::object_store::ObjectStore as _;
    use deltalake::logstore::object_store::path::Path as StorePath;
    let fail = |message: String| EngineError::OpenTable {
        table: "*".into(),
        location: redact(root),
        message,
    };
    let base = root.trim_end_matches('/');
    let url = url::Url::parse(base).map_err(|e| fail(e.to_string()))?;
    let store = deltalake::DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build_storage())
        .map_err(|e| fail(e.to_string()))?
        .object_store(None);
    let children = |prefix: Option<StorePath>| {
        let store = store.clone();
        async move {
            store
                .list_with_delimiter(prefix.as_ref())
                .await
                .map(|l| l.common_prefixes)
        }
    };
    let mut found = Vec::new();
    for schema_prefix in children(None).await.map_err(|e| fail(e.to_string()))? {
        let Some(schema) = schema_prefix.filename().map(str::to_owned) else {
            continue;
        };
        if !is_plain_ident(&schema) {
            continue;
        }
        for table_prefix in children(Some(schema_prefix.clone()))
            .await
            .map_err(|e| fail(e.to_string()))?
        {
            let Some(table) = table_prefix.filename().map(str::to_owned) else {
                continue;
            };
            if !is_plain_ident(&table) {
                continue;
            }
            let log = table_prefix.clone().join("_delta_log");
            let has_log = store
                .list_with_delimiter(Some(&log))
                .await
                .is_ok_and(|l| !l.objects.is_empty());
            if !has_log {
                continue;
            }
            found.push(TableLocation {
                name: TableName {
                    schema: schema.clone(),
                    table: table.clone(),
                },
                url: format!("{base}/{schema}/{table}"),
                refresh: DEFAULT_REFRESH,
                scan: crate::config::ScanChoice::Auto,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A URL without credentials or query (for messages).
fn redact(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Open one Delta table at its latest version and register it as `schema.table`.
pub(crate) async fn open_and_register(
    ctx: &SessionContext,
    catalog: &dyn CatalogProvider,
    loc: &TableLocation,
) -> Result<TableInfo, EngineError> {
    let open_err = |message: String| EngineError::OpenTable {
        table: loc.name.to_string(),
        location: loc.url.clone(),
        message,
    };
    let is_url = loc.url.contains("://");
    if !is_url && !Path::new(&loc.url).join("_delta_log").is_dir() {
        return Err(open_err("no _delta_log folder".into()));
    }
    // Snapshots are loaded once and replaced when a newer version is seen;
    // the provider object stays the same, so cached plans stay valid.
    let provider = super::delta::LatestDeltaProvider::open_with(&loc.url, loc.refresh, loc.scan)
        .await
        .map_err(|e| match e {
            super::delta::DeltaError::UnsupportedFeature { message, .. } => {
                EngineError::Unreadable {
                    table: loc.name.to_string(),
                    location: loc.url.clone(),
                    message: format!(
                        "it needs a Delta reader feature lakeward cannot read ({message})"
                    ),
                }
            }
            e => open_err(e.to_string()),
        })?;
    provider.set_metrics_name(loc.name.to_string());
    let version = provider.version();
    let lookup = provider.lookup().clone();
    provider
        .update_datafusion_session(&ctx.state())
        .map_err(|e| open_err(e.to_string()))?;
    // The snapshot scan's store as well, under the URL its plans name: a
    // worker runs scans it never planned (`lakeward worker`).
    provider.register_scan_store(ctx.runtime_env().as_ref());
    let provider: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(provider);
    let schema = provider.schema();

    let schema_provider = match catalog.schema(&loc.name.schema) {
        Some(s) => s,
        None => {
            let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog
                .register_schema(&loc.name.schema, s.clone())
                .map_err(|e| EngineError::Setup(e.to_string()))?;
            s
        }
    };
    schema_provider
        .register_table(loc.name.table.clone(), provider)
        .map_err(|e| EngineError::Setup(e.to_string()))?;
    Ok(TableInfo {
        name: loc.name.clone(),
        location: loc.url.clone(),
        version,
        schema,
        lookup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(TableName::parse("clinical.patients").is_some());
        assert!(TableName::parse("Clinical.patients").is_none());
        assert!(TableName::parse("a.b.c").is_none());
        assert!(TableName::parse("clinical.").is_none());
        assert!(TableName::parse("x;drop.t").is_none());
    }
}
