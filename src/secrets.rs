//! Secrets: keyed fingerprints of webhook secrets and OAuth tokens, and redaction of request
//! paths and queries for logs.
//!
//! A secret is never stored, logged or exported; the trail keeps only
//! `HMAC-SHA-256(installation key, secret)`, first 16 hex characters (docs/architecture.md, The
//! trail's guarantees). The key is created at first start with mode 0600, so fingerprints from one
//! installation cannot be brute-forced offline from the audit database alone.

use crate::rest::credentials::is_secret_param;
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

    /// A fixed key, for tests.
    #[cfg(test)]
    pub fn from_bytes(key: [u8; 32]) -> FingerprintKey {
        FingerprintKey(key)
    }

    /// `HMAC-SHA-256(key, material)`, first 16 hex characters.
    pub fn fingerprint(&self, material: &str) -> String {
        let mut out = self.mac_hex(material);
        out.truncate(16);
        out
    }

    /// `HMAC-SHA-256(key, material)`, all 64 hex characters (what a proxy key is stored as).
    pub fn mac_hex(&self, material: &str) -> String {
        // HMAC zero-pads keys to the hash's block size, so the padded 64-byte key gives the same
        // MAC as the 32-byte one and uses the infallible fixed-size constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
        mac.update(material.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A path and query fit for a log line: the webhook secret segment and credential parameter
/// values replaced by `***`.
///
/// Only a path the classifier accepts is shown with its segments: for any other (the proxy
/// refuses it, or it is not under `/rest/`) the proxy cannot know which segment would have
/// been the secret (`/rest/1%2Fs3cr3t%2Fm` hides it in one), so everything past the prefix goes.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    let mut out = redact_path(path);
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            if is_secret_param(&php_base_name(k)) {
                out.push_str(k);
                out.push_str("=***");
            } else {
                out.push_str(pair);
            }
        }
    }
    out
}

/// The top-level name PHP registers for a raw query key: percent-decoded, cut at a NUL,
/// leading spaces dropped, cut at the first `[`, `.` and ` ` turned into `_` — so `%61uth`,
/// `auth[]` and ` auth` are all recognised as `auth`.
fn php_base_name(raw: &str) -> String {
    let decoded = crate::rest::params::url_decode(raw.as_bytes());
    let name = decoded.split(|b| *b == 0).next().unwrap_or_default();
    let text = String::from_utf8_lossy(name);
    let text = text.trim_start_matches(' ');
    let base = text.split('[').next().unwrap_or_default();
    base.replace(['.', ' '], "_")
}

fn redact_path(path: &str) -> String {
    let Ok(route) = crate::rest::route::classify(path) else {
        return match path.strip_prefix("/rest/") {
            Some(_) => "/rest/***".to_owned(),
            None => path.split('/').take(2).collect::<Vec<_>>().join("/") + "/***",
        };
    };
    let Some(webhook) = &route.webhook else {
        return path.to_owned();
    };
    let prefix = match route.version {
        crate::rest::route::ApiVersion::V3 => "/rest/api/",
        crate::rest::route::ApiVersion::V1 => "/rest/",
    };
    // The classifier accepted it, so it is `{prefix}{user}/{secret}/{method}[/]`.
    let tail = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.splitn(3, '/').nth(2))
        .unwrap_or_default();
    format!(
        "{prefix}{}/***/{tail}",
        crate::mutation::path_segment(&webhook.user)
    )
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
        for refused in [
            "/rest/1%2Fs3%2Fcrm.deal.list",
            "/rest//1/s3/crm.deal.list",
            "/rest/1/s3/./crm.deal.list",
            "/rest/1/s3/crm.deal.list/index.php",
            "/rest/1/s3%00/crm.deal.list",
        ] {
            let r = redact_target(refused, None);
            assert!(!r.contains("s3"), "{refused} -> {r}");
        }
        assert_eq!(
            redact_target(
                "/rest/x",
                Some("%61uth=s3&auth[]=s3&+ap=s3&a.p=1&sessid=s3")
            ),
            "/rest/x?%61uth=***&auth[]=***&+ap=***&a.p=1&sessid=***"
        );
    }
}
