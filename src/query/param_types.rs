//! Parameter types from casts.
//!
//! PostgreSQL gives a parameter that nothing else types the type of a cast
//! applied to it: `SELECT $1::int4[]` describes `$1` as `int4[]`, and
//! `WHERE oid = ANY($1::oid[])` as `oid[]`. DataFusion infers a
//! placeholder's type from a comparison with a column, never from a cast,
//! so such a parameter would be described as `text` and a driver would
//! encode its value as text (asyncpg refuses to: it binds a Python list
//! only to an array type).
//!
//! Two sources make the type, both taken from the first cast of `$n`:
//! - the plan's cast target ([`cast_targets`]) is the Arrow type the value
//!   is decoded into (the plan casts it to the same type, so binding it
//!   changes nothing the plan computes);
//! - the statement's text ([`spelled_casts`]) names the PostgreSQL type
//!   where the Arrow type cannot: `oid` and the `reg*` types are stored as
//!   `int4`, `varchar` as `text`. The spelled type is used only when it is
//!   stored as the plan's target type; otherwise the target's PostgreSQL
//!   type is described.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, Placeholder, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast::{self, Statement, Visit, Visitor};
use pgwire::api::Type;

/// The PostgreSQL type each parameter's first cast names in the statement
/// (`$n::t`, `CAST($n AS t)`), for the types the plan cannot tell apart.
#[derive(Debug, Default)]
pub(super) struct SpelledCasts(HashMap<String, Type>);

/// Collects [`SpelledCasts`] from a statement, in text order.
pub(super) fn spelled_casts(stmt: &Statement) -> SpelledCasts {
    struct V(HashMap<String, Type>);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::Cast {
                expr, data_type, ..
            } = e
                && let Some(id) = placeholder_id(expr)
                && !self.0.contains_key(id)
                && let Some(t) = spelled_type(data_type)
            {
                self.0.insert(id.to_owned(), t);
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(HashMap::new());
    let _ = stmt.visit(&mut v);
    SpelledCasts(v.0)
}

/// `$n`, possibly parenthesised.
fn placeholder_id(e: &ast::Expr) -> Option<&str> {
    match e {
        ast::Expr::Nested(inner) => placeholder_id(inner),
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(id) => Some(id.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// The PostgreSQL type a cast's target names, for the types whose Arrow
/// storage is shared with another type (oid aliases, `varchar`) and their
/// arrays. Every other type is described from the plan's Arrow type.
fn spelled_type(t: &ast::DataType) -> Option<Type> {
    match t {
        ast::DataType::Varchar(_) | ast::DataType::CharacterVarying(_) => Some(Type::VARCHAR),
        ast::DataType::Regclass => Some(Type::REGCLASS),
        ast::DataType::Custom(name, args) if args.is_empty() => {
            let last = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
            if name.0.len() == 2
                && !name.0[0]
                    .as_ident()
                    .is_some_and(|s| s.value.eq_ignore_ascii_case("pg_catalog"))
            {
                return None;
            }
            if name.0.len() > 2 {
                return None;
            }
            Some(match last.as_str() {
                "oid" => Type::OID,
                "regclass" => Type::REGCLASS,
                "regtype" => Type::REGTYPE,
                "regproc" => Type::REGPROC,
                "regprocedure" => Type::REGPROCEDURE,
                "regoper" => Type::REGOPER,
                "regoperator" => Type::REGOPERATOR,
                "regnamespace" => Type::REGNAMESPACE,
                "regrole" => Type::REGROLE,
                "regconfig" => Type::REGCONFIG,
                "regdictionary" => Type::REGDICTIONARY,
                "regcollation" => Type::REGCOLLATION,
                "varchar" => Type::VARCHAR,
                _ => return None,
            })
        }
        ast::DataType::Array(
            ast::ArrayElemTypeDef::SquareBracket(inner, None)
            | ast::ArrayElemTypeDef::AngleBracket(inner),
        ) => array_of(&spelled_type(inner)?),
        _ => None,
    }
}

/// The oid-alias types (stored as `int4`) and their arrays.
const OID_TYPES: [(Type, Type); 12] = [
    (Type::OID, Type::OID_ARRAY),
    (Type::REGCLASS, Type::REGCLASS_ARRAY),
    (Type::REGTYPE, Type::REGTYPE_ARRAY),
    (Type::REGPROC, Type::REGPROC_ARRAY),
    (Type::REGPROCEDURE, Type::REGPROCEDURE_ARRAY),
    (Type::REGOPER, Type::REGOPER_ARRAY),
    (Type::REGOPERATOR, Type::REGOPERATOR_ARRAY),
    (Type::REGNAMESPACE, Type::REGNAMESPACE_ARRAY),
    (Type::REGROLE, Type::REGROLE_ARRAY),
    (Type::REGCONFIG, Type::REGCONFIG_ARRAY),
    (Type::REGDICTIONARY, Type::REGDICTIONARY_ARRAY),
    (Type::REGCOLLATION, Type::REGCOLLATION_ARRAY),
];

/// The array type of an element type this module spells.
fn array_of(t: &Type) -> Option<Type> {
    if *t == Type::VARCHAR {
        return Some(Type::VARCHAR_ARRAY);
    }
    OID_TYPES
        .iter()
        .find(|(scalar, _)| scalar == t)
        .map(|(_, array)| array.clone())
}

/// The PostgreSQL type an Arrow value of a spelled type is stored as:
/// oids as `int4`, `varchar` as `text`.
fn stored_as(t: &Type) -> Type {
    if *t == Type::VARCHAR {
        Type::TEXT
    } else if *t == Type::VARCHAR_ARRAY {
        Type::TEXT_ARRAY
    } else if OID_TYPES.iter().any(|(scalar, _)| scalar == t) {
        Type::INT4
    } else if OID_TYPES.iter().any(|(_, array)| array == t) {
        Type::INT4_ARRAY
    } else {
        t.clone()
    }
}

/// The Arrow type of the first cast of each placeholder in the plan
/// (subqueries included).
pub(super) fn cast_targets(plan: &LogicalPlan) -> HashMap<String, DataType> {
    let mut out: HashMap<String, DataType> = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let (inner, target) = match e {
                    Expr::Cast(Cast { expr, field }) => (expr.as_ref(), field.data_type()),
                    Expr::TryCast(TryCast { expr, field }) => (expr.as_ref(), field.data_type()),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if let Expr::Placeholder(Placeholder { id, .. }) = inner {
                    out.entry(id.clone()).or_insert_with(|| target.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    out
}

/// The described type and the decode type of a parameter DataFusion gave
/// no type, from its first cast; `None` when it has no cast whose target
/// lakeward can describe.
pub(super) fn from_cast(
    id: &str,
    targets: &HashMap<String, DataType>,
    spelled: &SpelledCasts,
) -> Option<(Type, DataType)> {
    let target = targets.get(id)?;
    let physical = arrow_pg::datatypes::into_pg_type(target).ok()?;
    if physical == Type::UNKNOWN {
        return None;
    }
    let described = match spelled.0.get(id) {
        Some(t) if stored_as(t) == physical => t.clone(),
        _ => physical,
    };
    Some((described, target.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> Statement {
        crate::rewrite::gate::parse(sql, Default::default())
            .expect("parses")
            .remove(0)
    }

    /// `sql` planned by a plain DataFusion context, its parameters
    /// described as `plan_query` describes them.
    async fn described(sql: &str) -> (Vec<Type>, Vec<Option<DataType>>) {
        let ctx = datafusion::prelude::SessionContext::new();
        let s = stmt(sql);
        let spelled = spelled_casts(&s);
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(s)))
            .await
            .expect("plans");
        super::super::parameter_types(&plan, &spelled).expect("typed")
    }

    #[tokio::test]
    async fn a_parameter_takes_the_type_of_its_cast() {
        let (pg, data) = described("SELECT $1::int4[], CAST($2 AS bigint), $3::varchar, $4").await;
        assert_eq!(
            pg,
            [Type::INT4_ARRAY, Type::INT8, Type::VARCHAR, Type::TEXT]
        );
        assert!(matches!(&data[0], Some(DataType::List(f)) if *f.data_type() == DataType::Int32));
        assert_eq!(data[1], Some(DataType::Int64));
        assert_eq!(data[3], None, "no cast, no type: text");
    }

    #[tokio::test]
    async fn a_type_inferred_from_a_column_is_kept() {
        let (pg, data) =
            described("SELECT x FROM (VALUES (1::bigint)) t(x) WHERE x = $1 AND $2::int2 > 0")
                .await;
        assert_eq!(pg, [Type::INT8, Type::INT2]);
        assert_eq!(data, [Some(DataType::Int64), Some(DataType::Int16)]);
        // Compared through its cast: the cast's type, as in PostgreSQL.
        let (pg, _) = described("SELECT x FROM (VALUES (1::bigint)) t(x) WHERE x = $1::int2").await;
        assert_eq!(pg, [Type::INT2]);
    }

    #[test]
    fn spelled_types_cover_oid_aliases_varchar_and_their_arrays() {
        let s = spelled_casts(&stmt(
            "SELECT $1::oid[], CAST($2 AS regtype), ($3)::pg_catalog.oid, $4::varchar(3), \
             $5::int4, $1::text, $6::other.oid",
        ));
        assert_eq!(s.0.get("$1"), Some(&Type::OID_ARRAY), "the first cast wins");
        assert_eq!(s.0.get("$2"), Some(&Type::REGTYPE));
        assert_eq!(s.0.get("$3"), Some(&Type::OID));
        assert_eq!(s.0.get("$4"), Some(&Type::VARCHAR));
        assert_eq!(s.0.get("$5"), None, "described from the plan's type");
        assert_eq!(s.0.get("$6"), None, "not PostgreSQL's oid");
    }

    #[test]
    fn a_spelled_type_is_used_only_when_stored_as_the_plan_target() {
        let list = |t: DataType| {
            DataType::List(std::sync::Arc::new(
                datafusion::arrow::datatypes::Field::new_list_field(t, true),
            ))
        };
        let targets: HashMap<String, DataType> = [
            ("$1".to_owned(), list(DataType::Int32)),
            ("$2".to_owned(), DataType::Int64),
            ("$3".to_owned(), DataType::Utf8View),
            ("$4".to_owned(), DataType::Null),
        ]
        .into_iter()
        .collect();
        let spelled = SpelledCasts(
            [
                ("$1".to_owned(), Type::OID_ARRAY),
                ("$2".to_owned(), Type::OID),
                ("$3".to_owned(), Type::VARCHAR),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            from_cast("$1", &targets, &spelled),
            Some((Type::OID_ARRAY, list(DataType::Int32)))
        );
        assert_eq!(
            from_cast("$2", &targets, &spelled),
            Some((Type::INT8, DataType::Int64)),
            "an oid spelling over another storage is not believed"
        );
        assert_eq!(
            from_cast("$3", &targets, &spelled),
            Some((Type::VARCHAR, DataType::Utf8View))
        );
        assert_eq!(from_cast("$4", &targets, &spelled), None);
        assert_eq!(from_cast("$9", &targets, &spelled), None);
    }
}
