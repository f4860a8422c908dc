//! Approvals: a refused change carried out after a second person approves it
//! (`POST /v1/events/{id}/approve`). The real binary in front of the simulator; each test checks
//! the answers, what the portal executed, and what the trail says about requester, approver and
//! reason.

mod support;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use support::*;

const ALICE: &str = "alice-approver-token-0001";

/// A proxy with one approver (alice) and the simulator's webhook as the service webhook; with
/// `broker`, also a `[broker]` whose webhooks file holds it (as `crm`).
async fn setup(broker: bool) -> (portal_sim::SimHandle, TestProxy, tempfile::TempDir) {
    let sim = sim().await;
    let dir = tempfile::tempdir().expect("dir");
    let approvers = dir.path().join("approvers.toml");
    std::fs::write(&approvers, format!("alice = \"{ALICE}\"\n")).expect("approvers");
    let service = dir.path().join("service-hook");
    std::fs::write(&service, format!("{USER}/{SECRET}\n")).expect("hook");
    let hooks = dir.path().join("webhooks.toml");
    std::fs::write(&hooks, format!("crm = \"{USER}/{SECRET}\"\n")).expect("webhooks");
    let mut extra = format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\napprovers_file = \"{}\"\n[revert]\nwebhook_file = \"{}\"\n",
        approvers.display(),
        service.display()
    );
    if broker {
        extra.push_str(&format!(
            "[broker]\nwebhooks_file = \"{}\"\n",
            hooks.display()
        ));
    }
    let proxy = TestProxy::builder(sim.addr)
        .dir(dir.path())
        .extra(&extra)
        .start();
    (sim, proxy, dir)
}

async fn approve(proxy: &TestProxy, id: &str, token: Option<&str>, body: Value) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(
        Method::POST,
        &format!("http://{}/v1/events/{id}/approve", proxy.admin),
        &headers,
        body.to_string(),
    )
    .await
}

fn event(proxy: &TestProxy, id: &str) -> Value {
    proxy
        .export()
        .into_iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no event {id}"))
}

async fn refused_unbind(proxy: &TestProxy, url: &str, id: i64) -> String {
    let r = post_json(url, &format!(r#"{{"id":{id},"fields":{{"typeIds":[]}}}}"#)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let _ = proxy;
    r.event_id().expect("refused event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_unbind_all_is_carried_out_after_one_approval() {
    let (sim, proxy, _dir) = setup(false).await;
    let refused = refused_unbind(&proxy, &proxy.hook_url(UPDATE), 267).await;
    assert!(!sim.sim.solution(267).expect("267").type_ids.is_empty());

    let reason = json!({"reason": "CHG-42: Sales moves to the new workplace"});
    for (token, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("not-an-approver-token"), StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(
            approve(&proxy, &refused, token, reason.clone())
                .await
                .status,
            want
        );
    }
    let bad = approve(&proxy, &refused, Some(ALICE), json!({"why": "x"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        sim.sim.executed_mutations().is_empty(),
        "nothing was carried out yet"
    );

    let ok = approve(&proxy, &refused, Some(ALICE), reason.clone()).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let new_id = ok.json()["event_id"].as_str().expect("event id").to_owned();
    assert!(
        sim.sim.solution(267).expect("267").type_ids.is_empty(),
        "carried out"
    );

    let e = event(&proxy, &new_id);
    assert_eq!(e["decision"], "approved");
    assert_eq!(e["rule"], "deny_empty_type_ids");
    assert_eq!(e["outcome"], "applied");
    assert_eq!(e["approval"]["approves"], refused.as_str());
    assert_eq!(e["approval"]["approver"], "alice");
    assert_eq!(e["approval"]["reason"], reason["reason"]);
    // The requester is the service webhook's user (the proxy holds no credential of the
    // original caller); the refused event keeps its own caller.
    assert_eq!(e["caller"]["user_id"], USER);
    assert_eq!(event(&proxy, &refused)["outcome"], "denied");

    // The refused event shows its approval; a second approval is refused.
    let detail = get(&format!("http://{}/v1/events/{refused}", proxy.admin)).await;
    assert_eq!(detail.json()["approved_by"]["event_id"], new_id.as_str());
    assert_eq!(detail.json()["approved_by"]["approver"], "alice");
    let again = approve(&proxy, &refused, Some(ALICE), reason.clone()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["error"], "APPROVED_ALREADY");
    // Only refusals by policy can be approved.
    let applied = approve(&proxy, &new_id, Some(ALICE), reason).await;
    assert_eq!(applied.json()["error"], "NOT_REFUSED_BY_POLICY");
    assert_eq!(sim.sim.executed_mutations().len(), 1);

    let verify = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&proxy.config)
        .output()
        .expect("verify");
    assert!(verify.status.success());
    assert!(
        !proxy.log().contains(ALICE),
        "the approver's token is not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workplace_changed_since_the_refusal_needs_force() {
    let (sim, proxy, _dir) = setup(false).await;
    let refused = refused_unbind(&proxy, &proxy.hook_url(UPDATE), 238).await;
    let renamed = post_json(
        &proxy.hook_url(UPDATE),
        r#"{"id":238,"fields":{"title":"Renamed since"}}"#,
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK);
    let events_before = proxy.export().len();

    let stale = approve(&proxy, &refused, Some(ALICE), json!({"reason": "r"})).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{:?}", stale.body);
    assert_eq!(stale.json()["error"], "WORKPLACE_CHANGED");
    assert!(!sim.sim.solution(238).expect("238").type_ids.is_empty());
    assert_eq!(
        proxy.export().len(),
        events_before,
        "a stale approval records nothing"
    );

    let forced = approve(
        &proxy,
        &refused,
        Some(ALICE),
        json!({"reason": "r", "force": true}),
    )
    .await;
    assert_eq!(forced.status, StatusCode::OK, "{:?}", forced.body);
    assert!(sim.sim.solution(238).expect("238").type_ids.is_empty());
    let e = event(&proxy, forced.json()["event_id"].as_str().expect("id"));
    assert_eq!(e["approval"]["forced"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokered_callers_change_is_carried_out_as_that_integration() {
    let (sim, proxy, _dir) = setup(true).await;
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--name",
            "ci",
            "--webhook",
            "crm",
            "--config",
        ])
        .arg(&proxy.config)
        .output()
        .expect("keys");
    assert!(out.status.success());
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("path")
        .to_owned();
    let url = format!("http://{}{path}{UPDATE}", proxy.proxy);
    let refused = refused_unbind(&proxy, &url, 301).await;
    let ok = approve(&proxy, &refused, Some(ALICE), json!({"reason": "approved"})).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let e = event(&proxy, ok.json()["event_id"].as_str().expect("id"));
    assert_eq!(e["caller"]["integration"], "ci");
    assert_eq!(e["approval"]["approver"], "alice");
    assert!(sim.sim.solution(301).expect("301").type_ids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_lists_shows_and_approves() {
    let (sim, proxy, dir) = setup(false).await;
    let refused = refused_unbind(&proxy, &proxy.hook_url(UPDATE), 267).await;
    // The CLI reaches the running proxy at its real admin port.
    let text = std::fs::read_to_string(&proxy.config).expect("config");
    let text = text.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"{}\"", proxy.admin),
        1,
    );
    let config = dir.path().join("cli.toml");
    std::fs::write(&config, text).expect("cli config");
    let token_file = dir.path().join("alice.token");
    std::fs::write(&token_file, format!("{ALICE}\n")).expect("token");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("approvals")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("approvals runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, listed) = run(&["list"]);
    assert!(
        ok && listed.contains(&refused) && listed.contains("pending"),
        "{listed}"
    );
    let (ok, shown) = run(&["show", &refused]);
    assert!(
        ok && shown.contains("deny_empty_type_ids") && shown.contains("pending"),
        "{shown}"
    );

    let token = token_file.to_string_lossy().into_owned();
    let (ok, out) = run(&[
        "approve",
        &refused,
        "--reason",
        "CHG-7",
        "--token-file",
        &token,
    ]);
    assert!(ok, "{out}");
    assert!(sim.sim.solution(267).expect("267").type_ids.is_empty());
    let (_, listed) = run(&["list"]);
    assert!(listed.contains("approved by alice"), "{listed}");
    let (ok, again) = run(&[
        "approve",
        &refused,
        "--reason",
        "CHG-7",
        "--token-file",
        &token,
    ]);
    assert!(!ok && again.contains("APPROVED_ALREADY"), "{again}");
}

/// A receiver for `notify_url`: holds the first request until `release` fires, answers it 500
/// (so the proxy retries), then 200; every body it got, in order.
struct Receiver {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn receiver() -> Receiver {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let got = bodies.clone();
    tokio::spawn(async move {
        let mut released = Some(released);
        while let Ok((mut s, _)) = listener.accept().await {
            while let Some((buf, head)) = read_request(&mut s).await {
                let start = find(&buf, b"\r\n\r\n").map_or(buf.len(), |i| i + 4);
                let body: Value = serde_json::from_slice(&buf[start..]).unwrap_or(Value::Null);
                let first = got.lock().expect("lock").is_empty();
                got.lock().expect("lock").push(body);
                if let (true, Some(r)) = (first, released.take()) {
                    let _ = r.await;
                }
                let status = if first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = head;
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    Receiver {
        addr,
        bodies,
        release: Some(release),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_are_told_of_a_refusal_without_delaying_the_client() {
    let sim = sim().await;
    let mut rx = receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let service = dir.path().join("service-hook");
    std::fs::write(&service, format!("{USER}/{SECRET}\n")).expect("hook");
    let proxy = TestProxy::builder(sim.addr)
        .dir(dir.path())
        .extra(&format!(
            "\n[revert]\nwebhook_file = \"{}\"\n[approvals]\nnotify_url = \"http://{}/hooks/refusals\"\nnotify_users = [1]\n",
            service.display(),
            rx.addr
        ))
        .start();
    // The receiver holds the notification: the client's answer comes anyway.
    let refused = refused_unbind(&proxy, &proxy.hook_url(UPDATE), 267).await;
    eventually("the first notification reaches the receiver", || {
        !rx.bodies.lock().expect("lock").is_empty()
    })
    .await;
    let _ = rx.release.take().expect("release").send(());
    // The first attempt was answered 500: the proxy tries again.
    eventually("a retry after the 500", || {
        rx.bodies.lock().expect("lock").len() >= 2
    })
    .await;
    let bodies = rx.bodies.lock().expect("lock").clone();
    for b in &bodies[..2] {
        assert_eq!(b["type"], "refusal");
        assert_eq!(b["event_id"], refused.as_str());
        assert_eq!(b["rule"], "deny_empty_type_ids");
        assert_eq!(b["solution_id"], 267);
        assert_eq!(b["caller"]["user_id"], USER);
    }
    // And the portal user was told through the service webhook.
    eventually("im.notify reaches the portal", || {
        calls_of(&sim, "im.notify") == 1
    })
    .await;
    let call = sim
        .sim
        .calls()
        .into_iter()
        .find(|c| c.rest_method.as_deref() == Some("im.notify"))
        .expect("im.notify");
    let text = String::from_utf8_lossy(&call.body).into_owned();
    assert!(
        text.contains(&refused) && text.contains("\"to\":1"),
        "{text}"
    );
    eventually_async(
        "the delivery is counted",
        std::time::Duration::from_secs(10),
        || async {
            proxy
                .metric(r#"b24proxy_notifications_total{result="sent"}"#)
                .await
                == Some(2.0)
        },
    )
    .await;
}
