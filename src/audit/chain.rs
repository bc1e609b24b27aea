//! Hash chain and signed checkpoints of the audit log.
//!
//! Every audit record carries `prev_hash` (the `hash` of the previous record
//! of the same lakeward instance, or [`GENESIS`] for the first one) and its
//! own `hash` = [`chain_hash`]`(prev_hash, canonical bytes of the record)`.
//! Changing, inserting or deleting a record breaks every later link.
//!
//! Deleting the *tail* of a chain leaves a shorter chain that is still
//! consistent, so the writer periodically signs the current head with an
//! Ed25519 key ([`Checkpoint`]) and appends the signed checkpoint to a
//! [`CheckpointLog`]. `lakeward audit verify` checks that every record a
//! valid checkpoint names still exists with the hash the checkpoint recorded.
//!
//! Key files: the signing key is a PKCS#8 (v2, or v1 as written by
//! `openssl genpkey -algorithm ed25519`) Ed25519 private key in PEM
//! (`-----BEGIN PRIVATE KEY-----`), mode 0600; the verifying key is the
//! 32-byte raw public key in lowercase hex, in `<key path>.pub`. No error of
//! this module ever contains key material.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of an instance's first record: 64 hexadecimal zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separator of [`chain_hash`].
const CHAIN_DOMAIN: &[u8] = b"lakeward-audit-v1\0";
/// Domain separator of the checkpoint signature message.
const CHECKPOINT_DOMAIN: &[u8] = b"lakeward-audit-checkpoint-v1\0";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Errors of the chain, key and checkpoint functions. Messages name files
/// and problems, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid signing key{}: {reason}", fmt_path(.path))]
    InvalidSigningKey {
        path: Option<PathBuf>,
        reason: String,
    },
    #[error("invalid verifying key{}: {reason}", fmt_path(.path))]
    InvalidVerifyingKey {
        path: Option<PathBuf>,
        reason: String,
    },
    #[error("cannot generate a signing key")]
    KeyGeneration,
    #[error("checkpoint was signed by key {found}, not by the verifying key {expected}")]
    KeyMismatch { expected: String, found: String },
    #[error("checkpoint is malformed: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("checkpoint signature is invalid")]
    BadSignature,
    #[error("checkpoint log {path} is corrupt at line {line}: {reason}")]
    CorruptLog {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

fn fmt_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" in {}", p.display()),
        None => String::new(),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ChainError + 'a {
    move |source| ChainError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The hash of one audit record, chained to its predecessor.
///
/// Lowercase hexadecimal SHA-256 of the byte string
///
/// ```text
/// "lakeward-audit-v1" 0x00 || prev_hash || 0x00 || canonical
/// ```
///
/// where `prev_hash` is the previous record's `hash` (64 lowercase hex
/// characters, [`GENESIS`] for an instance's first record) as its ASCII
/// bytes, and `canonical` is the record's canonical encoding without its own
/// `prev_hash`/`hash` (see `audit::record`). The 18-byte prefix is the ASCII
/// text `lakeward-audit-v1` followed by one zero byte. An auditor computes
/// the same value with e.g.
/// `printf 'lakeward-audit-v1\0%s\0' "$PREV" | cat - canonical.json | sha256sum`.
pub fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(prev_hash.as_bytes());
    h.update(b"\0");
    h.update(canonical);
    hex::encode(h.finalize())
}

/// First 16 hex characters of SHA-256 of the raw 32-byte public key.
fn key_id_of(public_key: &[u8]) -> String {
    let mut id = hex::encode(Sha256::digest(public_key));
    id.truncate(16);
    id
}

/// `<path>.pub`: the file of the public key belonging to the key at `path`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut p = OsString::from(path.as_os_str());
    p.push(".pub");
    PathBuf::from(p)
}

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key, writes it to `path` as a PKCS#8 v2 PEM file with
    /// mode 0600 (failing if `path` exists) and its public key as hex to
    /// `<path>.pub` (replacing a stale one).
    pub fn generate_to_file(path: &Path) -> Result<SigningKey, ChainError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| ChainError::KeyGeneration)?;
        let key = SigningKey::from_der(pkcs8.as_ref(), Some(path))?;
        let pem = to_pem(pkcs8.as_ref());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err("cannot create key folder", parent))?;
        }

        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err("cannot create key file", path))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err("cannot write key file", path))?;

        let pub_path = public_key_path(path);
        let mut p = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&pub_path)
            .map_err(io_err("cannot create public key file", &pub_path))?;
        p.write_all(format!("{}\n", key.public_key_hex()).as_bytes())
            .and_then(|()| p.sync_all())
            .map_err(io_err("cannot write public key file", &pub_path))?;
        Ok(key)
    }

    /// Loads a PEM PKCS#8 Ed25519 key file.
    pub fn load_file(path: &Path) -> Result<SigningKey, ChainError> {
        let mut text = String::new();
        File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io_err("cannot read key file", path))?;
        let der = from_pem(&text).map_err(|reason| ChainError::InvalidSigningKey {
            path: Some(path.to_owned()),
            reason: reason.into(),
        })?;
        SigningKey::from_der(&der, Some(path))
    }

    /// Parses a PEM PKCS#8 Ed25519 key given as text (e.g. from an
    /// environment variable).
    pub fn from_pem_str(pem: &str) -> Result<SigningKey, ChainError> {
        let der = from_pem(pem).map_err(|reason| ChainError::InvalidSigningKey {
            path: None,
            reason: reason.into(),
        })?;
        SigningKey::from_der(&der, None)
    }

    fn from_der(der: &[u8], path: Option<&Path>) -> Result<SigningKey, ChainError> {
        // v2 documents (with the public key) are checked for consistency; v1
        // documents (OpenSSL's default) carry only the seed.
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|e| ChainError::InvalidSigningKey {
                path: path.map(Path::to_owned),
                reason: format!("not a PKCS#8 Ed25519 key ({e})"),
            })?;
        Ok(SigningKey { pair })
    }

    /// The raw 32-byte public key in lowercase hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// First 16 hex characters of SHA-256 of the raw public key.
    pub fn key_id(&self) -> String {
        key_id_of(self.pair.public_key().as_ref())
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            bytes: self.pair.public_key().as_ref().to_vec(),
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

fn to_pem(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = String::with_capacity(b64.len() + 64);
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

fn from_pem(text: &str) -> Result<Vec<u8>, &'static str> {
    let start = text.find(PEM_BEGIN).ok_or("no PRIVATE KEY PEM block")?;
    let body = &text[start + PEM_BEGIN.len()..];
    let end = body.find(PEM_END).ok_or("unterminated PEM block")?;
    let b64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(b64)
        .map_err(|_| "PEM body is not valid base64")
}

/// An Ed25519 public key that verifies checkpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    bytes: Vec<u8>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl From<&SigningKey> for VerifyingKey {
    fn from(key: &SigningKey) -> VerifyingKey {
        key.verifying_key()
    }
}

impl VerifyingKey {
    /// From the raw 32-byte public key in hex (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<VerifyingKey, ChainError> {
        VerifyingKey::parse(text, None)
    }

    /// Loads a `.pub` file written by [`SigningKey::generate_to_file`].
    pub fn load_file(path: &Path) -> Result<VerifyingKey, ChainError> {
        let text =
            std::fs::read_to_string(path).map_err(io_err("cannot read public key file", path))?;
        VerifyingKey::parse(&text, Some(path))
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<VerifyingKey, ChainError> {
        let invalid = |reason: &str| ChainError::InvalidVerifyingKey {
            path: path.map(Path::to_owned),
            reason: reason.into(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| invalid("not hexadecimal"))?;
        if bytes.len() != 32 {
            return Err(invalid(
                "an Ed25519 public key is 32 bytes (64 hex characters)",
            ));
        }
        Ok(VerifyingKey { bytes })
    }

    /// The raw public key in lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// First 16 hex characters of SHA-256 of the raw public key.
    pub fn key_id(&self) -> String {
        key_id_of(&self.bytes)
    }
}

/// A signed statement "the chain of `instance` had head `head_hash` at
/// record `seq`, at time `ts_micros`".
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub instance: String,
    pub seq: u64,
    /// UTC, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// The `hash` of record `seq`.
    pub head_hash: String,
    /// [`SigningKey::key_id`] of the signing key.
    pub key_id: String,
    /// Standard base64 of the 64-byte Ed25519 signature of
    /// [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed message:
    ///
    /// ```text
    /// "lakeward-audit-checkpoint-v1" 0x00 || instance || 0x00 || seq || 0x00
    ///     || ts_micros || 0x00 || head_hash
    /// ```
    ///
    /// with `seq` and `ts_micros` in decimal ASCII (`-` sign for a negative
    /// time, no leading zeros) and all text as UTF-8. [`Checkpoint::verify`]
    /// accepts only NUL-free instances and 64-hex-character head hashes, so
    /// the encoding is unambiguous.
    pub fn message(instance: &str, seq: u64, ts_micros: i64, head_hash: &str) -> Vec<u8> {
        let mut m =
            Vec::with_capacity(CHECKPOINT_DOMAIN.len() + instance.len() + head_hash.len() + 48);
        m.extend_from_slice(CHECKPOINT_DOMAIN);
        m.extend_from_slice(instance.as_bytes());
        m.push(0);
        m.extend_from_slice(seq.to_string().as_bytes());
        m.push(0);
        m.extend_from_slice(ts_micros.to_string().as_bytes());
        m.push(0);
        m.extend_from_slice(head_hash.as_bytes());
        m
    }

    /// Signs the head `head_hash` of `instance`'s chain at record `seq`.
    pub fn sign(
        key: &SigningKey,
        instance: &str,
        seq: u64,
        ts_micros: i64,
        head_hash: &str,
    ) -> Checkpoint {
        let sig = key.sign(&Checkpoint::message(instance, seq, ts_micros, head_hash));
        Checkpoint {
            instance: instance.to_owned(),
            seq,
            ts_micros,
            head_hash: head_hash.to_owned(),
            key_id: key.key_id(),
            signature: BASE64.encode(sig),
        }
    }

    /// Checks that this checkpoint was signed by `key` and is unchanged.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ChainError> {
        let expected = key.key_id();
        if self.key_id != expected {
            return Err(ChainError::KeyMismatch {
                expected,
                found: self.key_id.clone(),
            });
        }
        if self.instance.contains('\0') {
            return Err(ChainError::MalformedCheckpoint(
                "instance contains a NUL character",
            ));
        }
        if self.head_hash.len() != 64 || !self.head_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChainError::MalformedCheckpoint(
                "head_hash is not 64 hex characters",
            ));
        }
        let sig = BASE64
            .decode(&self.signature)
            .map_err(|_| ChainError::MalformedCheckpoint("signature is not base64"))?;
        let msg = Checkpoint::message(&self.instance, self.seq, self.ts_micros, &self.head_hash);
        UnparsedPublicKey::new(&ED25519, &key.bytes)
            .verify(&msg, &sig)
            .map_err(|_| ChainError::BadSignature)
    }
}

/// An append-only file of checkpoints, one JSON object per line.
#[derive(Debug)]
pub struct CheckpointLog {
    path: PathBuf,
    file: File,
}

impl CheckpointLog {
    /// Opens (creating if needed) the log for appending. A torn final line
    /// (left by a crash during an append, so never durable) is cut off so
    /// that the next append starts on a line of its own.
    pub fn open(path: &Path) -> Result<CheckpointLog, ChainError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(io_err("cannot open checkpoint log", path))?;
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(io_err("cannot read checkpoint log", path))?;
        if content.last().is_some_and(|&b| b != b'\n') {
            let keep = content
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            tracing::warn!(
                path = %path.display(),
                bytes = content.len() - keep,
                "checkpoint log ends with a torn line; cutting it off"
            );
            file.set_len(keep as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err("cannot repair checkpoint log", path))?;
        }
        Ok(CheckpointLog {
            path: path.to_owned(),
            file,
        })
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one checkpoint and makes it durable (`fdatasync`).
    pub fn append(&mut self, checkpoint: &Checkpoint) -> Result<(), ChainError> {
        let mut line = serde_json::to_vec(checkpoint).map_err(|e| ChainError::Io {
            op: "cannot encode checkpoint for",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err("cannot append to checkpoint log", &self.path))
    }

    /// All checkpoints of the log at `path`, in file order. An incomplete,
    /// unterminated final line (a torn append) is ignored; any complete line
    /// that is not a valid checkpoint is an error.
    pub fn read_all(path: &Path) -> Result<Vec<Checkpoint>, ChainError> {
        let content = std::fs::read(path).map_err(io_err("cannot read checkpoint log", path))?;
        let mut out = Vec::new();
        let mut lines = content.split(|&b| b == b'\n').enumerate().peekable();
        while let Some((i, line)) = lines.next() {
            if lines.peek().is_none() {
                // After the last '\n' (empty when the file ends properly).
                if !line.is_empty() {
                    tracing::warn!(
                        path = %path.display(),
                        line = i + 1,
                        "ignoring a torn final line of the checkpoint log"
                    );
                }
                break;
            }
            let cp: Checkpoint =
                serde_json::from_slice(line).map_err(|e| ChainError::CorruptLog {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            out.push(cp);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HEAD: &str = "5f2b1c0e9a8d7c6b5a493827161504f3e2d1c0b9a8f7e6d5c4b3a29180706050";

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS.len(), 64);
        assert!(GENESIS.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn chain_hash_deterministic_and_sensitive() {
        let a = chain_hash(GENESIS, b"{\"seq\":1}");
        assert_eq!(a, chain_hash(GENESIS, b"{\"seq\":1}"));
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(a, chain_hash(GENESIS, b"{\"seq\":2}"));
        assert_ne!(a, chain_hash(&a, b"{\"seq\":1}"));
        // The separator keeps prev and content apart.
        assert_ne!(chain_hash("ab", b"c"), chain_hash("a", b"bc"));
    }

    #[test]
    fn chain_hash_known_answer() {
        // Independently: printf 'lakeward-audit-v1\0%s\0{"seq":1}' 000…000 | sha256sum
        let mut input = Vec::new();
        input.extend_from_slice(b"lakeward-audit-v1\0");
        input.extend_from_slice(GENESIS.as_bytes());
        input.push(0);
        input.extend_from_slice(b"{\"seq\":1}");
        assert_eq!(
            chain_hash(GENESIS, b"{\"seq\":1}"),
            hex::encode(Sha256::digest(&input))
        );
        assert_eq!(
            chain_hash(GENESIS, b"{\"seq\":1}"),
            "e86377f7d6dfd31b663399b6ebfc08447b95710815d926e5ccc061f6cca788c1"
        );
    }

    fn key() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        SigningKey::from_der(pkcs8.as_ref(), None).unwrap()
    }

    #[test]
    fn sign_verify_round_trip() {
        let k = key();
        let cp = Checkpoint::sign(&k, "lw-1", 42, 1_700_000_000_000_000, HEAD);
        assert_eq!(cp.key_id, k.key_id());
        assert_eq!(cp.key_id.len(), 16);
        cp.verify(&k.verifying_key()).unwrap();
        let vk = VerifyingKey::from_hex(&k.public_key_hex()).unwrap();
        cp.verify(&vk).unwrap();
        assert_eq!(VerifyingKey::from(&k), vk);
    }

    #[test]
    fn tampered_checkpoint_fails() {
        let k = key();
        let vk = k.verifying_key();
        let cp = Checkpoint::sign(&k, "lw-1", 42, 1_700_000_000_000_000, HEAD);

        let mut t = cp.clone();
        t.seq = 41;
        assert!(matches!(t.verify(&vk), Err(ChainError::BadSignature)));

        let mut t = cp.clone();
        t.head_hash = GENESIS.to_owned();
        assert!(matches!(t.verify(&vk), Err(ChainError::BadSignature)));

        let mut t = cp.clone();
        t.instance = "lw-2".into();
        assert!(matches!(t.verify(&vk), Err(ChainError::BadSignature)));

        let mut t = cp.clone();
        t.ts_micros += 1;
        assert!(matches!(t.verify(&vk), Err(ChainError::BadSignature)));

        let mut t = cp.clone();
        t.signature = "!!not base64".into();
        assert!(t.verify(&vk).is_err());

        let mut t = cp.clone();
        t.head_hash = "zz".into();
        assert!(matches!(
            t.verify(&vk),
            Err(ChainError::MalformedCheckpoint(_))
        ));
    }

    #[test]
    fn wrong_key_fails() {
        let k = key();
        let other = key();
        let cp = Checkpoint::sign(&k, "lw-1", 1, 0, HEAD);
        assert!(matches!(
            cp.verify(&other.verifying_key()),
            Err(ChainError::KeyMismatch { .. })
        ));
        // Claiming the other key's id does not help.
        let mut forged = cp.clone();
        forged.key_id = other.key_id();
        assert!(matches!(
            forged.verify(&other.verifying_key()),
            Err(ChainError::BadSignature)
        ));
    }

    #[test]
    fn key_file_mode_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        let k = SigningKey::generate_to_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));

        let again = SigningKey::load_file(&path).unwrap();
        assert_eq!(again.public_key_hex(), k.public_key_hex());
        assert_eq!(again.key_id(), k.key_id());

        let vk = VerifyingKey::load_file(&public_key_path(&path)).unwrap();
        assert_eq!(vk.to_hex(), k.public_key_hex());
        let cp = Checkpoint::sign(&again, "i", 7, 7, HEAD);
        cp.verify(&vk).unwrap();

        // Never overwrites an existing key.
        assert!(SigningKey::generate_to_file(&path).is_err());
    }

    #[test]
    fn pem_from_string() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let k = SigningKey::generate_to_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let from_env = SigningKey::from_pem_str(&text).unwrap();
        assert_eq!(from_env.public_key_hex(), k.public_key_hex());
        // CRLF line ends and surrounding text are fine.
        let crlf = format!("key:\r\n{}", text.replace('\n', "\r\n"));
        assert_eq!(
            SigningKey::from_pem_str(&crlf).unwrap().key_id(),
            k.key_id()
        );
        // OpenSSL's PKCS#8 v1 form (seed only) is accepted too.
        let v1 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOPjA1NdVWNahADb1RpwNcALsWC/TzHbuGjYLtsHeEur\n-----END PRIVATE KEY-----\n";
        let k1 = SigningKey::from_pem_str(v1).unwrap();
        assert_eq!(
            k1.public_key_hex(),
            "ec201bc54948ca1f280ec91b2811385f88764c12643f230329afc0a8ccf2ec1a"
        );
    }

    #[test]
    fn bad_keys_do_not_echo_material() {
        let secret =
            "-----BEGIN PRIVATE KEY-----\nU2VjcmV0S2V5TWF0ZXJpYWw=\n-----END PRIVATE KEY-----\n";
        let e = SigningKey::from_pem_str(secret).unwrap_err().to_string();
        assert!(!e.contains("U2VjcmV0"), "{e}");
        assert!(SigningKey::from_pem_str("nothing").is_err());
        let e = VerifyingKey::from_hex("abcd").unwrap_err().to_string();
        assert!(!e.contains("abcd"), "{e}");
        assert!(VerifyingKey::from_hex("not hex").is_err());
        assert!(format!("{:?}", key()).starts_with("SigningKey { key_id: "));
    }

    #[test]
    fn checkpoint_log_round_trip_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.jsonl");
        let k = key();
        let a = Checkpoint::sign(&k, "lw-1", 1, 10, HEAD);
        let b = Checkpoint::sign(&k, "lw-1", 2, 20, GENESIS);
        {
            let mut log = CheckpointLog::open(&path).unwrap();
            log.append(&a).unwrap();
            log.append(&b).unwrap();
        }
        assert_eq!(
            CheckpointLog::read_all(&path).unwrap(),
            vec![a.clone(), b.clone()]
        );

        // A torn final line is ignored by readers…
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"instance\":\"lw-1\",\"seq\":3,\"ts_mi")
            .unwrap();
        drop(f);
        assert_eq!(
            CheckpointLog::read_all(&path).unwrap(),
            vec![a.clone(), b.clone()]
        );

        // …and cut off by the next writer.
        let c = Checkpoint::sign(&k, "lw-1", 3, 30, HEAD);
        CheckpointLog::open(&path).unwrap().append(&c).unwrap();
        assert_eq!(
            CheckpointLog::read_all(&path).unwrap(),
            vec![a.clone(), b.clone(), c.clone()]
        );

        // A corrupt complete line is an error.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"instance\":\"lw-1\"}\n").unwrap();
        drop(f);
        assert!(matches!(
            CheckpointLog::read_all(&path),
            Err(ChainError::CorruptLog { line: 4, .. })
        ));

        // An empty log has no checkpoints.
        let empty = dir.path().join("empty.jsonl");
        CheckpointLog::open(&empty).unwrap();
        assert!(CheckpointLog::read_all(&empty).unwrap().is_empty());
    }
}
