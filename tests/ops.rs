//! The operational surface, checked against the real thing: a live scrape of the proxy binary
//! (after it has served allowed, refused, pass-through and failing calls) must pass
//! `promtool check metrics`; the alert rules must pass `promtool check rules` and their unit
//! tests; every metric and label that the Grafana dashboard and the alert rules use must exist
//! in that scrape; `docs/metrics.md` must list exactly the scraped families; the Kubernetes
//! manifests and the systemd unit must be well formed and agree with the binary.
//!
//! `promtool` comes from Debian's `prometheus` package (`scripts/test` installs it).

mod support;

use http::StatusCode;
use portal_sim::{Fault, FaultKind};
use serde::Deserialize as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// Labels that Prometheus attaches to every scraped series (target labels), so queries may
/// use them although the proxy does not export them.
const TARGET_LABELS: [&str; 3] = ["job", "instance", "__name__"];

/// Series that Prometheus records itself for every target, not exported by the proxy.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// promtool

fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not on PATH: install Debian's `prometheus` package \
                 (apt-get install prometheus), which ./scripts/test does when run as root"
            )
        })
}

struct ToolOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run_promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> ToolOutput {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    ToolOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// A live scrape

/// `GET /metrics` on the admin listener, blocking (usable inside `eventually`): the body of a
/// 200 answer with the Prometheus text content type.
fn scrape(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).expect("connect to admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read scrape");
    let raw = String::from_utf8(raw).expect("scrape is UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP answer");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "scrape answered {head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "scrape content type: {head}"
    );
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "unexpected chunked scrape"
    );
    body.to_owned()
}

/// One metric family of a scrape: its `# TYPE` and its series (name, labels, value).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

#[derive(Debug)]
struct Scrape {
    families: BTreeMap<String, Family>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                families.entry(name.to_owned()).or_default().kind = kind.to_owned();
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, labels, value) = parse_sample(line);
            let family = family_of(&families, &name)
                .unwrap_or_else(|| panic!("sample without a # TYPE family: {line}"));
            families
                .get_mut(&family)
                .expect("family")
                .series
                .push((name, labels, value));
        }
        Scrape { families }
    }

    /// Series names a query may select, each with its family: a histogram is selectable only
    /// as `_bucket`, `_sum` and `_count`, and only when those series are really in the scrape.
    fn selectable(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (family, f) in &self.families {
            for (series, _, _) in &f.series {
                out.insert(series.clone(), family.clone());
            }
        }
        out
    }

    /// The label names carried by the series called `series` (e.g. `le` only on `_bucket`).
    fn labels_of(&self, series: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for f in self.families.values() {
            for (name, labels, _) in &f.series {
                if name == series {
                    out.extend(labels.keys().cloned());
                }
            }
        }
        out
    }

    /// The value of one series, matching a subset of its labels.
    fn value(&self, series: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families
            .values()
            .flat_map(|f| f.series.iter())
            .find(|(n, l, _)| {
                n == series
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }
}

fn family_of(families: &BTreeMap<String, Family>, series: &str) -> Option<String> {
    if families.contains_key(series) {
        return Some(series.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        let f = families.get(base)?;
        let ok = match *suffix {
            "_bucket" => f.kind == "histogram",
            _ => f.kind == "histogram" || f.kind == "summary",
        };
        ok.then(|| base.to_owned())
    })
}

fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let mut labels = BTreeMap::new();
    let (name, rest) = match line.find('{') {
        Some(i) => {
            let end = line.rfind('}').expect("closing brace");
            let mut chars = line[i + 1..end].chars().peekable();
            loop {
                while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
                    chars.next();
                }
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                if key.is_empty() {
                    break;
                }
                assert_eq!(chars.next(), Some('"'), "label value quoted: {line}");
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next().expect("escape")),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
            (&line[..i], &line[end + 1..])
        }
        None => line.split_once(' ').expect("sample value"),
    };
    let value = rest
        .split_whitespace()
        .next()
        .expect("value")
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("numeric value: {line}"));
    (name.to_owned(), labels, value)
}

/// A closed TCP port on loopback: bound, then released.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The proxy in front of the simulator after it has served an allowed update, a refused
/// (`typeIds: []`) update, an update the portal rejects, pass-through calls (one answered, one
/// cut off by the portal), and a non-canonical path; plus a second proxy whose portal is a
/// closed port; plus a third whose proxy listener serves TLS (the certificate expiry series
/// exist only then). Returns the three scrapes; everything started is stopped before returning.
async fn exercised_scrapes() -> (String, String, String) {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();

    let allowed = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"HR (ops)"}}"#,
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{:?}", allowed.body);

    let refused = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":267,"fields":{"typeIds":[]}}"#,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(refused.json()["error"], "POLICY_VIOLATION");

    // Two changes with one OAuth token: its user is resolved once, then found in the cache.
    for title in ["Sales (oauth 1)", "Sales (oauth 2)"] {
        let oauth = post_json(
            &proxy.url(&format!("/rest/{UPDATE}")),
            &format!(r#"{{"id":267,"fields":{{"title":"{title}"}},"auth":"{TOKEN}"}}"#),
        )
        .await;
        assert_eq!(oauth.status, StatusCode::OK, "{:?}", oauth.body);
    }

    let passed = get(&proxy.hook_url("crm.deal.list")).await;
    assert_eq!(passed.status, StatusCode::OK, "{:?}", passed.body);

    let non_canonical = get(&proxy.url(&format!("/rest/{USER}//{SECRET}/crm.deal.list"))).await;
    assert_eq!(non_canonical.status, StatusCode::BAD_REQUEST);

    sim.sim.push_fault(Fault {
        method: Some(UPDATE.into()),
        times: 1,
        kind: FaultKind::ErrorAfterExecute {
            status: 400,
            code: "ERROR_CORE".into(),
        },
    });
    let rejected = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"HR (rejected)"}}"#,
    )
    .await;
    assert_eq!(
        rejected.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        rejected.body
    );

    sim.sim.push_fault(Fault {
        method: Some("crm.deal.list".into()),
        times: 1,
        kind: FaultKind::CloseWithoutResponse,
    });
    let cut = get(&proxy.hook_url("crm.deal.list")).await;
    assert!(cut.status.is_server_error(), "{:?}", cut);

    // Metrics are written at the very end of a request; wait until all of it is counted.
    let mut text = String::new();
    eventually("the scrape counts every call", || {
        text = scrape(proxy.admin);
        let s = Scrape::parse(&text);
        let v = |name: &str, labels: &[(&str, &str)]| s.value(name, labels).unwrap_or(0.0);
        let req = "b24proxy_requests_total";
        v(req, &[("method", UPDATE), ("status_class", "2xx")]) >= 1.0
            && v(req, &[("method", UPDATE), ("status_class", "4xx")]) >= 2.0
            && v(req, &[("method", "other"), ("status_class", "2xx")]) >= 1.0
            && v(req, &[("method", "other"), ("status_class", "4xx")]) >= 1.0
            && v(req, &[("method", "other"), ("status_class", "5xx")]) >= 1.0
            && v(
                "b24proxy_policy_decisions_total",
                &[("rule", "deny_empty_type_ids"), ("decision", "deny")],
            ) >= 1.0
            && v("b24proxy_audit_events_total", &[("outcome", "applied")]) >= 1.0
            && v("b24proxy_audit_events_total", &[("outcome", "denied")]) >= 1.0
            && v(
                "b24proxy_audit_events_total",
                &[("outcome", "rejected_by_portal")],
            ) >= 1.0
            && v("b24proxy_upstream_errors_total", &[("kind", "status")]) >= 1.0
            && ["reset", "invalid", "timeout", "connect"]
                .iter()
                .map(|k| v("b24proxy_upstream_errors_total", &[("kind", k)]))
                .sum::<f64>()
                >= 1.0
            && v("b24proxy_in_flight_requests", &[]) == 0.0
            && v("b24proxy_refusals_total", &[("code", "POLICY_VIOLATION")]) >= 1.0
            && v("b24proxy_refusals_total", &[("code", "NON_CANONICAL_PATH")]) >= 1.0
            && v("b24proxy_identity_cache_requests_total", &[("result", "miss")]) >= 1.0
            && v("b24proxy_identity_cache_requests_total", &[("result", "hit")]) >= 1.0
            // Each audited call commits two entries (intent, outcome); the head is read from
            // the file at the scrape.
            && v("b24proxy_audit_chain_head_seq", &[]) >= 8.0
            && v("b24proxy_audit_last_commit_timestamp_seconds", &[]) > 1.0e9
            && v("b24proxy_audit_database_bytes", &[]) > 0.0
            && v("b24proxy_max_connections", &[]) == 10_000.0
            && v("b24proxy_config_last_reload_successful", &[]) == 1.0
            && v("process_resident_memory_bytes", &[]) > 0.0
    })
    .await;

    let port = closed_port();
    let orphan = TestProxy::builder(port).start();
    let unreachable = get(&orphan.hook_url("crm.deal.list")).await;
    assert_eq!(
        unreachable.status,
        StatusCode::BAD_GATEWAY,
        "{:?}",
        unreachable
    );
    let mut orphan_text = String::new();
    eventually("the connect failure is counted", || {
        orphan_text = scrape(orphan.admin);
        Scrape::parse(&orphan_text)
            .value("b24proxy_upstream_errors_total", &[("kind", "connect")])
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(tmp.path(), "ops");
    let tls = TestProxy::builder(sim.addr)
        .extra(&format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        ))
        .start();
    let tls_text = scrape(tls.admin);

    drop(tls);
    drop(orphan);
    drop(proxy);
    sim.shutdown().await;
    (text, orphan_text, tls_text)
}

/// The scrapes of [`exercised_scrapes`] as one: every family any of them exports.
async fn exercised_scrape() -> Scrape {
    let (text, orphan_text, tls_text) = exercised_scrapes().await;
    Scrape::parse(&format!("{text}{orphan_text}{tls_text}"))
}

/// Checks one expression against a scrape and returns the label names its result may carry
/// (for legend and annotation templates). Panics with `origin` on anything unknown.
fn check_expr(scrape: &Scrape, origin: &str, expr: &str) -> BTreeSet<String> {
    let selectable = scrape.selectable();
    let refs = promql_refs(expr);
    assert!(
        !refs.selectors.is_empty(),
        "{origin}: no metric found in {expr:?}"
    );
    let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for (name, matchers) in &refs.selectors {
        let labels = if PROMETHEUS_SERIES.contains(&name.as_str()) {
            BTreeSet::new()
        } else {
            assert!(
                selectable.contains_key(name),
                "{origin}: {name} is not a series the proxy exports (expression {expr:?}); \
                 the scrape has: {:?}",
                selectable.keys().collect::<Vec<_>>()
            );
            scrape.labels_of(name)
        };
        for m in matchers {
            assert!(
                labels.contains(m) || TARGET_LABELS.contains(&m.as_str()),
                "{origin}: {name} has no label {m:?} (it has {labels:?}); expression {expr:?}"
            );
        }
        available.extend(labels);
    }
    for l in refs.grouping.iter().chain(&refs.bare_matchers) {
        assert!(
            available.contains(l),
            "{origin}: label {l:?} is on none of the series in {expr:?} (they have {available:?})"
        );
    }
    available
}

/// `{{label}}` and `{{ $labels.label }}` placeholders in a template.
fn template_labels(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").expect("closing }}") + start;
        let inner = rest[start + 2..end].trim();
        if let Some(l) = inner.strip_prefix("$labels.") {
            out.push(
                l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        } else if inner.chars().all(|c| c.is_alphanumeric() || c == '_') {
            out.push(inner.to_owned());
        }
        rest = &rest[end + 2..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Dashboard and alert rules

/// Every PromQL expression of the dashboard (panel targets, also inside rows) with its legend,
/// and every templating query.
/// A panel target: (panel title, expression, legend format).
type Target = (String, String, String);
/// A templating variable: (name, query).
type Variable = (String, String);

fn dashboard_queries(dash: &Value) -> (Vec<Target>, Vec<Variable>) {
    fn walk(panels: &[Value], out: &mut Vec<Target>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {title:?} has a target without a PromQL expr: {t}")
                });
                let legend = t["legendFormat"].as_str().unwrap_or("").to_owned();
                out.push((title.clone(), expr.to_owned(), legend));
            }
            if let Some(inner) = p["panels"].as_array() {
                walk(inner, out);
            }
        }
    }
    let mut targets = Vec::new();
    walk(
        dash["panels"].as_array().expect("dashboard has panels"),
        &mut targets,
    );
    let mut templating = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"]
                    .as_str()
                    .expect("templating query string")
                    .to_owned(),
            };
            templating.push((v["name"].as_str().unwrap_or("?").to_owned(), q));
        }
    }
    (targets, templating)
}

fn yaml_file(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn alert_rules() -> Vec<(String, String, serde_yaml_ng::Value)> {
    let doc = yaml_file("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("alert or record name")
                .to_owned();
            let expr = r["expr"].as_str().expect("expr").to_owned();
            out.push((name, expr, r.clone()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn promql_scanner_tells_metrics_from_functions_labels_and_variables() {
    let r = promql_refs(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(b24proxy_request_duration_seconds_bucket{job=~"$job", route!="a,b}"}[$__rate_interval]))) > 0.5 and on (instance) up offset 5m"#,
    );
    let names: Vec<(&str, Vec<&str>)> = r
        .selectors
        .iter()
        .map(|(n, l)| (n.as_str(), l.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "b24proxy_request_duration_seconds_bucket",
                vec!["job", "route"]
            ),
            ("up", vec![]),
        ]
    );
    assert_eq!(r.grouping, vec!["le", "route", "instance"]);
    let r = promql_refs("sum(rate(a_total[5m])) by (kind) / ignoring(kind) group_left count(b:c)");
    let names: Vec<&str> = r.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["a_total", "b:c"]);
    assert_eq!(r.grouping, vec!["kind", "kind"]);

    // check_expr refuses what a scrape does not have.
    let scrape = Scrape::parse(
        "# TYPE x_seconds histogram\n\
         x_seconds_bucket{route=\"a\",le=\"+Inf\"} 1\n\
         x_seconds_sum{route=\"a\"} 1\n\
         x_seconds_count{route=\"a\"} 1\n\
         # TYPE y_total counter\n\
         y_total{kind=\"k\"} 0\n",
    );
    check_expr(
        &scrape,
        "ok",
        "histogram_quantile(0.9, sum by (le, route) (rate(x_seconds_bucket{route=\"a\"}[5m])))",
    );
    check_expr(
        &scrape,
        "ok",
        "sum by (kind, job) (y_total) / on (instance) up",
    );
    for bad in [
        "x_seconds",                         // a histogram is not selectable by its family name
        "rate(x_seconds_sum{le=\"1\"}[5m])", // le is only on _bucket
        "sum by (route) (y_total)",          // not a label of y_total
        "y_total{kind=\"k\", rule=\"r\"}",
        "z_total",
    ] {
        let caught = std::panic::catch_unwind(|| check_expr(&scrape, "bad", bad));
        assert!(caught.is_err(), "check_expr accepted {bad:?}");
    }
}

#[tokio::test]
async fn live_scrape_passes_promtool_check_metrics() {
    let (text, orphan_text, tls_text) = exercised_scrapes().await;
    for (which, body) in [
        ("proxy", &text),
        ("proxy without portal", &orphan_text),
        ("proxy with TLS", &tls_text),
    ] {
        let out = run_promtool(&["check", "metrics"], Some(body), &repo("."));
        let complaints: Vec<&str> = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            out.success && complaints.is_empty(),
            "promtool check metrics complains about the {which}'s scrape:\n{}\n--- scrape ---\n{body}",
            complaints.join("\n")
        );
    }
    // Bounded labels: no value anywhere looks like a path, a secret or an id.
    let s = Scrape::parse(&text);
    for (family, f) in &s.families {
        assert!(
            family.starts_with("b24proxy_") || family.starts_with("process_"),
            "{family}"
        );
        for (_, labels, _) in &f.series {
            for v in labels.values() {
                assert!(
                    !v.contains('/') && !v.contains(SECRET) && !v.contains("238"),
                    "{family} carries an unbounded label value {v:?}"
                );
            }
        }
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo("deploy/prometheus");
    let check = run_promtool(&["check", "rules", "alerts.yml"], None, &dir);
    assert!(
        check.success,
        "promtool check rules failed:\n{}{}",
        check.stdout, check.stderr
    );
    let test = run_promtool(&["test", "rules", "alerts.test.yml"], None, &dir);
    assert!(
        test.success && test.stdout.contains("SUCCESS"),
        "promtool test rules failed:\n{}{}",
        test.stdout,
        test.stderr
    );

    // Every alert has a case where it fires and one where it stays silent.
    let tests = yaml_file("deploy/prometheus/alerts.test.yml");
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let empty = case["exp_alerts"]
                .as_sequence()
                .map(|s| s.is_empty())
                .unwrap_or(true);
            if empty {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let alerts: Vec<String> = alert_rules()
        .into_iter()
        .filter(|(_, _, r)| r["alert"].is_string())
        .map(|(n, _, _)| n)
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for a in &alerts {
        assert!(
            firing.contains(a),
            "alert {a} has no unit test in which it fires"
        );
        assert!(
            silent.contains(a),
            "alert {a} has no unit test in which it stays silent"
        );
    }
    for a in firing.union(&silent) {
        assert!(
            alerts.contains(a),
            "alerts.test.yml tests unknown alert {a}"
        );
    }
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_exported_metrics_and_labels() {
    let scrape = exercised_scrape().await;

    // The dashboard.
    let dash: Value = serde_json::from_str(&read("deploy/grafana/b24-audit-proxy.json"))
        .expect("the dashboard is JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let (targets, templating) = dashboard_queries(&dash);
    assert!(targets.len() >= 10, "{} targets", targets.len());
    let mut used = BTreeSet::new();
    for (title, expr, legend) in &targets {
        let origin = format!("dashboard panel {title:?}");
        let labels = check_expr(&scrape, &origin, expr);
        for l in template_labels(legend) {
            assert!(
                labels.contains(&l),
                "{origin}: legend {legend:?} uses {l:?}, not a label of {expr:?}"
            );
        }
        used.extend(promql_refs(expr).selectors.into_iter().map(|(n, _)| n));
    }
    for (name, query) in &templating {
        let origin = format!("dashboard variable ${name}");
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{origin}: only label_values(...) queries are used"));
        let (selector, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
        let labels = check_expr(&scrape, &origin, selector);
        assert!(
            labels.contains(label.trim()),
            "{origin}: {selector} has no label {label}"
        );
    }
    // The dashboard shows every family the proxy exports.
    let selectable = scrape.selectable();
    let shown: BTreeSet<&String> = used.iter().filter_map(|n| selectable.get(n)).collect();
    for family in scrape.families.keys() {
        assert!(
            shown.contains(family),
            "the dashboard shows nothing of {family}"
        );
    }

    // The alert rules.
    for (name, expr, rule) in alert_rules() {
        let origin = format!("alert {name}");
        let labels = check_expr(&scrape, &origin, &expr);
        for field in ["labels", "annotations"] {
            if let Some(map) = rule[field].as_mapping() {
                for v in map.values().filter_map(|v| v.as_str()) {
                    for l in template_labels(v) {
                        assert!(
                            labels.contains(&l),
                            "{origin}: {field} use $labels.{l}, not a label of {expr:?}"
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn metrics_catalog_lists_exactly_the_exported_families() {
    let scrape = exercised_scrape().await;
    let doc = read("docs/metrics.md");

    // Sections: "### `b24proxy_name`" up to the next heading.
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            current = line
                .strip_prefix("### `")
                .and_then(|l| l.strip_suffix('`'))
                .map(str::to_owned);
            if let Some(name) = &current {
                assert!(
                    sections.insert(name.clone(), String::new()).is_none(),
                    "docs/metrics.md lists {name} twice"
                );
            }
            continue;
        }
        if let Some(name) = &current {
            let s = sections.get_mut(name).expect("section");
            s.push_str(line);
            s.push('\n');
        }
    }
    let documented: BTreeSet<&String> = sections.keys().collect();
    let exported: BTreeSet<&String> = scrape.families.keys().collect();
    assert_eq!(
        documented, exported,
        "docs/metrics.md must list exactly the families of a live scrape"
    );

    for (name, family) in &scrape.families {
        let section = &sections[name];
        let row = |key: &str| -> String {
            section
                .lines()
                .find_map(|l| {
                    let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                    (cells.len() >= 3 && cells[1] == key).then(|| cells[2].to_owned())
                })
                .unwrap_or_else(|| panic!("docs/metrics.md: {name} has no `| {key} |` row"))
        };
        assert_eq!(row("type"), family.kind, "docs/metrics.md: type of {name}");
        let labels: BTreeSet<String> = family
            .series
            .iter()
            .flat_map(|(_, l, _)| l.keys().cloned())
            .filter(|l| l != "le")
            .collect();
        let documented_labels: BTreeSet<String> = row("labels")
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert_eq!(
            documented_labels, labels,
            "docs/metrics.md: labels of {name}"
        );
        // Every label value of the closed sets is named (the version is whatever was built).
        for (_, l, _) in &family.series {
            for (k, v) in l {
                // Open by design: the build's version, the configured portals' names.
                if k == "le" || k == "version" || k == "portal" {
                    continue;
                }
                assert!(
                    section.contains(&format!("`{v}`")),
                    "docs/metrics.md: {name} does not name the {k} value `{v}`"
                );
            }
        }
        let unit = row("unit");
        if name.ends_with("_seconds") {
            assert_eq!(unit, "seconds", "docs/metrics.md: unit of {name}");
        }
    }
}

/// The multi-document YAML files under `deploy/kubernetes`, parsed.
fn kubernetes_objects() -> Vec<(String, serde_yaml_ng::Value)> {
    kubernetes_objects_in("deploy/kubernetes")
}

/// The multi-document YAML files of one kustomization directory, parsed.
fn kubernetes_objects_in(dir: &str) -> Vec<(String, serde_yaml_ng::Value)> {
    let dir = repo(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("kustomization directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("manifest");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            let file = f.file_name().expect("name").to_string_lossy().into_owned();
            for key in ["apiVersion", "kind"] {
                assert!(v[key].is_string(), "{file}: an object without {key}");
            }
            assert!(
                v["kind"] == "Kustomization" || v["metadata"]["name"].is_string(),
                "{file}: a {} without metadata.name",
                v["kind"].as_str().unwrap_or("?")
            );
            out.push((file, v));
        }
    }
    out
}

fn pod_labels_of(sts: &serde_yaml_ng::Value) -> &serde_yaml_ng::Mapping {
    sts["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod labels")
}

fn one_of<'a>(
    objects: &'a [(String, serde_yaml_ng::Value)],
    kind: &str,
) -> &'a serde_yaml_ng::Value {
    let found: Vec<_> = objects.iter().filter(|(_, v)| v["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    &found[0].1
}

/// `config`, with every path under `/var/run/secrets/` replaced by a stand-in file in `tmp`,
/// passes `check-config`.
fn check_config_with_stand_ins(config: &str, tmp: &Path) {
    let toml: toml::Value = config.parse().expect("TOML");
    let mut text = config.to_owned();
    for (section, key) in [
        ("admin", "token_file"),
        ("audit", "password_file"),
        ("audit", "key_file"),
    ] {
        let Some(path) = toml[section].get(key).and_then(|v| v.as_str()) else {
            continue;
        };
        let name = Path::new(path).file_name().expect("file name");
        let stand_in = tmp.join(name);
        // A fingerprint key is 32 bytes in hex; the others are any one line.
        std::fs::write(&stand_in, "00".repeat(32) + "\n").expect("stand-in");
        text = text.replace(path, &stand_in.display().to_string());
    }
    let path = tmp.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("check-config runs");
    assert!(
        out.status.success(),
        "the config.toml is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_postgres_overlay_runs_replicas_with_a_disruption_budget_on_the_sqlite_base() {
    let objects = kubernetes_objects_in("deploy/kubernetes-postgres");
    let kustomization = one_of(&objects, "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    let files: BTreeSet<&str> = objects
        .iter()
        .filter(|(f, v)| v["kind"] != "Kustomization" && f != "config-patch.yaml")
        .map(|(f, _)| f.as_str())
        .collect();
    let mut expected = files.clone();
    expected.insert("../kubernetes");
    assert_eq!(
        listed, expected,
        "the base and every manifest but the patch"
    );
    let patches = kustomization["patches"].as_sequence().expect("patches");
    let deletes_sts = patches.iter().any(|p| {
        p["patch"]
            .as_str()
            .is_some_and(|t| t.contains("$patch: delete") && t.contains("kind: StatefulSet"))
    });
    assert!(deletes_sts, "the base's StatefulSet is removed");
    assert!(
        patches
            .iter()
            .any(|p| p["path"].as_str() == Some("config-patch.yaml")),
        "the config is replaced"
    );

    // The base's Services and NetworkPolicy select these pods too.
    let base = kubernetes_objects();
    let deployment = one_of(&objects, "Deployment");
    let pod_labels = pod_labels_of(deployment);
    for (_, v) in base
        .iter()
        .filter(|(_, v)| v["kind"] == "Service" || v["kind"] == "NetworkPolicy")
    {
        let selector = if v["kind"] == "Service" {
            &v["spec"]["selector"]
        } else {
            &v["spec"]["podSelector"]["matchLabels"]
        };
        for (k, val) in selector.as_mapping().expect("selector") {
            assert_eq!(
                pod_labels.get(k),
                Some(val),
                "{:?} selects the pods",
                v["kind"]
            );
        }
    }
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "replicas: {replicas}");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0),
        "a rollout never leaves fewer replicas serving"
    );
    let pdb = one_of(&objects, "PodDisruptionBudget");
    let min = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert!(
        min >= 1 && min < replicas,
        "minAvailable {min} of {replicas}"
    );
    for (k, v) in pdb["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("PDB selector")
    {
        assert_eq!(pod_labels.get(k), Some(v), "the budget selects the pods");
    }

    // The config names a PostgreSQL database without a password, and is one the binary takes.
    let cm = one_of(&objects, "ConfigMap");
    let config = cm["data"]["config.toml"].as_str().expect("config.toml");
    let toml: toml::Value = config.parse().expect("TOML");
    let database = toml["audit"]["database"].as_str().expect("audit.database");
    assert!(database.starts_with("postgres://"), "{database}");
    let url = b24_audit_proxy::audit::pg_url::PgUrl::parse(database).expect("a PostgreSQL URL");
    assert!(
        url.password.is_none(),
        "the password comes from the Secret, not the URL"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    check_config_with_stand_ins(config, tmp.path());

    // The password and key files are on a mounted Secret that the overlay generates with
    // those keys; no volume claims (nothing is kept on a pod).
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"].as_sequence().expect("containers")[0];
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    let generated = kustomization["secretGenerator"]
        .as_sequence()
        .expect("secretGenerator");
    for key in ["password_file", "key_file"] {
        let path = toml["audit"][key].as_str().expect(key);
        let mount = mounts
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| Path::new(path).starts_with(p))
            })
            .unwrap_or_else(|| panic!("audit.{key} {path} is on a mounted volume"));
        let volume = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the volume");
        let secret = volume["secret"]["secretName"].as_str().expect("a Secret");
        let file = Path::new(path)
            .file_name()
            .and_then(|f| f.to_str())
            .expect("file name");
        assert!(
            generated.iter().any(|g| g["name"] == secret
                && g["files"]
                    .as_sequence()
                    .is_some_and(|fs| fs.iter().any(|f| f.as_str() == Some(file)))),
            "Secret {secret} with {file} is generated by the overlay"
        );
    }
    assert!(pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .all(|v| v.get("persistentVolumeClaim").is_none()));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_str(),
            Some("admin"),
            "{probe}"
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
}

#[test]
fn kubernetes_manifests_are_well_formed_and_match_the_binary() {
    let objects = kubernetes_objects();

    // The kustomization lists every other manifest.
    let kustomization = one_of(&objects, "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    let files: BTreeSet<&str> = objects
        .iter()
        .filter(|(_, v)| v["kind"] != "Kustomization")
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources");

    // The config in the ConfigMap is one the binary accepts.
    let cm = one_of(&objects, "ConfigMap");
    let config = cm["data"]["config.toml"]
        .as_str()
        .expect("ConfigMap data config.toml");
    let toml: toml::Value = config.parse().expect("TOML");
    // The admin listener is beyond loopback, so a token is configured (the binary refuses to
    // start otherwise); check-config reads it, so the copy points at a stand-in file.
    let token_file = toml["admin"]["token_file"]
        .as_str()
        .expect("[admin] token_file: the admin listener is not on loopback");
    let tmp = tempfile::tempdir().expect("tempdir");
    let stand_in = tmp.path().join("admin.token");
    std::fs::write(&stand_in, "stand-in-token\n").expect("token");
    let path = tmp.path().join("config.toml");
    std::fs::write(
        &path,
        config.replace(token_file, &stand_in.display().to_string()),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("check-config runs");
    assert!(
        out.status.success(),
        "the ConfigMap's config.toml is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port_of = |key: &str| -> u64 {
        toml[key]["listen"]
            .as_str()
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("{key}.listen has a port"))
    };
    let (proxy_port, admin_port) = (port_of("server"), port_of("admin"));
    let database = toml["audit"]["database"].as_str().expect("audit.database");

    // One replica (single SQLite writer) with its own volume, probes on the admin port.
    let sts = one_of(&objects, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(1), "replicas: 1");
    let claims = sts["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates");
    assert_eq!(claims.len(), 1);
    let claim = claims[0]["metadata"]["name"].as_str().expect("claim name");
    let pod = &sts["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    let c = &containers[0];
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    let data_mount = mounts
        .iter()
        .find(|m| m["name"] == claim)
        .and_then(|m| m["mountPath"].as_str())
        .expect("the claim is mounted");
    assert!(
        Path::new(database).starts_with(data_mount),
        "audit.database {database} is not on the volume mounted at {data_mount}"
    );
    let ports = c["ports"].as_sequence().expect("ports");
    let port_named = |port: u64| -> String {
        ports
            .iter()
            .find(|p| p["containerPort"].as_u64() == Some(port))
            .and_then(|p| p["name"].as_str())
            .unwrap_or_else(|| panic!("containerPort {port} declared with a name"))
            .to_owned()
    };
    let (proxy_name, admin_name) = (port_named(proxy_port), port_named(admin_port));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        let port_ok = get["port"].as_str() == Some(admin_name.as_str())
            || get["port"].as_u64() == Some(admin_port);
        assert!(port_ok, "{probe} on the admin port");
    }
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true),
        "runAsNonRoot"
    );

    // The token file is on a volume from the Secret the kustomization generates.
    let generated: Vec<&str> = kustomization["secretGenerator"]
        .as_sequence()
        .expect("secretGenerator")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    let token_mount = mounts
        .iter()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|p| Path::new(token_file).starts_with(p))
        })
        .expect("the token file is on a mounted volume");
    let token_volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == token_mount["name"])
        .expect("the token volume");
    let secret = token_volume["secret"]["secretName"]
        .as_str()
        .expect("the token volume is a Secret");
    assert!(
        generated.contains(&secret),
        "Secret {secret} is generated by the kustomization"
    );
    let file_in_secret = Path::new(token_file)
        .file_name()
        .and_then(|f| f.to_str())
        .expect("token file name");
    assert!(
        kustomization["secretGenerator"][0]["files"]
            .as_sequence()
            .expect("files")
            .iter()
            .any(|f| f.as_str() == Some(file_in_secret)),
        "the Secret has the key {file_in_secret}"
    );

    // A NetworkPolicy selects the pod and admits the admin port only from a selected source.
    let policy = one_of(&objects, "NetworkPolicy");
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_mapping()
        .expect("podSelector")
    {
        assert_eq!(
            pod_labels_of(sts).get(k),
            Some(v),
            "NetworkPolicy selects the pod"
        );
    }
    let rules = policy["spec"]["ingress"].as_sequence().expect("ingress");
    let admits_admin = |r: &serde_yaml_ng::Value| {
        r["ports"].as_sequence().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["port"].as_str() == Some(admin_name.as_str())
                    || p["port"].as_u64() == Some(admin_port)
            })
        })
    };
    assert!(
        rules.iter().any(admits_admin),
        "the admin port is admitted from somewhere"
    );
    for r in rules.iter().filter(|r| admits_admin(r)) {
        assert!(
            r["from"].as_sequence().is_some_and(|f| !f.is_empty()),
            "the admin port is admitted only from selected peers, not from everyone"
        );
    }

    // Services select the pod and expose the named ports; the ServiceMonitor scrapes /metrics
    // on the admin port under the job name the alert rules expect.
    let pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod labels");
    let services: Vec<&serde_yaml_ng::Value> = objects
        .iter()
        .filter(|(_, v)| v["kind"] == "Service")
        .map(|(_, v)| v)
        .collect();
    assert!(!services.is_empty(), "no Service");
    let mut service_ports = BTreeSet::new();
    for s in &services {
        for (k, v) in s["spec"]["selector"].as_mapping().expect("selector") {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "Service selector matches the pod"
            );
        }
        for p in s["spec"]["ports"].as_sequence().expect("service ports") {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(
                target == proxy_name || target == admin_name,
                "unknown targetPort {target}"
            );
            service_ports.insert(p["name"].as_str().expect("port name").to_owned());
        }
    }
    let governing = sts["spec"]["serviceName"].as_str().expect("serviceName");
    assert!(
        services.iter().any(|s| s["metadata"]["name"] == governing),
        "the StatefulSet's serviceName {governing} is a Service"
    );
    let sm = one_of(&objects, "ServiceMonitor");
    let endpoints = sm["spec"]["endpoints"].as_sequence().expect("endpoints");
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));
    let sm_port = endpoints[0]["port"].as_str().expect("endpoint port");
    assert!(
        service_ports.contains(sm_port),
        "ServiceMonitor port {sm_port}"
    );
    let job_label = sm["spec"]["jobLabel"].as_str().expect("jobLabel");
    let monitored = services
        .iter()
        .find(|s| {
            s["spec"]["ports"]
                .as_sequence()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == sm_port))
        })
        .expect("a Service carries the monitored port");
    assert_eq!(
        monitored["metadata"]["labels"][job_label].as_str(),
        Some("b24-audit-proxy"),
        "the job label alerts.yml expects"
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("ServiceMonitor selector")
    {
        assert_eq!(monitored["metadata"]["labels"].get(k), Some(v));
    }
}

#[test]
fn systemd_unit_and_dockerfile_match_the_binary() {
    let unit = read("deploy/systemd/b24-audit-proxy.service");
    for needle in [
        "ExecStart=/usr/local/bin/b24-audit-proxy serve --config ",
        "ExecStartPre=/usr/local/bin/b24-audit-proxy check-config --config ",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=b24-audit-proxy",
        "RestrictAddressFamilies=",
        "SystemCallFilter=",
        "KillSignal=SIGTERM",
        "LoadCredential=admin.token:",
        "/run/credentials/b24-audit-proxy.service/admin.token",
    ] {
        assert!(unit.contains(needle), "the systemd unit lacks {needle:?}");
    }
    let no_restart = format!(
        "RestartPreventExitStatus={}",
        b24_audit_proxy::config::EXIT_CONFIG
    );
    assert!(
        unit.contains(&no_restart),
        "a bad config (check-config's exit code) is not restarted: {no_restart}"
    );
    if let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .find(|p| Path::new(p).exists())
    {
        // Only complaints about the unit itself count; the binary is not installed here.
        let out = Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(repo("deploy/systemd/b24-audit-proxy.service"))
            .output()
            .expect("systemd-analyze runs");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let complaints: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !l.contains("/usr/local/bin/b24-audit-proxy"))
            .filter(|l| !l.contains("Failed to prepare filename"))
            .collect();
        assert!(
            complaints.is_empty(),
            "systemd-analyze verify complains:\n{}",
            complaints.join("\n")
        );
    }

    let docker = read("deploy/Dockerfile");
    for needle in [
        "cargo build --release --locked",
        "USER ",
        "VOLUME [\"/var/lib/b24-audit-proxy\"]",
        "HEALTHCHECK",
        "\"healthcheck\"",
        "\"serve\", \"--config\"",
        "ENV B24PROXY_CONFIG=",
    ] {
        assert!(docker.contains(needle), "the Dockerfile lacks {needle:?}");
    }
    // OCI annotations agree with Cargo.toml.
    let cargo_toml: toml::Value = read("Cargo.toml").parse().expect("Cargo.toml");
    let package = &cargo_toml["package"];
    let label = |key: &str| -> String {
        let needle = format!("org.opencontainers.image.{key}=\"");
        let start = docker
            .find(&needle)
            .unwrap_or_else(|| panic!("the Dockerfile has no OCI label {key}"))
            + needle.len();
        docker[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        label("licenses"),
        package["license"].as_str().expect("license")
    );
    assert_eq!(label("title"), package["name"].as_str().expect("name"));
    let version_arg = docker
        .lines()
        .find_map(|l| l.strip_prefix("ARG VERSION="))
        .expect("ARG VERSION=");
    assert_eq!(
        version_arg.trim(),
        package["version"].as_str().expect("version"),
        "the image's default version label is the crate's"
    );
    // No shell in a distroless image: everything runs in exec form.
    for line in docker.lines() {
        for instr in ["CMD ", "ENTRYPOINT "] {
            if let Some(rest) = line.trim().strip_prefix(instr) {
                assert!(rest.starts_with('['), "{instr}in shell form: {line}");
            }
        }
    }
    // The builder is at least the toolchain every locked dependency needs.
    let from = docker
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION=");
    let minor: u32 = from
        .trim()
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("RUST_VERSION 1.N");
    let cargo = read("Cargo.toml");
    let msrv: u32 = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \"1."))
        .and_then(|v| v.split(['.', '"']).next())
        .and_then(|m| m.parse().ok())
        .expect("rust-version");
    assert!(
        minor >= msrv,
        "Dockerfile Rust 1.{minor} < rust-version 1.{msrv}"
    );
}

#[test]
fn healthcheck_command_of_the_dockerfile_works_against_a_real_admin_listener() {
    // The image's HEALTHCHECK runs the binary's own `healthcheck` (the runtime image has no
    // shell), with the config from B24PROXY_CONFIG as the image sets it. Run the same command
    // against a live proxy, and against a closed port.
    let docker = read("deploy/Dockerfile");
    let cmd = docker
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .find_map(|l| l.trim().strip_prefix("CMD "))
        .expect("HEALTHCHECK ... CMD line");
    let script: Vec<String> = serde_json::from_str(cmd).expect("exec-form CMD");
    assert_eq!(script[0], "/usr/local/bin/b24-audit-proxy", "{script:?}");
    // No call is proxied, so the portal may as well be a closed port.
    let proxy = TestProxy::builder(closed_port()).start();
    let config = std::fs::read_to_string(&proxy.config).expect("config");
    let run = |admin: SocketAddr| {
        let path = proxy.dir.join(format!("healthcheck-{}.toml", admin.port()));
        std::fs::write(
            &path,
            config.replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                &format!("[admin]\nlisten = \"{admin}\""),
            ),
        )
        .expect("write config");
        Command::new(BIN)
            .args(&script[1..])
            .env("B24PROXY_CONFIG", &path)
            .output()
            .expect("healthcheck runs")
    };
    let ok = run(proxy.admin);
    assert!(
        ok.status.success(),
        "healthcheck failed against a live proxy: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let down = run(closed_port());
    assert!(
        !down.status.success(),
        "healthcheck passed on a closed port"
    );
    drop(proxy);
}

/// The anchor GitHub gives a Markdown heading: lower-cased, punctuation dropped, spaces to `-`.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let mut anchors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, _, rule) in alert_rules() {
        if rule["alert"].is_null() {
            continue;
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("alert {name} has no runbook_url annotation"));
        let (file, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} has no #anchor"));
        assert!(
            file.starts_with("docs/"),
            "{name}: runbook_url {url} is not under docs/"
        );
        let known = anchors.entry(file.to_owned()).or_insert_with(|| {
            read(file)
                .lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|h| heading_anchor(h.trim_start_matches('#')))
                .collect()
        });
        assert!(
            known.contains(anchor),
            "{name}: {file} has no section #{anchor}"
        );
    }
}
