//! Parsing untrusted SQL text under limits: text size, nesting depth,
//! set-operation chains and select-list width.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use crate::error::SqlError;

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
