//! `lakeward audit verify`: re-read the audit table and the segment log,
//! recompute every chain, check every signed checkpoint, and name the first
//! record that is not what was written.
//!
//! What is detected, per instance chain:
//! - a modified record: its hash no longer matches its content;
//! - a deleted record: a gap in `seq`, or the next record's `prev_hash` does
//!   not match;
//! - an inserted or reordered record: a duplicate `seq`, or a `prev_hash`
//!   that does not link to the record before it;
//! - a truncated tail: a signed checkpoint names a record (seq and hash)
//!   that is missing or different;
//! - a forged checkpoint: its Ed25519 signature does not verify;
//! - a disagreement between the segment log and the table for one record;
//! - a patient index (`super::index`) that disagrees with the records: an
//!   index row removed, added or altered (recomputed from every indexed
//!   completion record's patient sets).

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;

use super::chain::{Checkpoint, CheckpointLog, GENESIS, VerifyingKey};
use super::delta::AuditTable;
use super::record::{AuditRecord, from_batch};
use super::{AuditError, checkpoint_path, wal};

/// A range of records to check: by sequence number or by time (UTC
/// microseconds); open ends are unbounded.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Range {
    pub from_seq: Option<i64>,
    pub to_seq: Option<i64>,
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
}

impl Range {
    fn contains(&self, r: &AuditRecord) -> bool {
        let b = &r.body;
        self.from_seq.is_none_or(|f| b.seq >= f)
            && self.to_seq.is_none_or(|t| b.seq <= t)
            && self.from_ts.is_none_or(|f| b.ts >= f)
            && self.to_ts.is_none_or(|t| b.ts <= t)
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    pub instance: String,
    pub seq: i64,
    pub event_id: Option<String>,
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "instance {} record {}", self.instance, self.seq)?;
        if let Some(e) = &self.event_id {
            write!(f, " (event_id {e})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What verification saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Records checked per instance.
    pub records: BTreeMap<String, usize>,
    pub checkpoints: usize,
    /// The first problem, if any: the log is whole only when `None`.
    pub first_bad: Option<Finding>,
}

/// Every record of the table, by instance and seq. Records present twice
/// under one seq are kept apart (`dupes`).
async fn table_records(
    table: &AuditTable,
) -> Result<
    (
        BTreeMap<String, BTreeMap<i64, AuditRecord>>,
        Vec<AuditRecord>,
    ),
    AuditError,
> {
    let mut stream = table.scan().await?;
    let mut out: BTreeMap<String, BTreeMap<i64, AuditRecord>> = BTreeMap::new();
    let mut dupes = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch =
            batch.map_err(|e| AuditError::Other(format!("reading the audit table: {e}")))?;
        let records = from_batch(&batch)
            .map_err(|e| AuditError::Other(format!("decoding the audit table: {e}")))?;
        for r in records {
            let chain = out.entry(r.body.instance.clone()).or_default();
            if let Some(prev) = chain.insert(r.body.seq, r) {
                dupes.push(prev);
            }
        }
    }
    Ok((out, dupes))
}

/// Compares the patient index with the rows the records imply, for every
/// record the index claims to cover: seq up to the index's application
/// transaction version of the record's instance, read before the index
/// itself, and up to the last record of the chain as read. Lakeward
/// instances may be shipping while this runs: what they index after the
/// records were read is not compared.
async fn check_index(
    index: &AuditTable,
    chains: &BTreeMap<String, BTreeMap<i64, AuditRecord>>,
    range: Range,
    note: &mut impl FnMut(Finding),
) -> Result<(), AuditError> {
    use super::index::{RowsDigest, binary_at, digest_of_record, text_at};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let mut covered: std::collections::HashMap<&str, i64> = Default::default();
    for (instance, chain) in chains {
        let committed = index
            .committed_version(&super::app_id(instance))
            .await?
            .unwrap_or(0);
        let last = chain.keys().next_back().copied().unwrap_or(0);
        covered.insert(instance.as_str(), committed.min(last));
    }
    let mut found: std::collections::HashMap<(String, i64), RowsDigest> = Default::default();
    let mut stream = index.scan().await?;
    while let Some(batch) = stream.next().await {
        let batch =
            batch.map_err(|e| AuditError::Other(format!("reading the patient index: {e}")))?;
        let (Some(chunk), Some(returned), Some(seq)) = (
            batch.column(0).as_primitive_opt::<Int64Type>(),
            batch.column(1).as_boolean_opt(),
            batch.column(5).as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(AuditError::Other(
                "the patient index has unexpected columns".into(),
            ));
        };
        for row in 0..batch.num_rows() {
            let instance = text_at(batch.column(4).as_ref(), row).unwrap_or_default();
            if covered.get(instance).is_none_or(|c| seq.value(row) > *c) {
                continue;
            }
            let members = binary_at(batch.column(2).as_ref(), row).unwrap_or_default();
            found
                .entry((instance.to_owned(), seq.value(row)))
                .or_default()
                .add(chunk.value(row), returned.value(row), members);
        }
    }
    for (instance, chain) in chains {
        let upto = covered.get(instance.as_str()).copied().unwrap_or(0);
        for (seq, r) in chain.range(..=upto) {
            let have = found.remove(&(instance.clone(), *seq)).unwrap_or_default();
            if !range.contains(r) {
                continue;
            }
            // A set that does not decode fails its own hash check.
            let want = digest_of_record(r).unwrap_or_default();
            if have != want {
                note(Finding {
                    instance: instance.clone(),
                    seq: *seq,
                    event_id: Some(r.body.event_id.clone()),
                    problem: format!(
                        "the patient index disagrees with this record's patient sets \
                         ({} index rows, {} expected: rows removed, added or altered)",
                        have.rows(),
                        want.rows()
                    ),
                });
            }
        }
    }
    // Index rows naming no record the index covers.
    for ((instance, seq), d) in found {
        let in_range = chains
            .get(&instance)
            .and_then(|c| c.get(&seq))
            .is_none_or(|r| range.contains(r));
        if in_range && d.rows() > 0 {
            note(Finding {
                instance,
                seq,
                event_id: None,
                problem: format!(
                    "the patient index has {} rows for this record, which names no such patients \
                     (rows added)",
                    d.rows()
                ),
            });
        }
    }
    Ok(())
}

/// The hash of record `seq` of `instance` in the table, if present.
pub(crate) async fn hash_at(
    table: &AuditTable,
    instance: &str,
    seq: i64,
) -> Result<Option<String>, AuditError> {
    let (records, _) = table_records(table).await?;
    Ok(records
        .get(instance)
        .and_then(|c| c.get(&seq))
        .map(|r| r.hash.clone()))
}

/// Verify the table (and, when given, the local segment log and
/// checkpoints of `dir`). A checkpoint is genuine when one of `keys` signed
/// it: during a key rotation the old and the new public key are both given.
pub(crate) async fn verify(
    table: &AuditTable,
    index: Option<&AuditTable>,
    dir: Option<&Path>,
    keys: &[VerifyingKey],
    range: Range,
) -> Result<Report, AuditError> {
    let (mut chains, dupes) = table_records(table).await?;
    let mut report = Report::default();
    let mut first_bad: Option<Finding> = None;
    let mut note = |f: Finding| {
        // The earliest problem (by instance, then seq) is the one to name.
        if first_bad
            .as_ref()
            .is_none_or(|b| (f.instance.as_str(), f.seq) < (b.instance.as_str(), b.seq))
        {
            first_bad = Some(f);
        }
    };
    for d in dupes {
        note(Finding {
            instance: d.body.instance.clone(),
            seq: d.body.seq,
            event_id: Some(d.body.event_id.clone()),
            problem: "two records carry this sequence number (insertion)".into(),
        });
    }

    // Records not yet shipped live only in the segment log; records in both
    // must be identical.
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    if let Some(dir) = dir {
        let local = {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || wal::read_after(&dir, 0))
                .await
                .map_err(|e| AuditError::Other(e.to_string()))??
        };
        for r in local {
            let chain = chains.entry(r.body.instance.clone()).or_default();
            match chain.get(&r.body.seq) {
                Some(t) if *t != r => note(Finding {
                    instance: r.body.instance.clone(),
                    seq: r.body.seq,
                    event_id: Some(r.body.event_id.clone()),
                    problem: "the audit table and the segment log disagree on this record".into(),
                }),
                Some(_) => {}
                None => {
                    chain.insert(r.body.seq, r);
                }
            }
        }
        let path = checkpoint_path(dir);
        if path.exists() {
            checkpoints = CheckpointLog::read_all(&path)?;
        }
    }

    for (instance, chain) in &chains {
        let mut count = 0usize;
        let mut expected_prev: Option<&str> = None;
        let mut expected_seq: Option<i64> = None;
        for (seq, r) in chain {
            let in_range = range.contains(r);
            // Outside the range, a record only anchors the next link.
            if in_range {
                count += 1;
                let finding = |problem: &str| Finding {
                    instance: instance.clone(),
                    seq: *seq,
                    event_id: Some(r.body.event_id.clone()),
                    problem: problem.to_owned(),
                };
                if !r.hash_is_valid() {
                    note(finding("content does not match its hash (modified)"));
                } else if let Some(e) = expected_seq
                    && *seq != e
                {
                    note(Finding {
                        instance: instance.clone(),
                        seq: e,
                        event_id: None,
                        problem: format!(
                            "missing: the chain jumps from record {} to record {seq} (deletion)",
                            e - 1
                        ),
                    });
                } else if expected_seq.is_none() && *seq == 1 && r.prev_hash != GENESIS {
                    note(finding(
                        "the first record does not start the chain (insertion)",
                    ));
                } else if expected_seq.is_none()
                    && *seq != 1
                    && range.from_seq.is_none()
                    && range.from_ts.is_none()
                {
                    note(Finding {
                        instance: instance.clone(),
                        seq: 1,
                        event_id: None,
                        problem: format!("missing: the chain starts at record {seq} (deletion)"),
                    });
                } else if let Some(p) = expected_prev
                    && r.prev_hash != p
                {
                    note(finding(
                        "does not link to the record before it (inserted, reordered or replaced)",
                    ));
                }
            }
            expected_prev = Some(&r.hash);
            expected_seq = Some(seq + 1);
        }
        report.records.insert(instance.clone(), count);
    }

    if let Some(index) = index {
        check_index(index, &chains, range, &mut note).await?;
    }

    for cp in &checkpoints {
        report.checkpoints += 1;
        let seq = cp.seq as i64;
        let bad = |problem: String| Finding {
            instance: cp.instance.clone(),
            seq,
            event_id: None,
            problem,
        };
        if !keys.iter().any(|k| cp.verify(k).is_ok()) {
            note(bad(
                "a checkpoint naming this record has an invalid signature (forged checkpoint)"
                    .into(),
            ));
            continue;
        }
        let in_range =
            range.from_seq.is_none_or(|f| seq >= f) && range.to_seq.is_none_or(|t| seq <= t);
        if !in_range {
            continue;
        }
        match chains.get(&cp.instance).and_then(|c| c.get(&seq)) {
            None => note(bad(format!(
                "missing, but a signed checkpoint at {} names it as the chain head (truncation)",
                chrono::DateTime::from_timestamp_micros(cp.ts_micros)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ))),
            Some(r) if r.hash != cp.head_hash => note(bad(
                "differs from the hash a signed checkpoint recorded for it (rewritten)".into(),
            )),
            Some(_) => {}
        }
    }
    report.first_bad = first_bad;
    Ok(report)
}
