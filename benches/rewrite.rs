//! Criterion benchmark of lakeward's enforcement front end.
//!
//! - `rewrite_cold/*`: what a statement costs before DataFusion sees it:
//!   parse (PostgreSQL dialect, limits), the pipeline's classify (catalog
//!   dialect, gate) and rewrite (purpose, session functions, result names)
//!   steps, and the grant check that starts planning.
//! - `plan_cache_hit/*`: the cost of serving a statement already planned
//!   for the same SQL text, policy version and subject (key + lookup).
//! - `plan_cold/*`: the server's whole preparation (`lakeward::query`:
//!   classify, rewrite, access, planning over secured tables, verify,
//!   optimise once), for comparison (what a cache hit saves).
//!
//! Run with `cargo bench --bench rewrite`; results go to docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lakeward::enforce::{self, PlanKey};
use lakeward::engine::Engine;
use lakeward::policy::compile::Subject;
use lakeward::policy::{Policy, Purpose};
use lakeward::rewrite::gate::{self, ParseLimits, StatementKind};

const POINT: &str =
    "SELECT patient_id, last_name, birth_date FROM clinical.patients WHERE patient_id = $1";

/// About 400 characters: a three-way join with a CTE, a filter, grouping.
const JOIN: &str = "WITH recent AS (SELECT e.patient_id, e.encounter_id, e.primary_dx, e.site_id \
    FROM clinical.encounters e WHERE e.admit_ts >= TIMESTAMP '2023-01-01 00:00:00') \
    SELECT p.site_id, r.primary_dx, count(DISTINCT p.patient_id) AS patients, avg(o.value_num) AS mean_value \
    FROM clinical.patients p JOIN recent r ON r.patient_id = p.patient_id \
    LEFT JOIN clinical.observations o ON o.encounter_id = r.encounter_id AND o.loinc_code = '4548-4' \
    WHERE p.deceased = false GROUP BY p.site_id, r.primary_dx ORDER BY patients DESC LIMIT 50";

struct Fixture {
    engine: Engine,
    policy: Policy,
    subject: Subject,
    principal: lakeward::query::Principal,
    _dir: tempfile::TempDir,
}

fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        lakeward::datagen::generate(&lakeward::datagen::DatagenOptions {
            data_dir: dir.path().to_owned(),
            patients: 200,
            seed: 42,
        })
        .await
        .expect("datagen");
        let tables = lakeward::engine::tables::discover_tables(dir.path()).expect("tables");
        let engine = Engine::open(&tables).await.expect("engine");
        let policy = Policy::load(Some(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules"),
        ))
        .expect("policy");
        let subject = Subject {
            user: "analyst".into(),
            role: "analyst".into(),
            site: None,
            purpose: Purpose::Operations,
            break_glass: false,
        };
        let principal = lakeward::query::Principal::detached(
            Arc::new(policy.clone()),
            subject.clone(),
            "analyst",
        );
        Fixture {
            engine,
            policy,
            subject,
            principal,
            _dir: dir,
        }
    })
}

fn parse(sql: &str) -> Box<lakeward::query::Statement> {
    let stmt = gate::parse(sql, ParseLimits::default())
        .expect("parse")
        .remove(0);
    let StatementKind::Query(stmt) = lakeward::query::classify(stmt).expect("classify") else {
        panic!("a query");
    };
    stmt
}

/// The server's path for one statement text up to DataFusion planning.
fn rewrite(f: &Fixture, access: Option<&lakeward::policy::compile::AccessContext>, sql: &str) {
    let rewritten = lakeward::query::rewrite_query(&f.principal, parse(sql)).expect("rewrite");
    assert!(rewritten.reads_tables);
    let schema = f
        .principal
        .search_path
        .first()
        .map_or("public", String::as_str);
    enforce::check_grants(&f.engine, access, &rewritten.stmt, schema).expect("granted");
    black_box(rewritten);
}

/// A stand-in cache entry with a fixed weight (the lookup is what is timed).
#[derive(Clone)]
struct Entry(#[allow(dead_code)] Arc<String>);

impl enforce::CacheWeight for Entry {
    fn weight(&self) -> u32 {
        20 * 1024
    }
}

fn key(f: &Fixture, sql: &str) -> PlanKey {
    PlanKey {
        sql: Arc::from(sql),
        policy_version: f.policy.version.clone(),
        subject: Some(f.subject.clone()),
        search_path: f.principal.search_path.clone(),
        database: f.principal.facts.database.clone(),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let f = fixture(&rt);
    let access = enforce::access_for(&f.engine, &f.policy, Some(&f.subject));

    let mut cold = c.benchmark_group("rewrite_cold");
    cold.bench_function("point", |b| b.iter(|| rewrite(&f, access.as_ref(), POINT)));
    cold.bench_function("join_400", |b| {
        b.iter(|| rewrite(&f, access.as_ref(), JOIN))
    });
    cold.finish();

    // The cache holds planned statements; its hit path is key + lookup.
    let cache: enforce::PlanCache<Entry> = enforce::plan_cache(10_000, 128 << 20);
    for sql in [POINT, JOIN] {
        cache.insert(key(&f, sql), Entry(Arc::new(sql.to_owned())));
    }
    let mut hit = c.benchmark_group("plan_cache_hit");
    for (name, sql) in [("point", POINT), ("join_400", JOIN)] {
        hit.bench_function(name, |b| {
            b.iter(|| black_box(cache.get(&key(&f, black_box(sql))).expect("hit")))
        });
    }
    hit.finish();

    let mut plan = c.benchmark_group("plan_cold");
    for (name, sql) in [("point", POINT), ("join_400", JOIN)] {
        plan.bench_function(name, |b| {
            b.iter(|| {
                let planned = rt
                    .block_on(lakeward::query::plan_query(
                        &f.engine,
                        &f.principal,
                        parse(sql),
                    ))
                    .expect("plan");
                black_box(planned);
            })
        });
    }
    plan.finish();
}

criterion_group!(rewrite_benches, benches);
criterion_main!(rewrite_benches);
