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
//! - every [`Value`](datafusion::sql::sqlparser::ast::Value) anywhere in the
//!   tree (sqlparser visits each
//!   [`ValueWithSpan`](datafusion::sql::sqlparser::ast::ValueWithSpan)): strings of every quoting style (plain, `E'…'`,
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
//! that keep literal text outside
//! [`Value`](datafusion::sql::sqlparser::ast::Value) nodes, such as `COMMENT ON … IS
//! '…'`, `NOTIFY c, '…'` or `COPY … (DELIMITER ',')`, and for identifiers in
//! positions the tree walk does not reach): every remaining string constant
//! (single-quoted with or without a prefix, dollar-quoted) becomes `?`, and
//! so does every double-quoted identifier that names nothing. A quoted
//! identifier that is kept is printed so that the fingerprint never holds a
//! `'` or a `$` outside a parameter: in PostgreSQL's `U&"…"` form with those
//! characters escaped (`SELECT zip AS U&"\0027"`) when it contains one.
//!
//! The files:
//! - this file: [`fingerprint`] itself and the names an identifier may
//!   resolve to ([`KnownNames`]);
//! - `tree.rs`: the walks over the statement's tree, collecting the names
//!   it declares and replacing values, placeholders and identifiers that
//!   name nothing;
//! - `text.rs`: the scan of the printed text for the constants and quoted
//!   identifiers that remain;
//! - `kind.rs`: [`statement_kind`], the command-tag style kind of a
//!   statement;
//! - `tests.rs`: the unit tests.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{Ident, Statement, Visit, VisitMut};

mod kind;
#[cfg(test)]
mod tests;
mod text;
mod tree;

pub(crate) use kind::statement_kind;
use text::scrub_text;
use tree::{Declared, Scrub};

/// The placeholder that replaces literal values.
const PLACEHOLDER: &str = "?";

/// The catalog's names: what an identifier of a statement may resolve to
/// besides the names the statement declares itself.
pub(crate) trait KnownNames {
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
pub(crate) fn fingerprint(stmt: &Statement, catalog: &dyn KnownNames) -> String {
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
