//! Signed chain heads (`[audit] signing_key_file`): an Ed25519 key signs the head of the chain
//! now and then and on shutdown, as `signed_head` entries in the chain itself.
//!
//! A signed head entry names the entry before it (`signed_seq`, `signed_hash`) and carries the
//! signature over `b24-audit-proxy/signed-head/v1:{signed_seq}:{signed_hash}` (ASCII). Whoever
//! holds the public key can then check a copy of a head taken from anywhere — a log line, a
//! syslog message, an export — and a trail cut short before a head known to be signed fails to
//! verify against it. Keys are PKCS#8 (private) and SPKI (public) PEM files, the formats
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` use (`docs/trail-format.md`).

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The signed message's prefix: names the purpose and version, so a signature made for
/// anything else can never pass for a signed head.
const CONTEXT: &str = "b24-audit-proxy/signed-head/v1";

/// The message a signed head's signature covers.
pub fn message(seq: i64, hash: &str) -> String {
    format!("{CONTEXT}:{seq}:{hash}")
}

/// The short id of a public key: the first 16 hex digits of SHA-256 of its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_owned()
}

/// The proxy's signing key.
pub struct HeadSigner {
    key: SigningKey,
    id: String,
}

impl HeadSigner {
    /// Loads a PKCS#8 PEM private key. A key file readable by others is refused: whoever can
    /// read it can sign a forged trail.
    pub fn load(path: &Path) -> Result<HeadSigner, String> {
        let shown = path.display();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map_err(|e| format!("{shown}: {e}"))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{shown} is readable by group or others (mode {:o}); chmod 600 it",
                    mode & 0o777
                ));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let key = SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| format!("{shown} is not an Ed25519 PKCS#8 PEM private key: {e}"))?;
        let id = key_id(&key.verifying_key());
        Ok(HeadSigner { key, id })
    }

    /// The public half, for verifying what this signer signed.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The fields of a signed head entry that follows the entry `(seq, hash)`.
    pub fn sign(&self, seq: i64, hash: &str) -> Map<String, Value> {
        let sig = self.key.sign(message(seq, hash).as_bytes());
        let mut m = Map::new();
        m.insert("signed_seq".into(), json!(seq));
        m.insert("signed_hash".into(), json!(hash));
        m.insert("algorithm".into(), json!("ed25519"));
        m.insert("key_id".into(), json!(self.id));
        m.insert("signature".into(), json!(hex::encode(sig.to_bytes())));
        m
    }
}

/// The entry to append to have the current head signed; the writer fills in what it signs.
/// `reason`: `interval` or `shutdown`.
pub fn head_entry(reason: &str) -> super::Entry {
    let mut fields = Map::new();
    fields.insert("reason".into(), json!(reason));
    super::Entry {
        event_id: super::new_event_id(),
        kind: super::EntryKind::SignedHead,
        method: "audit.sign_head".into(),
        solution_id: None,
        outcome: None,
        fields,
    }
}

/// Loads an SPKI PEM public key.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| format!("{shown} is not an Ed25519 SPKI PEM public key: {e}"))
}

/// Checks a signed head entry's payload against the entry before it.
pub fn check(
    key: &VerifyingKey,
    payload: &Value,
    prev_seq: i64,
    prev_hash: &str,
) -> Result<(), String> {
    let seq = payload["signed_seq"].as_i64();
    let hash = payload["signed_hash"].as_str();
    if seq != Some(prev_seq) || hash != Some(prev_hash) {
        return Err("its signed head is not the entry before it".into());
    }
    if payload["algorithm"].as_str() != Some("ed25519") {
        return Err("its algorithm is not ed25519".into());
    }
    if payload["key_id"].as_str() != Some(key_id(key).as_str()) {
        return Err(format!(
            "it was signed with key {}, not with the given public key ({})",
            payload["key_id"].as_str().unwrap_or("?"),
            key_id(key)
        ));
    }
    let sig = payload["signature"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| "its signature is not 64 hex-encoded bytes".to_owned())?;
    key.verify(message(prev_seq, prev_hash).as_bytes(), &sig)
        .map_err(|_| "its signature does not verify".to_owned())
}

/// The files `audit keygen --out F` wrote.
pub struct Generated {
    pub private: PathBuf,
    pub public: PathBuf,
    pub key_id: String,
    pub public_pem: String,
}

/// Generates a key pair: the private key at `out` (mode 0600, never overwritten) and the public
/// key at `out` + `.pub`.
pub fn generate(out: &Path) -> Result<Generated, String> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the private key: {e}"))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    let mut public = out.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    write_new(out, private_pem.as_bytes(), 0o600)?;
    write_new(&public, public_pem.as_bytes(), 0o644)?;
    Ok(Generated {
        private: out.to_owned(),
        public,
        key_id: key_id(&key.verifying_key()),
        public_pem,
    })
}

/// Creates a file that must not exist yet, with `mode` from the start (no window in which a
/// private key is readable by others).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_and_reject_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(&dir.path().join("head.key")).expect("keygen");
        assert!(generate(&g.private).is_err(), "never overwrites a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&g.private)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let signer = HeadSigner::load(&g.private).expect("load private");
        let public = load_public_key(&g.public).expect("load public");
        assert_eq!(signer.key_id(), g.key_id);
        let hash = "ab".repeat(32);
        let fields = Value::Object(signer.sign(7, &hash));
        check(&public, &fields, 7, &hash).expect("verifies");
        assert!(check(&public, &fields, 8, &hash).is_err(), "other position");
        let mut forged = fields.clone();
        forged["signed_hash"] = json!("cd".repeat(32));
        assert!(check(&public, &forged, 7, &"cd".repeat(32)).is_err());
        let other = generate(&dir.path().join("other.key")).expect("keygen");
        let other = load_public_key(&other.public).expect("public");
        assert!(check(&other, &fields, 7, &hash).is_err(), "other key");
    }

    #[cfg(unix)]
    #[test]
    fn a_private_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(&dir.path().join("k")).expect("keygen");
        std::fs::set_permissions(&g.private, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = HeadSigner::load(&g.private).err().expect("refused");
        assert!(err.contains("chmod 600"), "{err}");
    }
}
