//! `array_agg` that keeps an oid tag: PostgreSQL's `array_agg(atttypid)`
//! is an `oid[]`.
//!
//! Catalog oids are `int4` values whose field is tagged as an oid
//! (`pg.oid_alias`), which is how a result column is described as `oid`
//! and sent as one. DataFusion's `array_agg` builds its list element from
//! the input's type alone, so the tag is lost and `array_agg` of oids is
//! described as `int4[]` — a type asyncpg, for one, only knows by running
//! its type introspection, whose own `attrtypoids` column is that
//! `array_agg`. This aggregate is DataFusion's, registered under the same
//! name, except that over a tagged `int4` input its list element carries
//! the tag (in the plan's type and in the values it returns), so the
//! result is described as `oid[]` (`engine::encode::pg_fields`). Over any
//! other input it is DataFusion's `array_agg` unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_pg::datatypes::PG_OID_ALIAS_KEY;
use datafusion::arrow::array::{ArrayRef, ListArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Expr, GroupsAccumulator, Operator,
    ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};

/// The aggregate, ready for `SessionContext::register_udaf`.
pub(crate) fn oid_array_agg() -> AggregateUDF {
    let inner = datafusion::functions_aggregate::array_agg::array_agg_udaf();
    AggregateUDF::new_from_impl(OidArrayAgg {
        inner: Arc::clone(inner.inner()).into(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OidArrayAgg {
    inner: UdfEq<Arc<dyn AggregateUDFImpl>>,
}

impl OidArrayAgg {
    fn around(inner: Arc<dyn AggregateUDFImpl>) -> Arc<dyn AggregateUDFImpl> {
        Arc::new(OidArrayAgg {
            inner: inner.into(),
        })
    }
}

/// The oid tag of an `int4` field, alone, when it has one.
fn oid_tag(f: &Field) -> Option<HashMap<String, String>> {
    if *f.data_type() != DataType::Int32 {
        return None;
    }
    let kind = f.metadata().get(PG_OID_ALIAS_KEY)?;
    Some(HashMap::from([(PG_OID_ALIAS_KEY.to_owned(), kind.clone())]))
}

/// The tagged list element of a return field, when it has one.
fn tagged_element(f: &Field) -> Option<FieldRef> {
    match f.data_type() {
        DataType::List(elem) if oid_tag(elem).is_some() => Some(Arc::clone(elem)),
        _ => None,
    }
}

/// An accumulator whose list values get the tagged element field.
#[derive(Debug)]
struct Tagged {
    inner: Box<dyn Accumulator>,
    element: FieldRef,
}

impl Tagged {
    fn wrap(inner: Box<dyn Accumulator>, return_field: &Field) -> Box<dyn Accumulator> {
        match tagged_element(return_field) {
            Some(element) => Box::new(Tagged { inner, element }),
            None => inner,
        }
    }
}

impl Accumulator for Tagged {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        match self.inner.evaluate()? {
            ScalarValue::List(list) => {
                let (_, offsets, values, nulls) = list.as_ref().clone().into_parts();
                let list = ListArray::try_new(Arc::clone(&self.element), offsets, values, nulls)?;
                Ok(ScalarValue::List(Arc::new(list)))
            }
            other => Ok(other),
        }
    }

    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of::<FieldRef>()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

impl AggregateUDFImpl for OidArrayAgg {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> DfResult<FieldRef> {
        let field = self.inner.return_field(arg_fields)?;
        let tag = arg_fields.first().and_then(|f| oid_tag(f));
        match (tag, field.data_type()) {
            (Some(tag), DataType::List(elem)) => {
                let elem = elem.as_ref().clone().with_metadata(tag);
                Ok(Arc::new(
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(DataType::List(Arc::new(elem))),
                ))
            }
            _ => Ok(field),
        }
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let return_field = Arc::clone(&acc_args.return_field);
        Ok(Tagged::wrap(
            self.inner.accumulator(acc_args)?,
            &return_field,
        ))
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, params: &AggregateFunctionParams) -> DfResult<String> {
        self.inner.schema_name(params)
    }

    fn human_display(&self, params: &AggregateFunctionParams) -> DfResult<String> {
        self.inner.human_display(params)
    }

    fn window_function_schema_name(
        &self,
        params: &datafusion::logical_expr::expr::WindowFunctionParams,
    ) -> DfResult<String> {
        self.inner.window_function_schema_name(params)
    }

    fn display_name(&self, params: &AggregateFunctionParams) -> DfResult<String> {
        self.inner.display_name(params)
    }

    fn window_function_display_name(
        &self,
        params: &datafusion::logical_expr::expr::WindowFunctionParams,
    ) -> DfResult<String> {
        self.inner.window_function_display_name(params)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        // The grouped accumulator's lists are built inside DataFusion:
        // a tagged aggregate (catalog rows, few) runs one accumulator per
        // group instead.
        tagged_element(&args.return_field).is_none()
            && self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let return_field = Arc::clone(&args.return_field);
        Ok(Tagged::wrap(
            self.inner.create_sliding_accumulator(args)?,
            &return_field,
        ))
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> DfResult<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(Arc::clone(&self.inner)
            .with_beneficial_ordering(beneficial_ordering)?
            .map(OidArrayAgg::around))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }

    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> DfResult<Option<Expr>> {
        self.inner
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.reverse_expr() {
            ReversedUDAF::Reversed(udaf) => ReversedUDAF::Reversed(Arc::new(
                AggregateUDF::new_from_shared_impl(OidArrayAgg::around(Arc::clone(udaf.inner()))),
            )),
            other => other,
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(statistics_args)
    }

    fn default_value(&self, data_type: &DataType) -> DfResult<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
