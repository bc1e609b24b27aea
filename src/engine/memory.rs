//! The engine's memory budget and spill space (`[memory]`).
//!
//! Every statement draws from one server-wide DataFusion memory pool, a
//! `FairSpillPool`: operators that can spill (sorts, hash aggregations with
//! groups, sort-merge joins) share the budget fairly and write to disk when
//! it is spent; others (a hash join's build side, `count(DISTINCT …)`
//! without groups) fail with `ResourcesExhausted`, which the client sees as
//! SQLSTATE `53200`. One statement that cannot fit fails alone: the pool is
//! never allowed to grow past the budget, so the process is not killed for
//! memory and every other session keeps answering.
//!
//! The default budget is half of what the process may use: the cgroup
//! limit of its container when there is one (v2 `memory.max`, v1
//! `memory.limit_in_bytes`), else the machine's memory (`MemTotal`). The
//! other half is left to the connections' buffers, caches, the audit writer
//! and the allocator's overhead.
//!
//! Spill files are PHI at rest: they live only under `spill_dir` (mode
//! 0700), in a folder of this process (`lakeward-<pid>`), where DataFusion
//! deletes each file when the operator that wrote it is done. At start-up
//! the process folder is emptied and the folders of processes that no longer
//! run are removed (only `lakeward-<pid>` folders, never other entries), so
//! a crash leaves nothing behind for longer than the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::EngineError;
use crate::config::MemoryConfig;

const MIB: u64 = 1024 * 1024;

/// Where the default budget's share of memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// `[memory] limit_mb`.
    Configured,
    /// Half of the container's cgroup limit.
    Cgroup,
    /// Half of the machine's memory.
    Machine,
    /// Nothing could be read: a fixed 2 GiB.
    Fallback,
}

impl MemorySource {
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Configured => "configured",
            MemorySource::Cgroup => "cgroup",
            MemorySource::Machine => "machine",
            MemorySource::Fallback => "fallback",
        }
    }
}

/// The engine's memory budget and spill settings, resolved.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    pub limit_bytes: u64,
    pub source: MemorySource,
    /// The folder spill files go to; `None`: spilling is off (operators that
    /// would spill fail with 53200 instead).
    pub spill_dir: Option<PathBuf>,
    pub spill_max_bytes: u64,
    /// Most one statement may reserve of `limit_bytes`.
    pub statement_max_bytes: u64,
}

impl MemoryBudget {
    /// Resolve `[memory]` against this machine or container.
    pub fn from_config(c: &MemoryConfig) -> MemoryBudget {
        let (limit_bytes, source) = if c.limit_mb > 0 {
            (c.limit_mb.saturating_mul(MIB), MemorySource::Configured)
        } else {
            match available_memory() {
                Some((bytes, source)) => (bytes / 2, source),
                None => (2048 * MIB, MemorySource::Fallback),
            }
        };
        let spill_dir = (c.spill_max_mb > 0).then(|| {
            c.spill_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("lakeward-spill"))
        });
        let limit_bytes = limit_bytes.max(16 * MIB);
        let percent = u64::from(c.statement_max_percent.clamp(1, 100));
        MemoryBudget {
            limit_bytes,
            source,
            spill_dir,
            spill_max_bytes: c.spill_max_mb.saturating_mul(MIB),
            statement_max_bytes: limit_bytes / 100 * percent,
        }
    }

    /// The budget of an engine opened without a configuration (tools,
    /// tests): the defaults of `[memory]`.
    pub fn default_for_this_machine() -> MemoryBudget {
        MemoryBudget::from_config(&MemoryConfig::default())
    }

    /// Memory each partition of a sort sets aside up front to merge its
    /// spill files: DataFusion's 10 MiB, or less when a statement's share
    /// split over the partitions (a quarter each, the rest for the sort's
    /// batches) is smaller, so that a small budget sorts by spilling
    /// instead of failing before the first row.
    pub fn sort_spill_reservation_bytes(&self, partitions: usize) -> usize {
        let per_partition = self.statement_max_bytes / (4 * partitions.max(1) as u64);
        usize::try_from(per_partition.clamp(256 * 1024, 10 * MIB)).unwrap_or(10 << 20)
    }

    /// Most spill files one merge pass of a sort reads at once. Each needs
    /// a buffer of batches, and DataFusion's merge otherwise takes every
    /// buffer the budget has left, starving the operators above it: a
    /// statement's share split over the partitions, at about 8 MiB of
    /// buffers per file (two batches of a wide row), between 2 and 64.
    /// More files are merged in several passes.
    pub fn spill_merge_fan_in(&self, partitions: usize) -> usize {
        let per_partition = self.statement_max_bytes / partitions.max(1) as u64;
        usize::try_from((per_partition / (8 * MIB)).clamp(2, 64)).unwrap_or(64)
    }

    /// The runtime every statement executes in: the memory pool and the
    /// spill folder (created 0700, left-overs of earlier processes removed).
    pub fn runtime(
        &self,
        partitions: usize,
    ) -> Result<(Arc<RuntimeEnv>, Arc<dyn MemoryPool>), EngineError> {
        let limit = usize::try_from(self.limit_bytes).unwrap_or(usize::MAX);
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(limit));
        let disk = match &self.spill_dir {
            Some(dir) => {
                let own = prepare_spill_dir(dir, std::process::id())?;
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![own]))
                    .with_max_temp_directory_size(self.spill_max_bytes)
                    .with_max_spill_merge_fan_in(self.spill_merge_fan_in(partitions))
            }
            None => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(|e| EngineError::Setup(format!("memory budget: {e}")))?;
        Ok((runtime, pool))
    }
}

/// Marks the `ResourcesExhausted` error of a role's budget (see
/// [`crate::engine::errors`]).
pub(crate) const ROLE_BUDGET_EXHAUSTED: &str = "role memory budget exhausted";
/// Marks the `ResourcesExhausted` error of one statement's share.
pub(crate) const STATEMENT_BUDGET_EXHAUSTED: &str = "statement memory share exhausted";

/// A share of another pool: reservations are made in both, and fail (53200)
/// when either is spent. Operators that can spill spill first, as with the
/// engine's pool alone. Used for a role's budget (`[limits]
/// max_memory_mb`, shared by the role's statements) and for each
/// statement's share of the engine's budget (`[memory]
/// statement_max_percent`), so that one statement never takes the memory
/// every other session needs.
///
/// Operators that can spill (sorts, grouped aggregations) hold at most
/// three quarters of the share together, each at most an equal part of it
/// (as in DataFusion's fair pool): the last quarter stays for the
/// reservations that cannot spill (a sort's merge reservation, a hash
/// join's build side), which a partition often makes only after another
/// partition's sort has filled the share, and no partition's operator
/// starves another's. Without that a statement that could spill fails
/// instead.
pub(crate) struct CappedPool {
    inner: Arc<dyn MemoryPool>,
    used: AtomicUsize,
    spillable_used: AtomicUsize,
    /// Registered consumers that can spill.
    spillable_consumers: AtomicUsize,
    limit: usize,
    spillable_limit: usize,
    exhausted: &'static str,
}

impl CappedPool {
    pub(crate) fn new(
        inner: Arc<dyn MemoryPool>,
        limit: usize,
        exhausted: &'static str,
    ) -> CappedPool {
        CappedPool {
            inner,
            used: AtomicUsize::new(0),
            spillable_used: AtomicUsize::new(0),
            spillable_consumers: AtomicUsize::new(0),
            limit,
            spillable_limit: limit / 4 * 3,
            exhausted,
        }
    }

    /// Add `additional` to `counter` when the sum stays within `limit`.
    fn take(counter: &AtomicUsize, additional: usize, limit: usize) -> Result<(), usize> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(additional).filter(|t| *t <= limit)
            })
            .map(|_| ())
    }

    fn give_back(counter: &AtomicUsize, bytes: usize) {
        let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
            Some(u.saturating_sub(bytes))
        });
    }

    /// Operator name and sizes only (for the log; the client gets a fixed
    /// message).
    fn refusal(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
        used: usize,
        limit: usize,
    ) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}: {} asked for {additional} more bytes with {} held; {used} of {limit} bytes in use",
            self.exhausted,
            reservation.consumer().name(),
            reservation.size(),
        ))
    }
}

impl std::fmt::Debug for CappedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CappedPool")
            .field("kind", &self.exhausted)
            .field("used", &self.used.load(Ordering::Relaxed))
            .field(
                "spillable_used",
                &self.spillable_used.load(Ordering::Relaxed),
            )
            .field("limit", &self.limit)
            .finish()
    }
}

impl std::fmt::Display for CappedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory share of {} bytes", self.limit)
    }
}

impl MemoryPool for CappedPool {
    fn name(&self) -> &str {
        "lakeward_capped"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.spillable_consumers.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            Self::give_back(&self.spillable_consumers, 1);
        }
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        if reservation.consumer().can_spill() {
            self.spillable_used.fetch_add(additional, Ordering::SeqCst);
        }
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        Self::give_back(&self.used, shrink);
        if reservation.consumer().can_spill() {
            Self::give_back(&self.spillable_used, shrink);
        }
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        let spillable = reservation.consumer().can_spill();
        if spillable {
            let consumers = self.spillable_consumers.load(Ordering::SeqCst).max(1);
            let fair = self.spillable_limit / consumers;
            if reservation.size().saturating_add(additional) > fair {
                return Err(self.refusal(reservation, additional, reservation.size(), fair));
            }
            Self::take(&self.spillable_used, additional, self.spillable_limit).map_err(|used| {
                self.refusal(reservation, additional, used, self.spillable_limit)
            })?;
        }
        let undo_spillable = || {
            if spillable {
                Self::give_back(&self.spillable_used, additional);
            }
        };
        if let Err(used) = Self::take(&self.used, additional, self.limit) {
            undo_spillable();
            return Err(self.refusal(reservation, additional, used, self.limit));
        }
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            Self::give_back(&self.used, additional);
            undo_spillable();
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// A runtime like `base` whose statements also draw from `pool`.
pub(crate) fn runtime_with_pool(
    base: &RuntimeEnv,
    pool: Arc<dyn MemoryPool>,
) -> Result<Arc<RuntimeEnv>, EngineError> {
    RuntimeEnvBuilder::from_runtime_env(base)
        .with_memory_pool(pool)
        .build_arc()
        .map_err(|e| EngineError::Setup(format!("role memory budget: {e}")))
}

/// Create the spill folder with owner-only permissions, remove the folders
/// of processes that no longer run, and return this process's own (empty)
/// folder.
fn prepare_spill_dir(dir: &Path, pid: u32) -> Result<PathBuf, EngineError> {
    let setup = |what: &str, e: std::io::Error| {
        EngineError::Setup(format!("spill folder {}: {what}: {e}", dir.display()))
    };
    private_dir(dir).map_err(|e| setup("create", e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| setup("read", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lakeward-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = owner != pid && Path::new("/proc").join(owner.to_string()).exists();
        if !alive
            && entry.path().is_dir()
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(error = %e, "could not remove an old spill folder");
        }
    }
    let own = dir.join(format!("lakeward-{pid}"));
    private_dir(&own).map_err(|e| setup("create", e))?;
    Ok(own)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// What the process may use: the cgroup limit when there is one, else the
/// machine's memory.
fn available_memory() -> Option<(u64, MemorySource)> {
    let machine = read_meminfo_total();
    match read_cgroup_limit() {
        // A cgroup limit above the machine's memory means "no limit".
        Some(c) if machine.is_none_or(|m| c < m) => Some((c, MemorySource::Cgroup)),
        _ => machine.map(|m| (m, MemorySource::Machine)),
    }
}

fn read_cgroup_limit() -> Option<u64> {
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return parse_cgroup_limit(&text);
        }
    }
    None
}

/// `max` (v2) or a number of bytes; v1's "no limit" is a huge number,
/// which the caller compares with the machine's memory.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|n| *n > 0)
}

fn read_meminfo_total() -> Option<u64> {
    parse_meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// A statement's row stream that, when the statement's operators are done
/// (the stream ends or is dropped), records how much they spilled in
/// [`crate::metrics::Metrics`]: spill files, bytes, and the statement as
/// one that spilled.
pub(crate) struct SpillAccounting {
    inner: SendableRecordBatchStream,
    plan: Arc<dyn ExecutionPlan>,
}

impl SpillAccounting {
    pub(crate) fn wrap(
        inner: SendableRecordBatchStream,
        plan: Arc<dyn ExecutionPlan>,
    ) -> SendableRecordBatchStream {
        Box::pin(SpillAccounting { inner, plan })
    }
}

/// Spill files and bytes written by the operators of `plan` (a walk of the
/// whole tree, without recursion: nested plans are as deep as the SQL).
pub(crate) fn plan_spills(plan: &Arc<dyn ExecutionPlan>) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        if let Some(m) = node.metrics() {
            files += m.spill_count().unwrap_or(0) as u64;
            bytes += m.spilled_bytes().unwrap_or(0) as u64;
        }
        stack.extend(node.children().into_iter().cloned());
    }
    (files, bytes)
}

impl Drop for SpillAccounting {
    fn drop(&mut self) {
        let (files, bytes) = plan_spills(&self.plan);
        crate::metrics::Metrics::global().spilled(files, bytes);
    }
}

impl futures::Stream for SpillAccounting {
    type Item = datafusion::error::Result<datafusion::arrow::record_batch::RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl datafusion::physical_plan::RecordBatchStream for SpillAccounting {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.inner.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_and_meminfo_are_read() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cgroup_limit("garbage"), None);
        assert_eq!(
            parse_meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(parse_meminfo_total("nothing"), None);
    }

    #[test]
    fn the_budget_is_configured_or_half_of_what_is_available() {
        let c = MemoryConfig {
            limit_mb: 512,
            ..Default::default()
        };
        let b = MemoryBudget::from_config(&c);
        assert_eq!(b.limit_bytes, 512 * MIB);
        assert_eq!(b.source, MemorySource::Configured);
        let auto = MemoryBudget::default_for_this_machine();
        assert!(auto.limit_bytes >= 16 * MIB);
        if let Some((bytes, _)) = available_memory() {
            assert_eq!(auto.limit_bytes, (bytes / 2).max(16 * MIB));
        }
        let off = MemoryBudget::from_config(&MemoryConfig {
            spill_max_mb: 0,
            ..Default::default()
        });
        assert_eq!(off.spill_dir, None, "no spill space, no spilling");
        // A sort's merge reservation fits a small statement share.
        let small = MemoryBudget::from_config(&MemoryConfig {
            limit_mb: 16,
            statement_max_percent: 100,
            ..Default::default()
        });
        assert_eq!(
            small.sort_spill_reservation_bytes(2) as u64,
            small.statement_max_bytes / 8
        );
        assert_eq!(b.sort_spill_reservation_bytes(4), 10 * MIB as usize);
        assert_eq!(small.sort_spill_reservation_bytes(1000), 256 * 1024);
        // A sort's merge reads few spill files at once on a small budget.
        assert_eq!(small.spill_merge_fan_in(2), 2);
        assert_eq!(
            b.spill_merge_fan_in(2),
            15,
            "256 MiB per statement, 8 MiB per file"
        );
        let large = MemoryBudget::from_config(&MemoryConfig {
            limit_mb: 64 * 1024,
            ..Default::default()
        });
        assert_eq!(large.spill_merge_fan_in(4), 64);
    }

    #[test]
    fn a_role_budget_caps_its_statements_inside_the_engine_pool() {
        let engine: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(1000));
        let role: Arc<dyn MemoryPool> =
            Arc::new(CappedPool::new(engine.clone(), 300, ROLE_BUDGET_EXHAUSTED));
        let a = MemoryConsumer::new("a").register(&role);
        a.try_grow(200).unwrap();
        let err = a.try_grow(200).unwrap_err();
        assert!(err.to_string().contains(ROLE_BUDGET_EXHAUSTED), "{err}");
        assert_eq!((role.reserved(), engine.reserved()), (200, 200));
        a.shrink(150);
        a.try_grow(250).unwrap();
        assert_eq!((role.reserved(), engine.reserved()), (300, 300));
        drop(a);
        assert_eq!((role.reserved(), engine.reserved()), (0, 0));
        // The engine's pool still bounds the role's.
        let wide: Arc<dyn MemoryPool> = Arc::new(CappedPool::new(
            engine.clone(),
            5000,
            STATEMENT_BUDGET_EXHAUSTED,
        ));
        let b = MemoryConsumer::new("b").register(&wide);
        assert!(b.try_grow(2000).is_err());
        assert_eq!(
            wide.reserved(),
            0,
            "a refusal by the engine's pool is undone"
        );
    }

    #[test]
    fn spilling_operators_leave_a_quarter_for_the_others() {
        let engine: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(10_000));
        let share: Arc<dyn MemoryPool> = Arc::new(CappedPool::new(
            engine.clone(),
            1000,
            STATEMENT_BUDGET_EXHAUSTED,
        ));
        let sorter = MemoryConsumer::new("sorter")
            .with_can_spill(true)
            .register(&share);
        sorter.try_grow(750).unwrap();
        let err = sorter.try_grow(1).unwrap_err();
        assert!(err.to_string().contains("sorter asked for 1"), "{err}");
        // Two spilling operators: each gets half of the three quarters.
        let other = MemoryConsumer::new("other")
            .with_can_spill(true)
            .register(&share);
        assert!(other.try_grow(376).is_err(), "more than its part");
        sorter.shrink(400);
        other.try_grow(375).unwrap();
        assert!(sorter.try_grow(26).is_err(), "the sorter is at its part");
        drop(other);
        sorter.try_grow(400).unwrap();
        // The quarter left is there for a reservation that cannot spill.
        let merge = MemoryConsumer::new("merge").register(&share);
        merge.try_grow(250).unwrap();
        assert!(merge.try_grow(1).is_err(), "the share is spent");
        drop(sorter);
        merge.try_grow(700).unwrap();
        assert_eq!(share.reserved(), 950);
        drop(merge);
        assert_eq!((share.reserved(), engine.reserved()), (0, 0));
    }

    #[test]
    fn the_spill_folder_is_private_and_left_overs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        // A process that no longer runs (pid beyond pid_max), this
        // process's own folder from an earlier run, a running process's.
        let dead = spill.join("lakeward-4294967295");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("x"), b"rows").unwrap();
        let mine = spill.join("lakeward-77");
        std::fs::create_dir_all(mine.join("datafusion-a")).unwrap();
        let running = spill.join(format!("lakeward-{}", std::process::id()));
        std::fs::create_dir_all(&running).unwrap();
        std::fs::write(spill.join("operator-file"), b"kept").unwrap();
        let own = prepare_spill_dir(&spill, 77).unwrap();
        assert_eq!(own, mine);
        assert!(!dead.exists(), "a dead process's spill files are removed");
        assert!(
            !mine.join("datafusion-a").exists(),
            "the own folder starts empty"
        );
        assert!(running.exists(), "a running process keeps its folder");
        assert!(spill.join("operator-file").exists(), "only our folders go");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&spill).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
