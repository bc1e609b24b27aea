//! Statements pinned to one patient, whose completion is not waited for.
//!
//! A point lookup's plan names the only patient it can reach
//! (`engine::accounting::plan::pinned`); its statement record carries that
//! patient (`patient_id_min` = `patient_id_max`) and is durable before the
//! first row, like every statement record. Its completion record, which
//! classifies the patient (returned, aggregated, or not touched at all), is
//! queued for the next group commit instead of holding the statement's
//! end for one more `fdatasync`.
//!
//! If the server stops between the two, the statement record is all that
//! is left. The writer keeps the pinned statements whose completion it has
//! not written yet ([`OpenPinned`]) and, with every checkpoint, writes them
//! to `pinned-open.json` in the audit folder (atomically, fsync'd) with the
//! chain position they are open at. The segment log keeps every record
//! after that position. At the next start, [`recover`] reads both: a
//! pinned statement with no completion gets one, written before the
//! server serves, that accounts its patient as **returned** (the
//! conservative account: its rows may have reached the client), with
//! SQLSTATE `57P02` (crash shutdown) and a reason that says so. A
//! graceful shutdown leaves nothing to recover: the sessions end (and
//! their completions are written) before the writer stops.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{AuditRecord, RecordBody, decision, event};

/// The snapshot file's name in the audit folder.
const FILE: &str = "pinned-open.json";

/// The reason a recovered completion gives.
pub const RECOVERED: &str = "recovered at start-up: the server stopped before this statement's \
                             completion was written; the patient its plan was pinned to is \
                             accounted as returned";

/// The pinned statements whose completion is not written yet, as of one
/// chain position.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every record up to this sequence number is reflected in `open`.
    pub seq: i64,
    pub open: Vec<AuditRecord>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Whether `body` is a statement record pinned to one patient.
fn is_pinned_statement(body: &RecordBody) -> bool {
    body.event == event::STATEMENT
        && body.patient_id_min.is_some()
        && body.patient_id_min == body.patient_id_max
}

/// The writer's account of open pinned statements, by event id.
#[derive(Debug, Default)]
pub struct OpenPinned {
    open: BTreeMap<String, AuditRecord>,
}

impl OpenPinned {
    /// Follow one sealed record of the chain.
    pub fn follow(&mut self, r: &AuditRecord) {
        if is_pinned_statement(&r.body) {
            self.open.insert(r.body.event_id.clone(), r.clone());
        } else if let Some(parent) = &r.body.parent_event_id {
            self.open.remove(parent);
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Write the snapshot at chain position `seq`: a new file, fsync'd,
    /// renamed over the old one, and the folder fsync'd.
    pub fn save(&self, dir: &Path, seq: i64) -> std::io::Result<()> {
        let snapshot = Snapshot {
            seq,
            open: self.open.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path(dir))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// The snapshot in `dir`, if one was written.
pub fn load(dir: &Path) -> Result<Option<Snapshot>, String> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} cannot be read: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// The completions to write for pinned statements left open: those of
/// `snapshot` and those among `after` (every record after the snapshot's
/// position, in chain order) that no record of `after` completes.
pub fn recover(snapshot: Snapshot, after: &[AuditRecord]) -> Vec<RecordBody> {
    let mut open = OpenPinned::default();
    for r in snapshot.open {
        open.open.insert(r.body.event_id.clone(), r);
    }
    for r in after.iter().filter(|r| r.body.seq > snapshot.seq) {
        open.follow(r);
    }
    open.open
        .into_values()
        .map(|statement| recovered_completion(&statement.body))
        .collect()
}

/// The completion of an open pinned statement: its patient returned.
fn recovered_completion(statement: &RecordBody) -> RecordBody {
    let patient = statement.patient_id_min.unwrap_or_default();
    let mut set = roaring::RoaringTreemap::new();
    if let Ok(p) = u64::try_from(patient) {
        set.insert(p);
    }
    RecordBody {
        event_id: uuid::Uuid::new_v4().to_string(),
        ts: chrono::Utc::now().timestamp_micros(),
        event: event::COMPLETION.to_owned(),
        parent_event_id: Some(statement.event_id.clone()),
        session_id: statement.session_id.clone(),
        user: statement.user.clone(),
        roles: statement.roles.clone(),
        purpose: statement.purpose.clone(),
        break_glass: statement.break_glass.clone(),
        client_addr: statement.client_addr.clone(),
        application_name: statement.application_name.clone(),
        statement_kind: statement.statement_kind.clone(),
        query_fingerprint: statement.query_fingerprint.clone(),
        tables: statement.tables.clone(),
        columns: statement.columns.clone(),
        policy_version: statement.policy_version.clone(),
        decision: decision::ERROR.to_owned(),
        reason: Some(RECOVERED.to_owned()),
        sqlstate: Some("57P02".to_owned()),
        patients_returned: super::patients::encode(&set),
        patient_id_min: Some(patient),
        patient_id_max: Some(patient),
        ..RecordBody::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(body: RecordBody, seq: i64) -> AuditRecord {
        AuditRecord {
            body: RecordBody { seq, ..body },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn statement(id: &str, patient: Option<i64>) -> RecordBody {
        RecordBody {
            event_id: id.into(),
            event: event::STATEMENT.into(),
            user: "clinician".into(),
            patient_id_min: patient,
            patient_id_max: patient,
            ..RecordBody::default()
        }
    }

    fn completion_of(id: &str) -> RecordBody {
        RecordBody {
            event_id: format!("{id}-done"),
            event: event::COMPLETION.into(),
            parent_event_id: Some(id.into()),
            ..RecordBody::default()
        }
    }

    #[test]
    fn open_pinned_statements_get_a_completion_that_returns_their_patient() {
        // Open at the snapshot: "a" (completed after it) and "b" (never).
        let snapshot = Snapshot {
            seq: 10,
            open: vec![
                sealed(statement("a", Some(7)), 3),
                sealed(statement("b", Some(8)), 5),
            ],
        };
        let after = vec![
            sealed(completion_of("a"), 11),
            // Pinned after the snapshot, completed: nothing to do.
            sealed(statement("c", Some(9)), 12),
            sealed(completion_of("c"), 13),
            // Pinned after the snapshot, never completed.
            sealed(statement("d", Some(10)), 14),
            // Not pinned: never recovered (its completion was waited for).
            sealed(statement("e", None), 15),
        ];
        let mut recovered = recover(snapshot, &after);
        recovered.sort_by_key(|r| r.patient_id_min);
        let parents: Vec<_> = recovered
            .iter()
            .map(|r| r.parent_event_id.clone().unwrap_or_default())
            .collect();
        assert_eq!(parents, ["b", "d"]);
        let b = &recovered[0];
        assert_eq!(b.event, event::COMPLETION);
        assert_eq!(b.user, "clinician");
        assert_eq!(b.sqlstate.as_deref(), Some("57P02"));
        let returned = super::super::patients::decode(b.patients_returned.as_deref().unwrap_or(""))
            .expect("a set");
        assert_eq!(returned.iter().collect::<Vec<_>>(), [8]);
        assert!(b.patients_aggregated.is_none());
    }

    #[test]
    fn the_snapshot_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("dir");
        let mut open = OpenPinned::default();
        open.follow(&sealed(statement("a", Some(1)), 1));
        open.follow(&sealed(statement("b", Some(2)), 2));
        open.follow(&sealed(completion_of("a"), 3));
        assert_eq!(open.len(), 1);
        open.save(dir.path(), 3).expect("saved");
        let back = load(dir.path()).expect("read").expect("a snapshot");
        assert_eq!(back.seq, 3);
        assert_eq!(back.open.len(), 1);
        assert_eq!(back.open[0].body.event_id, "b");
        assert!(
            load(&dir.path().join("absent"))
                .expect("no error")
                .is_none()
        );
    }
}
