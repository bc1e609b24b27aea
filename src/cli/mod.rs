//! The command line: `lakeward demo | serve | datagen | token | config check |
//! policy check | policy test | policy explain | audit verify | audit export`.
//!
//! Files:
//!
//! - `mod.rs`: the clap types, [`main`] and the dispatch to a command.
//! - `logging.rs`: logging to stderr (other crates capped at warn).
//! - `services.rs`: `serve`: the [`services()`] a server needs
//!   ([`audit_settings`]), the admin endpoint, SIGHUP reloads and
//!   [`shutdown_signal`].
//! - `demo.rs`: `demo`, `datagen` and `token`.
//! - `policy.rs`: `policy check`, `policy test` and `policy explain`.
//! - `audit.rs`: `audit verify` and `audit export`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

mod audit;
mod demo;
mod logging;
mod policy;
pub(crate) mod services;

pub use services::{audit_settings, policy_store, services, shutdown_signal};

use audit::{audit_export, audit_index, audit_verify};
use demo::{datagen, demo, token};
use logging::init_logging;
use policy::{policy_check, policy_diff, policy_explain, policy_test};
use services::serve;

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
    /// Run the stages of distributed statements for coordinators
    /// (`[cluster]`; TLS and the cluster token required).
    Worker(WorkerArgs),
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
    /// Audit tools: verify the hash chain and signed checkpoints, export the
    /// audit as FHIR AuditEvents.
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
    /// Bring the patient index of `audit.access_log` up to date for every
    /// instance (records shipped but not indexed, e.g. a table written
    /// before the index existed), then compact each month of it into files
    /// sorted by patient chunk. A serving instance does both for its own
    /// records by itself; run this after an upgrade or a restore.
    Index {
        /// Demo folder (audit table as `lakeward demo` lays it out).
        #[arg(long, default_value = "./lakeward-demo", conflicts_with = "config")]
        data_dir: PathBuf,
        /// Use the `[audit]` section of this configuration instead.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Compact only months of more files than this.
        #[arg(long, default_value_t = 1)]
        compact_min_files: usize,
    },
    /// Write `audit.access_log` as FHIR R4 AuditEvent resources (IHE BALP),
    /// one JSON object per line: one event per patient a statement touched.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// First outcome to export: a sequence number, a date (2026-11-23) or an
    /// RFC 3339 time (of the completion record for a statement that ran).
    #[arg(long)]
    pub from: Option<String>,
    /// Last outcome to export (same forms as --from).
    #[arg(long)]
    pub to: Option<String>,
    /// Keep only the events about this patient (repeatable).
    #[arg(long = "patient", value_name = "ID", allow_negative_numbers = true)]
    pub patients: Vec<i64>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Host name or address clients reach lakeward at (the server agent's
    /// network address). Default: the host of `server.listen` of --config,
    /// `localhost` when it listens on every address or with --data-dir.
    #[arg(long, value_name = "HOST")]
    pub server_address: Option<String>,
    /// Demo folder (audit table and segment log as `lakeward demo` lays them out).
    #[arg(long, default_value = "./lakeward-demo", conflicts_with = "config")]
    pub data_dir: PathBuf,
    /// Use the `[audit]` section of this configuration instead.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `audit export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// FHIR R4 AuditEvent NDJSON.
    Fhir,
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
        /// Also sample every served column and report the ones that look
        /// like identifiers (SSN, phone, e-mail, MRN, names, birth dates,
        /// ZIP codes, free text, record ids) with how each role sees them;
        /// fails when a de-identified role would see one in the clear or an
        /// untagged column looks like one. No value is ever printed.
        #[arg(long)]
        classify: bool,
        /// Rows sampled per data file by `--classify`.
        #[arg(long, default_value_t = 1_000)]
        sample_rows: usize,
    },
    /// What a policy change does, per role, purpose, table and column (and,
    /// with `--data-dir`, the rows each role sees before and after). Exits 1
    /// when the change widens anyone's access (or may: another mask, a
    /// rewritten filter), 2 when a policy does not load: a CI gate.
    Diff {
        /// The policy folder before the change.
        #[arg(long)]
        from: PathBuf,
        /// The policy folder after the change.
        #[arg(long)]
        to: PathBuf,
        /// Delta tables to count rows in (through the secured tables).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The site bound to site-scoped roles (row filters on `site`).
        #[arg(long, default_value = "S01")]
        site: String,
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
    /// The `family_name` claim (OpenID Connect), for the shared-surname signal.
    #[arg(long)]
    pub family_name: Option<String>,
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
pub struct WorkerArgs {
    /// TOML configuration file (`[cluster] listen`, `[tls]`, `[data]`,
    /// `[policy]` for the pseudonymisation key).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Override `cluster.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
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
        Command::Audit(AuditCommand::Export(args)) => audit_export(args).await,
        Command::Audit(AuditCommand::Index {
            data_dir,
            config,
            compact_min_files,
        }) => audit_index(&data_dir, config.as_deref(), compact_min_files).await,
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
        Command::Worker(args) => {
            let mut config = Config::load_worker(&args.config)?;
            if let Some(listen) = args.listen {
                config.cluster.listen = listen;
            }
            crate::cluster::worker::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Datagen(args) => {
            datagen(&args.data_dir, args.patients, args.seed).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => token(args),
        Command::Policy(PolicyCommand::Check {
            data_dir,
            policy_dir,
            format,
            classify,
            sample_rows,
        }) => {
            let classify = classify.then_some(sample_rows.max(1));
            policy_check(&data_dir, policy_dir.as_deref(), format, classify).await
        }
        Command::Policy(PolicyCommand::Diff {
            from,
            to,
            data_dir,
            site,
            format,
        }) => policy_diff(&from, &to, data_dir.as_deref(), &site, format).await,
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
