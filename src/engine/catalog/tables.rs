//! The providers system tables are served as: [`CatalogTable`] and the
//! schema wrapper that makes every table of a system schema one.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::{Constraints, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr as DfExpr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// A system-catalog table: metadata computed from one secured catalog.
/// Scans pass straight through to the wrapped provider, with PostgreSQL
/// columns the provider lacks appended as NULLs.
#[derive(Debug)]
pub(crate) struct CatalogTable {
    inner: Arc<dyn TableProvider>,
    /// Columns after the provider's own, always NULL.
    nulls: Vec<Field>,
    schema: SchemaRef,
}

impl CatalogTable {
    pub(crate) fn new(inner: Arc<dyn TableProvider>) -> Arc<CatalogTable> {
        Self::with_nulls(inner, vec![])
    }

    /// `inner` with `nulls` appended as always-NULL columns.
    pub(crate) fn with_nulls(
        inner: Arc<dyn TableProvider>,
        nulls: Vec<Field>,
    ) -> Arc<CatalogTable> {
        let base = inner.schema();
        let schema = if nulls.is_empty() {
            base
        } else {
            let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.extend(nulls.iter().cloned());
            Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()))
        };
        Arc::new(CatalogTable {
            inner,
            nulls,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        // System catalogs and information_schema views read as views, as in
        // PostgreSQL's own pg_class for information_schema.
        self.inner.table_type()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.nulls.is_empty() {
            return self.inner.scan(state, projection, filters, limit).await;
        }
        use datafusion::physical_expr::PhysicalExpr;
        use datafusion::physical_expr::expressions::{Column, Literal};
        let own = self.inner.schema().fields().len();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let from_inner: Vec<usize> = wanted.iter().copied().filter(|i| *i < own).collect();
        // Filters are not pushed here (see supports_filters_pushdown).
        let input = self
            .inner
            .scan(state, Some(&from_inner), &[], limit)
            .await?;
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(wanted.len());
        for i in wanted {
            let field = self.schema.field(i);
            let expr: Arc<dyn PhysicalExpr> = match from_inner.iter().position(|j| *j == i) {
                Some(pos) if i < own => Arc::new(Column::new(field.name(), pos)),
                _ => Arc::new(Literal::new(ScalarValue::try_from(field.data_type())?)),
            };
            exprs.push((expr, field.name().clone()));
        }
        Ok(Arc::new(
            datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, input)?,
        ))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&DfExpr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        if self.nulls.is_empty() {
            self.inner.supports_filters_pushdown(filters)
        } else {
            Ok(vec![
                TableProviderFilterPushDown::Unsupported;
                filters.len()
            ])
        }
    }

    fn statistics(&self) -> Option<Statistics> {
        if self.nulls.is_empty() {
            self.inner.statistics()
        } else {
            None
        }
    }
}

/// A schema whose every table is a [`CatalogTable`].
#[derive(Debug)]
pub(super) struct CatalogSchema {
    pub(super) inner: Arc<dyn SchemaProvider>,
    /// The secured catalog `pg_catalog` describes (`None` for
    /// `information_schema`): `pg_attribute` reads its column types.
    pub(super) described: Option<std::sync::Weak<dyn datafusion::catalog::CatalogProviderList>>,
}

impl CatalogSchema {
    /// Is this `pg_catalog`, which gets the tables of `activity.rs`?
    fn is_pg_catalog(&self) -> bool {
        self.described.is_some()
    }
}

#[async_trait]
impl SchemaProvider for CatalogSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        if self.is_pg_catalog() {
            names.extend(super::activity::TABLES.iter().map(|t| (*t).to_owned()));
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        if self.is_pg_catalog() {
            match lower.as_str() {
                "pg_stat_activity" => {
                    return Ok(Some(CatalogTable::new(Arc::new(
                        super::activity::ActivityTable::new(),
                    ))));
                }
                "pg_cursors" => {
                    return Ok(Some(CatalogTable::new(empty_table(
                        &super::activity::cursors_schema(),
                    )?)));
                }
                _ => {}
            }
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let table = match lower.as_str() {
            // Rows exported from the cluster datafusion-pg-catalog was built
            // against (its column statistics hold that cluster's values,
            // pg_authid its password hashes): lakeward has none of its own.
            n if holds_another_clusters_rows(n) => CatalogTable::new(empty_table(&table.schema())?),
            "pg_index" | "pg_constraint" => CatalogTable::new(empty_keys_table(&table.schema())?),
            "pg_attribute" => match (
                &self.described,
                self.inner.table("pg_class").await?,
                self.inner.table("pg_namespace").await?,
            ) {
                (Some(list), Some(classes), Some(namespaces)) => {
                    CatalogTable::new(Arc::new(super::attribute::TypmodAttributes {
                        attributes: table,
                        classes,
                        namespaces,
                        list: list.clone(),
                    }))
                }
                _ => CatalogTable::new(table),
            },
            // Storage options (SQLAlchemy reads them with the indexes).
            "pg_class" => CatalogTable::with_nulls(
                table,
                vec![Field::new(
                    "reloptions",
                    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                    true,
                )],
            ),
            _ => CatalogTable::new(table),
        };
        Ok(Some(table as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
            || (self.is_pg_catalog()
                && super::activity::TABLES.contains(&name.to_ascii_lowercase().as_str()))
    }

    fn register_table(
        &self,
        _name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(
            "system catalogs are read-only".into(),
        ))
    }
}

/// System catalogs whose exported rows describe another cluster's data or
/// secrets: statistics (`pg_statistic*`, `pg_stats*`, the `pg_stat_*` and
/// `pg_statio_*` activity views) and `pg_authid`. lakeward answers them
/// with no rows.
pub(crate) fn holds_another_clusters_rows(table: &str) -> bool {
    let t = table.to_ascii_lowercase();
    t.starts_with("pg_statistic")
        || t.starts_with("pg_stats")
        || t.starts_with("pg_stat_")
        || t.starts_with("pg_statio_")
        || t == "pg_authid"
}

/// A table with `schema` and no rows.
fn empty_table(schema: &SchemaRef) -> DfResult<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?))
}

/// `pg_index` and `pg_constraint` as lakeward has them for its tables:
/// empty (Delta tables declare no keys or indexes), with the key columns
/// typed as arrays so `unnest(indkey)` and `conkey[1]` plan.
fn empty_keys_table(schema: &SchemaRef) -> DfResult<Arc<dyn TableProvider>> {
    const ARRAYS: &[&str] = &[
        "indkey",
        "indcollation",
        "indclass",
        "indoption",
        "conkey",
        "confkey",
        "conpfeqop",
        "conppeqop",
        "conffeqop",
        "conexclop",
        "confdelsetcols",
    ];
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if ARRAYS.contains(&f.name().as_str()) {
                Field::new(
                    f.name(),
                    DataType::List(Arc::new(Field::new("item", DataType::Int16, true))),
                    true,
                )
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(Arc::new(MemTable::try_new(
        Arc::new(Schema::new(fields)),
        vec![vec![]],
    )?))
}
