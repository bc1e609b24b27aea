//! Running a prepared statement: the audit trail, limits and streamed
//! execution of a plan, and the utility statements.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Tag};
use pgwire::error::PgWireResult;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ConnHandler, Prepared, PreparedKind};
use crate::audit::events::StatementAudit;
use crate::engine::encode::pg_fields;
use crate::error::SqlError;
use crate::rewrite::gate::StatementKind;
use crate::session::Session;

/// What running a statement produced.
pub(super) enum Outcome {
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
    /// `COPY … TO STDOUT`: rows to send in a COPY format.
    Copy(crate::server::copy::CopyOut),
}

impl ConnHandler {
    /// Record a prepared statement refused before it ran; returns the error.
    pub(super) fn refused(&self, session: &Session, prepared: &Prepared, e: SqlError) -> SqlError {
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
    pub(super) async fn run(
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
        let replanned;
        let prepared = if needs_replanning(prepared, session) {
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
                let fields = Arc::new(pg_fields(
                    &shown_schema(plan.schema().as_arrow(), prepared.0.result_schema.as_ref()),
                    format,
                )?);
                let reads_audit = prepared
                    .0
                    .report
                    .as_ref()
                    .is_some_and(|r| r.tables.iter().any(|t| t.starts_with("audit.")));
                let role = session.role();
                let running = crate::query::execute::execute(
                    crate::query::execute::Execution {
                        engine: &self.shared.engine,
                        limits: Some((&self.shared.limits, role.as_deref())),
                        audit,
                        auditor: Some(&self.shared.audit),
                        cancel: cancel.clone(),
                        activity: Some(Arc::new(crate::engine::catalog::SessionActivity {
                            pid: self.shared.registry.pid_of(session.id).unwrap_or(0),
                            user: session.user.clone(),
                            database: session.database.clone(),
                            application_name: session.application_name(),
                            client_addr: Some(session.client_addr.ip().to_string()),
                            client_port: Some(i32::from(session.client_addr.port())),
                            backend_start_micros: None,
                        })),
                    },
                    crate::query::execute::Plan {
                        state,
                        plan,
                        optimised: *optimised,
                        reads_audit,
                    },
                )
                .await?;
                let rows = running.rows(fields.clone(), cancel);
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
            PreparedKind::Copy { options, inner } => {
                let format = match options.format {
                    crate::rewrite::gate::CopyFormat::Binary => Format::UnifiedBinary,
                    _ => Format::UnifiedText,
                };
                match Box::pin(self.run_audited(session, inner, params, &format, cancel, audit))
                    .await?
                {
                    Outcome::Rows(rows) => Ok(Outcome::Copy(crate::server::copy::CopyOut::new(
                        options.clone(),
                        rows,
                    )?)),
                    _ => Err(SqlError::internal()),
                }
            }
            PreparedKind::Prepare { name, inner } => {
                let (taken, protocol) = {
                    let names = self.statement_names();
                    (names.contains(name), names.len())
                };
                self.parser
                    .keep_sql_statement(name, inner, taken, protocol)?;
                if let Some(a) = audit.take() {
                    a.done_without_rows().await?;
                }
                Ok(Outcome::Tag(Tag::new("PREPARE")))
            }
            PreparedKind::Execute { inner, args } => {
                let bound = super::prepare::bind_execute_args(args, params.as_ref())?;
                Box::pin(self.run_audited(session, inner, bound, format, cancel, audit)).await
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
            StatementKind::Query(_)
            | StatementKind::Explain(_)
            | StatementKind::Declare { .. }
            | StatementKind::Copy { .. }
            | StatementKind::Prepare { .. }
            | StatementKind::Execute { .. } => Err(SqlError::internal()),
        }
    }
}

/// Whether `prepared` was planned for access rules other than the
/// session's now (role, purpose, break-glass, site or policy version
/// changed since Parse): such a plan is re-planned, never reused.
pub(super) fn needs_replanning(prepared: &Prepared, session: &Session) -> bool {
    matches!(prepared.0.kind, PreparedKind::Plan { .. })
        && super::planning_key(session) != prepared.0.planned_for
}

/// Whether two plans return the same column types, as PostgreSQL judges a
/// re-planned cached statement: the number and PostgreSQL types of the
/// columns, not their Arrow encoding or nullability (a mask that becomes
/// NULL keeps the column's type).
pub(super) fn same_result_types(a: &Option<SchemaRef>, b: &Option<SchemaRef>) -> bool {
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

/// The plan's output schema under the names the client was told at
/// Describe (`result_schema`: PostgreSQL's names, duplicates allowed): the
/// types are the plan's, as the rows are encoded from them.
fn shown_schema(
    plan: &datafusion::arrow::datatypes::Schema,
    shown: Option<&datafusion::arrow::datatypes::SchemaRef>,
) -> datafusion::arrow::datatypes::Schema {
    match shown {
        Some(shown) if shown.fields().len() == plan.fields().len() => {
            datafusion::arrow::datatypes::Schema::new_with_metadata(
                plan.fields()
                    .iter()
                    .zip(shown.fields().iter())
                    .map(|(f, s)| f.as_ref().clone().with_name(s.name().clone()))
                    .collect::<Vec<_>>(),
                plan.metadata().clone(),
            )
        }
        _ => plan.clone(),
    }
}
