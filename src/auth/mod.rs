//! Identity: a JWT presented as the PostgreSQL password becomes a [`Principal`].
//!
//! Checks, in order: size and shape; header algorithm on the allow-list and a
//! configured key for it (by `kid`; `jku`/`jwk`/`x5u`/`x5c` are never
//! followed); signature; `exp` (numeric, required), `nbf`, `iat` (required,
//! not in the future), `iss`, `aud`; lifetime `exp - iat` within the maximum;
//! `sub` present and equal to the startup user name. Every failure has a
//! [`AuthFailure`] class for the audit log; the client learns only that
//! authentication failed.
//!
//! Verified tokens are cached (keyed by SHA-256 of the token, never the token
//! itself) until they expire; the key files are re-read when they change.

pub mod keys;
pub mod mint;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use keys::{KeyError, KeySet, KeySources};

/// Largest token accepted (pgwire caps password messages at 10,000 bytes too).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Names of the claims lakeward reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    pub roles: String,
    pub site: String,
    pub purposes: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            roles: "roles".into(),
            site: "site".into(),
            purposes: "purposes".into(),
        }
    }
}

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub sources: KeySources,
    /// Largest `exp - iat` accepted.
    pub max_lifetime: Duration,
    /// Clock skew tolerated on `exp`, `nbf`, `iat` (at most 30 s).
    pub leeway: Duration,
    pub claims: ClaimNames,
}

/// Who is connected, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`, equal to the startup user name.
    pub user: String,
    pub roles: Vec<String>,
    pub site: Option<String>,
    /// Purposes this person may declare (empty: whatever the role allows).
    pub purposes: Vec<String>,
    /// Token expiry (seconds since the epoch).
    pub expires_at: u64,
}

impl Principal {
    pub fn is_expired(&self) -> bool {
        now_secs() >= self.expires_at
    }
}

/// Why a token was refused. The class is audited; the client is told only
/// "authentication failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("no key for token")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("token lifetime too long")]
    Lifetime,
    #[error("required claim missing or invalid")]
    Claims,
    #[error("user name does not match token subject")]
    UserMismatch,
}

impl AuthFailure {
    /// SQLSTATE sent to the client: 28000 for a token that is not a usable
    /// credential at all, 28P01 for a credential that failed verification.
    pub fn sqlstate(self) -> &'static str {
        match self {
            AuthFailure::Missing | AuthFailure::Malformed => "28000",
            _ => "28P01",
        }
    }

    /// A short, stable name for logs, metrics and the audit log.
    pub fn class(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Algorithm => "algorithm",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::Signature => "signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::Issuer => "issuer",
            AuthFailure::Audience => "audience",
            AuthFailure::Lifetime => "lifetime",
            AuthFailure::Claims => "claims",
            AuthFailure::UserMismatch => "user_mismatch",
        }
    }
}

/// Verifies tokens; shared by all connections.
pub struct Authenticator {
    settings: AuthSettings,
    keys: RwLock<Arc<KeySet>>,
    cache: moka::sync::Cache<[u8; 32], Arc<Principal>>,
    last_check: RwLock<SystemTime>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.settings.issuer)
            .finish()
    }
}

/// Per-entry expiry: a cached principal never outlives its token.
struct UntilTokenExpiry;

impl moka::Expiry<[u8; 32], Arc<Principal>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Arc<Principal>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(v.expires_at.saturating_sub(now_secs())))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Result<Authenticator, KeyError> {
        let keys = KeySet::load(&settings.sources)?;
        Ok(Authenticator {
            settings,
            keys: RwLock::new(Arc::new(keys)),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilTokenExpiry)
                .build(),
            last_check: RwLock::new(SystemTime::now()),
        })
    }

    /// Re-read key files if they changed (checked at most once a second).
    fn current_keys(&self) -> Arc<KeySet> {
        let due = {
            let last = self.last_check.read().unwrap_or_else(|p| p.into_inner());
            last.elapsed()
                .map(|e| e >= Duration::from_secs(1))
                .unwrap_or(true)
        };
        if due {
            *self.last_check.write().unwrap_or_else(|p| p.into_inner()) = SystemTime::now();
            let stale = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_stale();
            if stale {
                match KeySet::load(&self.settings.sources) {
                    Ok(k) => {
                        tracing::info!(keys = k.keys.len(), "verification keys reloaded");
                        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
                        self.cache.invalidate_all();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "key reload failed; keeping the previous keys")
                    }
                }
            }
        }
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-read every key source now (SIGHUP). A key set that does not load
    /// completely is refused and the keys in use stay. Returns the number
    /// of keys loaded. Cached verifications are dropped: a token signed by
    /// a retired key stops working at once.
    pub fn reload_keys(&self) -> Result<usize, KeyError> {
        let keys = KeySet::load(&self.settings.sources)?;
        let n = keys.keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        self.cache.invalidate_all();
        Ok(n)
    }

    /// Verify `token` for the startup user `user`.
    pub fn verify(&self, user: &str, token: &str) -> Result<Arc<Principal>, AuthFailure> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthFailure::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(AuthFailure::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.cache.get(&digest);
        crate::metrics::Metrics::global().cache(crate::metrics::Cache::Token, cached.is_some());
        if let Some(p) = cached {
            if p.is_expired() {
                self.cache.invalidate(&digest);
                return Err(AuthFailure::Expired);
            }
            return if p.user == user {
                Ok(p)
            } else {
                Err(AuthFailure::UserMismatch)
            };
        }
        let principal = Arc::new(self.verify_uncached(user, token)?);
        self.cache.insert(digest, principal.clone());
        Ok(principal)
    }

    fn verify_uncached(&self, user: &str, token: &str) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::HS256
        ) {
            return Err(AuthFailure::Algorithm);
        }
        let keys = self.current_keys();
        let key = keys
            .select(header.kid.as_deref(), header.alg)
            .ok_or(AuthFailure::UnknownKey)?;

        let leeway = self.settings.leeway.min(Duration::from_secs(30)).as_secs();
        let mut v = Validation::new(key.alg);
        v.algorithms = vec![key.alg];
        v.leeway = leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &v)
                .map_err(|e| classify(&e))?;
        let claims = data.claims;

        let exp = claims
            .get("exp")
            .and_then(|x| x.as_u64())
            .ok_or(AuthFailure::Claims)?;
        let iat = claims
            .get("iat")
            .and_then(|x| x.as_u64())
            .ok_or(AuthFailure::Claims)?;
        let now = now_secs();
        if iat > now + leeway {
            return Err(AuthFailure::NotYetValid);
        }
        if exp <= iat || exp - iat > self.settings.max_lifetime.as_secs() {
            return Err(AuthFailure::Lifetime);
        }
        let sub = claims
            .get("sub")
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(AuthFailure::Claims)?;
        if sub != user {
            return Err(AuthFailure::UserMismatch);
        }
        let names = &self.settings.claims;
        let roles = string_list(claims.get(&names.roles)).ok_or(AuthFailure::Claims)?;
        if roles.is_empty() {
            return Err(AuthFailure::Claims);
        }
        let purposes = match claims.get(&names.purposes) {
            None | Some(serde_json::Value::Null) => vec![],
            v => string_list(v).ok_or(AuthFailure::Claims)?,
        };
        let site = match claims.get(&names.site) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if valid_claim_string(s) => Some(s.clone()),
            Some(_) => return Err(AuthFailure::Claims),
        };
        Ok(Principal {
            user: sub.to_owned(),
            roles,
            site,
            purposes,
            expires_at: exp,
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }
}

fn valid_claim_string(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

fn string_list(v: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match v? {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .filter(|s| valid_claim_string(s))
                    .map(str::to_owned)
            })
            .collect::<Option<Vec<_>>>()
            .filter(|l| l.len() <= 64),
        serde_json::Value::String(s) if valid_claim_string(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn classify(e: &jsonwebtoken::errors::Error) -> AuthFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => AuthFailure::Signature,
        K::ExpiredSignature => AuthFailure::Expired,
        K::ImmatureSignature => AuthFailure::NotYetValid,
        K::InvalidIssuer => AuthFailure::Issuer,
        K::InvalidAudience => AuthFailure::Audience,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthFailure::Algorithm
        }
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) | K::InvalidSubject => {
            AuthFailure::Claims
        }
        _ => AuthFailure::Malformed,
    }
}

/// Where the demo keeps its signing key and public key.
pub fn demo_key_paths(data_dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("keys");
    (dir.join("jwt-signing.pem"), dir.join("jwt-public.pem"))
}
