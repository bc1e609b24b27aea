//! One client session: who is connected, from where, and the session's
//! settings (`SET`/`SHOW`/`RESET`).
//!
//! Only parameters on the allow-list (`parameters.rs`) can be set; anything
//! else is refused with PostgreSQL's `42704` (unknown) or `42501` (engine
//! settings, e.g. `datafusion.*`, which would let a client switch off safety
//! features).
//!
//! The files:
//! - this file: the [`Session`] itself (who, from where, the policy it is
//!   evaluated under, statement cancellation) and the settings it holds;
//! - `parameters.rs`: the allow-listed parameters, startup parameters and
//!   `SET`/`SHOW`/`RESET` (and `DISCARD ALL`);
//! - `access.rs`: lakeward's own settings, `lakeward.role`,
//!   `lakeward.purpose` and `lakeward.break_glass`;
//! - `transaction.rs`: transaction blocks and savepoints, which undo
//!   settings as PostgreSQL does;
//! - `options.rs`: libpq's `options` startup parameter;
//! - `tests.rs`: the unit tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::policy::{Policy, Purpose};

mod access;
mod options;
mod parameters;
#[cfg(test)]
mod tests;
mod transaction;

use transaction::Transaction;

/// The server version announced to clients. Drivers parse the leading number.
pub(crate) const SERVER_VERSION: &str = "15.0";

/// `SELECT version()`: SQLAlchemy requires "PostgreSQL <major>" in it.
pub(crate) fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (lakeward {}) on x86_64-pc-linux-gnu",
        env!("CARGO_PKG_VERSION")
    )
}

/// A session identifier, unique within one lakeward process run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{:08x}", self.0)
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The settings a transaction can undo: every allow-listed parameter and
/// lakeward's own role, purpose and break-glass.
#[derive(Debug, Clone, Default, PartialEq)]
struct Settings {
    values: BTreeMap<String, String>,
    /// The role whose policy applies (one of the principal's roles).
    role: Option<String>,
    purpose: Option<Purpose>,
    /// Break-glass justification while active.
    break_glass: Option<String>,
}

impl Settings {
    /// Copy the one setting `name` (lower case) from `from`.
    fn copy_one(&mut self, from: &Settings, name: &str) {
        match name {
            "lakeward.role" => self.role = from.role.clone(),
            "lakeward.purpose" => self.purpose = from.purpose,
            "lakeward.break_glass" => self.break_glass = from.break_glass.clone(),
            _ => match from.values.get(name) {
                Some(v) => {
                    self.values.insert(name.to_owned(), v.clone());
                }
                None => {
                    self.values.remove(name);
                }
            },
        }
    }
}

/// Mutable per-session state.
#[derive(Debug, Default)]
struct Vars {
    /// The settings in effect now.
    cur: Settings,
    /// The open transaction block, if any.
    transaction: Option<Transaction>,
    /// Counts this session in `lakeward_break_glass_sessions_active` while
    /// break-glass is on.
    break_glass_gauge: Option<crate::metrics::BreakGlassGuard>,
}

/// One connected client.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    /// Startup `user`.
    pub user: String,
    /// Startup `database`.
    pub database: String,
    pub client_addr: SocketAddr,
    pub tls: bool,
    /// Who the verified token says this is.
    pub principal: Arc<Principal>,
    /// The policy version this session's statements are evaluated under;
    /// replaced between statements after a reload.
    policy: Mutex<Arc<Policy>>,
    /// The shadow policy statements are also planned under, if any.
    shadow: Mutex<Option<Arc<Policy>>>,
    vars: Mutex<Vars>,
    /// Cancels the statement that is running now; replaced at each statement.
    current: Mutex<CancellationToken>,
}

impl Session {
    pub fn new(
        principal: Arc<Principal>,
        policy: Arc<Policy>,
        database: String,
        client_addr: SocketAddr,
        tls: bool,
    ) -> Session {
        // The role: the only one of the token's roles the policy knows, if
        // there is exactly one; otherwise the client picks with `lakeward.role`.
        let known: Vec<&String> = principal
            .roles
            .iter()
            .filter(|r| policy.role(r).is_some())
            .collect();
        let role = (known.len() == 1).then(|| known[0].clone());
        Session {
            id: SessionId(NEXT_SESSION.fetch_add(1, Ordering::Relaxed)),
            user: principal.user.clone(),
            database,
            client_addr,
            tls,
            principal,
            policy: Mutex::new(policy),
            shadow: Mutex::new(None),
            vars: Mutex::new(Vars {
                cur: Settings {
                    role,
                    ..Default::default()
                },
                ..Default::default()
            }),
            current: Mutex::new(CancellationToken::new()),
        }
    }

    /// The role whose policy applies, once known.
    pub fn role(&self) -> Option<String> {
        self.vars().cur.role.clone()
    }

    /// The declared purpose of use.
    pub fn purpose(&self) -> Option<Purpose> {
        self.vars().cur.purpose
    }

    /// The break-glass justification while break-glass is on.
    pub fn break_glass(&self) -> Option<String> {
        self.vars().cur.break_glass.clone()
    }

    /// The attributes the policy is compiled for; `None` until a role and a
    /// purpose are known.
    pub fn subject(&self) -> Option<crate::policy::compile::Subject> {
        let vars = self.vars();
        Some(crate::policy::compile::Subject {
            user: self.user.clone(),
            role: vars.cur.role.clone()?,
            site: self.principal.site.clone(),
            purpose: vars.cur.purpose?,
            break_glass: vars.cur.break_glass.is_some(),
        })
    }

    /// The policy the next statement is evaluated under.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The shadow policy the next statement is also planned under.
    pub fn shadow(&self) -> Option<Arc<Policy>> {
        self.shadow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adopt a reloaded shadow policy (called between statements).
    pub fn set_shadow(&self, shadow: Option<Arc<Policy>>) {
        let mut cur = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().map(|p| &p.version) != shadow.as_ref().map(|p| &p.version) {
            *cur = shadow;
        }
    }

    /// The policy versions a plan of this session depends on: the live
    /// policy's, and the shadow policy's when there is one (a plan carries
    /// the shadow verdict of its planning).
    pub fn policy_key(&self) -> String {
        let live = self.policy().version.clone();
        match self.shadow() {
            Some(s) => format!("{live}+shadow:{}", s.version),
            None => live,
        }
    }

    /// Adopt a reloaded policy (called between statements).
    pub fn set_policy(&self, policy: Arc<Policy>) {
        let mut cur = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        if cur.version != policy.version {
            *cur = policy;
        }
    }

    /// Does the principal hold at least one role the policy knows?
    pub fn has_known_role(&self) -> bool {
        self.principal
            .roles
            .iter()
            .any(|r| self.policy().role(r).is_some())
    }

    fn vars(&self) -> std::sync::MutexGuard<'_, Vars> {
        // A poisoned lock only means another thread panicked mid-update of plain
        // strings; the data is still consistent enough to keep serving.
        self.vars.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh cancellation token for the statement about to run.
    pub fn begin_statement(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = token.clone();
        token
    }

    /// Cancel whatever statement is running (CancelRequest, shutdown).
    pub fn cancel_current(&self) {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
    }
}
