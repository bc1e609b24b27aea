//! The enforcement step shared by the server and `lakeward policy test`:
//! from a parsed query and a policy subject to a plan over secured tables.
//!
//! Order matters and is the same everywhere: compile the access context,
//! refuse denied tables by name, then plan in a state whose catalog holds only
//! the secured tables of that context.

use std::sync::Arc;

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
pub fn access_for(
    engine: &Engine,
    policy: &Policy,
    subject: Option<&Subject>,
) -> Option<AccessContext> {
    let s = subject?;
    let mut compiled = false;
    let access = engine
        .access_cache
        .get_with((policy.version.clone(), s.clone()), || {
            compiled = true;
            compile(policy, s, engine.column_lists())
        });
    crate::metrics::Metrics::global().cache(crate::metrics::Cache::Policy, !compiled);
    access
}

/// Refuse, by name, every table `stmt` reads that exists but is not granted,
/// and every table left out because lakeward cannot read its Delta protocol
/// (0A000). Unknown tables fall through to the planner (42P01).
pub fn check_grants(
    engine: &Engine,
    access: Option<&AccessContext>,
    stmt: &Statement,
    default_schema: &str,
) -> Result<(), SqlError> {
    let served = engine.column_lists();
    for r in gate::referenced_tables(stmt, default_schema) {
        if let Some((s, t)) = &r.schema_table {
            let name = format!("{s}.{t}");
            let granted = access.is_some_and(|a| a.tables.contains_key(&name));
            if served.contains_key(&name) && !granted {
                return Err(SqlError::permission_denied(format!("table {name}")));
            }
            if engine.unreadable_tables().contains_key(&name) {
                return Err(SqlError::new(
                    "0A000",
                    format!(
                        "table {name} is not served: its Delta protocol needs a reader feature lakeward cannot read (the server log names it)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The names a query fingerprint may print as written
/// ([`crate::rewrite::fingerprint`]): every served schema, table and
/// column, the auditors' views and their columns, and the names of the
/// system catalogs. Tables a session may not query are included: they are
/// the deployment's schema, never data, and they tell the auditor what a
/// refused statement asked for. Borrowed from the engine: nothing is
/// computed per statement.
pub struct CatalogNames<'a> {
    served: &'a std::collections::BTreeMap<String, Vec<String>>,
    system: &'static std::collections::HashSet<String>,
}

/// The catalog names of `engine` (see [`CatalogNames`]).
pub fn catalog_names(engine: &Engine) -> CatalogNames<'_> {
    CatalogNames {
        served: engine.column_lists(),
        system: crate::engine::catalog::system_names(engine),
    }
}

impl crate::rewrite::fingerprint::KnownNames for CatalogNames<'_> {
    fn knows(&self, name: &str) -> bool {
        [
            crate::engine::CATALOG,
            crate::engine::catalog::DATABASE,
            "public",
        ]
        .contains(&name)
            || self.system.contains(name)
            || audit_view_names().contains(name)
            || self.served.iter().any(|(table, columns)| {
                table
                    .split_once('.')
                    .is_some_and(|(s, t)| s == name || t == name)
                    || columns.iter().any(|c| c == name)
            })
    }
}

/// The auditors' views and every name their definitions use.
fn audit_view_names() -> &'static std::collections::HashSet<String> {
    use datafusion::sql::sqlparser::ast::{Expr, Select, SelectItem, Visit, Visitor};
    use std::ops::ControlFlow;
    static NAMES: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        struct Collect(std::collections::HashSet<String>);
        impl Visitor for Collect {
            type Break = ();
            fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
                for item in &s.projection {
                    if let SelectItem::ExprWithAlias { alias, .. } = item {
                        self.0.insert(alias.value.clone());
                    }
                }
                ControlFlow::Continue(())
            }
            fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
                match e {
                    Expr::Identifier(i) => {
                        self.0.insert(i.value.clone());
                    }
                    Expr::CompoundIdentifier(parts) => {
                        self.0.extend(parts.iter().map(|i| i.value.clone()));
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            }
        }
        let mut c = Collect(std::collections::HashSet::new());
        for (name, sql) in crate::engine::audit_views::VIEWS {
            c.0.insert((*name).to_owned());
            if let Ok(stmts) = gate::parse(sql, gate::ParseLimits::default()) {
                for s in &stmts {
                    let _ = s.visit(&mut c);
                }
            }
        }
        c.0.insert("patient_access".to_owned());
        for f in crate::engine::patient_access::schema().fields() {
            c.0.insert(f.name().clone());
        }
        c.0
    })
}

/// What a planned statement touches, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessReport {
    pub policy_version: String,
    /// `schema.table`, sorted, each once.
    pub tables: Vec<String>,
    /// `schema.table.column` actually read, sorted.
    pub columns: Vec<String>,
    /// Rules applied to those tables (grants, masks, filters, consent).
    pub rules: Vec<String>,
    /// What the shadow policy would have done with the statement, when the
    /// server runs one (`query::shadow`).
    pub shadow: Option<ShadowVerdict>,
}

/// A statement planned under the shadow policy as well (SPEC §10): never
/// executed, only compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowVerdict {
    pub policy_version: String,
    /// Whether the shadow policy would have let the statement run.
    pub allowed: bool,
    /// `schema.table.column` read by the statement (under either policy)
    /// whose treatment differs (visible / mask / NULL / refused), and
    /// `schema.table (rows)` for a table whose row filter or consent rule
    /// differs, `(aggregation)` for a different aggregation policy.
    pub differences: Vec<String>,
}

/// Defence in depth: every table scan in a client plan must be a secured
/// table. Anything else (a raw provider reached by a path nobody foresaw)
/// refuses the statement with XX000 and logs an incident (no PHI).
pub fn verify_plan(
    plan: &LogicalPlan,
    access: Option<&AccessContext>,
    policy_version: &str,
) -> Result<AccessReport, SqlError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::source_as_provider;
    use datafusion::logical_expr::LogicalPlan as P;
    let mut tables = std::collections::BTreeSet::new();
    let mut columns = std::collections::BTreeSet::new();
    let mut violation = false;
    let walked = plan.apply_with_subqueries(|node| {
        if let P::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source).ok();
            // A recursive CTE's work table only re-reads rows its own
            // (secured) branches produced.
            if provider
                .as_ref()
                .is_some_and(|p| p.is::<datafusion::datasource::cte_worktable::CteWorkTable>())
            {
                return Ok(TreeNodeRecursion::Continue);
            }
            // A view (the auditors' views) is verified through its own plan,
            // which must itself read secured tables only.
            if let Some(view) = provider
                .as_ref()
                .and_then(|p| p.downcast_ref::<datafusion::catalog::view::ViewTable>())
            {
                match verify_plan(view.logical_plan(), access, policy_version) {
                    Ok(inner) => {
                        tables.extend(inner.tables);
                        columns.extend(inner.columns);
                        return Ok(TreeNodeRecursion::Continue);
                    }
                    Err(_) => {
                        violation = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
            }
            // A system-catalog table describes the secured catalog it was
            // built from; it holds no row of any served table.
            let secured = provider.is_some_and(|p| {
                p.is::<crate::engine::secure::SecuredTable>()
                    // Reads the session's own secured `audit.access_log`.
                    || p.is::<crate::engine::patient_access::PatientAccessTable>()
                    || p.is::<crate::engine::catalog::CatalogTable>()
                    // A pure row generator (catalog statements only; the
                    // gate refuses it elsewhere).
                    || p.is::<datafusion::functions_table::generate_series::GenerateSeriesTable>()
            });
            if !secured {
                violation = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            let name = scan.table_name.to_string();
            let name = name.strip_prefix("datafusion.").unwrap_or(&name).to_owned();
            let schema = scan.source.schema();
            match &scan.projection {
                Some(idx) => {
                    for i in idx {
                        columns.insert(format!("{name}.{}", schema.field(*i).name()));
                    }
                }
                None => {
                    for f in schema.fields() {
                        columns.insert(format!("{name}.{}", f.name()));
                    }
                }
            }
            tables.insert(name);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    // A walk that could not finish proves nothing: refuse, like a violation.
    if violation || walked.is_err() {
        tracing::error!(
            incident = "unsecured_scan",
            "a client plan reached a table outside the policy barrier; statement refused"
        );
        return Err(SqlError::new(
            "XX000",
            "internal error: statement refused by the policy verifier",
        ));
    }
    let rules = access
        .map(|a| {
            tables
                .iter()
                .filter_map(|t| a.tables.get(t))
                .flat_map(|t| t.rules.iter().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    Ok(AccessReport {
        policy_version: policy_version.to_owned(),
        tables: tables.into_iter().collect(),
        columns: columns.into_iter().collect(),
        rules,
        shadow: None,
    })
}

/// Plan `stmt` for `access` over secured tables.
pub async fn plan(
    engine: &Engine,
    policy: &Policy,
    access: Option<&AccessContext>,
    mut stmt: Statement,
    search_path: &[String],
) -> Result<(Arc<SessionState>, LogicalPlan, AccessReport), SqlError> {
    let default_schema = search_path.first().map(String::as_str);
    let state = engine
        .secured_state(access, &policy.consent, default_schema)
        .await?;
    // Unqualified names resolve through the search path, against the tables
    // this session may query (and the system catalog) only.
    let catalog = state.catalog_list().catalog(crate::engine::CATALOG);
    // A quoted one-part CTE name with a dot must not answer for the table
    // of that two-part name.
    crate::rewrite::search_path::isolate_dotted_ctes(&mut stmt);
    crate::rewrite::search_path::qualify(&mut stmt, search_path, &|schema, table| {
        catalog
            .as_ref()
            .and_then(|c| c.schema(schema))
            .is_some_and(|s| s.table_exist(table))
    });
    check_grants(engine, access, &stmt, default_schema.unwrap_or("public"))?;
    let plan = engine.plan(&state, stmt).await?;
    let report = verify_plan(&plan, access, &policy.version)?;
    tracing::debug!(tables = ?report.tables, rules = report.rules.len(), policy_version = %report.policy_version, "statement planned");
    Ok((state, plan, report))
}

/// What a cached rewrite and plan depends on: the SQL text, the policy
/// version and everything of the session that shapes the plan (the policy
/// subject — user, role, site, purpose, break-glass —, the search path and
/// the database name bound for `current_database()`). Two sessions share an
/// entry only when all of these agree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanKey {
    pub sql: Arc<str>,
    pub policy_version: String,
    pub subject: Option<Subject>,
    pub search_path: Vec<String>,
    pub database: String,
}

/// Rewrites and plans by [`PlanKey`]. Entries that bind a connection-specific
/// value (`pg_backend_pid()`) are never inserted.
pub type PlanCache<V> = moka::sync::Cache<PlanKey, V>;

/// What a plan-cache entry reports of its memory ([`plan_weight`]).
pub trait CacheWeight {
    /// Estimated bytes the entry holds.
    fn weight(&self) -> u32;
}

/// A plan cache holding at most `max_bytes` of estimated entry sizes and at
/// most `max_entries` statements (every entry weighs at least
/// `max_bytes / max_entries`); an entry unused for ten minutes is dropped.
pub fn plan_cache<V: CacheWeight + Clone + Send + Sync + 'static>(
    max_entries: u64,
    max_bytes: u64,
) -> PlanCache<V> {
    let floor = u32::try_from(max_bytes / max_entries.max(1)).unwrap_or(u32::MAX);
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(move |key: &PlanKey, value: &V| {
            // The key's text, and the parsed statement an entry keeps to
            // re-plan: about eight times its text.
            let text = u32::try_from(key.sql.len().saturating_mul(9)).unwrap_or(u32::MAX);
            value.weight().saturating_add(text).max(floor)
        })
        .time_to_idle(std::time::Duration::from_secs(600))
        .build()
}

/// Estimated bytes a planned statement holds in the plan cache: a fixed
/// 16 KiB (what an entry of a two-node plan was measured to add to the
/// process's resident memory: its schemas, parameter and result types,
/// audit report and cache key, about 20 KiB per entry over 3,000 distinct
/// point lookups), and more per plan node, expression node and schema
/// field. The cache adds the key's text and parsed statement.
pub fn plan_weight(plan: &LogicalPlan) -> u32 {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let (mut nodes, mut exprs, mut fields) = (0usize, 0usize, 0usize);
    let _ = plan.apply_with_subqueries(|node| {
        nodes += 1;
        fields += node.schema().fields().len();
        for e in node.expressions() {
            let _ = e.apply(|_| {
                exprs += 1;
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let bytes = 16 * 1024 + nodes * 512 + exprs * 160 + fields * 96;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Sized(u32);

    impl CacheWeight for Sized {
        fn weight(&self) -> u32 {
            self.0
        }
    }

    fn key(i: usize) -> PlanKey {
        PlanKey {
            sql: Arc::from(format!("SELECT {i}")),
            policy_version: "v1".into(),
            subject: None,
            search_path: vec![],
            database: "lakeward".into(),
        }
    }

    #[test]
    fn the_plan_cache_is_bounded_in_bytes_and_in_entries() {
        // 1 MiB and 1,000 entries: 20 KiB entries stop at about 51.
        let cache: PlanCache<Sized> = plan_cache(1_000, 1 << 20);
        for i in 0..500 {
            cache.insert(key(i), Sized(20 * 1024));
        }
        cache.run_pending_tasks();
        assert!(
            cache.weighted_size() <= 1 << 20,
            "{}",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 52, "{}", cache.entry_count());
        assert!(cache.entry_count() >= 40, "{}", cache.entry_count());
        // Tiny entries: the entry bound holds (each weighs at least 1 KiB).
        let cache: PlanCache<Sized> = plan_cache(100, 1 << 20);
        for i in 0..1_000 {
            cache.insert(key(i), Sized(10));
        }
        cache.run_pending_tasks();
        assert!(cache.entry_count() <= 100, "{}", cache.entry_count());
    }
}
