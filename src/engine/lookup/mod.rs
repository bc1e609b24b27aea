//! Point lookups on Delta tables whatever order their writer left the rows
//! in: key indexes per data file and a hot-row cache.
//!
//! The policy names each table's lookup keys (`lookup_keys` in
//! `tables.toml`). For every data file of the newest loaded version of such
//! a table, a background task reads the key columns once (through the same
//! Parquet source the scan uses) and keeps, per key column, the file's keys
//! sorted with the row each sits in ([`keys::KeyColumn`], 12 bytes per
//! row). Delta data files never change, so an index belongs to its file: a
//! new version only adds the files it added, and files it removed drop
//! theirs. Until a file's index is ready, scans read that file as before;
//! building never blocks a statement or start-up.
//!
//! A scan whose filters hold `key = constant` or `key IN (constants)`
//! ([`keys::probes`]) asks [`TableLookup::select`] which rows of each file
//! may hold those keys: files with no such row are not opened, the others
//! are read with a row selection (only the pages holding those rows,
//! through the Parquet offset index), or, for tables in the hot-row cache,
//! taken from the file's decoded rows in memory. The scan stays below the
//! secured table's policy plan, so the row filter, consent probe and masks
//! that apply are the very expressions the full scan gets: this module has
//! no policy code. The filters also stay `Inexact`, so every row read is
//! compared with the statement's own condition again.
//!
//! A de-identified role searches a pseudonymised key by pseudonym; below
//! its masks that condition reads `lakeward_pseudonym(key, domain) = c`. The
//! first such scan asks for the file's pseudonym index (the keyed
//! pseudonym of each key, computed with the function the plan calls, so
//! per pseudonymisation key and domain), built in the background like the
//! key index; scans read the files meanwhile.
//!
//! Memory: key and pseudonym indexes share `[lookup] index_memory_mb`,
//! cached rows `[lookup] cache_memory_mb`; a file whose index or rows do
//! not fit is read without them. The metrics `lakeward_lookup_index_bytes`,
//! `lakeward_lookup_index_rows` and `lakeward_lookup_cache_bytes` say what
//! is held; `lakeward_cache_requests_total{cache="key_index"|"hot_rows"}`
//! how often scans used them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::context::SessionContext;
use datafusion::object_store::path::Path as StorePath;
use futures::StreamExt;

use super::snapshot_scan::VersionFiles;
use crate::metrics::{Cache, Metrics};

pub(crate) mod keys;

use keys::{KeyColumn, KeyKind, Probe};

const MIB: u64 = 1024 * 1024;

/// What one side of the memory (indexes or cached rows) may hold.
#[derive(Debug, Default)]
struct Budget {
    max: AtomicU64,
    used: AtomicU64,
}

/// Which budget a [`Reservation`] draws from (for the metrics).
#[derive(Debug, Clone, Copy)]
enum Side {
    Index,
    Cache,
}

/// Memory taken from a budget, given back when dropped.
#[derive(Debug)]
struct Reservation {
    shared: Arc<Shared>,
    side: Side,
    bytes: u64,
    rows: u64,
}

impl Reservation {
    fn try_new(shared: &Arc<Shared>, side: Side, bytes: u64, rows: u64) -> Option<Reservation> {
        let budget = shared.budget(side);
        let max = budget.max.load(Ordering::Relaxed);
        budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= max)
            })
            .ok()?;
        record(side, bytes as i64, rows as i64);
        Some(Reservation {
            shared: shared.clone(),
            side,
            bytes,
            rows,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared
            .budget(self.side)
            .used
            .fetch_sub(self.bytes, Ordering::AcqRel);
        record(self.side, -(self.bytes as i64), -(self.rows as i64));
    }
}

fn record(side: Side, bytes: i64, rows: i64) {
    let m = Metrics::global();
    match side {
        Side::Index => m.lookup_memory(bytes, rows, 0),
        Side::Cache => m.lookup_memory(0, 0, bytes),
    }
}

/// What every table's lookups share: the budgets and the builder's queue.
struct Shared {
    index: Budget,
    cache: Budget,
    /// Tables to bring up to date, in order (one builder task).
    jobs: tokio::sync::mpsc::UnboundedSender<Arc<TableLookup>>,
    /// Where the builder reads files (the engine's internal context: its
    /// object stores, metadata cache and memory pool).
    ctx: SessionContext,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("index", &self.index)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn budget(&self, side: Side) -> &Budget {
        match side {
            Side::Index => &self.index,
            Side::Cache => &self.cache,
        }
    }
}

/// The engine's lookups: every served table's [`TableLookup`], the budgets
/// and the background builder.
#[derive(Debug)]
pub(crate) struct Lookups {
    shared: OnceLock<Arc<Shared>>,
    tables: Mutex<BTreeMap<String, Arc<TableLookup>>>,
    /// `[lookup]`, as last configured.
    config: Mutex<crate::config::LookupConfig>,
}

impl Lookups {
    /// Lookups over the engine's tables (`name` → the handle its provider
    /// consults). Nothing is indexed until [`Lookups::configure`].
    pub(crate) fn new(tables: BTreeMap<String, Arc<TableLookup>>) -> Lookups {
        for (name, t) in &tables {
            let _ = t.name.set(name.clone());
        }
        Lookups {
            shared: OnceLock::new(),
            tables: Mutex::new(tables),
            config: Mutex::new(crate::config::LookupConfig {
                index_memory_mb: 0,
                cache_tables: Vec::new(),
                cache_memory_mb: 0,
            }),
        }
    }

    /// Whether every table with lookup keys has an index for each file
    /// of its loaded version that is not over the budget.
    pub(crate) fn ready(&self) -> bool {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.values().all(|t| {
            let s = t.read();
            s.keys.is_empty()
                || s.current.as_ref().is_none_or(|v| {
                    v.files.iter().all(|f| {
                        s.files.contains_key(&f.meta.location)
                            || s.given_up.contains(&f.meta.location)
                    })
                })
        })
    }

    /// Sets the budgets (`[lookup]`) and starts the builder task (on the
    /// current tokio runtime) the first time.
    pub(crate) fn configure(&self, config: &crate::config::LookupConfig, ctx: &SessionContext) {
        let shared = self.shared.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let shared = Arc::new(Shared {
                index: Budget::default(),
                cache: Budget::default(),
                jobs: tx,
                ctx: ctx.clone(),
            });
            tokio::spawn(build_loop(Arc::downgrade(&shared), rx));
            shared
        });
        shared.index.max.store(
            config.index_memory_mb.saturating_mul(MIB),
            Ordering::Relaxed,
        );
        shared.cache.max.store(
            config.cache_memory_mb.saturating_mul(MIB),
            Ordering::Relaxed,
        );
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config.clone();
    }

    /// Applies a policy's `lookup_keys` to every table and queues the
    /// tables whose indexes are missing (cached tables first, in
    /// `cache_tables` order). Tables whose keys or caching changed drop
    /// what they held.
    pub(crate) fn apply_policy(&self, policy: &crate::policy::Policy) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let config = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let indexing = config.index_memory_mb > 0;
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut order: Vec<&String> = config
            .cache_tables
            .iter()
            .filter(|t| tables.contains_key(*t))
            .collect();
        for name in tables.keys() {
            if !order.contains(&name) {
                order.push(name);
            }
        }
        for name in order {
            let Some(table) = tables.get(name) else {
                continue;
            };
            let keys = if indexing {
                policy
                    .tables
                    .get(name)
                    .map(|r| r.lookup_keys.clone())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let cache = config.cache_memory_mb > 0 && config.cache_tables.contains(name);
            table.configure(shared, keys, cache);
        }
    }

    /// Sets one table's key columns and caching directly (what
    /// [`Lookups::apply_policy`] does per table).
    #[cfg(test)]
    pub(crate) fn set_keys(&self, name: &str, keys: Vec<String>, cache: bool) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(name) {
            t.configure(shared, keys, cache);
        }
    }
}

/// A pseudonym index's identity: key column, key domain and the
/// pseudonymisation key's public id.
type PseudoKey = (String, String, [u8; 8]);

/// One data file's indexes and cached rows.
#[derive(Debug)]
pub(crate) struct FileIndex {
    size: u64,
    rows: u64,
    keys: HashMap<String, KeyColumn>,
    cached: Option<RecordBatch>,
    pseudonyms: RwLock<HashMap<PseudoKey, Arc<KeyColumn>>>,
    held: Mutex<Vec<Reservation>>,
    /// The distinct keys of an integer key column, computed when patient
    /// accounting first asks ([`TableLookup::distinct_keys`]).
    distinct: Mutex<HashMap<String, Arc<roaring::RoaringTreemap>>>,
}

impl FileIndex {
    /// The distinct keys of `column` in this file (`None`: not indexed,
    /// or not an integer column).
    fn distinct(&self, column: &str) -> Option<Arc<roaring::RoaringTreemap>> {
        let mut cached = self.distinct.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = cached.get(column) {
            return Some(set.clone());
        }
        let set = Arc::new(self.keys.get(column)?.distinct()?);
        cached.insert(column.to_owned(), set.clone());
        Some(set)
    }
}

/// Which rows of one file a probe names.
#[derive(Debug)]
pub(crate) struct Hit {
    /// Row numbers within the file, ascending, no repeats.
    pub(crate) rows: Vec<u32>,
    /// Rows in the file.
    pub(crate) total: u64,
    /// The file's decoded rows (all columns), when cached.
    pub(crate) cached: Option<RecordBatch>,
}

#[derive(Debug, Default)]
struct State {
    keys: Vec<String>,
    cache: bool,
    /// Bumped whenever `keys` or `cache` change: a build started before is
    /// not kept.
    generation: u64,
    current: Option<Arc<VersionFiles>>,
    files: HashMap<StorePath, Arc<FileIndex>>,
    /// Files not indexed in this generation (over the budget, unreadable).
    given_up: HashSet<StorePath>,
    /// Pseudonym indexes scans asked for, with the function to compute them.
    pseudonyms: HashMap<PseudoKey, Arc<crate::engine::masks::LakewardPseudonym>>,
    /// (file, pseudonym index) pairs not built (over the budget).
    pseudonyms_given_up: HashSet<(StorePath, PseudoKey)>,
}

/// One table's lookups: configured keys, the newest loaded version's files
/// and their indexes. The table's provider holds it from the moment the
/// table is opened.
#[derive(Debug, Default)]
pub(crate) struct TableLookup {
    name: OnceLock<String>,
    shared: OnceLock<Arc<Shared>>,
    state: RwLock<State>,
    /// A build of this table is queued.
    queued: AtomicBool,
    /// The last answer of [`Self::distinct_keys`]: (column, files) it was
    /// computed for, and the keys.
    distinct: Mutex<Option<(String, Vec<(StorePath, u64)>, Arc<roaring::RoaringTreemap>)>>,
}

impl TableLookup {
    pub(crate) fn new() -> Arc<TableLookup> {
        Arc::new(TableLookup::default())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn configure(self: &Arc<Self>, shared: &Arc<Shared>, keys: Vec<String>, cache: bool) {
        let _ = self.shared.set(shared.clone());
        {
            let mut s = self.write();
            if s.keys != keys || s.cache != cache {
                s.keys = keys;
                s.cache = cache;
                s.generation += 1;
                s.files.clear();
                s.given_up.clear();
                s.pseudonyms.clear();
                s.pseudonyms_given_up.clear();
            }
        }
        self.queue();
    }

    /// A new version of the table was loaded: its files are the ones to
    /// index; indexes of files it no longer has are dropped.
    pub(crate) fn version_loaded(self: &Arc<Self>, files: &Arc<VersionFiles>) {
        {
            let mut s = self.write();
            let present: HashSet<&StorePath> =
                files.files.iter().map(|f| &f.meta.location).collect();
            s.files.retain(|path, _| present.contains(path));
            s.given_up.retain(|path| present.contains(path));
            s.pseudonyms_given_up
                .retain(|(path, _)| present.contains(path));
            s.current = Some(files.clone());
        }
        self.queue();
    }

    /// Files of the loaded version with a key index (and how many of
    /// them have cached rows).
    #[cfg(test)]
    pub(crate) fn indexed_files(&self) -> (usize, usize) {
        let s = self.read();
        (
            s.files.len(),
            s.files.values().filter(|f| f.cached.is_some()).count(),
        )
    }

    /// Pseudonym indexes built, over all files.
    #[cfg(test)]
    pub(crate) fn pseudonym_indexes(&self) -> usize {
        self.read()
            .files
            .values()
            .map(|f| f.pseudonyms.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn queue(self: &Arc<Self>) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        if self.read().keys.is_empty() {
            return;
        }
        if !self.queued.swap(true, Ordering::AcqRel) {
            let _ = shared.jobs.send(self.clone());
        }
    }

    /// The distinct keys of integer key column `column` over `files`
    /// (paths and sizes of the data files a scan reads), when each of them
    /// has its key index; `None` otherwise. Patient accounting reads it
    /// for aggregates over a whole table (`engine::accounting::whole`).
    /// Each file's keys are kept once computed, and the last union too.
    pub(crate) fn distinct_keys(
        &self,
        column: &str,
        files: &[(StorePath, u64)],
    ) -> Option<Arc<roaring::RoaringTreemap>> {
        {
            let last = self.distinct.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((c, f, set)) = last.as_ref()
                && c == column
                && f == files
            {
                return Some(set.clone());
            }
        }
        let per_file: Vec<Arc<roaring::RoaringTreemap>> = {
            let s = self.read();
            files
                .iter()
                .map(|(path, size)| {
                    s.files
                        .get(path)
                        .filter(|f| f.size == *size)?
                        .distinct(column)
                })
                .collect::<Option<_>>()?
        };
        let mut union = roaring::RoaringTreemap::new();
        for set in &per_file {
            union |= set.as_ref();
        }
        let union = Arc::new(union);
        *self.distinct.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((column.to_owned(), files.to_vec(), union.clone()));
        Some(union)
    }

    /// Which rows of each of `files` (paths and sizes of the scanned
    /// version) the first usable probe among `probes` names: `None` when
    /// no probe is on an indexed key of this table; else one entry per
    /// file, `None` for a file that must be read whole (no index yet).
    pub(crate) fn select(
        self: &Arc<Self>,
        probes: &[Probe],
        files: &[(&StorePath, u64)],
    ) -> Option<Vec<Option<Hit>>> {
        let s = self.read();
        if s.keys.is_empty() {
            return None;
        }
        let caching = s.cache;
        let mut best: Option<(usize, Vec<Option<Hit>>)> = None;
        let mut wanted: Option<(PseudoKey, Arc<crate::engine::masks::LakewardPseudonym>)> = None;
        for probe in probes {
            if !s.keys.iter().any(|k| k == probe.column()) {
                continue;
            }
            let pseudo_key = match probe {
                Probe::Key { .. } => None,
                Probe::Pseudonym {
                    column,
                    domain,
                    udf,
                    ..
                } => {
                    let key: PseudoKey = (column.clone(), domain.clone(), udf.key_id());
                    if !s.pseudonyms.contains_key(&key) && wanted.is_none() {
                        wanted = Some((key.clone(), udf.clone()));
                    }
                    Some(key)
                }
            };
            let hits: Vec<Option<Hit>> = files
                .iter()
                .map(|(path, size)| {
                    let file = s.files.get(*path).filter(|f| f.size == *size)?;
                    file_hit(file, probe, pseudo_key.as_ref())
                })
                .collect();
            let covered = hits.iter().filter(|h| h.is_some()).count();
            if best.as_ref().is_none_or(|(c, _)| covered > *c) {
                best = Some((covered, hits));
            }
        }
        drop(s);
        if let Some((key, udf)) = wanted {
            let mut s = self.write();
            if !s.pseudonyms.contains_key(&key) {
                s.pseudonyms.insert(key, udf);
                drop(s);
                self.queue();
            }
        }
        let (covered, hits) = best?;
        let metrics = Metrics::global();
        metrics.cache(Cache::KeyIndex, covered == files.len());
        if covered == 0 {
            return None;
        }
        let cached = hits
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| h.cached.is_some()));
        if caching {
            metrics.cache(Cache::HotRows, cached);
        }
        Some(hits)
    }
}

/// The rows of `file` a probe names, when the file has the index it needs.
fn file_hit(file: &FileIndex, probe: &Probe, pseudo_key: Option<&PseudoKey>) -> Option<Hit> {
    let mut rows = Vec::new();
    let pseudonyms;
    let column: &KeyColumn = match pseudo_key {
        None => file.keys.get(probe.column())?,
        Some(key) => {
            pseudonyms = file
                .pseudonyms
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .cloned()?;
            &pseudonyms
        }
    };
    for v in probe.values() {
        // NULL equals nothing; a constant of another type is no probe of
        // this column (the file is read whole).
        if !v.is_null() {
            column.rows_of(column.kind.key_of(v)?, &mut rows);
        }
    }
    rows.sort_unstable();
    rows.dedup();
    Some(Hit {
        rows,
        total: file.rows,
        cached: file.cached.clone(),
    })
}

/// The builder: one table at a time, one file at a time, so indexing
/// takes at most one core's share from the statements.
async fn build_loop(
    shared: Weak<Shared>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Arc<TableLookup>>,
) {
    while let Some(table) = jobs.recv().await {
        table.queued.store(false, Ordering::Release);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        build_table(&shared, &table).await;
    }
}

/// What to build next for a table.
enum Todo {
    File {
        generation: u64,
        version: Arc<VersionFiles>,
        index: usize,
        keys: Vec<(String, usize, KeyKind)>,
        cache: bool,
    },
    Pseudonyms {
        generation: u64,
        path: StorePath,
        file: Arc<FileIndex>,
        key: PseudoKey,
        udf: Arc<crate::engine::masks::LakewardPseudonym>,
    },
}

fn next_todo(table: &TableLookup) -> Option<Todo> {
    let s = table.read();
    let version = s.current.clone()?;
    if s.keys.is_empty() {
        return None;
    }
    for (index, f) in version.files.iter().enumerate() {
        let path = &f.meta.location;
        if s.files.contains_key(path) || s.given_up.contains(path) {
            continue;
        }
        let keys = s
            .keys
            .iter()
            .filter_map(|k| {
                let i = version.schema.index_of(k).ok()?;
                let kind = KeyKind::of(version.schema.field(i).data_type())?;
                Some((k.clone(), i, kind))
            })
            .collect();
        return Some(Todo::File {
            generation: s.generation,
            version: version.clone(),
            index,
            keys,
            cache: s.cache,
        });
    }
    for (key, udf) in &s.pseudonyms {
        for f in &version.files {
            let path = &f.meta.location;
            let Some(file) = s.files.get(path) else {
                continue;
            };
            let has = file
                .pseudonyms
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(key);
            if has || s.pseudonyms_given_up.contains(&(path.clone(), key.clone())) {
                continue;
            }
            return Some(Todo::Pseudonyms {
                generation: s.generation,
                path: path.clone(),
                file: file.clone(),
                key: key.clone(),
                udf: udf.clone(),
            });
        }
    }
    None
}

async fn build_table(shared: &Arc<Shared>, table: &Arc<TableLookup>) {
    let name = table.name.get().cloned().unwrap_or_default();
    let started = std::time::Instant::now();
    let (mut files, mut rows) = (0usize, 0u64);
    while let Some(todo) = next_todo(table) {
        match todo {
            Todo::File {
                generation,
                version,
                index,
                keys,
                cache,
            } => {
                let path = version.files[index].meta.location.clone();
                let built = build_file(shared, &version, index, &keys, cache).await;
                let mut s = table.write();
                if s.generation != generation {
                    continue;
                }
                match built {
                    Ok(file) => {
                        files += 1;
                        rows += file.rows;
                        s.files.insert(path, Arc::new(file));
                    }
                    Err(why) => {
                        tracing::warn!(table = %name, reason = why, "a data file is read without a key index");
                        s.given_up.insert(path);
                    }
                }
            }
            Todo::Pseudonyms {
                generation,
                path,
                file,
                key,
                udf,
            } => {
                let built = build_pseudonyms(shared, &file, &key, udf).await;
                let mut s = table.write();
                if s.generation != generation {
                    continue;
                }
                if let Err(why) = built {
                    tracing::warn!(table = %name, column = %key.0, reason = why, "a data file is searched by pseudonym without an index");
                    s.pseudonyms_given_up.insert((path, key));
                }
            }
        }
        // Let statements run between files.
        tokio::task::yield_now().await;
    }
    if files > 0 {
        tracing::info!(
            table = %name,
            files,
            rows,
            ms = started.elapsed().as_millis() as u64,
            "key indexes ready"
        );
    }
}

/// Reads one file (its key columns, or every column for a cached table)
/// and indexes it.
async fn build_file(
    shared: &Arc<Shared>,
    version: &VersionFiles,
    index: usize,
    keys: &[(String, usize, KeyKind)],
    cache: bool,
) -> Result<FileIndex, &'static str> {
    let file = &version.files[index];
    if keys.is_empty() {
        return Err("no key column of an indexable type (integer or text)");
    }
    // Before reading: would the index fit at all?
    let estimate = file
        .rows
        .unwrap_or(0)
        .saturating_mul(12 * keys.len() as u64);
    if estimate > shared.index.max.load(Ordering::Relaxed) {
        return Err("the index would exceed [lookup] index_memory_mb");
    }
    let projection: Option<Vec<usize>> = (!cache).then(|| keys.iter().map(|k| k.1).collect());
    let state = shared.ctx.state();
    let plan = version
        .read_file(&state, index, projection.as_ref())
        .await
        .map_err(|_| "the file could not be read")?;
    let mut stream = plan
        .execute(0, shared.ctx.task_ctx())
        .map_err(|_| "the file could not be read")?;
    let mut pairs: Vec<Vec<(u64, u32)>> = keys.iter().map(|_| Vec::new()).collect();
    let mut batches = Vec::new();
    let mut rows: u64 = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|_| "the file could not be read")?;
        let first = u32::try_from(rows).map_err(|_| "more than 2^32 rows in one file")?;
        for (k, (_, column, kind)) in keys.iter().enumerate() {
            let at = if cache { *column } else { k };
            if !keys::collect_keys(*kind, batch.column(at), first, &mut pairs[k]) {
                return Err("a key column's type changed");
            }
        }
        rows += batch.num_rows() as u64;
        u32::try_from(rows).map_err(|_| "more than 2^32 rows in one file")?;
        if cache {
            batches.push(batch);
        }
    }
    let names: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let kinds: Vec<KeyKind> = keys.iter().map(|k| k.2).collect();
    // Sorting millions of keys is CPU work: off the async workers.
    let columns = tokio::task::spawn_blocking(move || {
        pairs
            .into_iter()
            .zip(kinds)
            .map(|(p, kind)| KeyColumn::new(kind, p))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| "indexing failed")?;
    let bytes: u64 = columns.iter().map(|c| c.bytes() as u64).sum();
    let indexed: u64 = columns.iter().map(|c| c.len() as u64).sum();
    let mut held = vec![
        Reservation::try_new(shared, Side::Index, bytes, indexed)
            .ok_or("the index would exceed [lookup] index_memory_mb")?,
    ];
    let cached = if cache && !batches.is_empty() {
        let schema = batches[0].schema();
        match datafusion::arrow::compute::concat_batches(&schema, &batches) {
            Ok(all) => {
                drop(batches);
                let size = all.get_array_memory_size() as u64;
                match Reservation::try_new(shared, Side::Cache, size, 0) {
                    Some(r) => {
                        held.push(r);
                        Some(all)
                    }
                    None => None,
                }
            }
            Err(_) => None,
        }
    } else {
        None
    };
    Ok(FileIndex {
        size: file.meta.size,
        rows,
        keys: names.into_iter().zip(columns).collect(),
        cached,
        pseudonyms: RwLock::new(HashMap::new()),
        held: Mutex::new(held),
        distinct: Mutex::new(HashMap::new()),
    })
}

/// Computes one file's pseudonym index.
async fn build_pseudonyms(
    shared: &Arc<Shared>,
    file: &Arc<FileIndex>,
    key: &PseudoKey,
    udf: Arc<crate::engine::masks::LakewardPseudonym>,
) -> Result<(), &'static str> {
    let Some(column) = file.keys.get(&key.0) else {
        return Err("no key index of that column");
    };
    let reservation = Reservation::try_new(
        shared,
        Side::Index,
        column.bytes() as u64,
        column.len() as u64,
    )
    .ok_or("the pseudonym index would exceed [lookup] index_memory_mb")?;
    let (file2, key2) = (file.clone(), key.clone());
    let built = tokio::task::spawn_blocking(move || {
        file2
            .keys
            .get(&key2.0)
            .and_then(|c| c.pseudonyms(&udf, &key2.1))
    })
    .await
    .map_err(|_| "indexing failed")?
    .ok_or("the column is not an integer key, or the domain is not valid")?;
    file.pseudonyms
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), Arc::new(built));
    file.held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reservation);
    Ok(())
}

#[cfg(test)]
mod tests;
