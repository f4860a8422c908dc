//! Safe by default: the admin listener is not served beyond loopback without a token, `/readyz`
//! depends on the audit trail only (unless `ready_requires_portal`), `healthcheck` mirrors
//! `/readyz` in its exit code, configuration comes from the environment when asked
//! (`B24PROXY_CONFIG`, `RUST_LOG`), and the exit codes of `audit verify` tell a tampered chain
//! from an unreadable database and a bad config.

mod support;

use http::StatusCode;
use std::path::Path;
use std::process::{Command, Output};
use support::*;

const MINIMAL: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[audit]\ndatabase = \"DB\"\n[admin]\nlisten = \"ADMIN\"\n";

fn config_file(dir: &Path, name: &str, admin: &str, extra_admin: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = MINIMAL
        .replace("DB", &dir.join("audit.db").display().to_string())
        .replace("ADMIN", admin)
        + extra_admin;
    std::fs::write(&path, text).expect("write config");
    path
}

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("B24PROXY_CONFIG")
        .output()
        .expect("runs")
}

/// A closed port on loopback: bound, then released.
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[test]
fn an_admin_listener_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = config_file(dir.path(), "open.toml", "0.0.0.0:0", "");
    for cmd in ["check-config", "serve"] {
        let out = run(&[cmd], &open);
        assert_eq!(out.status.code(), Some(78), "{cmd}: EX_CONFIG");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("admin.token_file"), "{err}");
        assert!(err.contains("allow_unauthenticated"), "{err}");
    }
    assert!(
        !dir.path().join("audit.db").exists(),
        "serve refused before opening anything"
    );
    let opted_out = config_file(
        dir.path(),
        "opted-out.toml",
        "0.0.0.0:0",
        "allow_unauthenticated = true\n",
    );
    let out = run(&["check-config"], &opted_out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn readiness_does_not_hang_on_the_portal_unless_asked() {
    let port = closed_port();
    let proxy = TestProxy::builder(port).start();
    // A pass-through call that cannot reach the portal marks it unreachable.
    assert_eq!(
        get(&proxy.hook_url("crm.deal.list")).await.status,
        StatusCode::BAD_GATEWAY
    );
    let ready = get(&format!("http://{}/readyz", proxy.admin)).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["audit"], "writable");
    assert_eq!(body["upstream"], "unreachable", "reported in the body");
    assert_eq!(
        proxy.metric("b24proxy_upstream_reachable").await,
        Some(0.0),
        "and in the gauge"
    );

    let strict = TestProxy::builder(port)
        .extra("[admin]\nlisten = \"127.0.0.1:0\"\nready_requires_portal = true\n")
        .start();
    assert_eq!(
        get(&strict.hook_url("crm.deal.list")).await.status,
        StatusCode::BAD_GATEWAY
    );
    let ready = get(&format!("http://{}/readyz", strict.admin)).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.body
    );
    assert_eq!(ready.json()["status"], "not_ready");
}

#[tokio::test]
async fn healthcheck_exits_0_only_when_ready() {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "health-token\n").expect("token");
    let proxy = TestProxy::builder(sim.addr)
        .extra(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token.display()
        ))
        .start();
    let with_port = |admin: std::net::SocketAddr| {
        let text = std::fs::read_to_string(&proxy.config)
            .expect("config")
            .replace(
                "listen = \"127.0.0.1:0\"\ntoken_file",
                &format!("listen = \"{admin}\"\ntoken_file"),
            );
        let path = dir.path().join(format!("hc-{}.toml", admin.port()));
        std::fs::write(&path, text).expect("write");
        path
    };
    let ok = run(&["healthcheck"], &with_port(proxy.admin));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"status\":\"ready\""));
    let down = run(&["healthcheck"], &with_port(closed_port()));
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("not ready:"));
    drop(proxy);
    sim.shutdown().await;
}

#[test]
fn audit_verify_exit_codes_tell_the_failures_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A database that does not exist yet, and one that is not SQLite at all.
    let missing = config_file(dir.path(), "missing.toml", "127.0.0.1:0", "");
    let out = run(&["audit", "verify"], &missing);
    assert_eq!(
        out.status.code(),
        Some(66),
        "unreadable database: EX_NOINPUT"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be read"));
    std::fs::write(dir.path().join("audit.db"), "not a database").expect("write");
    let out = run(&["audit", "verify"], &missing);
    assert_eq!(
        out.status.code(),
        Some(66),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = 1\n").expect("write");
    let out = run(&["audit", "verify"], &bad);
    assert_eq!(out.status.code(), Some(78), "bad config: EX_CONFIG");
}

#[tokio::test]
async fn config_and_log_level_come_from_the_environment() {
    let sim = sim().await;
    // The config says info; RUST_LOG overrides it.
    let proxy = TestProxy::builder(sim.addr)
        .shell_prelude("export RUST_LOG=warn")
        .start();
    let w = post_json(
        &proxy.hook_url("crm.automatedsolution.update"),
        r#"{"id":238,"fields":{"title":"from the environment"}}"#,
    )
    .await;
    assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
    eventually("the start-up warning is logged", || {
        proxy.log().contains("plain http://")
    })
    .await;
    let log = proxy.log();
    assert!(
        !log.contains("Listening"),
        "info lines are filtered out: {log}"
    );

    // No --config: B24PROXY_CONFIG names the file.
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("B24PROXY_CONFIG", &proxy.config)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    // Neither: a usage error naming both.
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env_remove("B24PROXY_CONFIG")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
    drop(proxy);
    sim.shutdown().await;
}
