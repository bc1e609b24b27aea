//! Server configuration: a TOML file first, command-line flags override.
//!
//! Every field has a safe default: TLS required, plaintext refused, a bounded
//! number of connections, bounded message and statement sizes. `lakeward demo`
//! builds a [`Config`] in code; `lakeward serve --config FILE` reads one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::mint::{DEMO_AUDIENCE, DEMO_ISSUER, DEMO_KID};

/// Errors found while loading or checking a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration of one lakeward process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub lookup: LookupConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The shadow policy folder, also accepted at the top level of the
    /// file; `[policy] shadow_policy_dir` is its home.
    #[serde(default)]
    pub shadow_policy_dir: Option<PathBuf>,
}

/// The engine's memory budget and spill space (`[memory]`), shared by
/// every statement of this instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// The budget in MiB. `0`: half of what the container (cgroup limit)
    /// or the machine allows.
    pub limit_mb: u64,
    /// Where sorts, aggregations and joins spill when the budget is spent
    /// (default: `<system temp>/lakeward-spill`). Spill files hold PHI: put
    /// the folder on an encrypted, local volume.
    pub spill_dir: Option<PathBuf>,
    /// Most disk all spill files may take together, in MiB. `0` turns
    /// spilling off: a statement that does not fit fails with 53200.
    pub spill_max_mb: u64,
    /// Most of the budget one statement may hold, in percent (1–100):
    /// the rest stays for the other sessions.
    pub statement_max_percent: u8,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            limit_mb: 0,
            spill_dir: None,
            spill_max_mb: 10 * 1024,
            statement_max_percent: 50,
        }
    }
}

/// Point lookups (`[lookup]`): memory for the key indexes of the
/// policy's `lookup_keys` and for the hot-row cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// Memory the key indexes of every table may hold together, in MiB
    /// (12 bytes per indexed row and key column, plus 12 per row for each
    /// pseudonym a de-identified role searches by). Files whose index would
    /// not fit are scanned as without one. `0` turns key indexes off.
    pub index_memory_mb: u64,
    /// Tables kept decoded in memory (Arrow), in this order while they fit
    /// in `cache_memory_mb`: key lookups on them read no file at all.
    pub cache_tables: Vec<String>,
    /// Memory the hot-row cache may hold, in MiB. `0` turns it off.
    pub cache_memory_mb: u64,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            index_memory_mb: 512,
            cache_tables: vec!["clinical.patients".to_owned()],
            cache_memory_mb: 256,
        }
    }
}

/// Resource limits on statements (`[limits]`), with per-role overrides in
/// `[limits.roles.<role>]`. Zero means no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A statement running (planning, executing and streaming) longer than
    /// this is cancelled with SQLSTATE 57014.
    pub statement_timeout_secs: u64,
    /// Rows one statement may return; the next row ends it with 54000.
    pub max_rows: u64,
    /// Statements of one role running at once on this instance; one more
    /// is refused with 53000.
    pub max_concurrent_statements: usize,
    /// A portal or cursor left suspended (rows not yet fetched) longer
    /// than this is closed: its rows, memory and concurrency slot are
    /// released, and the next Execute or FETCH of it fails (55000).
    pub idle_portal_timeout_secs: u64,
    /// Memory (MiB) the running statements of one role may hold together,
    /// within the engine's `[memory]` budget; more fails with 53200. `0`:
    /// only the engine's budget applies.
    pub max_memory_mb: u64,
    /// Overrides by role name; a key left out takes the value above.
    pub roles: std::collections::BTreeMap<String, RoleLimitsConfig>,
}

/// Five minutes: long enough for a client paging through a result, short
/// enough that an abandoned portal does not hold a slot for good.
pub const DEFAULT_IDLE_PORTAL_TIMEOUT_SECS: u64 = 300;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            statement_timeout_secs: 0,
            max_rows: 0,
            max_concurrent_statements: 0,
            idle_portal_timeout_secs: DEFAULT_IDLE_PORTAL_TIMEOUT_SECS,
            max_memory_mb: 0,
            roles: Default::default(),
        }
    }
}

/// One role's overrides of `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleLimitsConfig {
    pub statement_timeout_secs: Option<u64>,
    pub max_rows: Option<u64>,
    pub max_concurrent_statements: Option<usize>,
    pub max_memory_mb: Option<u64>,
}

/// The admin HTTP endpoint (`[admin]`): `/metrics`, `/health`, `/ready`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Where it listens; keep it on loopback or a private network.
    pub listen: SocketAddr,
}

/// A secret from the environment variable `env`, else from `file` (`what`
/// names the file in an error), else the error `missing`.
fn secret(
    env: &str,
    file: Option<&Path>,
    what: &str,
    missing: &str,
) -> Result<String, ConfigError> {
    if let Ok(v) = std::env::var(env) {
        return Ok(v);
    }
    match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| ConfigError::Invalid(format!("cannot read {what} {}: {e}", f.display()))),
        None => Err(ConfigError::Invalid(missing.to_owned())),
    }
}

/// Distributed execution (`[cluster]`, SPEC §11). On a coordinator
/// (`serve`), `workers` lists the `lakeward worker`s that run the stages of
/// statements whose estimated scan passes `distribute_min_bytes`; on a
/// worker, `listen` is where it accepts stages. Both ends authenticate with
/// the same token (from `token_env`, else `token_file`) over TLS: the
/// worker serves with `[tls]`, the coordinator trusts `ca_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Worker URLs (`https://host:port`); empty: every statement runs here.
    pub workers: Vec<String>,
    /// Where `lakeward worker` listens.
    pub listen: SocketAddr,
    /// PEM certificates the coordinator trusts for the workers' TLS.
    pub ca_file: Option<PathBuf>,
    /// Server name the workers' certificates are checked against (default:
    /// each worker URL's host).
    pub tls_domain: Option<String>,
    /// Environment variable holding the cluster token (≥ 32 characters).
    pub token_env: String,
    /// File holding the cluster token, when the variable is not set.
    pub token_file: Option<PathBuf>,
    /// A statement is distributed when the data files its secured scans
    /// read add up to at least this many bytes (estimated at planning).
    pub distribute_min_bytes: u64,
    /// Scan bytes one task reads: a stage runs on
    /// `min(workers, ceil(bytes / bytes_per_task))` tasks.
    pub bytes_per_task: u64,
    /// Collect each distributed statement's per-stage metrics from the
    /// workers and log them (`distributed stage`: tasks, CPU time, rows and
    /// bytes each stage sent; no plan text) when it ends. For sizing and
    /// benchmarks: the workers send their metrics after every task.
    pub stage_metrics: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            workers: Vec::new(),
            listen: "127.0.0.1:7700".parse().expect("static address"),
            ca_file: None,
            tls_domain: None,
            token_env: "LAKEWARD_CLUSTER_TOKEN".into(),
            token_file: None,
            distribute_min_bytes: 256 << 20,
            bytes_per_task: 64 << 20,
            stage_metrics: false,
        }
    }
}

impl ClusterConfig {
    /// The cluster token: from the environment, else from the token file.
    pub fn token(&self) -> Result<String, ConfigError> {
        let text = secret(
            &self.token_env,
            self.token_file.as_deref(),
            "cluster token file",
            &format!(
                "no cluster token: set {} or cluster.token_file",
                self.token_env
            ),
        )?;
        let token = text.trim().to_owned();
        if token.len() < 32 || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(
                "the cluster token must be at least 32 printable characters".into(),
            ));
        }
        Ok(token)
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: "127.0.0.1:9187".parse().expect("static address"),
        }
    }
}

/// The access audit (`[audit]`): where records become durable, where the
/// Delta table lives, how the chain is signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Local folder of the segment log and the signed checkpoints (fsync'd
    /// before any row is sent). Required.
    pub dir: Option<PathBuf>,
    /// Location of the Delta table `audit.access_log` (path or URL).
    /// Default: `<data.root>/audit/access_log`.
    pub table: Option<String>,
    /// This instance's chain name. Instances writing one table need
    /// distinct names.
    pub instance: String,
    /// Environment variable holding the Ed25519 checkpoint key (PKCS#8 PEM).
    pub signing_key_env: String,
    /// File holding the Ed25519 checkpoint key (PKCS#8 PEM), used when the
    /// environment variable is unset.
    pub signing_key_file: Option<PathBuf>,
    /// Sign a checkpoint after this many records...
    pub checkpoint_every_records: u64,
    /// ...or after this many seconds with new records.
    pub checkpoint_every_secs: u64,
    /// Append to the Delta table once this many records are waiting...
    pub ship_every_records: usize,
    /// ...or after this many milliseconds.
    pub ship_every_ms: u64,
    /// Segment files are rotated at this size.
    pub segment_max_bytes: u64,
    /// `"fsync"` (the default and the only setting for real data): every
    /// record is on disk before rows are sent. `"none-benchmark-only"`
    /// skips the fsync, to measure what it costs.
    pub durability: String,
    /// `"patients"` (the default and the only setting for real data): each
    /// statement's completion record names the patients it returned or
    /// aggregated (SPEC §9, `audit.patient_access`). `"none-benchmark-only"`
    /// leaves them out, to measure what accounting costs.
    pub accounting: String,
    /// Unusual-access signals (`[audit.signals]`): working hours, the
    /// per-user baseline, break-glass frequency (`audit::signals`).
    pub signals: crate::audit::signals::SignalConfig,
    /// Documented retention (HIPAA: 6 years minimum; default 7). lakeward
    /// never deletes audit records; the table is append-only.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: None,
            table: None,
            instance: "lakeward".to_owned(),
            signing_key_env: "LAKEWARD_AUDIT_SIGNING_KEY".to_owned(),
            signing_key_file: None,
            checkpoint_every_records: 1000,
            checkpoint_every_secs: 10,
            ship_every_records: 1000,
            ship_every_ms: 1000,
            segment_max_bytes: 64 * 1024 * 1024,
            retention_days: 7 * 365 + 2,
            durability: "fsync".to_owned(),
            accounting: "patients".to_owned(),
            signals: Default::default(),
        }
    }
}

impl AuditConfig {
    /// The table location: configured, or under the data root.
    pub fn table_location(&self, data: &DataConfig) -> Option<String> {
        self.table.clone().or_else(|| {
            data.root.as_ref().map(|r| {
                let root = r.to_string_lossy();
                if root.contains("://") {
                    format!("{}/audit/access_log", root.trim_end_matches('/'))
                } else {
                    r.join("audit").join("access_log").display().to_string()
                }
            })
        })
    }
}

/// JWT verification. Secrets are never written here: the HS256 development
/// secret is read from the environment variable named by `hs256_secret_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// A JWKS document with the identity provider's public keys.
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys.
    pub public_keys: Vec<PublicKeyConfig>,
    /// Name of an environment variable holding an HS256 secret (development only).
    pub hs256_secret_env: Option<String>,
    /// Largest `exp - iat` accepted.
    pub max_token_lifetime_secs: u64,
    /// Clock skew tolerated (at most 30).
    pub leeway_secs: u64,
    pub claims: crate::auth::ClaimNames,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: None,
            public_keys: vec![],
            hs256_secret_env: None,
            max_token_lifetime_secs: 24 * 3600,
            leeway_secs: 30,
            claims: Default::default(),
        }
    }
}

/// One PEM public key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    pub kid: Option<String>,
    /// `RS256` or `ES256`.
    pub alg: String,
    pub file: PathBuf,
}

/// Where the policy lives, and where its pseudonymisation secret comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of policy files; unset means the demo policy built into lakeward.
    pub dir: Option<PathBuf>,
    /// Environment variable holding the pseudonymisation key (hex, ≥ 32 bytes).
    pub pseudonym_key_env: String,
    /// Or a file holding it (mode 0600), used when the variable is unset.
    pub pseudonym_key_file: Option<PathBuf>,
    /// A second policy folder every statement is also planned under (never
    /// executed twice): the audit record says whether it would have been
    /// refused or shown any column differently (`audit.shadow_differences`).
    /// Reloaded on SIGHUP with the live policy.
    pub shadow_policy_dir: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            pseudonym_key_env: "LAKEWARD_PSEUDONYM_KEY".into(),
            pseudonym_key_file: None,
            shadow_policy_dir: None,
        }
    }
}

impl PolicyConfig {
    /// The pseudonymisation key: from the environment, else from the key file.
    /// Missing or short keys are an error (the server refuses to start).
    pub fn pseudonym_key(&self) -> Result<Vec<u8>, ConfigError> {
        let text = secret(
            &self.pseudonym_key_env,
            self.pseudonym_key_file.as_deref(),
            "pseudonym key file",
            &format!(
                "no pseudonymisation key: set {} (64 hex digits) or policy.pseudonym_key_file",
                self.pseudonym_key_env
            ),
        )?;
        let key = hex::decode(text.trim())
            .map_err(|_| ConfigError::Invalid("the pseudonymisation key must be hex".into()))?;
        if key.len() < 32 {
            return Err(ConfigError::Invalid(
                "the pseudonymisation key must be at least 32 bytes".into(),
            ));
        }
        Ok(key)
    }
}

/// Listener, limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the PostgreSQL listener binds to.
    pub listen: SocketAddr,
    /// Connections served at once; further clients get SQLSTATE 53300.
    pub max_connections: usize,
    /// A session idle (between statements) longer than this is closed. 0 disables.
    pub idle_timeout_secs: u64,
    /// Time a client has to finish TLS negotiation and startup.
    pub startup_timeout_secs: u64,
    /// Largest frontend message accepted (a Query or Parse message carries the SQL text).
    pub max_message_bytes: usize,
    /// Deepest expression / query nesting accepted by the SQL parser.
    pub max_sql_nesting: usize,
    /// How long graceful shutdown waits for running statements before closing.
    pub shutdown_grace_secs: u64,
    /// Database name reported to clients (`current_database()`).
    pub database_name: String,
    /// Planned statements kept for reuse, keyed by SQL text, policy version
    /// and access subject. 0 disables the plan cache.
    pub plan_cache_entries: u64,
    /// Memory the plan cache may hold (estimated), in MiB. 0 disables the
    /// plan cache.
    pub plan_cache_mb: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6432".parse().expect("static address"),
            max_connections: 256,
            idle_timeout_secs: 3600,
            startup_timeout_secs: 30,
            max_message_bytes: 4 * 1024 * 1024,
            max_sql_nesting: 64,
            shutdown_grace_secs: 30,
            database_name: "lakeward".to_owned(),
            plan_cache_entries: 10_000,
            plan_cache_mb: 128,
        }
    }
}

/// TLS settings. TLS is required unless `allow_plaintext_loopback` is set and the
/// client connects from a loopback address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Development only: accept non-TLS clients that connect over loopback.
    pub allow_plaintext_loopback: bool,
}

/// Where the Delta tables live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Root scanned for `<schema>/<table>/_delta_log`: a local folder or an
    /// object-store URL (`s3://bucket/lake`; credentials from `AWS_*`).
    pub root: Option<PathBuf>,
    /// Explicit table locations: `"clinical.patients" = "/data/clinical/patients"`
    /// (local paths or object-store URLs). Override what `root` discovers.
    pub tables: std::collections::BTreeMap<String, String>,
    /// How old a table's snapshot may get before a query looks for a newer
    /// Delta version (milliseconds; 0: check on every query). A query never
    /// reads a snapshot older than this after a commit.
    pub refresh_ms: u64,
    /// Which scan reads plain tables: `auto` (lakeward's snapshot scan,
    /// which keeps each version's file list and statistics in memory, where
    /// a table qualifies; deltalake's provider for the others) or
    /// `deltalake` (deltalake's provider for every table: a fallback while
    /// a reading difference is investigated).
    pub scan: ScanChoice,
}

/// `[data] scan`: which scan reads tables lakeward's own scan can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanChoice {
    #[default]
    Auto,
    Deltalake,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: None,
            tables: Default::default(),
            refresh_ms: 2_000,
            scan: ScanChoice::Auto,
        }
    }
}

impl DataConfig {
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms)
    }
}

impl ServerConfig {
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs.max(1))
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Config {
    /// Read and check a TOML configuration file. Relative paths inside it are
    /// resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_relative(base);
        config.validate()?;
        Ok(config)
    }

    /// A `lakeward worker`'s configuration: it serves no client and audits
    /// nothing (its coordinator does), so only `[tls]`, `[data]`,
    /// `[policy]` (the pseudonymisation key), `[memory]` and `[cluster]`
    /// are checked; an `[auth]` or `[audit]` section is ignored.
    pub fn load_worker(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_relative(base);
        let mut problems = Vec::new();
        if config.tls.cert_file.is_none() || config.tls.key_file.is_none() {
            problems
                .push("a worker serves TLS only: set tls.cert_file and tls.key_file".to_owned());
        }
        if config.data.root.is_none() && config.data.tables.is_empty() {
            problems.push("no tables: set data.root or data.tables".to_owned());
        }
        if let Err(e) = config.cluster.token() {
            problems.push(e.to_string());
        }
        if config.cluster.ca_file.is_none() {
            problems.push(
                "cluster.ca_file is required: workers read each other's shuffle output over TLS"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p
                .as_mut()
                .filter(|p| p.is_relative() && !p.to_string_lossy().contains("://"))
            {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert_file);
        fix(&mut self.tls.key_file);
        fix(&mut self.data.root);
        fix(&mut self.auth.jwks_file);
        fix(&mut self.policy.dir);
        fix(&mut self.policy.pseudonym_key_file);
        fix(&mut self.audit.dir);
        fix(&mut self.audit.signing_key_file);
        fix(&mut self.cluster.ca_file);
        fix(&mut self.cluster.token_file);
        if let Some(t) = self.audit.table.as_mut().filter(|t| !t.contains("://"))
            && Path::new(t.as_str()).is_relative()
        {
            *t = base.join(t.as_str()).display().to_string();
        }
        for k in &mut self.auth.public_keys {
            if k.file.is_relative() {
                k.file = base.join(&k.file);
            }
        }
    }

    /// Check the configuration as a whole; returns every problem found.
    /// The shadow policy folder (`[policy] shadow_policy_dir`, or the same
    /// key at the top level of the file).
    pub fn shadow_policy_dir(&self) -> Option<&std::path::Path> {
        self.policy
            .shadow_policy_dir
            .as_deref()
            .or(self.shadow_policy_dir.as_deref())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let (Some(a), Some(b)) = (&self.policy.shadow_policy_dir, &self.shadow_policy_dir)
            && a != b
        {
            problems.push(
                "shadow_policy_dir is set twice (top level and [policy]) to different folders"
                    .to_owned(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            problems.push("tls.cert_file and tls.key_file must be set together".to_owned());
        }
        if self.tls.cert_file.is_none() && !self.tls.allow_plaintext_loopback {
            problems.push(
                "no TLS certificate configured and plaintext is not allowed: set tls.cert_file/tls.key_file"
                    .to_owned(),
            );
        }
        if self.tls.cert_file.is_none()
            && self.tls.allow_plaintext_loopback
            && !self.server.listen.ip().is_loopback()
        {
            problems.push(
                "plaintext without TLS is only allowed on a loopback listen address".to_owned(),
            );
        }
        if self.server.max_connections == 0 {
            problems.push("server.max_connections must be at least 1".to_owned());
        }
        if self.server.max_message_bytes < 1024 {
            problems.push("server.max_message_bytes must be at least 1024".to_owned());
        }
        if !(8..=512).contains(&self.server.max_sql_nesting) {
            problems.push("server.max_sql_nesting must be between 8 and 512".to_owned());
        }
        for t in &self.lookup.cache_tables {
            if crate::engine::TableName::parse(t).is_none() {
                problems.push(format!(
                    "lookup.cache_tables: {t:?} is not a schema.table name"
                ));
            }
        }
        if self.audit.dir.is_none() {
            problems.push(
                "no audit folder: set audit.dir (lakeward serves nothing unaudited)".to_owned(),
            );
        }
        if self.audit.table_location(&self.data).is_none() {
            problems.push("no audit table: set audit.table or data.root".to_owned());
        }
        if !["fsync", "none-benchmark-only"].contains(&self.audit.durability.as_str()) {
            problems.push(
                "audit.durability must be \"fsync\" (or \"none-benchmark-only\" for benchmarks)"
                    .to_owned(),
            );
        }
        if !["patients", "none-benchmark-only"].contains(&self.audit.accounting.as_str()) {
            problems.push(
                "audit.accounting must be \"patients\" (or \"none-benchmark-only\" for benchmarks)"
                    .to_owned(),
            );
        }
        problems.extend(
            self.audit
                .signals
                .problems()
                .into_iter()
                .map(|p| format!("audit.signals.{p}")),
        );
        if self.audit.instance.is_empty()
            || !self
                .audit
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            problems.push("audit.instance must be letters, digits, '-', '_' or '.'".to_owned());
        }
        if self.data.root.is_none() && self.data.tables.is_empty() {
            problems.push("no tables: set data.root or data.tables".to_owned());
        }
        for w in &self.cluster.workers {
            match url::Url::parse(w) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
                _ => problems.push(format!(
                    "cluster.workers entry {w:?} must be an https://host:port URL (workers accept TLS only)"
                )),
            }
        }
        if !self.cluster.workers.is_empty() && self.cluster.ca_file.is_none() {
            problems
                .push("cluster.workers needs cluster.ca_file (the workers' TLS roots)".to_owned());
        }
        if self.cluster.bytes_per_task == 0 {
            problems.push("cluster.bytes_per_task must be positive".to_owned());
        }
        for name in self.data.tables.keys() {
            if name.split('.').count() != 2 || name.split('.').any(str::is_empty) {
                problems.push(format!("data.tables key {name:?} must be <schema>.<table>"));
            }
        }
        let a = &self.auth;
        if a.issuer.is_empty() {
            problems.push("auth.issuer must be set".to_owned());
        }
        if a.audience.is_empty() {
            problems.push("auth.audience must be set".to_owned());
        }
        if a.jwks_file.is_none() && a.public_keys.is_empty() && a.hs256_secret_env.is_none() {
            problems.push(
                "no token verification keys: set auth.jwks_file or auth.public_keys".to_owned(),
            );
        }
        for k in &a.public_keys {
            if k.alg != "RS256" && k.alg != "ES256" {
                problems.push(format!(
                    "auth.public_keys: alg {:?} is not allowed (RS256, ES256)",
                    k.alg
                ));
            }
        }
        if a.leeway_secs > 30 {
            problems.push("auth.leeway_secs must be at most 30".to_owned());
        }
        if a.max_token_lifetime_secs == 0 || a.max_token_lifetime_secs > 24 * 3600 {
            problems.push("auth.max_token_lifetime_secs must be between 1 and 86400".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// Token verification settings, with the development secret read from the
    /// environment.
    pub fn auth_settings(&self) -> Result<crate::auth::AuthSettings, ConfigError> {
        use jsonwebtoken::Algorithm;
        let a = &self.auth;
        let hs256_secret = match &a.hs256_secret_env {
            None => None,
            Some(var) => {
                let v = std::env::var(var).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "environment variable {var} (auth.hs256_secret_env) is not set"
                    ))
                })?;
                if v.len() < 32 {
                    return Err(ConfigError::Invalid(format!(
                        "the HS256 secret in {var} must be at least 32 bytes"
                    )));
                }
                Some(v.into_bytes())
            }
        };
        let pem_files = a
            .public_keys
            .iter()
            .map(|k| {
                let alg = if k.alg == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                (k.kid.clone(), alg, k.file.clone())
            })
            .collect();
        Ok(crate::auth::AuthSettings {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            sources: crate::auth::KeySources {
                jwks_file: a.jwks_file.clone(),
                pem_files,
                hs256_secret,
            },
            max_lifetime: Duration::from_secs(a.max_token_lifetime_secs),
            leeway: Duration::from_secs(a.leeway_secs.min(30)),
            claims: a.claims.clone(),
        })
    }

    /// The configuration `lakeward demo` uses for a data folder.
    pub fn demo(data_dir: &Path, listen: SocketAddr) -> Config {
        let tls_dir = data_dir.join("tls");
        Config {
            server: ServerConfig {
                listen,
                ..Default::default()
            },
            tls: TlsConfig {
                cert_file: Some(tls_dir.join("server.crt")),
                key_file: Some(tls_dir.join("server.key")),
                allow_plaintext_loopback: listen.ip().is_loopback(),
            },
            data: DataConfig {
                root: Some(data_dir.to_owned()),
                ..Default::default()
            },
            auth: AuthConfig {
                issuer: DEMO_ISSUER.to_owned(),
                audience: DEMO_AUDIENCE.to_owned(),
                public_keys: vec![PublicKeyConfig {
                    kid: Some(DEMO_KID.to_owned()),
                    alg: "ES256".to_owned(),
                    file: crate::auth::demo_key_paths(data_dir).1,
                }],
                ..Default::default()
            },
            policy: PolicyConfig {
                pseudonym_key_file: Some(data_dir.join("keys").join("pseudonym.key")),
                ..Default::default()
            },
            audit: AuditConfig {
                dir: Some(data_dir.join("audit-wal")),
                signing_key_file: Some(demo_audit_key_path(data_dir)),
                ..Default::default()
            },
            // A runaway statement ends after five minutes.
            limits: LimitsConfig {
                statement_timeout_secs: DEMO_STATEMENT_TIMEOUT_SECS,
                ..Default::default()
            },
            memory: MemoryConfig::default(),
            lookup: LookupConfig::default(),
            // Beside the PostgreSQL listener, on a port the system picks
            // (printed at start-up), so that a demo never fails to start.
            admin: AdminConfig {
                enabled: true,
                listen: SocketAddr::new(listen.ip(), 0),
            },
            cluster: ClusterConfig::default(),
            shadow_policy_dir: None,
        }
    }
}

/// The demo's statement timeout.
pub const DEMO_STATEMENT_TIMEOUT_SECS: u64 = 300;

pub fn demo_audit_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("audit-signing.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_file_and_rejects_unknown_keys() {
        let ok: Config = toml::from_str(
            "[server]\nlisten = \"127.0.0.1:7000\"\n[tls]\ncert_file = \"a\"\nkey_file = \"b\"\n[data]\nroot = \"/d\"\n[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\n[audit]\ndir = \"/w\"\n",
        )
        .unwrap();
        assert_eq!(ok.server.listen.port(), 7000);
        assert!(ok.validate().is_ok());
        assert!(toml::from_str::<Config>("[server]\nlisten_typo = 1\n").is_err());
    }

    #[test]
    fn plaintext_requires_loopback_and_tls_pairs() {
        let mut c: Config = toml::from_str(
            "[data]\nroot = \"/d\"\n[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\n[audit]\ndir = \"/w\"\n",
        )
        .unwrap();
        assert!(
            c.validate().is_err(),
            "no TLS and no plaintext switch must be refused"
        );
        c.tls.allow_plaintext_loopback = true;
        assert!(c.validate().is_ok());
        c.server.listen = "0.0.0.0:6432".parse().unwrap();
        assert!(
            c.validate().is_err(),
            "plaintext on a public address must be refused"
        );
    }

    #[test]
    fn claim_types_are_strict_unless_a_list_claim_is_listed() {
        let base = "[data]\nroot = \"/d\"\n[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\n[audit]\ndir = \"/w\"\n";
        let strict: Config = toml::from_str(base).unwrap();
        assert!(strict.auth.claims.string_or_array.is_empty());
        let relaxed: Config = toml::from_str(&format!(
            "{base}[auth.claims]\nroles = \"groups\"\nstring_or_array = [\"roles\"]\n"
        ))
        .unwrap();
        let settings = relaxed.auth_settings().unwrap();
        assert_eq!(settings.claims.roles, "groups");
        assert_eq!(
            settings.claims.string_or_array,
            vec![crate::auth::ListClaim::Roles]
        );
        // Only list claims can be relaxed, and unknown keys are errors.
        for bad in [
            "string_or_array = [\"site\"]",
            "string_or_array = [\"sub\"]",
            "string_or_array = \"roles\"",
            "roles_accepts_string = true",
        ] {
            assert!(
                toml::from_str::<Config>(&format!("{base}[auth.claims]\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
    }
}
