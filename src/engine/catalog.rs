//! The policy-filtered system catalog: `pg_catalog` and `information_schema`
//! as one session's policy lets it see them.
//!
//! Both schemas are registered inside each secured catalog (one per policy
//! version and access subject), next to the secured tables, and they are
//! computed *from that catalog*: a table the subject may not query is not in
//! the secured catalog, so it is not in `pg_class`, `pg_attribute`,
//! `information_schema.tables` or `columns` either, and neither are its
//! columns or an otherwise empty schema. `datafusion-pg-catalog` provides the
//! PostgreSQL-shaped tables (its static tables and its `pg_class`,
//! `pg_namespace`, `pg_attribute`, … computed over a catalog list); lakeward
//! wraps every one of them in a [`CatalogTable`], the only provider besides a
//! secured table that the plan verifier lets a client plan scan.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProviderList, MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::{Constraints, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr as DfExpr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TableProviderFilterPushDown, TypeSignature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};

use super::CATALOG;

/// The database name the catalog reports (`pg_database`, `table_catalog`).
pub const DATABASE: &str = "lakeward";

/// Schemas every session has, whatever its policy.
pub use crate::rewrite::compat::SYSTEM_SCHEMAS;

/// A system-catalog table: metadata computed from one secured catalog.
/// Scans pass straight through to the wrapped provider, with PostgreSQL
/// columns the provider lacks appended as NULLs.
#[derive(Debug)]
pub struct CatalogTable {
    inner: Arc<dyn TableProvider>,
    /// Columns after the provider's own, always NULL.
    nulls: Vec<Field>,
    schema: SchemaRef,
}

impl CatalogTable {
    pub fn new(inner: Arc<dyn TableProvider>) -> Arc<CatalogTable> {
        Self::with_nulls(inner, vec![])
    }

    /// `inner` with `nulls` appended as always-NULL columns.
    pub fn with_nulls(inner: Arc<dyn TableProvider>, nulls: Vec<Field>) -> Arc<CatalogTable> {
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

/// The result of `pg_get_keywords()`, a [`CatalogTable`] over the static
/// keyword list.
#[derive(Debug)]
pub struct KeywordsFunction {
    table: Arc<dyn TableProvider>,
}

impl KeywordsFunction {
    pub fn new(static_tables: &PgCatalogStaticTables) -> DfResult<KeywordsFunction> {
        Ok(KeywordsFunction {
            table: static_tables.pg_get_keywords.try_into_memtable()?,
        })
    }
}

impl datafusion::catalog::TableFunctionImpl for KeywordsFunction {
    fn call(&self, args: &[DfExpr]) -> DfResult<Arc<dyn TableProvider>> {
        if !args.is_empty() {
            return Err(DataFusionError::Plan(
                "pg_get_keywords() takes no arguments".into(),
            ));
        }
        Ok(CatalogTable::new(self.table.clone()))
    }
}

/// A schema whose every table is a [`CatalogTable`].
#[derive(Debug)]
struct CatalogSchema {
    inner: Arc<dyn SchemaProvider>,
}

#[async_trait]
impl SchemaProvider for CatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let lower = name.to_ascii_lowercase();
        let table = match lower.as_str() {
            // Rows exported from the cluster datafusion-pg-catalog was built
            // against (its column statistics hold that cluster's values,
            // pg_authid its password hashes): lakeward has none of its own.
            n if holds_another_clusters_rows(n) => CatalogTable::new(empty_table(&table.schema())?),
            "pg_index" | "pg_constraint" => CatalogTable::new(empty_keys_table(&table.schema())?),
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

/// The tables a session may query, by schema: what the catalog describes.
#[derive(Debug, Clone, Default)]
pub struct Visible {
    /// `(schema, table, schema of the table, is a view)`, sorted.
    pub tables: Vec<(String, String, SchemaRef, bool)>,
}

impl Visible {
    fn schemas(&self) -> BTreeSet<&str> {
        self.tables.iter().map(|(s, ..)| s.as_str()).collect()
    }

    /// Is `schema.table` one the session may query (a system table counts)?
    pub fn has_table(&self, schema: Option<&str>, table: &str) -> bool {
        match schema {
            Some(s) if SYSTEM_SCHEMAS.contains(&s) => true,
            Some(s) => self.tables.iter().any(|(ts, t, ..)| ts == s && t == table),
            None => self.tables.iter().any(|(_, t, ..)| t == table),
        }
    }

    pub fn has_column(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        self.tables.iter().any(|(ts, t, sch, _)| {
            schema.is_none_or(|s| s == ts) && t == table && sch.field_with_name(column).is_ok()
        })
    }

    pub fn has_schema(&self, schema: &str) -> bool {
        SYSTEM_SCHEMAS.contains(&schema) || schema == "public" || self.schemas().contains(schema)
    }
}

/// Every name of the system catalogs: the schema, table and column names
/// of `pg_catalog` and `information_schema` as lakeward serves them. They
/// are the same for every session (a policy changes their rows, never
/// their shape); computed once per process.
pub fn system_names(engine: &super::Engine) -> &'static std::collections::HashSet<String> {
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
pub fn register_system_schemas(
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
        }),
    )?;
    Ok(())
}

/// PostgreSQL's name for an Arrow type: `(data_type, udt_name,
/// numeric_precision, numeric_scale, datetime_precision)`.
pub fn pg_type_names(
    t: &DataType,
) -> (
    &'static str,
    &'static str,
    Option<i32>,
    Option<i32>,
    Option<i32>,
) {
    match t {
        DataType::Boolean => ("boolean", "bool", None, None, None),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
            ("smallint", "int2", Some(16), Some(0), None)
        }
        DataType::Int32 | DataType::UInt16 => ("integer", "int4", Some(32), Some(0), None),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
            ("bigint", "int8", Some(64), Some(0), None)
        }
        DataType::Float16 | DataType::Float32 => ("real", "float4", Some(24), None, None),
        DataType::Float64 => ("double precision", "float8", Some(53), None, None),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => (
            "numeric",
            "numeric",
            Some(i32::from(*p)),
            Some(i32::from(*s)),
            None,
        ),
        DataType::Date32 | DataType::Date64 => ("date", "date", None, None, Some(0)),
        DataType::Timestamp(unit, tz) => {
            let precision = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                _ => 6,
            };
            if tz.is_some() {
                (
                    "timestamp with time zone",
                    "timestamptz",
                    None,
                    None,
                    Some(precision),
                )
            } else {
                (
                    "timestamp without time zone",
                    "timestamp",
                    None,
                    None,
                    Some(precision),
                )
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            ("time without time zone", "time", None, None, Some(6))
        }
        DataType::Interval(_) => ("interval", "interval", None, None, Some(6)),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            ("bytea", "bytea", None, None, None)
        }
        DataType::List(_) | DataType::LargeList(_) => ("ARRAY", "_text", None, None, None),
        _ => ("text", "text", None, None, None),
    }
}

fn strings<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn text_fields(names: &[&str]) -> Vec<Field> {
    names
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect()
}

/// An information_schema view with text columns and no rows.
fn empty(names: &[&str]) -> DfResult<RecordBatch> {
    let fields = text_fields(names);
    let columns = fields.iter().map(|_| strings(std::iter::empty())).collect();
    batch(fields, columns)
}

/// The information_schema views, computed once per secured catalog.
fn information_schema(v: &Visible) -> DfResult<Vec<(&'static str, RecordBatch)>> {
    let db = Some(DATABASE);
    let mut out = Vec::new();

    // schemata
    let mut schemas: BTreeSet<&str> = v.schemas();
    schemas.extend(SYSTEM_SCHEMAS);
    schemas.insert("public");
    let n = schemas.len();
    out.push((
        "schemata",
        batch(
            text_fields(&[
                "catalog_name",
                "schema_name",
                "schema_owner",
                "default_character_set_catalog",
                "default_character_set_schema",
                "default_character_set_name",
                "sql_path",
            ]),
            vec![
                strings(std::iter::repeat_n(db, n)),
                strings(schemas.iter().map(|s| Some(*s))),
                strings(std::iter::repeat_n(Some("lakeward"), n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
            ],
        )?,
    ));

    // tables
    let n = v.tables.len();
    let kind = |view: bool| Some(if view { "VIEW" } else { "BASE TABLE" });
    out.push((
        "tables",
        batch(
            text_fields(&[
                "table_catalog",
                "table_schema",
                "table_name",
                "table_type",
                "self_referencing_column_name",
                "reference_generation",
                "user_defined_type_catalog",
                "user_defined_type_schema",
                "user_defined_type_name",
                "is_insertable_into",
                "is_typed",
                "commit_action",
            ]),
            vec![
                strings(std::iter::repeat_n(db, n)),
                strings(v.tables.iter().map(|(s, ..)| Some(s.as_str()))),
                strings(v.tables.iter().map(|(_, t, ..)| Some(t.as_str()))),
                strings(v.tables.iter().map(|(.., view)| kind(*view))),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(None, n)),
            ],
        )?,
    ));

    // views
    let views: Vec<_> = v.tables.iter().filter(|t| t.3).collect();
    let n = views.len();
    out.push((
        "views",
        batch(
            text_fields(&[
                "table_catalog",
                "table_schema",
                "table_name",
                "view_definition",
                "check_option",
                "is_updatable",
                "is_insertable_into",
                "is_trigger_updatable",
                "is_trigger_deletable",
                "is_trigger_insertable_into",
            ]),
            vec![
                strings(std::iter::repeat_n(db, n)),
                strings(views.iter().map(|(s, ..)| Some(s.as_str()))),
                strings(views.iter().map(|(_, t, ..)| Some(t.as_str()))),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(Some("NONE"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
            ],
        )?,
    ));

    // columns
    let mut col = ColumnRows::default();
    for (s, t, schema, _) in &v.tables {
        for (i, f) in schema.fields().iter().enumerate() {
            col.push(s, t, i, f);
        }
    }
    out.push(("columns", col.finish()?));

    // table_privileges: SELECT on every table the session may query.
    let n = v.tables.len();
    out.push((
        "table_privileges",
        batch(
            text_fields(&[
                "grantor",
                "grantee",
                "table_catalog",
                "table_schema",
                "table_name",
                "privilege_type",
                "is_grantable",
                "with_hierarchy",
            ]),
            vec![
                strings(std::iter::repeat_n(Some("lakeward"), n)),
                strings(std::iter::repeat_n(Some("PUBLIC"), n)),
                strings(std::iter::repeat_n(db, n)),
                strings(v.tables.iter().map(|(s, ..)| Some(s.as_str()))),
                strings(v.tables.iter().map(|(_, t, ..)| Some(t.as_str()))),
                strings(std::iter::repeat_n(Some("SELECT"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("YES"), n)),
            ],
        )?,
    ));

    // Constraint, routine and other views: lakeward declares none.
    out.push((
        "table_constraints",
        empty(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ])?,
    ));
    let key_usage = [
        "constraint_catalog",
        "constraint_schema",
        "constraint_name",
        "table_catalog",
        "table_schema",
        "table_name",
        "column_name",
    ];
    out.push(("constraint_column_usage", empty(&key_usage)?));
    let mut kcu = key_usage.to_vec();
    kcu.extend(["ordinal_position", "position_in_unique_constraint"]);
    out.push(("key_column_usage", empty(&kcu)?));
    out.push((
        "referential_constraints",
        empty(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "unique_constraint_catalog",
            "unique_constraint_schema",
            "unique_constraint_name",
            "match_option",
            "update_rule",
            "delete_rule",
        ])?,
    ));
    out.push((
        "check_constraints",
        empty(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "check_clause",
        ])?,
    ));
    out.push((
        "routines",
        empty(&[
            "specific_catalog",
            "specific_schema",
            "specific_name",
            "routine_catalog",
            "routine_schema",
            "routine_name",
            "routine_type",
            "data_type",
            "type_udt_name",
            "routine_definition",
            "external_language",
        ])?,
    ));
    out.push((
        "parameters",
        empty(&[
            "specific_catalog",
            "specific_schema",
            "specific_name",
            "ordinal_position",
            "parameter_mode",
            "parameter_name",
            "data_type",
            "udt_name",
        ])?,
    ));
    out.push((
        "sequences",
        empty(&[
            "sequence_catalog",
            "sequence_schema",
            "sequence_name",
            "data_type",
            "start_value",
            "minimum_value",
            "maximum_value",
            "increment",
            "cycle_option",
        ])?,
    ));
    out.push((
        "triggers",
        empty(&[
            "trigger_catalog",
            "trigger_schema",
            "trigger_name",
            "event_manipulation",
            "event_object_catalog",
            "event_object_schema",
            "event_object_table",
            "action_statement",
            "action_timing",
        ])?,
    ));
    Ok(out)
}

/// Rows of information_schema.columns.
#[derive(Default)]
struct ColumnRows {
    schema: Vec<String>,
    table: Vec<String>,
    column: Vec<String>,
    position: Vec<i32>,
    nullable: Vec<&'static str>,
    data_type: Vec<&'static str>,
    udt: Vec<&'static str>,
    precision: Vec<Option<i32>>,
    radix: Vec<Option<i32>>,
    scale: Vec<Option<i32>>,
    datetime_precision: Vec<Option<i32>>,
}

impl ColumnRows {
    fn push(&mut self, schema: &str, table: &str, index: usize, f: &Field) {
        let (data_type, udt, precision, scale, dt_precision) = pg_type_names(f.data_type());
        self.schema.push(schema.to_owned());
        self.table.push(table.to_owned());
        self.column.push(f.name().clone());
        self.position
            .push(i32::try_from(index + 1).unwrap_or(i32::MAX));
        self.nullable
            .push(if f.is_nullable() { "YES" } else { "NO" });
        self.data_type.push(data_type);
        self.udt.push(udt);
        self.precision.push(precision);
        self.radix
            .push(precision.map(|_| if udt == "numeric" { 10 } else { 2 }));
        self.scale.push(scale);
        self.datetime_precision.push(dt_precision);
    }

    fn finish(self) -> DfResult<RecordBatch> {
        let n = self.schema.len();
        let mut fields =
            text_fields(&["table_catalog", "table_schema", "table_name", "column_name"]);
        fields.push(Field::new("ordinal_position", DataType::Int32, false));
        fields.extend(text_fields(&["column_default", "is_nullable", "data_type"]));
        for name in [
            "character_maximum_length",
            "character_octet_length",
            "numeric_precision",
            "numeric_precision_radix",
            "numeric_scale",
            "datetime_precision",
        ] {
            fields.push(Field::new(name, DataType::Int32, true));
        }
        fields.extend(text_fields(&[
            "interval_type",
            "collation_name",
            "domain_name",
            "udt_catalog",
            "udt_schema",
            "udt_name",
            "dtd_identifier",
            "is_identity",
            "is_generated",
            "is_updatable",
        ]));
        let none_i32 = || Arc::new(Int32Array::from(vec![None::<i32>; n])) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            strings(std::iter::repeat_n(Some(DATABASE), n)),
            strings(self.schema.iter().map(|s| Some(s.as_str()))),
            strings(self.table.iter().map(|s| Some(s.as_str()))),
            strings(self.column.iter().map(|s| Some(s.as_str()))),
            Arc::new(Int32Array::from(self.position.clone())),
            strings(std::iter::repeat_n(None, n)),
            strings(self.nullable.iter().map(|s| Some(*s))),
            strings(self.data_type.iter().map(|s| Some(*s))),
            none_i32(),
            none_i32(),
            Arc::new(Int32Array::from(self.precision)),
            Arc::new(Int32Array::from(self.radix)),
            Arc::new(Int32Array::from(self.scale)),
            Arc::new(Int32Array::from(self.datetime_precision)),
            strings(std::iter::repeat_n(None, n)),
            strings(std::iter::repeat_n(None, n)),
            strings(std::iter::repeat_n(None, n)),
            strings(std::iter::repeat_n(Some(DATABASE), n)),
            strings(std::iter::repeat_n(Some("pg_catalog"), n)),
            strings(self.udt.iter().map(|s| Some(*s))),
            Arc::new(StringArray::from_iter_values(
                self.position.iter().map(i32::to_string),
            )),
            strings(std::iter::repeat_n(Some("NO"), n)),
            strings(std::iter::repeat_n(Some("NEVER"), n)),
            strings(std::iter::repeat_n(Some("NO"), n)),
        ];
        batch(fields, columns)
    }
}

// ---------------------------------------------------------------------------
// Functions clients call against the catalog.

/// Which privilege function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PrivilegeKind {
    Table,
    AnyColumn,
    Column,
    Schema,
    Database,
    Function,
}

/// `has_*_privilege`, answered from the session's policy: SELECT on the
/// tables (and columns) it may query, USAGE on their schemas, CONNECT on the
/// database; never a write privilege (lakeward is read-only).
#[derive(Debug)]
struct PrivilegeUdf {
    name: &'static str,
    kind: PrivilegeKind,
    visible: Arc<Visible>,
    signature: Signature,
}

impl PartialEq for PrivilegeUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.visible, &other.visible)
    }
}
impl Eq for PrivilegeUdf {}
impl std::hash::Hash for PrivilegeUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// Split `schema.table` (either part may be double-quoted) into lower-cased
/// parts as PostgreSQL resolves identifiers.
fn split_name(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = name.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                parts.push(if was_quoted {
                    current.clone()
                } else {
                    current.to_lowercase()
                });
                current.clear();
                was_quoted = false;
            }
            c => current.push(c),
        }
    }
    parts.push(if was_quoted {
        current
    } else {
        current.to_lowercase()
    });
    parts
}

fn wants(privileges: &str, held: &[&str]) -> bool {
    privileges.split(',').any(|p| {
        let p = p.trim().to_uppercase();
        let p = p
            .strip_suffix(" WITH GRANT OPTION")
            .unwrap_or(&p)
            .trim()
            .to_owned();
        held.contains(&p.as_str())
    })
}

impl PrivilegeUdf {
    /// The answer for one row: `args` are the text forms of the arguments
    /// after the optional leading user (objects given by OID are `None`).
    fn answer(&self, object: Option<&str>, column: Option<&str>, privileges: &str) -> bool {
        match self.kind {
            PrivilegeKind::Table | PrivilegeKind::AnyColumn | PrivilegeKind::Column => {
                if !wants(privileges, &["SELECT"]) {
                    return false;
                }
                // An OID can only have come from this session's pg_class.
                let Some(name) = object else { return true };
                let parts = split_name(name);
                let (schema, table) = match parts.as_slice() {
                    [t] => (None, t.as_str()),
                    [s, t] => (Some(s.as_str()), t.as_str()),
                    [_, s, t] => (Some(s.as_str()), t.as_str()),
                    _ => return false,
                };
                match (self.kind, column) {
                    (PrivilegeKind::Column, Some(c)) => {
                        schema.is_some_and(|s| SYSTEM_SCHEMAS.contains(&s))
                            || self.visible.has_column(schema, table, c)
                    }
                    (PrivilegeKind::Column, None) => self.visible.has_table(schema, table),
                    _ => self.visible.has_table(schema, table),
                }
            }
            PrivilegeKind::Schema => {
                wants(privileges, &["USAGE"])
                    && object.is_none_or(|s| self.visible.has_schema(&split_name(s).join(".")))
            }
            PrivilegeKind::Database => wants(privileges, &["CONNECT"]),
            PrivilegeKind::Function => wants(privileges, &["EXECUTE"]),
        }
    }

    /// Number of object arguments (after an optional user) before the
    /// privilege string.
    fn object_args(&self) -> usize {
        if self.kind == PrivilegeKind::Column {
            2
        } else {
            1
        }
    }
}

fn text_at(a: &ArrayRef, row: usize) -> DfResult<Option<String>> {
    if a.is_null(row) {
        return Ok(None);
    }
    Ok(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s,
        _ => None,
    })
}

impl ScalarUDFImpl for PrivilegeUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let objects = self.object_args();
        // Forms: (object…, privilege) or (user, object…, privilege).
        let skip = match arrays.len() {
            n if n == objects + 1 => 0,
            n if n == objects + 2 => 1,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{}: wrong number of arguments",
                    self.name
                )));
            }
        };
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let object = &arrays[skip];
            let object_text = text_at(object, row)?;
            let is_oid = !matches!(
                object.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            let column = if objects == 2 {
                text_at(&arrays[skip + 1], row)?
            } else {
                None
            };
            let Some(privileges) = text_at(&arrays[arrays.len() - 1], row)? else {
                out.push(None);
                continue;
            };
            if object.is_null(row) {
                out.push(None);
                continue;
            }
            let object = if is_oid { None } else { object_text.as_deref() };
            out.push(Some(self.answer(object, column.as_deref(), &privileges)));
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
    }
}

/// The privilege functions of one secured catalog.
pub fn privilege_udfs(visible: Arc<Visible>) -> Vec<ScalarUDF> {
    [
        ("has_table_privilege", PrivilegeKind::Table),
        ("has_any_column_privilege", PrivilegeKind::AnyColumn),
        ("has_column_privilege", PrivilegeKind::Column),
        ("has_schema_privilege", PrivilegeKind::Schema),
        ("has_database_privilege", PrivilegeKind::Database),
        ("has_function_privilege", PrivilegeKind::Function),
    ]
    .into_iter()
    .map(|(name, kind)| {
        let arities = if kind == PrivilegeKind::Column {
            [3, 4]
        } else {
            [2, 3]
        };
        ScalarUDF::new_from_impl(PrivilegeUdf {
            name,
            kind,
            visible: visible.clone(),
            signature: Signature::one_of(
                arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
                Volatility::Stable,
            ),
        })
    })
    .collect()
}

/// A catalog function with one answer whatever its arguments: lakeward keeps
/// no comments, index or view definitions, sequences or triggers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConstantUdf {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl ScalarUDFImpl for ConstantUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `_pg_expandarray(int2[])`: information_schema's helper, as a struct of
/// the first element and its position (`(…).x`, `(…).n`). lakeward declares
/// no keys, so it only ever meets empty index key lists.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArrayUdf {
    signature: Signature,
}

fn expand_fields() -> datafusion::arrow::datatypes::Fields {
    vec![
        Field::new("x", DataType::Int32, true),
        Field::new("n", DataType::Int32, true),
    ]
    .into()
}

impl ScalarUDFImpl for ExpandArrayUdf {
    fn name(&self) -> &str {
        "_pg_expandarray"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Struct(expand_fields()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let nulls = Arc::new(Int32Array::from(vec![None::<i32>; rows])) as ArrayRef;
        let s = datafusion::arrow::array::StructArray::try_new(
            expand_fields(),
            vec![nulls.clone(), nulls],
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(s)))
    }
}

/// The text of one value of a catalog function argument (`None`: NULL).
fn value_text(a: &ArrayRef, row: usize) -> DfResult<Option<String>> {
    if a.is_null(row) {
        return Ok(None);
    }
    Ok(Some(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s,
        v => v.to_string(),
    }))
}

/// `format(fmt, args…)` with `%s`, `%I` (identifier, quoted when needed),
/// `%L` (literal) and `%%`, as clients use it to spell type names.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FormatUdf {
    signature: Signature,
}

fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

impl ScalarUDFImpl for FormatUdf {
    fn name(&self) -> &str {
        "format"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let Some(fmt) = value_text(&arrays[0], row)? else {
                out.push(None);
                continue;
            };
            let mut text = String::new();
            let mut next = 1;
            let mut chars = fmt.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    text.push(c);
                    continue;
                }
                let spec = chars.next();
                if spec == Some('%') {
                    text.push('%');
                    continue;
                }
                let arg = match arrays.get(next) {
                    Some(a) => value_text(a, row)?,
                    None => return Err(DataFusionError::Plan("format: too few arguments".into())),
                };
                next += 1;
                match (spec, arg) {
                    (Some('s'), a) => text.push_str(a.as_deref().unwrap_or("")),
                    (Some('I'), Some(a)) => text.push_str(&quote_ident(&a)),
                    (Some('L'), Some(a)) => text.push_str(&format!("'{}'", a.replace('\'', "''"))),
                    (Some('L'), None) => text.push_str("NULL"),
                    _ => {
                        return Err(DataFusionError::Plan(
                            "format: unsupported conversion".into(),
                        ));
                    }
                }
            }
            out.push(Some(text));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `json_build_object(k, v, …)` as JSON text (SQLAlchemy reads column
/// identity and collation options this way).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObjectUdf {
    signature: Signature,
}

fn json_value(a: &ArrayRef, row: usize) -> DfResult<serde_json::Value> {
    use serde_json::Value as J;
    if a.is_null(row) {
        return Ok(J::Null);
    }
    Ok(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Boolean(Some(b)) => J::Bool(b),
        ScalarValue::Int8(Some(n)) => J::from(n),
        ScalarValue::Int16(Some(n)) => J::from(n),
        ScalarValue::Int32(Some(n)) => J::from(n),
        ScalarValue::Int64(Some(n)) => J::from(n),
        ScalarValue::Float64(Some(f)) => J::from(f),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => J::String(s),
        v => J::String(v.to_string()),
    })
}

impl ScalarUDFImpl for JsonBuildObjectUdf {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.len() % 2 != 0 {
            return Err(DataFusionError::Plan(
                "json_build_object: an even number of arguments".into(),
            ));
        }
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = value_text(&pair[0], row)?.unwrap_or_default();
                object.insert(key, json_value(&pair[1], row)?);
            }
            out.push(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// Catalog functions that do not depend on the session's policy.
pub fn static_udfs() -> Vec<ScalarUDF> {
    let any = |arities: &[usize]| {
        Signature::one_of(
            arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Stable,
        )
    };
    let null_text = ScalarValue::Utf8(None);
    let mut out: Vec<ScalarUDF> = [
        ("obj_description", &[1usize, 2][..]),
        ("col_description", &[2]),
        ("shobj_description", &[2]),
        ("pg_get_indexdef", &[1, 3]),
        ("pg_get_viewdef", &[1, 2]),
        ("pg_get_triggerdef", &[1, 2]),
        ("pg_get_functiondef", &[1]),
        ("pg_get_function_arguments", &[1]),
        ("pg_get_function_result", &[1]),
        ("pg_get_function_identity_arguments", &[1]),
        ("pg_get_serial_sequence", &[2]),
        ("pg_get_ruledef", &[1, 2]),
        ("pg_tablespace_location", &[1]),
    ]
    .into_iter()
    .map(|(name, arities)| {
        ScalarUDF::new_from_impl(ConstantUdf {
            name,
            value: null_text.clone(),
            signature: any(arities),
        })
    })
    .collect();
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_is_in_recovery",
        value: ScalarValue::Boolean(Some(false)),
        signature: Signature::nullary(Volatility::Stable),
    }));
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_function_is_visible",
        value: ScalarValue::Boolean(Some(true)),
        signature: any(&[1]),
    }));
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_type_is_visible",
        value: ScalarValue::Boolean(Some(true)),
        signature: any(&[1]),
    }));
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_collation_is_visible",
        value: ScalarValue::Boolean(Some(true)),
        signature: any(&[1]),
    }));
    // Sizes are not disclosed: a table's size tells how many rows exist
    // beyond those the policy shows (PostgreSQL answers NULL for an
    // unknown relation too). Any integer oid is accepted (DBeaver binds
    // int8).
    for name in [
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
    ] {
        out.push(ScalarUDF::new_from_impl(ConstantUdf {
            name,
            value: ScalarValue::Int64(None),
            signature: any(&[1, 2]),
        }));
    }
    out.push(ScalarUDF::new_from_impl(ExpandArrayUdf {
        signature: any(&[1]),
    }));
    out.push(ScalarUDF::new_from_impl(FormatUdf {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    out.push(ScalarUDF::new_from_impl(JsonBuildObjectUdf {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    out
}

/// System catalogs whose exported rows describe another cluster's data or
/// secrets: statistics (`pg_statistic*`, `pg_stats*`, the `pg_stat_*` and
/// `pg_statio_*` activity views) and `pg_authid`. lakeward answers them
/// with no rows.
pub fn holds_another_clusters_rows(table: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_postgres() {
        assert_eq!(split_name("clinical.patients"), ["clinical", "patients"]);
        assert_eq!(
            split_name("Clinical.\"Patients\""),
            ["clinical", "Patients"]
        );
        assert_eq!(split_name("\"a.b\".c"), ["a.b", "c"]);
        assert_eq!(split_name("patients"), ["patients"]);
    }

    fn visible() -> Arc<Visible> {
        let schema = Arc::new(Schema::new(vec![Field::new("ssn", DataType::Utf8, true)]));
        Arc::new(Visible {
            tables: vec![("clinical".into(), "patients".into(), schema, false)],
        })
    }

    fn udf(kind: PrivilegeKind) -> PrivilegeUdf {
        PrivilegeUdf {
            name: "test",
            kind,
            visible: visible(),
            signature: Signature::any(2, Volatility::Stable),
        }
    }

    #[test]
    fn privileges_follow_the_policy() {
        let t = udf(PrivilegeKind::Table);
        assert!(t.answer(Some("clinical.patients"), None, "SELECT"));
        assert!(t.answer(Some("patients"), None, "select"));
        assert!(!t.answer(Some("clinical.patients"), None, "INSERT"));
        assert!(t.answer(Some("clinical.patients"), None, "INSERT, SELECT"));
        assert!(!t.answer(Some("governance.consents"), None, "SELECT"));
        assert!(t.answer(Some("pg_catalog.pg_class"), None, "SELECT"));
        let s = udf(PrivilegeKind::Schema);
        assert!(s.answer(Some("clinical"), None, "USAGE"));
        assert!(!s.answer(Some("governance"), None, "USAGE"));
        assert!(!s.answer(Some("clinical"), None, "CREATE"));
        let c = udf(PrivilegeKind::Column);
        assert!(c.answer(Some("clinical.patients"), Some("ssn"), "SELECT"));
        assert!(!c.answer(Some("clinical.patients"), Some("nope"), "SELECT"));
        let d = udf(PrivilegeKind::Database);
        assert!(d.answer(Some("lakeward"), None, "CONNECT"));
        assert!(!d.answer(Some("lakeward"), None, "CREATE"));
    }

    #[test]
    fn types_have_postgres_names() {
        assert_eq!(pg_type_names(&DataType::Int64).0, "bigint");
        assert_eq!(pg_type_names(&DataType::Decimal128(12, 2)).2, Some(12));
        assert_eq!(
            pg_type_names(&DataType::Timestamp(TimeUnit::Microsecond, None)).0,
            "timestamp without time zone"
        );
    }
}
