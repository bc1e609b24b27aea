//! Identity: a JWT presented as the PostgreSQL password becomes a [`Principal`].
//!
//! Checks, in order: size and shape; header algorithm on the allow-list and a
//! configured key for it (by `kid`; `jku`/`jwk`/`x5u`/`x5c` are never
//! followed); no critical header extension (`crit`); signature; `exp`
//! (numeric, required), `nbf`, `iat` (required, not in the future), `iss`,
//! `aud`; lifetime `exp - iat` within the maximum; `sub` a string equal to the
//! startup user name; `roles`, `site` and `purposes` of their JSON types
//! (a claim of another type makes the token invalid, unless the operator
//! lets that claim be one string, [`ClaimNames::string_or_array`]). Every
//! failure has a [`AuthFailure`] class for the audit log; the client learns
//! only that authentication failed.
//!
//! Verified tokens are cached (keyed by SHA-256 of the token, never the token
//! itself) until they expire; the key files are re-read when they change.
//! Each key set has a generation: a cached principal is served only under
//! the generation of the keys that verified it, so a token verified while
//! its key was being retired never outlives the rotation in the cache.

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

/// The claims that hold a list of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListClaim {
    Roles,
    Purposes,
}

/// Names of the claims lakeward reads (`[auth.claims]`), and which list
/// claims may be one string instead of an array.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    pub roles: String,
    pub site: String,
    pub purposes: String,
    /// List claims accepted as one string too (`"analyst"` read as
    /// `["analyst"]`). Empty by default: a list claim that is not an array
    /// of strings makes the token invalid.
    pub string_or_array: Vec<ListClaim>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            roles: "roles".into(),
            site: "site".into(),
            purposes: "purposes".into(),
            string_or_array: vec![],
        }
    }
}

impl ClaimNames {
    fn accepts_string(&self, claim: ListClaim) -> bool {
        self.string_or_array.contains(&claim)
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
    /// The OpenID Connect `family_name` claim, when the token has one: the
    /// shared-surname signal compares it, as a keyed hash, with the
    /// surnames of the patients a statement returned (`audit::signals`).
    pub family_name: Option<String>,
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

/// The metric label of a refusal (`lakeward_auth_failures_total{reason}`).
impl From<AuthFailure> for crate::metrics::AuthFailureReason {
    fn from(f: AuthFailure) -> Self {
        use crate::metrics::AuthFailureReason;
        use AuthFailure as F;
        match f {
            F::Missing | F::Malformed | F::Algorithm | F::Signature => AuthFailureReason::BadToken,
            F::Expired => AuthFailureReason::Expired,
            F::UnknownKey => AuthFailureReason::UnknownKey,
            F::NotYetValid
            | F::Issuer
            | F::Audience
            | F::Lifetime
            | F::Claims
            | F::UserMismatch => AuthFailureReason::BadClaims,
        }
    }
}

/// Verifies tokens; shared by all connections.
pub struct Authenticator {
    settings: AuthSettings,
    keys: RwLock<KeysInUse>,
    cache: moka::sync::Cache<[u8; 32], Cached>,
    last_check: RwLock<SystemTime>,
}

/// The key set in service and its generation (incremented by every swap).
#[derive(Clone)]
struct KeysInUse {
    set: Arc<KeySet>,
    generation: u64,
}

/// A verified principal and the key generation that verified it.
#[derive(Clone)]
struct Cached {
    generation: u64,
    principal: Arc<Principal>,
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

impl moka::Expiry<[u8; 32], Cached> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Cached,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            v.principal.expires_at.saturating_sub(now_secs()),
        ))
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
            keys: RwLock::new(KeysInUse {
                set: Arc::new(keys),
                generation: 0,
            }),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilTokenExpiry)
                .build(),
            last_check: RwLock::new(SystemTime::now()),
        })
    }

    /// The key set in service and its generation, read together.
    fn keys_in_use(&self) -> KeysInUse {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put `keys` in service: a new generation, and every cached
    /// verification dropped (entries of older generations are never served
    /// even if one is inserted after this).
    fn install(&self, keys: KeySet) {
        {
            let mut in_use = self.keys.write().unwrap_or_else(|p| p.into_inner());
            in_use.set = Arc::new(keys);
            in_use.generation += 1;
        }
        self.cache.invalidate_all();
    }

    /// Re-read key files if they changed (checked at most once a second).
    fn refresh_keys_if_due(&self) {
        let due = {
            let last = self.last_check.read().unwrap_or_else(|p| p.into_inner());
            last.elapsed()
                .map(|e| e >= Duration::from_secs(1))
                .unwrap_or(true)
        };
        if !due {
            return;
        }
        *self.last_check.write().unwrap_or_else(|p| p.into_inner()) = SystemTime::now();
        if !self.keys_in_use().set.is_stale() {
            return;
        }
        match KeySet::load(&self.settings.sources) {
            Ok(k) => {
                tracing::info!(keys = k.keys.len(), "verification keys reloaded");
                self.install(k);
            }
            Err(e) => {
                tracing::error!(error = %e, "key reload failed; keeping the previous keys")
            }
        }
    }

    /// Re-read every key source now (SIGHUP). A key set that does not load
    /// completely is refused and the keys in use stay. Returns the number
    /// of keys loaded. Cached verifications are dropped: a token signed by
    /// a retired key stops working at once.
    pub fn reload_keys(&self) -> Result<usize, KeyError> {
        let keys = KeySet::load(&self.settings.sources)?;
        let n = keys.keys.len();
        self.install(keys);
        Ok(n)
    }

    /// Verify `token` for the startup user `user`.
    pub fn verify(&self, user: &str, token: &str) -> Result<Arc<Principal>, AuthFailure> {
        self.verify_then(user, token, || {})
    }

    /// [`Self::verify`], running `between` after the token is verified and
    /// before its principal is cached: tests drive races with key
    /// rotation through it.
    fn verify_then(
        &self,
        user: &str,
        token: &str,
        between: impl FnOnce(),
    ) -> Result<Arc<Principal>, AuthFailure> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthFailure::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(AuthFailure::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // A changed key file is noticed on cache hits too.
        self.refresh_keys_if_due();
        let cached = self.cache.get(&digest);
        // Read after the lookup: an entry verified under keys that have been
        // replaced since is not served, whenever it was inserted.
        let generation = self.keys_in_use().generation;
        let cached = match cached {
            Some(c) if c.generation == generation => Some(c.principal),
            Some(_) => {
                self.cache.invalidate(&digest);
                None
            }
            None => None,
        };
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
        let keys = self.keys_in_use();
        let principal = Arc::new(self.verify_uncached(&keys.set, user, token)?);
        between();
        // Cached only while the keys that verified it are still in service;
        // an entry that slips in after a swap is never served (see above).
        if self.keys_in_use().generation == keys.generation {
            self.cache.insert(
                digest,
                Cached {
                    generation: keys.generation,
                    principal: principal.clone(),
                },
            );
        }
        Ok(principal)
    }

    fn verify_uncached(
        &self,
        keys: &KeySet,
        user: &str,
        token: &str,
    ) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::HS256
        ) {
            return Err(AuthFailure::Algorithm);
        }
        // lakeward understands no critical extension (RFC 7515 4.1.11), and
        // `b64` only in its default, which needs no `crit`.
        if header.crit.is_some() || header.extras.inner().contains_key("b64") {
            return Err(AuthFailure::Malformed);
        }
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
        let roles = string_list(
            claims.get(&names.roles),
            names.accepts_string(ListClaim::Roles),
        )
        .ok_or(AuthFailure::Claims)?;
        if roles.is_empty() {
            return Err(AuthFailure::Claims);
        }
        let purposes = match claims.get(&names.purposes) {
            None | Some(serde_json::Value::Null) => vec![],
            v => string_list(v, names.accepts_string(ListClaim::Purposes))
                .ok_or(AuthFailure::Claims)?,
        };
        let site = match claims.get(&names.site) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if valid_claim_string(s) => Some(s.clone()),
            Some(_) => return Err(AuthFailure::Claims),
        };
        let family_name = match claims.get("family_name") {
            Some(serde_json::Value::String(s)) if valid_claim_string(s) => Some(s.clone()),
            _ => None,
        };
        Ok(Principal {
            user: sub.to_owned(),
            roles,
            site,
            purposes,
            expires_at: exp,
            family_name,
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }
}

fn valid_claim_string(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

/// A list claim: an array of valid strings (at most 64), or one string
/// when `accept_string`. Anything else is `None` (the token is invalid).
fn string_list(v: Option<&serde_json::Value>, accept_string: bool) -> Option<Vec<String>> {
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
        serde_json::Value::String(s) if accept_string && valid_claim_string(s) => {
            Some(vec![s.clone()])
        }
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
        // The header parsed already (`decode_header`) and the signature is
        // checked before the claims are read: this is a signed claim set of
        // the wrong shape (e.g. `sub` an array).
        K::Json(_) => AuthFailure::Claims,
        _ => AuthFailure::Malformed,
    }
}

/// Where the demo keeps its signing key and public key.
pub fn demo_key_paths(data_dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("keys");
    (dir.join("jwt-signing.pem"), dir.join("jwt-public.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    const ISSUER: &str = "https://idp.test";
    const AUDIENCE: &str = "lakeward-test";

    /// A fresh P-256 key pair: (signing key, public key PEM).
    fn es256_pair() -> (EncodingKey, String) {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("ES256 key");
        (key, pair.public_key_pem())
    }

    /// An authenticator trusting `public_pem` (kid `k1`), written to
    /// `dir/key.pem`.
    fn authenticator(dir: &std::path::Path, public_pem: &str, claims: ClaimNames) -> Authenticator {
        let path = dir.join("key.pem");
        std::fs::write(&path, public_pem).expect("write key");
        Authenticator::new(AuthSettings {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            sources: KeySources {
                jwks_file: None,
                pem_files: vec![(Some("k1".into()), Algorithm::ES256, path)],
                hs256_secret: None,
            },
            max_lifetime: Duration::from_secs(3600),
            leeway: Duration::from_secs(5),
            claims,
        })
        .expect("authenticator")
    }

    fn claims(user: &str) -> Value {
        let now = now_secs();
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "roles": ["analyst"],
            "site": "S01",
            "purposes": ["operations"],
        })
    }

    fn sign(key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, key).expect("encode")
    }

    /// A token whose header is `header`, signed by `key` (ES256).
    fn sign_with_header(key: &EncodingKey, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::ES256).expect("sign");
        format!("{input}.{sig}")
    }

    #[test]
    fn a_valid_token_yields_its_principal() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = es256_pair();
        let auth = authenticator(dir.path(), &public, ClaimNames::default());
        let p = auth.verify("alice", &sign(&key, &claims("alice"))).unwrap();
        assert_eq!(p.user, "alice");
        assert_eq!(p.roles, vec!["analyst".to_owned()]);
        assert_eq!(p.site.as_deref(), Some("S01"));
        assert_eq!(p.purposes, vec!["operations".to_owned()]);
    }

    #[test]
    fn claims_of_the_wrong_json_type_make_the_token_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = es256_pair();
        let auth = authenticator(dir.path(), &public, ClaimNames::default());
        let cases: Vec<(&str, &str, Value)> = vec![
            ("roles a string", "roles", json!("analyst")),
            ("roles with a number", "roles", json!(["analyst", 7])),
            ("roles an object", "roles", json!({"analyst": true})),
            ("purposes a string", "purposes", json!("operations")),
            ("purposes a number", "purposes", json!(3)),
            ("site a number", "site", json!(1)),
            ("site an array", "site", json!(["S01"])),
            ("sub a number", "sub", json!(7)),
            ("sub an array", "sub", json!(["alice"])),
            ("iss a number", "iss", json!(1234)),
            ("aud a number", "aud", json!(1234)),
            ("aud with a number", "aud", json!([AUDIENCE, 5])),
        ];
        let mut failures = vec![];
        for (label, claim, value) in cases {
            let mut c = claims("alice");
            c[claim] = value;
            // A numeric `sub` presented with the matching user name.
            let user = match &c["sub"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match auth.verify(&user, &sign(&key, &c)) {
                Err(f) if f.sqlstate() == "28P01" => {}
                other => failures.push(format!("{label}: {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_list_claim_may_be_one_string_only_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = es256_pair();
        let mut c = claims("alice");
        c["roles"] = json!("analyst");
        c["purposes"] = json!("operations");
        let token = sign(&key, &c);
        let strict = authenticator(dir.path(), &public, ClaimNames::default());
        assert_eq!(strict.verify("alice", &token), Err(AuthFailure::Claims));
        let roles_only = authenticator(
            dir.path(),
            &public,
            ClaimNames {
                string_or_array: vec![ListClaim::Roles],
                ..Default::default()
            },
        );
        assert_eq!(
            roles_only.verify("alice", &token),
            Err(AuthFailure::Claims),
            "purposes is still strict"
        );
        let both = authenticator(
            dir.path(),
            &public,
            ClaimNames {
                string_or_array: vec![ListClaim::Roles, ListClaim::Purposes],
                ..Default::default()
            },
        );
        let p = both
            .verify("alice", &token)
            .expect("accepted when configured");
        assert_eq!(p.roles, vec!["analyst".to_owned()]);
        assert_eq!(p.purposes, vec!["operations".to_owned()]);
        // Other types stay invalid even then.
        c["roles"] = json!(7);
        assert_eq!(
            both.verify("alice", &sign(&key, &c)),
            Err(AuthFailure::Claims)
        );
    }

    #[test]
    fn unknown_critical_header_extensions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = es256_pair();
        let auth = authenticator(dir.path(), &public, ClaimNames::default());
        let c = claims("alice");
        for header in [
            json!({"alg": "ES256", "kid": "k1", "crit": ["x-must-understand"], "x-must-understand": 1}),
            json!({"alg": "ES256", "kid": "k1", "crit": []}),
            json!({"alg": "ES256", "kid": "k1", "b64": false, "crit": ["b64"]}),
        ] {
            let token = sign_with_header(&key, &header, &c);
            assert!(auth.verify("alice", &token).is_err(), "{header}");
        }
        // The same claims under a plain header are fine.
        let plain = sign_with_header(&key, &json!({"alg": "ES256", "kid": "k1"}), &c);
        assert!(auth.verify("alice", &plain).is_ok());
    }

    /// Finding 6: verification starts with the old key set, the key set is
    /// replaced (SIGHUP) and the cache cleared, then the verification ends:
    /// its principal must not be served from the cache afterwards.
    #[test]
    fn a_token_verified_while_its_key_is_retired_never_enters_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (old_key, old_public) = es256_pair();
        let (_, new_public) = es256_pair();
        let auth = authenticator(dir.path(), &old_public, ClaimNames::default());
        let token = sign(&old_key, &claims("alice"));
        let key_file = dir.path().join("key.pem");
        // The verification in flight while the key is retired.
        let _ = auth.verify_then("alice", &token, || {
            std::fs::write(&key_file, &new_public).unwrap();
            auth.reload_keys().expect("reload");
        });
        assert_eq!(
            auth.verify("alice", &token),
            Err(AuthFailure::Signature),
            "a token signed by a retired key was accepted after the rotation"
        );
    }

    /// Key files are re-read within a second of changing, also for tokens
    /// already in the cache.
    #[test]
    fn a_cached_token_stops_working_when_its_key_file_is_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let (old_key, old_public) = es256_pair();
        let (_, new_public) = es256_pair();
        let auth = authenticator(dir.path(), &old_public, ClaimNames::default());
        let token = sign(&old_key, &claims("alice"));
        assert!(auth.verify("alice", &token).is_ok());
        std::fs::write(dir.path().join("key.pem"), &new_public).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(auth.verify("alice", &token), Err(AuthFailure::Signature));
    }

    #[test]
    fn refusals_have_their_metric_reason() {
        use crate::metrics::AuthFailureReason as R;
        assert_eq!(R::from(AuthFailure::Expired), R::Expired);
        assert_eq!(R::from(AuthFailure::UnknownKey), R::UnknownKey);
        assert_eq!(R::from(AuthFailure::Signature), R::BadToken);
        assert_eq!(R::from(AuthFailure::Missing), R::BadToken);
        assert_eq!(R::from(AuthFailure::UserMismatch), R::BadClaims);
        assert_eq!(R::from(AuthFailure::NotYetValid), R::BadClaims);
    }
}
