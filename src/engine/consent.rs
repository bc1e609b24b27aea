//! Consent sets: for one purpose, the patients whose decisive consent
//! record says granted (opt-in) or refused (opt-out), computed once and
//! shared by every session and statement until the answer can change.
//!
//! The decisive record of a patient for a purpose is the latest one (by
//! `recorded_at`) that has not expired. The set therefore changes only
//! when the consent table gets a new Delta version, or when one of its
//! records expires. [`ConsentSetTable`] is a table provider over that set:
//! each scan compares the consent table's version and the clock with what
//! the cached set was computed from, and recomputes it (once, whoever asks
//! first) when either moved. Secured tables read it as
//! `t.patient_id [NOT] IN (SELECT patient_id FROM <consent set>)`: a hash
//! semi-join against a few hundred thousand ids, instead of a window over
//! every consent record in every query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::audit::delta::LatestDeltaProvider;
use crate::policy::{ConsentRules, Purpose};

/// Internal schema (in the raw context only) holding the consent sets.
pub const CONSENT_SCHEMA: &str = "lakeward_consent";

/// Which decisive records a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Granted,
    Refused,
}

/// A computed set and what it was computed from.
#[derive(Debug)]
struct Computed {
    /// Consent table version it reflects.
    version: u64,
    /// The next moment a record expires (the set may change then).
    valid_until: Option<DateTime<Utc>>,
    table: Arc<MemTable>,
}

/// The patients of one purpose whose decisive consent record is `decision`.
pub struct ConsentSetTable {
    ctx: SessionContext,
    rules: ConsentRules,
    purpose: Purpose,
    decision: Decision,
    source: Arc<LatestDeltaProvider>,
    schema: SchemaRef,
    computed: tokio::sync::Mutex<Option<Computed>>,
}

impl std::fmt::Debug for ConsentSetTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentSetTable")
            .field("purpose", &self.purpose)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

fn quoted(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl ConsentSetTable {
    /// `ctx` must have the consent table registered under `rules.table`;
    /// `source` is that table's provider (for its version).
    pub fn new(
        ctx: SessionContext,
        rules: ConsentRules,
        purpose: Purpose,
        decision: Decision,
        source: Arc<LatestDeltaProvider>,
    ) -> ConsentSetTable {
        let schema = Arc::new(Schema::new(vec![Field::new(
            rules.patient_key.clone(),
            DataType::Int64,
            false,
        )]));
        ConsentSetTable {
            ctx,
            rules,
            purpose,
            decision,
            source,
            schema,
            computed: tokio::sync::Mutex::new(None),
        }
    }

    /// The unexpired records of this purpose (identifiers come from the
    /// validated policy; the purpose is an enum).
    fn unexpired(&self) -> String {
        let r = &self.rules;
        format!(
            "FROM {table} WHERE \"{purpose_col}\" = '{purpose}' AND (\"{expires}\" IS NULL OR \"{expires}\" > now())",
            table = quoted(&r.table),
            purpose_col = r.purpose_column,
            purpose = self.purpose.as_str(),
            expires = r.expires_at_column,
        )
    }

    async fn compute(&self, version: u64) -> DfResult<Computed> {
        let r = &self.rules;
        let sql = format!(
            "SELECT CAST(\"c\".\"{pk}\" AS BIGINT) AS \"{pk}\" FROM (SELECT \"{pk}\", \"{granted}\", row_number() OVER (PARTITION BY \"{pk}\" ORDER BY \"{recorded}\" DESC, \"{granted}\" ASC) AS lakeward_rank {unexpired}) AS \"c\" WHERE \"c\".lakeward_rank = 1 AND \"c\".\"{pk}\" IS NOT NULL AND {cond}",
            pk = r.patient_key,
            granted = r.granted_column,
            recorded = r.recorded_at_column,
            unexpired = self.unexpired(),
            cond = match self.decision {
                Decision::Granted => format!("\"c\".\"{}\"", r.granted_column),
                Decision::Refused => format!("NOT \"c\".\"{}\"", r.granted_column),
            },
        );
        let batches = self.ctx.sql(&sql).await?.collect().await?;
        let batches = batches
            .into_iter()
            .map(|b| RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let next = format!(
            "SELECT CAST(min(\"{expires}\") AS TIMESTAMP) {unexpired} AND \"{expires}\" IS NOT NULL",
            expires = r.expires_at_column,
            unexpired = self.unexpired(),
        );
        let valid_until = self
            .ctx
            .sql(&next)
            .await?
            .collect()
            .await?
            .first()
            .and_then(|b| {
                let col = b.column(0);
                let ts = col
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
                    .map(|a| (!a.is_empty() && a.is_valid(0)).then(|| a.value(0)))
                    .or_else(|| {
                        col.as_any()
                            .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
                            .map(|a| (!a.is_empty() && a.is_valid(0)).then(|| a.value(0) * 1000))
                    })??;
                Some(DateTime::from_timestamp_nanos(ts))
            });
        Ok(Computed {
            version,
            valid_until,
            table: Arc::new(MemTable::try_new(self.schema.clone(), vec![batches])?),
        })
    }

    /// The current set: the cached one while the consent table's version
    /// is unchanged and no record has expired since, else a fresh one.
    async fn current(&self) -> DfResult<Arc<MemTable>> {
        let version = self
            .source
            .refreshed_version()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut computed = self.computed.lock().await;
        if let Some(c) = computed.as_ref()
            && c.version == version
            && c.valid_until.is_none_or(|t| Utc::now() < t)
        {
            return Ok(c.table.clone());
        }
        let fresh = self.compute(version).await?;
        tracing::debug!(
            purpose = self.purpose.as_str(),
            version,
            "consent set computed"
        );
        let table = fresh.table.clone();
        *computed = Some(fresh);
        Ok(table)
    }
}

#[async_trait]
impl TableProvider for ConsentSetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.current()
            .await?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The consent sets of one raw context, by (rules, purpose, decision).
#[derive(Default)]
pub struct ConsentSets {
    registered: Mutex<HashMap<String, String>>,
}

impl ConsentSets {
    /// The internal name (`lakeward_consent.<name>`) of the set for
    /// `(rules, purpose, decision)`, registered in `ctx` on first use.
    /// Fails when the consent table is not a served Delta table.
    pub fn name_for(
        &self,
        ctx: &SessionContext,
        source: Option<Arc<dyn TableProvider>>,
        rules: &ConsentRules,
        purpose: Purpose,
        decision: Decision,
    ) -> DfResult<String> {
        let key = format!("{rules:?}|{}|{decision:?}", purpose.as_str());
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = registered.get(&key) {
            return Ok(name.clone());
        }
        let source = source.and_then(|p| {
            let any: Arc<dyn std::any::Any + Send + Sync> = p;
            any.downcast::<LatestDeltaProvider>().ok()
        });
        let Some(source) = source else {
            return Err(DataFusionError::Plan(format!(
                "consent table {} is not served",
                rules.table
            )));
        };
        let name = format!(
            "{}_{}_{}",
            purpose.as_str(),
            match decision {
                Decision::Granted => "granted",
                Decision::Refused => "refused",
            },
            registered.len()
        );
        let catalog = ctx
            .catalog(super::CATALOG)
            .ok_or_else(|| DataFusionError::Plan("raw catalog missing".into()))?;
        let schema = match catalog.schema(CONSENT_SCHEMA) {
            Some(s) => s,
            None => {
                let s = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
                catalog.register_schema(CONSENT_SCHEMA, s.clone())?;
                s
            }
        };
        schema.register_table(
            name.clone(),
            Arc::new(ConsentSetTable::new(
                ctx.clone(),
                rules.clone(),
                purpose,
                decision,
                source,
            )),
        )?;
        registered.insert(key, name.clone());
        Ok(name)
    }
}
