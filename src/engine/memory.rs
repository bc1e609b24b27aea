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

    /// The runtime every statement executes in: the memory pool and the
    /// spill folder (created 0700, left-overs of earlier processes removed).
    pub fn runtime(&self) -> Result<(Arc<RuntimeEnv>, Arc<dyn MemoryPool>), EngineError> {
        let limit = usize::try_from(self.limit_bytes).unwrap_or(usize::MAX);
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(limit));
        let disk = match &self.spill_dir {
            Some(dir) => {
                let own = prepare_spill_dir(dir, std::process::id())?;
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![own]))
                    .with_max_temp_directory_size(self.spill_max_bytes)
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
pub const ROLE_BUDGET_EXHAUSTED: &str = "role memory budget exhausted";
/// Marks the `ResourcesExhausted` error of one statement's share.
pub const STATEMENT_BUDGET_EXHAUSTED: &str = "statement memory share exhausted";

/// A share of another pool: reservations are made in both, and fail (53200)
/// when either is spent. Operators that can spill spill first, as with the
/// engine's pool alone. Used for a role's budget (`[limits]
/// max_memory_mb`, shared by the role's statements) and for each
/// statement's share of the engine's budget (`[memory]
/// statement_max_percent`), so that one statement never takes the memory
/// every other session needs.
pub struct CappedPool {
    inner: Arc<dyn MemoryPool>,
    used: AtomicUsize,
    limit: usize,
    exhausted: &'static str,
}

impl CappedPool {
    pub fn new(inner: Arc<dyn MemoryPool>, limit: usize, exhausted: &'static str) -> CappedPool {
        CappedPool {
            inner,
            used: AtomicUsize::new(0),
            limit,
            exhausted,
        }
    }
}

impl std::fmt::Debug for CappedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CappedPool")
            .field("kind", &self.exhausted)
            .field("used", &self.used.load(Ordering::Relaxed))
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
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(shrink))
            });
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(additional).filter(|t| *t <= self.limit)
            })
            .map_err(|_| DataFusionError::ResourcesExhausted(self.exhausted.into()))?;
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            let _ = self
                .used
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                    Some(u.saturating_sub(additional))
                });
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
pub fn runtime_with_pool(
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
        if !alive && entry.path().is_dir() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(error = %e, "could not remove an old spill folder");
            }
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
