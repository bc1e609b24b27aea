//! Unit tests of the catalog dialect rewrites.

use super::like::backslash_pattern;
use super::*;
use crate::rewrite::gate::{ParseLimits, parse};

fn stmt(sql: &str) -> Statement {
    parse(sql, ParseLimits::default()).unwrap().remove(0)
}

#[test]
fn only_catalog_statements_are_rewritten() {
    let mut s = stmt(
        "SELECT (SELECT count(*) FROM claims.claims c WHERE c.patient_id = p.patient_id) FROM clinical.patients p",
    );
    let before = s.to_string();
    assert!(!rewrite_catalog_statement(&mut s));
    assert_eq!(s.to_string(), before);

    let mut s = stmt(
        "SELECT c.relname FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(patients)$' COLLATE pg_catalog.default",
    );
    assert!(rewrite_catalog_statement(&mut s));
    let text = s.to_string();
    assert!(text.contains("pg_catalog.pg_class"), "{text}");
    assert!(!text.contains("COLLATE"), "{text}");
    assert!(is_catalog_statement(&stmt(
        "SELECT 'clinical.patients'::regclass"
    )));
    assert!(is_catalog_statement(&stmt(
        "SELECT * FROM information_schema.tables"
    )));
    assert!(!is_catalog_statement(&stmt(
        "SELECT * FROM clinical.patients"
    )));
    let mut s = stmt(
        "SELECT array_to_string(array(select rolname from pg_catalog.pg_roles where oid = 1 order by 1), ',')",
    );
    assert!(rewrite_catalog_statement(&mut s));
    let text = s.to_string();
    assert!(
        text.contains("(SELECT array_agg(rolname ORDER BY rolname) FROM"),
        "{text}"
    );
}

#[test]
fn statements_that_read_other_relations_are_never_catalog_statements() {
    for sql in [
        "SELECT count(*) FROM clinical.patients, generate_series(1,3) WHERE 'x'::regclass IS NULL",
        "SELECT pg_catalog.version(), count(*) FROM clinical.patients",
        "SELECT (SELECT count(*) FROM claims.claims c WHERE c.patient_id = p.patient_id) FROM clinical.patients p WHERE 'x'::regclass IS NULL",
        "SELECT c.relname FROM pg_catalog.pg_class c WHERE EXISTS (SELECT 1 FROM clinical.patients)",
        "SELECT * FROM pg_catalog.pg_class, patients",
        // A CTE's own body does not see it: the inner `patients` is a table.
        "WITH patients AS (SELECT * FROM patients) SELECT * FROM patients, pg_catalog.pg_class",
        "SELECT * FROM pg_catalog.pg_class, (SELECT 1 FROM generate_series(1, (SELECT count(*) FROM clinical.patients)))",
    ] {
        let mut s = stmt(sql);
        let before = s.to_string();
        assert!(is_catalog_statement(&s), "{sql}");
        assert!(!rewrite_catalog_statement(&mut s), "{sql}");
        assert_eq!(s.to_string(), before, "{sql}");
    }
    for sql in [
        "SELECT 'clinical.patients'::regclass",
        "SELECT pg_catalog.version()",
        "WITH t AS (SELECT relname FROM pg_catalog.pg_class) SELECT * FROM t, generate_series(1, 2)",
        "SELECT * FROM pg_get_keywords()",
        "SELECT string_agg(word, ',') FROM pg_catalog.pg_get_keywords()",
        "SELECT * FROM information_schema.tables WHERE table_schema = 'clinical'",
        // Which table functions run is the gate's call.
        "SELECT * FROM pg_catalog.pg_class, string_to_array('a,b', ',') s",
    ] {
        assert!(reads_only_system_relations(&stmt(sql)), "{sql}");
    }
    let mut s = stmt("SELECT * FROM pg_catalog.pg_class, read_parquet('/x')");
    assert!(rewrite_catalog_statement(&mut s));
    assert_eq!(
        crate::rewrite::gate::classify_catalog(s).unwrap_err().code,
        "42501"
    );
}

#[test]
fn like_escapes_become_backslash_escapes() {
    let rewritten = |sql: &str| {
        let mut s = stmt(sql);
        portable_like(&mut s);
        s.to_string()
    };
    assert_eq!(
        rewritten("SELECT n FROM t WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'"),
        r"SELECT n FROM t WHERE n NOT LIKE 'pg\_%'"
    );
    // A backslash is an ordinary character under another escape, and
    // an escaped escape is the character itself.
    assert_eq!(
        rewritten(r"SELECT 1 WHERE a ILIKE 'x\y!!z!%' ESCAPE '!'"),
        r"SELECT 1 WHERE a ILIKE 'x\\y!z\%'"
    );
    assert_eq!(backslash_pattern("a%b", None).as_deref(), Some("a%b"));
    assert_eq!(backslash_pattern(r"a\b", None).as_deref(), Some(r"a\\b"));
    // A pattern ending in the escape is left for the engine to refuse; a
    // pattern known only at run time goes through like_escape.
    assert_eq!(backslash_pattern("ab/", Some('/')), None);
    assert_eq!(
        rewritten("SELECT 1 FROM t WHERE a LIKE b ESCAPE '/'"),
        "SELECT 1 FROM t WHERE a LIKE like_escape(b, '/')"
    );
    assert_eq!(
        rewritten("SELECT 1 WHERE a NOT LIKE $1::VARCHAR || '%' ESCAPE '/'"),
        "SELECT 1 WHERE a NOT LIKE like_escape($1::VARCHAR || '%', '/')"
    );
}

#[test]
fn set_returning_catalog_functions_are_translated() {
    let mut s = stmt(
        "SELECT k.ord FROM (SELECT unnest(ix.indkey) AS attnum, generate_subscripts(ix.indkey, 1) AS ord FROM pg_index ix) k",
    );
    assert!(rewrite_catalog_statement(&mut s));
    let text = s.to_string();
    assert!(
        text.contains("unnest(generate_series(1, array_length(ix.indkey, 1))) AS ord"),
        "{text}"
    );
    let mut s = stmt(
        "SELECT col_description(format('%I.%I', c.table_schema, c.table_name)::regclass, 1) FROM information_schema.columns c",
    );
    assert!(rewrite_catalog_statement(&mut s));
    let text = s.to_string();
    assert!(text.contains("CAST(NULL AS TEXT)"), "{text}");
    assert!(!text.contains("regclass"), "{text}");
}

#[test]
fn selects_over_empty_catalogs_answer_no_rows() {
    let mut s = stmt(
        "SELECT pol.polname, pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') AS roles FROM pg_catalog.pg_policy pol WHERE pol.polrelid = '1' ORDER BY 1",
    );
    assert!(rewrite_catalog_statement(&mut s));
    assert_eq!(
        s.to_string(),
        "SELECT NULL AS \"polname\", NULL AS \"roles\" WHERE false"
    );
    let mut s = stmt("SELECT count(*) FROM pg_catalog.pg_policy");
    assert!(rewrite_catalog_statement(&mut s));
    assert!(s.to_string().contains("FROM pg_catalog.pg_policy"), "{s}");
}

#[test]
fn result_columns_are_named_like_postgres() {
    let mut s = stmt(
        "SELECT count(*), site_id, sum(x)::int, 1 + 1, p.a, CASE WHEN true THEN 1 END, max(y) AS m, min(z), min(w) FROM t p",
    );
    let names = postgres_column_names(&mut s);
    assert_eq!(
        s.to_string(),
        "SELECT count(*) AS \"count\", site_id, sum(x)::INT AS \"sum\", 1 + 1 AS \"?column?\", p.a, CASE WHEN true THEN 1 END AS \"case\", max(y) AS m, min(z) AS \"__lakeward_result_7\", min(w) AS \"__lakeward_result_8\" FROM t p"
    );
    assert_eq!(names.shown_as("__lakeward_result_7"), Some("min"));
    assert_eq!(names.shown_as("__lakeward_result_8"), Some("min"));
    assert_eq!(names.shown_as("m"), None);
}

#[test]
fn duplicate_and_wildcard_neighbours_are_planned_under_internal_aliases() {
    let mut s = stmt("SELECT *, ssn, p.* FROM t p");
    let names = postgres_column_names(&mut s);
    assert_eq!(
        s.to_string(),
        "SELECT *, ssn AS \"__lakeward_result_1\", p.* FROM t p"
    );
    assert_eq!(names.shown_as("__lakeward_result_1"), Some("ssn"));
    let mut s = stmt(
        "SELECT (SELECT count(*) FROM a), (SELECT max(x) AS top FROM b), EXISTS (SELECT 1 FROM c), 1 AS x, 2 AS x",
    );
    let names = postgres_column_names(&mut s);
    assert_eq!(
        s.to_string(),
        "SELECT (SELECT count(*) FROM a) AS \"count\", (SELECT max(x) AS top FROM b) AS \"top\", EXISTS (SELECT 1 FROM c) AS \"exists\", 1 AS \"__lakeward_result_3\", 2 AS \"__lakeward_result_4\""
    );
    assert_eq!(names.shown_as("__lakeward_result_4"), Some("x"));
}

#[test]
fn an_untyped_array_parameter_is_read_as_an_array_literal() {
    // ADBC's table listing binds `{"p", "f", …}` as untyped text.
    let mut s = stmt(
        "SELECT c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = ANY($2)",
    );
    assert!(rewrite_catalog_statement(&mut s));
    let text = s.to_string();
    assert!(
        text.contains("array_contains(parse_text_array($2), c.relkind)"),
        "{text}"
    );
    // A cast parameter keeps its cast; a literal array is left to the
    // literal rule.
    let mut s = stmt("SELECT oid FROM pg_catalog.pg_type WHERE oid = ANY($1::oid[])");
    assert!(rewrite_catalog_statement(&mut s));
    assert!(!s.to_string().contains("parse_text_array"), "{s}");
    let mut s = stmt("SELECT relname FROM pg_catalog.pg_class WHERE relkind = ANY('{r,v}')");
    assert!(rewrite_catalog_statement(&mut s));
    assert!(!s.to_string().contains("parse_text_array"), "{s}");
}

#[test]
fn a_grouped_unnest_of_constraint_keys_has_no_rows() {
    // ADBC's constraint listing: a CTE that unnests pg_constraint's keys
    // as a table and groups them.
    let mut s = stmt(
        "WITH other_constraints AS (SELECT con.conname, ARRAY_AGG(attr.attname) AS colnames FROM pg_catalog.pg_constraint AS con CROSS JOIN UNNEST(conkey) AS conkeys INNER JOIN pg_catalog.pg_class AS cls ON cls.oid = con.conrelid INNER JOIN pg_catalog.pg_attribute AS attr ON attr.attnum = conkeys AND cls.oid = attr.attrelid WHERE cls.relname = $2 GROUP BY conname) SELECT conname, colnames FROM other_constraints",
    );
    assert!(rewrite_catalog_statement(&mut s));
    let text = s.to_string();
    assert!(!text.contains("UNNEST"), "{text}");
    assert!(text.contains("$2 IS NULL"), "{text}");
    // Without GROUP BY an aggregate answers one row: left as written.
    let mut s = stmt("SELECT count(*) FROM pg_catalog.pg_trigger");
    assert!(rewrite_catalog_statement(&mut s));
    assert!(s.to_string().contains("pg_trigger"), "{s}");
}
