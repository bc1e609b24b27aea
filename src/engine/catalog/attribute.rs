//! `pg_attribute` with PostgreSQL's type modifiers: a `numeric(p,s)`
//! column (an Arrow `Decimal128(p, s)`) has `atttypmod = ((p << 16) | s) +
//! 4`, so that `format_type(atttypid, atttypmod)` spells `numeric(12,2)`
//! and clients (SQLAlchemy's inspector, DBeaver) report the precision and
//! scale. `datafusion-pg-catalog` writes `-1` for every column; the rows
//! are otherwise its own.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int16Type, Int32Type, SchemaRef};
use datafusion::catalog::{CatalogProviderList, MemTable, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr as DfExpr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::engine::CATALOG;

/// PostgreSQL's `atttypmod` for an Arrow type (`-1`: none).
pub(crate) fn typmod(t: &DataType) -> i32 {
    crate::engine::encode::numeric_typmod(t).unwrap_or(-1)
}

/// `pg_attribute` over `attributes` (the crate's), with `atttypmod` computed
/// from the secured catalog's schemas. Relations are found by oid through
/// `pg_class` and `pg_namespace` of the same provider (they share its oids).
#[derive(Debug)]
pub(super) struct TypmodAttributes {
    pub(super) attributes: Arc<dyn TableProvider>,
    pub(super) classes: Arc<dyn TableProvider>,
    pub(super) namespaces: Arc<dyn TableProvider>,
    pub(super) list: Weak<dyn CatalogProviderList>,
}

async fn rows(t: &Arc<dyn TableProvider>, state: &dyn Session) -> DfResult<Vec<RecordBatch>> {
    let plan = t.scan(state, None, &[], None).await?;
    datafusion::physical_plan::collect(plan, state.task_ctx()).await
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> DfResult<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("catalog column {name} missing")))
}

fn int32s(a: &ArrayRef) -> DfResult<&datafusion::arrow::array::PrimitiveArray<Int32Type>> {
    a.as_primitive_opt::<Int32Type>()
        .ok_or_else(|| DataFusionError::Internal("catalog oid column not int4".into()))
}

fn texts(a: &ArrayRef) -> DfResult<Vec<Option<String>>> {
    let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
    let s = a.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| (!s.is_null(i)).then(|| s.value(i).to_owned()))
        .collect())
}

impl TypmodAttributes {
    /// `(schema, table)` by relation oid.
    async fn relations(&self, state: &dyn Session) -> DfResult<HashMap<i32, (String, String)>> {
        let mut namespaces = HashMap::new();
        for b in rows(&self.namespaces, state).await? {
            let oids = int32s(column(&b, "oid")?)?;
            let names = texts(column(&b, "nspname")?)?;
            for (i, name) in names.into_iter().enumerate() {
                if let Some(name) = name
                    && !oids.is_null(i)
                {
                    namespaces.insert(oids.value(i), name);
                }
            }
        }
        let mut out = HashMap::new();
        for b in rows(&self.classes, state).await? {
            let oids = int32s(column(&b, "oid")?)?;
            let spaces = int32s(column(&b, "relnamespace")?)?;
            let names = texts(column(&b, "relname")?)?;
            for (i, name) in names.into_iter().enumerate() {
                if let (Some(name), Some(schema)) = (name, namespaces.get(&spaces.value(i))) {
                    out.insert(oids.value(i), (schema.clone(), name));
                }
            }
        }
        Ok(out)
    }

    async fn batches(&self, state: &dyn Session) -> DfResult<Vec<RecordBatch>> {
        let batches = rows(&self.attributes, state).await?;
        let Some(list) = self.list.upgrade() else {
            return Ok(batches);
        };
        let Some(catalog) = list.catalog(CATALOG) else {
            return Ok(batches);
        };
        let relations = self.relations(state).await?;
        let mut schemas: HashMap<i32, Option<SchemaRef>> = HashMap::new();
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let relids = int32s(column(&b, "attrelid")?)?.clone();
            let attnums = column(&b, "attnum")?
                .as_primitive_opt::<Int16Type>()
                .ok_or_else(|| DataFusionError::Internal("attnum not int2".into()))?
                .clone();
            let old = int32s(column(&b, "atttypmod")?)?.clone();
            let mut typmods = Vec::with_capacity(b.num_rows());
            for i in 0..b.num_rows() {
                let rel = relids.value(i);
                if !schemas.contains_key(&rel) {
                    let schema = match relations.get(&rel) {
                        Some((s, t)) => match catalog.schema(s) {
                            Some(sp) => sp.table(t).await?.map(|t| t.schema()),
                            None => None,
                        },
                        None => None,
                    };
                    schemas.insert(rel, schema);
                }
                let from_schema = schemas.get(&rel).and_then(Option::as_ref).and_then(|s| {
                    let n = usize::try_from(attnums.value(i)).ok()?.checked_sub(1)?;
                    s.fields().get(n).map(|f| typmod(f.data_type()))
                });
                typmods.push(from_schema.unwrap_or_else(|| old.value(i)));
            }
            let index = b.schema().index_of("atttypmod")?;
            let mut columns = b.columns().to_vec();
            columns[index] = Arc::new(Int32Array::from(typmods));
            out.push(RecordBatch::try_new(b.schema(), columns)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for TypmodAttributes {
    fn schema(&self) -> SchemaRef {
        self.attributes.schema()
    }

    fn table_type(&self) -> TableType {
        self.attributes.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self.batches(state).await?;
        let table = MemTable::try_new(self.schema(), vec![batches])?;
        table.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&DfExpr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_is_postgres() {
        assert_eq!(typmod(&DataType::Decimal128(12, 2)), 786_438);
        assert_eq!(typmod(&DataType::Decimal128(10, 0)), (10 << 16) + 4);
        assert_eq!(typmod(&DataType::Utf8), -1);
        assert_eq!(typmod(&DataType::Int64), -1);
    }
}
