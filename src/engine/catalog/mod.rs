//! The policy-filtered system catalog: `pg_catalog` and `information_schema`
//! as one session's policy lets it see them.
//!
//! Both schemas are registered inside each secured catalog (one per policy
//! version and access subject), next to the secured tables, and they are
//! computed *from that catalog*: a table the subject may not query is not in
//! the secured catalog, so it is not in `pg_class`, `pg_attribute`,
//! `information_schema.tables` or `columns` either, and neither are its
//! columns or an otherwise empty schema. `datafusion-pg-catalog` provides the
//! PostgreSQL-shaped tables (its static tables and its `pg_class`,
//! `pg_namespace`, `pg_attribute`, … computed over a catalog list); lakeward
//! wraps every one of them in a [`CatalogTable`], the only provider besides a
//! secured table that the plan verifier lets a client plan scan.
//!
//! Files:
//!
//! - `tables.rs`: [`CatalogTable`], the provider every system table is
//!   served as, and the schema wrapper that makes each table of a system
//!   schema one (with no rows for another cluster's statistics and secrets,
//!   and keyless `pg_index`/`pg_constraint`).
//! - `pg_catalog.rs`: `pg_catalog` through `datafusion-pg-catalog` over the
//!   secured catalog, the registration of both schemas
//!   ([`register_system_schemas`]) and every system name
//!   ([`system_names`]).
//! - `information_schema.rs`: the `information_schema` views computed from
//!   [`Visible`], and PostgreSQL's names for Arrow types
//!   ([`pg_type_names`]).
//! - `privileges.rs`: `has_*_privilege`, answered from the session's policy
//!   ([`privilege_udfs`]).
//! - `attribute.rs`: `pg_attribute` with PostgreSQL's type modifiers
//!   (`numeric(p,s)` precision and scale in `atttypmod`).
//! - `activity.rs`: `pg_stat_activity` (the executing session's own row,
//!   from a [`SessionActivity`] on its state; never the statement text)
//!   and `pg_cursors`.
//! - `functions.rs`: PostgreSQL functions that do not depend on the policy
//!   (`format`, `json_build_object`, `obj_description`, `set_config` for
//!   harmless settings, `pg_cancel_backend`, …: [`static_udfs`]) and `pg_get_keywords()` ([`KeywordsFunction`]).
//! - `oid_array_agg.rs`: `array_agg` keeping the oid tag of its input
//!   (`array_agg(atttypid)` is an `oid[]`, as in PostgreSQL).
//! - `text_array.rs`: `parse_text_array`, a text array bound as an
//!   untyped parameter read as PostgreSQL reads its literal (the compat rule
//!   for `x = ANY($n)` calls it).

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::SchemaRef;

mod activity;
mod attribute;
mod functions;
mod information_schema;
mod oid_array_agg;
mod pg_catalog;
mod privileges;
mod tables;
mod text_array;

// Set by the executor on a statement's state (see `activity.rs`).
pub(crate) use activity::SessionActivity;
pub(crate) use functions::{KeywordsFunction, static_udfs};
pub(crate) use oid_array_agg::oid_array_agg;
pub(crate) use pg_catalog::{register_system_schemas, system_names};
pub(crate) use privileges::privilege_udfs;
pub(crate) use tables::CatalogTable;

/// The database name the catalog reports (`pg_database`, `table_catalog`).
pub(crate) const DATABASE: &str = "lakeward";

/// Schemas every session has, whatever its policy.
pub(crate) use crate::rewrite::compat::SYSTEM_SCHEMAS;

/// The tables a session may query, by schema: what the catalog describes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visible {
    /// `(schema, table, schema of the table, is a view)`, sorted.
    pub tables: Vec<(String, String, SchemaRef, bool)>,
}

impl Visible {
    fn schemas(&self) -> BTreeSet<&str> {
        self.tables.iter().map(|(s, ..)| s.as_str()).collect()
    }

    /// Is `schema.table` one the session may query (a system table counts)?
    pub(crate) fn has_table(&self, schema: Option<&str>, table: &str) -> bool {
        match schema {
            Some(s) if SYSTEM_SCHEMAS.contains(&s) => true,
            Some(s) => self.tables.iter().any(|(ts, t, ..)| ts == s && t == table),
            None => self.tables.iter().any(|(_, t, ..)| t == table),
        }
    }

    pub(crate) fn has_column(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        self.tables.iter().any(|(ts, t, sch, _)| {
            schema.is_none_or(|s| s == ts) && t == table && sch.field_with_name(column).is_ok()
        })
    }

    pub(crate) fn has_schema(&self, schema: &str) -> bool {
        SYSTEM_SCHEMAS.contains(&schema) || schema == "public" || self.schemas().contains(schema)
    }
}
