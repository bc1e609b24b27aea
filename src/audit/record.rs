//! One row of `audit.access_log` (SPEC §6), its canonical encoding for the
//! hash chain, and its Arrow schema.
//!
//! A record is written in two places with the same content: as one JSON line
//! in the local segment log (durable before disclosure) and as one row of the
//! Delta table. The hash covers [`RecordBody`] serialised as JSON with the
//! fields in the order declared here (`serde_json` keeps declaration order,
//! `ts` as integer microseconds since the Unix epoch, absent values as
//! `null`, lists as arrays), chained to `prev_hash` by
//! [`super::chain::chain_hash`].

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// What a record is about.
pub mod event {
    /// A connection attempt (allowed or not).
    pub const CONNECT: &str = "connect";
    /// A statement, written before any of its rows is sent.
    pub const STATEMENT: &str = "statement";
    /// How a statement ended: rows returned, duration, SQLSTATE. Linked to
    /// its statement record by `parent_event_id`.
    pub const COMPLETION: &str = "completion";
}

/// Decision values.
pub mod decision {
    pub const ALLOWED: &str = "allowed";
    pub const DENIED: &str = "denied";
    pub const ERROR: &str = "error";
}

/// Everything of a record except its place in the chain. Field order is
/// part of the hash: never reorder; add new fields at the end only with a
/// new chain version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RecordBody {
    /// The lakeward instance whose chain this record belongs to.
    pub instance: String,
    /// Position in the instance's chain, from 1, without gaps.
    pub seq: i64,
    pub event_id: String,
    /// UTC, microseconds since the Unix epoch.
    pub ts: i64,
    pub event: String,
    /// For a completion record: the statement record it completes.
    pub parent_event_id: Option<String>,
    pub session_id: Option<String>,
    /// The user (the token's subject; for a refused connection, the startup
    /// user name as sent).
    pub user: String,
    pub roles: Vec<String>,
    pub purpose: Option<String>,
    /// The break-glass justification, when break-glass was on.
    pub break_glass: Option<String>,
    pub client_addr: Option<String>,
    pub application_name: Option<String>,
    pub statement_kind: Option<String>,
    /// The statement with every literal replaced by `?`.
    pub query_fingerprint: Option<String>,
    /// `schema.table` read by the statement.
    pub tables: Vec<String>,
    /// `schema.table.column` read by the statement.
    pub columns: Vec<String>,
    pub policy_version: Option<String>,
    pub decision: String,
    /// Why a connection was refused (a reason class, never a token).
    pub reason: Option<String>,
    pub sqlstate: Option<String>,
    pub rows_returned: Option<i64>,
    pub duration_ms: Option<f64>,
    /// Completion records of statements that read patient-keyed rows: the
    /// patients a row of whose reached the client (SPEC §9), as a
    /// [`super::patients`] set. Absent (not `null`) in the canonical
    /// encoding when there is none, so records written before patient
    /// accounting keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patients_returned: Option<String>,
    /// The patients that only fed aggregates (or a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patients_aggregated: Option<String>,
    /// The smallest and largest patient id of both sets: `audit.patient_access`
    /// decodes only the sets whose bounds hold the patient asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id_min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id_max: Option<i64>,
    /// Completion records of statements under an aggregation policy
    /// (SPEC §8): how many groups fell below its minimum (merged into the
    /// remainder row, or dropped with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_groups: Option<i64>,
    /// Statement records of a server running a shadow policy (SPEC §10):
    /// its version, whether it would have let the statement run
    /// (`allowed` / `denied`), and what it would have treated differently
    /// among what the statement reads (`schema.table.column`,
    /// `schema.table (rows)`, `(aggregation)`). Absent without a shadow
    /// policy, so other records keep their encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_columns: Option<Vec<String>>,
}

/// A record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(flatten)]
    pub body: RecordBody,
    pub prev_hash: String,
    pub hash: String,
}

impl RecordBody {
    /// The canonical bytes the chain hash covers.
    pub fn canonical(&self) -> Vec<u8> {
        // Serialising a struct of strings, integers, floats and lists cannot
        // fail; an empty encoding would still chain (and verify) consistently.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Chain this body after `prev_hash`.
    pub fn seal(self, prev_hash: &str) -> AuditRecord {
        let hash = super::chain::chain_hash(prev_hash, &self.canonical());
        AuditRecord {
            body: self,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

impl AuditRecord {
    /// Does `hash` match the content and `prev_hash`?
    pub fn hash_is_valid(&self) -> bool {
        super::chain::chain_hash(&self.prev_hash, &self.body.canonical()) == self.hash
    }
}

/// The Arrow schema of `audit.access_log` (column order = [`AuditRecord`]
/// field order).
pub fn schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let list = |n: &str| {
        Field::new(
            n,
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            true,
        )
    };
    Arc::new(Schema::new(vec![
        text("instance"),
        Field::new("seq", DataType::Int64, true),
        text("event_id"),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        text("event"),
        text("parent_event_id"),
        text("session_id"),
        text("user"),
        list("roles"),
        text("purpose"),
        text("break_glass"),
        text("client_addr"),
        text("application_name"),
        text("statement_kind"),
        text("query_fingerprint"),
        list("tables"),
        list("columns"),
        text("policy_version"),
        text("decision"),
        text("reason"),
        text("sqlstate"),
        Field::new("rows_returned", DataType::Int64, true),
        Field::new("duration_ms", DataType::Float64, true),
        text("prev_hash"),
        text("hash"),
        // Added with patient accounting: an older table gains them when it
        // is opened (`delta::AuditTable::open_or_create`).
        text("patients_returned"),
        text("patients_aggregated"),
        Field::new("patient_id_min", DataType::Int64, true),
        Field::new("patient_id_max", DataType::Int64, true),
        // Added with aggregation policies.
        Field::new("suppressed_groups", DataType::Int64, true),
        // Added with shadow policies.
        text("shadow_policy_version"),
        text("shadow_decision"),
        list("shadow_columns"),
    ]))
}

/// Records as one Arrow batch of [`schema`].
pub fn to_batch(
    records: &[AuditRecord],
) -> Result<datafusion::arrow::record_batch::RecordBatch, datafusion::arrow::error::ArrowError> {
    let schema = schema();
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(records.len().max(1))
        .build_decoder()?;
    decoder.serialize(records)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| datafusion::arrow::record_batch::RecordBatch::new_empty(schema)))
}

/// Records back from an Arrow batch of [`schema`] (as read from Delta).
pub fn from_batch(
    batch: &datafusion::arrow::record_batch::RecordBatch,
) -> Result<Vec<AuditRecord>, String> {
    use datafusion::arrow::compute::cast;
    // Timestamps as integer microseconds, like the canonical encoding.
    let mut columns = batch.columns().to_vec();
    let ts = batch
        .schema()
        .index_of("ts")
        .map_err(|_| "column ts is missing".to_owned())?;
    columns[ts] = cast(&columns[ts], &DataType::Int64).map_err(|e| e.to_string())?;
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[ts] = Field::new("ts", DataType::Int64, true);
    let plain = datafusion::arrow::record_batch::RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
        writer.write(&plain).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: i64) -> RecordBody {
        RecordBody {
            instance: "test".into(),
            seq,
            event_id: format!("e{seq}"),
            ts: 1_700_000_000_123_456,
            event: event::STATEMENT.into(),
            parent_event_id: None,
            session_id: Some("s1".into()),
            user: "alice".into(),
            roles: vec!["clinician".into()],
            purpose: Some("treatment".into()),
            break_glass: None,
            client_addr: Some("127.0.0.1".into()),
            application_name: Some("psql".into()),
            statement_kind: Some("SELECT".into()),
            query_fingerprint: Some("SELECT * FROM t WHERE a = ?".into()),
            tables: vec!["clinical.patients".into()],
            columns: vec!["clinical.patients.a".into(), "clinical.patients.b".into()],
            policy_version: Some("abc".into()),
            decision: decision::ALLOWED.into(),
            reason: None,
            sqlstate: None,
            rows_returned: Some(3),
            duration_ms: Some(1.25),
            patients_returned: None,
            patients_aggregated: None,
            patient_id_min: None,
            patient_id_max: None,
            suppressed_groups: None,
            shadow_policy_version: None,
            shadow_decision: None,
            shadow_columns: None,
        }
    }

    #[test]
    fn records_without_patients_keep_their_canonical_encoding() {
        // Records written before patient accounting have no such keys: a
        // record without patients must encode exactly as they did.
        let text = String::from_utf8(sample(1).canonical()).unwrap();
        assert!(!text.contains("patients_"), "{text}");
        assert!(text.ends_with("\"duration_ms\":1.25}"), "{text}");
        let mut with = sample(1);
        with.patients_returned = Some("AQ==".into());
        let a = sample(1).seal(super::super::chain::GENESIS);
        let b = with.seal(super::super::chain::GENESIS);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn sealing_chains_and_detects_edits() {
        let a = sample(1).seal(super::super::chain::GENESIS);
        let b = sample(2).seal(&a.hash);
        assert!(a.hash_is_valid() && b.hash_is_valid());
        let mut edited = b.clone();
        edited.body.rows_returned = Some(4);
        assert!(!edited.hash_is_valid());
    }

    #[test]
    fn arrow_round_trip_keeps_every_field() {
        let mut records = vec![sample(1).seal(super::super::chain::GENESIS)];
        let mut second = sample(2);
        second.patients_returned = Some("AQ==".into());
        second.roles = vec![];
        second.purpose = None;
        second.duration_ms = None;
        records.push(second.seal(&records[0].hash));
        let mut shadowed = sample(3);
        shadowed.shadow_policy_version = Some("def".into());
        shadowed.shadow_decision = Some(decision::DENIED.into());
        shadowed.shadow_columns = Some(vec!["clinical.patients.zip".into()]);
        records.push(shadowed.seal(&records[1].hash));
        let mut same = sample(4);
        same.shadow_decision = Some(decision::ALLOWED.into());
        same.shadow_columns = Some(vec![]);
        records.push(same.seal(&records[2].hash));
        let batch = to_batch(&records).unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.schema(), schema());
        let back = from_batch(&batch).unwrap();
        assert_eq!(back, records);
        assert!(back.iter().all(AuditRecord::hash_is_valid));
    }
}
