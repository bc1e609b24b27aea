//! Audit events. Every connection attempt produces one [`AuditEvent`]; the
//! durable, hash-chained store arrives with the audit issue and implements
//! [`AuditSink`]. Events hold no token, password, SQL literal or data value.

pub mod chain;
pub mod delta;
pub mod record;
pub mod wal;

use std::net::SocketAddr;

use crate::auth::AuthFailure;

/// Outcome of a connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    Allowed {
        session_id: String,
        roles: Vec<String>,
    },
    Denied {
        reason: AuthFailure,
    },
    /// Refused before authentication (plaintext, bad startup, limits).
    Refused {
        sqlstate: &'static str,
        reason: &'static str,
    },
}

/// One auditable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    Connect {
        /// Startup user name as sent by the client (not verified when denied).
        user: String,
        client_addr: SocketAddr,
        application_name: String,
        outcome: ConnectOutcome,
    },
}

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);
}

/// Writes events to the server log (until the durable store exists).
#[derive(Debug, Default)]
pub struct LogSink;

impl AuditSink for LogSink {
    fn record(&self, event: AuditEvent) {
        match event {
            AuditEvent::Connect {
                user,
                client_addr,
                application_name,
                outcome,
            } => match outcome {
                ConnectOutcome::Allowed { session_id, roles } => tracing::info!(
                    target: "lakeward::audit", event = "connect", decision = "allowed", %user,
                    client = %client_addr.ip(), app = %application_name, session = %session_id, roles = ?roles
                ),
                ConnectOutcome::Denied { reason } => tracing::warn!(
                    target: "lakeward::audit", event = "connect", decision = "denied", %user,
                    client = %client_addr.ip(), app = %application_name, reason = reason.class()
                ),
                ConnectOutcome::Refused { sqlstate, reason } => tracing::info!(
                    target: "lakeward::audit", event = "connect", decision = "refused", %user,
                    client = %client_addr.ip(), sqlstate, reason
                ),
            },
        }
    }
}

/// Keeps events in memory (tests inspect them).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub events: std::sync::Mutex<Vec<AuditEvent>>,
}

impl AuditSink for MemorySink {
    fn record(&self, event: AuditEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }
}
