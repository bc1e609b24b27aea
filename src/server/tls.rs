//! TLS: loading the server certificate, and making a development one.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
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

/// Build a TLS acceptor from PEM files. TLS 1.2 and 1.3 only; ALPN
/// `postgresql` is offered for PostgreSQL 17's direct TLS negotiation.
pub fn load_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
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
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(())
}

/// Write a secret file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
