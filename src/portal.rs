//! Which portal a request is for, and what the proxy keeps per portal.
//!
//! With the single `[upstream]` every request is for that portal, whatever its host. With
//! `[[portals]]`, the request's host — the authority of an absolute-form target or of an
//! HTTP/2 `:authority` when there is one, the `Host` header otherwise — is compared with each
//! entry's `host`: case-insensitively, one trailing dot ignored; an entry without a port
//! matches its name on any port, one with a port only that port, and an entry with a port wins
//! over one without. No host, two `Host` headers, or a host that is not a host name is a 400
//! (`INVALID_HOST`); a host no entry names is a 404 (`UNKNOWN_PORTAL`). Nothing is forwarded
//! for either.
//!
//! What is per portal is what must never be shared between two portals: the upstream client,
//! the workplace locks (workplace 5 on one portal is not workplace 5 on another), the owners
//! of smart processes, and the identity cache (a token's user on one portal is nobody on the
//! other).

use crate::config::{Config, PortalConfig};
use crate::identity::Identities;
use crate::locks::SolutionLocks;
use crate::metrics::{Metrics, PortalCounters};
use crate::owners::Owners;
use crate::upstream::Upstream;
use std::sync::Arc;

/// A configured `host`: the name, lower case, without brackets or a trailing dot, and the port
/// when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub name: String,
    pub port: Option<u16>,
}

impl HostPattern {
    /// Reads a configured `host` (`portal.example`, `portal.example:8443`, `[::1]:8080`).
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let (name, port) = split_host(text.as_bytes())
            .ok_or_else(|| format!("\"{text}\" is not a host name, optionally with :port"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| format!("\"{text}\" is not a host name"))?
            .to_ascii_lowercase();
        Ok(HostPattern { name, port })
    }

    /// The host as a client sends it (`name` or `name:port`, IPv6 in brackets).
    pub fn label(&self) -> String {
        let name = if self.name.contains(':') {
            format!("[{}]", self.name)
        } else {
            self.name.clone()
        };
        match self.port {
            Some(p) => format!("{name}:{p}"),
            None => name,
        }
    }

    fn matches(&self, name: &[u8], port: Option<u16>) -> bool {
        self.port.is_none_or(|p| port == Some(p)) && self.name.as_bytes().eq_ignore_ascii_case(name)
    }
}

/// Splits a host (`name`, `name:port`, `[v6]`, `[v6]:port`) into its name (without brackets
/// and one trailing dot) and port. `None` for anything that is not a host: empty, a user part,
/// a path, a bare IPv6 address, a port that is not a number within u16, bytes a host name
/// cannot hold. An empty port (`name:`) is no port, as RFC 3986 reads it.
pub fn split_host(host: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix(b"[") {
        let close = rest.iter().position(|b| *b == b']')?;
        let port = match &rest[close + 1..] {
            [] => None,
            [b':', digits @ ..] => Some(digits),
            _ => return None,
        };
        let v6 = &rest[..close];
        if v6.is_empty()
            || !v6
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b".:".contains(b))
        {
            return None;
        }
        (v6, port)
    } else {
        let (name, port) = match host.iter().rposition(|b| *b == b':') {
            Some(i) => (&host[..i], Some(&host[i + 1..])),
            None => (host, None),
        };
        let name = name.strip_suffix(b".").unwrap_or(name);
        let label_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-_.".contains(b);
        let empty_label =
            name.starts_with(b".") || name.ends_with(b".") || name.windows(2).any(|w| w == b"..");
        if name.is_empty() || empty_label || !name.iter().all(label_byte) {
            return None;
        }
        (name, port)
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) if digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) => {
            Some(std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((name, port))
}

/// Why no portal could be chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// No host, more than one, or not a host: 400.
    BadHost,
    /// A host no `[[portals]]` entry names: 404.
    Unknown,
}

/// One portal and the state kept for it alone.
pub struct Portal {
    /// Its position in `[[portals]]` (0 for the single `[upstream]`).
    pub index: usize,
    /// As the trail, metrics and logs name it.
    pub name: String,
    pub upstream: Upstream,
    pub(crate) locks: SolutionLocks,
    /// With a PostgreSQL trail: the same workplaces' locks across replicas.
    pub(crate) replica_locks: Option<Arc<crate::audit::pg_locks::PgLocks>>,
    /// Who was last seen holding which smart process: lets a snapshot read an owner together
    /// with its target.
    pub(crate) owners: Owners,
    pub(crate) identities: Identities,
    pub(crate) counters: PortalCounters,
}

impl Portal {
    fn new(
        index: usize,
        cfg: &PortalConfig,
        config: &Config,
        metrics: &Metrics,
    ) -> Result<Portal, String> {
        Ok(Portal {
            index,
            counters: metrics.portal(&cfg.name),
            name: cfg.name.clone(),
            upstream: Upstream::new(&cfg.upstream).map_err(|e| format!("{}: {e}", cfg.name))?,
            locks: SolutionLocks::new(),
            replica_locks: match &config.audit.database {
                crate::config::TrailDatabase::Postgres(pg) => {
                    Some(crate::audit::pg_locks::PgLocks::new(
                        pg.clone(),
                        crate::audit::pg_locks::LOCK_WAIT,
                    ))
                }
                crate::config::TrailDatabase::Sqlite(_) => None,
            },
            owners: Owners::new(),
            identities: Identities::new(config.identity.cache_ttl, config.identity.cache_entries),
        })
    }
}

/// Every portal served, and the rule that picks one for a request.
pub struct Portals {
    list: Vec<Arc<Portal>>,
    /// `[[portals]]`' hosts, by portal index; empty with the single `[upstream]`.
    hosts: Vec<HostPattern>,
}

impl Portals {
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Portals, String> {
        let list = config
            .portals
            .iter()
            .enumerate()
            .map(|(i, p)| Portal::new(i, p, config, metrics).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = config
            .portals
            .iter()
            .filter_map(|p| p.host.clone())
            .collect();
        Ok(Portals { list, hosts })
    }

    pub fn all(&self) -> &[Arc<Portal>] {
        &self.list
    }

    /// Whether requests are matched by host (`[[portals]]`).
    pub fn by_host(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The portal for a request whose host (when it names one) is `host`.
    pub fn pick(&self, host: Option<&[u8]>) -> Result<&Arc<Portal>, Unmatched> {
        if !self.by_host() {
            return self.list.first().ok_or(Unmatched::Unknown);
        }
        let (name, port) = host.and_then(split_host).ok_or(Unmatched::BadHost)?;
        self.position(name, port)
            .and_then(|i| self.list.get(i))
            .ok_or(Unmatched::Unknown)
    }

    /// The index of the entry serving `name` on `port`: one naming that port first.
    fn position(&self, name: &[u8], port: Option<u16>) -> Option<usize> {
        let with_port = |h: &HostPattern| h.port.is_some() && h.matches(name, port);
        let any_port = |h: &HostPattern| h.port.is_none() && h.matches(name, port);
        let hosts = &self.hosts;
        hosts
            .iter()
            .position(with_port)
            .or_else(|| hosts.iter().position(any_port))
    }

    /// The portal for a request hyper parsed: the target's authority when it has one (an
    /// absolute-form target, HTTP/2's `:authority`), else the one `Host` header.
    pub fn for_request<B>(&self, req: &http::Request<B>) -> Result<&Arc<Portal>, Unmatched> {
        if !self.by_host() {
            return self.pick(None);
        }
        if let Some(a) = req.uri().authority() {
            return self.pick(Some(a.as_str().as_bytes()));
        }
        let mut hosts = req.headers().get_all(http::header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) => self.pick(Some(h.as_bytes())),
            _ => Err(Unmatched::BadHost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hp(s: &str) -> HostPattern {
        HostPattern::parse(s).expect("pattern")
    }

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(split_host(b"a.example"), Some((&b"a.example"[..], None)));
        assert_eq!(
            split_host(b"A.example.:8443"),
            Some((&b"A.example"[..], Some(8443)))
        );
        assert_eq!(split_host(b"a.example:"), Some((&b"a.example"[..], None)));
        assert_eq!(split_host(b"[::1]:8080"), Some((&b"::1"[..], Some(8080))));
        assert_eq!(
            split_host(b"127.0.0.1:1"),
            Some((&b"127.0.0.1"[..], Some(1)))
        );
        for bad in [
            &b""[..],
            b":80",
            b"a.example:99999",
            b"a.example:8a",
            b"user@a.example",
            b"a.example/x",
            b"a example",
            b"::1",
            b"[::1",
            b"[::1]x",
            b"[]",
            b".",
            b"a.example:+80",
        ] {
            assert_eq!(split_host(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn patterns_read_and_print_back() {
        assert_eq!(hp("Portal.Example").label(), "portal.example");
        assert_eq!(hp("portal.example:8443").label(), "portal.example:8443");
        assert_eq!(hp("[::1]:8080").label(), "[::1]:8080");
        assert!(HostPattern::parse("https://portal.example").is_err());
    }

    fn portals(hosts: &[&str]) -> Portals {
        // Matching needs only the patterns; the per-portal state is not built here.
        Portals {
            list: Vec::new(),
            hosts: hosts.iter().map(|h| hp(h)).collect(),
        }
    }

    fn index(p: &Portals, host: &str) -> Result<usize, Unmatched> {
        let (name, port) = split_host(host.as_bytes()).ok_or(Unmatched::BadHost)?;
        p.position(name, port).ok_or(Unmatched::Unknown)
    }

    #[test]
    fn a_port_given_wins_over_none_and_names_ignore_case_and_one_dot() {
        let p = portals(&["a.example", "a.example:8443", "b.example"]);
        assert_eq!(index(&p, "a.example"), Ok(0));
        assert_eq!(index(&p, "A.EXAMPLE.:8080"), Ok(0));
        assert_eq!(index(&p, "a.example:8443"), Ok(1));
        assert_eq!(index(&p, "b.example:1"), Ok(2));
        assert_eq!(index(&p, "c.example"), Err(Unmatched::Unknown));
        assert_eq!(index(&p, "a.example.."), Err(Unmatched::BadHost));
        let only_port = portals(&["a.example:8443"]);
        assert_eq!(index(&only_port, "a.example"), Err(Unmatched::Unknown));
    }

    proptest! {
        /// Any bytes: no panic, and a host that splits has a name a pattern can be read from.
        #[test]
        fn split_host_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some((name, _)) = split_host(&bytes) {
                prop_assert!(!name.is_empty());
                let text = String::from_utf8_lossy(name).into_owned();
                prop_assert!(text.bytes().all(|b| b.is_ascii_graphic()));
            }
        }

        /// A host matches the pattern it was written as, whatever its case.
        #[test]
        fn a_host_matches_itself(name in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}", port in proptest::option::of(1u16..)) {
            let text = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            let p = portals(&[&text]);
            prop_assert_eq!(index(&p, &text.to_ascii_uppercase()), Ok(0));
        }
    }
}
