//! Patient access accounting (SPEC §9): which patients each statement
//! touched, and how.
//!
//! Every secured table with a patient key (tables.toml `patient_key`)
//! carries, inside its barrier, one column more than its users see: the
//! stored key of the row (never masked, never shown). Before a statement's
//! physical plan is built, [`plan::account`] asks for that column at each
//! such scan and carries it up through the operators that keep rows whole
//! (projections, filters, joins, sorts, limits, windows, `UNION ALL`):
//!
//! - where rows stop being rows — below an aggregation or `DISTINCT`, on
//!   the deciding side of a semi- or anti-join (`IN`, `EXISTS`), under
//!   `EXPLAIN ANALYZE` — a [`tap::PatientTap`] records the keys that pass
//!   it as [`Disclosure::Aggregated`] and the column ends there;
//! - what reaches the top is appended to the statement's result as
//!   trailing columns, which the row encoder (`engine::encode`) strips: a
//!   key is recorded as [`Disclosure::Returned`] when its row is sent, so a
//!   cursor or portal closed early accounts only the rows it delivered.
//!
//! A patient both returned and aggregated by one statement is returned.
//! Keys are collected per operator stream in a bitmap (dense keys) or a
//! compressed bitmap (any other `i64`), without an allocation per row, and
//! merged into the statement's [`PatientSets`] when the stream ends.

pub(crate) mod cells;
pub(crate) mod groups;
pub(crate) mod plan;
pub(crate) mod tap;
pub(crate) mod whole;

use std::sync::Mutex;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use roaring::{RoaringBitmap, RoaringTreemap};

/// The name of the stored patient key inside a secured table's internal
/// plan (a name no user-visible schema holds).
pub(crate) const KEY_COLUMN: &str = "__lakeward_patient";

/// How a statement disclosed a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Disclosure {
    /// A row derived from the patient's rows reached the client.
    Returned,
    /// The patient's rows only fed aggregates, `DISTINCT` or a condition.
    Aggregated,
}

impl Disclosure {
    pub fn as_str(self) -> &'static str {
        match self {
            Disclosure::Returned => "returned",
            Disclosure::Aggregated => "aggregated",
        }
    }
}

/// The patients one statement touched, filled by its taps and its row
/// encoder while it runs.
#[derive(Debug, Default)]
pub struct PatientSets {
    returned: Mutex<RoaringTreemap>,
    aggregated: Mutex<RoaringTreemap>,
    /// The patient every row of the result comes from, when the plan says
    /// so before it runs (`plan::rows_of_pinned_scan`): the row encoder
    /// records it as returned with the first row it sends, and no key
    /// column is carried.
    row_patient: std::sync::OnceLock<i64>,
    /// Under an aggregation policy: the groups below its minimum
    /// (`groups::suppress`), for the completion record.
    suppressed: std::sync::OnceLock<std::sync::atomic::AtomicU64>,
    /// The aggregation policy's minimum group size, when under one.
    min_group_size: std::sync::OnceLock<u32>,
    /// How the statement's taps running on workers name these sets
    /// (`cluster`): drawn when a tap is first sent.
    remote_id: std::sync::OnceLock<u128>,
    /// Tap streams not yet ended (on a worker, a coordinator collecting
    /// the sets waits for them).
    open_streams: std::sync::atomic::AtomicUsize,
}

/// What a finished statement touched: each patient in one class only.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Touched {
    pub returned: RoaringTreemap,
    /// Aggregated and not also returned.
    pub aggregated: RoaringTreemap,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.returned.is_empty() && self.aggregated.is_empty()
    }
}

impl PatientSets {
    /// Add what one operator stream collected.
    pub(crate) fn merge(&self, class: Disclosure, keys: Keys) {
        if keys.is_empty() {
            return;
        }
        let set = keys.into_treemap();
        let target = match class {
            Disclosure::Returned => &self.returned,
            Disclosure::Aggregated => &self.aggregated,
        };
        // A poisoned lock means a panicking operator: its statement fails;
        // what was collected is still the best account.
        let mut guard = target.lock().unwrap_or_else(|p| p.into_inner());
        *guard |= set;
    }

    /// Every row of the result comes from `patient` (set before the
    /// statement runs, at most once).
    pub(crate) fn set_row_patient(&self, patient: i64) {
        let _ = self.row_patient.set(patient);
    }

    /// The statement runs under an aggregation policy: its completion
    /// record says how many groups it suppressed.
    pub(crate) fn under_aggregation_policy(&self, min_group_size: u32) {
        let _ = self.suppressed.set(std::sync::atomic::AtomicU64::new(0));
        let _ = self.min_group_size.set(min_group_size);
    }

    /// The minimum group size of the aggregation policy, when under one.
    pub fn min_group_size(&self) -> Option<u32> {
        self.min_group_size.get().copied()
    }

    /// `n` more groups fell below the aggregation policy's minimum.
    pub(crate) fn add_suppressed(&self, n: u64) {
        if let Some(count) = self.suppressed.get() {
            count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The groups suppressed, under an aggregation policy.
    pub fn suppressed_groups(&self) -> Option<u64> {
        self.suppressed
            .get()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The patient every row of the result comes from, if known.
    pub(crate) fn row_patient(&self) -> Option<i64> {
        self.row_patient.get().copied()
    }

    /// The name of these sets on the workers running the statement's taps.
    pub(crate) fn remote_id(&self) -> u128 {
        *self.remote_id.get_or_init(rand::random::<u128>)
    }

    pub(crate) fn stream_opened(&self) {
        self.open_streams
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub(crate) fn stream_closed(&self) {
        self.open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Tap streams started and not yet ended or dropped.
    pub(crate) fn open_streams(&self) -> usize {
        self.open_streams.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The two classes as collected (a worker's share, `cluster`).
    pub(crate) fn collected(&self) -> (RoaringTreemap, RoaringTreemap) {
        (
            self.returned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            self.aggregated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Add a set known whole (`tap::TapExec::whole`).
    pub(crate) fn merge_set(&self, class: Disclosure, set: &RoaringTreemap) {
        if set.is_empty() {
            return;
        }
        let target = match class {
            Disclosure::Returned => &self.returned,
            Disclosure::Aggregated => &self.aggregated,
        };
        let mut guard = target.lock().unwrap_or_else(|p| p.into_inner());
        *guard |= set;
    }

    /// The statement's account so far.
    pub fn touched(&self) -> Touched {
        let returned = self
            .returned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let aggregated = self
            .aggregated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            - &returned;
        Touched {
            returned,
            aggregated,
        }
    }
}

/// Keys collected by one operator stream: first a short list (a point
/// lookup's few keys cost no bitmap), then a plain bitmap for keys in
/// `0..DENSE_LIMIT` (the usual dense ids) and a compressed bitmap for
/// others.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// The first keys, until [`Self::SMALL`] of them (repeats of the last
    /// key skipped).
    small: Vec<i64>,
    /// Past the list: the bitmaps hold every key.
    spilled: bool,
    dense: Vec<u64>,
    dense_any: bool,
    other: RoaringTreemap,
}

impl Keys {
    /// Keys below this go to the plain bitmap (at most 16 MiB).
    const DENSE_LIMIT: i64 = 1 << 27;
    /// Keys kept in the list before the bitmaps.
    const SMALL: usize = 512;

    pub(crate) fn is_empty(&self) -> bool {
        self.small.is_empty() && !self.dense_any && self.other.is_empty()
    }

    pub(crate) fn add(&mut self, key: i64) {
        if !self.spilled {
            if self.small.last() == Some(&key) {
                return;
            }
            if self.small.len() < Self::SMALL {
                self.small.push(key);
                return;
            }
            self.spill();
        }
        self.add_spilled(key);
    }

    /// Moves the list into the bitmaps.
    fn spill(&mut self) {
        self.spilled = true;
        for k in std::mem::take(&mut self.small) {
            self.add_spilled(k);
        }
    }

    /// Makes the plain bitmap hold word `word`.
    fn reserve_word(&mut self, word: usize) {
        if word >= self.dense.len() {
            // Grow to the key seen, in steps, never past the limit.
            let want = (word + 1).max(self.dense.len() * 2).max(1024);
            let cap = (Self::DENSE_LIMIT >> 6) as usize;
            self.dense.resize(want.min(cap), 0);
        }
    }

    fn add_spilled(&mut self, key: i64) {
        if (0..Self::DENSE_LIMIT).contains(&key) {
            let word = (key >> 6) as usize;
            self.reserve_word(word);
            self.dense[word] |= 1 << (key & 63);
            self.dense_any = true;
        } else {
            // Negative or large keys keep their bit pattern.
            self.other.insert(key as u64);
        }
    }

    /// The non-null keys of `rows` of an integer key column.
    pub(crate) fn add_column(&mut self, column: &dyn Array, rows: std::ops::Range<usize>) {
        let Some(keys) = column.as_primitive_opt::<Int64Type>() else {
            return;
        };
        let values = &keys.values()[rows.clone()];
        if keys.nulls().is_none() && !values.is_empty() {
            if !self.spilled && self.small.len() + values.len() > Self::SMALL {
                self.spill();
            }
            if self.spilled {
                // One bounds check for the batch, then one word update per
                // run of equal keys (rows of one patient often sit together).
                let (min, max) = values
                    .iter()
                    .fold((i64::MAX, i64::MIN), |(lo, hi), &k| (lo.min(k), hi.max(k)));
                if min >= 0 && max < Self::DENSE_LIMIT {
                    self.reserve_word((max >> 6) as usize);
                    let dense = &mut self.dense;
                    let mut last = -1i64;
                    for &k in values {
                        if k != last {
                            if let Some(w) = dense.get_mut((k >> 6) as usize) {
                                *w |= 1 << (k & 63);
                            }
                            last = k;
                        }
                    }
                    self.dense_any = true;
                    return;
                }
            }
        }
        match keys.nulls() {
            None => {
                for &k in values {
                    self.add(k);
                }
            }
            Some(nulls) => {
                for i in rows {
                    if nulls.is_valid(i) {
                        self.add(keys.values()[i]);
                    }
                }
            }
        }
    }

    pub(crate) fn into_treemap(self) -> RoaringTreemap {
        let mut set = self.other;
        if self.dense_any {
            let bytes: Vec<u8> = self.dense.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut low = RoaringBitmap::from_lsb0_bytes(0, &bytes);
            low.optimize();
            set |= RoaringTreemap::from_bitmaps([(0u32, low)]);
        }
        set.extend(self.small.into_iter().map(|k| k as u64));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn keys_are_the_same_through_the_list_and_the_bitmaps() {
        let mut few = Keys::default();
        let mut many = Keys::default();
        let col = Int64Array::from((0..2000i64).map(|i| (i * 7919) % 5003).collect::<Vec<_>>());
        few.add_column(&col, 0..10);
        assert!(!few.spilled, "ten keys stay in the list");
        many.add_column(&col, 0..10);
        many.add_column(&col, 10..2000);
        assert!(many.spilled);
        let all: RoaringTreemap = (0..2000i64).map(|i| ((i * 7919) % 5003) as u64).collect();
        assert_eq!(many.into_treemap(), all);
        let first: RoaringTreemap = (0..10i64).map(|i| ((i * 7919) % 5003) as u64).collect();
        assert_eq!(few.into_treemap(), first);
        // Runs of one key, negative and large keys in a batch.
        let mut mixed = Keys::default();
        let runs = Int64Array::from(
            std::iter::repeat_n(3i64, 600)
                .chain([-1, 1 << 40, 3])
                .collect::<Vec<_>>(),
        );
        mixed.add_column(&runs, 0..runs.len());
        let got: Vec<i64> = mixed.into_treemap().iter().map(|v| v as i64).collect();
        assert_eq!(got, vec![3, 1 << 40, -1]);
    }

    #[test]
    fn keys_collect_dense_sparse_and_null_keys() {
        let mut k = Keys::default();
        assert!(k.is_empty());
        let col = Int64Array::from(vec![Some(5), None, Some(70_000), Some(-3), Some(1 << 40)]);
        k.add_column(&col, 0..5);
        k.add(5);
        let set = k.into_treemap();
        let got: Vec<i64> = set.iter().map(|v| v as i64).collect();
        // Negative keys keep their bit pattern (they sort last as u64).
        assert_eq!(got, vec![5, 70_000, 1 << 40, -3]);
    }

    #[test]
    fn a_patient_returned_and_aggregated_is_returned() {
        let sets = PatientSets::default();
        let mut a = Keys::default();
        for k in [1, 2, 3] {
            a.add(k);
        }
        sets.merge(Disclosure::Aggregated, a);
        let mut r = Keys::default();
        r.add(2);
        sets.merge(Disclosure::Returned, r);
        let t = sets.touched();
        assert_eq!(t.returned.iter().collect::<Vec<_>>(), vec![2]);
        assert_eq!(t.aggregated.iter().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn only_the_given_rows_are_collected() {
        let mut k = Keys::default();
        let col = Int64Array::from(vec![10, 11, 12, 13]);
        k.add_column(&col, 1..3);
        assert_eq!(k.into_treemap().iter().collect::<Vec<_>>(), vec![11, 12]);
    }
}
