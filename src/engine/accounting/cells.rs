//! Small-cell suppression in one pass over the rows (SPEC §8).
//!
//! The aggregation an aggregation policy applies to is run once, with the
//! statement's own aggregates and one more: [`CellUdaf`], whose state per
//! group is the set of its distinct patients per key column, kept only
//! until it reaches the policy's minimum (a group of at least that many
//! patients for every key is *saturated*: its state is dropped and it
//! costs one flag check per row from then on). A group that stays below
//! the minimum keeps its exact patients, and the distinct values of every
//! `count(DISTINCT x)` of the statement, so that [`ReleaseExec`], above
//! the aggregation, can release the saturated groups as they come and
//! merge the small ones into the remainder row (grouping columns NULL):
//! its counts and sums added, its minimum and maximum compared, its
//! averages from hidden sums and counts, its distinct counts from the
//! union of the small groups' distinct values, and its patients from the
//! union of theirs. The remainder is dropped while it covers fewer than
//! the minimum. A group whose grouping columns are all genuinely NULL
//! shares the remainder's row.
//!
//! Only aggregates that merge this way take the one-pass plan
//! (`groups::suppress` picks it); the others keep the two-pass plan.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue, Statistics, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, LogicalPlan, Signature,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Volatility,
};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;

use super::PatientSets;

/// The shape of one aggregation's cells: what [`CellUdaf`] is called with
/// (`keys` key columns, then `distinct` arguments of `count(DISTINCT …)`,
/// then, with `null_flag`, whether the row's grouping columns are all
/// NULL) and the minimum.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CellSpec {
    pub keys: usize,
    pub distinct: usize,
    pub null_flag: bool,
    pub min: u64,
}

/// The per-statement aggregate function carrying each group's cell.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct CellUdaf {
    spec: CellSpec,
    signature: Signature,
}

impl CellUdaf {
    pub(crate) fn new(spec: CellSpec) -> CellUdaf {
        CellUdaf {
            spec,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for CellUdaf {
    fn name(&self) -> &str {
        "lakeward_cell"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneCell(Cells::new(self.spec.clone()))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "cell"),
            DataType::Binary,
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Cells::new(self.spec.clone())))
    }
}

/// One group below the minimum (or the all-NULL group): its patients per
/// key and the distinct values (row-encoded) per `count(DISTINCT …)`.
#[derive(Debug, Default)]
struct Open {
    null_group: bool,
    keys: Vec<KeySet>,
    distinct: Vec<HashSet<Box<[u8]>>>,
    /// Bytes held, for the memory pool.
    bytes: usize,
}

impl Open {
    fn new(spec: &CellSpec) -> Open {
        Open {
            null_group: false,
            keys: vec![KeySet::default(); spec.keys],
            distinct: vec![HashSet::new(); spec.distinct],
            bytes: 64,
        }
    }

    fn saturated(&self, min: u64) -> bool {
        !self.null_group && self.keys.iter().all(|k| k.len() >= min)
    }

    fn add_key(&mut self, i: usize, key: i64) {
        if let Some(set) = self.keys.get_mut(i)
            && set.insert(key)
        {
            self.bytes += 8;
        }
    }

    fn add_distinct(&mut self, i: usize, value: &[u8]) {
        if let Some(set) = self.distinct.get_mut(i)
            && !set.contains(value)
        {
            self.bytes += value.len() + 32;
            set.insert(value.into());
        }
    }

    /// `[null_group u8] ([n u32] (i64)*)* ([n u32] ([len u32] bytes)*)*`
    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(u8::from(self.null_group));
        for set in &self.keys {
            out.extend_from_slice(&u32::try_from(set.len()).unwrap_or(u32::MAX).to_le_bytes());
            set.for_each(|k| out.extend_from_slice(&k.to_le_bytes()));
        }
        for set in &self.distinct {
            out.extend_from_slice(&u32::try_from(set.len()).unwrap_or(u32::MAX).to_le_bytes());
            for v in set {
                out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        Ok(())
    }

    /// Adds an encoded cell to this one; returns the fewest patients the
    /// encoded cell has for a key (whether it was below the minimum).
    fn merge_encoded(&mut self, spec: &CellSpec, mut bytes: &[u8]) -> Result<u64> {
        fn take_n<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            if bytes.len() < n {
                return internal_err!("cell state truncated");
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Ok(head)
        }
        fn take_u32(bytes: &mut &[u8]) -> Result<usize> {
            let b = take_n(bytes, 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let open = self;
        open.null_group |= take_n(&mut bytes, 1)?[0] != 0;
        let mut fewest = u64::MAX;
        for i in 0..spec.keys {
            let n = take_u32(&mut bytes)?;
            fewest = fewest.min(n as u64);
            let raw = take_n(&mut bytes, n.saturating_mul(8))?;
            for k in raw.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(k);
                open.add_key(i, i64::from_le_bytes(b));
            }
        }
        for i in 0..spec.distinct {
            let n = take_u32(&mut bytes)?;
            for _ in 0..n {
                let len = take_u32(&mut bytes)?;
                let v = take_n(&mut bytes, len)?;
                open.add_distinct(i, v);
            }
        }
        Ok(fewest)
    }
}

/// One key's distinct patients in an open cell: a few (a group below the
/// minimum holds fewer than it) in a vector, more in a bitmap.
#[derive(Debug, Clone)]
enum KeySet {
    Few(Vec<i64>),
    Many(roaring::RoaringTreemap),
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet::Few(Vec::new())
    }
}

impl KeySet {
    const FEW: usize = 32;

    /// Whether `k` is new.
    fn insert(&mut self, k: i64) -> bool {
        match self {
            KeySet::Few(v) if v.contains(&k) => false,
            KeySet::Few(v) if v.len() < Self::FEW => {
                v.push(k);
                true
            }
            KeySet::Few(v) => {
                let mut set: roaring::RoaringTreemap = v.drain(..).map(|k| k as u64).collect();
                set.insert(k as u64);
                *self = KeySet::Many(set);
                true
            }
            KeySet::Many(set) => set.insert(k as u64),
        }
    }

    fn len(&self) -> u64 {
        match self {
            KeySet::Few(v) => v.len() as u64,
            KeySet::Many(set) => set.len(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(i64)) {
        match self {
            KeySet::Few(v) => v.iter().for_each(|&k| f(k)),
            KeySet::Many(set) => set.iter().for_each(|k| f(k as i64)),
        }
    }
}

#[derive(Debug)]
enum Cell {
    Open(Box<Open>),
    Saturated,
}

/// The groups' cells (the groups accumulator).
#[derive(Debug)]
struct Cells {
    spec: CellSpec,
    groups: Vec<Cell>,
    bytes: usize,
}

impl Cells {
    fn new(spec: CellSpec) -> Cells {
        Cells {
            spec,
            groups: Vec::new(),
            bytes: 0,
        }
    }

    fn grow(&mut self, total: usize) {
        while self.groups.len() < total {
            let open = Open::new(&self.spec);
            self.bytes += open.bytes;
            self.groups.push(Cell::Open(Box::new(open)));
        }
    }

    /// Saturates group `g` if it has reached the minimum.
    fn settle(&mut self, g: usize) {
        if let Some(cell) = self.groups.get_mut(g)
            && let Cell::Open(open) = cell
            && open.saturated(self.spec.min)
        {
            self.bytes = self.bytes.saturating_sub(open.bytes);
            *cell = Cell::Saturated;
        }
    }

    fn update(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        self.grow(total);
        // The rows of groups still open: once every group has saturated,
        // a batch costs one pass over its group indices.
        let rows: Vec<u32> = group_indices
            .iter()
            .enumerate()
            .filter(|&(r, &g)| {
                matches!(self.groups.get(g), Some(Cell::Open(_)))
                    && filter.is_none_or(|f| f.is_valid(r) && f.value(r))
            })
            .map(|(r, _)| r as u32)
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let spec = self.spec.clone();
        let wanted = spec.keys + spec.distinct + usize::from(spec.null_flag);
        if values.len() != wanted {
            return internal_err!("lakeward_cell called with {} arguments", values.len());
        }
        let indices = UInt32Array::from(rows.clone());
        let keys = values[..spec.keys]
            .iter()
            .map(|a| cast(&take(a.as_ref(), &indices, None)?, &DataType::Int64))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut distinct = Vec::with_capacity(spec.distinct);
        for a in &values[spec.keys..spec.keys + spec.distinct] {
            let a = take(a.as_ref(), &indices, None)?;
            let converter = RowConverter::new(vec![SortField::new(a.data_type().clone())])?;
            let encoded = converter.convert_columns(std::slice::from_ref(&a))?;
            distinct.push((a, encoded));
        }
        let flag = if spec.null_flag {
            Some(take(
                values[spec.keys + spec.distinct].as_ref(),
                &indices,
                None,
            )?)
        } else {
            None
        };
        for (j, &r) in rows.iter().enumerate() {
            let g = group_indices[r as usize];
            let Some(Cell::Open(open)) = self.groups.get_mut(g) else {
                continue;
            };
            let before = open.bytes;
            if let Some(flag) = &flag {
                let flag = flag.as_boolean();
                open.null_group = flag.is_valid(j) && flag.value(j);
            }
            for (i, k) in keys.iter().enumerate() {
                let k = k.as_primitive::<Int64Type>();
                if k.is_valid(j) {
                    open.add_key(i, k.value(j));
                }
            }
            for (i, (a, encoded)) in distinct.iter().enumerate() {
                if a.is_valid(j) {
                    open.add_distinct(i, encoded.row(j).as_ref());
                }
            }
            self.bytes = self.bytes + open.bytes - before;
            self.settle(g);
        }
        Ok(())
    }

    fn merge(&mut self, states: &[ArrayRef], group_indices: &[usize], total: usize) -> Result<()> {
        self.grow(total);
        let Some(states) = states.first() else {
            return internal_err!("lakeward_cell merged without a state");
        };
        let states = states.as_binary::<i32>();
        for (r, &g) in group_indices.iter().enumerate() {
            if matches!(self.groups.get(g), Some(Cell::Saturated) | None) {
                continue;
            }
            if states.is_null(r) {
                if let Some(Cell::Open(open)) = self.groups.get(g) {
                    self.bytes = self.bytes.saturating_sub(open.bytes);
                }
                self.groups[g] = Cell::Saturated;
                continue;
            }
            if let Some(Cell::Open(open)) = self.groups.get_mut(g) {
                let before = open.bytes;
                open.merge_encoded(&self.spec, states.value(r))?;
                self.bytes = self.bytes + open.bytes - before;
            }
            self.settle(g);
        }
        Ok(())
    }

    /// The cells of `cells` as a Binary column: NULL for a saturated group.
    fn encode<'a>(cells: impl Iterator<Item = &'a Cell>) -> Result<ArrayRef> {
        let mut out = BinaryBuilder::new();
        let mut buf = Vec::new();
        for cell in cells {
            match cell {
                Cell::Saturated => out.append_null(),
                Cell::Open(open) => {
                    buf.clear();
                    open.encode(&mut buf)?;
                    out.append_value(&buf);
                }
            }
        }
        Ok(Arc::new(out.finish()))
    }

    fn emit(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.groups);
        for cell in &taken {
            if let Cell::Open(open) = cell {
                self.bytes = self.bytes.saturating_sub(open.bytes);
            }
        }
        Cells::encode(taken.iter())
    }
}

impl GroupsAccumulator for Cells {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.update(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.emit(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.merge(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // One cell per row.
        let n = values.first().map_or(0, |a| a.len());
        let mut cells = Cells::new(self.spec.clone());
        let rows: Vec<usize> = (0..n).collect();
        cells.update(values, &rows, opt_filter, n)?;
        Ok(vec![cells.emit(EmitTo::All)?])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Cell>() + self.bytes
    }
}

/// The same for an aggregation without groups (one cell).
#[derive(Debug)]
struct OneCell(Cells);

impl OneCell {
    fn value(&self) -> Result<ScalarValue> {
        let array = Cells::encode(self.0.groups.first().into_iter())?;
        if array.is_empty() {
            // No row: no patient.
            let mut buf = Vec::new();
            Open::new(&self.0.spec).encode(&mut buf)?;
            return Ok(ScalarValue::Binary(Some(buf)));
        }
        ScalarValue::try_from_array(&array, 0)
    }
}

impl Accumulator for OneCell {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let n = values.first().map_or(0, |a| a.len());
        self.0.update(values, &vec![0; n], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.value()
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.bytes
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let n = states.first().map_or(0, |a| a.len());
        self.0.merge(states, &vec![0; n], 1)
    }
}

/// How the remainder row gets one aggregate's value from the small
/// groups' values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum Merge {
    /// `count` and `sum`: added.
    Sum,
    Min,
    Max,
    And,
    Or,
    /// `avg`: the hidden `sum(CAST(x AS DOUBLE))` and `count(x)` at these
    /// columns, divided.
    Avg {
        sum: usize,
        count: usize,
    },
    /// `count(DISTINCT x)`: the union of the cells' distinct values number
    /// `distinct` of the cell.
    Distinct(usize),
}

/// What [`ReleaseExec`] needs to know about the aggregation below it:
/// `groups` grouping columns, then one column per `merges`, then hidden
/// columns, the cell last.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct Release {
    pub groups: usize,
    pub merges: Vec<Merge>,
    pub cell: usize,
    pub keys: usize,
    pub distinct: usize,
    pub null_flag: bool,
    pub min: u64,
}

impl Release {
    fn spec(&self) -> CellSpec {
        CellSpec {
            keys: self.keys,
            distinct: self.distinct,
            null_flag: self.null_flag,
            min: self.min,
        }
    }
}

/// The logical node over the aggregation: its output is the grouping
/// columns (nullable: the remainder's are NULL) and the statement's
/// aggregates.
#[derive(Debug, Clone)]
pub(crate) struct ReleaseCells {
    pub input: LogicalPlan,
    pub release: Release,
    pub schema: DFSchemaRef,
    pub sets: Arc<PatientSets>,
}

impl ReleaseCells {
    pub(crate) fn new(
        input: LogicalPlan,
        release: Release,
        sets: Arc<PatientSets>,
    ) -> Result<ReleaseCells> {
        let shown = release.groups + release.merges.len();
        let fields = input
            .schema()
            .iter()
            .take(shown)
            .enumerate()
            .map(|(i, (q, f))| {
                let f = if i < release.groups {
                    Arc::new(f.as_ref().clone().with_nullable(true))
                } else {
                    f.clone()
                };
                (q.cloned(), f)
            })
            .collect::<Vec<_>>();
        let schema = Arc::new(DFSchema::new_with_metadata(
            fields,
            input.schema().metadata().clone(),
        )?);
        Ok(ReleaseCells {
            input,
            release,
            schema,
            sets,
        })
    }
}

impl PartialEq for ReleaseCells {
    fn eq(&self, other: &Self) -> bool {
        self.release == other.release
            && Arc::ptr_eq(&self.sets, &other.sets)
            && self.input == other.input
    }
}

impl Eq for ReleaseCells {}

impl Hash for ReleaseCells {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.release.hash(state);
        self.input.hash(state);
    }
}

impl PartialOrd for ReleaseCells {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.release.partial_cmp(&other.release) {
            Some(Ordering::Equal) if self != other => None,
            o => o,
        }
    }
}

impl UserDefinedLogicalNodeCore for ReleaseCells {
    fn name(&self) -> &str {
        "SmallCellSuppression"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SmallCellSuppression: min_group_size={}",
            self.release.min
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("SmallCellSuppression takes one input");
        };
        ReleaseCells::new(input, self.release.clone(), self.sets.clone())
    }

    fn supports_limit_pushdown(&self) -> bool {
        false
    }
}

/// Plans [`ReleaseCells`] nodes.
#[derive(Debug)]
pub(crate) struct ReleasePlanner;

#[async_trait]
impl ExtensionPlanner for ReleasePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(release) = node.as_any().downcast_ref::<ReleaseCells>() else {
            return Ok(None);
        };
        let Some(input) = physical_inputs.first() else {
            return internal_err!("SmallCellSuppression takes one input");
        };
        let schema: SchemaRef = Arc::new(release.schema.as_arrow().clone());
        Ok(Some(Arc::new(ReleaseExec::new(
            input.clone(),
            release.release.clone(),
            schema,
            release.sets.clone(),
        ))))
    }
}

/// The physical node: releases the saturated groups as they come, then
/// the remainder when it covers the minimum.
#[derive(Debug)]
pub(crate) struct ReleaseExec {
    input: Arc<dyn ExecutionPlan>,
    release: Release,
    schema: SchemaRef,
    sets: Arc<PatientSets>,
    props: Arc<PlanProperties>,
}

impl ReleaseExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        release: Release,
        schema: SchemaRef,
        sets: Arc<PatientSets>,
    ) -> ReleaseExec {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Both,
            Boundedness::Bounded,
        ));
        ReleaseExec {
            input,
            release,
            schema,
            sets,
            props,
        }
    }
}

impl DisplayAs for ReleaseExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SmallCellSuppression: min_group_size={}",
            self.release.min
        )
    }
}

impl ExecutionPlan for ReleaseExec {
    fn name(&self) -> &str {
        "SmallCellSuppression"
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

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(ReleaseExec::new(
                input,
                self.release.clone(),
                self.schema.clone(),
                self.sets.clone(),
            ))),
            _ => internal_err!("SmallCellSuppression takes one input"),
        }
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("SmallCellSuppression has one partition");
        }
        let state = Releasing {
            input: Some(self.input.execute(0, context)?),
            remainder: Remainder::new(&self.release, &self.schema)?,
            release: self.release.clone(),
            schema: self.schema.clone(),
            sets: self.sets.clone(),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            let mut input = st.input.take()?;
            loop {
                let item = match input.next().await {
                    Some(Ok(batch)) => match st.remainder.fold(&batch, &st.release, &st.schema) {
                        Ok(Some(out)) => Ok(out),
                        Ok(None) => continue,
                        Err(e) => return Some((Err(e), st)),
                    },
                    Some(Err(e)) => return Some((Err(e), st)),
                    None => {
                        st.sets.add_suppressed(st.remainder.small);
                        return match st.remainder.finish(&st.release, &st.schema) {
                            Ok(Some(out)) => Some((Ok(out), st)),
                            Ok(None) => None,
                            Err(e) => Some((Err(e), st)),
                        };
                    }
                };
                st.input = Some(input);
                return Some((item, st));
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// A [`ReleaseExec`] stream's state: its input until it ends.
struct Releasing {
    input: Option<SendableRecordBatchStream>,
    remainder: Remainder,
    release: Release,
    schema: SchemaRef,
    sets: Arc<PatientSets>,
}

/// The remainder row being built, and the small groups counted.
#[derive(Debug, Default)]
struct Remainder {
    /// Whether a group joined it (a small one or the all-NULL group).
    any: bool,
    small: u64,
    saturated: bool,
    cell: Option<Open>,
    values: Vec<ScalarValue>,
    avg: Vec<(f64, i64)>,
}

impl Remainder {
    fn new(release: &Release, schema: &SchemaRef) -> Result<Remainder> {
        let values = (0..release.merges.len())
            .map(|i| ScalarValue::try_from(schema.field(release.groups + i).data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Remainder {
            values,
            avg: vec![(0.0, 0); release.merges.len()],
            ..Remainder::default()
        })
    }

    /// The batch's groups that cover the minimum (sent now); the others
    /// folded into the remainder.
    fn fold(
        &mut self,
        batch: &RecordBatch,
        release: &Release,
        schema: &SchemaRef,
    ) -> Result<Option<RecordBatch>> {
        let shown = release.groups + release.merges.len();
        let (Some(cells), true) = (
            batch
                .columns()
                .get(release.cell)
                .and_then(|c| c.as_binary_opt::<i32>()),
            batch.num_columns() > shown,
        ) else {
            return internal_err!("SmallCellSuppression: no cell column");
        };
        let spec = release.spec();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let all_null =
                release.groups > 0 && (0..release.groups).all(|j| batch.column(j).is_null(r));
            let big = cells.is_null(r) && !all_null;
            keep.push(big);
            if big {
                continue;
            }
            if cells.is_null(r) {
                self.saturated = true;
            } else {
                let cell = self.cell.get_or_insert_with(|| Open::new(&spec));
                if cell.merge_encoded(&spec, cells.value(r))? < release.min {
                    self.small += 1;
                }
            }
            // Without grouping columns the one group is shown or not.
            if release.groups == 0 {
                continue;
            }
            self.any = true;
            for (i, merge) in release.merges.iter().enumerate() {
                let value = || ScalarValue::try_from_array(batch.column(release.groups + i), r);
                let acc = &mut self.values[i];
                match merge {
                    Merge::Sum => {
                        let v = value()?;
                        if !v.is_null() {
                            *acc = if acc.is_null() { v } else { acc.add(&v)? };
                        }
                    }
                    Merge::Min | Merge::Max => {
                        let v = value()?;
                        let want = if matches!(merge, Merge::Min) {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        };
                        if !v.is_null() && (acc.is_null() || v.partial_cmp(acc) == Some(want)) {
                            *acc = v;
                        }
                    }
                    Merge::And | Merge::Or => {
                        if let ScalarValue::Boolean(Some(v)) = value()? {
                            let and = matches!(merge, Merge::And);
                            *acc = ScalarValue::Boolean(Some(match acc {
                                ScalarValue::Boolean(Some(a)) if and => *a && v,
                                ScalarValue::Boolean(Some(a)) => *a || v,
                                _ => v,
                            }));
                        }
                    }
                    Merge::Avg { sum, count } => {
                        if let ScalarValue::Float64(Some(s)) =
                            ScalarValue::try_from_array(batch.column(*sum), r)?
                        {
                            self.avg[i].0 += s;
                        }
                        if let ScalarValue::Int64(Some(c)) =
                            ScalarValue::try_from_array(batch.column(*count), r)?
                        {
                            self.avg[i].1 += c;
                        }
                    }
                    // From the cells' distinct values, at the end.
                    Merge::Distinct(_) => {}
                }
            }
        }
        let shown = RecordBatch::try_new(schema.clone(), batch.columns()[..shown].to_vec())?;
        let out = filter_record_batch(&shown, &BooleanArray::from(keep))?;
        Ok((out.num_rows() > 0).then_some(out))
    }

    /// The remainder row, when it covers the minimum for every key.
    fn finish(&mut self, release: &Release, schema: &SchemaRef) -> Result<Option<RecordBatch>> {
        if !self.any {
            return Ok(None);
        }
        let covered = self.saturated
            || self
                .cell
                .as_ref()
                .is_some_and(|c| c.keys.iter().all(|k| k.len() >= release.min));
        if !covered {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = (0..release.groups)
            .map(|j| new_null_array(schema.field(j).data_type(), 1))
            .collect();
        for (i, merge) in release.merges.iter().enumerate() {
            let value = match merge {
                Merge::Avg { .. } => {
                    let (s, c) = self.avg[i];
                    ScalarValue::Float64((c > 0).then(|| s / c as f64))
                }
                Merge::Distinct(d) => {
                    // A group merged without its distinct values would
                    // make this count wrong: fail instead.
                    let (false, Some(cell)) = (self.saturated, self.cell.as_ref()) else {
                        return internal_err!("remainder distinct count without values");
                    };
                    ScalarValue::Int64(Some(cell.distinct.get(*d).map_or(0, |s| s.len()) as i64))
                }
                _ => self.values[i].clone(),
            };
            // Added decimals widen; the column's own type is kept (an
            // overflow is an error, not a wrong value).
            let field = schema.field(release.groups + i);
            columns.push(value.cast_to(field.data_type())?.to_array_of_size(1)?);
        }
        Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
    }
}
