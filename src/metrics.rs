//! Prometheus metrics of one lakeward process, served as OpenMetrics text by
//! the admin endpoint ([`crate::admin`], `GET /metrics`).
//!
//! Every family is named `lakeward_…`. Label values come from closed enums
//! ([`AuthFailureReason`], [`StatementClass`], [`Decision`], [`Phase`],
//! [`Cache`], [`CacheResult`], [`Limit`]) and, for the Delta table
//! families, from served table names (`clinical.patients`), which are
//! configuration, not data. No label ever carries SQL text, a user name, a
//! literal or any other client input: PHI never reaches metrics.
//!
//! Every labelled series of a closed enum exists from start-up (at zero), so
//! a dashboard's `rate()` sees the first event; the handles are kept in
//! arrays, so recording is an atomic add without a map lookup.
//!
//! The server records into [`Metrics::global`]; tests build their own
//! registry with [`Metrics::new`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// A closed set of label values: the enum, its `ALL` list (declaration
/// order, so `ALL[v.index()] == v`), its text, and its OpenMetrics encoding.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            /// The number of values.
            pub const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }

            /// Position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_enum! {
    /// Why a connection was refused before its session started.
    pub enum AuthFailureReason {
        /// The token is missing, malformed, of a refused algorithm, or its
        /// signature does not verify.
        BadToken => "bad_token",
        /// The token has expired.
        Expired => "expired",
        /// No configured key matches the token's `kid`.
        UnknownKey => "unknown_key",
        /// Issuer, audience, lifetime, not-before, subject or role claims
        /// are wrong, or the roles grant nothing.
        BadClaims => "bad_claims",
        /// A plaintext connection where TLS is required.
        NoTls => "no_tls",
        /// Anything else (no user name, a refused startup parameter).
        Other => "other",
    }
}

impl From<crate::auth::AuthFailure> for AuthFailureReason {
    fn from(f: crate::auth::AuthFailure) -> Self {
        use crate::auth::AuthFailure as F;
        match f {
            F::Missing | F::Malformed | F::Algorithm | F::Signature => AuthFailureReason::BadToken,
            F::Expired => AuthFailureReason::Expired,
            F::UnknownKey => AuthFailureReason::UnknownKey,
            F::NotYetValid
            | F::Issuer
            | F::Audience
            | F::Lifetime
            | F::Claims
            | F::UserMismatch => AuthFailureReason::BadClaims,
        }
    }
}

label_enum! {
    /// What kind of statement ran (the `kind` label).
    pub enum StatementClass {
        /// A query: `SELECT`, `WITH`, `VALUES`, a cursor's `DECLARE`/`FETCH`.
        Select => "select",
        /// `EXPLAIN`.
        Explain => "explain",
        /// `SHOW`.
        Show => "show",
        /// `SET` and `RESET`.
        Set => "set",
        /// `BEGIN`, `COMMIT`, `ROLLBACK`.
        Transaction => "transaction",
        /// A query over the system catalog (`pg_catalog`, `information_schema`).
        Catalog => "catalog",
        /// Anything else, refused statements included.
        Other => "other",
    }
}

impl StatementClass {
    /// The class of a statement from its audit-log kind
    /// ([`crate::rewrite::fingerprint::statement_kind`]); `catalog` marks a
    /// catalog statement (one [`crate::rewrite::compat`] translated), which
    /// takes precedence over `SELECT`/`EXPLAIN`.
    pub fn classify(audit_kind: &str, catalog: bool) -> StatementClass {
        match audit_kind {
            "SELECT" | "EXPLAIN" if catalog => StatementClass::Catalog,
            "SELECT" | "DECLARE" | "DECLARE CURSOR" | "FETCH" => StatementClass::Select,
            "EXPLAIN" => StatementClass::Explain,
            "SHOW" => StatementClass::Show,
            "SET" | "RESET" => StatementClass::Set,
            "BEGIN" | "COMMIT" | "ROLLBACK" => StatementClass::Transaction,
            _ => StatementClass::Other,
        }
    }
}

label_enum! {
    /// How a statement ended (the `decision` label).
    pub enum Decision {
        /// It ran (rows streamed or the command completed).
        Allowed => "allowed",
        /// Refused: by the policy or the gate (SQLSTATE 42501), as the
        /// audit log counts denials.
        Denied => "denied",
        /// It failed for any other reason.
        Error => "error",
    }
}

impl Decision {
    /// The decision for a statement that ended with `sqlstate`, as the
    /// audit log records it ([`crate::audit::events::decision_for`]):
    /// `42501` (how every policy refusal is reported) and the
    /// authentication states are denials, anything else an error.
    pub fn from_sqlstate(sqlstate: &str) -> Decision {
        Decision::from_audit(crate::audit::events::decision_for(sqlstate))
    }

    /// The decision of an audit record (`allowed`, `denied`, `error`).
    pub fn from_audit(decision: &str) -> Decision {
        match decision {
            "allowed" => Decision::Allowed,
            "denied" => Decision::Denied,
            _ => Decision::Error,
        }
    }
}

label_enum! {
    /// The phases of a statement timed by `statement_phase_seconds`.
    pub enum Phase {
        /// Gate (parse, classify) and AST rewrites.
        ParseRewrite => "parse_rewrite",
        /// Access context, planning over secured tables, plan verification.
        Plan => "plan",
        /// Physical planning and start of execution, until the first batch
        /// can be polled.
        Execute => "execute",
        /// From the statement's start to its first row.
        FirstRow => "first_row",
        /// From the statement's start to its last row (or its end).
        Total => "total",
    }
}

label_enum! {
    /// The caches whose lookups are counted.
    pub enum Cache {
        /// Verified tokens ([`crate::auth::Authenticator`]).
        Token => "token",
        /// Compiled access contexts ([`crate::enforce::access_for`]).
        Policy => "policy",
        /// Planned statements ([`crate::enforce::PlanCache`]).
        Plan => "plan",
        /// Consent sets per purpose ([`crate::engine::consent::ConsentSet`]):
        /// a miss is a computation (new consent version or an expiry).
        Consent => "consent",
    }
}

label_enum! {
    /// The outcome of a cache lookup.
    pub enum CacheResult {
        Hit => "hit",
        Miss => "miss",
    }
}

label_enum! {
    /// A statement limit that ended a statement.
    pub enum Limit {
        StatementTimeout => "statement_timeout",
        MaxRows => "max_rows",
        MaxConcurrentStatements => "max_concurrent_statements",
        Memory => "memory",
    }
}

impl From<crate::limits::Exceeded> for Limit {
    fn from(e: crate::limits::Exceeded) -> Self {
        use crate::limits::Exceeded as E;
        match e {
            E::StatementTimeout => Limit::StatementTimeout,
            E::MaxRows => Limit::MaxRows,
            E::MaxConcurrentStatements => Limit::MaxConcurrentStatements,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    reason: AuthFailureReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    kind: StatementClass,
    decision: Decision,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: Phase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: Cache,
    result: CacheResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: Limit,
}

/// Latency buckets in seconds: 50 µs doubling up to 26.2 s (20 buckets,
/// then `+Inf`).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

/// Saturating conversion for gauges, which are `i64`.
fn gauge_value<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// The metrics registry and the handles the server records into. Shared as
/// `Arc<Metrics>`; every method takes `&self` and is a few atomic operations.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_active: Gauge,
    connections_total: Counter,
    auth_failures: [Counter; AuthFailureReason::COUNT],
    statements: [[Counter; Decision::COUNT]; StatementClass::COUNT],
    phases: Arc<[Histogram; Phase::COUNT]>,
    rows_sent: Counter,
    bytes_sent: Counter,
    cache: [[Counter; CacheResult::COUNT]; Cache::COUNT],
    audit_queue_depth: Gauge,
    audit_fsync: Histogram,
    audit_records: Counter,
    audit_errors: Counter,
    audit_unshipped: Gauge,
    audit_ship_failures: Counter,
    break_glass_active: Gauge,
    break_glass_total: Counter,
    limits: [Counter; Limit::COUNT],
    spill_files: Counter,
    spilled_bytes: Counter,
    statements_spilled: Counter,
    memory: Arc<MemoryCollector>,
    tables: Arc<TableStates>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The process's registry (created on first use). The server, the
    /// audit writer and the statement limits record here, and the admin
    /// endpoint serves it.
    pub fn global() -> &'static Arc<Metrics> {
        static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Metrics::new()))
    }

    /// A new registry with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lakeward");

        // Connections.
        let connections_active: Gauge = Gauge::default();
        registry.register(
            "connections_active",
            "Client connections open now",
            connections_active.clone(),
        );
        let connections_total: Counter = Counter::default();
        registry.register(
            "connections",
            "Client connections accepted",
            connections_total.clone(),
        );
        let auth_family: Family<AuthLabels, Counter> = Family::default();
        let auth_failures: [Counter; AuthFailureReason::COUNT] = std::array::from_fn(|i| {
            auth_family.get_or_create_owned(&AuthLabels {
                reason: AuthFailureReason::ALL[i],
            })
        });
        registry.register(
            "auth_failures",
            "Connections refused before their session started, by reason",
            auth_family,
        );

        // Statements.
        let statement_family: Family<StatementLabels, Counter> = Family::default();
        let statements: [[Counter; Decision::COUNT]; StatementClass::COUNT] =
            std::array::from_fn(|k| {
                std::array::from_fn(|d| {
                    statement_family.get_or_create_owned(&StatementLabels {
                        kind: StatementClass::ALL[k],
                        decision: Decision::ALL[d],
                    })
                })
            });
        registry.register(
            "statements",
            "Statements by kind and how they ended",
            statement_family,
        );
        let phase_family: Family<PhaseLabels, Histogram> =
            Family::new_with_constructor(latency_histogram);
        let phases: Arc<[Histogram; Phase::COUNT]> = Arc::new(std::array::from_fn(|i| {
            phase_family.get_or_create_owned(&PhaseLabels {
                phase: Phase::ALL[i],
            })
        }));
        registry.register_with_unit(
            "statement_phase",
            "Time spent in each phase of a statement",
            Unit::Seconds,
            phase_family,
        );
        let rows_sent: Counter = Counter::default();
        registry.register("rows_sent", "Rows sent to clients", rows_sent.clone());
        let bytes_sent: Counter = Counter::default();
        registry.register(
            "bytes_sent",
            "Bytes of DataRow messages sent to clients",
            bytes_sent.clone(),
        );

        // Caches.
        let cache_family: Family<CacheLabels, Counter> = Family::default();
        let cache: [[Counter; CacheResult::COUNT]; Cache::COUNT] = std::array::from_fn(|c| {
            std::array::from_fn(|r| {
                cache_family.get_or_create_owned(&CacheLabels {
                    cache: Cache::ALL[c],
                    result: CacheResult::ALL[r],
                })
            })
        });
        registry.register(
            "cache_requests",
            "Cache lookups by cache and result",
            cache_family,
        );

        // Audit.
        let audit_queue_depth: Gauge = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit records waiting for the audit writer",
            audit_queue_depth.clone(),
        );
        let audit_fsync = latency_histogram();
        registry.register_with_unit(
            "audit_fsync",
            "Time to append and fsync one group of audit records",
            Unit::Seconds,
            audit_fsync.clone(),
        );
        let audit_records: Counter = Counter::default();
        registry.register(
            "audit_records",
            "Audit records made durable",
            audit_records.clone(),
        );
        let audit_errors: Counter = Counter::default();
        registry.register(
            "audit_errors",
            "Audit writes or checkpoints that failed",
            audit_errors.clone(),
        );
        let audit_unshipped: Gauge = Gauge::default();
        registry.register(
            "audit_unshipped_records",
            "Audit records durable in the local segment log but not yet in the Delta audit table",
            audit_unshipped.clone(),
        );
        let audit_ship_failures: Counter = Counter::default();
        registry.register(
            "audit_ship_failures",
            "Appends of audit records to the Delta audit table that failed (retried)",
            audit_ship_failures.clone(),
        );

        // Break-glass.
        let break_glass_active: Gauge = Gauge::default();
        registry.register(
            "break_glass_sessions_active",
            "Sessions in break-glass mode now",
            break_glass_active.clone(),
        );
        let break_glass_total: Counter = Counter::default();
        registry.register(
            "break_glass_sessions",
            "Times a session entered break-glass mode",
            break_glass_total.clone(),
        );

        // Limits.
        let limit_family: Family<LimitLabels, Counter> = Family::default();
        let limits: [Counter; Limit::COUNT] = std::array::from_fn(|i| {
            limit_family.get_or_create_owned(&LimitLabels {
                limit: Limit::ALL[i],
            })
        });
        registry.register(
            "limits_exceeded",
            "Statements ended by a statement limit, by limit",
            limit_family,
        );

        // Memory budget and spilling: gauges read at scrape time, counters
        // recorded when a statement's operators are done.
        let spill_files: Counter = Counter::default();
        registry.register(
            "spill_files",
            "Spill files written by statements' operators (sorts, aggregations, joins)",
            spill_files.clone(),
        );
        let spilled_bytes: Counter = Counter::default();
        registry.register_with_unit(
            "spilled",
            "Bytes statements' operators wrote to spill files",
            Unit::Bytes,
            spilled_bytes.clone(),
        );
        let statements_spilled: Counter = Counter::default();
        registry.register(
            "statements_spilled",
            "Statements that spilled to disk at least once",
            statements_spilled.clone(),
        );
        let memory = Arc::new(MemoryCollector::default());
        registry.register_collector(Box::new(MemoryCollectorHandle(memory.clone())));

        // Delta tables: read at scrape time.
        let tables = Arc::new(TableStates::default());
        registry.register_collector(Box::new(TableCollector(tables.clone())));

        // Build: lakeward_build_info{version="…"} 1.
        registry.register(
            "build",
            "lakeward build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        Metrics {
            registry,
            connections_active,
            connections_total,
            auth_failures,
            statements,
            phases,
            rows_sent,
            bytes_sent,
            cache,
            audit_queue_depth,
            audit_fsync,
            audit_records,
            audit_errors,
            audit_unshipped,
            audit_ship_failures,
            break_glass_active,
            break_glass_total,
            limits,
            spill_files,
            spilled_bytes,
            statements_spilled,
            memory,
            tables,
        }
    }

    /// The registry as OpenMetrics text, ending with `# EOF`.
    pub fn try_encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// [`Metrics::try_encode`]; an exposition that cannot be encoded (it
    /// cannot happen when writing to a string) is an empty one.
    pub fn encode(&self) -> String {
        self.try_encode().unwrap_or_else(|_| {
            tracing::debug!("metrics could not be encoded");
            "# EOF\n".to_owned()
        })
    }

    // Connections.

    /// A client connection was accepted: counted, and active until the
    /// guard is dropped.
    #[must_use = "the connection counts as active while the guard lives"]
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections_total.inc();
        self.connections_active.inc();
        ConnectionGuard {
            active: self.connections_active.clone(),
        }
    }

    /// A connection was refused before its session started.
    pub fn auth_failure(&self, reason: AuthFailureReason) {
        self.auth_failures[reason.index()].inc();
    }

    // Statements.

    /// A statement ended.
    pub fn statement(&self, kind: StatementClass, decision: Decision) {
        self.statements[kind.index()][decision.index()].inc();
    }

    /// Record `elapsed` for one phase of a statement.
    pub fn observe_phase(&self, phase: Phase, elapsed: Duration) {
        self.phases[phase.index()].observe(elapsed.as_secs_f64());
    }

    /// A timer for one statement, started now (see [`StatementTimer`]).
    #[must_use = "the total is recorded when the timer is dropped"]
    pub fn statement_timer(&self) -> StatementTimer {
        let now = Instant::now();
        StatementTimer {
            phases: self.phases.clone(),
            started: now,
            mark: now,
            first_row_seen: false,
        }
    }

    /// `rows` rows were sent to a client.
    pub fn rows_sent(&self, rows: u64) {
        self.rows_sent.inc_by(rows);
    }

    /// `bytes` bytes of row data were sent to a client.
    pub fn bytes_sent(&self, bytes: u64) {
        self.bytes_sent.inc_by(bytes);
    }

    // Caches.

    /// A lookup in `cache` hit or missed.
    pub fn cache(&self, cache: Cache, hit: bool) {
        let result = if hit {
            CacheResult::Hit
        } else {
            CacheResult::Miss
        };
        self.cache[cache.index()][result.index()].inc();
    }

    // Audit.

    /// Records waiting for the audit writer now.
    pub fn set_audit_queue_depth(&self, depth: usize) {
        self.audit_queue_depth.set(gauge_value(depth));
    }

    /// One group of audit records was appended and fsync'd in `elapsed`.
    pub fn observe_audit_fsync(&self, elapsed: Duration) {
        self.audit_fsync.observe(elapsed.as_secs_f64());
    }

    /// `records` audit records became durable.
    pub fn audit_records(&self, records: u64) {
        self.audit_records.inc_by(records);
    }

    /// An audit write or checkpoint failed.
    pub fn audit_error(&self) {
        self.audit_errors.inc();
    }

    /// Records durable locally but not yet shipped to the audit table now.
    pub fn set_audit_unshipped(&self, records: u64) {
        self.audit_unshipped.set(gauge_value(records));
    }

    /// An append to the Delta audit table failed (it is retried).
    pub fn audit_ship_failure(&self) {
        self.audit_ship_failures.inc();
    }

    // Break-glass.

    /// A session entered break-glass mode: counted, and active until the
    /// guard is dropped (the mode ends or the session does).
    #[must_use = "the session counts as in break-glass mode while the guard lives"]
    pub fn break_glass_started(&self) -> BreakGlassGuard {
        self.break_glass_total.inc();
        self.break_glass_active.inc();
        BreakGlassGuard {
            active: self.break_glass_active.clone(),
        }
    }

    /// A session's break-glass came back without a new activation (a
    /// savepoint rollback restored it): counted as active again only.
    #[must_use = "the session counts as in break-glass mode while the guard lives"]
    pub fn break_glass_resumed(&self) -> BreakGlassGuard {
        self.break_glass_active.inc();
        BreakGlassGuard {
            active: self.break_glass_active.clone(),
        }
    }

    // Limits.

    /// A statement limit ended a statement.
    pub fn limit_exceeded(&self, limit: Limit) {
        self.limits[limit.index()].inc();
    }

    // Memory.

    /// A statement's operators wrote `files` spill files holding `bytes`
    /// (recorded once per statement, when its operators are done; nothing
    /// is recorded for a statement that did not spill).
    pub fn spilled(&self, files: u64, bytes: u64) {
        if files == 0 && bytes == 0 {
            return;
        }
        self.spill_files.inc_by(files);
        self.spilled_bytes.inc_by(bytes);
        self.statements_spilled.inc();
    }

    /// Read the engine's memory pool and spill space at each scrape (the
    /// last engine set wins; before one is set the gauges are absent).
    pub fn set_memory_probe(&self, probe: impl Fn() -> MemoryGauges + Send + Sync + 'static) {
        *self.memory.probe.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(probe));
    }

    // Delta tables.

    /// The Delta version of `table` (`schema.table`) being served.
    pub fn set_table_version(&self, table: &str, version: u64) {
        self.tables.update(table, |s| s.version = Some(version));
    }

    /// The snapshot of `table` being served is `age_secs` old now; the age
    /// then grows with the clock until the next call.
    pub fn set_snapshot_age(&self, table: &str, age_secs: f64) {
        let now = SystemTime::now();
        let at = Duration::try_from_secs_f64(age_secs.max(0.0))
            .ok()
            .and_then(|age| now.checked_sub(age))
            .unwrap_or(now);
        self.set_snapshot_time(table, at);
    }

    /// The snapshot of `table` being served dates from `at`; its age is
    /// computed at each scrape.
    pub fn set_snapshot_time(&self, table: &str, at: SystemTime) {
        self.tables.update(table, |s| s.snapshot_at = Some(at));
    }

    /// `table` is no longer served: its series disappear.
    pub fn remove_table(&self, table: &str) {
        self.tables.remove(table);
    }
}

/// Counts a connection as active while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    active: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Counts a session as in break-glass mode while it lives.
#[derive(Debug)]
pub struct BreakGlassGuard {
    active: Gauge,
}

impl Drop for BreakGlassGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Times the phases of one statement. [`StatementTimer::mark`] records the
/// time since the previous mark (or the start) as a phase;
/// [`StatementTimer::first_row`] records the time to the first row once;
/// dropping the timer (or [`StatementTimer::finish`]) records the total.
/// It can travel with a statement's row stream, so the total includes
/// streaming.
#[derive(Debug)]
pub struct StatementTimer {
    phases: Arc<[Histogram; Phase::COUNT]>,
    started: Instant,
    mark: Instant,
    first_row_seen: bool,
}

impl StatementTimer {
    fn observe(&self, phase: Phase, elapsed: Duration) {
        self.phases[phase.index()].observe(elapsed.as_secs_f64());
    }

    /// Record the time since the previous mark (or the start) as `phase`
    /// (`ParseRewrite`, `Plan`, `Execute`), and start the next phase.
    pub fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        self.observe(phase, now.saturating_duration_since(self.mark));
        self.mark = now;
    }

    /// The first row is ready: record the time since the start, once.
    pub fn first_row(&mut self) {
        if !self.first_row_seen {
            self.first_row_seen = true;
            self.observe(Phase::FirstRow, self.started.elapsed());
        }
    }

    /// Time since the statement started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The statement ended: record its total time.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        self.observe(Phase::Total, self.started.elapsed());
    }
}

/// Tables with series at most; more are ignored (a bound on cardinality).
const MAX_TABLES: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct TableState {
    version: Option<u64>,
    snapshot_at: Option<SystemTime>,
}

/// The engine's memory pool and spill space at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryGauges {
    /// The engine's budget (`[memory] limit_mb`).
    pub pool_limit_bytes: u64,
    /// What running statements reserve of it now.
    pub pool_reserved_bytes: u64,
    /// Bytes in spill files now.
    pub spill_bytes: u64,
    /// The spill space cap (`[memory] spill_max_mb`; 0: spilling is off).
    pub spill_limit_bytes: u64,
    /// Spill files open now.
    pub spill_files: u64,
}

type MemoryProbe = Box<dyn Fn() -> MemoryGauges + Send + Sync>;

#[derive(Default)]
struct MemoryCollector {
    probe: RwLock<Option<MemoryProbe>>,
}

impl std::fmt::Debug for MemoryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCollector").finish_non_exhaustive()
    }
}

/// Encodes `memory_pool_limit_bytes`, `memory_pool_reserved_bytes`,
/// `spill_disk_bytes`, `spill_disk_limit_bytes` and `spill_files_active`.
#[derive(Debug)]
struct MemoryCollectorHandle(Arc<MemoryCollector>);

impl Collector for MemoryCollectorHandle {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauges = {
            let probe = self.0.probe.read().unwrap_or_else(|p| p.into_inner());
            match probe.as_ref() {
                Some(probe) => probe(),
                None => return Ok(()),
            }
        };
        let bytes = Unit::Bytes;
        for (name, help, unit, value) in [
            (
                "memory_pool_limit",
                "The engine's memory budget ([memory] limit_mb)",
                Some(&bytes),
                gauges.pool_limit_bytes,
            ),
            (
                "memory_pool_reserved",
                "Memory running statements reserve of the engine's budget now",
                Some(&bytes),
                gauges.pool_reserved_bytes,
            ),
            (
                "spill_disk",
                "Bytes held in spill files now",
                Some(&bytes),
                gauges.spill_bytes,
            ),
            (
                "spill_disk_limit",
                "The spill space cap ([memory] spill_max_mb; 0: spilling is off)",
                Some(&bytes),
                gauges.spill_limit_bytes,
            ),
            (
                "spill_files_active",
                "Spill files open now",
                None,
                gauges.spill_files,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
            metric.encode_gauge(&gauge_value(value))?;
        }
        Ok(())
    }
}

/// Per served table: version and snapshot time, read at scrape time.
#[derive(Debug, Default)]
struct TableStates {
    tables: RwLock<BTreeMap<String, TableState>>,
}

/// A table name as a label value: `[A-Za-z0-9_.-]`, anything else becomes
/// `_` (the text format does not escape label values), at most 128 chars.
fn table_label(name: &str) -> Option<String> {
    let label: String = name
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    (!label.is_empty()).then_some(label)
}

impl TableStates {
    fn update(&self, table: &str, f: impl FnOnce(&mut TableState)) {
        let Some(label) = table_label(table) else {
            return;
        };
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if !tables.contains_key(&label) && tables.len() >= MAX_TABLES {
            return;
        }
        f(tables.entry(label).or_default());
    }

    fn remove(&self, table: &str) {
        if let Some(label) = table_label(table) {
            self.tables
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&label);
        }
    }

    fn snapshot(&self) -> Vec<(String, TableState)> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Encodes `delta_table_version` and `delta_snapshot_age_seconds`.
#[derive(Debug)]
struct TableCollector(Arc<TableStates>);

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let tables = self.0.snapshot();
        let now = SystemTime::now();
        let versions: Vec<(&str, i64)> = tables
            .iter()
            .filter_map(|(t, s)| s.version.map(|v| (t.as_str(), gauge_value(v))))
            .collect();
        let ages: Vec<(&str, f64)> = tables
            .iter()
            .filter_map(|(t, s)| {
                s.snapshot_at.map(|at| {
                    let age = now
                        .duration_since(at)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    (t.as_str(), age)
                })
            })
            .collect();
        if !versions.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "delta_table_version",
                "Delta table version being served.",
                None,
                MetricType::Gauge,
            )?;
            for (table, version) in &versions {
                let labels = [("table", *table)];
                metric.encode_family(&labels)?.encode_gauge(version)?;
            }
        }
        if !ages.is_empty() {
            let seconds = Unit::Seconds;
            let mut metric = encoder.encode_descriptor(
                "delta_snapshot_age",
                "Age of the Delta snapshot being served.",
                Some(&seconds),
                MetricType::Gauge,
            )?;
            for (table, age) in &ages {
                let labels = [("table", *table)];
                metric.encode_family(&labels)?.encode_gauge(age)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn every_family_is_encoded() {
        let m = Metrics::new();
        let text = m.encode();
        for family in [
            "lakeward_connections_active gauge",
            "lakeward_connections counter",
            "lakeward_auth_failures counter",
            "lakeward_statements counter",
            "lakeward_statement_phase_seconds histogram",
            "lakeward_rows_sent counter",
            "lakeward_bytes_sent counter",
            "lakeward_cache_requests counter",
            "lakeward_audit_queue_depth gauge",
            "lakeward_audit_fsync_seconds histogram",
            "lakeward_audit_records counter",
            "lakeward_audit_errors counter",
            "lakeward_break_glass_sessions_active gauge",
            "lakeward_break_glass_sessions counter",
            "lakeward_limits_exceeded counter",
            "lakeward_build info",
        ] {
            assert!(
                has_line(&text, &format!("# TYPE {family}")),
                "missing {family} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        let build = format!(
            "lakeward_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(has_line(&text, &build), "{text}");
        // Closed label sets exist from the start, at zero.
        assert!(has_line(
            &text,
            "lakeward_statements_total{kind=\"catalog\",decision=\"denied\"} 0"
        ));
        assert!(has_line(
            &text,
            "lakeward_auth_failures_total{reason=\"no_tls\"} 0"
        ));
        assert!(has_line(
            &text,
            "lakeward_limits_exceeded_total{limit=\"max_concurrent_statements\"} 0"
        ));
        // No table yet: no table family.
        assert!(!text.contains("lakeward_delta_table_version"));
    }

    #[test]
    fn connections_and_auth() {
        let m = Metrics::new();
        let a = m.connection_opened();
        let b = m.connection_opened();
        let text = m.encode();
        assert!(has_line(&text, "lakeward_connections_active 2"), "{text}");
        assert!(has_line(&text, "lakeward_connections_total 2"));
        drop(a);
        drop(b);
        m.auth_failure(crate::auth::AuthFailure::Expired.into());
        m.auth_failure(AuthFailureReason::NoTls);
        let text = m.encode();
        assert!(has_line(&text, "lakeward_connections_active 0"));
        assert!(has_line(&text, "lakeward_connections_total 2"));
        assert!(has_line(
            &text,
            "lakeward_auth_failures_total{reason=\"expired\"} 1"
        ));
        assert!(has_line(
            &text,
            "lakeward_auth_failures_total{reason=\"no_tls\"} 1"
        ));
    }

    #[test]
    fn statements_phases_rows() {
        let m = Metrics::new();
        m.statement(StatementClass::Select, Decision::Allowed);
        m.statement(StatementClass::Select, Decision::Allowed);
        m.statement(
            StatementClass::classify("SELECT", true),
            Decision::from_sqlstate("42501"),
        );
        m.observe_phase(Phase::Plan, Duration::from_millis(3));
        {
            let mut t = m.statement_timer();
            t.mark(Phase::ParseRewrite);
            t.mark(Phase::Execute);
            t.first_row();
            t.first_row();
            t.finish();
        }
        m.rows_sent(10);
        m.bytes_sent(1234);
        let text = m.encode();
        assert!(has_line(
            &text,
            "lakeward_statements_total{kind=\"select\",decision=\"allowed\"} 2"
        ));
        assert!(has_line(
            &text,
            "lakeward_statements_total{kind=\"catalog\",decision=\"denied\"} 1"
        ));
        for phase in ["parse_rewrite", "plan", "execute", "first_row", "total"] {
            let line = format!("lakeward_statement_phase_seconds_count{{phase=\"{phase}\"}} 1");
            assert!(has_line(&text, &line), "missing {line} in\n{text}");
        }
        // The bucket bound comes first, then the family's labels.
        assert!(has_line(
            &text,
            "lakeward_statement_phase_seconds_bucket{le=\"+Inf\",phase=\"plan\"} 1"
        ));
        assert!(has_line(
            &text,
            "# UNIT lakeward_statement_phase_seconds seconds"
        ));
        assert!(has_line(&text, "lakeward_rows_sent_total 10"));
        assert!(has_line(&text, "lakeward_bytes_sent_total 1234"));
    }

    #[test]
    fn caches_audit_break_glass_limits() {
        let m = Metrics::new();
        m.cache(Cache::Plan, true);
        m.cache(Cache::Plan, false);
        m.cache(Cache::Token, true);
        m.set_audit_queue_depth(7);
        m.observe_audit_fsync(Duration::from_micros(800));
        m.audit_records(3);
        m.audit_error();
        let g = m.break_glass_started();
        m.limit_exceeded(Limit::MaxRows);
        m.limit_exceeded(crate::limits::Exceeded::StatementTimeout.into());
        let text = m.encode();
        assert!(has_line(
            &text,
            "lakeward_cache_requests_total{cache=\"plan\",result=\"hit\"} 1"
        ));
        assert!(has_line(
            &text,
            "lakeward_cache_requests_total{cache=\"plan\",result=\"miss\"} 1"
        ));
        assert!(has_line(
            &text,
            "lakeward_cache_requests_total{cache=\"token\",result=\"hit\"} 1"
        ));
        assert!(has_line(
            &text,
            "lakeward_cache_requests_total{cache=\"policy\",result=\"miss\"} 0"
        ));
        assert!(has_line(&text, "lakeward_audit_queue_depth 7"));
        assert!(has_line(&text, "lakeward_audit_fsync_seconds_count 1"));
        assert!(has_line(&text, "lakeward_audit_records_total 3"));
        assert!(has_line(&text, "lakeward_audit_errors_total 1"));
        assert!(has_line(&text, "lakeward_break_glass_sessions_active 1"));
        assert!(has_line(&text, "lakeward_break_glass_sessions_total 1"));
        assert!(has_line(
            &text,
            "lakeward_limits_exceeded_total{limit=\"max_rows\"} 1"
        ));
        assert!(has_line(
            &text,
            "lakeward_limits_exceeded_total{limit=\"statement_timeout\"} 1"
        ));
        m.spilled(0, 0);
        m.spilled(3, 4096);
        m.set_memory_probe(|| MemoryGauges {
            pool_limit_bytes: 64 << 20,
            pool_reserved_bytes: 1024,
            spill_bytes: 2048,
            spill_limit_bytes: 1 << 30,
            spill_files: 2,
        });
        drop(g);
        let text = m.encode();
        assert!(has_line(&text, "lakeward_spill_files_total 3"));
        assert!(has_line(&text, "lakeward_spilled_bytes_total 4096"));
        assert!(has_line(&text, "lakeward_statements_spilled_total 1"));
        assert!(has_line(&text, "lakeward_memory_pool_limit_bytes 67108864"));
        assert!(has_line(&text, "lakeward_memory_pool_reserved_bytes 1024"));
        assert!(has_line(&text, "lakeward_spill_disk_bytes 2048"));
        assert!(has_line(
            &text,
            "lakeward_spill_disk_limit_bytes 1073741824"
        ));
        assert!(has_line(&text, "lakeward_spill_files_active 2"));
        assert!(has_line(&text, "lakeward_break_glass_sessions_active 0"));
        assert!(has_line(&text, "lakeward_break_glass_sessions_total 1"));
    }

    #[test]
    fn delta_tables() {
        let m = Metrics::new();
        m.set_table_version("clinical.patients", 42);
        m.set_snapshot_age("clinical.patients", 12.5);
        m.set_table_version("bad\"name\n", 1);
        let text = m.encode();
        assert!(has_line(&text, "# TYPE lakeward_delta_table_version gauge"));
        assert!(has_line(
            &text,
            "lakeward_delta_table_version{table=\"clinical.patients\"} 42"
        ));
        assert!(has_line(
            &text,
            "lakeward_delta_table_version{table=\"bad_name_\"} 1"
        ));
        assert!(has_line(
            &text,
            "# UNIT lakeward_delta_snapshot_age_seconds seconds"
        ));
        let prefix = "lakeward_delta_snapshot_age_seconds{table=\"clinical.patients\"} ";
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("age series")
            .parse()
            .expect("a number");
        assert!((12.0..3600.0).contains(&age), "age {age}");
        assert!(text.ends_with("# EOF\n"));
        m.remove_table("clinical.patients");
        let text = m.encode();
        assert!(!text.contains("clinical.patients"));
    }

    #[test]
    fn label_values_are_closed_identifiers() {
        let mut values: Vec<&str> = vec![];
        values.extend(AuthFailureReason::ALL.iter().map(|v| v.as_str()));
        values.extend(StatementClass::ALL.iter().map(|v| v.as_str()));
        values.extend(Decision::ALL.iter().map(|v| v.as_str()));
        values.extend(Phase::ALL.iter().map(|v| v.as_str()));
        values.extend(Cache::ALL.iter().map(|v| v.as_str()));
        values.extend(CacheResult::ALL.iter().map(|v| v.as_str()));
        values.extend(Limit::ALL.iter().map(|v| v.as_str()));
        for v in values {
            assert!(
                !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{v}"
            );
        }
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        assert_eq!(
            StatementClass::classify("ROLLBACK", false),
            StatementClass::Transaction
        );
        assert_eq!(
            StatementClass::classify("RESET", false),
            StatementClass::Set
        );
        assert_eq!(
            StatementClass::classify("EXPLAIN", false),
            StatementClass::Explain
        );
        assert_eq!(
            StatementClass::classify("INSERT", false),
            StatementClass::Other
        );
        assert_eq!(Decision::from_sqlstate("57014"), Decision::Error);
        assert_eq!(Decision::from_sqlstate("42501"), Decision::Denied);
        assert_eq!(Decision::from_audit("allowed"), Decision::Allowed);
    }

    #[test]
    fn global_is_one_registry() {
        assert!(Arc::ptr_eq(Metrics::global(), Metrics::global()));
    }
}
