//! `serve`: the services a server needs, the admin endpoint, SIGHUP reloads
//! and shutdown.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;

#[cfg(unix)]
use super::policy::engine_schemas;

/// Build every service a server needs from a configuration.
pub async fn services(config: &Config) -> anyhow::Result<crate::server::Services> {
    let policy = Arc::new(policy_store(config)?);
    let auth = Arc::new(crate::auth::Authenticator::new(config.auth_settings()?)?);
    let key = config.policy.pseudonym_key()?;
    // The audit store first: it creates `audit.access_log` if needed, and
    // nothing is served without it.
    let settings = audit_settings(config)?;
    let audit_table = settings.table.clone();
    let audit = crate::audit::Auditor::open(settings).await?;
    let engine = Arc::new(
        crate::engine::open_from_config(&config.data, &config.memory, &key, Some(&audit_table))
            .await?,
    );
    for t in engine.tables().values() {
        tracing::info!(table = %t.name, version = t.version, "serving table");
    }
    if let Some(coordinator) = crate::cluster::Coordinator::from_config(&config.cluster, &engine)? {
        tracing::info!(
            workers = config.cluster.workers.len(),
            distribute_min_bytes = config.cluster.distribute_min_bytes,
            "distributing large statements to workers"
        );
        engine.set_cluster(coordinator);
    }
    // Point-lookup indexes: budgets now, keys from the policy at warm-up.
    engine.configure_lookups(&config.lookup);
    if !engine.unreadable_tables().is_empty() {
        tracing::error!(
            tables = ?engine.unreadable_tables().keys().collect::<Vec<_>>(),
            "tables found but not served: their Delta protocol needs a reader feature lakeward cannot read"
        );
    }
    // Unusual-access signals, with the patient directory they read.
    let directory = crate::engine::patient_directory::EngineDirectory::for_config(
        &engine,
        &config.audit.signals,
    );
    audit.start_watch(config.audit.signals.clone(), directory)?;
    let budget = engine.memory_budget();
    tracing::info!(
        limit_mb = budget.limit_bytes / (1024 * 1024),
        source = budget.source.as_str(),
        spill_dir = ?budget.spill_dir,
        spill_max_mb = budget.spill_max_bytes / (1024 * 1024),
        "engine memory budget"
    );
    Ok(crate::server::Services {
        engine,
        auth,
        policy,
        audit,
    })
}

/// The live policy of a configuration, and its shadow policy if it names one.
pub fn policy_store(config: &Config) -> anyhow::Result<crate::policy::PolicyStore> {
    let mut store = crate::policy::PolicyStore::new(
        crate::policy::Policy::load(config.policy.dir.as_deref())?,
        config.policy.dir.clone(),
    );
    if let Some(dir) = config.shadow_policy_dir() {
        let shadow = crate::policy::Policy::load(Some(dir))
            .map_err(|e| anyhow::anyhow!("shadow policy {}: {e}", dir.display()))?;
        tracing::warn!(
            shadow_policy_version = %shadow.version,
            "shadow policy on: every statement is also planned under it"
        );
        store = store.with_shadow(shadow, dir.to_owned());
    }
    Ok(store)
}

/// The checkpoint signing key of a configuration: from its environment
/// variable (PEM) or its file.
pub(super) fn audit_signing_key(
    config: &Config,
) -> anyhow::Result<crate::audit::chain::SigningKey> {
    use crate::audit::chain::SigningKey;
    let a = &config.audit;
    if let Ok(pem) = std::env::var(&a.signing_key_env) {
        return Ok(SigningKey::from_pem_str(&pem)?);
    }
    match &a.signing_key_file {
        Some(f) => Ok(SigningKey::load_file(f)?),
        None => anyhow::bail!(
            "no audit checkpoint key: set {} (Ed25519 PKCS#8 PEM) or audit.signing_key_file",
            a.signing_key_env
        ),
    }
}

/// The audit store settings of a configuration.
pub fn audit_settings(config: &Config) -> anyhow::Result<crate::audit::AuditSettings> {
    let a = &config.audit;
    let dir = a
        .dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no audit folder: set audit.dir"))?;
    let table = a
        .table_location(&config.data)
        .ok_or_else(|| anyhow::anyhow!("no audit table: set audit.table or data.root"))?;
    Ok(crate::audit::AuditSettings {
        dir,
        table,
        instance: a.instance.clone(),
        signing_key: Arc::new(audit_signing_key(config)?),
        checkpoint_every_records: a.checkpoint_every_records,
        checkpoint_every: std::time::Duration::from_secs(a.checkpoint_every_secs),
        ship_every_records: a.ship_every_records,
        ship_every: std::time::Duration::from_millis(a.ship_every_ms),
        segment_max_bytes: a.segment_max_bytes,
        fsync: a.durability != "none-benchmark-only",
        accounting: a.accounting != "none-benchmark-only",
    })
}

pub(super) async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    use crate::metrics::Metrics;
    // The admin endpoint comes up first: /health answers while tables and
    // the audit store load, /ready only once everything is in place.
    let admin = Admin::start(&config).await?;
    let services = services(&config).await?;
    for t in services.engine.tables().values() {
        let name = t.name.to_string();
        Metrics::global().set_table_version(&name, t.version);
        Metrics::global().set_snapshot_time(&name, std::time::SystemTime::now());
    }
    // Consent sets before the first client, like the tables: the first
    // statement of each purpose would otherwise wait for its computation.
    let warm_start = std::time::Instant::now();
    let mut warmed = services.engine.warm(&services.policy.current()).await;
    if let Some(shadow) = services.policy.shadow() {
        warmed.current += services.engine.warm_consent(&shadow).await.current;
    }
    tracing::info!(
        consent_sets = warmed.current,
        ms = warm_start.elapsed().as_millis() as u64,
        "consent sets computed"
    );
    admin.loaded(&services);
    let cert = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(c), Some(k)) => Some(Arc::new(crate::server::tls::ServerCert::load(c, k)?)),
        _ => None,
    };
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(Reloadable {
        policy: services.policy.clone(),
        engine: services.engine.clone(),
        auth: services.auth.clone(),
        cert: cert.clone(),
    }));
    let draining = admin.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Load balancers stop sending new clients before the listener closes.
        draining.draining();
    };
    crate::server::serve(config, services, cert, shutdown).await?;
    admin.stop();
    Ok(ExitCode::SUCCESS)
}

/// The admin endpoint of a serving process and its readiness flags.
#[derive(Clone)]
struct Admin {
    #[cfg(feature = "admin")]
    ready: Arc<crate::admin::Readiness>,
    #[cfg(feature = "admin")]
    stop: tokio_util::sync::CancellationToken,
}

impl Admin {
    /// Bind `[admin] listen` (when enabled) and serve it in the background.
    async fn start(config: &Config) -> anyhow::Result<Admin> {
        #[cfg(feature = "admin")]
        {
            let admin = Admin {
                ready: Arc::new(crate::admin::Readiness::new()),
                stop: tokio_util::sync::CancellationToken::new(),
            };
            if config.admin.enabled {
                let listener = tokio::net::TcpListener::bind(config.admin.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("admin endpoint {}: {e}", config.admin.listen))?;
                tracing::info!(admin = %listener.local_addr()?, "admin endpoint listening (/metrics, /health, /ready)");
                let state = Arc::new(crate::admin::AdminState::new(
                    crate::metrics::Metrics::global().clone(),
                    admin.ready.clone(),
                ));
                tokio::spawn(crate::admin::serve(
                    listener,
                    state,
                    admin.stop.clone().cancelled_owned(),
                ));
            }
            Ok(admin)
        }
        #[cfg(not(feature = "admin"))]
        {
            if config.admin.enabled {
                tracing::warn!("this build has no admin endpoint (cargo feature `admin`)");
            }
            Ok(Admin {})
        }
    }

    /// Policy, tables and the audit store are loaded: ready (while the
    /// audit store stays healthy).
    fn loaded(&self, services: &crate::server::Services) {
        #[cfg(feature = "admin")]
        {
            self.ready.set_policy_loaded(true);
            self.ready.set_tables_loaded(true);
            let auditor = services.audit.clone();
            self.ready.set_audit_probe(move || auditor.healthy());
            let engine = services.engine.clone();
            self.ready.set_memory_probe(move || {
                let m = engine.memory_gauges();
                (m.pool_limit_bytes, m.pool_reserved_bytes)
            });
            self.ready.set_audit_ready(true);
        }
        // Weak: the registry outlives the engine of a server that stopped.
        let engine = std::sync::Arc::downgrade(&services.engine);
        crate::metrics::Metrics::global().set_memory_probe(move || {
            engine
                .upgrade()
                .map(|e| e.memory_gauges())
                .unwrap_or_default()
        });
    }

    /// Shutting down: no longer ready.
    fn draining(&self) {
        #[cfg(feature = "admin")]
        self.ready.set_draining(true);
    }

    fn stop(&self) {
        #[cfg(feature = "admin")]
        self.stop.cancel();
    }
}

/// What SIGHUP reloads.
#[cfg(unix)]
struct Reloadable {
    policy: Arc<crate::policy::PolicyStore>,
    engine: Arc<crate::engine::Engine>,
    auth: Arc<crate::auth::Authenticator>,
    cert: Option<Arc<crate::server::tls::ServerCert>>,
}

/// SIGHUP: reload the policy folder, the TLS certificate and key, and the
/// token verification keys, each on its own: a policy that fails `policy
/// check` against the served tables, a certificate that does not load or
/// match its key, or a key file that does not parse is rejected, logged,
/// and what was served before stays. Sessions are not interrupted; new
/// handshakes get the new certificate, new statements the new policy.
#[cfg(unix)]
async fn reload_on_sighup(r: Reloadable) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let schemas = engine_schemas(&r.engine);
        let checked = |candidate: &crate::policy::Policy| {
            let report = crate::policy::check::check(candidate, &schemas);
            if report.errors.is_empty() {
                Ok(())
            } else {
                Err(report.errors.join("; "))
            }
        };
        let result = r.policy.reload(checked);
        match result {
            Ok(version) => {
                tracing::warn!(policy_version = %version, "policy reloaded");
                // A purpose or consent rule new in this policy gets its set now.
                r.engine.warm(&r.policy.current()).await;
            }
            Err(e) => {
                tracing::error!(problems = %e, "policy reload rejected; the previous policy stays active")
            }
        }
        let result = r.policy.reload_shadow(checked);
        match result {
            Ok(Some(version)) => {
                tracing::warn!(shadow_policy_version = %version, "shadow policy reloaded");
                if let Some(shadow) = r.policy.shadow() {
                    r.engine.warm_consent(&shadow).await;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(
                problems = %e,
                "shadow policy reload rejected; the previous shadow policy stays"
            ),
        }
        if let Some(cert) = &r.cert {
            match cert.reload() {
                Ok(()) => tracing::warn!("TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    "TLS certificate reload rejected; the previous certificate stays"
                ),
            }
        }
        match r.auth.reload_keys() {
            Ok(n) => tracing::warn!(keys = n, "token verification keys reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                "token key reload rejected; the previous keys stay"
            ),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
