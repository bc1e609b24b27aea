//! Literals of a simple query lifted into parameters, so that statements
//! differing only in their key values share one cached plan (`pgbench -M
//! simple`, dashboards that inline ids).
//!
//! Only the shape whose meaning cannot change is lifted: a comparison
//! `column = literal` (either side), or `column IN (literal, …)`, that is a
//! conjunct of the outermost `WHERE` of a plain `SELECT`, with an integer
//! or a string literal. The caller plans the lifted statement and keeps it
//! only when every parameter was typed as an integer, a string or a
//! boolean column (so that binding the literal is exactly the comparison
//! DataFusion would have made); otherwise the statement is planned as
//! written.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, SetExpr, Statement, Value, ValueWithSpan, Visit, Visitor,
};

/// A lifted literal: its text, and whether it was an integer (not a
/// string).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lifted {
    pub(crate) text: String,
    pub(crate) integer: bool,
}

/// `stmt` with its liftable literals replaced by `$1..$n`, and the
/// literals in order; `None` when nothing is liftable or the statement
/// already has parameters.
pub(crate) fn lift_literals(stmt: &Statement) -> Option<(Statement, Vec<Lifted>)> {
    if has_placeholder(stmt) {
        return None;
    }
    let mut stmt = stmt.clone();
    let Statement::Query(q) = &mut stmt else {
        return None;
    };
    if q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let mut lifted = Vec::new();
    if let Some(w) = &mut select.selection {
        lift_conjuncts(w, &mut lifted);
    }
    if lifted.is_empty() {
        return None;
    }
    Some((stmt, lifted))
}

fn lift_conjuncts(e: &mut Expr, lifted: &mut Vec<Lifted>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            lift_conjuncts(left, lifted);
            lift_conjuncts(right, lifted);
        }
        Expr::Nested(inner) => lift_conjuncts(inner, lifted),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            if is_column(left) {
                lift_value(right, lifted);
            } else if is_column(right) {
                lift_value(left, lifted);
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if is_column(expr) => {
            if list.iter().all(|v| literal(v).is_some()) {
                for v in list.iter_mut() {
                    lift_value(v, lifted);
                }
            }
        }
        _ => {}
    }
}

fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// An integer or string literal.
fn literal(e: &Expr) -> Option<Lifted> {
    let Expr::Value(ValueWithSpan { value, .. }) = e else {
        return None;
    };
    match value {
        Value::Number(n, false) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Some(Lifted {
                text: n.clone(),
                integer: true,
            })
        }
        Value::SingleQuotedString(s) => Some(Lifted {
            text: s.clone(),
            integer: false,
        }),
        _ => None,
    }
}

fn lift_value(e: &mut Expr, lifted: &mut Vec<Lifted>) {
    if let Some(l) = literal(e) {
        lifted.push(l);
        *e = Expr::value(Value::Placeholder(format!("${}", lifted.len())));
    }
}

fn has_placeholder(stmt: &Statement) -> bool {
    struct Finds(bool);
    impl Visitor for Finds {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Value(v) = e
                && matches!(v.value, Value::Placeholder(_))
            {
                self.0 = true;
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut f = Finds(false);
    let _ = stmt.visit(&mut f);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        crate::rewrite::gate::parse(sql, Default::default())
            .expect("parses")
            .remove(0)
    }

    #[test]
    fn key_comparisons_of_the_outer_where_are_lifted() {
        let (s, l) = lift_literals(&one(
            "SELECT * FROM clinical.patients p WHERE p.patient_id = 42 AND 'S01' = site_id AND zip IN ('02453', '02454') AND x > 5",
        ))
        .expect("lifted");
        assert_eq!(
            s.to_string(),
            "SELECT * FROM clinical.patients p WHERE p.patient_id = $1 AND $2 = site_id AND zip IN ($3, $4) AND x > 5"
        );
        assert_eq!(
            l.iter()
                .map(|l| (l.text.as_str(), l.integer))
                .collect::<Vec<_>>(),
            [
                ("42", true),
                ("S01", false),
                ("02453", false),
                ("02454", false)
            ]
        );
    }

    #[test]
    fn other_shapes_are_left_as_written() {
        for sql in [
            "SELECT * FROM t WHERE a = 1.5",
            "SELECT * FROM t WHERE a = 1 OR b = 2",
            "SELECT * FROM t WHERE a = $1 AND b = 2",
            "SELECT * FROM t WHERE a NOT IN (1, 2)",
            "SELECT * FROM t WHERE a IN (1, b)",
            "SELECT * FROM t WHERE lower(a) = 'x'",
            "WITH c AS (SELECT 1) SELECT * FROM c WHERE a = 1",
            "SELECT 1 UNION SELECT 2",
            "SELECT * FROM t LIMIT 5",
        ] {
            assert!(lift_literals(&one(sql)).is_none(), "{sql}");
        }
    }
}
