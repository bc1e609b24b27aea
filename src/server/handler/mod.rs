//! The pgwire handlers of one connection: startup, simple query, extended
//! query (Parse/Bind/Describe/Execute/Sync) and cancel.
//!
//! One [`ConnHandler`] exists per connection; it owns the [`Session`] once
//! startup has finished. Every statement goes the same way whichever protocol
//! carried it: gate (parse + classify) → session rules (bind identity
//! functions) → plan (AST, never text) → read-only verification → streamed
//! execution. Errors become [`SqlError`]s; only `FATAL` ones close the socket.
//!
//! One file per protocol concern, each with its own `impl` blocks:
//! - `startup`: startup and authentication (`StartupHandler`), the
//!   ParameterStatus values sent after it, and cancel requests
//!   (`CancelHandler`).
//! - `simple`: the simple Query protocol (`SimpleQueryHandler`).
//! - `extended`: the extended protocol (`ExtendedQueryHandler`): Parse,
//!   Close, Execute and the portal's first run.
//! - `prepare`: statement preparation: the [`Parser`] (`QueryParser`), the
//!   plan cache and the audit guard of a Parse ([`Unexecuted`]); planning
//!   itself is [`crate::query`]'s.
//! - `run`: running a prepared statement (`run`, `run_audited`) under its
//!   audit trail and limits, and the utility statements (SET, SHOW, RESET,
//!   transactions, FETCH, CLOSE…).
//! - `cursors`: cursors and portals: DECLARE, FETCH, CLOSE, DISCARD ALL,
//!   DEALLOCATE, the access rules a portal was opened under and the
//!   idle-portal timeout.
//! - this file: the connection's state, the prepared-statement types and
//!   small helpers the others share.

mod cursors;
mod extended;
mod prepare;
mod run;
mod simple;
mod startup;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use pgwire::api::Type;
use pgwire::error::PgWireResult;

use super::Shared;
use crate::error::SqlError;
use crate::rewrite::gate::StatementKind;
use crate::session::Session;
use cursors::PortalGrant;
pub(crate) use prepare::Unexecuted;

/// Per-connection handler state.
pub(crate) struct ConnHandler {
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

/// The extended-protocol parser; shares the connection's session.
pub(crate) struct Parser {
    shared: Arc<Shared>,
    session: Arc<OnceLock<Arc<Session>>>,
    /// Statements of SQL `PREPARE`, by name, for `EXECUTE`.
    sql_statements: Mutex<HashMap<String, Prepared>>,
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
            PreparedKind::Utility(_)
            | PreparedKind::Declare { .. }
            | PreparedKind::Copy { .. }
            | PreparedKind::Prepare { .. }
            | PreparedKind::Execute { .. } => 1024,
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
    planned_for: AccessKey,
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
    /// `COPY (query) TO STDOUT`: the query, its rows written in a COPY
    /// format.
    Copy {
        options: crate::rewrite::gate::CopyOptions,
        inner: Prepared,
    },
    /// SQL `PREPARE name AS <query>`: the planned query, kept under `name`
    /// when it runs.
    Prepare { name: String, inner: Prepared },
    /// SQL `EXECUTE name(…)`: a `PREPARE`d query with its parameter values
    /// (re-planned like any prepared statement when the access rules
    /// changed).
    Execute {
        inner: Prepared,
        args: Vec<prepare::ExecuteArg>,
    },
}

/// The access rules a plan, portal or cursor was authorised for: the
/// policy subject (role, site, purpose, break-glass) and the policy
/// version. `None` when the session had no subject (catalog-only
/// statements before a purpose is declared).
pub(super) type AccessKey = Option<(crate::policy::compile::Subject, String)>;

/// The session's access rules now.
pub(super) fn access_key(session: &Session) -> AccessKey {
    session
        .subject()
        .map(|s| (s, session.policy().version.clone()))
}

/// What a plan of `session` was built for: its [`access_key`] with, under a
/// shadow policy, the shadow version too (a plan carries the shadow verdict
/// of its planning, so a new shadow policy re-plans it; an open portal
/// keeps running: its access is the live policy's alone).
pub(super) fn planning_key(session: &Session) -> AccessKey {
    session.subject().map(|s| (s, session.policy_key()))
}

impl PreparedInner {
    /// A statement of `kind` that takes no parameters, returns no rows,
    /// reads no table, is not kept for re-planning and is not shared
    /// through the plan cache; callers set what differs.
    fn new(kind: PreparedKind, statement_kind: &'static str, fingerprint: &str) -> PreparedInner {
        PreparedInner {
            kind,
            param_types: vec![],
            param_data_types: vec![],
            result_schema: None,
            reads_tables: false,
            source: None,
            planned_for: None,
            report: None,
            shareable: false,
            statement_kind,
            fingerprint: fingerprint.to_owned(),
        }
    }

    /// A statement that runs `inner`'s query (`DECLARE … CURSOR FOR`,
    /// `COPY (…) TO STDOUT`): its parameters and reads are the query's;
    /// the query is re-planned on its own when the access rules change.
    fn around(
        inner: Prepared,
        wrap: impl FnOnce(Prepared) -> PreparedKind,
        statement_kind: &'static str,
        fingerprint: &str,
    ) -> PreparedInner {
        PreparedInner {
            param_types: inner.0.param_types.clone(),
            param_data_types: inner.0.param_data_types.clone(),
            reads_tables: inner.0.reads_tables,
            ..PreparedInner::new(wrap(inner), statement_kind, fingerprint)
        }
    }

    /// A query planned by the pipeline for `principal`: re-planned at
    /// Execute when the session's subject or policy version no longer
    /// matches the ones it was planned for.
    fn planned(
        planned: crate::query::PlannedQuery,
        principal: &crate::query::Principal,
        source: Statement,
        statement_kind: &'static str,
        fingerprint: &str,
    ) -> PreparedInner {
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
        PreparedInner {
            param_types,
            param_data_types,
            result_schema: Some(result_schema),
            reads_tables,
            source: Some(source),
            planned_for: principal
                .subject
                .clone()
                .map(|s| (s, principal.policy_key())),
            // (the same key as `planning_key` of the session the principal
            // was taken from)
            report: Some(report),
            shareable: !connection_specific,
            ..PreparedInner::new(
                PreparedKind::Plan {
                    plan,
                    state,
                    optimised,
                },
                statement_kind,
                fingerprint,
            )
        }
    }
}

impl ConnHandler {
    pub(crate) fn new(shared: Arc<Shared>) -> ConnHandler {
        let parser = Arc::new(Parser {
            shared: shared.clone(),
            session: Arc::new(OnceLock::new()),
            sql_statements: Mutex::new(HashMap::new()),
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
    pub(crate) fn session(&self) -> Option<Arc<Session>> {
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
        s.set_shadow(self.shared.policy.shadow());
        Ok(s)
    }
}

fn token_expired() -> SqlError {
    SqlError::fatal(
        "28000",
        "authentication token expired: reconnect with a new token",
    )
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

/// Named prepared statements one connection may hold (Parse and SQL
/// `PREPARE` together): each holds a plan, so the count is bounded.
const MAX_PREPARED_STATEMENTS: usize = 4096;

fn too_many_statements() -> SqlError {
    SqlError::new(
        "53400",
        format!(
            "too many prepared statements on this connection (at most {MAX_PREPARED_STATEMENTS}): DEALLOCATE or Close some"
        ),
    )
}

fn aborted_transaction() -> SqlError {
    SqlError::new(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// A user name made safe for an error message (it is the client's own input).
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests;
