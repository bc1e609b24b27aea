//! Policy change safety (SPEC §10): `policy diff` as a CI gate, a shadow
//! policy beside the live one, and `policy check --classify` on planted
//! identifiers — each through the real binary or a real server.

use std::path::{Path, PathBuf};

use crate::audit::{as_user, text_rows};
use crate::policy_cli::policy_copy;
use crate::support::process::{lakeward, text};
use crate::support::{connect_role, data_dir, start, temp_dir};

/// A copy of the shipped policy with `from` replaced by `to` (once) in
/// `roles.toml`.
fn roles_edited(from: &str, to: &str) -> PathBuf {
    let dir = policy_copy();
    let roles = dir.join("roles.toml");
    let text = std::fs::read_to_string(&roles).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&roles, text.replacen(from, to, 1)).unwrap();
    dir
}

/// A copy of the shipped policy in which the analyst sees `zip` unmasked.
fn zip_unmasked() -> PathBuf {
    let from = "[roles.analyst.columns]\n";
    roles_edited(
        from,
        &format!("{from}\"clinical.patients.zip\" = \"visible\"\n"),
    )
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules")
}

fn policy(args: &[&str]) -> std::process::Output {
    lakeward(&[&["--log", "error", "policy"], args].concat())
}

#[test]
fn policy_diff_reports_unmasking_zip_for_the_analyst_as_widening_with_row_counts() {
    let to = zip_unmasked();
    let out = policy(&[
        "diff",
        "--from",
        shipped().to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--data-dir",
        data_dir().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a widening change fails the gate: {t}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&t);
    assert_eq!(report["widens"], true);
    assert_eq!(report["widened_roles"], serde_json::json!(["analyst"]));
    let changes = report["changes"].as_array().unwrap();
    // Exactly the one column, for each purpose the analyst may declare.
    assert_eq!(changes.len(), 2, "{changes:?}");
    for (c, purpose) in changes.iter().zip(["operations", "payment"]) {
        assert_eq!(c["role"], "analyst");
        assert_eq!(c["purpose"], purpose);
        assert_eq!(c["table"], "clinical.patients");
        assert_eq!(c["column"], "zip");
        assert_eq!(c["what"], "column");
        assert_eq!(c["before"], "mask:zip3 (zip3)");
        assert_eq!(c["after"], "visible");
        assert_eq!(c["direction"], "widens");
    }
    // Row counts through the secured tables, for every role and table it
    // may read: the same rows before and after (a column change), and the
    // researcher's consent filter shows.
    let rows = report["rows"].as_array().unwrap();
    let count = |role: &str, table: &str| {
        rows.iter()
            .find(|r| r["role"] == role && r["table"] == table && r["break_glass"] == false)
            .map(|r| (r["before"].as_u64().unwrap(), r["after"].as_u64().unwrap()))
            .unwrap_or_else(|| panic!("{role} {table}: {rows:?}"))
    };
    let (b, a) = count("analyst", "clinical.patients");
    assert_eq!(b, a);
    assert!(b > 0);
    let (researcher, _) = count("researcher", "clinical.patients");
    assert!(
        researcher > 0 && researcher < b,
        "opt-in consent: {researcher} of {b}"
    );
    let (clinician, _) = count("clinician", "clinical.patients");
    assert!(
        clinician > 0 && clinician < b,
        "one site: {clinician} of {b}"
    );
    assert!(
        !rows
            .iter()
            .any(|r| r["role"] == "auditor" && r["table"] == "clinical.patients"),
        "a refused table has no count"
    );

    // The text form names the column and the verdict.
    let out = policy(&[
        "diff",
        "--from",
        shipped().to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.lines().any(|l| l.starts_with("WIDENS")
            && l.contains("analyst / operations")
            && l.contains("clinical.patients.zip")
            && l.contains("mask:zip3 (zip3) -> visible")),
        "{t}"
    );
    assert!(t.contains("access widens for analyst"), "{t}");

    // The reverse change narrows: no approval needed.
    let out = policy(&[
        "diff",
        "--from",
        to.to_str().unwrap(),
        "--to",
        shipped().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("narrows"));
    // A policy that does not load is an error of its own (exit 2).
    let broken = policy_copy();
    std::fs::write(broken.join("roles.toml"), "[roles.x\n").unwrap();
    let out = policy(&[
        "diff",
        "--from",
        shipped().to_str().unwrap(),
        "--to",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_policy_records_differences_only_for_the_analysts_statements_touching_zip() {
    let shadow = zip_unmasked();
    let server = start(|c| c.policy.shadow_policy_dir = Some(shadow.clone()));
    let addr = server.addr;
    let analyst = as_user(addr, "shadow_analyst", "analyst", None, "operations").await;
    // The live policy still decides what is shown: zip stays masked.
    let zips = text_rows(&analyst, "SELECT zip FROM clinical.patients LIMIT 5").await;
    assert!(!zips.is_empty());
    assert!(zips.iter().all(|r| r[0].ends_with("00")), "{zips:?}");
    // Extended protocol, and a point lookup whose literal is lifted.
    analyst
        .query(
            "SELECT patient_id, zip, site_id FROM clinical.patients WHERE patient_id = $1",
            &[&3i64],
        )
        .await
        .unwrap();
    text_rows(
        &analyst,
        "SELECT site_id, count(*) FROM clinical.patients GROUP BY site_id",
    )
    .await;
    text_rows(
        &analyst,
        "SELECT encounter_type FROM clinical.encounters LIMIT 3",
    )
    .await;
    // Refused under both policies: no difference either.
    assert!(
        analyst
            .simple_query("SELECT * FROM governance.consents")
            .await
            .is_err()
    );
    let clinician = as_user(
        addr,
        "shadow_clinician",
        "clinician",
        Some("S01"),
        "treatment",
    )
    .await;
    text_rows(&clinician, "SELECT zip FROM clinical.patients LIMIT 1").await;
    let researcher = as_user(addr, "shadow_researcher", "researcher", None, "research").await;
    text_rows(&researcher, "SELECT zip FROM clinical.patients LIMIT 1").await;

    let auditor = connect_role(addr, "auditor", "operations").await;
    let differing = text_rows(
        &auditor,
        "SELECT \"user\", query_fingerprint, decision, shadow_decision, \
         array_to_string(differing, ',') FROM audit.shadow_differences \
         WHERE \"user\" LIKE 'shadow_%' ORDER BY ts",
    )
    .await;
    let fingerprints: Vec<&str> = differing.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(differing.len(), 2, "{differing:?}");
    for r in &differing {
        assert_eq!(r[0], "shadow_analyst");
        assert_eq!((r[2].as_str(), r[3].as_str()), ("allowed", "allowed"));
        assert_eq!(r[4], "clinical.patients.zip");
    }
    assert!(
        fingerprints[0].contains("SELECT zip FROM clinical.patients"),
        "{fingerprints:?}"
    );
    assert!(
        fingerprints[1].contains("patient_id, zip, site_id"),
        "{fingerprints:?}"
    );
    // The audit record names the columns a statement reads (its optimised
    // plan's), not every column of the tables it scans.
    let read = text_rows(
        &auditor,
        "SELECT array_to_string(columns, ',') FROM audit.access_log WHERE event = 'statement' \
         AND \"user\" = 'shadow_analyst' AND query_fingerprint LIKE 'SELECT site_id, count(*)%'",
    )
    .await;
    assert_eq!(read, vec![vec!["clinical.patients.site_id".to_owned()]]);
    // Every statement record of those sessions carries the verdict; the
    // ones without a difference say so.
    let verdicts = text_rows(
        &auditor,
        "SELECT shadow_decision, count(*) FROM audit.access_log WHERE event = 'statement' \
         AND \"user\" LIKE 'shadow_%' GROUP BY shadow_decision ORDER BY 1",
    )
    .await;
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert_eq!(verdicts[0][0], "allowed");
    assert_eq!(
        verdicts[1][0], "denied",
        "the consents statement, refused by both"
    );
    server.shutdown();
}

/// A copy of the shared test tables, `clinical.patients` appended with rows
/// that carry a new, untagged column of SSNs (a writer's schema change).
/// `partitioned`: the table is first rewritten partitioned by `site_id`, as
/// Spark jobs often write it (read through deltalake's provider).
async fn tables_with_an_untagged_ssn_column(partitioned: bool) -> PathBuf {
    let dir = temp_dir("lakeward-it-classify");
    // Every data schema; not the audit table, which the other tests'
    // servers keep writing while it would be copied.
    for e in std::fs::read_dir(data_dir()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.is_dir() && name != "audit" {
            copy_tree(&p, &dir.join(name));
        } else if p.is_file() {
            std::fs::copy(&p, dir.join(name)).unwrap();
        }
    }
    let path = dir.join("clinical/patients");
    let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
    if partitioned {
        let table = deltalake::open_table(url.clone()).await.expect("open");
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("p", table.table_provider().await.unwrap())
            .unwrap();
        let rows = ctx
            .sql("SELECT * FROM p")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        deltalake::DeltaTable::try_from_url(url.clone())
            .await
            .unwrap()
            .write(rows)
            .with_partition_columns(["site_id"])
            .await
            .expect("partitioned rewrite");
    }
    let table = deltalake::open_table(url).await.expect("open");
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("p", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql(
            "SELECT *, concat('9', lpad(CAST(patient_id % 100 AS VARCHAR), 2, '0'), '-', \
             lpad(CAST(patient_id % 89 + 1 AS VARCHAR), 2, '0'), '-', \
             lpad(CAST(patient_id % 9999 + 1 AS VARCHAR), 4, '0')) AS tax_ref \
             FROM p ORDER BY patient_id LIMIT 300",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    table
        .write(batches)
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        .await
        .expect("append with a new column");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_check_classify_passes_the_shipped_policy_and_flags_planted_identifiers() {
    let classify = |data: &Path, policy_dir: &Path| {
        policy(&[
            "check",
            "--classify",
            "--data-dir",
            data.to_str().unwrap(),
            "--policy-dir",
            policy_dir.to_str().unwrap(),
            "--format",
            "json",
        ])
    };
    // The shipped policy over the demo tables: nothing flagged, and the
    // detectors found what the demo holds.
    let out = classify(data_dir(), &shipped());
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&t);
    let columns = report["classify"]["columns"].as_array().unwrap();
    let classes = |table: &str, column: &str| -> Vec<String> {
        columns
            .iter()
            .find(|c| c["table"] == table && c["column"] == column)
            .unwrap_or_else(|| panic!("{table}.{column}"))["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(classes("clinical.patients", "ssn").contains(&"ssn".to_owned()));
    assert!(classes("clinical.patients", "email").contains(&"email".to_owned()));
    assert!(classes("clinical.patients", "phone").contains(&"phone".to_owned()));
    assert!(classes("clinical.patients", "mrn").contains(&"mrn".to_owned()));
    assert!(classes("clinical.patients", "last_name").contains(&"person_name".to_owned()));
    assert!(classes("clinical.patients", "birth_date").contains(&"birth_date".to_owned()));
    assert!(classes("clinical.patients", "zip").contains(&"zip5".to_owned()));
    assert!(classes("clinical.encounters", "encounter_id").contains(&"record_id".to_owned()));
    assert!(classes("claims.claims", "cpt_code").is_empty());
    assert!(classes("clinical.encounters", "attending_npi").is_empty());
    assert!(classes("claims.claims", "denial_reason").is_empty());
    // No sampled value is printed: the report holds classes and counts.
    assert!(!t.contains("@example."), "an e-mail address leaked");
    assert!(!t.contains("MRN0"), "an MRN leaked");

    // A record id made visible to the researcher (Safe Harbor).
    let visible = roles_edited(
        "\"tag:phi.record_key\" = \"pseudonym\"",
        "\"tag:phi.record_key\" = \"visible\"",
    );
    let out = classify(data_dir(), &visible);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&t);
    let errors: Vec<&str> = report["classify"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors.iter().any(
            |e| e.contains("clinical.encounters.encounter_id looks like record_id")
                && e.contains("role researcher (safe_harbor)")
        ),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.contains("researcher")),
        "{errors:?}"
    );

    // A new, untagged column of SSNs in a copy of the patients table: as
    // lakeward's generator wrote it, and rewritten partitioned by site (read
    // through deltalake's provider). A small per-file bound: the new rows
    // are in the newest files only, and every file is sampled.
    for partitioned in [false, true] {
        let planted = tables_with_an_untagged_ssn_column(partitioned).await;
        let out = policy(&[
            "check",
            "--classify",
            "--sample-rows",
            "25",
            "--data-dir",
            planted.to_str().unwrap(),
            "--format",
            "json",
        ]);
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&t);
        let errors = report["classify"]["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "partitioned {partitioned}: {errors:?}");
        let e = errors[0].as_str().unwrap();
        assert!(
            e.contains("clinical.patients.tax_ref is not classified") && e.contains("ssn"),
            "{e}"
        );
        let patients = report["classify"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "clinical.patients")
            .unwrap();
        assert_eq!(patients["per_file"], true, "{patients}");
        if partitioned {
            assert!(patients["files"].as_u64().unwrap() >= 24, "{patients}");
        }
        assert!(!looks_like_an_ssn(&t), "no SSN is printed: {t}");
    }
}

/// Does `text` hold anything shaped `ddd-dd-dddd`?
fn looks_like_an_ssn(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(11).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            3 | 6 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
    })
}
