//! `PatientTap`: a pass-through node that records the patient keys of the
//! rows flowing through it into its statement's [`PatientSets`].

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, Result, Statistics};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::Stream;

use super::{Disclosure, Keys, PatientSets};

/// The logical node: its output is its input, unchanged.
#[derive(Debug, Clone)]
pub(crate) struct PatientTap {
    pub input: LogicalPlan,
    /// Names of the key columns in `input`'s schema.
    pub keys: Vec<String>,
    pub class: Disclosure,
    pub sets: Arc<PatientSets>,
}

impl PartialEq for PatientTap {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.keys == other.keys
            && Arc::ptr_eq(&self.sets, &other.sets)
            && self.input == other.input
    }
}

impl Eq for PatientTap {}

impl Hash for PatientTap {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.class.hash(state);
        self.keys.hash(state);
        self.input.hash(state);
    }
}

impl PartialOrd for PatientTap {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.class, &self.keys).cmp(&(other.class, &other.keys)) {
            Ordering::Equal if self != other => None,
            o => Some(o),
        }
    }
}

impl UserDefinedLogicalNodeCore for PatientTap {
    fn name(&self) -> &str {
        "PatientAccounting"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PatientAccounting: {}", self.class.as_str())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return datafusion::common::internal_err!("PatientAccounting takes one input");
        };
        Ok(PatientTap {
            input,
            keys: self.keys.clone(),
            class: self.class,
            sets: self.sets.clone(),
        })
    }

    fn supports_limit_pushdown(&self) -> bool {
        false
    }
}

/// Plans [`PatientTap`] nodes.
#[derive(Debug)]
pub(crate) struct TapPlanner;

#[async_trait]
impl ExtensionPlanner for TapPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(tap) = node.as_any().downcast_ref::<PatientTap>() else {
            return Ok(None);
        };
        let (Some(logical), Some(input)) = (logical_inputs.first(), physical_inputs.first()) else {
            return datafusion::common::internal_err!("PatientAccounting takes one input");
        };
        // The physical input has the logical input's columns, in order.
        let schema = logical.schema();
        let keys = tap
            .keys
            .iter()
            .map(|k| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == k)
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal(
                            "patient key column missing".into(),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Arc::new(TapExec::new(
            input.clone(),
            keys,
            tap.class,
            tap.sets.clone(),
        ))))
    }
}

/// The physical planner every statement's plan goes through: DataFusion's,
/// knowing [`PatientTap`].
pub(crate) fn physical_planner() -> DefaultPhysicalPlanner {
    DefaultPhysicalPlanner::with_extension_planners(vec![
        Arc::new(TapPlanner),
        Arc::new(super::cells::ReleasePlanner),
    ])
}

/// The query planner of client sessions (`EXPLAIN ANALYZE` and every
/// other path that plans through the session).
#[derive(Debug)]
pub(crate) struct AccountingQueryPlanner;

#[async_trait]
impl QueryPlanner for AccountingQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        physical_planner()
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// The physical node: forwards its input's batches, recording their
/// patients.
#[derive(Debug)]
pub(crate) struct TapExec {
    input: Arc<dyn ExecutionPlan>,
    collect: Collect,
    class: Disclosure,
    sets: Arc<PatientSets>,
    props: Arc<PlanProperties>,
    /// Records every batch's patients as it passes (a copy running on a
    /// worker: a coordinator may collect the sets while a stream it no
    /// longer reads is still open there), rather than at the stream's end.
    eager: bool,
}

/// Where a [`TapExec`]'s patients come from.
#[derive(Debug, Clone)]
pub(crate) enum Collect {
    /// The key columns at these positions of each batch.
    Keys(Vec<usize>),
    /// Known before the rows are read (`super::whole`): recorded once,
    /// by whichever partition ends first.
    Whole {
        patients: Arc<roaring::RoaringTreemap>,
        recorded: Arc<std::sync::atomic::AtomicBool>,
    },
}

impl TapExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<usize>,
        class: Disclosure,
        sets: Arc<PatientSets>,
    ) -> TapExec {
        let props = input.properties().clone();
        TapExec {
            input,
            collect: Collect::Keys(keys),
            class,
            sets,
            props,
            eager: false,
        }
    }

    /// A scan whose every row feeds an aggregate, from `patients`
    /// (`super::whole`): they are recorded as aggregated when its rows
    /// have been read.
    pub(crate) fn whole(
        input: Arc<dyn ExecutionPlan>,
        patients: Arc<roaring::RoaringTreemap>,
        sets: Arc<PatientSets>,
    ) -> TapExec {
        let props = input.properties().clone();
        TapExec {
            input,
            collect: Collect::Whole {
                patients,
                recorded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            },
            class: Disclosure::Aggregated,
            sets,
            props,
            eager: false,
        }
    }
}

impl TapExec {
    /// Its input, where its patients come from, their class, its sets
    /// (`cluster::codec`).
    pub(crate) fn parts(
        &self,
    ) -> (
        &Arc<dyn ExecutionPlan>,
        &Collect,
        Disclosure,
        &Arc<PatientSets>,
    ) {
        (&self.input, &self.collect, self.class, &self.sets)
    }

    /// A tap rebuilt from its parts, recording into `sets`.
    pub(crate) fn from_parts(
        input: Arc<dyn ExecutionPlan>,
        collect: Collect,
        class: Disclosure,
        sets: Arc<PatientSets>,
    ) -> TapExec {
        let collect = match collect {
            // A fresh flag: this copy records its set once.
            Collect::Whole { patients, .. } => Collect::Whole {
                patients,
                recorded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            },
            keys => keys,
        };
        let props = input.properties().clone();
        TapExec {
            input,
            collect,
            class,
            sets,
            props,
            eager: true,
        }
    }
}

impl DisplayAs for TapExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.collect {
            Collect::Keys(_) => write!(f, "PatientAccounting: {}", self.class.as_str()),
            Collect::Whole { .. } => write!(f, "PatientAccounting: aggregated, whole table"),
        }
    }
}

impl ExecutionPlan for TapExec {
    fn name(&self) -> &str {
        "PatientAccounting"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(TapExec {
                props: input.properties().clone(),
                input,
                collect: self.collect.clone(),
                class: self.class,
                sets: self.sets.clone(),
                eager: self.eager,
            })),
            _ => datafusion::common::internal_err!("PatientAccounting takes one input"),
        }
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match input_stats.first() {
            Some(s) => Ok(s.clone()),
            None => Ok(Arc::new(Statistics::new_unknown(&self.schema()))),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let gather = match &self.collect {
            Collect::Keys(keys) => Gather::Keys {
                keys: keys.clone(),
                collected: Some(Keys::default()),
            },
            Collect::Whole { patients, recorded } => Gather::Whole {
                read_any: false,
                patients: patients.clone(),
                recorded: recorded.clone(),
            },
        };
        self.sets.stream_opened();
        Ok(Box::pin(TapStream {
            input,
            gather,
            class: self.class,
            sets: self.sets.clone(),
            eager: self.eager,
        }))
    }
}

/// What one partition's stream gathers.
enum Gather {
    /// Keys collected locally, handed to the statement's sets when the
    /// stream ends or is dropped.
    Keys {
        keys: Vec<usize>,
        collected: Option<Keys>,
    },
    /// A set known before the rows are read, recorded once when this
    /// partition's rows have been read — or, conservatively, when a
    /// partition that read rows stops before its end (an error, a cancel),
    /// as a key column's tap records the rows it saw.
    Whole {
        read_any: bool,
        patients: Arc<roaring::RoaringTreemap>,
        recorded: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// One partition's stream: its input's batches, their patients gathered.
struct TapStream {
    input: SendableRecordBatchStream,
    gather: Gather,
    class: Disclosure,
    sets: Arc<PatientSets>,
    eager: bool,
}

impl TapStream {
    /// At the end of the input (`ended`) or when dropped.
    fn flush(&mut self, ended: bool) {
        match &mut self.gather {
            Gather::Keys { collected, .. } => {
                if let Some(keys) = collected.take() {
                    self.sets.merge(self.class, keys);
                }
            }
            Gather::Whole {
                read_any,
                patients,
                recorded,
            } => {
                if (ended || *read_any) && !recorded.swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    self.sets.merge_set(self.class, patients);
                }
            }
        }
    }
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.flush(false);
        self.sets.stream_closed();
    }
}

impl Stream for TapStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.input.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                match &mut self.gather {
                    Gather::Keys {
                        keys,
                        collected: Some(collected),
                    } => {
                        for &k in keys.iter() {
                            if let Some(column) = batch.columns().get(k) {
                                collected.add_column(column.as_ref(), 0..batch.num_rows());
                            }
                        }
                    }
                    Gather::Whole { read_any, .. } if batch.num_rows() > 0 => *read_any = true,
                    _ => {}
                }
                if self.eager {
                    self.flush(false);
                    if let Gather::Keys { collected, .. } = &mut self.gather {
                        *collected = Some(Keys::default());
                    }
                }
            }
            Poll::Ready(None) => self.flush(true),
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for TapStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
