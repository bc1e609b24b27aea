//! The privilege functions (`has_table_privilege`, …), answered from the
//! session's policy.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::{SYSTEM_SCHEMAS, Visible};

/// Which privilege function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PrivilegeKind {
    Table,
    AnyColumn,
    Column,
    Schema,
    Database,
    Function,
}

/// `has_*_privilege`, answered from the session's policy: SELECT on the
/// tables (and columns) it may query, USAGE on their schemas, CONNECT on the
/// database; never a write privilege (lakeward is read-only).
#[derive(Debug)]
struct PrivilegeUdf {
    name: &'static str,
    kind: PrivilegeKind,
    visible: Arc<Visible>,
    signature: Signature,
}

impl PartialEq for PrivilegeUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.visible, &other.visible)
    }
}
impl Eq for PrivilegeUdf {}
impl std::hash::Hash for PrivilegeUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// Split `schema.table` (either part may be double-quoted) into lower-cased
/// parts as PostgreSQL resolves identifiers.
fn split_name(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = name.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                parts.push(if was_quoted {
                    current.clone()
                } else {
                    current.to_lowercase()
                });
                current.clear();
                was_quoted = false;
            }
            c => current.push(c),
        }
    }
    parts.push(if was_quoted {
        current
    } else {
        current.to_lowercase()
    });
    parts
}

fn wants(privileges: &str, held: &[&str]) -> bool {
    privileges.split(',').any(|p| {
        let p = p.trim().to_uppercase();
        let p = p
            .strip_suffix(" WITH GRANT OPTION")
            .unwrap_or(&p)
            .trim()
            .to_owned();
        held.contains(&p.as_str())
    })
}

impl PrivilegeUdf {
    /// The answer for one row: `args` are the text forms of the arguments
    /// after the optional leading user (objects given by OID are `None`).
    fn answer(&self, object: Option<&str>, column: Option<&str>, privileges: &str) -> bool {
        match self.kind {
            PrivilegeKind::Table | PrivilegeKind::AnyColumn | PrivilegeKind::Column => {
                if !wants(privileges, &["SELECT"]) {
                    return false;
                }
                // An OID can only have come from this session's pg_class.
                let Some(name) = object else { return true };
                let parts = split_name(name);
                let (schema, table) = match parts.as_slice() {
                    [t] => (None, t.as_str()),
                    [s, t] => (Some(s.as_str()), t.as_str()),
                    [_, s, t] => (Some(s.as_str()), t.as_str()),
                    _ => return false,
                };
                match (self.kind, column) {
                    (PrivilegeKind::Column, Some(c)) => {
                        schema.is_some_and(|s| SYSTEM_SCHEMAS.contains(&s))
                            || self.visible.has_column(schema, table, c)
                    }
                    (PrivilegeKind::Column, None) => self.visible.has_table(schema, table),
                    _ => self.visible.has_table(schema, table),
                }
            }
            PrivilegeKind::Schema => {
                wants(privileges, &["USAGE"])
                    && object.is_none_or(|s| self.visible.has_schema(&split_name(s).join(".")))
            }
            PrivilegeKind::Database => wants(privileges, &["CONNECT"]),
            PrivilegeKind::Function => wants(privileges, &["EXECUTE"]),
        }
    }

    /// Number of object arguments (after an optional user) before the
    /// privilege string.
    fn object_args(&self) -> usize {
        if self.kind == PrivilegeKind::Column {
            2
        } else {
            1
        }
    }
}

fn text_at(a: &ArrayRef, row: usize) -> DfResult<Option<String>> {
    if a.is_null(row) {
        return Ok(None);
    }
    Ok(match ScalarValue::try_from_array(a, row)? {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s,
        _ => None,
    })
}

impl ScalarUDFImpl for PrivilegeUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let objects = self.object_args();
        // Forms: (object…, privilege) or (user, object…, privilege).
        let skip = match arrays.len() {
            n if n == objects + 1 => 0,
            n if n == objects + 2 => 1,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{}: wrong number of arguments",
                    self.name
                )));
            }
        };
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let object = &arrays[skip];
            let object_text = text_at(object, row)?;
            let is_oid = !matches!(
                object.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            let column = if objects == 2 {
                text_at(&arrays[skip + 1], row)?
            } else {
                None
            };
            let Some(privileges) = text_at(&arrays[arrays.len() - 1], row)? else {
                out.push(None);
                continue;
            };
            if object.is_null(row) {
                out.push(None);
                continue;
            }
            let object = if is_oid { None } else { object_text.as_deref() };
            out.push(Some(self.answer(object, column.as_deref(), &privileges)));
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
    }
}

/// The privilege functions of one secured catalog.
pub(crate) fn privilege_udfs(visible: Arc<Visible>) -> Vec<ScalarUDF> {
    [
        ("has_table_privilege", PrivilegeKind::Table),
        ("has_any_column_privilege", PrivilegeKind::AnyColumn),
        ("has_column_privilege", PrivilegeKind::Column),
        ("has_schema_privilege", PrivilegeKind::Schema),
        ("has_database_privilege", PrivilegeKind::Database),
        ("has_function_privilege", PrivilegeKind::Function),
    ]
    .into_iter()
    .map(|(name, kind)| {
        let arities = if kind == PrivilegeKind::Column {
            [3, 4]
        } else {
            [2, 3]
        };
        ScalarUDF::new_from_impl(PrivilegeUdf {
            name,
            kind,
            visible: visible.clone(),
            signature: Signature::one_of(
                arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
                Volatility::Stable,
            ),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn names_split_like_postgres() {
        assert_eq!(split_name("clinical.patients"), ["clinical", "patients"]);
        assert_eq!(
            split_name("Clinical.\"Patients\""),
            ["clinical", "Patients"]
        );
        assert_eq!(split_name("\"a.b\".c"), ["a.b", "c"]);
        assert_eq!(split_name("patients"), ["patients"]);
    }

    fn visible() -> Arc<Visible> {
        let schema = Arc::new(Schema::new(vec![Field::new("ssn", DataType::Utf8, true)]));
        Arc::new(Visible {
            tables: vec![("clinical".into(), "patients".into(), schema, false)],
        })
    }

    fn udf(kind: PrivilegeKind) -> PrivilegeUdf {
        PrivilegeUdf {
            name: "test",
            kind,
            visible: visible(),
            signature: Signature::any(2, Volatility::Stable),
        }
    }

    #[test]
    fn privileges_follow_the_policy() {
        let t = udf(PrivilegeKind::Table);
        assert!(t.answer(Some("clinical.patients"), None, "SELECT"));
        assert!(t.answer(Some("patients"), None, "select"));
        assert!(!t.answer(Some("clinical.patients"), None, "INSERT"));
        assert!(t.answer(Some("clinical.patients"), None, "INSERT, SELECT"));
        assert!(!t.answer(Some("governance.consents"), None, "SELECT"));
        assert!(t.answer(Some("pg_catalog.pg_class"), None, "SELECT"));
        let s = udf(PrivilegeKind::Schema);
        assert!(s.answer(Some("clinical"), None, "USAGE"));
        assert!(!s.answer(Some("governance"), None, "USAGE"));
        assert!(!s.answer(Some("clinical"), None, "CREATE"));
        let c = udf(PrivilegeKind::Column);
        assert!(c.answer(Some("clinical.patients"), Some("ssn"), "SELECT"));
        assert!(!c.answer(Some("clinical.patients"), Some("nope"), "SELECT"));
        let d = udf(PrivilegeKind::Database);
        assert!(d.answer(Some("lakeward"), None, "CONNECT"));
        assert!(!d.answer(Some("lakeward"), None, "CREATE"));
    }
}
