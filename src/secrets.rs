//! Secrets: keyed fingerprints of webhook secrets and OAuth tokens, and redaction of request
//! paths and queries for logs.
//!
//! A secret is never stored, logged or exported; the trail keeps only
//! `HMAC-SHA-256(installation key, secret)`, first 16 hex characters (design §4). The key is
//! created at first start with mode 0600, so fingerprints from one installation cannot be
//! brute-forced offline from the audit database alone.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::io::Write;
use std::path::Path;

/// The per-installation fingerprint key.
#[derive(Clone)]
pub struct FingerprintKey([u8; 32]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

impl FingerprintKey {
    /// Reads the key file, or creates it (0600, created exclusively so two starting processes
    /// cannot both write one) when it does not exist.
    pub fn load_or_create(path: &Path) -> std::io::Result<FingerprintKey> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_file_bytes(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                match opts.open(path) {
                    Ok(mut f) => {
                        f.write_all(hex::encode(key).as_bytes())?;
                        f.sync_all()?;
                        Ok(FingerprintKey(key))
                    }
                    // Another process won the race: use its key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::from_file_bytes(&std::fs::read(path)?, path)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn from_file_bytes(bytes: &[u8], path: &Path) -> std::io::Result<FingerprintKey> {
        let text = String::from_utf8_lossy(bytes);
        let raw = hex::decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a fingerprint key (64 hex characters)",
                        path.display()
                    ),
                )
            })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw);
        Ok(FingerprintKey(key))
    }

    /// A key for tests and the demo.
    pub fn from_bytes(key: [u8; 32]) -> FingerprintKey {
        FingerprintKey(key)
    }

    /// `HMAC-SHA-256(key, material)`, first 16 hex characters.
    pub fn fingerprint(&self, material: &str) -> String {
        // HMAC zero-pads keys to the hash's block size, so the padded 64-byte key gives the same
        // MAC as the 32-byte one and uses the infallible fixed-size constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
        mac.update(material.as_bytes());
        let out = mac.finalize().into_bytes();
        hex::encode(&out[..8])
    }
}

/// Query keys whose values are credentials.
const SECRET_QUERY_KEYS: [&str; 5] = ["auth", "access_token", "ap", "sessid", "refresh_token"];

/// A path and query fit for a log line: the webhook secret segment and credential parameter
/// values replaced by `***`.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    let mut out = redact_path(path);
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_encoding::percent_decode_str(k)
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            if SECRET_QUERY_KEYS.contains(&decoded.as_str()) {
                out.push_str(k);
                out.push_str("=***");
            } else {
                out.push_str(pair);
            }
        }
    }
    out
}

/// `/rest/{uid}/{secret}/{method}` → `/rest/{uid}/***/{method}`; other shapes are cut to their
/// prefix so a mis-typed secret in an odd path does not leak either.
pub fn redact_path(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/rest/") else {
        return path.split('/').take(2).collect::<Vec<_>>().join("/") + "/***";
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let (prefix, segs) = match segs.first() {
        Some(&"api") => ("/rest/api/", &segs[1..]),
        _ => ("/rest/", &segs[..]),
    };
    match segs.len() {
        0 | 1 => path.to_owned(),
        2 if segs[1].is_empty() => path.to_owned(),
        3 | 4 if segs.len() == 3 || segs[3].is_empty() => {
            format!("{prefix}{}/***/{}", segs[0], segs[2..].join("/"))
        }
        _ => format!("{prefix}***"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_short() {
        let a = FingerprintKey::from_bytes([1; 32]);
        let b = FingerprintKey::from_bytes([2; 32]);
        let fa = a.fingerprint("webhook:1:secret");
        assert_eq!(fa.len(), 16);
        assert_eq!(fa, a.fingerprint("webhook:1:secret"));
        assert_ne!(fa, b.fingerprint("webhook:1:secret"));
        assert!(!fa.contains("secret"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/k.key");
        let k1 = FingerprintKey::load_or_create(&path).expect("create");
        let k2 = FingerprintKey::load_or_create(&path).expect("load");
        assert_eq!(k1.fingerprint("x"), k2.fingerprint("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nothex").expect("write");
        assert!(FingerprintKey::load_or_create(&path).is_err());
    }

    #[test]
    fn targets_are_redacted() {
        assert_eq!(
            redact_target("/rest/7/s3cr3t/crm.deal.list", Some("start=0")),
            "/rest/7/***/crm.deal.list?start=0"
        );
        assert_eq!(
            redact_target("/rest/crm.deal.list", Some("auth=tok&x=1&ACCESS_TOKEN=t2")),
            "/rest/crm.deal.list?auth=***&x=1&ACCESS_TOKEN=***"
        );
        assert_eq!(redact_target("/rest/api/1/s3/x", None), "/rest/api/1/***/x");
        assert_eq!(redact_target("/rest/1/s3/x/", None), "/rest/1/***/x/");
        assert!(!redact_target("/rest/a/b/s3/x/y", None).contains("s3"));
        assert!(!redact_target("/other/s3", None).contains("s3"));
    }
}
