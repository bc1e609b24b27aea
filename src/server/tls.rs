//! TLS: loading the server certificate, and making a development one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Errors while setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("cannot create development certificate: {0}")]
    Generate(String),
}

/// Install the process-wide rustls crypto provider (ring). Both ring and
/// aws-lc-rs are compiled in through dependencies, so rustls cannot pick one
/// by itself; call this once at start-up, before any TLS configuration.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server certificate and key, replaceable while the server runs: every
/// new TLS handshake takes the current pair, so a rotated certificate is
/// served to new connections and established sessions keep theirs.
#[derive(Debug)]
pub struct ServerCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Load the certificate chain and key from PEM files.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerCert, TlsError> {
        let current = read_certified_key(cert_file, key_file)?;
        Ok(ServerCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Re-read both files. A pair that does not load (unreadable, no
    /// certificate, a key that does not match the certificate) is refused
    /// and the pair being served stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = read_certified_key(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// A TLS acceptor that serves whatever pair is current.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        install_crypto_provider();
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn read_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    install_crypto_provider();
    let read_err = |p: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| read_err(cert_file, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(cert_file, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_file.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| read_err(key_file, &e))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Config(e.to_string()))
}

/// Build a TLS acceptor from PEM files. TLS 1.2 and 1.3 only; ALPN
/// `postgresql` is offered for PostgreSQL 17's direct TLS negotiation.
pub fn load_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    Arc::new(ServerCert::load(cert_file, key_file)?).acceptor()
}

/// Write a self-signed development certificate for `localhost`/`127.0.0.1`
/// to `dir/server.crt` and `dir/server.key` unless both exist. The key file
/// is created with mode 0600.
pub fn ensure_dev_certificate(dir: &Path) -> Result<(), TlsError> {
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Generate(e.to_string()))?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::write(&cert_path, certified.cert.pem())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    crate::auth::keys::write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(())
}
