//! Unit tests of sessions, settings and transaction blocks.

use super::options::parse_options;
use super::*;

fn session_with(roles: &[&str], purposes: &[&str]) -> Session {
    let principal = Arc::new(Principal {
        user: "u".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        site: Some("S01".into()),
        purposes: purposes.iter().map(|r| r.to_string()).collect(),
        expires_at: u64::MAX,
        family_name: None,
    });
    let policy = Arc::new(Policy::load(None).unwrap());
    Session::new(
        principal,
        policy,
        "d".into(),
        "127.0.0.1:1".parse().unwrap(),
        true,
    )
}

fn session() -> Session {
    session_with(&["clinician"], &[])
}

#[test]
fn purposes_follow_role_and_token() {
    let s = session();
    assert_eq!(
        s.set("lakeward.purpose", Some("research".into()))
            .unwrap_err()
            .code,
        "42501"
    );
    s.set("lakeward.purpose", Some("treatment".into())).unwrap();
    assert_eq!(s.show("lakeward.purpose").unwrap(), "treatment");
    let narrowed = session_with(&["analyst"], &["payment"]);
    narrowed
        .set("lakeward.purpose", Some("payment".into()))
        .unwrap();
    assert_eq!(
        narrowed
            .set("lakeward.purpose", Some("operations".into()))
            .unwrap_err()
            .code,
        "42501"
    );
    let two = session_with(&["analyst", "researcher"], &[]);
    assert_eq!(
        two.set("lakeward.purpose", Some("research".into()))
            .unwrap_err()
            .code,
        "42501"
    );
    two.set("lakeward.role", Some("researcher".into())).unwrap();
    two.set("lakeward.purpose", Some("research".into()))
        .unwrap();
}

#[test]
fn break_glass_needs_role_and_justification() {
    let s = session();
    assert_eq!(
        s.set("lakeward.break_glass", Some("too short".into()))
            .unwrap_err()
            .code,
        "22023"
    );
    s.set(
        "lakeward.break_glass",
        Some("patient unconscious in ED, bay 4".into()),
    )
    .unwrap();
    assert!(
        s.show("lakeward.break_glass")
            .unwrap()
            .starts_with("patient")
    );
    s.reset(Some("lakeward.break_glass")).unwrap();
    assert_eq!(s.show("lakeward.break_glass").unwrap(), "off");
    let analyst = session_with(&["analyst"], &[]);
    assert_eq!(
        analyst
            .set(
                "lakeward.break_glass",
                Some("patient unconscious in ED, bay 4".into())
            )
            .unwrap_err()
            .code,
        "42501"
    );
}

#[test]
fn set_show_reset_round_trip() {
    let s = session();
    s.set("application_name", Some("psql".into())).unwrap();
    assert_eq!(s.show("application_name").unwrap(), "psql");
    s.set("Extra_Float_Digits", Some("3".into())).unwrap();
    assert_eq!(s.show("extra_float_digits").unwrap(), "3");
    s.reset(None).unwrap();
    assert_eq!(s.show("extra_float_digits").unwrap(), "1");
}

#[test]
fn engine_and_unknown_settings_are_refused() {
    let s = session();
    assert_eq!(
        s.set("datafusion.execution.batch_size", Some("1".into()))
            .unwrap_err()
            .code,
        "42501"
    );
    assert_eq!(
        s.set("no_such_thing", Some("1".into())).unwrap_err().code,
        "42704"
    );
    assert_eq!(
        s.set("server_version", Some("1".into())).unwrap_err().code,
        "55P02"
    );
    assert_eq!(
        s.set("timezone", Some("Europe/Paris".into()))
            .unwrap_err()
            .code,
        "22023"
    );
}

const WHY: &str = "patient unconscious in ED, bay 4";

fn treating() -> Session {
    let s = session();
    s.set("lakeward.purpose", Some("treatment".into())).unwrap();
    s
}

#[test]
fn set_local_ends_with_the_transaction() {
    let s = treating();
    assert!(
        !s.set_local("lakeward.break_glass", Some(WHY.into()))
            .unwrap()
    );
    assert_eq!(
        s.break_glass(),
        None,
        "SET LOCAL outside a block does nothing"
    );
    for commit in [true, false] {
        assert!(s.begin_transaction());
        assert!(
            s.set_local("lakeward.break_glass", Some(WHY.into()))
                .unwrap()
        );
        s.set_local("application_name", Some("local".into()))
            .unwrap();
        assert_eq!(s.break_glass().as_deref(), Some(WHY));
        s.end_transaction(commit);
        assert_eq!(s.break_glass(), None, "commit = {commit}");
        assert_eq!(s.show("application_name").unwrap(), "");
    }
}

#[test]
fn a_rolled_back_set_is_undone_and_a_committed_one_stays() {
    let s = treating();
    s.begin_transaction();
    s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
    s.set("lakeward.purpose", None).unwrap();
    s.end_transaction(false);
    assert_eq!(s.break_glass(), None);
    assert_eq!(s.purpose(), Some(Purpose::Treatment));
    s.begin_transaction();
    s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
    s.set_local("application_name", Some("x".into())).unwrap();
    s.end_transaction(true);
    assert_eq!(s.break_glass().as_deref(), Some(WHY));
    assert_eq!(s.show("application_name").unwrap(), "");
    // A session-level SET after a LOCAL one of the same name wins.
    s.begin_transaction();
    s.set_local("application_name", Some("local".into()))
        .unwrap();
    s.set("application_name", Some("session".into())).unwrap();
    s.end_transaction(true);
    assert_eq!(s.show("application_name").unwrap(), "session");
}

#[test]
fn savepoints_restore_settings() {
    let s = treating();
    assert_eq!(s.savepoint("a").unwrap_err().code, "25P01");
    s.begin_transaction();
    s.savepoint("a").unwrap();
    s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
    s.savepoint("b").unwrap();
    s.reset(Some("lakeward.break_glass")).unwrap();
    s.rollback_to_savepoint("b").unwrap();
    assert_eq!(s.break_glass().as_deref(), Some(WHY));
    s.rollback_to_savepoint("a").unwrap();
    assert_eq!(s.break_glass(), None);
    assert_eq!(s.rollback_to_savepoint("b").unwrap_err().code, "3B001");
    s.release_savepoint("a").unwrap();
    assert_eq!(s.release_savepoint("a").unwrap_err().code, "3B001");
    s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
    s.end_transaction(true);
    assert_eq!(s.break_glass().as_deref(), Some(WHY));
}

#[test]
fn reset_all_and_discard_all_end_purpose_and_break_glass() {
    let s = treating();
    s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
    s.reset(None).unwrap();
    assert_eq!((s.purpose(), s.break_glass()), (None, None));
    let s = treating();
    s.set("lakeward.break_glass", Some(WHY.into())).unwrap();
    s.begin_transaction();
    assert_eq!(s.discard_all().unwrap_err().code, "25001");
    s.end_transaction(false);
    s.discard_all().unwrap();
    assert_eq!((s.purpose(), s.break_glass()), (None, None));
    assert_eq!(s.role().as_deref(), Some("clinician"), "the role stays");
}

#[test]
fn a_justification_counts_letters_and_digits_only() {
    let s = session();
    let zero_width = "\u{200B}".repeat(20);
    let dots = ".".repeat(40);
    for bad in [
        zero_width.as_str(),
        dots.as_str(),
        "a\u{200B}b\u{200B}c\u{200B}d\u{200B}",
    ] {
        assert_eq!(
            s.set("lakeward.break_glass", Some(bad.into()))
                .unwrap_err()
                .code,
            "22023"
        );
    }
    assert_eq!(s.break_glass(), None);
}

#[test]
fn libpq_options_are_parsed() {
    let o = parse_options("-c search_path=clinical --application-name=x\\ y").unwrap();
    assert_eq!(
        o,
        vec![
            ("search_path".into(), "clinical".into()),
            ("application_name".into(), "x y".into())
        ]
    );
    assert!(parse_options("garbage").is_err());
}

#[test]
fn client_encoding_names_are_compared_as_postgresql_cleans_them() {
    let s = session();
    for ok in ["UTF8", "utf-8", "'utf-8'", "Unicode", "utf_8"] {
        s.set("client_encoding", Some(ok.into()))
            .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
    }
    for bad in ["latin1", "SQL_ASCII", "utf16"] {
        assert_eq!(
            s.set("client_encoding", Some(bad.into())).unwrap_err().code,
            "22023",
            "{bad}"
        );
    }
}
