//! The walks over a statement's tree: the names it declares, and the
//! scrub that replaces values, named placeholders and identifiers that
//! name nothing.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CloseCursor, Expr, FunctionArg, FunctionArguments, Ident, ObjectName, ObjectNamePart, Query,
    Reset, Select, SelectItem, Set, Statement, TableAlias, TableFactor, UnaryOperator, Value,
    ValueWithSpan, Visitor, VisitorMut,
};

use super::{Names, PLACEHOLDER, normal};

/// The names a statement declares: aliases (tables, their columns, select
/// items), CTEs and their columns, named windows, functions it calls and
/// their named arguments, cursors, prepared statements, savepoints and the
/// settings it names.
#[derive(Default)]
pub(super) struct Declared {
    pub(super) names: HashSet<String>,
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
pub(super) struct Scrub<'a> {
    pub(super) names: &'a Names<'a>,
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
