//! Collectors read at scrape time: the engine's memory pool and spill space,
//! and the version and snapshot age of each served Delta table.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::gauge_value;

/// Tables with series at most; more are ignored (a bound on cardinality).
const MAX_TABLES: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TableState {
    pub(super) version: Option<u64>,
    pub(super) snapshot_at: Option<SystemTime>,
}

/// The engine's memory pool and spill space at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryGauges {
    /// The engine's budget (`[memory] limit_mb`).
    pub pool_limit_bytes: u64,
    /// What running statements reserve of it now.
    pub pool_reserved_bytes: u64,
    /// Bytes in spill files now.
    pub spill_bytes: u64,
    /// The spill space cap (`[memory] spill_max_mb`; 0: spilling is off).
    pub spill_limit_bytes: u64,
    /// Spill files open now.
    pub spill_files: u64,
}

type MemoryProbe = Box<dyn Fn() -> MemoryGauges + Send + Sync>;

#[derive(Default)]
pub(super) struct MemoryCollector {
    pub(super) probe: RwLock<Option<MemoryProbe>>,
}

impl std::fmt::Debug for MemoryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCollector").finish_non_exhaustive()
    }
}

/// Encodes `memory_pool_limit_bytes`, `memory_pool_reserved_bytes`,
/// `spill_disk_bytes`, `spill_disk_limit_bytes` and `spill_files_active`.
#[derive(Debug)]
pub(super) struct MemoryCollectorHandle(pub(super) Arc<MemoryCollector>);

impl Collector for MemoryCollectorHandle {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauges = {
            let probe = self.0.probe.read().unwrap_or_else(|p| p.into_inner());
            match probe.as_ref() {
                Some(probe) => probe(),
                None => return Ok(()),
            }
        };
        let bytes = Unit::Bytes;
        for (name, help, unit, value) in [
            (
                "memory_pool_limit",
                "The engine's memory budget ([memory] limit_mb)",
                Some(&bytes),
                gauges.pool_limit_bytes,
            ),
            (
                "memory_pool_reserved",
                "Memory running statements reserve of the engine's budget now",
                Some(&bytes),
                gauges.pool_reserved_bytes,
            ),
            (
                "spill_disk",
                "Bytes held in spill files now",
                Some(&bytes),
                gauges.spill_bytes,
            ),
            (
                "spill_disk_limit",
                "The spill space cap ([memory] spill_max_mb; 0: spilling is off)",
                Some(&bytes),
                gauges.spill_limit_bytes,
            ),
            (
                "spill_files_active",
                "Spill files open now",
                None,
                gauges.spill_files,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
            metric.encode_gauge(&gauge_value(value))?;
        }
        Ok(())
    }
}

/// Per served table: version and snapshot time, read at scrape time.
#[derive(Debug, Default)]
pub(super) struct TableStates {
    tables: RwLock<BTreeMap<String, TableState>>,
}

/// A table name as a label value: `[A-Za-z0-9_.-]`, anything else becomes
/// `_` (the text format does not escape label values), at most 128 chars.
fn table_label(name: &str) -> Option<String> {
    let label: String = name
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    (!label.is_empty()).then_some(label)
}

impl TableStates {
    pub(super) fn update(&self, table: &str, f: impl FnOnce(&mut TableState)) {
        let Some(label) = table_label(table) else {
            return;
        };
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if !tables.contains_key(&label) && tables.len() >= MAX_TABLES {
            return;
        }
        f(tables.entry(label).or_default());
    }

    pub(super) fn remove(&self, table: &str) {
        if let Some(label) = table_label(table) {
            self.tables
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&label);
        }
    }

    fn snapshot(&self) -> Vec<(String, TableState)> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Encodes `delta_table_version` and `delta_snapshot_age_seconds`.
#[derive(Debug)]
pub(super) struct TableCollector(pub(super) Arc<TableStates>);

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let tables = self.0.snapshot();
        let now = SystemTime::now();
        let versions: Vec<(&str, i64)> = tables
            .iter()
            .filter_map(|(t, s)| s.version.map(|v| (t.as_str(), gauge_value(v))))
            .collect();
        let ages: Vec<(&str, f64)> = tables
            .iter()
            .filter_map(|(t, s)| {
                s.snapshot_at.map(|at| {
                    let age = now
                        .duration_since(at)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    (t.as_str(), age)
                })
            })
            .collect();
        if !versions.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "delta_table_version",
                "Delta table version being served.",
                None,
                MetricType::Gauge,
            )?;
            for (table, version) in &versions {
                let labels = [("table", *table)];
                metric.encode_family(&labels)?.encode_gauge(version)?;
            }
        }
        if !ages.is_empty() {
            let seconds = Unit::Seconds;
            let mut metric = encoder.encode_descriptor(
                "delta_snapshot_age",
                "Age of the Delta snapshot being served.",
                Some(&seconds),
                MetricType::Gauge,
            )?;
            for (table, age) in &ages {
                let labels = [("table", *table)];
                metric.encode_family(&labels)?.encode_gauge(age)?;
            }
        }
        Ok(())
    }
}
