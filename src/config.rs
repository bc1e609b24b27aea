//! Server configuration: a TOML file first, command-line flags override.
//!
//! Every field has a safe default: TLS required, plaintext refused, a bounded
//! number of connections, bounded message and statement sizes. `lakeward demo`
//! builds a [`Config`] in code; `lakeward serve --config FILE` reads one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors found while loading or checking a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
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
    /// Root folder scanned for `<schema>/<table>/_delta_log`.
    pub root: Option<PathBuf>,
    /// Explicit table locations: `"clinical.patients" = "/data/clinical/patients"`
    /// (local paths or object-store URLs). Override what `root` discovers.
    pub tables: std::collections::BTreeMap<String, String>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { root: None, tables: Default::default() }
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
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_relative(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert_file);
        fix(&mut self.tls.key_file);
        fix(&mut self.data.root);
    }

    /// Check the configuration as a whole; returns every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
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
            problems.push("plaintext without TLS is only allowed on a loopback listen address".to_owned());
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
        if self.data.root.is_none() && self.data.tables.is_empty() {
            problems.push("no tables: set data.root or data.tables".to_owned());
        }
        for name in self.data.tables.keys() {
            if name.split('.').count() != 2 || name.split('.').any(str::is_empty) {
                problems.push(format!("data.tables key {name:?} must be <schema>.<table>"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems.join("; "))) }
    }

    /// The configuration `lakeward demo` uses for a data folder.
    pub fn demo(data_dir: &Path, listen: SocketAddr) -> Config {
        let tls_dir = data_dir.join("tls");
        Config {
            server: ServerConfig { listen, ..Default::default() },
            tls: TlsConfig {
                cert_file: Some(tls_dir.join("server.crt")),
                key_file: Some(tls_dir.join("server.key")),
                allow_plaintext_loopback: listen.ip().is_loopback(),
            },
            data: DataConfig { root: Some(data_dir.to_owned()), tables: Default::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_file_and_rejects_unknown_keys() {
        let ok: Config = toml::from_str(
            "[server]\nlisten = \"127.0.0.1:7000\"\n[tls]\ncert_file = \"a\"\nkey_file = \"b\"\n[data]\nroot = \"/d\"\n",
        )
        .unwrap();
        assert_eq!(ok.server.listen.port(), 7000);
        assert!(ok.validate().is_ok());
        assert!(toml::from_str::<Config>("[server]\nlisten_typo = 1\n").is_err());
    }

    #[test]
    fn plaintext_requires_loopback_and_tls_pairs() {
        let mut c: Config = toml::from_str("[data]\nroot = \"/d\"\n").unwrap();
        assert!(c.validate().is_err(), "no TLS and no plaintext switch must be refused");
        c.tls.allow_plaintext_loopback = true;
        assert!(c.validate().is_ok());
        c.server.listen = "0.0.0.0:6432".parse().unwrap();
        assert!(c.validate().is_err(), "plaintext on a public address must be refused");
    }
}
