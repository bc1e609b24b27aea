//! Building audit records from what the connection handler knows: the
//! session, the statement's kind and fingerprint, the enforcement report.

use std::net::SocketAddr;
use std::time::Instant;

use super::Auditor;
use super::record::{RecordBody, decision, event};
use crate::enforce::AccessReport;
use crate::error::SqlError;
use crate::session::Session;

/// A body with a fresh event id and the current time.
fn body(kind: &str) -> RecordBody {
    RecordBody {
        event_id: uuid::Uuid::new_v4().to_string(),
        ts: chrono::Utc::now().timestamp_micros(),
        event: kind.to_owned(),
        ..Default::default()
    }
}

/// The decision an error stands for: refusals by policy or authentication
/// are `denied`, everything else is `error`.
pub fn decision_for(sqlstate: &str) -> &'static str {
    match sqlstate {
        "42501" | "28000" | "28P01" => decision::DENIED,
        _ => decision::ERROR,
    }
}

impl crate::metrics::Decision {
    /// The decision for a statement that ended with `sqlstate`, as the
    /// audit log records it ([`decision_for`]): `42501` (how every policy
    /// refusal is reported) and the authentication states are denials,
    /// anything else an error.
    pub fn from_sqlstate(sqlstate: &str) -> crate::metrics::Decision {
        crate::metrics::Decision::from_audit(decision_for(sqlstate))
    }
}

fn session_body(kind: &str, session: &Session) -> RecordBody {
    RecordBody {
        session_id: Some(session.id.to_string()),
        user: session.user.clone(),
        roles: session.principal.roles.clone(),
        purpose: session.purpose().map(|p| p.as_str().to_owned()),
        break_glass: session.break_glass(),
        client_addr: Some(session.client_addr.ip().to_string()),
        application_name: Some(session.application_name()).filter(|a| !a.is_empty()),
        ..body(kind)
    }
}

/// A connection that completed authentication.
pub fn connect_allowed(session: &Session) -> RecordBody {
    RecordBody {
        decision: decision::ALLOWED.into(),
        ..session_body(event::CONNECT, session)
    }
}

/// Appended to the `reason` of a connection refused before any token
/// vouched for the client: its `user` is the startup user name as the
/// client claimed it, not a verified identity.
pub const UNVERIFIED_USER: &str = " (user name unverified)";

/// A connection refused before or during authentication. `user` and
/// `application_name` are the client's unverified startup values; the
/// record says so in its `reason` ([`UNVERIFIED_USER`]) and has no
/// `session_id`.
pub fn connect_refused(
    user: &str,
    client_addr: SocketAddr,
    application_name: &str,
    reason: &str,
    sqlstate: &str,
) -> RecordBody {
    RecordBody {
        user: user.to_owned(),
        client_addr: Some(client_addr.ip().to_string()),
        application_name: Some(application_name.to_owned()).filter(|a| !a.is_empty()),
        decision: decision_for(sqlstate).into(),
        reason: Some(format!("{reason}{UNVERIFIED_USER}")),
        sqlstate: Some(sqlstate.to_owned()),
        ..body(event::CONNECT)
    }
}

/// A connection refused after its token was verified (no role the policy
/// knows, a refused startup parameter): `user` and `roles` are the token's,
/// and the record carries the session id the connection would have had.
pub fn connect_refused_verified(
    session: &Session,
    application_name: &str,
    reason: &str,
    sqlstate: &str,
) -> RecordBody {
    RecordBody {
        application_name: Some(application_name.to_owned()).filter(|a| !a.is_empty()),
        decision: decision_for(sqlstate).into(),
        reason: Some(reason.to_owned()),
        sqlstate: Some(sqlstate.to_owned()),
        ..session_body(event::CONNECT, session)
    }
}

/// One statement outcome in `lakeward_statements_total`.
fn count_statement(template: &RecordBody, decision: &str) {
    use crate::metrics::{Decision, Metrics, StatementClass};
    let kind = template.statement_kind.as_deref().unwrap_or("UNKNOWN");
    let catalog = !template.tables.is_empty()
        && template
            .tables
            .iter()
            .all(|t| t.starts_with("pg_catalog.") || t.starts_with("information_schema."));
    Metrics::global().statement(
        StatementClass::classify(kind, catalog),
        Decision::from_audit(decision),
    );
}

/// The `reason` of a statement record whose statement was prepared
/// (Parse, Describe) and never executed.
pub const NEVER_EXECUTED: &str = "prepared_not_executed";

/// The audit trail of one statement: a statement record before any row is
/// sent, then a completion record when its rows are done.
pub struct StatementAudit {
    auditor: Auditor,
    template: RecordBody,
    /// The principal's site and family name, for the unusual-access watch.
    user_site: Option<String>,
    family_name: Option<String>,
    /// The event id of the statement record once it is durable.
    written: Option<String>,
    /// The one patient the statement's plan can reach (a point lookup),
    /// named in its statement record ([`StatementAudit::pin`]).
    pinned: Option<i64>,
    started: Instant,
}

impl StatementAudit {
    pub fn new(
        auditor: &Auditor,
        session: &Session,
        kind: &str,
        fingerprint: Option<String>,
    ) -> StatementAudit {
        let mut template = session_body(event::STATEMENT, session);
        template.statement_kind = Some(kind.to_owned());
        template.query_fingerprint = fingerprint;
        template.policy_version = Some(session.policy().version.clone());
        StatementAudit {
            auditor: auditor.clone(),
            template,
            user_site: session.principal.site.clone(),
            family_name: session.principal.family_name.clone(),
            written: None,
            pinned: None,
            started: Instant::now(),
        }
    }

    /// Tables, columns and policy version from enforcement.
    pub fn report(&mut self, report: &AccessReport) {
        self.template.tables = report.tables.clone();
        self.template.columns = report.columns.clone();
        self.template.policy_version = Some(report.policy_version.clone());
        self.shadow(report.shadow.as_ref());
    }

    /// What the shadow policy would have done (SPEC §10), when the server
    /// runs one.
    pub fn shadow(&mut self, verdict: Option<&crate::enforce::ShadowVerdict>) {
        let Some(v) = verdict else {
            return;
        };
        self.template.shadow_policy_version = Some(v.policy_version.clone());
        self.template.shadow_decision = Some(
            if v.allowed {
                decision::ALLOWED
            } else {
                decision::DENIED
            }
            .to_owned(),
        );
        self.template.shadow_columns = Some(v.differences.clone());
    }

    /// The statement's plan reaches only `patient` (a point lookup): its
    /// statement record names the patient (`patient_id_min` =
    /// `patient_id_max`), so the patient's accounting is durable before
    /// the first row, and the completion that classifies it is written
    /// with the next group commit instead of being waited for. If the
    /// server stops before that completion is written, the next start
    /// writes one that accounts the patient as returned
    /// (`audit::Auditor::open`).
    pub fn pin(&mut self, patient: i64) {
        self.pinned = Some(patient);
    }

    /// Write the statement record and wait until it is durable: call before
    /// the first row. An error means the statement must not run.
    pub async fn before_rows(&mut self) -> Result<(), SqlError> {
        let record = RecordBody {
            decision: decision::ALLOWED.into(),
            patient_id_min: self.pinned,
            patient_id_max: self.pinned,
            ..self.template.clone()
        };
        let id = record.event_id.clone();
        self.auditor.record(record).await?;
        self.written = Some(id);
        Ok(())
    }

    /// A statement without rows (SET, SHOW, BEGIN...) that ran: one durable
    /// record before its answer is sent.
    pub async fn done_without_rows(self) -> Result<(), SqlError> {
        count_statement(&self.template, decision::ALLOWED);
        let record = RecordBody {
            decision: decision::ALLOWED.into(),
            duration_ms: Some(millis(self.started)),
            ..self.template
        };
        self.auditor.record(record).await
    }

    /// The statement was refused or failed before any row was sent.
    pub fn failed(self, e: &SqlError) {
        count_statement(&self.template, decision_for(e.code));
        match &self.written {
            Some(parent) => self.auditor.record_later(completion(
                &self.template,
                parent,
                decision_for(e.code),
                Some(e.code),
                0,
                self.started,
            )),
            None => self.auditor.record_later(RecordBody {
                decision: decision_for(e.code).into(),
                sqlstate: Some(e.code.to_owned()),
                duration_ms: Some(millis(self.started)),
                ..self.template
            }),
        }
    }

    /// A statement that was planned for a Parse (and perhaps described:
    /// its columns were disclosed) but never executed: one record, queued
    /// when the prepared statement is closed or the session ends.
    pub fn never_executed(self) {
        count_statement(&self.template, decision::ALLOWED);
        self.auditor.record_later(RecordBody {
            decision: decision::ALLOWED.into(),
            reason: Some(NEVER_EXECUTED.to_owned()),
            rows_returned: Some(0),
            duration_ms: Some(millis(self.started)),
            ..self.template
        });
    }

    /// A guard that counts rows and writes the completion record when the
    /// rows end ([`Completion::finish`]) or the portal is dropped. With
    /// `patients`, the record carries the patients the statement touched.
    pub fn completion(
        self,
        patients: Option<std::sync::Arc<crate::engine::accounting::PatientSets>>,
    ) -> Completion {
        Completion {
            audit: self,
            rows: 0,
            sqlstate: None,
            patients,
            finished: false,
        }
    }
}

/// Milliseconds since `since`, to the microsecond.
fn millis(since: Instant) -> f64 {
    since.elapsed().as_micros() as f64 / 1000.0
}

fn completion(
    template: &RecordBody,
    parent: &str,
    decision: &str,
    sqlstate: Option<&str>,
    rows: u64,
    started: Instant,
) -> RecordBody {
    RecordBody {
        parent_event_id: Some(parent.to_owned()),
        decision: decision.to_owned(),
        sqlstate: sqlstate.map(str::to_owned),
        rows_returned: Some(rows as i64),
        duration_ms: Some(millis(started)),
        ..body(event::COMPLETION)
    }
    .with_context_of(template)
}

impl RecordBody {
    /// Copy the session and statement fields of `template` (not its id,
    /// time, event or outcome).
    fn with_context_of(mut self, template: &RecordBody) -> RecordBody {
        self.session_id = template.session_id.clone();
        self.user = template.user.clone();
        self.roles = template.roles.clone();
        self.purpose = template.purpose.clone();
        self.break_glass = template.break_glass.clone();
        self.client_addr = template.client_addr.clone();
        self.application_name = template.application_name.clone();
        self.statement_kind = template.statement_kind.clone();
        self.query_fingerprint = template.query_fingerprint.clone();
        self.tables = template.tables.clone();
        self.columns = template.columns.clone();
        self.policy_version = template.policy_version.clone();
        self
    }
}

/// Counts the rows of one statement; [`Completion::finish`] (or its drop)
/// writes the completion record.
pub struct Completion {
    audit: StatementAudit,
    rows: u64,
    sqlstate: Option<String>,
    /// The statement's patient account, filled while its rows go out.
    patients: Option<std::sync::Arc<crate::engine::accounting::PatientSets>>,
    finished: bool,
}

impl Completion {
    pub fn row(&mut self) {
        self.rows += 1;
    }

    /// The rows ended with an error (cancel, execution failure).
    pub fn error(&mut self, sqlstate: &str) {
        self.sqlstate.get_or_insert_with(|| sqlstate.to_owned());
    }

    /// The completion record, once; `None` when there is none to write
    /// (no statement record) or it was written. The second value says
    /// whether it names patients.
    fn record(&mut self) -> Option<(RecordBody, bool)> {
        if self.finished {
            return None;
        }
        self.finished = true;
        let parent = self.audit.written.as_ref()?;
        let decision = match &self.sqlstate {
            None => decision::ALLOWED,
            Some(code) => decision_for(code),
        };
        count_statement(&self.audit.template, decision);
        crate::metrics::Metrics::global().rows_sent(self.rows);
        let mut record = completion(
            &self.audit.template,
            parent,
            decision,
            self.sqlstate.as_deref(),
            self.rows,
            self.audit.started,
        );
        let touched = self
            .patients
            .as_ref()
            .map(|p| p.touched())
            .unwrap_or_default();
        record.patients_returned = super::patients::encode(&touched.returned);
        record.patients_aggregated = super::patients::encode(&touched.aggregated);
        let all = &touched.returned | &touched.aggregated;
        if let Some((min, max)) = super::patients::bounds(&all) {
            record.patient_id_min = Some(min);
            record.patient_id_max = Some(max);
        }
        record.suppressed_groups = self
            .patients
            .as_ref()
            .and_then(|p| p.suppressed_groups())
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let touched_any = !touched.is_empty();
        if touched_any {
            let t = &self.audit.template;
            self.audit.auditor.observe(super::watch::Observed {
                event_id: parent.clone(),
                ts_micros: record.ts,
                user: t.user.clone(),
                roles: t.roles.clone(),
                purpose: t.purpose.clone(),
                break_glass: t.break_glass.clone(),
                session_id: t.session_id.clone(),
                client_addr: t.client_addr.clone(),
                user_site: self.audit.user_site.clone(),
                family_name: self.audit.family_name.clone(),
                returned: touched.returned,
                aggregated: touched.aggregated,
                min_group_size: self.patients.as_ref().and_then(|p| p.min_group_size()),
            });
        }
        Some((record, touched_any))
    }

    /// Whether `record` names no patient but the one the statement record
    /// pinned (and that record is durable).
    fn pinned_only(&self, record: &RecordBody) -> bool {
        self.audit.written.is_some()
            && self.audit.pinned.is_some()
            && record.patient_id_min == self.audit.pinned
            && record.patient_id_max == self.audit.pinned
    }

    /// The rows are all out: write the completion record. One that names
    /// patients is durable before this returns, so the statement's end is
    /// not reported before its accounting of disclosures (SPEC §9); one
    /// that names none is queued.
    pub async fn finish(mut self) -> Result<(), SqlError> {
        match self.record() {
            // Only the patient the durable statement record names: that
            // record already accounts for it.
            Some((record, true)) if self.pinned_only(&record) => {
                self.audit.auditor.record_later(record);
                Ok(())
            }
            Some((record, true)) => self.audit.auditor.record(record).await,
            Some((record, false)) => {
                self.audit.auditor.record_later(record);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for Completion {
    /// Rows not all sent (a portal or cursor closed early, a client gone):
    /// the record, with the patients of the rows that were sent, is queued.
    fn drop(&mut self) {
        if let Some((record, _)) = self.record() {
            self.audit.auditor.record_later(record);
        }
    }
}
