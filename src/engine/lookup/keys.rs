//! One file's key column as a sorted index, and the key probes a scan's
//! filters make.
//!
//! A key is a `u64`: an integer column's value as `i64` bits, a text
//! column's 64-bit hash (SipHash with fixed keys: the same text always
//! gives the same key). A hash collision only adds a row to what is read;
//! the scan's filters are `Inexact`, so DataFusion still compares every row
//! it reads with the statement's own condition, and a row that does not
//! match is dropped there. An index therefore never has to be exact, only
//! complete: every row whose key equals the probe is listed.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{InList, ScalarFunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::engine::masks::LakewardPseudonym;

/// What kind of values a key column holds, which decides how a probe's
/// constant becomes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A signed integer column (or an unsigned one narrower than 64 bits):
    /// the key is the value as `i64`, which the keyed pseudonym also reads.
    Int,
    /// `UInt64`: the key is the value's bits.
    UInt64,
    /// Any string type: the key is a hash of the bytes.
    Text,
}

impl KeyKind {
    /// The kind of a column type, or `None` when such a column cannot be
    /// indexed.
    pub(crate) fn of(t: &DataType) -> Option<KeyKind> {
        match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Some(KeyKind::Int),
            DataType::UInt64 => Some(KeyKind::UInt64),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(KeyKind::Text),
            DataType::Dictionary(_, v) => KeyKind::of(v).filter(|k| *k == KeyKind::Text),
            _ => None,
        }
    }

    /// The key of a probe's constant, or `None` when the constant's type
    /// does not compare with this kind of column as it is (the planner
    /// would have cast one side: such a filter is no plain probe) or when
    /// it is NULL (which equals nothing).
    pub(crate) fn key_of(self, v: &ScalarValue) -> Option<u64> {
        let int = |x: i64| Some(x as u64);
        match (self, v) {
            (KeyKind::Int, ScalarValue::Int8(Some(x))) => int(i64::from(*x)),
            (KeyKind::Int, ScalarValue::Int16(Some(x))) => int(i64::from(*x)),
            (KeyKind::Int, ScalarValue::Int32(Some(x))) => int(i64::from(*x)),
            (KeyKind::Int, ScalarValue::Int64(Some(x))) => int(*x),
            (KeyKind::Int, ScalarValue::UInt8(Some(x))) => int(i64::from(*x)),
            (KeyKind::Int, ScalarValue::UInt16(Some(x))) => int(i64::from(*x)),
            (KeyKind::Int, ScalarValue::UInt32(Some(x))) => int(i64::from(*x)),
            (KeyKind::UInt64, ScalarValue::UInt64(Some(x))) => Some(*x),
            (
                KeyKind::Text,
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
            ) => Some(text_key(s.as_bytes())),
            (KeyKind::Text, ScalarValue::Dictionary(_, inner)) => self.key_of(inner),
            _ => None,
        }
    }
}

/// The key of a text value.
fn text_key(bytes: &[u8]) -> u64 {
    // `DefaultHasher::new()` is SipHash-1-3 with fixed (zero) keys: stable
    // within a process, which is all an in-memory index needs.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Appends `(key, row)` for every non-NULL value of `array`, whose first
/// value is row `first_row` of the file. `false` when the array's type is
/// not of `kind`.
pub(crate) fn collect_keys(
    kind: KeyKind,
    array: &ArrayRef,
    first_row: u32,
    out: &mut Vec<(u64, u32)>,
) -> bool {
    macro_rules! ints {
        ($t:ty, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            for (i, v) in a.iter().enumerate() {
                if let Some(v) = v {
                    out.push(($conv(v), first_row + i as u32));
                }
            }
            true
        }};
    }
    match (kind, array.data_type()) {
        (KeyKind::Int, DataType::Int8) => ints!(Int8Type, |v: i8| i64::from(v) as u64),
        (KeyKind::Int, DataType::Int16) => ints!(Int16Type, |v: i16| i64::from(v) as u64),
        (KeyKind::Int, DataType::Int32) => ints!(Int32Type, |v: i32| i64::from(v) as u64),
        (KeyKind::Int, DataType::Int64) => ints!(Int64Type, |v: i64| v as u64),
        (KeyKind::Int, DataType::UInt8) => ints!(UInt8Type, |v: u8| u64::from(v)),
        (KeyKind::Int, DataType::UInt16) => ints!(UInt16Type, |v: u16| u64::from(v)),
        (KeyKind::Int, DataType::UInt32) => ints!(UInt32Type, |v: u32| u64::from(v)),
        (KeyKind::UInt64, DataType::UInt64) => ints!(UInt64Type, |v: u64| v),
        (KeyKind::Text, DataType::Utf8) => {
            for (i, v) in array.as_string::<i32>().iter().enumerate() {
                if let Some(v) = v {
                    out.push((text_key(v.as_bytes()), first_row + i as u32));
                }
            }
            true
        }
        (KeyKind::Text, DataType::LargeUtf8) => {
            for (i, v) in array.as_string::<i64>().iter().enumerate() {
                if let Some(v) = v {
                    out.push((text_key(v.as_bytes()), first_row + i as u32));
                }
            }
            true
        }
        (KeyKind::Text, DataType::Utf8View) => {
            for (i, v) in array.as_string_view().iter().enumerate() {
                if let Some(v) = v {
                    out.push((text_key(v.as_bytes()), first_row + i as u32));
                }
            }
            true
        }
        (KeyKind::Text, DataType::Dictionary(..)) => {
            match datafusion::arrow::compute::cast(array, &DataType::Utf8) {
                Ok(plain) => collect_keys(kind, &plain, first_row, out),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// One key column of one file: keys in ascending order, each with the row
/// (within the file) holding it. 12 bytes per non-NULL row.
#[derive(Debug)]
pub(crate) struct KeyColumn {
    pub(crate) kind: KeyKind,
    keys: Vec<u64>,
    rows: Vec<u32>,
}

impl KeyColumn {
    /// The index of `(key, row)` pairs, in any order.
    pub(crate) fn new(kind: KeyKind, mut pairs: Vec<(u64, u32)>) -> KeyColumn {
        pairs.sort_unstable();
        let (keys, rows) = pairs.into_iter().unzip();
        KeyColumn { kind, keys, rows }
    }

    /// Memory held (the two vectors' contents).
    pub(crate) fn bytes(&self) -> usize {
        self.keys.len() * 12
    }

    /// Rows indexed.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The distinct keys of an integer column, as the patient accounting
    /// keeps them (`i64` bit patterns); `None` for another kind.
    pub(crate) fn distinct(&self) -> Option<roaring::RoaringTreemap> {
        if self.kind != KeyKind::Int {
            return None;
        }
        // Sorted as `u64`: repeats are neighbours.
        let mut last = None;
        let keys = self.keys.iter().copied().filter(|k| {
            let new = last != Some(*k);
            last = Some(*k);
            new
        });
        roaring::RoaringTreemap::from_sorted_iter(keys).ok()
    }

    /// Appends the rows holding `key` to `out`.
    pub(crate) fn rows_of(&self, key: u64, out: &mut Vec<u32>) {
        let start = self.keys.partition_point(|k| *k < key);
        let end = start + self.keys[start..].partition_point(|k| *k == key);
        out.extend_from_slice(&self.rows[start..end]);
    }

    /// The index of the keyed pseudonyms of this (integer) column in
    /// `domain`: what a de-identified role's `pseudonym = $1` searches.
    /// `None` for a column that is not `Int` or an invalid domain.
    pub(crate) fn pseudonyms(&self, udf: &LakewardPseudonym, domain: &str) -> Option<KeyColumn> {
        if self.kind != KeyKind::Int {
            return None;
        }
        // Keys are sorted: each distinct key is pseudonymised once.
        let mut distinct: Vec<i64> = Vec::new();
        for k in &self.keys {
            if distinct.last() != Some(&(*k as i64)) {
                distinct.push(*k as i64);
            }
        }
        let pseudonyms = udf.int64_pseudonyms(domain, distinct.iter().copied())?;
        let mut pairs = Vec::with_capacity(self.keys.len());
        let mut d = 0usize;
        for (k, row) in self.keys.iter().zip(&self.rows) {
            while distinct[d] != *k as i64 {
                d += 1;
            }
            pairs.push((pseudonyms[d] as u64, *row));
        }
        Some(KeyColumn::new(KeyKind::Int, pairs))
    }
}

/// A condition of a scan's filters that names rows by key.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// `column = constant` or `column IN (constants)`.
    Key {
        column: String,
        values: Vec<ScalarValue>,
    },
    /// `lakeward_pseudonym(column[, domain]) = constant` (or `IN`): what a
    /// de-identified role's condition on a pseudonymised key becomes below
    /// its masks.
    Pseudonym {
        column: String,
        domain: String,
        udf: Arc<LakewardPseudonym>,
        values: Vec<ScalarValue>,
    },
}

impl Probe {
    pub(crate) fn column(&self) -> &str {
        match self {
            Probe::Key { column, .. } | Probe::Pseudonym { column, .. } => column,
        }
    }

    pub(crate) fn values(&self) -> &[ScalarValue] {
        match self {
            Probe::Key { values, .. } | Probe::Pseudonym { values, .. } => values,
        }
    }
}

/// At most this many constants in one probe (`IN` lists beyond it scan).
const MAX_PROBE_VALUES: usize = 1024;

/// The probes among a scan's filters (each conjunct of each filter).
pub(crate) fn probes(filters: &[Expr]) -> Vec<Probe> {
    filters
        .iter()
        .flat_map(datafusion::logical_expr::utils::split_conjunction)
        .filter_map(probe)
        .collect()
}

fn probe(e: &Expr) -> Option<Probe> {
    let (target, values) = match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (t, Expr::Literal(v, _)) | (Expr::Literal(v, _), t) => (t, vec![v.clone()]),
            _ => return None,
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if list.len() <= MAX_PROBE_VALUES => {
            let values = list
                .iter()
                .map(|v| match v {
                    Expr::Literal(v, _) => Some(v.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            (expr.as_ref(), values)
        }
        _ => return None,
    };
    match target {
        Expr::Column(c) => Some(Probe::Key {
            column: c.name.clone(),
            values,
        }),
        Expr::ScalarFunction(ScalarFunction { func, args }) => {
            let udf = func.inner().downcast_ref::<LakewardPseudonym>()?;
            let (column, domain) = match args.as_slice() {
                [Expr::Column(c)] => (c.name.clone(), crate::policy::PATIENT_DOMAIN.to_owned()),
                [Expr::Column(c), Expr::Literal(d, _)] => {
                    let d = match d {
                        ScalarValue::Utf8(Some(d))
                        | ScalarValue::LargeUtf8(Some(d))
                        | ScalarValue::Utf8View(Some(d)) => d.clone(),
                        _ => return None,
                    };
                    (c.name.clone(), d)
                }
                _ => return None,
            };
            Some(Probe::Pseudonym {
                column,
                domain,
                udf: Arc::new(udf.clone()),
                values,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray, StringViewArray};
    use datafusion::logical_expr::{col, in_list, lit};

    #[test]
    fn keys_find_every_row_holding_them() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), None, Some(3), Some(5)]));
        let mut pairs = Vec::new();
        assert!(collect_keys(KeyKind::Int, &a, 10, &mut pairs));
        let k = KeyColumn::new(KeyKind::Int, pairs);
        assert_eq!(k.len(), 3);
        let mut rows = Vec::new();
        k.rows_of(
            KeyKind::Int.key_of(&ScalarValue::Int64(Some(5))).unwrap(),
            &mut rows,
        );
        assert_eq!(rows, vec![10, 13]);
        rows.clear();
        k.rows_of(
            KeyKind::Int.key_of(&ScalarValue::Int32(Some(4))).unwrap(),
            &mut rows,
        );
        assert!(rows.is_empty());
        // NULL equals nothing, and a float is no probe of an integer key.
        assert_eq!(KeyKind::Int.key_of(&ScalarValue::Int64(None)), None);
        assert_eq!(KeyKind::Int.key_of(&ScalarValue::Float64(Some(5.0))), None);
        // Distinct keys, negative ones by their bit pattern (as accounted).
        let a: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(7),
            Some(-2),
            None,
            Some(7),
            Some(0),
        ]));
        let mut pairs = Vec::new();
        assert!(collect_keys(KeyKind::Int, &a, 0, &mut pairs));
        let d = KeyColumn::new(KeyKind::Int, pairs).distinct().unwrap();
        let got: Vec<i64> = d.iter().map(|v| v as i64).collect();
        assert_eq!(got, vec![0, 7, -2]);
        assert!(
            KeyColumn::new(KeyKind::Text, vec![(1, 0)])
                .distinct()
                .is_none()
        );
    }

    #[test]
    fn text_keys_are_the_same_whatever_the_string_type() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec!["A1", "B2"]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec!["B2", "A1"]));
        let (mut p, mut v) = (Vec::new(), Vec::new());
        assert!(collect_keys(KeyKind::Text, &plain, 0, &mut p));
        assert!(collect_keys(KeyKind::Text, &view, 0, &mut v));
        let (p, v) = (
            KeyColumn::new(KeyKind::Text, p),
            KeyColumn::new(KeyKind::Text, v),
        );
        let key = KeyKind::Text
            .key_of(&ScalarValue::Utf8View(Some("A1".into())))
            .unwrap();
        let (mut rp, mut rv) = (Vec::new(), Vec::new());
        p.rows_of(key, &mut rp);
        v.rows_of(key, &mut rv);
        assert_eq!((rp, rv), (vec![0], vec![1]));
        // A column of another kind is not collected.
        assert!(!collect_keys(KeyKind::Int, &plain, 0, &mut Vec::new()));
    }

    #[test]
    fn probes_are_equalities_and_in_lists_of_constants() {
        let filters = vec![
            col("a").eq(lit(5i64)).and(lit(1i64).eq(col("b"))),
            in_list(col("c"), vec![lit(1i64), lit(2i64)], false),
            in_list(col("d"), vec![lit(1i64)], true),
            col("e").gt(lit(1i64)),
            col("f").eq(col("g")),
        ];
        let found: Vec<(String, usize)> = probes(&filters)
            .iter()
            .map(|p| (p.column().to_owned(), p.values().len()))
            .collect();
        assert_eq!(
            found,
            vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 2)]
        );
    }

    #[test]
    fn pseudonym_index_finds_rows_by_pseudonym() {
        let udf = LakewardPseudonym::new(&[7u8; 32]);
        let a: ArrayRef = Arc::new(Int32Array::from(vec![3, 9, 3]));
        let mut pairs = Vec::new();
        assert!(collect_keys(KeyKind::Int, &a, 0, &mut pairs));
        let k = KeyColumn::new(KeyKind::Int, pairs);
        let p = k.pseudonyms(&udf, "encounter").unwrap();
        let three = udf
            .int64_pseudonyms("encounter", [3i64].into_iter())
            .unwrap()[0];
        let mut rows = Vec::new();
        p.rows_of(three as u64, &mut rows);
        rows.sort_unstable();
        assert_eq!(rows, vec![0, 2]);
        assert!(k.pseudonyms(&udf, "Not valid").is_none());
    }
}
