//! Linkage: for every de-identified role, no column the role receives is a
//! computable function of a raw identifier the role must not see (SPEC §2
//! "identifiers are opaque", §5 Safe Harbor's "any other unique identifying
//! number").
//!
//! Checked over the data, not the policy text. Each table is read through
//! lakeward as the role and row-aligned with the raw table (read with plain
//! DataFusion) through its own id: the id as the role sees it is matched
//! against the raw id, or against the raw id's keyed pseudonym computed with
//! the test servers' key (in the patient domain or in the id's own domain).
//! Then every column the role receives (`v`) is tested against every hidden
//! identifier (`h`) of the same rows:
//!
//! - monotone: Spearman's |rho| > 0.9 (catches `encounter_id / 100`,
//!   `lpad(patient_id, 8, '0')`, sequential numbering);
//! - affine: `h = a·v + b` on ≥ 95 % of rows;
//! - integer division: `h = v div 10^k` or `v = h div 10^k`;
//! - embedding: the decimal digits of `h` (≥ 4 of them, leading zeros
//!   dropped), or a text `h` (≥ 4 characters), appear inside `v` on ≥ 50 %
//!   of rows;
//!
//! each only when `v` carries about as much information as `h` (at least
//! half as many distinct values: a 1:1 relation). Keyed pseudonyms pass:
//! they are 1:1 but not computable. The two attacks of the original finding
//! are asserted explicitly as well.

use std::collections::{HashMap, HashSet};

use datafusion::logical_expr::ScalarUDF;
use tokio_postgres::SimpleQueryMessage;

use crate::support::{connect_role, data_dir, raw_context, raw_rows, server};

/// The test servers' pseudonymisation key (`support::engine`).
const TEST_KEY: [u8; 32] = [7u8; 32];

type Rows = Vec<Vec<Option<String>>>;

/// One table as a role receives it.
struct RoleTable {
    columns: Vec<String>,
    rows: Rows,
}

async fn role_rows(client: &tokio_postgres::Client, sql: &str) -> RoleTable {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in client.simple_query(sql).await.expect(sql) {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                columns = d.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if columns.is_empty() {
                    columns = r.columns().iter().map(|c| c.name().to_owned()).collect();
                }
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
            }
            _ => {}
        }
    }
    RoleTable { columns, rows }
}

/// A raw context with `lakeward_pseudonym` under the servers' key.
async fn raw_with_pseudonyms() -> datafusion::prelude::SessionContext {
    let ctx = raw_context(data_dir()).await;
    ctx.register_udf(ScalarUDF::new_from_impl(
        lakeward::engine::masks::LakewardPseudonym::new(&TEST_KEY),
    ));
    ctx
}

/// Rows of `sql` over the raw tables, or `None` when it does not plan or run.
async fn try_raw(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Option<Rows> {
    let df = ctx.sql(sql).await.ok()?;
    df.collect().await.ok()?;
    Some(raw_rows(ctx, sql).await)
}

/// The raw id (as text) of each of the role's rows of `table`, found
/// through the table's own id `id` as the role sees it: the raw id itself,
/// its keyed pseudonym in the patient domain, or in `domain`.
async fn align(
    raw: &datafusion::prelude::SessionContext,
    table: &str,
    id: &str,
    domain: &str,
    role: &RoleTable,
) -> Vec<String> {
    let at = role
        .columns
        .iter()
        .position(|c| c == id)
        .unwrap_or_else(|| panic!("{table}: no column {id}"));
    let candidates = [
        id.to_string(),
        format!("lakeward_pseudonym({id})"),
        format!("lakeward_pseudonym({id}, '{domain}')"),
    ];
    for expr in &candidates {
        let sql = format!(
            "SELECT CAST({expr} AS VARCHAR) AS k, CAST({id} AS VARCHAR) AS id FROM {table}"
        );
        let Some(keys) = try_raw(raw, &sql).await else {
            continue;
        };
        let index: HashMap<&str, &str> = keys
            .iter()
            .filter_map(|k| Some((k[0].as_deref()?, k[1].as_deref()?)))
            .collect();
        let aligned: Vec<String> = role
            .rows
            .iter()
            .filter_map(|r| r[at].as_deref().and_then(|k| index.get(k)))
            .map(|k| (*k).to_owned())
            .collect();
        if !aligned.is_empty() && aligned.len() == role.rows.len() {
            return aligned;
        }
    }
    panic!("{table}: the role's rows do not align with the raw rows through {id}");
}

/// The decimal digits of a value, leading zeros dropped.
fn digits(s: &str) -> String {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    let t = d.trim_start_matches('0');
    if t.is_empty() && !d.is_empty() {
        "0".to_owned()
    } else {
        t.to_owned()
    }
}

fn number(s: &str) -> Option<i128> {
    let d = digits(s);
    (!d.is_empty() && d.len() <= 20)
        .then(|| d.parse().ok())
        .flatten()
}

/// Average ranks (ties share their mean rank).
fn ranks(xs: &[i128]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by_key(|&i| xs[i]);
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0;
        for k in i..=j {
            r[idx[k]] = mean;
        }
        i = j + 1;
    }
    r
}

fn spearman(a: &[i128], b: &[i128]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Does `h = a·v + b` (rational `a`) hold on ≥ 95 % of the pairs?
fn affine(pairs: &[(i128, i128)]) -> bool {
    let Some(&(v0, h0)) = pairs.first() else {
        return false;
    };
    let Some(&(v1, h1)) = pairs.iter().find(|(v, _)| *v != v0) else {
        return false;
    };
    let on_line = pairs
        .iter()
        .filter(|(v, h)| {
            let l = (h - h0).checked_mul(v1 - v0);
            let r = (v - v0).checked_mul(h1 - h0);
            l.is_some() && l == r
        })
        .count();
    on_line * 100 >= pairs.len() * 95
}

/// Is one side the other divided by a power of ten on ≥ 95 % of the pairs?
fn divided(pairs: &[(i128, i128)]) -> Option<i128> {
    let mut k = 10i128;
    while k <= 100_000_000 {
        let hits = pairs
            .iter()
            .filter(|(v, h)| v / k == *h || h / k == *v)
            .count();
        if hits * 100 >= pairs.len() * 95 {
            return Some(k);
        }
        k *= 10;
    }
    None
}

/// How `v` (the role's values) computes `h` (hidden values), if it does.
fn computable(v: &[&str], h: &[&str]) -> Option<String> {
    assert_eq!(v.len(), h.len());
    let distinct = |xs: &[&str]| xs.iter().collect::<HashSet<_>>().len();
    if v.len() < 30 || distinct(v) * 2 < distinct(h) {
        return None;
    }
    // Embedding: the hidden value spelled inside the visible one.
    let mut eligible = 0;
    let mut embedded = 0;
    for (v, h) in v.iter().zip(h) {
        let hd = digits(h);
        let needle = if hd.len() >= 4 {
            hd
        } else if h.chars().filter(char::is_ascii_alphabetic).count() >= 4 {
            h.to_lowercase()
        } else {
            continue;
        };
        eligible += 1;
        if v.to_lowercase().contains(&needle) {
            embedded += 1;
        }
    }
    if eligible >= 30 && embedded * 2 >= eligible {
        return Some(format!("embedded in {embedded} of {eligible} rows"));
    }
    let pairs: Vec<(i128, i128)> = v
        .iter()
        .zip(h)
        .filter_map(|(v, h)| Some((number(v)?, number(h)?)))
        .collect();
    if pairs.len() < 30 || pairs.len() * 2 < v.len() {
        return None;
    }
    let (a, b): (Vec<i128>, Vec<i128>) = pairs.iter().copied().unzip();
    let rho = spearman(&a, &b);
    if rho.abs() > 0.9 {
        return Some(format!("monotone (Spearman rho {rho:.3})"));
    }
    if affine(&pairs) {
        return Some("affine".into());
    }
    if let Some(k) = divided(&pairs) {
        return Some(format!("integer division by {k}"));
    }
    None
}

/// A table, its own id and the id's key domain.
const TABLES: [(&str, &str, &str); 4] = [
    ("clinical.patients", "patient_id", "patient"),
    ("clinical.encounters", "encounter_id", "encounter"),
    ("clinical.observations", "observation_id", "observation"),
    ("claims.claims", "claim_id", "claim"),
];

/// Every (visible column, hidden identifier) pair of `role` that is
/// computable, as `table.column ~ hidden: how`.
async fn linkage_findings(role: &str, purpose: &str, hidden: &[&str]) -> Vec<String> {
    let client = connect_role(server().addr, role, purpose).await;
    let raw = raw_with_pseudonyms().await;
    let mut findings = Vec::new();
    for (table, id, domain) in TABLES {
        let bare = table.split('.').nth(1).expect("schema.table");
        let seen = role_rows(&client, &format!("SELECT * FROM {table}")).await;
        assert!(!seen.rows.is_empty(), "{role} sees no rows of {table}");
        let raw_ids = align(&raw, bare, id, domain, &seen).await;
        // The raw identifiers of the same rows: the table's own ids and its
        // patient's identifiers, by raw id.
        let names: Vec<&str> = ["patient_id", "encounter_id", "observation_id", "claim_id"]
            .into_iter()
            .filter(|c| seen.columns.iter().any(|s| s == c))
            .chain(["mrn", "ssn", "phone", "email", "first_name", "last_name"])
            .collect();
        let select: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, c)| match *c {
                "mrn" | "ssn" | "phone" | "email" | "first_name" | "last_name" => {
                    format!("p.{c} AS h{i}")
                }
                c => format!("CAST(t.{c} AS VARCHAR) AS h{i}"),
            })
            .collect();
        let sql = format!(
            "SELECT CAST(t.{id} AS VARCHAR) AS k, {} FROM {bare} t JOIN patients p ON p.patient_id = t.patient_id",
            select.join(", ")
        );
        let hidden_rows = raw_rows(&raw, &sql).await;
        let by_id: HashMap<&str, &[Option<String>]> = hidden_rows
            .iter()
            .filter_map(|r| Some((r[0].as_deref()?, &r[1..])))
            .collect();
        for (h_at, h_name) in names.iter().enumerate() {
            if !hidden.contains(h_name) {
                continue;
            }
            for (v_at, v_name) in seen.columns.iter().enumerate() {
                let mut v = Vec::new();
                let mut h = Vec::new();
                for (row, raw_id) in seen.rows.iter().zip(&raw_ids) {
                    let raw_row = by_id[raw_id.as_str()];
                    if let (Some(a), Some(b)) = (row[v_at].as_deref(), raw_row[h_at].as_deref()) {
                        v.push(a);
                        h.push(b);
                    }
                }
                if let Some(how) = computable(&v, &h) {
                    findings.push(format!("{table}.{v_name} ~ raw {h_name}: {how}"));
                }
            }
        }
    }
    findings
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The checks themselves can fail: a visible copy of an id, a derived id and
/// a padded id are all caught; keyed pseudonyms and unrelated values are not.
#[test]
fn the_detectors_detect() {
    let ids: Vec<String> = (1_000..1_400).map(|i| i.to_string()).collect();
    let h: Vec<&str> = ids.iter().map(String::as_str).collect();
    let derived: Vec<String> = (1_000..1_400)
        .map(|i| (i * 100 + i % 7).to_string())
        .collect();
    let padded: Vec<String> = (1_000..1_400).map(|i| format!("MRN{i:08}")).collect();
    let affine_ids: Vec<String> = (1_000..1_400).map(|i| (3 * i + 17).to_string()).collect();
    let shuffled: Vec<String> = (1_000..1_400u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20).to_string())
        .collect();
    assert!(computable(&h, &h).is_some());
    assert!(computable(&as_refs(&derived), &h).is_some());
    assert!(computable(&as_refs(&padded), &h).is_some());
    assert!(computable(&h, &as_refs(&padded)).is_some());
    assert!(computable(&as_refs(&affine_ids), &h).is_some());
    assert_eq!(computable(&as_refs(&shuffled), &h), None);
    let few: Vec<&str> = (0..400).map(|i| ["S01", "S02"][i % 2]).collect();
    assert_eq!(computable(&few, &h), None, "not 1:1");
}

#[tokio::test]
async fn researcher_sees_no_computable_identifier() {
    let findings = linkage_findings(
        "researcher",
        "research",
        &[
            "patient_id",
            "encounter_id",
            "observation_id",
            "claim_id",
            "mrn",
            "ssn",
            "phone",
            "email",
            "first_name",
            "last_name",
        ],
    )
    .await;
    assert!(
        findings.is_empty(),
        "researcher linkage:\n{}",
        findings.join("\n")
    );
}

#[tokio::test]
async fn analyst_sees_no_computable_identifier() {
    let findings = linkage_findings(
        "analyst",
        "operations",
        &["mrn", "ssn", "phone", "email", "first_name", "last_name"],
    )
    .await;
    assert!(
        findings.is_empty(),
        "analyst linkage:\n{}",
        findings.join("\n")
    );
}

/// The finding's attack: `encounter_id / 100` next to the pseudonymised
/// patient id gave away every raw patient id.
#[tokio::test]
async fn researcher_cannot_derive_patient_ids_from_encounter_ids() {
    let client = connect_role(server().addr, "researcher", "research").await;
    let seen = role_rows(
        &client,
        "SELECT patient_id, encounter_id / 100 AS derived FROM clinical.encounters",
    )
    .await;
    assert!(seen.rows.len() > 100, "too few rows: {}", seen.rows.len());
    // Raw patient id of every pseudonym, from the raw side.
    let raw = raw_with_pseudonyms().await;
    let map: HashMap<String, String> = raw_rows(
        &raw,
        "SELECT CAST(lakeward_pseudonym(patient_id) AS VARCHAR), CAST(patient_id AS VARCHAR) FROM patients",
    )
    .await
    .into_iter()
    .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
    .collect();
    let mut known = 0;
    let mut revealed = 0;
    let mut per_pseudonym: HashMap<&str, HashSet<&str>> = HashMap::new();
    for r in &seen.rows {
        let (Some(p), Some(d)) = (r[0].as_deref(), r[1].as_deref()) else {
            continue;
        };
        per_pseudonym.entry(p).or_default().insert(d);
        if let Some(raw_id) = map.get(p) {
            known += 1;
            if raw_id == d {
                revealed += 1;
            }
        }
    }
    assert_eq!(
        known,
        seen.rows.len(),
        "every patient pseudonym maps to a raw id"
    );
    assert!(
        revealed * 1000 <= known,
        "encounter_id / 100 is the raw patient id on {revealed} of {known} rows"
    );
    // Nor one value per patient (a derived patient key).
    let several = per_pseudonym.values().filter(|s| s.len() > 1).count();
    assert!(several > 0, "encounter_id / 100 is constant per patient");
}

/// The finding's other attack: the analyst computing the MRN from the
/// patient id the analyst sees.
#[tokio::test]
async fn analyst_cannot_compute_mrns_from_patient_ids() {
    let client = connect_role(server().addr, "analyst", "operations").await;
    let seen = role_rows(
        &client,
        "SELECT patient_id, 'MRN' || lpad(CAST(patient_id AS TEXT), 8, '0') AS guess FROM clinical.patients",
    )
    .await;
    assert!(seen.rows.len() > 100);
    let raw = raw_context(data_dir()).await;
    let mrn: HashMap<String, String> = raw_rows(
        &raw,
        "SELECT CAST(patient_id AS VARCHAR), mrn FROM patients",
    )
    .await
    .into_iter()
    .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
    .collect();
    let hits = seen
        .rows
        .iter()
        .filter(|r| {
            let (Some(id), Some(guess)) = (r[0].as_deref(), r[1].as_deref()) else {
                return false;
            };
            mrn.get(id).is_some_and(|m| m == guess)
        })
        .count();
    assert!(
        hits * 1000 <= seen.rows.len(),
        "the guessed MRN is the raw MRN for {hits} of {} patients",
        seen.rows.len()
    );
}
