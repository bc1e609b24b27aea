//! Apache Superset against lakeward, through Superset's own code
//! (`tests/clients/superset/superset_check.py`): "Test connection",
//! "Connect", SQL Lab's schema and table browser, table metadata, SQL Lab
//! queries and "Stop", datasets, Explore's chart queries (`POST
//! /api/v1/chart/data`), samples, drill to detail, a virtual dataset and a
//! native filter's values, as the analyst and as the clinician of site S01.
//!
//! The program prints one JSON object per role. The checks here hold it
//! against the policy, computed from the raw Delta tables without lakeward
//! (`support::oracle`): the schemas and tables Superset lists are exactly the
//! role's, every chart number equals the same number from a plain query
//! (the program's own `checks`) and the oracle's (patients, encounters and
//! claims the role may see, billed amounts to the cent, the top sites of a
//! series limit), the masks of the rows SQL Lab shows, and no statement
//! Superset sent was refused.
//!
//! Superset lives in a virtualenv of its own (`LAKEWARD_SUPERSET_VENV`,
//! default `$HOME/.cache/lakeward/superset-venv`), created by `.ci/run`
//! from `tests/clients/superset/requirements.txt`. A missing virtualenv
//! fails the test with what to install; nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::support::oracle::load_once;
use crate::support::{
    ANALYST, CLINICIAN_S01, Role, consented_patients, raw_context, raw_rows, server, token,
};

/// Superset's start (migrations of its metadata database, `superset init`)
/// takes 20–45 s on an idle machine; the whole program, with the rest of
/// the suite running beside it on two cores, a few minutes.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(600);

const INSTALL: &str = "python3 -m venv \"$HOME/.cache/lakeward/superset-venv\" && \
     \"$HOME/.cache/lakeward/superset-venv/bin/pip\" install -r tests/clients/superset/requirements.txt \
     (.ci/run creates it)";

/// Schemas every role's catalog has, whatever the policy grants.
const SYSTEM_SCHEMAS: [&str; 3] = ["information_schema", "pg_catalog", "public"];

/// Schemas that hold tables neither role may query (SPEC §5).
const FORBIDDEN_SCHEMAS: [&str; 2] = ["governance", "audit"];

const ROLES: [Role; 2] = [ANALYST, CLINICIAN_S01];

/// The tables both roles may query (`policy-rules/roles.toml`), by schema,
/// as Superset's table picker lists them.
fn granted_tables() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("claims", vec!["claims:table"]),
        (
            "clinical",
            vec!["encounters:table", "observations:table", "patients:table"],
        ),
    ])
}

/// Every step the program runs; each must answer `ok`.
const STEPS: [&str; 28] = [
    "test_connection",
    "create_database",
    "catalogs",
    "schemas",
    "tables",
    "table_metadata_patients",
    "table_metadata_claims",
    "table_extra_patients",
    "sqllab_preview",
    "sqllab_query",
    "sqllab_unqualified",
    "sqllab_cancel",
    "dataset_patients",
    "dataset_encounters",
    "dataset_claims",
    "chart_claims_month_payer",
    "chart_patients_site_year",
    "chart_encounters_week_type",
    "chart_claims_series_limit",
    "chart_claims_filtered",
    "chart_claims_time_range",
    "samples_claims",
    "drill_to_detail_claims",
    "dataset_refresh_claims",
    "dataset_virtual",
    "chart_virtual_sex_year",
    "function_names",
    "filter_values",
];

/// The program's `checks`: a chart number next to the plain query's.
const CHECKS: [&str; 10] = [
    "chart_claims_month_payer.total_COUNT(*)",
    "chart_claims_month_payer.total_SUM(billed_amount)",
    "chart_claims_month_payer.groups",
    "chart_patients_site_year.total_count",
    "chart_encounters_week_type.total_count",
    "chart_claims_time_range.total_COUNT(*)",
    "chart_claims_filtered.total_COUNT(*)",
    "chart_virtual_sex_year.total_COUNT(*)",
    "samples_claims.total_count",
    "drill_to_detail_claims.total_count",
];

// ---------------------------------------------------------------------------
// The oracle: the raw tables, read without lakeward

struct RawClaim {
    patient: i64,
    site: String,
    payer: String,
    /// `YYYY-MM` of the service date.
    month: String,
    status: String,
    cents: i64,
}

struct Raw {
    /// patient id → site.
    patients: BTreeMap<i64, String>,
    /// (patient id, site) per encounter.
    encounters: Vec<(i64, String)>,
    claims: Vec<RawClaim>,
}

fn raw() -> &'static Raw {
    static RAW: OnceLock<Raw> = OnceLock::new();
    load_once(&RAW, |dir| async move {
        let ctx = raw_context(&dir).await;
        let id = |v: &Option<String>| v.as_deref().unwrap().parse::<i64>().unwrap();
        let text = |v: &Option<String>| v.clone().unwrap();
        let patients = raw_rows(&ctx, "SELECT patient_id, site_id FROM patients")
            .await
            .iter()
            .map(|r| (id(&r[0]), text(&r[1])))
            .collect();
        let encounters = raw_rows(&ctx, "SELECT patient_id, site_id FROM encounters")
            .await
            .iter()
            .map(|r| (id(&r[0]), text(&r[1])))
            .collect();
        let claims = raw_rows(
            &ctx,
            "SELECT patient_id, site_id, payer, CAST(service_date AS VARCHAR), status, \
             CAST(billed_amount AS VARCHAR) FROM claims",
        )
        .await
        .iter()
        .map(|r| RawClaim {
            patient: id(&r[0]),
            site: text(&r[1]),
            payer: text(&r[2]),
            month: text(&r[3])[..7].to_owned(),
            status: text(&r[4]),
            cents: crate::support::oracle::cents(r[5].as_deref().unwrap()),
        })
        .collect();
        Raw {
            patients,
            encounters,
            claims,
        }
    })
}

/// What the policy lets a role see, from the raw tables.
struct Expect {
    patients: u64,
    /// Patients of site S01.
    s01: u64,
    encounters: u64,
    claims: u64,
    claims_cents: i64,
    claims_medicare: u64,
    claims_paid_or_denied_positive: u64,
    /// Claims whose patient the role also sees in `clinical.patients`.
    claims_joined_patients: u64,
    claims_month_payer_groups: u64,
    payers: BTreeSet<String>,
    /// The three sites with the highest billed total (a series limit of 3).
    top3_sites: BTreeSet<String>,
    patient_sites: BTreeSet<String>,
}

fn expect(role: &Role) -> Expect {
    let raw = raw();
    let consented = consented_patients(role.purpose);
    let at_site = |site: &str| role.site.is_none_or(|s| s == site);
    let patients: BTreeSet<i64> = raw
        .patients
        .iter()
        .filter(|(id, site)| consented.contains(id) && at_site(site))
        .map(|(id, _)| *id)
        .collect();
    let claims: Vec<&RawClaim> = raw
        .claims
        .iter()
        .filter(|c| consented.contains(&c.patient) && at_site(&c.site))
        .collect();
    let mut by_site: BTreeMap<&str, i64> = BTreeMap::new();
    for c in &claims {
        *by_site.entry(&c.site).or_default() += c.cents;
    }
    let mut ranked: Vec<(&str, i64)> = by_site.into_iter().collect();
    ranked.sort_by_key(|s| std::cmp::Reverse(s.1));
    Expect {
        patients: patients.len() as u64,
        s01: patients
            .iter()
            .filter(|id| raw.patients[id] == "S01")
            .count() as u64,
        encounters: raw
            .encounters
            .iter()
            .filter(|(p, site)| consented.contains(p) && at_site(site))
            .count() as u64,
        claims: claims.len() as u64,
        claims_cents: claims.iter().map(|c| c.cents).sum(),
        claims_medicare: claims.iter().filter(|c| c.payer == "Medicare").count() as u64,
        claims_paid_or_denied_positive: claims
            .iter()
            .filter(|c| (c.status == "paid" || c.status == "denied") && c.cents > 0)
            .count() as u64,
        claims_joined_patients: claims
            .iter()
            .filter(|c| patients.contains(&c.patient))
            .count() as u64,
        claims_month_payer_groups: claims
            .iter()
            .map(|c| (&c.month, &c.payer))
            .collect::<BTreeSet<_>>()
            .len() as u64,
        payers: claims.iter().map(|c| c.payer.clone()).collect(),
        top3_sites: ranked.iter().take(3).map(|(s, _)| s.to_string()).collect(),
        patient_sites: patients.iter().map(|id| raw.patients[id].clone()).collect(),
    }
}

// ---------------------------------------------------------------------------
// Checking one role's answer

struct Report {
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(msg());
        }
    }

    /// The `ok` value of step `name`, or a failure naming its error.
    fn ok<'a>(&mut self, doc: &'a Value, name: &str) -> Option<&'a Value> {
        match doc.get(name) {
            None => {
                self.failures
                    .push(format!("{name}: missing from the program's output"));
                None
            }
            Some(v) => {
                if let Some(n) = v.get("refused_statements") {
                    self.failures.push(format!(
                        "{name}: Superset carried on after lakeward refused {n} statement(s)"
                    ));
                }
                if let Some(ok) = v.get("ok") {
                    Some(ok)
                } else {
                    self.failures.push(format!("{name}: {}", v["error"]));
                    None
                }
            }
        }
    }

    /// `got` is the integer `want` (a chart total may be a JSON float).
    fn number(&mut self, label: &str, got: &Value, want: u64) {
        let ok = got.as_f64().is_some_and(|g| g == want as f64);
        self.check(ok, || format!("{label}: expected {want}, got {got}"));
    }

    /// `got` is the amount `cents` / 100, to the cent.
    fn amount(&mut self, label: &str, got: &Value, want_cents: i64) {
        let ok = got
            .as_f64()
            .is_some_and(|g| (g * 100.0).round() as i64 == want_cents);
        self.check(ok, || {
            format!(
                "{label}: expected {}.{:02}, got {got}",
                want_cents / 100,
                want_cents % 100
            )
        });
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn check_catalog(r: &mut Report, doc: &Value) {
    let granted = granted_tables();
    if let Some(v) = r.ok(doc, "schemas") {
        let listed: BTreeSet<String> = strings(v).into_iter().collect();
        let want: BTreeSet<String> = granted.keys().map(|s| s.to_string()).collect();
        let own: BTreeSet<String> = listed
            .iter()
            .filter(|s| !SYSTEM_SCHEMAS.contains(&s.as_str()))
            .cloned()
            .collect();
        r.check(own == want, || {
            format!(
                "schemas: SQL Lab lists {listed:?}; besides the system schemas it must list exactly {want:?}"
            )
        });
    }
    if let Some(v) = r.ok(doc, "tables") {
        let listed = v.as_object().cloned().unwrap_or_default();
        for (schema, tables) in &granted {
            let got = strings(&listed.get(*schema).cloned().unwrap_or(Value::Null));
            r.check(got == *tables, || {
                format!("tables in {schema}: expected {tables:?}, got {got:?}")
            });
        }
        for schema in listed.keys() {
            r.check(
                granted.contains_key(schema.as_str()) || SYSTEM_SCHEMAS.contains(&schema.as_str()),
                || format!("tables: schema {schema} listed: {}", listed[schema]),
            );
        }
        for schema in FORBIDDEN_SCHEMAS {
            r.check(!listed.contains_key(schema), || {
                format!("tables: forbidden schema {schema} listed")
            });
        }
    }
    let patient_columns = [
        "patient_id:BIGINT",
        "mrn:TEXT",
        "first_name:TEXT",
        "last_name:TEXT",
        "ssn:TEXT",
        "birth_date:DATE",
        "sex:TEXT",
        "zip:TEXT",
        "phone:TEXT",
        "email:TEXT",
        "site_id:TEXT",
        "deceased:BOOLEAN",
    ];
    if let Some(v) = r.ok(doc, "table_metadata_patients") {
        let got = strings(&v["columns"]);
        r.check(got == patient_columns, || {
            format!("table_metadata_patients: columns {got:?}")
        });
    }
    if let Some(v) = r.ok(doc, "dataset_claims") {
        let got = strings(&v["columns"]);
        for want in [
            "billed_amount:NUMERIC(12, 2)",
            "service_date:DATE:dttm",
            "claim_id:BIGINT",
        ] {
            r.check(got.iter().any(|c| c == want), || {
                format!("dataset_claims: no column {want} in {got:?}")
            });
        }
    }
}

/// A row SQL Lab showed from `clinical.patients`, against the role's masks.
fn check_patient_row(r: &mut Report, role: &Role, label: &str, row: &Value) {
    let s = |k: &str| row[k].as_str().unwrap_or("");
    match role.name {
        "analyst" => {
            for col in ["first_name", "last_name", "ssn", "phone", "email"] {
                r.check(row[col].is_null(), || {
                    format!("{label}: {col} must be NULL for the analyst: {row}")
                });
            }
            r.check(s("mrn").starts_with("p_"), || {
                format!("{label}: mrn must be a pseudonym: {row}")
            });
            r.check(s("birth_date").ends_with("-01-01"), || {
                format!("{label}: birth_date must be 1 January of its year: {row}")
            });
            let zip = s("zip");
            r.check(zip.len() == 5 && zip.ends_with("00"), || {
                format!("{label}: zip must be its first 3 digits + 00: {row}")
            });
        }
        _ => {
            let ssn = s("ssn");
            let last4 = ssn.strip_prefix("***-**-").unwrap_or("");
            r.check(
                last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_digit()),
                || format!("{label}: ssn must read ***-**-NNNN: {row}"),
            );
            r.check(row["first_name"].is_string(), || {
                format!("{label}: the clinician sees names: {row}")
            });
        }
    }
    if let Some(site) = role.site {
        r.check(s("site_id") == site, || {
            format!("{label}: a row of another site: {row}")
        });
    }
}

fn check_sqllab(r: &mut Report, role: &Role, exp: &Expect, doc: &Value) {
    if let Some(v) = r.ok(doc, "sqllab_preview") {
        r.number("sqllab_preview rows", &v["rows"], exp.patients.min(100));
        check_patient_row(r, role, "sqllab_preview first row", &v["first"]);
    }
    // SELECT site_id, count(*) AS n FROM clinical.patients GROUP BY site_id ORDER BY site_id
    if let Some(v) = r.ok(doc, "sqllab_query") {
        r.number(
            "sqllab_query rows (sites)",
            &v["rows"],
            exp.patient_sites.len() as u64,
        );
        r.check(v["first"]["site_id"] == "S01", || {
            format!("sqllab_query: first site {}", v["first"])
        });
        r.number("sqllab_query patients of S01", &v["first"]["n"], exp.s01);
    }
    // SELECT payer, count(*), sum(billed_amount) FROM claims GROUP BY payer (schema claims)
    if let Some(v) = r.ok(doc, "sqllab_unqualified") {
        r.number(
            "sqllab_unqualified rows (payers)",
            &v["rows"],
            exp.payers.len() as u64,
        );
    }
    if let Some(v) = r.ok(doc, "sqllab_cancel") {
        r.check(v["cancelled"] == true, || {
            format!("sqllab_cancel: Stop did not cancel: {v}")
        });
    }
}

fn check_charts(r: &mut Report, role: &Role, exp: &Expect, doc: &Value) {
    // The same numbers through a plain psycopg2 query (the program's
    // `expected`), against the oracle: the plain query reads what the
    // policy allows.
    let plain = &doc["expected"];
    r.number(
        "plain count(*) FROM clinical.patients",
        &plain["patients"],
        exp.patients,
    );
    r.number(
        "plain count(DISTINCT site_id) FROM clinical.patients",
        &plain["patients_sites"],
        exp.patient_sites.len() as u64,
    );
    r.number(
        "plain count(*) FROM clinical.encounters",
        &plain["encounters"],
        exp.encounters,
    );
    r.number(
        "plain count(*) FROM claims.claims",
        &plain["claims"],
        exp.claims,
    );
    r.amount(
        "plain sum(billed_amount)",
        &plain["claims_billed"],
        exp.claims_cents,
    );
    r.number(
        "plain Medicare claims",
        &plain["claims_medicare"],
        exp.claims_medicare,
    );
    r.number(
        "plain paid or denied claims with billed_amount > 0",
        &plain["claims_paid_or_denied_positive"],
        exp.claims_paid_or_denied_positive,
    );
    r.number(
        "plain claims JOIN patients",
        &plain["claims_joined_patients"],
        exp.claims_joined_patients,
    );
    r.number(
        "plain (month, payer) groups of claims",
        &plain["claims_month_payer_groups"],
        exp.claims_month_payer_groups,
    );

    // Each chart number equals the plain query's.
    let checks = doc["checks"].as_object().cloned().unwrap_or_default();
    for name in CHECKS {
        let c = checks.get(name).cloned().unwrap_or(Value::Null);
        r.check(c["equal"] == true, || {
            format!(
                "{name}: Superset's chart answers {}, the plain query {}",
                c["superset"], c["plain"]
            )
        });
    }
    r.check(checks.len() == CHECKS.len(), || {
        format!(
            "checks: expected {} entries, got {:?}",
            CHECKS.len(),
            checks.keys()
        )
    });

    // And the oracle's, for the numbers the chart path computes itself.
    if let Some(v) = r.ok(doc, "chart_claims_month_payer") {
        r.number(
            "chart_claims_month_payer COUNT(*)",
            &v["total_COUNT(*)"],
            exp.claims,
        );
        r.amount(
            "chart_claims_month_payer SUM(billed_amount)",
            &v["total_SUM(billed_amount)"],
            exp.claims_cents,
        );
        r.number(
            "chart_claims_month_payer groups",
            &v["groups"],
            exp.claims_month_payer_groups,
        );
    }
    if let Some(v) = r.ok(doc, "chart_patients_site_year") {
        r.number(
            "chart_patients_site_year count",
            &v["total_count"],
            exp.patients,
        );
    }
    if let Some(v) = r.ok(doc, "chart_encounters_week_type") {
        r.number(
            "chart_encounters_week_type count",
            &v["total_count"],
            exp.encounters,
        );
    }
    if let Some(v) = r.ok(doc, "chart_claims_time_range") {
        r.number(
            "chart_claims_time_range COUNT(*)",
            &v["total_COUNT(*)"],
            exp.claims,
        );
    }
    if let Some(v) = r.ok(doc, "chart_claims_filtered") {
        r.number(
            "chart_claims_filtered COUNT(*)",
            &v["total_COUNT(*)"],
            exp.claims_paid_or_denied_positive,
        );
    }
    if let Some(v) = r.ok(doc, "chart_virtual_sex_year") {
        r.number(
            "chart_virtual_sex_year COUNT(*)",
            &v["total_COUNT(*)"],
            exp.claims_joined_patients,
        );
    }
    if let Some(v) = r.ok(doc, "chart_claims_series_limit") {
        let got: BTreeSet<String> = strings(&v["series"]).into_iter().collect();
        r.check(got == exp.top3_sites, || {
            format!(
                "chart_claims_series_limit: series {got:?}, the top sites by billed amount are {:?}",
                exp.top3_sites
            )
        });
    }
    if let Some(v) = r.ok(doc, "samples_claims") {
        r.number("samples_claims total_count", &v["total_count"], exp.claims);
        r.number("samples_claims rows", &v["rows"], exp.claims.min(50));
    }
    if let Some(v) = r.ok(doc, "drill_to_detail_claims") {
        r.number(
            "drill_to_detail_claims total_count",
            &v["total_count"],
            exp.claims_medicare,
        );
    }
    if let Some(v) = r.ok(doc, "filter_values") {
        let got: BTreeSet<String> = strings(v).into_iter().collect();
        r.check(got == exp.payers, || {
            format!(
                "filter_values: {got:?}, the payers of the role's claims are {:?}",
                exp.payers
            )
        });
    }
    if role.site.is_some() {
        // The clinician's patients are all of one site.
        r.check(exp.patient_sites.len() == 1, || {
            format!("oracle: the clinician's sites {:?}", exp.patient_sites)
        });
    }
}

fn check_role(role: &Role, doc: &Value) -> Vec<String> {
    let mut r = Report {
        failures: Vec::new(),
    };
    let exp = expect(role);
    let pinned = pinned_superset();
    r.check(doc["superset"]["version"] == pinned.as_str(), || {
        format!(
            "Superset {} ran, requirements.txt pins {pinned}: reinstall the virtualenv ({INSTALL})",
            doc["superset"]["version"]
        )
    });
    for step in STEPS {
        r.ok(doc, step);
    }
    if let Some(v) = r.ok(doc, "test_connection") {
        r.check(v == "OK", || format!("test_connection: {v}"));
    }
    if let Some(v) = doc.get("create_database") {
        r.check(v.get("registered_directly").is_none(), || {
            format!("create_database: the API refused the connection: {v}")
        });
    }
    check_catalog(&mut r, doc);
    check_sqllab(&mut r, role, &exp, doc);
    check_charts(&mut r, role, &exp, doc);
    let refused = doc["failed_statements"].as_array().cloned();
    r.check(refused.as_ref().is_some_and(Vec::is_empty), || {
        format!("lakeward refused statements Superset sent: {refused:?}")
    });
    // The failures are de-duplicated (a failed step is also named by every
    // check that needed its value).
    let mut seen = BTreeSet::new();
    r.failures.retain(|f| seen.insert(f.clone()));
    r.failures
}

// ---------------------------------------------------------------------------
// Running the program

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv() -> PathBuf {
    match std::env::var_os("LAKEWARD_SUPERSET_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".cache/lakeward/superset-venv")
        }
    }
}

/// The Superset version `requirements.txt` pins.
fn pinned_superset() -> String {
    let req = std::fs::read_to_string(repo().join("tests/clients/superset/requirements.txt"))
        .expect("tests/clients/superset/requirements.txt");
    req.lines()
        .find_map(|l| l.trim().strip_prefix("apache-superset=="))
        .expect("requirements.txt pins apache-superset")
        .trim()
        .to_owned()
}

/// Run the program as `role`: its JSON object, or why there is none.
fn run_check(role: &Role, python: &Path) -> Result<Value, String> {
    let ran = crate::support::process::run_until(
        Command::new(python)
            .arg(repo().join("tests/clients/superset/superset_check.py"))
            .env("LAKEWARD_HOST", "127.0.0.1")
            .env("LAKEWARD_PORT", server().port().to_string())
            .env("LAKEWARD_USER", role.name)
            .env("LAKEWARD_TOKEN", token(role.name, role.name, role.site))
            .env("LAKEWARD_PURPOSE", role.purpose)
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME"),
        PROGRAM_TIMEOUT,
    )
    .map_err(|e| format!("cannot run {} ({e}): {INSTALL}", python.display()))?;
    // Superset logs a lot on stderr: its end says what failed.
    let tail: Vec<&str> = ran.stderr.lines().rev().take(40).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    match ran.status {
        None => Err(format!(
            "superset_check.py killed after {PROGRAM_TIMEOUT:?} (hung):\n{tail}"
        )),
        Some(s) if !s.success() => Err(format!("superset_check.py failed ({s}):\n{tail}")),
        Some(_) => match serde_json::from_str::<Value>(ran.stdout.trim()) {
            Ok(v) if v.is_object() => Ok(v),
            _ => Err(format!(
                "superset_check.py did not print one JSON object: {}\n{tail}",
                ran.stdout.chars().take(2000).collect::<String>()
            )),
        },
    }
}

#[test]
fn superset_lists_and_charts_exactly_what_the_policy_allows() {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "Apache Superset's virtualenv is missing ({}): {INSTALL}",
        python.display()
    );
    server();
    raw();
    for role in ROLES {
        consented_patients(role.purpose);
    }
    let results: Vec<(Role, Result<Value, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ROLES
            .iter()
            .map(|role| {
                let python = &python;
                s.spawn(move || (*role, run_check(role, python)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("role thread panicked"))
            .collect()
    });
    let mut failed = Vec::new();
    for (role, result) in results {
        let label = format!("Superset as {} ({})", role.name, role.purpose);
        let failures = match result {
            Err(e) => vec![e],
            Ok(doc) => check_role(&role, &doc),
        };
        if !failures.is_empty() {
            failed.push(format!("{label}:\n  - {}", failures.join("\n  - ")));
        }
    }
    assert!(
        failed.is_empty(),
        "{} role(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
