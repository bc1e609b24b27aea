//! Consent sets: for one purpose, the patients whose decisive consent
//! record says granted (opt-in) or refused (opt-out), computed once and
//! shared by every session and statement until the answer can change.
//!
//! The decisive record of a patient for a purpose is the latest one (by
//! `recorded_at`) that has not expired. The set therefore changes only
//! when the consent table gets a new Delta version, or when one of its
//! records expires. A computation also sets aside the few patients with a
//! record expiring within the next hour ([`EXPIRY_WINDOW`]), with their
//! unexpired records: as each of those records expires, that patient's
//! membership is decided again from them and a copy of the set with the
//! change is published. [`ConsentSet::refresh`] compares the consent
//! table's version and the clock with what the cached set was computed
//! from, applies the expiries that came due, and recomputes the whole set
//! (once, whoever asks first) on a new version or at the window's end;
//! every secured table with a consent check calls it when its scan is
//! planned, so each statement runs against a set at least as new as its
//! start. (Recomputing at every expiry stalled statements for seconds
//! every minute or two with tens of millions of consent records.)
//!
//! Secured tables read a set through a membership function registered in
//! the raw context only, `[NOT] lakeward_consent_<set>(t.patient_id)`: a
//! hash-set probe per row against the shared, already built set. (A
//! semi-join against the set would rebuild a hash table of a few hundred
//! thousand ids in every statement, which dominated point lookups.) The
//! function fails, rather than admits, when no set has been computed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::delta::LatestDeltaProvider;
use crate::policy::{ConsentRules, Purpose};

/// Prefix of the internal membership functions (raw context only; the
/// gate refuses every `lakeward_*` call a client writes).
pub(crate) const CONSENT_FUNCTION_PREFIX: &str = "lakeward_consent_";

/// Which decisive records a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Decision {
    Granted,
    Refused,
}

/// A computed set and what it was computed from.
#[derive(Debug)]
struct Computed {
    /// Consent table version it reflects.
    version: u64,
    /// Until when the set (with `pending` applied as their times come) is
    /// the answer: the end of the expiry window, or the next expiry after
    /// it; `None`: no record expires.
    valid_until: Option<DateTime<Utc>>,
    /// Patients whose decisive record may change within the window (one
    /// of their records expires in it), with their unexpired records.
    volatile: HashMap<i64, Vec<Record>>,
    /// (expiry in nanoseconds, patient), soonest last: when each of
    /// `volatile`'s patients must be looked at again.
    pending: Vec<(i64, i64)>,
}

/// One unexpired consent record of a volatile patient.
#[derive(Debug, Clone, Copy)]
struct Record {
    recorded_ns: i64,
    granted: bool,
    expires_ns: Option<i64>,
}

/// How far ahead a computed set follows expiries record by record: the
/// patients with a record expiring within the window are kept aside and
/// their membership is updated as their records expire, so the set is
/// recomputed from the whole consent table once per window (or per new
/// consent version) instead of at every expiry. With tens of millions of
/// consent records, records expire every minute or two and a full
/// recomputation takes seconds.
const EXPIRY_WINDOW: chrono::Duration = chrono::Duration::hours(1);

impl Record {
    /// Whether `records`' decisive one at `now_ns` (the latest unexpired
    /// by `recorded_at`, a refusal first on a tie, as the set's query
    /// orders them) is `decision`.
    fn decides(records: &[Record], now_ns: i64, decision: Decision) -> bool {
        records
            .iter()
            .filter(|r| r.expires_ns.is_none_or(|e| e > now_ns))
            .max_by(|a, b| {
                a.recorded_ns
                    .cmp(&b.recorded_ns)
                    .then(b.granted.cmp(&a.granted))
            })
            .is_some_and(|r| r.granted == (decision == Decision::Granted))
    }
}

/// The patients of one purpose whose decisive consent record is `decision`.
pub(crate) struct ConsentSet {
    ctx: SessionContext,
    rules: ConsentRules,
    purpose: Purpose,
    decision: Decision,
    source: Arc<LatestDeltaProvider>,
    /// Name of the membership function reading this set.
    function: String,
    /// Serialises recomputation; holds what `current` was built from.
    computed: tokio::sync::Mutex<Option<Computed>>,
    /// The set the membership function probes.
    current: Published,
    /// The last published set as a compressed bitmap, for patient
    /// accounting ([`ConsentSet::members`]).
    as_treemap: Mutex<Option<(Arc<IdSet>, Arc<roaring::RoaringTreemap>)>>,
}

impl std::fmt::Debug for ConsentSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentSet")
            .field("purpose", &self.purpose)
            .field("decision", &self.decision)
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

fn quoted(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl ConsentSet {
    /// `ctx` must have the consent table registered under `rules.table`;
    /// `source` is that table's provider (for its version).
    fn new(
        ctx: SessionContext,
        rules: ConsentRules,
        purpose: Purpose,
        decision: Decision,
        source: Arc<LatestDeltaProvider>,
        function: String,
    ) -> ConsentSet {
        ConsentSet {
            ctx,
            rules,
            purpose,
            decision,
            source,
            function,
            computed: tokio::sync::Mutex::new(None),
            current: Published::default(),
            as_treemap: Mutex::new(None),
        }
    }

    /// The membership function's name, as the internal statement calls it.
    pub(crate) fn function_name(&self) -> &str {
        &self.function
    }

    /// The unexpired records of this purpose (identifiers come from the
    /// validated policy; the purpose is an enum).
    fn unexpired(&self) -> String {
        let r = &self.rules;
        format!(
            "FROM {table} WHERE \"{purpose_col}\" = '{purpose}' AND (\"{expires}\" IS NULL OR \"{expires}\" > now())",
            table = quoted(&r.table),
            purpose_col = r.purpose_column,
            purpose = self.purpose.as_str(),
            expires = r.expires_at_column,
        )
    }

    async fn compute(&self, version: u64) -> DfResult<(Computed, IdSet)> {
        let started = std::time::Instant::now();
        let r = &self.rules;
        let sql = format!(
            "SELECT CAST(\"c\".\"{pk}\" AS BIGINT) AS \"{pk}\" FROM (SELECT \"{pk}\", \"{granted}\", row_number() OVER (PARTITION BY \"{pk}\" ORDER BY \"{recorded}\" DESC, \"{granted}\" ASC) AS lakeward_rank {unexpired}) AS \"c\" WHERE \"c\".lakeward_rank = 1 AND \"c\".\"{pk}\" IS NOT NULL AND {cond}",
            pk = r.patient_key,
            granted = r.granted_column,
            recorded = r.recorded_at_column,
            unexpired = self.unexpired(),
            cond = match self.decision {
                Decision::Granted => format!("\"c\".\"{}\"", r.granted_column),
                Decision::Refused => format!("NOT \"c\".\"{}\"", r.granted_column),
            },
        );
        let batches = self.ctx.sql(&sql).await?.collect().await?;
        let mut ids = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
        for b in &batches {
            let col = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("consent set is not BIGINT".into()))?;
            ids.extend(col.iter().flatten());
        }
        // The patients whose records expire around now or within the
        // window (looking back over this computation's own duration, so
        // that none expiring meanwhile is missed) are decided here, at
        // this moment, from their records, and again as each expires.
        let since = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX / 2) + 5;
        let window_from = Utc::now();
        let window_end = window_from + EXPIRY_WINDOW;
        let (volatile, pending) = self.volatile(since, window_end).await?;
        let now_ns = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        ids.retain(|id| !volatile.contains_key(id));
        ids.extend(
            volatile
                .iter()
                .filter(|(_, records)| Record::decides(records, now_ns, self.decision))
                .map(|(id, _)| *id),
        );
        let ids = IdSet::from_ids(ids);
        let next = format!(
            "SELECT CAST(min(\"{expires}\") AS TIMESTAMP) {unexpired} AND \"{expires}\" IS NOT NULL",
            expires = r.expires_at_column,
            unexpired = self.unexpired(),
        );
        let valid_until = self
            .ctx
            .sql(&next)
            .await?
            .collect()
            .await?
            .first()
            .and_then(|b| {
                let ts = (b.num_rows() > 0)
                    .then(|| timestamp_nanos(b.column(0), 0))
                    .flatten()?;
                Some(DateTime::from_timestamp_nanos(ts))
            });
        // Expiries within the window are followed record by record; the
        // set is recomputed at its end, or at the first expiry after it.
        let valid_until = valid_until.map(|next| next.max(window_end));
        Ok((
            Computed {
                version,
                valid_until,
                volatile,
                pending,
            },
            ids,
        ))
    }

    /// Make the current set the one for the consent table's newest version
    /// and this moment: the cached one while the version is unchanged and
    /// no record has expired since, else a fresh one. Returns whether it
    /// was computed now.
    pub(crate) async fn refresh(&self) -> DfResult<bool> {
        let version = self
            .source
            .refreshed_version()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut computed = self.computed.lock().await;
        let now = Utc::now();
        if let Some(c) = computed.as_mut()
            && c.version == version
            && c.valid_until.is_none_or(|t| now < t)
            && self.apply_expiries(c, now)
        {
            crate::metrics::Metrics::global().cache(crate::metrics::Cache::Consent, true);
            return Ok(false);
        }
        crate::metrics::Metrics::global().cache(crate::metrics::Cache::Consent, false);
        let (fresh, ids) = self.compute(version).await?;
        tracing::debug!(
            purpose = self.purpose.as_str(),
            version,
            patients = ids.len(),
            "consent set computed"
        );
        self.current.publish(ids);
        *computed = Some(fresh);
        Ok(true)
    }

    /// Bring the current set to `now` for the volatile patients whose
    /// records expired since it was last brought up to date (a copy of the
    /// set with their membership changed, published for the statements
    /// from now on). False when that cannot be done in place (an id
    /// outside the dense set's range): the caller recomputes.
    fn apply_expiries(&self, c: &mut Computed, now: DateTime<Utc>) -> bool {
        let Some(now_ns) = now.timestamp_nanos_opt() else {
            return false;
        };
        let mut due = Vec::new();
        while let Some(&(at, patient)) = c.pending.last()
            && at <= now_ns
        {
            c.pending.pop();
            due.push(patient);
        }
        if due.is_empty() {
            return true;
        }
        let Some(current) = self.snapshot() else {
            return false;
        };
        let mut next = (*current).clone();
        for patient in due {
            let member = c
                .volatile
                .get(&patient)
                .is_some_and(|records| Record::decides(records, now_ns, self.decision));
            if !next.set(patient, member) {
                return false;
            }
        }
        self.current.publish(next);
        true
    }

    /// The unexpired records of the patients with a record of this
    /// purpose expiring between `since_secs` seconds ago and the end of
    /// the window, and when each must be looked at again.
    async fn volatile(
        &self,
        since_secs: i64,
        until: DateTime<Utc>,
    ) -> DfResult<(HashMap<i64, Vec<Record>>, Vec<(i64, i64)>)> {
        let r = &self.rules;
        let window = format!(
            "\"{expires}\" > now() - INTERVAL '{since_secs} seconds' AND \"{expires}\" <= now() + INTERVAL '{ahead} seconds'",
            expires = r.expires_at_column,
            ahead = EXPIRY_WINDOW.num_seconds(),
        );
        let sql = format!(
            "SELECT CAST(\"{pk}\" AS BIGINT), arrow_cast(\"{recorded}\", '{micros}'), \"{granted}\", arrow_cast(\"{expires}\", '{micros}') {unexpired} AND \"{pk}\" IN (SELECT \"{pk}\" FROM {table} WHERE \"{purpose_col}\" = '{purpose}' AND {window})",
            pk = r.patient_key,
            recorded = r.recorded_at_column,
            granted = r.granted_column,
            expires = r.expires_at_column,
            unexpired = self.unexpired(),
            table = quoted(&r.table),
            purpose_col = r.purpose_column,
            purpose = self.purpose.as_str(),
            // Microseconds: "never expires" sentinels (9999-12-31) do not
            // fit in nanoseconds; they saturate to the far future below.
            micros = "Timestamp(Microsecond, None)",
        );
        let until_ns = until.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut volatile: HashMap<i64, Vec<Record>> = HashMap::new();
        let mut pending = Vec::new();
        let bad = || DataFusionError::Internal("consent records of an unexpected type".into());
        for b in self.ctx.sql(&sql).await?.collect().await? {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(bad)?;
            let granted = b
                .column(2)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(bad)?;
            for i in 0..b.num_rows() {
                // A record without a patient, time or decision decides
                // nothing in the set's query either.
                let (Some(id), Some(recorded_ns), Some(granted)) = (
                    ids.is_valid(i).then(|| ids.value(i)),
                    timestamp_nanos(b.column(1), i),
                    granted.is_valid(i).then(|| granted.value(i)),
                ) else {
                    continue;
                };
                let expires_ns = timestamp_nanos(b.column(3), i);
                if let Some(e) = expires_ns
                    && e <= until_ns
                {
                    pending.push((e, id));
                }
                volatile.entry(id).or_default().push(Record {
                    recorded_ns,
                    granted,
                    expires_ns,
                });
            }
        }
        // Soonest last, so that due ones pop off the end.
        pending.sort_unstable_by(|a, b| b.cmp(a));
        Ok((volatile, pending))
    }

    /// The set as last refreshed.
    fn snapshot(&self) -> Option<Arc<IdSet>> {
        self.current.get()
    }

    /// Which decisive records the set holds (refusals for an opt-out
    /// purpose, grants for an opt-in one).
    pub(crate) fn decision(&self) -> Decision {
        self.decision
    }

    /// The set the membership function probes now, as a compressed bitmap
    /// of `i64` bit patterns (patient accounting's encoding); `None` until
    /// first computed. Converted once per published set.
    pub(crate) fn members(&self) -> Option<Arc<roaring::RoaringTreemap>> {
        let set = self.snapshot()?;
        let mut last = self.as_treemap.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((of, members)) = last.as_ref()
            && Arc::ptr_eq(of, &set)
        {
            return Some(members.clone());
        }
        let members = Arc::new(set.to_treemap());
        *last = Some((set, members.clone()));
        Some(members)
    }
}

/// Row `i` of a timestamp column (nano- or microseconds) in nanoseconds.
fn timestamp_nanos(col: &ArrayRef, i: usize) -> Option<i64> {
    use datafusion::arrow::array::{TimestampMicrosecondArray, TimestampNanosecondArray};
    if let Some(a) = col.as_any().downcast_ref::<TimestampNanosecondArray>() {
        return a.is_valid(i).then(|| a.value(i));
    }
    let a = col.as_any().downcast_ref::<TimestampMicrosecondArray>()?;
    a.is_valid(i).then(|| a.value(i).saturating_mul(1000))
}

/// The set a membership function probes, replaced whole when it changes
/// (statements keep the one they started with). `None` until first
/// computed.
#[derive(Debug, Default)]
pub(crate) struct Published(RwLock<Option<Arc<IdSet>>>);

impl Published {
    pub(crate) fn get(&self) -> Option<Arc<IdSet>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn publish(&self, set: IdSet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(set));
    }
}

/// A set of patient ids, probed once per row. Patient keys are usually
/// dense surrogate keys: then the set is a bitmap over their range (one
/// bit per id in the range, a probe is a shift and a mask); otherwise a
/// hash set.
#[derive(Debug, Clone)]
pub(crate) enum IdSet {
    Dense {
        min: i64,
        bits: Vec<u64>,
        len: usize,
    },
    Sparse(HashSet<i64>),
}

impl IdSet {
    /// The largest bitmap kept (16 MiB): beyond it, a hash set.
    const MAX_DENSE_BITS: u64 = 1 << 27;

    pub(crate) fn from_ids(ids: Vec<i64>) -> IdSet {
        let (Some(&min), Some(&max)) = (ids.iter().min(), ids.iter().max()) else {
            return IdSet::Sparse(HashSet::new());
        };
        let span = u64::try_from(i128::from(max) - i128::from(min) + 1).unwrap_or(u64::MAX);
        // Dense when the bitmap is small and costs at most 64 bits per id
        // (a hash set costs more than that per entry).
        let per_id_budget = u64::try_from(ids.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(64);
        if span > Self::MAX_DENSE_BITS || span > per_id_budget.max(1 << 16) {
            return IdSet::Sparse(ids.into_iter().collect());
        }
        let mut bits = vec![0u64; usize::try_from(span.div_ceil(64)).unwrap_or(0)];
        for id in ids {
            let offset = id.abs_diff(min);
            if let Some(word) = usize::try_from(offset / 64)
                .ok()
                .and_then(|w| bits.get_mut(w))
            {
                *word |= 1u64 << (offset % 64);
            }
        }
        let len = bits.iter().map(|w| w.count_ones() as usize).sum();
        IdSet::Dense { min, bits, len }
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        match self {
            IdSet::Dense { min, bits, .. } => Self::dense_contains(*min, bits, id),
            IdSet::Sparse(set) => set.contains(&id),
        }
    }

    #[inline(always)]
    fn dense_contains(min: i64, bits: &[u64], id: i64) -> bool {
        if id < min {
            return false;
        }
        let offset = id.abs_diff(min);
        usize::try_from(offset / 64)
            .ok()
            .and_then(|w| bits.get(w))
            .is_some_and(|word| (word >> (offset % 64)) & 1 == 1)
    }

    /// Membership of every id in `ids`, one bit each, in one pass over the
    /// values (a NULL slot's bit is meaningless: the caller keeps the
    /// input's null mask). The per-row scan of a secured table with a
    /// consent check runs this, so it avoids per-row `Option`s and
    /// dispatch on the set's kind.
    pub(crate) fn probe(&self, ids: &[i64]) -> BooleanBuffer {
        match self {
            IdSet::Dense { min, bits, .. } => {
                BooleanBuffer::collect_bool(ids.len(), |i| Self::dense_contains(*min, bits, ids[i]))
            }
            IdSet::Sparse(set) => BooleanBuffer::collect_bool(ids.len(), |i| set.contains(&ids[i])),
        }
    }

    /// Make `id` a member or not. False when a dense set cannot hold it
    /// (outside its range).
    pub(crate) fn set(&mut self, id: i64, member: bool) -> bool {
        match self {
            IdSet::Sparse(set) => {
                if member {
                    set.insert(id);
                } else {
                    set.remove(&id);
                }
                true
            }
            IdSet::Dense { min, bits, len } => {
                let word = (id >= *min)
                    .then(|| id.abs_diff(*min))
                    .and_then(|o| Some((usize::try_from(o / 64).ok()?, o % 64)));
                let Some((w, bit)) = word.filter(|(w, _)| *w < bits.len()) else {
                    return !member;
                };
                let was = (bits[w] >> bit) & 1 == 1;
                if member {
                    bits[w] |= 1u64 << bit;
                } else {
                    bits[w] &= !(1u64 << bit);
                }
                match (was, member) {
                    (false, true) => *len += 1,
                    (true, false) => *len -= 1,
                    _ => {}
                }
                true
            }
        }
    }

    /// The ids as a compressed bitmap of their `i64` bit patterns.
    pub(crate) fn to_treemap(&self) -> roaring::RoaringTreemap {
        let mut ids: Vec<u64> = match self {
            IdSet::Dense { min, bits, .. } => {
                let mut ids = Vec::with_capacity(self.len());
                for (w, word) in bits.iter().enumerate() {
                    let mut word = *word;
                    while word != 0 {
                        let bit = word.trailing_zeros() as i64;
                        ids.push(min.wrapping_add((w as i64) * 64 + bit) as u64);
                        word &= word - 1;
                    }
                }
                ids
            }
            IdSet::Sparse(set) => set.iter().map(|&id| id as u64).collect(),
        };
        // Negative ids sort last as bit patterns.
        ids.sort_unstable();
        roaring::RoaringTreemap::from_sorted_iter(ids).unwrap_or_default()
    }

    /// Number of distinct ids.
    pub(crate) fn len(&self) -> usize {
        match self {
            IdSet::Dense { len, .. } => *len,
            IdSet::Sparse(set) => set.len(),
        }
    }
}

/// A shared set of ids a membership function probes: a consent set, or
/// the answer of a policy filter's subquery (`engine::filter_sets`).
pub(crate) trait MemberSource: std::fmt::Debug + Send + Sync + 'static {
    /// The membership function's name (raw context only).
    fn function(&self) -> &str;
    /// The set as last refreshed (`None` until first computed).
    fn snapshot(&self) -> Option<Arc<IdSet>>;
}

impl MemberSource for ConsentSet {
    fn function(&self) -> &str {
        &self.function
    }

    fn snapshot(&self) -> Option<Arc<IdSet>> {
        ConsentSet::snapshot(self)
    }
}

/// `<function>(id BIGINT) -> BOOLEAN`: whether the id is in the set (NULL
/// for a NULL id, so `[NOT] f(id)` admits no row without an id). Errors
/// when the set was never computed.
#[derive(Debug)]
struct Membership<S> {
    set: Arc<S>,
    signature: Signature,
}

/// The membership function of `set`, to register in the raw context.
pub(crate) fn membership_udf<S: MemberSource>(set: Arc<S>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Membership {
        set,
        signature: Signature::uniform(1, vec![DataType::Int64], Volatility::Stable),
    })
}

impl<S: MemberSource> PartialEq for Membership<S> {
    fn eq(&self, other: &Self) -> bool {
        self.set.function() == other.set.function()
    }
}
impl<S: MemberSource> Eq for Membership<S> {}
impl<S: MemberSource> std::hash::Hash for Membership<S> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.set.function().hash(state);
    }
}

impl<S: MemberSource> ScalarUDFImpl for Membership<S> {
    fn name(&self) -> &str {
        self.set.function()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let ids = self
            .set
            .snapshot()
            .ok_or_else(|| DataFusionError::Execution("membership set unavailable".into()))?;
        let [arg] = args.args.as_slice() else {
            return Err(DataFusionError::Execution("membership check arity".into()));
        };
        let member = |v: Option<i64>| v.map(|id| ids.contains(id));
        match arg {
            ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(member(*v))))
            }
            ColumnarValue::Scalar(ScalarValue::Null) => {
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)))
            }
            ColumnarValue::Array(a) => {
                let a = a
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| DataFusionError::Execution("membership check type".into()))?;
                let out = BooleanArray::new(ids.probe(a.values()), a.nulls().cloned());
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
            _ => Err(DataFusionError::Execution("membership check type".into())),
        }
    }
}

/// What a membership function probes, as a plan sent to a worker carries
/// it (`cluster::codec`): a consent set by what defines it (the worker
/// computes it from its own copy of the consent table), or a filter set's
/// ids as they are (a worker plans no SQL).
#[derive(Debug)]
pub(crate) enum MembershipSpec {
    Consent {
        rules: ConsentRules,
        purpose: Purpose,
        decision: Decision,
    },
    Ids(Arc<IdSet>),
}

/// The spec of a membership function, `None` for any other function (or a
/// filter set never computed).
pub(crate) fn membership_spec(udf: &ScalarUDF) -> Option<MembershipSpec> {
    let inner = udf.inner();
    if let Some(m) = inner.downcast_ref::<Membership<ConsentSet>>() {
        return Some(MembershipSpec::Consent {
            rules: m.set.rules.clone(),
            purpose: m.set.purpose,
            decision: m.set.decision,
        });
    }
    if let Some(m) = inner.downcast_ref::<Membership<super::filter_sets::FilterSet>>() {
        return m.set.snapshot().map(MembershipSpec::Ids);
    }
    None
}

/// A membership function under another name (a worker's function for a
/// coordinator's set keeps the coordinator's name).
#[derive(Debug)]
struct Named<S> {
    name: String,
    set: Arc<S>,
}

impl<S: MemberSource> MemberSource for Named<S> {
    fn function(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> Option<Arc<IdSet>> {
        self.set.snapshot()
    }
}

/// A fixed set of ids.
#[derive(Debug)]
struct Fixed(Arc<IdSet>);

impl MemberSource for Fixed {
    fn function(&self) -> &str {
        ""
    }

    fn snapshot(&self) -> Option<Arc<IdSet>> {
        Some(self.0.clone())
    }
}

/// A consent set a worker computes in the background from the moment a
/// plan naming it arrives (`cluster::codec`): setting up a stage never
/// waits for it (datafusion-distributed gives a stage's set-up ten
/// seconds, less than a first computation over tens of millions of
/// consent records), and the stage's first probe does.
struct Deferred {
    name: String,
    set:
        futures::future::Shared<futures::future::BoxFuture<'static, Option<Arc<dyn MemberSource>>>>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("name", &self.name)
            .finish()
    }
}

impl MemberSource for Deferred {
    fn function(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> Option<Arc<IdSet>> {
        if let Some(done) = self.set.peek() {
            return done.as_ref().and_then(|s| s.snapshot());
        }
        // The computation is under way: wait for it on this worker thread
        // (a stage runs on the multi-threaded runtime; anywhere else the
        // probe fails as if the set were unavailable).
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        let set = self.set.clone();
        tokio::task::block_in_place(|| handle.block_on(set)).and_then(|s| s.snapshot())
    }
}

/// `name` probing the set `compute` yields (a consent set), computed from
/// now on in the background on the current runtime.
pub(crate) fn deferred_membership_udf<S: MemberSource>(
    name: &str,
    compute: impl std::future::Future<Output = DfResult<Arc<S>>> + Send + 'static,
) -> DfResult<ScalarUDF> {
    use futures::FutureExt;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| DataFusionError::Execution("no runtime to compute a consent set".into()))?;
    let task = handle.spawn(compute);
    let set = async move {
        match task.await {
            Ok(Ok(set)) => Some(set as Arc<dyn MemberSource>),
            Ok(Err(e)) => {
                // A DataFusion error about the consent table names no patient.
                tracing::warn!(error = %e, "consent set computation failed");
                None
            }
            Err(_) => {
                tracing::warn!("consent set computation stopped");
                None
            }
        }
    }
    .boxed()
    .shared();
    Ok(membership_udf(Arc::new(Deferred {
        name: name.to_owned(),
        set,
    })))
}

/// `name` probing the fixed `ids`.
pub(crate) fn fixed_membership_udf(name: &str, ids: Arc<IdSet>) -> ScalarUDF {
    membership_udf(Arc::new(Named {
        name: name.to_owned(),
        set: Arc::new(Fixed(ids)),
    }))
}

/// The consent sets of one raw context, by (rules, purpose, decision).
#[derive(Default)]
pub(crate) struct ConsentSets {
    registered: Mutex<HashMap<String, Arc<ConsentSet>>>,
}

impl ConsentSets {
    /// The set for `(rules, purpose, decision)`; on first use its
    /// membership function is registered in `ctx`. Fails when the consent
    /// table is not a served Delta table.
    pub(crate) fn set_for(
        &self,
        ctx: &SessionContext,
        source: Option<Arc<dyn TableProvider>>,
        rules: &ConsentRules,
        purpose: Purpose,
        decision: Decision,
    ) -> DfResult<Arc<ConsentSet>> {
        let key = format!("{rules:?}|{}|{decision:?}", purpose.as_str());
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = registered.get(&key) {
            return Ok(set.clone());
        }
        let source = source.and_then(|p| {
            let any: Arc<dyn std::any::Any + Send + Sync> = p;
            any.downcast::<LatestDeltaProvider>().ok()
        });
        let Some(source) = source else {
            return Err(DataFusionError::Plan(format!(
                "consent table {} is not served",
                rules.table
            )));
        };
        let function = format!(
            "{CONSENT_FUNCTION_PREFIX}{}_{}_{}",
            purpose.as_str(),
            match decision {
                Decision::Granted => "granted",
                Decision::Refused => "refused",
            },
            registered.len()
        );
        let set = Arc::new(ConsentSet::new(
            ctx.clone(),
            rules.clone(),
            purpose,
            decision,
            source,
            function,
        ));
        ctx.register_udf(membership_udf(set.clone()));
        registered.insert(key, set.clone());
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, IdSet, Record};

    /// A worker's consent set: the function exists at once (a stage's
    /// set-up does not wait for the computation), its first probe waits
    /// for the set, and a failed computation fails the probe (no row is
    /// admitted by default).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_set_is_waited_for_by_the_first_probe_not_by_the_plan() {
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field};
        use datafusion::error::DataFusionError;
        use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

        let probe = |udf: &datafusion::logical_expr::ScalarUDF| {
            let ids = Arc::new(Int64Array::from(vec![Some(3), Some(4), None]));
            udf.invoke_with_args(ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(ids)],
                arg_fields: vec![Arc::new(Field::new("id", DataType::Int64, true))],
                number_rows: 3,
                return_field: Arc::new(Field::new("m", DataType::Boolean, true)),
                config_options: Arc::default(),
            })
        };
        let started = Instant::now();
        let udf = super::deferred_membership_udf("consent_probe", async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(Arc::new(super::Fixed(Arc::new(IdSet::from_ids(vec![
                1, 3, 5,
            ])))))
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(udf.name(), "consent_probe");
        // The probe runs on a runtime thread, as a stage's operators do.
        let probed = tokio::spawn(async move { probe(&udf) })
            .await
            .unwrap()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400));
        let ColumnarValue::Array(got) = probed else {
            panic!("an array in, an array out");
        };
        let got = got.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), None]
        );

        let failed = super::deferred_membership_udf::<super::Fixed>("consent_probe", async {
            Err(DataFusionError::Execution(
                "consent table unreadable".into(),
            ))
        })
        .unwrap();
        let refused = tokio::spawn(async move { probe(&failed) }).await.unwrap();
        assert!(refused.is_err());
    }

    #[test]
    fn a_patients_decisive_record_follows_expiries() {
        let rec = |recorded_ns, granted, expires_ns| Record {
            recorded_ns,
            granted,
            expires_ns,
        };
        // An old grant, a later refusal that expires at 100, and a
        // refusal and a grant recorded at the same time expiring at 50.
        let records = [
            rec(1, true, None),
            rec(5, false, Some(100)),
            rec(9, false, Some(50)),
            rec(9, true, Some(50)),
        ];
        // The tie at 9 decides for the refusal; then the refusal of 5;
        // then the grant of 1.
        for (now, granted) in [(10, false), (60, false), (100, true), (1_000, true)] {
            assert_eq!(
                Record::decides(&records, now, Decision::Granted),
                granted,
                "{now}"
            );
            assert_eq!(
                Record::decides(&records, now, Decision::Refused),
                !granted,
                "{now}"
            );
        }
        // Nothing unexpired decides nothing.
        let gone = [rec(1, true, Some(10))];
        assert!(!Record::decides(&gone, 10, Decision::Granted));
        assert!(!Record::decides(&gone, 10, Decision::Refused));
    }

    #[test]
    fn members_are_added_and_removed_in_place() {
        let mut dense = IdSet::from_ids((1..=1_000).collect());
        let mut sparse = IdSet::from_ids(vec![-5, 1 << 40]);
        assert!(dense.set(7, false) && !dense.contains(7) && dense.len() == 999);
        assert!(dense.set(7, true) && dense.contains(7) && dense.len() == 1_000);
        assert!(dense.set(7, true) && dense.len() == 1_000);
        // Outside a dense set's range: removing is a no-op, adding cannot
        // be done in place.
        assert!(dense.set(5_000_000, false));
        assert!(!dense.set(5_000_000, true) && !dense.contains(5_000_000));
        assert!(sparse.set(3, true) && sparse.contains(3) && sparse.len() == 3);
        assert!(sparse.set(-5, false) && !sparse.contains(-5) && sparse.len() == 2);
    }

    #[test]
    fn dense_and_sparse_sets_answer_alike() {
        let dense: Vec<i64> = (1..=10_000).filter(|i| i % 3 == 0).collect();
        let sparse = vec![-5, 7, 1 << 40, i64::MAX, i64::MIN];
        for ids in [dense, sparse, vec![], vec![42, 42]] {
            let set = IdSet::from_ids(ids.clone());
            let unique: std::collections::HashSet<i64> = ids.iter().copied().collect();
            assert_eq!(set.len(), unique.len());
            for probe in ids
                .iter()
                .flat_map(|&i| [i, i.wrapping_add(1), i.wrapping_sub(1)])
                .chain([0, -1, 1, i64::MIN, i64::MAX, 10_001, 20_000])
            {
                assert_eq!(set.contains(probe), unique.contains(&probe), "{probe}");
            }
            let probes: Vec<i64> = ids
                .iter()
                .flat_map(|&i| [i, i.wrapping_add(1)])
                .chain([0, i64::MIN, i64::MAX, 10_001])
                .collect();
            let bits = set.probe(&probes);
            assert_eq!(bits.len(), probes.len());
            for (i, probe) in probes.iter().enumerate() {
                assert_eq!(bits.value(i), unique.contains(probe), "probe {probe}");
            }
            // As a bitmap of bit patterns: the same ids.
            let as_bits: std::collections::HashSet<i64> =
                set.to_treemap().iter().map(|v| v as i64).collect();
            assert_eq!(as_bits, unique);
        }
        let negative = IdSet::from_ids((-70..70).collect());
        assert!(matches!(negative, IdSet::Dense { .. }));
        let got: std::collections::HashSet<i64> =
            negative.to_treemap().iter().map(|v| v as i64).collect();
        assert_eq!(got, (-70..70).collect());
        assert!(matches!(
            IdSet::from_ids((1..=1000).collect()),
            IdSet::Dense { .. }
        ));
        assert!(matches!(
            IdSet::from_ids(vec![1, 1 << 40]),
            IdSet::Sparse(_)
        ));
    }
}
