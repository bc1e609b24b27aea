//! `information_schema` as the session's policy lets it see it, computed
//! from the tables it may query.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::error::Result as DfResult;

use super::{DATABASE, SYSTEM_SCHEMAS, Visible};

/// PostgreSQL's name for an Arrow type: `(data_type, udt_name,
/// numeric_precision, numeric_scale, datetime_precision)`.
pub(crate) fn pg_type_names(
    t: &DataType,
) -> (
    &'static str,
    &'static str,
    Option<i32>,
    Option<i32>,
    Option<i32>,
) {
    match t {
        DataType::Boolean => ("boolean", "bool", None, None, None),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
            ("smallint", "int2", Some(16), Some(0), None)
        }
        DataType::Int32 | DataType::UInt16 => ("integer", "int4", Some(32), Some(0), None),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
            ("bigint", "int8", Some(64), Some(0), None)
        }
        DataType::Float16 | DataType::Float32 => ("real", "float4", Some(24), None, None),
        DataType::Float64 => ("double precision", "float8", Some(53), None, None),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => (
            "numeric",
            "numeric",
            Some(i32::from(*p)),
            Some(i32::from(*s)),
            None,
        ),
        DataType::Date32 | DataType::Date64 => ("date", "date", None, None, Some(0)),
        DataType::Timestamp(unit, tz) => {
            let precision = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                _ => 6,
            };
            if tz.is_some() {
                (
                    "timestamp with time zone",
                    "timestamptz",
                    None,
                    None,
                    Some(precision),
                )
            } else {
                (
                    "timestamp without time zone",
                    "timestamp",
                    None,
                    None,
                    Some(precision),
                )
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            ("time without time zone", "time", None, None, Some(6))
        }
        DataType::Interval(_) => ("interval", "interval", None, None, Some(6)),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            ("bytea", "bytea", None, None, None)
        }
        DataType::List(_) | DataType::LargeList(_) => ("ARRAY", "_text", None, None, None),
        _ => ("text", "text", None, None, None),
    }
}

fn strings<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn text_fields(names: &[&str]) -> Vec<Field> {
    names
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect()
}

/// An information_schema view with text columns and no rows.
fn empty(names: &[&str]) -> DfResult<RecordBatch> {
    let fields = text_fields(names);
    let columns = fields.iter().map(|_| strings(std::iter::empty())).collect();
    batch(fields, columns)
}

/// The information_schema views, computed once per secured catalog.
pub(super) fn information_schema(v: &Visible) -> DfResult<Vec<(&'static str, RecordBatch)>> {
    let db = Some(DATABASE);
    let mut out = Vec::new();

    // schemata
    let mut schemas: BTreeSet<&str> = v.schemas();
    schemas.extend(SYSTEM_SCHEMAS);
    schemas.insert("public");
    let n = schemas.len();
    out.push((
        "schemata",
        batch(
            text_fields(&[
                "catalog_name",
                "schema_name",
                "schema_owner",
                "default_character_set_catalog",
                "default_character_set_schema",
                "default_character_set_name",
                "sql_path",
            ]),
            vec![
                strings(std::iter::repeat_n(db, n)),
                strings(schemas.iter().map(|s| Some(*s))),
                strings(std::iter::repeat_n(Some("lakeward"), n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
            ],
        )?,
    ));

    // tables
    let n = v.tables.len();
    let kind = |view: bool| Some(if view { "VIEW" } else { "BASE TABLE" });
    out.push((
        "tables",
        batch(
            text_fields(&[
                "table_catalog",
                "table_schema",
                "table_name",
                "table_type",
                "self_referencing_column_name",
                "reference_generation",
                "user_defined_type_catalog",
                "user_defined_type_schema",
                "user_defined_type_name",
                "is_insertable_into",
                "is_typed",
                "commit_action",
            ]),
            vec![
                strings(std::iter::repeat_n(db, n)),
                strings(v.tables.iter().map(|(s, ..)| Some(s.as_str()))),
                strings(v.tables.iter().map(|(_, t, ..)| Some(t.as_str()))),
                strings(v.tables.iter().map(|(.., view)| kind(*view))),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(None, n)),
            ],
        )?,
    ));

    // views
    let views: Vec<_> = v.tables.iter().filter(|t| t.3).collect();
    let n = views.len();
    out.push((
        "views",
        batch(
            text_fields(&[
                "table_catalog",
                "table_schema",
                "table_name",
                "view_definition",
                "check_option",
                "is_updatable",
                "is_insertable_into",
                "is_trigger_updatable",
                "is_trigger_deletable",
                "is_trigger_insertable_into",
            ]),
            vec![
                strings(std::iter::repeat_n(db, n)),
                strings(views.iter().map(|(s, ..)| Some(s.as_str()))),
                strings(views.iter().map(|(_, t, ..)| Some(t.as_str()))),
                strings(std::iter::repeat_n(None, n)),
                strings(std::iter::repeat_n(Some("NONE"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
            ],
        )?,
    ));

    // columns
    let mut col = ColumnRows::default();
    for (s, t, schema, _) in &v.tables {
        for (i, f) in schema.fields().iter().enumerate() {
            col.push(s, t, i, f);
        }
    }
    out.push(("columns", col.finish()?));

    // table_privileges: SELECT on every table the session may query.
    let n = v.tables.len();
    out.push((
        "table_privileges",
        batch(
            text_fields(&[
                "grantor",
                "grantee",
                "table_catalog",
                "table_schema",
                "table_name",
                "privilege_type",
                "is_grantable",
                "with_hierarchy",
            ]),
            vec![
                strings(std::iter::repeat_n(Some("lakeward"), n)),
                strings(std::iter::repeat_n(Some("PUBLIC"), n)),
                strings(std::iter::repeat_n(db, n)),
                strings(v.tables.iter().map(|(s, ..)| Some(s.as_str()))),
                strings(v.tables.iter().map(|(_, t, ..)| Some(t.as_str()))),
                strings(std::iter::repeat_n(Some("SELECT"), n)),
                strings(std::iter::repeat_n(Some("NO"), n)),
                strings(std::iter::repeat_n(Some("YES"), n)),
            ],
        )?,
    ));

    // Constraint, routine and other views: lakeward declares none.
    out.push((
        "table_constraints",
        empty(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ])?,
    ));
    let key_usage = [
        "constraint_catalog",
        "constraint_schema",
        "constraint_name",
        "table_catalog",
        "table_schema",
        "table_name",
        "column_name",
    ];
    out.push(("constraint_column_usage", empty(&key_usage)?));
    let mut kcu = key_usage.to_vec();
    kcu.extend(["ordinal_position", "position_in_unique_constraint"]);
    out.push(("key_column_usage", empty(&kcu)?));
    out.push((
        "referential_constraints",
        empty(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "unique_constraint_catalog",
            "unique_constraint_schema",
            "unique_constraint_name",
            "match_option",
            "update_rule",
            "delete_rule",
        ])?,
    ));
    out.push((
        "check_constraints",
        empty(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "check_clause",
        ])?,
    ));
    out.push((
        "routines",
        empty(&[
            "specific_catalog",
            "specific_schema",
            "specific_name",
            "routine_catalog",
            "routine_schema",
            "routine_name",
            "routine_type",
            "data_type",
            "type_udt_name",
            "routine_definition",
            "external_language",
        ])?,
    ));
    out.push((
        "parameters",
        empty(&[
            "specific_catalog",
            "specific_schema",
            "specific_name",
            "ordinal_position",
            "parameter_mode",
            "parameter_name",
            "data_type",
            "udt_name",
        ])?,
    ));
    out.push((
        "sequences",
        empty(&[
            "sequence_catalog",
            "sequence_schema",
            "sequence_name",
            "data_type",
            "start_value",
            "minimum_value",
            "maximum_value",
            "increment",
            "cycle_option",
        ])?,
    ));
    out.push((
        "triggers",
        empty(&[
            "trigger_catalog",
            "trigger_schema",
            "trigger_name",
            "event_manipulation",
            "event_object_catalog",
            "event_object_schema",
            "event_object_table",
            "action_statement",
            "action_timing",
        ])?,
    ));
    Ok(out)
}

/// Rows of information_schema.columns.
#[derive(Default)]
struct ColumnRows {
    schema: Vec<String>,
    table: Vec<String>,
    column: Vec<String>,
    position: Vec<i32>,
    nullable: Vec<&'static str>,
    data_type: Vec<&'static str>,
    udt: Vec<&'static str>,
    precision: Vec<Option<i32>>,
    radix: Vec<Option<i32>>,
    scale: Vec<Option<i32>>,
    datetime_precision: Vec<Option<i32>>,
}

impl ColumnRows {
    fn push(&mut self, schema: &str, table: &str, index: usize, f: &Field) {
        let (data_type, udt, precision, scale, dt_precision) = pg_type_names(f.data_type());
        self.schema.push(schema.to_owned());
        self.table.push(table.to_owned());
        self.column.push(f.name().clone());
        self.position
            .push(i32::try_from(index + 1).unwrap_or(i32::MAX));
        self.nullable
            .push(if f.is_nullable() { "YES" } else { "NO" });
        self.data_type.push(data_type);
        self.udt.push(udt);
        self.precision.push(precision);
        self.radix
            .push(precision.map(|_| if udt == "numeric" { 10 } else { 2 }));
        self.scale.push(scale);
        self.datetime_precision.push(dt_precision);
    }

    fn finish(self) -> DfResult<RecordBatch> {
        let n = self.schema.len();
        let mut fields =
            text_fields(&["table_catalog", "table_schema", "table_name", "column_name"]);
        fields.push(Field::new("ordinal_position", DataType::Int32, false));
        fields.extend(text_fields(&["column_default", "is_nullable", "data_type"]));
        for name in [
            "character_maximum_length",
            "character_octet_length",
            "numeric_precision",
            "numeric_precision_radix",
            "numeric_scale",
            "datetime_precision",
        ] {
            fields.push(Field::new(name, DataType::Int32, true));
        }
        fields.extend(text_fields(&[
            "interval_type",
            "collation_name",
            "domain_name",
            "udt_catalog",
            "udt_schema",
            "udt_name",
            "dtd_identifier",
            "is_identity",
            "is_generated",
            "is_updatable",
        ]));
        let none_i32 = || Arc::new(Int32Array::from(vec![None::<i32>; n])) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            strings(std::iter::repeat_n(Some(DATABASE), n)),
            strings(self.schema.iter().map(|s| Some(s.as_str()))),
            strings(self.table.iter().map(|s| Some(s.as_str()))),
            strings(self.column.iter().map(|s| Some(s.as_str()))),
            Arc::new(Int32Array::from(self.position.clone())),
            strings(std::iter::repeat_n(None, n)),
            strings(self.nullable.iter().map(|s| Some(*s))),
            strings(self.data_type.iter().map(|s| Some(*s))),
            none_i32(),
            none_i32(),
            Arc::new(Int32Array::from(self.precision)),
            Arc::new(Int32Array::from(self.radix)),
            Arc::new(Int32Array::from(self.scale)),
            Arc::new(Int32Array::from(self.datetime_precision)),
            strings(std::iter::repeat_n(None, n)),
            strings(std::iter::repeat_n(None, n)),
            strings(std::iter::repeat_n(None, n)),
            strings(std::iter::repeat_n(Some(DATABASE), n)),
            strings(std::iter::repeat_n(Some("pg_catalog"), n)),
            strings(self.udt.iter().map(|s| Some(*s))),
            Arc::new(StringArray::from_iter_values(
                self.position.iter().map(i32::to_string),
            )),
            strings(std::iter::repeat_n(Some("NO"), n)),
            strings(std::iter::repeat_n(Some("NEVER"), n)),
            strings(std::iter::repeat_n(Some("NO"), n)),
        ];
        batch(fields, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_have_postgres_names() {
        assert_eq!(pg_type_names(&DataType::Int64).0, "bigint");
        assert_eq!(pg_type_names(&DataType::Decimal128(12, 2)).2, Some(12));
        assert_eq!(
            pg_type_names(&DataType::Timestamp(TimeUnit::Microsecond, None)).0,
            "timestamp without time zone"
        );
    }
}
