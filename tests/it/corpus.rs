//! The adversarial query corpus (`tests/corpus/queries.sql`, one query per
//! line) run over the simple query protocol as each demo role. Every returned
//! cell is checked against oracles computed from the raw Delta tables (read
//! with a plain DataFusion context, never through lakeward):
//!
//! - auditor: every query reads a clinical/claims table and must be refused
//!   with SQLSTATE 42501, returning no rows;
//! - analyst, researcher: no raw SSN, MRN, phone, email, name (whole word,
//!   length ≥ 5), exact birth date (not on 1 January) or 5-digit ZIP (not
//!   ending in `00`); `patient_id` columns hold consented ids (analyst) or
//!   pseudonyms, never a raw id (researcher);
//! - clinician: no full SSN, no `site_id` but S01, no MRN of a patient outside
//!   S01 ∩ consent, no last name of a patient outside S01 unless an S01
//!   patient also carries it, `patient_id` columns only S01-reachable ids.
//!
//! A column named `n_patients` must equal the number of patients the role may
//! see. Other roles' queries may fail with a SQLSTATE (planning errors are
//! recorded, not failures) but never with FATAL or a dropped connection.
//! Violations name the role, query number, line and column, never the value.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{self, RawPatient, connect_role, consented_patients, server};

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

struct Query {
    /// 1-based position in the corpus.
    number: usize,
    /// 1-based line in queries.sql.
    line: usize,
    sql: String,
}

fn corpus() -> &'static [Query] {
    static CORPUS: OnceLock<Vec<Query>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/queries.sql");
        let text = std::fs::read_to_string(&path).expect("read tests/corpus/queries.sql");
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with("--"))
            .enumerate()
            .map(|(n, (line, sql))| Query {
                number: n + 1,
                line,
                sql: sql.trim_end_matches(';').to_owned(),
            })
            .chain(generated(generated_count()))
            .enumerate()
            .map(|(n, q)| Query { number: n + 1, ..q })
            .collect()
    })
}

/// Randomly generated queries appended to the file corpus (line 0): 750 per
/// role in CI (3,000 cases over the four roles); a soak run sets
/// `LAKEWARD_GENERATED_QUERIES` higher (see docs/benchmarks.md).
fn generated_count() -> usize {
    std::env::var("LAKEWARD_GENERATED_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(750)
}

/// A property-style generator: random query shapes over the demo schema whose
/// predicates are keyed on raw values of random patients (visible or not), so
/// every generated query is also a probe. Deterministic (fixed seed, so a
/// failure names a reproducible query number); raise the count for a soak run.
fn generated(n: usize) -> Vec<Query> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x1a4e_3a4d);
    let patients = &raw().patients;
    let tables: [(&str, &str, &[&str]); 4] = [
        (
            "clinical.patients",
            "p",
            &[
                "patient_id",
                "mrn",
                "first_name",
                "last_name",
                "ssn",
                "birth_date",
                "zip",
                "phone",
                "email",
                "site_id",
            ],
        ),
        (
            "clinical.encounters",
            "e",
            &[
                "encounter_id",
                "patient_id",
                "site_id",
                "admit_ts",
                "primary_dx",
            ],
        ),
        (
            "claims.claims",
            "c",
            &[
                "claim_id",
                "patient_id",
                "site_id",
                "service_date",
                "payer",
                "billed_amount",
            ],
        ),
        (
            "clinical.observations",
            "o",
            &[
                "observation_id",
                "patient_id",
                "encounter_id",
                "loinc_code",
                "value_num",
            ],
        ),
    ];
    let quote = |s: &str| s.replace('\'', "''");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let who = &patients[rng.random_range(0..patients.len())];
        let probe = match rng.random_range(0..9) {
            0 => format!("p.last_name = '{}'", quote(&who.last)),
            1 => format!(
                "p.ssn = '{}'",
                quote(who.ssn.as_deref().unwrap_or("000-00-0000"))
            ),
            2 => format!("p.mrn = '{}'", quote(&who.mrn)),
            3 => format!(
                "1 / (CASE WHEN p.last_name = '{}' THEN 0 ELSE 1 END) = 1",
                quote(&who.last)
            ),
            4 => format!("p.patient_id = {}", who.id),
            5 => format!("p.birth_date = DATE '{}'", who.birth),
            6 => format!("p.zip LIKE '{}%'", quote(&who.zip[..who.zip.len().min(3)])),
            7 => format!("upper(p.first_name) = upper('{}')", quote(&who.first)),
            _ => format!("p.site_id = '{}'", quote(&who.site)),
        };
        let (t, a, cols) = tables[rng.random_range(1..tables.len())];
        let pcols = tables[0].2;
        let pick = |rng: &mut rand_chacha::ChaCha8Rng, alias: &str, cols: &[&str]| -> String {
            let k = rng.random_range(1..=3usize.min(cols.len()));
            let mut chosen: Vec<&str> = Vec::new();
            for _ in 0..k {
                let c = cols[rng.random_range(0..cols.len())];
                if !chosen.contains(&c) {
                    chosen.push(c);
                }
            }
            chosen
                .iter()
                .map(|c| format!("{alias}.{c} AS {alias}_{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = match rng.random_range(0..6) {
            0 => format!(
                "SELECT {} FROM clinical.patients p WHERE {probe} ORDER BY 1 LIMIT 20",
                pick(&mut rng, "p", pcols)
            ),
            1 => format!(
                "SELECT {}, {} FROM clinical.patients p JOIN {t} {a} ON {a}.patient_id = p.patient_id WHERE {probe} LIMIT 20",
                pick(&mut rng, "p", pcols),
                pick(&mut rng, a, cols)
            ),
            2 => format!(
                "SELECT p.site_id, count(*) AS n, max(p.last_name) AS m FROM clinical.patients p WHERE NOT ({probe}) GROUP BY p.site_id ORDER BY 1"
            ),
            3 => format!(
                "SELECT {} FROM {t} {a} WHERE {a}.patient_id IN (SELECT p.patient_id FROM clinical.patients p WHERE {probe}) LIMIT 20",
                pick(&mut rng, a, cols)
            ),
            4 => format!(
                "WITH x AS (SELECT * FROM clinical.patients p WHERE {probe}) SELECT {} FROM x p UNION ALL SELECT {} FROM clinical.patients p WHERE p.site_id = 'S02' LIMIT 30",
                ["p.patient_id", "p.last_name", "p.ssn"][rng.random_range(0..3)],
                ["p.patient_id", "p.last_name", "p.ssn"][rng.random_range(0..3)]
            ),
            _ => format!(
                "SELECT {}, row_number() OVER (PARTITION BY p.site_id ORDER BY p.birth_date) AS rn FROM clinical.patients p WHERE {probe} OR p.patient_id < 50 LIMIT 25",
                pick(&mut rng, "p", pcols)
            ),
        };
        out.push(Query {
            number: 0,
            line: 0,
            sql,
        });
    }
    out
}

/// Whether the query names a clinical or claims table (quotes ignored).
fn reads_phi_table(sql: &str) -> bool {
    let s = sql.to_ascii_lowercase().replace('"', "");
    s.contains("clinical.") || s.contains("claims.")
}

// ---------------------------------------------------------------------------
// Raw data (the oracle)
// ---------------------------------------------------------------------------

struct Raw {
    patients: Vec<RawPatient>,
    /// patient ids with an encounter or a claim at S01
    seen_at_s01: BTreeSet<i64>,
    /// Dates (YYYY-MM-DD) of encounters, observations and claims: the analyst
    /// sees them unmasked, so they are not evidence of a birth date leak.
    event_dates: HashSet<String>,
    /// Lower-case words of non-PHI text columns (codes, payers, units...).
    safe_words: HashSet<String>,
}

async fn load_raw(dir: std::path::PathBuf) -> Raw {
    let ctx = support::raw_context(&dir).await;
    let patients = support::raw_patients(&ctx).await;
    let seen_at_s01 = support::raw_rows(
        &ctx,
        "SELECT patient_id FROM encounters WHERE site_id = 'S01' UNION SELECT patient_id FROM claims WHERE site_id = 'S01'",
    )
    .await
    .iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect();
    let mut event_dates = HashSet::new();
    for sql in [
        "SELECT DISTINCT CAST(CAST(admit_ts AS DATE) AS VARCHAR) FROM encounters",
        "SELECT DISTINCT CAST(CAST(discharge_ts AS DATE) AS VARCHAR) FROM encounters",
        "SELECT DISTINCT CAST(CAST(observed_at AS DATE) AS VARCHAR) FROM observations",
        "SELECT DISTINCT CAST(service_date AS VARCHAR) FROM claims",
    ] {
        event_dates.extend(
            support::raw_rows(&ctx, sql)
                .await
                .into_iter()
                .filter_map(|mut r| r.remove(0)),
        );
    }
    let mut safe_words = HashSet::new();
    for sql in [
        "SELECT DISTINCT encounter_type FROM encounters",
        "SELECT DISTINCT primary_dx FROM encounters",
        "SELECT DISTINCT loinc_code FROM observations",
        "SELECT DISTINCT unit FROM observations",
        "SELECT DISTINCT payer FROM claims",
        "SELECT DISTINCT status FROM claims",
        "SELECT DISTINCT denial_reason FROM claims",
        "SELECT DISTINCT cpt_code FROM claims",
        "SELECT DISTINCT icd10_code FROM claims",
        "SELECT DISTINCT sex FROM patients",
        "SELECT DISTINCT split_part(email, '@', 2) FROM patients",
    ] {
        for r in support::raw_rows(&ctx, sql).await {
            if let Some(v) = &r[0] {
                safe_words.extend(words(&v.to_lowercase()).map(str::to_owned));
            }
        }
    }
    Raw {
        patients,
        seen_at_s01,
        event_dates,
        safe_words,
    }
}

fn raw() -> &'static Raw {
    static RAW: OnceLock<Raw> = OnceLock::new();
    support::oracle::load_once(&RAW, load_raw)
}

// ---------------------------------------------------------------------------
// Per-role oracles
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Clinician,
    Analyst,
    Researcher,
    Auditor,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Analyst => "analyst",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
        }
    }
    fn purpose(self) -> &'static str {
        match self {
            Role::Clinician => "treatment",
            Role::Researcher => "research",
            Role::Analyst | Role::Auditor => "operations",
        }
    }
}

enum PatientIds {
    /// Every value of a patient_id column must be one of these.
    AllowOnly(BTreeSet<i64>),
    /// No value of a patient_id column may be one of these.
    Deny(BTreeSet<i64>),
}

/// What a role must never see. Every set is looked up by scanning the cell
/// for the value's shape (SSN `ddd-dd-dddd`, phone `ddd-ddd-dddd`, MRN
/// `MRNdddddddd`, date `dddd-dd-dd`, e-mail around `@`, words).
struct Forbidden {
    ssn: HashSet<String>,
    /// SSN, MRN digits without punctuation (whole words).
    digit_words: HashSet<String>,
    /// lower case
    mrn: HashSet<String>,
    phone: HashSet<String>,
    /// lower case
    email: HashSet<String>,
    email_domains: Vec<String>,
    /// lower-case whole words
    names: HashSet<String>,
    dates: HashSet<String>,
    zips: HashSet<String>,
    site_only: Option<&'static str>,
    patient_ids: PatientIds,
    n_patients: usize,
}

/// Patients of site S01 visible under `treatment` (site ∩ consent).
fn s01_patients() -> BTreeSet<i64> {
    let consent = consented_patients("treatment");
    raw()
        .patients
        .iter()
        .filter(|p| p.site == "S01" && consent.contains(&p.id))
        .map(|p| p.id)
        .collect()
}

fn forbidden(role: Role) -> &'static Forbidden {
    static F: OnceLock<BTreeMap<&'static str, Forbidden>> = OnceLock::new();
    let all = F.get_or_init(|| {
        let raw = raw();
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let name_ok =
            |n: &str| n.chars().count() >= 5 && !raw.safe_words.contains(&n.to_lowercase());
        let all_ssn: HashSet<String> = raw.patients.iter().filter_map(|p| p.ssn.clone()).collect();
        let ssn_digits: HashSet<String> = all_ssn.iter().map(|s| digits(s)).collect();
        let domains: Vec<String> = raw
            .patients
            .iter()
            .filter_map(|p| {
                p.email
                    .as_deref()
                    .and_then(|e| e.split_once('@'))
                    .map(|(_, d)| d.to_lowercase())
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let deid = |dates: HashSet<String>, patient_ids: PatientIds, n_patients: usize| Forbidden {
            ssn: all_ssn.clone(),
            digit_words: ssn_digits
                .iter()
                .cloned()
                .chain(raw.patients.iter().map(|p| digits(&p.mrn)))
                .collect(),
            mrn: raw.patients.iter().map(|p| p.mrn.to_lowercase()).collect(),
            phone: raw
                .patients
                .iter()
                .filter_map(|p| p.phone.clone())
                .collect(),
            email: raw
                .patients
                .iter()
                .filter_map(|p| p.email.as_deref().map(str::to_lowercase))
                .collect(),
            email_domains: domains.clone(),
            names: raw
                .patients
                .iter()
                .flat_map(|p| [&p.first, &p.last])
                .filter(|n| name_ok(n))
                .map(|n| n.to_lowercase())
                .collect(),
            dates,
            zips: raw
                .patients
                .iter()
                .filter(|p| !p.zip.ends_with("00"))
                .map(|p| p.zip.clone())
                .collect(),
            site_only: None,
            patient_ids,
            n_patients,
        };
        let birth_dates = || {
            raw.patients
                .iter()
                .filter(|p| (p.birth.month(), p.birth.day()) != (1, 1))
                .map(|p| p.birth)
        };
        // birth_date ± 1 day (a query may shift the masked 1 January) can
        // collide with another patient's raw birth date: those two days are
        // not evidence of a leak.
        let not_near_jan_1 = |d: &NaiveDate| !matches!((d.month(), d.day()), (1, 2) | (12, 31));
        let analyst_dates = birth_dates()
            .filter(not_near_jan_1)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .filter(|d| !raw.event_dates.contains(d))
            .collect();
        let researcher_dates = birth_dates()
            .filter(not_near_jan_1)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect();
        let ops = consented_patients("operations");
        let research = consented_patients("research");
        let raw_ids: BTreeSet<i64> = raw.patients.iter().map(|p| p.id).collect();

        let s01 = s01_patients();
        let treatment = consented_patients("treatment");
        let mut reachable = s01.clone();
        reachable.extend(raw.seen_at_s01.iter().filter(|p| treatment.contains(p)));
        let s01_names: HashSet<String> = raw
            .patients
            .iter()
            .filter(|p| p.site == "S01")
            .flat_map(|p| [p.first.to_lowercase(), p.last.to_lowercase()])
            .collect();
        let clinician = Forbidden {
            ssn: all_ssn.clone(),
            digit_words: ssn_digits
                .iter()
                .cloned()
                .chain(
                    raw.patients
                        .iter()
                        .filter(|p| !s01.contains(&p.id))
                        .map(|p| digits(&p.mrn)),
                )
                .collect(),
            mrn: raw
                .patients
                .iter()
                .filter(|p| !s01.contains(&p.id))
                .map(|p| p.mrn.to_lowercase())
                .collect(),
            phone: HashSet::new(),
            email: HashSet::new(),
            email_domains: Vec::new(),
            names: raw
                .patients
                .iter()
                .filter(|p| p.site != "S01" && name_ok(&p.last))
                .map(|p| p.last.to_lowercase())
                .filter(|n| !s01_names.contains(n))
                .collect(),
            dates: HashSet::new(),
            zips: HashSet::new(),
            site_only: Some("S01"),
            patient_ids: PatientIds::AllowOnly(reachable),
            n_patients: s01.len(),
        };
        assert!(
            !clinician.names.is_empty(),
            "dataset: some last names exist only outside S01"
        );
        BTreeMap::from([
            ("clinician", clinician),
            (
                "analyst",
                deid(analyst_dates, PatientIds::AllowOnly(ops.clone()), ops.len()),
            ),
            (
                "researcher",
                deid(researcher_dates, PatientIds::Deny(raw_ids), research.len()),
            ),
        ])
    });
    &all[role.name()]
}

// ---------------------------------------------------------------------------
// Cell scanning
// ---------------------------------------------------------------------------

/// Maximal runs of alphanumeric characters.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Every substring of `s` with the byte shape `shape` (`d` a digit, `a` an
/// ASCII letter, anything else itself).
fn shaped<'a>(s: &'a str, shape: &'static [u8]) -> impl Iterator<Item = &'a str> + 'a {
    let b = s.as_bytes();
    let n = shape.len();
    (0..(b.len() + 1).saturating_sub(n)).filter_map(move |i| {
        let ok = shape.iter().zip(&b[i..i + n]).all(|(p, c)| match p {
            b'd' => c.is_ascii_digit(),
            b'a' => c.is_ascii_alphabetic(),
            _ => p == c,
        });
        ok.then(|| std::str::from_utf8(&b[i..i + n]).ok()).flatten()
    })
}

fn is_number(s: &str) -> bool {
    let t = s.trim_start_matches('-');
    !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        && t.chars().any(|c| c.is_ascii_digit())
}

/// Names of the forbidden kinds found in `cell` (never the values), skipping
/// values that the query text itself spells (literals are not leaks).
fn scan_cell(f: &Forbidden, column: &str, cell: &str, query_lower: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let lower = cell.to_lowercase();
    let mut hit = |kind: &'static str, value: &str| {
        if !query_lower.contains(&value.to_lowercase()) && !found.contains(&kind) {
            found.push(kind);
        }
    };
    for v in shaped(cell, b"ddd-dd-dddd") {
        if f.ssn.contains(v) {
            hit("raw ssn", v);
        }
    }
    for v in shaped(cell, b"ddd-ddd-dddd") {
        if f.phone.contains(v) {
            hit("raw phone", v);
        }
    }
    for v in shaped(&lower, b"mrndddddddd") {
        if f.mrn.contains(v) {
            hit("raw mrn", v);
        }
    }
    for v in shaped(cell, b"dddd-dd-dd") {
        if f.dates.contains(v) {
            hit("raw birth date", v);
        }
    }
    if !f.email.is_empty() {
        let lb = lower.as_bytes();
        for (at, _) in lower.match_indices('@') {
            let start = lb[..at]
                .iter()
                .rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'.'))
                .map_or(0, |p| p + 1);
            let rest = &lower[at + 1..];
            for d in f
                .email_domains
                .iter()
                .filter(|d| rest.starts_with(d.as_str()))
            {
                for s in start..at {
                    let candidate = format!("{}@{d}", &lower[s..at]);
                    if f.email.contains(&candidate) {
                        hit("raw email", &candidate);
                    }
                }
            }
        }
    }
    let numeric = is_number(cell);
    let plan = column.eq_ignore_ascii_case("plan");
    for w in words(&lower) {
        if f.names.contains(w) {
            hit("raw name", w);
        }
        if f.digit_words.contains(w) {
            hit("raw ssn/mrn digits", w);
        }
        // A ZIP is text: a numeric cell (an amount, a count) or a plan's
        // statistics hold 5-digit numbers that are not ZIP codes.
        if w.len() == 5
            && f.zips.contains(w)
            && !plan
            && (!numeric || column.to_lowercase().contains("zip"))
        {
            hit("raw zip", w);
        }
    }
    found
}

/// A column whose values are patient ids (not an aggregate over them).
fn is_patient_id_column(column: &str) -> bool {
    let c = column.to_lowercase();
    c.contains("patient_id")
        && !["count(", "sum(", "avg(", "rank", "row_number"]
            .iter()
            .any(|a| c.contains(a))
}

// ---------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Outcome {
    ran: BTreeSet<String>,
    ok: usize,
    refused: usize,
    failed: usize,
    /// SQLSTATE (or "timeout") → query numbers
    failures: BTreeMap<String, Vec<usize>>,
    /// SQLSTATE → the first message seen (errors carry no data values: the
    /// message is scanned like a cell before it is kept)
    messages: BTreeMap<String, String>,
    violations: Vec<String>,
    table_reading: usize,
    /// Auditor: queries refused with the same non-42501 SQLSTATE for the
    /// analyst too (unsupported statements, refused before authorization).
    refused_for_all: Vec<usize>,
}

async fn connect(role: Role) -> Client {
    connect_role(server().addr, role.name(), role.purpose()).await
}

async fn run_role(role: Role) -> Outcome {
    let queries = corpus();
    let oracle = (role != Role::Auditor).then(|| forbidden(role));
    let mut client = connect(role).await;
    let mut out = Outcome::default();
    let mut analyst: Option<Client> = None;
    for q in queries {
        let tag = format!("{} q{} (line {})", role.name(), q.number, q.line);
        let reads = reads_phi_table(&q.sql);
        out.table_reading += reads as usize;
        out.ran.insert(q.sql.clone());
        let result =
            tokio::time::timeout(Duration::from_secs(30), client.simple_query(&q.sql)).await;
        let messages = match result {
            Err(_) => {
                out.failed += 1;
                out.failures
                    .entry("timeout".into())
                    .or_default()
                    .push(q.number);
                client = connect(role).await;
                continue;
            }
            Ok(Err(e)) => {
                match e.as_db_error() {
                    Some(db) => {
                        let code = db.code().code().to_owned();
                        if db.severity() == "FATAL" || db.severity() == "PANIC" {
                            out.violations
                                .push(format!("{tag}: {} error {code}", db.severity()));
                        }
                        if role == Role::Auditor && reads && code != "42501" {
                            // Acceptable only for a statement lakeward refuses
                            // whatever the role (e.g. EXPLAIN ANALYZE, 0A000),
                            // before any table is resolved.
                            let analyst = match &analyst {
                                Some(a) => a,
                                None => analyst.insert(connect(Role::Analyst).await),
                            };
                            let same = match analyst.simple_query(&q.sql).await {
                                Err(e) => support::sqlstate(&e).as_deref() == Some(code.as_str()),
                                Ok(_) => false,
                            };
                            if same {
                                out.refused_for_all.push(q.number);
                            } else {
                                out.violations
                                    .push(format!("{tag}: auditor got SQLSTATE {code}, not 42501"));
                            }
                        }
                        if let Some(f) = oracle {
                            let lower = q.sql.to_lowercase();
                            for kind in scan_cell(f, "<error message>", db.message(), &lower) {
                                out.violations
                                    .push(format!("{tag}: the error message holds a {kind}"));
                            }
                            if let Some(detail) = db.detail() {
                                for kind in scan_cell(f, "<error detail>", detail, &lower) {
                                    out.violations
                                        .push(format!("{tag}: the error detail holds a {kind}"));
                                }
                            }
                        }
                        // A division probe may only fire on a row the role sees:
                        // for the clinician, a last name present among visible
                        // (S01, consented) patients.
                        if role == Role::Clinician
                            && code == "22012"
                            && q.sql.contains("THEN 0 ELSE 1")
                        {
                            let name = q
                                .sql
                                .split("p.last_name = '")
                                .nth(1)
                                .and_then(|r| r.split("' THEN 0").next())
                                .unwrap_or("");
                            let visible = s01_patients();
                            let seen = raw().patients.iter().any(|p| {
                                p.last == name.replace("''", "'") && visible.contains(&p.id)
                            });
                            if !seen {
                                out.violations.push(format!("{tag}: a division probe fired on a row outside the clinician's scope"));
                            }
                        }
                        if code == "42501" {
                            out.refused += 1;
                        } else {
                            out.messages
                                .entry(code.clone())
                                .or_insert_with(|| db.message().chars().take(200).collect());
                            out.failed += 1;
                            out.failures.entry(code).or_default().push(q.number);
                        }
                    }
                    None => {
                        out.failed += 1;
                        out.violations.push(format!(
                            "{tag}: failed without a SQLSTATE (connection lost?)"
                        ));
                        out.failures
                            .entry("no sqlstate".into())
                            .or_default()
                            .push(q.number);
                    }
                }
                if client.is_closed() {
                    out.violations
                        .push(format!("{tag}: the server dropped the connection"));
                    client = connect(role).await;
                }
                continue;
            }
            Ok(Ok(m)) => m,
        };
        out.ok += 1;
        let rows: Vec<_> = messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        let Some(f) = oracle else {
            if reads {
                out.violations.push(format!(
                    "{tag}: auditor was not refused ({} rows)",
                    rows.len()
                ));
            }
            continue;
        };
        let lower = q.sql.to_lowercase();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for r in &rows {
            for (i, col) in r.columns().iter().enumerate() {
                let Some(cell) = r.get(i) else { continue };
                let name = col.name();
                let lname = name.to_lowercase();
                let mut report = |what: String| {
                    let v = format!("{tag}: column {name:?}: {what}");
                    if seen.insert(v.clone()) {
                        out.violations.push(v);
                    }
                };
                for kind in scan_cell(f, name, cell, &lower) {
                    report(kind.to_owned());
                }
                if let Some(site) = f.site_only
                    && lname.contains("site_id")
                    && cell != site
                {
                    report(format!("a site other than {site}"));
                }
                if is_patient_id_column(name)
                    && let Ok(id) = cell.parse::<i64>()
                {
                    match &f.patient_ids {
                        PatientIds::AllowOnly(ok) if !ok.contains(&id) => {
                            report("a patient id the role may not see".into())
                        }
                        PatientIds::Deny(raw_ids) if raw_ids.contains(&id) => {
                            report("a raw (un-pseudonymised) patient id".into())
                        }
                        _ => {}
                    }
                }
                if name == "n_patients" && cell.parse::<usize>().ok() != Some(f.n_patients) {
                    report(format!(
                        "count differs from the {} visible patients",
                        f.n_patients
                    ));
                }
            }
        }
    }
    out
}

fn report(role: Role, out: &Outcome) {
    let mut s = format!(
        "\ncorpus: {} queries\n{:<11} {:>4} {:>8} {:>7}\n",
        corpus().len(),
        "role",
        "ok",
        "refused",
        "failed"
    );
    s += &format!(
        "{:<11} {:>4} {:>8} {:>7}\n",
        role.name(),
        out.ok,
        out.refused,
        out.failed
    );
    for (code, qs) in &out.failures {
        s += &format!("  {} failed with {code}: queries {:?}\n", role.name(), qs);
        if let Some(m) = out.messages.get(code) {
            s += &format!("      first message: {m}\n");
        }
    }
    if !out.refused_for_all.is_empty() {
        s += &format!(
            "  {}: refused for every role, not with 42501: queries {:?}\n",
            role.name(),
            out.refused_for_all
        );
    }
    s += &format!("  {} violations: {}\n", role.name(), out.violations.len());
    eprintln!("{s}");
}

/// The oracle's own control: each kind of raw value is found in a cell.
fn oracle_control(role: Role) {
    let raw = raw();
    let f = forbidden(role);
    let outside = |p: &&RawPatient| role != Role::Clinician || !s01_patients().contains(&p.id);
    let p = raw
        .patients
        .iter()
        .filter(outside)
        .find(|p| p.ssn.is_some() && p.phone.is_some() && p.email.is_some())
        .unwrap();
    let mut cells = vec![
        ("ssn", format!("x{}x", p.ssn.as_deref().unwrap())),
        ("ssn", p.ssn.as_deref().unwrap().replace('-', "")),
        ("mrn", format!("[{}]", p.mrn.to_lowercase())),
    ];
    if role != Role::Clinician {
        let z = raw
            .patients
            .iter()
            .find(|p| !p.zip.ends_with("00"))
            .unwrap();
        let b = raw
            .patients
            .iter()
            .map(|p| p.birth.format("%Y-%m-%d").to_string())
            .find(|d| f.dates.contains(d))
            .unwrap();
        let n = raw
            .patients
            .iter()
            .find(|p| f.names.contains(&p.last.to_lowercase()))
            .unwrap();
        cells.extend([
            ("phone", format!("tel {}", p.phone.as_deref().unwrap())),
            (
                "email",
                format!("<{}>", p.email.as_deref().unwrap().to_uppercase()),
            ),
            ("zip", format!("{}|x", z.zip)),
            ("birth", format!("{b} 00:00:00")),
            ("name", format!("Dr. {}", n.last.to_uppercase())),
        ]);
    } else {
        let n = raw
            .patients
            .iter()
            .find(|p| f.names.contains(&p.last.to_lowercase()))
            .unwrap();
        cells.push(("name", format!("{} {}", p.first, n.last)));
    }
    for (what, cell) in cells {
        assert!(
            !scan_cell(f, "c", &cell, "").is_empty(),
            "{}: the oracle misses a raw {what}",
            role.name()
        );
    }
}

async fn check(role: Role) {
    if role != Role::Auditor {
        oracle_control(role);
    }
    let out = run_role(role).await;
    report(role, &out);
    assert!(
        out.ran.len() >= 150,
        "{}: only {} distinct queries ran",
        role.name(),
        out.ran.len()
    );
    if role == Role::Auditor {
        assert_eq!(
            out.table_reading,
            corpus().len(),
            "every corpus query reads a clinical/claims table"
        );
        assert_eq!(out.ok, 0, "auditor: no table-reading query succeeded");
        assert_eq!(
            out.refused + out.refused_for_all.len(),
            out.table_reading,
            "auditor: every table-reading query refused with 42501 (or refused for every role)"
        );
    }
    assert!(
        out.violations.is_empty(),
        "{} oracle violations:\n{}",
        out.violations.len(),
        out.violations.join("\n")
    );
}

#[tokio::test]
async fn corpus_as_clinician() {
    check(Role::Clinician).await;
}

#[tokio::test]
async fn corpus_as_analyst() {
    check(Role::Analyst).await;
}

#[tokio::test]
async fn corpus_as_researcher() {
    check(Role::Researcher).await;
}

#[tokio::test]
async fn corpus_as_auditor() {
    check(Role::Auditor).await;
}
