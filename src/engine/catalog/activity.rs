//! `pg_stat_activity` and `pg_cursors`, which `datafusion-pg-catalog` does
//! not have and drivers read: Superset's stop button looks its backend up
//! in `pg_stat_activity`, psycopg closes a named cursor after checking
//! `pg_cursors`.
//!
//! `pg_stat_activity` shows one row at most: the statement's own session,
//! from the [`SessionActivity`] the executing state carries as a
//! configuration extension (none: no rows). Other sessions are never
//! listed, and `query` is always NULL: a statement's text may hold patient
//! data. `pg_cursors` has PostgreSQL's columns and no rows (the catalog is
//! shared by every session of one access context; the cursors live in the
//! connection handler).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr as DfExpr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// The executing session, as `pg_stat_activity` shows it. Set on the state
/// a statement executes with (`SessionConfig::with_extension`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionActivity {
    pub(crate) pid: i32,
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) application_name: String,
    /// The client's address, when it connected over TCP.
    pub(crate) client_addr: Option<String>,
    pub(crate) client_port: Option<i32>,
    /// When the connection was accepted, microseconds since the epoch.
    pub(crate) backend_start_micros: Option<i64>,
}

/// The tables this module adds to `pg_catalog`.
pub(super) const TABLES: [&str; 2] = ["pg_stat_activity", "pg_cursors"];

fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

pub(super) fn activity_schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let int4 = |n: &str| Field::new(n, DataType::Int32, true);
    let ts = |n: &str| Field::new(n, timestamptz(), true);
    Arc::new(Schema::new(vec![
        int4("datid"),
        text("datname"),
        int4("pid"),
        int4("leader_pid"),
        int4("usesysid"),
        text("usename"),
        text("application_name"),
        text("client_addr"),
        text("client_hostname"),
        int4("client_port"),
        ts("backend_start"),
        ts("xact_start"),
        ts("query_start"),
        ts("state_change"),
        text("wait_event_type"),
        text("wait_event"),
        text("state"),
        text("backend_xid"),
        text("backend_xmin"),
        Field::new("query_id", DataType::Int64, true),
        text("query"),
        text("backend_type"),
    ]))
}

pub(super) fn cursors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("statement", DataType::Utf8, true),
        Field::new("is_holdable", DataType::Boolean, true),
        Field::new("is_binary", DataType::Boolean, true),
        Field::new("is_scrollable", DataType::Boolean, true),
        Field::new("creation_time", timestamptz(), true),
    ]))
}

/// The row of `s` (`None`: no rows).
fn activity_rows(s: Option<&SessionActivity>) -> DfResult<RecordBatch> {
    let schema = activity_schema();
    let n = usize::from(s.is_some());
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
    let int4 = |v: Option<i32>| Arc::new(Int32Array::from(vec![v; n])) as ArrayRef;
    let ts = |v: Option<i64>| {
        Arc::new(TimestampMicrosecondArray::from(vec![v; n]).with_timezone("+00:00")) as ArrayRef
    };
    let s = s.cloned().unwrap_or_default();
    let columns = vec![
        int4(None),
        text(Some(&s.database)),
        int4(Some(s.pid)),
        int4(None),
        int4(None),
        text(Some(&s.user)),
        text(Some(&s.application_name)),
        text(s.client_addr.as_deref()),
        text(None),
        int4(s.client_port),
        ts(s.backend_start_micros),
        ts(None),
        ts(None),
        ts(None),
        text(None),
        text(None),
        text(Some("active")),
        text(None),
        text(None),
        Arc::new(Int64Array::from(vec![None::<i64>; n])) as ArrayRef,
        // Never the statement text: it may hold patient data.
        text(None),
        text(Some("client backend")),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `pg_stat_activity`: the executing session's own row.
#[derive(Debug)]
pub(super) struct ActivityTable {
    schema: SchemaRef,
}

impl ActivityTable {
    pub(super) fn new() -> ActivityTable {
        ActivityTable {
            schema: activity_schema(),
        }
    }
}

#[async_trait]
impl TableProvider for ActivityTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let own = state.config().get_extension::<SessionActivity>();
        let batch = activity_rows(own.as_deref())?;
        let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
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
    fn activity_never_shows_query_text() {
        let s = SessionActivity {
            pid: 1626,
            user: "analyst".into(),
            database: "lakeward".into(),
            ..Default::default()
        };
        let b = activity_rows(Some(&s)).unwrap();
        assert_eq!(b.num_rows(), 1);
        let query = b.column_by_name("query").unwrap();
        assert!(query.is_null(0));
        assert_eq!(activity_rows(None).unwrap().num_rows(), 0);
    }
}
