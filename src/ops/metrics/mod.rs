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
//!
//! Files:
//!
//! - `mod.rs`: [`Metrics`], the registry and the recording methods.
//! - `labels.rs`: the closed label enums and the label sets of each family.
//! - `guards.rs`: [`ConnectionGuard`], [`BreakGlassGuard`] and
//!   [`StatementTimer`], which record when they are dropped.
//! - `collectors.rs`: the gauges read at scrape time: the engine's memory
//!   ([`MemoryGauges`]) and the served Delta tables.
//! - `tests.rs`: unit tests.
//!
//! The conversions from domain types to label values live with those
//! types: `impl From<AuthFailure> for AuthFailureReason` in
//! [`crate::auth`], `impl From<Exceeded> for Limit` in [`crate::limits`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

mod collectors;
mod guards;
mod labels;

pub use collectors::MemoryGauges;
use collectors::{MemoryCollector, MemoryCollectorHandle, TableCollector, TableStates};
pub use guards::{BreakGlassGuard, ConnectionGuard, StatementTimer};
pub use labels::{
    AuthFailureReason, Cache, CacheResult, Decision, Limit, Phase, StatementClass, UnusualAccess,
};
use labels::{
    AuthLabels, CacheLabels, LimitLabels, PhaseLabels, StatementLabels, UnusualAccessLabels,
};

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
    unusual: [Counter; UnusualAccess::COUNT],
    spill_files: Counter,
    spilled_bytes: Counter,
    statements_spilled: Counter,
    memory: Arc<MemoryCollector>,
    tables: Arc<TableStates>,
    lookup_index_bytes: Gauge,
    lookup_index_rows: Gauge,
    lookup_cache_bytes: Gauge,
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

        // Unusual-access signals.
        let unusual_family: Family<UnusualAccessLabels, Counter> = Family::default();
        let unusual: [Counter; UnusualAccess::COUNT] = std::array::from_fn(|i| {
            unusual_family.get_or_create_owned(&UnusualAccessLabels {
                signal: UnusualAccess::ALL[i],
            })
        });
        registry.register(
            "unusual_access",
            "Unusual-access signals raised (audit.unusual_access), by signal",
            unusual_family,
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

        // Point lookups: what the key indexes and the hot-row cache hold.
        let lookup_index_bytes: Gauge = Gauge::default();
        registry.register_with_unit(
            "lookup_index",
            "Memory held by the key indexes of point lookups",
            Unit::Bytes,
            lookup_index_bytes.clone(),
        );
        let lookup_index_rows: Gauge = Gauge::default();
        registry.register(
            "lookup_index_rows",
            "Rows (times key columns) the key indexes of point lookups cover",
            lookup_index_rows.clone(),
        );
        let lookup_cache_bytes: Gauge = Gauge::default();
        registry.register_with_unit(
            "lookup_cache",
            "Memory held by the hot-row cache of point lookups",
            Unit::Bytes,
            lookup_cache_bytes.clone(),
        );

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
            unusual,
            spill_files,
            spilled_bytes,
            statements_spilled,
            memory,
            tables,
            lookup_index_bytes,
            lookup_index_rows,
            lookup_cache_bytes,
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

    /// Add to (or take from) what the point-lookup key indexes and hot-row
    /// cache hold.
    pub fn lookup_memory(&self, index_bytes: i64, index_rows: i64, cache_bytes: i64) {
        self.lookup_index_bytes.inc_by(index_bytes);
        self.lookup_index_rows.inc_by(index_rows);
        self.lookup_cache_bytes.inc_by(cache_bytes);
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

    /// An unusual-access signal was raised.
    pub fn unusual_access(&self, signal: UnusualAccess) {
        self.unusual[signal.index()].inc();
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

#[cfg(test)]
mod tests;
