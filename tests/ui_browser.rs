//! The audit timeline page (`/ui/` on the admin listener) in a real browser: the proxy binary in
//! front of the simulator with an admin token, a handful of events made through it (applied
//! updates, a refusal, a 50-type workplace, a hostile long title), then
//! `tests/ui/timeline.test.mjs` drives headless Debian Chromium with playwright-core against
//! the admin listener on 127.0.0.1 — token prompt, newest-first listing, filters, keyboard,
//! event and workplace views, layout with long content.
//!
//! Node, Chromium and `tests/ui/node_modules` are installed by `scripts/test`; without them
//! this test fails saying so, rather than passing silently. On a failure the script saves a
//! screenshot under `target/ui-test-output/` and prints its path. With `UI_SCREENSHOT=1` it
//! also writes `docs/ui-timeline.png` (the README's picture of the timeline).

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TOKEN_VALUE: &str = "ui-test-admin-token";
const APPROVER_TOKEN: &str = "ui-test-approver-token-1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Fails with what to run when a browser-test tool is missing.
fn require_tools() {
    let fix = "run ./scripts/test (it installs them), or: apt-get install chromium && npm ci --prefix tests/ui";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the browser test needs Node.js (node on PATH); {fix}"
    );
    assert!(
        chromium().is_file(),
        "the browser test needs Chromium at {} (Debian package `chromium`, or set CHROMIUM); {fix}",
        chromium().display()
    );
    assert!(
        root()
            .join("tests/ui/node_modules/playwright-core/package.json")
            .is_file(),
        "the browser test needs tests/ui/node_modules (playwright-core); {fix}"
    );
}

/// One watched call through the proxy; returns its audit event id.
async fn change(proxy: &TestProxy, body: &str, expect: http::StatusCode) -> String {
    let r = post_json(&proxy.hook_url(UPDATE), body).await;
    assert_eq!(r.status, expect, "{body}: {:?}", r.body);
    r.event_id().expect("an audit event id")
}

// Multi-threaded: the browser script runs on the blocking pool while the in-process simulator
// keeps answering (the page itself only reads the trail, but the proxy stays up beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_page_works_in_headless_chromium() {
    require_tools();
    let sim = sim().await;
    let big_types: Vec<i64> = (5001..=5050).collect();
    let big = sim.sim.insert_solution("Fifty smart processes", &big_types);

    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN_VALUE}\n")).expect("token");
    // An approver, and the service webhook an approved change of an OAuth caller is sent with.
    let approvers = dir.path().join("approvers.toml");
    std::fs::write(&approvers, format!("alice = \"{APPROVER_TOKEN}\"\n")).expect("approvers");
    let service = dir.path().join("service-hook");
    std::fs::write(&service, format!("{USER}/{SECRET}\n")).expect("hook");
    let proxy = TestProxy::builder(sim.addr)
        .extra(&format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\napprovers_file = \"{}\"\n\
             [revert]\nwebhook_file = \"{}\"\n",
            token_file.display(),
            approvers.display(),
            service.display()
        ))
        .start();
    use http::StatusCode as S;

    // Oldest first. The unusual events come first so the top of the timeline (the README's
    // screenshot) shows ordinary ones.
    let long_title = format!(
        "<img src=x onerror=\"window.__xss=1\"> Support — {} {}",
        "a-very-long-title-without-any-space-".repeat(12),
        "and then many ordinary words ".repeat(20)
    );
    let long_title_id = change(
        &proxy,
        &json!({"id": 301, "fields": {"title": long_title}}).to_string(),
        S::OK,
    )
    .await;
    let big_cut = change(
        &proxy,
        &json!({"id": big.id, "fields": {"typeIds": &big_types[..25]}}).to_string(),
        S::OK,
    )
    .await;
    let big_back = change(
        &proxy,
        &json!({"id": big.id, "fields": {"typeIds": big_types}}).to_string(),
        S::OK,
    )
    .await;
    // Refused by policy, from an OAuth caller (resolved to user 1 with user.current).
    let denied = send(
        http::Method::POST,
        &proxy.url("/rest/crm.automatedsolution.update"),
        &[("content-type", "application/json")],
        format!(r#"{{"id":267,"fields":{{"typeIds":[]}},"auth":"{TOKEN}"}}"#),
    )
    .await;
    assert_eq!(denied.status, S::FORBIDDEN);
    let denied = denied.event_id().expect("event id");
    let renamed = change(
        &proxy,
        r#"{"id":238,"fields":{"title":"HR & Customer Success (EMEA)"}}"#,
        S::OK,
    )
    .await;
    let bound = change(
        &proxy,
        r#"{"id":238,"fields":{"typeIds":[14,158,190]}}"#,
        S::OK,
    )
    .await;
    let unbound = change(&proxy, r#"{"id":238,"fields":{"typeIds":[14,190]}}"#, S::OK).await;

    let events = json!({
        "order": [long_title_id, big_cut, big_back, denied, renamed, bound, unbound],
        "long_title": long_title_id,
        "big_cut": big_cut,
        "big_back": big_back,
        "big_id": big.id,
        "denied": denied,
        "renamed": renamed,
        "bound": bound,
        "unbound": unbound,
    });
    browse(&proxy, &events, "token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_page_needs_none() {
    require_tools();
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let renamed = change(
        &proxy,
        r#"{"id":238,"fields":{"title":"Open"}}"#,
        http::StatusCode::OK,
    )
    .await;
    let denied = change(
        &proxy,
        r#"{"id":267,"fields":{"typeIds":[]}}"#,
        http::StatusCode::FORBIDDEN,
    )
    .await;
    browse(&proxy, &json!({"order": [renamed, denied]}), "open").await;
}

/// Runs the browser script in `mode` and fails with its output (and where the screenshot is).
async fn browse(proxy: &TestProxy, events: &Value, mode: &str) {
    let output = root().join("target/ui-test-output");
    let outcome = run_browser_script(proxy, events, &output, mode).await;
    let report = format!(
        "--- browser script stdout ---\n{}\n--- stderr ---\n{}\n--- proxy log (tail) ---\n{}",
        outcome.stdout,
        outcome.stderr,
        tail(&proxy.log(), 10)
    );
    assert!(
        outcome.success,
        "the browser test failed (screenshots in {}):\n{report}",
        output.display()
    );
    println!("{report}");
    assert!(
        outcome.elapsed < Duration::from_secs(45),
        "took {:?}",
        outcome.elapsed
    );
}

struct ScriptOutcome {
    success: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

async fn run_browser_script(
    proxy: &TestProxy,
    events: &Value,
    output: &Path,
    mode: &str,
) -> ScriptOutcome {
    let mut cmd = Command::new("node");
    cmd.arg("tests/ui/timeline.test.mjs")
        .current_dir(root())
        .env("ADMIN_URL", format!("http://{}", proxy.admin))
        .env("ADMIN_TOKEN", TOKEN_VALUE)
        .env("APPROVER_TOKEN", APPROVER_TOKEN)
        .env("UI_EVENTS", events.to_string())
        .env("UI_MODE", mode)
        .env("CHROMIUM", chromium())
        .env("UI_OUTPUT", output)
        .env("UI_SCREENSHOT_PATH", root().join("docs/ui-timeline.png"))
        // The browser must not reach anything but loopback, whatever the environment says.
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().expect("node starts");
    let pid = child.id();
    let waited = tokio::time::timeout(
        Duration::from_secs(55),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let out = match waited {
        Ok(joined) => joined.expect("join").expect("node output"),
        Err(_) => {
            // Only the process this test started, by its id.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the browser script did not finish within 55 s");
        }
    };
    ScriptOutcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
