//! Configuration: the TOML schema (docs/architecture.md, Contracts), its defaults, and validation
//! into [`Config`].
//!
//! Loading is read → parse (unknown keys refused, so a typo in a policy key fails loudly) →
//! validate. Every failure is one [`ConfigError`] whose text names the key; `main` prints it on
//! one line and exits with 78 (`EX_CONFIG`). Every key is documented in
//! `config/b24-audit-proxy.example.toml`; keep the two in step.
//!
//! Durations are read by `humantime` (`"500ms"`, `"10s"`, `"2m"`, `"1h 30m"`), address ranges
//! by `ipnet`. Secrets are never written in the file itself: every one is a path (`*_file`,
//! `key_file`, `tls_key`), so a secret store or systemd's `LoadCredential=` can provide it.

use crate::portal::HostPattern;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code for a bad configuration (`EX_CONFIG` from sysexits.h), from every sub-command.
pub const EXIT_CONFIG: u8 = 78;

/// The config file used when `--config` is not given.
pub const CONFIG_ENV: &str = "B24PROXY_CONFIG";

/// One readable line that names the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config: {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// === raw file schema ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: FileServer,
    #[serde(default)]
    upstream: FileUpstream,
    #[serde(default)]
    portals: Vec<FilePortal>,
    audit: FileAudit,
    admin: FileAdmin,
    #[serde(default)]
    policy: FilePolicy,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    identity: FileIdentity,
    #[serde(default)]
    revert: FileRevert,
    broker: Option<FileBroker>,
    approvals: Option<FileApprovals>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: String,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    body_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    send_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    shutdown_grace: Option<Duration>,
    trusted_proxies: Option<Vec<String>>,
    pass_through_lane: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    /// The one portal; absent when `[[portals]]` lists several (then `[upstream]` holds only
    /// the settings they share).
    url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pool_idle_timeout: Option<Duration>,
    pool_max_idle: Option<usize>,
    ca_file: Option<PathBuf>,
}

/// One `[[portals]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePortal {
    host: String,
    url: String,
    name: Option<String>,
    ca_file: Option<PathBuf>,
    revert_webhook_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    database: PathBuf,
    key_file: Option<PathBuf>,
    queue_capacity: Option<usize>,
    max_batch: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    head_log_interval: Option<Duration>,
    fsync_outcomes: Option<bool>,
    signing_key_file: Option<PathBuf>,
    syslog: Option<FileSyslog>,
    password_file: Option<PathBuf>,
    instance_id: Option<String>,
    #[serde(default, with = "humantime_serde")]
    lease_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSyslog {
    address: String,
    transport: Option<String>,
    queue_capacity: Option<usize>,
    facility: Option<u8>,
    hostname: Option<String>,
    app_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: String,
    token_file: Option<PathBuf>,
    allow_unauthenticated: Option<bool>,
    ready_requires_portal: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    approvers_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    approval_ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    resolve_oauth_users: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    cache_ttl: Option<Duration>,
    cache_entries: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApprovals {
    notify_url: Option<String>,
    notify_users: Option<Vec<i64>>,
    queue_capacity: Option<usize>,
    max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBroker {
    webhooks_file: PathBuf,
    require_keys: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRevert {
    webhook_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    shadow: Option<bool>,
    deny_empty_type_ids: Option<bool>,
    protected_solution_ids: Option<Vec<i64>>,
    deny_delete: Option<bool>,
    max_type_ids_removed: Option<usize>,
    allowed_user_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    level: Option<String>,
}

// === validated config ===

/// Defaults, with the reason for each value.
pub mod defaults {
    use std::time::Duration;
    /// A workplace update is a few hundred bytes; 1 MiB leaves room for a 50-command batch
    /// while keeping a buffered watched call cheap. Pass-through bodies are streamed, not capped.
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Each idle keep-alive connection costs a few KiB; 10,000 stays far below typical fd limits.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Long enough for a slow mobile client, short enough to shed slowloris connections.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// nginx's `client_body_timeout`.
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
    /// nginx's `send_timeout`.
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// In-flight calls get this long to finish on SIGTERM before connections are closed.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The cloud portal stops a request after 60 s; waiting a little longer sees its own answer.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(65);
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    pub const POOL_MAX_IDLE: usize = 64;
    /// Requests waiting for the audit writer; past this a watched call is refused with 503
    /// rather than queued without bound.
    pub const AUDIT_QUEUE: usize = 4096;
    /// Requests committed in one transaction (one fsync) at most.
    pub const AUDIT_MAX_BATCH: usize = 512;
    /// Often enough that an external copy of the head is never far behind.
    pub const HEAD_LOG_INTERVAL: Duration = Duration::from_secs(300);
    /// A replica's lease on a PostgreSQL trail: renewed every third of this, so a replica
    /// that stopped is found out (and its open intents reconciled) within about this long.
    pub const LEASE_TIMEOUT: Duration = Duration::from_secs(30);
    /// A token's user rarely changes; ten minutes bounds how long a revoked token's old user
    /// id is still recorded.
    pub const IDENTITY_TTL: Duration = Duration::from_secs(600);
    pub const IDENTITY_ENTRIES: usize = 10_000;
    /// A day: long enough for a second person to see a refusal, short enough that the state it
    /// was judged on is recent.
    pub const APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Refusals waiting to be told: far more than approvers read, little memory.
    pub const NOTIFY_QUEUE: usize = 1000;
    /// Attempts per notification: with doubling pauses from half a second, about a minute.
    pub const NOTIFY_ATTEMPTS: u32 = 8;
    /// Entries buffered for a slow or absent syslog receiver: a few minutes of a busy proxy,
    /// a few MiB of memory at most.
    pub const SYSLOG_QUEUE: usize = 10_000;
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// The portals served, never empty: the single `[upstream]` (which matches every request)
    /// or the `[[portals]]` entries (each matched by the request's host).
    pub portals: Vec<PortalConfig>,
    pub audit: AuditConfig,
    pub admin: AdminConfig,
    pub policy: PolicyConfig,
    pub log: LogConfig,
    pub identity: IdentityConfig,
    pub revert: RevertConfig,
    /// `[broker]`: integrations hold proxy keys instead of the portal's webhook secrets.
    pub broker: Option<BrokerConfig>,
    /// `[approvals]`: who is told of a refusal.
    pub approvals: Option<crate::notify::NotifyConfig>,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `NAME = "USER_ID/SECRET"` per real portal webhook; read by the proxy alone.
    pub webhooks_file: PathBuf,
    /// Refuse (401 `NO_AUTH_FOUND`) every webhook path that is not a live proxy key.
    pub require_keys: bool,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Resolve OAuth callers to a user id with `user.current` (once per token, cached).
    pub resolve_oauth_users: bool,
    pub cache_ttl: Duration,
    pub cache_entries: usize,
}

#[derive(Debug, Clone, Default)]
pub struct RevertConfig {
    /// A file holding `USER_ID/SECRET` of the service webhook `revert --apply` uses.
    pub webhook_file: Option<PathBuf>,
}

/// An address range, `10.0.0.0/8` or a single address (a host range: `/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .ok()
            .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            .map(Cidr)
    }

    /// Whether `ip` is in the range; an IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, a dual-stack
    /// listener) is compared as the IPv4 address it is.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// The longest pause allowed between two reads of a request body (408 past it).
    pub body_read_timeout: Duration,
    /// The longest a write to a client may wait for it to read (the connection closes past it).
    pub send_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer in front of the proxy).
    pub trusted_proxies: Vec<Cidr>,
    /// Plain HTTP/1.1 pass-through calls are served by the proxy's own lane (`lane`) rather
    /// than hyper's server; `false` serves every request with hyper (for comparison).
    pub pass_through_lane: bool,
    /// PEM certificate chain and key: the listener serves HTTPS when set (reloaded on SIGHUP).
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One portal the proxy serves.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// How the trail, the metrics and the logs name it: `[[portals]] name`, by default the
    /// host (and port, when the URL gives one) of its URL.
    pub name: String,
    /// The request host it is served under; `None` for the single `[upstream]`, which serves
    /// every request whatever its host.
    pub host: Option<HostPattern>,
    pub upstream: UpstreamConfig,
    /// The service webhook `revert --apply` uses for this portal's events; the `[revert]`
    /// one when unset.
    pub revert_webhook_file: Option<PathBuf>,
}

impl Config {
    /// Whether requests are matched to portals by host (`[[portals]]`).
    pub fn by_host(&self) -> bool {
        self.portals.iter().any(|p| p.host.is_some())
    }

    /// The portal an event recorded as `name` belongs to (`None` for an event recorded before
    /// portals were named: with one portal, that one).
    pub fn portal_named(&self, name: Option<&str>) -> Option<&PortalConfig> {
        match name {
            Some(n) => self.portals.iter().find(|p| p.name == n),
            None if self.portals.len() == 1 => self.portals.first(),
            None => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and authority only (`https://portal.example`); requests keep their own path.
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Extra CA certificates (PEM) trusted for the portal, besides the webpki and system roots.
    pub ca_file: Option<PathBuf>,
}

impl UpstreamConfig {
    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }
}

/// Where the trail is kept: `[audit] database`, a path (SQLite) or a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailDatabase {
    Sqlite(PathBuf),
    Postgres(PgTrail),
}

/// A PostgreSQL trail: the URL (its `Debug` and `Display` redact the password) and the file
/// the password may come from instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTrail {
    pub url: crate::audit::pg_url::PgUrl,
    /// Read when a connection is opened, so a rotated password is picked up by the next one.
    pub password_file: Option<PathBuf>,
    /// This process among the replicas sharing the trail (`[audit] instance_id`, lease_timeout).
    pub replica: Replica,
}

/// `[audit] instance_id` and `lease_timeout`: how this process is known among the replicas
/// sharing a PostgreSQL trail (src/audit/pg_lease.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Unique among the processes running at once: its intents are reconciled by others only
    /// once its lease expired, and by itself when it starts again.
    pub instance_id: String,
    /// How long the lease outlives its last renewal.
    pub lease_timeout: Duration,
}

impl Default for Replica {
    /// The host name and process id, and the default lease timeout.
    fn default() -> Replica {
        Replica {
            instance_id: default_instance_id(),
            lease_timeout: defaults::LEASE_TIMEOUT,
        }
    }
}

/// `HOST-PID`: unique per running process even where every pod of a Deployment starts with the
/// same pid, because the host (pod) name differs. The host name comes from `HOSTNAME` or the
/// kernel; a machine that names neither is `localhost`.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The longest `[audit] instance_id` (it is stored with every intent).
const MAX_INSTANCE_ID: usize = 128;

/// The shortest `[audit] lease_timeout`: renewals every third of it must still fit in the
/// time a database round trip may take.
const MIN_LEASE_TIMEOUT: Duration = Duration::from_secs(1);

impl TrailDatabase {
    /// The SQLite file, when the trail is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            TrailDatabase::Sqlite(p) => Some(p),
            TrailDatabase::Postgres(_) => None,
        }
    }
}

/// How the trail is named in logs and errors: the path, or the URL without its password.
impl fmt::Display for TrailDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrailDatabase::Sqlite(p) => write!(f, "{}", p.display()),
            TrailDatabase::Postgres(pg) => write!(f, "{}", pg.url),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub database: TrailDatabase,
    pub key_file: PathBuf,
    pub queue_capacity: usize,
    pub max_batch: usize,
    /// How often the chain head is written to the log, for external copies.
    pub head_log_interval: Duration,
    /// fsync outcome-only commits too (intents always are).
    pub fsync_outcomes: bool,
    /// Ed25519 private key (PKCS#8 PEM) that signs the chain head; unset: heads are not signed.
    pub signing_key_file: Option<PathBuf>,
    /// Every committed entry also sent to a syslog receiver.
    pub syslog: Option<SyslogConfig>,
}

/// `[audit.syslog]`: RFC 5424 messages over TCP (RFC 6587 octet counting) or UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// `host:port`, resolved when the proxy starts.
    pub address: String,
    pub transport: SyslogTransport,
    /// Entries waiting to be sent; past this they are dropped (and counted), never waited for.
    pub queue_capacity: usize,
    /// RFC 5424 facility (default 13, "log audit").
    pub facility: u8,
    /// HOSTNAME field; default: this machine's host name.
    pub hostname: Option<String>,
    pub app_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Tcp,
    Udp,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token for `/v1/*` and `/ui/`; unset: no token required (only
    /// allowed on loopback, or with `allow_unauthenticated`).
    pub token_file: Option<PathBuf>,
    /// `/readyz` also fails while the portal is unreachable (what it did before this key existed).
    pub ready_requires_portal: bool,
    /// PEM certificate chain and key: the admin listener serves HTTPS when set.
    pub tls: Option<TlsFiles>,
    /// `APPROVER_NAME = "TOKEN"` per line: who may approve a refused change
    /// (`POST /v1/events/{id}/approve`); unset: no approvals.
    pub approvers_file: Option<PathBuf>,
    /// How long after its refusal a change may still be approved.
    pub approval_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub shadow: bool,
    pub deny_empty_type_ids: bool,
    pub protected_solution_ids: Vec<i64>,
    pub deny_delete: bool,
    pub max_type_ids_removed: Option<usize>,
    pub allowed_user_ids: Option<Vec<String>>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            shadow: false,
            deny_empty_type_ids: true,
            protected_solution_ids: Vec::new(),
            deny_delete: false,
            max_type_ids_removed: None,
            allowed_user_ids: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        validate(raw)
    }
}

/// A parse or type error, as one line naming the key when the error points at one (a value
/// of the wrong type, a duration that does not parse, an unknown key).
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let mut msg = e.message().replace('\n', " ");
    if msg.ends_with("expected a duration") {
        msg.push_str(" like \"500ms\", \"10s\" or \"2m\"");
    }
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return ConfigError::new("", msg);
    };
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let msg = format!("line {line}: {msg}");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let Some((key, _)) = line_text.split_once('=') else {
        return ConfigError::new("", msg);
    };
    let key = key.trim().trim_matches('"');
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match section {
        Some(s) => ConfigError::new(&format!("{s}.{key}"), msg),
        None => ConfigError::new(key, msg),
    }
}

fn validate(raw: FileConfig) -> Result<Config, ConfigError> {
    let listen = addr("server.listen", &raw.server.listen)?;
    let admin = addr("admin.listen", &raw.admin.listen)?;
    if listen == admin && listen.port() != 0 {
        return Err(ConfigError::new(
            "admin.listen",
            "must differ from server.listen",
        ));
    }
    let audit = audit_config(raw.audit)?;
    if raw.broker.is_some() && audit.database.sqlite_path().is_none() {
        return Err(ConfigError::new(
            "broker",
            "proxy keys are kept in the SQLite trail: [broker] is not available with a PostgreSQL trail yet",
        ));
    }
    Ok(Config {
        server: server_config(listen, raw.server)?,
        portals: portals_config(raw.upstream, raw.portals)?,
        audit,
        admin: admin_config(admin, raw.admin)?,
        policy: policy_config(raw.policy)?,
        log: log_config(raw.log)?,
        identity: identity_config(raw.identity)?,
        revert: RevertConfig {
            webhook_file: raw.revert.webhook_file,
        },
        broker: raw.broker.map(|b| BrokerConfig {
            webhooks_file: b.webhooks_file,
            require_keys: b.require_keys.unwrap_or(false),
        }),
        approvals: raw.approvals.map(approvals_config).transpose()?,
    })
}

fn server_config(listen: SocketAddr, raw: FileServer) -> Result<ServerConfig, ConfigError> {
    let value = ServerConfig {
        listen,
        max_body_bytes: positive(
            "server.max_body_bytes",
            raw.max_body_bytes,
            defaults::MAX_BODY_BYTES,
        )?,
        max_connections: positive(
            "server.max_connections",
            raw.max_connections,
            defaults::MAX_CONNECTIONS,
        )?,
        header_read_timeout: duration(
            "server.header_read_timeout",
            raw.header_read_timeout,
            defaults::HEADER_READ_TIMEOUT,
        )?,
        body_read_timeout: duration(
            "server.body_read_timeout",
            raw.body_read_timeout,
            defaults::BODY_READ_TIMEOUT,
        )?,
        send_timeout: duration(
            "server.send_timeout",
            raw.send_timeout,
            defaults::SEND_TIMEOUT,
        )?,
        shutdown_grace: duration(
            "server.shutdown_grace",
            raw.shutdown_grace,
            defaults::SHUTDOWN_GRACE,
        )?,
        pass_through_lane: raw.pass_through_lane.unwrap_or(true),
        trusted_proxies: raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|c| {
                Cidr::parse(c).ok_or_else(|| {
                    ConfigError::new(
                        "server.trusted_proxies",
                        format!("\"{c}\" is not an address or range like 10.0.0.0/8"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        tls: tls_files("server", raw.tls_cert, raw.tls_key)?,
    };
    Ok(value)
}

fn approvals_config(raw: FileApprovals) -> Result<crate::notify::NotifyConfig, ConfigError> {
    let url = match raw.notify_url {
        None => None,
        Some(u) => Some(upstream_url_like("approvals.notify_url", &u)?),
    };
    Ok(crate::notify::NotifyConfig {
        url,
        users: raw.notify_users.unwrap_or_default(),
        queue_capacity: positive(
            "approvals.queue_capacity",
            raw.queue_capacity,
            defaults::NOTIFY_QUEUE,
        )?,
        max_attempts: match raw.max_attempts {
            Some(0) => {
                return Err(ConfigError::new(
                    "approvals.max_attempts",
                    "must be at least 1",
                ))
            }
            Some(n) => n,
            None => defaults::NOTIFY_ATTEMPTS,
        },
    })
}

/// An `http(s)://` URL with a host (a path and query allowed), without credentials.
fn upstream_url_like(key: &str, value: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("\"{value}\" is not a URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("https" | "http"));
    if !scheme_ok || uri.authority().is_none() {
        return Err(ConfigError::new(
            key,
            "must be an https:// (or http://) URL with a host",
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ConfigError::new(key, "must not contain credentials"));
    }
    Ok(uri)
}

/// Longest portal name: it is a metrics label value and a trail field.
const MAX_PORTAL_NAME: usize = 100;

fn portals_config(
    upstream: FileUpstream,
    portals: Vec<FilePortal>,
) -> Result<Vec<PortalConfig>, ConfigError> {
    let url = upstream.url.clone();
    let shared = upstream_config(
        upstream,
        url.as_deref().unwrap_or("http://unset"),
        "upstream.url",
    )?;
    match (url, portals.is_empty()) {
        (Some(_), true) => Ok(vec![PortalConfig {
            name: default_portal_name(&shared.url),
            host: None,
            upstream: shared,
            revert_webhook_file: None,
        }]),
        (None, true) => Err(ConfigError::new(
            "upstream.url",
            "is required (or list the portals as [[portals]] entries with host and url)",
        )),
        (Some(_), false) => Err(ConfigError::new(
            "upstream.url",
            "must not be set together with [[portals]]: with several portals each entry has its own url, and [upstream] holds only the settings they share",
        )),
        (None, false) => {
            let mut out: Vec<PortalConfig> = Vec::with_capacity(portals.len());
            for (i, p) in portals.into_iter().enumerate() {
                let key = |k: &str| format!("portals[{i}].{k}");
                let host = HostPattern::parse(&p.host)
                    .map_err(|why| ConfigError::new(&key("host"), why))?;
                let url = upstream_url_at(&key("url"), &p.url)?;
                let name = match p.name {
                    Some(n) => portal_name(&key("name"), n)?,
                    None => default_portal_name(&url),
                };
                if out.iter().any(|o| o.host.as_ref() == Some(&host)) {
                    return Err(ConfigError::new(
                        &key("host"),
                        format!("\"{}\" is listed twice", host.label()),
                    ));
                }
                if out.iter().any(|o| o.name == name) {
                    return Err(ConfigError::new(
                        &key("name"),
                        format!("\"{name}\" names two portals (give each entry a distinct name)"),
                    ));
                }
                let mut upstream = shared.clone();
                upstream.url = url;
                if p.ca_file.is_some() {
                    upstream.ca_file = p.ca_file;
                }
                out.push(PortalConfig {
                    name,
                    host: Some(host),
                    upstream,
                    revert_webhook_file: p.revert_webhook_file,
                });
            }
            Ok(out)
        }
    }
}

/// A portal's default name: its URL's host, with the port when the URL gives one.
fn default_portal_name(url: &http::Uri) -> String {
    url.authority()
        .map_or_else(String::new, |a| a.as_str().to_ascii_lowercase())
}

fn portal_name(key: &str, name: String) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PORTAL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(ConfigError::new(
            key,
            format!("must be 1 to {MAX_PORTAL_NAME} letters, digits or - _ . : [ ]"),
        ))
    }
}

fn upstream_config(
    raw: FileUpstream,
    url: &str,
    url_key: &str,
) -> Result<UpstreamConfig, ConfigError> {
    let value = UpstreamConfig {
        url: upstream_url_at(url_key, url)?,
        connect_timeout: duration(
            "upstream.connect_timeout",
            raw.connect_timeout,
            defaults::CONNECT_TIMEOUT,
        )?,
        request_timeout: duration(
            "upstream.request_timeout",
            raw.request_timeout,
            defaults::REQUEST_TIMEOUT,
        )?,
        pool_idle_timeout: duration(
            "upstream.pool_idle_timeout",
            raw.pool_idle_timeout,
            defaults::POOL_IDLE_TIMEOUT,
        )?,
        pool_max_idle: raw.pool_max_idle.unwrap_or(defaults::POOL_MAX_IDLE),
        ca_file: raw.ca_file,
    };
    Ok(value)
}

fn audit_config(raw: FileAudit) -> Result<AuditConfig, ConfigError> {
    if raw.database.as_os_str().is_empty() {
        return Err(ConfigError::new("audit.database", "must not be empty"));
    }
    let replica = replica(raw.instance_id, raw.lease_timeout)?;
    let database = trail_database(raw.database, raw.password_file, replica)?;
    let key_file = match (raw.key_file, &database) {
        (Some(k), _) => k,
        (None, TrailDatabase::Sqlite(path)) => {
            let mut p = path.clone().into_os_string();
            p.push(".key");
            PathBuf::from(p)
        }
        // Replicas sharing one trail must fingerprint credentials alike, so each is given the
        // same key file rather than one made beside a database file that does not exist.
        (None, TrailDatabase::Postgres(_)) => return Err(ConfigError::new(
            "audit.key_file",
            "must be set when audit.database is a PostgreSQL URL (the same file on every replica)",
        )),
    };
    let value = AuditConfig {
        database,
        key_file,
        queue_capacity: positive(
            "audit.queue_capacity",
            raw.queue_capacity,
            defaults::AUDIT_QUEUE,
        )?,
        max_batch: positive("audit.max_batch", raw.max_batch, defaults::AUDIT_MAX_BATCH)?,
        head_log_interval: duration(
            "audit.head_log_interval",
            raw.head_log_interval,
            defaults::HEAD_LOG_INTERVAL,
        )?,
        fsync_outcomes: raw.fsync_outcomes.unwrap_or(false),
        signing_key_file: raw.signing_key_file,
        syslog: raw.syslog.map(syslog).transpose()?,
    };
    Ok(value)
}

/// A PostgreSQL URL, or else a SQLite path. The URL's own errors never repeat it (it may
/// hold a password).
fn trail_database(
    database: PathBuf,
    password_file: Option<PathBuf>,
    replica: Option<Replica>,
) -> Result<TrailDatabase, ConfigError> {
    use crate::audit::pg_url::{is_pg_url, PgUrl};
    let Some(url) = database.to_str().filter(|s| is_pg_url(s)) else {
        if password_file.is_some() {
            return Err(ConfigError::new(
                "audit.password_file",
                "is only for a PostgreSQL audit.database (postgres://...)",
            ));
        }
        // A SQLite trail has one writer process: there are no replicas to tell apart.
        if replica.is_some() {
            return Err(ConfigError::new(
                "audit.instance_id",
                "audit.instance_id and audit.lease_timeout are only for a PostgreSQL audit.database (postgres://...)",
            ));
        }
        return Ok(TrailDatabase::Sqlite(database));
    };
    let url = PgUrl::parse(url).map_err(|e| ConfigError::new("audit.database", e))?;
    if url.password.is_some() && password_file.is_some() {
        return Err(ConfigError::new(
            "audit.password_file",
            "the URL in audit.database already has a password: give one or the other",
        ));
    }
    Ok(TrailDatabase::Postgres(PgTrail {
        url,
        password_file,
        replica: replica.unwrap_or_default(),
    }))
}

/// `[audit] instance_id` and `lease_timeout`; `None` when neither is given.
fn replica(
    instance_id: Option<String>,
    lease_timeout: Option<Duration>,
) -> Result<Option<Replica>, ConfigError> {
    if instance_id.is_none() && lease_timeout.is_none() {
        return Ok(None);
    }
    let d = Replica::default();
    let instance_id = match instance_id {
        None => d.instance_id,
        Some(id) => {
            if id.is_empty()
                || id.len() > MAX_INSTANCE_ID
                || !id.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(ConfigError::new(
                    "audit.instance_id",
                    format!("must be 1 to {MAX_INSTANCE_ID} printable ASCII characters, no spaces"),
                ));
            }
            id
        }
    };
    let lease_timeout = duration("audit.lease_timeout", lease_timeout, d.lease_timeout)?;
    if lease_timeout < MIN_LEASE_TIMEOUT {
        return Err(ConfigError::new(
            "audit.lease_timeout",
            "must be at least 1s",
        ));
    }
    Ok(Some(Replica {
        instance_id,
        lease_timeout,
    }))
}

fn policy_config(raw: FilePolicy) -> Result<PolicyConfig, ConfigError> {
    let d = PolicyConfig::default();
    let value = PolicyConfig {
        shadow: raw.shadow.unwrap_or(d.shadow),
        deny_empty_type_ids: raw.deny_empty_type_ids.unwrap_or(d.deny_empty_type_ids),
        protected_solution_ids: raw.protected_solution_ids.unwrap_or_default(),
        deny_delete: raw.deny_delete.unwrap_or(d.deny_delete),
        max_type_ids_removed: raw.max_type_ids_removed,
        allowed_user_ids: raw.allowed_user_ids,
    };
    if value.protected_solution_ids.iter().any(|id| *id <= 0) {
        return Err(ConfigError::new(
            "policy.protected_solution_ids",
            "ids must be positive integers",
        ));
    }
    Ok(value)
}

fn log_config(raw: FileLog) -> Result<LogConfig, ConfigError> {
    let value = LogConfig {
        format: match raw.format.as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("expected \"human\" or \"json\", got \"{other}\""),
                ))
            }
        },
        level: raw.level.unwrap_or_else(|| "info".to_owned()),
    };
    if tracing_subscriber::EnvFilter::try_new(&value.level).is_err() {
        return Err(ConfigError::new(
            "log.level",
            format!("invalid filter \"{}\"", value.level),
        ));
    }
    Ok(value)
}

fn identity_config(raw: FileIdentity) -> Result<IdentityConfig, ConfigError> {
    let value = IdentityConfig {
        resolve_oauth_users: raw.resolve_oauth_users.unwrap_or(true),
        cache_ttl: duration("identity.cache_ttl", raw.cache_ttl, defaults::IDENTITY_TTL)?,
        cache_entries: positive(
            "identity.cache_entries",
            raw.cache_entries,
            defaults::IDENTITY_ENTRIES,
        )?,
    };
    Ok(value)
}

fn tls_files(
    section: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            &format!("{section}.tls_key"),
            format!("is required with {section}.tls_cert"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            &format!("{section}.tls_cert"),
            format!("is required with {section}.tls_key"),
        )),
    }
}

/// The trail API must not be open beyond loopback by accident: a listener another host can
/// reach needs a token, or an explicit `allow_unauthenticated = true`.
fn admin_config(listen: SocketAddr, raw: FileAdmin) -> Result<AdminConfig, ConfigError> {
    let open = raw.token_file.is_none() && !raw.allow_unauthenticated.unwrap_or(false);
    if open && !is_loopback(listen.ip()) {
        return Err(ConfigError::new(
            "admin.token_file",
            format!(
                "required because admin.listen ({listen}) is not a loopback address \
                 (or set admin.allow_unauthenticated = true to serve the trail API to anyone who can connect)"
            ),
        ));
    }
    Ok(AdminConfig {
        listen,
        token_file: raw.token_file,
        ready_requires_portal: raw.ready_requires_portal.unwrap_or(false),
        tls: tls_files("admin", raw.tls_cert, raw.tls_key)?,
        approvers_file: raw.approvers_file,
        approval_ttl: duration(
            "admin.approval_ttl",
            raw.approval_ttl,
            defaults::APPROVAL_TTL,
        )?,
    })
}

fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

fn syslog(raw: FileSyslog) -> Result<SyslogConfig, ConfigError> {
    let printable = |key: &str, v: &str, max: usize| {
        if v.is_empty() || v.len() > max || !v.bytes().all(|b| (33..=126).contains(&b)) {
            Err(ConfigError::new(
                key,
                format!("must be 1 to {max} printable ASCII characters without spaces"),
            ))
        } else {
            Ok(())
        }
    };
    match raw.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => {
            return Err(ConfigError::new(
                "audit.syslog.address",
                format!("\"{}\" is not host:port", raw.address),
            ))
        }
    }
    let transport = match raw.transport.as_deref() {
        None | Some("tcp") => SyslogTransport::Tcp,
        Some("udp") => SyslogTransport::Udp,
        Some(other) => {
            return Err(ConfigError::new(
                "audit.syslog.transport",
                format!("expected \"tcp\" or \"udp\", got \"{other}\""),
            ))
        }
    };
    let facility = raw.facility.unwrap_or(13);
    if facility > 23 {
        return Err(ConfigError::new("audit.syslog.facility", "must be 0 to 23"));
    }
    if let Some(h) = &raw.hostname {
        printable("audit.syslog.hostname", h, 255)?;
    }
    let app_name = raw.app_name.unwrap_or_else(|| "b24-audit-proxy".into());
    printable("audit.syslog.app_name", &app_name, 48)?;
    Ok(SyslogConfig {
        address: raw.address,
        transport,
        queue_capacity: positive(
            "audit.syslog.queue_capacity",
            raw.queue_capacity,
            defaults::SYSLOG_QUEUE,
        )?,
        facility,
        hostname: raw.hostname,
        app_name,
    })
}

fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("\"{value}\" is not an address like 127.0.0.1:8080"),
        )
    })
}

fn positive(key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::new(key, "must be greater than 0")),
        Some(v) => Ok(v),
    }
}

/// A duration key: its default when absent, refused when zero (every duration here is a
/// timeout or an interval, and zero would mean "never" or "spin").
/// A duration written the way the config file writes one (`500ms`, `2m`, `1h 30m`), for
/// command-line flags.
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime_serde::re::humantime::parse_duration(text).ok()
}

fn duration(
    key: &str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(ConfigError::new(key, "must be greater than 0")),
        Some(d) => Ok(d),
    }
}

fn upstream_url_at(key: &str, value: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("\"{value}\" is not a URL")))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => {
            return Err(ConfigError::new(
                key,
                "must start with https:// (or http:// for local use)",
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(ConfigError::new(key, "must name a host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(ConfigError::new(
            key,
            "must be the portal's address only (no path): requests keep their own /rest/ path",
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ConfigError::new(key, "must not contain credentials"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"
[upstream]
url = "https://portal.example"
[audit]
database = "data/audit.db"
[admin]
listen = "127.0.0.1:9090"
"#;

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.server.max_body_bytes, defaults::MAX_BODY_BYTES);
        assert!(c.policy.deny_empty_type_ids);
        assert!(!c.policy.shadow);
        assert_eq!(c.audit.key_file, PathBuf::from("data/audit.db.key"));
        assert!(c.portals[0].upstream.is_https());
        assert!(!c.by_host());
    }

    /// MINIMAL with `database = db` and `extra` lines in `[audit]`.
    fn with_database(db: &str, extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&MINIMAL.replace(
            "database = \"data/audit.db\"",
            &format!("database = \"{db}\"\n{extra}"),
        ))
    }

    #[test]
    fn a_postgres_url_selects_the_shared_trail_and_its_password_stays_hidden() {
        let pg = with_database;
        let c = pg(
            "postgres://audit:hunter2@db.internal:5433/trail?sslmode=disable",
            "key_file = \"/etc/k\"",
        )
        .expect("valid");
        let TrailDatabase::Postgres(t) = &c.audit.database else {
            panic!("not PostgreSQL: {:?}", c.audit.database);
        };
        assert_eq!((t.url.port, t.url.dbname.as_str()), (5433, "trail"));
        for shown in [
            format!("{c:?}"),
            c.audit.database.to_string(),
            format!("{:?}", c.audit.database),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(
            c.audit.database.to_string(),
            "postgres://audit:***@db.internal:5433/trail?sslmode=disable"
        );
        let c = pg(
            "postgresql://audit@db/trail",
            "key_file = \"/etc/k\"\npassword_file = \"/run/pw\"",
        )
        .expect("password from a file");
        let TrailDatabase::Postgres(t) = &c.audit.database else {
            panic!("not PostgreSQL");
        };
        assert_eq!(t.password_file.as_deref(), Some(Path::new("/run/pw")));
        assert_eq!(t.replica.lease_timeout, defaults::LEASE_TIMEOUT);
        assert!(
            t.replica
                .instance_id
                .ends_with(&format!("-{}", std::process::id())),
            "{}",
            t.replica.instance_id
        );
        let c = pg(
            "postgres://audit@db/trail",
            "key_file = \"/k\"\ninstance_id = \"proxy-0\"\nlease_timeout = \"2s\"",
        )
        .expect("replica settings");
        let TrailDatabase::Postgres(t) = &c.audit.database else {
            panic!("not PostgreSQL");
        };
        assert_eq!(
            t.replica,
            Replica {
                instance_id: "proxy-0".into(),
                lease_timeout: Duration::from_secs(2),
            }
        );
    }

    #[test]
    fn postgres_and_replica_mistakes_name_their_key_without_the_password() {
        let pg = with_database;
        for (db, extra, key) in [
            ("postgres://audit@db/trail", "", "audit.key_file"),
            (
                "postgres://audit:hunter2@db/trail",
                "key_file = \"/k\"\npassword_file = \"/pw\"",
                "audit.password_file",
            ),
            (
                "postgres://audit:hunter2@db/trail?sslmode=allow",
                "key_file = \"/k\"",
                "audit.database",
            ),
            (
                "data/audit.db",
                "password_file = \"/pw\"",
                "audit.password_file",
            ),
            ("data/audit.db", "instance_id = \"a\"", "audit.instance_id"),
            (
                "data/audit.db",
                "lease_timeout = \"5s\"",
                "audit.instance_id",
            ),
            (
                "postgres://audit@db/trail",
                "key_file = \"/k\"\ninstance_id = \"has space\"",
                "audit.instance_id",
            ),
            (
                "postgres://audit@db/trail",
                "key_file = \"/k\"\nlease_timeout = \"500ms\"",
                "audit.lease_timeout",
            ),
        ] {
            let e = pg(db, extra).expect_err(db);
            assert_eq!(e.key, key, "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let c = Config::parse(MINIMAL).expect("a path");
        assert_eq!(
            c.audit.database,
            TrailDatabase::Sqlite(PathBuf::from("data/audit.db"))
        );
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let text = MINIMAL.replace("[admin]", "[admin]\nlisen = \"x\"");
        let e = Config::parse(&text).expect_err("unknown key");
        assert!(e.to_string().contains("lisen"), "{e}");
        assert_eq!(e.key, "admin.lisen", "{e}");
        // The line of the offending key itself (MINIMAL starts with a newline).
        assert!(e.to_string().contains("line 9:"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                MINIMAL.replace("127.0.0.1:8080", "nowhere"),
                "server.listen",
            ),
            (
                MINIMAL.replace("https://portal.example", "ftp://x"),
                "upstream.url",
            ),
            (
                MINIMAL.replace("https://portal.example", "https://portal.example/rest/1/x/"),
                "upstream.url",
            ),
            (
                format!("{MINIMAL}\n[log]\nformat = \"xml\"\n"),
                "log.format",
            ),
            (
                MINIMAL.replace(
                    "listen = \"127.0.0.1:8080\"",
                    "listen = \"127.0.0.1:8080\"\nheader_read_timeout = \"soon\"",
                ),
                "server.header_read_timeout",
            ),
            (
                format!("{MINIMAL}\n[policy]\nprotected_solution_ids = [0]\n"),
                "policy.protected_solution_ids",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(&text).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn missing_section_is_refused() {
        let text = MINIMAL.replace("[admin]\nlisten = \"127.0.0.1:9090\"\n", "");
        let e = Config::parse(&text).expect_err("missing admin");
        assert!(e.to_string().contains("admin"), "{e}");
    }

    #[test]
    fn cidr_ranges() {
        let net = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("single");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("fd00::/8")
            .expect("v6")
            .contains("fd12::1".parse().expect("ip")));
        assert!(Cidr::parse("::1")
            .expect("v6 host")
            .contains("::1".parse().expect("ip")));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nope"), None);
        assert_eq!(Cidr::parse("10.0.0.0/"), None);
    }

    fn with_server_key(line: &str) -> String {
        MINIMAL.replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:8080\"\n{line}"),
        )
    }

    #[test]
    fn durations() {
        let timeout = |v: &str| {
            Config::parse(&with_server_key(&format!("header_read_timeout = \"{v}\"")))
                .map(|c| c.server.header_read_timeout)
        };
        assert_eq!(timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(timeout("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["10", "s", "soon", "0s"] {
            let e = timeout(bad).expect_err(bad);
            assert_eq!(e.key, "server.header_read_timeout", "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = Config::parse(&with_server_key("shutdown_grace = 5")).expect_err("a number");
        assert_eq!(e.key, "server.shutdown_grace", "{e}");
    }

    #[test]
    fn admin_beyond_loopback_needs_a_token_or_an_explicit_opt_out() {
        let open = MINIMAL.replace("127.0.0.1:9090", "0.0.0.0:9090");
        let e = Config::parse(&open).expect_err("open admin listener");
        assert_eq!(e.key, "admin.token_file", "{e}");
        assert!(e.to_string().contains("allow_unauthenticated"), "{e}");
        assert!(!e.to_string().contains('\n'));
        let with_token = open.replace("[admin]", "[admin]\ntoken_file = \"t\"");
        assert!(Config::parse(&with_token).is_ok());
        let opted_out = open.replace("[admin]", "[admin]\nallow_unauthenticated = true");
        assert!(Config::parse(&opted_out).is_ok());
        for loopback in ["[::1]:9090", "127.0.0.2:9090", "[::ffff:127.0.0.1]:9090"] {
            let text = MINIMAL.replace("127.0.0.1:9090", loopback);
            assert!(Config::parse(&text).is_ok(), "{loopback}");
        }
        let c = Config::parse(MINIMAL).expect("valid");
        assert!(!c.admin.ready_requires_portal);
        assert!(c.admin.tls.is_none());
        let half = MINIMAL.replace("[admin]", "[admin]\ntls_cert = \"c.pem\"");
        assert_eq!(
            Config::parse(&half).expect_err("cert without key").key,
            "admin.tls_key"
        );
    }

    /// MINIMAL without `[upstream] url`, with `portals` appended.
    fn with_portals(portals: &str) -> String {
        MINIMAL.replace("url = \"https://portal.example\"\n", "") + portals
    }

    #[test]
    fn portals_are_read_with_the_shared_upstream_settings() {
        let c = Config::parse(&with_portals(
            "[[portals]]\nhost = \"A.proxy.example\"\nurl = \"https://a.portal.example\"\n\
             [[portals]]\nhost = \"b.proxy.example:8443\"\nurl = \"https://b.portal.example:444\"\nname = \"b\"\n",
        ))
        .expect("valid");
        assert!(c.by_host());
        assert_eq!(c.portals.len(), 2);
        assert_eq!(c.portals[0].name, "a.portal.example");
        assert_eq!(
            c.portals[0]
                .host
                .as_ref()
                .map(HostPattern::label)
                .as_deref(),
            Some("a.proxy.example")
        );
        assert_eq!(c.portals[1].name, "b");
        assert_eq!(c.portals[1].host.as_ref().and_then(|h| h.port), Some(8443));
        assert_eq!(c.portals[1].upstream.url, "https://b.portal.example:444/");
        assert_eq!(
            c.portals[1].upstream.request_timeout,
            defaults::REQUEST_TIMEOUT
        );
        assert_eq!(
            c.portal_named(Some("b")).map(|p| p.name.as_str()),
            Some("b")
        );
        assert!(
            c.portal_named(None).is_none(),
            "an unnamed event fits no portal of several"
        );
        let single = Config::parse(MINIMAL).expect("valid");
        assert_eq!(single.portals[0].name, "portal.example");
        assert!(single.portal_named(None).is_some());
    }

    #[test]
    fn portal_mistakes_name_their_key() {
        let entry = |host: &str, url: &str, extra: &str| {
            format!("[[portals]]\nhost = \"{host}\"\nurl = \"{url}\"\n{extra}")
        };
        let a = entry("a.example", "https://a.portal", "");
        let cases = [
            (with_portals(""), "upstream.url"),
            (MINIMAL.to_owned() + &a, "upstream.url"),
            (
                with_portals(&entry("a b", "https://a.portal", "")),
                "portals[0].host",
            ),
            (
                with_portals(&entry("a.example", "ftp://a.portal", "")),
                "portals[0].url",
            ),
            (
                with_portals(&(a.clone() + &entry("A.example.", "https://b.portal", ""))),
                "portals[1].host",
            ),
            (
                with_portals(&(a.clone() + &entry("b.example", "https://a.portal", ""))),
                "portals[1].name",
            ),
            (
                with_portals(&entry(
                    "a.example",
                    "https://a.portal",
                    "name = \"a\\\"b\"\n",
                )),
                "portals[0].name",
            ),
            (
                with_portals(&entry("a.example", "https://a.portal", "nam = \"a\"\n")),
                "portals.nam",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(&text).expect_err(key);
            assert!(e.key == key || e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn the_examples_postgresql_lines_load() {
        let text = include_str!("../config/b24-audit-proxy.example.toml");
        let mut pg = String::new();
        for line in text.lines() {
            if line == "database = \"data/audit.db\"" {
                continue;
            }
            let uncommented = line.strip_prefix("# ").filter(|l| {
                l.starts_with("database = \"postgres")
                    || l.starts_with("password_file =")
                    || l.starts_with("key_file =")
            });
            pg.push_str(uncommented.unwrap_or(line));
            pg.push('\n');
        }
        let c = Config::parse(&pg).expect("the example with PostgreSQL");
        let TrailDatabase::Postgres(t) = &c.audit.database else {
            panic!("not PostgreSQL: {:?}", c.audit.database);
        };
        assert_eq!(t.url.sslmode, crate::audit::pg_url::SslMode::VerifyFull);
        assert!(t.password_file.is_some());
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/b24-audit-proxy.example.toml");
        Config::parse(text).expect("the documented example must load");
        // Its commented-out [audit.syslog] section loads too, with the values it shows.
        let mut syslog = String::new();
        for line in text.lines() {
            let uncommented = line.strip_prefix("# ").filter(|l| {
                l.starts_with("[audit.syslog]")
                    || [
                        "address",
                        "transport",
                        "queue_capacity",
                        "facility",
                        "hostname",
                        "app_name",
                    ]
                    .iter()
                    .any(|k| l.starts_with(&format!("{k} =")))
            });
            syslog.push_str(uncommented.unwrap_or(line));
            syslog.push('\n');
        }
        let c = Config::parse(&syslog).expect("the example with syslog on");
        let s = c.audit.syslog.expect("syslog section");
        assert_eq!(s.address, "siem.internal:6514");
        assert_eq!((s.transport, s.facility), (SyslogTransport::Tcp, 13));
    }

    #[test]
    fn syslog_settings_are_checked() {
        let base =
            "[server]\nlisten = \"127.0.0.1:8080\"\n[upstream]\nurl = \"https://p.example\"\n\
                    [audit]\ndatabase = \"a.db\"\n[audit.syslog]\n";
        let tail = "[admin]\nlisten = \"127.0.0.1:9090\"\n";
        let parse = |s: &str| Config::parse(&format!("{base}{s}\n{tail}"));
        let ok = parse("address = \"127.0.0.1:514\"\ntransport = \"udp\"").expect("valid");
        let s = ok.audit.syslog.expect("syslog");
        assert_eq!(
            (s.transport, s.queue_capacity),
            (SyslogTransport::Udp, defaults::SYSLOG_QUEUE)
        );
        for (bad, key) in [
            ("address = \"no-port\"", "audit.syslog.address"),
            (
                "address = \"h:1\"\ntransport = \"tls\"",
                "audit.syslog.transport",
            ),
            ("address = \"h:1\"\nfacility = 24", "audit.syslog.facility"),
            (
                "address = \"h:1\"\nhostname = \"a b\"",
                "audit.syslog.hostname",
            ),
            (
                "address = \"h:1\"\nqueue_capacity = 0",
                "audit.syslog.queue_capacity",
            ),
        ] {
            assert_eq!(
                parse(bad).map(|_| ()).map_err(|e| e.key),
                Err(key.to_owned()),
                "{bad}"
            );
        }
    }
}
