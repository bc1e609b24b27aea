//! Arrow record batches → PostgreSQL DataRows, streamed.
//!
//! One batch is encoded at a time (arrow-pg's `RowEncoder`), so memory is
//! bounded by DataFusion's batch size whatever the result size. The stream
//! watches the statement's cancellation token between rows and while waiting
//! for the next batch: a CancelRequest stops a query that is already sending.

use std::sync::Arc;

use arrow_pg::datatypes::{PG_OID_ALIAS_KEY, arrow_schema_to_pg_fields, pg_type_for_alias_kind};
use arrow_pg::row_encoder::RowEncoder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use tokio_util::sync::CancellationToken;

use crate::error::SqlError;

/// Column descriptions for a result schema in the requested formats.
/// NUMERIC columns carry their precision and scale as PostgreSQL's type
/// modifier (`((p << 16) | s) + 4`), which drivers read from the
/// RowDescription (psycopg's `cursor.description`, JDBC's
/// `getPrecision`/`getScale`).
///
/// Catalog oids are `int4` values tagged as oids (`pg.oid_alias`): an
/// array of them (`array_agg(atttypid)`) is described as `oid[]`, the
/// type its elements are sent as; a tag left on a column that is no
/// longer an `int4` (`typelem::regtype::text` keeps its source's tag) is
/// ignored, the column is described by its values' type.
pub(crate) fn pg_fields(schema: &Schema, format: &Format) -> Result<Vec<FieldInfo>, SqlError> {
    let described = Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| match stray_oid_tag(f) {
                true => {
                    let mut metadata = f.metadata().clone();
                    metadata.remove(PG_OID_ALIAS_KEY);
                    Arc::new(f.as_ref().clone().with_metadata(metadata))
                }
                false => Arc::clone(f),
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    );
    let fields = arrow_schema_to_pg_fields(&described, format, None)
        .map_err(|_| SqlError::new("0A000", "result has a column type lakeward cannot send"))?;
    Ok(fields
        .into_iter()
        .zip(described.fields().iter())
        .map(|(info, field)| {
            let info = match is_oid_list(field) {
                true => FieldInfo::new(
                    info.name().to_owned(),
                    None,
                    None,
                    pgwire::api::Type::OID_ARRAY,
                    info.format(),
                ),
                false => info,
            };
            match numeric_typmod(field.data_type()) {
                Some(typmod) => info.with_type_modifier(typmod),
                None => info,
            }
        })
        .collect())
}

/// Whether `f` carries an oid tag arrow-pg would describe it by although
/// its values are not `int4` oids.
fn stray_oid_tag(f: &Field) -> bool {
    f.metadata().contains_key(PG_OID_ALIAS_KEY) && *f.data_type() != DataType::Int32
}

/// Whether `f` is a list of oid-tagged `int4` values.
fn is_oid_list(f: &Field) -> bool {
    match f.data_type() {
        DataType::List(elem) | DataType::LargeList(elem) | DataType::FixedSizeList(elem, _) => {
            *elem.data_type() == DataType::Int32
                && elem
                    .metadata()
                    .get(PG_OID_ALIAS_KEY)
                    .is_some_and(|kind| pg_type_for_alias_kind(kind).is_some())
        }
        _ => false,
    }
}

/// PostgreSQL's type modifier of `numeric(p, s)` for a decimal type.
pub(crate) fn numeric_typmod(t: &datafusion::arrow::datatypes::DataType) -> Option<i32> {
    use datafusion::arrow::datatypes::DataType;
    let (p, s) = match t {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => (i32::from(*p), i32::from(*s)),
        _ => return None,
    };
    (s >= 0 && s <= p).then_some(((p << 16) | s) + 4)
}

struct State {
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    current: Option<RowEncoder>,
    cancel: CancellationToken,
    done: bool,
    returned: Option<Returned>,
}

/// The patients of the rows sent (patient accounting): the statement's
/// batches carry their patient keys as trailing columns, which are never
/// encoded; each key is recorded as its row is handed out.
struct Returned {
    sets: Arc<super::accounting::PatientSets>,
    /// The current batch's key columns and its next row.
    keys: Vec<datafusion::arrow::array::Int64Array>,
    row: usize,
    collected: super::accounting::Keys,
}

impl Returned {
    fn batch(&mut self, keys: &[datafusion::arrow::array::ArrayRef]) {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        self.keys = keys
            .iter()
            .filter_map(|k| k.as_primitive_opt::<Int64Type>().cloned())
            .collect();
        self.row = 0;
    }

    fn row_sent(&mut self) {
        use datafusion::arrow::array::Array;
        if let Some(patient) = self.sets.row_patient() {
            self.collected.add(patient);
        }
        for k in &self.keys {
            if self.row < k.len() && k.is_valid(self.row) {
                self.collected.add(k.value(self.row));
            }
        }
        self.row += 1;
    }

    fn flush(&mut self) {
        let keys = std::mem::take(&mut self.collected);
        self.sets
            .merge(super::accounting::Disclosure::Returned, keys);
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Stream the rows of `batches`, encoded for `fields`. Errors are sanitised
/// [`SqlError`]s turned into pgwire `UserError`s (the session stays open).
///
/// Columns past `fields` are never encoded: with `accounting`, they are the
/// statement's patient keys, recorded as their rows are handed out.
pub(crate) fn row_stream(
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    cancel: CancellationToken,
    accounting: Option<Arc<super::accounting::PatientSets>>,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let state = State {
        batches,
        fields,
        current: None,
        cancel,
        done: false,
        returned: accounting.map(|sets| Returned {
            sets,
            keys: Vec::new(),
            row: 0,
            collected: Default::default(),
        }),
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if st.cancel.is_cancelled() {
                st.done = true;
                return Some((Err(SqlError::cancelled().into_pgwire()), st));
            }
            if let Some(enc) = st.current.as_mut() {
                match enc.next_row() {
                    Some(Ok(row)) => {
                        if let Some(r) = st.returned.as_mut() {
                            r.row_sent();
                        }
                        return Some((Ok(row), st));
                    }
                    Some(Err(_)) => {
                        st.done = true;
                        let e = SqlError::new("XX000", "could not encode a result value");
                        return Some((Err(e.into_pgwire()), st));
                    }
                    None => st.current = None,
                }
            }
            let next = tokio::select! {
                biased;
                _ = st.cancel.cancelled() => {
                    st.done = true;
                    return Some((Err(SqlError::cancelled().into_pgwire()), st));
                }
                next = st.batches.next() => next,
            };
            match next {
                None => {
                    // The statement's account is complete before its end
                    // is reported.
                    if let Some(r) = st.returned.as_mut() {
                        r.flush();
                    }
                    return None;
                }
                Some(Ok(batch)) => {
                    // Only the statement's own columns are ever encoded.
                    if let Some(r) = st.returned.as_mut() {
                        let shown = st.fields.len().min(batch.num_columns());
                        r.batch(&batch.columns()[shown..]);
                    }
                    let batch = if batch.num_columns() > st.fields.len() {
                        match batch.project(&(0..st.fields.len()).collect::<Vec<_>>()) {
                            Ok(b) => b,
                            Err(_) => {
                                st.done = true;
                                let e = SqlError::internal();
                                return Some((Err(e.into_pgwire()), st));
                            }
                        }
                    } else {
                        batch
                    };
                    if batch.num_rows() > 0 {
                        if let Err(e) = temporal_range(&batch) {
                            st.done = true;
                            return Some((Err(e.into_pgwire()), st));
                        }
                        let batch = postgres_float_text(batch, &st.fields);
                        st.current = Some(RowEncoder::new(batch, st.fields.clone()));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    let err = super::errors::to_sql_error(&e);
                    tracing::debug!(sqlstate = err.code, "query execution failed");
                    return Some((Err(err.into_pgwire()), st));
                }
            }
        }
    })
}

/// The first and last instants lakeward sends: 0001-01-01 and the end of
/// 9999-12-31, in seconds since the epoch.
const FIRST_SECOND: i64 = -62_135_596_800;
const LAST_SECOND: i64 = 253_402_300_799;

/// Refuses a batch holding a date or timestamp outside 0001-01-01 to
/// 9999-12-31 (22008), rather than sending it wrong: arrow-pg turns a value
/// outside chrono's range into NULL, and prints years before 1 and after
/// 9999 in a form PostgreSQL clients do not parse (`-0495-11-20`,
/// `+248381-08-19`). `9999-12-31`, how healthcare data says "never", is in
/// range. The message names no value.
fn temporal_range(batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<(), SqlError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::{max, min};
    use datafusion::arrow::datatypes::{
        DataType, Date32Type, Date64Type, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampSecondType,
    };
    const DAY: i64 = 86_400;
    for column in batch.columns() {
        let (lo, hi) = match column.data_type() {
            DataType::Date32 => {
                let a = column.as_primitive::<Date32Type>();
                (
                    min(a).map(|v| v as i64 * DAY),
                    max(a).map(|v| v as i64 * DAY),
                )
            }
            DataType::Date64 => {
                let a = column.as_primitive::<Date64Type>();
                (
                    min(a).map(|v| v.div_euclid(1000)),
                    max(a).map(|v| v.div_euclid(1000)),
                )
            }
            DataType::Timestamp(TimeUnit::Second, _) => {
                let a = column.as_primitive::<TimestampSecondType>();
                (min(a), max(a))
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                let a = column.as_primitive::<TimestampMillisecondType>();
                (
                    min(a).map(|v| v.div_euclid(1000)),
                    max(a).map(|v| v.div_euclid(1000)),
                )
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let a = column.as_primitive::<TimestampMicrosecondType>();
                (
                    min(a).map(|v| v.div_euclid(1_000_000)),
                    max(a).map(|v| v.div_euclid(1_000_000)),
                )
            }
            // Nanosecond timestamps cannot leave 1677..2262.
            _ => continue,
        };
        let outside = lo.is_some_and(|v| v < FIRST_SECOND) || hi.is_some_and(|v| v > LAST_SECOND);
        if outside {
            return Err(SqlError::new(
                "22008",
                "date/time field value out of range: a result value is outside 0001-01-01 to 9999-12-31, the range lakeward sends",
            ));
        }
    }
    Ok(())
}

/// Float columns sent in text format, as PostgreSQL prints them.
///
/// pgwire's text encoder prints `inf`, `-inf`, `2.0`, `1e20` and `0` for
/// negative zero; PostgreSQL prints `Infinity`, `-Infinity`, `2`, `1e+20` and
/// `-0`, and clients parse what PostgreSQL prints (Java's
/// `Double.parseDouble("inf")` and JavaScript's `parseFloat("inf")` do not
/// give infinity). Text-format float columns are therefore turned into their
/// PostgreSQL text before encoding; binary-format columns are left alone.
fn postgres_float_text(
    batch: datafusion::arrow::record_batch::RecordBatch,
    fields: &[FieldInfo],
) -> datafusion::arrow::record_batch::RecordBatch {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type};
    let text = |i: usize| {
        fields
            .get(i)
            .is_some_and(|f| f.format() == pgwire::api::results::FieldFormat::Text)
    };
    let floats =
        batch.schema().fields().iter().enumerate().any(|(i, f)| {
            matches!(f.data_type(), DataType::Float32 | DataType::Float64) && text(i)
        });
    if !floats {
        return batch;
    }
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    let mut out_fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, column) in columns.iter_mut().enumerate() {
        if !text(i) {
            continue;
        }
        let strings: StringArray = match column.data_type() {
            DataType::Float64 => column
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(pg_float8_text))
                .collect(),
            DataType::Float32 => column
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(pg_float4_text))
                .collect(),
            _ => continue,
        };
        debug_assert_eq!(strings.len(), column.len());
        *column = Arc::new(strings);
        out_fields[i] = Field::new(out_fields[i].name(), DataType::Utf8, true);
    }
    let schema = Arc::new(Schema::new(out_fields));
    // Same row count, one array per field: cannot fail; keep the original
    // batch if it ever did (pgwire's spelling beats no answer).
    datafusion::arrow::record_batch::RecordBatch::try_new(schema, columns).unwrap_or(batch)
}

/// A float8 as PostgreSQL 12+ prints it (shortest exact digits, the
/// `extra_float_digits >= 1` output that psql, psycopg and pgJDBC get).
pub(crate) fn pg_float8_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let mut buf = ryu::Buffer::new();
    pg_float_layout(buf.format_finite(v), 15)
}

/// A float4 as PostgreSQL 12+ prints it.
pub(crate) fn pg_float4_text(v: f32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let mut buf = ryu::Buffer::new();
    pg_float_layout(buf.format_finite(v), 6)
}

/// Lays out ryu's shortest digits as PostgreSQL does: fixed notation when
/// the decimal exponent is in `[-4, max_fixed_exponent)`, else `d.ddde±XX`
/// (at least two exponent digits); no trailing `.0`; `-0` keeps its sign.
fn pg_float_layout(shortest: &str, max_fixed_exponent: i32) -> String {
    let (negative, unsigned) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest),
    };
    let (mantissa, exp_part) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // All significant digits, and the exponent of the first one.
    let all: String = format!("{int_part}{frac_part}");
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    if digits.is_empty() {
        return format!("{sign}0");
    }
    let exponent = int_part.len() as i32 - 1 - leading as i32 + exp_part;
    let out = if (-4..max_fixed_exponent).contains(&exponent) {
        if exponent >= 0 {
            let point = exponent as usize + 1;
            if digits.len() <= point {
                format!("{digits}{}", "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exponent - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{point}e{esign}{:02}", exponent.abs())
    };
    format!("{sign}{out}")
}

#[cfg(test)]
mod typmod_tests {
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn numeric_type_modifiers_are_postgresqls() {
        assert_eq!(
            super::numeric_typmod(&DataType::Decimal128(12, 2)),
            Some(786_438)
        );
        assert_eq!(
            super::numeric_typmod(&DataType::Decimal128(38, 0)),
            Some(2_490_372)
        );
        assert_eq!(super::numeric_typmod(&DataType::Decimal128(5, -2)), None);
        assert_eq!(super::numeric_typmod(&DataType::Int64), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_arrays_are_described_as_oid_and_stray_oid_tags_ignored() {
        use std::collections::HashMap;
        let tag = || HashMap::from([(PG_OID_ALIAS_KEY.to_owned(), "regtype".to_owned())]);
        let oid = Field::new("item", DataType::Int32, true).with_metadata(tag());
        let schema = Schema::new(vec![
            Field::new("oids", DataType::List(Arc::new(oid)), true),
            Field::new("ints", DataType::new_list(DataType::Int32, true), true),
            Field::new("name", DataType::Utf8, true).with_metadata(tag()),
            Field::new("typ", DataType::Int32, true).with_metadata(tag()),
        ]);
        let types: Vec<u32> = pg_fields(&schema, &Format::UnifiedBinary)
            .expect("described")
            .iter()
            .map(|f| f.datatype().oid())
            .collect();
        assert_eq!(
            types,
            [
                pgwire::api::Type::OID_ARRAY.oid(),
                pgwire::api::Type::INT4_ARRAY.oid(),
                pgwire::api::Type::TEXT.oid(),
                pgwire::api::Type::REGTYPE.oid(),
            ]
        );
    }

    #[test]
    fn dates_and_timestamps_outside_year_1_to_9999_are_refused_not_sent_wrong() {
        use datafusion::arrow::array::{ArrayRef, Date32Array, TimestampMicrosecondArray};
        use datafusion::arrow::record_batch::RecordBatch;
        let batch = |a: ArrayRef| RecordBatch::try_from_iter([("v", a)]).unwrap();
        let day = |y, m, d| {
            (chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
                - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
            .num_days() as i32
        };
        let ok = Date32Array::from(vec![Some(day(1, 1, 1)), None, Some(day(9999, 12, 31))]);
        assert!(temporal_range(&batch(Arc::new(ok))).is_ok());
        for bad in [day(10000, 1, 1), day(0, 12, 31), 2_000_000_000] {
            let a = Date32Array::from(vec![Some(0), Some(bad)]);
            let e = temporal_range(&batch(Arc::new(a))).unwrap_err();
            assert_eq!(e.code, "22008");
        }
        let end = LAST_SECOND * 1_000_000 + 999_999;
        let ok = TimestampMicrosecondArray::from(vec![Some(FIRST_SECOND * 1_000_000), Some(end)])
            .with_timezone("UTC");
        assert!(temporal_range(&batch(Arc::new(ok))).is_ok());
        let bad = TimestampMicrosecondArray::from(vec![Some(end + 1)]);
        assert!(temporal_range(&batch(Arc::new(bad))).is_err());
    }

    #[test]
    fn floats_are_printed_as_postgresql_prints_them() {
        // Values and spellings checked against PostgreSQL 16 (`SELECT x::float8`).
        let cases8 = [
            (2.0, "2"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1e20, "1e+20"),
            (-1e20, "-1e+20"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1e+15"),
            (123456789012345.6, "123456789012345.6"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (1e308, "1e+308"),
            (5e-324, "5e-324"),
            (100.25, "100.25"),
        ];
        for (v, want) in cases8 {
            assert_eq!(pg_float8_text(v), want, "{v:e}");
        }
        let cases4 = [
            (0.1f32, "0.1"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (3.4028235e38, "3.4028235e+38"),
            (0.00001, "1e-05"),
            (-0.0, "-0"),
            (f32::INFINITY, "Infinity"),
            (2.5, "2.5"),
        ];
        for (v, want) in cases4 {
            assert_eq!(pg_float4_text(v), want, "{v:e}");
        }
    }
}
