//! The security barrier: policy-aware tables.
//!
//! For a session's [`AccessContext`], every granted table is registered under
//! its user-visible name as a [`SecuredTable`]. A `SecuredTable` owns an
//! internal plan — raw Delta scan → row filter AND consent predicate → column
//! masks — built from policy-authored ASTs against raw tables that are
//! registered nowhere a user-written name can reach. It refuses every filter
//! pushdown, and its physical plan is wrapped in a [`BarrierExec`] that passes
//! no parent filter, limit or projection down. So the user's expressions only
//! ever see rows the policy admitted, with masked values: a division by zero or
//! failing cast keyed on another site's row cannot fire.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, Session, TableProvider,
};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{
    Expr as DfExpr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType,
};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, Ident, SelectItem, SetExpr, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::CATALOG;
use crate::policy::compile::{AccessContext, ColumnAccess, ConsentCheck, TableAccess};
use crate::policy::{ConsentModel, ConsentRules, MaskKind};

/// A table as the policy lets one session see it.
#[derive(Debug)]
pub(crate) struct SecuredTable {
    name: String,
    /// The internal plan, optimised once when the catalog is built (unless
    /// it calls a function that is not immutable, see `preoptimised`).
    plan: LogicalPlan,
    /// Whether `plan` is already optimised: a statement's scan then only
    /// pushes its leak-proof filter and projection into it instead of
    /// running every optimiser rule again. A plan calling a stable or
    /// volatile function (`now()`) is optimised per statement, since
    /// optimising folds such calls to the moment of planning.
    preoptimised: bool,
    schema: SchemaRef,
    /// Columns shown as they are stored (no mask): a leak-proof predicate
    /// over these may be evaluated below the policy (see [`leakproof`]).
    passthrough: std::collections::BTreeSet<String>,
    /// Columns shown as keyed pseudonyms: an equality with a given value
    /// may be evaluated below the policy too (see [`pseudonym_probe`]).
    pseudonymised: std::collections::BTreeSet<String>,
    /// The consent set the plan's consent check probes, refreshed whenever
    /// a statement's scan of this table is planned.
    consent: Option<Arc<super::consent::ConsentSet>>,
    /// The sets of the row filter's subqueries (`engine::filter_sets`),
    /// refreshed likewise.
    filter_sets: Vec<Arc<super::filter_sets::FilterSet>>,
    /// Whether `plan` has one column more than `schema`: the stored
    /// patient key ([`super::accounting::KEY_COLUMN`]), which only an
    /// [`AccountedTable`] scan asks for.
    accounted: bool,
    /// Whether the table has a patient key in the policy (accounted or
    /// not: a non-integer key cannot be).
    patient_keyed: bool,
    /// The patient key, when it is shown as stored: a statement condition
    /// `key = constant` on it names the only patient the scan can reach
    /// (`engine::accounting::plan::pinned`).
    pin_column: Option<String>,
    /// For an accounted table with no row filter: how an aggregate over
    /// all its rows learns their patients without a key column
    /// (`engine::accounting::whole`).
    whole: Option<super::accounting::whole::WholeSource>,
}

/// Whether `e` may be evaluated on rows the policy has not admitted yet:
/// it reads only unmasked columns and constants, and it cannot fail or
/// have an effect, so evaluating it early reveals nothing (PostgreSQL's
/// LEAKPROOF notion). Comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`,
/// `BETWEEN` and `IN (constants)` qualify, over operands of one type; any
/// cast of a column, arithmetic or function call does not (a failing cast
/// or a division by zero on another site's row would be a side channel).
/// Such a predicate lets Delta file statistics and parquet row-group
/// statistics prune a point lookup; the policy filter still applies.
pub(crate) fn leakproof(e: &DfExpr, passthrough: &std::collections::BTreeSet<String>) -> bool {
    use datafusion::logical_expr::{Between, BinaryExpr, Operator, expr::InList};
    // A value the client gave: a literal, or a parameter (a plan optimised
    // at preparation still holds the placeholder; it is bound to a value
    // of its own type before the scan runs). No cast: a failing cast of a
    // constant evaluated on rows the policy has not admitted would tell
    // that such rows exist.
    fn given(e: &DfExpr) -> bool {
        matches!(e, DfExpr::Literal(..) | DfExpr::Placeholder(_))
    }
    let operand = |e: &DfExpr| match e {
        DfExpr::Column(c) => passthrough.contains(&c.name),
        e => given(e),
    };
    match e {
        DfExpr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => {
                leakproof(left, passthrough) && leakproof(right, passthrough)
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => operand(left) && operand(right),
            _ => false,
        },
        DfExpr::Not(inner) => leakproof(inner, passthrough),
        DfExpr::IsNull(inner) | DfExpr::IsNotNull(inner) => operand(inner),
        DfExpr::Between(Between {
            expr, low, high, ..
        }) => operand(expr) && given(low) && given(high),
        DfExpr::InList(InList { expr, list, .. }) => operand(expr) && list.iter().all(given),
        _ => false,
    }
}

/// Whether `e` is `column = value` or `column IN (values)` over a column
/// shown as a keyed pseudonym, with values the client gave (no cast). It
/// may be evaluated below the policy: the pseudonym is a total function of
/// the stored key (it cannot fail or have an effect, whatever row it
/// reads), and the policy's filter and the statement's own condition still
/// apply above. Below the masks the condition reads
/// `lakeward_pseudonym(key, domain) = value`, which the key indexes of
/// point lookups answer (`engine::lookup`) instead of pseudonymising every
/// row of the table.
pub(crate) fn pseudonym_probe(
    e: &DfExpr,
    pseudonymised: &std::collections::BTreeSet<String>,
) -> bool {
    use datafusion::logical_expr::{BinaryExpr, Operator, expr::InList};
    let given = |e: &DfExpr| matches!(e, DfExpr::Literal(..) | DfExpr::Placeholder(_));
    let column = |e: &DfExpr| matches!(e, DfExpr::Column(c) if pseudonymised.contains(&c.name));
    match e {
        DfExpr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => (column(left) && given(right)) || (given(left) && column(right)),
        DfExpr::InList(InList {
            expr,
            list,
            negated: false,
        }) => column(expr) && list.iter().all(given),
        _ => false,
    }
}

impl SecuredTable {
    /// Whether a user predicate may be evaluated inside the barrier.
    fn pushable(&self, e: &DfExpr) -> bool {
        leakproof(e, &self.passthrough) || pseudonym_probe(e, &self.pseudonymised)
    }

    /// Whether the policy names a patient key for the table.
    pub(crate) fn patient_keyed(&self) -> bool {
        self.patient_keyed
    }

    /// Whether the table's rows carry their patient key for accounting.
    pub(crate) fn accounted(&self) -> bool {
        self.accounted
    }

    /// The shown column that is the stored patient key, if any.
    pub(crate) fn pin_column(&self) -> Option<&str> {
        self.pin_column.as_deref()
    }

    /// Whether an aggregate over every row this table admits may be
    /// accounted from the key indexes (no row filter: only consent decides
    /// which rows pass).
    pub(crate) fn accounted_whole(&self) -> bool {
        self.whole.is_some()
    }

    /// The barrier over the internal plan with `filters` pushed where they
    /// are leak-proof, showing the columns `projection` names (all when
    /// `None`) and, with `key_as`, the stored patient key under that name
    /// as the last column.
    async fn scan_with(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        key_as: Option<&str>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The consent set this statement runs against: current for the
        // consent table's newest version and this moment.
        if let Some(set) = &self.consent {
            set.refresh().await?;
        }
        for set in &self.filter_sets {
            set.refresh().await?;
        }
        // Leak-proof predicates over unmasked columns, and key equalities
        // over pseudonymised ones, go on top of the policy plan; the
        // optimiser moves them down to the Delta scan, where key indexes
        // and file and row-group statistics prune. Anything else that
        // reaches here is dropped (DataFusion evaluates it above).
        let mut plan = self.plan.clone();
        if let Some(pred) = filters
            .iter()
            .filter(|f| self.pushable(f))
            .map(|f| datafusion::logical_expr::expr_rewriter::unnormalize_col(f.clone()))
            .reduce(DfExpr::and)
        {
            // Pruning is an optimisation: a predicate that does not fit
            // the policy plan's columns is simply not pushed.
            if let Ok(filtered) = LogicalPlanBuilder::from(plan.clone())
                .filter(pred)
                .and_then(|b| b.build())
            {
                plan = filtered;
            }
        }
        let column = |name: &str| DfExpr::Column(datafusion::common::Column::from_name(name));
        let mut exprs: Vec<DfExpr> = match projection {
            Some(cols) => cols
                .iter()
                .map(|i| column(self.schema.field(*i).name()))
                .collect(),
            None => self
                .schema
                .fields()
                .iter()
                .map(|f| column(f.name()))
                .collect(),
        };
        if let Some(name) = key_as {
            if !self.accounted {
                return datafusion::common::internal_err!("table has no patient key");
            }
            exprs.push(column(super::accounting::KEY_COLUMN).alias(name));
        }
        // The internal plan's own columns are exactly the shown ones only
        // when it carries no patient key.
        let plan = if projection.is_none() && key_as.is_none() && !self.accounted {
            plan
        } else {
            LogicalPlanBuilder::from(plan).project(exprs)?.build()?
        };
        let physical = match state.as_any().downcast_ref::<SessionState>() {
            Some(session) if self.preoptimised => {
                // Only the rules that move this statement's predicate and
                // projection into the already optimised internal plan.
                let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
                    Arc::new(PushDownFilter::new()),
                    Arc::new(OptimizeProjections::new()),
                ];
                let plan = Optimizer::with_rules(rules).optimize(plan, session, |_, _| {})?;
                super::lean::create_physical_plan(&plan, session).await?
            }
            _ => state.create_physical_plan(&plan).await?,
        };
        Ok(Arc::new(BarrierExec::new(physical, self.name.clone())))
    }
}

/// A [`SecuredTable`] as a statement under patient accounting scans it:
/// its columns and, last, the stored patient key under a name of this
/// scan's own (`engine::accounting::plan`). Never in a catalog: only the
/// accounting rewrite of an already verified plan makes one.
#[derive(Debug)]
pub(crate) struct AccountedTable {
    secured: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// Set for a scan whose every admitted row feeds an aggregate: its
    /// columns are the secured table's, and its patients are recorded as
    /// aggregated into these sets (`engine::accounting::whole`).
    whole: Option<Arc<super::accounting::PatientSets>>,
    /// Whether the last column is the patient key (named by the rewrite).
    keyed: bool,
}

impl AccountedTable {
    /// A scan of `secured` (a [`SecuredTable`] that is
    /// [`SecuredTable::accounted_whole`]) whose rows all feed an
    /// aggregate, with no condition of the statement: its patients are
    /// recorded into `sets` as aggregated, without a key column.
    pub(crate) fn whole(
        secured: Arc<dyn TableProvider>,
        sets: Arc<super::accounting::PatientSets>,
    ) -> AccountedTable {
        AccountedTable {
            schema: secured.schema(),
            secured,
            whole: Some(sets),
            keyed: false,
        }
    }

    /// A whole-table scan (as [`AccountedTable::whole`]) that also carries
    /// the patient key as its last column, `key_name`: for an aggregation
    /// policy's cells (`engine::accounting::cells`), with the patients
    /// recorded from the key indexes rather than from the key column.
    pub(crate) fn whole_keyed(
        secured: Arc<dyn TableProvider>,
        key_name: String,
        sets: Arc<super::accounting::PatientSets>,
    ) -> AccountedTable {
        AccountedTable {
            whole: Some(sets),
            ..AccountedTable::new(secured, key_name)
        }
    }

    /// The scan of a whole table: the patients from the key indexes when
    /// every file it reads has one, else from a key column recorded by a
    /// tap and dropped.
    async fn scan_whole(
        &self,
        secured: &SecuredTable,
        sets: &Arc<super::accounting::PatientSets>,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        use super::accounting::{Disclosure, tap::TapExec};
        if filters.is_empty()
            && let Some(source) = &secured.whole
        {
            let plan = secured.scan_with(state, projection, filters, None).await?;
            let patients = plan
                .downcast_ref::<BarrierExec>()
                .and_then(|b| source.patients(&b.input));
            if let Some(patients) = patients {
                return Ok(Arc::new(TapExec::whole(
                    plan,
                    Arc::new(patients),
                    sets.clone(),
                )));
            }
        }
        let shown: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let plan = secured
            .scan_with(
                state,
                Some(&shown),
                filters,
                Some(super::accounting::KEY_COLUMN),
            )
            .await?;
        let key = shown.len();
        let tapped: Arc<dyn ExecutionPlan> = Arc::new(TapExec::new(
            plan,
            vec![key],
            Disclosure::Aggregated,
            sets.clone(),
        ));
        first_columns(tapped, key)
    }

    /// `secured` must be a [`SecuredTable`] that is [`SecuredTable::accounted`].
    pub(crate) fn new(secured: Arc<dyn TableProvider>, key_name: String) -> AccountedTable {
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            secured.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            key_name,
            DataType::Int64,
            true,
        )));
        AccountedTable {
            secured,
            schema: Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            whole: None,
            keyed: true,
        }
    }
}

/// `plan`'s first `n` columns (the key column after them dropped).
fn first_columns(plan: Arc<dyn ExecutionPlan>, n: usize) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let columns: Vec<(Arc<dyn PhysicalExpr>, String)> = (0..n)
        .map(|i| {
            let name = schema.field(i).name().clone();
            let column: Arc<dyn PhysicalExpr> = Arc::new(
                datafusion::physical_expr::expressions::Column::new(&name, i),
            );
            (column, name)
        })
        .collect();
    Ok(Arc::new(
        datafusion::physical_plan::projection::ProjectionExec::try_new(columns, plan)?,
    ))
}

#[async_trait]
impl TableProvider for AccountedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&DfExpr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.secured.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(secured) = self.secured.downcast_ref::<SecuredTable>() else {
            return datafusion::common::internal_err!("accounted table over an unsecured table");
        };
        if let Some(sets) = &self.whole
            && !self.keyed
        {
            return self
                .scan_whole(secured, sets, state, projection, filters)
                .await;
        }
        let key = self.schema.fields().len() - 1;
        let all: Vec<usize>;
        let projection = match projection {
            Some(p) => p,
            None => {
                all = (0..=key).collect();
                &all
            }
        };
        // The key, when asked for, comes last (as the rewrite asks).
        let (shown, key_as): (Vec<usize>, Option<&str>) = match projection.split_last() {
            Some((&last, rest)) if last == key => {
                (rest.to_vec(), Some(self.schema.field(key).name().as_str()))
            }
            _ => (projection.clone(), None),
        };
        if shown.iter().any(|&i| i >= key) {
            return datafusion::common::internal_err!("patient key out of place");
        }
        let Some(sets) = &self.whole else {
            return secured
                .scan_with(state, Some(&shown), filters, key_as)
                .await;
        };
        // A whole table with its key column: the patients from the key
        // indexes when every file read has one, else from the key column.
        use super::accounting::{Disclosure, tap::TapExec};
        let plan = secured
            .scan_with(
                state,
                Some(&shown),
                filters,
                Some(key_as.unwrap_or(super::accounting::KEY_COLUMN)),
            )
            .await?;
        let patients = match (&secured.whole, filters.is_empty()) {
            (Some(source), true) => plan
                .downcast_ref::<BarrierExec>()
                .and_then(|b| source.patients(&b.input)),
            _ => None,
        };
        let tapped: Arc<dyn ExecutionPlan> = match patients {
            Some(patients) => Arc::new(TapExec::whole(plan, Arc::new(patients), sets.clone())),
            None => Arc::new(TapExec::new(
                plan,
                vec![shown.len()],
                Disclosure::Aggregated,
                sets.clone(),
            )),
        };
        if key_as.is_some() {
            return Ok(tapped);
        }
        first_columns(tapped, shown.len())
    }
}

#[async_trait]
impl TableProvider for SecuredTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Only a leak-proof user predicate is evaluated inside the barrier,
    /// and it is also evaluated again above it (`Inexact`).
    fn supports_filters_pushdown(
        &self,
        filters: &[&DfExpr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.pushable(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.scan_with(state, projection, filters, None).await
    }
}

/// A plan node optimiser rules cannot see through: it forwards its child's
/// batches and accepts no filter, limit or projection from above.
#[derive(Debug)]
pub(crate) struct BarrierExec {
    input: Arc<dyn ExecutionPlan>,
    table: String,
    props: Arc<PlanProperties>,
}

impl BarrierExec {
    /// The policy subtree (raw scan, row filter, consent check, masks).
    pub(crate) fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The table's user-visible name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, table: String) -> BarrierExec {
        let props = input.properties().clone();
        BarrierExec {
            input,
            table,
            props,
        }
    }
}

impl DisplayAs for BarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // The policy subtree is not shown: EXPLAIN must not reveal filters.
        write!(f, "PolicyBarrier: table={}", self.table)
    }
}

impl ExecutionPlan for BarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrier"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    /// The policy subtree is not a child as far as the rest of the plan is
    /// concerned: optimiser passes cannot rewrite it (it was optimised when
    /// the scan was built) and EXPLAIN cannot print its filters.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// One figure for the hidden subtree: the CPU time of its operators
    /// and of decoding its Parquet files (what a distributed stage's
    /// metrics report per stage). No row count: how many rows the policy
    /// removed is not shown.
    fn metrics(&self) -> Option<MetricsSet> {
        use datafusion::physical_plan::metrics::{Metric, MetricValue, Time};
        let mut nanos = 0usize;
        let _ = self.input.apply(|node| {
            if let Some(m) = node.metrics() {
                nanos += m.elapsed_compute().unwrap_or(0);
                nanos += m
                    .sum_by_name("time_elapsed_processing")
                    .map_or(0, |v| v.as_usize());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let time = Time::new();
        time.add_duration(std::time::Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ));
        let mut set = MetricsSet::new();
        set.push(Arc::new(Metric::new(
            MetricValue::ElapsedCompute(time),
            None,
        )));
        Some(set)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            datafusion::common::internal_err!("PolicyBarrier takes no children")
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// SQL type for a typed NULL of a column.
fn sql_type(t: &DataType) -> ast::DataType {
    match t {
        DataType::Int64 | DataType::UInt32 => ast::DataType::BigInt(None),
        DataType::Int32 | DataType::Int16 | DataType::Int8 => ast::DataType::Int(None),
        DataType::Float64 | DataType::Float32 => ast::DataType::DoublePrecision,
        DataType::Boolean => ast::DataType::Boolean,
        DataType::Date32 | DataType::Date64 => ast::DataType::Date,
        DataType::Timestamp(TimeUnit::Microsecond, None) | DataType::Timestamp(_, None) => {
            ast::DataType::Timestamp(None, ast::TimezoneInfo::None)
        }
        DataType::Timestamp(_, Some(_)) => {
            ast::DataType::Timestamp(None, ast::TimezoneInfo::WithTimeZone)
        }
        DataType::Decimal128(p, s) => ast::DataType::Decimal(
            ast::ExactNumberInfo::PrecisionAndScale(*p as u64, *s as i64),
        ),
        _ => ast::DataType::Text,
    }
}

fn col(name: &str) -> Expr {
    Expr::CompoundIdentifier(vec![Ident::new("t"), Ident::with_quote('"', name)])
}

fn func(name: &str, args: Vec<Expr>) -> Expr {
    crate::rewrite::compat::call(name, args, vec![])
}

fn number(n: impl ToString) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}

fn string(s: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(s.to_owned()))
}

/// The expression that shows one column under the policy.
fn column_expr(column: &str, access: &ColumnAccess, ty: &DataType) -> Expr {
    let null = || Expr::Cast {
        kind: ast::CastKind::Cast,
        expr: Box::new(Expr::value(Value::Null)),
        data_type: sql_type(ty),
        array: false,
        format: None,
    };
    match access {
        ColumnAccess::Visible => col(column),
        ColumnAccess::Null => null(),
        ColumnAccess::Masked { kind, domain, .. } => match kind {
            MaskKind::Null => null(),
            MaskKind::Redact { value } => string(value),
            MaskKind::Partial { keep_last, prefix } => func(
                super::masks::PARTIAL,
                vec![col(column), number(keep_last), string(prefix)],
            ),
            // A record key is pseudonymised in its own key domain (a
            // literal from the validated policy); the patient domain is
            // the function's default.
            MaskKind::Pseudonym => match domain {
                Some(d) => func(super::masks::PSEUDONYM, vec![col(column), string(d)]),
                None => func(super::masks::PSEUDONYM, vec![col(column)]),
            },
            MaskKind::Year => func(super::masks::YEAR, vec![col(column)]),
            MaskKind::YearOrNullOverAge { max_age } => func(
                super::masks::YEAR_OR_NULL_OVER_AGE,
                vec![col(column), number(max_age)],
            ),
            MaskKind::Zip3 => func(super::masks::ZIP3, vec![col(column)]),
            MaskKind::Round { step } => {
                let s = number(step);
                Expr::BinaryOp {
                    left: Box::new(func(
                        "round",
                        vec![Expr::BinaryOp {
                            left: Box::new(col(column)),
                            op: BinaryOperator::Divide,
                            right: Box::new(s.clone()),
                        }],
                    )),
                    op: BinaryOperator::Multiply,
                    right: Box::new(s),
                }
            }
        },
    }
}

fn parse_expr(sql: &str) -> DfResult<Expr> {
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            datafusion::error::DataFusionError::Plan(format!("internal policy expression: {e}"))
        })
}

fn quoted_table(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// `[NOT] lakeward_consent_<set>(t.<key>)`: opt-out admits the patients
/// not in the refused set, opt-in those in the granted set (see
/// [`super::consent`]). Identifiers come from the validated policy.
fn consent_expr(check: &ConsentCheck, function: &str) -> DfResult<Expr> {
    let sql = format!(
        "{neg}\"{function}\"(\"t\".\"{key}\")",
        key = check.patient_key,
        neg = if check.model == ConsentModel::OptOut {
            "NOT "
        } else {
            ""
        },
    );
    parse_expr(&sql)
}

/// The consent set a check reads: refused for opt-out, granted for opt-in.
fn consent_decision(check: &ConsentCheck) -> super::consent::Decision {
    if check.model == ConsentModel::OptOut {
        super::consent::Decision::Refused
    } else {
        super::consent::Decision::Granted
    }
}

/// The internal statement: `SELECT <shown columns> FROM <raw> AS t WHERE <filter> AND <consent>`.
fn internal_statement(
    table: &str,
    access: &TableAccess,
    schema: &SchemaRef,
    consent_function: Option<&str>,
    accounting: bool,
) -> DfResult<Statement> {
    let dialect = PostgreSqlDialect {};
    let mut stmt = Parser::new(&dialect)
        .try_with_sql(&format!("SELECT 1 FROM {} AS t", quoted_table(table)))
        .and_then(|mut p| p.parse_statement())
        .map_err(|e| {
            datafusion::error::DataFusionError::Plan(format!("internal policy statement: {e}"))
        })?;
    let Statement::Query(q) = &mut stmt else {
        return datafusion::common::internal_err!("internal policy statement is not a query");
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return datafusion::common::internal_err!("internal policy statement is not a select");
    };
    select.projection = access
        .columns
        .iter()
        .map(|(name, a)| {
            let ty = schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Utf8);
            SelectItem::ExprWithAlias {
                expr: column_expr(name, a, &ty),
                alias: Ident::with_quote('"', name),
            }
        })
        .collect();
    if accounting && let Some(key) = accounted_key(access, schema) {
        // The stored patient key, for accounting only: never in the
        // table's shown schema.
        let stored = col(&key);
        let expr = if schema
            .field_with_name(&key)
            .is_ok_and(|f| f.data_type() == &DataType::Int64)
        {
            stored
        } else {
            Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: Box::new(stored),
                data_type: ast::DataType::BigInt(None),
                array: false,
                format: None,
            }
        };
        select.projection.push(SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', super::accounting::KEY_COLUMN),
        });
    }
    let mut conditions: Vec<Expr> = Vec::new();
    if let Some(f) = &access.row_filter {
        conditions.push(qualify(f.clone()));
    }
    if let Some(c) = &access.consent {
        // Fail closed: a consent check without its set admits no row.
        let Some(function) = consent_function else {
            return Err(datafusion::error::DataFusionError::Plan(
                "consent set unavailable".into(),
            ));
        };
        conditions.push(consent_expr(c, function)?);
    }
    select.selection = conditions.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    Ok(stmt)
}

/// The patient key a table's rows are accounted by: its `patient_key`,
/// when that is an integer column (patient ids are integers, as consent
/// sets read them).
fn accounted_key(access: &TableAccess, schema: &SchemaRef) -> Option<String> {
    let key = access.patient_key.as_ref()?;
    let field = schema.field_with_name(key).ok()?;
    field.data_type().is_integer().then(|| key.clone())
}

/// Whether every function `plan` calls is immutable (same arguments, same
/// result), so optimising it once gives the plan every later statement
/// would get. The consent-set probes are stable, not immutable, but they
/// are called on a column and never folded: they are the exception.
pub(crate) fn only_immutable_functions(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::Volatility;
    let mut immutable = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let DfExpr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                    && !f
                        .func
                        .name()
                        .starts_with(super::consent::CONSENT_FUNCTION_PREFIX)
                    && !f
                        .func
                        .name()
                        .starts_with(super::filter_sets::FILTER_SET_PREFIX)
                {
                    immutable = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    immutable
}

/// Policy filters name the table's columns bare; inside the internal statement
/// the table is aliased `t`, and bare names resolve to it. Nothing to change:
/// kept as a hook for future qualification rules.
fn qualify(e: Expr) -> Expr {
    e
}

/// Raw tables, visible only to the internal planning context.
pub(crate) struct RawTables {
    /// A DataFusion context whose catalog holds the raw Delta tables and the
    /// mask functions. Never handed to a client session.
    ctx: datafusion::execution::context::SessionContext,
    consent_sets: super::consent::ConsentSets,
    filter_sets: super::filter_sets::FilterSets,
    /// The audit log's patient index (`audit::index`), read by
    /// `audit.patient_access`.
    pub(crate) patient_index: Option<Arc<dyn TableProvider>>,
}

impl fmt::Debug for RawTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawTables")
    }
}

impl RawTables {
    pub(crate) fn new(ctx: datafusion::execution::context::SessionContext) -> RawTables {
        RawTables {
            ctx,
            consent_sets: Default::default(),
            filter_sets: Default::default(),
            patient_index: None,
        }
    }

    /// How many subquery row filters are answered from per-version sets.
    pub(crate) fn filter_sets(&self) -> usize {
        self.filter_sets.len()
    }

    pub(crate) async fn provider(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        let (s, t) = name.split_once('.')?;
        self.ctx.catalog(CATALOG)?.schema(s)?.table(t).await.ok()?
    }

    /// The consent set for `(rules, purpose, decision)`, brought to the
    /// consent table's newest version (a worker's copy of a coordinator's
    /// set: `cluster::codec`).
    pub(crate) async fn current_consent_set(
        &self,
        rules: &ConsentRules,
        purpose: crate::policy::Purpose,
        decision: super::consent::Decision,
    ) -> DfResult<Arc<super::consent::ConsentSet>> {
        let source = self.provider(&rules.table).await;
        let set = self
            .consent_sets
            .set_for(&self.ctx, source, rules, purpose, decision)?;
        set.refresh().await?;
        Ok(set)
    }

    /// The consent set a table's consent check reads.
    async fn consent_set(
        &self,
        access: &TableAccess,
        consent: &ConsentRules,
    ) -> DfResult<Option<Arc<super::consent::ConsentSet>>> {
        let Some(check) = &access.consent else {
            return Ok(None);
        };
        let source = self.provider(&consent.table).await;
        let set = self.consent_sets.set_for(
            &self.ctx,
            source,
            consent,
            check.purpose,
            consent_decision(check),
        )?;
        Ok(Some(set))
    }

    /// Compute, before the first statement needs them, the consent sets of
    /// every purpose in `purposes` that `consent` gives a model. A purpose
    /// whose set cannot be computed is skipped with a warning: its
    /// statements fail closed (and retry the computation) until it can.
    pub(crate) async fn warm_consent_sets(
        &self,
        consent: &ConsentRules,
        purposes: impl IntoIterator<Item = crate::policy::Purpose>,
    ) -> super::Warmed {
        let mut warm = super::Warmed::default();
        for purpose in purposes {
            let Some(model) = consent.purposes.get(&purpose) else {
                continue;
            };
            let check = ConsentCheck {
                model: *model,
                purpose,
                patient_key: consent.patient_key.clone(),
            };
            let source = self.provider(&consent.table).await;
            let set = self.consent_sets.set_for(
                &self.ctx,
                source,
                consent,
                purpose,
                consent_decision(&check),
            );
            match async { set?.refresh().await }.await {
                Ok(computed) => {
                    warm.current += 1;
                    warm.computed += usize::from(computed);
                }
                Err(e) => tracing::warn!(
                    purpose = purpose.as_str(),
                    error = %super::errors::to_sql_error(&e),
                    "consent set not computed ahead; statements compute it when they need it"
                ),
            }
        }
        warm
    }

    /// The raw schema of a table.
    pub(crate) async fn schema(&self, name: &str) -> Option<SchemaRef> {
        Some(self.provider(name).await?.schema())
    }

    /// The statement a secured table reads with, as SQL text for people
    /// (`lakeward policy explain`); never executed in this form.
    pub(crate) async fn explain_table(
        &self,
        name: &str,
        access: &TableAccess,
        consent: &ConsentRules,
    ) -> Option<String> {
        let schema = self.schema(name).await?;
        let set = self.consent_set(access, consent).await.ok()?;
        internal_statement(
            name,
            access,
            &schema,
            set.as_ref().map(|s| s.function_name()),
            false,
        )
        .ok()
        .map(|s| s.to_string())
    }

    /// Build the secured catalog for one access context.
    pub(crate) async fn secured_catalog(
        &self,
        access: Option<&AccessContext>,
        consent: &ConsentRules,
        static_tables: &Arc<datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables>,
    ) -> DfResult<(Arc<dyn CatalogProviderList>, Arc<super::catalog::Visible>)> {
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let mut schemas: BTreeMap<String, Arc<MemorySchemaProvider>> = BTreeMap::new();
        for (name, table_access) in access.into_iter().flat_map(|a| a.tables.iter()) {
            let Some(raw_schema) = self.schema(name).await else {
                continue;
            };
            let set = self.consent_set(table_access, consent).await?;
            // Subquery row filters read shared per-version sets instead.
            let mut rewritten;
            let mut filter_sets = Vec::new();
            let table_access = match &table_access.row_filter {
                Some(f) => {
                    let (f, sets) = self.filter_sets.rewrite(&self.ctx, self, f.clone()).await;
                    filter_sets = sets;
                    rewritten = table_access.clone();
                    rewritten.row_filter = Some(f);
                    &rewritten
                }
                None => table_access,
            };
            let key = accounted_key(table_access, &raw_schema);
            let accounted = key.is_some();
            // No row filter: consent alone decides which rows pass, so an
            // aggregate over all of them is accounted from the key indexes.
            let whole = match (&key, &table_access.row_filter) {
                (Some(column), None) => self.provider(name).await.and_then(|raw| {
                    let raw = raw.downcast_ref::<super::delta::LatestDeltaProvider>()?;
                    Some(super::accounting::whole::WholeSource {
                        column: column.clone(),
                        lookup: raw.lookup().clone(),
                        consent: set.clone(),
                    })
                }),
                _ => None,
            };
            let stmt = internal_statement(
                name,
                table_access,
                &raw_schema,
                set.as_ref().map(|s| s.function_name()),
                accounted,
            )?;
            // Taken after the consent set: its function is registered now.
            let state: SessionState = self.ctx.state();
            let plan = state
                .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
                .await?;
            // Shown columns: all but the accounting key.
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
                plan.schema()
                    .fields()
                    .iter()
                    .filter(|f| f.name() != super::accounting::KEY_COLUMN)
                    .cloned()
                    .collect::<Vec<_>>(),
            ));
            let preoptimised = only_immutable_functions(&plan);
            let plan = if preoptimised {
                state.optimize(&plan)?
            } else {
                plan
            };
            let (s, t) = name.split_once('.').unwrap_or((name.as_str(), ""));
            let passthrough = table_access
                .columns
                .iter()
                .filter(|(_, a)| matches!(a, ColumnAccess::Visible))
                .map(|(c, _)| c.clone())
                .collect();
            let pin_column = key.filter(|k| {
                table_access
                    .columns
                    .iter()
                    .any(|(c, a)| c == k && matches!(a, ColumnAccess::Visible))
            });
            let pseudonymised = table_access
                .columns
                .iter()
                .filter(|(_, a)| {
                    matches!(
                        a,
                        ColumnAccess::Masked {
                            kind: MaskKind::Pseudonym,
                            ..
                        }
                    )
                })
                .map(|(c, _)| c.clone())
                .collect();
            let provider = Arc::new(SecuredTable {
                name: name.clone(),
                plan,
                preoptimised,
                schema,
                passthrough,
                pseudonymised,
                consent: set,
                filter_sets,
                accounted,
                patient_keyed: table_access.patient_key.is_some(),
                pin_column,
                whole,
            });
            let schema_provider = schemas
                .entry(s.to_owned())
                .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
            schema_provider.register_table(t.to_owned(), provider)?;
        }
        // `public` always exists so that unqualified names resolve cleanly.
        schemas
            .entry("public".to_owned())
            .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
        let audit_schema = access
            .is_some_and(|a| a.tables.contains_key("audit.access_log"))
            .then(|| schemas.get("audit").cloned())
            .flatten();
        for (name, s) in schemas {
            catalog.register_schema(&name, s)?;
        }
        let list: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
        list.register_catalog(CATALOG.to_owned(), catalog.clone());
        // Auditors' views, planned over this catalog's secured audit table.
        if let Some(audit_schema) = audit_schema {
            let view_state =
                datafusion::execution::SessionStateBuilder::new_from_existing(self.ctx.state())
                    .with_catalog_list(list.clone())
                    .build();
            // Patient access accounting over the same secured log.
            if let Some(log) = audit_schema.table("access_log").await? {
                audit_schema.register_table(
                    "patient_access".to_owned(),
                    Arc::new(super::patient_access::PatientAccessTable::new(
                        log,
                        self.patient_index.clone(),
                    )),
                )?;
            }
            for (name, sql) in crate::engine::audit_views::VIEWS {
                let stmt = crate::rewrite::gate::parse(sql, Default::default())
                    .ok()
                    .and_then(|mut v| v.pop())
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Plan(format!("audit view {name}"))
                    })?;
                let plan = view_state
                    .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
                    .await?;
                audit_schema.register_table(
                    (*name).to_owned(),
                    Arc::new(datafusion::catalog::view::ViewTable::new(
                        plan,
                        Some((*sql).to_owned()),
                    )),
                )?;
            }
        }
        // The system catalog describes exactly what is registered above.
        let mut visible = super::catalog::Visible::default();
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for t in names {
                if let Some(table) = schema.table(&t).await? {
                    let view = table.table_type() == TableType::View;
                    visible
                        .tables
                        .push((schema_name.clone(), t, table.schema(), view));
                }
            }
        }
        visible
            .tables
            .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        super::catalog::register_system_schemas(&list, &visible, static_tables)?;
        Ok((list, Arc::new(visible)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{cast, col, lit};

    fn visible() -> std::collections::BTreeSet<String> {
        ["site_id", "patient_id"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn only_predicates_that_cannot_fail_over_unmasked_columns_are_leakproof() {
        let v = visible();
        // Comparisons of unmasked columns with given values may run early
        // (they prune files); the policy filter still applies above.
        for e in [
            col("patient_id").eq(lit(42_i64)),
            col("site_id")
                .eq(lit("S01"))
                .and(col("patient_id").gt(lit(5_i64))),
            col("site_id")
                .is_null()
                .or(col("patient_id").not_eq(lit(1_i64))),
            col("patient_id").between(lit(1_i64), lit(9_i64)),
            col("site_id").in_list(vec![lit("S01"), lit("S02")], false),
            DfExpr::Not(Box::new(col("site_id").eq(lit("S01")))),
        ] {
            assert!(leakproof(&e, &v), "{e}");
        }
        // A masked column, a cast, arithmetic, a function call or a pattern
        // could fail or tell something about rows the policy does not admit.
        for e in [
            col("ssn").eq(lit("123-45-6789")),
            cast(col("site_id"), DataType::Int64).eq(lit(1_i64)),
            (col("patient_id") / lit(0_i64)).eq(lit(1_i64)),
            col("patient_id").eq(cast(lit("x"), DataType::Int64)),
            datafusion::functions::expr_fn::length(col("site_id")).eq(lit(3_i64)),
            col("site_id").like(lit("S%")),
            col("site_id").eq(lit("S01")).and(col("ssn").is_null()),
            col("patient_id").in_list(vec![lit(1_i64), col("ssn")], false),
        ] {
            assert!(!leakproof(&e, &v), "{e}");
        }
    }
}
