//! Query fingerprints for the audit log.
//!
//! A fingerprint is the statement as sqlparser prints it, with every literal
//! value replaced by the placeholder `?`, so that no data value (a name, an
//! SSN, a date, a number, a break-glass justification given to `SET`) can
//! reach the audit log, and so that statements of the same shape with
//! different values share one fingerprint. Bind parameters (`$1`) stay.
//!
//! What is replaced:
//! - every [`Value`] anywhere in the tree (sqlparser visits each
//!   [`ValueWithSpan`]): strings of every quoting style (plain, `E'…'`,
//!   `N'…'`, `U&'…'`, `X'…'`, `B'…'`, dollar-quoted), numbers, booleans and
//!   `NULL`. That covers typed strings (`DATE ?`), interval values
//!   (`INTERVAL ?`), LIKE/ILIKE/SIMILAR TO patterns and `ESCAPE` characters,
//!   IN lists, arrays, VALUES rows, function arguments, CASE branches,
//!   LIMIT/OFFSET/FETCH counts, EXECUTE arguments and casts (the type
//!   stays: `CAST(? AS INT)`);
//! - every value expression of a `SET` statement (`SET x = …`, `SET x TO …`,
//!   `SET TIME ZONE …`), whatever its form, since an unquoted word is a value
//!   there too (`SET lakeward.break_glass = crashing`); only the keyword
//!   `DEFAULT` is kept;
//! - inline `COPY … FROM STDIN` data rows are dropped.
//!
//! Safety net: some statements keep literal text outside [`Value`] nodes
//! (e.g. `COMMENT ON … IS '…'`, `NOTIFY c, '…'`, `COPY … (DELIMITER ',')`).
//! When the printed fingerprint still contains a single quote `'` or a
//! dollar quote (`$$` or `$tag$`), the fingerprint is withheld and the
//! conservative text `"<KIND> (fingerprint withheld)"` is returned instead
//! (`<KIND>` from [`statement_kind`], or the statement's leading keyword when
//! that is `OTHER`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Set, SetExpr, Statement, UnaryOperator, Value, ValueWithSpan, VisitMut, VisitorMut,
};

/// The placeholder that replaces literal values.
const PLACEHOLDER: &str = "?";

/// The statement with every literal value replaced by `?` (see the module
/// documentation), or `"<KIND> (fingerprint withheld)"` when the printed
/// text could still hold a literal.
pub fn fingerprint(stmt: &Statement) -> String {
    let mut scrubbed = stmt.clone();
    let _ = scrubbed.visit(&mut Scrub);
    let text = scrubbed.to_string();
    if text.contains('\'') || has_dollar_quote(&text) {
        return format!("{} (fingerprint withheld)", withheld_kind(stmt, &text));
    }
    text
}

/// The kind of the statement, in the style of PostgreSQL command tags:
/// `SELECT` (queries, including WITH, VALUES and set operations),
/// `EXPLAIN`, `SET`, `SHOW`, `RESET`, `BEGIN`, `COMMIT`, `ROLLBACK`,
/// `PREPARE`, `EXECUTE`, `DEALLOCATE`, `DECLARE`, `FETCH`, `CLOSE`,
/// `INSERT`, `UPDATE`, `DELETE`, `CREATE`, `DROP`, `ALTER`, `COPY`, and
/// `OTHER` for everything else.
pub fn statement_kind(stmt: &Statement) -> &'static str {
    match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            // WITH … INSERT/UPDATE/DELETE
            SetExpr::Insert(_) => "INSERT",
            SetExpr::Update(_) => "UPDATE",
            SetExpr::Delete(_) => "DELETE",
            SetExpr::Merge(_) => "OTHER",
            _ => "SELECT",
        },
        Statement::Explain { .. } | Statement::ExplainTable { .. } => "EXPLAIN",
        Statement::Set(_) => "SET",
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => "SHOW",
        Statement::Reset(_) => "RESET",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        Statement::Rollback { .. } => "ROLLBACK",
        Statement::Prepare { .. } => "PREPARE",
        Statement::Execute { .. } => "EXECUTE",
        Statement::Deallocate { .. } => "DEALLOCATE",
        Statement::Declare { .. } => "DECLARE",
        Statement::Fetch { .. } => "FETCH",
        Statement::Close { .. } => "CLOSE",
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateRole(_)
        | Statement::CreateUser(_)
        | Statement::CreateExtension(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreatePolicy(_) => "CREATE",
        Statement::Drop { .. } | Statement::DropFunction(_) | Statement::DropPolicy(_) => "DROP",
        Statement::AlterTable(_)
        | Statement::AlterView { .. }
        | Statement::AlterRole { .. }
        | Statement::AlterUser(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterPolicy(_) => "ALTER",
        // The many rarer CREATE/DROP/ALTER variants: by leading keyword.
        other => match leading_keyword(&other.to_string()).as_deref() {
            Some("CREATE") => "CREATE",
            Some("DROP") => "DROP",
            Some("ALTER") => "ALTER",
            _ => "OTHER",
        },
    }
}

/// Replaces literal values by the placeholder.
struct Scrub;

impl VisitorMut for Scrub {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &mut Statement) -> ControlFlow<()> {
        match stmt {
            Statement::Set(set) => scrub_set(set),
            // Inline COPY data (COPY … FROM STDIN; rows…; \.).
            Statement::Copy { values, .. } => values.clear(),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        // `-5` and `5` have the same shape: fold a sign into the placeholder.
        if let Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr: inner,
        } = expr
            && is_placeholder(inner)
        {
            *expr = placeholder();
        }
        ControlFlow::Continue(())
    }

    fn post_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        if !matches!(value.value, Value::Placeholder(_)) {
            value.value = Value::Placeholder(PLACEHOLDER.into());
        }
        ControlFlow::Continue(())
    }
}

/// Every value of a SET is data, whatever its syntax (a bare word is a
/// string there); only `DEFAULT` and bind parameters stay.
fn scrub_set(set: &mut Set) {
    match set {
        Set::SingleAssignment { values, .. } | Set::ParenthesizedAssignments { values, .. } => {
            values.iter_mut().for_each(scrub_set_value)
        }
        Set::MultipleAssignments { assignments } => assignments
            .iter_mut()
            .for_each(|a| scrub_set_value(&mut a.value)),
        Set::SetTimeZone { value, .. } => scrub_set_value(value),
        _ => {}
    }
}

fn scrub_set_value(expr: &mut Expr) {
    let keep = match expr {
        Expr::Identifier(id) => {
            id.quote_style.is_none() && id.value.eq_ignore_ascii_case("DEFAULT")
        }
        Expr::Value(v) => matches!(v.value, Value::Placeholder(_)),
        _ => false,
    };
    if !keep {
        *expr = placeholder();
    }
}

fn placeholder() -> Expr {
    Expr::value(Value::Placeholder(PLACEHOLDER.into()))
}

/// `?` (a replaced literal), not a `$n` parameter.
fn is_placeholder(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if p == PLACEHOLDER))
}

/// `$$` or `$tag$` anywhere in `text` (`$1` is a parameter, not a quote).
fn has_dollar_quote(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        if c != b'$' {
            return false;
        }
        let mut j = i + 1;
        if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
            return false;
        }
        while b
            .get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80)
        {
            j += 1;
        }
        b.get(j) == Some(&b'$')
    })
}

/// The first word of a printed statement when it is an upper-case keyword.
fn leading_keyword(text: &str) -> Option<String> {
    let word = text
        .split(|c: char| !(c.is_ascii_alphabetic() || c == '_'))
        .next()?;
    let is_keyword = !word.is_empty()
        && word.len() <= 32
        && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        && text[word.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || c == ';');
    is_keyword.then(|| word.to_owned())
}

fn withheld_kind(stmt: &Statement, text: &str) -> String {
    match statement_kind(stmt) {
        "OTHER" => leading_keyword(text).unwrap_or_else(|| "OTHER".to_owned()),
        kind => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Statement {
        let mut v = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0)
    }

    fn fp(sql: &str) -> String {
        fingerprint(&parse(sql))
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
        assert_eq!(fingerprint(&stmt), "COPY t (a, b) FROM STDIN");
    }

    #[test]
    fn unreachable_literals_withhold_the_fingerprint() {
        assert_eq!(
            fp("COMMENT ON TABLE t IS 'Sentinel-Qx7'"),
            "COMMENT (fingerprint withheld)"
        );
        assert_eq!(
            fp("NOTIFY chan, 'Sentinel-Qx7'"),
            "NOTIFY (fingerprint withheld)"
        );
        assert_eq!(
            fp("COPY t TO STDOUT WITH (FORMAT csv, DELIMITER ',')"),
            "COPY (fingerprint withheld)"
        );
        // A quote inside a quoted identifier trips the net as well.
        assert_eq!(
            fp("SELECT \"o'Sentinel\" FROM t"),
            "SELECT (fingerprint withheld)"
        );
    }

    #[test]
    fn dollar_quote_detection() {
        assert!(has_dollar_quote("SELECT $$x$$"));
        assert!(has_dollar_quote("SELECT $tag$x$tag$"));
        assert!(!has_dollar_quote("SELECT $1, $23"));
        assert!(!has_dollar_quote("SELECT a FROM t"));
        assert!(!has_dollar_quote("SELECT $"));
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
}
