use super::keys::{write_mrn, write_ssn};
use super::providers::luhn_npi_check_digit;
use super::*;

#[test]
fn anchor_is_2026_01_01() {
    assert_eq!(ANCHOR_DAY, 20_454);
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(days_from_civil(1900, 1, 1), -25_567);
}

#[test]
fn npi_check_digit_matches_known_example() {
    // CMS example: 123456789 -> check digit 3 (NPI 1234567893).
    assert_eq!(luhn_npi_check_digit(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), 3);
}

#[test]
fn ssn_and_mrn_are_bijections_on_small_ranges() {
    let keys = IdKeys::new(42);
    let mut ssns = std::collections::BTreeSet::new();
    let mut mrns = std::collections::BTreeSet::new();
    let mut buf = String::new();
    for pid in 1..=50_000 {
        buf.clear();
        write_ssn(&mut buf, &keys, pid);
        assert!(buf.starts_with('9'), "{buf}");
        assert!(ssns.insert(buf.clone()), "duplicate ssn {buf}");
        buf.clear();
        write_mrn(&mut buf, &keys, pid);
        assert_eq!(buf.len(), 11, "{buf}");
        assert!(mrns.insert(buf.clone()), "duplicate mrn {buf}");
    }
}

#[test]
fn record_ids_fit_their_domains() {
    let keys = IdKeys::new(42);
    // The last patient id the domains cover, the most encounters,
    // observations and claim lines one encounter can have.
    let pid = MAX_PATIENTS as i64;
    let last = IdKeys::encounter_index(pid, MAX_ENCOUNTERS_PER_PATIENT);
    assert!(last < ENCOUNTER_DOMAIN);
    let e = keys.encounter_id(last);
    assert!(e >= 1 && e as u64 <= ENCOUNTER_DOMAIN);
    let o = keys.observation_id(last, MAX_OBS_PER_ENCOUNTER);
    assert!(o >= 1 && o as u64 <= OBSERVATION_DOMAIN);
    let c = keys.claim_id(last, 8);
    assert!(c >= 1 && c as u64 <= CLAIM_DOMAIN);
}
