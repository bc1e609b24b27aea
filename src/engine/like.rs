//! `like_escape(pattern, escape)`: PostgreSQL's function that rewrites a
//! `LIKE` pattern written with escape character `escape` into the
//! backslash form. DataFusion executes `LIKE` with the backslash escape
//! only; `rewrite::compat` turns `x LIKE p ESCAPE '/'` into `x LIKE
//! like_escape(p, '/')` when `p` is not a constant (a bound parameter, as
//! SQLAlchemy sends `NOT LIKE $1 || '%' ESCAPE '/'`), and rewrites
//! constant patterns itself.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::rewrite::compat::backslash_pattern;

#[derive(Debug, PartialEq, Eq, Hash)]
struct LikeEscape {
    signature: Signature,
}

/// The error for a pattern ending in its escape character (22025); the
/// pattern, which may be a data value, is not quoted.
fn ends_in_escape() -> DataFusionError {
    DataFusionError::Execution("LIKE pattern must not end with escape character".into())
}

/// The escape character of `like_escape`'s second argument: one
/// character, or none for the empty string.
fn escape_char(e: &str) -> DfResult<Option<char>> {
    let mut cs = e.chars();
    match (cs.next(), cs.next()) {
        (None, _) => Ok(None),
        (Some(c), None) => Ok(Some(c)),
        _ => Err(DataFusionError::Execution(
            "invalid escape string: escape string must be empty or one character".into(),
        )),
    }
}

impl ScalarUDFImpl for LikeEscape {
    fn name(&self) -> &str {
        "like_escape"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [pattern, escape] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(
                "like_escape takes two arguments".into(),
            ));
        };
        let text = |v: &ScalarValue| -> DfResult<Option<String>> {
            match v.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(s) => Ok(s),
                _ => Err(DataFusionError::Plan(
                    "like_escape takes text arguments".into(),
                )),
            }
        };
        let one = |p: Option<&str>, e: Option<char>| -> DfResult<Option<String>> {
            match p {
                None => Ok(None),
                Some(p) => backslash_pattern(p, e).map(Some).ok_or_else(ends_in_escape),
            }
        };
        let ColumnarValue::Scalar(escape) = escape else {
            return Err(DataFusionError::NotImplemented(
                "like_escape with a per-row escape character".into(),
            ));
        };
        let Some(escape) = text(escape)? else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        let escape = escape_char(&escape)?;
        match pattern {
            ColumnarValue::Scalar(p) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(one(
                text(p)?.as_deref(),
                escape,
            )?))),
            ColumnarValue::Array(a) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let a = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| DataFusionError::Plan("like_escape takes text".into()))?;
                let out: StringArray = (0..a.len())
                    .map(|i| one((!a.is_null(i)).then(|| a.value(i)), escape))
                    .collect::<DfResult<_>>()?;
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
        }
    }
}

/// `like_escape(text, text) -> text`, immutable.
pub(crate) fn like_escape_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(LikeEscape {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_argument_is_one_character_or_none() {
        assert!(escape_char("ab").is_err());
        assert_eq!(escape_char("").unwrap(), None);
    }
}
