//! The statement gate: parse SQL text and sort every statement into a kind
//! lakeward knows how to serve, or refuse it before anything is planned.
//!
//! Allow-list, not deny-list: a statement kind that is not named below is
//! refused. Nothing here touches DataFusion; it speaks the sqlparser AST only.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use crate::error::SqlError;

/// What a client statement is, as far as serving it goes.
#[derive(Debug, Clone)]
pub enum StatementKind {
    /// `SELECT`, `WITH`, `VALUES`, set operations: planned and executed.
    Query(Box<Statement>),
    /// `EXPLAIN <query>`: planned, the plan text is returned.
    Explain(Box<Statement>),
    /// `SET [SESSION | LOCAL] name = value` / `SET name TO DEFAULT` (value
    /// `None`); `local`: until the end of the transaction block.
    Set {
        name: String,
        value: Option<String>,
        local: bool,
    },
    /// `SHOW name` / `SHOW ALL`.
    Show { name: String },
    /// `RESET name` / `RESET ALL` (`None`).
    Reset { name: Option<String> },
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint { name: String },
    /// `RELEASE [SAVEPOINT] name`.
    Release { name: String },
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo { name: String },
    /// `DISCARD ALL`: reset every setting, close cursors, deallocate
    /// prepared statements.
    DiscardAll,
    /// `DEALLOCATE [PREPARE] name` / `DEALLOCATE ALL` (`None`).
    Deallocate { name: Option<String> },
    /// `DISCARD PLANS | SEQUENCES | TEMP`, `SET TRANSACTION`: accepted,
    /// nothing to do on a read-only server.
    NoOp { tag: &'static str },
    /// `DECLARE name [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR <query>`.
    Declare { name: String, query: Box<Statement> },
    /// `FETCH [FORWARD] [n | ALL | NEXT] FROM name` (`count` `None`: all).
    Fetch { name: String, count: Option<usize> },
    /// `CLOSE name` / `CLOSE ALL` (`None`).
    Close { name: Option<String> },
}

impl StatementKind {
    /// A short, data-free label used in logs and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            StatementKind::Query(_) => "SELECT",
            StatementKind::Explain(_) => "EXPLAIN",
            StatementKind::Set { .. } => "SET",
            StatementKind::Show { .. } => "SHOW",
            StatementKind::Reset { .. } => "RESET",
            StatementKind::Begin => "BEGIN",
            StatementKind::Commit => "COMMIT",
            StatementKind::Rollback => "ROLLBACK",
            StatementKind::Savepoint { .. } => "SAVEPOINT",
            StatementKind::Release { .. } => "RELEASE",
            StatementKind::RollbackTo { .. } => "ROLLBACK",
            StatementKind::DiscardAll => "DISCARD ALL",
            StatementKind::Deallocate { .. } => "DEALLOCATE",
            StatementKind::NoOp { tag } => tag,
            StatementKind::Declare { .. } => "DECLARE CURSOR",
            StatementKind::Fetch { .. } => "FETCH",
            StatementKind::Close { .. } => "CLOSE CURSOR",
        }
    }
}

/// Limits applied while parsing untrusted SQL.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Recursion limit handed to sqlparser, and the deepest expression nesting
    /// accepted after parsing (left-deep operator chains are not recursive in the
    /// parser, but are in every planner pass).
    pub max_nesting: usize,
    /// Largest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_nesting: 64,
            max_sql_bytes: 1024 * 1024,
        }
    }
}

/// SQL texts up to this size are parsed on the calling thread: the deepest
/// tree they can make (one level per two bytes) is dropped well within a
/// worker's 8 MiB stack.
const INLINE_PARSE_BYTES: usize = 8 * 1024;

/// Parse SQL text into statements (PostgreSQL dialect). Errors carry SQLSTATE
/// 42601 (syntax) or 54001 (too complex) and never echo the text.
///
/// Operator chains (`1+1+…`, `x::int::int…`, `… OR …`, `… UNION …`) are
/// built by loops in the parser, so its recursion limit does not bound
/// them, while dropping the tree is recursive: a refused or broken-off
/// chain of a few hundred thousand links would overflow the stack of the
/// thread that drops it. Longer texts are therefore parsed, checked and,
/// when refused, dropped on a thread of their own whose stack grows with
/// the text (virtual memory; only what the tree needs is touched, and it
/// is released when the thread ends). What is returned is never deeper
/// than `max_nesting`.
pub fn parse(sql: &str, limits: ParseLimits) -> Result<Vec<Statement>, SqlError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(SqlError::new("54000", "statement text is too long"));
    }
    if sql.len() <= INLINE_PARSE_BYTES {
        return parse_and_check(sql, limits);
    }
    let stack = sql.len().saturating_mul(512).clamp(64 << 20, 2 << 30);
    let run = || {
        std::thread::scope(|scope| {
            let parser = std::thread::Builder::new()
                .name("lakeward-parse".into())
                .stack_size(stack)
                .spawn_scoped(scope, || parse_and_check(sql, limits));
            match parser {
                Ok(handle) => handle.join().unwrap_or_else(|_| Err(SqlError::internal())),
                Err(_) => Err(SqlError::new(
                    "53000",
                    "statement could not be parsed now: insufficient resources",
                )),
            }
        })
    };
    // On a server worker, hand the worker's other tasks (other sessions,
    // the accept loop) to another thread while this one waits.
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    }
}

fn parse_and_check(sql: &str, limits: ParseLimits) -> Result<Vec<Statement>, SqlError> {
    let dialect = PostgreSqlDialect {};
    let statements = Parser::new(&dialect)
        .with_recursion_limit(limits.max_nesting)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(parser_error)?;
    for stmt in &statements {
        check_depth(stmt, limits.max_nesting)?;
    }
    Ok(statements)
}

fn parser_error(e: ParserError) -> SqlError {
    match e {
        ParserError::RecursionLimitExceeded => {
            SqlError::new("54001", "statement is too complex: nesting limit exceeded")
        }
        // The parser's message names the unexpected token and its position; a
        // token is either a keyword or a piece of the user's own text, so only
        // the position is kept.
        ParserError::ParserError(msg) | ParserError::TokenizerError(msg) => {
            SqlError::new("42601", format!("syntax error{}", position_of(&msg)))
        }
    }
}

/// Extract " at Line: X, Column: Y" from a sqlparser message, if present.
fn position_of(msg: &str) -> String {
    match msg.rfind(" at Line: ") {
        Some(i) if msg[i..].len() < 40 => msg[i..].to_owned(),
        _ => String::new(),
    }
}

/// Most set operations (`UNION`, `INTERSECT`, `EXCEPT`) chained in one query
/// body: each is a level of the tree every planner pass recurses through.
const MAX_SET_OPERATIONS: usize = 1024;

/// Most entries of one select list, as in PostgreSQL: wider lists are
/// refused before planning (54011), whose passes grow faster than the list.
pub const MAX_TARGET_LIST: usize = 1664;

/// How deep the set operations of a query body nest and its widest select
/// list, in one walk without recursion (chains of set operations are
/// left-deep and long). The walk stops once the depth passes
/// [`MAX_SET_OPERATIONS`].
fn body_shape(body: &SetExpr) -> (usize, usize) {
    let (mut deepest, mut widest) = (0, 0);
    let mut stack = vec![(body, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > MAX_SET_OPERATIONS {
            break;
        }
        match node {
            SetExpr::Select(select) => widest = widest.max(select.projection.len()),
            SetExpr::SetOperation { left, right, .. } => {
                stack.push((left, depth + 1));
                stack.push((right, depth + 1));
            }
            _ => {}
        }
    }
    (deepest, widest)
}

/// Refuse statements whose expression or query nesting is deeper than `max`
/// or whose set operations chain more than [`MAX_SET_OPERATIONS`] deep
/// (54001), or with a select list wider than [`MAX_TARGET_LIST`] (54011).
/// The walk stops as soon as a limit is crossed, so it never recurses deeper
/// than `max` itself.
fn check_depth(stmt: &Statement, max: usize) -> Result<(), SqlError> {
    enum TooComplex {
        Nesting,
        TargetList,
    }
    struct Depth {
        current: usize,
        max: usize,
    }
    impl Visitor for Depth {
        type Break = TooComplex;
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<TooComplex> {
            self.current += 1;
            if self.current > self.max {
                ControlFlow::Break(TooComplex::Nesting)
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<TooComplex> {
            self.current -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<TooComplex> {
            self.current += 1;
            let (set_depth, widest) = body_shape(&query.body);
            if self.current > self.max || set_depth > MAX_SET_OPERATIONS {
                ControlFlow::Break(TooComplex::Nesting)
            } else if widest > MAX_TARGET_LIST {
                ControlFlow::Break(TooComplex::TargetList)
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<TooComplex> {
            self.current -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut v = Depth { current: 0, max };
    match stmt.visit(&mut v) {
        ControlFlow::Break(TooComplex::Nesting) => Err(SqlError::new(
            "54001",
            "statement is too complex: nesting limit exceeded",
        )),
        ControlFlow::Break(TooComplex::TargetList) => Err(SqlError::new(
            "54011",
            format!("target lists can have at most {MAX_TARGET_LIST} entries"),
        )),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Sort one parsed statement into a [`StatementKind`], or refuse it.
pub fn classify(stmt: Statement) -> Result<StatementKind, SqlError> {
    classify_with(stmt, false)
}

/// [`classify`] for a catalog statement: `generate_series(…)`, a pure
/// row generator PostgreSQL drivers use to walk `search_path` and array
/// bounds, and `pg_get_keywords()`, the SQL keyword list JDBC drivers
/// read, are accepted as table functions there (nothing else is).
pub fn classify_catalog(stmt: Statement) -> Result<StatementKind, SqlError> {
    classify_with(stmt, true)
}

fn classify_with(stmt: Statement, generators: bool) -> Result<StatementKind, SqlError> {
    let check_query_shape = |q: &Query| check_query_shape(q, generators);
    match stmt {
        Statement::Query(ref q) => {
            check_query_shape(q)?;
            Ok(StatementKind::Query(Box::new(stmt)))
        }
        Statement::Explain {
            ref statement,
            analyze,
            ..
        } => {
            if analyze {
                return Err(SqlError::new("0A000", "EXPLAIN ANALYZE is not supported"));
            }
            match statement.as_ref() {
                Statement::Query(q) => {
                    check_query_shape(q)?;
                    Ok(StatementKind::Explain(Box::new(stmt)))
                }
                _ => Err(SqlError::new(
                    "0A000",
                    "EXPLAIN is supported for queries only",
                )),
            }
        }
        Statement::Set(set) => classify_set(set),
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
            // `SHOW transaction isolation level` is the one multi-word form;
            // otherwise the parts are a dotted name (`lakeward.purpose`).
            let name = if words == ["transaction", "isolation", "level"] {
                "transaction_isolation".to_owned()
            } else {
                words.join(".")
            };
            Ok(StatementKind::Show { name })
        }
        Statement::Reset(r) => Ok(StatementKind::Reset {
            name: match r.reset {
                ast::Reset::ALL => None,
                ast::Reset::ConfigurationParameter(n) => Some(object_name_lower(&n)),
            },
        }),
        Statement::StartTransaction { .. } => Ok(StatementKind::Begin),
        Statement::Commit { .. } => Ok(StatementKind::Commit),
        Statement::Rollback {
            savepoint: None, ..
        } => Ok(StatementKind::Rollback),
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Ok(StatementKind::RollbackTo {
            name: normalize(&name),
        }),
        Statement::Savepoint { name } => Ok(StatementKind::Savepoint {
            name: normalize(&name),
        }),
        Statement::ReleaseSavepoint { name } => Ok(StatementKind::Release {
            name: normalize(&name),
        }),
        Statement::Discard { object_type } => Ok(match object_type {
            ast::DiscardObject::ALL => StatementKind::DiscardAll,
            ast::DiscardObject::PLANS => StatementKind::NoOp {
                tag: "DISCARD PLANS",
            },
            ast::DiscardObject::SEQUENCES => StatementKind::NoOp {
                tag: "DISCARD SEQUENCES",
            },
            ast::DiscardObject::TEMP => StatementKind::NoOp {
                tag: "DISCARD TEMP",
            },
        }),
        Statement::Deallocate { name, .. } => Ok(StatementKind::Deallocate {
            name: (!(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")))
                .then(|| normalize(&name)),
        }),
        Statement::Declare { mut stmts } if stmts.len() == 1 => {
            let d = stmts.remove(0);
            let (Some(query), [name]) = (d.for_query, d.names.as_slice()) else {
                return Err(SqlError::new(
                    "0A000",
                    "only DECLARE … CURSOR FOR <query> is supported",
                ));
            };
            if d.binary == Some(true) {
                return Err(SqlError::new("0A000", "binary cursors are not supported"));
            }
            check_query_shape(&query)?;
            Ok(StatementKind::Declare {
                name: normalize(name),
                query: Box::new(Statement::Query(query)),
            })
        }
        Statement::Fetch {
            name,
            direction,
            into: None,
            ..
        } => {
            let number = |v: &ast::ValueWithSpan| match &v.value {
                ast::Value::Number(n, _) => n
                    .parse::<usize>()
                    .map_err(|_| SqlError::new("22023", "invalid FETCH count")),
                _ => Err(SqlError::new("22023", "invalid FETCH count")),
            };
            let count = match direction {
                ast::FetchDirection::Count { limit }
                | ast::FetchDirection::Forward { limit: Some(limit) } => Some(number(&limit)?),
                ast::FetchDirection::Next | ast::FetchDirection::Forward { limit: None } => Some(1),
                ast::FetchDirection::All | ast::FetchDirection::ForwardAll => None,
                _ => {
                    return Err(SqlError::new(
                        "0A000",
                        "cursors are forward-only: FETCH [FORWARD] n | ALL | NEXT",
                    ));
                }
            };
            Ok(StatementKind::Fetch {
                name: normalize(&name),
                count,
            })
        }
        Statement::Close { cursor } => Ok(StatementKind::Close {
            name: match cursor {
                ast::CloseCursor::All => None,
                ast::CloseCursor::Specific { name } => Some(normalize(&name)),
            },
        }),
        other => Err(refusal(&other)),
    }
}

/// The refusal for a statement kind outside the allow-list.
fn refusal(stmt: &Statement) -> SqlError {
    match stmt {
        // Reading out through COPY is not a write, but it is not served
        // either: the same rows are a query (or a cursor) away.
        Statement::Copy {
            to: true,
            target: ast::CopyTarget::Stdout,
            ..
        } => SqlError::new(
            "0A000",
            "COPY … TO STDOUT is not supported by lakeward: run the query itself, or DECLARE a cursor to page through it",
        ),
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_)
        | Statement::Copy { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateFunction(_)
        | Statement::Drop { .. }
        | Statement::AlterTable(_)
        | Statement::Grant(_)
        | Statement::Revoke(_) => {
            SqlError::new("42501", "permission denied: lakeward is read-only")
        }
        _ => SqlError::new("0A000", "statement kind is not supported by lakeward"),
    }
}

fn classify_set(set: ast::Set) -> Result<StatementKind, SqlError> {
    match set {
        ast::Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            let local = match scope {
                None | Some(ast::ContextModifier::Session) => false,
                Some(ast::ContextModifier::Local) => true,
                Some(ast::ContextModifier::Global) => {
                    return Err(SqlError::new("0A000", "SET GLOBAL is not supported"));
                }
            };
            let name = object_name_lower(&variable);
            let value = set_value(&values)?;
            Ok(StatementKind::Set { name, value, local })
        }
        ast::Set::SetTimeZone { local, value } => Ok(StatementKind::Set {
            name: "timezone".into(),
            value: set_value(&[value])?,
            local,
        }),
        ast::Set::SetNames { charset_name, .. } => Ok(StatementKind::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value),
            local: false,
        }),
        ast::Set::SetTransaction { .. } => Ok(StatementKind::NoOp { tag: "SET" }),
        _ => Err(SqlError::new("0A000", "this form of SET is not supported")),
    }
}

/// Turn the right-hand side of `SET` into text. Only literals and bare
/// identifiers are accepted; `DEFAULT` gives `None`.
fn set_value(values: &[Expr]) -> Result<Option<String>, SqlError> {
    let mut parts = Vec::with_capacity(values.len());
    for v in values {
        let text = match v {
            Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s)
                | ast::Value::DoubleQuotedString(s)
                | ast::Value::EscapedStringLiteral(s) => s.clone(),
                ast::Value::Number(n, _) => n.clone(),
                ast::Value::Boolean(b) => b.to_string(),
                _ => return Err(SqlError::new("22023", "invalid value for SET")),
            },
            Expr::Identifier(i)
                if i.value.eq_ignore_ascii_case("default") && i.quote_style.is_none() =>
            {
                return Ok(None);
            }
            Expr::Identifier(i) => i.value.clone(),
            Expr::UnaryOp {
                op: ast::UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => format!("-{n}"),
                    _ => return Err(SqlError::new("22023", "invalid value for SET")),
                },
                _ => return Err(SqlError::new("22023", "invalid value for SET")),
            },
            _ => return Err(SqlError::new("22023", "invalid value for SET")),
        };
        parts.push(text);
    }
    Ok(Some(parts.join(", ")))
}

/// Lower-cased dotted name, as PostgreSQL folds configuration parameter names.
pub fn object_name_lower(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// An identifier as DataFusion resolves it: unquoted folds to lower case.
fn normalize(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// A table a statement refers to, resolved like DataFusion resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// `None` when a three-part name names another catalog.
    pub schema_table: Option<(String, String)>,
}

/// The CTE names in scope at each point of a walk over a statement: call
/// [`CteScopes::enter`] from `pre_visit_query` and [`CteScopes::leave`]
/// from `post_visit_query`. Names are compared as DataFusion normalises
/// them (unquoted folds to lower case), as one part whatever they contain:
/// `"clinical.patients"` is one name, never the two-part name.
///
/// - [`CteScopes::loose`]: every CTE of an enclosing `WITH` is in scope
///   everywhere below it, its own body and earlier siblings' bodies
///   included. Use it where calling something a CTE that the planner
///   resolves as a table can only turn a result into an error.
/// - [`CteScopes::exact`]: as DataFusion plans, a CTE is in scope in the
///   bodies of the CTEs after it and in the query body; a recursive CTE's
///   own body is counted as *not* seeing itself (a self-reference in the
///   static term is a table for DataFusion). Use it where calling a table a
///   CTE would be unsafe.
#[derive(Debug, Default)]
pub struct CteScopes {
    frames: Vec<CteFrame>,
    exact: bool,
}

#[derive(Debug)]
struct CteFrame {
    names: Vec<String>,
    /// Addresses of the CTE bodies, to know which body is being walked.
    bodies: Vec<usize>,
    /// How many of `names` are in scope now.
    visible: usize,
}

fn address(q: &Query) -> usize {
    q as *const Query as usize
}

impl CteScopes {
    pub fn loose() -> CteScopes {
        CteScopes {
            frames: Vec::new(),
            exact: false,
        }
    }

    pub fn exact() -> CteScopes {
        CteScopes {
            frames: Vec::new(),
            exact: true,
        }
    }

    /// Entering `q` (its WITH clause, if any, comes into scope).
    pub fn enter(&mut self, q: &Query) {
        if self.exact
            && let Some(f) = self.frames.last_mut()
            && let Some(i) = f.bodies.iter().position(|b| *b == address(q))
        {
            f.visible = i;
        }
        let (names, bodies): (Vec<String>, Vec<usize>) = q
            .with
            .as_ref()
            .map(|w| {
                (
                    w.cte_tables
                        .iter()
                        .map(|c| normalize(&c.alias.name))
                        .collect(),
                    w.cte_tables.iter().map(|c| address(&c.query)).collect(),
                )
            })
            .unwrap_or_default();
        let visible = names.len();
        self.frames.push(CteFrame {
            names,
            bodies,
            visible,
        });
    }

    /// Leaving `q`.
    pub fn leave(&mut self, q: &Query) {
        self.frames.pop();
        if let Some(f) = self.frames.last_mut()
            && f.bodies.contains(&address(q))
        {
            f.visible = f.names.len();
        }
    }

    /// Is the one-part name `name` (normalised) a CTE here?
    pub fn contains(&self, name: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.names[..f.visible].iter().any(|n| n == name))
    }
}

/// Every table reference of `stmt` that is not one of its CTEs, resolved
/// against `default_schema` (one-part names) and the `datafusion` catalog.
pub fn referenced_tables(stmt: &Statement, default_schema: &str) -> Vec<TableRef> {
    /// CTE names are in scope inside the query that defines them (its WITH
    /// bodies and its body), not outside it. A mistake here could only turn a
    /// 42501 into a 42P01: denied tables are absent from a session's catalog.
    struct Refs<'a> {
        scopes: CteScopes,
        default_schema: &'a str,
        out: Vec<TableRef>,
    }
    impl Visitor for Refs<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.scopes.enter(q);
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.scopes.leave(q);
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| p.as_ident().map(normalize).unwrap_or_default())
                .collect();
            let r = match parts.as_slice() {
                [t] if self.scopes.contains(t) => None,
                [t] => Some(TableRef {
                    schema_table: Some((self.default_schema.to_owned(), t.clone())),
                }),
                [s, t] => Some(TableRef {
                    schema_table: Some((s.clone(), t.clone())),
                }),
                [c, s, t] if c == "datafusion" => Some(TableRef {
                    schema_table: Some((s.clone(), t.clone())),
                }),
                _ => Some(TableRef { schema_table: None }),
            };
            self.out.extend(r);
            ControlFlow::Continue(())
        }
    }
    let mut v = Refs {
        scopes: CteScopes::loose(),
        default_schema,
        out: Vec::new(),
    };
    let _ = stmt.visit(&mut v);
    v.out
}

/// Does the statement name any relation that is not one of its own CTEs
/// or a system-catalog table?
pub fn reads_tables(stmt: &Statement) -> bool {
    referenced_tables(stmt, "public").iter().any(|r| {
        !matches!(&r.schema_table, Some((s, _)) if crate::rewrite::compat::SYSTEM_SCHEMAS.contains(&s.as_str()))
    })
}

/// The table functions a catalog statement may call.
pub const CATALOG_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "pg_get_keywords"];

/// Refuse query shapes that read outside the registered tables or write:
/// table functions (`read_parquet(...)`), `SELECT ... INTO`, locking clauses,
/// and quoted file paths used as table names.
fn check_query_shape(q: &Query, generators: bool) -> Result<(), SqlError> {
    struct Shape(Option<SqlError>, bool, CteScopes);
    impl Visitor for Shape {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            let bad = match t {
                // A quoted one-part name is one name, dots and all: the
                // name of a CTE in scope (which the planner reads under a
                // name of its own, see `search_path::isolate_dotted_ctes`).
                // Paths and URLs stay refused whatever a CTE is called.
                TableFactor::Table {
                    name, args: None, ..
                } if matches!(name.0.as_slice(), [p] if p.as_ident().is_some_and(|i| {
                    !i.value.contains('/')
                        && !i.value.contains(':')
                        && self.2.contains(&normalize(i))
                })) =>
                {
                    None
                }
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } if self.1
                    && name.0.len() == 1
                    && name.0[0].as_ident().is_some_and(|i| {
                        CATALOG_TABLE_FUNCTIONS
                            .iter()
                            .any(|f| i.value.eq_ignore_ascii_case(f))
                    }) =>
                {
                    None
                }
                TableFactor::Table { args: Some(_), .. } | TableFactor::Function { .. } => {
                    Some("table functions are not allowed")
                }
                TableFactor::Table { name, .. }
                    if name.0.iter().any(|p| {
                        p.as_ident().is_some_and(|i| {
                            i.quote_style.is_some()
                                && (i.value.contains('/')
                                    || i.value.contains(':')
                                    || i.value.contains('.'))
                        })
                    }) =>
                {
                    Some("file or URL table references are not allowed")
                }
                TableFactor::Table { .. }
                | TableFactor::Derived { .. }
                | TableFactor::NestedJoin { .. } => None,
                _ => Some("table functions are not allowed"),
            };
            if let Some(msg) = bad {
                self.0 = Some(SqlError::new("42501", format!("permission denied: {msg}")));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e
                && f.name.0.iter().any(|p| {
                    p.as_ident()
                        .is_some_and(|i| i.value.to_lowercase().starts_with("lakeward_"))
                })
            {
                self.0 = Some(SqlError::new("42883", "function does not exist"));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.2.leave(q);
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.2.enter(q);
            if !q.locks.is_empty() {
                self.0 = Some(SqlError::new(
                    "0A000",
                    "row locking is not supported by lakeward",
                ));
                return ControlFlow::Break(());
            }
            if let SetExpr::Select(s) = q.body.as_ref()
                && s.into.is_some()
            {
                self.0 = Some(SqlError::new(
                    "42501",
                    "permission denied: lakeward is read-only",
                ));
                return ControlFlow::Break(());
            }
            if matches!(
                q.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            ) {
                self.0 = Some(SqlError::new(
                    "42501",
                    "permission denied: lakeward is read-only",
                ));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Shape(None, generators, CteScopes::loose());
    let _ = q.visit(&mut v);
    match v.0 {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
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
    fn copy_to_stdout_is_refused_as_unsupported() {
        for sql in [
            "COPY clinical.patients TO STDOUT",
            "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)",
        ] {
            assert_eq!(kind(sql).unwrap_err().code, "0A000", "{sql}");
        }
        assert_eq!(
            kind("COPY clinical.patients FROM STDIN").unwrap_err().code,
            "42501"
        );
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
        let refs = |sql: &str| {
            referenced_tables(&parse(sql, ParseLimits::default()).unwrap()[0], "clinical")
        };
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
}
