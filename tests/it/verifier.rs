//! Defence in depth: the post-planning verifier refuses any client plan that
//! scans a table outside the policy barrier, and reports what a secured plan
//! touches.

use lakeward::enforce::{access_for, verify_plan};
use lakeward::policy::compile::Subject;
use lakeward::policy::{Policy, Purpose};
use lakeward::rewrite::gate::{ParseLimits, parse};

use crate::support::{data_dir, runtime};

#[test]
fn raw_scans_are_refused_and_secured_scans_are_reported() {
    let rt = runtime();
    let dir = data_dir().to_owned();
    std::thread::scope(|s| {
        s.spawn(|| {
            rt.block_on(async {
                let engine = lakeward::engine::Engine::open(&lakeward::engine::discover_tables(&dir).unwrap()).await.unwrap();
                let policy = Policy::load(None).unwrap();
                let sql = "SELECT p.last_name, c.payer FROM clinical.patients p JOIN claims.claims c USING (patient_id)";

                // A plan over the raw tables (never what a client gets) is refused.
                let raw_state = engine.state_for(None);
                let raw_plan = engine.plan(&raw_state, parse(sql, ParseLimits::default()).unwrap().remove(0)).await.unwrap();
                let e = verify_plan(&raw_plan, None, &policy.version).unwrap_err();
                assert_eq!(e.code, "XX000");

                // The same query through enforcement passes and is reported.
                let subject = Subject {
                    user: "u".into(),
                    role: "clinician".into(),
                    site: Some("S01".into()),
                    purpose: Purpose::Treatment,
                    break_glass: false,
                };
                assert!(access_for(&engine, &policy, Some(&subject)).is_some());
                let stmt = parse(sql, ParseLimits::default()).unwrap().remove(0);
                let lakeward::rewrite::gate::StatementKind::Query(stmt) = lakeward::query::classify(stmt).unwrap() else {
                    panic!("a query");
                };
                let principal = lakeward::query::Principal::detached(std::sync::Arc::new(policy.clone()), subject, "u");
                let report = lakeward::query::plan_query(&engine, &principal, stmt).await.unwrap().report;
                assert_eq!(report.tables, ["claims.claims", "clinical.patients"]);
                assert!(report.columns.contains(&"clinical.patients.last_name".to_string()), "{:?}", report.columns);
                assert!(report.rules.iter().any(|r| r == "filter:own_site"), "{:?}", report.rules);
                assert!(report.rules.iter().any(|r| r.starts_with("consent:treatment")), "{:?}", report.rules);
                assert_eq!(report.policy_version, policy.version);
            })
        })
        .join()
        .unwrap();
    });
}
