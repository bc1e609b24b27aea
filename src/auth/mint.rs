//! Development tokens: the demo's ES256 signing key and `lakeward token`.
//!
//! Only for `lakeward demo` and tests. Production tokens come from the
//! hospital's identity provider; lakeward only verifies them.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Issuer of the tokens `lakeward token` mints for the demo.
pub const DEMO_ISSUER: &str = "lakeward-demo";
/// Audience of demo tokens.
pub const DEMO_AUDIENCE: &str = "lakeward";
/// Key id of the demo signing key.
pub const DEMO_KID: &str = "demo-es256";

/// What goes into a development token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub user: String,
    pub roles: Vec<String>,
    pub site: Option<String>,
    pub purposes: Vec<String>,
    /// The `family_name` claim (OpenID Connect), if any.
    pub family_name: Option<String>,
    pub ttl: Duration,
}

/// Create the demo signing key pair under `data_dir/keys/` unless present.
pub fn ensure_demo_keys(data_dir: &Path) -> anyhow::Result<()> {
    let (private, public) = super::demo_key_paths(data_dir);
    if private.exists() && public.exists() {
        return Ok(());
    }
    if let Some(dir) = private.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let pair = rcgen::KeyPair::generate()?;
    super::keys::write_private(&private, pair.serialize_pem().as_bytes())?;
    std::fs::write(&public, pair.public_key_pem())?;
    Ok(())
}

/// Sign a development token with the demo key in `data_dir`.
pub fn mint(data_dir: &Path, req: &TokenRequest) -> anyhow::Result<String> {
    let (private, _) = super::demo_key_paths(data_dir);
    let pem = std::fs::read(&private).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the demo signing key {}: {e} (run `lakeward demo` first)",
            private.display()
        )
    })?;
    let key = EncodingKey::from_ec_pem(&pem)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::json!({
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "sub": req.user,
        "iat": now,
        "nbf": now,
        "exp": now + req.ttl.as_secs().max(1),
        "roles": req.roles,
    });
    if let Some(site) = &req.site {
        claims["site"] = serde_json::Value::String(site.clone());
    }
    if !req.purposes.is_empty() {
        claims["purposes"] = serde_json::json!(req.purposes);
    }
    if let Some(name) = &req.family_name {
        claims["family_name"] = serde_json::Value::String(name.clone());
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(DEMO_KID.to_owned());
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// Parse `90s`, `30m`, `1h`, `1d` or plain seconds.
pub fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_ttl("0"), None);
        assert_eq!(parse_ttl("1y"), None);
    }
}
