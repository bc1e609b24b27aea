//! Aggregates over a whole table: the patients they touched, answered from
//! the table's key indexes instead of a key column carried with every row.
//!
//! `SELECT site_id, count(*) FROM clinical.encounters GROUP BY 1` feeds
//! the aggregate every row the secured table admits. When the statement
//! puts no condition on the scan and the role's policy has no row filter
//! for the table (consent only), those rows' patients are exactly the
//! distinct patient keys of the data files the scan reads, less the
//! patients consent hides from this purpose (opt-out: the refused set;
//! opt-in: all but the granted set). Both halves are already in memory:
//! the point-lookup key indexes hold every file's keys
//! (`engine::lookup::TableLookup::distinct_keys`, computed once per file),
//! and the consent set the scan's consent probe reads
//! (`engine::consent::ConsentSet::members`, once per published set). So
//! such a statement pays a few set operations instead of a key per row.
//!
//! The files are read from the scan's own physical plan, so the answer is
//! the version the scan reads, not whatever is newest when it ends. When a
//! file has no key index yet (just written, over the index budget), or the
//! plan is not one Parquet scan, the scan carries the key column as any
//! other and a [`super::tap::TapExec`] records it below the aggregate;
//! otherwise a `TapExec` made by [`super::tap::TapExec::whole`] records the
//! set when the scan's rows have been read.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::object_store::path::Path as StorePath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use roaring::RoaringTreemap;

use crate::engine::consent::{ConsentSet, Decision};
use crate::engine::lookup::TableLookup;

/// What a secured table with no row filter knows to answer a whole scan.
#[derive(Debug, Clone)]
pub(crate) struct WholeSource {
    /// The stored patient key column (an integer column).
    pub column: String,
    /// The raw table's key indexes.
    pub lookup: Arc<TableLookup>,
    /// The consent set its consent check probes, if it has one.
    pub consent: Option<Arc<ConsentSet>>,
}

impl WholeSource {
    /// The patients of the rows `inner` emits, when `inner` is the
    /// internal plan of the secured table (with no statement condition
    /// pushed into it) and every data file it reads has its key index.
    pub(crate) fn patients(&self, inner: &Arc<dyn ExecutionPlan>) -> Option<RoaringTreemap> {
        let mut files = Vec::new();
        if !data_files(inner, &mut files) {
            return None;
        }
        // A file split in byte ranges is listed once per range.
        files.sort();
        files.dedup();
        let mut set = if files.is_empty() {
            RoaringTreemap::new()
        } else {
            self.lookup
                .distinct_keys(&self.column, &files)?
                .as_ref()
                .clone()
        };
        if let Some(consent) = &self.consent {
            let members = consent.members()?;
            match consent.decision() {
                Decision::Refused => set -= members.as_ref(),
                Decision::Granted => set &= members.as_ref(),
            }
        }
        Some(set)
    }
}

/// Appends the (path, size) of every data file `plan` reads; false when a
/// leaf is anything but a whole-file Parquet scan (or an empty one).
fn data_files(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(StorePath, u64)>) -> bool {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let Some(config) = source.data_source().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        if config.limit.is_some() {
            return false;
        }
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            // A row selection (a key probe) or partition values: not
            // the whole file as its index knows it.
            if !file.extensions.is_empty() || !file.partition_values.is_empty() {
                return false;
            }
            out.push((file.object_meta.location.clone(), file.object_meta.size));
        }
        return true;
    }
    let children = plan.children();
    if children.is_empty() {
        return plan.is::<EmptyExec>();
    }
    // Only operators that keep or drop whole rows by the policy's own
    // conditions: another scan (deltalake's, for a table with deletion
    // vectors) reads files differently from their key index.
    const ROW_OPERATORS: &[&str] = &[
        "FilterExec",
        "ProjectionExec",
        "CoalesceBatchesExec",
        "RepartitionExec",
        "CooperativeExec",
        "NoFloatPruning",
    ];
    ROW_OPERATORS.contains(&plan.name()) && children.into_iter().all(|c| data_files(c, out))
}
