//! PostgreSQL's `to_char`, `to_date` and `to_timestamp` as DataFusion scalar
//! functions, with PostgreSQL's datetime template patterns
//! (`YYYY-MM-DD HH24:MI:SS`, `FMMonth DDth`, `"quoted text"`, …) in place of
//! DataFusion's chrono (`%Y-%m-%d`) formats.
//!
//! | call | result |
//! |---|---|
//! | `to_char(date \| timestamp \| timestamptz \| time \| interval, text)` | text; NULL for an empty template |
//! | `to_date(text, text)` | date |
//! | `to_timestamp(text, text)` | timestamptz (UTC, the only session time zone) |
//!
//! The other arities keep DataFusion's built-in functions of the same names:
//! `to_timestamp(double)` (Unix epoch seconds), `to_timestamp(text)`,
//! `to_date(text)` and the forms with several chrono formats.
//!
//! Names are English (PostgreSQL's `lc_time` C). Parsing follows
//! PostgreSQL 15: `TZ` and `OF` are written by `to_char` only, `TZH`/`TZM`
//! are read. Errors carry PostgreSQL's SQLSTATEs (22007 invalid datetime
//! format, 22008 field out of range, 22009 bad time zone displacement,
//! 0A000 for `TZ`/`OF` in a parsed template) as a [`SqlError`] wrapped in
//! [`DataFusionError::External`]; their messages name the template field at
//! fault and never quote the input value.
//!
//! All three are immutable: the result depends on the arguments only (the
//! session time zone is always UTC). A template given as a constant is
//! compiled once per batch.

mod args;
mod calendar;
mod format;
mod parse;
mod pattern;
mod read;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use datafusion::arrow::array::{Date32Builder, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::error::SqlError;
use args::{Templates, TextArg, Values, finish, formattable, is_text, not_formattable, shape};
use pattern::Template;

type PgResult<T> = std::result::Result<T, SqlError>;

/// The time zone of `to_timestamp`'s results.
const UTC: &str = "UTC";

fn datetime_error(code: &'static str, message: impl Into<String>) -> SqlError {
    SqlError::new(code, message)
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `to_char`, `to_date` and `to_timestamp`, to register in place of
/// DataFusion's functions of the same names.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(PgToChar::new()),
        ScalarUDF::new_from_impl(PgToDate::new()),
        ScalarUDF::new_from_impl(PgToTimestamp::new(&ConfigOptions::default())),
    ]
}

/// `to_char(value, template)`: a date, timestamp, time or interval written
/// through a PostgreSQL template.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PgToChar {
    signature: Signature,
}

impl Default for PgToChar {
    fn default() -> Self {
        Self::new()
    }
}

impl PgToChar {
    pub(crate) fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [value, template] if is_text(template) => Ok(vec![value.clone(), DataType::Utf8]),
            [_, _] => plan_err!("to_char takes a text template as its second argument"),
            _ => plan_err!("to_char takes two arguments: a date/time value and a text template"),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) if !formattable(t) => Err(not_formattable(t)),
            _ => Ok(DataType::Utf8),
        }
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (rows, scalar) = shape(&args);
        let [value, template] = args.args.as_slice() else {
            return plan_err!("to_char takes two arguments");
        };
        let values = Values::new(value)?;
        let templates = TextArg::new(template)?;
        let mut cache = Templates::default();
        let mut out = StringBuilder::with_capacity(rows, rows * 10);
        let mut buf = String::new();
        for i in 0..rows {
            let (Some(tm), Some(text)) = (values.get(i).map_err(external)?, templates.get(i))
            else {
                out.append_null();
                continue;
            };
            // PostgreSQL: an empty template gives NULL.
            if text.is_empty() {
                out.append_null();
                continue;
            }
            format::to_char(cache.get(text), &tm, &mut buf).map_err(external)?;
            out.append_value(&buf);
        }
        finish(Arc::new(out.finish()), scalar)
    }
}

// ---------------------------------------------------------------------------
// to_date and to_timestamp
// ---------------------------------------------------------------------------

/// Coercion of the two-argument (text, text) form.
fn coerce_text_pair(name: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    match arg_types {
        [input, template] if is_text(input) && is_text(template) => {
            Ok(vec![DataType::Utf8, DataType::Utf8])
        }
        _ => plan_err!("{name} with a template takes two text arguments"),
    }
}

/// Coercion of the other arities: the built-in function's own rules.
fn coerce_builtin(builtin: &ScalarUDF, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    let fields: Vec<FieldRef> = arg_types
        .iter()
        .map(|t| Arc::new(Field::new("arg", t.clone(), true)))
        .collect();
    Ok(fields_with_udf(&fields, builtin)?
        .iter()
        .map(|f| f.data_type().clone())
        .collect())
}

/// Hand every row's (template, text) to `append`; `None` when either
/// argument is NULL.
fn parse_rows(
    args: &ScalarFunctionArgs,
    mut append: impl FnMut(Option<(&Template, &str)>) -> PgResult<()>,
) -> Result<()> {
    let (rows, _) = shape(args);
    let [input, template] = args.args.as_slice() else {
        return plan_err!("expected two arguments");
    };
    let inputs = TextArg::new(input)?;
    let templates = TextArg::new(template)?;
    let mut cache = Templates::default();
    for i in 0..rows {
        match (inputs.get(i), templates.get(i)) {
            (Some(text), Some(fmt)) => append(Some((cache.get(fmt), text))),
            _ => append(None),
        }
        .map_err(external)?;
    }
    Ok(())
}

/// `to_date(text, template)`; other arities are DataFusion's `to_date`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PgToDate {
    signature: Signature,
    builtin: Arc<ScalarUDF>,
}

impl Default for PgToDate {
    fn default() -> Self {
        Self::new()
    }
}

impl PgToDate {
    pub(crate) fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            builtin: datafusion::functions::datetime::to_date(),
        }
    }
}

impl ScalarUDFImpl for PgToDate {
    fn name(&self) -> &str {
        "to_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() == 2 {
            coerce_text_pair("to_date", arg_types)
        } else {
            coerce_builtin(&self.builtin, arg_types)
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() == 2 {
            Ok(DataType::Date32)
        } else {
            self.builtin.return_type(arg_types)
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if args.arg_fields.len() == 2 {
            Ok(Arc::new(Field::new(self.name(), DataType::Date32, true)))
        } else {
            self.builtin.return_field_from_args(args)
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 2 {
            return self.builtin.invoke_with_args(args);
        }
        let (rows, scalar) = shape(&args);
        let mut out = Date32Builder::with_capacity(rows);
        parse_rows(&args, |row| {
            match row {
                Some((template, text)) => out.append_value(parse::to_date(template, text)?),
                None => out.append_null(),
            }
            Ok(())
        })?;
        finish(Arc::new(out.finish()), scalar)
    }
}

/// `to_timestamp(text, template)` → timestamptz (UTC); other arities are
/// DataFusion's `to_timestamp` (`to_timestamp(double)`: Unix epoch seconds).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PgToTimestamp {
    signature: Signature,
    builtin: Arc<ScalarUDF>,
}

impl PgToTimestamp {
    pub(crate) fn new(config: &ConfigOptions) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            builtin: datafusion::functions::datetime::to_timestamp(config),
        }
    }

    fn result_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
    }
}

impl ScalarUDFImpl for PgToTimestamp {
    fn name(&self) -> &str {
        "to_timestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() == 2 {
            coerce_text_pair("to_timestamp", arg_types)
        } else {
            coerce_builtin(&self.builtin, arg_types)
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() == 2 {
            Ok(Self::result_type())
        } else {
            self.builtin.return_type(arg_types)
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if args.arg_fields.len() == 2 {
            Ok(Arc::new(Field::new(self.name(), Self::result_type(), true)))
        } else {
            self.builtin.return_field_from_args(args)
        }
    }

    /// The built-in forms read the session's `datafusion.execution.time_zone`.
    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let builtin = self.builtin.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(PgToTimestamp {
            signature: self.signature.clone(),
            builtin: Arc::new(builtin),
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 2 {
            return self.builtin.invoke_with_args(args);
        }
        let (rows, scalar) = shape(&args);
        let mut out = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC);
        parse_rows(&args, |row| {
            match row {
                Some((template, text)) => out.append_value(parse::to_timestamp(template, text)?),
                None => out.append_null(),
            }
            Ok(())
        })?;
        finish(Arc::new(out.finish()), scalar)
    }
}
