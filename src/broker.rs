//! Brokered credentials (`[broker]`): integrations hold proxy keys, never the portal's webhook
//! secret. A request whose path carries a live key (`/rest/USER_ID/KEY/method`) is forwarded —
//! pass-through and audited alike — with the real webhook of that key in its place; the trail
//! names the key (`caller.integration`). A key outside its method scope gets 403
//! `insufficient_scope`, its workplace scope is a policy rule (`key_scope`), and with
//! `require_keys` a webhook path that is not a live key gets the portal's own 401
//! `NO_AUTH_FOUND`. Nothing is forwarded for any of them.
//!
//! The keys live in the trail's database (`keys`); this is the running proxy's copy of the live
//! ones, by keyed hash. Before a key is trusted the copy is checked against the generation file
//! that every `keys` command replaces (one `stat`), so a key created, revoked or rotated works —
//! or stops working — from the next request on, without a restart.

pub mod cli;
pub mod keys;
pub mod webhooks;

use crate::rest::route::{ApiVersion, PathWebhook, Route};
use crate::secrets::FingerprintKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
pub use webhooks::Webhooks;

/// Longest the copy of the keys is trusted without reading the database again, even when the
/// generation file says nothing changed (a change whose file update was lost, a grace period
/// that ended).
const RELOAD_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

/// A live key, as a request is served with it.
#[derive(Debug)]
pub struct LiveKey {
    pub name: String,
    /// The user id the key's path must carry (the webhook's).
    pub user_id: String,
    /// What goes in the path instead of the key.
    pub webhook: PathWebhook,
    /// The portal it is for (`[[portals]]` name); `None`: the single portal.
    portal: Option<String>,
    /// Method globs; empty: every method.
    methods: Vec<String>,
    /// Workplaces it may change; empty: every one.
    pub solutions: Vec<i64>,
    pub may_override: Vec<String>,
    /// A rotated key's previous value: valid until then.
    until: Option<String>,
}

impl LiveKey {
    /// Whether the key may call `method` (lower case, as the route reads it).
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|g| glob_match(g, method))
    }

    /// Whether the key may change workplace `id` (`None`: one not created yet).
    pub fn allows_solution(&self, id: Option<i64>) -> bool {
        self.solutions.is_empty() || id.is_some_and(|i| self.solutions.contains(&i))
    }
}

/// `*` matches any run of characters (none included); everything else matches itself,
/// case-insensitively.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi].eq_ignore_ascii_case(&t[ti]) {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|b| *b == b'*')
}

/// What a request's path credential is to the broker.
#[derive(Debug, Clone)]
pub enum Admission {
    /// A live key: forward with its webhook.
    Key(Arc<LiveKey>),
    /// Not a key (the real secret, a wrong or revoked key, no path credential).
    NotAKey,
}

/// The file's identity and change time: replaced (renamed over) by every key change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        inode,
        modified: m.modified().ok(),
        len: m.len(),
    })
}

struct Copy {
    stamp: Option<Stamp>,
    read_at: Instant,
    by_hash: HashMap<String, Arc<LiveKey>>,
}

/// The running proxy's broker: the real webhooks and the copy of the live keys.
pub struct Broker {
    webhooks: Webhooks,
    pub require_keys: bool,
    fkey: FingerprintKey,
    database: PathBuf,
    generation: PathBuf,
    copy: RwLock<Copy>,
}

impl Broker {
    pub fn new(
        webhooks: Webhooks,
        require_keys: bool,
        fkey: FingerprintKey,
        database: &Path,
    ) -> Result<Broker, String> {
        let generation = keys::generation_file(database);
        let broker = Broker {
            webhooks,
            require_keys,
            fkey,
            database: database.to_path_buf(),
            copy: RwLock::new(Copy {
                stamp: None,
                read_at: Instant::now(),
                by_hash: HashMap::new(),
            }),
            generation,
        };
        broker.reload()?;
        Ok(broker)
    }

    /// Reads the live keys from the database into the copy.
    fn reload(&self) -> Result<(), String> {
        let stamp = stamp(&self.generation);
        let conn =
            crate::audit::query::open_read_only(&self.database).map_err(|e| e.to_string())?;
        let records = keys::list(&conn)?;
        let now = crate::audit::now_rfc3339();
        let mut by_hash = HashMap::new();
        for k in records.into_iter().filter(|k| k.revoked.is_none()) {
            let Some(webhook) = self.webhooks.get(&k.webhook) else {
                tracing::warn!(key = %k.name, webhook = %k.webhook, "A proxy key names a webhook the webhooks file does not hold; the key is not served");
                continue;
            };
            let live = |until: Option<String>| {
                Arc::new(LiveKey {
                    name: k.name.clone(),
                    user_id: k.user_id.clone(),
                    webhook: webhook.clone(),
                    portal: k.portal.clone(),
                    methods: k.scope.methods.clone(),
                    solutions: k.scope.solutions.clone(),
                    may_override: k.scope.may_override.clone(),
                    until,
                })
            };
            if let (Some(prev), Some(until)) = (&k.previous_hash, &k.previous_until) {
                if until.as_str() > now.as_str() {
                    by_hash.insert(prev.clone(), live(Some(until.clone())));
                }
            }
            by_hash.insert(k.key_hash.clone(), live(None));
        }
        let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
        *copy = Copy {
            stamp,
            read_at: Instant::now(),
            by_hash,
        };
        Ok(())
    }

    /// Reloads when a key changed since the copy was read (or it is old).
    fn refresh(&self) {
        let stale = {
            let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
            stamp(&self.generation) != copy.stamp || copy.read_at.elapsed() > RELOAD_AT_LEAST_EVERY
        };
        if stale {
            if let Err(e) = self.reload() {
                // The old copy stays: a database that cannot be read now must not open the door
                // to keys revoked meanwhile for longer than the next successful read.
                tracing::error!(error = %e, "Proxy keys could not be reloaded");
            }
        }
    }

    /// What the path credential `hook` is on the portal named `portal` (`None`: the single
    /// portal): a live key for this user and portal, or not a key.
    pub fn admit(&self, hook: &PathWebhook, portal: Option<&str>) -> Admission {
        self.refresh();
        let hash = keys::key_hash(&self.fkey, &hook.secret);
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        match copy.by_hash.get(&hash) {
            Some(k)
                if k.user_id == hook.user && k.portal.as_deref() == portal && still_valid(k) =>
            {
                Admission::Key(k.clone())
            }
            _ => Admission::NotAKey,
        }
    }

    /// The live key named `name` for the portal `portal` (the one an event's integration names).
    pub fn key_named(&self, name: &str, portal: Option<&str>) -> Option<Arc<LiveKey>> {
        self.refresh();
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        copy.by_hash
            .values()
            .find(|k| k.name == name && k.until.is_none() && k.portal.as_deref() == portal)
            .cloned()
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }
}

fn still_valid(k: &LiveKey) -> bool {
    k.until
        .as_deref()
        .is_none_or(|u| u > crate::audit::now_rfc3339().as_str())
}

/// The request path with `real` in place of the path's credential (which `route` read from
/// it): the same prefix, user/secret segments replaced, the rest exactly as sent.
pub fn rewrite_path(path: &str, route: &Route, real: &PathWebhook) -> Option<String> {
    let prefix = match route.version {
        ApiVersion::V3 => "/rest/api/",
        ApiVersion::V1 => "/rest/",
    };
    let tail = path.strip_prefix(prefix)?.splitn(3, '/').nth(2)?;
    Some(format!(
        "{prefix}{}/{}/{tail}",
        crate::mutation::path_segment(&real.user),
        crate::mutation::path_segment(&real.secret)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::route::classify;
    use proptest::prelude::*;

    #[test]
    fn globs_match_whole_method_names() {
        assert!(glob_match("crm.deal.*", "crm.deal.list"));
        assert!(glob_match("*", "batch"));
        assert!(glob_match("crm.*.list", "crm.deal.list"));
        assert!(glob_match("CRM.DEAL.GET", "crm.deal.get"));
        assert!(!glob_match("crm.deal.*", "crm.dealer"));
        assert!(!glob_match("crm.deal.list", "crm.deal.list2"));
        assert!(!glob_match("crm.deal", "crm.deal.list"));
        assert!(glob_match("crm.*", "crm."));
    }

    #[test]
    fn the_path_keeps_everything_but_the_credential() {
        let real = PathWebhook {
            user: "7".into(),
            secret: "realsecret".into(),
        };
        for (path, want) in [
            (
                "/rest/7/key/crm.deal.list",
                "/rest/7/realsecret/crm.deal.list",
            ),
            (
                "/rest/7/key/crm.deal.list.json/",
                "/rest/7/realsecret/crm.deal.list.json/",
            ),
            (
                "/rest/api/7/key/tasks.task.list",
                "/rest/api/7/realsecret/tasks.task.list",
            ),
            (
                "/rest/7/k%65y/crm.deal.list",
                "/rest/7/realsecret/crm.deal.list",
            ),
        ] {
            let route = classify(path).expect("route");
            assert_eq!(
                rewrite_path(path, &route, &real).as_deref(),
                Some(want),
                "{path}"
            );
        }
    }

    proptest! {
        /// A glob without `*` matches exactly itself; `*` alone matches anything.
        #[test]
        fn literal_globs_are_equality(a in "[a-z.]{0,12}", b in "[a-z.]{0,12}") {
            prop_assert_eq!(glob_match(&a, &b), a == b);
            prop_assert!(glob_match("*", &b));
            let prefixed = format!("{a}*");
            prop_assert_eq!(glob_match(&prefixed, &b), b.starts_with(&a));
        }
    }
}
