//! Conditions on float columns are kept away from Parquet pruning: the
//! statistics leave NaN out of a float column's bounds, so pruning on them
//! could drop rows that `= 'NaN'` matches. [`FloatSafe`] wraps deltalake's
//! provider; [`NoFloatPruning`] wraps the Parquet scan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

/// Whether `e` reads a floating-point column of `schema`.
pub(super) fn mentions_float(schema: &SchemaRef, e: &Expr) -> bool {
    e.column_refs().iter().any(|c| {
        schema
            .field_with_name(&c.name)
            .is_ok_and(|f| is_float(f.data_type()))
    })
}

/// deltalake's provider (the scan of tables with deletion vectors, column
/// mapping or partitions) with the same rule as [`SnapshotScan`]:
/// conditions on float columns are not handed to it (they are applied
/// above the scan), so that its Parquet pruning cannot drop NaN rows.
///
/// [`SnapshotScan`]: super::SnapshotScan
#[derive(Debug)]
pub(crate) struct FloatSafe {
    inner: Arc<dyn TableProvider>,
}

impl FloatSafe {
    pub(crate) fn new(inner: Arc<dyn TableProvider>) -> FloatSafe {
        FloatSafe { inner }
    }
}

#[async_trait]
impl TableProvider for FloatSafe {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = self.inner.schema();
        let others: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|e| !mentions_float(&schema, e))
            .collect();
        let mut answers = self.inner.supports_filters_pushdown(&others)?.into_iter();
        Ok(filters
            .iter()
            .map(|e| {
                if mentions_float(&schema, e) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    answers
                        .next()
                        .unwrap_or(TableProviderFilterPushDown::Unsupported)
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let others: Vec<Expr> = filters
            .iter()
            .filter(|e| !mentions_float(&schema, e))
            .cloned()
            .collect();
        let plan = self.inner.scan(state, projection, &others, limit).await?;
        Ok(Arc::new(NoFloatPruning::new(plan)))
    }
}

fn is_float(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

/// The Parquet scan, as it is, except that the physical optimiser's filter
/// pushdown does not hand it conditions on float columns (see
/// [`SnapshotScan::scan`]: the Parquet source would prune on them, and drop
/// row groups holding NaN). Other conditions, and the dynamic filters of
/// joins and top-k, pass through to the scan.
///
/// [`SnapshotScan::scan`]: super::SnapshotScan::scan
#[derive(Debug)]
pub(crate) struct NoFloatPruning {
    inner: Arc<dyn ExecutionPlan>,
}

impl NoFloatPruning {
    pub(crate) fn new(inner: Arc<dyn ExecutionPlan>) -> NoFloatPruning {
        NoFloatPruning { inner }
    }
}

impl datafusion::physical_plan::DisplayAs for NoFloatPruning {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        write!(f, "NoFloatPruning")
    }
}

impl ExecutionPlan for NoFloatPruning {
    fn name(&self) -> &str {
        "NoFloatPruning"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        self.inner.properties()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn child_stats_requests(
        &self,
        partition: Option<usize>,
    ) -> Vec<datafusion::physical_plan::ChildStats> {
        vec![datafusion::physical_plan::ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &datafusion::physical_plan::StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(input_stats
            .first()
            .cloned()
            .unwrap_or_else(|| Arc::new(Statistics::new_unknown(&self.inner.schema()))))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(inner), true) => Ok(Arc::new(NoFloatPruning::new(inner))),
            _ => datafusion::common::internal_err!("NoFloatPruning has one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: datafusion::physical_plan::filter_pushdown::FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<datafusion::physical_plan::filter_pushdown::FilterDescription> {
        use datafusion::physical_plan::filter_pushdown::{
            ChildFilterDescription, FilterDescription,
        };
        let schema = self.inner.schema();
        let allowed = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !is_float(f.data_type()))
            .map(|(i, _)| i)
            .collect();
        Ok(FilterDescription::new().with_child(
            ChildFilterDescription::from_child_with_allowed_indices(
                &parent_filters,
                allowed,
                &self.inner,
            )?,
        ))
    }
}
