//! Who made a call: the user behind an OAuth token (resolved once with `user.current` and
//! cached by the token's fingerprint, bounded and with a TTL), and the client's address
//! (`X-Forwarded-For` believed only from configured trusted proxies).
//!
//! Webhook callers need no lookup: their user id is in the path. The cache holds fingerprints,
//! never tokens.

use crate::config::Cidr;
use http::HeaderMap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Identities {
    ttl: Duration,
    max_entries: usize,
    // A std mutex: held for one map operation, never across an await.
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl Identities {
    pub fn new(ttl: Duration, max_entries: usize) -> Identities {
        Identities {
            ttl,
            max_entries,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The user id cached for a token fingerprint, if still fresh.
    pub fn get(&self, fingerprint: &str) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(fingerprint)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(user, _)| user.clone())
    }

    /// Remembers a resolved user. When full, expired entries go first, then the oldest.
    pub fn put(&self, fingerprint: &str, user: String) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.max_entries && !cache.contains_key(fingerprint) {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= self.max_entries {
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(fingerprint.to_owned(), (user, Instant::now()));
    }
    /// Cached users (tests check the bound).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The `ID` of a `user.current` answer.
pub fn user_id_from_answer(answer: &serde_json::Value) -> Option<String> {
    match answer.get("result")?.get("ID")? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer.ip();
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_expires() {
        let ids = Identities::new(Duration::from_secs(60), 2);
        ids.put("a", "1".into());
        ids.put("b", "2".into());
        ids.put("c", "3".into());
        assert_eq!(ids.len(), 2);
        assert_eq!(ids.get("c").as_deref(), Some("3"));
        assert_eq!(ids.get("a"), None, "the oldest went first");
        let expired = Identities::new(Duration::ZERO, 10);
        expired.put("a", "1".into());
        assert_eq!(expired.get("a"), None);
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").expect("cidr")];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 10.1.1.1".parse().expect("header"),
        );
        let lb: SocketAddr = "10.0.0.5:4000".parse().expect("addr");
        let direct: SocketAddr = "198.51.100.7:4000".parse().expect("addr");
        assert_eq!(
            client_addr(lb, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client_addr(direct, &h, &trusted),
            direct.ip(),
            "a spoofed header from an untrusted peer is ignored"
        );
        assert_eq!(client_addr(lb, &HeaderMap::new(), &trusted), lb.ip());
    }

    #[test]
    fn user_current_answers() {
        assert_eq!(
            user_id_from_answer(&serde_json::json!({"result":{"ID":"7"}})).as_deref(),
            Some("7")
        );
        assert_eq!(
            user_id_from_answer(&serde_json::json!({"result":{"ID":7}})).as_deref(),
            Some("7")
        );
        assert_eq!(user_id_from_answer(&serde_json::json!({"error":"x"})), None);
    }
}
