//! Enforcement (SPEC §4–5) against the shipped demo policy: what each role
//! sees, masks applied before the user's expressions, row filters wherever a
//! table appears, leaky predicates stopped at the security barrier,
//! break-glass, and prepared statements re-planned when the purpose changes.
//!
//! Every expectation is computed from the raw Delta tables read with a plain
//! DataFusion context (never through lakeward) and from
//! `support::consented_patients`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::support::{self, RawPatient, connect_role, consented_patients, server, sqlstate};

// ---------------------------------------------------------------------------
// Raw data (the oracle), read straight from the Delta tables
// ---------------------------------------------------------------------------

struct Raw {
    patients: BTreeMap<i64, RawPatient>,
    /// encounter_id → (patient_id, site_id)
    encounters: BTreeMap<i64, (i64, String)>,
    /// observation_id → (patient_id, encounter_id)
    observations: BTreeMap<i64, (i64, i64)>,
    /// claim_id → (patient_id, site_id)
    claims: BTreeMap<i64, (i64, String)>,
}

type TextRows = Vec<Vec<Option<String>>>;

async fn load_raw(dir: std::path::PathBuf) -> Raw {
    let ctx = support::raw_context(&dir).await;
    let int = |v: &Option<String>| v.as_deref().unwrap().parse::<i64>().unwrap();
    let text = |v: &Option<String>| v.clone().unwrap();
    let patients: BTreeMap<i64, RawPatient> = support::raw_patients(&ctx)
        .await
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let pairs = |rows: TextRows| {
        rows.iter()
            .map(|r| (int(&r[0]), (int(&r[1]), text(&r[2]))))
            .collect::<BTreeMap<_, _>>()
    };
    let encounters = pairs(
        support::raw_rows(
            &ctx,
            "SELECT encounter_id, patient_id, site_id FROM encounters",
        )
        .await,
    );
    let claims =
        pairs(support::raw_rows(&ctx, "SELECT claim_id, patient_id, site_id FROM claims").await);
    let observations = support::raw_rows(
        &ctx,
        "SELECT observation_id, patient_id, encounter_id FROM observations",
    )
    .await
    .iter()
    .map(|r| (int(&r[0]), (int(&r[1]), int(&r[2]))))
    .collect();
    Raw {
        patients,
        encounters,
        observations,
        claims,
    }
}

/// The raw tables, read once per test run on a plain thread.
fn raw() -> &'static Raw {
    static RAW: OnceLock<Raw> = OnceLock::new();
    support::oracle::load_once(&RAW, load_raw)
}

/// Patients of site S01 visible under `treatment` (site ∩ consent).
fn s01_patients() -> BTreeSet<i64> {
    let consent = consented_patients("treatment");
    raw()
        .patients
        .iter()
        .filter(|(id, p)| p.site == "S01" && consent.contains(id))
        .map(|(id, _)| *id)
        .collect()
}

/// Every patient id an S01 clinician may meet in any table (consented, and
/// registered, seen or billed at S01).
fn s01_reachable_patients() -> BTreeSet<i64> {
    let consent = consented_patients("treatment");
    let raw = raw();
    let mut ids = s01_patients();
    ids.extend(
        raw.encounters
            .values()
            .chain(raw.claims.values())
            .filter(|(_, s)| s == "S01")
            .map(|(p, _)| *p),
    );
    ids.retain(|id| consent.contains(id));
    ids
}

fn age_today(birth: NaiveDate) -> i32 {
    let today = chrono::Utc::now().date_naive();
    let mut age = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

async fn clinician() -> Client {
    connect_role(server().addr, "clinician", "treatment").await
}

async fn analyst() -> Client {
    connect_role(server().addr, "analyst", "operations").await
}

async fn researcher() -> Client {
    connect_role(server().addr, "researcher", "research").await
}

async fn try_rows(c: &Client, sql: &str) -> Result<Vec<SimpleQueryRow>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect())
}

async fn rows(c: &Client, sql: &str) -> Vec<SimpleQueryRow> {
    try_rows(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n  failed: {e:?}"))
}

/// The first column of the first row, as an integer.
async fn count(c: &Client, sql: &str) -> i64 {
    let r = rows(c, sql).await;
    r[0].get(0)
        .unwrap_or_else(|| panic!("{sql}: NULL"))
        .parse()
        .unwrap()
}

fn get<'a>(r: &'a SimpleQueryRow, col: &str) -> Option<&'a str> {
    r.get(col)
}

fn id(r: &SimpleQueryRow, col: &str) -> i64 {
    get(r, col).unwrap().parse().unwrap()
}

fn is_pseudonym(v: &str) -> bool {
    v.len() == 26 && v.starts_with("p_") && v[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `YYYY-01-01`, optionally followed by a midnight time.
fn is_jan_1(v: &str) -> bool {
    v.len() >= 10 && &v[4..10] == "-01-01" && v[10..].chars().all(|c| " 0:.".contains(c))
}

/// Run `sql` as the S01 clinician; every `site_id` column must be S01 (or NULL
/// from an outer join) and every `patient_id` an S01-reachable consented
/// patient. Returns the number of rows.
async fn s01_only(c: &Client, sql: &str) -> usize {
    let allowed = s01_reachable_patients();
    let rows = rows(c, sql).await;
    for r in &rows {
        for (i, col) in r.columns().iter().enumerate() {
            match (col.name(), r.get(i)) {
                ("site_id", Some(s)) => assert_eq!(s, "S01", "{sql}: row from another site"),
                ("patient_id", Some(p)) => {
                    assert!(
                        allowed.contains(&p.parse::<i64>().unwrap()),
                        "{sql}: patient {p} is not visible to S01"
                    )
                }
                _ => {}
            }
        }
    }
    rows.len()
}

// ---------------------------------------------------------------------------
// 1–4. What each role sees
// ---------------------------------------------------------------------------

#[tokio::test]
async fn clinician_sees_own_site_consented_rows_with_ssn_last4() {
    let c = clinician().await;
    let raw = raw();
    let consent = consented_patients("treatment");
    let expected = s01_patients();
    let all_s01 = raw.patients.values().filter(|p| p.site == "S01").count();
    assert!(
        !expected.is_empty() && expected.len() < all_s01,
        "dataset: some S01 patients opted out of treatment"
    );

    let sql = "SELECT patient_id, mrn, first_name, last_name, ssn, phone, email, site_id FROM clinical.patients";
    let got = rows(&c, sql).await;
    let ids: BTreeSet<i64> = got.iter().map(|r| id(r, "patient_id")).collect();
    assert_eq!(got.len(), ids.len(), "no duplicates");
    assert_eq!(ids, expected, "S01 ∩ consented(treatment)");
    for r in &got {
        let p = &raw.patients[&id(r, "patient_id")];
        assert_eq!(get(r, "site_id"), Some("S01"));
        match &p.ssn {
            Some(ssn) => {
                let shown = get(r, "ssn").expect("masked ssn present");
                assert_eq!(shown, format!("***-**-{}", &ssn[ssn.len() - 4..]));
                assert!(
                    shown.len() == 11 && shown[7..].bytes().all(|b| b.is_ascii_digit()),
                    "{shown}"
                );
            }
            None => assert_eq!(get(r, "ssn"), None),
        }
        assert_eq!(get(r, "mrn"), Some(p.mrn.as_str()));
        assert_eq!(get(r, "first_name"), Some(p.first.as_str()));
        assert_eq!(get(r, "last_name"), Some(p.last.as_str()));
        assert_eq!(get(r, "phone"), p.phone.as_deref());
        assert_eq!(get(r, "email"), p.email.as_deref());
    }

    let site_rows = |m: &BTreeMap<i64, (i64, String)>| -> BTreeSet<i64> {
        m.iter()
            .filter(|(_, (p, s))| s == "S01" && consent.contains(p))
            .map(|(k, _)| *k)
            .collect()
    };
    for (sql, key, oracle) in [
        (
            "SELECT encounter_id, site_id FROM clinical.encounters",
            "encounter_id",
            site_rows(&raw.encounters),
        ),
        (
            "SELECT claim_id, site_id FROM claims.claims",
            "claim_id",
            site_rows(&raw.claims),
        ),
    ] {
        let got = rows(&c, sql).await;
        assert!(
            got.iter().all(|r| get(r, "site_id") == Some("S01")),
            "{sql}"
        );
        assert_eq!(
            got.iter().map(|r| id(r, key)).collect::<BTreeSet<_>>(),
            oracle,
            "{sql}"
        );
        assert_eq!(got.len(), oracle.len(), "{sql}");
    }

    // Observations carry no site: they follow their encounter's site.
    let expected_obs: BTreeSet<i64> = raw
        .observations
        .iter()
        .filter(|(_, (p, e))| {
            consent.contains(p) && raw.encounters.get(e).is_some_and(|(_, s)| s == "S01")
        })
        .map(|(o, _)| *o)
        .collect();
    assert!(!expected_obs.is_empty());
    let got = rows(&c, "SELECT observation_id FROM clinical.observations").await;
    assert_eq!(got.len(), expected_obs.len());
    assert_eq!(
        got.iter()
            .map(|r| id(r, "observation_id"))
            .collect::<BTreeSet<_>>(),
        expected_obs
    );
}

#[tokio::test]
async fn analyst_sees_every_site_de_identified_with_stable_pseudonyms() {
    let (c1, c2) = (analyst().await, analyst().await);
    let raw = raw();
    let raw_mrns: BTreeSet<&str> = raw.patients.values().map(|p| p.mrn.as_str()).collect();
    let sql = "SELECT patient_id, mrn, first_name, last_name, ssn, phone, email, birth_date, zip, site_id \
               FROM clinical.patients";
    let got = rows(&c1, sql).await;
    let ids: BTreeSet<i64> = got.iter().map(|r| id(r, "patient_id")).collect();
    assert_eq!(got.len(), ids.len());
    assert_eq!(ids, consented_patients("operations"));
    let sites: BTreeSet<&str> = got.iter().map(|r| get(r, "site_id").unwrap()).collect();
    assert_eq!(sites.len(), 12, "all sites");

    let mut pseudonyms = BTreeMap::new();
    for r in &got {
        let pid = id(r, "patient_id");
        let p = &raw.patients[&pid];
        for col in ["first_name", "last_name", "ssn", "phone", "email"] {
            assert_eq!(get(r, col), None, "{col} of patient {pid}");
        }
        let mrn = get(r, "mrn").unwrap();
        assert!(is_pseudonym(mrn), "{mrn}");
        assert!(!raw_mrns.contains(mrn) && mrn != p.mrn);
        pseudonyms.insert(pid, mrn.to_owned());
        assert_eq!(
            get(r, "birth_date").unwrap(),
            format!("{:04}-01-01", p.birth.year())
        );
        assert_eq!(get(r, "zip").unwrap(), format!("{}00", &p.zip[..3]));
    }
    assert_eq!(
        pseudonyms.values().collect::<BTreeSet<_>>().len(),
        pseudonyms.len(),
        "one pseudonym per MRN"
    );

    // Stable across queries and connections.
    for c in [&c1, &c2] {
        let again = rows(
            c,
            "SELECT patient_id, mrn FROM clinical.patients ORDER BY patient_id DESC",
        )
        .await;
        let m: BTreeMap<i64, String> = again
            .iter()
            .map(|r| (id(r, "patient_id"), get(r, "mrn").unwrap().to_owned()))
            .collect();
        assert_eq!(m, pseudonyms);
    }
    assert_eq!(
        count(&c2, "SELECT count(*) FROM clinical.patients").await as usize,
        consented_patients("operations").len()
    );
}

#[tokio::test]
async fn researcher_sees_opted_in_patients_under_safe_harbor() {
    let c = researcher().await;
    let raw = raw();
    let opted_in = consented_patients("research");
    assert!(
        !opted_in.is_empty() && opted_in.len() < raw.patients.len() / 2,
        "research is opt-in"
    );

    let sql = "SELECT patient_id, mrn, first_name, last_name, ssn, phone, email, birth_date, zip FROM clinical.patients";
    let got = rows(&c, sql).await;
    assert_eq!(got.len(), opted_in.len());
    let ids: BTreeSet<i64> = got.iter().map(|r| id(r, "patient_id")).collect();
    assert_eq!(ids.len(), got.len(), "one pseudonym per patient");
    assert!(
        ids.iter().all(|p| !raw.patients.contains_key(p)),
        "patient ids are pseudonyms"
    );
    let mut shown_years = Vec::new();
    for r in &got {
        for col in ["mrn", "first_name", "last_name", "ssn", "phone", "email"] {
            assert_eq!(get(r, col), None, "{col}");
        }
        assert!(get(r, "zip").unwrap().ends_with("00"));
        if let Some(b) = get(r, "birth_date") {
            assert!(is_jan_1(b), "{b}");
            shown_years.push(b[..4].parse::<i32>().unwrap());
        }
    }
    // birth_date is NULL exactly for the opted-in patients older than 89, and
    // the other years are the raw ones.
    let mut expected_years: Vec<i32> = opted_in
        .iter()
        .map(|p| raw.patients[p].birth)
        .filter(|b| age_today(*b) <= 89)
        .map(|b| b.year())
        .collect();
    assert!(
        expected_years.len() < opted_in.len(),
        "dataset: some opted-in patients are older than 89"
    );
    shown_years.sort();
    expected_years.sort();
    assert_eq!(shown_years, expected_years);

    // Every date column is January 1.
    for (table, column) in [
        ("clinical.encounters", "admit_ts"),
        ("clinical.encounters", "discharge_ts"),
        ("clinical.observations", "observed_at"),
        ("claims.claims", "service_date"),
    ] {
        let distinct = rows(&c, &format!("SELECT DISTINCT {column} FROM {table}")).await;
        assert!(
            distinct.iter().filter_map(|r| r.get(0)).all(is_jan_1),
            "{table}.{column}"
        );
        assert!(
            distinct.iter().any(|r| r.get(0).is_some()),
            "{table}.{column} has values"
        );
    }

    // Pseudonyms join across tables.
    let encounters = raw
        .encounters
        .values()
        .filter(|(p, _)| opted_in.contains(p))
        .count() as i64;
    let sql = "SELECT count(*) FROM clinical.patients p JOIN clinical.encounters e ON e.patient_id = p.patient_id";
    assert_eq!(count(&c, sql).await, encounters);
    assert_eq!(
        count(&c, "SELECT count(*) FROM clinical.encounters").await,
        encounters
    );
    let claims = raw
        .claims
        .values()
        .filter(|(p, _)| opted_in.contains(p))
        .count() as i64;
    let sql = "SELECT count(*) FROM claims.claims c JOIN clinical.patients p USING (patient_id)";
    assert_eq!(count(&c, sql).await, claims);
}

#[tokio::test]
async fn auditor_is_refused_clinical_claims_and_consents() {
    let c = connect_role(server().addr, "auditor", "operations").await;
    for sql in [
        "SELECT count(*) FROM clinical.patients",
        "SELECT * FROM claims.claims",
        "SELECT * FROM governance.consents",
        "SELECT count(*) FROM datafusion.clinical.encounters",
        "WITH x AS (SELECT * FROM governance.consents) SELECT count(*) FROM x",
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM clinical.observations)",
    ] {
        let e = try_rows(&c, sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e:?}");
    }
}

// ---------------------------------------------------------------------------
// 5. Masks are applied before the user's expressions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn masked_values_are_all_that_where_group_order_window_and_aggregates_see() {
    let c = analyst().await;
    let total = consented_patients("operations").len() as i64;
    let zero = [
        "SELECT count(*) FROM clinical.patients WHERE last_name IS NOT NULL",
        "SELECT count(*) FROM clinical.patients WHERE ssn LIKE '%1%'",
        "SELECT count(*) FROM clinical.patients WHERE length(coalesce(ssn, email, phone, first_name, '')) > 0",
        "SELECT count(*) FROM clinical.patients WHERE mrn LIKE 'MRN%'",
        "SELECT count(*) FROM clinical.patients WHERE EXTRACT(DAY FROM birth_date) <> 1 OR EXTRACT(MONTH FROM birth_date) <> 1",
        "SELECT count(*) FROM clinical.patients WHERE zip NOT LIKE '%00'",
        "SELECT count(*) FROM clinical.patients a JOIN clinical.patients b ON a.ssn = b.ssn",
    ];
    for sql in zero {
        assert_eq!(count(&c, sql).await, 0, "{sql}");
    }
    let sql = "SELECT count(*) FROM clinical.patients a JOIN clinical.patients b ON a.mrn = b.mrn";
    assert_eq!(
        count(&c, sql).await,
        total,
        "pseudonyms are unique and joinable"
    );

    let r = rows(
        &c,
        "SELECT min(mrn), max(mrn), string_agg(last_name, ',') FROM clinical.patients",
    )
    .await;
    assert!(r[0].get(0).unwrap().starts_with("p_") && r[0].get(1).unwrap().starts_with("p_"));
    assert_eq!(r[0].get(2), None, "string_agg over NULLs");

    let zips = rows(&c, "SELECT DISTINCT zip FROM clinical.patients").await;
    assert!(
        zips.iter()
            .all(|r| r.get(0).is_some_and(|z| z.len() == 5 && z.ends_with("00")))
    );

    let groups = rows(
        &c,
        "SELECT birth_date, count(*) FROM clinical.patients GROUP BY birth_date",
    )
    .await;
    assert!(groups.iter().all(|r| is_jan_1(r.get(0).unwrap())));
    assert_eq!(
        groups
            .iter()
            .map(|r| r.get(1).unwrap().parse::<i64>().unwrap())
            .sum::<i64>(),
        total
    );

    let sql = "SELECT count(DISTINCT ssn), max(rn) FROM \
               (SELECT ssn, row_number() OVER (PARTITION BY ssn) AS rn FROM clinical.patients) w";
    let r = rows(&c, sql).await;
    assert_eq!(
        (r[0].get(0), r[0].get(1)),
        (Some("0"), Some(total.to_string().as_str())),
        "one partition of NULLs"
    );

    // ORDER BY a masked column: every last_name is NULL, so the tie-break decides.
    let first: Vec<i64> = rows(
        &c,
        "SELECT patient_id FROM clinical.patients ORDER BY last_name, patient_id LIMIT 5",
    )
    .await
    .iter()
    .map(|r| id(r, "patient_id"))
    .collect();
    assert_eq!(
        first,
        consented_patients("operations")
            .into_iter()
            .take(5)
            .collect::<Vec<_>>()
    );

    // The clinician cannot match on the raw SSN either.
    let clin = clinician().await;
    let raw = raw();
    let (pid, ssn) = s01_patients()
        .into_iter()
        .find_map(|p| raw.patients[&p].ssn.clone().map(|s| (p, s)))
        .unwrap();
    assert_eq!(
        count(
            &clin,
            &format!("SELECT count(*) FROM clinical.patients WHERE ssn = '{ssn}'")
        )
        .await,
        0
    );
    let sql = format!(
        "SELECT count(*) FROM clinical.patients WHERE patient_id = {pid} AND ssn LIKE '{}%'",
        &ssn[..3]
    );
    assert_eq!(count(&clin, &sql).await, 0);
    let sql = format!(
        "SELECT count(*) FROM clinical.patients WHERE patient_id = {pid} AND substr(ssn, 1, 7) = '***-**-'"
    );
    assert_eq!(count(&clin, &sql).await, 1);
}

// ---------------------------------------------------------------------------
// 6. Row filters wherever the table appears
// ---------------------------------------------------------------------------

#[tokio::test]
async fn site_filter_holds_in_every_query_shape() {
    let c = clinician().await;
    let n = s01_patients().len();
    let consent = consented_patients("treatment");
    let raw = raw();
    let s01_encounters = raw
        .encounters
        .values()
        .filter(|(p, s)| s == "S01" && consent.contains(p))
        .count();

    // (query, expected row count or None to check rows only)
    let cases: &[(&str, Option<usize>)] = &[
        (
            "SELECT patient_id, site_id FROM (SELECT * FROM clinical.patients) sub",
            Some(n),
        ),
        (
            "SELECT patient_id, site_id FROM (SELECT * FROM clinical.patients WHERE site_id <> 'S01') sub",
            Some(0),
        ),
        (
            "SELECT patient_id, site_id FROM clinical.patients WHERE site_id = 'S02'",
            Some(0),
        ),
        (
            "WITH x AS (SELECT * FROM clinical.patients) SELECT patient_id, site_id FROM x",
            Some(n),
        ),
        (
            "WITH patients AS (SELECT * FROM clinical.patients) SELECT patient_id, site_id FROM patients",
            Some(n),
        ),
        (
            "WITH RECURSIVE r AS (SELECT patient_id, site_id FROM clinical.patients) SELECT * FROM r",
            Some(n),
        ),
        (
            "SELECT patient_id, site_id FROM clinical.patients UNION SELECT patient_id, site_id FROM clinical.encounters",
            None,
        ),
        (
            "SELECT site_id FROM clinical.encounters UNION ALL SELECT site_id FROM claims.claims",
            None,
        ),
        (
            "SELECT patient_id, site_id FROM clinical.patients INTERSECT SELECT patient_id, site_id FROM clinical.encounters",
            None,
        ),
        (
            "SELECT patient_id, site_id FROM clinical.patients EXCEPT \
             SELECT patient_id, site_id FROM clinical.patients WHERE site_id = 'S01'",
            Some(0),
        ),
        (
            "SELECT DISTINCT (SELECT max(site_id) FROM clinical.encounters) AS site_id FROM claims.claims",
            Some(1),
        ),
        (
            "SELECT patient_id, site_id FROM clinical.patients p WHERE EXISTS \
             (SELECT 1 FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.site_id <> 'S01')",
            Some(0),
        ),
        (
            "SELECT patient_id, site_id FROM clinical.encounters \
             WHERE site_id IN (SELECT site_id FROM clinical.patients WHERE site_id <> 'S01')",
            Some(0),
        ),
        (
            "SELECT patient_id, site_id FROM claims.claims WHERE patient_id NOT IN (SELECT patient_id FROM clinical.patients)",
            None,
        ),
        (
            "SELECT p.patient_id, p.site_id, e.site_id FROM clinical.patients p \
             LEFT JOIN clinical.encounters e ON e.patient_id = p.patient_id",
            None,
        ),
        (
            "SELECT e.patient_id, p.site_id, e.site_id FROM clinical.patients p \
             RIGHT JOIN clinical.encounters e ON e.patient_id = p.patient_id",
            Some(s01_encounters),
        ),
        (
            "SELECT p.patient_id, p.site_id, e.site_id FROM clinical.patients p FULL JOIN clinical.encounters e ON false",
            Some(n + s01_encounters),
        ),
        (
            "SELECT p.site_id, s.site_id FROM clinical.patients p CROSS JOIN (SELECT DISTINCT site_id FROM claims.claims) s",
            Some(n),
        ),
        (
            "SELECT patient_id, site_id FROM clinical.patients JOIN clinical.encounters USING (patient_id, site_id)",
            None,
        ),
        (
            "SELECT * FROM clinical.patients NATURAL JOIN clinical.encounters",
            None,
        ),
        (
            "SELECT patient_id, site_id FROM datafusion.clinical.patients",
            Some(n),
        ),
        (
            "SELECT patient_id, site_id FROM \"datafusion\".\"clinical\".\"patients\"",
            Some(n),
        ),
        (
            "SELECT patient_id, site_id FROM \"clinical\".\"patients\"",
            Some(n),
        ),
        ("SELECT PATIENT_ID, SITE_ID FROM CLINICAL.PATIENTS", Some(n)),
        ("SELECT * FROM clinical.patients", Some(n)),
        ("SELECT p.* FROM clinical.patients p", Some(n)),
        ("SELECT * FROM clinical.encounters", Some(s01_encounters)),
        ("SELECT * FROM claims.claims", None),
        (
            "SELECT o.patient_id, e.site_id FROM clinical.observations o LEFT JOIN clinical.encounters e USING (encounter_id)",
            None,
        ),
    ];
    for (sql, expected) in cases {
        let got = s01_only(&c, sql).await;
        if let Some(e) = expected {
            assert_eq!(got, *e, "{sql}");
        }
    }
    assert_eq!(
        count(&c, "SELECT (SELECT count(*) FROM clinical.patients)").await as usize,
        n
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(DISTINCT site_id) FROM clinical.encounters"
        )
        .await,
        1
    );
    let sql = "SELECT count(*) FROM clinical.observations o JOIN clinical.encounters e USING (encounter_id) WHERE e.site_id <> 'S01'";
    assert_eq!(count(&c, sql).await, 0);

    // search_path: unqualified names, and CTEs that shadow the table name.
    c.batch_execute("SET search_path = clinical").await.unwrap();
    for (sql, expected) in [
        ("SELECT patient_id, site_id FROM patients", n),
        (
            "WITH patients AS (SELECT * FROM clinical.patients) SELECT patient_id, site_id FROM patients",
            n,
        ),
        (
            "WITH encounters AS (SELECT * FROM patients) SELECT patient_id, site_id FROM encounters",
            n,
        ),
        ("SELECT patient_id, site_id FROM encounters", s01_encounters),
    ] {
        assert_eq!(s01_only(&c, sql).await, expected, "{sql}");
    }
    // As in Postgres, a CTE's own name inside its body is the table.
    let sql = "WITH patients AS (SELECT * FROM patients) SELECT patient_id, site_id FROM patients";
    assert_eq!(s01_only(&c, sql).await, n, "{sql}");
    c.batch_execute("RESET search_path").await.unwrap();

    // Extended protocol, bound parameter asking for another site.
    let stmt = c
        .prepare("SELECT patient_id, site_id FROM clinical.patients WHERE site_id = $1")
        .await
        .unwrap();
    assert_eq!(c.query(&stmt, &[&"S02"]).await.unwrap().len(), 0);
    let own = c.query(&stmt, &[&"S01"]).await.unwrap();
    assert_eq!(
        own.iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<BTreeSet<_>>(),
        s01_patients()
    );
    let sql = "SELECT count(*) FROM clinical.observations o JOIN clinical.encounters e USING (encounter_id) WHERE e.site_id = $1";
    assert_eq!(
        c.query_one(sql, &[&"S03"]).await.unwrap().get::<_, i64>(0),
        0
    );
    let sql = "SELECT count(*) FROM claims.claims WHERE site_id = $1 OR $2";
    assert_eq!(
        c.query_one(sql, &[&"S04", &true])
            .await
            .unwrap()
            .get::<_, i64>(0),
        {
            raw.claims
                .values()
                .filter(|(p, s)| s == "S01" && consent.contains(p))
                .count() as i64
        }
    );
}

// ---------------------------------------------------------------------------
// 7. Leaky predicates stop at the security barrier
// ---------------------------------------------------------------------------

/// A last name present at other sites but at no S01 patient, and one of a
/// visible S01 patient.
fn last_names() -> (String, String) {
    let raw = raw();
    let at_s01: BTreeSet<&str> = raw
        .patients
        .values()
        .filter(|p| p.site == "S01")
        .map(|p| p.last.as_str())
        .collect();
    let elsewhere = raw
        .patients
        .values()
        .find(|p| p.site != "S01" && !at_s01.contains(p.last.as_str()))
        .expect("dataset: a last name absent from S01")
        .last
        .clone();
    let visible = raw.patients[s01_patients().iter().next().unwrap()]
        .last
        .clone();
    (elsewhere, visible)
}

#[tokio::test]
async fn errors_keyed_on_hidden_rows_never_fire() {
    let c = clinician().await;
    let raw = raw();
    let (elsewhere, visible) = last_names();
    let division = |name: &str| {
        format!(
            "SELECT patient_id, site_id FROM clinical.patients p WHERE 1/(CASE WHEN p.last_name = '{name}' THEN 0 ELSE 1 END) = 1"
        )
    };
    let cast = |name: &str| {
        format!(
            "SELECT patient_id, site_id FROM clinical.patients p WHERE CAST(CASE WHEN p.last_name = '{name}' THEN 'x' ELSE '1' END AS INT) = 1"
        )
    };
    let join = |name: &str| {
        format!(
            "SELECT p.patient_id, e.site_id FROM clinical.patients p JOIN clinical.encounters e \
             ON e.patient_id = p.patient_id AND 1/(CASE WHEN p.last_name = '{name}' THEN 0 ELSE 1 END) = 1"
        )
    };
    let probes: [fn(&str) -> String; 3] = [division, cast, join];
    for probe in probes {
        // The control: on a visible row the expression does fail.
        assert!(
            try_rows(&c, &probe(&visible)).await.is_err(),
            "{}",
            probe(&visible)
        );
        assert!(
            s01_only(&c, &probe(&elsewhere)).await > 0,
            "{}",
            probe(&elsewhere)
        );
    }

    // Hidden encounters and observations (other sites) and a patient hidden by consent.
    let consent = consented_patients("treatment");
    let other_encounter = raw
        .encounters
        .iter()
        .find(|(_, (_, s))| s != "S01")
        .map(|(e, _)| *e)
        .unwrap();
    let other_observation = raw
        .observations
        .iter()
        .find(|(_, (_, e))| raw.encounters[e].1 != "S01")
        .map(|(o, _)| *o)
        .unwrap();
    let refused = raw
        .patients
        .iter()
        .find(|(p, r)| r.site == "S01" && !consent.contains(p))
        .map(|(p, _)| *p)
        .unwrap();
    for sql in [
        format!(
            "SELECT count(*) FROM clinical.encounters WHERE 1/(CASE WHEN encounter_id = {other_encounter} THEN 0 ELSE 1 END) = 1"
        ),
        format!(
            "SELECT count(*) FROM clinical.observations WHERE 1/(CASE WHEN observation_id = {other_observation} THEN 0 ELSE 1 END) = 1"
        ),
        format!(
            "SELECT count(*) FROM clinical.patients WHERE 1/(CASE WHEN patient_id = {refused} THEN 0 ELSE 1 END) = 1"
        ),
    ] {
        assert!(count(&c, &sql).await > 0, "{sql}");
    }

    // A failed cast of a visible value does not echo it.
    let sql = format!(
        "SELECT count(*) FROM clinical.patients WHERE CAST(CASE WHEN last_name = '{visible}' THEN first_name ELSE '1' END AS INT) = 1"
    );
    let e = try_rows(&c, &sql).await.expect_err("cast fails");
    let first_names: Vec<&str> = raw
        .patients
        .values()
        .filter(|p| p.last == visible)
        .map(|p| p.first.as_str())
        .collect();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        first_names.iter().all(|f| !message.contains(f)),
        "error echoes a value: {message}"
    );

    // The analyst's SSN, MRN and names are masked before the predicate runs.
    let a = analyst().await;
    let total = consented_patients("operations").len() as i64;
    let p = raw.patients.values().find(|p| p.ssn.is_some()).unwrap();
    for (col, value) in [
        ("ssn", p.ssn.clone().unwrap()),
        ("mrn", p.mrn.clone()),
        ("last_name", p.last.clone()),
    ] {
        let sql = format!(
            "SELECT count(*) FROM clinical.patients WHERE 1/(CASE WHEN {col} = '{value}' THEN 0 ELSE 1 END) = 1"
        );
        assert_eq!(count(&a, &sql).await, total, "{sql}");
    }

    // The researcher: raw patient ids are pseudonymised, and consent hides rows.
    let r = researcher().await;
    let opted_in = consented_patients("research");
    let outsider = *raw.patients.keys().find(|p| !opted_in.contains(p)).unwrap();
    let sql = format!(
        "SELECT count(*) FROM clinical.patients WHERE 1/(CASE WHEN patient_id = {outsider} THEN 0 ELSE 1 END) = 1"
    );
    assert_eq!(count(&r, &sql).await as usize, opted_in.len());
    let hidden = raw
        .encounters
        .iter()
        .find(|(_, (p, _))| !opted_in.contains(p))
        .map(|(e, _)| *e)
        .unwrap();
    // The researcher's encounter ids are pseudonyms (record keys): the
    // control probes one the researcher is shown.
    let shown: i64 = rows(&r, "SELECT encounter_id FROM clinical.encounters LIMIT 1")
        .await
        .first()
        .map(|row| id(row, "encounter_id"))
        .unwrap();
    let probe = |e: i64| {
        format!(
            "SELECT count(*) FROM clinical.encounters WHERE 1/(CASE WHEN encounter_id = {e} THEN 0 ELSE 1 END) = 1"
        )
    };
    assert!(
        try_rows(&r, &probe(shown)).await.is_err(),
        "control: a visible encounter does divide by zero"
    );
    assert!(count(&r, &probe(hidden)).await > 0);
}

/// The keyed pseudonym is only a pseudonym while nobody can compute it: the
/// mask function must not be callable as an oracle. A researcher who can call
/// it on every candidate id re-identifies every opted-in patient.
#[tokio::test]
async fn pseudonyms_cannot_be_reversed_with_the_mask_function() {
    // Matches found by calling the mask function (0 when the call is refused).
    async fn matches(c: &Client, sql: &str) -> i64 {
        try_rows(c, sql)
            .await
            .map(|r| r[0].get(0).unwrap().parse().unwrap())
            .unwrap_or(0)
    }
    let max_id = *raw().patients.keys().last().unwrap();
    let researcher_sql = format!(
        "SELECT count(*) FROM clinical.patients p \
         JOIN (SELECT unnest(range(1, {})) AS x) g ON p.patient_id = lakeward_pseudonym(g.x)",
        max_id + 1
    );
    let reidentified = matches(&researcher().await, &researcher_sql).await;
    // The same oracle reverses the analyst's MRN pseudonyms by dictionary.
    let analyst_sql = "SELECT count(*) FROM clinical.patients \
                       WHERE mrn = lakeward_pseudonym('MRN' || lpad(CAST(patient_id AS VARCHAR), 8, '0'))";
    let reversed = matches(&analyst().await, analyst_sql).await;
    assert_eq!(
        (reidentified, reversed),
        (0, 0),
        "researcher recovered {reidentified} raw patient ids ({researcher_sql}); \
         analyst reversed {reversed} MRN pseudonyms ({analyst_sql})"
    );
}

// ---------------------------------------------------------------------------
// 8–9. Break-glass and purpose switches
// ---------------------------------------------------------------------------

#[tokio::test]
async fn break_glass_lifts_the_site_filter_only_until_reset() {
    let c = clinician().await;
    let n = s01_patients().len() as i64;
    let all = consented_patients("treatment").len() as i64;
    let prepared = c
        .prepare("SELECT count(*) FROM clinical.patients")
        .await
        .unwrap();
    assert_eq!(
        c.query_one(&prepared, &[]).await.unwrap().get::<_, i64>(0),
        n
    );

    c.batch_execute("SET lakeward.break_glass = 'patient transferred from S02 unconscious'")
        .await
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM clinical.patients").await,
        all,
        "every site, consent still applied"
    );
    assert_eq!(
        c.query_one(&prepared, &[]).await.unwrap().get::<_, i64>(0),
        all,
        "prepared statement re-planned"
    );
    assert_eq!(
        count(&c, "SELECT count(DISTINCT site_id) FROM clinical.patients").await,
        12
    );
    assert!(count(&c, "SELECT count(ssn) FROM clinical.patients").await > 0);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM clinical.patients WHERE ssn NOT LIKE '***-**-%'"
        )
        .await,
        0,
        "ssn still masked"
    );
    let raw = raw();
    let consent = consented_patients("treatment");
    let encounters = raw
        .encounters
        .values()
        .filter(|(p, _)| consent.contains(p))
        .count() as i64;
    assert_eq!(
        count(&c, "SELECT count(*) FROM clinical.encounters").await,
        encounters
    );

    c.batch_execute("RESET lakeward.break_glass").await.unwrap();
    assert_eq!(
        s01_only(&c, "SELECT patient_id, site_id FROM clinical.patients").await as i64,
        n
    );
    assert_eq!(
        c.query_one(&prepared, &[]).await.unwrap().get::<_, i64>(0),
        n,
        "prepared statement back to S01"
    );
}

#[tokio::test]
async fn changing_purpose_re_plans_prepared_statements() {
    let c = analyst().await;
    let (ops, pay) = (
        consented_patients("operations"),
        consented_patients("payment"),
    );
    assert_ne!(
        ops, pay,
        "dataset: consent differs between operations and payment"
    );
    let counted = c
        .prepare("SELECT count(*) FROM clinical.patients")
        .await
        .unwrap();
    let listed = c
        .prepare("SELECT patient_id FROM clinical.patients")
        .await
        .unwrap();
    for (purpose, expected) in [
        ("operations", &ops),
        ("payment", &pay),
        ("operations", &ops),
    ] {
        c.batch_execute(&format!("SET lakeward.purpose = '{purpose}'"))
            .await
            .unwrap();
        assert_eq!(
            c.query_one(&counted, &[]).await.unwrap().get::<_, i64>(0) as usize,
            expected.len(),
            "{purpose}"
        );
        let ids: BTreeSet<i64> = c
            .query(&listed, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            &ids, expected,
            "{purpose}: the prepared statement sees this purpose's consent"
        );
    }
}

/// The plan cache is keyed by SQL text, policy version and the whole access
/// subject: the same text from another site, user or connection is planned
/// for that session, never served from another session's entry.
#[tokio::test(flavor = "multi_thread")]
async fn plan_cache_never_serves_one_sessions_plan_to_another() {
    let addr = server().addr;
    let at = |user: &'static str, site: &'static str| async move {
        support::try_connect_with(
            addr,
            user,
            &support::token(user, "clinician", Some(site)),
            "require",
            Some("treatment"),
        )
        .await
        .expect("connect")
    };
    let sites_sql = "SELECT DISTINCT site_id FROM clinical.patients ORDER BY 1";
    for round in 0..2 {
        for (user, site) in [("cache_s01", "S01"), ("cache_s02", "S02")] {
            let c = at(user, site).await;
            // Simple protocol, twice (the second is a cache hit).
            for _ in 0..2 {
                let rows = try_rows(&c, sites_sql).await.unwrap();
                let sites: Vec<_> = rows.iter().map(|r| r.get(0).unwrap().to_owned()).collect();
                assert_eq!(sites, vec![site.to_owned()], "round {round}, {user}");
            }
            // Extended protocol with the same text.
            let rows = c.query(sites_sql, &[]).await.unwrap();
            let sites: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(
                sites,
                vec![site.to_owned()],
                "round {round}, {user} (extended)"
            );
            let me: String = c
                .query_one("SELECT current_user", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(me, user);
        }
    }
    // Connection-specific values are never shared, even by one user.
    let (a, b) = (at("cache_s01", "S01").await, at("cache_s01", "S01").await);
    let pid = |c: Client| async move {
        c.query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get::<_, i32>(0)
    };
    assert_ne!(pid(a).await, pid(b).await);
}

// ---------------------------------------------------------------------------
// Catalog compatibility is for catalog statements only
// ---------------------------------------------------------------------------

/// A statement's outcome: its rows as text, or the SQLSTATE it failed with.
async fn outcome(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, Option<String>> {
    match try_rows(c, sql).await {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            .collect()),
        Err(e) => Err(sqlstate(&e)),
    }
}

#[tokio::test]
async fn a_catalog_call_does_not_change_what_a_query_over_patient_data_may_do() {
    let c = analyst().await;
    // A table function next to a secured table is refused; a regclass cast
    // or a pg_catalog call in the same statement must not lift that.
    let plain = "SELECT count(*) FROM clinical.patients, generate_series(1,3)";
    let refused = outcome(&c, plain).await;
    assert_eq!(refused, Err(Some("42501".into())), "{plain}");
    for marked in [
        "SELECT count(*) FROM clinical.patients, generate_series(1,3) WHERE 'x'::regclass IS NULL",
        "SELECT count(*) FROM clinical.patients, generate_series(1,3) WHERE 'clinical.patients'::regclass IS NOT NULL",
        "SELECT count(*) FROM clinical.patients, generate_series(1,3) WHERE pg_catalog.version() IS NOT NULL",
        "SELECT count(*), pg_catalog.version() FROM clinical.patients, generate_series(1,3)",
        "SELECT count(*) FROM clinical.patients, generate_series(1,3), pg_catalog.pg_class c WHERE c.oid = 0",
    ] {
        assert_eq!(outcome(&c, marked).await, refused, "{marked}");
    }
    // A correlated subquery over patient data answers exactly (or the
    // statement is refused); it never silently becomes NULL.
    let plain = "SELECT p.patient_id, (SELECT count(*) FROM clinical.encounters e \
                 WHERE e.patient_id = p.patient_id) AS n \
                 FROM clinical.patients p WHERE p.patient_id < 20 ORDER BY 1";
    let expected = outcome(&c, plain).await.expect(plain);
    assert!(
        expected.iter().any(|r| r[1].as_deref() != Some("0")),
        "some patients have encounters"
    );
    for marked in [
        "SELECT p.patient_id, (SELECT count(*) FROM clinical.encounters e \
         WHERE e.patient_id = p.patient_id) AS n \
         FROM clinical.patients p WHERE p.patient_id < 20 AND 'x'::regclass IS NULL ORDER BY 1",
        "SELECT p.patient_id, (SELECT count(*) FROM clinical.encounters e \
         WHERE e.patient_id = p.patient_id) AS n \
         FROM clinical.patients p WHERE p.patient_id < 20 AND pg_catalog.version() IS NOT NULL ORDER BY 1",
    ] {
        match outcome(&c, marked).await {
            Ok(rows) => assert_eq!(rows, expected, "{marked}"),
            Err(code) => assert!(code.is_some(), "{marked}: refused with a SQLSTATE"),
        }
    }
}

#[tokio::test]
async fn statistics_of_another_cluster_are_not_served() {
    let c = analyst().await;
    for sql in [
        "SELECT count(*) FROM pg_catalog.pg_statistic",
        "SELECT count(*) FROM pg_catalog.pg_statistic_ext",
        "SELECT count(*) FROM pg_catalog.pg_statistic_ext_data",
        "SELECT count(*) FROM pg_statistic",
        // Nor another cluster's password hashes.
        "SELECT count(*) FROM pg_catalog.pg_authid WHERE rolpassword IS NOT NULL",
    ] {
        assert_eq!(count(&c, sql).await, 0, "{sql}");
    }
    for sql in [
        "SELECT * FROM pg_catalog.pg_stats",
        "SELECT * FROM pg_catalog.pg_stats_ext",
        "SELECT * FROM pg_catalog.pg_stat_user_tables",
        "SELECT * FROM pg_catalog.pg_statio_user_tables",
    ] {
        // Unknown, or known and empty: never rows.
        if let Ok(r) = try_rows(&c, sql).await {
            assert!(r.is_empty(), "{sql}");
        }
    }
}

// ---------------------------------------------------------------------------
// A quoted one-part name with a dot is one name
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_cte_named_like_a_table_with_a_dot_does_not_shadow_it() {
    let c = clinician().await;
    let expected = s01_patients();
    for sql in [
        "WITH \"clinical.patients\" AS (SELECT 'x' AS ssn) SELECT * FROM clinical.patients",
        "WITH \"clinical.patients\" AS (SELECT 'x' AS ssn) SELECT * FROM datafusion.clinical.patients",
        "WITH \"datafusion.clinical.patients\" AS (SELECT 'x' AS ssn) SELECT * FROM datafusion.clinical.patients",
        "WITH \"clinical.patients\" AS (SELECT 'x' AS ssn) SELECT * FROM clinical.patients \
         WHERE patient_id IN (SELECT patient_id FROM clinical.patients)",
        "WITH RECURSIVE \"clinical.patients\"(ssn) AS (SELECT 'x' UNION ALL SELECT ssn FROM \"clinical.patients\" WHERE false) \
         SELECT * FROM clinical.patients",
    ] {
        let got = rows(&c, sql).await;
        let ids: BTreeSet<i64> = got.iter().map(|r| id(r, "patient_id")).collect();
        assert_eq!(ids, expected, "{sql}: the real (filtered) table");
        for r in &got {
            if let Some(ssn) = get(r, "ssn") {
                assert!(ssn.starts_with("***-**-"), "{sql}: {ssn}");
            }
        }
    }
    // The CTE is still reachable by its own (quoted, one-part) name.
    let got = rows(
        &c,
        "WITH \"clinical.patients\" AS (SELECT 'x' AS ssn) SELECT ssn FROM \"clinical.patients\"",
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(get(&got[0], "ssn"), Some("x"));
    // Without the CTE, the quoted one-part name names no table.
    for sql in [
        "SELECT * FROM \"clinical.patients\"",
        "SELECT count(*) FROM \"clinical.patients\"",
        "SELECT * FROM \"datafusion.clinical.patients\"",
    ] {
        let e = try_rows(&c, sql).await.expect_err(sql);
        let code = sqlstate(&e);
        assert!(
            matches!(code.as_deref(), Some("42P01" | "42501")),
            "{sql}: {code:?}"
        );
    }
}

/// EXPLAIN ANALYZE shows the policy barrier's time (its hidden subtree's
/// CPU and Parquet decoding, which distributed stage metrics report) and
/// no row count of the subtree: how many rows the policy removed stays
/// hidden.
#[tokio::test]
async fn explain_analyze_shows_the_barrier_s_time_and_no_rows_it_removed() {
    let c = clinician().await;
    let plan = rows(&c, "EXPLAIN ANALYZE SELECT count(*) FROM clinical.patients").await;
    let text: Vec<String> = plan
        .iter()
        .flat_map(|r| (0..r.len()).filter_map(|i| r.get(i).map(str::to_owned)))
        .collect();
    let barriers: Vec<&str> = text
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.contains("PolicyBarrier"))
        .collect();
    assert!(!barriers.is_empty(), "no barrier in {text:?}");
    for line in barriers {
        assert!(line.contains("elapsed_compute="), "{line}");
        assert!(
            !line.contains("output_rows") && !line.contains("pruned"),
            "{line}"
        );
    }
}

/// PostgreSQL's `to_char` over the analyst's masked birth date (1 January
/// of the year): a template, not a chrono format (DataFusion's `to_char`,
/// left under its alias `date_format`, answered the literal template in
/// some server processes).
#[tokio::test]
async fn to_char_formats_the_masked_birth_date_with_postgresql_s_template() {
    let c = analyst().await;
    let got = rows(
        &c,
        "SELECT to_char(birth_date, 'YYYY-MM-DD') AS d FROM clinical.patients LIMIT 5",
    )
    .await;
    assert!(!got.is_empty());
    for r in &got {
        let d = get(r, "d").unwrap();
        assert!(
            d.len() == 10 && d.ends_with("-01-01") && d[..4].bytes().all(|b| b.is_ascii_digit()),
            "{d}"
        );
    }
}
