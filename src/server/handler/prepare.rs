//! Statement preparation: the extended-protocol [`Parser`], the plan cache
//! and the audit record of a statement parsed but never executed.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::Statement;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, Type};
use pgwire::error::PgWireResult;

use super::{Parser, Prepared, PreparedInner, PreparedKind, token_expired};
use crate::audit::events::StatementAudit;
use crate::enforce::PlanKey;
use crate::engine::encode::pg_fields;
use crate::error::SqlError;
use crate::rewrite::fingerprint::{fingerprint, statement_kind};
use crate::rewrite::gate::{self, StatementKind};
use crate::session::Session;

/// A statement planned for a Parse message that has not been executed:
/// when the statement is closed (or the session ends) without an Execute,
/// its audit record says so. Planning disclosed its columns to a Describe.
pub(crate) struct Unexecuted {
    audit: Mutex<Option<StatementAudit>>,
    executed: AtomicBool,
}

impl Unexecuted {
    pub(super) fn mark_executed(&self) {
        self.executed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Unexecuted {
    fn drop(&mut self) {
        if self.executed.load(Ordering::Relaxed) {
            return;
        }
        let audit = self
            .audit
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(audit) = audit {
            audit.never_executed();
        }
    }
}

impl Debug for Unexecuted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unexecuted")
            .field("executed", &self.executed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The plan-cache key of `sql` in `session`'s current state: the same SQL
/// text planned for another subject (role, site, purpose, break-glass),
/// policy version, search path or database is another plan.
pub(super) fn plan_key_of(session: &Session, sql: &str) -> PlanKey {
    PlanKey {
        sql: Arc::from(sql),
        policy_version: session.policy().version.clone(),
        subject: session.subject(),
        search_path: session.search_path(),
        database: session.database.clone(),
    }
}

impl Parser {
    /// The plan-cache key of `sql` in this session's current state, or
    /// `None` when the cache is off.
    pub(super) fn plan_key(&self, session: &Session, sql: &str) -> Option<PlanKey> {
        self.shared.plans.as_ref()?;
        Some(plan_key_of(session, sql))
    }

    pub(super) fn cached(&self, key: Option<&PlanKey>) -> Option<Prepared> {
        let found = self.shared.plans.as_ref()?.get(key?);
        crate::metrics::Metrics::global().cache(crate::metrics::Cache::Plan, found.is_some());
        found
    }

    pub(super) fn remember(&self, key: Option<PlanKey>, prepared: &Prepared) {
        if let (Some(cache), Some(key)) = (self.shared.plans.as_ref(), key)
            && prepared.0.shareable
        {
            cache.insert(key, prepared.clone());
        }
    }

    /// A planned statement of a Parse message, with the guard that audits
    /// it if it is never executed.
    fn with_parse_audit(&self, session: &Session, prepared: Prepared) -> Prepared {
        if !matches!(prepared.0.kind, PreparedKind::Plan { .. }) {
            return prepared;
        }
        let mut audit = StatementAudit::new(
            &self.shared.audit,
            session,
            prepared.0.statement_kind,
            Some(prepared.0.fingerprint.clone()),
        );
        if let Some(r) = &prepared.0.report {
            audit.report(r);
        }
        let guard = Unexecuted {
            audit: Mutex::new(Some(audit)),
            executed: AtomicBool::new(false),
        };
        Prepared(prepared.0, Some(Arc::new(guard)))
    }

    fn session(&self) -> Result<Arc<Session>, SqlError> {
        self.session
            .get()
            .cloned()
            .ok_or_else(|| SqlError::fatal("08P01", "query before startup completed"))
    }

    /// Turn one parsed statement into a [`Prepared`]: classify, bind session
    /// functions, plan.
    pub(super) async fn prepare(
        &self,
        session: &Session,
        stmt: Statement,
    ) -> Result<Prepared, SqlError> {
        let kind = statement_kind(&stmt);
        let text = fingerprint(&stmt, &crate::enforce::catalog_names(&self.shared.engine));
        match self.prepare_unaudited(session, stmt, kind, &text).await {
            Ok(p) => Ok(p),
            Err(e) => {
                StatementAudit::new(&self.shared.audit, session, kind, Some(text)).failed(&e);
                Err(e)
            }
        }
    }

    /// A statement that could not be parsed, audited without a fingerprint.
    pub(super) fn refused_unparsed(&self, session: &Session, e: &SqlError) {
        StatementAudit::new(&self.shared.audit, session, "UNKNOWN", None).failed(e);
    }

    /// [`Parser::prepare`] without the audit record of a refusal (the
    /// caller records it).
    pub(super) async fn prepare_unaudited(
        &self,
        session: &Session,
        stmt: Statement,
        statement_kind: &'static str,
        fingerprint: &str,
    ) -> Result<Prepared, SqlError> {
        let source = stmt.clone();
        match crate::query::classify(stmt)? {
            StatementKind::Query(stmt) | StatementKind::Explain(stmt) => {
                let principal = crate::query::Principal::of_session(
                    session,
                    self.shared.registry.pid_of(session.id).unwrap_or(0),
                );
                let planned =
                    crate::query::plan_query(&self.shared.engine, &principal, stmt).await?;
                Ok(Prepared(
                    Arc::new(PreparedInner::planned(
                        planned,
                        &principal,
                        source,
                        statement_kind,
                        fingerprint,
                    )),
                    None,
                ))
            }
            StatementKind::Declare { name, query } => {
                let inner =
                    Box::pin(self.prepare_unaudited(session, *query, statement_kind, fingerprint))
                        .await?;
                Ok(Prepared(
                    Arc::new(PreparedInner::around(
                        inner,
                        |inner| PreparedKind::Declare { name, inner },
                        statement_kind,
                        fingerprint,
                    )),
                    None,
                ))
            }
            StatementKind::Copy { query, options } => {
                let inner =
                    Box::pin(self.prepare_unaudited(session, *query, statement_kind, fingerprint))
                        .await?;
                Ok(Prepared(
                    Arc::new(PreparedInner::around(
                        inner,
                        |inner| PreparedKind::Copy { options, inner },
                        statement_kind,
                        fingerprint,
                    )),
                    None,
                ))
            }
            other => {
                let result_schema = match &other {
                    StatementKind::Show { name } if name == "all" => {
                        Some(Arc::new(Schema::new(vec![
                            Field::new("name", DataType::Utf8, false),
                            Field::new("setting", DataType::Utf8, false),
                            Field::new("description", DataType::Utf8, false),
                        ])))
                    }
                    StatementKind::Show { name } => Some(Arc::new(Schema::new(vec![Field::new(
                        name.clone(),
                        DataType::Utf8,
                        false,
                    )]))),
                    _ => None,
                };
                Ok(Prepared(
                    Arc::new(PreparedInner {
                        result_schema,
                        ..PreparedInner::new(
                            PreparedKind::Utility(other),
                            statement_kind,
                            fingerprint,
                        )
                    }),
                    None,
                ))
            }
        }
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.session().map_err(SqlError::into_pgwire)?;
        if session.principal.is_expired() {
            return Err(token_expired().into_pgwire());
        }
        session.set_policy(self.shared.policy.current());
        let key = self.plan_key(&session, sql);
        if let Some(hit) = self.cached(key.as_ref()) {
            return Ok(Some(self.with_parse_audit(&session, hit)));
        }
        let mut stmts = gate::parse(sql, self.shared.parse_limits).map_err(|e| {
            self.refused_unparsed(&session, &e);
            e.into_pgwire()
        })?;
        match stmts.len() {
            0 => Ok(None),
            1 => {
                let stmt = stmts.remove(0);
                let prepared = self.prepare(&session, stmt).await.map_err(|e| {
                    tracing::debug!(session = %session.id, sqlstate = e.code, "parse refused");
                    e.into_pgwire()
                })?;
                self.remember(key, &prepared);
                Ok(Some(self.with_parse_audit(&session, prepared)))
            }
            _ => {
                let e = SqlError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                );
                self.refused_unparsed(&session, &e);
                Err(e.into_pgwire())
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.0.param_types.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.0.result_schema {
            Some(schema) => {
                let default = Format::UnifiedText;
                pg_fields(schema, column_format.unwrap_or(&default)).map_err(SqlError::into_pgwire)
            }
            None => Ok(vec![]),
        }
    }
}
