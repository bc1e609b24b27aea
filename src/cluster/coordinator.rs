//! The coordinator's side: which statements are distributed, and how.
//!
//! A statement is planned exactly as on a single node — rewrite, barrier,
//! verification, audit, physical plan. Only then, when its secured scans
//! read at least `distribute_min_bytes` of data files and every node of
//! its plan can run on a worker (the plan is encoded first, as it would be
//! sent: a node lakeward cannot send keeps the statement local), the
//! physical plan goes to datafusion-distributed's planner, which splits it
//! into stages at its shuffles and merges. Each policy barrier is a leaf of
//! a stage: its Parquet files are dealt out to the stage's tasks, so every
//! worker applies the row filter, consent check and masks to its share
//! before any row leaves it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    ChannelResolver, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExec,
    DistributedExt, DistributedLeafExec, ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
    SessionStateBuilderExt, WorkerChannel, WorkerResolver, grpc,
};
use datafusion_proto::physical_plan::{
    ComposedPhysicalExtensionCodec, PhysicalExtensionCodec, PhysicalPlanNodeExt,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use url::Url;

use super::codec::LakewardCodec;
use crate::config::ClusterConfig;
use crate::engine::Engine;
use crate::engine::accounting::PatientSets;
use crate::engine::secure::BarrierExec;
use crate::engine::snapshot_scan::NoFloatPruning;

/// Connections to workers over TLS, each request carrying the cluster
/// token. One per process (coordinator, or worker reading another
/// worker's shuffle output); channels are reused per URL.
#[derive(Clone)]
pub struct TlsChannels {
    tls: ClientTlsConfig,
    domain: Option<String>,
    authorization: http::HeaderValue,
    channels: Arc<Mutex<HashMap<Url, Channel>>>,
}

impl TlsChannels {
    pub fn new(config: &ClusterConfig, token: &str) -> anyhow::Result<TlsChannels> {
        let ca = config
            .ca_file
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("cluster.ca_file is not set"))?;
        let pem =
            std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
        let mut authorization = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the cluster token is not a valid header value"))?;
        authorization.set_sensitive(true);
        Ok(TlsChannels {
            tls: ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            domain: config.tls_domain.clone(),
            authorization,
            channels: Arc::default(),
        })
    }

    fn channel(&self, url: &Url) -> DfResult<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        if url.scheme() != "https" {
            return Err(DataFusionError::Plan(
                "workers are reached over TLS only (https://)".into(),
            ));
        }
        let domain = match (&self.domain, url.host_str()) {
            (Some(d), _) => d.clone(),
            (None, Some(h)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            (None, None) => return Err(DataFusionError::Plan("worker URL without a host".into())),
        };
        let channel = Channel::from_shared(url.to_string())
            .map_err(|_| DataFusionError::Plan("invalid worker URL".into()))?
            .tls_config(self.tls.clone().domain_name(domain))
            .map_err(|_| DataFusionError::Plan("invalid worker TLS configuration".into()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

impl TlsChannels {
    /// The connection to `url`, every request carrying the cluster token.
    pub(crate) fn service(&self, url: &Url) -> DfResult<grpc::BoxCloneSyncChannel> {
        let channel = self.channel(url)?;
        let authorization = self.authorization.clone();
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut request: http::Request<tonic::body::Body>| {
                request
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, authorization.clone());
                request
            })
            .service(channel);
        Ok(grpc::BoxCloneSyncChannel::new(service))
    }
}

#[async_trait]
impl ChannelResolver for TlsChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> DfResult<Box<dyn WorkerChannel>> {
        Ok(grpc::create_worker_client(self.service(url)?))
    }
}

/// The configured workers.
#[derive(Debug, Clone)]
struct Workers(Vec<Url>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        Ok(self.0.clone())
    }
}

/// Hands datafusion-distributed's planner a physical plan already made.
#[derive(Debug)]
struct Planned(Arc<dyn ExecutionPlan>);

#[async_trait]
impl QueryPlanner for Planned {
    async fn create_physical_plan(
        &self,
        _logical_plan: &LogicalPlan,
        _session: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self.0.clone())
    }
}

/// A coordinator: its workers and when to use them.
pub struct Coordinator {
    workers: Workers,
    channels: TlsChannels,
    codec: Arc<LakewardCodec>,
    min_bytes: u64,
    bytes_per_task: u64,
    stage_metrics: bool,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("workers", &self.workers.0.len())
            .finish_non_exhaustive()
    }
}

/// A statement's plan as it runs: distributed or not.
pub(crate) struct Placed {
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    pub(crate) state: SessionState,
    /// Distributed with patient accounting taps: their sets, collected
    /// from the workers when the result stream ends.
    accounting: Option<(TlsChannels, Vec<Url>, Vec<Arc<PatientSets>>)>,
    /// Distributed with `stage_metrics`: log the stages' metrics at the end.
    stage_metrics: bool,
}

impl Placed {
    /// `plan` as it is, on this node.
    pub(crate) fn local(plan: Arc<dyn ExecutionPlan>, state: SessionState) -> Placed {
        Placed {
            plan,
            state,
            accounting: None,
            stage_metrics: false,
        }
    }

    /// The statement's result stream: distributed with taps, it ends once
    /// their sets are collected (`cluster::accounting`).
    pub(crate) fn finish(
        &self,
        stream: datafusion::execution::SendableRecordBatchStream,
    ) -> datafusion::execution::SendableRecordBatchStream {
        let stream = match &self.accounting {
            Some((channels, workers, sets)) => super::accounting::collected_at_end(
                stream,
                channels.clone(),
                workers.clone(),
                sets.clone(),
            ),
            None => stream,
        };
        if !self.stage_metrics {
            return stream;
        }
        let schema = stream.schema();
        let plan = self.plan.clone();
        let tail = futures::StreamExt::filter_map(
            futures::stream::once(log_stage_metrics(plan)),
            |()| async { None::<DfResult<datafusion::arrow::record_batch::RecordBatch>> },
        );
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema,
                futures::StreamExt::chain(stream, tail),
            ),
        )
    }
}

impl Coordinator {
    /// The coordinator of `config`, or `None` without workers.
    pub fn from_config(
        config: &ClusterConfig,
        engine: &Arc<Engine>,
    ) -> anyhow::Result<Option<Arc<Coordinator>>> {
        if config.workers.is_empty() {
            return Ok(None);
        }
        let token = config.token()?;
        let workers = config
            .workers
            .iter()
            .map(|w| Url::parse(w).map_err(|e| anyhow::anyhow!("worker URL {w}: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Arc::new(Coordinator {
            workers: Workers(workers),
            channels: TlsChannels::new(config, &token)?,
            codec: Arc::new(LakewardCodec::new(&engine)),
            min_bytes: config.distribute_min_bytes,
            bytes_per_task: config.bytes_per_task.max(1),
            stage_metrics: config.stage_metrics,
        })))
    }

    /// `plan` distributed over the workers when it is worth it and every
    /// node of it can run there; otherwise as it is.
    pub(crate) async fn place(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        state: SessionState,
        logical: &LogicalPlan,
    ) -> DfResult<Placed> {
        let Some(bytes) = scan_bytes(&plan) else {
            return Ok(Placed::local(plan, state));
        };
        if bytes < self.min_bytes || has_scalar_subquery(&plan) || !self.encodable(&plan) {
            return Ok(Placed::local(plan, state));
        }
        let per_task = self.bytes_per_task;
        let dist = SessionStateBuilder::new_from_existing(state.clone())
            .with_query_planner(Arc::new(Planned(plan.clone())))
            .with_distributed_planner()
            .with_distributed_worker_resolver(self.workers.clone())
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_user_codec_arc(self.codec.clone())
            .with_distributed_desired_task_count_handler(move |ev: DesiredTaskCountEvent<'_>| {
                barrier_task_count(ev, per_task)
            })
            .with_distributed_scale_up_leaf_node_handler(barrier_scale_up)
            .with_distributed_metrics_collection(self.stage_metrics)?
            .build();
        let distributed = dist
            .query_planner()
            .create_physical_plan(logical, &dist)
            .await?;
        if distributed.downcast_ref::<DistributedExec>().is_none() {
            // One task everywhere: nothing to distribute.
            return Ok(Placed::local(plan, state));
        }
        if decodes_as_workers_would(&distributed, &dist).is_err() {
            // The error may quote the plan: not logged.
            tracing::debug!("statement runs locally: a stage would not rebuild on a worker");
            return Ok(Placed::local(plan, state));
        }
        let taps = tap_sets(&plan);
        tracing::info!(
            scan_bytes = bytes,
            workers = self.workers.0.len(),
            "statement distributed"
        );
        Ok(Placed {
            plan: distributed,
            state: dist,
            accounting: (!taps.is_empty())
                .then(|| (self.channels.clone(), self.workers.0.clone(), taps)),
            stage_metrics: self.stage_metrics,
        })
    }

    /// Whether every node of `plan` can be sent to a worker.
    fn encodable(&self, plan: &Arc<dyn ExecutionPlan>) -> bool {
        let codecs: Vec<Arc<dyn PhysicalExtensionCodec>> = vec![self.codec.clone()];
        let codec = ComposedPhysicalExtensionCodec::new(codecs);
        match <datafusion_proto::protobuf::PhysicalPlanNode as PhysicalPlanNodeExt>::try_from_physical_plan_with_converter(
            plan.clone(),
            &codec,
            &datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {},
        ) {
            Ok(_) => true,
            Err(_) => {
                // The error may quote the plan: not logged.
                tracing::debug!("statement runs locally: a node cannot be sent to workers");
                false
            }
        }
    }
}

/// Check every stage the workers run, rebuilt with each network boundary
/// replaced by a leaf carrying only what a worker knows of another
/// stage's output: its schema and partitioning. A worker rebuilds each
/// node's properties from its inputs as it decodes the stage, and what a
/// filter below a boundary proved (a column made constant, on which a
/// window above then relied) does not cross it: such a plan would fail on the workers, so the
/// statement runs locally instead.
fn decodes_as_workers_would(
    distributed: &Arc<dyn ExecutionPlan>,
    state: &SessionState,
) -> DfResult<()> {
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
    use datafusion_distributed::NetworkBoundaryExt;
    // Every operator of every stage still gets the ordering and
    // distribution it requires from its inputs (a window over a column made
    // constant below a boundary no longer does).
    let check = |plan: Arc<dyn ExecutionPlan>| {
        SanityCheckPlan::new()
            .optimize(plan, state.config_options())
            .map(|_| ())
    };
    // The head stage is not among them: it runs on the coordinator, from
    // the plan as planned, whose boundaries keep their inputs' orderings
    // (a merge of sorted stage outputs holds there).
    distributed.clone().transform_up(|node| {
        if node.is_network_boundary() {
            // The stage below, as its worker rebuilds it.
            for stage in node.children() {
                check(Arc::clone(stage))?;
            }
            let stand_in: Arc<dyn ExecutionPlan> = Arc::new(StageOutput::of(&node));
            return Ok(Transformed::yes(stand_in));
        }
        Ok(Transformed::no(node))
    })?;
    Ok(())
}

/// Another stage's output as a worker sees it (never executed).
#[derive(Debug)]
struct StageOutput {
    props: Arc<datafusion::physical_plan::PlanProperties>,
}

impl StageOutput {
    fn of(node: &Arc<dyn ExecutionPlan>) -> StageOutput {
        let p = node.properties();
        StageOutput {
            props: Arc::new(datafusion::physical_plan::PlanProperties::new(
                datafusion::physical_expr::EquivalenceProperties::new(node.schema()),
                p.partitioning.clone(),
                p.emission_type,
                p.boundedness,
            )),
        }
    }
}

impl datafusion::physical_plan::DisplayAs for StageOutput {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        f.write_str("StageOutput")
    }
}

impl ExecutionPlan for StageOutput {
    fn name(&self) -> &str {
        "StageOutput"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<datafusion::execution::TaskContext>,
    ) -> DfResult<datafusion::physical_plan::SendableRecordBatchStream> {
        datafusion::common::internal_err!("a stand-in for a stage's output is never executed")
    }
}

/// The bytes of data files the policy barriers of `plan` read, `None` when
/// a leaf reads anything else than through a barrier (a catalog table, a
/// table function) or reads an audit table: such a statement is not
/// distributed. The audit tables are the coordinator's own (`[audit]
/// table`); workers serve `[data]` only.
fn scan_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    let mut total = 0u64;
    let mut other = false;
    let _ = plan.apply(|node| {
        if let Some(b) = node.downcast_ref::<BarrierExec>() {
            if b.table().starts_with("audit.") {
                other = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            total = total.saturating_add(files_bytes(b.input()));
        } else if node.children().is_empty() && !is_constant_leaf(node) {
            other = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    (!other).then_some(total)
}

/// Log each stage of the executed distributed `plan`: its number, tasks,
/// the CPU time of its operators, and the rows and bytes it sent to the
/// next stage (no plan text: a plan may quote literals).
async fn log_stage_metrics(plan: Arc<dyn ExecutionPlan>) {
    use datafusion_distributed::{DistributedMetricsFormat, NetworkBoundaryExt};
    let Ok(plan) = datafusion_distributed::rewrite_distributed_plan_with_metrics(
        plan,
        DistributedMetricsFormat::Aggregated,
    )
    .await
    else {
        return;
    };
    let _ = plan.apply(|node| {
        let Some(boundary) = node.as_network_boundary() else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let stage = boundary.input_stage();
        let mut cpu_ns = 0usize;
        let mut operators = 0usize;
        for child in node.children() {
            let _ = child.apply(|n| {
                if n.is_network_boundary() {
                    return Ok(TreeNodeRecursion::Jump);
                }
                operators += 1;
                cpu_ns += n.metrics().and_then(|m| m.elapsed_compute()).unwrap_or(0);
                Ok(TreeNodeRecursion::Continue)
            });
        }
        let received = node.metrics();
        let rows = received.as_ref().and_then(|m| m.output_rows()).unwrap_or(0);
        // Bytes received over the network (a custom metric of the
        // boundary's connections).
        let bytes: usize = received
            .iter()
            .flat_map(|m| m.iter())
            .filter(|m| m.value().name() == "bytes_transferred")
            .map(|m| m.value().as_usize())
            .sum();
        tracing::info!(
            stage = stage.num(),
            tasks = stage.task_count(),
            boundary = node.name(),
            operators,
            cpu_ms = cpu_ns as f64 / 1e6,
            rows_sent = rows,
            bytes_sent = bytes,
            "distributed stage"
        );
        Ok(TreeNodeRecursion::Continue)
    });
}

/// The patient sets the taps of `plan` record into (one per statement,
/// in practice).
fn tap_sets(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<PatientSets>> {
    use crate::engine::accounting::tap::TapExec;
    let mut sets: Vec<Arc<PatientSets>> = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(tap) = node.downcast_ref::<TapExec>() {
            let (_, _, _, s) = tap.parts();
            if !sets.iter().any(|known| Arc::ptr_eq(known, s)) {
                sets.push(Arc::clone(s));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    sets
}

/// Whether `plan` computes an uncorrelated scalar subquery as a plan node
/// of its own (its result is shared with the expressions that read it
/// within one process): such a statement runs locally.
fn has_scalar_subquery(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| Ok(node.name() == "ScalarSubqueryExec"))
        .unwrap_or(true)
}

/// Leaves that read nothing: an empty relation, one row. (A `VALUES`
/// list or a catalog table is an in-memory source: such a statement stays
/// local, as workers accept no other leaf.)
fn is_constant_leaf(node: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    node.downcast_ref::<EmptyExec>().is_some()
        || node.downcast_ref::<PlaceholderRowExec>().is_some()
}

/// Sum of the sizes of the files every file scan of `plan` reads.
fn files_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut total = 0u64;
    let _ = plan.apply(|node| {
        if let Some(config) = file_scan(node) {
            for group in &config.file_groups {
                for file in group.iter() {
                    total = total.saturating_add(file.object_meta.size);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    total
}

fn file_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// The one file scan of a barrier's subtree when its files can be dealt
/// out to tasks: every node above it keeps rows independent of each other
/// (projections, filters, the NaN guard, batch coalescing).
fn splittable_scan(inner: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    let mut node = inner;
    loop {
        if let Some(config) = file_scan(node) {
            return Some(config);
        }
        let row_local = node.downcast_ref::<FilterExec>().is_some()
            || node.downcast_ref::<ProjectionExec>().is_some()
            || node.downcast_ref::<NoFloatPruning>().is_some()
            || node.name() == "CoalesceBatchesExec";
        match (row_local, node.children().as_slice()) {
            (true, [child]) => node = child,
            _ => return None,
        }
    }
}

/// How many tasks a barrier's stage wants: one per `per_task` bytes of its
/// files, or exactly one when its subtree cannot be split.
fn barrier_task_count(
    ev: DesiredTaskCountEvent<'_>,
    per_task: u64,
) -> Option<DfResult<DesiredTaskCountEventResponse>> {
    let barrier = ev.plan.downcast_ref::<BarrierExec>()?;
    let Some(_) = splittable_scan(barrier.input()) else {
        return Some(Ok(DesiredTaskCountEventResponse::maximum(1)));
    };
    let bytes = files_bytes(barrier.input());
    let tasks = usize::try_from(bytes.div_ceil(per_task)).unwrap_or(usize::MAX);
    Some(Ok(DesiredTaskCountEventResponse::desired(tasks.max(1))))
}

/// One copy of a barrier per task, each reading its share of the files
/// (whole files, dealt out largest first to the least loaded partition),
/// with the same number of partitions.
fn barrier_scale_up(
    ev: ScaleUpLeafNodeEvent<'_>,
) -> Option<DfResult<ScaleUpLeafNodeEventResponse>> {
    let barrier = ev.plan.downcast_ref::<BarrierExec>()?;
    if ev.task_count <= 1 {
        return None;
    }
    let config = splittable_scan(barrier.input())?;
    let partitions = config.file_groups.len().max(1);
    let slots = partitions * ev.task_count;
    let mut files: Vec<PartitionedFile> = config
        .file_groups
        .iter()
        .flat_map(|g| g.iter().cloned())
        .collect();
    files.sort_by(|a, b| {
        b.object_meta
            .size
            .cmp(&a.object_meta.size)
            .then_with(|| a.object_meta.location.cmp(&b.object_meta.location))
    });
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); slots];
    for file in files {
        // Least loaded slot, the first of equals (deterministic).
        if let Some(slot) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            slot.0 = slot.0.saturating_add(file.object_meta.size);
            slot.1.push(file);
        }
    }
    let mut variants = Vec::with_capacity(ev.task_count);
    for task in 0..ev.task_count {
        let mine: Vec<FileGroup> = groups
            .iter()
            .skip(task)
            .step_by(ev.task_count)
            .map(|(_, files)| FileGroup::new(files.clone()))
            .collect();
        let inner = barrier.input().clone().transform_up(|node| {
            let Some(config) = file_scan(&node) else {
                return Ok(Transformed::no(node));
            };
            let mut config = config.clone();
            config.file_groups = mine.clone();
            let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            Ok(Transformed::yes(scan))
        });
        let inner = match inner {
            Ok(t) => t.data,
            Err(e) => return Some(Err(e)),
        };
        variants.push(
            Arc::new(BarrierExec::new(inner, barrier.table().to_owned())) as Arc<dyn ExecutionPlan>,
        );
    }
    Some(
        DistributedLeafExec::try_new(ev.plan.clone(), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}
