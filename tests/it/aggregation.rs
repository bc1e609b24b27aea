//! Aggregation policies (SPEC §8): the demo role `reporter` sees patient
//! data only as aggregates whose every group covers at least 11 distinct
//! patients. Oracles come from the same rows as the analyst sees them (the
//! reporter's masks, consent and sites are the analyst's) with each group's
//! distinct patients counted, and from the raw tables.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::audit::text_rows;
use crate::support::{connect_role, server, sqlstate};

const MIN: i64 = 11;

/// Rows of a simple query, NULL as `None`.
async fn rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error().map(|d| d.message())))
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    out
}

/// The error of a statement that must be refused: 42501, no rows, and a
/// message that names the rule.
async fn refused(c: &Client, sql: &str) {
    match c.simple_query(sql).await {
        Ok(r) => panic!("{sql}: not refused ({} messages)", r.len()),
        Err(e) => {
            assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
            let text = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default();
            assert!(text.contains("at least 11 patients"), "{sql}: {text}");
        }
    }
}

/// For a join of rows `x` to groups `s` over `groups` named `<p>0`, …:
/// the aliased grouping list, its positions (`1, 2, …`) and the NULL-safe
/// join condition.
fn grouping_join(groups: &[&str], p: &str) -> (String, String, String) {
    let aliased = groups
        .iter()
        .enumerate()
        .map(|(j, c)| format!("{c} AS {p}{j}"))
        .collect::<Vec<_>>()
        .join(", ");
    let positions = (1..=groups.len())
        .map(|j| j.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let same = (0..groups.len())
        .map(|j| format!("(x.{p}{j} IS NOT DISTINCT FROM s.{p}{j})"))
        .collect::<Vec<_>>()
        .join(" AND ");
    (aliased, positions, same)
}

/// The reporter's answer to `GROUP BY <groups>` with `<aggs>`, checked
/// against the analyst's groups with their distinct patients: the groups
/// of at least 11 patients come back as they are, and the others only
/// inside the remainder row (all grouping columns NULL), present when its
/// own patients (counted by the analyst over the small groups' rows) are
/// at least 11.
async fn suppressed_like_the_oracle(
    reporter: &Client,
    analyst: &Client,
    from: &str,
    groups: &[&str],
    key: &str,
    need_small: bool,
) -> usize {
    let g = groups.join(", ");
    let n = groups.len();
    let got = rows(
        reporter,
        &format!("SELECT {g}, count(*) FROM {from} GROUP BY {g}"),
    )
    .await;
    let truth = rows(
        analyst,
        &format!("SELECT {g}, count(*), count(DISTINCT {key}) FROM {from} GROUP BY {g}"),
    )
    .await;
    let mut expected: BTreeMap<Vec<Option<String>>, i64> = BTreeMap::new();
    let mut small: Vec<Vec<Option<String>>> = Vec::new();
    let mut small_rows = 0i64;
    for r in &truth {
        let count: i64 = r[n].as_deref().unwrap().parse().unwrap();
        let patients: i64 = r[n + 1].as_deref().unwrap().parse().unwrap();
        if patients >= MIN {
            expected.insert(r[..n].to_vec(), count);
        } else {
            small.push(r[..n].to_vec());
            small_rows += count;
        }
    }
    assert!(
        !need_small || !small.is_empty(),
        "{from} by {g}: the case needs small groups"
    );
    // The remainder's own patients, over the small groups' rows.
    let (aliased, positions, same) = grouping_join(groups, "g");
    let remainder_patients: i64 = rows(
        analyst,
        &format!(
            "SELECT count(DISTINCT x.k) FROM (SELECT {aliased}, {key} AS k FROM {from}) x \
             JOIN (SELECT {aliased} FROM {from} GROUP BY {positions} HAVING count(DISTINCT {key}) < {MIN}) s ON {same}"
        ),
    )
    .await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let all_null = vec![None; n];
    let mut got_map: BTreeMap<Vec<Option<String>>, i64> = BTreeMap::new();
    for r in &got {
        let count: i64 = r[n].as_deref().unwrap().parse().unwrap();
        assert!(
            got_map.insert(r[..n].to_vec(), count).is_none(),
            "one row per group"
        );
    }
    let remainder = got_map.remove(&all_null);
    // A genuine all-NULL group of at least 11 patients shares the row.
    let genuine = expected.remove(&all_null);
    assert_eq!(
        got_map, expected,
        "{from} by {g}: the groups of ≥ {MIN} patients"
    );
    // The NULL row: the remainder (kept when its own patients are enough)
    // and a genuine all-NULL group of enough patients, which keeps it.
    match (remainder, genuine.is_some() || remainder_patients >= MIN) {
        (Some(count), true) => assert_eq!(count, small_rows + genuine.unwrap_or(0)),
        (None, false) => {}
        (r, _) => panic!(
            "{from} by {g}: remainder {r:?}, its patients {remainder_patients}, rows {small_rows}"
        ),
    }
    small.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reporter_sees_only_groups_of_at_least_eleven_patients() {
    let addr = server().addr;
    let reporter = connect_role(addr, "reporter", "operations").await;
    let analyst = connect_role(addr, "analyst", "operations").await;

    // The issue's statement: groups of ≥ 11 patients and the remainder;
    // its completion record counts the groups suppressed.
    let counted = crate::audit::as_user(addr, "agg_reporter", "reporter", None, "operations").await;
    let small = suppressed_like_the_oracle(
        &counted,
        &analyst,
        "clinical.encounters",
        &["site_id", "primary_dx"],
        "patient_id",
        true,
    )
    .await;
    let auditor = connect_role(addr, "auditor", "operations").await;
    let recorded = text_rows(
        &auditor,
        "SELECT suppressed_groups FROM audit.access_log WHERE \"user\" = 'agg_reporter' \
         AND event = 'completion'",
    )
    .await;
    assert_eq!(recorded, vec![vec![small.to_string()]]);
    // Date truncation and CASE buckets.
    suppressed_like_the_oracle(
        &reporter,
        &analyst,
        "clinical.encounters",
        &["site_id", "date_trunc('month', admit_ts)"],
        "patient_id",
        true,
    )
    .await;
    suppressed_like_the_oracle(
        &reporter,
        &analyst,
        "claims.claims",
        &["payer", "CASE WHEN billed_amount > 5000 THEN 'high' WHEN billed_amount > 100 THEN 'mid' ELSE 'low' END", "status"],
        "patient_id",
        true,
    )
    .await;
    // A join: encounters ⋈ observations, each side's patients counted.
    suppressed_like_the_oracle(
        &reporter,
        &analyst,
        "clinical.observations o JOIN clinical.encounters e ON e.encounter_id = o.encounter_id",
        &["e.site_id", "e.primary_dx", "o.loinc_code"],
        "o.patient_id",
        true,
    )
    .await;

    // Encounters per group ≥ 11 while patients < 11: one group per
    // patient, all suppressed; only the remainder (everyone) is left.
    let per_patient = rows(
        &reporter,
        "SELECT patient_id, count(*) FROM clinical.encounters GROUP BY patient_id",
    )
    .await;
    let total = rows(&analyst, "SELECT count(*) FROM clinical.encounters").await;
    assert_eq!(per_patient, vec![vec![None, total[0][0].clone()]]);

    // A filter that isolates one patient: nothing comes back.
    let one = rows(
        &analyst,
        "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 1",
    )
    .await;
    let x = one[0][0].clone().unwrap();
    assert!(
        rows(
            &reporter,
            &format!("SELECT count(*) FROM clinical.patients WHERE patient_id = {x}")
        )
        .await
        .is_empty()
    );
    let birth = rows(
        &analyst,
        &format!("SELECT birth_date FROM clinical.patients WHERE patient_id = {x}"),
    )
    .await[0][0]
        .clone()
        .unwrap();
    let by_birth = rows(
        &reporter,
        &format!(
            "SELECT sex, count(*), avg(extract(year FROM birth_date)) FROM clinical.patients \
             WHERE birth_date = DATE '{birth}' GROUP BY sex"
        ),
    )
    .await;
    for r in &by_birth {
        let n: i64 = r[1].as_deref().unwrap().parse().unwrap();
        assert!(n >= MIN, "{r:?}");
    }
    // count(DISTINCT), CTEs, subqueries in FROM, HAVING and ORDER BY over
    // what is left.
    let cte = rows(
        &reporter,
        "WITH e AS (SELECT site_id, patient_id FROM clinical.encounters WHERE encounter_type = 'inpatient') \
         SELECT site_id, count(DISTINCT patient_id) AS n FROM e GROUP BY site_id HAVING count(*) > 0 ORDER BY n DESC LIMIT 3",
    )
    .await;
    assert!(!cte.is_empty());
    for r in &cte {
        let n: i64 = r[1].as_deref().unwrap().parse().unwrap();
        assert!(n >= MIN, "{r:?}");
    }
    // A window over the groups ranks what suppression left.
    let ranked = rows(
        &reporter,
        "SELECT site_id, primary_dx, n FROM (SELECT site_id, primary_dx, count(*) AS n, \
         row_number() OVER (PARTITION BY site_id ORDER BY count(*) DESC, primary_dx) AS rk \
         FROM clinical.encounters GROUP BY site_id, primary_dx) t WHERE rk <= 2 ORDER BY 1, 3",
    )
    .await;
    let released = rows(
        &reporter,
        "SELECT site_id, primary_dx, count(*) FROM clinical.encounters GROUP BY site_id, primary_dx",
    )
    .await;
    assert!(!ranked.is_empty());
    for r in &ranked {
        assert!(released.contains(r), "{r:?} is a released group");
    }
    // EXPLAIN of an aggregation runs nothing and shows no count.
    assert!(
        !rows(
            &reporter,
            "EXPLAIN SELECT site_id, count(*) FROM clinical.patients GROUP BY site_id"
        )
        .await
        .is_empty()
    );
    // A statement over no patient-keyed table is not the policy's.
    assert_eq!(
        text_rows(&reporter, "SELECT 1 + 1").await,
        vec![vec!["2".to_owned()]]
    );
}

/// Two cells equal, numbers within a relative 1e-9 (sums of floats
/// depend on the order rows meet).
fn same_cell(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) if x != y => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => false,
        },
        _ => a == b,
    }
}

fn same_row(a: &[Option<String>], b: &[Option<String>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_cell(x, y))
}

/// The reporter's `SELECT <groups>, <aggs> FROM <from> GROUP BY <groups>`
/// (one table, `key` its patient key) against the analyst's: the groups of
/// at least 11 patients with every aggregate as the analyst computes it,
/// and the remainder row with every aggregate computed by the analyst over
/// the rows of the small groups and of a genuine all-NULL group.
/// Returns whether a remainder row came back.
async fn merged_like_the_oracle(
    reporter: &Client,
    analyst: &Client,
    from: &str,
    groups: &[&str],
    aggs: &str,
    key: &str,
) -> bool {
    let g = groups.join(", ");
    let n = groups.len();
    let got = rows(
        reporter,
        &format!("SELECT {g}, {aggs} FROM {from} GROUP BY {g}"),
    )
    .await;
    let big = rows(
        analyst,
        &format!(
            "SELECT {g}, {aggs} FROM {from} GROUP BY {g} HAVING count(DISTINCT {key}) >= {MIN}"
        ),
    )
    .await;
    let (aliased, positions, same) = grouping_join(groups, "__g");
    let all_null = groups
        .iter()
        .map(|c| format!("({c}) IS NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // The rows of the small groups and of the all-NULL group.
    let merged_rows = format!(
        "(SELECT x.* FROM (SELECT *, {aliased} FROM {from}) x          JOIN (SELECT {aliased} FROM {from} GROUP BY {positions}                HAVING count(DISTINCT {key}) < {MIN} OR ({all_null})) s ON {same}) r"
    );
    let remainder_truth = rows(
        analyst,
        &format!("SELECT {aggs}, count(DISTINCT {key}) FROM {merged_rows}"),
    )
    .await;
    let truth = &remainder_truth[0];
    let patients: i64 = truth[truth.len() - 1].as_deref().unwrap().parse().unwrap();
    let expected_remainder: Option<Vec<Option<String>>> = (patients >= MIN).then(|| {
        let mut r = vec![None; n];
        r.extend(truth[..truth.len() - 1].iter().cloned());
        r
    });
    let (remainder, released): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|r| r[..n].iter().all(Option::is_none));
    let big: Vec<_> = big
        .into_iter()
        .filter(|r| !r[..n].iter().all(Option::is_none))
        .collect();
    assert_eq!(released.len(), big.len(), "{from} by {g}: {aggs}");
    for r in &released {
        assert!(
            big.iter().any(|b| same_row(b, r)),
            "{from} by {g}: {aggs}: {r:?} is not one of the analyst's groups"
        );
    }
    match (remainder.as_slice(), &expected_remainder) {
        ([], None) => false,
        ([got], Some(want)) => {
            assert!(
                same_row(got, want),
                "{from} by {g}: remainder {got:?}, expected {want:?}"
            );
            true
        }
        (got, want) => panic!("{from} by {g}: remainder {got:?}, expected {want:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_remainder_row_merges_every_aggregate_of_the_small_groups() {
    let addr = server().addr;
    let reporter = connect_role(addr, "reporter", "operations").await;
    let analyst = connect_role(addr, "analyst", "operations").await;
    let merged = "count(*), count(DISTINCT patient_id), count(denial_reason), \
                  sum(billed_amount), min(allowed_amount), max(billed_amount), \
                  avg(CAST(billed_amount AS DOUBLE)), avg(CASE WHEN status = 'denied' THEN 1.0 ELSE 0.0 END), \
                  bool_or(status = 'denied'), bool_and(billed_amount > 0), count(DISTINCT cpt_code)";
    let bucket = "CASE WHEN billed_amount > 5000 THEN 'high' WHEN billed_amount > 100 THEN 'mid' ELSE 'low' END";
    // Aggregates that merge from the groups' values (one pass).
    assert!(
        merged_like_the_oracle(
            &reporter,
            &analyst,
            "claims.claims",
            &["payer", bucket, "status"],
            merged,
            "patient_id"
        )
        .await,
        "the case needs a remainder"
    );
    // A genuine all-NULL group (no denial reason) shares the remainder's
    // row, its distinct values included.
    merged_like_the_oracle(
        &reporter,
        &analyst,
        "claims.claims",
        &[
            "denial_reason",
            "CASE WHEN billed_amount > 5000 THEN site_id END",
        ],
        merged,
        "patient_id",
    )
    .await;
    // Statistics and a decimal average do not merge from values: the
    // two-pass plan, same answer.
    merged_like_the_oracle(
        &reporter,
        &analyst,
        "claims.claims",
        &["payer", bucket, "status"],
        "count(*), stddev(CAST(billed_amount AS DOUBLE)), avg(billed_amount)",
        "patient_id",
    )
    .await;
    // Without GROUP BY: the one group, or nothing.
    let whole = "SELECT count(*), count(DISTINCT encounter_type), avg(CAST(length(primary_dx) AS DOUBLE)) \
                 FROM clinical.encounters";
    let got = rows(&reporter, whole).await;
    assert_eq!(got.len(), 1);
    assert!(same_row(&got[0], &rows(&analyst, whole).await[0]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reporter_is_refused_every_shape_that_shows_or_derives_a_small_cell() {
    let addr = server().addr;
    let r = connect_role(addr, "reporter", "operations").await;
    for sql in [
        // Row-level.
        "SELECT * FROM clinical.patients",
        "SELECT patient_id FROM clinical.encounters WHERE site_id = 'S01'",
        // Grouping sets.
        "SELECT site_id, sex, count(*) FROM clinical.patients GROUP BY ROLLUP (site_id, sex)",
        "SELECT site_id, sex, count(*) FROM clinical.patients GROUP BY CUBE (site_id, sex)",
        "SELECT site_id, sex, count(*) FROM clinical.patients GROUP BY GROUPING SETS ((site_id), (sex))",
        // Windows over patient rows.
        "SELECT site_id, count(*) OVER (PARTITION BY site_id) FROM clinical.patients",
        "SELECT site_id, rank() OVER (PARTITION BY site_id ORDER BY zip) FROM clinical.patients",
        // Aggregates of aggregates, and of DISTINCT.
        "SELECT count(*) FROM (SELECT site_id, count(*) AS n FROM clinical.patients GROUP BY site_id) t",
        "SELECT count(*) FROM (SELECT DISTINCT patient_id FROM clinical.encounters) t",
        // Complementary cells in one statement.
        "SELECT count(*) FROM clinical.patients WHERE sex = 'F' UNION ALL SELECT count(*) FROM clinical.patients WHERE sex <> 'F'",
        // A scalar count of a filtered subquery.
        "SELECT (SELECT count(*) FROM clinical.patients WHERE site_id = 'S01') AS n",
        "SELECT site_id, count(*) FROM clinical.encounters WHERE patient_id IN (SELECT patient_id FROM clinical.patients WHERE sex = 'F') AND 1 < (SELECT count(*) FROM clinical.patients) GROUP BY site_id",
        // Individual values through an aggregate.
        "SELECT site_id, array_agg(patient_id) FROM clinical.patients GROUP BY site_id",
        "SELECT site_id, string_agg(zip, ',') FROM clinical.patients GROUP BY site_id",
        "SELECT site_id, first_value(zip) FROM clinical.patients GROUP BY site_id",
        // A patient table beside the aggregation.
        "SELECT p.zip, t.n FROM clinical.patients p JOIN (SELECT site_id, count(*) AS n FROM clinical.patients GROUP BY site_id) t ON t.site_id = p.site_id",
    ] {
        refused(&r, sql).await;
    }
    // EXPLAIN of a row-level statement too, and EXPLAIN ANALYZE of any
    // (its operators' row counts are cells before suppression).
    refused(&r, "EXPLAIN SELECT * FROM clinical.patients").await;
    refused(
        &r,
        "EXPLAIN ANALYZE SELECT count(*) FROM clinical.patients WHERE zip = '02100'",
    )
    .await;
    // The analyst, without the policy, runs the same statements.
    let a = connect_role(addr, "analyst", "operations").await;
    assert!(
        !rows(
            &a,
            "SELECT site_id, sex, count(*) FROM clinical.patients GROUP BY ROLLUP (site_id, sex)"
        )
        .await
        .is_empty()
    );
}

/// Generated groupings (seeded: `LAKEWARD_TEST_SEED` replays a run) over
/// every patient-keyed table, with filters that make cohorts of a few
/// patients: every answer the reporter gets is the oracle's, so no cell of
/// 1–10 patients is ever returned.
#[tokio::test(flavor = "multi_thread")]
async fn generated_groupings_never_return_a_cell_of_fewer_than_eleven_patients() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("LAKEWARD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("LAKEWARD_TEST_SEED={seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let addr = server().addr;
    let reporter = connect_role(addr, "reporter", "operations").await;
    let analyst = connect_role(addr, "analyst", "operations").await;
    let tables: [(&str, &[&str]); 4] = [
        (
            "clinical.patients",
            &[
                "sex",
                "site_id",
                "zip",
                "extract(year FROM birth_date)",
                "deceased",
            ],
        ),
        (
            "clinical.encounters",
            &[
                "site_id",
                "encounter_type",
                "primary_dx",
                "date_trunc('month', admit_ts)",
                "attending_npi",
            ],
        ),
        (
            "claims.claims",
            &[
                "payer",
                "status",
                "cpt_code",
                "site_id",
                "denial_reason",
                "date_trunc('year', service_date)",
            ],
        ),
        ("clinical.observations", &["loinc_code", "unit"]),
    ];
    let cases = std::env::var("LAKEWARD_GENERATED_GROUPINGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for _ in 0..cases {
        let (table, columns) = tables[rng.random_range(0..tables.len())];
        let n = rng.random_range(1..=columns.len().min(3));
        let mut groups: Vec<&str> = Vec::new();
        while groups.len() < n {
            let c = columns[rng.random_range(0..columns.len())];
            if !groups.contains(&c) {
                groups.push(c);
            }
        }
        let filter = match rng.random_range(0..4) {
            0 => String::new(),
            1 if table != "clinical.observations" => {
                format!(" WHERE site_id = 'S{:02}'", rng.random_range(1..=12))
            }
            1 | 2 => format!(" WHERE patient_id % {} = 0", rng.random_range(2..400)),
            _ => format!(
                " WHERE patient_id < (SELECT min(patient_id) + {} FROM clinical.patients)",
                rng.random_range(1..60)
            ),
        };
        let from = format!("{table}{filter}");
        if filter.contains("SELECT") {
            // A subquery over patient rows in a condition is refused.
            refused(&reporter, &format!("SELECT count(*) FROM {from}")).await;
            continue;
        }
        suppressed_like_the_oracle(&reporter, &analyst, &from, &groups, "patient_id", false).await;
    }
}

/// Differencing across statements is not refused, but flagged: a cohort's
/// count and the same cohort without one patient, by one reporter within
/// an hour, raise `aggregate_differencing` in `audit.unusual_access`.
#[tokio::test(flavor = "multi_thread")]
async fn a_cohort_and_the_cohort_without_one_patient_are_flagged() {
    let addr = server().addr;
    let user = "agg_differencer";
    let r = crate::audit::as_user(addr, user, "reporter", None, "operations").await;
    let analyst = connect_role(addr, "analyst", "operations").await;
    let one = rows(
        &analyst,
        "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 1",
    )
    .await[0][0]
        .clone()
        .unwrap();
    let all = rows(&r, "SELECT count(*) FROM clinical.patients").await;
    let without = rows(
        &r,
        &format!("SELECT count(*) FROM clinical.patients WHERE patient_id <> {one}"),
    )
    .await;
    assert_eq!(all.len(), 1);
    assert_eq!(without.len(), 1);
    let auditor = connect_role(addr, "auditor", "operations").await;
    let mut got = Vec::new();
    for _ in 0..100 {
        got = text_rows(
            &auditor,
            &format!(
                "SELECT signal, patient_count FROM audit.unusual_access WHERE \"user\" = '{user}'"
            ),
        )
        .await;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        got,
        vec![vec!["aggregate_differencing".to_owned(), "1".to_owned()]]
    );
}

/// The policy holds through the extended protocol, a transaction and a
/// portal read in pieces: a prepared row-level statement is refused at
/// execution, a prepared aggregate with a parameter is suppressed like
/// the simple one.
#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_and_portals_are_held_to_the_policy() {
    let addr = server().addr;
    let mut r = connect_role(addr, "reporter", "operations").await;
    let e = r
        .query(
            "SELECT patient_id FROM clinical.patients WHERE site_id = $1",
            &[&"S01"],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    let simple = rows(
        &r,
        "SELECT primary_dx, count(*) FROM clinical.encounters WHERE site_id = 'S02' GROUP BY primary_dx ORDER BY 1",
    )
    .await;
    let tx = r.transaction().await.unwrap();
    let stmt = tx
        .prepare(
            "SELECT primary_dx, count(*) FROM clinical.encounters WHERE site_id = $1 \
             GROUP BY primary_dx ORDER BY 1",
        )
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[&"S02"]).await.unwrap();
    let mut prepared = Vec::new();
    loop {
        let part = tx.query_portal(&portal, 2).await.unwrap();
        if part.is_empty() {
            break;
        }
        for row in part {
            let dx: Option<String> = row.get(0);
            let n: i64 = row.get(1);
            prepared.push(vec![dx, Some(n.to_string())]);
        }
    }
    tx.commit().await.unwrap();
    assert!(!prepared.is_empty());
    assert_eq!(prepared, simple);
}

/// The issue's statement through the real psql: the reporter's rows are
/// the analyst's groups of at least 11 patients plus the remainder row
/// (grouping columns empty), and a row-level query is refused.
#[test]
fn through_psql_a_reporter_gets_the_large_groups_and_the_remainder() {
    use crate::support::process::text;
    use crate::support::psql::{PsqlConn, psql};
    let port = server().port();
    let (r_token, a_token) = (
        crate::support::token("reporter", "reporter", None),
        crate::support::token("analyst", "analyst", None),
    );
    let reporter = PsqlConn::new(port, "reporter", &r_token, "operations");
    let analyst = PsqlConn::analyst(port, &a_token);
    let lines = |out: &std::process::Output| -> std::collections::BTreeSet<String> {
        assert!(out.status.success(), "{}", text(out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let got = lines(&psql(
        &reporter,
        &[
            "-c",
            "SELECT site_id, primary_dx, count(*) FROM clinical.encounters GROUP BY 1, 2",
        ],
    ));
    let large = lines(&psql(
        &analyst,
        &[
            "-c",
            &format!(
                "SELECT site_id, primary_dx, count(*) FROM clinical.encounters GROUP BY 1, 2 \
                 HAVING count(DISTINCT patient_id) >= {MIN}"
            ),
        ],
    ));
    let remainder: Vec<&String> = got.iter().filter(|l| l.starts_with("||")).collect();
    assert_eq!(remainder.len(), 1, "one remainder row: {got:?}");
    let released: std::collections::BTreeSet<String> = got
        .iter()
        .filter(|l| !l.starts_with("||"))
        .cloned()
        .collect();
    assert_eq!(released, large);
    let refused = psql(&reporter, &["-c", "SELECT * FROM clinical.patients"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("at least 11 patients"), "{err}");
    assert!(refused.stdout.is_empty());
}
