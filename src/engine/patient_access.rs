//! `audit.patient_access` (SPEC §9): one row per statement and patient it
//! touched, read from the completion records of `audit.access_log` (the
//! session's secured table, so the policy over the log applies).
//!
//! Each completion record of a statement that read patient-keyed rows
//! holds its two patient sets (`audit::patients`) and the bounds of their
//! ids. A condition on `patient_id` (`=`, `IN`) is answered from the
//! patient index (`audit::index`): the index rows of the patients' chunks
//! name the records (instance, seq) whose sets hold them, and only those
//! records' columns are read from the log, never a patient set (without an
//! index, records whose bounds hold the patient are read and their sets
//! decoded). Conditions on `disclosure` and `ts` also go to the index;
//! conditions on `ts`, `user`, `purpose`, `statement_kind`, `decision` and
//! `session_id` go down to the log scan as written. Every condition is
//! still evaluated above. The rows come from the session's secured log:
//! an index row whose record the session cannot read yields nothing.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, LogicalPlanBuilder, Operator, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// The columns of the log a condition may go down to, unchanged.
const LOG_COLUMNS: &[&str] = &[
    "ts",
    "user",
    "purpose",
    "statement_kind",
    "decision",
    "session_id",
];

/// The log columns read, in this order (the expansion reads them by
/// position): [`SHOWN`], then the record's two patient sets ([`READ`]) or,
/// when the index names the records, their place in the chain
/// ([`READ_INDEXED`]).
const SHOWN: [&str; 13] = [
    "ts",
    "user",
    "roles",
    "purpose",
    "break_glass",
    "statement_kind",
    "tables",
    "decision",
    "sqlstate",
    "rows_returned",
    "session_id",
    "client_addr",
    "parent_event_id",
];
const READ: [&str; 2] = ["patients_returned", "patients_aggregated"];
const READ_INDEXED: [&str; 2] = ["instance", "seq"];

/// The most record numbers a lookup names in its log condition (beyond,
/// the bounds and the number range alone select the log rows).
const MAX_SEQ_LIST: usize = 1024;

/// Records (instance, seq) → the (patient, returned?) pairs the index
/// found in them.
type Matches = HashMap<(String, i64), Vec<(i64, bool)>>;

/// How the expansion finds each record's patients.
#[derive(Debug)]
enum Source {
    /// Decode the record's sets (all patients, or only these).
    Sets(Option<BTreeSet<i64>>),
    /// The patient index's findings.
    Index(Matches),
}

/// The view's schema.
pub(crate) fn schema() -> SchemaRef {
    let list = |n: &str| {
        Field::new(
            n,
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            true,
        )
    };
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("patient_id", DataType::Int64, false),
        Field::new("disclosure", DataType::Utf8, false),
        text("user"),
        list("roles"),
        text("purpose"),
        text("break_glass"),
        text("statement_kind"),
        list("tables"),
        text("decision"),
        text("sqlstate"),
        Field::new("rows_returned", DataType::Int64, true),
        text("session_id"),
        text("client_addr"),
        text("event_id"),
    ]))
}

/// `audit.patient_access` over one session's secured `audit.access_log`.
#[derive(Debug)]
pub(crate) struct PatientAccessTable {
    log: Arc<dyn TableProvider>,
    /// The patient index of the log (`audit::index`), when served.
    index: Option<Arc<dyn TableProvider>>,
    schema: SchemaRef,
}

impl PatientAccessTable {
    pub(crate) fn new(
        log: Arc<dyn TableProvider>,
        index: Option<Arc<dyn TableProvider>>,
    ) -> PatientAccessTable {
        PatientAccessTable {
            log,
            index,
            schema: schema(),
        }
    }
}

/// The disclosure a condition restricts rows to (`Some(true)`: returned).
fn disclosure_of(e: &Expr) -> Option<bool> {
    let Expr::BinaryExpr(b) = e else {
        return None;
    };
    if b.op != Operator::Eq {
        return None;
    }
    let (c, v) = match (b.left.as_ref(), b.right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    if c.name != "disclosure" {
        return None;
    }
    match v.to_string().as_str() {
        "returned" => Some(true),
        "aggregated" => Some(false),
        _ => None,
    }
}

/// Whether a condition reads only `ts`, with constants (the index has it).
fn ts_condition(e: &Expr) -> bool {
    let mut only_ts = true;
    let _ = e.apply(|e| {
        if let Expr::Column(c) = e
            && c.name != "ts"
        {
            only_ts = false;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    only_ts && log_condition(e)
}

/// Names a condition's columns without their table qualifier.
fn unqualified(e: &Expr) -> Result<Expr> {
    Ok(e.clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => datafusion::common::tree_node::Transformed::yes(Expr::Column(
                    Column::from_name(c.name),
                )),
                e => datafusion::common::tree_node::Transformed::no(e),
            })
        })?
        .data)
}

/// Reads the index rows of `wanted`'s chunks and keeps the records whose
/// chunk members hold a wanted patient.
async fn index_matches(
    session: &SessionState,
    index: Arc<dyn TableProvider>,
    wanted: &BTreeSet<i64>,
    filters: &[Expr],
) -> Result<Matches> {
    use crate::audit::index::{binary_at, chunk_of, contains, text_at};
    let chunks: BTreeSet<i64> = wanted.iter().map(|p| chunk_of(*p)).collect();
    let mut condition = col("chunk").in_list(chunks.iter().map(|c| lit(*c)).collect(), false);
    let disclosures: BTreeSet<bool> = filters.iter().filter_map(disclosure_of).collect();
    if disclosures.len() == 1
        && let Some(d) = disclosures.first()
    {
        condition = condition.and(col("returned").eq(lit(*d)));
    }
    for f in filters.iter().filter(|f| ts_condition(f)) {
        condition = condition.and(unqualified(f)?);
    }
    let plan = LogicalPlanBuilder::scan("patient_index", provider_as_source(index), None)?
        .filter(condition)?
        .project(
            ["chunk", "returned", "members", "instance", "seq"]
                .iter()
                .map(|c| col(Column::from_name(*c))),
        )?
        .build()?;
    let physical = session.create_physical_plan(&plan).await?;
    let mut stream = datafusion::physical_plan::execute_stream(physical, session.task_ctx())?;
    let mut matches = Matches::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let chunk = batch
            .column(0)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>();
        let returned = batch.column(1).as_boolean_opt();
        let seq = batch
            .column(4)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>();
        let (Some(chunk), Some(returned), Some(seq)) = (chunk, returned, seq) else {
            return datafusion::common::internal_err!("patient index columns");
        };
        for row in 0..batch.num_rows() {
            let Some(members) = binary_at(batch.column(2).as_ref(), row) else {
                continue;
            };
            let c = chunk.value(row);
            for p in wanted.iter().filter(|p| chunk_of(**p) == c) {
                if contains(members, *p) {
                    let instance = text_at(batch.column(3).as_ref(), row).unwrap_or_default();
                    matches
                        .entry((instance.to_owned(), seq.value(row)))
                        .or_default()
                        .push((*p, returned.value(row)));
                }
            }
        }
    }
    Ok(matches)
}

/// The patient ids a condition restricts `patient_id` to, if it does.
fn patients_of(e: &Expr) -> Option<BTreeSet<i64>> {
    let is_key = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "patient_id");
    let value = |e: &Expr| match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(v)) => Some(v),
            _ => None,
        },
        _ => None,
    };
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            if is_key(&b.left) {
                value(&b.right).map(|v| BTreeSet::from([v]))
            } else if is_key(&b.right) {
                value(&b.left).map(|v| BTreeSet::from([v]))
            } else {
                None
            }
        }
        Expr::InList(l) if !l.negated && is_key(&l.expr) => {
            l.list.iter().map(value).collect::<Option<BTreeSet<i64>>>()
        }
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let mut a = patients_of(&b.left)?;
            a.extend(patients_of(&b.right)?);
            Some(a)
        }
        _ => None,
    }
}

/// Whether a condition reads only log columns of the same name, with
/// constants (it can go down to the log scan as written).
fn log_condition(e: &Expr) -> bool {
    let mut ok = true;
    let _ = e.apply(|e| {
        match e {
            Expr::Column(c) if !LOG_COLUMNS.contains(&c.name.as_str()) => ok = false,
            Expr::Column(_)
            | Expr::Literal(..)
            | Expr::BinaryExpr(_)
            | Expr::Not(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::Between(_)
            | Expr::InList(_)
            | Expr::Cast(_) => {}
            _ => ok = false,
        }
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok
}

use datafusion::common::tree_node::TreeNode;

#[async_trait]
impl TableProvider for PatientAccessTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if patients_of(f).is_some() || log_condition(f) {
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
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(session) = state.as_any().downcast_ref::<SessionState>() else {
            return datafusion::common::internal_err!("patient_access needs a session");
        };
        // Patients asked about: the intersection of every condition naming
        // them (`None`: all).
        let mut wanted: Option<BTreeSet<i64>> = None;
        for f in filters {
            if let Some(p) = patients_of(f) {
                wanted = Some(match wanted {
                    None => p,
                    Some(w) => w.intersection(&p).copied().collect(),
                });
            }
        }
        let completion = col("event").eq(lit(crate::audit::record::event::COMPLETION));
        let mut condition = completion.clone().and(
            col("patients_returned")
                .is_not_null()
                .or(col("patients_aggregated").is_not_null()),
        );
        // With an index, the records that hold the patients are known
        // before the log is read, and no condition may name a patient set
        // column: evaluating it would read every set.
        let mut source = Source::Sets(wanted.clone());
        let mut read = READ;
        if let (Some(w), Some(index)) = (&wanted, &self.index) {
            condition = completion;
            let matches = index_matches(session, index.clone(), w, filters).await?;
            let seqs: BTreeSet<i64> = matches.keys().map(|(_, s)| *s).collect();
            condition = match (seqs.first(), seqs.last()) {
                (Some(lo), Some(hi)) => condition.and(col("seq").between(lit(*lo), lit(*hi))),
                _ => lit(false),
            };
            // A few records: their own numbers (a long list measured far
            // slower over ten million statements: 46–56 s against 3–6 s).
            if !seqs.is_empty() && seqs.len() <= MAX_SEQ_LIST {
                condition = condition
                    .and(col("seq").in_list(seqs.iter().map(|s| lit(*s)).collect(), false));
            }
            source = Source::Index(matches);
            read = READ_INDEXED;
        }
        if let Some(w) = &wanted {
            // Records whose id bounds hold one of the patients.
            let within = w
                .iter()
                .map(|p| {
                    col("patient_id_min")
                        .lt_eq(lit(*p))
                        .and(col("patient_id_max").gt_eq(lit(*p)))
                })
                .reduce(Expr::or)
                .unwrap_or(lit(false));
            condition = condition.and(within);
        }
        for f in filters.iter().filter(|f| log_condition(f)) {
            condition = condition.and(unqualified(f)?);
        }
        let plan =
            LogicalPlanBuilder::scan("access_log", provider_as_source(self.log.clone()), None)?
                .filter(condition)?
                .project(
                    SHOWN
                        .iter()
                        .chain(read.iter())
                        .map(|c| col(Column::from_name(*c))),
                )?
                .build()?;
        let input = if matches!(source, Source::Index(_)) {
            // The records the index named are a sliver of the log: decode
            // the filter's columns first and the others only for the rows
            // that pass (Parquet late materialisation).
            let mut narrow = session.clone();
            let parquet = &mut narrow.config_mut().options_mut().execution.parquet;
            parquet.pushdown_filters = true;
            parquet.reorder_filters = true;
            narrow.create_physical_plan(&plan).await?
        } else {
            session.create_physical_plan(&plan).await?
        };
        let output = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(ExpandExec::new(
            input,
            output,
            projection.cloned(),
            Arc::new(source),
        )))
    }
}

/// Completion records → one row per (statement, patient).
#[derive(Debug)]
struct ExpandExec {
    input: Arc<dyn ExecutionPlan>,
    projection: Option<Vec<usize>>,
    source: Arc<Source>,
    props: Arc<PlanProperties>,
}

impl ExpandExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        output: SchemaRef,
        projection: Option<Vec<usize>>,
        source: Arc<Source>,
    ) -> ExpandExec {
        let props = PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(output),
            input.properties().partitioning.clone(),
            input.properties().emission_type,
            input.properties().boundedness,
        );
        ExpandExec {
            input,
            projection,
            source,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for ExpandExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.source.as_ref() {
            Source::Index(m) => write!(f, "PatientAccess: index, records={}", m.len()),
            Source::Sets(_) => write!(f, "PatientAccess: patient sets"),
        }
    }
}

impl ExecutionPlan for ExpandExec {
    fn name(&self) -> &str {
        "PatientAccess"
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

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(ExpandExec::new(
                input,
                self.props.eq_properties.schema().clone(),
                self.projection.clone(),
                self.source.clone(),
            ))),
            _ => datafusion::common::internal_err!("PatientAccess takes one input"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(ExpandStream {
            input: self.input.execute(partition, context)?,
            schema: self.props.eq_properties.schema().clone(),
            projection: self.projection.clone(),
            source: self.source.clone(),
            batch: None,
            row: 0,
            pending: Vec::new(),
            pos: 0,
            out: Vec::new(),
            done: false,
        }))
    }
}

/// The row count of an output batch's columns (the patient column).
fn patient_rows(columns: &[ArrayRef]) -> usize {
    columns.get(1).map_or(0, |c| c.len())
}

use crate::audit::index::text_at;

/// Rows out per batch.
const BATCH_ROWS: usize = 8192;

struct ExpandStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    source: Arc<Source>,
    /// The log batch being expanded and its next row.
    batch: Option<RecordBatch>,
    row: usize,
    /// The current record's (patient, returned?) pairs still to emit.
    pending: Vec<(i64, bool)>,
    pos: usize,
    /// Rows of the next output batch: (record row, patient, returned?).
    out: Vec<(u32, i64, bool)>,
    done: bool,
}

impl ExpandStream {
    /// The (patient, returned?) pairs of record `row`.
    fn patients(&self, batch: &RecordBatch, row: usize) -> Result<Vec<(i64, bool)>> {
        let wanted = match self.source.as_ref() {
            Source::Sets(w) => w,
            Source::Index(matches) => {
                let instance = text_at(batch.column(13).as_ref(), row).unwrap_or_default();
                let Some(seq) = batch
                    .column(14)
                    .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
                    .filter(|a| !a.is_null(row))
                    .map(|a| a.value(row))
                else {
                    return Ok(Vec::new());
                };
                return Ok(matches
                    .get(&(instance.to_owned(), seq))
                    .cloned()
                    .unwrap_or_default());
            }
        };
        let mut pairs = Vec::new();
        for (column, returned) in [(13, true), (14, false)] {
            let Some(text) = text_at(batch.column(column).as_ref(), row) else {
                continue;
            };
            let set = crate::audit::patients::decode(text)
                .map_err(datafusion::error::DataFusionError::Execution)?;
            match wanted {
                Some(w) => pairs.extend(
                    w.iter()
                        .filter(|p| set.contains(**p as u64))
                        .map(|p| (*p, returned)),
                ),
                None => pairs.extend(crate::audit::patients::ids(&set).map(|p| (p, returned))),
            }
        }
        Ok(pairs)
    }

    /// The output batch of `out` over the current log batch.
    fn emit(&mut self) -> Result<RecordBatch> {
        let Some(batch) = &self.batch else {
            return datafusion::common::internal_err!("no log batch");
        };
        let rows: UInt32Array = self.out.iter().map(|(r, _, _)| *r).collect();
        let take = |i: usize| -> Result<ArrayRef> {
            Ok(datafusion::arrow::compute::take(
                batch.column(i),
                &rows,
                None,
            )?)
        };
        let patient: Int64Array = self.out.iter().map(|(_, p, _)| *p).collect();
        let disclosure: StringArray = self
            .out
            .iter()
            .map(|(_, _, r)| Some(if *r { "returned" } else { "aggregated" }))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            take(0)?,
            Arc::new(patient),
            Arc::new(disclosure),
            take(1)?,
            take(2)?,
            take(3)?,
            take(4)?,
            take(5)?,
            take(6)?,
            take(7)?,
            take(8)?,
            take(9)?,
            take(10)?,
            take(11)?,
            take(12)?,
        ];
        self.out.clear();
        let full = schema();
        let columns = columns
            .into_iter()
            .zip(full.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(datafusion::arrow::compute::cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = patient_rows(&columns);
        let all = RecordBatch::try_new(full, columns)?;
        let out = match &self.projection {
            Some(p) => all.project(p)?,
            None => all,
        };
        // `count(*)` projects no column: the batch still has its rows.
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            out.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

impl Stream for ExpandStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if this.out.len() >= BATCH_ROWS {
                return Poll::Ready(Some(this.emit()));
            }
            if this.pos < this.pending.len() {
                let n = (BATCH_ROWS - this.out.len()).min(this.pending.len() - this.pos);
                let row = (this.row - 1) as u32;
                this.out.extend(
                    this.pending[this.pos..this.pos + n]
                        .iter()
                        .map(|(p, r)| (row, *p, *r)),
                );
                this.pos += n;
                continue;
            }
            if let Some(batch) = this.batch.clone()
                && this.row < batch.num_rows()
            {
                let row = this.row;
                this.row += 1;
                match this.patients(&batch, row) {
                    Ok(p) => {
                        this.pending = p;
                        this.pos = 0;
                    }
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                continue;
            }
            if !this.out.is_empty() {
                return Poll::Ready(Some(this.emit()));
            }
            match this.input.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(b))) => {
                    this.batch = Some(b);
                    this.row = 0;
                    this.pending.clear();
                    this.pos = 0;
                }
            }
        }
    }
}

impl RecordBatchStream for ExpandStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_conditions_are_recognised() {
        let p = |e: Expr| patients_of(&e).map(|s| s.into_iter().collect::<Vec<_>>());
        assert_eq!(p(col("patient_id").eq(lit(5_i64))), Some(vec![5]));
        assert_eq!(p(lit(7_i32).eq(col("patient_id"))), Some(vec![7]));
        assert_eq!(
            p(col("patient_id").in_list(vec![lit(3_i64), lit(1_i64)], false)),
            Some(vec![1, 3])
        );
        assert_eq!(
            p(col("patient_id")
                .eq(lit(1_i64))
                .or(col("patient_id").eq(lit(2_i64)))),
            Some(vec![1, 2])
        );
        assert_eq!(p(col("patient_id").gt(lit(5_i64))), None);
        assert_eq!(p(col("patient_id").in_list(vec![lit(1_i64)], true)), None);
        assert_eq!(p(col("user").eq(lit("x"))), None);
        assert!(log_condition(&col("user").eq(lit("alice"))));
        assert!(log_condition(&col("ts").gt(lit(1_i64))));
        assert!(!log_condition(&col("patient_id").eq(lit(1_i64))));
        assert!(!log_condition(&col("event_id").eq(lit("x"))));
    }
}
