//! Patient sets in audit records (SPEC §9): which patients a statement
//! returned or aggregated, as a 64-bit Roaring bitmap in the portable
//! serialisation (the 64-bit extension of the Roaring format
//! specification: a count of 32-bit buckets, then per bucket its high
//! 32 bits and a portable 32-bit Roaring bitmap), encoded in standard
//! base64. Patient ids are `i64`; a negative id keeps its bit pattern.
//! Run containers keep dense sets small: the patients of an aggregate over
//! a contiguous id range take a few bytes.

use base64::Engine as _;
use roaring::RoaringTreemap;

/// The text of a non-empty set (`None` for an empty one).
pub fn encode(set: &RoaringTreemap) -> Option<String> {
    if set.is_empty() {
        return None;
    }
    let mut set = set.clone();
    set.optimize();
    let mut bytes = Vec::with_capacity(set.serialized_size());
    // Writing to a Vec cannot fail.
    set.serialize_into(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A set back from its text.
pub fn decode(text: &str) -> Result<RoaringTreemap, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "patient set is not base64".to_owned())?;
    RoaringTreemap::deserialize_from(bytes.as_slice())
        .map_err(|_| "patient set is not a Roaring bitmap".to_owned())
}

/// The smallest and largest id (as signed integers) of a set.
pub fn bounds(set: &RoaringTreemap) -> Option<(i64, i64)> {
    let len = set.len();
    if len == 0 {
        return None;
    }
    // Ids from 0 up come first as unsigned, negative ids after them.
    let non_negative = set.rank(i64::MAX as u64);
    let min = if non_negative < len {
        set.select(non_negative)?
    } else {
        set.min()?
    };
    let max = if non_negative > 0 {
        set.select(non_negative - 1)?
    } else {
        set.max()?
    };
    Some((min as i64, max as i64))
}

/// The patient ids of a set, ascending as unsigned (negative ids last).
pub fn ids(set: &RoaringTreemap) -> impl Iterator<Item = i64> + '_ {
    set.iter().map(|v| v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_round_trip_and_stay_small_when_dense() {
        assert_eq!(encode(&RoaringTreemap::new()), None);
        let mut dense = RoaringTreemap::new();
        dense.insert_range(1..=100_000);
        let text = encode(&dense).unwrap();
        assert!(text.len() < 100, "{} bytes", text.len());
        assert_eq!(decode(&text).unwrap(), dense);
        let sparse: RoaringTreemap = [7u64, 1 << 40, (-5i64) as u64].into_iter().collect();
        let back = decode(&encode(&sparse).unwrap()).unwrap();
        assert_eq!(ids(&back).collect::<Vec<_>>(), vec![7, 1 << 40, -5]);
    }

    #[test]
    fn bounds_are_signed() {
        let set: RoaringTreemap = [7u64, 1 << 40, (-5i64) as u64, (-9i64) as u64]
            .into_iter()
            .collect();
        assert_eq!(bounds(&set), Some((-9, 1 << 40)));
        let neg: RoaringTreemap = [(-5i64) as u64].into_iter().collect();
        assert_eq!(bounds(&neg), Some((-5, -5)));
        let pos: RoaringTreemap = [3u64, 9].into_iter().collect();
        assert_eq!(bounds(&pos), Some((3, 9)));
        assert_eq!(bounds(&RoaringTreemap::new()), None);
    }

    #[test]
    fn damaged_sets_are_errors() {
        assert!(decode("not base64!").is_err());
        assert!(decode("AAAA").is_err());
    }
}
