//! Test support: a dataset generated once per test run, servers started on
//! ephemeral loopback ports in a background runtime, TLS clients.
//!
//! - [`oracle`]: what the raw tables hold, read without lakeward;
//! - [`psql`]: the real psql client;
//! - [`process`]: the lakeward binary run as a command, and what a program printed;
//! - [`frontend`]: raw frontend-protocol bytes for tests that speak the wire
//!   protocol by hand.

pub mod frontend;
pub mod oracle;
pub mod process;
pub mod psql;

pub use oracle::{
    RawPatient, consented_patients, raw_context, raw_patients, raw_rows, visible_patients,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use jsonwebtoken::Algorithm;
use lakeward::auth::mint::{TokenRequest, mint};
use lakeward::auth::{AuthSettings, Authenticator, KeySources};
use lakeward::config::Config;
use lakeward::engine::Engine;
use lakeward::server::{Server, Services};

/// Patients in the shared test dataset.
pub const PATIENTS: u64 = 2_000;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static DATA: OnceLock<PathBuf> = OnceLock::new();
static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
static DEFAULT: OnceLock<TestServer> = OnceLock::new();
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The background runtime that runs every test server.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        lakeward::server::tls::install_crypto_provider();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(8 * 1024 * 1024)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// Run `f` on a plain thread: `block_on` must not be called from a test's own
/// runtime thread.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("setup thread panicked"))
}

/// A temporary folder kept for the whole test run.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    dir.keep()
}

/// The shared dataset (generated on first use) with a development certificate.
pub fn data_dir() -> &'static Path {
    DATA.get_or_init(|| {
        off_runtime(|| {
            let dir = temp_dir("lakeward-it-data");
            let opts = lakeward::datagen::DatagenOptions {
                data_dir: dir.clone(),
                patients: PATIENTS,
                seed: 42,
            };
            runtime()
                .block_on(lakeward::datagen::generate(&opts))
                .expect("datagen");
            lakeward::server::tls::ensure_dev_certificate(&dir.join("tls")).expect("dev cert");
            lakeward::auth::mint::ensure_demo_keys(&dir).expect("demo keys");
            let audit_key = lakeward::config::demo_audit_key_path(&dir);
            if !audit_key.exists() {
                lakeward::audit::chain::SigningKey::generate_to_file(&audit_key)
                    .expect("audit key");
            }
            dir
        })
    })
}

pub(crate) fn engine() -> Arc<Engine> {
    ENGINE
        .get_or_init(|| {
            let cfg = Config::demo(data_dir(), "127.0.0.1:0".parse().unwrap());
            engine_with_memory(&cfg.memory)
        })
        .clone()
}

/// An engine over the shared dataset (and the shared audit table) with its
/// own memory budget.
pub fn engine_with_memory(memory: &lakeward::config::MemoryConfig) -> Arc<Engine> {
    let cfg = Config::demo(data_dir(), "127.0.0.1:0".parse().unwrap());
    let audit_table = cfg.audit.table_location(&cfg.data).expect("audit table");
    off_runtime(|| {
        runtime()
            .block_on(lakeward::audit::delta::AuditTable::open_or_create(
                &audit_table,
                lakeward::audit::record::schema(),
            ))
            .expect("audit table");
        // And its patient index, as the audit store creates it before
        // `serve` opens the engine.
        runtime()
            .block_on(lakeward::audit::index::open(&audit_table))
            .expect("patient index");
        let engine = runtime()
            .block_on(lakeward::engine::open_from_config(
                &cfg.data,
                memory,
                &[7u8; 32],
                Some(&audit_table),
            ))
            .expect("engine");
        // As `serve` does: point-lookup key indexes (built in the
        // background) and the hot-row cache, so every test's lookups run
        // over whichever path is ready.
        runtime().block_on(async {
            engine.configure_lookups(&cfg.lookup);
            engine
                .warm(&lakeward::policy::Policy::load(None).expect("policy"))
                .await;
        });
        Arc::new(engine)
    })
}

/// A server running in the background runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl TestServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stop the server (graceful shutdown) and wait until it has drained.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.lock().unwrap().take();
        if let Some(done) = done {
            let _ = done.recv_timeout(std::time::Duration::from_secs(30));
        }
    }
}

/// The HS256 development secret the test servers accept.
pub const HS256_SECRET: &[u8] = b"lakeward-test-hs256-secret-0123456789abcdef";

/// The fixture folder (RSA keys for RS256 tests).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Token verification for test servers: the demo ES256 key (kid
/// `demo-es256`), an RS256 key (kid `rsa-1`) and an HS256 secret.
pub fn test_auth_settings() -> AuthSettings {
    let config = Config::demo(data_dir(), "127.0.0.1:0".parse().unwrap());
    let mut settings = config.auth_settings().expect("auth settings");
    settings.sources = KeySources {
        jwks_file: None,
        pem_files: vec![
            (
                Some("demo-es256".into()),
                Algorithm::ES256,
                lakeward::auth::demo_key_paths(data_dir()).1,
            ),
            (
                Some("rsa-1".into()),
                Algorithm::RS256,
                fixtures().join("rsa-test-public.pem"),
            ),
        ],
        hs256_secret: Some(HS256_SECRET.to_vec()),
    };
    settings
}

/// Start a server over the shared dataset; `adjust` edits the demo config.
pub fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_with_auth(adjust, test_auth_settings())
}

/// Start a server with explicit token verification settings.
pub fn start_with_auth(adjust: impl FnOnce(&mut Config), auth: AuthSettings) -> TestServer {
    start_over(engine(), adjust, auth)
}

/// Start a server over `engine` (its own tables) with `adjust`ed demo settings.
pub fn start_over(
    engine: Arc<Engine>,
    adjust: impl FnOnce(&mut Config),
    auth: AuthSettings,
) -> TestServer {
    let mut config = Config::demo(data_dir(), "127.0.0.1:0".parse().unwrap());
    config.server.shutdown_grace_secs = 2;
    // Every test server writes its own chain (own segment folder and
    // instance name) into the one shared audit table.
    let n = NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.audit.dir = Some(temp_dir("audit-wal"));
    config.audit.instance = format!("it-{}-{n}", std::process::id());
    config.audit.ship_every_ms = 200;
    adjust(&mut config);
    let settings = lakeward::cli::audit_settings(&config).expect("audit settings");
    let audit = off_runtime(|| {
        runtime()
            .block_on(lakeward::audit::Auditor::open(settings))
            .expect("audit store")
    });
    // The unusual-access watch, as `lakeward serve` starts it.
    let directory = lakeward::engine::patient_directory::EngineDirectory::for_config(
        &engine,
        &config.audit.signals,
    );
    off_runtime(|| {
        runtime().block_on(async { audit.start_watch(config.audit.signals.clone(), directory) })
    })
    .expect("unusual-access watch");
    let services = Services {
        engine,
        auth: Arc::new(Authenticator::new(auth).expect("authenticator")),
        policy: Arc::new(lakeward::cli::policy_store(&config).expect("policy")),
        audit,
    };
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(c), Some(k)) => Some(lakeward::server::tls::load_acceptor(c, k).expect("tls")),
        _ => None,
    };
    let rt = runtime();
    let std_listener = std::net::TcpListener::bind(config.server.listen).expect("bind");
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
        Server::new(config, services, tls)
            .run(listener, async {
                let _ = stop_rx.await;
            })
            .await;
        let _ = done_tx.send(());
    });
    TestServer {
        addr,
        stop: Some(stop_tx),
        done: std::sync::Mutex::new(Some(done_rx)),
    }
}

/// The default server: TLS, plaintext allowed on loopback (demo settings).
pub fn server() -> &'static TestServer {
    DEFAULT.get_or_init(|| start(|_| {}))
}

/// A rustls client configuration that trusts the development certificate.
pub fn tls_client_config() -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data_dir().join("tls/server.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A development token (ES256, demo key) for `user` with one role.
pub fn token(user: &str, role: &str, site: Option<&str>) -> String {
    let req = TokenRequest {
        user: user.to_owned(),
        roles: vec![role.to_owned()],
        site: site.map(str::to_owned),
        purposes: vec![],
        family_name: None,
        ttl: Duration::from_secs(3600),
    };
    mint(data_dir(), &req).expect("mint")
}

/// Connect with tokio-postgres over TLS (certificate verified), with a token
/// for `role`, declaring `purpose` at startup.
pub async fn connect_role(addr: SocketAddr, role: &str, purpose: &str) -> tokio_postgres::Client {
    let site = (role == "clinician").then_some("S01");
    try_connect_with(
        addr,
        role,
        &token(role, role, site),
        "require",
        Some(purpose),
    )
    .await
    .expect("connect")
}

/// An analyst declaring `operations`: reads every table.
pub async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    connect_role(addr, "analyst", "operations").await
}

/// Connect with an explicit password (token), sslmode and purpose.
pub async fn try_connect_with(
    addr: SocketAddr,
    user: &str,
    password: &str,
    sslmode: &str,
    purpose: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("lakeward");
    config.ssl_mode(match sslmode {
        "disable" => tokio_postgres::config::SslMode::Disable,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if let Some(p) = purpose {
        config.options(format!("-c lakeward.purpose={p}"));
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_client_config());
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connect as the analyst (valid token) with the given sslmode.
pub async fn try_connect(
    addr: SocketAddr,
    _label: &str,
    sslmode: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    try_connect_with(
        addr,
        "analyst",
        &token("analyst", "analyst", None),
        sslmode,
        Some("operations"),
    )
    .await
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_owned())
}

/// A `lakeward serve` process (the real binary) with its stderr collected.
pub struct Served {
    pub child: std::process::Child,
    pub port: u16,
    /// Every line the server logged so far.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    /// The configuration file it was started with.
    pub config: PathBuf,
}

impl Served {
    /// SIGTERM, then wait for the graceful shutdown to finish.
    pub fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Let the stderr reader drain.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `lakeward serve` over the shared dataset with a config file:
/// TLS, the demo keys, `policy_dir` (or the built-in policy), the audit
/// segment folder `audit_dir` and the shared audit table.
pub fn serve_binary(policy_dir: Option<&Path>, audit_dir: &Path) -> Served {
    serve_binary_with(policy_dir, audit_dir, None, &[])
}

/// [`serve_binary`] with a fixed audit `instance` name (to restart one
/// chain) and extra environment variables.
pub fn serve_binary_with(
    policy_dir: Option<&Path>,
    audit_dir: &Path,
    instance: Option<&str>,
    env: &[(&str, &str)],
) -> Served {
    serve_binary_opts(ServeOpts {
        policy_dir,
        audit_dir,
        instance,
        env,
        ..Default::default()
    })
}

/// How [`serve_binary_opts`] starts `lakeward serve`.
pub struct ServeOpts<'a> {
    pub policy_dir: Option<&'a Path>,
    pub audit_dir: &'a Path,
    pub instance: Option<&'a str>,
    pub env: &'a [(&'a str, &'a str)],
    /// Folder holding `server.crt` and `server.key` (default: the dataset's).
    pub tls_dir: Option<&'a Path>,
    /// TOML appended to the configuration file (more sections).
    pub extra_toml: &'a str,
    /// Log filter (default `warn,lakeward=debug`).
    pub log_filter: Option<&'a str>,
    /// Log as JSON lines.
    pub log_json: bool,
    /// `[data] root` (default: the shared local dataset).
    pub data_root: Option<&'a str>,
    /// More keys of the `[data]` section (`scan = "deltalake"`, …).
    pub data_extra: &'a str,
    /// `[audit] table` (default: under the data root).
    pub audit_table: Option<&'a str>,
    /// The ES256 token verification key file (default: the dataset's demo key).
    pub jwt_public_key: Option<&'a Path>,
    /// `[policy] shadow_policy_dir`.
    pub shadow_policy_dir: Option<&'a Path>,
    /// More keys of the `[audit]` section.
    pub audit_extra: &'a str,
}

impl Default for ServeOpts<'_> {
    fn default() -> Self {
        ServeOpts {
            policy_dir: None,
            audit_dir: Path::new(""),
            instance: None,
            env: &[],
            tls_dir: None,
            extra_toml: "",
            log_filter: None,
            log_json: false,
            data_root: None,
            data_extra: "",
            audit_table: None,
            jwt_public_key: None,
            shadow_policy_dir: None,
            audit_extra: "",
        }
    }
}

/// Start `lakeward serve` as configured by `o`.
pub fn serve_binary_opts(o: ServeOpts<'_>) -> Served {
    let ServeOpts {
        policy_dir,
        audit_dir,
        instance,
        env,
        tls_dir,
        extra_toml,
        log_filter,
        log_json,
        data_root,
        data_extra,
        audit_table,
        jwt_public_key,
        shadow_policy_dir,
        audit_extra,
    } = o;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = data_dir();
    engine(); // the shared audit table exists
    let mut policy = policy_dir
        .map(|p| format!("dir = \"{}\"\n", p.display()))
        .unwrap_or_default();
    if let Some(shadow) = shadow_policy_dir {
        policy.push_str(&format!("shadow_policy_dir = \"{}\"\n", shadow.display()));
    }
    let tls = tls_dir.map_or_else(|| data.join("tls"), Path::to_owned);
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
[tls]
cert_file = "{t}/server.crt"
key_file = "{t}/server.key"
[data]
root = "{root}"
{data_extra}
[auth]
issuer = "{iss}"
audience = "{aud}"
public_keys = [{{ kid = "demo-es256", alg = "ES256", file = "{jwt}" }}]
[policy]
{policy}pseudonym_key_env = "{pseudonym_env}"
[audit]
dir = "{w}"
instance = "{instance}"
signing_key_file = "{d}/keys/audit-signing.pem"
ship_every_ms = 200
{audit_extra}
{audit_table}[admin]
listen = "127.0.0.1:0"
{extra_toml}
"#,
        d = data.display(),
        t = tls.display(),
        jwt = jwt_public_key
            .map_or_else(|| data.join("keys/jwt-public.pem"), Path::to_owned)
            .display(),
        root = data_root.map_or_else(|| data.display().to_string(), str::to_owned),
        audit_table = audit_table
            .map(|t| format!("table = \"{t}\"\n"))
            .unwrap_or_default(),
        w = audit_dir.display(),
        instance = instance.map_or_else(|| format!("bin-{port}"), str::to_owned),
        pseudonym_env = process::PSEUDONYM_KEY_ENV,
        iss = lakeward::config::DEMO_ISSUER,
        aud = lakeward::config::DEMO_AUDIENCE,
    );
    let cfg = temp_dir("lakeward-it-serve-cfg").join("lakeward.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut command = process::lakeward_command();
    command
        .args([
            "--log",
            log_filter.unwrap_or("warn,lakeward=debug"),
            "--log-format",
            if log_json { "json" } else { "text" },
            "serve",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .envs(env.iter().copied());
    let (child, log) = spawn_until_logged(command, "lakeward listening");
    Served {
        child,
        port,
        log,
        config: cfg,
    }
}

/// Start `command` (a lakeward process), collecting its stderr lines, and
/// wait (up to a minute) until it logs a line containing `ready`.
pub fn spawn_until_logged(
    mut command: std::process::Command,
    ready: &'static str,
) -> (std::process::Child, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start lakeward");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(ready) {
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        panic!(
            "lakeward did not log {ready:?}: {}",
            log.lock().unwrap().join("\n")
        );
    }
    (child, log)
}

/// A demo role as a client program connects as it: user and role name,
/// the purpose it declares, its site claim.
#[derive(Clone, Copy, Debug)]
pub struct Role {
    pub name: &'static str,
    pub purpose: &'static str,
    pub site: Option<&'static str>,
}

impl Role {
    /// A token for a user named after the role.
    pub fn token(&self) -> String {
        token(self.name, self.name, self.site)
    }

    /// The environment the client programs under `tests/clients/` read:
    /// the shared test server at `host`, this role's token and purpose,
    /// the development CA.
    pub fn env(&self, host: &str) -> Vec<(&'static str, String)> {
        vec![
            ("LAKEWARD_HOST", host.to_owned()),
            ("LAKEWARD_PORT", server().port().to_string()),
            ("LAKEWARD_USER", self.name.to_owned()),
            ("LAKEWARD_ROLE", self.name.to_owned()),
            ("LAKEWARD_TOKEN", self.token()),
            ("LAKEWARD_PURPOSE", self.purpose.to_owned()),
            (
                "LAKEWARD_CA",
                data_dir().join("tls/server.crt").display().to_string(),
            ),
        ]
    }
}

pub const ANALYST: Role = Role {
    name: "analyst",
    purpose: "operations",
    site: None,
};
pub const CLINICIAN_S01: Role = Role {
    name: "clinician",
    purpose: "treatment",
    site: Some("S01"),
};
pub const RESEARCHER: Role = Role {
    name: "researcher",
    purpose: "research",
    site: None,
};
pub const AUDITOR: Role = Role {
    name: "auditor",
    purpose: "operations",
    site: None,
};
