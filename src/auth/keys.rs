//! The set of keys that may sign tokens, loaded from configured files only.
//!
//! A token's `kid` selects a key from this set; the key fixes the algorithm.
//! Headers that point elsewhere (`jku`, `jwk`, `x5u`, `x5c`) are never
//! followed. HMAC keys exist only when a development secret is configured.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Errors while loading keys (operator-facing, never sent to clients).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {message}")]
    Read { path: String, message: String },
    #[error("invalid key in {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("no verification keys configured")]
    Empty,
}

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Where keys come from.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// A JWKS document (`{"keys": [...]}`); each key needs `kid` and `alg`
    /// (or a key type that implies it: EC P-256 → ES256).
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys: `(kid, algorithm, path)`.
    pub pem_files: Vec<(Option<String>, Algorithm, PathBuf)>,
    /// Development only: an HS256 secret.
    pub hs256_secret: Option<Vec<u8>>,
}

/// Loaded keys plus the file modification times they were loaded from.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub(crate) stamps: Vec<(PathBuf, Option<SystemTime>)>,
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KeySet {
    /// Load every configured key. A key that cannot be used is an error: a
    /// half-loaded key set would make failures depend on which key signed.
    pub fn load(sources: &KeySources) -> Result<KeySet, KeyError> {
        let mut set = KeySet::default();
        if let Some(path) = &sources.jwks_file {
            let invalid = |m: String| KeyError::Invalid {
                path: path.display().to_string(),
                message: m,
            };
            let doc: JwkSet =
                serde_json::from_slice(&read(path)?).map_err(|e| invalid(e.to_string()))?;
            for jwk in &doc.keys {
                let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                    (Some(a), _) => Algorithm::from_str_checked(&a.to_string()).map_err(invalid)?,
                    (None, AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
                    (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                    _ => return Err(invalid("key without alg".into())),
                };
                if !matches!(alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(invalid(format!(
                        "algorithm {alg:?} is not allowed in a JWKS (RS256, ES256)"
                    )));
                }
                let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
                set.keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
            set.stamps.push((path.clone(), mtime(path)));
        }
        for (kid, alg, path) in &sources.pem_files {
            let invalid = |m: String| KeyError::Invalid {
                path: path.display().to_string(),
                message: m,
            };
            let pem = read(path)?;
            let key = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                other => {
                    return Err(invalid(format!(
                        "algorithm {other:?} is not allowed for PEM keys (RS256, ES256)"
                    )));
                }
            }
            .map_err(|e| invalid(e.to_string()))?;
            set.keys.push(Key {
                kid: kid.clone(),
                alg: *alg,
                key,
            });
            set.stamps.push((path.clone(), mtime(path)));
        }
        if let Some(secret) = &sources.hs256_secret {
            // An empty secret is refused (never its value in the message).
            let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::Invalid {
                path: "the HS256 development secret".to_owned(),
                message: "not a usable HMAC key".to_owned(),
            })?;
            set.keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key,
            });
        }
        if set.keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(set)
    }

    /// True when a key file changed on disk since it was loaded.
    pub fn is_stale(&self) -> bool {
        self.stamps.iter().any(|(p, t)| mtime(p) != *t)
    }

    /// The key for a token header: by `kid` when the token names one, else the
    /// only key of the token's algorithm. The algorithm must match the key's.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Key> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg),
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
                let first = candidates.next()?;
                // Ambiguous without a kid: refuse rather than guess.
                candidates.next().is_none().then_some(first)
            }
        }
    }
}

/// `Algorithm::from_str` with a plain error string.
trait FromStrChecked: Sized {
    fn from_str_checked(s: &str) -> Result<Self, String>;
}

impl FromStrChecked for Algorithm {
    fn from_str_checked(s: &str) -> Result<Algorithm, String> {
        s.parse::<Algorithm>()
            .map_err(|_| format!("unknown algorithm {s:?}"))
    }
}

/// Write a secret file (a private key, a token secret) readable by its
/// owner only.
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
