//! Unit tests of query fingerprints.

use super::*;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

fn parse(sql: &str) -> Statement {
    let mut v = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
    assert_eq!(v.len(), 1, "{sql}");
    v.remove(0)
}

/// The catalog of these tests: the tables and columns the cases name.
fn catalog(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "t",
        "a",
        "b",
        "c",
        "col",
        "n",
        "id",
        "x",
        "name",
        "data",
        "patients",
        "ssn",
        "mrn",
        "dob",
        "ts",
        "p",
        "clinical",
        "Name",
        "v",
        "last_name",
        "zip",
        "chan",
    ];
    NAMES.contains(&name)
}

fn fp(sql: &str) -> String {
    fingerprint(&parse(sql), &catalog)
}

/// Substrings that must never reach a fingerprint.
const SENTINELS: &[&str] = &[
    "Sentinel",
    "Qx7",
    "123456789",
    "1961",
    "3 days",
    "Smi",
    "patient crashing",
    "crashing",
    "treatment",
    "dollar",
    "esc\\n",
    "Europe",
    "2020",
    "4242",
];

/// (SQL with sentinel values, expected fingerprint).
const CASES: &[(&str, &str)] = &[
    (
        "SELECT * FROM t WHERE a = 'Sentinel-Qx7' AND b = $1",
        "SELECT * FROM t WHERE a = ? AND b = $1",
    ),
    (
        "SELECT name FROM patients WHERE ssn = '123-45-6789' AND mrn = 123456789",
        "SELECT name FROM patients WHERE ssn = ? AND mrn = ?",
    ),
    (
        "SELECT * FROM p WHERE dob = DATE '1961-07-04' AND ts > TIMESTAMP '2020-01-01 00:00:00'",
        "SELECT * FROM p WHERE dob = DATE ? AND ts > TIMESTAMP ?",
    ),
    (
        "SELECT now() - INTERVAL '3 days', INTERVAL '4242' DAY",
        "SELECT now() - INTERVAL ?, INTERVAL ? DAY",
    ),
    (
        "SELECT E'esc\\nSentinel', $$dollar Sentinel$$, $tag$Sentinel$tag$, x'ff', N'Sentinel', U&'Sentinel', B'101'",
        "SELECT ?, ?, ?, ?, ?, ?, ?",
    ),
    (
        "SELECT ARRAY['Sentinel-Qx7', 'b'], ARRAY[4242, 2]",
        "SELECT ARRAY[?, ?], ARRAY[?, ?]",
    ),
    (
        "SELECT * FROM t WHERE id IN (1, 2, 3) AND x NOT IN ('Sentinel-Qx7')",
        "SELECT * FROM t WHERE id IN (?, ?, ?) AND x NOT IN (?)",
    ),
    (
        "SELECT * FROM t WHERE name LIKE 'Smi%' ESCAPE '!' OR name ILIKE 'Sentinel%' \
         OR name SIMILAR TO 'Smi%' ESCAPE '#' OR name NOT LIKE 'Qx7'",
        "SELECT * FROM t WHERE name LIKE ? ESCAPE ? OR name ILIKE ? \
         OR name SIMILAR TO ? ESCAPE ? OR name NOT LIKE ?",
    ),
    (
        "SET lakeward.break_glass = 'patient crashing'",
        "SET lakeward.break_glass = ?",
    ),
    (
        "SET application_name TO 'Sentinel-Qx7'",
        "SET application_name = ?",
    ),
    // An unquoted word is a value in SET too.
    (
        "SET lakeward.break_glass TO crashing",
        "SET lakeward.break_glass = ?",
    ),
    (
        "SET search_path TO Sentinel, public",
        "SET search_path = ?, ?",
    ),
    ("SET search_path TO DEFAULT", "SET search_path = DEFAULT"),
    ("SET TIME ZONE 'Europe/Berlin'", "SET TIME ZONE ?"),
    (
        "SET LOCAL lakeward.purpose = 'treatment'",
        "SET LOCAL lakeward.purpose = ?",
    ),
    (
        "VALUES ('Sentinel-Qx7', 1), ('x', 2)",
        "VALUES (?, ?), (?, ?)",
    ),
    (
        "WITH c AS (SELECT * FROM t WHERE a = 'Sentinel-Qx7') SELECT * FROM c",
        "WITH c AS (SELECT * FROM t WHERE a = ?) SELECT * FROM c",
    ),
    (
        "SELECT * FROM (SELECT a FROM t WHERE b = 'Sentinel-Qx7') AS s WHERE s.a > 123456789",
        "SELECT * FROM (SELECT a FROM t WHERE b = ?) AS s WHERE s.a > ?",
    ),
    (
        "SELECT CASE WHEN a = 'Sentinel-Qx7' THEN 'Smith' ELSE 'crashing' END FROM t",
        "SELECT CASE WHEN a = ? THEN ? ELSE ? END FROM t",
    ),
    (
        "SELECT upper('Sentinel-Qx7'), substr(name, 1, 3), coalesce(x, 'Qx7') FROM t",
        "SELECT upper(?), SUBSTR(name, ?, ?), coalesce(x, ?) FROM t",
    ),
    (
        "INSERT INTO t (a, b) VALUES ('Sentinel-Qx7', 123456789), (NULL, true)",
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)",
    ),
    (
        "UPDATE t SET col = 'Sentinel-Qx7', n = 4242 WHERE id = 123456789",
        "UPDATE t SET col = ?, n = ? WHERE id = ?",
    ),
    (
        "DELETE FROM t WHERE name = 'Sentinel-Qx7'",
        "DELETE FROM t WHERE name = ?",
    ),
    (
        "COPY (SELECT 'Sentinel-Qx7' FROM t) TO STDOUT",
        "COPY (SELECT ? FROM t) TO STDOUT",
    ),
    (
        "EXPLAIN SELECT * FROM t WHERE a = 'Sentinel-Qx7'",
        "EXPLAIN SELECT * FROM t WHERE a = ?",
    ),
    ("EXPLAIN ANALYZE SELECT 4242", "EXPLAIN ANALYZE SELECT ?"),
    (
        "SELECT CAST('Sentinel-Qx7' AS VARCHAR(20)), '4242'::int, 3.14::numeric(10,2)",
        "SELECT CAST(? AS VARCHAR(20)), ?::INT, ?::NUMERIC(10,2)",
    ),
    (
        "SELECT * FROM t LIMIT 4242 OFFSET 123456789",
        "SELECT * FROM t LIMIT ? OFFSET ?",
    ),
    (
        "SELECT * FROM t ORDER BY a FETCH FIRST 4242 ROWS ONLY",
        "SELECT * FROM t ORDER BY a FETCH FIRST ? ROWS ONLY",
    ),
    (
        "PREPARE q (int) AS SELECT * FROM t WHERE a = $1 AND b = 'Sentinel-Qx7'",
        "PREPARE q (INT) AS SELECT * FROM t WHERE a = $1 AND b = ?",
    ),
    ("EXECUTE q(123456789, 'Sentinel-Qx7')", "EXECUTE q(?, ?)"),
    (
        "DECLARE c CURSOR FOR SELECT * FROM t WHERE a = 'Sentinel-Qx7'",
        "DECLARE c CURSOR FOR SELECT * FROM t WHERE a = ?",
    ),
    ("FETCH 4242 FROM c", "FETCH ? FROM c"),
    (
        "CREATE TABLE x (a int DEFAULT 4242, b text DEFAULT 'Sentinel-Qx7')",
        "CREATE TABLE x (a INT DEFAULT ?, b TEXT DEFAULT ?)",
    ),
    (
        "CREATE VIEW v AS SELECT * FROM t WHERE a = 'Sentinel-Qx7'",
        "CREATE VIEW v AS SELECT * FROM t WHERE a = ?",
    ),
    (
        "SELECT * FROM t WHERE a BETWEEN 1961 AND 2020 AND b IS NOT NULL AND c = -4242",
        "SELECT * FROM t WHERE a BETWEEN ? AND ? AND b IS NOT NULL AND c = ?",
    ),
    (
        "SELECT '{\"Sentinel\": 1}'::jsonb -> 'Qx7', data ->> 'Sentinel'",
        "SELECT ?::JSONB -> ?, data ->> ?",
    ),
    (
        "SELECT a FROM t WHERE b ~ 'Sentinel.*' AND c = ANY('{Qx7}')",
        "SELECT a FROM t WHERE b ~ ? AND c = ANY(?)",
    ),
    (
        "SELECT 1 UNION SELECT 'Sentinel' FROM t",
        "SELECT ? UNION SELECT ? FROM t",
    ),
    (
        "WITH x AS (SELECT 'Sentinel') INSERT INTO t SELECT * FROM x",
        "WITH x AS (SELECT ?) INSERT INTO t SELECT * FROM x",
    ),
    ("SHOW search_path", "SHOW search_path"),
    ("RESET lakeward.break_glass", "RESET lakeward.break_glass"),
    ("BEGIN", "BEGIN"),
    ("COMMIT", "COMMIT"),
    ("DEALLOCATE q", "DEALLOCATE q"),
    ("CLOSE c", "CLOSE c"),
];

#[test]
fn literals_are_replaced_and_structure_kept() {
    assert!(CASES.len() >= 25);
    for (sql, want) in CASES {
        let got = fp(sql);
        assert_eq!(&got, want, "fingerprint of {sql}");
        assert!(!got.contains('\''), "{got}");
        assert!(!got.contains("$$"), "{got}");
        for s in SENTINELS {
            assert!(!got.contains(s), "{s} leaked into {got}");
        }
    }
}

#[test]
fn same_shape_same_fingerprint() {
    let pairs = [
        (
            "SELECT * FROM t WHERE a = 'x' AND b IN (1, 2) LIMIT 5",
            "SELECT * FROM t WHERE a = 'Sentinel' AND b IN (4242, 123456789) LIMIT 100",
        ),
        (
            "SET lakeward.break_glass = 'a'",
            "SET lakeward.break_glass = 'patient crashing'",
        ),
        (
            "INSERT INTO t VALUES (1, 'a', DATE '2000-01-01')",
            "INSERT INTO t VALUES (-2.5, E'b', DATE '1961-07-04')",
        ),
        ("SELECT true, NULL, 1", "SELECT false, 'x', -3"),
    ];
    for (a, b) in pairs {
        assert_eq!(fp(a), fp(b), "{a} / {b}");
    }
    assert_ne!(fp("SELECT a FROM t"), fp("SELECT b FROM t"));
}

#[test]
fn parameters_identifiers_and_types_stay() {
    assert_eq!(
        fp("SELECT p.\"Name\", CAST($2 AS DATE) FROM clinical.patients AS p WHERE p.id = $1"),
        "SELECT p.\"Name\", CAST($2 AS DATE) FROM clinical.patients AS p WHERE p.id = $1"
    );
    assert_eq!(fp("SELECT -$1"), "SELECT -$1");
}

#[test]
fn copy_inline_data_is_dropped() {
    let mut stmt = parse("COPY t (a, b) FROM STDIN");
    if let Statement::Copy { values, .. } = &mut stmt {
        values.push(Some("Sentinel".into()));
        values.push(Some("123456789".into()));
    }
    assert!(stmt.to_string().contains("Sentinel"));
    assert_eq!(fingerprint(&stmt, &catalog), "COPY t (a, b) FROM STDIN");
}

#[test]
fn literals_outside_value_nodes_are_replaced_too() {
    assert_eq!(
        fp("COMMENT ON TABLE t IS 'Sentinel-Qx7'"),
        "COMMENT ON TABLE t IS ?"
    );
    assert_eq!(fp("NOTIFY chan, 'Sentinel-Qx7'"), "NOTIFY chan, ?");
    assert_eq!(
        fp("COPY t TO STDOUT WITH (FORMAT csv, DELIMITER ',')"),
        "COPY t TO STDOUT (FORMAT csv, DELIMITER ?)"
    );
    // A quoted identifier that names nothing is a value.
    assert_eq!(fp("SELECT \"o'Sentinel\" FROM t"), "SELECT ? FROM t");
}

#[test]
fn identifiers_that_name_nothing_are_values() {
    let cases = [
        (
            "SELECT patients.ssn FROM clinical.patients WHERE last_name = \"Smith\"",
            "SELECT patients.ssn FROM clinical.patients WHERE last_name = ?",
        ),
        (
            "SELECT * FROM t p WHERE p.\"Smith\" = 1 OR \"Smith\".a = 2 OR Smith = 3",
            "SELECT * FROM t p WHERE ? = ? OR ? = ? OR ? = ?",
        ),
        (
            "SELECT * FROM \"Smith\", clinical.\"Sentinel\", \"Qx7\".patients",
            "SELECT * FROM ?, clinical.?, ?.patients",
        ),
        // Names the statement declares resolve: aliases, CTEs, columns
        // of derived tables, functions, cursors.
        (
            "WITH \"Cte\" (\"K\") AS (SELECT a FROM t) SELECT \"Cte\".\"K\" AS \"Out\", upper(x) AS u \
             FROM \"Cte\", (SELECT 1) AS d (\"Dcol\") WHERE \"Dcol\" = 1 ORDER BY \"Out\", u",
            "WITH \"Cte\" (\"K\") AS (SELECT a FROM t) SELECT \"Cte\".\"K\" AS \"Out\", upper(x) AS u \
             FROM \"Cte\", (SELECT ?) AS d (\"Dcol\") WHERE \"Dcol\" = ? ORDER BY \"Out\", u",
        ),
        (
            "SELECT * FROM generate_series(1, 3) AS g(i) WHERE i > 1",
            "SELECT * FROM generate_series(?, ?) AS g (i) WHERE i > ?",
        ),
        (
            "SELECT row_number() OVER w FROM t WINDOW w AS (ORDER BY a)",
            "SELECT row_number() OVER w FROM t WINDOW w AS (ORDER BY a)",
        ),
        (
            "DECLARE \"Cur\" CURSOR FOR SELECT a FROM t",
            "DECLARE \"Cur\" CURSOR FOR SELECT a FROM t",
        ),
        ("FETCH 10 FROM \"Cur\"", "FETCH ? FROM \"Cur\""),
        // Named placeholders stand for values; `$1` stays.
        (
            "SELECT a FROM t WHERE a = $name AND b = $Smith AND c = $1",
            "SELECT a FROM t WHERE a = ? AND b = ? AND c = $1",
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(fp(sql), want, "fingerprint of {sql}");
    }
}

#[test]
fn kept_identifiers_are_printed_without_quotes_or_dollars() {
    assert_eq!(
        fp("SELECT zip AS \"'\" FROM clinical.patients"),
        "SELECT zip AS U&\"\\0027\" FROM clinical.patients"
    );
    assert_eq!(
        fp("SELECT zip AS \"$tag$x\\y\"\"z$tag$\" FROM t"),
        "SELECT zip AS U&\"\\0024tag\\0024x\\\\y\"\"z\\0024tag\\0024\" FROM t"
    );
    assert_eq!(
        fp("SELECT a AS \"a\"\"b\" FROM t"),
        "SELECT a AS \"a\"\"b\" FROM t"
    );
    // Never withheld: every kind of statement prints.
    for sql in [
        "SELECT zip AS \"'\" FROM clinical.patients",
        "SELECT 1 AS \"$$\"",
        "SELECT $$a'b$$ AS \"$x$\"",
        "SELECT a AS 'alias' FROM t",
    ] {
        let got = fp(sql);
        assert!(!got.contains('\''), "{got}");
        assert!(!got.contains("$$"), "{got}");
        assert!(!got.contains("withheld"), "{got}");
    }
}

#[test]
fn the_text_scan_knows_postgres_constants() {
    let declared = HashSet::from(["Known".to_owned()]);
    let names = Names {
        declared: &declared,
        catalog: &catalog,
    };
    let scan = |t: &str| scrub_text(t, &names);
    assert_eq!(scan("SELECT 'a''b', E'x\\'y', $1"), "SELECT ?, ?, $1");
    assert_eq!(scan("SELECT U&'d\\0061t', N'x', x'ff'"), "SELECT ?, ?, ?");
    assert_eq!(
        scan("SELECT $$a'b$$, $q$ $$ $q$, a$b$c"),
        "SELECT ?, ?, a$b$c"
    );
    assert_eq!(
        scan("SELECT \"Known\", \"Unknown\", \"x\"\"y\""),
        "SELECT \"Known\", ?, ?"
    );
    // Unterminated: the rest is swallowed.
    assert_eq!(scan("SELECT 'abc"), "SELECT ?");
    assert_eq!(scan("SELECT \"abc"), "SELECT ?");
    assert_eq!(scan("SELECT $t$abc"), "SELECT ?");
}

#[test]
fn statement_kinds() {
    let kinds = [
        ("SELECT 1", "SELECT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT"),
        ("VALUES (1)", "SELECT"),
        ("SELECT 1 UNION ALL SELECT 2", "SELECT"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
        ("SET a = 1", "SET"),
        ("SET TIME ZONE 'UTC'", "SET"),
        ("SET ROLE r", "SET"),
        ("SHOW search_path", "SHOW"),
        ("SHOW ALL", "SHOW"),
        ("RESET a", "RESET"),
        ("RESET ALL", "RESET"),
        ("BEGIN", "BEGIN"),
        ("START TRANSACTION", "BEGIN"),
        ("COMMIT", "COMMIT"),
        ("ROLLBACK", "ROLLBACK"),
        ("PREPARE p AS SELECT 1", "PREPARE"),
        ("EXECUTE p(1)", "EXECUTE"),
        ("DEALLOCATE p", "DEALLOCATE"),
        ("DECLARE c CURSOR FOR SELECT 1", "DECLARE"),
        ("FETCH 5 FROM c", "FETCH"),
        ("CLOSE c", "CLOSE"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        (
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "INSERT",
        ),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("CREATE TABLE t (a int)", "CREATE"),
        ("CREATE EXTENSION pgcrypto", "CREATE"),
        ("CREATE ROLE r", "CREATE"),
        ("CREATE SCHEMA s", "CREATE"),
        ("DROP TABLE t", "DROP"),
        ("DROP EXTENSION pgcrypto", "DROP"),
        ("ALTER TABLE t ADD COLUMN c int", "ALTER"),
        ("ALTER ROLE r RENAME TO s", "ALTER"),
        ("COPY t TO STDOUT", "COPY"),
        ("COPY (SELECT 1) TO STDOUT", "COPY"),
        ("TRUNCATE t", "OTHER"),
        ("GRANT SELECT ON t TO r", "OTHER"),
        ("COMMENT ON TABLE t IS 'x'", "OTHER"),
    ];
    for (sql, kind) in kinds {
        assert_eq!(statement_kind(&parse(sql)), kind, "{sql}");
    }
}
