//! The command line: `lakeward demo | serve | datagen | config check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "lakeward",
    version,
    about = "Policy-enforcing PostgreSQL-wire proxy for healthcare lakehouses"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LAKEWARD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `lakeward=debug`.
    #[arg(
        long,
        global = true,
        default_value = "warn,lakeward=info",
        env = "LAKEWARD_LOG"
    )]
    pub log: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate demo data and a development certificate if absent, then serve.
    Demo(DemoArgs),
    /// Serve with a TOML configuration file.
    Serve(ServeArgs),
    /// Write the synthetic demo dataset as Delta tables.
    Datagen(DatagenArgs),
    /// Mint a development token signed with the demo key; prints only the token.
    Token(TokenArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Policy tools: check against the real tables and print the coverage matrix.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Benchmark baseline: plain DataFusion over the same tables, no policy.
    #[command(hide = true)]
    Baseline(crate::baseline::BaselineArgs),
    /// Audit tools: verify the hash chain and signed checkpoints.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-read `audit.access_log` and the segment log, recompute every hash
    /// chain, check every signed checkpoint; exit 0 only when the log is whole.
    Verify {
        /// Demo folder (audit table, segment log and key as `lakeward demo` lays them out).
        #[arg(long, default_value = "./lakeward-demo", conflicts_with = "config")]
        data_dir: PathBuf,
        /// Use the `[audit]` section of this configuration instead.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Checkpoint public key (hex, the `.pub` file next to the signing key);
        /// repeat it to accept checkpoints of a retired key after a rotation.
        /// Default: derived from the configured signing key.
        #[arg(long)]
        public_key: Vec<PathBuf>,
        /// First record to check: a sequence number, a date (2026-11-23) or an RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// Last record to check (same forms as --from).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the policy files against the Delta tables and print who sees what.
    Check {
        /// Folder with the Delta tables (`<schema>/<table>`).
        #[arg(long, default_value = "./lakeward-demo")]
        data_dir: PathBuf,
        /// Policy folder; the built-in demo policy when omitted.
        #[arg(long)]
        policy_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Run the policy's tests (`<policy dir>/tests/*.toml`) against demo data.
    Test {
        /// Policy folder holding the files and a `tests/` folder.
        #[arg(long, default_value = "./policy-rules")]
        policy_dir: PathBuf,
        /// Delta tables to test against; generated demo data when omitted.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Patients to generate when no data folder is given.
        #[arg(long, default_value_t = 2_000)]
        patients: u64,
    },
    /// Show how a query is read for a role and purpose: each table it names,
    /// as the SQL of its secured form (for data stewards; never executed as text).
    Explain {
        #[arg(long, default_value = "./lakeward-demo")]
        data_dir: PathBuf,
        #[arg(long)]
        policy_dir: Option<PathBuf>,
        #[arg(long)]
        role: String,
        #[arg(long)]
        purpose: String,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        break_glass: bool,
        /// The query.
        sql: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The demo data folder holding `keys/jwt-signing.pem`.
    #[arg(long, default_value = "./lakeward-demo")]
    pub data_dir: PathBuf,
    /// Role claim (clinician, analyst, researcher, auditor).
    #[arg(long)]
    pub role: String,
    /// Subject and user name; defaults to the role name.
    #[arg(long)]
    pub user: Option<String>,
    /// Site claim (clinicians).
    #[arg(long)]
    pub site: Option<String>,
    /// Purposes this person may declare, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub purposes: Vec<String>,
    /// Lifetime: 90s, 30m, 1h, 1d.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder holding (or receiving) the demo Delta tables, certificate and keys.
    #[arg(long, default_value = "./lakeward-demo")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,
    /// Patients to generate when the folder holds no tables yet.
    #[arg(long, default_value_t = 10_000)]
    pub patients: u64,
    /// Random seed for generation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Override the listen address of the file.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Override `audit.instance`, this replica's audit chain name (replicas
    /// sharing one configuration file set it per replica, e.g. from the pod name).
    #[arg(long, env = "LAKEWARD_AUDIT_INSTANCE")]
    pub audit_instance: Option<String>,
    /// Override `audit.dir`, this replica's local segment log folder.
    #[arg(long, env = "LAKEWARD_AUDIT_DIR")]
    pub audit_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DatagenArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    pub patients: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and report every problem found.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    // Planner passes recurse over expressions; give worker threads room.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .thread_name("lakeward")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging to stderr. lakeward's own events follow the filter; every other
/// crate (the engine, storage, protocol and Delta kernel crates log query
/// plans, literals, file statistics and wire messages at debug and trace
/// level) is capped at warn whatever the filter asks for, so that no
/// statement literal or data value can reach the log. lakeward's events
/// carry ids, kinds and fingerprints only.
fn init_logging(args: &LogArgs) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::prelude::*;
    // One per-layer filter: the requested filter and the cap together.
    // With the requested filter global and the cap per layer, lakeward's
    // own debug events went missing (at `--log debug` four of six tables
    // never logged which scan they got, while `--log lakeward=trace`
    // showed all six).
    let filter = EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .and(filter_fn(|m| {
            m.target().starts_with("lakeward") || *m.level() <= tracing::Level::WARN
        }));
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry();
    let _ = match args.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    crate::server::tls::install_crypto_provider();
    match command {
        Command::Demo(args) => demo(args).await,
        Command::Audit(AuditCommand::Verify {
            data_dir,
            config,
            public_key,
            from,
            to,
        }) => audit_verify(&data_dir, config.as_deref(), &public_key, from, to).await,
        Command::Serve(args) => {
            let mut config = Config::load(&args.config)?;
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            if let Some(instance) = args.audit_instance {
                config.audit.instance = instance;
            }
            if let Some(dir) = args.audit_dir {
                config.audit.dir = Some(dir);
            }
            config.validate()?;
            serve(config).await
        }
        Command::Datagen(args) => {
            datagen(&args.data_dir, args.patients, args.seed).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline(args) => {
            crate::baseline::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => {
            let ttl = crate::auth::mint::parse_ttl(&args.ttl).ok_or_else(|| {
                anyhow::anyhow!("invalid --ttl {:?}: use 90s, 30m, 1h or 1d", args.ttl)
            })?;
            let req = crate::auth::mint::TokenRequest {
                user: args.user.unwrap_or_else(|| args.role.clone()),
                roles: vec![args.role],
                site: args.site,
                purposes: args.purposes,
                ttl,
            };
            println!("{}", crate::auth::mint::mint(&args.data_dir, &req)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check {
            data_dir,
            policy_dir,
            format,
        }) => policy_check(&data_dir, policy_dir.as_deref(), format).await,
        Command::Policy(PolicyCommand::Test {
            policy_dir,
            data_dir,
            patients,
        }) => policy_test(&policy_dir, data_dir.as_deref(), patients).await,
        Command::Policy(PolicyCommand::Explain {
            data_dir,
            policy_dir,
            role,
            purpose,
            site,
            break_glass,
            sql,
        }) => {
            policy_explain(
                &data_dir,
                policy_dir.as_deref(),
                &role,
                &purpose,
                site,
                break_glass,
                &sql,
            )
            .await
        }
        Command::Config(ConfigCommand::Check { config }) => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// Build every service a server needs from a configuration.
pub async fn services(config: &Config) -> anyhow::Result<crate::server::Services> {
    let policy = Arc::new(crate::policy::PolicyStore::new(
        crate::policy::Policy::load(config.policy.dir.as_deref())?,
        config.policy.dir.clone(),
    ));
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
    if !engine.unreadable_tables().is_empty() {
        tracing::error!(
            tables = ?engine.unreadable_tables().keys().collect::<Vec<_>>(),
            "tables found but not served: their Delta protocol needs a reader feature lakeward cannot read"
        );
    }
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

/// The checkpoint signing key of a configuration: from its environment
/// variable (PEM) or its file.
fn audit_signing_key(config: &Config) -> anyhow::Result<crate::audit::chain::SigningKey> {
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
    })
}

/// A `--from`/`--to` bound: a sequence number, a date or an RFC 3339 time.
fn parse_bound(text: &str, end: bool) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    if let Ok(seq) = text.parse::<i64>() {
        return Ok((Some(seq), None));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok((None, Some(t.timestamp_micros())));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let t = if end {
            d.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = t {
            return Ok((None, Some(t.and_utc().timestamp_micros())));
        }
    }
    anyhow::bail!("{text:?} is not a sequence number, a date (YYYY-MM-DD) or an RFC 3339 time")
}

async fn audit_verify(
    data_dir: &Path,
    config: Option<&Path>,
    public_keys: &[PathBuf],
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::chain::VerifyingKey;
    let config = match config {
        Some(f) => Config::load(f)?,
        None => Config::demo(data_dir, "127.0.0.1:6432".parse()?),
    };
    let keys = if public_keys.is_empty() {
        vec![audit_signing_key(&config)?.verifying_key()]
    } else {
        public_keys
            .iter()
            .map(|f| VerifyingKey::load_file(f))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut range = crate::audit::verify::Range::default();
    if let Some(f) = &from {
        (range.from_seq, range.from_ts) = parse_bound(f, false)?;
    }
    if let Some(t) = &to {
        (range.to_seq, range.to_ts) = parse_bound(t, true)?;
    }
    let location = config
        .audit
        .table_location(&config.data)
        .ok_or_else(|| anyhow::anyhow!("no audit table configured"))?;
    let table =
        crate::audit::delta::AuditTable::open_existing(&location, crate::audit::record::schema())
            .await?;
    let report =
        crate::audit::verify::verify(&table, config.audit.dir.as_deref(), &keys, range).await?;
    let total: usize = report.records.values().sum();
    match report.first_bad {
        None => {
            println!(
                "audit log whole: {total} records in {} chain(s), {} signed checkpoint(s) verified",
                report.records.len(),
                report.checkpoints
            );
            for (instance, n) in &report.records {
                println!("  {instance}: {n} records");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(bad) => {
            println!("audit log NOT whole: first bad record: {bad}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
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
    let warmed = services.engine.warm(&services.policy.current()).await;
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

async fn datagen(dir: &Path, patients: u64, seed: u64) -> anyhow::Result<()> {
    let opts = crate::datagen::DatagenOptions {
        data_dir: dir.to_owned(),
        patients,
        seed,
    };
    let report = crate::datagen::generate(&opts).await?;
    let total: u64 = report.tables.iter().map(|(_, n)| n).sum();
    for (name, rows) in &report.tables {
        println!("{name:<24} {rows:>12} rows");
    }
    println!("{total} rows in {:.1} s", report.elapsed.as_secs_f64());
    Ok(())
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let existing = crate::engine::discover_tables(&args.data_dir).unwrap_or_default();
    if existing.is_empty() {
        println!(
            "Generating {} synthetic patients into {} ...",
            args.patients,
            args.data_dir.display()
        );
        datagen(&args.data_dir, args.patients, args.seed).await?;
    } else {
        println!(
            "Serving the {} Delta tables already in {}",
            existing.len(),
            args.data_dir.display()
        );
    }
    let tls_dir = args.data_dir.join("tls");
    crate::server::tls::ensure_dev_certificate(&tls_dir)?;
    crate::auth::mint::ensure_demo_keys(&args.data_dir)?;
    ensure_pseudonym_key(&args.data_dir.join("keys").join("pseudonym.key"))?;
    let audit_key = crate::config::demo_audit_key_path(&args.data_dir);
    if !audit_key.exists() {
        crate::audit::chain::SigningKey::generate_to_file(&audit_key)?;
    }
    let config = Config::demo(&args.data_dir, args.listen);
    config.validate()?;

    let host = args.listen.ip();
    let port = args.listen.port();
    println!();
    println!(
        "lakeward demo: synthetic data, development certificate and signing key in {}",
        args.data_dir.display()
    );
    println!("Tokens below are valid for 8 hours. Connect as one of the four demo roles:");
    let roles: [(&str, Option<&str>, &str, &str); 4] = [
        (
            "clinician",
            Some("S01"),
            "treatment",
            "full detail, site S01 only",
        ),
        ("analyst", None, "operations", "de-identified, all sites"),
        (
            "researcher",
            None,
            "research",
            "opted-in patients, Safe Harbor",
        ),
        ("auditor", None, "operations", "the audit log"),
    ];
    for (role, site, purpose, what) in roles {
        let req = crate::auth::mint::TokenRequest {
            user: role.to_owned(),
            roles: vec![role.to_owned()],
            site: site.map(str::to_owned),
            purposes: vec![],
            ttl: std::time::Duration::from_secs(8 * 3600),
        };
        let token = crate::auth::mint::mint(&args.data_dir, &req)?;
        println!();
        println!("# {role} ({what})");
        println!(
            "PGPASSWORD='{token}' psql \"host={host} port={port} dbname=lakeward user={role} sslmode=require options='-c lakeward.purpose={purpose}'\""
        );
    }
    println!();
    println!(
        "More tokens: lakeward token --data-dir {} --role clinician --site S02 --ttl 1h",
        args.data_dir.display()
    );
    println!("Try:  SELECT site_id, count(*) FROM clinical.patients GROUP BY 1 ORDER BY 1;");
    println!();
    serve(config).await
}

async fn policy_check(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy_reporting(policy_dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let locations = crate::engine::discover_tables(data_dir)?;
    let engine = crate::engine::Engine::open(&locations).await?;
    let mut report = crate::policy::check::check(&policy, &engine_schemas(&engine));
    // A table the engine cannot read is the data's problem, not the
    // policy's, but it fails the check: queries on it would be refused.
    report
        .errors
        .extend(engine.unreadable_tables().values().cloned());
    match format {
        OutputFormat::Text => print!("{}", crate::policy::check::render_text(&report)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Load a policy for a policy command; print every problem (file:line) on failure.
fn load_policy_reporting(dir: Option<&Path>) -> Option<crate::policy::Policy> {
    match crate::policy::Policy::load(dir) {
        Ok(p) => Some(p),
        Err(e) => {
            for p in &e.problems {
                println!("error: {p}");
            }
            None
        }
    }
}

async fn policy_test(
    policy_dir: &Path,
    data_dir: Option<&Path>,
    patients: u64,
) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy_reporting(Some(policy_dir)) else {
        return Ok(ExitCode::FAILURE);
    };
    let tests = crate::policytest::load_tests(policy_dir)?;
    let dir = match data_dir {
        Some(d) => d.to_owned(),
        None => {
            let d = std::env::temp_dir().join(format!(
                "lakeward-policy-test-{}-{}",
                std::process::id(),
                patients
            ));
            if crate::engine::discover_tables(&d)
                .map(|t| t.is_empty())
                .unwrap_or(true)
            {
                let opts = crate::datagen::DatagenOptions {
                    data_dir: d.clone(),
                    patients,
                    seed: 42,
                };
                crate::datagen::generate(&opts).await?;
            }
            d
        }
    };
    let key: [u8; 32] = rand::random();
    let engine =
        crate::engine::Engine::open_with_key(&crate::engine::discover_tables(&dir)?, &key).await?;
    let results = crate::policytest::run(&engine, &policy, &tests).await;
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for r in &results {
        match &r.failure {
            None => println!("ok      {} :: {}", r.file, r.name),
            Some(f) => println!(
                "FAILED  {} :: {}\n{}",
                r.file,
                r.name,
                f.lines()
                    .map(|l| format!("        {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    println!(
        "\n{} passed, {} failed (policy version {})",
        results.len() - failed,
        failed,
        policy.version
    );
    if data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if failed == 0 && !results.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn policy_explain(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    role: &str,
    purpose: &str,
    site: Option<String>,
    break_glass: bool,
    sql: &str,
) -> anyhow::Result<ExitCode> {
    use crate::policy::compile::Subject;
    let policy = Arc::new(crate::policy::Policy::load(policy_dir)?);
    let purpose = crate::policy::Purpose::parse(purpose)
        .ok_or_else(|| anyhow::anyhow!("unknown purpose {purpose:?}"))?;
    let engine = crate::engine::Engine::open(&crate::engine::discover_tables(data_dir)?).await?;
    let subject = Subject {
        user: "policy-explain".into(),
        role: role.to_owned(),
        site,
        purpose,
        break_glass: break_glass && policy.role(role).is_some_and(|r| r.break_glass),
    };
    // The access context a session of this subject gets (cached, as the
    // server's), and the server's pipeline for each statement.
    let Some(access) = crate::enforce::access_for(&engine, &policy, Some(&subject)) else {
        println!(
            "-- role {role} may not declare purpose {purpose} (or the role is unknown): every query is refused"
        );
        return Ok(ExitCode::FAILURE);
    };
    let principal = crate::query::Principal::detached(policy.clone(), subject, "policy-explain");
    let stmts =
        crate::rewrite::gate::parse(sql, Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "-- policy version {}, role {role}, purpose {purpose}{}",
        policy.version,
        if break_glass { ", break-glass on" } else { "" }
    );
    let default_schema = principal
        .search_path
        .first()
        .cloned()
        .unwrap_or_else(|| "public".into());
    let mut seen = std::collections::BTreeSet::new();
    for stmt in stmts {
        println!("{stmt};");
        // Through the server's pipeline: refused here means refused there.
        let verdict = match crate::query::classify(stmt.clone()) {
            Ok(crate::rewrite::gate::StatementKind::Query(q))
            | Ok(crate::rewrite::gate::StatementKind::Explain(q)) => {
                crate::query::plan_query(&engine, &principal, q).await.err()
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        match verdict {
            Some(e) => println!("-- refused: {} {}", e.code, e.message),
            None => println!("-- allowed"),
        }
        // Unqualified names resolve through the role's search path, as in a
        // session.
        let mut resolved = stmt;
        let served = engine.column_lists();
        crate::rewrite::search_path::qualify(
            &mut resolved,
            &principal.search_path,
            &|s: &str, t: &str| served.contains_key(&format!("{s}.{t}")),
        );
        for r in crate::rewrite::gate::referenced_tables(&resolved, &default_schema) {
            let Some((s, t)) = r.schema_table else {
                continue;
            };
            let name = format!("{s}.{t}");
            if !seen.insert(name.clone()) {
                continue;
            }
            match access.tables.get(&name) {
                Some(a) => {
                    let text = engine
                        .explain_secured(&name, a, &policy.consent)
                        .await
                        .unwrap_or_default();
                    println!(
                        "\n-- {name} is read as (rules: {}):\n{text};",
                        a.rules.join(", ")
                    );
                }
                None if engine.column_lists().contains_key(&name) => {
                    println!("\n-- {name}: refused (42501)")
                }
                None => println!("\n-- {name}: no such table (42P01)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn column_type(t: &datafusion::arrow::datatypes::DataType) -> crate::policy::compile::ColumnType {
    use crate::policy::compile::ColumnType as C;
    use datafusion::arrow::datatypes::DataType as D;
    match t {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => C::Text,
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            C::Integer
        }
        D::Decimal128(..) | D::Decimal256(..) => C::Decimal,
        D::Float16 | D::Float32 | D::Float64 => C::Float,
        D::Date32 | D::Date64 => C::Date,
        D::Timestamp(..) => C::Timestamp,
        D::Boolean => C::Boolean,
        _ => C::Other,
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
        let result = r.policy.reload(|candidate| {
            let report = crate::policy::check::check(candidate, &schemas);
            if report.errors.is_empty() {
                Ok(())
            } else {
                Err(report.errors.join("; "))
            }
        });
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

/// `schema.table` → `(column, type)` of every served table.
/// Column names and types of every served table. `audit.access_log` is
/// always served (lakeward creates it), so its schema is known even before
/// the table exists on disk.
fn engine_schemas(
    engine: &crate::engine::Engine,
) -> std::collections::BTreeMap<String, Vec<(String, crate::policy::compile::ColumnType)>> {
    let columns = |schema: &datafusion::arrow::datatypes::Schema| {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), column_type(f.data_type())))
            .collect()
    };
    let mut out: std::collections::BTreeMap<_, _> = engine
        .tables()
        .values()
        .map(|t| (t.name.to_string(), columns(&t.schema)))
        .collect();
    out.entry("audit.access_log".to_owned())
        .or_insert_with(|| columns(&crate::audit::record::schema()));
    out
}

/// Create a random pseudonymisation key file (hex, mode 0600) unless present.
fn ensure_pseudonym_key(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key: [u8; 32] = rand::random();
    crate::server::tls::write_private(path, hex::encode(key).as_bytes())?;
    Ok(())
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
