//! The analysts' Python tools against lakeward: SQLAlchemy 2 (inspector and
//! Core) on psycopg 3 and psycopg2, pandas (`read_sql`, `read_sql_table`,
//! `read_sql(chunksize=…)` over a server-side cursor), asyncpg (binary
//! results, its type introspection), the ADBC PostgreSQL driver, polars
//! `read_database_uri` (ADBC and ConnectorX), psycopg `COPY (SELECT …) TO
//! STDOUT` in text, csv and binary, and psql `\copy (query) TO file`.
//!
//! `tests/clients/python/tools_suite.py` runs every tool once per role (the
//! analyst, the clinician of site S01, the researcher; in parallel) and
//! prints one JSON object: per tool, per step, what it observed or the error
//! it raised. The checks here hold each answer against the policy, computed
//! from the raw Delta tables without lakeward (`support::oracle`): the rows
//! a role may see (exactly, by patient id, where ids are not pseudonymised),
//! its masks value by value, claim counts and amounts to the cent, the
//! catalog as each library introspects it; and every tool's rows against the
//! same SELECT read by psycopg. Every failed expectation of every role is
//! collected, so one run names all the gaps at once.
//!
//! Runtimes (installed by `.ci/run`): python3 with
//! `python3 -m pip install -r tests/clients/python/requirements-tools.txt`,
//! psql (postgresql-client). A missing one fails the test with what to
//! install; nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::Datelike;
use serde_json::Value;

use crate::support::oracle::load_once;
use crate::support::{
    ANALYST, CLINICIAN_S01, RESEARCHER, RawPatient, Role, consented_patients, raw_context,
    raw_patients, raw_rows, server,
};

/// How long the suite may run for one role before it is killed.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(300);

const REQUIREMENTS: &str =
    "python3 -m pip install -r tests/clients/python/requirements-tools.txt (.ci/run installs it)";

/// The modules the suite imports, as `import` names.
const MODULES: [&str; 9] = [
    "psycopg",
    "psycopg2",
    "sqlalchemy",
    "pandas",
    "asyncpg",
    "adbc_driver_postgresql.dbapi",
    "pyarrow",
    "polars",
    "connectorx",
];

const ROLES: [Role; 3] = [ANALYST, CLINICIAN_S01, RESEARCHER];

/// `clinical.patients` in the order the suite selects it, with the SQL type
/// name SQLAlchemy's inspector reports.
const PATIENT_COLUMNS: [(&str, &str); 12] = [
    ("patient_id", "BIGINT"),
    ("mrn", "TEXT"),
    ("first_name", "TEXT"),
    ("last_name", "TEXT"),
    ("ssn", "TEXT"),
    ("birth_date", "DATE"),
    ("sex", "TEXT"),
    ("zip", "TEXT"),
    ("phone", "TEXT"),
    ("email", "TEXT"),
    ("site_id", "TEXT"),
    ("deceased", "BOOLEAN"),
];

/// `claims.claims` (SPEC §2): DECIMAL(12,2) amounts keep their typmod.
const CLAIM_COLUMNS: [(&str, &str); 11] = [
    ("claim_id", "BIGINT"),
    ("patient_id", "BIGINT"),
    ("site_id", "TEXT"),
    ("payer", "TEXT"),
    ("service_date", "DATE"),
    ("cpt_code", "TEXT"),
    ("icd10_code", "TEXT"),
    ("billed_amount", "NUMERIC(12, 2)"),
    ("allowed_amount", "NUMERIC(12, 2)"),
    ("status", "TEXT"),
    ("denial_reason", "TEXT"),
];

/// Every table the three roles may query.
const ROLE_TABLES: [&str; 4] = [
    "claims.claims",
    "clinical.encounters",
    "clinical.observations",
    "clinical.patients",
];

impl Role {
    /// Columns of `clinical.patients` the role sees as NULL (SPEC §5).
    fn null_columns(&self) -> &'static [&'static str] {
        match self.name {
            "analyst" => &["first_name", "last_name", "ssn", "phone", "email"],
            "researcher" => &["mrn", "first_name", "last_name", "ssn", "phone", "email"],
            _ => &[],
        }
    }
}

// ---------------------------------------------------------------------------
// The oracle: the raw tables, read without lakeward

struct RawClaim {
    patient: i64,
    site: String,
    cents: i64,
}

struct Oracle {
    patients: BTreeMap<i64, RawPatient>,
    claims: Vec<RawClaim>,
}

fn oracle() -> &'static Oracle {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    load_once(&ORACLE, |dir| async move {
        let ctx = raw_context(&dir).await;
        let patients = raw_patients(&ctx)
            .await
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let claims = raw_rows(
            &ctx,
            "SELECT patient_id, site_id, CAST(billed_amount AS VARCHAR) FROM claims",
        )
        .await
        .into_iter()
        .map(|r| RawClaim {
            patient: r[0].as_deref().unwrap().parse().unwrap(),
            site: r[1].clone().unwrap(),
            cents: crate::support::oracle::cents(r[2].as_deref().unwrap()),
        })
        .collect();
        Oracle { patients, claims }
    })
}

/// What the policy says a role sees, from the oracle.
struct Expect {
    /// Patient ids, for the roles that see them unpseudonymised.
    ids: Option<BTreeSet<i64>>,
    patients: u64,
    patient_sites: BTreeSet<String>,
    /// Patients of site S01.
    s01: u64,
    claims: u64,
    claims_cents: i64,
    claims_sites: BTreeSet<String>,
    /// The researcher's NULL birth dates: the patients older than 89.
    null_births: Option<(u64, u64)>,
}

fn expect(role: &Role) -> Expect {
    let o = oracle();
    let consented = consented_patients(role.purpose);
    let visible: Vec<&RawPatient> = o
        .patients
        .values()
        .filter(|p| consented.contains(&p.id) && role.site.is_none_or(|s| p.site == s))
        .collect();
    let claims: Vec<&RawClaim> = o
        .claims
        .iter()
        .filter(|c| consented.contains(&c.patient) && role.site.is_none_or(|s| c.site == s))
        .collect();
    // Age in completed years (the mask's rule: NULL when older than 89),
    // as of yesterday and tomorrow: a birthday at the day's edge is allowed.
    let today = chrono::Utc::now().date_naive();
    let over_89 = |on: chrono::NaiveDate| {
        visible
            .iter()
            .filter(|p| on.years_since(p.birth).unwrap_or(0) > 89)
            .count() as u64
    };
    Expect {
        ids: (role.name != "researcher").then(|| visible.iter().map(|p| p.id).collect()),
        patients: visible.len() as u64,
        patient_sites: visible.iter().map(|p| p.site.clone()).collect(),
        s01: visible.iter().filter(|p| p.site == "S01").count() as u64,
        claims: claims.len() as u64,
        claims_cents: claims.iter().map(|c| c.cents).sum(),
        claims_sites: claims.iter().map(|c| c.site.clone()).collect(),
        null_births: (role.name == "researcher").then(|| {
            (
                over_89(today - chrono::Days::new(1)),
                over_89(today + chrono::Days::new(1)),
            )
        }),
    }
}

// ---------------------------------------------------------------------------
// Collecting failures

struct Report {
    label: String,
    failures: Vec<String>,
}

fn describe_error(e: &Value) -> String {
    format!(
        "SQLSTATE {}: {} ({})",
        e["sqlstate"].as_str().unwrap_or("none"),
        e["message"].as_str().unwrap_or("?"),
        e["exception"].as_str().unwrap_or("?"),
    )
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

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Report {
    fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(msg());
        }
    }

    /// The `ok` value of `parent[key]`, or a failure labelled `label`
    /// naming the error the step raised.
    fn ok<'a>(&mut self, parent: &'a Value, key: &str, label: &str) -> Option<&'a Value> {
        match parent.get(key) {
            None => {
                self.fail(format!("{label}: missing from the suite's output"));
                None
            }
            Some(v) => {
                if let Some(ok) = v.get("ok") {
                    Some(ok)
                } else if let Some(e) = v.get("error") {
                    self.fail(format!("{label}: {}", describe_error(e)));
                    None
                } else {
                    self.fail(format!("{label}: neither ok nor error: {v}"));
                    None
                }
            }
        }
    }

    fn equal(&mut self, label: &str, got: &Value, want: impl Into<Value>) {
        let want = want.into();
        self.check(*got == want, || {
            format!("{label}: expected {want}, got {got}")
        });
    }

    /// Column types as the library reports them: each listed column has
    /// one of the accepted types.
    fn types(&mut self, label: &str, got: &Value, want: &[(&str, &[&str])]) {
        for (col, accepted) in want {
            let t = got[*col].as_str().unwrap_or("<missing>");
            self.check(accepted.contains(&t), || {
                format!("{label}: column {col} has type {t}, expected one of {accepted:?}")
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Rows against the policy

struct Ctx<'a> {
    role: Role,
    exp: &'a Expect,
    /// The patients summary of the same SELECT read by psycopg.
    reference: Option<Value>,
    /// The reference claims summary.
    reference_claims: Option<Value>,
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

/// A patients summary (tools_summary.patients_summary) against the policy
/// and against the reference SELECT.
fn check_patients(r: &mut Report, cx: &Ctx<'_>, label: &str, s: &Value) {
    let o = oracle();
    let role = cx.role;
    let rows = count(s, "rows");
    r.check(rows == cx.exp.patients, || {
        format!(
            "{label}: {rows} patients, the policy oracle says {}",
            cx.exp.patients
        )
    });
    let ids: Vec<i64> = s["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let id_set: BTreeSet<i64> = ids.iter().copied().collect();
    if let Some(want) = &cx.exp.ids {
        let missing: Vec<_> = want.difference(&id_set).take(5).collect();
        let extra: Vec<_> = id_set.difference(want).take(5).collect();
        r.check(missing.is_empty() && extra.is_empty(), || {
            format!(
                "{label}: not the policy's patients: {} missing (e.g. {missing:?}), {} not allowed (e.g. {extra:?})",
                want.difference(&id_set).count(),
                id_set.difference(want).count()
            )
        });
    } else {
        // Pseudonymised ids: none of them is a raw patient id.
        let raw: Vec<_> = ids
            .iter()
            .filter(|id| o.patients.contains_key(id))
            .take(5)
            .collect();
        r.check(raw.is_empty(), || {
            format!("{label}: patient_id must be pseudonymised, raw ids seen: {raw:?}")
        });
    }
    let sites: BTreeSet<String> = strings(&s["sites"]).into_iter().collect();
    r.check(sites == cx.exp.patient_sites, || {
        format!(
            "{label}: sites {sites:?}, the policy oracle says {:?}",
            cx.exp.patient_sites
        )
    });
    let nn = &s["non_null"];
    for col in role.null_columns() {
        let n = count(nn, col);
        r.check(n == 0, || {
            format!(
                "{label}: {col} must be NULL for the {}, {n} rows have a value",
                role.name
            )
        });
    }
    match role.name {
        "analyst" => {
            r.check(count(nn, "mrn") == rows, || {
                format!("{label}: mrn must be a pseudonym on every row: {nn}")
            });
            r.check(count(s, "birth_not_jan1") == 0, || {
                format!(
                    "{label}: birth_date must be 1 January of its year: {} are not",
                    s["birth_not_jan1"]
                )
            });
            r.check(count(s, "zip_not_zip3") == 0, || {
                format!(
                    "{label}: zip must be its first 3 digits + 00: {} are not",
                    s["zip_not_zip3"]
                )
            });
        }
        "clinician" => {
            r.check(count(s, "ssn_full") == 0, || {
                format!(
                    "{label}: {} full SSNs shown to the clinician",
                    s["ssn_full"]
                )
            });
            r.check(
                count(s, "ssn_last4_masked") == count(nn, "ssn") && count(nn, "ssn") > 0,
                || {
                    format!(
                        "{label}: every SSN must read ***-**-NNNN: {} of {} do",
                        s["ssn_last4_masked"], nn["ssn"]
                    )
                },
            );
        }
        _ => {
            r.check(count(s, "birth_not_jan1") == 0, || {
                format!(
                    "{label}: birth_date must be 1 January of its year or NULL: {} are not",
                    s["birth_not_jan1"]
                )
            });
            r.check(count(s, "zip_not_zip3") == 0, || {
                format!(
                    "{label}: zip must be its first 3 digits + 00: {} are not",
                    s["zip_not_zip3"]
                )
            });
            if let Some((lo, hi)) = cx.exp.null_births {
                let nulls = rows.saturating_sub(count(nn, "birth_date"));
                r.check((lo..=hi).contains(&nulls), || {
                    format!("{label}: {nulls} NULL birth dates (older than 89), the oracle says {lo}..={hi}")
                });
            }
        }
    }
    // Value by value, the first rows (ids are raw for analyst and clinician).
    if role.name != "researcher" {
        let mut wrong = Vec::new();
        for row in s["sample"].as_array().into_iter().flatten() {
            let id: i64 = row["patient_id"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let Some(p) = o.patients.get(&id) else {
                continue;
            };
            let want: Vec<(&str, Option<String>)> = if role.name == "analyst" {
                vec![
                    ("birth_date", Some(format!("{}-01-01", p.birth.year()))),
                    ("zip", Some(format!("{}00", &p.zip[..3]))),
                    ("site_id", Some(p.site.clone())),
                ]
            } else {
                vec![
                    ("mrn", Some(p.mrn.clone())),
                    ("first_name", Some(p.first.clone())),
                    ("last_name", Some(p.last.clone())),
                    (
                        "ssn",
                        p.ssn
                            .as_ref()
                            .map(|s| format!("***-**-{}", &s[s.len() - 4..])),
                    ),
                    ("birth_date", Some(p.birth.to_string())),
                    ("zip", Some(p.zip.clone())),
                    ("phone", p.phone.clone()),
                    ("email", p.email.clone()),
                    ("site_id", Some(p.site.clone())),
                ]
            };
            for (col, v) in want {
                let got = row[col].as_str().map(str::to_owned);
                if got != v {
                    wrong.push(format!("patient {id} {col}: got {got:?}, want {v:?}"));
                }
            }
            if role.name == "analyst" {
                let mrn = row["mrn"].as_str();
                if mrn.is_none() || mrn == Some(p.mrn.as_str()) {
                    wrong.push(format!(
                        "patient {id} mrn: got {mrn:?}, want a pseudonym (not the raw MRN)"
                    ));
                }
            }
        }
        r.check(wrong.is_empty(), || {
            format!(
                "{label}: {} masked values wrong, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(3)]
            )
        });
    }
    // The same rows as psycopg reads (ids, pseudonyms, every sampled value).
    if let Some(reference) = &cx.reference {
        r.check(s["ids"] == reference["ids"], || {
            format!("{label}: patient ids differ from the same SELECT read by psycopg")
        });
        let got = s["sample"].as_array().cloned().unwrap_or_default();
        let want = reference["sample"].as_array().cloned().unwrap_or_default();
        let diff = got.iter().zip(&want).find(|(g, w)| g != w);
        r.check(got.len() == want.len() && diff.is_none(), || match diff {
            Some((g, w)) => {
                format!("{label}: a row differs from the same SELECT read by psycopg: {g} vs {w}")
            }
            None => format!(
                "{label}: {} sampled rows, psycopg read {}",
                got.len(),
                want.len()
            ),
        });
    }
}

/// A claims summary against the policy.
fn check_claims(r: &mut Report, cx: &Ctx<'_>, label: &str, s: &Value) {
    let rows = count(s, "rows");
    r.check(rows == cx.exp.claims, || {
        format!(
            "{label}: {rows} claims, the policy oracle says {}",
            cx.exp.claims
        )
    });
    r.check(count(s, "billed_non_null") == rows, || {
        format!("{label}: billed_amount NULL on some rows: {s}")
    });
    let total = s["billed_cents"].as_i64();
    r.check(total == Some(cx.exp.claims_cents), || {
        format!(
            "{label}: sum(billed_amount) = {:?} cents, the oracle says {}",
            total, cx.exp.claims_cents
        )
    });
    let sites: BTreeSet<String> = strings(&s["sites"]).into_iter().collect();
    r.check(sites == cx.exp.claims_sites, || {
        format!(
            "{label}: claim sites {sites:?}, the oracle says {:?}",
            cx.exp.claims_sites
        )
    });
    let shifted = count(s, "service_date_not_jan1");
    if cx.role.name == "researcher" {
        r.check(shifted == 0, || {
            format!("{label}: service_date must be 1 January of its year: {shifted} are not")
        });
    } else {
        r.check(shifted > 0 && shifted != u64::MAX, || {
            format!("{label}: service dates must be shown as they are: {s}")
        });
    }
    if let Some(reference) = &cx.reference_claims {
        r.check(s == reference, || {
            format!("{label}: differs from the same SELECT read by psycopg: {s} vs {reference}")
        });
    }
}

/// Dtypes of the patients columns, per family of library.
fn patient_types(kind: &str) -> Vec<(&'static str, &'static [&'static str])> {
    let (int, date, boolean, text): (&[&str], &[&str], &[&str], &[&str]) = match kind {
        "pandas" => (
            &["int64"],
            &["object", "datetime64[ns]"],
            &["bool"],
            &["object"],
        ),
        "arrow" => (
            &["int64"],
            &["date32[day]"],
            &["bool"],
            &["string", "large_string"],
        ),
        _ => (&["Int64"], &["Date"], &["Boolean"], &["String"]),
    };
    PATIENT_COLUMNS
        .iter()
        .map(|(c, t)| {
            let accepted = match *t {
                "BIGINT" => int,
                "DATE" => date,
                "BOOLEAN" => boolean,
                _ => text,
            };
            (*c, accepted)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Per tool

fn check_reference(r: &mut Report, cx: &Ctx<'_>, doc: &Value) {
    let sec = &doc["reference"];
    let label = "psycopg SELECT (reference)";
    if let Some(s) = r.ok(sec, "patients", &format!("{label} patients")) {
        let cx = Ctx {
            reference: None,
            reference_claims: None,
            ..*cx
        };
        check_patients(r, &cx, &format!("{label} patients"), s);
    }
    if let Some(s) = r.ok(sec, "claims", &format!("{label} claims")) {
        let cx = Ctx {
            reference: None,
            reference_claims: None,
            ..*cx
        };
        check_claims(r, &cx, &format!("{label} claims"), s);
    }
    if let Some(v) = r.ok(sec, "s01_count", "psycopg %s parameter (site_id = 'S01')") {
        r.equal("psycopg %s parameter (site_id = 'S01')", v, cx.exp.s01);
    }
    if let Some(v) = r.ok(sec, "types", "psycopg types") {
        for (label, class) in [
            ("bigint", "int"),
            ("text", "str"),
            ("date", "date"),
            ("boolean", "bool"),
            ("timestamp", "datetime"),
            ("double", "float"),
            ("decimal", "Decimal"),
        ] {
            r.equal(&format!("psycopg {label} class"), &v[label]["class"], class);
        }
    }
    // RowDescription carries the column's typmod: precision 12, scale 2.
    if let Some(v) = r.ok(
        sec,
        "claims_description",
        "psycopg cursor.description of claims.billed_amount",
    ) {
        for d in v.as_array().into_iter().flatten() {
            let name = d["name"].as_str().unwrap_or("?");
            r.check(d["precision"] == 12 && d["scale"] == 2, || {
                format!(
                    "psycopg cursor.description of claims.{name}: expected NUMERIC(12,2) (typmod in RowDescription), got precision {} scale {}",
                    d["precision"], d["scale"]
                )
            });
        }
    }
}

fn check_sqlalchemy(r: &mut Report, cx: &Ctx<'_>, doc: &Value, driver: &str) {
    let sec = &doc["sqlalchemy"][driver];
    let l = |what: &str| format!("SQLAlchemy[{driver}] {what}");
    let role = cx.role;

    let label = l("inspector.get_schema_names()");
    if let Some(v) = r.ok(sec, "schemas", &label) {
        let got: BTreeSet<String> = strings(v).into_iter().collect();
        let allowed = set_of(&["clinical", "claims", "public", "information_schema"]);
        r.check(
            got.contains("clinical") && got.contains("claims") && got.is_subset(&allowed),
            || format!("{label}: expected clinical and claims (+ public, information_schema) and nothing the role may not query, got {got:?}"),
        );
    }
    for (schema, want) in [
        ("clinical", vec!["encounters", "observations", "patients"]),
        ("claims", vec!["claims"]),
        ("governance", vec![]),
        ("audit", vec![]),
    ] {
        let label = l(&format!("inspector.get_table_names(schema='{schema}')"));
        if let Some(v) = r.ok(sec, &format!("tables_{schema}"), &label) {
            r.equal(&label, v, want);
        }
    }
    let label = l("inspector.get_view_names(schema='clinical')");
    if let Some(v) = r.ok(sec, "views_clinical", &label) {
        r.equal(&label, v, Vec::<String>::new());
    }
    for (key, what, want) in [
        (
            "has_table_patients",
            "has_table('patients', schema='clinical')",
            true,
        ),
        (
            "has_table_consents",
            "has_table('consents', schema='governance')",
            false,
        ),
    ] {
        let label = l(&format!("inspector.{what}"));
        if let Some(v) = r.ok(sec, key, &label) {
            r.equal(&label, v, want);
        }
    }

    let label = l("inspector.get_columns('patients', schema='clinical')");
    if let Some(v) = r.ok(sec, "columns_patients", &label) {
        let got = name_types(v);
        let want: Vec<(String, String)> = PATIENT_COLUMNS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        r.check(got == want, || {
            format!("{label}: expected {want:?}, got {got:?}")
        });
        // A column the role sees as NULL is not reported NOT NULL.
        for c in v.as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("");
            if role.null_columns().contains(&name) {
                r.check(c["nullable"] == true, || {
                    format!(
                        "{label}: {name} is NULL for the {} but reported NOT NULL",
                        role.name
                    )
                });
            }
        }
    }
    let label = l("inspector.get_columns('claims', schema='claims')");
    if let Some(v) = r.ok(sec, "columns_claims", &label) {
        let got = name_types(v);
        let want: Vec<(String, String)> = CLAIM_COLUMNS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        r.check(got == want, || {
            format!("{label}: expected {want:?} (DECIMAL(12,2) keeps its precision and scale), got {got:?}")
        });
    }
    // No keys, constraints or indexes are declared on a Delta table: empty
    // answers, not errors.
    for (key, what, want) in [
        (
            "pk_patients",
            "get_pk_constraint('patients', schema='clinical')",
            serde_json::json!({"constrained_columns": [], "name": null}),
        ),
        (
            "fk_claims",
            "get_foreign_keys('claims', schema='claims')",
            serde_json::json!([]),
        ),
        (
            "indexes_patients",
            "get_indexes('patients', schema='clinical')",
            serde_json::json!([]),
        ),
        (
            "unique_patients",
            "get_unique_constraints('patients', schema='clinical')",
            serde_json::json!([]),
        ),
    ] {
        let label = l(&format!("inspector.{what}"));
        if let Some(v) = r.ok(sec, key, &label) {
            let got = if key == "pk_patients" {
                serde_json::json!({"constrained_columns": v["constrained_columns"], "name": v["name"]})
            } else {
                v.clone()
            };
            r.equal(&label, &got, want);
        }
    }
    let label = l("inspector.get_table_comment('patients', schema='clinical')");
    if let Some(v) = r.ok(sec, "table_comment_patients", &label) {
        r.check(v["text"].is_null() || v["text"].is_string(), || {
            format!("{label}: expected {{'text': None or str}}, got {v}")
        });
    }
    let label = l("Table('patients', autoload_with=engine) + select(count())");
    if let Some(v) = r.ok(sec, "reflect_patients", &label) {
        let cols: Vec<&str> = PATIENT_COLUMNS.iter().map(|(n, _)| *n).collect();
        r.equal(&format!("{label} columns"), &v["columns"], cols);
        r.equal(&format!("{label} count"), &v["count"], cx.exp.patients);
        r.equal(
            &format!("{label} where site_id == 'S01'"),
            &v["s01_count"],
            cx.exp.s01,
        );
    }
    let label = l("text('… WHERE site_id = :site') bound parameter");
    if let Some(v) = r.ok(sec, "text_bound_param", &label) {
        r.equal(&label, v, cx.exp.s01);
    }
}

fn check_pandas(r: &mut Report, cx: &Ctx<'_>, doc: &Value, driver: &str) {
    let sec = &doc["pandas"][driver];
    let l = |what: &str| format!("pandas[{driver}] {what}");
    let claim_types: &[(&str, &[&str])] = &[
        ("claim_id", &["int64"]),
        ("patient_id", &["int64"]),
        ("site_id", &["object"]),
        ("billed_amount", &["float64", "object"]),
        ("service_date", &["object", "datetime64[ns]"]),
    ];

    let label = l("read_sql(SELECT … FROM clinical.patients)");
    if let Some(v) = r.ok(sec, "read_sql", &label) {
        r.types(&label, &v["dtypes"], &patient_types("pandas"));
        check_patients(r, cx, &label, &v["summary"]);
    }
    let label = l("read_sql(SELECT … FROM claims.claims)");
    if let Some(v) = r.ok(sec, "read_sql_claims", &label) {
        r.types(&label, &v["dtypes"], claim_types);
        check_claims(r, cx, &label, &v["summary"]);
    }
    let label = l("read_sql(text(… :site), params={'site': 'S01'})");
    if let Some(v) = r.ok(sec, "read_sql_params", &label) {
        r.equal(&label, v, cx.exp.s01);
    }
    let label = l("read_sql_table('patients', schema='clinical')");
    if let Some(v) = r.ok(sec, "read_sql_table", &label) {
        r.types(&label, &v["dtypes"], &patient_types("pandas"));
        check_patients(r, cx, &label, &v["summary"]);
    }
    let label = l("read_sql(chunksize=500) with stream_results (server-side cursor)");
    if let Some(v) = r.ok(sec, "read_sql_chunks", &label) {
        check_chunks(r, cx, &label, &v["chunks"]);
        r.check(v["server_side_cursor"].is_string(), || {
            format!(
                "{label}: the rows did not come through a named (server-side) cursor: {}",
                v["server_side_cursor"]
            )
        });
        r.types(&label, &v["dtypes"], &patient_types("pandas"));
        check_patients(r, cx, &label, &v["summary"]);
    }
    let label = l("read_sql(chunksize=500): leave after the first chunk, then query on");
    if let Some(v) = r.ok(sec, "read_sql_chunks_break", &label) {
        r.equal(
            &format!("{label}: first chunk"),
            &v["first_chunk"],
            cx.exp.patients.min(500),
        );
        r.equal(
            &format!("{label}: count after"),
            &v["count_after"],
            cx.exp.patients,
        );
    }
    let label = l("read_sql_table(chunksize=500) with stream_results");
    if let Some(v) = r.ok(sec, "read_sql_table_chunks", &label) {
        check_chunks(r, cx, &label, &v["chunks"]);
        check_patients(r, cx, &label, &v["summary"]);
    }
}

fn check_chunks(r: &mut Report, cx: &Ctx<'_>, label: &str, chunks: &Value) {
    let sizes: Vec<u64> = chunks
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let n = cx.exp.patients;
    r.check(
        sizes.iter().sum::<u64>() == n
            && sizes.iter().all(|s| *s <= 500)
            && sizes.len() as u64 == n.div_ceil(500),
        || format!("{label}: chunks of at most 500 rows adding up to {n}, got {sizes:?}"),
    );
}

fn check_psycopg(r: &mut Report, cx: &Ctx<'_>, doc: &Value) {
    let sec = &doc["psycopg"];
    let label = "psycopg named cursor closed before use in a transaction";
    if let Some(v) = r.ok(sec, "named_cursor_closed_unused", label) {
        r.equal(
            &format!("{label}: count after"),
            &v["count_after"],
            cx.exp.patients,
        );
    }
    let label = "psycopg named cursor read in part, then closed";
    if let Some(v) = r.ok(sec, "named_cursor_partial", label) {
        r.equal(
            &format!("{label}: rows fetched"),
            &v["fetched"],
            cx.exp.patients.min(100),
        );
        r.equal(
            &format!("{label}: count after"),
            &v["count_after"],
            cx.exp.patients,
        );
    }
    for fmt in ["text", "csv", "binary"] {
        let opts = match fmt {
            "text" => "",
            "csv" => " (FORMAT csv)",
            _ => " (FORMAT binary)",
        };
        for what in ["patients", "claims"] {
            let label = format!("psycopg COPY (SELECT … FROM {what}) TO STDOUT{opts}");
            if let Some(v) = r.ok(sec, &format!("copy_{fmt}_{what}"), &label) {
                check_copy(r, cx, &label, what, v);
            }
        }
    }
}

/// A COPY's rows: the same as the SELECT's, and the policy's.
fn check_copy(r: &mut Report, cx: &Ctx<'_>, label: &str, what: &str, v: &Value) {
    r.check(
        v["same_as_select"] == true && v["rows"] == v["select_rows"],
        || {
            format!(
                "{label}: not the rows of the same SELECT ({} rows vs {}; first difference {})",
                v["rows"], v["select_rows"], v["first_difference"]
            )
        },
    );
    if what == "patients" {
        check_patients(r, cx, label, &v["summary"]);
    } else {
        check_claims(r, cx, label, &v["summary"]);
    }
}

fn check_asyncpg(r: &mut Report, cx: &Ctx<'_>, doc: &Value) {
    let sec = &doc["asyncpg"];
    r.ok(
        sec,
        "connect",
        "asyncpg.connect() (its startup packet: client_encoding='utf-8' quoted)",
    );
    if sec.get("fallback_connection").is_some() {
        // Every later step ran on a connection declaring client_encoding=UTF8.
        r.ok(
            sec,
            "fallback_connection",
            "asyncpg.connect(server_settings={'client_encoding': 'UTF8'})",
        );
    }
    let label = "asyncpg binary results";
    if let Some(v) = r.ok(sec, "types", label) {
        let reference = doc["reference"]["types"].get("ok");
        for (t, class) in [
            ("bigint", "int"),
            ("text", "str"),
            ("date", "date"),
            ("boolean", "bool"),
            ("timestamp", "datetime"),
            ("double", "float"),
            ("decimal", "Decimal"),
        ] {
            let got = &v[t];
            if let Some(e) = got.get("error") {
                r.fail(format!("{label} {t}: {}", describe_error(e)));
                continue;
            }
            r.equal(&format!("{label} {t} class"), &got["class"], class);
            if let Some(reference) = reference {
                r.check(got["value"] == reference[t]["value"], || {
                    format!(
                        "{label} {t}: binary {} vs psycopg text {}",
                        got["value"], reference[t]["value"]
                    )
                });
            }
        }
    }
    let label = "asyncpg fetch(SELECT … FROM clinical.patients)";
    if let Some(v) = r.ok(sec, "patients", label) {
        check_patients(r, cx, label, v);
    }
    let label = "asyncpg fetch(SELECT … FROM claims.claims)";
    if let Some(v) = r.ok(sec, "claims", label) {
        check_claims(r, cx, label, v);
    }
    let label = "asyncpg fetchval(… WHERE site_id = $1, 'S01')";
    if let Some(v) = r.ok(sec, "params", label) {
        r.equal(label, v, cx.exp.s01);
    }
    let label = "asyncpg prepare(… WHERE site_id = $1)";
    if let Some(v) = r.ok(sec, "prepared", label) {
        r.equal(
            &format!("{label} parameters"),
            &v["parameters"],
            vec!["text"],
        );
        r.equal(
            &format!("{label} columns"),
            &v["columns"],
            serde_json::json!([["patient_id", "int8"], ["site_id", "text"]]),
        );
        r.equal(&format!("{label} rows"), &v["rows"], cx.exp.s01);
    }
    let label = "asyncpg int8[] result (runs asyncpg's type introspection)";
    if let Some(v) = r.ok(sec, "array_result", label) {
        // The role's first three patient ids: from the policy oracle, or,
        // pseudonymised, as asyncpg read them in the patients step.
        let first_three: Vec<i64> = match &cx.exp.ids {
            Some(ids) => ids.iter().take(3).copied().collect(),
            None => sec["patients"]["ok"]["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .take(3)
                .collect(),
        };
        r.equal(
            label,
            v,
            serde_json::json!({
                "class": "list",
                "length": 3,
                "element_class": "int",
                "value": first_three,
            }),
        );
    }
    let label = "asyncpg introspection query INTRO_LOOKUP_TYPES for int8, text, numeric, int8[]";
    if let Some(v) = r.ok(sec, "introspection_query", label) {
        let got: Vec<(u64, String, u64)> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["oid"].as_u64().unwrap_or(0),
                    t["name"].as_str().unwrap_or("").to_owned(),
                    t["elemtype"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        for (oid, name, elem) in [
            (20, "int8", 0),
            (25, "text", 0),
            (1016, "_int8", 20),
            (1700, "numeric", 0),
        ] {
            r.check(
                got.iter().any(|g| *g == (oid, name.to_owned(), elem)),
                || format!("{label}: no row for {name} (oid {oid}, elemtype {elem}): {v}"),
            );
        }
    }
    let label = "asyncpg introspection query TYPE_BY_NAME('int8', 'pg_catalog')";
    if let Some(v) = r.ok(sec, "type_by_name", label) {
        r.equal(label, v, serde_json::json!([{"oid": 20, "kind": "b"}]));
    }
    let label = "asyncpg cursor(prefetch=100) in a transaction";
    if let Some(v) = r.ok(sec, "cursor", label) {
        check_patients(r, cx, label, v);
    }
    let label = "asyncpg copy_from_query(SELECT … FROM clinical.patients, format='csv')";
    if let Some(v) = r.ok(sec, "copy_from_query", label) {
        r.check(v["same_as_select"] == true, || {
            format!(
                "{label}: not the rows of the same SELECT: {} rows",
                v["rows"]
            )
        });
        check_patients(r, cx, label, &v["summary"]);
    }
}

fn check_adbc(r: &mut Report, cx: &Ctx<'_>, doc: &Value) {
    let sec = &doc["adbc"];
    if r.ok(sec, "connect", "adbc_driver_postgresql.dbapi.connect()")
        .is_none()
    {
        return;
    }
    for (key, label) in [
        (
            "patients",
            "ADBC cursor.fetch_arrow_table(SELECT … FROM clinical.patients)",
        ),
        (
            "patients_without_copy",
            "ADBC fetch_arrow_table with adbc.postgresql.use_copy=false",
        ),
    ] {
        if let Some(v) = r.ok(sec, key, label) {
            r.types(label, &v["schema"], &patient_types("arrow"));
            check_patients(r, cx, label, &v["summary"]);
        }
    }
    let label = "ADBC cursor.fetch_arrow_table(SELECT … FROM claims.claims)";
    if let Some(v) = r.ok(sec, "claims", label) {
        check_claims(r, cx, label, &v["summary"]);
    }
    let label = "ADBC execute(… WHERE site_id = $1, ('S01',))";
    if let Some(v) = r.ok(sec, "params", label) {
        r.equal(label, v, cx.exp.s01);
    }
    let label = "ADBC adbc_get_objects(depth='columns')";
    if let Some(v) = r.ok(sec, "get_objects", label) {
        r.equal(
            &format!("{label} tables"),
            &v["tables"],
            ROLE_TABLES.to_vec(),
        );
        let cols: Vec<&str> = PATIENT_COLUMNS.iter().map(|(n, _)| *n).collect();
        r.equal(
            &format!("{label} columns of clinical.patients"),
            &v["patients_columns"],
            cols,
        );
    }
    let label = "ADBC adbc_get_table_schema('patients', db_schema_filter='clinical')";
    if let Some(v) = r.ok(sec, "get_table_schema", label) {
        let names: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let want: BTreeSet<&str> = PATIENT_COLUMNS.iter().map(|(n, _)| *n).collect();
        r.check(
            names.iter().copied().collect::<BTreeSet<_>>() == want,
            || format!("{label}: expected the 12 columns, got {v}"),
        );
        r.types(label, v, &patient_types("arrow"));
    }
}

fn check_polars(r: &mut Report, cx: &Ctx<'_>, doc: &Value) {
    for (engine, what) in [
        ("adbc", "engine='adbc'"),
        ("connectorx", "engine='connectorx'"),
        (
            "connectorx_cursor",
            "engine='connectorx', protocol='cursor'",
        ),
    ] {
        let sec = &doc["polars"][engine];
        let label = format!("polars.read_database_uri(SELECT … FROM clinical.patients, {what})");
        if let Some(v) = r.ok(sec, "patients", &label) {
            r.types(&label, &v["schema"], &patient_types("polars"));
            check_patients(r, cx, &label, &v["summary"]);
        }
        let label = format!("polars.read_database_uri(SELECT … FROM claims.claims, {what})");
        if let Some(v) = r.ok(sec, "claims", &label) {
            check_claims(r, cx, &label, &v["summary"]);
        }
    }
}

fn check_psql(r: &mut Report, cx: &Ctx<'_>, doc: &Value) {
    let sec = &doc["psql"];
    for fmt in ["text", "csv"] {
        let opt = if fmt == "csv" {
            " WITH (FORMAT csv)"
        } else {
            ""
        };
        for what in ["patients", "claims"] {
            let label = format!("psql \\copy (SELECT … FROM {what}) TO file{opt}");
            if let Some(v) = r.ok(sec, &format!("copy_{fmt}_{what}"), &label) {
                check_copy(r, cx, &label, what, v);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running the suite

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every library the suite imports is installed, or what to install.
fn python_ready() -> &'static Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(|| {
        let script = MODULES
            .iter()
            .map(|m| format!("import {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        match Command::new("python3").args(["-c", &script]).output() {
            Err(e) => Err(format!(
                "cannot run python3 ({e}): install Python 3 with pip, then {REQUIREMENTS}"
            )),
            Ok(o) if !o.status.success() => Err(format!(
                "the analysts' Python tools are not installed: {REQUIREMENTS}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Ok(_) => Ok(()),
        }
    })
}

/// Run the suite for `role`: its JSON object, or a failure.
fn run_suite(role: &Role, r: &mut Report) -> Option<Value> {
    let ran = crate::support::process::run_until(
        Command::new("python3")
            .arg(repo().join("tests/clients/python/tools_suite.py"))
            .envs(role.env("127.0.0.1")),
        PROGRAM_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {REQUIREMENTS}"));
    let (status, stdout, stderr) = (ran.status, ran.stdout, ran.stderr);
    match status {
        None => {
            r.fail(format!(
                "tools_suite.py killed after {PROGRAM_TIMEOUT:?} (hung): {}",
                stderr.trim()
            ));
            None
        }
        Some(s) if !s.success() => {
            r.fail(format!(
                "tools_suite.py failed ({s}): {}\n{}",
                stderr.trim(),
                stdout.trim()
            ));
            None
        }
        Some(_) => match serde_json::from_str::<Value>(stdout.trim()) {
            Ok(v) if v.is_object() => Some(v),
            _ => {
                r.fail(format!(
                    "tools_suite.py did not print one JSON object: {}\nstderr: {}",
                    stdout.trim(),
                    stderr.trim()
                ));
                None
            }
        },
    }
}

fn tools_role(role: &Role) -> Report {
    let mut r = Report {
        label: format!("Python tools as {} ({})", role.name, role.purpose),
        failures: Vec::new(),
    };
    let exp = expect(role);
    let Some(doc) = run_suite(role, &mut r) else {
        return r;
    };
    r.check(doc["connection"]["ssl_in_use"] == true, || {
        format!("not a TLS connection: {}", doc["connection"])
    });
    let reference = doc["reference"]["patients"].get("ok").cloned();
    let reference_claims = doc["reference"]["claims"].get("ok").cloned();
    let cx = Ctx {
        role: *role,
        exp: &exp,
        reference,
        reference_claims,
    };
    check_reference(&mut r, &cx, &doc);
    for driver in ["psycopg", "psycopg2"] {
        check_sqlalchemy(&mut r, &cx, &doc, driver);
        check_pandas(&mut r, &cx, &doc, driver);
    }
    check_psycopg(&mut r, &cx, &doc);
    check_asyncpg(&mut r, &cx, &doc);
    check_adbc(&mut r, &cx, &doc);
    check_polars(&mut r, &cx, &doc);
    check_psql(&mut r, &cx, &doc);
    r
}

#[test]
fn python_tools_read_exactly_what_the_policy_allows() {
    if let Err(e) = python_ready() {
        panic!("{e}");
    }
    server();
    oracle();
    for role in ROLES {
        consented_patients(role.purpose);
    }
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = ROLES.iter().map(|r| s.spawn(|| tools_role(r))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("role thread panicked"))
            .collect()
    });
    let mut failed = Vec::new();
    let mut gaps_seen = BTreeSet::new();
    for r in reports {
        let (known, other): (Vec<String>, Vec<String>) = r
            .failures
            .into_iter()
            .partition(|f| KNOWN_GAPS.iter().any(|g| f.starts_with(g)));
        for f in &known {
            if let Some(g) = KNOWN_GAPS.iter().find(|g| f.starts_with(*g)) {
                gaps_seen.insert(*g);
            }
            eprintln!("known gap, {}: {f}", r.label);
        }
        if !other.is_empty() {
            failed.push(format!("{}:\n  - {}", r.label, other.join("\n  - ")));
        }
    }
    // A known gap that no longer shows is fixed: take it off the list so
    // the suite guards the fix.
    let fixed: Vec<&str> = KNOWN_GAPS
        .iter()
        .filter(|g| !gaps_seen.contains(*g))
        .copied()
        .collect();
    assert!(
        fixed.is_empty(),
        "known gaps that now pass (remove them from KNOWN_GAPS): {fixed:?}"
    );
    assert!(
        failed.is_empty(),
        "{} role(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The `(name, type)` pairs of an inspector's `get_columns` answer.
fn name_types(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Steps that fail today for a reason lakeward has not fixed yet (docs/clients.md,
/// "Compatibility matrix"): reported, not counted, and the test fails once
/// one of them passes. Everything else the suite checks must pass.
const KNOWN_GAPS: &[&str] = &[];
