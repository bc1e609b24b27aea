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

pub(crate) mod plan;
pub(crate) mod tap;

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

/// Keys collected by one operator stream: a plain bitmap for keys in
/// `0..DENSE_LIMIT` (the usual dense ids), a compressed bitmap for others.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    dense: Vec<u64>,
    dense_any: bool,
    other: RoaringTreemap,
}

impl Keys {
    /// Keys below this go to the plain bitmap (at most 16 MiB).
    const DENSE_LIMIT: i64 = 1 << 27;

    pub(crate) fn is_empty(&self) -> bool {
        !self.dense_any && self.other.is_empty()
    }

    pub(crate) fn add(&mut self, key: i64) {
        if (0..Self::DENSE_LIMIT).contains(&key) {
            let word = (key >> 6) as usize;
            if word >= self.dense.len() {
                // Grow to the key seen, in steps, never past the limit.
                let want = (word + 1).max(self.dense.len() * 2).max(1024);
                let cap = (Self::DENSE_LIMIT >> 6) as usize;
                self.dense.resize(want.min(cap), 0);
            }
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
        let values = keys.values();
        match keys.nulls() {
            None => {
                for &k in &values[rows] {
                    self.add(k);
                }
            }
            Some(nulls) => {
                for i in rows {
                    if nulls.is_valid(i) {
                        self.add(values[i]);
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
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

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
