//! Unit tests of the statement gate.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{ObjectName, Query, Visit, Visitor};

use crate::error::SqlError;

use super::*;

fn kind(sql: &str) -> Result<StatementKind, SqlError> {
    let mut stmts = parse(sql, ParseLimits::default())?;
    assert_eq!(stmts.len(), 1);
    classify(stmts.remove(0))
}

#[test]
fn queries_and_session_statements_pass() {
    assert!(matches!(kind("SELECT 1").unwrap(), StatementKind::Query(_)));
    assert!(matches!(
        kind("WITH a AS (SELECT 1) SELECT * FROM a").unwrap(),
        StatementKind::Query(_)
    ));
    assert!(matches!(
        kind("VALUES (1)").unwrap(),
        StatementKind::Query(_)
    ));
    assert!(matches!(
        kind("EXPLAIN SELECT 1").unwrap(),
        StatementKind::Explain(_)
    ));
    assert!(matches!(kind("BEGIN").unwrap(), StatementKind::Begin));
    assert!(matches!(kind("COMMIT").unwrap(), StatementKind::Commit));
    match kind("SET application_name = 'x'").unwrap() {
        StatementKind::Set { name, value, local } => {
            assert_eq!(name, "application_name");
            assert_eq!(value.as_deref(), Some("x"));
            assert!(!local);
        }
        k => panic!("{k:?}"),
    }
    match kind("SET LOCAL lakeward.break_glass = 'x'").unwrap() {
        StatementKind::Set { name, local, .. } => {
            assert_eq!(name, "lakeward.break_glass");
            assert!(local, "SET LOCAL ends with its transaction");
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        kind("DISCARD ALL").unwrap(),
        StatementKind::DiscardAll
    ));
    assert!(matches!(
        kind("DISCARD PLANS").unwrap(),
        StatementKind::NoOp { .. }
    ));
    assert!(matches!(
        kind("DEALLOCATE ALL").unwrap(),
        StatementKind::Deallocate { name: None }
    ));
    match kind("DEALLOCATE PREPARE s1").unwrap() {
        StatementKind::Deallocate { name } => assert_eq!(name.as_deref(), Some("s1")),
        k => panic!("{k:?}"),
    }
    match kind("ROLLBACK TO SAVEPOINT Sp").unwrap() {
        StatementKind::RollbackTo { name } => assert_eq!(name, "sp"),
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        kind("RELEASE sp").unwrap(),
        StatementKind::Release { .. }
    ));
    match kind("SET extra_float_digits TO DEFAULT").unwrap() {
        StatementKind::Set { value, .. } => assert!(value.is_none()),
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        kind("SHOW search_path").unwrap(),
        StatementKind::Show { .. }
    ));
    match kind("SHOW lakeward.purpose").unwrap() {
        StatementKind::Show { name } => assert_eq!(name, "lakeward.purpose"),
        k => panic!("{k:?}"),
    }
}

#[test]
fn writes_and_ddl_are_refused() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "CREATE TABLE t (a int)",
        "DROP TABLE t",
        "COPY t FROM '/etc/passwd'",
        "COPY t TO '/tmp/x'",
        "COPY t FROM STDIN",
        "SELECT * INTO newt FROM t",
    ] {
        let e = kind(sql).unwrap_err();
        assert!(e.code == "42501" || e.code == "0A000", "{sql}: {e:?}");
    }
}

#[test]
fn copy_to_stdout_is_a_query_and_every_other_copy_is_refused() {
    match kind("COPY clinical.patients (patient_id, ssn) TO STDOUT").unwrap() {
        StatementKind::Copy { query, options } => {
            assert_eq!(
                query.to_string(),
                "SELECT patient_id, ssn FROM clinical.patients"
            );
            assert_eq!(options.format, super::CopyFormat::Text);
            assert_eq!((options.delimiter, options.null.as_str()), (b'\t', "\\N"));
        }
        k => panic!("{k:?}"),
    }
    match kind("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'x')")
        .unwrap()
    {
        StatementKind::Copy { options, .. } => {
            assert_eq!(options.format, super::CopyFormat::Csv);
            assert!(options.header);
            assert_eq!((options.delimiter, options.null.as_str()), (b';', "x"));
            assert_eq!((options.quote, options.escape), (b'"', b'"'));
        }
        k => panic!("{k:?}"),
    }
    match kind("COPY (SELECT 1) TO STDOUT WITH BINARY").unwrap() {
        StatementKind::Copy { options, .. } => {
            assert_eq!(options.format, super::CopyFormat::Binary)
        }
        k => panic!("{k:?}"),
    }
    for (sql, code) in [
        ("COPY clinical.patients FROM STDIN", "42501"),
        ("COPY clinical.patients TO '/tmp/x'", "42501"),
        ("COPY (SELECT 1) TO PROGRAM 'cat'", "42501"),
        (
            "COPY (SELECT 1) TO STDOUT (FORMAT binary, DELIMITER ',')",
            "42601",
        ),
        (
            "COPY (SELECT 1) TO STDOUT (FORMAT csv, FORMAT text)",
            "42601",
        ),
        ("COPY (SELECT 1) TO STDOUT (ESCAPE '!')", "0A000"),
        ("COPY (SELECT 1) TO STDOUT (FREEZE)", "0A000"),
        (
            "COPY (SELECT 1) TO STDOUT (FORMAT csv, DELIMITER '\"')",
            "22023",
        ),
        ("COPY (SELECT 1) TO STDOUT (DELIMITER 'ab')", "42601"),
        (
            "COPY (SELECT * FROM pg_read_file('/etc/passwd')) TO STDOUT",
            "42501",
        ),
    ] {
        let e = kind(sql).unwrap_err();
        assert_eq!(e.code, code, "{sql}: {e:?}");
    }
}

#[test]
fn cursors_are_forward_only() {
    match kind("DECLARE \"C\" NO SCROLL CURSOR WITH HOLD FOR SELECT 1").unwrap() {
        StatementKind::Declare { name, .. } => assert_eq!(name, "C"),
        k => panic!("{k:?}"),
    }
    match kind("FETCH FORWARD 100 FROM c").unwrap() {
        StatementKind::Fetch { name, count } => {
            assert_eq!(name, "c");
            assert_eq!(count, Some(100));
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        kind("FETCH ALL FROM c").unwrap(),
        StatementKind::Fetch { count: None, .. }
    ));
    assert!(matches!(
        kind("CLOSE ALL").unwrap(),
        StatementKind::Close { name: None }
    ));
    assert_eq!(kind("FETCH BACKWARD 1 FROM c").unwrap_err().code, "0A000");
    assert_eq!(
        kind("DECLARE c CURSOR FOR SELECT * FROM read_parquet('/x')")
            .unwrap_err()
            .code,
        "42501"
    );
}

#[test]
fn file_reads_and_table_functions_are_refused() {
    for sql in [
        "SELECT * FROM read_parquet('/etc/x')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM \"/tmp/data.csv\"",
        "SELECT * FROM generate_series(1, 10)",
        "SELECT * FROM UNNEST(ARRAY[1])",
    ] {
        let e = kind(sql).unwrap_err();
        assert_eq!(e.code, "42501", "{sql}: {e:?}");
    }
}

#[test]
fn table_reads_are_detected_but_ctes_are_not_tables() {
    let reads = |sql: &str| reads_tables(&parse(sql, ParseLimits::default()).unwrap()[0]);
    assert!(!reads("SELECT 1"));
    assert!(!reads("WITH a AS (SELECT 1 AS x) SELECT * FROM a"));
    assert!(reads(
        "WITH a AS (SELECT * FROM clinical.patients) SELECT * FROM a"
    ));
    assert!(reads("SELECT (SELECT count(*) FROM claims.claims)"));
    // A CTE named like a table shadows it only inside its own query.
    let scoped = referenced_tables(
        &parse("SELECT count(*) FROM patients WHERE EXISTS (WITH patients AS (SELECT 1 AS x) SELECT x FROM patients)", ParseLimits::default()).unwrap()[0],
        "clinical",
    );
    assert_eq!(
        scoped,
        vec![TableRef {
            schema_table: Some(("clinical".into(), "patients".into()))
        }]
    );
    let refs =
        |sql: &str| referenced_tables(&parse(sql, ParseLimits::default()).unwrap()[0], "clinical");
    assert_eq!(
        refs("SELECT * FROM Patients, \"Claims\".claims, datafusion.CLINICAL.encounters"),
        vec![
            TableRef {
                schema_table: Some(("clinical".into(), "patients".into()))
            },
            TableRef {
                schema_table: Some(("Claims".into(), "claims".into()))
            },
            TableRef {
                schema_table: Some(("clinical".into(), "encounters".into()))
            },
        ]
    );
}

#[test]
fn a_quoted_name_with_a_dot_is_a_cte_in_scope_or_refused() {
    assert!(matches!(
        kind("WITH \"a.b\" AS (SELECT 1 AS x) SELECT x FROM \"a.b\"").unwrap(),
        StatementKind::Query(_)
    ));
    for sql in [
        "SELECT * FROM \"clinical.patients\"",
        "SELECT * FROM (WITH \"a.b\" AS (SELECT 1) SELECT 1) s, \"a.b\"",
        "WITH \"a.b\" AS (SELECT 1 AS x) SELECT x FROM \"/etc/passwd\"",
        "WITH \"/etc/passwd\" AS (SELECT 1 AS x) SELECT x FROM \"/etc/passwd\"",
    ] {
        assert_eq!(kind(sql).unwrap_err().code, "42501", "{sql}");
    }
    // The two-part name is the table, never the CTE.
    let refs = referenced_tables(
        &parse(
            "WITH \"clinical.patients\" AS (SELECT 1) SELECT * FROM clinical.patients",
            ParseLimits::default(),
        )
        .unwrap()[0],
        "public",
    );
    assert_eq!(
        refs,
        vec![TableRef {
            schema_table: Some(("clinical".into(), "patients".into()))
        }]
    );
}

#[test]
fn exact_cte_scopes_follow_the_planner() {
    // Which one-part relation names are CTEs under exact scoping.
    fn ctes(sql: &str) -> Vec<(String, bool)> {
        struct V(CteScopes, Vec<(String, bool)>);
        impl Visitor for V {
            type Break = ();
            fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
                self.0.enter(q);
                ControlFlow::Continue(())
            }
            fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
                self.0.leave(q);
                ControlFlow::Continue(())
            }
            fn pre_visit_relation(&mut self, n: &ObjectName) -> ControlFlow<()> {
                let name = n.to_string();
                let is_cte = self.0.contains(&name);
                self.1.push((name, is_cte));
                ControlFlow::Continue(())
            }
        }
        let mut v = V(CteScopes::exact(), vec![]);
        let _ = parse(sql, ParseLimits::default()).unwrap()[0].visit(&mut v);
        v.1
    }
    let pairs = |v: &[(&str, bool)]| {
        v.iter()
            .map(|(n, b)| ((*n).to_owned(), *b))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ctes("WITH a AS (SELECT * FROM a), b AS (SELECT * FROM a, b) SELECT * FROM a, b"),
        pairs(&[
            ("a", false),
            ("a", true),
            ("b", false),
            ("a", true),
            ("b", true)
        ])
    );
    assert_eq!(
        ctes("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r"),
        pairs(&[("r", false), ("r", true)])
    );
    assert_eq!(
        ctes("SELECT * FROM (WITH a AS (SELECT 1) SELECT * FROM a) s, a"),
        pairs(&[("a", true), ("a", false)])
    );
}

#[test]
fn internal_mask_functions_cannot_be_called() {
    for sql in [
        "SELECT lakeward_pseudonym(1)",
        "SELECT 1 WHERE LAKEWARD_zip3('x') IS NULL",
    ] {
        assert_eq!(kind(sql).unwrap_err().code, "42883", "{sql}");
    }
}

#[test]
fn deep_nesting_is_refused_not_crashed() {
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(kind(&deep).unwrap_err().code, "54001");
    let chain = format!("SELECT 1{}", " + 1".repeat(10_000));
    assert_eq!(kind(&chain).unwrap_err().code, "54001");
}

#[test]
fn syntax_errors_do_not_echo_text() {
    let e = kind("SELECT * FRM secret_value_xyz").unwrap_err();
    assert_eq!(e.code, "42601");
    assert!(!e.message.contains("secret_value_xyz"), "{}", e.message);
}
