//! Unit tests of the handler's own logic: when a prepared plan, a cached
//! plan or an open portal no longer matches the session's access rules,
//! and when a re-planned statement may stand in for the original.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};

use super::prepare::plan_key_of;
use super::run::{needs_replanning, same_result_types};
use super::{Prepared, PreparedInner, PreparedKind, planning_key};
use crate::auth::Principal;
use crate::policy::Policy;
use crate::session::Session;

fn session(roles: &[&str], policy: Arc<Policy>) -> Session {
    let principal = Arc::new(Principal {
        user: "u".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        site: Some("S01".into()),
        purposes: vec![],
        expires_at: u64::MAX,
        family_name: None,
    });
    Session::new(
        principal,
        policy,
        "lakeward".into(),
        "127.0.0.1:1".parse().unwrap(),
        true,
    )
}

fn shipped() -> Arc<Policy> {
    Arc::new(Policy::load(None).unwrap())
}

/// The shipped policy under another version (as after a reload).
fn reloaded(policy: &Policy) -> Arc<Policy> {
    let mut p = policy.clone();
    p.version = format!("{}-next", p.version);
    Arc::new(p)
}

/// A plan prepared for the session's access rules now.
fn plan_for(s: &Session) -> Prepared {
    let plan = LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: true,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    });
    let state = Arc::new(SessionStateBuilder::new().build());
    Prepared(
        Arc::new(PreparedInner {
            planned_for: planning_key(s),
            ..PreparedInner::new(
                PreparedKind::Plan {
                    plan,
                    state,
                    optimised: false,
                },
                "SELECT",
                "SELECT ?",
            )
        }),
        None,
    )
}

#[test]
fn a_plan_is_replanned_when_purpose_break_glass_or_policy_change() {
    let policy = shipped();
    let s = session(&["clinician", "analyst"], policy.clone());
    s.set("lakeward.role", Some("clinician".into())).unwrap();
    s.set("lakeward.purpose", Some("treatment".into())).unwrap();
    let p = plan_for(&s);
    assert!(!needs_replanning(&p, &s), "same rules: reused");
    s.set("application_name", Some("dashboard".into())).unwrap();
    assert!(
        !needs_replanning(&p, &s),
        "a setting outside the access rules"
    );

    s.set(
        "lakeward.break_glass",
        Some("patient 4471 coded in the emergency department".into()),
    )
    .unwrap();
    assert!(needs_replanning(&p, &s), "break-glass declared");
    s.reset(Some("lakeward.break_glass")).unwrap();
    assert!(!needs_replanning(&p, &s), "back to the planned rules");

    s.set_policy(reloaded(&policy));
    assert!(needs_replanning(&p, &s), "policy reloaded");

    // The role is fixed once a purpose is declared; the purpose is not.
    let a = session(&["analyst"], policy);
    a.set("lakeward.purpose", Some("payment".into())).unwrap();
    let q = plan_for(&a);
    assert!(needs_replanning(&p, &a), "another role's plan");
    assert!(!needs_replanning(&q, &a));
    a.set("lakeward.purpose", Some("operations".into()))
        .unwrap();
    assert!(needs_replanning(&q, &a), "purpose changed");
    a.set("lakeward.purpose", Some("payment".into())).unwrap();
    assert!(!needs_replanning(&q, &a));
}

#[test]
fn a_plan_prepared_before_a_purpose_is_replanned_once_one_is_declared() {
    let s = session(&["clinician"], shipped());
    let p = plan_for(&s);
    assert_eq!(p.0.planned_for, None, "no subject without a purpose");
    s.set("lakeward.purpose", Some("treatment".into())).unwrap();
    assert!(needs_replanning(&p, &s));
}

#[test]
fn utility_statements_are_never_replanned() {
    let s = session(&["clinician"], shipped());
    let p = Prepared(
        Arc::new(PreparedInner::new(
            PreparedKind::Utility(crate::rewrite::gate::StatementKind::Begin),
            "BEGIN",
            "BEGIN",
        )),
        None,
    );
    s.set("lakeward.purpose", Some("treatment".into())).unwrap();
    assert!(!needs_replanning(&p, &s));
}

#[test]
fn the_plan_cache_key_separates_subjects_search_paths_and_policies() {
    let policy = shipped();
    let a = session(&["clinician"], policy.clone());
    let b = session(&["clinician"], policy.clone());
    for s in [&a, &b] {
        s.set("lakeward.purpose", Some("treatment".into())).unwrap();
    }
    let sql = "SELECT count(*) FROM clinical.patients";
    assert_eq!(
        plan_key_of(&a, sql),
        plan_key_of(&b, sql),
        "two sessions with the same rules share a plan"
    );
    assert_ne!(plan_key_of(&a, sql), plan_key_of(&a, "SELECT 1"));

    b.set("search_path", Some("clinical".into())).unwrap();
    assert_ne!(plan_key_of(&a, sql), plan_key_of(&b, sql), "search_path");
    b.reset(Some("search_path")).unwrap();
    assert_eq!(plan_key_of(&a, sql), plan_key_of(&b, sql));

    b.set(
        "lakeward.break_glass",
        Some("unconscious patient arriving by ambulance".into()),
    )
    .unwrap();
    assert_ne!(plan_key_of(&a, sql), plan_key_of(&b, sql), "break-glass");
    b.reset(Some("lakeward.break_glass")).unwrap();

    b.set_policy(reloaded(&policy));
    assert_ne!(plan_key_of(&a, sql), plan_key_of(&b, sql), "policy");

    let other_site = {
        let principal = Arc::new(Principal {
            user: "u".into(),
            roles: vec!["clinician".into()],
            site: Some("S02".into()),
            purposes: vec![],
            expires_at: u64::MAX,
            family_name: None,
        });
        Session::new(
            principal,
            policy,
            "lakeward".into(),
            "127.0.0.1:1".parse().unwrap(),
            true,
        )
    };
    other_site
        .set("lakeward.purpose", Some("treatment".into()))
        .unwrap();
    assert_ne!(plan_key_of(&a, sql), plan_key_of(&other_site, sql), "site");
}

#[test]
fn a_replanned_statement_stands_in_only_with_the_same_column_types() {
    let schema = |fields: Vec<Field>| Some(Arc::new(Schema::new(fields)));
    let text = schema(vec![Field::new("ssn", DataType::Utf8, false)]);
    // A mask that became NULL keeps the column's type, nullable or not.
    let nulled = schema(vec![Field::new("ssn", DataType::Utf8, true)]);
    let view = schema(vec![Field::new("ssn", DataType::Utf8View, true)]);
    let number = schema(vec![Field::new("ssn", DataType::Int64, true)]);
    let two = schema(vec![
        Field::new("ssn", DataType::Utf8, false),
        Field::new("x", DataType::Utf8, false),
    ]);
    assert!(same_result_types(&text, &nulled));
    assert!(same_result_types(&text, &view), "both are PostgreSQL text");
    assert!(!same_result_types(&text, &number));
    assert!(!same_result_types(&text, &two));
    assert!(!same_result_types(&text, &None));
    assert!(same_result_types(&None, &None));
}
