//! Bounded samples of a served table's raw rows, for `lakeward policy check
//! --classify` (column classification): at most `rows_per_file` rows of
//! every data file of the newest version, read through the raw context
//! (no policy: the check asks what the data is, not what a role sees).
//! Batches go to the caller's detectors one at a time and are dropped; no
//! value is kept, printed or logged here.
//!
//! Per file: a column added by a later writer (schema drift) lives only in
//! the newest files, so a sample of the first rows of the table would miss
//! it. Tables read by lakeward's snapshot scan are sampled file by file;
//! tables read through deltalake's provider (partitioned, column mapping)
//! too, their scan split into one partition per file; a scan that cannot
//! be split so is sampled per partition, `rows_per_file` times
//! `FALLBACK_FILES_PER_PARTITION` rows from each.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;

use super::{Engine, TableName};

/// Rows taken from each scan partition of a table read through deltalake's
/// provider, in multiples of the per-file bound.
const FALLBACK_FILES_PER_PARTITION: usize = 8;

/// What a sample read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sampled {
    /// Data files (or scan partitions) read.
    pub files: usize,
    pub rows: u64,
    /// Whether every data file was sampled on its own.
    pub per_file: bool,
}

impl Engine {
    /// Feed `each` up to `rows_per_file` rows of every data file of
    /// `table` (every column, the table's schema).
    pub async fn sample_rows(
        &self,
        table: &TableName,
        rows_per_file: usize,
        each: &mut (dyn FnMut(&RecordBatch) + Send),
    ) -> Result<Sampled, String> {
        let provider = self
            .ctx
            .table_provider(datafusion::common::TableReference::partial(
                table.schema.as_str(),
                table.table.as_str(),
            ))
            .await
            .map_err(|_| format!("{table} is not served"))?;
        let latest = provider
            .downcast_ref::<super::delta::LatestDeltaProvider>()
            .ok_or_else(|| format!("{table} is not a Delta table"))?;
        let newest = latest
            .newest()
            .await
            .map_err(|_| format!("{table}: the newest version could not be loaded"))?;
        let state = self.ctx.state();
        let task = self.ctx.task_ctx();
        let unreadable = |_| format!("{table}: a data file could not be read");
        let mut sampled = Sampled::default();
        let plans: Vec<(Arc<dyn ExecutionPlan>, usize, usize)> =
            match newest.downcast_ref::<super::snapshot_scan::SnapshotScan>() {
                Some(scan) => {
                    sampled.per_file = true;
                    let files = scan.version_files();
                    let mut plans = Vec::with_capacity(files.files.len());
                    for i in 0..files.files.len() {
                        plans.push((
                            files.read_file(&state, i, None).await.map_err(unreadable)?,
                            0,
                            rows_per_file,
                        ));
                    }
                    plans
                }
                None => {
                    let plan = newest
                        .scan(&state, None, &[], None)
                        .await
                        .map_err(unreadable)?;
                    // One file per partition where the scan's operators
                    // keep its partitions: per file, as above.
                    let (plan, bound) = match one_file_per_partition(&plan) {
                        Some(split) => {
                            sampled.per_file = true;
                            (split, rows_per_file)
                        }
                        None => (
                            plan,
                            rows_per_file.saturating_mul(FALLBACK_FILES_PER_PARTITION),
                        ),
                    };
                    let partitions = plan.properties().output_partitioning().partition_count();
                    (0..partitions).map(|p| (plan.clone(), p, bound)).collect()
                }
            };
        for (plan, partition, bound) in plans {
            let mut stream = plan.execute(partition, task.clone()).map_err(unreadable)?;
            let mut taken = 0usize;
            while taken < bound {
                let Some(batch) = stream.next().await else {
                    break;
                };
                let batch = batch.map_err(unreadable)?;
                let batch = batch.slice(0, batch.num_rows().min(bound - taken));
                taken += batch.num_rows();
                each(&batch);
            }
            sampled.files += 1;
            sampled.rows += taken as u64;
        }
        Ok(sampled)
    }
}

/// `plan` with every Parquet scan reading one data file per partition, when
/// the plan's partitions are then exactly its files (the operators above
/// the scans keep their partitions); `None` otherwise.
fn one_file_per_partition(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
    use datafusion::datasource::source::DataSourceExec;
    let mut files = 0usize;
    let split = Arc::clone(plan)
        .transform_down(|node| {
            let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|s| s.data_source().downcast_ref::<FileScanConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            let groups: Vec<FileGroup> = config
                .file_groups
                .iter()
                .flat_map(|g| g.iter().cloned())
                .map(|f| FileGroup::new(vec![f]))
                .collect();
            files += groups.len();
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .build();
            Ok(Transformed::yes(
                DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
            ))
        })
        .ok()?
        .data;
    let partitions = split.properties().output_partitioning().partition_count();
    (files > 0 && partitions == files).then_some(split)
}
