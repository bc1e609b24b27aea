//! The one place where errors become PostgreSQL ErrorResponses.
//!
//! Every module has its own error type; what leaves lakeward towards a client is
//! a [`SqlError`]: a PostgreSQL SQLSTATE, a severity, and a message that was
//! written by lakeward (never copied from an execution error, which can quote a
//! data value). [`SqlError::into_pgwire`] turns it into the pgwire error that
//! keeps the session open (`ERROR`) or closes it (`FATAL`).

use pgwire::error::{ErrorInfo, PgWireError};

/// A client-facing error: SQLSTATE, severity and a data-free message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    pub fatal: bool,
}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SqlError {
        SqlError {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> SqlError {
        SqlError {
            code,
            message: message.into(),
            fatal: true,
        }
    }

    /// 57014: the statement was cancelled by a CancelRequest.
    pub fn cancelled() -> SqlError {
        SqlError::new("57014", "canceling statement due to user request")
    }

    /// 57P01: the server is shutting down.
    pub fn shutting_down() -> SqlError {
        SqlError::fatal(
            "57P01",
            "terminating connection due to administrator command",
        )
    }

    /// 53300: the connection limit is reached.
    pub fn too_many_connections() -> SqlError {
        SqlError::fatal("53300", "sorry, too many clients already")
    }

    /// 28000: TLS is required for this connection.
    pub fn tls_required() -> SqlError {
        SqlError::fatal("28000", "TLS is required: connect with sslmode=require")
    }

    /// 42501: refused by policy or by the read-only rule.
    pub fn permission_denied(what: impl Into<String>) -> SqlError {
        SqlError::new("42501", format!("permission denied: {}", what.into()))
    }

    /// XX000 with a fixed message: the detail stays in lakeward's own log.
    pub fn internal() -> SqlError {
        SqlError::new("XX000", "internal error")
    }

    /// The pgwire error that sends this to the client. `ERROR`s are
    /// `UserError`s so that the session stays open; `FATAL`s close it.
    pub fn into_pgwire(self) -> PgWireError {
        let severity = if self.fatal { "FATAL" } else { "ERROR" };
        PgWireError::UserError(Box::new(ErrorInfo::new(
            severity.to_owned(),
            self.code.to_owned(),
            self.message,
        )))
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for SqlError {}

impl From<SqlError> for PgWireError {
    fn from(e: SqlError) -> Self {
        e.into_pgwire()
    }
}
