//! Query fingerprints for the audit log.
//!
//! A fingerprint is the statement as sqlparser prints it, with every literal
//! value replaced by the placeholder `?`, so that no data value (a name, an
//! SSN, a date, a number, a break-glass justification given to `SET`) can
//! reach the audit log, and so that statements of the same shape with
//! different values share one fingerprint. Positional parameters (`$1`)
//! stay. A fingerprint is always printed: nothing in a statement can keep
//! the auditor from reading its shape.
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
//! - named placeholders (`$name`, `:name`, `@name`, `?name`): only the
//!   positional `$1`, `$2`, … stay;
//! - every identifier that names nothing: a column reference, a relation
//!   name or a part of one that is neither a name of the catalog (schemas,
//!   tables, columns: [`KnownNames`]) nor a name the statement itself
//!   declares (a table, column or select-list alias, a CTE, a window, a
//!   cursor or prepared statement, a function it calls). That is a value
//!   written where an identifier goes (`WHERE last_name = "Smith"`, the
//!   MySQL habit) or a misspelt name; it is printed as `?`;
//! - every value expression of a `SET` statement (`SET x = …`, `SET x TO …`,
//!   `SET TIME ZONE …`), whatever its form, since an unquoted word is a value
//!   there too (`SET lakeward.break_glass = crashing`); only the keyword
//!   `DEFAULT` is kept;
//! - inline `COPY … FROM STDIN` data rows are dropped.
//!
//! Last, the printed text is scanned as PostgreSQL lexes it (for statements
//! that keep literal text outside [`Value`] nodes, such as `COMMENT ON … IS
//! '…'`, `NOTIFY c, '…'` or `COPY … (DELIMITER ',')`, and for identifiers in
//! positions the tree walk does not reach): every remaining string constant
//! (single-quoted with or without a prefix, dollar-quoted) becomes `?`, and
//! so does every double-quoted identifier that names nothing. A quoted
//! identifier that is kept is printed so that the fingerprint never holds a
//! `'` or a `$` outside a parameter: in PostgreSQL's `U&"…"` form with those
//! characters escaped (`SELECT zip AS U&"\0027"`) when it contains one.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CloseCursor, Expr, FunctionArg, FunctionArguments, Ident, ObjectName, ObjectNamePart, Query,
    Reset, Select, SelectItem, Set, SetExpr, Statement, TableAlias, TableFactor, UnaryOperator,
    Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut,
};

/// The placeholder that replaces literal values.
const PLACEHOLDER: &str = "?";

/// The catalog's names: what an identifier of a statement may resolve to
/// besides the names the statement declares itself.
pub trait KnownNames {
    /// Is `name` (as PostgreSQL folds it: unquoted in lower case, quoted as
    /// written) the name of a schema, table or column?
    fn knows(&self, name: &str) -> bool;
}

impl<F: Fn(&str) -> bool> KnownNames for F {
    fn knows(&self, name: &str) -> bool {
        self(name)
    }
}

impl KnownNames for HashSet<String> {
    fn knows(&self, name: &str) -> bool {
        self.contains(name)
    }
}

impl KnownNames for std::collections::BTreeSet<String> {
    fn knows(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// The statement with every literal value, named placeholder and
/// identifier that names nothing replaced by `?` (see the module
/// documentation). `catalog` tells the schema, table and column names of
/// the catalog.
pub fn fingerprint(stmt: &Statement, catalog: &dyn KnownNames) -> String {
    let mut declared = Declared::default();
    let _ = Visit::visit(stmt, &mut declared);
    let names = Names {
        declared: &declared.names,
        catalog,
    };
    let mut scrubbed = stmt.clone();
    let _ = VisitMut::visit(&mut scrubbed, &mut Scrub { names: &names });
    scrub_text(&scrubbed.to_string(), &names)
}

/// What an identifier may resolve to: a name the statement declares, or a
/// name of the catalog.
struct Names<'a> {
    declared: &'a HashSet<String>,
    catalog: &'a dyn KnownNames,
}

impl Names<'_> {
    fn resolves(&self, name: &str) -> bool {
        self.declared.contains(name) || self.catalog.knows(name)
    }

    fn resolves_ident(&self, i: &Ident) -> bool {
        self.resolves(&normal(i))
    }
}

/// An identifier as PostgreSQL folds it: unquoted in lower case.
fn normal(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The names a statement declares: aliases (tables, their columns, select
/// items), CTEs and their columns, named windows, functions it calls and
/// their named arguments, cursors, prepared statements, savepoints and the
/// settings it names.
#[derive(Default)]
struct Declared {
    names: HashSet<String>,
}

impl Declared {
    fn ident(&mut self, i: &Ident) {
        self.names.insert(normal(i));
    }

    fn object(&mut self, n: &ObjectName) {
        for p in &n.0 {
            if let ObjectNamePart::Identifier(i) = p {
                self.ident(i);
            }
        }
    }

    fn alias(&mut self, a: &TableAlias) {
        self.ident(&a.name);
        for c in &a.columns {
            self.ident(&c.name);
        }
    }
}

impl Visitor for Declared {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(w) = &q.with {
            for cte in &w.cte_tables {
                self.alias(&cte.alias);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        for item in &s.projection {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                self.ident(alias);
            }
        }
        for w in &s.named_window {
            self.ident(&w.0);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        let alias = match t {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                // A table function's name is a function name.
                if args.is_some() {
                    self.object(name);
                }
                alias.as_ref()
            }
            TableFactor::Function { name, alias, .. } => {
                self.object(name);
                alias.as_ref()
            }
            TableFactor::Derived { alias, .. }
            | TableFactor::TableFunction { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
            _ => None,
        };
        if let Some(a) = alias {
            self.alias(a);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.object(&f.name);
            if let FunctionArguments::List(l) = &f.args {
                for a in &l.args {
                    if let FunctionArg::Named { name, .. } = a {
                        self.ident(name);
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        match s {
            Statement::Declare { stmts } => {
                for d in stmts {
                    for n in &d.names {
                        self.ident(n);
                    }
                }
            }
            Statement::Prepare { name, .. }
            | Statement::Fetch { name, .. }
            | Statement::Deallocate { name, .. }
            | Statement::Savepoint { name, .. }
            | Statement::ReleaseSavepoint { name, .. }
            | Statement::Close {
                cursor: CloseCursor::Specific { name },
            }
            | Statement::Rollback {
                savepoint: Some(name),
                ..
            } => self.ident(name),
            Statement::Execute {
                name: Some(name), ..
            }
            | Statement::Set(Set::SingleAssignment { variable: name, .. }) => self.object(name),
            Statement::ShowVariable { variable } => {
                for i in variable {
                    self.ident(i);
                }
            }
            Statement::Reset(r) => {
                if let Reset::ConfigurationParameter(n) = &r.reset {
                    self.object(n);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Replaces literal values, named placeholders and identifiers that name
/// nothing by the placeholder.
struct Scrub<'a> {
    names: &'a Names<'a>,
}

impl VisitorMut for Scrub<'_> {
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

    fn pre_visit_relation(&mut self, name: &mut ObjectName) -> ControlFlow<()> {
        for part in name.0.iter_mut() {
            if let ObjectNamePart::Identifier(i) = part
                && !self.names.resolves_ident(i)
            {
                *i = Ident::new(PLACEHOLDER);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let replace = match expr {
            // `-5` and `5` have the same shape: fold a sign into the placeholder.
            Expr::UnaryOp {
                op: UnaryOperator::Minus | UnaryOperator::Plus,
                expr: inner,
            } => is_placeholder(inner),
            Expr::Identifier(i) => !is_keyword_default(i) && !self.names.resolves_ident(i),
            Expr::CompoundIdentifier(parts) => parts.iter().any(|i| !self.names.resolves_ident(i)),
            _ => false,
        };
        if replace {
            *expr = placeholder();
        }
        ControlFlow::Continue(())
    }

    fn post_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        if !matches!(&value.value, Value::Placeholder(p) if is_positional(p)) {
            value.value = Value::Placeholder(PLACEHOLDER.into());
        }
        ControlFlow::Continue(())
    }
}

/// `$1`, `$2`, …: a positional parameter (a `$name` stands for a value and
/// is replaced).
fn is_positional(p: &str) -> bool {
    p.strip_prefix('$')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The keyword `DEFAULT` where the parser keeps it as an identifier (`SET
/// x TO DEFAULT`).
fn is_keyword_default(i: &Ident) -> bool {
    i.quote_style.is_none() && i.value.eq_ignore_ascii_case("DEFAULT")
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

/// The printed statement, scanned as PostgreSQL lexes it: string
/// constants (single-quoted, with an `E`/`N`/`X`/`B`/`U&` prefix or not,
/// and dollar-quoted) become `?`; a double-quoted identifier stays when it
/// names something (printed by [`safe_ident`]) and becomes `?` otherwise.
/// An unterminated constant or identifier swallows the rest of the text.
fn scrub_text(text: &str, names: &Names<'_>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_word = i > 0 && word_char(chars[i - 1]);
        match c {
            '\'' => {
                // A prefix letter belongs to the constant (`E'…'`, `U&'…'`).
                let backslashes = strip_string_prefix(&mut out);
                i = end_of_string(&chars, i + 1, backslashes);
                out.push_str(PLACEHOLDER);
            }
            '"' => {
                let (value, next) = quoted_ident(&chars, i + 1);
                match value {
                    Some(v) if names.resolves(&v) => out.push_str(&safe_ident(&v)),
                    _ => out.push_str(PLACEHOLDER),
                }
                i = next;
            }
            '$' if !after_word => match dollar_tag(&chars, i) {
                Some(tag) => {
                    i = end_of_dollar_quote(&chars, i + tag.chars().count(), &tag);
                    out.push_str(PLACEHOLDER);
                }
                None => {
                    out.push('$');
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Removes a string-constant prefix (`E`, `N`, `X`, `B`, `U&`) written
/// right before a quote from `out`; true for `E` (backslash escapes).
fn strip_string_prefix(out: &mut String) -> bool {
    let word_start = out
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_' || *c == '&')
        .last()
        .map(|(i, _)| i)
        .unwrap_or(out.len());
    let word = out[word_start..].to_ascii_uppercase();
    match word.as_str() {
        "E" | "N" | "X" | "B" | "U&" => {
            out.truncate(word_start);
            word == "E"
        }
        _ => false,
    }
}

/// The index after the closing quote of a string constant whose text
/// starts at `i` (`''` is a quote; with `backslashes`, `\` escapes the
/// next character).
fn end_of_string(chars: &[char], mut i: usize, backslashes: bool) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' if backslashes => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The value of a double-quoted identifier whose text starts at `i`, and
/// the index after its closing quote (`None`: unterminated).
fn quoted_ident(chars: &[char], mut i: usize) -> (Option<String>, usize) {
    let mut value = String::new();
    while i < chars.len() {
        match chars[i] {
            '"' if chars.get(i + 1) == Some(&'"') => {
                value.push('"');
                i += 2;
            }
            '"' => return (Some(value), i + 1),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (None, chars.len())
}

/// The opening `$tag$` (or `$$`) of a dollar-quoted constant at `i`.
fn dollar_tag(chars: &[char], i: usize) -> Option<String> {
    let mut j = i + 1;
    if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while chars
        .get(j)
        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
    {
        j += 1;
    }
    (chars.get(j) == Some(&'$')).then(|| chars[i..=j].iter().collect())
}

/// The index after the closing `tag` of a dollar-quoted constant whose
/// text starts at `i`.
fn end_of_dollar_quote(chars: &[char], i: usize, tag: &str) -> usize {
    let tag: Vec<char> = tag.chars().collect();
    let mut j = i;
    while j + tag.len() <= chars.len() {
        if chars[j..j + tag.len()] == tag[..] {
            return j + tag.len();
        }
        j += 1;
    }
    chars.len()
}

/// A kept identifier, quoted so that the fingerprint holds no `'` and no
/// `$` (nothing a reader could take for a constant): `"…"` when it holds
/// neither (nor a control character), else PostgreSQL's `U&"…"` with those
/// characters (and `\`) escaped.
fn safe_ident(value: &str) -> String {
    let unsafe_char = |c: char| c == '\'' || c == '$' || c.is_control();
    if !value.chars().any(unsafe_char) {
        return format!("\"{}\"", value.replace('"', "\"\""));
    }
    let mut out = String::from("U&\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => {
                let n = c as u32;
                if n <= 0xFFFF {
                    out.push_str(&format!("\\{n:04X}"));
                } else {
                    out.push_str(&format!("\\+{n:06X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
}
