//! The unusual-access watch: the patient sets of completed statements go to
//! the signal detector ([`super::signals`]) on a task of its own, off every
//! statement's path. Each signal becomes an audit record (`event =
//! 'signal'`, chained like every record, listed by `audit.unusual_access`)
//! and a Prometheus count (`lakeward_unusual_access_total{signal}`).
//!
//! The cross-site and shared-surname signals need each patient's site and
//! surname: a [`Directory`] read by lakeward itself from the configured
//! table ([`DirectorySource`], implemented by the engine), re-read every
//! `directory_refresh_secs`. Surnames are kept only as keyed hashes under a
//! key drawn at start-up and never written anywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roaring::RoaringTreemap;
use tokio::sync::mpsc;

use super::Auditor;
use super::record::RecordBody;
use super::signals::{
    Detector, PatientDirectory, SignalConfig, SignalKind, StatementAccess, SurnameKeyer,
};
use crate::metrics::{Metrics, UnusualAccess};

/// The record `event` of a signal.
pub const SIGNAL_EVENT: &str = "signal";
/// The record `decision` of a signal: the access was allowed, and flagged.
pub const FLAGGED: &str = "flagged";

/// One completed statement that touched patients.
#[derive(Debug)]
pub struct Observed {
    /// The statement record's event id.
    pub event_id: String,
    pub ts_micros: i64,
    pub user: String,
    pub roles: Vec<String>,
    pub purpose: Option<String>,
    pub break_glass: Option<String>,
    pub session_id: Option<String>,
    pub client_addr: Option<String>,
    pub user_site: Option<String>,
    pub family_name: Option<String>,
    pub returned: RoaringTreemap,
    pub aggregated: RoaringTreemap,
    /// The minimum group size of the aggregation policy the statement ran
    /// under, if any (SPEC §8).
    pub min_group_size: Option<u32>,
}

/// Patients' sites and keyed surnames, by patient id.
#[derive(Debug, Default)]
pub struct Directory {
    sites: Vec<String>,
    site_index: HashMap<String, u32>,
    /// Site index + 1 (0: none) and surname key, by patient id.
    patients: HashMap<i64, (u32, Option<u64>)>,
}

impl Directory {
    pub fn insert(&mut self, patient: i64, site: Option<&str>, surname_key: Option<u64>) {
        let site = match site {
            None => 0,
            Some(s) => match self.site_index.get(s) {
                Some(i) => *i + 1,
                None => {
                    let i = self.sites.len() as u32;
                    self.sites.push(s.to_owned());
                    self.site_index.insert(s.to_owned(), i);
                    i + 1
                }
            },
        };
        self.patients.insert(patient, (site, surname_key));
    }

    pub fn len(&self) -> usize {
        self.patients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }
}

impl PatientDirectory for Directory {
    fn site(&self, patient: i64) -> Option<&str> {
        let (site, _) = self.patients.get(&patient)?;
        let i = site.checked_sub(1)?;
        self.sites.get(i as usize).map(String::as_str)
    }

    fn surname_key(&self, patient: i64) -> Option<u64> {
        self.patients.get(&patient)?.1
    }
}

/// Where the directory comes from (the engine reads it from the lakehouse).
#[async_trait::async_trait]
pub trait DirectorySource: Send + Sync + 'static {
    /// Read the directory, keying surnames with `keyer`.
    async fn load(&self, keyer: &SurnameKeyer) -> Result<Directory, String>;
}

/// The handle the audit trail feeds.
pub(crate) struct Watch {
    tx: mpsc::Sender<Observed>,
}

/// Statements waiting for the detector before new ones are dropped (and
/// counted as not watched).
const QUEUE: usize = 4096;

impl Watch {
    /// Start the watch task.
    pub(crate) fn start(
        cfg: SignalConfig,
        auditor: Auditor,
        source: Option<Arc<dyn DirectorySource>>,
    ) -> Result<Watch, String> {
        let refresh = Duration::from_secs(cfg.directory_refresh_secs.max(10));
        let mut detector = Detector::new(cfg)?;
        let key: [u8; 32] = rand::random();
        let keyer = SurnameKeyer::new(&key);
        let (tx, mut rx) = mpsc::channel::<Observed>(QUEUE);
        tokio::spawn(async move {
            let mut directory = Directory::default();
            let mut tick = tokio::time::interval(refresh);
            loop {
                tokio::select! {
                    observed = rx.recv() => {
                        let Some(o) = observed else { break };
                        let user_key = o.family_name.as_deref().and_then(|n| keyer.key(n));
                        let access = StatementAccess {
                            event_id: &o.event_id,
                            user: &o.user,
                            ts_micros: o.ts_micros,
                            user_site: o.user_site.as_deref(),
                            user_surname_key: user_key,
                            break_glass: o.break_glass.is_some(),
                            returned: &o.returned,
                            aggregated: &o.aggregated,
                        };
                        let mut signals = detector.observe(&access, &directory);
                        if let Some(min) = o.min_group_size {
                            signals.extend(detector.observe_aggregate(&access, min));
                        }
                        for signal in signals {
                            Metrics::global().unusual_access(metric(signal.kind));
                            auditor.record_later(RecordBody {
                                event_id: uuid::Uuid::new_v4().to_string(),
                                ts: chrono::Utc::now().timestamp_micros(),
                                event: SIGNAL_EVENT.to_owned(),
                                parent_event_id: Some(o.event_id.clone()),
                                session_id: o.session_id.clone(),
                                user: o.user.clone(),
                                roles: o.roles.clone(),
                                purpose: o.purpose.clone(),
                                break_glass: o.break_glass.clone(),
                                client_addr: o.client_addr.clone(),
                                decision: FLAGGED.to_owned(),
                                reason: Some(format!("{}: {}", signal.kind.as_str(), signal.detail)),
                                rows_returned: Some(signal.patients as i64),
                                ..Default::default()
                            });
                        }
                    }
                    _ = tick.tick() => {
                        if let Some(source) = &source {
                            match source.load(&keyer).await {
                                Ok(d) => directory = d,
                                Err(e) => tracing::warn!(
                                    error = %e,
                                    "patient directory for the unusual-access signals not read; keeping the previous one"
                                ),
                            }
                        }
                    }
                }
            }
        });
        Ok(Watch { tx })
    }

    /// Hand a completed statement to the detector; never waits.
    pub(crate) fn observe(&self, o: Observed) {
        if self.tx.try_send(o).is_err() {
            tracing::warn!("unusual-access watch behind: a statement was not examined");
        }
    }
}

/// The metric label of a signal.
fn metric(kind: SignalKind) -> UnusualAccess {
    match kind {
        SignalKind::PatientVolume => UnusualAccess::PatientVolume,
        SignalKind::OffHours => UnusualAccess::OffHours,
        SignalKind::BreakGlassFrequency => UnusualAccess::BreakGlassFrequency,
        SignalKind::CrossSiteRead => UnusualAccess::CrossSiteRead,
        SignalKind::SharedSurname => UnusualAccess::SharedSurname,
        SignalKind::AggregateDifferencing => UnusualAccess::AggregateDifferencing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_answers_sites_and_surname_keys() {
        let mut d = Directory::default();
        d.insert(1, Some("S01"), Some(7));
        d.insert(2, Some("S02"), None);
        d.insert(3, None, Some(9));
        d.insert(4, Some("S01"), None);
        assert_eq!(d.site(1), Some("S01"));
        assert_eq!(d.site(4), Some("S01"));
        assert_eq!(d.site(2), Some("S02"));
        assert_eq!(d.site(3), None);
        assert_eq!(d.site(5), None);
        assert_eq!(d.surname_key(1), Some(7));
        assert_eq!(d.surname_key(2), None);
        assert_eq!(d.len(), 4);
    }
}
