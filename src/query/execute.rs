//! The last steps of a statement's life, after [`super::plan_query`]:
//! limits → audit record durable → run → stream → completion.
//!
//! The server runs every planned query through [`execute`] with the
//! session's limits and audit trail; `lakeward policy test` runs the same
//! function with neither. What differs is an argument of [`Execution`].

use std::sync::Arc;

use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::LogicalPlan;
use futures::stream::{Stream, StreamExt};
use pgwire::api::results::FieldInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::limits::{Exceeded, Limited, Limits, StatementLimits};
use crate::audit::Auditor;
use crate::audit::events::{Completion, StatementAudit};
use crate::engine::Engine;
use crate::engine::accounting::PatientSets;
use crate::error::SqlError;
use crate::metrics::{Metrics, Phase, StatementTimer};

/// What a statement is executed under.
pub(crate) struct Execution<'a> {
    pub engine: &'a Engine,
    /// The server's limits and the role they are taken for; `None`:
    /// unlimited (`policy test`).
    pub limits: Option<(&'a Arc<Limits>, Option<&'a str>)>,
    /// The statement's audit trail; `None`: unaudited (`policy test`).
    /// Taken once its records are handed over: what is left is the
    /// caller's to close as failed.
    pub audit: &'a mut Option<StatementAudit>,
    /// The audit store, brought up to date before a statement that reads
    /// the audit tables, so auditors see every record up to their own.
    pub auditor: Option<&'a Auditor>,
    pub cancel: CancellationToken,
    /// The session `pg_stat_activity` shows (`None`: no rows).
    pub activity: Option<Arc<crate::engine::catalog::SessionActivity>>,
}

/// A planned query to execute.
pub(crate) struct Plan<'a> {
    pub state: &'a Arc<SessionState>,
    pub plan: LogicalPlan,
    /// Whether `plan` is already optimised.
    pub optimised: bool,
    /// Whether it reads `audit.*` tables.
    pub reads_audit: bool,
}

/// An admitted statement under its limits: the row cap, the deadline and
/// the concurrency slot held until its rows are all sent.
struct Admitted {
    limits: Arc<Limits>,
    statement: StatementLimits,
    deadline: Option<tokio::time::Instant>,
    permit: Option<OwnedSemaphorePermit>,
}

/// A running statement: its record is durable and its first batch
/// computed.
pub(crate) struct Running {
    /// The record batches, first one already computed.
    pub batches: SendableRecordBatchStream,
    admitted: Option<Admitted>,
    completion: Option<Completion>,
    /// The statement's patient account (audited statements only).
    patients: Option<Arc<PatientSets>>,
    timer: StatementTimer,
}

/// Admission, the durable audit record and the start of execution, in the
/// order that keeps the barrier and the audit promise: no row leaves
/// before the statement's record is durable, and a record that cannot be
/// written stops the execution at once (its error wins).
pub(crate) async fn execute(x: Execution<'_>, plan: Plan<'_>) -> Result<Running, SqlError> {
    let Execution {
        engine,
        limits,
        audit,
        auditor,
        cancel,
        activity,
    } = x;
    let mut timer = Metrics::global().statement_timer();
    let admitted = match limits {
        Some((limits, role)) => {
            let statement = limits.for_role(role);
            let permit = limits.admit(role, &statement)?;
            let deadline = statement.timeout.map(|t| tokio::time::Instant::now() + t);
            Some(Admitted {
                limits: limits.clone(),
                statement,
                deadline,
                permit,
            })
        }
        None => None,
    };
    let deadline = admitted.as_ref().and_then(|a| a.deadline);
    // An audited statement accounts for the patients it touches.
    let patients = (audit.is_some() && auditor.is_none_or(Auditor::accounts_patients))
        .then(|| Arc::new(PatientSets::default()));
    let Plan {
        state,
        plan,
        optimised,
        reads_audit,
    } = plan;
    // The final plan first: a statement pinned to one patient names it in
    // its record, durable before its first row, and its completion need
    // not be waited for (`Completion::finish`).
    let fin = engine.final_plan(state, plan, optimised, activity, patients.as_ref())?;
    if let (Some(a), Some(patient)) = (audit.as_mut(), fin.pinned) {
        a.pin(patient);
    }
    let record = async {
        match audit.as_mut() {
            Some(a) => a.before_rows().await,
            None => Ok(()),
        }
    };
    let role = limits.and_then(|(_, role)| role);
    let budget = admitted
        .as_ref()
        .and_then(|a| Some((a.statement.max_memory?, role?)));
    let run = async {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(SqlError::cancelled()),
            _ = until(deadline) => match &admitted {
                Some(a) => Err(a.limits.exceeded(Exceeded::StatementTimeout)),
                None => Err(SqlError::internal()),
            },
            r = async {
                // The role's memory budget, within the engine's.
                let (stream, _keys) = engine.run_final(fin, budget).await?;
                Ok(first_batch_ahead(stream).await)
            } => r,
        }
    };
    let batches = if reads_audit {
        record.await?;
        if let Some(auditor) = auditor {
            auditor.sync_table().await?;
        }
        run.await?
    } else {
        // The record is made durable while the physical plan is built and
        // its first batch computed; rows wait for both.
        tokio::pin!(record);
        tokio::pin!(run);
        tokio::select! {
            recorded = &mut record => {
                recorded?;
                run.await?
            }
            batches = &mut run => {
                record.await?;
                batches?
            }
        }
    };
    timer.mark(Phase::Execute);
    Ok(Running {
        batches,
        admitted,
        completion: audit.take().map(|a| a.completion(patients.clone())),
        patients,
        timer,
    })
}

impl Running {
    /// The rows for the wire: encoded in `fields`' formats, ended by the
    /// statement's limits (row cap, deadline), each counted by the
    /// statement's completion record, which is written when the stream
    /// ends or is dropped.
    pub(crate) fn rows(
        self,
        fields: Arc<Vec<FieldInfo>>,
        cancel: CancellationToken,
    ) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
        let Running {
            batches,
            admitted,
            completion,
            patients,
            timer,
        } = self;
        let encoded = Box::pin(crate::engine::encode::row_stream(
            batches, fields, cancel, patients,
        ));
        let limited = match admitted {
            Some(a) => {
                Limited::new(encoded, a.limits, &a.statement, a.deadline, a.permit).left_stream()
            }
            None => encoded.right_stream(),
        };
        // Field order is drop order: the rows (whose encoder hands the
        // patients of the rows it sent to the account) before the
        // completion record that reads the account.
        struct Rows<S> {
            rows: S,
            completion: Option<Completion>,
            timer: StatementTimer,
            ended: bool,
        }
        let state = Rows {
            rows: Box::pin(limited),
            completion,
            timer,
            ended: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            if st.ended {
                return None;
            }
            match st.rows.next().await {
                Some(row) => {
                    if let Ok(r) = &row {
                        st.timer.first_row();
                        Metrics::global().bytes_sent(r.data.len() as u64);
                    }
                    if let Some(c) = st.completion.as_mut() {
                        match &row {
                            Ok(_) => c.row(),
                            Err(PgWireError::UserError(info)) => c.error(&info.code),
                            Err(_) => c.error("XX000"),
                        }
                    }
                    Some((row, st))
                }
                // The end is reported only once the completion record (and
                // the patients it names) is written.
                None => {
                    st.ended = true;
                    match st.completion.take()?.finish().await {
                        Ok(()) => None,
                        Err(e) => Some((Err(e.into_pgwire()), st)),
                    }
                }
            }
        })
    }
}

/// Completes at `deadline`, or never.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `stream` with its first batch already computed (or its first error):
/// the audit record of a statement becomes durable while its first batch
/// is computed, and a short result is then sent at once. Nothing leaves
/// before the record is durable; only one batch is held.
async fn first_batch_ahead(mut stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let first = stream.next().await;
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(first).chain(stream),
        ),
    )
}
