//! The statistics of a snapshot's files (row counts, per-column bounds and
//! null counts), read once per table version, as DataFusion
//! [`PruningStatistics`] over "one container per file".

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};
use datafusion::error::Result;

/// Per-column bounds of every file, in file order (a null entry: unknown).
#[derive(Debug)]
struct ColumnBounds {
    min: ArrayRef,
    max: ArrayRef,
    nulls: ArrayRef,
}

/// The statistics of every file, as [`PruningStatistics`] over "one
/// container per file".
#[derive(Debug)]
pub(super) struct FileStatistics {
    files: usize,
    columns: HashMap<String, ColumnBounds>,
    rows: ArrayRef,
}

impl PruningStatistics for FileStatistics {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.columns.get(column.name()).map(|c| c.min.clone())
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.columns.get(column.name()).map(|c| c.max.clone())
    }

    fn num_containers(&self) -> usize {
        self.files
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.columns.get(column.name()).map(|c| c.nulls.clone())
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(self.rows.clone())
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// The per-column bounds of `files` (their parsed Delta statistics) for the
/// columns whose Delta bounds are safe to prune on.
pub(super) fn file_statistics(
    schema: &SchemaRef,
    files: &[Option<serde_json::Value>],
) -> FileStatistics {
    let rows: ArrayRef = Arc::new(UInt64Array::from_iter(files.iter().map(|f| {
        f.as_ref()
            .and_then(|v| v.get("numRecords"))
            .and_then(serde_json::Value::as_u64)
    })));
    let mut columns = HashMap::new();
    if files.is_empty() {
        return FileStatistics {
            files: 0,
            columns,
            rows,
        };
    }
    for field in schema.fields() {
        let dt = field.data_type();
        if !prunable(dt) {
            continue;
        }
        let name = field.name();
        let stat = |kind: &str, f: &Option<serde_json::Value>| {
            f.as_ref()
                .and_then(|v| v.get(kind))
                .and_then(|m| m.get(name.as_str()))
                .cloned()
        };
        let bound = |kind: &str, upper: bool| -> Option<ArrayRef> {
            let values = files.iter().map(|f| {
                stat(kind, f)
                    .and_then(|v| scalar(dt, &v, upper))
                    .map_or_else(|| ScalarValue::try_new_null(dt), Ok)
            });
            let values: Result<Vec<_>> = values.collect();
            values.ok().and_then(|v| ScalarValue::iter_to_array(v).ok())
        };
        let (Some(min), Some(max)) = (bound("minValues", false), bound("maxValues", true)) else {
            continue;
        };
        let nulls: ArrayRef = Arc::new(UInt64Array::from_iter(
            files
                .iter()
                .map(|f| stat("nullCount", f).and_then(|v| v.as_u64())),
        ));
        columns.insert(name.clone(), ColumnBounds { min, max, nulls });
    }
    FileStatistics {
        files: files.len(),
        columns,
        rows,
    }
}

/// Column types whose Delta statistics bound every value of the file.
fn prunable(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Microsecond, _)
    )
}

/// A Delta statistics value as a scalar of `dt`; an upper bound of a
/// timestamp is widened to the end of its millisecond.
pub(super) fn scalar(dt: &DataType, v: &serde_json::Value, upper: bool) -> Option<ScalarValue> {
    Some(match dt {
        DataType::Int8 => ScalarValue::Int8(Some(i8::try_from(v.as_i64()?).ok()?)),
        DataType::Int16 => ScalarValue::Int16(Some(i16::try_from(v.as_i64()?).ok()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i32::try_from(v.as_i64()?).ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(v.as_i64()?)),
        DataType::UInt8 => ScalarValue::UInt8(Some(u8::try_from(v.as_u64()?).ok()?)),
        DataType::UInt16 => ScalarValue::UInt16(Some(u16::try_from(v.as_u64()?).ok()?)),
        DataType::UInt32 => ScalarValue::UInt32(Some(u32::try_from(v.as_u64()?).ok()?)),
        DataType::UInt64 => ScalarValue::UInt64(Some(v.as_u64()?)),
        DataType::Date32 => {
            let d = chrono::NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d").ok()?;
            let days = d
                .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?)
                .num_days();
            ScalarValue::Date32(Some(i32::try_from(days).ok()?))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let text = v.as_str()?;
            // With a time zone Delta writes RFC 3339 (`…Z`); without one
            // (`timestampNtz`) the wall-clock time with no offset, as
            // `2021-01-02 04:41:01.244`. A wall-clock bound with an offset
            // other than `Z` would be ambiguous: it is unknown, not shifted.
            let micros = match tz {
                Some(_) => chrono::DateTime::parse_from_rfc3339(text)
                    .ok()?
                    .timestamp_micros(),
                None => {
                    let text = text.strip_suffix('Z').unwrap_or(text);
                    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                        .iter()
                        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())?
                        .and_utc()
                        .timestamp_micros()
                }
            };
            let micros = if upper {
                micros.checked_add(999)?
            } else {
                micros
            };
            ScalarValue::TimestampMicrosecond(Some(micros), tz.clone())
        }
        _ => return None,
    })
}
