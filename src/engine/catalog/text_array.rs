//! `parse_text_array(x)`: a text array bound as an untyped parameter,
//! read as PostgreSQL reads its array literal.
//!
//! A client that binds `relkind = ANY($2)` with no parameter type sends the
//! array as text, as libpq spells it: `{"p", "f", "r"}` (ADBC's
//! `adbc_get_objects`). The wire layer splits such a value on commas and
//! keeps each piece as written (`"p"`, with its quotes), so no element
//! matched. The catalog-dialect rule that rewrites `x = ANY($n)` wraps the
//! parameter in this function, which gives each element its value: outer
//! whitespace trimmed, double quotes removed, backslash escapes undone, an
//! unquoted `NULL` a NULL. A whole literal that arrives as one string is
//! parsed the same way. An array of any other element type passes through
//! unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The function's name, as the compat rule calls it (not `lakeward_…`:
/// the gate refuses that prefix, which names internal functions; this one
/// reads only its argument, so a client may call it too).
pub(crate) const TEXT_ARRAY_FUNCTION: &str = "parse_text_array";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct TextArrayUdf {
    signature: Signature,
}

impl TextArrayUdf {
    pub(crate) fn new() -> TextArrayUdf {
        TextArrayUdf {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn malformed() -> DataFusionError {
    DataFusionError::Execution("malformed array literal".into())
}

/// Undo backslash escapes and drop double quotes (PostgreSQL's rules for an
/// element's text, quoted or not).
fn unescape(piece: &str) -> String {
    let mut out = String::with_capacity(piece.len());
    let mut chars = piece.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '"' => {}
            c => out.push(c),
        }
    }
    out
}

/// One element as the wire layer left it (`"p"`, ` f`, `NULL`).
fn element(piece: &str) -> Option<String> {
    let piece = piece.trim();
    if piece.eq_ignore_ascii_case("null") {
        return None;
    }
    Some(unescape(piece))
}

/// A one-dimensional PostgreSQL array literal (`{a, "b c", NULL}`).
fn parse_literal(text: &str) -> DfResult<Vec<Option<String>>> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(malformed)?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = inner.chars();
    let mut finish = |current: &mut String, was_quoted: &mut bool| {
        let piece = std::mem::take(current);
        if *was_quoted {
            out.push(Some(piece));
        } else {
            let piece = piece.trim();
            out.push((!piece.eq_ignore_ascii_case("null")).then(|| piece.to_owned()));
        }
        *was_quoted = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(chars.next().ok_or_else(malformed)?),
            '"' => {
                // Whitespace outside the quotes is not part of the value.
                if !quoted && !was_quoted {
                    current.clear();
                }
                quoted = !quoted;
                was_quoted = true;
            }
            c if !quoted && was_quoted && c.is_whitespace() => {}
            '{' | '}' if !quoted => return Err(malformed()),
            ',' if !quoted => finish(&mut current, &mut was_quoted),
            c => current.push(c),
        }
    }
    if quoted {
        return Err(malformed());
    }
    finish(&mut current, &mut was_quoted);
    Ok(out)
}

impl ScalarUDFImpl for TextArrayUdf {
    fn name(&self) -> &str {
        TEXT_ARRAY_FUNCTION
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(match args.first() {
            Some(t @ (DataType::List(f) | DataType::LargeList(f))) if !is_string(f.data_type()) => {
                t.clone()
            }
            _ => text_list(),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{TEXT_ARRAY_FUNCTION} takes one argument"
            )));
        };
        let scalar = matches!(arg, ColumnarValue::Scalar(_));
        let input = arg.to_array(if scalar { 1 } else { args.number_rows })?;
        let out = text_array(&input)?;
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// Each row of `input` as a text array (see the module documentation).
fn text_array(input: &ArrayRef) -> DfResult<ArrayRef> {
    let mut builder = ListBuilder::new(StringBuilder::new());
    let mut push = |items: Option<Vec<Option<String>>>| match items {
        None => builder.append_null(),
        Some(items) => {
            for item in items {
                builder.values().append_option(item);
            }
            builder.append(true);
        }
    };
    match input.data_type() {
        DataType::Null => (0..input.len()).for_each(|_| push(None)),
        t if is_string(t) => {
            let text = datafusion::arrow::compute::cast(input, &DataType::Utf8)?;
            for value in text.as_string::<i32>() {
                push(value.map(parse_literal).transpose()?);
            }
        }
        DataType::List(f) if is_string(f.data_type()) => {
            for row in input.as_list::<i32>().iter() {
                push(row.map(|values| pieces(&values)).transpose()?);
            }
        }
        DataType::LargeList(f) if is_string(f.data_type()) => {
            for row in input.as_list::<i64>().iter() {
                push(row.map(|values| pieces(&values)).transpose()?);
            }
        }
        DataType::List(_) | DataType::LargeList(_) => return Ok(input.clone()),
        _ => {
            return Err(DataFusionError::Plan(format!(
                "{TEXT_ARRAY_FUNCTION} expects an array or its text"
            )));
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// The elements of one list of pieces.
fn pieces(values: &ArrayRef) -> DfResult<Vec<Option<String>>> {
    let text = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    Ok(text
        .as_string::<i32>()
        .iter()
        .map(|v| v.and_then(element))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(a: &ArrayRef) -> Vec<Option<Vec<Option<String>>>> {
        a.as_list::<i32>()
            .iter()
            .map(|row| {
                row.map(|v| {
                    v.as_string::<i32>()
                        .iter()
                        .map(|s| s.map(str::to_owned))
                        .collect()
                })
            })
            .collect()
    }

    fn some(items: &[&str]) -> Option<Vec<Option<String>>> {
        Some(items.iter().map(|s| Some((*s).to_owned())).collect())
    }

    #[test]
    fn libpq_spelling_split_by_the_wire_layer() {
        // What the wire layer makes of `{"p", "f", "r"}` and of a typed
        // text[] parameter: quoted pieces, leading spaces.
        let mut b = ListBuilder::new(StringBuilder::new());
        for piece in ["\"p\"", " \"f\"", " r", "NULL", "\"a\\\"b\""] {
            b.values().append_value(piece);
        }
        b.append(true);
        b.append_null();
        let input: ArrayRef = Arc::new(b.finish());
        let got = texts(&text_array(&input).expect("text array"));
        assert_eq!(
            got,
            vec![
                Some(vec![
                    Some("p".into()),
                    Some("f".into()),
                    Some("r".into()),
                    None,
                    Some("a\"b".into())
                ]),
                None
            ]
        );
    }

    #[test]
    fn whole_literal_as_text() {
        let input: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            Some("{\"p\", \"f\", r}"),
            Some("{}"),
            Some("{\"a,b\", NULL, \"NULL\"}"),
            None,
        ]));
        let got = texts(&text_array(&input).expect("text array"));
        assert_eq!(got[0], some(&["p", "f", "r"]));
        assert_eq!(got[1], some(&[]));
        assert_eq!(
            got[2],
            Some(vec![Some("a,b".into()), None, Some("NULL".into())])
        );
        assert_eq!(got[3], None);
    }

    #[test]
    fn malformed_literals_are_refused_without_their_text() {
        for bad in ["p,f", "{\"p}", "{{a}}", "{a\\"] {
            let input: ArrayRef =
                Arc::new(datafusion::arrow::array::StringArray::from(vec![Some(bad)]));
            let err = text_array(&input).expect_err(bad).to_string();
            assert!(!err.contains(bad), "{err}");
        }
    }

    #[test]
    fn other_arrays_pass_through() {
        let input: ArrayRef = Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<
            datafusion::arrow::datatypes::Int32Type,
            _,
            _,
        >(vec![Some(vec![Some(1), Some(2)])]));
        let out = text_array(&input).expect("passes");
        assert_eq!(out.data_type(), input.data_type());
        let udf = TextArrayUdf::new();
        assert_eq!(
            udf.return_type(&[input.data_type().clone()]).expect("type"),
            input.data_type().clone()
        );
        assert_eq!(
            udf.return_type(&[DataType::Null]).expect("type"),
            text_list()
        );
    }
}
