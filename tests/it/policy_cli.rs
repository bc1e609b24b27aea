//! The policy command line: `policy check`, `policy test`, `policy explain`,
//! run as the real binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::process::{lakeward, text};
use crate::support::{data_dir, temp_dir};

/// `lakeward policy args…`, logging errors only.
fn policy(args: &[&str]) -> Output {
    lakeward(&[&["--log", "error", "policy"], args].concat())
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules")
}

/// A writable copy of the shipped policy folder.
pub(crate) fn policy_copy() -> PathBuf {
    let dir = temp_dir("lakeward-it-policy");
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    for entry in std::fs::read_dir(shipped())
        .unwrap()
        .chain(std::fs::read_dir(shipped().join("tests")).unwrap())
    {
        let p = entry.unwrap().path();
        if p.is_file() {
            let rel = p.strip_prefix(shipped()).unwrap();
            std::fs::copy(&p, dir.join(rel)).unwrap();
        }
    }
    dir
}

#[test]
fn shipped_policy_tests_pass() {
    let out = policy(&[
        "test",
        "--policy-dir",
        shipped().to_str().unwrap(),
        "--data-dir",
        data_dir().to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let summary = t.lines().rev().find(|l| l.contains("passed")).unwrap();
    let passed: usize = summary.split_whitespace().next().unwrap().parse().unwrap();
    assert!(passed >= 30, "{summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let dir = policy_copy();
    let f = dir.join("tests/clinician.toml");
    let broken = std::fs::read_to_string(&f).unwrap().replacen(
        "expect.rows = [[\"S01\"]]",
        "expect.rows = [[\"S02\"]]",
        1,
    );
    std::fs::write(&f, broken).unwrap();
    let out = policy(&[
        "test",
        "--policy-dir",
        dir.to_str().unwrap(),
        "--data-dir",
        data_dir().to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("FAILED  clinician.toml :: patients of the clinician's own site only"),
        "{t}"
    );
    assert!(
        t.contains("expected:") && t.contains("S02") && t.contains("got:") && t.contains("S01"),
        "{t}"
    );
}

#[test]
fn policy_check_prints_the_coverage_matrix() {
    let out = policy(&[
        "check",
        "--data-dir",
        data_dir().to_str().unwrap(),
        "--policy-dir",
        shipped().to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("0 error(s)"), "{t}");
    assert!(
        t.lines().any(|l| l.contains("clinical.patients")
            && l.contains("ssn")
            && l.contains("mask:ssn_last4")),
        "{t}"
    );
    let json = policy(&[
        "check",
        "--data-dir",
        data_dir().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["coverage"].as_array().unwrap().len() > 100);
}

#[test]
fn policy_check_reports_broken_files_with_their_line() {
    let dir = policy_copy();
    let f = dir.join("masks.toml");
    let mut text_in = std::fs::read_to_string(&f).unwrap();
    text_in.push_str("\n[masks.broken\n");
    std::fs::write(&f, text_in).unwrap();
    let out = policy(&[
        "check",
        "--data-dir",
        data_dir().to_str().unwrap(),
        "--policy-dir",
        dir.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("masks.toml:"), "{t}");

    // A mask on a column type it cannot apply to.
    let dir = policy_copy();
    let roles = dir.join("roles.toml");
    let changed = std::fs::read_to_string(&roles).unwrap().replace(
        "\"tag:phi.quasi\" = \"zip3\"",
        "\"tag:phi.quasi\" = \"year\"",
    );
    std::fs::write(&roles, changed).unwrap();
    let out = policy(&[
        "check",
        "--data-dir",
        data_dir().to_str().unwrap(),
        "--policy-dir",
        dir.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("mask year cannot apply to clinical.patients.zip"),
        "{t}"
    );
}

#[test]
fn policy_explain_shows_the_secured_form() {
    let out = policy(&[
        "explain",
        "--data-dir",
        data_dir().to_str().unwrap(),
        "--role",
        "clinician",
        "--purpose",
        "treatment",
        "--site",
        "S01",
        "SELECT last_name FROM clinical.patients",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("site_id = 'S01'")
            && t.contains("lakeward_partial")
            && t.contains("NOT \"lakeward_consent_treatment_refused"),
        "{t}"
    );
}
