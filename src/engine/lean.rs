//! Physical planning without the optimiser passes a plan cannot use.
//!
//! A point lookup's plans are a projection over a filter over one scan:
//! the outer plan over the secured table's barrier, and the secured
//! table's internal plan (masks over the row filter over the Delta scan).
//! DataFusion's physical optimiser runs its twenty-odd rules over every
//! plan, and for these shapes they find nothing to do (no join to choose,
//! no sort or distribution to enforce, no aggregate, limit or window), yet
//! they were measured at about 0.6 ms of a 1.5 ms lookup, twice per
//! statement. Plans of this shape are planned here with only the rule they
//! still need: cooperative scheduling, so that a long scan yields and can
//! be cancelled. Every other shape takes the full optimiser.
//!
//! The shape is the only condition: the plans are the same operators with
//! the same expressions (the masks, the row filter, the consent probe), so
//! what a statement may see does not depend on which way it was planned.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::catalog::Session;
use datafusion::common::config::{ConfigOptions, TableOptions};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::config::SessionConfig;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{AggregateUDF, Expr, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::physical_planner::PhysicalPlanner;

/// The rules a plan of the lean shape still needs.
static LEAN_RULES: LazyLock<Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>> =
    LazyLock::new(|| {
        vec![Arc::new(
            datafusion::physical_optimizer::ensure_coop::EnsureCooperative::new(),
        )]
    });

/// Whether `plan` is projections, filters and aliases over one table scan,
/// nothing else: no operator with a distribution or ordering requirement.
pub(crate) fn lean_shape(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => !p.expr.iter().any(has_subquery) && lean_shape(&p.input),
        LogicalPlan::Filter(f) => !has_subquery(&f.predicate) && lean_shape(&f.input),
        LogicalPlan::SubqueryAlias(a) => lean_shape(&a.input),
        LogicalPlan::TableScan(t) => !t.filters.iter().any(has_subquery),
        _ => false,
    }
}

/// Whether an expression holds a subquery (planned as a join or a scalar
/// subquery, which the lean path does not take).
fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// The physical plan of a plan of the lean shape, or of any plan with the
/// full optimiser.
pub(crate) async fn create_physical_plan(
    plan: &LogicalPlan,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    if lean_shape(plan) {
        let lean = LeanSession {
            inner: state,
            table_options: None,
        };
        super::accounting::tap::physical_planner()
            .create_physical_plan(plan, &lean)
            .await
    } else {
        state
            .query_planner()
            .create_physical_plan(plan, state)
            .await
    }
}

/// A session that is `inner` in every way but its physical optimiser
/// rules. Table providers downcast it to `inner` (`as_any`).
struct LeanSession<'a> {
    inner: &'a SessionState,
    /// Only for `table_options_mut`, which planning does not call: a copy
    /// of `inner`'s, made on first use.
    table_options: Option<TableOptions>,
}

#[async_trait::async_trait]
impl Session for LeanSession<'_> {
    fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    fn config(&self) -> &SessionConfig {
        self.inner.config()
    }

    fn catalog_list(&self) -> Arc<dyn datafusion::catalog::CatalogProviderList> {
        Session::catalog_list(self.inner)
    }

    fn config_options(&self) -> &ConfigOptions {
        self.inner.config_options()
    }

    fn query_planner(&self) -> Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync> {
        Session::query_planner(self.inner)
    }

    fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        self.inner.optimize(plan)
    }

    fn statistics_registry(
        &self,
    ) -> Option<&datafusion::physical_plan::operator_statistics::StatisticsRegistry> {
        Session::statistics_registry(self.inner)
    }

    fn physical_optimizers(&self) -> &[Arc<dyn PhysicalOptimizerRule + Send + Sync>] {
        &LEAN_RULES
    }

    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.create_physical_plan(logical_plan).await
    }

    fn create_physical_expr(
        &self,
        expr: Expr,
        df_schema: &DFSchema,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Session::create_physical_expr(self.inner, expr, df_schema)
    }

    fn scalar_functions(&self) -> &HashMap<String, Arc<ScalarUDF>> {
        Session::scalar_functions(self.inner)
    }

    fn higher_order_functions(
        &self,
    ) -> &HashMap<String, Arc<datafusion::logical_expr::HigherOrderUDF>> {
        Session::higher_order_functions(self.inner)
    }

    fn aggregate_functions(&self) -> &HashMap<String, Arc<AggregateUDF>> {
        Session::aggregate_functions(self.inner)
    }

    fn window_functions(&self) -> &HashMap<String, Arc<WindowUDF>> {
        Session::window_functions(self.inner)
    }

    fn extension_type_registry(
        &self,
    ) -> &datafusion::logical_expr::registry::ExtensionTypeRegistryRef {
        Session::extension_type_registry(self.inner)
    }

    fn runtime_env(&self) -> &Arc<RuntimeEnv> {
        self.inner.runtime_env()
    }

    fn execution_props(&self) -> &datafusion::execution::context::ExecutionProps {
        self.inner.execution_props()
    }

    fn as_any(&self) -> &dyn Any {
        self.inner
    }

    fn table_options(&self) -> &TableOptions {
        self.inner.table_options()
    }

    fn table_options_mut(&mut self) -> &mut TableOptions {
        let inner = self.inner;
        self.table_options
            .get_or_insert_with(|| inner.table_options().clone())
    }

    fn task_ctx(&self) -> Arc<TaskContext> {
        self.inner.task_ctx()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;

    async fn context() -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Int64Array::from(vec![4, 5, 6])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    async fn optimised(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        ctx.state().optimize(&plan).unwrap()
    }

    #[tokio::test]
    async fn only_projections_and_filters_over_one_scan_are_lean() {
        let ctx = context().await;
        for sql in [
            "SELECT a, b FROM t WHERE a = 1",
            "SELECT a + b AS c FROM t x WHERE x.b IN (4, 6)",
            "SELECT * FROM t",
        ] {
            assert!(lean_shape(&optimised(&ctx, sql).await), "{sql}");
        }
        for sql in [
            "SELECT a FROM t ORDER BY a",
            "SELECT a FROM t LIMIT 1",
            "SELECT count(*) FROM t",
            "SELECT DISTINCT a FROM t",
            "SELECT x.a FROM t x JOIN t y ON x.a = y.b",
            "SELECT a FROM t WHERE a IN (SELECT b FROM t)",
            "SELECT a, (SELECT max(b) FROM t) FROM t",
            "SELECT a FROM t UNION ALL SELECT b FROM t",
            "SELECT a, row_number() OVER () FROM t",
        ] {
            assert!(!lean_shape(&optimised(&ctx, sql).await), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_lean_plan_returns_what_the_full_plan_returns() {
        let ctx = context().await;
        let state = ctx.state();
        let plan = optimised(&ctx, "SELECT a + b AS c FROM t WHERE a >= 2").await;
        assert!(lean_shape(&plan));
        let lean = create_physical_plan(&plan, &state).await.unwrap();
        let full = state.create_physical_plan(&plan).await.unwrap();
        let run = |p: Arc<dyn ExecutionPlan>| {
            let task = state.task_ctx();
            async move {
                let batches = datafusion::physical_plan::collect(p, task).await.unwrap();
                let mut v = crate::engine::snapshot_scan::tests::first_column(&batches);
                v.sort();
                v
            }
        };
        assert_eq!(run(lean).await, vec![7, 9]);
        assert_eq!(run(full).await, vec![7, 9]);
    }
}
