//! Every metric the proxy exports, defined once, under the `b24proxy_` prefix, in base units.
//!
//! Labels are bounded by construction: the REST method label is a watched method's canonical
//! name or `other`, status is a class (`2xx`…), rules and outcomes come from closed lists. No
//! path, id, user or token ever becomes a label. The pass-through counters are resolved once
//! at start-up so the hot path does no label lookup.
//!
//! Besides the `b24proxy_` families the registry carries the standard process collector
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ... on
//! Linux), so the usual dashboards and alerts for a process work unchanged.

use crate::audit::{AuditObserver, Outcome};
use crate::watched::Watched;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: from a fast loopback pass-through (100 µs) to a slow portal (60 s).
/// Finer at the low end: the proxy's own share of a request is tens of microseconds to a few
/// milliseconds (an fsync).
const OWN_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Audit commits are fsync-bound: 50 µs to a few seconds on a struggling disk.
const AUDIT_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    5.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    pass_through_requests: [IntCounter; 5],
    request_duration: HistogramVec,
    pass_through_duration: Histogram,
    own_duration: [Histogram; 2],
    /// One per `UpstreamPhase`, resolved once: a label lookup per request hashes and locks.
    upstream_duration: [Histogram; 5],
    pub policy_decisions: IntCounterVec,
    pub audit_events: IntCounterVec,
    pub audit_write_duration: Histogram,
    pub audit_commit_duration: Histogram,
    pub audit_commit_requests: Histogram,
    pub audit_queue_depth: IntGauge,
    pub audit_write_failures: IntCounter,
    /// Entries sent to / dropped before the `[audit.syslog]` receiver.
    pub syslog_sent: IntCounter,
    pub syslog_dropped: IntCounter,
    /// 1 while the audit trail accepts writes (what `/readyz` checks), else 0.
    pub audit_writable: IntGauge,
    /// 1 while the portal answered the last exchange or probe, else 0.
    pub upstream_reachable: IntGauge,
    pub upstream_errors: IntCounterVec,
    pub in_flight: IntGauge,
    pub open_connections: IntGauge,
    /// Connections the pass-through lane handed to hyper (a request it does not serve).
    pub lane_handoffs: IntCounter,
    /// `server.max_connections`, so `open_connections` can be read against it.
    pub max_connections: IntGauge,
    /// Unix time of the last successful group commit.
    pub audit_last_commit: Gauge,
    /// Sequence number of the newest chain entry, read from the database at each scrape.
    pub audit_chain_head_seq: IntGauge,
    /// The database plus its write-ahead log, in bytes, read at each scrape.
    pub audit_database_bytes: IntGauge,
    /// `notAfter` of each listener's certificate, by listener (`proxy`, `admin`).
    pub tls_cert_expiry: GaugeVec,
    pub reload_successful: IntGauge,
    pub reload_success_time: Gauge,
    identity_cache: [IntCounter; 2],
    refusals: IntCounterVec,
    /// Requests and reachability by portal (`[[portals]]`; the one portal otherwise). The
    /// label's values are the configured portals' names, so it stays bounded.
    portal_requests: IntCounterVec,
    portal_reachable: IntGaugeVec,
    notifications: IntCounterVec,
}

/// One portal's request counters, resolved once (a label lookup per request hashes and
/// locks): by route (pass-through, watched) and status class.
pub struct PortalCounters([[IntCounter; 5]; 2]);

impl PortalCounters {
    /// One answered request for this portal.
    pub fn count(&self, watched: bool, status: u16) {
        self.0[usize::from(watched)][class_index(status)].inc();
    }
}

/// Now as Unix seconds (0 before 1970, which no clock here reports).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Which upstream exchange a duration belongs to.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamPhase {
    Snapshot,
    Forward,
    Reread,
    /// `user.current` for an OAuth caller not in the identity cache.
    Identity,
    PassThrough,
}

impl UpstreamPhase {
    /// Every phase, in the order of their discriminants.
    const ALL: [UpstreamPhase; 5] = [
        UpstreamPhase::Snapshot,
        UpstreamPhase::Forward,
        UpstreamPhase::Reread,
        UpstreamPhase::Identity,
        UpstreamPhase::PassThrough,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamPhase::Snapshot => "snapshot",
            UpstreamPhase::Forward => "forward",
            UpstreamPhase::Reread => "reread",
            UpstreamPhase::Identity => "identity",
            UpstreamPhase::PassThrough => "pass_through",
        }
    }
}

fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5)) - 1
}

/// Registers `c` and hands it back, so that a metric is registered where it is defined.
fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: Result<C, prometheus::Error>,
) -> Result<C, prometheus::Error> {
    let c = c?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Requests, their durations and the proxy's own share, policy decisions, identity look-ups,
/// refusals.
struct TrafficFamilies {
    requests: IntCounterVec,
    pass_through_requests: [IntCounter; 5],
    request_duration: HistogramVec,
    pass_through_duration: Histogram,
    own_duration: [Histogram; 2],
    policy_decisions: IntCounterVec,
    identity_cache: [IntCounter; 2],
    refusals: IntCounterVec,
}

/// The portal: time waiting for it, failed exchanges, reachability.
struct UpstreamFamilies {
    /// One per `UpstreamPhase`, resolved once: a label lookup per request hashes and locks.
    upstream_duration: [Histogram; 5],
    upstream_errors: IntCounterVec,
    upstream_reachable: IntGauge,
}

/// Audit writes: outcomes recorded, commit and write times, group sizes, the queue, failures,
/// writability.
struct TrailFamilies {
    audit_events: IntCounterVec,
    audit_write_duration: Histogram,
    audit_commit_duration: Histogram,
    audit_commit_requests: Histogram,
    audit_queue_depth: IntGauge,
    audit_write_failures: IntCounter,
    audit_writable: IntGauge,
}

/// The chain and its feed: the head, the database size, the last commit, the syslog receiver.
struct ChainFamilies {
    syslog_sent: IntCounter,
    syslog_dropped: IntCounter,
    audit_last_commit: Gauge,
    audit_chain_head_seq: IntGauge,
    audit_database_bytes: IntGauge,
}

/// The process and its listeners: requests in flight, connections, the build, certificates,
/// reloads.
struct ProcessFamilies {
    in_flight: IntGauge,
    open_connections: IntGauge,
    lane_handoffs: IntCounter,
    max_connections: IntGauge,
    tls_cert_expiry: GaugeVec,
    reload_successful: IntGauge,
    reload_success_time: Gauge,
}

/// Defines and registers the traffic families.
fn traffic_families(registry: &Registry) -> Result<TrafficFamilies, prometheus::Error> {
    let requests = reg(registry, IntCounterVec::new(
        Opts::new("b24proxy_requests_total", "REST calls answered, by method (watched methods by name, everything else \"other\") and status class."),
        &["method", "status_class"],
    ))?;
    let pass_through_requests = STATUS_CLASSES.map(|c| requests.with_label_values(&["other", c]));
    for w in Watched::all() {
        for c in STATUS_CLASSES {
            requests.with_label_values(&[w.method(), c]);
        }
    }
    let request_duration = reg(
        registry,
        HistogramVec::new(
            HistogramOpts::new(
                "b24proxy_request_duration_seconds",
                "Time from request head received to response head sent, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        ),
    )?;
    let pass_through_duration = request_duration.with_label_values(&["pass_through"]);
    let own = reg(registry, HistogramVec::new(
        HistogramOpts::new(
            "b24proxy_own_duration_seconds",
            "The proxy's own share of a request: its duration less the time spent waiting for the portal (audit durability included), by route.",
        )
        .buckets(OWN_BUCKETS.to_vec()),
        &["route"],
    ))?;
    let own_duration = [
        own.with_label_values(&["pass_through"]),
        own.with_label_values(&["watched"]),
    ];
    request_duration.with_label_values(&["watched"]);
    let policy_decisions = reg(
        registry,
        IntCounterVec::new(
            Opts::new(
                "b24proxy_policy_decisions_total",
                "Policy decisions on watched calls, by rule (\"none\" when allowed) and decision.",
            ),
            &["rule", "decision"],
        ),
    )?;
    policy_decisions.with_label_values(&["none", "allow"]);
    for r in crate::policy::rules::ALL {
        policy_decisions.with_label_values(&[r, "deny"]);
    }
    let identity = reg(registry, IntCounterVec::new(
        Opts::new(
            "b24proxy_identity_cache_requests_total",
            "OAuth caller look-ups in the identity cache, by result (hit, miss: user.current is called).",
        ),
        &["result"],
    ))?;
    let identity_cache = ["hit", "miss"].map(|r| identity.with_label_values(&[r]));
    let refusals = reg(
        registry,
        IntCounterVec::new(
            Opts::new(
                "b24proxy_refusals_total",
                "Requests the proxy answered with its own error envelope, by error code.",
            ),
            &["code"],
        ),
    )?;
    Ok(TrafficFamilies {
        requests,
        pass_through_requests,
        request_duration,
        pass_through_duration,
        own_duration,
        policy_decisions,
        identity_cache,
        refusals,
    })
}

/// Defines and registers the upstream families.
fn upstream_families(registry: &Registry) -> Result<UpstreamFamilies, prometheus::Error> {
    let upstream_duration = reg(registry, HistogramVec::new(
        HistogramOpts::new(
            "b24proxy_upstream_duration_seconds",
            "Time waiting for the portal, by phase (snapshot, forward, reread, identity, pass_through).",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["phase"],
    ))?;
    let upstream_duration =
        UpstreamPhase::ALL.map(|p| upstream_duration.with_label_values(&[p.label()]));
    let upstream_reachable = reg(registry, IntGauge::new(
        "b24proxy_upstream_reachable",
        "1 while the portal answered the last exchange or connection probe, else 0 (in the /readyz body).",
    ))?;
    upstream_reachable.set(1);
    let upstream_errors = reg(registry, IntCounterVec::new(
        Opts::new("b24proxy_upstream_errors_total", "Failed exchanges with the portal, by kind (connect, timeout, reset, invalid, status)."),
        &["kind"],
    ))?;
    for k in ["connect", "timeout", "reset", "invalid", "status"] {
        upstream_errors.with_label_values(&[k]);
    }
    Ok(UpstreamFamilies {
        upstream_duration,
        upstream_errors,
        upstream_reachable,
    })
}

/// Defines and registers the trail families.
fn trail_families(registry: &Registry) -> Result<TrailFamilies, prometheus::Error> {
    let audit_events = reg(
        registry,
        IntCounterVec::new(
            Opts::new(
                "b24proxy_audit_events_total",
                "Audited mutations whose outcome was committed to the trail, by outcome.",
            ),
            &["outcome"],
        ),
    )?;
    for o in Outcome::ALL {
        audit_events.with_label_values(&[o.as_str()]);
    }
    let audit_write_duration = reg(
        registry,
        Histogram::with_opts(
            HistogramOpts::new(
                "b24proxy_audit_write_duration_seconds",
                "Time for one request's entries to become durable: queue wait plus group commit.",
            )
            .buckets(AUDIT_BUCKETS.to_vec()),
        ),
    )?;
    let audit_commit_duration = reg(
        registry,
        Histogram::with_opts(
            HistogramOpts::new(
                "b24proxy_audit_commit_duration_seconds",
                "Duration of one group-commit transaction (including fsync).",
            )
            .buckets(AUDIT_BUCKETS.to_vec()),
        ),
    )?;
    let audit_commit_requests = reg(
        registry,
        Histogram::with_opts(
            HistogramOpts::new(
                "b24proxy_audit_commit_requests",
                "Requests committed together in one group-commit transaction.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        ),
    )?;
    let audit_queue_depth = reg(
        registry,
        IntGauge::new(
            "b24proxy_audit_queue_depth",
            "Requests waiting for the audit writer.",
        ),
    )?;
    let audit_write_failures = reg(registry, IntCounter::new(
        "b24proxy_audit_write_failures_total",
        "Requests whose audit entries could not be committed (the change was not forwarded, or its outcome awaits reconciliation).",
    ))?;
    let audit_writable = reg(registry, IntGauge::new(
        "b24proxy_audit_writable",
        "1 while the audit trail accepts writes, 0 while watched calls are refused with 503 (readiness).",
    ))?;
    audit_writable.set(1);
    Ok(TrailFamilies {
        audit_events,
        audit_write_duration,
        audit_commit_duration,
        audit_commit_requests,
        audit_queue_depth,
        audit_write_failures,
        audit_writable,
    })
}

/// Defines and registers the chain families.
fn chain_families(registry: &Registry) -> Result<ChainFamilies, prometheus::Error> {
    let syslog_sent = reg(
        registry,
        IntCounter::new(
            "b24proxy_syslog_sent_total",
            "Committed audit entries sent to the [audit.syslog] receiver.",
        ),
    )?;
    let syslog_dropped = reg(registry, IntCounter::new(
        "b24proxy_syslog_dropped_total",
        "Committed audit entries not sent to the [audit.syslog] receiver because its queue was full (they are in the trail).",
    ))?;
    let audit_last_commit = reg(
        registry,
        Gauge::new(
            "b24proxy_audit_last_commit_timestamp_seconds",
            "Unix time of the last successful audit commit (0: none since start).",
        ),
    )?;
    let audit_chain_head_seq = reg(
        registry,
        IntGauge::new(
            "b24proxy_audit_chain_head_seq",
            "Sequence number of the newest entry of the audit hash chain, read from the database.",
        ),
    )?;
    let audit_database_bytes = reg(
        registry,
        IntGauge::new(
            "b24proxy_audit_database_bytes",
            "Size of the audit database and its write-ahead log.",
        ),
    )?;
    Ok(ChainFamilies {
        syslog_sent,
        syslog_dropped,
        audit_last_commit,
        audit_chain_head_seq,
        audit_database_bytes,
    })
}

/// Per portal: requests and reachability; and the refusal notifications.
struct PortalFamilies {
    portal_requests: IntCounterVec,
    portal_reachable: IntGaugeVec,
    notifications: IntCounterVec,
}

/// Defines and registers the portal and notification families.
fn portal_families(registry: &Registry) -> Result<PortalFamilies, prometheus::Error> {
    let portal_requests = reg(registry, IntCounterVec::new(
            Opts::new("b24proxy_portal_requests_total", "REST calls answered, by portal (its configured name), route (pass_through, watched) and status class."),
            &["portal", "route", "status_class"],
        ))?;
    let portal_reachable = reg(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "b24proxy_portal_reachable",
                "1 while the portal answered its last exchange or probe, else 0, by portal.",
            ),
            &["portal"],
        ),
    )?;
    let notifications = reg(registry, IntCounterVec::new(
            Opts::new("b24proxy_notifications_total", "Refusal notifications ([approvals] notify_url, notify_users), by result: sent, failed (after every attempt), dropped (queue full)."),
            &["result"],
        ))?;
    for r in ["sent", "failed", "dropped"] {
        notifications.with_label_values(&[r]);
    }
    Ok(PortalFamilies {
        portal_requests,
        portal_reachable,
        notifications,
    })
}

/// Defines and registers the process families.
fn process_families(registry: &Registry) -> Result<ProcessFamilies, prometheus::Error> {
    let in_flight = reg(
        registry,
        IntGauge::new("b24proxy_in_flight_requests", "Requests being handled."),
    )?;
    let open_connections = reg(
        registry,
        IntGauge::new("b24proxy_open_connections", "Client connections open."),
    )?;
    let lane_handoffs = reg(registry, IntCounter::new(
        "b24proxy_lane_handoffs_total",
        "Client connections the pass-through lane handed to the full HTTP server, at the first request it does not serve (a watched call, unusual framing, HTTP/2).",
    ))?;
    let build_info = reg(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "b24proxy_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version"],
        ),
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    let max_connections = reg(
        registry,
        IntGauge::new(
            "b24proxy_max_connections",
            "Client connections served at once at most (server.max_connections).",
        ),
    )?;
    let tls_cert_expiry = reg(registry, GaugeVec::new(
        Opts::new(
            "b24proxy_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the certificate served by a TLS listener expires, by listener (proxy, admin).",
        ),
        &["listener"],
    ))?;
    let reload_successful = reg(registry, IntGauge::new(
        "b24proxy_config_last_reload_successful",
        "1 when the last configuration load (start-up or SIGHUP) succeeded, 0 when it failed and the previous one is still in force.",
    ))?;
    reload_successful.set(1);
    let reload_success_time = reg(
        registry,
        Gauge::new(
            "b24proxy_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (start-up or SIGHUP).",
        ),
    )?;
    reload_success_time.set(unix_now());
    Ok(ProcessFamilies {
        in_flight,
        open_connections,
        lane_handoffs,
        max_connections,
        tls_cert_expiry,
        reload_successful,
        reload_success_time,
    })
}

impl Metrics {
    /// Builds and registers every metric. Only fails on a programming error (a duplicate or
    /// malformed name), which the unit test below catches.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let TrafficFamilies {
            requests,
            pass_through_requests,
            request_duration,
            pass_through_duration,
            own_duration,
            policy_decisions,
            identity_cache,
            refusals,
        } = traffic_families(&registry)?;
        let UpstreamFamilies {
            upstream_duration,
            upstream_errors,
            upstream_reachable,
        } = upstream_families(&registry)?;
        let TrailFamilies {
            audit_events,
            audit_write_duration,
            audit_commit_duration,
            audit_commit_requests,
            audit_queue_depth,
            audit_write_failures,
            audit_writable,
        } = trail_families(&registry)?;
        let ChainFamilies {
            syslog_sent,
            syslog_dropped,
            audit_last_commit,
            audit_chain_head_seq,
            audit_database_bytes,
        } = chain_families(&registry)?;
        let ProcessFamilies {
            in_flight,
            open_connections,
            lane_handoffs,
            max_connections,
            tls_cert_expiry,
            reload_successful,
            reload_success_time,
        } = process_families(&registry)?;
        let PortalFamilies {
            portal_requests,
            portal_reachable,
            notifications,
        } = portal_families(&registry)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            pass_through_requests,
            request_duration,
            pass_through_duration,
            own_duration,
            upstream_duration,
            policy_decisions,
            audit_events,
            audit_write_duration,
            audit_commit_duration,
            audit_commit_requests,
            audit_queue_depth,
            audit_write_failures,
            syslog_sent,
            syslog_dropped,
            audit_writable,
            upstream_reachable,
            upstream_errors,
            in_flight,
            open_connections,
            lane_handoffs,
            max_connections,
            audit_last_commit,
            audit_chain_head_seq,
            audit_database_bytes,
            tls_cert_expiry,
            reload_successful,
            reload_success_time,
            identity_cache,
            refusals,
            portal_requests,
            portal_reachable,
            notifications,
        })
    }

    /// The counters of the portal named `name`, created at start-up for each configured one.
    pub fn portal(&self, name: &str) -> PortalCounters {
        let portal = &self.portal_requests;
        PortalCounters(
            ["pass_through", "watched"]
                .map(|route| STATUS_CLASSES.map(|c| portal.with_label_values(&[name, route, c]))),
        )
    }

    /// One refusal notification's result (`sent`, `failed`, `dropped`).
    pub fn notification(&self, result: &'static str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    /// Whether the portal named `name` is reachable, as `/metrics` shows it.
    pub fn portal_reachable(&self, name: &str, up: bool) {
        self.portal_reachable
            .with_label_values(&[name])
            .set(i64::from(up));
    }

    /// An OAuth caller looked up in the identity cache.
    pub fn identity_lookup(&self, hit: bool) {
        self.identity_cache[usize::from(!hit)].inc();
    }

    /// A request answered with the proxy's own error envelope. Codes are static strings from
    /// the error table, so the label stays bounded.
    pub fn refusal(&self, code: &'static str) {
        self.refusals.with_label_values(&[code]).inc();
    }

    /// The outcome of a configuration reload (SIGHUP).
    pub fn reloaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(unix_now());
        }
    }

    /// One answered request. `method` is `None` for pass-through; `upstream` is the part of
    /// `seconds` spent waiting for the portal.
    pub fn request(&self, method: Option<&'static str>, status: u16, seconds: f64, upstream: f64) {
        self.own_duration[usize::from(method.is_some())].observe((seconds - upstream).max(0.0));
        match method {
            None => {
                self.pass_through_requests[class_index(status)].inc();
                self.pass_through_duration.observe(seconds);
            }
            Some(m) => {
                self.requests
                    .with_label_values(&[m, STATUS_CLASSES[class_index(status)]])
                    .inc();
                self.request_duration
                    .with_label_values(&["watched"])
                    .observe(seconds);
            }
        }
    }

    pub fn upstream(&self, phase: UpstreamPhase, seconds: f64) {
        self.upstream_duration[phase as usize].observe(seconds);
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    pub fn decision(&self, rule: Option<&str>, decision: &str) {
        self.policy_decisions
            .with_label_values(&[rule.unwrap_or("none"), decision])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on a malformed family, which registration prevents.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            buf.clear();
        }
        buf
    }
}

impl AuditObserver for Metrics {
    fn committed(&self, requests: usize, outcomes: &[Outcome], seconds: f64) {
        self.audit_last_commit.set(unix_now());
        self.audit_commit_duration.observe(seconds);
        self.audit_commit_requests.observe(requests as f64);
        for o in outcomes {
            self.audit_events.with_label_values(&[o.as_str()]).inc();
        }
    }

    fn write_failed(&self) {
        self.audit_write_failures.inc();
    }

    fn request_latency(&self, seconds: f64) {
        self.audit_write_duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders_with_bounded_labels() {
        let m = Metrics::new().expect("metrics");
        m.request(None, 200, 0.001, 0.0005);
        m.request(Some("crm.automatedsolution.update"), 403, 0.01, 0.002);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(text.contains("b24proxy_requests_total{method=\"other\",status_class=\"2xx\"} 1"));
        assert!(text.contains("b24proxy_requests_total{method=\"crm.automatedsolution.update\",status_class=\"4xx\"} 1"));
        assert!(text.contains("b24proxy_build_info{version="));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("b24proxy_") || line.starts_with("process_"),
                "{line}"
            );
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        m.refusal("POLICY_VIOLATION");
        m.identity_lookup(true);
        m.identity_lookup(false);
        m.identity_lookup(false);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(text.contains("b24proxy_refusals_total{code=\"POLICY_VIOLATION\"} 1"));
        assert!(text.contains("b24proxy_identity_cache_requests_total{result=\"miss\"} 2"));
    }
}
