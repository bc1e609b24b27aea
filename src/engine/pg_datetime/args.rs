//! The functions' arguments as Arrow gives them: text and date/time values,
//! each one value for the batch (a scalar) or one per row, and the shape
//! of the result.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, TimeUnit,
};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

use super::format::Tm;
use super::pattern::{self, Template};
use super::{PgResult, calendar, datetime_error};
use crate::error::SqlError;

pub(super) fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

/// A text argument: one value for the whole batch, or one per row.
pub(super) enum TextArg {
    Scalar(Option<String>),
    Array(StringArray),
}

impl TextArg {
    pub(super) fn new(value: &ColumnarValue) -> Result<TextArg> {
        Ok(match value {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(v) => TextArg::Scalar(v),
                _ => TextArg::Scalar(None),
            },
            ColumnarValue::Array(a) => {
                TextArg::Array(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
            }
        })
    }

    pub(super) fn get(&self, i: usize) -> Option<&str> {
        match self {
            TextArg::Scalar(v) => v.as_deref(),
            TextArg::Array(a) => (!a.is_null(i)).then(|| a.value(i)),
        }
    }
}

/// Templates by text: a constant template is compiled once, a column of
/// templates once per run of equal ones.
#[derive(Default)]
pub(super) struct Templates {
    last: Option<(String, Template)>,
}

impl Templates {
    pub(super) fn get(&mut self, text: &str) -> &Template {
        let entry = match self.last.take() {
            Some((t, template)) if t == text => (t, template),
            _ => (text.to_owned(), pattern::compile(text)),
        };
        &self.last.insert(entry).1
    }
}

/// Rows to compute and whether the result is a scalar.
pub(super) fn shape(args: &ScalarFunctionArgs) -> (usize, bool) {
    if args
        .args
        .iter()
        .all(|a| matches!(a, ColumnarValue::Scalar(_)))
    {
        (1, true)
    } else {
        (args.number_rows, false)
    }
}

pub(super) fn finish(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

/// Can `to_char` format values of this type?
pub(super) fn formattable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Null
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Interval(_)
    )
}

pub(super) fn not_formattable(t: &DataType) -> DataFusionError {
    let kind = if t.is_numeric() {
        "numeric"
    } else if is_text(t) {
        "text"
    } else {
        "these"
    };
    DataFusionError::NotImplemented(format!(
        "to_char of {kind} values; only date, timestamp, time and interval values can be formatted"
    ))
}

/// The values `to_char` formats, as one array (a scalar is one row).
pub(super) struct Values {
    kind: ValuesKind,
    scalar: bool,
}

enum ValuesKind {
    Null,
    Days(datafusion::arrow::array::Date32Array),
    /// Instants in `unit`s since 1970; `zoned` ones are timestamptz.
    Stamps {
        values: Int64Array,
        unit: TimeUnit,
        zoned: bool,
    },
    /// Times of day and durations: intervals of `unit`s.
    Spans {
        values: Int64Array,
        unit: TimeUnit,
    },
    MonthDayNano(datafusion::arrow::array::IntervalMonthDayNanoArray),
    DayTime(datafusion::arrow::array::IntervalDayTimeArray),
    YearMonth(datafusion::arrow::array::IntervalYearMonthArray),
}

fn to_int64(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?.as_primitive().clone())
}

fn interval_out_of_range() -> SqlError {
    datetime_error("22008", "interval out of range")
}

impl Values {
    pub(super) fn new(value: &ColumnarValue) -> Result<Values> {
        let (array, scalar) = match value {
            ColumnarValue::Scalar(s) => (s.to_array()?, true),
            ColumnarValue::Array(a) => (Arc::clone(a), false),
        };
        let kind = match array.data_type() {
            DataType::Null => ValuesKind::Null,
            DataType::Date32 => ValuesKind::Days(array.as_primitive::<Date32Type>().clone()),
            DataType::Date64 => ValuesKind::Stamps {
                values: to_int64(&array)?,
                unit: TimeUnit::Millisecond,
                zoned: true,
            },
            DataType::Timestamp(unit, tz) => ValuesKind::Stamps {
                values: to_int64(&array)?,
                unit: *unit,
                zoned: tz.is_some(),
            },
            DataType::Time32(unit) => ValuesKind::Spans {
                values: to_int64(&cast(&array, &DataType::Int32)?)?,
                unit: *unit,
            },
            DataType::Time64(unit) | DataType::Duration(unit) => ValuesKind::Spans {
                values: to_int64(&array)?,
                unit: *unit,
            },
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                ValuesKind::MonthDayNano(array.as_primitive::<IntervalMonthDayNanoType>().clone())
            }
            DataType::Interval(IntervalUnit::DayTime) => {
                ValuesKind::DayTime(array.as_primitive::<IntervalDayTimeType>().clone())
            }
            DataType::Interval(IntervalUnit::YearMonth) => {
                ValuesKind::YearMonth(array.as_primitive::<IntervalYearMonthType>().clone())
            }
            other => return Err(not_formattable(other)),
        };
        Ok(Values { kind, scalar })
    }

    pub(super) fn get(&self, i: usize) -> PgResult<Option<Tm>> {
        let i = if self.scalar { 0 } else { i };
        let micros = |v: i64, unit: TimeUnit| match unit {
            TimeUnit::Second => v.checked_mul(1_000_000),
            TimeUnit::Millisecond => v.checked_mul(1000),
            TimeUnit::Microsecond => Some(v),
            TimeUnit::Nanosecond => Some(v.div_euclid(1000)),
        };
        Ok(match &self.kind {
            ValuesKind::Null => None,
            ValuesKind::Days(a) => match a.is_null(i) {
                true => None,
                false => Some(Tm::from_unix_micros(
                    i64::from(a.value(i)) * calendar::USECS_PER_DAY,
                    true,
                )?),
            },
            ValuesKind::Stamps {
                values,
                unit,
                zoned,
            } => match values.is_null(i) {
                true => None,
                false => {
                    let us = micros(values.value(i), *unit)
                        .ok_or_else(|| datetime_error("22008", "timestamp out of range"))?;
                    Some(Tm::from_unix_micros(us, *zoned)?)
                }
            },
            ValuesKind::Spans { values, unit } => match values.is_null(i) {
                true => None,
                false => {
                    let v = values.value(i);
                    // Durations keep their sign: truncate toward zero.
                    let us = match unit {
                        TimeUnit::Nanosecond => Some(v / 1000),
                        _ => micros(v, *unit),
                    }
                    .ok_or_else(interval_out_of_range)?;
                    Some(Tm::from_interval(0, 0, us))
                }
            },
            ValuesKind::MonthDayNano(a) => match a.is_null(i) {
                true => None,
                false => {
                    let v = a.value(i);
                    Some(Tm::from_interval(
                        i64::from(v.months),
                        i64::from(v.days),
                        v.nanoseconds / 1000,
                    ))
                }
            },
            ValuesKind::DayTime(a) => match a.is_null(i) {
                true => None,
                false => {
                    let v = a.value(i);
                    Some(Tm::from_interval(
                        0,
                        i64::from(v.days),
                        i64::from(v.milliseconds) * 1000,
                    ))
                }
            },
            ValuesKind::YearMonth(a) => match a.is_null(i) {
                true => None,
                false => Some(Tm::from_interval(i64::from(a.value(i)), 0, 0)),
            },
        })
    }
}
