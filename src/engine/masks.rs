//! Column-mask scalar UDFs.
//!
//! Policies mask a column by wrapping it in one of these functions when a
//! query is rewritten:
//!
//! | name | arguments | result |
//! |---|---|---|
//! | [`PARTIAL`] | `(text, keep_last BIGINT, prefix TEXT)` | `prefix` + at most `keep_last` trailing characters (never more than half the value) |
//! | [`ZIP3`] | `(text)` | first three digits + `"00"`, or NULL unless the value starts with three ASCII digits |
//! | [`YEAR`] | `(date or timestamp)` | January 1 (00:00:00 UTC) of the value's year, same type as the input |
//! | [`YEAR_OR_NULL_OVER_AGE`] | `(date or timestamp, max_age BIGINT)` | like [`YEAR`], but NULL when the person is older than `max_age` today (the date when the batch is evaluated) |
//! | [`PSEUDONYM`] | `(integer or text[, domain TEXT])` | keyed HMAC-SHA-256 pseudonym in a key domain: BIGINT for integers, `p_` + 24 hex digits for text |
//!
//! Every function is strict (a NULL argument gives NULL), never panics on
//! data, and never puts a data value into an error message: every execution
//! error reads `invalid input for mask`. All are declared immutable: masks
//! are only ever applied to a column, so no optimiser folds a call; the one
//! that depends on the date reads its [`Clock`] each time it evaluates a
//! batch, never when it is built or planned.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use chrono::{DateTime, Datelike, NaiveDate};
use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, Int64Array, Int64Builder, PrimitiveArray,
    StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt64Type,
};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `lakeward_partial(text, keep_last, prefix)`.
pub const PARTIAL: &str = "lakeward_partial";
/// `lakeward_zip3(text)`.
pub const ZIP3: &str = "lakeward_zip3";
/// `lakeward_year(date_or_timestamp)`.
pub const YEAR: &str = "lakeward_year";
/// `lakeward_year_or_null_over_age(date_or_timestamp, max_age)`.
pub const YEAR_OR_NULL_OVER_AGE: &str = "lakeward_year_or_null_over_age";
/// `lakeward_pseudonym(value[, domain])`.
pub const PSEUDONYM: &str = "lakeward_pseudonym";
/// The key domain of patient identifiers, also the domain of a pseudonym
/// called without one (see [`LakewardPseudonym`]).
pub const PATIENT_DOMAIN: &str = "patient";

/// Is `d` a valid key domain name (see [`crate::policy::is_valid_key_domain`])?
pub fn is_valid_domain(d: &str) -> bool {
    crate::policy::is_valid_key_domain(d)
}

/// The one execution error message of this module.
const INVALID: &str = "invalid input for mask";

/// All five mask functions, ready for `SessionContext::register_udf`.
///
/// `pseudonym_key` keys [`PSEUDONYM`]; [`YEAR_OR_NULL_OVER_AGE`] computes
/// ages on today's date (UTC), read when a batch is evaluated.
pub fn mask_udfs(pseudonym_key: &[u8]) -> Vec<ScalarUDF> {
    mask_udfs_with_clock(pseudonym_key, Clock::System)
}

/// [`mask_udfs`] with the date of [`YEAR_OR_NULL_OVER_AGE`] taken from
/// `clock` (tests).
pub fn mask_udfs_with_clock(pseudonym_key: &[u8], clock: Clock) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(LakewardPartial::new()),
        ScalarUDF::new_from_impl(LakewardZip3::new()),
        ScalarUDF::new_from_impl(LakewardYear::new()),
        ScalarUDF::new_from_impl(LakewardYearOrNullOverAge::new(clock)),
        ScalarUDF::new_from_impl(LakewardPseudonym::new(pseudonym_key)),
    ]
}

/// Where [`LakewardYearOrNullOverAge`] reads today's date.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock, UTC.
    System,
    /// A settable date, in days since 1970-01-01 (tests).
    Manual(Arc<AtomicI32>),
}

impl Clock {
    /// A manual clock showing `date`.
    pub fn manual(date: NaiveDate) -> Clock {
        Clock::Manual(Arc::new(AtomicI32::new(
            date_to_date32(date).unwrap_or_default(),
        )))
    }

    /// Set a manual clock (no effect on the system clock).
    pub fn set(&self, date: NaiveDate) {
        if let (Clock::Manual(days), Some(d)) = (self, date_to_date32(date)) {
            days.store(d, Ordering::Relaxed);
        }
    }

    /// Today's date on this clock.
    pub fn today(&self) -> Option<NaiveDate> {
        match self {
            Clock::System => Some(chrono::Utc::now().date_naive()),
            Clock::Manual(days) => date32_to_date(days.load(Ordering::Relaxed)),
        }
    }
}

impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Clock::System, Clock::System) => true,
            (Clock::Manual(a), Clock::Manual(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

impl Hash for Clock {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Clock::System => 0u8.hash(state),
            Clock::Manual(a) => {
                1u8.hash(state);
                (Arc::as_ptr(a) as usize).hash(state);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn invalid() -> DataFusionError {
    DataFusionError::Execution(INVALID.to_owned())
}

/// Planning-time error: names the function and the argument *types* (never
/// values).
fn invalid_types(name: &str, types: &[DataType]) -> DataFusionError {
    let list = types
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    DataFusionError::Plan(format!("{INVALID}: {name} does not accept ({list})"))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Coercion target for a text argument: the three string types stay as they
/// are (converted at execution), dictionaries of strings and NULL become Utf8.
fn coerce_text(t: &DataType) -> Option<DataType> {
    match t {
        t if is_string(t) => Some(t.clone()),
        DataType::Null => Some(DataType::Utf8),
        DataType::Dictionary(_, v) if is_string(v) => Some(DataType::Utf8),
        _ => None,
    }
}

/// Coercion target for an integer argument (always BIGINT).
fn coerce_int64(t: &DataType) -> Option<DataType> {
    (t.is_integer() || *t == DataType::Null).then_some(DataType::Int64)
}

/// Coercion target for a date or timestamp argument (unchanged; NULL → Date32).
fn coerce_temporal(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Some(t.clone()),
        DataType::Null => Some(DataType::Date32),
        _ => None,
    }
}

/// Apply per-position coercions, failing on arity or type mismatch.
fn coerce_all(
    name: &str,
    arg_types: &[DataType],
    rules: &[fn(&DataType) -> Option<DataType>],
) -> Result<Vec<DataType>> {
    if arg_types.len() != rules.len() {
        return Err(invalid_types(name, arg_types));
    }
    arg_types
        .iter()
        .zip(rules)
        .map(|(t, rule)| rule(t).ok_or_else(|| invalid_types(name, arg_types)))
        .collect()
}

/// Run `f` over the arguments as equal-length arrays. When every argument is
/// a scalar, the (one-row) result is returned as a scalar.
fn eval(
    args: &[ColumnarValue],
    arity: usize,
    f: impl FnOnce(&[ArrayRef]) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    if args.len() != arity {
        return Err(invalid());
    }
    let all_scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let arrays = ColumnarValue::values_to_arrays(args).map_err(|_| invalid())?;
    let out = f(&arrays)?;
    if all_scalar {
        if out.len() != 1 {
            return Err(invalid());
        }
        Ok(ColumnarValue::Scalar(
            ScalarValue::try_from_array(&out, 0).map_err(|_| invalid())?,
        ))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// Any string representation (or NULL / dictionary of strings) as Utf8.
fn as_utf8(array: &ArrayRef) -> Result<StringArray> {
    let utf8 = match array.data_type() {
        DataType::Utf8 => Arc::clone(array),
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Null | DataType::Dictionary(_, _) => {
            cast(array, &DataType::Utf8).map_err(|_| invalid())?
        }
        _ => return Err(invalid()),
    };
    utf8.as_string_opt::<i32>().cloned().ok_or_else(invalid)
}

/// Any integer array (or NULL) as Int64; out-of-range values become NULL.
fn as_int64(array: &ArrayRef) -> Result<Int64Array> {
    let t = array.data_type();
    let int64 = match t {
        DataType::Int64 => Arc::clone(array),
        t if t.is_integer() || *t == DataType::Null => {
            cast(array, &DataType::Int64).map_err(|_| invalid())?
        }
        _ => return Err(invalid()),
    };
    int64
        .as_primitive_opt::<Int64Type>()
        .cloned()
        .ok_or_else(invalid)
}

// ---------------------------------------------------------------------------
// lakeward_partial
// ---------------------------------------------------------------------------

/// `lakeward_partial(text, keep_last, prefix)`: `prefix` followed by the last
/// `min(keep_last, chars / 2)` characters of the value, so that short values
/// never come out whole. A negative `keep_last` is an error.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LakewardPartial {
    signature: Signature,
}

impl LakewardPartial {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for LakewardPartial {
    fn default() -> Self {
        Self::new()
    }
}

/// The masked form of one value (see [`LakewardPartial`]).
fn partial_one(value: &str, keep_last: i64, prefix: &str, out: &mut String) -> Result<()> {
    let keep = usize::try_from(keep_last).map_err(|_| invalid())?;
    let len = value.chars().count();
    let n = keep.min(len / 2);
    let start = value
        .char_indices()
        .nth(len - n)
        .map_or(value.len(), |(i, _)| i);
    out.clear();
    out.push_str(prefix);
    out.push_str(value.get(start..).ok_or_else(invalid)?);
    Ok(())
}

impl ScalarUDFImpl for LakewardPartial {
    fn name(&self) -> &str {
        PARTIAL
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_all(
            PARTIAL,
            arg_types,
            &[coerce_text, coerce_int64, coerce_text],
        )
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval(&args.args, 3, |arrays| {
            let values = as_utf8(&arrays[0])?;
            let keep = as_int64(&arrays[1])?;
            let prefix = as_utf8(&arrays[2])?;
            let mut out = StringBuilder::with_capacity(values.len(), values.value_data().len());
            let mut buf = String::new();
            for i in 0..values.len() {
                if values.is_null(i) || keep.is_null(i) || prefix.is_null(i) {
                    out.append_null();
                } else {
                    partial_one(values.value(i), keep.value(i), prefix.value(i), &mut buf)?;
                    out.append_value(&buf);
                }
            }
            Ok(Arc::new(out.finish()) as ArrayRef)
        })
    }
}

// ---------------------------------------------------------------------------
// lakeward_zip3
// ---------------------------------------------------------------------------

/// `lakeward_zip3(text)`: the first three characters followed by `00` when
/// the value starts with three ASCII digits, else NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LakewardZip3 {
    signature: Signature,
}

impl LakewardZip3 {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for LakewardZip3 {
    fn default() -> Self {
        Self::new()
    }
}

fn zip3_one(value: &str) -> Option<&str> {
    let head = value.get(..3)?;
    head.bytes().all(|b| b.is_ascii_digit()).then_some(head)
}

impl ScalarUDFImpl for LakewardZip3 {
    fn name(&self) -> &str {
        ZIP3
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_all(ZIP3, arg_types, &[coerce_text])
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval(&args.args, 1, |arrays| {
            let values = as_utf8(&arrays[0])?;
            let mut out = StringBuilder::with_capacity(values.len(), values.len() * 5);
            let mut buf = String::with_capacity(5);
            for i in 0..values.len() {
                match (!values.is_null(i))
                    .then(|| zip3_one(values.value(i)))
                    .flatten()
                {
                    Some(head) => {
                        buf.clear();
                        buf.push_str(head);
                        buf.push_str("00");
                        out.append_value(&buf);
                    }
                    None => out.append_null(),
                }
            }
            Ok(Arc::new(out.finish()) as ArrayRef)
        })
    }
}

// ---------------------------------------------------------------------------
// lakeward_year and lakeward_year_or_null_over_age
// ---------------------------------------------------------------------------

/// Days from 0001-01-01 (CE day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn date32_to_date(v: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(v.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}
fn date_to_date32(d: NaiveDate) -> Option<i32> {
    d.num_days_from_ce().checked_sub(UNIX_EPOCH_DAYS_FROM_CE)
}
fn s_to_date(v: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp(v, 0).map(|t| t.date_naive())
}
fn date_to_s(d: NaiveDate) -> Option<i64> {
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}
fn ms_to_date(v: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(v).map(|t| t.date_naive())
}
fn date_to_ms(d: NaiveDate) -> Option<i64> {
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}
fn us_to_date(v: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_micros(v).map(|t| t.date_naive())
}
fn date_to_us(d: NaiveDate) -> Option<i64> {
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}
fn ns_to_date(v: i64) -> Option<NaiveDate> {
    Some(DateTime::from_timestamp_nanos(v).date_naive())
}
fn date_to_ns(d: NaiveDate) -> Option<i64> {
    d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt()
}

/// Age in completed years on `reference` of someone born on `birth`.
fn age_years(birth: NaiveDate, reference: NaiveDate) -> i64 {
    let mut age = i64::from(reference.year()) - i64::from(birth.year());
    if (reference.month(), reference.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// The optional age cut-off: per-row maximum age and the reference date.
type AgeLimit<'a> = Option<(&'a Int64Array, NaiveDate)>;

/// Map each value to January 1 of its year (NULL when over the age limit).
fn map_to_year<T: ArrowPrimitiveType>(
    input: &ArrayRef,
    limit: AgeLimit<'_>,
    to_date: fn(T::Native) -> Option<NaiveDate>,
    from_date: fn(NaiveDate) -> Option<T::Native>,
) -> Result<PrimitiveArray<T>> {
    let values = input.as_primitive_opt::<T>().ok_or_else(invalid)?;
    let mut out: Vec<Option<T::Native>> = Vec::with_capacity(values.len());
    for i in 0..values.len() {
        if values.is_null(i) {
            out.push(None);
            continue;
        }
        let date = to_date(values.value(i)).ok_or_else(invalid)?;
        if let Some((max_age, reference)) = limit
            && (max_age.is_null(i) || age_years(date, reference) > max_age.value(i))
        {
            out.push(None);
            continue;
        }
        let jan1 = NaiveDate::from_ymd_opt(date.year(), 1, 1).ok_or_else(invalid)?;
        out.push(Some(from_date(jan1).ok_or_else(invalid)?));
    }
    Ok(out.into_iter().collect())
}

/// Type-preserving year truncation of a Date32, Date64 or Timestamp array.
fn year_array(input: &ArrayRef, limit: AgeLimit<'_>) -> Result<ArrayRef> {
    Ok(match input.data_type() {
        DataType::Date32 => Arc::new(map_to_year::<Date32Type>(
            input,
            limit,
            date32_to_date,
            date_to_date32,
        )?),
        DataType::Date64 => Arc::new(map_to_year::<Date64Type>(
            input, limit, ms_to_date, date_to_ms,
        )?),
        DataType::Timestamp(unit, tz) => match unit {
            TimeUnit::Second => Arc::new(
                map_to_year::<TimestampSecondType>(input, limit, s_to_date, date_to_s)?
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Millisecond => Arc::new(
                map_to_year::<TimestampMillisecondType>(input, limit, ms_to_date, date_to_ms)?
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Microsecond => Arc::new(
                map_to_year::<TimestampMicrosecondType>(input, limit, us_to_date, date_to_us)?
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Nanosecond => Arc::new(
                map_to_year::<TimestampNanosecondType>(input, limit, ns_to_date, date_to_ns)?
                    .with_timezone_opt(tz.clone()),
            ),
        },
        DataType::Null => Arc::new(PrimitiveArray::<Date32Type>::new_null(input.len())),
        _ => return Err(invalid()),
    })
}

/// `lakeward_year(date_or_timestamp)`: January 1 (00:00:00 UTC for
/// timestamps) of the value's year, in the input's own type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LakewardYear {
    signature: Signature,
}

impl LakewardYear {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for LakewardYear {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for LakewardYear {
    fn name(&self) -> &str {
        YEAR
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] => coerce_temporal(t).ok_or_else(|| invalid_types(YEAR, arg_types)),
            _ => Err(invalid_types(YEAR, arg_types)),
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_all(YEAR, arg_types, &[coerce_temporal])
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval(&args.args, 1, |arrays| year_array(&arrays[0], None))
    }
}

/// `lakeward_year_or_null_over_age(date_or_timestamp, max_age)`: like
/// [`LakewardYear`], but NULL when the person is older than `max_age`
/// completed years today. Today is read from the [`Clock`] once per
/// evaluated batch, so a long-running server moves a person into the
/// over-age group on their birthday, not at its next restart.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LakewardYearOrNullOverAge {
    signature: Signature,
    clock: Clock,
}

impl LakewardYearOrNullOverAge {
    pub fn new(clock: Clock) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            clock,
        }
    }
}

impl ScalarUDFImpl for LakewardYearOrNullOverAge {
    fn name(&self) -> &str {
        YEAR_OR_NULL_OVER_AGE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t, _] => {
                coerce_temporal(t).ok_or_else(|| invalid_types(YEAR_OR_NULL_OVER_AGE, arg_types))
            }
            _ => Err(invalid_types(YEAR_OR_NULL_OVER_AGE, arg_types)),
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_all(
            YEAR_OR_NULL_OVER_AGE,
            arg_types,
            &[coerce_temporal, coerce_int64],
        )
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // No date (a clock out of range): nobody's age is known, fail closed.
        let today = self.clock.today().ok_or_else(invalid)?;
        eval(&args.args, 2, |arrays| {
            let max_age = as_int64(&arrays[1])?;
            year_array(&arrays[0], Some((&max_age, today)))
        })
    }
}

// ---------------------------------------------------------------------------
// lakeward_pseudonym
// ---------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

/// `lakeward_pseudonym(value[, domain])`: a keyed HMAC-SHA-256 pseudonym
/// in a key domain.
///
/// * integers (Int8 … Int64, UInt8 … UInt64) → BIGINT: the first 8 bytes of
///   `HMAC(key, prefix || "i:" || decimal text)` read big-endian, top bit
///   cleared (so the result is never negative). The same number gives the
///   same pseudonym whatever its integer width.
/// * text (any string type) → Utf8: `"p_"` + lowercase hex of the first 12
///   bytes of `HMAC(key, prefix || "s:" || UTF-8 bytes)`.
///
/// The domain (a literal, [`is_valid_domain`]) separates identifier spaces:
/// patient 5 and encounter 5 get unrelated pseudonyms, while every column
/// holding encounter ids (same domain) stays joinable. The prefix is empty
/// for the patient domain ([`PATIENT_DOMAIN`], also used when no domain is
/// given), so patient pseudonyms are those of earlier versions; for any
/// other domain `d` it is `"r:" || d || ":"`. Both encodings are
/// unambiguous (a domain has no `:`; the patient domain starts with `i:` or
/// `s:`, the others with `r:`).
///
/// Equal inputs give equal outputs (pseudonymised columns stay joinable);
/// different keys give different outputs. The key never appears in `Debug`;
/// equality and hashing use only `key_id`, the first 8 bytes of SHA-256(key).
/// Only the keyed HMAC state is kept, not the raw key bytes.
#[derive(Clone)]
pub struct LakewardPseudonym {
    signature: Signature,
    key_id: [u8; 8],
    mac: HmacSha256,
}

impl LakewardPseudonym {
    pub fn new(key: &[u8]) -> Self {
        let digest = Sha256::digest(key);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&digest[..8]);
        // HMAC accepts keys of every length (long keys are hashed first), so
        // this cannot fail; it does not depend on data either.
        let mac = <HmacSha256 as Mac>::new_from_slice(key)
            .expect("HMAC-SHA-256 accepts keys of any length");
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            key_id,
            mac,
        }
    }

    /// The public fingerprint of the key (first 8 bytes of SHA-256(key)).
    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// The BIGINT pseudonyms of `values` in `domain` (what the function
    /// returns for them), or `None` for a domain that is not valid. The key
    /// indexes of point lookups use it to find the rows a de-identified
    /// role's `pseudonym = $1` names.
    pub(crate) fn int64_pseudonyms(
        &self,
        domain: &str,
        values: impl Iterator<Item = i64>,
    ) -> Option<Vec<i64>> {
        if !is_valid_domain(domain) {
            return None;
        }
        let base = self.domain_mac(domain);
        let mut buf = [0u8; 32];
        values
            .map(|v| {
                let mut w: &mut [u8] = &mut buf[..];
                write!(w, "{v}").ok()?;
                let used = 32 - w.len();
                Some(Self::int_pseudonym(&base, &buf[..used]))
            })
            .collect()
    }

    /// The keyed MAC state after the domain prefix (see the type's docs).
    fn domain_mac(&self, domain: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        if domain != PATIENT_DOMAIN {
            mac.update(b"r:");
            mac.update(domain.as_bytes());
            mac.update(b":");
        }
        mac
    }

    fn tag(base: &HmacSha256, kind: &[u8], value: &[u8]) -> [u8; 32] {
        let mut mac = base.clone();
        mac.update(kind);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// The BIGINT pseudonym of an integer given as its decimal text.
    fn int_pseudonym(base: &HmacSha256, decimal: &[u8]) -> i64 {
        let tag = Self::tag(base, b"i:", decimal);
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        (u64::from_be_bytes(first) & 0x7FFF_FFFF_FFFF_FFFF) as i64
    }

    /// The text pseudonym of a string, written into `out`.
    fn str_pseudonym(base: &HmacSha256, value: &str, out: &mut String) {
        let tag = Self::tag(base, b"s:", value.as_bytes());
        out.clear();
        out.push_str("p_");
        out.push_str(&hex::encode(&tag[..12]));
    }

    /// The domain argument: absent → the patient domain; otherwise one
    /// valid domain name for the whole call (a literal).
    fn domain_of(args: &[ColumnarValue]) -> Result<String> {
        let scalar = match args {
            [_] => return Ok(PATIENT_DOMAIN.to_owned()),
            [_, ColumnarValue::Scalar(s)] => s,
            _ => return Err(invalid()),
        };
        let d = match scalar {
            ScalarValue::Utf8(Some(d))
            | ScalarValue::LargeUtf8(Some(d))
            | ScalarValue::Utf8View(Some(d)) => d,
            _ => return Err(invalid()),
        };
        if is_valid_domain(d) {
            Ok(d.clone())
        } else {
            Err(invalid())
        }
    }

    fn ints<T>(&self, base: &HmacSha256, input: &ArrayRef) -> Result<ArrayRef>
    where
        T: ArrowPrimitiveType,
        T::Native: fmt::Display,
    {
        let values = input.as_primitive_opt::<T>().ok_or_else(invalid)?;
        let mut out = Int64Builder::with_capacity(values.len());
        let mut buf = [0u8; 32];
        for i in 0..values.len() {
            if values.is_null(i) {
                out.append_null();
                continue;
            }
            // Decimal text without allocating (at most 20 bytes).
            let mut w: &mut [u8] = &mut buf[..];
            write!(w, "{}", values.value(i)).map_err(|_| invalid())?;
            let used = 32 - w.len();
            out.append_value(Self::int_pseudonym(base, &buf[..used]));
        }
        Ok(Arc::new(out.finish()))
    }

    fn strings(&self, base: &HmacSha256, input: &ArrayRef) -> Result<ArrayRef> {
        let values = as_utf8(input)?;
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 26);
        let mut buf = String::with_capacity(26);
        for i in 0..values.len() {
            if values.is_null(i) {
                out.append_null();
            } else {
                Self::str_pseudonym(base, values.value(i), &mut buf);
                out.append_value(&buf);
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

impl fmt::Debug for LakewardPseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakewardPseudonym")
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

impl PartialEq for LakewardPseudonym {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id
    }
}

impl Eq for LakewardPseudonym {}

impl Hash for LakewardPseudonym {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_id.hash(state);
    }
}

fn coerce_pseudonym(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Int64 | DataType::Int32 | DataType::UInt64 => Some(t.clone()),
        t if t.is_integer() => Some(DataType::Int64),
        t => coerce_text(t),
    }
}

impl ScalarUDFImpl for LakewardPseudonym {
    fn name(&self) -> &str {
        PSEUDONYM
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let value = match arg_types {
            [t] => t,
            [t, d] if coerce_text(d).is_some() => t,
            _ => return Err(invalid_types(PSEUDONYM, arg_types)),
        };
        if value.is_integer() {
            Ok(DataType::Int64)
        } else if coerce_text(value).is_some() {
            Ok(DataType::Utf8)
        } else {
            Err(invalid_types(PSEUDONYM, arg_types))
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() == 2 {
            coerce_all(PSEUDONYM, arg_types, &[coerce_pseudonym, coerce_text])
        } else {
            coerce_all(PSEUDONYM, arg_types, &[coerce_pseudonym])
        }
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let domain = Self::domain_of(&args.args)?;
        let base = self.domain_mac(&domain);
        eval(&args.args[..1], 1, |arrays| {
            let input = &arrays[0];
            match input.data_type() {
                DataType::Int64 => self.ints::<Int64Type>(&base, input),
                DataType::Int32 => self.ints::<Int32Type>(&base, input),
                DataType::UInt64 => self.ints::<UInt64Type>(&base, input),
                t if t.is_integer() => {
                    let wide = cast(input, &DataType::Int64).map_err(|_| invalid())?;
                    self.ints::<Int64Type>(&base, &wide)
                }
                _ => self.strings(&base, input),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, RecordBatch, TimestampMicrosecondArray};
    use datafusion::prelude::SessionContext;

    const KEY: &[u8] = b"test-key-0123456789abcdef-secret";

    fn reference() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 3, 15).expect("valid date")
    }

    fn ctx_with(key: &[u8]) -> SessionContext {
        ctx_with_clock(key, Clock::manual(reference()))
    }

    fn ctx_with_clock(key: &[u8], clock: Clock) -> SessionContext {
        let ctx = SessionContext::new();
        for udf in mask_udfs_with_clock(key, clock) {
            ctx.register_udf(udf);
        }
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        ctx.sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("execute")
    }

    async fn run_err(ctx: &SessionContext, sql: &str) -> String {
        match ctx.sql(sql).await {
            Err(e) => e.to_string(),
            Ok(df) => match df.collect().await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("expected an error for {sql}"),
            },
        }
    }

    /// First column of all batches, as optional strings.
    fn strings(batches: &[RecordBatch]) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for b in batches {
            let col = cast(b.column(0), &DataType::Utf8).expect("cast");
            let col = col.as_string::<i32>();
            out.extend((0..col.len()).map(|i| (!col.is_null(i)).then(|| col.value(i).to_owned())));
        }
        out
    }

    fn ints(batches: &[RecordBatch]) -> Vec<Option<i64>> {
        let mut out = Vec::new();
        for b in batches {
            let col = b.column(0).as_primitive::<Int64Type>();
            out.extend((0..col.len()).map(|i| (!col.is_null(i)).then(|| col.value(i))));
        }
        out
    }

    fn first_type(batches: &[RecordBatch]) -> DataType {
        batches[0].schema().field(0).data_type().clone()
    }

    #[tokio::test]
    async fn partial_masks_ssn_short_and_null() {
        let ctx = ctx_with(KEY);
        let b = run(
            &ctx,
            "SELECT lakeward_partial(x, 4, '***-**-') FROM \
             (VALUES ('123-45-6789'), ('12'), (NULL), (''), ('ab€d€fgh')) t(x)",
        )
        .await;
        assert_eq!(first_type(&b), DataType::Utf8);
        assert_eq!(
            strings(&b),
            vec![
                Some("***-**-6789".to_owned()),
                Some("***-**-2".to_owned()),
                None,
                Some("***-**-".to_owned()),
                Some("***-**-€fgh".to_owned()),
            ]
        );
        // Scalar (constant-folded) call, Utf8View input, NULL literal arguments.
        let b = run(
            &ctx,
            "SELECT lakeward_partial(arrow_cast('123-45-6789', 'Utf8View'), 4, 'x'), \
                    lakeward_partial('123', NULL, 'x'), lakeward_partial(NULL, 4, 'x')",
        )
        .await;
        assert_eq!(strings(&b), vec![Some("x6789".to_owned())]);
        let batch = &b[0];
        assert!(batch.column(1).is_null(0));
        assert!(batch.column(2).is_null(0));
        // A negative keep_last is rejected without echoing the value.
        let e = run_err(
            &ctx,
            "SELECT lakeward_partial(x, -1, 'p') FROM (VALUES ('secret-value')) t(x)",
        )
        .await;
        assert!(e.contains(INVALID), "{e}");
        assert!(!e.contains("secret"), "{e}");
        // Wrong types fail at planning.
        let e = run_err(&ctx, "SELECT lakeward_partial(1.5, 4, 'p')").await;
        assert!(e.contains(INVALID), "{e}");
    }

    #[tokio::test]
    async fn zip3_keeps_three_digits() {
        let ctx = ctx_with(KEY);
        let b = run(
            &ctx,
            "SELECT lakeward_zip3(x) FROM (VALUES ('02139'), (NULL), ('ab'), ('12'), ('1a345'), ('021-39'), ('é12')) t(x)",
        )
        .await;
        assert_eq!(first_type(&b), DataType::Utf8);
        assert_eq!(
            strings(&b),
            vec![
                Some("02100".to_owned()),
                None,
                None,
                None,
                None,
                Some("02100".to_owned()),
                None
            ]
        );
        let b = run(
            &ctx,
            "SELECT lakeward_zip3(arrow_cast('94105', 'LargeUtf8'))",
        )
        .await;
        assert_eq!(strings(&b), vec![Some("94100".to_owned())]);
    }

    #[tokio::test]
    async fn year_on_date32() {
        let ctx = ctx_with(KEY);
        let b = run(
            &ctx,
            "SELECT lakeward_year(d) FROM (VALUES (CAST('2020-07-04' AS DATE)), (NULL), (CAST('1969-12-31' AS DATE))) t(d)",
        )
        .await;
        assert_eq!(first_type(&b), DataType::Date32);
        let col = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<Date32Array>()
            .expect("date32");
        let d = |i: usize| col.value_as_date(i).expect("date");
        assert_eq!(d(0), NaiveDate::from_ymd_opt(2020, 1, 1).expect("date"));
        assert!(col.is_null(1));
        assert_eq!(d(2), NaiveDate::from_ymd_opt(1969, 1, 1).expect("date"));
    }

    #[tokio::test]
    async fn year_on_timestamps_preserves_type() {
        let ctx = ctx_with(KEY);
        // SQL TIMESTAMP (whatever unit DataFusion picks).
        let b = run(&ctx, "SELECT lakeward_year(CAST('2020-07-04 10:11:12' AS TIMESTAMP)) AS y, CAST('2020-07-04 10:11:12' AS TIMESTAMP) AS t").await;
        let schema = b[0].schema();
        assert_eq!(schema.field(0).data_type(), schema.field(1).data_type());
        assert_eq!(strings(&b), vec![Some("2020-01-01T00:00:00".to_owned())]);

        // Explicit microseconds, as an array (not constant-folded).
        let b = run(
            &ctx,
            "SELECT lakeward_year(t) FROM (VALUES \
               (arrow_cast(CAST('2020-07-04 10:11:12' AS TIMESTAMP), 'Timestamp(Microsecond, None)')), \
               (NULL)) v(t)",
        )
        .await;
        assert_eq!(
            first_type(&b),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        let col = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ts");
        let expected = NaiveDate::from_ymd_opt(2020, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("dt");
        assert_eq!(col.value_as_datetime(0), Some(expected));
        assert!(col.is_null(1));

        // Timezone kept, computed in UTC; seconds and milliseconds too.
        let b = run(
            &ctx,
            "SELECT lakeward_year(arrow_cast(CAST('2020-07-04 10:11:12' AS TIMESTAMP), 'Timestamp(Millisecond, Some(\"+05:00\"))')), \
                    lakeward_year(arrow_cast(CAST('1999-12-31 23:59:59' AS TIMESTAMP), 'Timestamp(Second, None)'))",
        )
        .await;
        let schema = b[0].schema();
        assert_eq!(
            schema.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("+05:00".into()))
        );
        assert_eq!(
            schema.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Second, None)
        );
        let ms = b[0]
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .value(0);
        assert_eq!(
            Some(ms),
            date_to_ms(NaiveDate::from_ymd_opt(2020, 1, 1).expect("date"))
        );
        let s = b[0]
            .column(1)
            .as_primitive::<TimestampSecondType>()
            .value(0);
        assert_eq!(
            Some(s),
            date_to_s(NaiveDate::from_ymd_opt(1999, 1, 1).expect("date"))
        );

        // Text is not a date.
        let e = run_err(&ctx, "SELECT lakeward_year('2020-01-01')").await;
        assert!(e.contains(INVALID), "{e}");
    }

    #[tokio::test]
    async fn year_or_null_over_age() {
        let ctx = ctx_with(KEY); // reference date 2025-03-15
        let b = run(
            &ctx,
            "SELECT lakeward_year_or_null_over_age(d, 89) FROM (VALUES \
               (CAST('1930-05-01' AS DATE)), (CAST('2000-05-01' AS DATE)), (NULL), \
               (CAST('1935-03-16' AS DATE)), (CAST('1935-03-15' AS DATE))) t(d)",
        )
        .await;
        assert_eq!(first_type(&b), DataType::Date32);
        let col = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<Date32Array>()
            .expect("date32");
        assert!(col.is_null(0), "born 1930 is over 89");
        assert_eq!(col.value_as_date(1), NaiveDate::from_ymd_opt(2000, 1, 1));
        assert!(col.is_null(2));
        // 89 until the day before the 90th birthday, 90 on it.
        assert_eq!(col.value_as_date(3), NaiveDate::from_ymd_opt(1935, 1, 1));
        assert!(col.is_null(4));

        // Timestamps keep their type; a NULL max_age gives NULL.
        let b = run(
            &ctx,
            "SELECT lakeward_year_or_null_over_age(t, 89), lakeward_year_or_null_over_age(t, NULL) FROM (VALUES \
               (CAST('2000-05-01 08:00:00' AS TIMESTAMP)), (CAST('1930-05-01 08:00:00' AS TIMESTAMP))) v(t)",
        )
        .await;
        assert!(matches!(first_type(&b), DataType::Timestamp(_, None)));
        assert_eq!(
            strings(&b),
            vec![Some("2000-01-01T00:00:00".to_owned()), None]
        );
        assert_eq!(b[0].column(1).null_count(), 2);

        assert_eq!(
            age_years(
                NaiveDate::from_ymd_opt(2000, 2, 29).expect("d"),
                reference()
            ),
            25
        );
        assert_eq!(
            age_years(
                NaiveDate::from_ymd_opt(2000, 2, 29).expect("d"),
                NaiveDate::from_ymd_opt(2025, 2, 28).expect("d")
            ),
            24
        );
    }

    #[tokio::test]
    async fn over_age_is_judged_on_the_day_of_execution() {
        // Built (and planned) the day before someone's 90th birthday,
        // evaluated on the birthday: NULL, as if built that day.
        let clock = Clock::manual(NaiveDate::from_ymd_opt(2025, 3, 14).expect("date"));
        let ctx = ctx_with_clock(KEY, clock.clone());
        let sql = "SELECT lakeward_year_or_null_over_age(d, 89) FROM \
                   (VALUES (CAST('1935-03-15' AS DATE)), (CAST('1960-06-01' AS DATE))) t(d)";
        let df = ctx.sql(sql).await.expect("plan");
        let before = run(&ctx, sql).await;
        let col = before[0].column(0).as_primitive::<Date32Type>();
        assert_eq!(col.value_as_date(0), NaiveDate::from_ymd_opt(1935, 1, 1));
        clock.set(NaiveDate::from_ymd_opt(2025, 3, 15).expect("date"));
        let after = df.collect().await.expect("execute");
        let col = after[0].column(0).as_primitive::<Date32Type>();
        assert!(col.is_null(0), "90 today: withheld");
        assert_eq!(col.value_as_date(1), NaiveDate::from_ymd_opt(1960, 1, 1));
        // The system clock is today's date.
        assert_eq!(Clock::System.today(), Some(chrono::Utc::now().date_naive()));
    }

    #[tokio::test]
    async fn pseudonym_domains_separate_identifier_spaces() {
        let ctx = ctx_with(KEY);
        let one = |sql: &'static str| {
            let ctx = &ctx;
            async move { ints(&run(ctx, sql).await)[0].expect("value") }
        };
        let patient = one("SELECT lakeward_pseudonym(CAST(5 AS BIGINT))").await;
        // The patient domain is the default, and its pseudonyms are those of
        // earlier versions (HMAC over "i:" || decimal text).
        assert_eq!(
            one("SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 'patient')").await,
            patient
        );
        let mut mac = <HmacSha256 as Mac>::new_from_slice(KEY).expect("key");
        mac.update(b"i:5");
        let tag = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        assert_eq!(
            patient,
            (u64::from_be_bytes(first) & 0x7FFF_FFFF_FFFF_FFFF) as i64
        );
        let encounter = one("SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 'encounter')").await;
        let claim = one("SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 'claim')").await;
        assert_ne!(encounter, patient);
        assert_ne!(claim, patient);
        assert_ne!(claim, encounter);
        // Stable within a domain, whatever the integer width and the string
        // type of the domain literal; joinable across columns.
        assert_eq!(
            one("SELECT lakeward_pseudonym(CAST(5 AS INT), arrow_cast('encounter', 'Utf8View'))")
                .await,
            encounter
        );
        let b = run(
            &ctx,
            "SELECT lakeward_pseudonym(x, 'encounter') FROM (VALUES (CAST(5 AS BIGINT)), (CAST(6 AS BIGINT)), (NULL)) t(x)",
        )
        .await;
        let v = ints(&b);
        assert_eq!(v[0], Some(encounter));
        assert_ne!(v[1], Some(encounter));
        assert_eq!(v[2], None);
        // Text in a domain too.
        let b = run(
            &ctx,
            "SELECT lakeward_pseudonym('A1'), lakeward_pseudonym('A1', 'visit')",
        )
        .await;
        let a = b[0].column(0).as_string::<i32>().value(0).to_owned();
        let d = b[0].column(1).as_string::<i32>().value(0).to_owned();
        assert!(d.starts_with("p_") && d.len() == 26);
        assert_ne!(a, d);
        // A domain is a literal name: anything else fails, without values.
        for bad in [
            "SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 'Encounter')",
            "SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 'a:b')",
            "SELECT lakeward_pseudonym(CAST(5 AS BIGINT), '')",
            "SELECT lakeward_pseudonym(x, d) FROM (VALUES (CAST(5 AS BIGINT), 'claim')) t(x, d)",
            "SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 'claim', 'x')",
            "SELECT lakeward_pseudonym(CAST(5 AS BIGINT), 7)",
        ] {
            let e = run_err(&ctx, bad).await;
            assert!(e.contains(INVALID), "{bad}: {e}");
        }
        assert!(is_valid_domain("encounter_2"));
        assert!(!is_valid_domain("2x") && !is_valid_domain("a-b"));
    }

    #[tokio::test]
    async fn pseudonym_is_stable_keyed_and_type_preserving() {
        let ctx = ctx_with(KEY);
        let sql = "SELECT lakeward_pseudonym(x) FROM (VALUES (CAST(42 AS BIGINT)), (CAST(42 AS BIGINT)), (CAST(-7 AS BIGINT)), (NULL)) t(x)";
        let b = run(&ctx, sql).await;
        assert_eq!(first_type(&b), DataType::Int64);
        let v = ints(&b);
        assert_eq!(v[0], v[1], "stable within a query");
        assert_ne!(v[0], v[2]);
        assert!(v[0].expect("value") >= 0 && v[2].expect("value") >= 0);
        assert_eq!(v[3], None);
        assert_eq!(ints(&run(&ctx, sql).await), v, "stable across queries");

        // INT keeps joinability with BIGINT and gives BIGINT.
        let b = run(&ctx, "SELECT lakeward_pseudonym(CAST(42 AS INT))").await;
        assert_eq!(first_type(&b), DataType::Int64);
        assert_eq!(ints(&b)[0], v[0]);

        // Text: 'p_' + 24 hex digits, whatever the string type.
        let b = run(
            &ctx,
            "SELECT lakeward_pseudonym(x) FROM (VALUES ('MRN-001'), ('MRN-001'), ('MRN-002'), (NULL)) t(x)",
        )
        .await;
        assert_eq!(first_type(&b), DataType::Utf8);
        let s = strings(&b);
        let p = s[0].clone().expect("value");
        assert_eq!(p.len(), 26);
        assert!(p.starts_with("p_"));
        assert!(
            p[2..]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(s[0], s[1]);
        assert_ne!(s[0], s[2]);
        assert_eq!(s[3], None);
        let b = run(
            &ctx,
            "SELECT lakeward_pseudonym(arrow_cast('MRN-001', 'Utf8View'))",
        )
        .await;
        assert_eq!(strings(&b)[0], s[0]);
        let b = run(
            &ctx,
            "SELECT lakeward_pseudonym(arrow_cast('MRN-001', 'LargeUtf8'))",
        )
        .await;
        assert_eq!(strings(&b)[0], s[0]);

        // Another key, other pseudonyms.
        let other = ctx_with(b"another-key");
        assert_ne!(ints(&run(&other, sql).await)[0], v[0]);
        let b = run(&other, "SELECT lakeward_pseudonym('MRN-001')").await;
        assert_ne!(strings(&b)[0], s[0]);

        // Floats are not accepted.
        let e = run_err(&ctx, "SELECT lakeward_pseudonym(1.5)").await;
        assert!(e.contains(INVALID), "{e}");
    }

    #[test]
    fn pseudonym_debug_and_equality_hide_the_key() {
        let a = LakewardPseudonym::new(KEY);
        let debug = format!("{a:?}");
        assert_eq!(debug, "LakewardPseudonym { key: <redacted> }");
        let udf = ScalarUDF::new_from_impl(LakewardPseudonym::new(KEY));
        let debug = format!("{udf:?} {:#?}", udf);
        let key_text = std::str::from_utf8(KEY).expect("utf8");
        assert!(!debug.contains(key_text), "{debug}");
        assert!(!debug.contains(&hex::encode(KEY)), "{debug}");
        assert!(!debug.contains(&format!("{:?}", KEY)), "{debug}");

        assert_eq!(a, LakewardPseudonym::new(KEY));
        assert_ne!(a, LakewardPseudonym::new(b"another-key"));
        let hash = |p: &LakewardPseudonym| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            p.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&LakewardPseudonym::new(KEY)));
        let digest = Sha256::digest(KEY);
        assert_eq!(a.key_id(), digest[..8]);
    }

    #[test]
    fn names_and_registration() {
        let names: Vec<String> = mask_udfs(KEY).iter().map(|u| u.name().to_owned()).collect();
        assert_eq!(
            names,
            vec![PARTIAL, ZIP3, YEAR, YEAR_OR_NULL_OVER_AGE, PSEUDONYM]
        );
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut s = String::new();
        assert!(partial_one("abc", i64::MAX, "", &mut s).is_ok());
        assert_eq!(s, "c");
        assert!(partial_one("abc", i64::MIN, "", &mut s).is_err());
        assert_eq!(zip3_one("1€"), None);
        assert_eq!(zip3_one("€12"), None);
        assert_eq!(date32_to_date(i32::MAX), None);
        assert_eq!(date32_to_date(i32::MIN), None);
        assert_eq!(us_to_date(i64::MIN), None);
        // The earliest nanosecond timestamp's January 1 is not representable.
        assert_eq!(date_to_ns(ns_to_date(i64::MIN).expect("date")), None);
        let input: ArrayRef = Arc::new(PrimitiveArray::<TimestampNanosecondType>::from(vec![
            i64::MIN,
        ]));
        let e = year_array(&input, None).expect_err("out of range");
        assert_eq!(e.to_string(), format!("Execution error: {INVALID}"));
    }
}
