//! The query engine: DataFusion over Delta tables.
//!
//! [`Engine`] owns one DataFusion `SessionContext` in which every Delta table
//! found under the data root is registered as `schema.table` (catalog
//! `datafusion`). Statements arrive here already parsed, classified and (from
//! the enforcement issue on) rewritten; the engine plans the AST directly with
//! `statement_to_plan` — SQL text is never re-parsed — verifies that the plan
//! is read-only, and executes it as a stream of record batches.

pub mod accounting;
pub(crate) mod audit_views;
pub(crate) mod catalog;
pub(crate) mod consent;
pub mod delta;
mod distinct_count;
pub(crate) mod encode;
pub(crate) mod errors;
pub(crate) mod filter_sets;
mod lean;
mod like;
pub(crate) mod lookup;
pub mod masks;
pub(crate) mod memory;
pub(crate) mod patient_access;
pub mod patient_directory;
pub(crate) mod pg_datetime;
pub mod sample;
pub(crate) mod secure;
pub(crate) mod snapshot_scan;
pub mod tables;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::SqlError;
pub use tables::{TableLocation, TableName, discover_tables};

/// Errors while opening the tables (start-up), as opposed to per-query errors,
/// which are [`SqlError`]s.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open Delta table {table} at {location}: {message}")]
    OpenTable {
        table: String,
        location: String,
        message: String,
    },
    /// The table's Delta protocol needs a reader feature lakeward cannot
    /// read. The table is left out (queries naming it are refused with
    /// 0A000); the other tables are served.
    #[error("Delta table {table} at {location} is not served: {message}")]
    Unreadable {
        table: String,
        location: String,
        message: String,
    },
    #[error("cannot scan data folder {path}: {source}")]
    Scan {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid table location {0}")]
    Location(String),
    #[error("DataFusion setup failed: {0}")]
    Setup(String),
}

/// What is known about one served table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: TableName,
    pub location: String,
    pub version: u64,
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    /// The table's point-lookup indexes.
    pub(crate) lookup: Arc<lookup::TableLookup>,
}

/// Policy version and subject: what an access context is a function of.
pub type AccessKey = (String, crate::policy::compile::Subject);

/// A statement's final logical plan ([`Engine::final_plan`]), ready for
/// its physical plan ([`Engine::run_final`]).
pub(crate) struct FinalPlan {
    state: SessionState,
    plan: LogicalPlan,
    /// Optimised at preparation: planned by [`lean`].
    lean: bool,
    key_columns: usize,
    /// The one patient the statement can reach, when its plan pins one.
    pub pinned: Option<i64>,
}

/// What [`Engine::warm`] did: consent sets current afterwards, and how many
/// of them it had to compute (the others were current already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmed {
    pub current: usize,
    pub computed: usize,
}

/// The shared query engine.
pub struct Engine {
    /// Holds the raw tables and the mask functions; used only to build
    /// secured tables. Never the base of a client planning state.
    ctx: SessionContext,
    /// Template of client planning states: no tables, no mask functions
    /// (a client able to call the keyed pseudonym could reverse it).
    client: SessionContext,
    raw: secure::RawTables,
    /// The memory budget every statement draws from, and its pool.
    memory: memory::MemoryBudget,
    pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    /// Per role and budget: a runtime whose pool is the role's share of
    /// `pool` (one share per role, shared by its statements).
    role_runtimes: std::sync::Mutex<
        std::collections::HashMap<
            (String, usize),
            Arc<datafusion::execution::runtime_env::RuntimeEnv>,
        >,
    >,
    tables: BTreeMap<TableName, TableInfo>,
    /// `schema.table` → column names, derived once from `tables`.
    columns: BTreeMap<String, Vec<String>>,
    verify: SQLOptions,
    /// Secured catalogs by access-context key.
    /// (`None`: the catalog of a session that may read no table.)
    secured: moka::future::Cache<Option<AccessKey>, SecuredCatalog>,
    /// Planning states by access context and default schema, built once
    /// and shared by every statement (and plan-cache entry) of that
    /// context: a state copies DataFusion's function registries and
    /// configuration, about 50 KiB.
    states: moka::sync::Cache<(Option<AccessKey>, Option<String>), Arc<SessionState>>,
    /// PostgreSQL's static catalog tables (`pg_type`, `pg_proc`, …), shared.
    static_tables: Arc<datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables>,
    /// Compiled access contexts by policy version and subject.
    pub(crate) access_cache:
        moka::sync::Cache<AccessKey, Option<crate::policy::compile::AccessContext>>,
    /// Tables left out at open: `schema.table` → why (names the feature).
    unreadable: BTreeMap<String, String>,
    /// Key indexes and hot rows of point lookups.
    lookups: lookup::Lookups,
    /// The workers large statements are distributed to (`[cluster]`).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Coordinator>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One access context's tables, system catalog and privilege functions.
#[derive(Clone)]
struct SecuredCatalog {
    list: Arc<dyn datafusion::catalog::CatalogProviderList>,
    udfs: Arc<Vec<Arc<datafusion::logical_expr::ScalarUDF>>>,
}

/// The catalog name DataFusion uses by default; three-part names use it.
pub const CATALOG: &str = "datafusion";

/// Remove the registry entries still holding a function whose name
/// another function took: lakeward's `to_char` replaced DataFusion's under
/// `to_char`, but DataFusion's stayed under its alias `date_format`.
/// `SessionStateBuilder::new_from_existing`, which every statement's state
/// goes through, registers a registry's functions again under their names
/// in hash order, so such a leftover took its name back in some processes
/// and not in others (PostgreSQL's `to_char` template answered as a
/// chrono format).
pub(crate) fn drop_shadowed_functions(ctx: &SessionContext) {
    fn shadowed<F: ?Sized>(
        registry: &std::collections::HashMap<String, Arc<F>>,
        name: impl Fn(&F) -> &str,
        aliases: impl Fn(&F) -> &[String],
    ) -> Vec<String> {
        let taken = |f: &Arc<F>| {
            registry
                .get(name(f))
                .is_some_and(|owner| !Arc::ptr_eq(owner, f))
        };
        registry
            .iter()
            .filter(|(_, f)| taken(f))
            // Deregistering removes the function's aliases too: only when
            // none of them is another function's.
            .filter(|(_, f)| {
                aliases(f)
                    .iter()
                    .all(|a| registry.get(a).is_none_or(|g| Arc::ptr_eq(g, f)))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
    let state = ctx.state();
    let scalar = shadowed(state.scalar_functions(), |f| f.name(), |f| f.aliases());
    let aggregate = shadowed(state.aggregate_functions(), |f| f.name(), |f| f.aliases());
    let window = shadowed(state.window_functions(), |f| f.name(), |f| f.aliases());
    for key in scalar {
        ctx.deregister_udf(&key);
    }
    for key in aggregate {
        ctx.deregister_udaf(&key);
    }
    for key in window {
        ctx.deregister_udwf(&key);
    }
}

impl Engine {
    /// Open every table and register it. Fails if any table cannot be opened:
    /// serving a partial lakehouse silently would surprise everyone.
    /// Open with a random pseudonymisation key (tools that never serve masks).
    pub async fn open(locations: &[TableLocation]) -> Result<Engine, EngineError> {
        let key: [u8; 32] = rand::random();
        Engine::open_with_key(locations, &key).await
    }

    /// Open with the pseudonymisation key for the mask functions.
    pub async fn open_with_key(
        locations: &[TableLocation],
        pseudonym_key: &[u8],
    ) -> Result<Engine, EngineError> {
        let budget = memory::MemoryBudget::default_for_this_machine();
        Engine::open_with_budget(locations, pseudonym_key, budget).await
    }

    /// Open with the pseudonymisation key and a memory budget.
    pub async fn open_with_budget(
        locations: &[TableLocation],
        pseudonym_key: &[u8],
        budget: memory::MemoryBudget,
    ) -> Result<Engine, EngineError> {
        // One runtime, one memory pool and one spill folder for every
        // statement of this instance, internal and client plans alike.
        let partitions = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let (runtime, pool) = budget.runtime(partitions)?;
        // The internal and the client contexts share one configuration.
        let config = || {
            spark_compatible_reads(SessionConfig::new())
                .with_default_catalog_and_schema(CATALOG, "public")
                .with_create_default_catalog_and_schema(true)
                .with_information_schema(false)
                .with_target_partitions(partitions)
                .with_sort_spill_reservation_bytes(budget.sort_spill_reservation_bytes(partitions))
        };
        let ctx = SessionContext::new_with_config_rt(config(), runtime.clone());
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| EngineError::Setup("default catalog missing".into()))?;

        let mut tables = BTreeMap::new();
        let mut unreadable = BTreeMap::new();
        for loc in locations {
            match tables::open_and_register(&ctx, catalog.as_ref(), loc).await {
                Ok(info) => {
                    tables.insert(info.name.clone(), info);
                }
                // Never read wrong, and never let one table written with a
                // newer feature keep every other table from being served.
                Err(e @ EngineError::Unreadable { .. }) => {
                    tracing::error!(table = %loc.name, error = %e, "table not served");
                    unreadable.insert(loc.name.to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        // The over-89 mask reads today's date when it runs, not now.
        for udf in masks::mask_udfs(pseudonym_key) {
            ctx.register_udf(udf);
        }
        let verify = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let raw = secure::RawTables::new(ctx.clone());
        let secured = moka::future::Cache::builder().max_capacity(10_000).build();
        // About 50 KiB each: at most some 50 MiB.
        let states = moka::sync::Cache::builder()
            .max_capacity(1_000)
            .time_to_idle(std::time::Duration::from_secs(600))
            .build();
        // Client plans may hold patient-accounting taps (`accounting`).
        let client = SessionContext::new_with_state(
            datafusion::execution::SessionStateBuilder::new()
                .with_config(config())
                .with_runtime_env(runtime)
                .with_default_features()
                .with_query_planner(Arc::new(accounting::tap::AccountingQueryPlanner))
                .build(),
        );
        // PostgreSQL's catalog functions and type names (`regclass`, …) for
        // client statements. The `pg_catalog` schema this also registers in
        // the template's own catalog is never used: client states plan over
        // a secured catalog, which carries its own filtered system schemas.
        datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &client,
            CATALOG,
            datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| EngineError::Setup(e.to_string()))?;
        for udf in catalog::static_udfs() {
            client.register_udf(udf);
        }
        client.register_udf(like::like_escape_udf());
        // array_agg of catalog oids is an oid[], as in PostgreSQL.
        client.register_udaf(catalog::oid_array_agg());
        // count(DISTINCT <string>) with all its memory in the budget.
        client.register_udaf(distinct_count::accounted_count());
        // PostgreSQL's to_char/to_date/to_timestamp templates in place of
        // DataFusion's chrono formats (other arities stay DataFusion's).
        for udf in pg_datetime::udfs() {
            client.register_udf(udf);
        }
        let static_tables = Arc::new(
            datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables::try_new()
                .map_err(|e| EngineError::Setup(e.to_string()))?,
        );
        // The crate's pg_get_keywords() hands out a plain memory table; this
        // one is a catalog table the plan verifier admits.
        client.register_udtf(
            "pg_get_keywords",
            Arc::new(
                catalog::KeywordsFunction::new(&static_tables)
                    .map_err(|e| EngineError::Setup(e.to_string()))?,
            ),
        );
        drop_shadowed_functions(&client);
        drop_shadowed_functions(&ctx);
        let access_cache = moka::sync::Cache::builder().max_capacity(10_000).build();
        let columns = tables
            .values()
            .map(|t| {
                (
                    t.name.to_string(),
                    t.schema.fields().iter().map(|f| f.name().clone()).collect(),
                )
            })
            .collect();
        let lookups = lookup::Lookups::new(
            tables
                .values()
                .map(|t| (t.name.to_string(), t.lookup.clone()))
                .collect(),
        );
        Ok(Engine {
            lookups,
            ctx,
            client,
            raw,
            memory: budget,
            pool,
            role_runtimes: Default::default(),
            tables,
            columns,
            verify,
            secured,
            states,
            static_tables,
            access_cache,
            unreadable,
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Distribute large statements over `coordinator`'s workers from now
    /// on (set once, at start-up).
    pub fn set_cluster(&self, coordinator: Arc<crate::cluster::Coordinator>) {
        let _ = self.cluster.set(coordinator);
    }

    /// Sets the memory of point lookups' key indexes and hot-row cache
    /// (`[lookup]`) and starts their builder; the policy's `lookup_keys`
    /// apply at the next [`Engine::warm`].
    pub fn configure_lookups(&self, config: &crate::config::LookupConfig) {
        self.lookups.configure(config, &self.ctx);
    }

    /// Applies `policy`'s `lookup_keys` (after [`Engine::configure_lookups`]):
    /// the indexes it needs are built in the background. [`Engine::warm`]
    /// does this too.
    pub fn apply_lookup_keys(&self, policy: &crate::policy::Policy) {
        self.lookups.apply_policy(policy);
    }

    /// How many subquery row filters (`key IN (SELECT id FROM t WHERE …)`)
    /// are answered from per-version membership sets so far
    /// (`engine::filter_sets`).
    pub fn filter_sets(&self) -> usize {
        self.raw.filter_sets()
    }

    /// Whether the point-lookup key indexes of every table's loaded
    /// version are built (statements never wait for them; tests and
    /// benchmarks may).
    pub fn lookups_ready(&self) -> bool {
        self.lookups.ready()
    }

    /// Tables found but not served because their Delta protocol needs a
    /// reader feature lakeward cannot read: `schema.table` → why.
    pub fn unreadable_tables(&self) -> &BTreeMap<String, String> {
        &self.unreadable
    }

    /// The memory budget statements share.
    pub fn memory_budget(&self) -> &memory::MemoryBudget {
        &self.memory
    }

    /// The memory pool and spill space now, for `/metrics`.
    pub fn memory_gauges(&self) -> crate::metrics::MemoryGauges {
        let disk = self.ctx.runtime_env().disk_manager.clone();
        let spilling = disk.spilling_progress();
        crate::metrics::MemoryGauges {
            pool_limit_bytes: self.memory.limit_bytes,
            pool_reserved_bytes: self.pool.reserved() as u64,
            spill_bytes: spilling.current_bytes,
            spill_limit_bytes: if disk.tmp_files_enabled() {
                disk.max_temp_directory_size()
            } else {
                0
            },
            spill_files: spilling.active_files_count as u64,
        }
    }

    /// `state` with its statements drawing from `role`'s memory budget of
    /// `limit` bytes as well as the engine's (`[limits] max_memory_mb`).
    pub fn with_role_budget(
        &self,
        state: &SessionState,
        role: &str,
        limit: usize,
    ) -> Result<SessionState, SqlError> {
        let runtime = {
            let mut runtimes = self.role_runtimes.lock().unwrap_or_else(|p| p.into_inner());
            match runtimes.get(&(role.to_owned(), limit)) {
                Some(r) => r.clone(),
                None => {
                    let pool = Arc::new(memory::CappedPool::new(
                        self.pool.clone(),
                        limit,
                        memory::ROLE_BUDGET_EXHAUSTED,
                    ));
                    let r = memory::runtime_with_pool(&self.client.runtime_env(), pool)
                        .map_err(|_| SqlError::internal())?;
                    runtimes.insert((role.to_owned(), limit), r.clone());
                    r
                }
            }
        };
        Ok(
            datafusion::execution::session_state::SessionStateBuilder::new_from_existing(
                state.clone(),
            )
            .with_runtime_env(runtime)
            .build(),
        )
    }

    /// Every served table.
    pub fn tables(&self) -> &BTreeMap<TableName, TableInfo> {
        &self.tables
    }

    /// A planning state over the raw tables. Internal use and tests only:
    /// client statements are planned with [`Engine::secured_state`].
    pub fn state_for(&self, default_schema: Option<&str>) -> SessionState {
        let mut state = self.ctx.state();
        if let Some(schema) = default_schema
            && self.tables.keys().any(|t| t.schema == schema)
        {
            state.config_mut().options_mut().catalog.default_schema = schema.to_owned();
        }
        state
    }

    /// How a secured table reads its rows, as SQL for people.
    pub async fn explain_secured(
        &self,
        name: &str,
        access: &crate::policy::compile::TableAccess,
        consent: &crate::policy::ConsentRules,
    ) -> Option<String> {
        self.raw.explain_table(name, access, consent).await
    }

    /// Compute the consent sets `policy` reads, for every purpose one of
    /// its roles may declare, so that no statement pays for the first
    /// computation (at a million patients it is the cost of a window over
    /// millions of consent records).
    pub async fn warm(&self, policy: &crate::policy::Policy) -> Warmed {
        // Key indexes build in the background; nothing waits for them.
        self.apply_lookup_keys(policy);
        self.warm_consent(policy).await
    }

    /// The consent sets of [`Engine::warm`] alone: a shadow policy's
    /// (it plans statements; the live policy keeps choosing the key
    /// indexes).
    /// The consent set for `(rules, purpose, decision)` at the consent
    /// table's newest version (a worker's copy of a coordinator's set).
    pub(crate) async fn current_consent_set(
        &self,
        rules: &crate::policy::ConsentRules,
        purpose: crate::policy::Purpose,
        decision: consent::Decision,
    ) -> datafusion::error::Result<Arc<consent::ConsentSet>> {
        self.raw.current_consent_set(rules, purpose, decision).await
    }

    /// What a worker's stages run with: the engine's runtime (object
    /// stores, memory pool) and every function a client plan or a policy
    /// subtree may call — the clients' functions and the mask functions
    /// (keyed with this process's pseudonymisation key). Membership
    /// functions are not among them: they come with each plan
    /// (`cluster::codec`).
    pub(crate) fn stage_functions(&self) -> StageFunctions {
        let client = self.client.state();
        let raw = self.ctx.state();
        // One entry per function, under its own name (a registry also
        // lists each function under its aliases; an alias entry may hold a
        // function another took the name of, as lakeward's `to_char` took
        // DataFusion's).
        let mut scalar: std::collections::BTreeMap<
            String,
            Arc<datafusion::logical_expr::ScalarUDF>,
        > = client
            .scalar_functions()
            .iter()
            .filter(|(name, f)| f.name() == name.as_str())
            .map(|(name, f)| (name.clone(), f.clone()))
            .collect();
        for (name, f) in raw.scalar_functions() {
            if f.name() == name.as_str()
                && !name.starts_with(consent::CONSENT_FUNCTION_PREFIX)
                && !name.starts_with(filter_sets::FILTER_SET_PREFIX)
            {
                scalar.entry(name.clone()).or_insert_with(|| f.clone());
            }
        }
        StageFunctions {
            runtime: raw.runtime_env().clone(),
            scalar: scalar.into_values().collect(),
            aggregate: client
                .aggregate_functions()
                .iter()
                .filter(|(name, f)| f.name() == name.as_str())
                .map(|(_, f)| f.clone())
                .collect(),
            window: client
                .window_functions()
                .iter()
                .filter(|(name, f)| f.name() == name.as_str())
                .map(|(_, f)| f.clone())
                .collect(),
        }
    }

    pub async fn warm_consent(&self, policy: &crate::policy::Policy) -> Warmed {
        let purposes: std::collections::BTreeSet<crate::policy::Purpose> = policy
            .roles
            .values()
            .flat_map(|r| r.purposes.iter().copied())
            .collect();
        self.raw.warm_consent_sets(&policy.consent, purposes).await
    }

    /// Column names of every served table, for policy compilation.
    pub fn column_lists(&self) -> &BTreeMap<String, Vec<String>> {
        &self.columns
    }

    /// A planning state in which the only tables are the secured tables of
    /// `access` (none when `access` is `None`).
    pub async fn secured_state(
        &self,
        access: Option<&crate::policy::compile::AccessContext>,
        consent: &crate::policy::ConsentRules,
        default_schema: Option<&str>,
    ) -> Result<Arc<SessionState>, SqlError> {
        let key = access.map(|a| (a.policy_version.clone(), a.subject.clone()));
        // The search path's first schema is the default schema only when
        // the subject may read a table in it.
        let default_schema = default_schema
            .filter(|schema| {
                access.is_some_and(|a| {
                    a.tables
                        .keys()
                        .any(|t| t.split('.').next() == Some(*schema))
                })
            })
            .map(str::to_owned);
        let state_key = (key.clone(), default_schema.clone());
        if let Some(state) = self.states.get(&state_key) {
            return Ok(state);
        }
        let secured = self
            .secured
            .try_get_with(key, async {
                let (list, visible) = self
                    .raw
                    .secured_catalog(access, consent, &self.static_tables)
                    .await?;
                let udfs = catalog::privilege_udfs(visible)
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                Ok::<_, datafusion::error::DataFusionError>(SecuredCatalog {
                    list,
                    udfs: Arc::new(udfs),
                })
            })
            .await
            .map_err(|e| {
                tracing::error!(
                    error_kind = "secured catalog",
                    "cannot build secured tables"
                );
                errors::to_sql_error(&e)
            })?;
        let mut builder =
            datafusion::execution::SessionStateBuilder::new_from_existing(self.client.state())
                .with_catalog_list(secured.list.clone());
        if access.is_some_and(|a| a.aggregation.is_some()) {
            // Under an aggregation policy a statement is one aggregation
            // (`accounting::groups`): `count(DISTINCT x)` stays one, rather
            // than becoming an aggregate over a grouping.
            let client = self.client.state();
            let rules = client
                .optimizers()
                .iter()
                .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
                .cloned()
                .collect();
            builder = builder.with_optimizer_rules(rules);
        }
        let mut state = builder.build();
        for udf in secured.udfs.iter() {
            datafusion::execution::FunctionRegistry::register_udf(&mut state, udf.clone())
                .map_err(|e| errors::to_sql_error(&e))?;
        }
        if let Some(schema) = default_schema {
            state.config_mut().options_mut().catalog.default_schema = schema;
        }
        if let Some(rules) = access.and_then(|a| a.aggregation) {
            state
                .config_mut()
                .set_extension(Arc::new(accounting::groups::GroupPolicy {
                    min_group_size: rules.min_group_size,
                }));
        }
        let state = Arc::new(state);
        self.states.insert(state_key, state.clone());
        Ok(state)
    }

    /// Plan an AST statement (never SQL text) and check it is read-only.
    pub async fn plan(
        &self,
        state: &SessionState,
        statement: Statement,
    ) -> Result<LogicalPlan, SqlError> {
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(|e| errors::to_sql_error(&e))?;
        self.verify
            .verify_plan(&plan)
            .map_err(|_| SqlError::permission_denied("lakeward is read-only"))?;
        Ok(plan)
    }

    /// A planned statement optimised once, at preparation, when that gives
    /// the plan every execution would get: it calls only immutable functions
    /// (no `now()` to fold at execution time) and is not an EXPLAIN. Returns
    /// the plan and whether it is optimised; on any optimiser error the plan
    /// is returned as it was, to be optimised per execution.
    pub fn optimise_once(&self, state: &SessionState, plan: LogicalPlan) -> (LogicalPlan, bool) {
        if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_))
            || !secure::only_immutable_functions(&plan)
        {
            return (plan, false);
        }
        match state.optimize(&plan) {
            Ok(optimised) => (optimised, true),
            Err(_) => (plan, false),
        }
    }

    /// Optimise (unless `optimised`) and start executing a plan; rows arrive
    /// as a stream.
    pub async fn execute(
        &self,
        state: &SessionState,
        plan: LogicalPlan,
        optimised: bool,
    ) -> Result<SendableRecordBatchStream, SqlError> {
        let fin = self.final_plan(state, plan, optimised, None, None)?;
        self.run_final(fin, None).await.map(|(stream, _)| stream)
    }

    /// The first half of executing a statement for a connected session:
    /// its final logical plan, with its accounting, and the one patient it
    /// can reach when its plan pins one (`accounting::plan::pinned`), known
    /// before anything runs. `pg_stat_activity` shows `activity` (its own
    /// row, never another session's). With `accounting`, the patients the
    /// statement touches are collected into it (`engine::accounting`): the
    /// batches then carry as many trailing patient key columns as
    /// [`Engine::run_final`] says, which the row encoder strips.
    pub(crate) fn final_plan(
        &self,
        state: &SessionState,
        plan: LogicalPlan,
        optimised: bool,
        activity: Option<Arc<catalog::SessionActivity>>,
        accounting: Option<&Arc<accounting::PatientSets>>,
    ) -> Result<FinalPlan, SqlError> {
        use datafusion::optimizer::analyzer::AnalyzerRule;
        use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
        use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
        use datafusion::optimizer::{Optimizer, OptimizerRule};
        // A plan may be prepared (and cached) long before it runs: `now()`
        // and friends take the time of this execution.
        let mut state = state.clone();
        state.mark_start_execution();
        if let Some(activity) = activity {
            state.config_mut().set_extension(activity);
        }
        let sql_err = |e: datafusion::error::DataFusionError| errors::to_sql_error(&e);
        let plan = if !optimised {
            state.optimize(&plan).map_err(sql_err)?
        } else {
            // Optimised at preparation. Bound parameters became literals of
            // the client's types: type coercion casts them to their columns'
            // types (a text parameter against a `Utf8View` column), one
            // simplification pass folds what they made constant, and filter
            // pushdown moves predicates that became pushable into the scans,
            // so that they prune as they would in a plan optimised after
            // binding.
            let plan = TypeCoercion::new()
                .analyze(plan, state.config_options())
                .map_err(sql_err)?;
            let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
                Arc::new(SimplifyExpressions::new()),
                Arc::new(datafusion::optimizer::push_down_filter::PushDownFilter::new()),
            ];
            Optimizer::with_rules(rules)
                .optimize(plan, &state, |_, _| {})
                .map_err(sql_err)?
        };
        // An aggregation policy: the statement's shape first (42501).
        let groups = state
            .config()
            .get_extension::<accounting::groups::GroupPolicy>()
            .map(|g| g.min_group_size);
        if let Some(min) = groups
            && let Err(why) = accounting::groups::check(&plan, min)
        {
            return Err(SqlError::new("42501", why));
        }
        // Suppression rides on the accounting rewrite: it runs even when
        // patient accounting is off.
        let unaccounted;
        let accounting = match (accounting, groups) {
            (None, Some(_)) => {
                unaccounted = Arc::new(accounting::PatientSets::default());
                Some(&unaccounted)
            }
            (a, _) => a,
        };
        if let (Some(sets), Some(min)) = (accounting, groups) {
            sets.under_aggregation_policy(min);
        }
        // The final logical plan, with its accounting.
        let (plan, key_columns, pinned) = match accounting {
            Some(sets) => {
                let pinned = accounting::plan::pinned(&plan);
                match pinned {
                    // Every row sent is the pinned patient's: no key column.
                    Some(patient)
                        if groups.is_none() && accounting::plan::rows_of_pinned_scan(&plan) =>
                    {
                        sets.set_row_patient(patient);
                        (plan, 0, pinned)
                    }
                    _ => {
                        let accounted =
                            accounting::plan::account(plan, sets, groups).map_err(|e| {
                                tracing::error!(
                                    error_kind = "patient accounting",
                                    "cannot account a plan"
                                );
                                sql_err(e)
                            })?;
                        (accounted.plan, accounted.key_columns, pinned)
                    }
                }
            }
            None => (plan, 0, None),
        };
        Ok(FinalPlan {
            state,
            plan,
            lean: optimised,
            key_columns,
            pinned,
        })
    }

    /// The second half ([`Engine::final_plan`] is the first): the physical plan of
    /// `fin` and its stream, within the role's memory `budget` (bytes,
    /// role) when given.
    pub(crate) async fn run_final(
        &self,
        fin: FinalPlan,
        budget: Option<(usize, &str)>,
    ) -> Result<(SendableRecordBatchStream, usize), SqlError> {
        let sql_err = |e: datafusion::error::DataFusionError| errors::to_sql_error(&e);
        let state = match budget {
            Some((bytes, role)) => self.with_role_budget(&fin.state, role, bytes)?,
            None => fin.state,
        };
        let physical = if fin.lean {
            lean::create_physical_plan(&fin.plan, &state).await
        } else {
            state
                .query_planner()
                .create_physical_plan(&fin.plan, &state)
                .await
        }
        .map_err(sql_err)?;
        // Large statements run their stages on the workers (`cluster`).
        let placed = match self.cluster.get() {
            Some(cluster) => cluster
                .place(physical, state, &fin.plan)
                .await
                .map_err(sql_err)?,
            None => crate::cluster::coordinator::Placed::local(physical, state),
        };
        let physical = placed.plan.clone();
        let stream = datafusion::physical_plan::execute_stream(
            physical.clone(),
            self.statement_task(&placed.state),
        )
        .map_err(sql_err)?;
        let stream = placed.finish(stream);
        Ok((
            memory::SpillAccounting::wrap(stream, physical),
            fin.key_columns,
        ))
    }

    /// The task context of one statement: its reservations are capped at
    /// the statement's share of the engine's budget (`[memory]
    /// statement_max_percent`) on top of its state's pool (the engine's, or
    /// its role's), so that one statement leaves memory for the others.
    fn statement_task(&self, state: &SessionState) -> Arc<datafusion::execution::TaskContext> {
        let base = state.runtime_env();
        let cap = usize::try_from(self.memory.statement_max_bytes).unwrap_or(usize::MAX);
        let pool = Arc::new(memory::CappedPool::new(
            base.memory_pool.clone(),
            cap,
            memory::STATEMENT_BUDGET_EXHAUSTED,
        ));
        match memory::runtime_with_pool(base, pool) {
            Ok(runtime) => {
                Arc::new(datafusion::execution::TaskContext::from(state).with_runtime(runtime))
            }
            // Never without a budget: the state's own pool still applies.
            Err(_) => state.task_ctx(),
        }
    }
}

/// How every Parquet file is read, by lakeward's scan and deltalake's
/// alike (both take the session's Parquet options): legacy INT96
/// timestamps, as Spark and Databricks write them, are microseconds since
/// the epoch in UTC. Read as nanoseconds (the Parquet default), a value past
/// 2262 — `9999-12-31`, the "never" of consent expiries and coverage end
/// dates — overflows and wraps into the 1800s.
pub fn spark_compatible_reads(mut config: SessionConfig) -> SessionConfig {
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.coerce_int96 = Some("us".to_owned());
    parquet.coerce_int96_tz = Some("UTC".to_owned());
    config
}

/// Build the engine for a configuration's data section.
/// `audit_table`, when given, is served as `audit.access_log` at its newest
/// snapshot.
pub async fn open_from_config(
    data: &crate::config::DataConfig,
    memory_config: &crate::config::MemoryConfig,
    pseudonym_key: &[u8],
    audit_table: Option<&str>,
) -> Result<Engine, EngineError> {
    let mut locations: BTreeMap<TableName, TableLocation> = BTreeMap::new();
    if let Some(root) = &data.root {
        let root_text = root.to_string_lossy();
        let discovered = if tables::is_url(&root_text) {
            tables::discover_tables_url(&root_text).await?
        } else {
            discover_tables(root)?
        };
        for mut loc in discovered {
            loc.refresh = data.refresh();
            loc.scan = data.scan;
            locations.insert(loc.name.clone(), loc);
        }
    }
    for (name, url) in &data.tables {
        let name = TableName::parse(name).ok_or_else(|| EngineError::Location(name.clone()))?;
        locations.insert(
            name.clone(),
            TableLocation {
                name,
                url: url.clone(),
                refresh: data.refresh(),
                scan: data.scan,
            },
        );
    }
    if let Some(url) = audit_table {
        let name = TableName {
            schema: "audit".into(),
            table: "access_log".into(),
        };
        locations.insert(
            name.clone(),
            TableLocation {
                name,
                url: url.to_owned(),
                refresh: std::time::Duration::ZERO,
                scan: data.scan,
            },
        );
    }
    let list: Vec<TableLocation> = locations.into_values().collect();
    let budget = memory::MemoryBudget::from_config(memory_config);
    let mut engine = Engine::open_with_budget(&list, pseudonym_key, budget).await?;
    if let Some(url) = audit_table {
        // Written by the audit shipper; read at its newest version.
        match delta::LatestDeltaProvider::open(&crate::audit::index::location(url)).await {
            Ok(index) => engine.raw.patient_index = Some(Arc::new(index)),
            Err(e) => tracing::warn!(
                error = %e,
                "the audit patient index cannot be read: audit.patient_access decodes every patient set"
            ),
        }
    }
    Ok(engine)
}

/// Shared handle.
pub type EngineRef = Arc<Engine>;

/// See [`Engine::stage_functions`].
pub(crate) struct StageFunctions {
    pub(crate) runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    pub(crate) scalar: Vec<Arc<datafusion::logical_expr::ScalarUDF>>,
    pub(crate) aggregate: Vec<Arc<datafusion::logical_expr::AggregateUDF>>,
    pub(crate) window: Vec<Arc<datafusion::logical_expr::WindowUDF>>,
}
