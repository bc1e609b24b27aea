//! `audit verify` and `audit export`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use roaring::RoaringTreemap;

use crate::audit::fhir;
use crate::audit::record::{AuditRecord, RecordBody, decision, event};
use crate::audit::verify::Range;
use crate::config::Config;

use super::services::audit_signing_key;
use super::{ExportArgs, ExportFormat};

/// A `--from`/`--to` bound: a sequence number, a date or an RFC 3339 time.
fn parse_bound(text: &str, end: bool) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    if let Ok(seq) = text.parse::<i64>() {
        return Ok((Some(seq), None));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok((None, Some(t.timestamp_micros())));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let t = if end {
            d.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = t {
            return Ok((None, Some(t.and_utc().timestamp_micros())));
        }
    }
    anyhow::bail!("{text:?} is not a sequence number, a date (YYYY-MM-DD) or an RFC 3339 time")
}

/// The configuration (`--config`, or the demo layout of `--data-dir`) and
/// its audit table's location.
fn audit_config(data_dir: &Path, config: Option<&Path>) -> anyhow::Result<(Config, String)> {
    let config = match config {
        Some(f) => Config::load(f)?,
        None => Config::demo(data_dir, "127.0.0.1:6432".parse()?),
    };
    let location = config
        .audit
        .table_location(&config.data)
        .ok_or_else(|| anyhow::anyhow!("no audit table configured"))?;
    Ok((config, location))
}

pub(super) async fn audit_verify(
    data_dir: &Path,
    config: Option<&Path>,
    public_keys: &[PathBuf],
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::chain::VerifyingKey;
    let (config, location) = audit_config(data_dir, config)?;
    let keys = if public_keys.is_empty() {
        vec![audit_signing_key(&config)?.verifying_key()]
    } else {
        public_keys
            .iter()
            .map(|f| VerifyingKey::load_file(f))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut range = crate::audit::verify::Range::default();
    if let Some(f) = &from {
        (range.from_seq, range.from_ts) = parse_bound(f, false)?;
    }
    if let Some(t) = &to {
        (range.to_seq, range.to_ts) = parse_bound(t, true)?;
    }
    let table =
        crate::audit::delta::AuditTable::open_existing(&location, crate::audit::record::schema())
            .await?;
    // The patient index, when there is one (written since patient
    // accounting; an audit table without one has nothing to compare).
    let index = match crate::audit::delta::AuditTable::open_existing(
        &crate::audit::index::location(&location),
        crate::audit::index::schema(),
    )
    .await
    {
        Ok(index) => Some(index),
        Err(crate::audit::delta::AuditTableError::Table(
            crate::engine::delta::DeltaError::NotATable { .. },
        )) => None,
        Err(e) => return Err(e.into()),
    };
    let report = crate::audit::verify::verify(
        &table,
        index.as_ref(),
        config.audit.dir.as_deref(),
        &keys,
        range,
    )
    .await?;
    let total: usize = report.records.values().sum();
    match report.first_bad {
        None => {
            println!(
                "audit log whole: {total} records in {} chain(s), {} signed checkpoint(s) verified",
                report.records.len(),
                report.checkpoints
            );
            for (instance, n) in &report.records {
                println!("  {instance}: {n} records");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(bad) => {
            println!("audit log NOT whole: first bad record: {bad}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `lakeward audit index`: index every instance's shipped records the
/// patient index lacks, then compact every month of it.
pub(super) async fn audit_index(
    data_dir: &Path,
    config: Option<&Path>,
    compact_min_files: usize,
) -> anyhow::Result<ExitCode> {
    use crate::audit::index;
    let (_, location) = audit_config(data_dir, config)?;
    let log =
        crate::audit::delta::AuditTable::open_existing(&location, crate::audit::record::schema())
            .await?;
    let patient_index = index::open(&location).await?;
    let started = std::time::Instant::now();
    for (instance, s) in index::catch_up(&log, &patient_index).await? {
        println!(
            "instance {instance}: indexed {} records as {} rows in {} commits",
            s.records, s.rows, s.commits
        );
    }
    let indexed = started.elapsed();
    let started = std::time::Instant::now();
    let (months, removed, added) = index::compact_all(&patient_index, compact_min_files).await?;
    println!(
        "patient index up to date in {:.1} s; {months} months compacted ({removed} files into {added}) in {:.1} s",
        indexed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Memory the export's sort of the audit records may use before it spills
/// to disk (`memory.spill_dir` of the configuration, or the system's
/// temporary folder).
const EXPORT_SORT_MEMORY: usize = 256 * 1024 * 1024;

/// Patients handed to [`fhir::audit_events`] at once: a statement over
/// millions of patients is written in slices of this many.
const PATIENT_CHUNK: usize = 4096;

/// Records per batch when the segment log joins the table's records.
const LOCAL_BATCH: usize = 8192;

/// `lakeward audit export --format fhir`: the audit as FHIR R4 AuditEvent
/// NDJSON (SPEC §9; what one outcome becomes: [`crate::audit::fhir`]).
///
/// Which records become events:
/// - every `completion` record: a statement that ran, with the patients it
///   returned or aggregated; it stands for its statement record, which is
///   not exported;
/// - every `statement` record that has no completion: refused or failed
///   before running (decision `denied` or `error`), answered without rows
///   (`SET`, `BEGIN`...), and prepared but never executed (reason
///   `prepared_not_executed`: its result columns were described to the
///   client, so it is an access worth accounting for; filter on the
///   `reason` detail to leave it out). A statement whose completion is
///   missing (the server stopped between the two) is exported on its own,
///   after the others;
/// - every `connect` record, allowed or refused (logins).
///
/// Records are read from the audit table and the local segment log (records
/// not yet shipped; a record in both counts once), sorted by time (a spilling
/// sort: the log may be larger than memory), and written as they come:
/// only the statements still waiting for their completion and one
/// statement's patient set are held at a time.
///
/// `--from`/`--to` select outcomes by the time (or chain sequence number)
/// of the record that stands for them: for a statement that ran, its
/// completion. Consecutive windows therefore export each outcome once.
/// `--patient` keeps only events about the given patients: outcomes that
/// touched none of them, and every outcome without patients (logins,
/// refusals), are left out.
pub(super) async fn audit_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    match args.format {
        ExportFormat::Fhir => {}
    }
    let config = match &args.config {
        Some(f) => Config::load(f)?,
        None => Config::demo(&args.data_dir, "127.0.0.1:6432".parse()?),
    };
    let mut range = Range::default();
    if let Some(f) = &args.from {
        (range.from_seq, range.from_ts) = parse_bound(f, false)?;
    }
    if let Some(t) = &args.to {
        (range.to_seq, range.to_ts) = parse_bound(t, true)?;
    }
    let address = args.server_address.clone().unwrap_or_else(|| {
        default_server_address(args.config.is_some().then_some(config.server.listen))
    });
    let location = config
        .audit
        .table_location(&config.data)
        .ok_or_else(|| anyhow::anyhow!("no audit table configured"))?;
    let table =
        crate::audit::delta::AuditTable::open_existing(&location, crate::audit::record::schema())
            .await?;
    let local = match config.audit.dir.clone() {
        Some(dir) => tokio::task::spawn_blocking(move || crate::audit::wal::read_after(&dir, 0))
            .await
            .context("reading the audit segment log")??,
        None => Vec::new(),
    };
    let records = sorted_records(&table, local, &range, config.memory.spill_dir.as_deref()).await?;
    let wanted: Option<RoaringTreemap> =
        (!args.patients.is_empty()).then(|| args.patients.iter().map(|&p| p as u64).collect());
    let server = fhir::Server {
        instance: &config.audit.instance,
        site: None,
        address: Some(&address),
    };
    let written = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let result = export(records, &range, wanted, &server, io::BufWriter::new(file)).await;
            if result.is_err() {
                // A partial export must not pass for a whole one.
                let _ = std::fs::remove_file(path);
            }
            result?
        }
        None => {
            export(
                records,
                &range,
                wanted,
                &server,
                io::BufWriter::new(io::stdout()),
            )
            .await?
        }
    };
    eprintln!("{written} AuditEvent resources written");
    Ok(ExitCode::SUCCESS)
}

/// The host clients reach lakeward at: the configured listen address, or
/// `localhost` when it listens on every address (or nothing is configured).
fn default_server_address(listen: Option<SocketAddr>) -> String {
    match listen {
        Some(a) if !a.ip().is_unspecified() => a.ip().to_string(),
        _ => "localhost".to_owned(),
    }
}

/// Whether `r` is in `range` (both ends inclusive).
fn in_range(range: &Range, r: &RecordBody) -> bool {
    range.from_seq.is_none_or(|f| r.seq >= f)
        && range.to_seq.is_none_or(|t| r.seq <= t)
        && range.from_ts.is_none_or(|f| r.ts >= f)
        && range.to_ts.is_none_or(|t| r.ts <= t)
}

/// A statement record written before its rows: a completion record follows
/// it. Other statement records (refused, failed before running, answered
/// without rows, never executed) carry their outcome themselves.
fn awaits_completion(r: &RecordBody) -> bool {
    r.event == event::STATEMENT
        && r.decision == decision::ALLOWED
        && r.duration_ms.is_none()
        && r.reason.is_none()
}

/// The records of the table and of the segment log, sorted by time,
/// instance and sequence number. Records before the range cannot matter;
/// after it only completions do (they close statements of the range).
async fn sorted_records(
    table: &crate::audit::delta::AuditTable,
    local: Vec<AuditRecord>,
    range: &Range,
    spill_dir: Option<&Path>,
) -> anyhow::Result<SendableRecordBatchStream> {
    let schema = crate::audit::record::schema();
    let scanned = table.scan().await?;
    let local = local
        .chunks(LOCAL_BATCH)
        .map(crate::audit::record::to_batch)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the audit segment log")?;
    let local: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
        schema.clone(),
        futures::stream::iter(local.into_iter().map(Ok)),
    ));
    let partitions: Vec<Arc<dyn PartitionStream>> = vec![
        Arc::new(OneShot::new(schema.clone(), scanned)),
        Arc::new(OneShot::new(schema.clone(), local)),
    ];
    let mut runtime = RuntimeEnvBuilder::new().with_memory_limit(EXPORT_SORT_MEMORY, 1.0);
    if let Some(dir) = spill_dir {
        runtime = runtime.with_temp_file_path(dir);
    }
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime.build_arc()?);
    ctx.register_table(
        "access_log",
        Arc::new(StreamingTable::try_new(schema, partitions)?),
    )?;
    let mut filters = Vec::new();
    let completion = event::COMPLETION;
    if let Some(s) = range.from_seq {
        filters.push(format!("\"seq\" >= {s}"));
    }
    if let Some(t) = range.from_ts {
        filters.push(format!("CAST(\"ts\" AS BIGINT) >= {t}"));
    }
    if let Some(s) = range.to_seq {
        filters.push(format!("(\"seq\" <= {s} OR \"event\" = '{completion}')"));
    }
    if let Some(t) = range.to_ts {
        filters.push(format!(
            "(CAST(\"ts\" AS BIGINT) <= {t} OR \"event\" = '{completion}')"
        ));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let sql = format!("SELECT * FROM access_log{filter} ORDER BY \"ts\", \"instance\", \"seq\"");
    Ok(ctx.sql(&sql).await?.execute_stream().await?)
}

/// A stream read once, as a partition of a [`StreamingTable`].
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl OneShot {
    fn new(schema: SchemaRef, stream: SendableRecordBatchStream) -> OneShot {
        OneShot {
            schema,
            stream: Mutex::new(Some(stream)),
        }
    }
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit records")
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().map(|mut s| s.take()).ok().flatten();
        taken.unwrap_or_else(|| {
            Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Internal(
                        "the audit records were read twice".into(),
                    ))
                }),
            ))
        })
    }
}

/// Pair statements with their completions and write the events of every
/// outcome in `range`; returns the number of events written.
async fn export<W: Write>(
    mut records: SendableRecordBatchStream,
    range: &Range,
    wanted: Option<RoaringTreemap>,
    server: &fhir::Server<'_>,
    out: W,
) -> anyhow::Result<u64> {
    let mut writer = EventWriter::new(out, server, wanted);
    // Statements written before their rows, waiting for their completion.
    let mut pending: HashMap<String, RecordBody> = HashMap::new();
    // Statements whose completion came first (a clock stepped back).
    let mut completed: HashSet<String> = HashSet::new();
    let mut last: Option<(String, i64)> = None;
    while let Some(batch) = records.next().await {
        let batch = batch.context("reading the audit table")?;
        let batch = crate::audit::record::from_batch(&batch)
            .map_err(|e| anyhow::anyhow!("decoding the audit table: {e}"))?;
        for record in batch {
            let r = record.body;
            // A record both in the table and in the segment log.
            if last
                .as_ref()
                .is_some_and(|(i, s)| *i == r.instance && *s == r.seq)
            {
                continue;
            }
            last = Some((r.instance.clone(), r.seq));
            let in_range = in_range(range, &r);
            if awaits_completion(&r) {
                if in_range && !completed.remove(&r.event_id) {
                    pending.insert(r.event_id.clone(), r);
                }
                continue;
            }
            if r.event == event::COMPLETION
                && let Some(parent) = &r.parent_event_id
                && pending.remove(parent).is_none()
                && in_range
            {
                completed.insert(parent.clone());
            }
            if in_range {
                writer.outcome(&r)?;
            }
        }
    }
    // Statements that never completed, in order.
    let mut orphans: Vec<RecordBody> = pending.into_values().collect();
    orphans.sort_by(|a, b| (a.ts, &a.instance, a.seq).cmp(&(b.ts, &b.instance, b.seq)));
    for r in &orphans {
        writer.outcome(r)?;
    }
    writer.finish()
}

/// Writes the events of one outcome at a time.
struct EventWriter<'s, 'a, W: Write> {
    out: W,
    server: &'s fhir::Server<'a>,
    /// `--patient`: the patients to keep, with their smallest and largest id.
    wanted: Option<(RoaringTreemap, (i64, i64))>,
    written: u64,
}

impl<'s, 'a, W: Write> EventWriter<'s, 'a, W> {
    fn new(out: W, server: &'s fhir::Server<'a>, wanted: Option<RoaringTreemap>) -> Self {
        let wanted = wanted.and_then(|w| {
            let bounds = crate::audit::patients::bounds(&w)?;
            Some((w, bounds))
        });
        EventWriter {
            out,
            server,
            wanted,
            written: 0,
        }
    }

    /// The events of one outcome (none when `--patient` leaves it out).
    fn outcome(&mut self, r: &RecordBody) -> anyhow::Result<()> {
        let Some((returned, aggregated)) = self.patients_of(r)? else {
            return Ok(());
        };
        if returned.is_empty() && aggregated.is_empty() {
            return self.write(r, &[], &[]);
        }
        // Both sets ascending as unsigned ids (negative ids last): merge
        // them into slices that are each ascending as signed ids.
        let mut ret = Vec::new();
        let mut agg = Vec::new();
        let mut r_ids = returned.iter().peekable();
        let mut a_ids = aggregated.iter().peekable();
        // The slice being filled holds non-negative ids.
        let mut non_negative = false;
        loop {
            let (id, is_returned) = match (r_ids.peek(), a_ids.peek()) {
                (None, None) => break,
                (Some(&x), Some(&y)) if y < x => (y, false),
                (Some(&x), _) => (x, true),
                (None, Some(&y)) => (y, false),
            };
            if is_returned {
                r_ids.next();
            } else {
                a_ids.next();
            }
            let id = id as i64;
            let sign_changes = id < 0 && non_negative;
            if ret.len() + agg.len() >= PATIENT_CHUNK || sign_changes {
                self.write(r, &ret, &agg)?;
                ret.clear();
                agg.clear();
            }
            non_negative = id >= 0;
            if is_returned {
                ret.push(id);
            } else {
                agg.push(id);
            }
        }
        if !ret.is_empty() || !agg.is_empty() {
            self.write(r, &ret, &agg)?;
        }
        Ok(())
    }

    /// The patients `r` returned and only aggregated (disjoint), narrowed
    /// to `--patient`; `None` when `--patient` leaves the outcome out.
    fn patients_of(
        &self,
        r: &RecordBody,
    ) -> anyhow::Result<Option<(RoaringTreemap, RoaringTreemap)>> {
        if let Some((_, (lo, hi))) = &self.wanted {
            if r.patients_returned.is_none() && r.patients_aggregated.is_none() {
                return Ok(None);
            }
            if let (Some(min), Some(max)) = (r.patient_id_min, r.patient_id_max)
                && (max < *lo || min > *hi)
            {
                return Ok(None);
            }
        }
        let decode = |text: &Option<String>, field: &str| match text {
            None => Ok(RoaringTreemap::new()),
            Some(t) => crate::audit::patients::decode(t).map_err(|e| {
                anyhow::anyhow!(
                    "audit record {}/{} ({}): {field}: {e}",
                    r.instance,
                    r.seq,
                    r.event_id
                )
            }),
        };
        let mut returned = decode(&r.patients_returned, "patients_returned")?;
        let mut aggregated = decode(&r.patients_aggregated, "patients_aggregated")?;
        // A patient both returned and aggregated was returned.
        aggregated -= &returned;
        if let Some((wanted, _)) = &self.wanted {
            returned &= wanted;
            aggregated &= wanted;
            if returned.is_empty() && aggregated.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some((returned, aggregated)))
    }

    fn write(
        &mut self,
        r: &RecordBody,
        returned: &[i64],
        aggregated: &[i64],
    ) -> anyhow::Result<()> {
        let input = fhir::EventInput {
            record: r,
            returned,
            aggregated,
        };
        self.written += fhir::write_ndjson(
            NoFlush(&mut self.out),
            fhir::audit_events(&input, self.server),
        )
        .context("writing the export")?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<u64> {
        self.out.flush().context("writing the export")?;
        Ok(self.written)
    }
}

/// A writer whose `flush` does nothing: [`fhir::write_ndjson`] flushes
/// after each outcome, the export only at its end.
struct NoFlush<W: Write>(W);

impl<W: Write> Write for NoFlush<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::GENESIS;
    use crate::audit::delta::AuditTable;
    use crate::audit::patients;
    use crate::audit::record::{schema, to_batch};
    use serde_json::Value;

    fn record(seq: i64, ts: i64, kind: &str, id: &str) -> RecordBody {
        RecordBody {
            instance: "t".into(),
            seq,
            event_id: id.into(),
            ts,
            event: kind.into(),
            session_id: Some("s1".into()),
            user: "alice".into(),
            roles: vec!["analyst".into()],
            purpose: Some("operations".into()),
            client_addr: Some("127.0.0.1".into()),
            decision: decision::ALLOWED.into(),
            ..Default::default()
        }
    }

    fn statement(seq: i64, ts: i64, id: &str) -> RecordBody {
        RecordBody {
            statement_kind: Some("SELECT".into()),
            query_fingerprint: Some("SELECT a FROM t WHERE b = ?".into()),
            ..record(seq, ts, event::STATEMENT, id)
        }
    }

    fn completion(seq: i64, ts: i64, id: &str, parent: &str) -> RecordBody {
        RecordBody {
            parent_event_id: Some(parent.into()),
            rows_returned: Some(1),
            duration_ms: Some(1.5),
            ..statement(seq, ts, id)
        }
        .with_event(event::COMPLETION)
    }

    impl RecordBody {
        fn with_event(mut self, kind: &str) -> RecordBody {
            self.event = kind.into();
            self
        }

        fn with_patients(mut self, returned: &[i64], aggregated: &[i64]) -> RecordBody {
            let set = |ids: &[i64]| ids.iter().map(|&p| p as u64).collect::<RoaringTreemap>();
            self.patients_returned = patients::encode(&set(returned));
            self.patients_aggregated = patients::encode(&set(aggregated));
            let all = set(returned) | set(aggregated);
            (self.patient_id_min, self.patient_id_max) = patients::bounds(&all).unzip();
            self
        }
    }

    /// The audit of one instance: S1 completed by C1, S2 refused, S3
    /// never completed, S4 completed by C4 over thousands of patients, S5
    /// prepared and never executed.
    fn log() -> Vec<AuditRecord> {
        let many: Vec<i64> = (1..=5000).chain([-3]).collect();
        [
            record(1, 100, event::CONNECT, "login"),
            statement(2, 200, "S1"),
            RecordBody {
                decision: decision::DENIED.into(),
                sqlstate: Some("42501".into()),
                duration_ms: Some(0.5),
                ..statement(3, 210, "S2")
            },
            completion(4, 300, "C1", "S1").with_patients(&[5, 7], &[7, 9]),
            statement(5, 400, "S3"),
            statement(6, 500, "S4"),
            completion(7, 600, "C4", "S4").with_patients(&[], &many),
            RecordBody {
                reason: Some("prepared_not_executed".into()),
                rows_returned: Some(0),
                duration_ms: Some(0.1),
                ..statement(8, 700, "S5")
            },
        ]
        .into_iter()
        .map(|b| b.seal(GENESIS))
        .collect()
    }

    /// The events of an export of `log()` (records 1-6 in the table,
    /// 5-8 only in the segment log): (id, patient, disclosure) per event.
    async fn run(range: Range, wanted: &[i64]) -> Vec<(String, Option<i64>, Option<String>)> {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("access_log").display().to_string();
        let table = AuditTable::open_or_create(&location, schema())
            .await
            .unwrap();
        let log = log();
        table
            .append(vec![to_batch(&log[..6]).unwrap()], "t", 1)
            .await
            .unwrap();
        let records = sorted_records(&table, log[4..].to_vec(), &range, Some(dir.path()))
            .await
            .unwrap();
        let server = fhir::Server {
            instance: "t",
            site: None,
            address: Some("localhost"),
        };
        let wanted = (!wanted.is_empty()).then(|| wanted.iter().map(|&p| p as u64).collect());
        let mut out = Vec::new();
        let n = export(records, &range, wanted, &server, &mut out)
            .await
            .unwrap();
        let events: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(n, events.len() as u64);
        events
            .iter()
            .map(|e| {
                let p = e["entity"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["role"]["code"] == "1");
                (
                    e["id"].as_str().unwrap().to_owned(),
                    p.map(|p| {
                        p["what"]["reference"].as_str().unwrap()[8..]
                            .parse()
                            .unwrap()
                    }),
                    p.map(|p| p["detail"][0]["valueString"].as_str().unwrap().to_owned()),
                )
            })
            .collect()
    }

    fn ids(events: &[(String, Option<i64>, Option<String>)]) -> Vec<&str> {
        events.iter().map(|(id, _, _)| id.as_str()).collect()
    }

    #[tokio::test]
    async fn outcomes_are_paired_sorted_and_counted_once() {
        let events = run(Range::default(), &[]).await;
        let mut want = vec![
            "login".to_owned(),
            "S2".to_owned(),
            "C1-p5".to_owned(),
            "C1-p7".to_owned(),
            "C1-p9".to_owned(),
        ];
        want.extend((1..=5000).chain([-3]).map(|p| format!("C4-p{p}")));
        // The never-executed statement in order; the statement without a
        // completion last.
        want.extend(["S5".to_owned(), "S3".to_owned()]);
        assert_eq!(ids(&events), want);
        let classes: Vec<(Option<i64>, Option<&str>)> = events[2..5]
            .iter()
            .map(|(_, p, c)| (*p, c.as_deref()))
            .collect();
        assert_eq!(
            classes,
            [
                (Some(5), Some("returned")),
                (Some(7), Some("returned")),
                (Some(9), Some("aggregated"))
            ]
        );
        assert!(
            events[5..5005]
                .iter()
                .all(|(_, _, c)| c.as_deref() == Some("aggregated"))
        );
    }

    #[tokio::test]
    async fn windows_split_outcomes_by_their_completion() {
        let all = run(Range::default(), &[]).await;
        // S4 starts in the first window and completes in the second.
        let first = run(
            Range {
                to_ts: Some(550),
                ..Default::default()
            },
            &[],
        )
        .await;
        assert_eq!(
            ids(&first),
            ["login", "S2", "C1-p5", "C1-p7", "C1-p9", "S3"]
        );
        let second = run(
            Range {
                from_ts: Some(551),
                ..Default::default()
            },
            &[],
        )
        .await;
        let mut both: Vec<&str> = ids(&first);
        both.extend(ids(&second));
        let mut every = ids(&all);
        both.sort_unstable();
        every.sort_unstable();
        assert_eq!(both, every, "each outcome in exactly one window");
        // By sequence number: C1 is record 4.
        let by_seq = run(
            Range {
                from_seq: Some(4),
                to_seq: Some(4),
                ..Default::default()
            },
            &[],
        )
        .await;
        assert_eq!(ids(&by_seq), ["C1-p5", "C1-p7", "C1-p9"]);
    }

    #[tokio::test]
    async fn patients_keep_only_their_events() {
        let events = run(Range::default(), &[7, -3, 123_456]).await;
        assert_eq!(
            events,
            [
                ("C1-p7".to_owned(), Some(7), Some("returned".to_owned())),
                ("C4-p7".to_owned(), Some(7), Some("aggregated".to_owned())),
                ("C4-p-3".to_owned(), Some(-3), Some("aggregated".to_owned())),
            ]
        );
        // Outside every statement's bounds: nothing, not even logins.
        assert!(run(Range::default(), &[123_456]).await.is_empty());
        assert_eq!(ids(&run(Range::default(), &[9]).await), ["C1-p9", "C4-p9"]);
    }

    #[test]
    fn the_server_address_defaults_to_the_listen_host() {
        assert_eq!(default_server_address(None), "localhost");
        assert_eq!(
            default_server_address(Some("0.0.0.0:6432".parse().unwrap())),
            "localhost"
        );
        assert_eq!(
            default_server_address(Some("10.0.0.5:6432".parse().unwrap())),
            "10.0.0.5"
        );
    }
}
