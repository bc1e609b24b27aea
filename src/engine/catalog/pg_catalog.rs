//! `pg_catalog` as the session's policy lets it see it: the tables of
//! `datafusion-pg-catalog` computed over the secured catalog, and the
//! registration of both system schemas in it.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProviderList, MemTable, SchemaProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};

use super::activity;
use super::information_schema::information_schema;
use super::tables::CatalogSchema;
use super::{DATABASE, SYSTEM_SCHEMAS, Visible};
use crate::engine::CATALOG;

/// What `pg_class` and friends enumerate: the secured catalog, with the
/// catalog reported under the served database name. Held weakly: the
/// catalog list owns the schema that owns this.
#[derive(Debug, Clone)]
struct PolicyCatalogInfo {
    list: Weak<dyn CatalogProviderList>,
}

impl PolicyCatalogInfo {
    fn catalog(&self, name: &str) -> Option<Arc<dyn datafusion::catalog::CatalogProvider>> {
        if name != DATABASE {
            return None;
        }
        self.list.upgrade()?.catalog(CATALOG)
    }
}

#[async_trait]
impl CatalogInfo for PolicyCatalogInfo {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        Ok(if self.list.upgrade().is_some() {
            vec![DATABASE.to_owned()]
        } else {
            vec![]
        })
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self.catalog(catalog).map(|c| c.schema_names()))
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self
            .catalog(catalog)
            .and_then(|c| c.schema(schema))
            .map(|s| {
                let mut names = s.table_names();
                names.sort();
                names
            }))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        let Some(s) = self.catalog(catalog).and_then(|c| c.schema(schema)) else {
            return Ok(None);
        };
        Ok(s.table(table).await?.map(|t| t.schema()))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        let Some(s) = self.catalog(catalog).and_then(|c| c.schema(schema)) else {
            return Ok(None);
        };
        Ok(s.table_type(table).await?)
    }
}

/// Every name of the system catalogs: the schema, table and column names
/// of `pg_catalog` and `information_schema` as lakeward serves them. They
/// are the same for every session (a policy changes their rows, never
/// their shape); computed once per process.
pub(crate) fn system_names(
    engine: &crate::engine::Engine,
) -> &'static std::collections::HashSet<String> {
    static NAMES: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: std::collections::HashSet<String> =
            SYSTEM_SCHEMAS.iter().map(|s| (*s).to_owned()).collect();
        // Appended to pg_class by CatalogSchema.
        names.insert("reloptions".to_owned());
        let list: Weak<dyn CatalogProviderList> =
            Weak::<datafusion::catalog::MemoryCatalogProviderList>::new();
        let info = PolicyCatalogInfo { list };
        if let Ok(pg) = PgCatalogSchemaProvider::try_new(
            info,
            engine.static_tables.clone(),
            EmptyContextProvider,
        ) {
            for table in pg.table_names() {
                if let Ok(Some(t)) = pg.build_table_by_name(&table) {
                    names.extend(t.schema().fields().iter().map(|f| f.name().clone()));
                }
                names.insert(table);
            }
        }
        for schema in [activity::activity_schema(), activity::cursors_schema()] {
            names.extend(schema.fields().iter().map(|f| f.name().clone()));
        }
        names.extend(activity::TABLES.iter().map(|t| (*t).to_owned()));
        if let Ok(tables) = information_schema(&Visible::default()) {
            for (table, batch) in tables {
                names.extend(batch.schema().fields().iter().map(|f| f.name().clone()));
                names.insert(table.to_owned());
            }
        }
        names
    })
}

/// Register `pg_catalog` and `information_schema` in the secured catalog
/// `list` (whose catalog already holds exactly the session's tables).
pub(crate) fn register_system_schemas(
    list: &Arc<dyn CatalogProviderList>,
    visible: &Visible,
    static_tables: &Arc<PgCatalogStaticTables>,
) -> DfResult<()> {
    let catalog = list
        .catalog(CATALOG)
        .ok_or_else(|| DataFusionError::Plan("secured catalog missing".into()))?;
    let info = PolicyCatalogInfo {
        list: Arc::downgrade(list),
    };
    let pg = PgCatalogSchemaProvider::try_new(info, static_tables.clone(), EmptyContextProvider)?;
    catalog.register_schema(
        "pg_catalog",
        Arc::new(CatalogSchema {
            inner: Arc::new(pg),
            described: Some(Arc::downgrade(list)),
        }),
    )?;
    let info_schema = datafusion::catalog::MemorySchemaProvider::new();
    for (name, batch) in information_schema(visible)? {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        info_schema.register_table(name.to_owned(), Arc::new(table))?;
    }
    catalog.register_schema(
        "information_schema",
        Arc::new(CatalogSchema {
            inner: Arc::new(info_schema),
            described: None,
        }),
    )?;
    Ok(())
}
