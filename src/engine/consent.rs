//! Consent sets: for one purpose, the patients whose decisive consent
//! record says granted (opt-in) or refused (opt-out), computed once and
//! shared by every session and statement until the answer can change.
//!
//! The decisive record of a patient for a purpose is the latest one (by
//! `recorded_at`) that has not expired. The set therefore changes only
//! when the consent table gets a new Delta version, or when one of its
//! records expires. [`ConsentSet::refresh`] compares the consent table's
//! version and the clock with what the cached set was computed from, and
//! recomputes it (once, whoever asks first) when either moved; every
//! secured table with a consent check calls it when its scan is planned,
//! so each statement runs against a set at least as new as its start.
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
    /// The next moment a record expires (the set may change then).
    valid_until: Option<DateTime<Utc>>,
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
    /// The set the membership function probes (None until first computed).
    current: RwLock<Option<Arc<IdSet>>>,
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
            current: RwLock::new(None),
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
                let col = b.column(0);
                let ts = col
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
                    .map(|a| (!a.is_empty() && a.is_valid(0)).then(|| a.value(0)))
                    .or_else(|| {
                        col.as_any()
                            .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
                            .map(|a| (!a.is_empty() && a.is_valid(0)).then(|| a.value(0) * 1000))
                    })??;
                Some(DateTime::from_timestamp_nanos(ts))
            });
        Ok((
            Computed {
                version,
                valid_until,
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
        if let Some(c) = computed.as_ref()
            && c.version == version
            && c.valid_until.is_none_or(|t| Utc::now() < t)
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
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ids));
        *computed = Some(fresh);
        Ok(true)
    }

    /// The set as last refreshed.
    fn snapshot(&self) -> Option<Arc<IdSet>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A set of patient ids, probed once per row. Patient keys are usually
/// dense surrogate keys: then the set is a bitmap over their range (one
/// bit per id in the range, a probe is a shift and a mask); otherwise a
/// hash set.
#[derive(Debug)]
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
    use super::IdSet;

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
        }
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
