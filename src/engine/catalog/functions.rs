//! PostgreSQL functions clients call against the catalog that do not
//! depend on the session's policy, and `pg_get_keywords()`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr as DfExpr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;

use super::tables::CatalogTable;

/// The result of `pg_get_keywords()`, a [`CatalogTable`] over the static
/// keyword list.
#[derive(Debug)]
pub(crate) struct KeywordsFunction {
    table: Arc<dyn TableProvider>,
}

impl KeywordsFunction {
    pub(crate) fn new(static_tables: &PgCatalogStaticTables) -> DfResult<KeywordsFunction> {
        Ok(KeywordsFunction {
            table: static_tables.pg_get_keywords.try_into_memtable()?,
        })
    }
}

impl datafusion::catalog::TableFunctionImpl for KeywordsFunction {
    fn call(&self, args: &[DfExpr]) -> DfResult<Arc<dyn TableProvider>> {
        if !args.is_empty() {
            return Err(DataFusionError::Plan(
                "pg_get_keywords() takes no arguments".into(),
            ));
        }
        Ok(CatalogTable::new(self.table.clone()))
    }
}

/// A catalog function with one answer whatever its arguments: lakeward keeps
/// no comments, index or view definitions, sequences or triggers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConstantUdf {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl ScalarUDFImpl for ConstantUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `_pg_expandarray(int2[])`: information_schema's helper, as a struct of
/// the first element and its position (`(…).x`, `(…).n`). lakeward declares
/// no keys, so it only ever meets empty index key lists.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArrayUdf {
    signature: Signature,
}

fn expand_fields() -> datafusion::arrow::datatypes::Fields {
    vec![
        Field::new("x", DataType::Int32, true),
        Field::new("n", DataType::Int32, true),
    ]
    .into()
}

impl ScalarUDFImpl for ExpandArrayUdf {
    fn name(&self) -> &str {
        "_pg_expandarray"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Struct(expand_fields()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let nulls = Arc::new(Int32Array::from(vec![None::<i32>; rows])) as ArrayRef;
        let s = datafusion::arrow::array::StructArray::try_new(
            expand_fields(),
            vec![nulls.clone(), nulls],
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(s)))
    }
}

/// The text of one value of a catalog function argument (`None`: NULL).
fn value_text(a: &ArrayRef, row: usize) -> DfResult<Option<String>> {
    if a.is_null(row) {
        return Ok(None);
    }
    Ok(Some(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s,
        v => v.to_string(),
    }))
}

/// `format(fmt, args…)` with `%s`, `%I` (identifier, quoted when needed),
/// `%L` (literal) and `%%`, as clients use it to spell type names.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FormatUdf {
    signature: Signature,
}

fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

impl ScalarUDFImpl for FormatUdf {
    fn name(&self) -> &str {
        "format"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let Some(fmt) = value_text(&arrays[0], row)? else {
                out.push(None);
                continue;
            };
            let mut text = String::new();
            let mut next = 1;
            let mut chars = fmt.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    text.push(c);
                    continue;
                }
                let spec = chars.next();
                if spec == Some('%') {
                    text.push('%');
                    continue;
                }
                let arg = match arrays.get(next) {
                    Some(a) => value_text(a, row)?,
                    None => return Err(DataFusionError::Plan("format: too few arguments".into())),
                };
                next += 1;
                match (spec, arg) {
                    (Some('s'), a) => text.push_str(a.as_deref().unwrap_or("")),
                    (Some('I'), Some(a)) => text.push_str(&quote_ident(&a)),
                    (Some('L'), Some(a)) => text.push_str(&format!("'{}'", a.replace('\'', "''"))),
                    (Some('L'), None) => text.push_str("NULL"),
                    _ => {
                        return Err(DataFusionError::Plan(
                            "format: unsupported conversion".into(),
                        ));
                    }
                }
            }
            out.push(Some(text));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `json_build_object(k, v, …)` as JSON text (SQLAlchemy reads column
/// identity and collation options this way).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObjectUdf {
    signature: Signature,
}

fn json_value(a: &ArrayRef, row: usize) -> DfResult<serde_json::Value> {
    use serde_json::Value as J;
    if a.is_null(row) {
        return Ok(J::Null);
    }
    Ok(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Boolean(Some(b)) => J::Bool(b),
        ScalarValue::Int8(Some(n)) => J::from(n),
        ScalarValue::Int16(Some(n)) => J::from(n),
        ScalarValue::Int32(Some(n)) => J::from(n),
        ScalarValue::Int64(Some(n)) => J::from(n),
        ScalarValue::Float64(Some(f)) => J::from(f),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => J::String(s),
        v => J::String(v.to_string()),
    })
}

impl ScalarUDFImpl for JsonBuildObjectUdf {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.len() % 2 != 0 {
            return Err(DataFusionError::Plan(
                "json_build_object: an even number of arguments".into(),
            ));
        }
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = value_text(&pair[0], row)?.unwrap_or_default();
                object.insert(key, json_value(&pair[1], row)?);
            }
            out.push(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// Settings `set_config` accepts: ones lakeward has no use for, whose value
/// changes nothing it does (asyncpg turns `jit` off at connect). The call
/// returns the value and changes nothing.
const HARMLESS_SETTINGS: &[&str] = &["jit"];

/// `set_config(name, value, is_local)`: the value, for a harmless setting
/// (`HARMLESS_SETTINGS`); any other setting, `lakeward.*` above all, is
/// refused (`42501`): settings that matter are changed with `SET`, which
/// checks them against the policy.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SetConfigUdf {
    signature: Signature,
}

impl ScalarUDFImpl for SetConfigUdf {
    fn name(&self) -> &str {
        "set_config"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let name = value_text(&arrays[0], row)?.unwrap_or_default();
            if !HARMLESS_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(DataFusionError::Configuration(
                    "set_config: this setting cannot be changed".into(),
                ));
            }
            out.push(value_text(&arrays[1], row)?);
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// Catalog functions that do not depend on the session's policy.
pub(crate) fn static_udfs() -> Vec<ScalarUDF> {
    let any = |arities: &[usize]| {
        Signature::one_of(
            arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Stable,
        )
    };
    let null_text = ScalarValue::Utf8(None);
    let mut out: Vec<ScalarUDF> = [
        ("obj_description", &[1usize, 2][..]),
        ("col_description", &[2]),
        ("shobj_description", &[2]),
        ("pg_get_indexdef", &[1, 3]),
        ("pg_get_viewdef", &[1, 2]),
        ("pg_get_triggerdef", &[1, 2]),
        ("pg_get_functiondef", &[1]),
        ("pg_get_function_arguments", &[1]),
        ("pg_get_function_result", &[1]),
        ("pg_get_function_identity_arguments", &[1]),
        ("pg_get_serial_sequence", &[2]),
        ("pg_get_ruledef", &[1, 2]),
        ("pg_tablespace_location", &[1]),
    ]
    .into_iter()
    .map(|(name, arities)| {
        ScalarUDF::new_from_impl(ConstantUdf {
            name,
            value: null_text.clone(),
            signature: any(arities),
        })
    })
    .collect();
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_is_in_recovery",
        value: ScalarValue::Boolean(Some(false)),
        signature: Signature::nullary(Volatility::Stable),
    }));
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_function_is_visible",
        value: ScalarValue::Boolean(Some(true)),
        signature: any(&[1]),
    }));
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_type_is_visible",
        value: ScalarValue::Boolean(Some(true)),
        signature: any(&[1]),
    }));
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_collation_is_visible",
        value: ScalarValue::Boolean(Some(true)),
        signature: any(&[1]),
    }));
    // Sizes are not disclosed: a table's size tells how many rows exist
    // beyond those the policy shows (PostgreSQL answers NULL for an
    // unknown relation too). Any integer oid is accepted (DBeaver binds
    // int8).
    for name in [
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
    ] {
        out.push(ScalarUDF::new_from_impl(ConstantUdf {
            name,
            value: ScalarValue::Int64(None),
            signature: any(&[1, 2]),
        }));
    }
    // lakeward has no temporary schemas.
    out.push(ScalarUDF::new_from_impl(ConstantUdf {
        name: "pg_my_temp_schema",
        value: ScalarValue::Int32(Some(0)),
        signature: Signature::nullary(Volatility::Stable),
    }));
    // No client signals or ends another backend through SQL: cancelling
    // is the protocol's CancelRequest, with the connection's secret. Both
    // answer false and do nothing.
    for name in ["pg_cancel_backend", "pg_terminate_backend"] {
        out.push(ScalarUDF::new_from_impl(ConstantUdf {
            name,
            value: ScalarValue::Boolean(Some(false)),
            signature: any(&[1, 2]),
        }));
    }
    out.push(ScalarUDF::new_from_impl(SetConfigUdf {
        signature: Signature::one_of(vec![TypeSignature::Any(3)], Volatility::Volatile),
    }));
    out.push(ScalarUDF::new_from_impl(ExpandArrayUdf {
        signature: any(&[1]),
    }));
    out.push(ScalarUDF::new_from_impl(FormatUdf {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    out.push(ScalarUDF::new_from_impl(JsonBuildObjectUdf {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    out.push(ScalarUDF::new_from_impl(
        super::text_array::TextArrayUdf::new(),
    ));
    out
}
