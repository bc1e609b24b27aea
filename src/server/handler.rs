//! The pgwire handlers of one connection: startup, simple query, extended
//! query (Parse/Bind/Describe/Execute/Sync) and cancel.
//!
//! One [`ConnHandler`] exists per connection; it owns the [`Session`] once
//! startup has finished. Every statement goes the same way whichever protocol
//! carried it: gate (parse + classify) → session rules (bind identity
//! functions) → plan (AST, never text) → read-only verification → streamed
//! execution. Errors become [`SqlError`]s; only `FATAL` ones close the socket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use futures::sink::{Sink, SinkExt};
use futures::stream::StreamExt;
use pgwire::api::auth::{StartupHandler, finish_authentication, protocol_negotiation};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_query_response};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, PidSecretKeyGenerator, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::extendedquery::{
    Close, CloseComplete, Execute, Parse, ParseComplete, PortalSuspended, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::audit::events::{self, StatementAudit};
use crate::auth::AuthFailure;
use crate::enforce::PlanKey;
use crate::engine::encode::{pg_fields, row_stream};
use crate::error::SqlError;
use crate::limits::{Exceeded, Limited};
use crate::rewrite::fingerprint::{fingerprint, statement_kind};
use crate::rewrite::gate::{self, StatementKind};
use crate::session::Session;
use tracing::Instrument;

/// Per-connection handler state.
pub struct ConnHandler {
    shared: Arc<Shared>,
    parser: Arc<Parser>,
    /// The access rules each suspended portal (and cursor) was opened
    /// under, by portal name: every Execute and FETCH checks them again.
    portals: Mutex<HashMap<String, PortalGrant>>,
    /// Portals closed by the idle-portal timeout, so that their next use
    /// says why they are gone.
    expired: Mutex<HashSet<String>>,
    /// Names of the statements prepared by Parse (for `DEALLOCATE ALL` and
    /// `DISCARD ALL`).
    statements: Mutex<HashSet<String>>,
}

/// The access rules a portal's rows were authorised for: the policy subject
/// (role, site, purpose, break-glass) and policy version. `None` when the
/// session had no subject (catalog-only statements before a purpose).
type AccessKey = Option<(crate::policy::compile::Subject, String)>;

fn access_key(session: &Session) -> AccessKey {
    session
        .subject()
        .map(|s| (s, session.policy().version.clone()))
}

/// One suspended portal's authorisation and last use.
struct PortalGrant {
    key: AccessKey,
    /// The portal's execution state: identifies the portal (a portal bound
    /// again under the same name is another portal).
    state: std::sync::Weak<tokio::sync::Mutex<PortalExecutionState>>,
    last_used: Instant,
}

/// A statement planned for a Parse message that has not been executed:
/// when the statement is closed (or the session ends) without an Execute,
/// its audit record says so. Planning disclosed its columns to a Describe.
pub struct Unexecuted {
    audit: Mutex<Option<StatementAudit>>,
    executed: AtomicBool,
}

impl Unexecuted {
    fn mark_executed(&self) {
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

/// The extended-protocol parser; shares the connection's session.
pub struct Parser {
    shared: Arc<Shared>,
    session: Arc<OnceLock<Arc<Session>>>,
}

/// A statement prepared by Parse (or by a simple Query, one per statement).
/// The second field is the Parse's own audit guard: never shared through
/// the plan cache.
#[derive(Clone, Debug)]
pub struct Prepared(Arc<PreparedInner>, Option<Arc<Unexecuted>>);

impl crate::enforce::CacheWeight for Prepared {
    fn weight(&self) -> u32 {
        match &self.0.kind {
            PreparedKind::Plan { plan, .. } => crate::enforce::plan_weight(plan)
                .saturating_add(u32::try_from(self.0.fingerprint.len()).unwrap_or(u32::MAX)),
            PreparedKind::Utility(_) | PreparedKind::Declare { .. } => 1024,
        }
    }
}

#[derive(Debug)]
struct PreparedInner {
    kind: PreparedKind,
    /// Parameter types for ParameterDescription, `$1..$n` in order.
    param_types: Vec<Type>,
    /// DataFusion's inferred types, used to decode bound values.
    param_data_types: Vec<Option<DataType>>,
    /// Result columns, or `None` for statements that return no rows.
    result_schema: Option<SchemaRef>,
    /// Reads at least one table (needs a declared purpose).
    reads_tables: bool,
    /// The statement as parsed, kept to re-plan under new access rules.
    source: Option<Statement>,
    /// The policy subject and version the plan was built for.
    planned_for: Option<(crate::policy::compile::Subject, String)>,
    /// Tables, columns and rules the statement touches (for the audit log).
    report: Option<crate::enforce::AccessReport>,
    /// May be shared through the plan cache (a planned query that binds no
    /// connection-specific value).
    shareable: bool,
    /// Command kind and literal-free text, for the audit log.
    statement_kind: &'static str,
    fingerprint: String,
}

#[derive(Debug)]
enum PreparedKind {
    /// A planned query (or EXPLAIN) with the state it was planned in.
    Plan {
        plan: LogicalPlan,
        /// Shared by every statement of the same access context.
        state: Arc<SessionState>,
        /// `plan` is already optimised ([`crate::engine::Engine::optimise_once`]).
        optimised: bool,
    },
    /// SET/SHOW/RESET/BEGIN/COMMIT/ROLLBACK/no-ops, FETCH and CLOSE.
    Utility(StatementKind),
    /// `DECLARE name CURSOR FOR <query>`: the query, run into a portal
    /// named after the cursor.
    Declare { name: String, inner: Prepared },
}

impl ConnHandler {
    pub fn new(shared: Arc<Shared>) -> ConnHandler {
        let parser = Arc::new(Parser {
            shared: shared.clone(),
            session: Arc::new(OnceLock::new()),
        });
        ConnHandler {
            shared,
            parser,
            portals: Mutex::default(),
            expired: Mutex::default(),
            statements: Mutex::default(),
        }
    }

    /// The session, once startup has completed.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.parser.session.get().cloned()
    }

    /// The session, checked at every statement: a session whose token has
    /// expired ends here (FATAL 28000, the client must reconnect).
    fn require_session(&self) -> PgWireResult<Arc<Session>> {
        let s = self.session().ok_or_else(|| {
            SqlError::fatal("08P01", "query before startup completed").into_pgwire()
        })?;
        if s.principal.is_expired() {
            tracing::info!(session = %s.id, "token expired: ending session");
            return Err(token_expired().into_pgwire());
        }
        s.set_policy(self.shared.policy.current());
        Ok(s)
    }
}

impl Parser {
    /// The plan-cache key of `sql` in this session's current state, or
    /// `None` when the cache is off.
    fn plan_key(&self, session: &Session, sql: &str) -> Option<PlanKey> {
        self.shared.plans.as_ref()?;
        Some(PlanKey {
            sql: Arc::from(sql),
            policy_version: session.policy().version.clone(),
            subject: session.subject(),
            search_path: session.search_path(),
            database: session.database.clone(),
        })
    }

    fn cached(&self, key: Option<&PlanKey>) -> Option<Prepared> {
        let found = self.shared.plans.as_ref()?.get(key?);
        crate::metrics::Metrics::global().cache(crate::metrics::Cache::Plan, found.is_some());
        found
    }

    fn remember(&self, key: Option<PlanKey>, prepared: &Prepared) {
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
    async fn prepare(&self, session: &Session, stmt: Statement) -> Result<Prepared, SqlError> {
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
    fn refused_unparsed(&self, session: &Session, e: &SqlError) {
        StatementAudit::new(&self.shared.audit, session, "UNKNOWN", None).failed(e);
    }

    /// [`Parser::prepare`] without the audit record of a refusal (the
    /// caller records it).
    async fn prepare_unaudited(
        &self,
        session: &Session,
        stmt: Statement,
        statement_kind: &'static str,
        fingerprint: &str,
    ) -> Result<Prepared, SqlError> {
        let source = Some(stmt.clone());
        match crate::query::classify(stmt)? {
            StatementKind::Query(stmt) | StatementKind::Explain(stmt) => {
                let principal = crate::query::Principal::of_session(
                    session,
                    self.shared.registry.pid_of(session.id).unwrap_or(0),
                );
                let planned =
                    crate::query::plan_query(&self.shared.engine, &principal, stmt).await?;
                let crate::query::PlannedQuery {
                    state,
                    plan,
                    optimised,
                    report,
                    param_types,
                    param_data_types,
                    result_schema,
                    reads_tables,
                    connection_specific,
                } = planned;
                let policy = principal.policy;
                Ok(Prepared(
                    Arc::new(PreparedInner {
                        kind: PreparedKind::Plan {
                            plan,
                            state,
                            optimised,
                        },
                        param_types,
                        param_data_types,
                        result_schema: Some(result_schema),
                        reads_tables,
                        source,
                        planned_for: session.subject().map(|s| (s, policy.version.clone())),
                        report: Some(report),
                        shareable: !connection_specific,
                        statement_kind,
                        fingerprint: fingerprint.to_owned(),
                    }),
                    None,
                ))
            }
            StatementKind::Declare { name, query } => {
                let inner =
                    Box::pin(self.prepare_unaudited(session, *query, statement_kind, fingerprint))
                        .await?;
                Ok(Prepared(
                    Arc::new(PreparedInner {
                        param_types: inner.0.param_types.clone(),
                        param_data_types: inner.0.param_data_types.clone(),
                        result_schema: None,
                        reads_tables: inner.0.reads_tables,
                        source: None,
                        planned_for: None,
                        report: None,
                        shareable: false,
                        statement_kind,
                        fingerprint: fingerprint.to_owned(),
                        kind: PreparedKind::Declare { name, inner },
                    }),
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
                        kind: PreparedKind::Utility(other),
                        param_types: vec![],
                        param_data_types: vec![],
                        result_schema,
                        reads_tables: false,
                        source: None,
                        planned_for: None,
                        report: None,
                        shareable: false,
                        statement_kind,
                        fingerprint: fingerprint.to_owned(),
                    }),
                    None,
                ))
            }
        }
    }
}

/// Whether two plans return the same column types, as PostgreSQL judges a
/// re-planned cached statement: the number and PostgreSQL types of the
/// columns, not their Arrow encoding or nullability (a mask that becomes
/// NULL keeps the column's type).
fn same_result_types(a: &Option<SchemaRef>, b: &Option<SchemaRef>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.fields().len() == b.fields().len()
                && a.fields().iter().zip(b.fields().iter()).all(|(x, y)| {
                    match (
                        arrow_pg::datatypes::into_pg_type(x.data_type()),
                        arrow_pg::datatypes::into_pg_type(y.data_type()),
                    ) {
                        (Ok(x), Ok(y)) => x == y,
                        _ => false,
                    }
                })
        }
        (None, None) => true,
        _ => false,
    }
}

/// Completes at `deadline`, or never.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn token_expired() -> SqlError {
    SqlError::fatal(
        "28000",
        "authentication token expired: reconnect with a new token",
    )
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

/// A statement of a simple Query: served from the plan cache, or parsed.
enum Pending {
    Ready(Prepared),
    Parsed(Box<Statement>),
}

/// What running a statement produced.
enum Outcome {
    Rows(QueryResponse),
    Tag(Tag),
    Begin,
    /// `COMMIT` (`commit`) or `ROLLBACK`.
    End {
        commit: bool,
    },
    /// `ROLLBACK TO SAVEPOINT`: the transaction is usable again.
    RolledBackTo,
    /// `DISCARD ALL`: settings were reset; cursors and prepared statements
    /// go next.
    DiscardAll,
    /// `DEALLOCATE name` (all when `None`).
    Deallocate(Option<String>),
    /// A cursor was declared: its rows wait in a portal of that name.
    Cursor {
        name: String,
        inner: Prepared,
        rows: QueryResponse,
    },
    /// `FETCH`: rows from a cursor's portal.
    Fetch {
        name: String,
        count: Option<usize>,
    },
    /// `CLOSE`: drop a cursor's portal (all cursors when `None`).
    Close(Option<String>),
}

impl ConnHandler {
    /// Record a prepared statement refused before it ran; returns the error.
    fn refused(&self, session: &Session, prepared: &Prepared, e: SqlError) -> SqlError {
        StatementAudit::new(
            &self.shared.audit,
            session,
            prepared.0.statement_kind,
            Some(prepared.0.fingerprint.clone()),
        )
        .failed(&e);
        e
    }

    /// Run a prepared statement. `params` are bound into the plan.
    async fn run(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<datafusion::common::ParamValues>,
        format: &Format,
        cancel: CancellationToken,
    ) -> Result<Outcome, SqlError> {
        let mut audit = Some(StatementAudit::new(
            &self.shared.audit,
            session,
            prepared.0.statement_kind,
            Some(prepared.0.fingerprint.clone()),
        ));
        // One span per statement: who, for what purpose, which statement
        // shape (the literal-free fingerprint), never values.
        let span = tracing::info_span!(
            "statement",
            session = %session.id,
            user = %session.user,
            purpose = ?session.purpose(),
            kind = prepared.0.statement_kind,
            fingerprint = %prepared.0.fingerprint,
        );
        let result = self
            .run_audited(session, prepared, params, format, cancel, &mut audit)
            .instrument(span)
            .await;
        if let (Err(e), Some(audit)) = (&result, audit) {
            audit.failed(e);
        }
        result
    }

    /// [`ConnHandler::run`] with its audit trail: the statement record is
    /// durable before rows are produced; the row stream carries the
    /// completion record. `audit` is taken once its records are handed over.
    async fn run_audited(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<datafusion::common::ParamValues>,
        format: &Format,
        cancel: CancellationToken,
        audit: &mut Option<StatementAudit>,
    ) -> Result<Outcome, SqlError> {
        // Purpose, role or break-glass can change between Parse and Execute:
        // a plan built for other access rules is re-planned, never reused.
        crate::query::require_purpose(session.purpose(), prepared.0.reads_tables)?;
        let current = session
            .subject()
            .map(|s| (s, session.policy().version.clone()));
        let replanned;
        let prepared = if matches!(prepared.0.kind, PreparedKind::Plan { .. })
            && current != prepared.0.planned_for
        {
            let Some(source) = prepared.0.source.clone() else {
                return Err(SqlError::internal());
            };
            replanned = self
                .parser
                .prepare_unaudited(
                    session,
                    source,
                    prepared.0.statement_kind,
                    &prepared.0.fingerprint,
                )
                .await?;
            if !same_result_types(&replanned.0.result_schema, &prepared.0.result_schema)
                || replanned.0.param_types != prepared.0.param_types
            {
                return Err(SqlError::new(
                    "0A000",
                    "cached plan must not change result type",
                ));
            }
            &replanned
        } else {
            prepared
        };
        if let (Some(r), Some(a)) = (&prepared.0.report, audit.as_mut()) {
            a.report(r);
        }
        if let Some(r) = &prepared.0.report {
            tracing::info!(
                session = %session.id, user = %session.user, tables = ?r.tables, columns = r.columns.len(),
                rules = ?r.rules, policy_version = %r.policy_version, "statement allowed"
            );
        }
        match &prepared.0.kind {
            PreparedKind::Plan {
                plan,
                state,
                optimised,
            } => {
                let plan = match params {
                    Some(p) => plan
                        .clone()
                        .with_param_values(p)
                        .map_err(|e| crate::engine::errors::to_sql_error(&e))?,
                    None => {
                        if !prepared.0.param_types.is_empty() {
                            return Err(SqlError::new(
                                "08P01",
                                "statement has parameters but none were bound",
                            ));
                        }
                        plan.clone()
                    }
                };
                let fields = Arc::new(pg_fields(plan.schema().as_arrow(), format)?);
                let mut timer = crate::metrics::Metrics::global().statement_timer();
                let role = session.role();
                let limits = self.shared.limits.for_role(role.as_deref());
                let permit = self.shared.limits.admit(role.as_deref(), &limits)?;
                let deadline = limits.timeout.map(|t| tokio::time::Instant::now() + t);
                // Durable before disclosure: no row leaves before the
                // statement's record is durable.
                let record = async {
                    match audit.as_mut() {
                        Some(a) => a.before_rows().await,
                        None => Ok(()),
                    }
                };
                let execute = async {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => Err(SqlError::cancelled()),
                        _ = until(deadline) => {
                            Err(self.shared.limits.exceeded(Exceeded::StatementTimeout))
                        }
                        r = async {
                            // The role's memory budget, within the engine's.
                            let budgeted = match (limits.max_memory, role.as_deref()) {
                                (Some(bytes), Some(r)) => {
                                    Some(self.shared.engine.with_role_budget(state, r, bytes)?)
                                }
                                _ => None,
                            };
                            let state = budgeted.as_ref().unwrap_or(state);
                            let stream = self.shared.engine.execute(state, plan, *optimised).await?;
                            Ok(first_batch_ahead(stream).await)
                        } => r,
                    }
                };
                let reads_audit = prepared
                    .0
                    .report
                    .as_ref()
                    .is_some_and(|r| r.tables.iter().any(|t| t.starts_with("audit.")));
                let batches = if reads_audit {
                    // Auditors see every record up to their own query.
                    record.await?;
                    self.shared.audit.sync_table().await?;
                    execute.await?
                } else {
                    // The record is made durable while the physical plan is
                    // built and its first batch computed; rows wait for both.
                    // A record that cannot be written stops the execution at
                    // once, and its error wins over the execution's.
                    tokio::pin!(record);
                    tokio::pin!(execute);
                    tokio::select! {
                        recorded = &mut record => {
                            recorded?;
                            execute.await?
                        }
                        batches = &mut execute => {
                            record.await?;
                            batches?
                        }
                    }
                };
                timer.mark(crate::metrics::Phase::Execute);
                let mut completion = audit.take().map(StatementAudit::completion);
                let rows = Limited::new(
                    Box::pin(row_stream(batches, fields.clone(), cancel)),
                    self.shared.limits.clone(),
                    &limits,
                    deadline,
                    permit,
                );
                let rows = rows.map(move |row| {
                    if let Ok(r) = &row {
                        timer.first_row();
                        crate::metrics::Metrics::global().bytes_sent(r.data.len() as u64);
                    }
                    if let Some(c) = completion.as_mut() {
                        match &row {
                            Ok(_) => c.row(),
                            Err(PgWireError::UserError(info)) => c.error(&info.code),
                            Err(_) => c.error("XX000"),
                        }
                    }
                    row
                });
                Ok(Outcome::Rows(QueryResponse::new(fields, rows)))
            }
            PreparedKind::Declare { name, inner } => {
                match Box::pin(self.run_audited(session, inner, params, format, cancel, audit))
                    .await?
                {
                    Outcome::Rows(rows) => Ok(Outcome::Cursor {
                        name: name.clone(),
                        inner: inner.clone(),
                        rows,
                    }),
                    _ => Err(SqlError::internal()),
                }
            }
            PreparedKind::Utility(kind) => {
                let outcome = self.run_utility(session, kind, format)?;
                if let Some(a) = audit.take() {
                    a.done_without_rows().await?;
                }
                Ok(outcome)
            }
        }
    }

    fn run_utility(
        &self,
        session: &Session,
        kind: &StatementKind,
        format: &Format,
    ) -> Result<Outcome, SqlError> {
        match kind {
            StatementKind::Set { name, value, local } => {
                if *local {
                    // Outside a transaction block PostgreSQL warns and
                    // ignores it; so does lakeward.
                    session.set_local(name, value.clone())?;
                } else {
                    session.set(name, value.clone())?;
                }
                Ok(Outcome::Tag(Tag::new("SET")))
            }
            StatementKind::Reset { name } => {
                session.reset(name.as_deref())?;
                Ok(Outcome::Tag(Tag::new("RESET")))
            }
            StatementKind::Show { name } => {
                let rows: Vec<Vec<String>> = if name == "all" {
                    session
                        .show_all()
                        .into_iter()
                        .map(|(a, b, c)| vec![a, b, c])
                        .collect()
                } else {
                    vec![vec![session.show(name)?]]
                };
                let cols: Vec<&str> = if name == "all" {
                    vec!["name", "setting", "description"]
                } else {
                    vec![name]
                };
                Ok(Outcome::Rows(text_rows(&cols, rows, format)?))
            }
            StatementKind::Begin => {
                session.begin_transaction();
                Ok(Outcome::Begin)
            }
            StatementKind::Commit => Ok(Outcome::End { commit: true }),
            StatementKind::Rollback => Ok(Outcome::End { commit: false }),
            StatementKind::Savepoint { name } => {
                session.savepoint(name)?;
                Ok(Outcome::Tag(Tag::new("SAVEPOINT")))
            }
            StatementKind::Release { name } => {
                session.release_savepoint(name)?;
                Ok(Outcome::Tag(Tag::new("RELEASE")))
            }
            StatementKind::RollbackTo { name } => {
                session.rollback_to_savepoint(name)?;
                Ok(Outcome::RolledBackTo)
            }
            StatementKind::DiscardAll => {
                session.discard_all()?;
                Ok(Outcome::DiscardAll)
            }
            StatementKind::Deallocate { name } => Ok(Outcome::Deallocate(name.clone())),
            StatementKind::NoOp { tag } => Ok(Outcome::Tag(Tag::new(tag))),
            StatementKind::Fetch { name, count } => Ok(Outcome::Fetch {
                name: name.clone(),
                count: *count,
            }),
            StatementKind::Close { name } => Ok(Outcome::Close(name.clone())),
            StatementKind::Query(_) | StatementKind::Explain(_) | StatementKind::Declare { .. } => {
                Err(SqlError::internal())
            }
        }
    }
}

/// The connection's portals, where cursors live. pgwire keeps them in a
/// `MemPortalStore` of this handler's statements; anything else is a
/// wiring mistake and refuses (fail closed).
fn cursor_store<C>(client: &C) -> Result<&MemPortalStore<Prepared>, SqlError>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    (client.portal_store() as &dyn std::any::Any)
        .downcast_ref::<MemPortalStore<Prepared>>()
        .ok_or_else(SqlError::internal)
}

impl ConnHandler {
    /// Remember that the portal `name` (state `state`) was opened under the
    /// session's current access rules.
    fn grant_portal(
        &self,
        name: &str,
        state: &Arc<tokio::sync::Mutex<PortalExecutionState>>,
        session: &Session,
    ) {
        self.expired_names().remove(name);
        self.grants().insert(
            name.to_owned(),
            PortalGrant {
                key: access_key(session),
                state: Arc::downgrade(state),
                last_used: Instant::now(),
            },
        );
    }

    /// Check, before more rows of the portal `name` are sent, that the
    /// session's access rules are still those it was opened under (a
    /// reloaded policy has been adopted by then). On a mismatch the portal
    /// is forgotten and the caller closes it.
    fn check_portal(
        &self,
        name: &str,
        state: &Arc<tokio::sync::Mutex<PortalExecutionState>>,
        session: &Session,
    ) -> Result<(), SqlError> {
        let mut grants = self.grants();
        let current = access_key(session);
        let ok = grants.get_mut(name).is_some_and(|g| {
            let same =
                g.key == current && g.state.upgrade().is_some_and(|s| Arc::ptr_eq(&s, state));
            g.last_used = Instant::now();
            same
        });
        if ok {
            return Ok(());
        }
        grants.remove(name);
        Err(SqlError::permission_denied(
            "access rules changed since the portal was opened (role, purpose, break-glass, policy or token): run the statement again",
        ))
    }

    fn forget_portal(&self, name: &str) {
        self.grants().remove(name);
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, PortalGrant>> {
        self.portals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.expired.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn statement_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error for a portal that is not there: closed by the idle-portal
    /// timeout, or never opened.
    fn missing_portal(&self, name: &str, what: &str) -> SqlError {
        if self.expired_names().remove(name) {
            return SqlError::new(
                "55000",
                format!(
                    "{what} \"{}\" was closed after staying idle longer than limits.idle_portal_timeout_secs",
                    printable(name)
                ),
            );
        }
        SqlError::new(
            "34000",
            format!("{what} \"{}\" does not exist", printable(name)),
        )
    }

    /// Keep a declared cursor's rows in a portal named after it, where
    /// `FETCH`, `CLOSE` and a Describe of that portal find them. A cursor
    /// of the same name is replaced.
    async fn open_cursor<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        session: &Session,
        name: String,
        inner: Prepared,
        rows: QueryResponse,
    ) -> Result<(), SqlError> {
        let stored = Arc::new(pgwire::api::stmt::StoredStatement::new(
            name.clone(),
            inner,
            vec![],
        ));
        let portal = Portal::new_cursor(name.clone(), stored);
        portal.start(rows).await;
        self.grant_portal(&name, &portal.state(), session);
        cursor_store(client)?.put_portal(Arc::new(portal));
        Ok(())
    }

    fn close_cursor<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        name: Option<&str>,
    ) -> Result<(), SqlError> {
        let store = cursor_store(client)?;
        match name {
            Some(n) => {
                store.rm_portal(n);
                self.forget_portal(n);
            }
            None => {
                store.clear_portals();
                self.grants().clear();
            }
        }
        Ok(())
    }

    /// `DISCARD ALL` after the session's settings were reset: every cursor
    /// and portal closed, every prepared statement deallocated.
    fn discard_all<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
    ) -> Result<(), SqlError> {
        self.close_cursor(client, None)?;
        self.deallocate(client, None)
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL`: statements prepared by Parse.
    fn deallocate<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        name: Option<&str>,
    ) -> Result<(), SqlError> {
        let store = cursor_store(client)?;
        let mut names = self.statement_names();
        match name {
            Some(n) => {
                if !names.remove(n) {
                    return Err(SqlError::new(
                        "26000",
                        format!("prepared statement \"{}\" does not exist", printable(n)),
                    ));
                }
                store.rm_statement(n);
            }
            None => {
                for n in names.drain() {
                    store.rm_statement(&n);
                }
            }
        }
        Ok(())
    }

    /// `FETCH`: stream up to `count` rows (all when `None`) of a cursor to
    /// the client as one result, `FETCH n`.
    async fn fetch_cursor<C>(
        &self,
        client: &mut C,
        session: &Session,
        name: &str,
        count: Option<usize>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let store = cursor_store(client).map_err(SqlError::into_pgwire)?;
        let Some(Entry::Value(portal)) = store.get_portal(name) else {
            return Err(self.missing_portal(name, "cursor").into_pgwire());
        };
        // Rows were authorised for the access rules of DECLARE; once the
        // role, purpose, break-glass or policy version changes, the cursor
        // ends.
        if let Err(e) = self.check_portal(name, &portal.state(), session) {
            store.rm_portal(name);
            return Err(e.into_pgwire());
        }
        let fields = match &portal.statement.statement.0.result_schema {
            Some(schema) => {
                pg_fields(schema, &Format::UnifiedText).map_err(SqlError::into_pgwire)?
            }
            None => vec![],
        };
        client
            .feed(PgWireBackendMessage::RowDescription(
                pgwire::messages::data::RowDescription::new(
                    fields.iter().map(Into::into).collect(),
                ),
            ))
            .await?;
        let state = portal.state();
        let mut guard = state.lock().await;
        let mut sent = 0usize;
        if let PortalExecutionState::Suspended(results) = &mut *guard {
            while count.is_none_or(|n| sent < n) {
                match results.data_rows().next().await {
                    Some(Ok(row)) => {
                        client.feed(PgWireBackendMessage::DataRow(row)).await?;
                        sent += 1;
                    }
                    Some(Err(e)) => {
                        *guard = PortalExecutionState::Finished;
                        return Err(e);
                    }
                    None => {
                        *guard = PortalExecutionState::Finished;
                        break;
                    }
                }
            }
        }
        drop(guard);
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("FETCH").with_rows(sent).into(),
            ))
            .await?;
        Ok(())
    }

    /// Outcomes that act on the connection's portals and statements
    /// (`DECLARE`, `CLOSE`, `DISCARD ALL`, `DEALLOCATE`), done the same way
    /// for both protocols; each becomes its command tag.
    async fn apply_to_connection<C: ClientPortalStore<PortalStore: PortalStore>>(
        &self,
        client: &C,
        session: &Session,
        outcome: Outcome,
    ) -> Result<Outcome, SqlError> {
        let tag = match outcome {
            Outcome::Cursor { name, inner, rows } => {
                self.open_cursor(client, session, name, inner, rows).await?;
                "DECLARE CURSOR"
            }
            Outcome::Close(name) => {
                self.close_cursor(client, name.as_deref())?;
                "CLOSE CURSOR"
            }
            Outcome::DiscardAll => {
                self.discard_all(client)?;
                "DISCARD ALL"
            }
            Outcome::Deallocate(name) => {
                self.deallocate(client, name.as_deref())?;
                "DEALLOCATE"
            }
            other => return Ok(other),
        };
        Ok(Outcome::Tag(Tag::new(tag)))
    }

    /// When the next suspended portal reaches the idle-portal timeout, if
    /// any is suspended.
    pub fn next_portal_expiry(&self) -> Option<tokio::time::Instant> {
        let timeout = self.shared.limits.idle_portal_timeout()?;
        let oldest = self.grants().values().map(|g| g.last_used).min()?;
        Some(tokio::time::Instant::from_std(oldest + timeout))
    }

    /// Close every portal and cursor idle longer than the idle-portal
    /// timeout: its row stream is dropped, which releases its concurrency
    /// slot and memory and writes its completion record.
    pub fn expire_idle_portals<C: ClientPortalStore<PortalStore: PortalStore>>(&self, client: &C) {
        let Some(timeout) = self.shared.limits.idle_portal_timeout() else {
            return;
        };
        let Ok(store) = cursor_store(client) else {
            return;
        };
        let now = Instant::now();
        let idle: Vec<(String, PortalGrant)> = {
            let mut grants = self.grants();
            let names: Vec<String> = grants
                .iter()
                .filter(|(_, g)| now.saturating_duration_since(g.last_used) >= timeout)
                .map(|(n, _)| n.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| grants.remove(&n).map(|g| (n, g)))
                .collect()
        };
        for (name, grant) in idle {
            let same = match store.get_portal(&name) {
                Some(Entry::Value(p)) => grant
                    .state
                    .upgrade()
                    .is_some_and(|s| Arc::ptr_eq(&s, &p.state())),
                _ => false,
            };
            if same {
                store.rm_portal(&name);
                let mut expired = self.expired_names();
                // Only a reminder for a better error message: bounded.
                if expired.len() >= 1024 {
                    expired.clear();
                }
                expired.insert(name);
                tracing::info!(
                    timeout_secs = timeout.as_secs(),
                    "idle portal closed (limits.idle_portal_timeout_secs)"
                );
            }
        }
    }
}

/// A small all-text result (SHOW).
fn text_rows(
    cols: &[&str],
    rows: Vec<Vec<String>>,
    format: &Format,
) -> Result<QueryResponse, SqlError> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::record_batch::RecordBatch;
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(*c, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = (0..cols.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|_| SqlError::internal())?;
    let fields = Arc::new(pg_fields(&schema, format)?);
    let rows: Vec<PgWireResult<_>> =
        arrow_pg::datatypes::encode_recordbatch(fields.clone(), batch).collect();
    Ok(QueryResponse::new(fields, futures::stream::iter(rows)))
}

/// Statements allowed while a transaction is in the failed state.
fn allowed_in_failed_transaction(kind: &Prepared) -> bool {
    matches!(
        &kind.0.kind,
        PreparedKind::Utility(
            StatementKind::Rollback | StatementKind::Commit | StatementKind::RollbackTo { .. }
        )
    )
}

fn aborted_transaction() -> SqlError {
    SqlError::new(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

#[async_trait]
impl SimpleQueryHandler for ConnHandler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let session = self.require_session()?;
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut status = client.transaction_status();

        // A single statement seen before in the same session state is served
        // from the plan cache; anything else is parsed.
        let key = self.parser.plan_key(&session, &query.query);
        let statements = match self.parser.cached(key.as_ref()) {
            Some(hit) => Ok(vec![Pending::Ready(hit)]),
            None => gate::parse(&query.query, self.shared.parse_limits).map(|v| {
                v.into_iter()
                    .map(|s| Pending::Parsed(Box::new(s)))
                    .collect::<Vec<_>>()
            }),
        };
        let single = statements.as_ref().is_ok_and(|s| s.len() == 1);
        let mut key = key.filter(|_| single);
        match statements {
            Err(e) => {
                self.parser.refused_unparsed(&session, &e);
                send_error(client, e).await?;
                status = status.to_error_state();
            }
            Ok(stmts) if stmts.is_empty() => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            Ok(stmts) => {
                for stmt in stmts {
                    let cancel = session.begin_statement();
                    let result = async {
                        let prepared = match stmt {
                            Pending::Ready(p) => p,
                            Pending::Parsed(stmt) => {
                                let p = self.parser.prepare(&session, *stmt).await?;
                                self.parser.remember(key.take(), &p);
                                p
                            }
                        };
                        if status == TransactionStatus::Error
                            && !allowed_in_failed_transaction(&prepared)
                        {
                            return Err(self.refused(&session, &prepared, aborted_transaction()));
                        }
                        let outcome = self
                            .run(&session, &prepared, None, &Format::UnifiedText, cancel)
                            .await?;
                        self.apply_to_connection(client, &session, outcome).await
                    }
                    .await;
                    let complete = |tag: Tag| PgWireBackendMessage::CommandComplete(tag.into());
                    let sent: PgWireResult<()> = match result {
                        // A row can fail mid-stream (cancel, execution error).
                        Ok(Outcome::Rows(rows)) => send_query_response(client, rows, true).await,
                        Ok(Outcome::Tag(tag)) => {
                            client.feed(complete(tag)).await.map_err(Into::into)
                        }
                        Ok(
                            Outcome::Cursor { .. }
                            | Outcome::Close(_)
                            | Outcome::DiscardAll
                            | Outcome::Deallocate(_),
                        ) => Err(SqlError::internal().into_pgwire()),
                        Ok(Outcome::Fetch { name, count }) => {
                            self.fetch_cursor(client, &session, &name, count).await
                        }
                        Ok(Outcome::RolledBackTo) => {
                            status = TransactionStatus::Transaction;
                            client
                                .feed(complete(Tag::new("ROLLBACK")))
                                .await
                                .map_err(Into::into)
                        }
                        Ok(Outcome::Begin) => {
                            status = status.to_in_transaction_state();
                            client
                                .feed(complete(Tag::new("BEGIN")))
                                .await
                                .map_err(Into::into)
                        }
                        Ok(Outcome::End { commit }) => {
                            // COMMIT of a failed transaction rolls it back.
                            let commit = commit && status != TransactionStatus::Error;
                            session.end_transaction(commit);
                            status = status.to_idle_state();
                            let tag = if commit { "COMMIT" } else { "ROLLBACK" };
                            client
                                .feed(complete(Tag::new(tag)))
                                .await
                                .map_err(Into::into)
                        }
                        Err(e) => Err(e.into_pgwire()),
                    };
                    // One way out for every statement error: report it, mark
                    // the transaction failed, skip the rest of the query.
                    match sent {
                        Ok(()) => {}
                        Err(PgWireError::UserError(info)) => {
                            client
                                .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                                .await?;
                            status = status.to_error_state();
                            break;
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` is overridden and never calls this.
        Err(SqlError::internal().into_pgwire())
    }
}

async fn send_error<C>(client: &mut C, e: SqlError) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match e.into_pgwire() {
        PgWireError::UserError(info) => {
            client
                .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                .await?;
            Ok(())
        }
        other => Err(other),
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnHandler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// pgwire's Parse, remembering the statement's name for `DEALLOCATE
    /// ALL` and `DISCARD ALL`.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let parsed =
            pgwire::api::stmt::StoredStatement::parse(client, &message, self.parser.clone())
                .await?;
        match parsed {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if name != DEFAULT_NAME {
            self.statement_names().insert(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// pgwire's Close, also forgetting the name and the portal's grant.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                client.portal_store().rm_statement(name);
                self.statement_names().remove(name);
            }
            TARGET_TYPE_BYTE_PORTAL => {
                client.portal_store().rm_portal(name);
                self.forget_portal(name);
            }
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.require_session()?;
        let prepared = &portal.statement.statement;
        // The statement runs: its Parse needs no record of its own.
        if let Some(guard) = &prepared.1 {
            guard.mark_executed();
        }
        let params = (|| {
            if client.transaction_status() == TransactionStatus::Error
                && !allowed_in_failed_transaction(prepared)
            {
                return Err(aborted_transaction());
            }
            if prepared.0.param_types.is_empty() && portal.parameter_len() == 0 {
                return Ok(None);
            }
            if portal.parameter_len() != prepared.0.param_types.len() {
                return Err(SqlError::new(
                    "08P01",
                    format!(
                        "bind message supplies {} parameters, but prepared statement requires {}",
                        portal.parameter_len(),
                        prepared.0.param_types.len()
                    ),
                ));
            }
            let inferred: Vec<Option<&DataType>> = prepared
                .0
                .param_data_types
                .iter()
                .map(|t| t.as_ref())
                .collect();
            arrow_pg::datatypes::df::deserialize_parameters(portal, &inferred)
                .map(Some)
                .map_err(|_| SqlError::new("22P02", "invalid value for a bound parameter"))
        })()
        .map_err(|e| self.refused(&session, prepared, e).into_pgwire())?;
        let cancel = session.begin_statement();
        let outcome = match self
            .run(
                &session,
                prepared,
                params,
                &portal.result_column_format,
                cancel,
            )
            .await
        {
            Ok(o) => self.apply_to_connection(client, &session, o).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Outcome::Rows(rows)) => Ok(Response::Query(rows)),
            Ok(Outcome::Tag(tag)) => Ok(Response::Execution(tag)),
            Ok(
                Outcome::Cursor { .. }
                | Outcome::Close(_)
                | Outcome::DiscardAll
                | Outcome::Deallocate(_),
            ) => Err(SqlError::internal().into_pgwire()),
            Ok(Outcome::RolledBackTo) => {
                client.set_transaction_status(TransactionStatus::Transaction);
                Ok(Response::Execution(Tag::new("ROLLBACK")))
            }
            Ok(Outcome::Fetch { .. }) => Err(SqlError::new(
                "0A000",
                "FETCH is supported in simple queries; over the extended protocol, page a portal with Execute's row limit",
            )
            .into_pgwire()),
            Ok(Outcome::Begin) => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Ok(Outcome::End { commit }) => {
                // COMMIT of a failed transaction rolls it back.
                let commit = commit && client.transaction_status() != TransactionStatus::Error;
                session.end_transaction(commit);
                let tag = if commit { "COMMIT" } else { "ROLLBACK" };
                Ok(Response::TransactionEnd(Tag::new(tag)))
            }
            Err(e) => Err(e.into_pgwire()),
        }
    }

    /// Execute streams rows straight from the portal's stream to the socket,
    /// `max_rows` at a time, instead of pgwire's default which collects the
    /// rows of one Execute (all of them when `max_rows` is 0) into memory.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = message.max_rows.max(0) as usize;

        let portal = match client.portal_store().get_portal(portal_name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => {
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Err(self.missing_portal(portal_name, "portal").into_pgwire());
            }
        };

        let state = portal.state();
        let mut guard = state.lock().await;
        if matches!(&*guard, PortalExecutionState::Suspended(_)) {
            // More rows of a portal opened earlier: only under the access
            // rules it was opened under, and only with a live token (an
            // expired one ends the session, FATAL 28000).
            let checked = self.require_session().and_then(|session| {
                self.check_portal(portal_name, &state, &session)
                    .map_err(SqlError::into_pgwire)
            });
            if let Err(e) = checked {
                *guard = PortalExecutionState::Finished;
                drop(guard);
                client.portal_store().rm_portal(portal_name);
                self.forget_portal(portal_name);
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Err(e);
            }
        }
        if matches!(&*guard, PortalExecutionState::Initial) {
            let resp =
                ExtendedQueryHandler::do_query(self, client, portal.as_ref(), max_rows).await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    return Err(e);
                }
            };
            // The statement may have changed the transaction state itself
            // (ROLLBACK TO SAVEPOINT).
            status = client.transaction_status();
            match resp {
                Response::Query(results) => {
                    if let Some(session) = self.session() {
                        self.grant_portal(portal_name, &state, &session);
                    }
                    *guard = PortalExecutionState::Suspended(results)
                }
                Response::Execution(tag) => {
                    *guard = PortalExecutionState::Finished;
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                }
                Response::TransactionStart(tag) => {
                    *guard = PortalExecutionState::Finished;
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    status = status.to_in_transaction_state();
                }
                Response::TransactionEnd(tag) => {
                    *guard = PortalExecutionState::Finished;
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    status = status.to_idle_state();
                }
                _ => {
                    *guard = PortalExecutionState::Finished;
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    return Err(SqlError::internal().into_pgwire());
                }
            }
        }

        let mut failure = None;
        match &mut *guard {
            PortalExecutionState::Suspended(results) => {
                let tag_name = results.command_tag().to_owned();
                let mut sent = 0usize;
                let mut exhausted = false;
                while max_rows == 0 || sent < max_rows {
                    match results.data_rows().next().await {
                        Some(Ok(row)) => {
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            sent += 1;
                        }
                        Some(Err(e)) => {
                            failure = Some(e);
                            break;
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                }
                if failure.is_some() {
                    *guard = PortalExecutionState::Finished;
                    self.forget_portal(portal_name);
                } else if exhausted {
                    *guard = PortalExecutionState::Finished;
                    self.forget_portal(portal_name);
                    client
                        .feed(PgWireBackendMessage::CommandComplete(
                            Tag::new(&tag_name).with_rows(sent).into(),
                        ))
                        .await?;
                } else {
                    client
                        .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                        .await?;
                }
            }
            PortalExecutionState::Finished => {}
            PortalExecutionState::Initial => failure = Some(SqlError::internal().into_pgwire()),
        }
        drop(guard);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl StartupHandler for ConnHandler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                client.metadata_mut().extend(
                    startup
                        .parameters
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                if !client.is_secure() && !self.shared.plaintext_allowed(client.socket_addr()) {
                    self.audit_refused(client, None, "28000", "tls_required");
                    return Err(SqlError::tls_required().into_pgwire());
                }
                if client.metadata().get("user").is_none_or(|u| u.is_empty()) {
                    self.audit_refused(client, None, "28000", "no_user");
                    return Err(SqlError::fatal("28000", "no user name given").into_pgwire());
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                if !matches!(
                    client.state(),
                    PgWireConnectionState::AuthenticationInProgress
                ) {
                    return Err(
                        SqlError::fatal("08P01", "unexpected password message").into_pgwire()
                    );
                }
                let token = pwd.into_password().map(|p| p.password).unwrap_or_default();
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let principal = match self.shared.auth.verify(&user, &token) {
                    Ok(p) => p,
                    Err(reason) => {
                        self.audit_refused(client, None, reason.sqlstate(), reason.class());
                        tracing::info!(client = %client.socket_addr().ip(), reason = reason.class(), "authentication failed");
                        return Err(SqlError::fatal(
                            reason.sqlstate(),
                            format!(
                                "password authentication failed for user \"{}\"",
                                printable(&user)
                            ),
                        )
                        .into_pgwire());
                    }
                };
                let params: BTreeMap<String, String> = client
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let database = params
                    .get("database")
                    .cloned()
                    .unwrap_or_else(|| user.clone());
                let session = Arc::new(Session::new(
                    principal,
                    self.shared.policy.current(),
                    database,
                    client.socket_addr(),
                    client.is_secure(),
                ));
                if !session.has_known_role() {
                    // A valid token whose roles grant nothing: the same answer as
                    // any other failed check; the reason goes to the audit log.
                    self.audit_refused(
                        client,
                        Some(&session),
                        AuthFailure::Claims.sqlstate(),
                        AuthFailure::Claims.class(),
                    );
                    return Err(SqlError::fatal(
                        AuthFailure::Claims.sqlstate(),
                        format!(
                            "password authentication failed for user \"{}\"",
                            printable(&user)
                        ),
                    )
                    .into_pgwire());
                }
                if let Err(mut e) = session.apply_startup(&params) {
                    self.audit_refused(client, Some(&session), e.code, "startup_parameter");
                    e.fatal = true;
                    return Err(e.into_pgwire());
                }
                let (_, secret) =
                    pgwire::api::RandomPidSecretKeyGenerator::default().generate(client);
                let pid = self.shared.registry.register(&session, secret.clone());
                client.set_pid_and_secret_key(pid, secret);
                // No session without its audit record.
                if let Err(mut e) = self
                    .shared
                    .audit
                    .record(events::connect_allowed(&session))
                    .await
                {
                    self.shared.registry.unregister(session.id);
                    e.fatal = true;
                    return Err(e.into_pgwire());
                }
                let _ = self.parser.session.set(session.clone());
                tracing::info!(session = %session.id, user = %session.user, tls = session.tls, "session started");
                finish_authentication(client, &ParamProvider { session }).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A user name made safe for an error message (it is the client's own input).
/// The `reason` label of a refused connection (audit reason classes of
/// [`crate::auth::AuthFailure::class`] and the startup checks).
fn refusal_reason(reason: &str) -> crate::metrics::AuthFailureReason {
    use crate::metrics::AuthFailureReason as R;
    match reason {
        "missing" | "malformed" | "algorithm" | "signature" | "issuer" | "audience" => R::BadToken,
        "expired" | "not_yet_valid" | "lifetime" => R::Expired,
        "unknown_key" => R::UnknownKey,
        "claims" | "user_mismatch" | "unknown_role" => R::BadClaims,
        "tls_required" => R::NoTls,
        _ => R::Other,
    }
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

impl ConnHandler {
    /// Audit a refused connection attempt (queued: nothing is disclosed).
    /// `verified`: the session of a token verified before the refusal;
    /// without one, the user name is recorded as the client's claim.
    fn audit_refused<C: ClientInfo>(
        &self,
        client: &C,
        verified: Option<&Session>,
        sqlstate: &str,
        reason: &str,
    ) {
        crate::metrics::Metrics::global().auth_failure(refusal_reason(reason));
        let meta = client.metadata();
        let field = |k: &str| meta.get(k).map(|v| printable(v)).unwrap_or_default();
        self.shared.audit.record_later(match verified {
            Some(session) => events::connect_refused_verified(
                session,
                &field("application_name"),
                reason,
                sqlstate,
            ),
            None => events::connect_refused(
                &field("user"),
                client.socket_addr(),
                &field("application_name"),
                reason,
                sqlstate,
            ),
        });
    }
}

/// ParameterStatus values sent after authentication.
struct ParamProvider {
    session: Arc<Session>,
}

impl pgwire::api::auth::ServerParameterProvider for ParamProvider {
    fn server_parameters<C>(&self, _client: &C) -> Option<std::collections::HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let s = &self.session;
        let mut m = std::collections::HashMap::new();
        m.insert(
            "server_version".into(),
            crate::session::SERVER_VERSION.into(),
        );
        m.insert("server_encoding".into(), "UTF8".into());
        m.insert("client_encoding".into(), "UTF8".into());
        m.insert("DateStyle".into(), "ISO, MDY".into());
        m.insert("TimeZone".into(), "UTC".into());
        m.insert("IntervalStyle".into(), "postgres".into());
        m.insert("integer_datetimes".into(), "on".into());
        m.insert("standard_conforming_strings".into(), "on".into());
        m.insert("is_superuser".into(), "off".into());
        m.insert("default_transaction_read_only".into(), "on".into());
        m.insert("in_hot_standby".into(), "off".into());
        m.insert("session_authorization".into(), s.user.clone());
        m.insert("application_name".into(), s.application_name());
        Some(m)
    }
}

#[async_trait]
impl CancelHandler for ConnHandler {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.shared
            .registry
            .cancel(request.pid, &request.secret_key);
    }
}

/// `stream` with its first batch already computed (or its first error):
/// the audit record of a statement becomes durable while its first batch
/// is computed, and a short result is then sent at once. Nothing leaves
/// before the record is durable; only one batch is held.
async fn first_batch_ahead(
    mut stream: datafusion::execution::SendableRecordBatchStream,
) -> datafusion::execution::SendableRecordBatchStream {
    let schema = stream.schema();
    let first = stream.next().await;
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(first).chain(stream),
        ),
    )
}
