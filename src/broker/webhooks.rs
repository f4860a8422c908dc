//! `[broker] webhooks_file`: the portal's real webhooks, `NAME = "USER_ID/SECRET"` per line of
//! TOML, in a file only the proxy reads. They are the only copy of the secrets the proxy needs:
//! integrations hold proxy keys, and the proxy puts the real secret in the path on the way out.

use crate::rest::route::PathWebhook;
use std::collections::BTreeMap;
use std::path::Path;

/// The configured webhooks by name.
#[derive(Clone, Default)]
pub struct Webhooks(BTreeMap<String, PathWebhook>);

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the secrets never reach a log line.
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Webhooks {
    /// Reads the file; every value must be `USER_ID/SECRET` (digits, then letters and digits).
    pub fn load(path: &Path) -> Result<Webhooks, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("broker.webhooks_file {}: {e}", path.display()))?;
        Webhooks::parse(&text).map_err(|e| format!("broker.webhooks_file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Webhooks, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            // The parser's message may quote the offending line, secret and all.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            format!(
                "not TOML (NAME = \"USER_ID/SECRET\" per line){}",
                line.map_or(String::new(), |l| format!(" at line {l}"))
            )
        })?;
        let mut out = BTreeMap::new();
        for (name, value) in table {
            let hook = value
                .as_str()
                .and_then(parse_hook)
                .ok_or_else(|| format!("{name} must be \"USER_ID/SECRET\""))?;
            out.insert(name, hook);
        }
        if out.is_empty() {
            return Err("names no webhook".into());
        }
        Ok(Webhooks(out))
    }

    pub fn get(&self, name: &str) -> Option<&PathWebhook> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// `USER_ID/SECRET` (slashes around it ignored): a numeric user and a secret of letters, digits,
/// `-` and `_` (the portal issues letters and digits; nothing here needs escaping in a path).
pub fn parse_hook(text: &str) -> Option<PathWebhook> {
    let (user, secret) = text.trim().trim_matches('/').split_once('/')?;
    let digits = !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit());
    let alnum = !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (digits && alnum).then(|| PathWebhook {
        user: user.to_owned(),
        secret: secret.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhooks_file_is_read_and_its_secrets_stay_out_of_errors_and_debug() {
        let w = Webhooks::parse("crm = \"7/abc123def456gh\"\nother = \"/9/zz/\"\n").expect("ok");
        assert_eq!(w.get("crm").map(|h| h.user.as_str()), Some("7"));
        assert_eq!(w.get("other").map(|h| h.secret.as_str()), Some("zz"));
        assert!(!format!("{w:?}").contains("abc123"));
        for bad in [
            "crm = \"7\"",
            "crm = \"x/abc\"",
            "crm = \"7/a b\"",
            "crm = 7",
            "",
            "crm = \"7/s3cret\" junk",
        ] {
            let e = Webhooks::parse(bad).expect_err(bad);
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
