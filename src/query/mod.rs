//! The path of one statement, in order. Every caller that turns SQL into
//! a plan runs these steps: the pgwire handler (`server::handler`),
//! `lakeward policy test` (`query::policy_test`) and the criterion benches. What
//! differs between them (a connected session or a test principal) is the
//! [`Principal`] they pass, not a copy of the steps.
//!
//! 1. [`classify`]: the catalog dialect (`rewrite::compat`, catalog
//!    statements only) and the gate (`rewrite::gate`): one allowed statement
//!    kind or a refusal.
//! 2. [`plan_query`], for a query or an `EXPLAIN`:
//!    - purpose: reading tables needs a declared purpose of use;
//!    - access: the principal's compiled access context (cached per policy
//!      version and subject);
//!    - session functions: `current_user`, `version()`, `current_setting()`
//!      … become literals bound from the principal;
//!    - result names: PostgreSQL's output column names; `EXISTS` outside
//!      a filter as a correlated count;
//!    - plan (`enforce::plan`): grants by name, the search path against the
//!      secured catalog, planning over secured tables, the plan verifier and
//!      the access report;
//!    - parameter types (`$1..$n`), and the plan optimised once when it
//!      calls only immutable functions.
//!
//! 3. [`execute::execute`]: limits (admission, deadline, memory budget),
//!    the audit record made durable, the run with its first batch computed;
//!    [`execute::Running::rows`] streams the encoded rows under the row cap
//!    and counts them into the completion record. The server passes the
//!    session's limits and audit trail; `policy test` passes neither.

pub(crate) mod execute;
pub(crate) mod limits;
mod param_types;
pub(crate) mod policy_test;
pub mod shadow;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
pub use datafusion::sql::sqlparser::ast::Statement;
use pgwire::api::Type;

use crate::engine::Engine;
use crate::error::SqlError;
use crate::policy::Policy;
use crate::policy::compile::Subject;
use crate::rewrite::gate::{self, StatementKind};
use crate::rewrite::session_functions::{SessionFacts, bind_session_functions};

/// Who a statement is prepared for: the subject (role, attributes,
/// purpose), the policy in force, the search path and what the session
/// functions answer.
pub struct Principal {
    /// Role, attributes and purpose; `None` until both a role and a
    /// purpose are known.
    pub subject: Option<Subject>,
    /// The declared purpose of use.
    pub purpose: Option<crate::policy::Purpose>,
    pub policy: Arc<Policy>,
    /// The shadow policy the statement is also planned under (SPEC §10).
    pub shadow: Option<Arc<Policy>>,
    /// Schemas in lookup order.
    pub search_path: Vec<String>,
    pub facts: SessionFacts,
}

impl Principal {
    /// The principal of a connected session (`backend_pid` as the client
    /// was told at startup).
    pub fn of_session(session: &crate::session::Session, backend_pid: i32) -> Principal {
        let search_path = session.search_path();
        Principal {
            subject: session.subject(),
            purpose: session.purpose(),
            policy: session.policy(),
            shadow: session.shadow(),
            facts: SessionFacts {
                user: session.user.clone(),
                database: session.database.clone(),
                schema: search_path
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "public".into()),
                backend_pid,
                version: crate::session::version_string(),
                search_path: search_path.clone(),
                settings: session.settings(),
            },
            search_path,
        }
    }

    /// A principal that is not a connection (`lakeward policy test`): the
    /// role's search path from the policy, PostgreSQL's defaults otherwise.
    pub fn detached(policy: Arc<Policy>, subject: Subject, user: &str) -> Principal {
        let search_path: Vec<String> = policy
            .roles
            .get(&subject.role)
            .map(|r| r.search_path.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| vec!["public".to_owned()]);
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("search_path".to_owned(), search_path.join(", "));
        settings.insert(
            "lakeward.purpose".to_owned(),
            subject.purpose.as_str().to_owned(),
        );
        Principal {
            facts: SessionFacts {
                user: user.to_owned(),
                database: "lakeward".to_owned(),
                schema: search_path
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "public".into()),
                backend_pid: 0,
                version: crate::session::version_string(),
                search_path: search_path.clone(),
                settings,
            },
            purpose: Some(subject.purpose),
            subject: Some(subject),
            policy,
            shadow: None,
            search_path,
        }
    }

    /// The policy versions a plan for this principal depends on (as
    /// `Session::policy_key`).
    pub fn policy_key(&self) -> String {
        match &self.shadow {
            Some(s) => format!("{}+shadow:{}", self.policy.version, s.version),
            None => self.policy.version.clone(),
        }
    }
}

/// Step 1: the catalog dialect for catalog statements, then the gate.
pub fn classify(stmt: Statement) -> Result<StatementKind, SqlError> {
    let mut stmt = stmt;
    crate::rewrite::compat::portable_like(&mut stmt);
    if crate::rewrite::compat::rewrite_catalog_statement(&mut stmt) {
        gate::classify_catalog(stmt)
    } else {
        gate::classify(stmt)
    }
}

/// A query planned for a principal.
pub struct PlannedQuery {
    /// The planning state of the principal's secured catalog.
    pub state: Arc<SessionState>,
    pub plan: LogicalPlan,
    /// Whether `plan` is already optimised (plans calling only immutable
    /// functions are optimised once, here; the others at each execution).
    pub optimised: bool,
    pub report: crate::enforce::AccessReport,
    /// PostgreSQL and Arrow types of `$1..$n`.
    pub param_types: Vec<Type>,
    pub param_data_types: Vec<Option<DataType>>,
    pub result_schema: SchemaRef,
    /// Whether the statement reads any table (a purpose was required).
    pub reads_tables: bool,
    /// Whether a session function bound a value of this connection: such a
    /// plan is not shared with other sessions.
    pub connection_specific: bool,
}

/// A query rewritten for a principal, before planning.
pub struct RewrittenQuery {
    pub stmt: Box<Statement>,
    /// Whether the statement reads any table (a purpose was required).
    pub reads_tables: bool,
    /// Whether a session function bound a value of this connection.
    pub connection_specific: bool,
    /// Result columns planned under an internal alias (duplicate names).
    pub result_names: crate::rewrite::compat::ResultNames,
}

/// Step 2a: purpose, session functions and result names.
pub fn rewrite_query(
    principal: &Principal,
    mut stmt: Box<Statement>,
) -> Result<RewrittenQuery, SqlError> {
    let reads_tables = gate::reads_tables(&stmt);
    require_purpose(principal.purpose, reads_tables)?;
    let connection_specific = bind_session_functions(&mut stmt, &principal.facts);
    let result_names = crate::rewrite::compat::postgres_column_names(&mut stmt);
    crate::rewrite::compat::exists_outside_filters(&mut stmt);
    Ok(RewrittenQuery {
        stmt,
        reads_tables,
        connection_specific,
        result_names,
    })
}

/// Step 2: a query (or the query of an `EXPLAIN`) planned for `principal`:
/// [`rewrite_query`], then access, plan and verify (`enforce::plan`),
/// parameter types and the one-time optimisation.
pub async fn plan_query(
    engine: &Engine,
    principal: &Principal,
    stmt: Box<Statement>,
) -> Result<PlannedQuery, SqlError> {
    let Some(_) = &principal.shadow else {
        return plan_live(engine, principal, stmt).await;
    };
    // Under a shadow policy the statement is planned twice (executed once):
    // the verdict travels with the plan's access report to the audit
    // record. A statement the live policy refuses gets its verdict where
    // the refusal is audited (`shadow::verdict_of_refused`).
    let mut planned = plan_live(engine, principal, stmt.clone()).await?;
    planned.report.shadow = shadow::verdict(engine, principal, stmt, Some(&planned)).await;
    Ok(planned)
}

/// [`plan_query`] under the principal's live policy alone.
async fn plan_live(
    engine: &Engine,
    principal: &Principal,
    stmt: Box<Statement>,
) -> Result<PlannedQuery, SqlError> {
    let rewrite_started = std::time::Instant::now();
    let RewrittenQuery {
        stmt,
        reads_tables,
        connection_specific,
        result_names,
    } = rewrite_query(principal, stmt)?;
    let metrics = crate::metrics::Metrics::global();
    metrics.observe_phase(
        crate::metrics::Phase::ParseRewrite,
        rewrite_started.elapsed(),
    );
    let plan_started = std::time::Instant::now();
    let access = crate::enforce::access_for(engine, &principal.policy, principal.subject.as_ref());
    let spelled_casts = param_types::spelled_casts(&stmt);
    let (state, plan, report) = crate::enforce::plan(
        engine,
        &principal.policy,
        access.as_ref(),
        *stmt,
        &principal.search_path,
    )
    .await?;
    let (param_types, param_data_types) = parameter_types(&plan, &spelled_casts)?;
    let result_schema = shown_names(plan.schema().as_arrow(), &result_names);
    let (plan, optimised) = engine.optimise_once(&state, plan);
    let report = columns_read(report, &state, &plan, optimised);
    metrics.observe_phase(crate::metrics::Phase::Plan, plan_started.elapsed());
    Ok(PlannedQuery {
        state,
        plan,
        optimised,
        report,
        param_types,
        param_data_types,
        result_schema,
        reads_tables,
        connection_specific,
    })
}

/// The access report with the columns the plan reads once projections are
/// pushed into its scans: before optimisation a scan reads every column of
/// its table (`SELECT count(*)` would "read" them all). The audit record's
/// `columns` and the shadow policy's comparison use this list. A plan the
/// optimiser cannot handle keeps the scans' full lists (more, never fewer).
fn columns_read(
    mut report: crate::enforce::AccessReport,
    state: &SessionState,
    plan: &LogicalPlan,
    optimised: bool,
) -> crate::enforce::AccessReport {
    let optimised_plan;
    let plan = if optimised {
        plan
    } else {
        match state.optimize(plan) {
            Ok(p) => {
                optimised_plan = p;
                &optimised_plan
            }
            Err(_) => return report,
        }
    };
    if let Ok(precise) = crate::enforce::verify_plan(plan, None, &report.policy_version) {
        report.columns = precise.columns;
    }
    report
}

/// The result's schema as the client is told it: columns planned under an
/// internal alias get their PostgreSQL names back (several columns may
/// then share a name, as in PostgreSQL).
fn shown_names(
    schema: &datafusion::arrow::datatypes::Schema,
    names: &crate::rewrite::compat::ResultNames,
) -> SchemaRef {
    if names.is_empty() {
        return Arc::new(schema.clone());
    }
    let fields: Vec<datafusion::arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match names.shown_as(f.name()) {
            Some(shown) => Arc::new(f.as_ref().clone().with_name(shown)),
            None => Arc::clone(f),
        })
        .collect();
    Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// Reading tables needs a declared purpose of use (SPEC §4). Checked when
/// a statement is planned, and again when a prepared one runs (the purpose
/// may have been reset since).
pub fn require_purpose(
    purpose: Option<crate::policy::Purpose>,
    reads_tables: bool,
) -> Result<(), SqlError> {
    if reads_tables && purpose.is_none() {
        return Err(SqlError::permission_denied(
            "no purpose of use declared: SET lakeward.purpose = 'treatment' | 'payment' | 'operations' | 'research'",
        ));
    }
    Ok(())
}

/// `$1..$n` types of a plan, in order. A parameter DataFusion gives no
/// type takes the type of a cast applied to it, as in PostgreSQL
/// (`$1::int4[]` is `int4[]`, `$1::oid[]` is `oid[]`: see
/// `param_types`); one with neither is TEXT.
fn parameter_types(
    plan: &LogicalPlan,
    spelled_casts: &param_types::SpelledCasts,
) -> Result<(Vec<Type>, Vec<Option<DataType>>), SqlError> {
    let map = plan
        .get_parameter_types()
        .map_err(|e| crate::engine::errors::to_sql_error(&e))?;
    let cast_targets = param_types::cast_targets(plan);
    let mut indexed: Vec<(usize, Option<(Type, DataType)>)> = Vec::with_capacity(map.len());
    for (id, ty) in map {
        let n = id
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1 && *n <= 65535)
            .ok_or_else(|| SqlError::new("42P02", "parameters must be written $1, $2, ..."))?;
        let typed = match ty {
            Some(t) => Some((
                arrow_pg::datatypes::into_pg_type(&t).unwrap_or(Type::TEXT),
                t,
            )),
            None => param_types::from_cast(&id, &cast_targets, spelled_casts),
        };
        indexed.push((n, typed));
    }
    indexed.sort_by_key(|(n, _)| *n);
    let count = indexed.last().map(|(n, _)| *n).unwrap_or(0);
    let mut pg = vec![Type::TEXT; count];
    let mut data_types = vec![None; count];
    for (n, typed) in indexed {
        if let Some((t, d)) = typed {
            pg[n - 1] = t;
            data_types[n - 1] = Some(d);
        }
    }
    Ok((pg, data_types))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Purpose;

    fn one(sql: &str) -> Statement {
        gate::parse(sql, Default::default())
            .expect("parses")
            .remove(0)
    }

    fn principal(role: &str) -> Principal {
        let policy = Arc::new(Policy::load(None).expect("shipped policy"));
        let subject = Subject {
            user: "t".into(),
            role: role.into(),
            site: None,
            purpose: Purpose::Operations,
            break_glass: false,
        };
        Principal::detached(policy, subject, "t")
    }

    #[test]
    fn classify_translates_catalog_statements_and_refuses_writes() {
        let catalog = one(
            "SELECT relname FROM pg_catalog.pg_class WHERE relname OPERATOR(pg_catalog.~) '^p'",
        );
        assert!(matches!(classify(catalog), Ok(StatementKind::Query(_))));
        let e = classify(one("DELETE FROM clinical.patients"))
            .err()
            .expect("refused");
        assert_eq!(e.code, "42501");
        assert!(matches!(
            classify(one("SET lakeward.purpose = 'research'")),
            Ok(StatementKind::Set { .. })
        ));
    }

    #[test]
    fn rewrite_requires_a_purpose_to_read_tables_and_binds_session_functions() {
        let mut p = principal("analyst");
        let stmt = |sql| match classify(one(sql)) {
            Ok(StatementKind::Query(s)) => s,
            _ => panic!("a query"),
        };
        let r = rewrite_query(&p, stmt("SELECT current_user, count(*) FROM patients"))
            .expect("rewritten");
        assert!(r.reads_tables);
        assert!(!r.connection_specific, "the user is part of the plan key");
        assert!(
            r.stmt.to_string().starts_with("SELECT 't' AS current_user"),
            "bound to a literal: {}",
            r.stmt
        );
        let r = rewrite_query(&p, stmt("SELECT pg_backend_pid()")).expect("rewritten");
        assert!(
            r.connection_specific,
            "the backend pid is this connection's"
        );
        let r = rewrite_query(&p, stmt("SELECT 1")).expect("rewritten");
        assert!(!r.reads_tables && !r.connection_specific);

        p.purpose = None;
        let e = rewrite_query(&p, stmt("SELECT count(*) FROM clinical.patients"))
            .err()
            .expect("no purpose");
        assert_eq!(e.code, "42501");
        assert!(
            rewrite_query(&p, stmt("SELECT 1")).is_ok(),
            "no table, no purpose needed"
        );
    }

    #[test]
    fn a_detached_principal_has_its_roles_search_path() {
        let p = principal("analyst");
        assert_eq!(p.search_path, ["clinical", "claims", "public"]);
        assert_eq!(p.facts.schema, "clinical");
        assert_eq!(p.facts.settings["lakeward.purpose"], "operations");
        // A role without one gets PostgreSQL's default.
        let p = principal("no-such-role");
        assert_eq!(p.search_path, ["public"]);
    }
}
