//! One client session: who is connected, from where, and the session's
//! settings (`SET`/`SHOW`/`RESET`).
//!
//! Only parameters on the allow-list below can be set; anything else is
//! refused with PostgreSQL's `42704` (unknown) or `42501` (engine settings,
//! e.g. `datafusion.*`, which would let a client switch off safety features).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::error::SqlError;
use crate::policy::{Policy, Purpose};

/// Shortest break-glass justification accepted.
pub const MIN_JUSTIFICATION: usize = 20;

/// Break-glass activations since start (exported as a metric).
pub static BREAK_GLASS_ACTIVATIONS: AtomicU64 = AtomicU64::new(0);

/// The server version announced to clients. Drivers parse the leading number.
pub const SERVER_VERSION: &str = "15.0";

/// `SELECT version()`: SQLAlchemy requires "PostgreSQL <major>" in it.
pub fn version_string() -> String {
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

/// How a parameter may be set.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Any value is stored and echoed.
    Free,
    /// Only these values (case-insensitive) are accepted.
    OneOf(&'static [&'static str]),
    /// An integer in this range.
    Int(i64, i64),
}

/// `(name, default, rule, description)` for every settable parameter.
const PARAMETERS: &[(&str, &str, Rule, &str)] = &[
    (
        "application_name",
        "",
        Rule::Free,
        "Sets the application name to be reported in statistics and logs.",
    ),
    (
        "client_encoding",
        "UTF8",
        Rule::OneOf(&["utf8", "utf-8", "unicode"]),
        "Sets the client's character set encoding.",
    ),
    (
        "client_min_messages",
        "notice",
        Rule::Free,
        "Sets the message levels that are sent to the client.",
    ),
    (
        "datestyle",
        "ISO, MDY",
        Rule::OneOf(&["iso", "iso, mdy", "iso,mdy", "iso, ymd", "iso, dmy"]),
        "Sets the display format for date and time values.",
    ),
    (
        "default_transaction_isolation",
        "read committed",
        Rule::Free,
        "Sets the transaction isolation level of each new transaction.",
    ),
    (
        "default_transaction_read_only",
        "on",
        Rule::OneOf(&["on", "true", "1"]),
        "Sessions are always read-only.",
    ),
    (
        "extra_float_digits",
        "1",
        Rule::Int(-15, 3),
        "Sets the number of digits displayed for floating-point values.",
    ),
    (
        "idle_in_transaction_session_timeout",
        "0",
        Rule::Free,
        "Accepted for compatibility.",
    ),
    (
        "intervalstyle",
        "postgres",
        Rule::OneOf(&["postgres"]),
        "Sets the display format for interval values.",
    ),
    (
        "lock_timeout",
        "0",
        Rule::Free,
        "Accepted for compatibility.",
    ),
    (
        "search_path",
        "\"$user\", public",
        Rule::Free,
        "Sets the schema search order for names that are not schema-qualified.",
    ),
    (
        "standard_conforming_strings",
        "on",
        Rule::OneOf(&["on", "true"]),
        "Backslashes in ordinary string literals are literal.",
    ),
    (
        "statement_timeout",
        "0",
        Rule::Free,
        "Sets the maximum allowed duration of any statement.",
    ),
    (
        "timezone",
        "UTC",
        Rule::OneOf(&["utc", "etc/utc", "gmt", "z", "zulu", "+00", "+00:00"]),
        "Timestamps are reported in UTC.",
    ),
    (
        "transaction_isolation",
        "read committed",
        Rule::Free,
        "Accepted for compatibility.",
    ),
    (
        "bytea_output",
        "hex",
        Rule::OneOf(&["hex"]),
        "Sets the output format for bytea.",
    ),
    ("jit", "off", Rule::Free, "Accepted for compatibility."),
];

/// Names of the read-only parameters.
const FIXED_PARAMETERS: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "transaction_read_only",
    "in_hot_standby",
    "lc_collate",
    "lc_ctype",
];

/// Read-only parameters that SHOW answers.
fn fixed_parameter(name: &str) -> Option<String> {
    Some(match name {
        "server_version" => SERVER_VERSION.to_owned(),
        "server_version_num" => "150000".to_owned(),
        "server_encoding" => "UTF8".to_owned(),
        "integer_datetimes" => "on".to_owned(),
        "is_superuser" => "off".to_owned(),
        "max_identifier_length" => "63".to_owned(),
        "transaction_read_only" => "on".to_owned(),
        "in_hot_standby" => "off".to_owned(),
        "lc_collate" | "lc_ctype" => "C".to_owned(),
        _ => return None,
    })
}

fn spec(name: &str) -> Option<&'static (&'static str, &'static str, Rule, &'static str)> {
    PARAMETERS.iter().find(|(n, ..)| *n == name)
}

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

/// An open transaction block, as PostgreSQL keeps settings in one: what to
/// restore at `ROLLBACK` (`at_begin`), what survives `COMMIT`
/// (`session_level`: the settings with only the non-`LOCAL` changes), and
/// both again at each savepoint.
#[derive(Debug, Clone)]
struct Transaction {
    at_begin: Settings,
    session_level: Settings,
    savepoints: Vec<Savepoint>,
}

#[derive(Debug, Clone)]
struct Savepoint {
    name: String,
    current: Settings,
    session_level: Settings,
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

    fn set_role(&self, value: Option<String>) -> Result<(), SqlError> {
        let Some(v) = value else {
            return Err(SqlError::new(
                "22023",
                "lakeward.role cannot be reset; reconnect to change role",
            ));
        };
        let v = v.trim().to_owned();
        if !self.principal.roles.contains(&v) || self.policy().role(&v).is_none() {
            return Err(SqlError::permission_denied(format!(
                "role \"{v}\" is not granted to this user"
            )));
        }
        let mut vars = self.vars();
        if vars.cur.role.as_deref().is_some_and(|r| r != v)
            && (vars.cur.purpose.is_some() || vars.cur.break_glass.is_some())
        {
            return Err(SqlError::new(
                "55000",
                "lakeward.role cannot change after a purpose is declared",
            ));
        }
        vars.cur.role = Some(v);
        Ok(())
    }

    fn set_purpose(&self, value: Option<String>) -> Result<(), SqlError> {
        let Some(v) = value else {
            self.vars().cur.purpose = None;
            return Ok(());
        };
        let purpose = Purpose::parse(&v).ok_or_else(|| {
            SqlError::new(
                "22023",
                "invalid value for lakeward.purpose (treatment, payment, operations, research)",
            )
        })?;
        let mut vars = self.vars();
        let role =
            vars.cur.role.clone().ok_or_else(|| {
                SqlError::permission_denied("choose a role first: SET lakeward.role")
            })?;
        let by_role = self
            .policy()
            .role(&role)
            .is_some_and(|r| r.purposes.contains(&purpose));
        let by_token = self.principal.purposes.is_empty()
            || self
                .principal
                .purposes
                .iter()
                .any(|p| p.eq_ignore_ascii_case(purpose.as_str()));
        if !by_role || !by_token {
            return Err(SqlError::permission_denied(format!(
                "purpose \"{purpose}\" is not allowed for this user"
            )));
        }
        vars.cur.purpose = Some(purpose);
        Ok(())
    }

    fn set_break_glass(&self, value: Option<String>) -> Result<(), SqlError> {
        let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
            let mut vars = self.vars();
            vars.cur.break_glass = None;
            self.follow_break_glass(&mut vars);
            return Ok(());
        };
        let role = self
            .role()
            .ok_or_else(|| SqlError::permission_denied("choose a role first: SET lakeward.role"))?;
        if !self.policy().role(&role).is_some_and(|r| r.break_glass) {
            return Err(SqlError::permission_denied(
                "break-glass is not allowed for this role",
            ));
        }
        // Only letters and digits count: twenty zero-width spaces or
        // punctuation marks justify nothing.
        if v.chars().filter(|c| c.is_alphanumeric()).count() < MIN_JUSTIFICATION
            || v.len() > 1000
            || v.chars().any(char::is_control)
        {
            return Err(SqlError::new(
                "22023",
                format!(
                    "break-glass needs a justification of at least {MIN_JUSTIFICATION} letters or digits"
                ),
            ));
        }
        {
            let mut vars = self.vars();
            vars.cur.break_glass = Some(v);
            if vars.break_glass_gauge.is_none() {
                vars.break_glass_gauge =
                    Some(crate::metrics::Metrics::global().break_glass_started());
            }
        }
        BREAK_GLASS_ACTIVATIONS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(session = %self.id, user = %self.user, role = %role, "BREAK-GLASS activated: site restriction lifted");
        Ok(())
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

    /// Apply startup parameters sent by the client (`application_name`,
    /// `options=-c name=value`, ...). Unknown ones are ignored as PostgreSQL
    /// ignores unknown startup options only for `options`; errors are reported.
    pub fn apply_startup(&self, params: &BTreeMap<String, String>) -> Result<(), SqlError> {
        for (k, v) in params {
            let k = k.to_lowercase();
            match k.as_str() {
                "user" | "database" | "replication" => {}
                "options" => {
                    let mut opts = parse_options(v)?;
                    // A role must be chosen before a purpose is checked against it.
                    opts.sort_by_key(|(n, _)| n != "lakeward.role");
                    for (name, value) in opts {
                        self.set(&name, Some(value))?;
                    }
                }
                _ if spec(&k).is_some() || k.starts_with("lakeward.") => {
                    self.set(&k, Some(v.clone()))?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `SET name = value` (`None` = DEFAULT), for the rest of the session
    /// (or until the open transaction block is rolled back).
    pub fn set(&self, name: &str, value: Option<String>) -> Result<(), SqlError> {
        let name = name.to_lowercase();
        self.apply(&name, value)?;
        let mut vars = self.vars();
        let vars = &mut *vars;
        if let Some(t) = vars.transaction.as_mut() {
            t.session_level.copy_one(&vars.cur, &name);
        }
        Ok(())
    }

    /// `SET LOCAL name = value`: until the end of the transaction block.
    /// Outside a block it has no effect, as in PostgreSQL (which warns).
    /// Returns whether it took effect.
    pub fn set_local(&self, name: &str, value: Option<String>) -> Result<bool, SqlError> {
        if !self.in_transaction() {
            return Ok(false);
        }
        self.apply(&name.to_lowercase(), value)?;
        Ok(true)
    }

    /// Change the setting `name` (lower case) in the settings in effect.
    fn apply(&self, name: &str, value: Option<String>) -> Result<(), SqlError> {
        match name {
            "lakeward.purpose" => return self.set_purpose(value),
            "lakeward.break_glass" => return self.set_break_glass(value),
            "lakeward.role" => return self.set_role(value),
            _ => {}
        }
        if name.starts_with("datafusion.") {
            return Err(SqlError::permission_denied(format!(
                "parameter \"{name}\" cannot be changed"
            )));
        }
        let Some((_, _, rule, _)) = spec(name) else {
            if fixed_parameter(name).is_some() {
                return Err(SqlError::new(
                    "55P02",
                    format!("parameter \"{name}\" cannot be changed"),
                ));
            }
            return Err(SqlError::new(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        };
        let Some(value) = value else {
            self.vars().cur.values.remove(name);
            return Ok(());
        };
        let ok = match rule {
            Rule::Free => value.len() <= 1024,
            Rule::OneOf(allowed) => allowed.iter().any(|a| a.eq_ignore_ascii_case(value.trim())),
            Rule::Int(lo, hi) => value
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| (*lo..=*hi).contains(&n)),
        };
        if !ok {
            return Err(SqlError::new(
                "22023",
                format!("invalid value for parameter \"{name}\""),
            ));
        }
        self.vars().cur.values.insert(name.to_owned(), value);
        Ok(())
    }

    /// `RESET name` / `RESET ALL`. `RESET ALL` returns every parameter to
    /// its default and ends the declared purpose and break-glass (the role
    /// stays: it is chosen once per connection).
    pub fn reset(&self, name: Option<&str>) -> Result<(), SqlError> {
        let Some(n) = name else {
            let mut vars = self.vars();
            let vars = &mut *vars;
            vars.cur.values.clear();
            vars.cur.purpose = None;
            vars.cur.break_glass = None;
            if let Some(t) = vars.transaction.as_mut() {
                t.session_level.values.clear();
                t.session_level.purpose = None;
                t.session_level.break_glass = None;
            }
            self.follow_break_glass(vars);
            return Ok(());
        };
        self.set(n, None)
    }

    /// `DISCARD ALL`: every setting back to its default, as `RESET ALL`
    /// (the caller also closes cursors and deallocates statements). Not
    /// inside a transaction block, as in PostgreSQL.
    pub fn discard_all(&self) -> Result<(), SqlError> {
        if self.in_transaction() {
            return Err(SqlError::new(
                "25001",
                "DISCARD ALL cannot run inside a transaction block",
            ));
        }
        self.reset(None)
    }

    /// `BEGIN`: open a transaction block (a no-op inside one, where
    /// PostgreSQL warns). Returns whether a block was opened.
    pub fn begin_transaction(&self) -> bool {
        let mut vars = self.vars();
        if vars.transaction.is_some() {
            return false;
        }
        vars.transaction = Some(Transaction {
            at_begin: vars.cur.clone(),
            session_level: vars.cur.clone(),
            savepoints: Vec::new(),
        });
        true
    }

    /// `COMMIT` (`commit = true`) or `ROLLBACK` of the open block: `SET
    /// LOCAL` changes end either way, other changes survive a commit only.
    pub fn end_transaction(&self, commit: bool) {
        let mut vars = self.vars();
        let vars = &mut *vars;
        if let Some(t) = vars.transaction.take() {
            vars.cur = if commit { t.session_level } else { t.at_begin };
            self.follow_break_glass(vars);
        }
    }

    /// `SAVEPOINT name`.
    pub fn savepoint(&self, name: &str) -> Result<(), SqlError> {
        let mut vars = self.vars();
        let vars = &mut *vars;
        let t = open_block(&mut vars.transaction, "SAVEPOINT")?;
        t.savepoints.push(Savepoint {
            name: name.to_owned(),
            current: vars.cur.clone(),
            session_level: t.session_level.clone(),
        });
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT name`: settings as they were at the savepoint,
    /// which stays.
    pub fn rollback_to_savepoint(&self, name: &str) -> Result<(), SqlError> {
        let mut vars = self.vars();
        let vars = &mut *vars;
        let t = open_block(&mut vars.transaction, "ROLLBACK TO SAVEPOINT")?;
        let at = t.savepoint_index(name)?;
        t.savepoints.truncate(at + 1);
        let sp = &t.savepoints[at];
        vars.cur = sp.current.clone();
        t.session_level = sp.session_level.clone();
        self.follow_break_glass(vars);
        Ok(())
    }

    /// `RELEASE SAVEPOINT name`: forget it and every later savepoint.
    pub fn release_savepoint(&self, name: &str) -> Result<(), SqlError> {
        let mut vars = self.vars();
        let t = open_block(&mut vars.transaction, "RELEASE SAVEPOINT")?;
        let at = t.savepoint_index(name)?;
        t.savepoints.truncate(at);
        Ok(())
    }

    /// Keep the break-glass gauge and log in step with the break-glass
    /// setting after it changed by other means than `SET` (transaction end,
    /// savepoint rollback, `RESET ALL`).
    fn follow_break_glass(&self, vars: &mut Vars) {
        match (&vars.cur.break_glass, &vars.break_glass_gauge) {
            (Some(_), None) => {
                vars.break_glass_gauge =
                    Some(crate::metrics::Metrics::global().break_glass_resumed());
                tracing::warn!(session = %self.id, user = %self.user, "BREAK-GLASS active again: site restriction lifted");
            }
            (None, Some(_)) => {
                vars.break_glass_gauge = None;
                tracing::warn!(session = %self.id, user = %self.user, "break-glass ended");
            }
            _ => {}
        }
    }

    /// `SHOW name`: the current value.
    pub fn show(&self, name: &str) -> Result<String, SqlError> {
        let name = name.to_lowercase();
        match name.as_str() {
            "lakeward.purpose" => {
                return Ok(self
                    .purpose()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default());
            }
            "lakeward.break_glass" => {
                return Ok(self.break_glass().unwrap_or_else(|| "off".into()));
            }
            "lakeward.role" => return Ok(self.role().unwrap_or_default()),
            _ => {}
        }
        if let Some(v) = fixed_parameter(&name) {
            return Ok(v);
        }
        if name == "search_path" && !self.vars().cur.values.contains_key("search_path") {
            return Ok(self.role_search_path());
        }
        let Some((_, default, _, _)) = spec(&name) else {
            return Err(SqlError::new(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        };
        Ok(self
            .vars()
            .cur
            .values
            .get(&name)
            .cloned()
            .unwrap_or_else(|| (*default).to_owned()))
    }

    /// `SHOW ALL`: `(name, setting, description)` rows.
    pub fn show_all(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = PARAMETERS
            .iter()
            .map(|(n, d, _, desc)| {
                let v = self.show(n).unwrap_or_else(|_| (*d).to_owned());
                ((*n).to_owned(), v, (*desc).to_owned())
            })
            .collect();
        for (n, desc) in [
            (
                "lakeward.role",
                "The role whose policy applies to this session.",
            ),
            ("lakeward.purpose", "The declared purpose of use."),
            ("lakeward.break_glass", "Break-glass justification, or off."),
        ] {
            out.push((
                n.to_owned(),
                self.show(n).unwrap_or_default(),
                desc.to_owned(),
            ));
        }
        out
    }

    /// The search path the session's role starts with (the policy's
    /// `search_path`, or PostgreSQL's default).
    fn role_search_path(&self) -> String {
        let role = self.role();
        let policy = self.policy();
        match role
            .and_then(|r| policy.roles.get(&r).map(|r| r.search_path.clone()))
            .filter(|p| !p.is_empty())
        {
            Some(path) => path.join(", "),
            None => "\"$user\", public".to_owned(),
        }
    }

    /// Every parameter `current_setting()` can read, by lower-case name.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .show_all()
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect();
        for n in FIXED_PARAMETERS {
            if let Some(v) = fixed_parameter(n) {
                out.insert((*n).to_owned(), v);
            }
        }
        out
    }

    /// The schemas of `search_path`, in lookup order (`$user` dropped).
    pub fn search_path(&self) -> Vec<String> {
        self.show("search_path")
            .map(|p| crate::rewrite::search_path::parse_search_path(&p))
            .unwrap_or_default()
    }

    /// The first schema of `search_path`, if any.
    pub fn default_schema(&self) -> Option<String> {
        self.search_path().into_iter().next()
    }

    pub fn application_name(&self) -> String {
        self.show("application_name").unwrap_or_default()
    }

    /// Is a transaction block open?
    pub fn in_transaction(&self) -> bool {
        self.vars().transaction.is_some()
    }
}

impl Transaction {
    /// The latest savepoint called `name`.
    fn savepoint_index(&self, name: &str) -> Result<usize, SqlError> {
        self.savepoints
            .iter()
            .rposition(|s| s.name == name)
            .ok_or_else(|| SqlError::new("3B001", "savepoint does not exist"))
    }
}

/// The open transaction block, or PostgreSQL's error for `command` outside
/// one.
fn open_block<'a>(
    transaction: &'a mut Option<Transaction>,
    command: &str,
) -> Result<&'a mut Transaction, SqlError> {
    transaction.as_mut().ok_or_else(|| {
        SqlError::new(
            "25P01",
            format!("{command} can only be used in transaction blocks"),
        )
    })
}

/// Parse libpq's `options` startup parameter: `-c name=value --name=value`.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, SqlError> {
    let mut out = Vec::new();
    let mut words = split_options(options).into_iter();
    while let Some(w) = words.next() {
        let assignment = if w == "-c" {
            words.next().ok_or_else(|| {
                SqlError::fatal("22023", "invalid command-line argument: -c needs a value")
            })?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_owned()
        } else {
            return Err(SqlError::fatal(
                "22023",
                "invalid command-line argument in options",
            ));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| {
            SqlError::fatal(
                "22023",
                "invalid command-line argument: expected name=value",
            )
        })?;
        out.push((
            name.trim().replace('-', "_").to_lowercase(),
            value.to_owned(),
        ));
    }
    Ok(out)
}

/// Split on unescaped whitespace; `\ ` keeps a space inside a value (libpq rule).
fn split_options(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_with(roles: &[&str], purposes: &[&str]) -> Session {
        let principal = Arc::new(Principal {
            user: "u".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            site: Some("S01".into()),
            purposes: purposes.iter().map(|r| r.to_string()).collect(),
            expires_at: u64::MAX,
        });
        let policy = Arc::new(Policy::load(None).unwrap());
        Session::new(
            principal,
            policy,
            "d".into(),
            "127.0.0.1:1".parse().unwrap(),
            true,
        )
    }

    fn session() -> Session {
        session_with(&["clinician"], &[])
    }

    #[test]
    fn purposes_follow_role_and_token() {
        let s = session();
        assert_eq!(
            s.set("lakeward.purpose", Some("research".into()))
                .unwrap_err()
                .code,
            "42501"
        );
        s.set("lakeward.purpose", Some("treatment".into())).unwrap();
        assert_eq!(s.show("lakeward.purpose").unwrap(), "treatment");
        let narrowed = session_with(&["analyst"], &["payment"]);
        narrowed
            .set("lakeward.purpose", Some("payment".into()))
            .unwrap();
        assert_eq!(
            narrowed
                .set("lakeward.purpose", Some("operations".into()))
                .unwrap_err()
                .code,
            "42501"
        );
        let two = session_with(&["analyst", "researcher"], &[]);
        assert_eq!(
            two.set("lakeward.purpose", Some("research".into()))
                .unwrap_err()
                .code,
            "42501"
        );
        two.set("lakeward.role", Some("researcher".into())).unwrap();
        two.set("lakeward.purpose", Some("research".into()))
            .unwrap();
    }

    #[test]
    fn break_glass_needs_role_and_justification() {
        let s = session();
        assert_eq!(
            s.set("lakeward.break_glass", Some("too short".into()))
                .unwrap_err()
                .code,
            "22023"
        );
        s.set(
            "lakeward.break_glass",
            Some("patient unconscious in ED, bay 4".into()),
        )
        .unwrap();
        assert!(
            s.show("lakeward.break_glass")
                .unwrap()
                .starts_with("patient")
        );
        s.reset(Some("lakeward.break_glass")).unwrap();
        assert_eq!(s.show("lakeward.break_glass").unwrap(), "off");
        let analyst = session_with(&["analyst"], &[]);
        assert_eq!(
            analyst
                .set(
                    "lakeward.break_glass",
                    Some("patient unconscious in ED, bay 4".into())
                )
                .unwrap_err()
                .code,
            "42501"
        );
    }

    #[test]
    fn set_show_reset_round_trip() {
        let s = session();
        s.set("application_name", Some("psql".into())).unwrap();
        assert_eq!(s.show("application_name").unwrap(), "psql");
        s.set("Extra_Float_Digits", Some("3".into())).unwrap();
        assert_eq!(s.show("extra_float_digits").unwrap(), "3");
        s.reset(None).unwrap();
        assert_eq!(s.show("extra_float_digits").unwrap(), "1");
    }

    #[test]
    fn engine_and_unknown_settings_are_refused() {
        let s = session();
        assert_eq!(
            s.set("datafusion.execution.batch_size", Some("1".into()))
                .unwrap_err()
                .code,
            "42501"
        );
        assert_eq!(
            s.set("no_such_thing", Some("1".into())).unwrap_err().code,
            "42704"
        );
        assert_eq!(
            s.set("server_version", Some("1".into())).unwrap_err().code,
            "55P02"
        );
        assert_eq!(
            s.set("timezone", Some("Europe/Paris".into()))
                .unwrap_err()
                .code,
            "22023"
        );
    }

    const WHY: &str = "patient unconscious in ED, bay 4";

    fn treating() -> Session {
        let s = session();
        s.set("lakeward.purpose", Some("treatment".into())).unwrap();
        s
    }

    #[test]
    fn set_local_ends_with_the_transaction() {
        let s = treating();
        assert!(
            !s.set_local("lakeward.break_glass", Some(WHY.into()))
                .unwrap()
        );
        assert_eq!(
            s.break_glass(),
            None,
            "SET LOCAL outside a block does nothing"
        );
        for commit in [true, false] {
            assert!(s.begin_transaction());
            assert!(
                s.set_local("lakeward.break_glass", Some(WHY.into()))
                    .unwrap()
            );
            s.set_local("application_name", Some("local".into()))
                .unwrap();
            assert_eq!(s.break_glass().as_deref(), Some(WHY));
            s.end_transaction(commit);
            assert_eq!(s.break_glass(), None, "commit = {commit}");
            assert_eq!(s.show("application_name").unwrap(), "");
        }
    }

    #[test]
    fn a_rolled_back_set_is_undone_and_a_committed_one_stays() {
        let s = treating();
        s.begin_transaction();
        s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
        s.set("lakeward.purpose", None).unwrap();
        s.end_transaction(false);
        assert_eq!(s.break_glass(), None);
        assert_eq!(s.purpose(), Some(Purpose::Treatment));
        s.begin_transaction();
        s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
        s.set_local("application_name", Some("x".into())).unwrap();
        s.end_transaction(true);
        assert_eq!(s.break_glass().as_deref(), Some(WHY));
        assert_eq!(s.show("application_name").unwrap(), "");
        // A session-level SET after a LOCAL one of the same name wins.
        s.begin_transaction();
        s.set_local("application_name", Some("local".into()))
            .unwrap();
        s.set("application_name", Some("session".into())).unwrap();
        s.end_transaction(true);
        assert_eq!(s.show("application_name").unwrap(), "session");
    }

    #[test]
    fn savepoints_restore_settings() {
        let s = treating();
        assert_eq!(s.savepoint("a").unwrap_err().code, "25P01");
        s.begin_transaction();
        s.savepoint("a").unwrap();
        s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
        s.savepoint("b").unwrap();
        s.reset(Some("lakeward.break_glass")).unwrap();
        s.rollback_to_savepoint("b").unwrap();
        assert_eq!(s.break_glass().as_deref(), Some(WHY));
        s.rollback_to_savepoint("a").unwrap();
        assert_eq!(s.break_glass(), None);
        assert_eq!(s.rollback_to_savepoint("b").unwrap_err().code, "3B001");
        s.release_savepoint("a").unwrap();
        assert_eq!(s.release_savepoint("a").unwrap_err().code, "3B001");
        s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
        s.end_transaction(true);
        assert_eq!(s.break_glass().as_deref(), Some(WHY));
    }

    #[test]
    fn reset_all_and_discard_all_end_purpose_and_break_glass() {
        let s = treating();
        s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
        s.reset(None).unwrap();
        assert_eq!((s.purpose(), s.break_glass()), (None, None));
        let s = treating();
        s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
        s.begin_transaction();
        assert_eq!(s.discard_all().unwrap_err().code, "25001");
        s.end_transaction(false);
        s.discard_all().unwrap();
        assert_eq!((s.purpose(), s.break_glass()), (None, None));
        assert_eq!(s.role().as_deref(), Some("clinician"), "the role stays");
    }

    #[test]
    fn a_justification_counts_letters_and_digits_only() {
        let s = session();
        let zero_width = "\u{200B}".repeat(20);
        let dots = ".".repeat(40);
        for bad in [
            zero_width.as_str(),
            dots.as_str(),
            "a\u{200B}b\u{200B}c\u{200B}d\u{200B}",
        ] {
            assert_eq!(
                s.set("lakeward.break_glass", Some(bad.into()))
                    .unwrap_err()
                    .code,
                "22023"
            );
        }
        assert_eq!(s.break_glass(), None);
    }

    #[test]
    fn libpq_options_are_parsed() {
        let o = parse_options("-c search_path=clinical --application-name=x\\ y").unwrap();
        assert_eq!(
            o,
            vec![
                ("search_path".into(), "clinical".into()),
                ("application_name".into(), "x y".into())
            ]
        );
        assert!(parse_options("garbage").is_err());
    }
}
