//! `count` with the memory of `count(DISTINCT <string>)` accounted.
//!
//! DataFusion 55 counts distinct strings per group with one hash set per
//! group (`ArrowBytesViewSet` for `Utf8View`, `ArrowBytesSet` for `Utf8`),
//! each allocated at its warm-up size (512 and 128 entries) before it holds
//! anything, and its `size()` leaves that first allocation out (upstream
//! apache/datafusion#21248, fixed after 55 by #24857). A grouped
//! `count(DISTINCT s)` next to another aggregate (which keeps DataFusion
//! from rewriting it into two groupings) over some hundred thousand groups
//! then holds tens of GB the memory pool never saw: the budget
//! (`[memory]`, `engine::memory`) did not stop it and the process was
//! killed. This wrapper is DataFusion's `count` in every respect but one:
//! a distinct string accumulator reports its hash set's first allocation
//! too, so the pool sees what the statement holds and the aggregation
//! spills or fails with 53200 within the budget.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};

/// Bytes a distinct accumulator over `data_type` holds before its first
/// value beyond what its `size()` reports (generously rounded up: hashbrown
/// allocates a power of two of buckets of 32-byte entries plus a control
/// byte each).
fn unreported(data_type: &DataType) -> usize {
    match data_type {
        // 512 entries: 1,024 buckets.
        DataType::Utf8View | DataType::BinaryView => 36 * 1024,
        // 128 entries: 256 buckets.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
            10 * 1024
        }
        DataType::Dictionary(_, values) => unreported(values),
        _ => 0,
    }
}

/// DataFusion's `count`, with distinct string accumulators' first
/// allocation reported.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct AccountedCount {
    inner: Arc<AggregateUDF>,
}

/// The `count` aggregate client sessions plan with.
pub(crate) fn accounted_count() -> AggregateUDF {
    AggregateUDF::new_from_impl(AccountedCount {
        inner: datafusion::functions_aggregate::count::count_udaf(),
    })
}

impl AggregateUDFImpl for AccountedCount {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let pad = match (args.is_distinct, args.expr_fields.first()) {
            (true, Some(f)) => unreported(f.data_type()),
            _ => 0,
        };
        let inner = self.inner.accumulator(args)?;
        Ok(if pad == 0 {
            inner
        } else {
            Box::new(Reported { inner, pad })
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_udf()
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(statistics_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }
}

/// An accumulator whose `size()` adds what its inner one leaves out.
#[derive(Debug)]
struct Reported {
    inner: Box<dyn Accumulator>,
    pad: usize,
}

impl Accumulator for Reported {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.inner.evaluate()
    }

    fn size(&self) -> usize {
        self.inner.size() + self.pad
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn a_grouped_distinct_string_count_reports_its_hash_sets() {
        // A budget the unaccounted hash sets of 20,000 groups (≈ 700 MB
        // in DataFusion 55) pass and the data itself does not: refused
        // (or spilled) within it, never run past it.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(64 * 1024 * 1024, 1.0)
            .with_disk_manager_builder(
                datafusion::execution::disk_manager::DiskManagerBuilder::default()
                    .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled),
            )
            .build_arc()
            .unwrap();
        let sql = "SELECT g, count(*), count(DISTINCT s) FROM \
                   (SELECT v % 20000 AS g, arrow_cast('v' || CAST(v % 7 AS VARCHAR), 'Utf8View') AS s \
                    FROM generate_series(0, 39999) AS t(v)) GROUP BY g";
        let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
        ctx.register_udaf(accounted_count());
        let got = ctx.sql(sql).await.unwrap().collect().await;
        let Err(e) = got else {
            panic!("20,000 distinct-string sets ran within 64 MB");
        };
        assert!(e.to_string().contains("Resources exhausted"), "{e}");
        // The same count under a budget that holds it.
        let ctx = SessionContext::new();
        ctx.register_udaf(accounted_count());
        let rows: usize = ctx
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 20_000);
    }
}
