//! The access audit (SPEC §6): one record per connection attempt and per
//! statement, durable before disclosure, hash-chained, signed at
//! checkpoints, shipped to the Delta table `audit.access_log`.
//!
//! Path of a record:
//!
//! 1. The connection handler builds a [`record::RecordBody`] and calls
//!    [`Auditor::record`] (waits) or [`Auditor::record_later`] (completion
//!    records, refused connections).
//! 2. The writer thread takes every record queued since its last write,
//!    numbers and chains them ([`chain::chain_hash`]), appends them to the
//!    segment log ([`wal`]) and `fdatasync`s once (group commit); only then
//!    do the waiting statements go on to send rows. Every
//!    `checkpoint_every_records` records or `checkpoint_every_secs` seconds
//!    it signs the chain head ([`chain::Checkpoint`]).
//! 3. The shipper task appends durable records to the Delta table in
//!    batches, one commit per batch carrying the application transaction
//!    `(lakeward-audit:<instance>, last seq)`, so a batch lands exactly once
//!    even when it is re-sent after a crash. At start-up, records of the
//!    segment log past the table's transaction version are shipped first.
//!    The same shipper writes the patient index ([`index`]) of the batch,
//!    with the same application transaction, after the records; at
//!    start-up, records the index lacks are indexed from the table first.
//!
//! If a record cannot be made durable, the statement is refused (SQLSTATE
//! 58030) and no row is sent: lakeward never serves unaudited data.
//! Records hold no token, key, SQL literal or data value.

pub mod chain;
pub mod delta;
pub mod events;
pub(crate) mod fhir;
pub mod index;
pub mod patients;
pub mod pinned;
pub mod record;
pub mod signals;
pub(crate) mod verify;
pub mod wal;
pub mod watch;

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::error::SqlError;
use record::{AuditRecord, RecordBody};

/// Settings of the audit store (the `[audit]` section).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Segment log and checkpoints.
    pub dir: PathBuf,
    /// The Delta table `audit.access_log` (path or URL).
    pub table: String,
    /// This instance's chain name; instances sharing a table need distinct names.
    pub instance: String,
    pub signing_key: Arc<chain::SigningKey>,
    pub checkpoint_every_records: u64,
    pub checkpoint_every: Duration,
    pub ship_every_records: usize,
    pub ship_every: Duration,
    pub segment_max_bytes: u64,
    /// `false` only for benchmarks (`[audit] durability = "none-benchmark-only"`).
    pub fsync: bool,
    /// Patient access accounting; `false` only for benchmarks (`[audit]
    /// accounting = "none-benchmark-only"`).
    pub accounting: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Table(#[from] delta::AuditTableError),
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    #[error("audit: {0}")]
    Other(String),
}

/// The application id of an instance's Delta transactions.
pub fn app_id(instance: &str) -> String {
    format!("lakeward-audit:{instance}")
}

/// Checkpoints of an audit folder.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoints.jsonl")
}

enum WriterMsg {
    Append {
        body: Box<RecordBody>,
        done: Option<oneshot::Sender<bool>>,
    },
    Tick,
    Shutdown(oneshot::Sender<()>),
}

enum ShipMsg {
    Records(Vec<AuditRecord>),
    Flush(oneshot::Sender<bool>),
}

/// Live counters (for metrics and tests).
#[derive(Debug, Default)]
pub struct AuditStats {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub fsync_micros_total: AtomicU64,
    pub shipped_seq: AtomicU64,
    /// Sequence number of the newest durable record (the chain head).
    pub durable_seq: AtomicU64,
    pub checkpoints: AtomicU64,
    pub write_failures: AtomicU64,
    /// The chain position of the last pinned-statement snapshot
    /// ([`pinned`]): the segment log keeps every record after it.
    pub pinned_snapshot_seq: AtomicU64,
}

impl AuditStats {
    /// Records durable locally but not yet in the Delta audit table.
    pub fn unshipped(&self) -> u64 {
        self.durable_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.shipped_seq.load(Ordering::Relaxed))
    }
}

/// Handle to the audit store; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::UnboundedSender<WriterMsg>,
    ship: mpsc::UnboundedSender<ShipMsg>,
    instance: String,
    /// Set when the writer cannot write: every statement is refused.
    broken: Arc<AtomicBool>,
    pub stats: Arc<AuditStats>,
    table: Arc<delta::AuditTable>,
    /// The unusual-access watch, once started ([`Auditor::start_watch`]).
    watch: std::sync::OnceLock<watch::Watch>,
    accounting: bool,
}

fn unavailable() -> SqlError {
    SqlError::new(
        "58030",
        "the audit log cannot be written: lakeward refuses statements until it can record them",
    )
}

impl Auditor {
    /// Open the store: create the Delta table if needed, recover the chain
    /// head, ship what the table lacks, start the writer and the shipper.
    pub async fn open(settings: AuditSettings) -> Result<Auditor, AuditError> {
        let table =
            Arc::new(delta::AuditTable::open_or_create(&settings.table, record::schema()).await?);
        let app = app_id(&settings.instance);
        let committed = table.committed_version(&app).await?.unwrap_or(0);
        let patient_index = Arc::new(index::open(&settings.table).await?);
        // Records shipped but not indexed (a crash between the two commits,
        // or a table written before the index existed) are indexed now.
        let indexed = patient_index.committed_version(&app).await?.unwrap_or(0);
        if indexed < committed {
            let stats = index::reindex(
                &table,
                &patient_index,
                &settings.instance,
                indexed,
                committed,
            )
            .await?;
            tracing::info!(
                records = stats.records,
                rows = stats.rows,
                "indexed the patients of audit records shipped before the last start"
            );
        }
        let dir = settings.dir.clone();
        let max = settings.segment_max_bytes;
        let fsync = settings.fsync;
        let accounting = settings.accounting;
        if !accounting {
            tracing::warn!(
                "patient access is NOT accounted (accounting = none-benchmark-only): never use this with real data"
            );
        }
        if !fsync {
            tracing::warn!(
                "audit records are NOT fsync'd (durability = none-benchmark-only): never use this with real data"
            );
        }
        let (log, wal_head) = tokio::task::spawn_blocking(move || {
            wal::SegmentLog::open(&dir, max)
                .map(|(log, head)| (if fsync { log } else { log.without_fsync() }, head))
        })
        .await
        .map_err(|e| AuditError::Other(e.to_string()))??;
        // The head: the segment log's, unless the table is further along
        // (segments removed after shipping).
        let head = match wal_head {
            Some(h) if h.seq >= committed => h,
            _ if committed > 0 => {
                let hash = verify::hash_at(&table, &settings.instance, committed)
                    .await?
                    .ok_or_else(|| {
                        AuditError::Other(format!(
                            "the audit table says record {committed} of instance {} exists but it cannot be found",
                            settings.instance
                        ))
                    })?;
                wal::Head {
                    seq: committed,
                    hash,
                }
            }
            _ => wal::Head {
                seq: 0,
                hash: chain::GENESIS.to_owned(),
            },
        };
        let backlog = {
            let dir = settings.dir.clone();
            tokio::task::spawn_blocking(move || wal::read_after(&dir, committed))
                .await
                .map_err(|e| AuditError::Other(e.to_string()))??
        };
        let checkpoints = chain::CheckpointLog::open(&checkpoint_path(&settings.dir))?;
        // Pinned statements the last run left without a completion.
        let (snapshot_seq, recovered_completions) = {
            let dir = settings.dir.clone();
            let head_seq = head.seq;
            tokio::task::spawn_blocking(move || -> Result<_, AuditError> {
                match pinned::load(&dir).map_err(AuditError::Other)? {
                    Some(snapshot) => {
                        let seq = snapshot.seq;
                        let after = wal::read_after(&dir, seq)?;
                        Ok((seq, pinned::recover(snapshot, &after)))
                    }
                    // The first start with pinned statements: an empty
                    // snapshot at the head, so that a crash of this run
                    // is recovered from it.
                    None => {
                        pinned::OpenPinned::default()
                            .save(&dir, head_seq)
                            .map_err(|e| AuditError::Other(format!("pinned snapshot: {e}")))?;
                        Ok((head_seq, Vec::new()))
                    }
                }
            })
            .await
            .map_err(|e| AuditError::Other(e.to_string()))??
        };

        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (ship_tx, ship_rx) = mpsc::unbounded_channel();
        let broken = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AuditStats::default());
        stats.shipped_seq.store(committed as u64, Ordering::Relaxed);
        stats
            .pinned_snapshot_seq
            .store(snapshot_seq.max(0) as u64, Ordering::Relaxed);
        stats
            .durable_seq
            .store(head.seq.max(committed) as u64, Ordering::Relaxed);
        crate::metrics::Metrics::global().set_audit_unshipped(stats.unshipped());
        if !backlog.is_empty() {
            tracing::info!(
                records = backlog.len(),
                "shipping audit records recovered from the segment log"
            );
            let _ = ship_tx.send(ShipMsg::Records(backlog));
        }
        let recovered = head.seq > 0;
        let writer = Writer {
            log,
            head,
            instance: settings.instance.clone(),
            key: settings.signing_key.clone(),
            checkpoints,
            checkpoint_every_records: settings.checkpoint_every_records.max(1),
            checkpoint_every: settings.checkpoint_every,
            // A chain recovered at start-up gets a checkpoint at the first
            // tick: records written after the last one (a crash) are covered.
            since_checkpoint: u64::from(recovered),
            last_checkpoint: Instant::now(),
            ship: ship_tx.clone(),
            broken: broken.clone(),
            stats: stats.clone(),
            dir: settings.dir.clone(),
            open_pinned: pinned::OpenPinned::default(),
        };
        // Their completions come first in the chain, before any statement
        // of this run.
        let mut recovering = Vec::new();
        for body in recovered_completions {
            let (tx, rx) = oneshot::channel();
            let _ = writer_tx.send(WriterMsg::Append {
                body: Box::new(body),
                done: Some(tx),
            });
            recovering.push(rx);
        }
        std::thread::Builder::new()
            .name("lakeward-audit-writer".into())
            .spawn(move || writer.run(writer_rx))
            .map_err(|e| AuditError::Other(format!("cannot start the audit writer: {e}")))?;
        if !recovering.is_empty() {
            let n = recovering.len();
            for rx in recovering {
                if !matches!(rx.await, Ok(true)) {
                    return Err(AuditError::Other(
                        "the completions of statements open at the last stop cannot be written"
                            .into(),
                    ));
                }
            }
            tracing::warn!(
                statements = n,
                "the last run stopped with point lookups whose completion was not written: their patients are accounted as returned"
            );
        }
        // Ticks let the writer checkpoint an idle chain.
        let tick_tx = writer_tx.clone();
        let tick_every = settings.checkpoint_every.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_every);
            loop {
                interval.tick().await;
                if tick_tx.send(WriterMsg::Tick).is_err() {
                    break;
                }
            }
        });
        // The index's months gather one file per shipped batch: compacted
        // hourly so that a lookup reads few files per month.
        {
            let index = patient_index.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(index::COMPACT_EVERY);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval.tick().await;
                loop {
                    interval.tick().await;
                    match index::compact_all(&index, index::COMPACT_MIN_FILES).await {
                        Ok((months, removed, added)) if months > 0 => tracing::info!(
                            months,
                            removed,
                            added,
                            "compacted the audit patient index"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "compacting the audit patient index"),
                    }
                }
            });
        }
        tokio::spawn(ship_loop(
            ship_rx,
            Shipper {
                table: table.clone(),
                index: patient_index,
                app,
                log_committed: committed,
                index_committed: committed,
                index_rows: Vec::new(),
                index_built: committed,
                last_index_commit: Instant::now(),
            },
            settings.ship_every_records.max(1),
            settings.ship_every,
            settings.dir.clone(),
            stats.clone(),
        ));
        Ok(Auditor {
            inner: Arc::new(Inner {
                writer: writer_tx,
                ship: ship_tx,
                instance: settings.instance,
                broken,
                stats,
                table,
                watch: std::sync::OnceLock::new(),
                accounting,
            }),
        })
    }

    /// Start watching completed statements for unusual access (once; a
    /// second call is ignored).
    pub fn start_watch(
        &self,
        cfg: signals::SignalConfig,
        directory: Option<Arc<dyn watch::DirectorySource>>,
    ) -> Result<(), AuditError> {
        if self.inner.watch.get().is_some() {
            return Ok(());
        }
        let w = watch::Watch::start(cfg, self.clone(), directory).map_err(AuditError::Other)?;
        let _ = self.inner.watch.set(w);
        Ok(())
    }

    /// A completed statement that touched patients, for the watch.
    pub fn observe(&self, o: watch::Observed) {
        if let Some(w) = self.inner.watch.get() {
            w.observe(o);
        }
    }

    /// Whether statements account for the patients they touch.
    pub fn accounts_patients(&self) -> bool {
        self.inner.accounting
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn stats(&self) -> &AuditStats {
        &self.inner.stats
    }

    /// The Delta table behind `audit.access_log`.
    pub fn table(&self) -> &Arc<delta::AuditTable> {
        &self.inner.table
    }

    /// Is the store writable (for readiness)?
    pub fn healthy(&self) -> bool {
        !self.inner.broken.load(Ordering::Relaxed)
    }

    /// Record `body` and wait until it is durable. An error means the
    /// statement must not run.
    pub async fn record(&self, body: RecordBody) -> Result<(), SqlError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(WriterMsg::Append {
                body: Box::new(body),
                done: Some(tx),
            })
            .map_err(|_| unavailable())?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }

    /// Queue `body`; it is durable with the next group commit.
    pub fn record_later(&self, body: RecordBody) {
        if self
            .inner
            .writer
            .send(WriterMsg::Append {
                body: Box::new(body),
                done: None,
            })
            .is_err()
        {
            tracing::error!(
                incident = "audit_unavailable",
                "an audit record could not be queued: the writer has stopped"
            );
        }
    }

    /// Wait until every record made durable so far is in the Delta table
    /// (auditors reading `audit.*` see everything up to their own query).
    pub async fn sync_table(&self) -> Result<(), SqlError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ship
            .send(ShipMsg::Flush(tx))
            .map_err(|_| unavailable())?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(SqlError::new(
                "58030",
                "the audit table cannot be brought up to date; try again",
            )),
        }
    }

    /// Write a final checkpoint and ship everything (graceful shutdown).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send(WriterMsg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let _ = self.sync_table().await;
    }
}

struct Writer {
    log: wal::SegmentLog,
    head: wal::Head,
    instance: String,
    key: Arc<chain::SigningKey>,
    checkpoints: chain::CheckpointLog,
    checkpoint_every_records: u64,
    checkpoint_every: Duration,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    ship: mpsc::UnboundedSender<ShipMsg>,
    broken: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    /// The audit folder (for the pinned-statement snapshot).
    dir: PathBuf,
    /// Pinned statements whose completion is not written yet ([`pinned`]).
    open_pinned: pinned::OpenPinned,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriterMsg>) {
        const GROUP: usize = 4096;
        while let Some(first) = rx.blocking_recv() {
            let mut msgs = vec![first];
            while msgs.len() < GROUP {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            let mut sealed = Vec::new();
            let mut waiting = Vec::new();
            let mut tick = false;
            let mut shutdown = None;
            let (mut seq, mut prev) = (self.head.seq, self.head.hash.clone());
            for m in msgs {
                match m {
                    WriterMsg::Append { body, done } => {
                        let mut body = *body;
                        seq += 1;
                        body.instance = self.instance.clone();
                        body.seq = seq;
                        let r = body.seal(&prev);
                        prev = r.hash.clone();
                        sealed.push(r);
                        waiting.extend(done);
                    }
                    WriterMsg::Tick => tick = true,
                    WriterMsg::Shutdown(tx) => shutdown = Some(tx),
                }
            }
            if !sealed.is_empty() {
                let started = Instant::now();
                match self.log.append(&sealed) {
                    Ok(()) => {
                        let m = crate::metrics::Metrics::global();
                        m.observe_audit_fsync(started.elapsed());
                        m.audit_records(sealed.len() as u64);
                        m.set_audit_queue_depth(rx.len());
                        self.stats
                            .fsync_micros_total
                            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        self.stats.batches.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .records
                            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
                        self.since_checkpoint += sealed.len() as u64;
                        self.head = wal::Head { seq, hash: prev };
                        self.stats.durable_seq.store(seq as u64, Ordering::Relaxed);
                        m.set_audit_unshipped(self.stats.unshipped());
                        self.broken.store(false, Ordering::Relaxed);
                        for r in &sealed {
                            self.open_pinned.follow(r);
                        }
                        let _ = self.ship.send(ShipMsg::Records(sealed));
                        for w in waiting {
                            let _ = w.send(true);
                        }
                    }
                    Err(e) => {
                        // The batch is not in the chain: its statements are
                        // refused, the next batch retries on a clean file.
                        tracing::error!(incident = "audit_write_failed", error = %e, "audit records could not be made durable; statements are refused");
                        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::Metrics::global().audit_error();
                        self.broken.store(true, Ordering::Relaxed);
                        for w in waiting {
                            let _ = w.send(false);
                        }
                    }
                }
            }
            let due = self.since_checkpoint >= self.checkpoint_every_records
                || (self.since_checkpoint > 0
                    && (shutdown.is_some()
                        || (tick && self.last_checkpoint.elapsed() >= self.checkpoint_every)));
            if due {
                self.checkpoint();
            }
            if let Some(tx) = shutdown {
                let _ = tx.send(());
                return;
            }
        }
    }

    fn checkpoint(&mut self) {
        let cp = chain::Checkpoint::sign(
            &self.key,
            &self.instance,
            self.head.seq as u64,
            chrono::Utc::now().timestamp_micros(),
            &self.head.hash,
        );
        match self.checkpoints.append(&cp) {
            Ok(()) => {
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                // A snapshot that cannot be written leaves the previous
                // one, and the segment log keeps every record after it:
                // recovery stays right, it only reads more.
                match self.open_pinned.save(&self.dir, self.head.seq) {
                    Ok(()) => self
                        .stats
                        .pinned_snapshot_seq
                        .store(self.head.seq.max(0) as u64, Ordering::Relaxed),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the open pinned statements could not be saved"
                    ),
                }
            }
            Err(e) => {
                tracing::error!(incident = "audit_checkpoint_failed", error = %e, "audit checkpoint could not be written; statements are refused");
                crate::metrics::Metrics::global().audit_error();
                self.broken.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Where shipped records go, and how far each table has them.
struct Shipper {
    table: Arc<delta::AuditTable>,
    /// The patient index of the shipped records ([`index`]).
    index: Arc<delta::AuditTable>,
    app: String,
    /// The highest seq committed to the audit table.
    log_committed: i64,
    /// The highest seq whose index rows are committed.
    index_committed: i64,
    /// Index rows built for records up to `index_built`, not committed
    /// yet: the index is committed every [`INDEX_SHIP_EVERY`] or
    /// [`INDEX_SHIP_ROWS`] rows, and whenever an auditor's statement asks
    /// for the tables to be current (a flush), instead of after every
    /// shipped batch: each Delta commit costs a snapshot update that
    /// grows with the table, and the index has its own.
    index_rows: Vec<RecordBatch>,
    index_built: i64,
    last_index_commit: Instant,
}

/// How long index rows may wait for their commit (an auditor's statement
/// flushes them at once; a crash before the commit is caught up from the
/// audit table at the next start).
const INDEX_SHIP_EVERY: Duration = Duration::from_secs(10);
/// How many index rows may wait (a statement over every patient of a
/// million-patient table makes about 250).
const INDEX_SHIP_ROWS: usize = 16_384;

async fn ship_loop(
    mut rx: mpsc::UnboundedReceiver<ShipMsg>,
    mut shipper: Shipper,
    every_records: usize,
    every: Duration,
    dir: PathBuf,
    stats: Arc<AuditStats>,
) {
    let mut pending: Vec<AuditRecord> = Vec::new();
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut flush = None;
        let mut tick = false;
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ShipMsg::Records(r)) => pending.extend(r),
                Some(ShipMsg::Flush(tx)) => flush = Some(tx),
                None => {
                    let _ = ship(&mut shipper, &mut pending, &dir, &stats, true).await;
                    return;
                }
            },
            _ = interval.tick() => tick = true,
        }
        // Take whatever else is already queued before deciding.
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ShipMsg::Records(r) => pending.extend(r),
                ShipMsg::Flush(tx) => {
                    if let Some(old) = flush.replace(tx) {
                        // Both wait for the same ship below.
                        let ok = ship(&mut shipper, &mut pending, &dir, &stats, true).await;
                        let _ = old.send(ok);
                    }
                }
            }
        }
        let index_due = !shipper.index_rows.is_empty()
            && shipper.last_index_commit.elapsed() >= INDEX_SHIP_EVERY;
        let due = pending.len() >= every_records || (tick && (!pending.is_empty() || index_due));
        if flush.is_some() || due {
            let ok = ship(&mut shipper, &mut pending, &dir, &stats, flush.is_some()).await;
            if let Some(tx) = flush {
                let _ = tx.send(ok);
            }
        }
    }
}

/// Ship `pending` in one Delta commit and build its patient index rows;
/// on success it is emptied. The index rows are committed (one commit of
/// the index) when `flush`, or when enough of them wait or for long
/// enough; a failed index commit is retried with the same rows.
async fn ship(
    shipper: &mut Shipper,
    pending: &mut Vec<AuditRecord>,
    dir: &Path,
    stats: &AuditStats,
    flush: bool,
) -> bool {
    let Some(last) = pending.last().map(|r| r.body.seq) else {
        return commit_index(shipper, flush).await;
    };
    // Records are in seq order: the ones each table lacks are a suffix.
    let unlogged = pending.partition_point(|r| r.body.seq <= shipper.log_committed);
    if unlogged < pending.len() {
        let batch = match record::to_batch(&pending[unlogged..]) {
            Ok(b) => b,
            Err(e) => return failed("encoded for the audit table", &e),
        };
        match shipper.table.append(vec![batch], &shipper.app, last).await {
            Ok(_) => shipper.log_committed = last,
            Err(e) => return failed("appended to the audit table", &e),
        }
    }
    let unindexed = pending.partition_point(|r| r.body.seq <= shipper.index_built);
    if unindexed < pending.len() {
        match index::to_batch(&pending[unindexed..]) {
            Ok(None) => {}
            Ok(Some(batch)) => shipper.index_rows.push(batch),
            Err(e) => return failed("indexed by patient", &e),
        }
        shipper.index_built = last;
    }
    pending.clear();
    stats.shipped_seq.store(last as u64, Ordering::Relaxed);
    crate::metrics::Metrics::global().set_audit_unshipped(stats.unshipped());
    let dir = dir.to_owned();
    // Records after the pinned-statement snapshot stay (start-up recovery
    // reads them).
    let keep_after = stats.pinned_snapshot_seq.load(Ordering::Relaxed) as i64;
    let removable = last.min(keep_after);
    let _ = tokio::task::spawn_blocking(move || wal::remove_shipped(&dir, removable)).await;
    commit_index(shipper, flush).await
}

/// A failed step of shipping: logged and counted; the caller retries.
fn failed(what: &str, e: &dyn std::fmt::Display) -> bool {
    tracing::error!(incident = "audit_ship_failed", error = %e, "audit records could not be {what}; retrying");
    crate::metrics::Metrics::global().audit_ship_failure();
    false
}

/// Commit the waiting index rows when `now`, or when they are due; `false`
/// when the commit failed (the rows wait for the next try).
async fn commit_index(shipper: &mut Shipper, now: bool) -> bool {
    if shipper.index_built <= shipper.index_committed {
        return true;
    }
    let rows: usize = shipper.index_rows.iter().map(RecordBatch::num_rows).sum();
    let due =
        now || rows >= INDEX_SHIP_ROWS || shipper.last_index_commit.elapsed() >= INDEX_SHIP_EVERY;
    if !due {
        return true;
    }
    let upto = shipper.index_built;
    if shipper.index_rows.is_empty() {
        // Records without patients: nothing to write; the transaction
        // version moves with the next rows.
        shipper.index_committed = upto;
        shipper.last_index_commit = Instant::now();
        return true;
    }
    let batch = match index::sorted(&shipper.index_rows) {
        Ok(b) => b,
        Err(e) => return failed("indexed by patient", &e),
    };
    match shipper.index.append(vec![batch], &shipper.app, upto).await {
        Ok(_) => {
            shipper.index_committed = upto;
            shipper.index_rows.clear();
            shipper.last_index_commit = Instant::now();
            true
        }
        Err(e) => failed("indexed by patient", &e),
    }
}
