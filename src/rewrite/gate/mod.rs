//! The statement gate: parse SQL text and sort every statement into a kind
//! lakeward knows how to serve, or refuse it before anything is planned.
//!
//! Allow-list, not deny-list: a statement kind that is not named below is
//! refused. Nothing here touches DataFusion; it speaks the sqlparser AST only.
//!
//! The files:
//! - `parsing.rs`: [`parse`] SQL text under [`ParseLimits`] (text size,
//!   nesting depth, set-operation chains, select-list width);
//! - `classification.rs`: [`classify`] / [`classify_catalog`] a parsed
//!   statement into a [`StatementKind`] or refuse it, and the query-shape
//!   checks (table functions, file reads, writes, row locks);
//! - `tables.rs`: the tables a statement reads ([`referenced_tables`],
//!   [`reads_tables`]) and the CTE scoping that walk relies on
//!   ([`CteScopes`]);
//! - `copy.rs`: `COPY … TO STDOUT`, its source as a query and its options;
//! - `tests.rs`: the unit tests.

use datafusion::sql::sqlparser::ast::{self, Statement};

mod classification;
mod copy;
mod parsing;
mod tables;
#[cfg(test)]
mod tests;

pub use classification::{CATALOG_TABLE_FUNCTIONS, classify, classify_catalog, object_name_lower};
pub use copy::{CopyFormat, CopyOptions, ForceQuote};
pub use parsing::{MAX_TARGET_LIST, ParseLimits, parse};
pub use tables::{CteScopes, TableRef, reads_tables, referenced_tables};

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
    /// `COPY (query) TO STDOUT` / `COPY table [(cols)] TO STDOUT`: the
    /// query's rows written in a COPY format.
    Copy {
        query: Box<Statement>,
        options: copy::CopyOptions,
    },
    /// `PREPARE name [(type, …)] AS <query>`: the query, its `$n` cast to
    /// the declared types, kept under `name` for `EXECUTE`.
    Prepare {
        name: String,
        statement: Box<Statement>,
    },
    /// `EXECUTE name [(value, …)]`: run a statement of `PREPARE` with
    /// these constant parameter values.
    Execute {
        name: String,
        params: Vec<ast::Expr>,
    },
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
            StatementKind::Copy { .. } => "COPY",
            StatementKind::Prepare { .. } => "PREPARE",
            StatementKind::Execute { .. } => "EXECUTE",
        }
    }
}

/// An identifier as DataFusion resolves it: unquoted folds to lower case.
fn normalize(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}
