use super::*;

/// The shipped policy with `roles.toml` edited by `edit` (loaded from a
/// temporary folder, validated like any policy).
pub(crate) fn demo_with_roles(edit: impl Fn(&str) -> String) -> Policy {
    let dir = std::env::temp_dir().join(format!(
        "lakeward-policy-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules");
    for f in FILES {
        let text = std::fs::read_to_string(shipped.join(f)).unwrap();
        let text = if f == "roles.toml" { edit(&text) } else { text };
        std::fs::write(dir.join(f), text).unwrap();
    }
    let p = Policy::load(Some(&dir)).expect("edited policy loads");
    let _ = std::fs::remove_dir_all(&dir);
    p
}

#[test]
fn demo_policy_loads_and_matches_spec_roles() {
    let p = Policy::load(None).unwrap();
    assert_eq!(p.version.len(), 16);
    assert_eq!(p.role("clinician").unwrap().purposes, [Purpose::Treatment]);
    assert!(p.role("clinician").unwrap().break_glass);
    assert_eq!(
        p.role("analyst").unwrap().purposes,
        [Purpose::Payment, Purpose::Operations]
    );
    assert!(!p.role("analyst").unwrap().break_glass);
    assert_eq!(p.role("researcher").unwrap().purposes, [Purpose::Research]);
    assert_eq!(p.role("auditor").unwrap().purposes, [Purpose::Operations]);
    assert_eq!(p.consent.purposes[&Purpose::Research], ConsentModel::OptIn);
    assert_eq!(
        p.consent.purposes[&Purpose::Treatment],
        ConsentModel::OptOut
    );
}

#[test]
fn the_repository_policy_folder_is_the_built_in_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules");
    assert_eq!(
        Policy::load(Some(&dir)).unwrap().version,
        Policy::load(None).unwrap().version
    );
}

#[test]
fn purposes_parse_case_insensitively_and_refuse_unknown() {
    assert_eq!(Purpose::parse(" Research "), Some(Purpose::Research));
    assert_eq!(Purpose::parse("marketing"), None);
}

fn demo_texts() -> Vec<(String, String)> {
    DEMO.iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect()
}

fn with_file(name: &str, text: &str) -> Result<Policy, PolicyError> {
    let mut texts = demo_texts();
    for (n, t) in texts.iter_mut() {
        if n == name {
            *t = text.to_owned();
        }
    }
    Policy::from_texts(&texts)
}

#[test]
fn record_keys_have_one_valid_domain_per_kind_of_id() {
    let p = Policy::load(None).unwrap();
    let enc = &p.tables["clinical.encounters"];
    assert_eq!(enc.record_key_domain("encounter_id"), Some("encounter"));
    assert_eq!(enc.record_key_domain("patient_id"), None);
    let obs = &p.tables["clinical.observations"];
    assert_eq!(obs.record_key_domain("encounter_id"), Some("encounter"));
    assert_eq!(obs.record_key_domain("observation_id"), Some("observation"));
    assert_eq!(
        p.tables["claims.claims"].record_key_domain("claim_id"),
        Some("claim")
    );

    let tables = include_str!("../../policy-rules/tables.toml");
    let refused = |text: String, needle: &str| {
        let e = with_file("tables.toml", &text).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.message.contains(needle) && p.line.is_some()),
            "{needle}: {e}"
        );
    };
    // Lookup keys: a column of the table, listed once.
    assert_eq!(
        p.tables["clinical.encounters"].lookup_keys,
        vec!["encounter_id".to_owned(), "patient_id".to_owned()]
    );
    refused(
        tables.replacen(
            r#"lookup_keys = ["patient_id"]"#,
            r#"lookup_keys = ["patient_id", "nope"]"#,
            1,
        ),
        "lookup key \"nope\" is not one of its columns",
    );
    refused(
        tables.replacen(
            r#"lookup_keys = ["patient_id"]"#,
            r#"lookup_keys = ["patient_id", "patient_id"]"#,
            1,
        ),
        "is listed twice",
    );
    // The same kind of id untagged in another table.
    refused(
        tables.replacen(
            "encounter_id = [\"phi.record_key\"]\npatient_id",
            "encounter_id = [\"safe\"]\npatient_id",
            1,
        ),
        "not tagged phi.record_key",
    );
    // ... or in another domain.
    refused(
        tables.replace(
            "record_keys = { observation_id = \"observation\", encounter_id = \"encounter\" }",
            "record_keys = { observation_id = \"observation\", encounter_id = \"visit\" }",
        ),
        "differs from",
    );
    // The patient domain is reserved, domains are lower-case names.
    refused(
        tables.replace("{ claim_id = \"claim\" }", "{ claim_id = \"patient\" }"),
        "reserved",
    );
    refused(
        tables.replace("{ claim_id = \"claim\" }", "{ claim_id = \"Claim:1\" }"),
        "lower-case name",
    );
    // A record key entry for an untagged column.
    refused(
        tables.replace("{ claim_id = \"claim\" }", "{ payer = \"payer\" }"),
        "is not a column tagged",
    );
    // The patient key cannot be a record key.
    refused(
        tables.replace(
            "[tables.\"claims.claims\".columns]\nclaim_id = [\"phi.record_key\"]\npatient_id = [\"patient_key\"]",
            "[tables.\"claims.claims\".columns]\nclaim_id = [\"phi.record_key\"]\npatient_id = [\"patient_key\", \"phi.record_key\"]",
        ),
        "cannot also be a record key",
    );
    assert!(is_valid_key_domain("encounter") && is_valid_key_domain("a_1"));
    assert!(!is_valid_key_domain("") && !is_valid_key_domain("_a"));
    assert!(!is_valid_key_domain(&"a".repeat(64)));
}

#[test]
fn broken_files_give_located_messages() {
    let e = with_file("masks.toml", "[masks.null]\nkind = \"null\"\n[masks.x\n").unwrap_err();
    assert_eq!(e.problems[0].file, "masks.toml");
    assert_eq!(e.problems[0].line, Some(3), "{e}");

    let masks = format!(
        "{}\n[masks.bad]\nkind = \"partial\"\nkeep_last = 4\ncolour = \"red\"\n",
        include_str!("../../policy-rules/masks.toml")
    );
    let e = with_file("masks.toml", &masks).unwrap_err();
    assert!(e.to_string().contains("colour"), "unknown key named: {e}");

    let roles =
        include_str!("../../policy-rules/roles.toml").replace("\"ssn_last4\"", "\"no_such_mask\"");
    let e = with_file("roles.toml", &roles).unwrap_err();
    let p = &e.problems[0];
    assert!(
        p.message.contains("no_such_mask") && p.line.is_some(),
        "{e}"
    );

    let filters = include_str!("../../policy-rules/row_filters.toml").replace(
        "site_id = principal.site\"\n\"clinical.encounters\"",
        "site_id = = principal.site\"\n\"clinical.encounters\"",
    );
    let e = with_file("row_filters.toml", &filters).unwrap_err();
    assert!(e.to_string().contains("row_filters.toml:"), "{e}");

    let filters = include_str!("../../policy-rules/row_filters.toml").replacen(
        "principal.site",
        "principal.ward",
        1,
    );
    let e = with_file("row_filters.toml", &filters).unwrap_err();
    let p = &e.problems[0];
    assert!(
        p.message.contains("unknown attribute principal.ward") && p.line.is_some(),
        "{e}"
    );

    let roles = include_str!("../../policy-rules/roles.toml")
        .replace("\"tag:phi.ssn\"", "\"clinical.patients.shoe_size\"");
    let e = with_file("roles.toml", &roles).unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown column clinical.patients.shoe_size"),
        "{e}"
    );
}

#[test]
fn the_reporter_is_aggregate_only_and_bad_minimums_are_refused() {
    let p = Policy::load(None).unwrap();
    let reporter = p.role("reporter").unwrap();
    assert_eq!(reporter.purposes, [Purpose::Operations]);
    assert_eq!(
        reporter.aggregation,
        Some(AggregationRules { min_group_size: 11 })
    );
    assert_eq!(p.role("analyst").unwrap().aggregation, None);
    let roles = demo_texts()
        .into_iter()
        .find(|(n, _)| n == "roles.toml")
        .unwrap()
        .1;
    // The minimum defaults to 11; 1 (no suppression) and unknown keys are
    // refused.
    let default = roles.replace("min_group_size = 11", "");
    let p = with_file("roles.toml", &default).unwrap();
    assert_eq!(
        p.role("reporter").unwrap().aggregation,
        Some(AggregationRules { min_group_size: 11 })
    );
    let one = roles.replace("min_group_size = 11", "min_group_size = 1");
    let e = with_file("roles.toml", &one).unwrap_err().to_string();
    assert!(e.contains("min_group_size"), "{e}");
    let unknown = roles.replace("min_group_size = 11", "min_group_size = 11\nmin_cells = 3");
    assert!(with_file("roles.toml", &unknown).is_err());
    // The coverage matrix says it, for patient-keyed tables.
    let schemas: BTreeMap<String, Vec<(String, compile::ColumnType)>> = p
        .tables
        .iter()
        .map(|(t, r)| {
            (
                t.clone(),
                r.columns
                    .keys()
                    .map(|c| (c.clone(), compile::ColumnType::Other))
                    .collect(),
            )
        })
        .collect();
    let report = check::check(&p, &schemas);
    let cell = report
        .coverage
        .iter()
        .find(|c| c.role == "reporter" && c.table == "clinical.encounters")
        .unwrap();
    assert!(
        cell.rows
            .contains("aggregates only, groups of >= 11 patients"),
        "{cell:?}"
    );
}
