//! The enforcement step shared by the server and `lakeward policy test`:
//! from a parsed query and a policy subject to a plan over secured tables.
//!
//! Order matters and is the same everywhere: compile the access context,
//! refuse denied tables by name, then plan in a state whose catalog holds only
//! the secured tables of that context.

use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use crate::engine::Engine;
use crate::error::SqlError;
use crate::policy::Policy;
use crate::policy::compile::{AccessContext, Subject, compile};
use crate::rewrite::gate;

/// The access context of `subject` (`None`: no role or purpose yet, so no
/// tables), cached per policy version and subject.
pub fn access_for(engine: &Engine, policy: &Policy, subject: Option<&Subject>) -> Option<AccessContext> {
    let s = subject?;
    let key = format!("{}|{s:?}", policy.version);
    engine.access_cache.get_with(key, || compile(policy, s, &engine.column_lists()))
}

/// Refuse, by name, every table `stmt` reads that exists but is not granted.
/// Unknown tables fall through to the planner (42P01).
pub fn check_grants(engine: &Engine, access: Option<&AccessContext>, stmt: &Statement, default_schema: &str) -> Result<(), SqlError> {
    let served = engine.column_lists();
    for r in gate::referenced_tables(stmt, default_schema) {
        if let Some((s, t)) = &r.schema_table {
            let name = format!("{s}.{t}");
            let granted = access.is_some_and(|a| a.tables.contains_key(&name));
            if served.contains_key(&name) && !granted {
                return Err(SqlError::permission_denied(format!("table {name}")));
            }
        }
    }
    Ok(())
}

/// Plan `stmt` for `access` over secured tables.
pub async fn plan(
    engine: &Engine,
    policy: &Policy,
    access: Option<&AccessContext>,
    stmt: Statement,
    default_schema: Option<&str>,
) -> Result<(SessionState, LogicalPlan), SqlError> {
    check_grants(engine, access, &stmt, default_schema.unwrap_or("public"))?;
    let state = engine.secured_state(access, &policy.consent, default_schema).await?;
    let plan = engine.plan(&state, stmt).await?;
    Ok((state, plan))
}
