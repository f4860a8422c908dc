//! Portal faults (issue 6), injected with the simulator's fault queue: connection refused,
//! slow answers past `upstream.request_timeout`, a connection reset mid-response or closed with
//! no answer, 500, 503 `QUERY_LIMIT_EXCEEDED`, 429 `OPERATION_TIME_LIMIT`, invalid JSON.
//!
//! Each fault is tried where it can hit a watched call — on the snapshot read (nothing may be
//! forwarded, nothing recorded) and on the forward itself (the trail must say what the portal
//! did: `unknown` when it executed but no answer was read, `rejected_by_portal` when it
//! answered with its own error, `failed` when nothing reached it) — and on a pass-through call.
//! The client gets the portal's own error, or the proxy's 502/504 envelope: never a 2xx or 3xx
//! for a fault. Every test ends with the secret scan and the chain check.

mod support;

use http::StatusCode;
use portal_sim::{Fault, FaultKind, SimHandle};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const GET: &str = "crm.automatedsolution.get";
/// Debug logs, so the secret scan covers every log line a fault can produce.
const DEBUG_LOG: &str = "[log]\nlevel = \"debug\"\n";

fn status_fault(status: u16, code: &str) -> FaultKind {
    FaultKind::Status {
        status,
        code: code.into(),
        description: format!("injected {code}"),
    }
}

async fn update(proxy: &TestProxy, id: i64, title: &str) -> Reply {
    post_json(
        &proxy.hook_url(UPDATE),
        &format!(r#"{{"id":{id},"fields":{{"title":"{title}"}}}}"#),
    )
    .await
}

/// The proxy's own error envelope with this status and code.
fn assert_envelope(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.json()["error"], code);
    assert!(r.json()["error_description"].is_string());
}

fn never_success(r: &Reply) {
    assert!(
        !r.status.is_success() && !r.status.is_redirection(),
        "a fault must not look like success: {} {:?}",
        r.status,
        r.body
    );
}

/// The event of the trail with this id.
fn event(proxy: &TestProxy, id: &str) -> Value {
    proxy
        .export()
        .into_iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no event {id} in the trail"))
}

/// Every change the simulator executed is in the trail with an outcome that admits it.
fn assert_trail_matches_portal(proxy: &TestProxy, sim: &SimHandle) {
    let events = proxy.export();
    for m in sim.sim.executed_mutations() {
        let title = m
            .after
            .as_ref()
            .map(|s| s.title.clone())
            .unwrap_or_default();
        let records: Vec<&Value> = events
            .iter()
            .filter(|e| e["request"]["params"]["fields"]["title"] == title.as_str())
            .collect();
        assert_eq!(records.len(), 1, "one record for executed {title:?}");
        let outcome = records[0]["outcome"].as_str().unwrap_or("null");
        assert!(
            ["applied", "unknown", "rejected_by_portal"].contains(&outcome),
            "executed {title:?} recorded as {outcome}"
        );
    }
    for e in &events {
        assert!(
            e["outcome"].is_string(),
            "no event left without an outcome: {e}"
        );
    }
    verify_chain(&proxy.db_path());
    assert_no_secrets(&proxy.dir);
}

#[tokio::test]
async fn connection_refused_gives_502_and_forwards_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let proxy = TestProxy::builder(port).extra(DEBUG_LOG).start();
    let pass = get(&proxy.hook_url("crm.deal.list")).await;
    assert_envelope(&pass, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    let w = update(&proxy, 238, "refused").await;
    assert_envelope(&w, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    assert!(
        proxy.export().is_empty(),
        "a failed snapshot records and forwards nothing"
    );
    assert!(
        proxy
            .metric("b24proxy_upstream_errors_total{kind=\"connect\"}")
            .await
            >= Some(2.0)
    );
    let ready = get(&format!("http://{}/readyz", proxy.admin)).await;
    assert_eq!(
        ready.json()["audit"],
        "writable",
        "a portal fault is not an audit fault: {:?}",
        ready.body
    );
    assert_no_secrets(&proxy.dir);
}

/// A portal that answers until it has answered the snapshot read (`crm.automatedsolution.get`),
/// and then stops listening, so the forward that follows is refused at connect: nothing reached
/// the portal. Other requests before it (the proxy's own reachability probe) get a plain answer.
async fn portal_that_dies_after_the_snapshot() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let head = read_request(&mut s).await.map(|(_, head)| head);
            let Some(head) = head else { continue };
            let snapshot = head.contains("crm.automatedsolution.get");
            let body = if snapshot {
                r#"{"result":{"automatedSolution":{"id":238,"title":"HR","typeIds":[14,158]}}}"#
            } else {
                r#"{"result":true}"#
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if snapshot {
                // Stop listening before answering: the forward can only be refused.
                drop(listener);
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
                return;
            }
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn connection_refused_on_the_forward_is_recorded_as_failed() {
    let portal = portal_that_dies_after_the_snapshot().await;
    let proxy = TestProxy::builder(portal).extra(DEBUG_LOG).start();
    let r = update(&proxy, 238, "never arrives").await;
    assert_envelope(&r, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    let e = event(&proxy, &r.event_id().expect("the intent was recorded"));
    assert_eq!(e["outcome"], "failed", "{e}");
    assert_eq!(e["portal_status"], Value::Null);
    assert_eq!(e["after"], e["before"], "nothing changed");
    verify_chain(&proxy.db_path());
    assert_no_secrets(&proxy.dir);
}

#[tokio::test]
async fn slow_portal_past_the_timeout_gives_504_and_the_right_outcome() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra(DEBUG_LOG)
        .upstream_key("request_timeout", "\"1s\"")
        .start();
    let slow = FaultKind::Delay(Duration::from_secs(4));

    // On the forward: the portal executed it, the answer came too late.
    sim.sim.push_fault(fault(UPDATE, slow.clone()));
    let started = std::time::Instant::now();
    let r = update(&proxy, 238, "slow forward").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up at the timeout"
    );
    assert_envelope(&r, StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT");
    assert!(r.event_id().is_some(), "a forwarded call names its event");
    let e = event(&proxy, &r.event_id().expect("id"));
    assert_eq!(e["outcome"], "unknown", "{e}");
    assert_eq!(
        e["after"]["title"], "slow forward",
        "the re-read shows what the portal did"
    );
    assert_eq!(executed(&sim, UPDATE), 1);

    // On the snapshot: nothing forwarded, nothing recorded.
    let updates = calls_of(&sim, UPDATE);
    sim.sim.push_fault(fault(GET, slow.clone()));
    let r = update(&proxy, 267, "slow snapshot").await;
    assert_envelope(&r, StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT");
    assert_eq!(
        calls_of(&sim, UPDATE),
        updates,
        "a failed snapshot forwards nothing"
    );
    assert_eq!(proxy.export().len(), 1);

    // Pass-through.
    sim.sim.push_fault(fault("crm.deal.list", slow));
    let r = get(&proxy.hook_url("crm.deal.list")).await;
    assert_envelope(&r, StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT");
    assert!(
        proxy
            .metric("b24proxy_upstream_errors_total{kind=\"timeout\"}")
            .await
            >= Some(3.0)
    );
    assert_trail_matches_portal(&proxy, &sim);
}

#[tokio::test]
async fn connection_reset_or_closed_mid_answer_gives_502_and_unknown() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).extra(DEBUG_LOG).start();
    for (i, kind) in [FaultKind::ResetMidResponse, FaultKind::CloseWithoutResponse]
        .into_iter()
        .enumerate()
    {
        // On the forward: executed, answer lost.
        let title = format!("lost answer {i}");
        sim.sim.push_fault(fault(UPDATE, kind.clone()));
        let r = update(&proxy, 238, &title).await;
        assert_envelope(&r, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
        let e = event(&proxy, &r.event_id().expect("id"));
        assert_eq!(e["outcome"], "unknown", "{kind:?}: {e}");
        assert_eq!(e["after"]["title"], title.as_str());

        // On the snapshot.
        let updates = calls_of(&sim, UPDATE);
        let records = proxy.export().len();
        sim.sim.push_fault(fault(GET, kind.clone()));
        let r = update(&proxy, 267, "never forwarded").await;
        assert_envelope(&r, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
        assert_eq!(
            calls_of(&sim, UPDATE),
            updates,
            "{kind:?}: nothing forwarded"
        );
        assert_eq!(proxy.export().len(), records);
    }

    // Pass-through: closed before the head, the client gets the 502 envelope.
    sim.sim
        .push_fault(fault("crm.deal.list", FaultKind::CloseWithoutResponse));
    let r = get(&proxy.hook_url("crm.deal.list")).await;
    assert_envelope(&r, StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE");
    // Reset after the head: the status is already on its way, streamed; the client must see
    // a broken body, never a complete 2xx answer.
    sim.sim
        .push_fault(fault("crm.deal.list", FaultKind::ResetMidResponse));
    let raw_reply = raw(
        proxy.proxy,
        format!("GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let split = find(&raw_reply, b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw_reply[..split]).to_ascii_lowercase();
    let body = &raw_reply[split..];
    let complete = match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(n) => body.len() >= n,
        // Chunked: complete only with the last chunk.
        None => body.ends_with(b"0\r\n\r\n"),
    };
    assert!(!complete, "a truncated answer is not completed: {head}");
    assert_trail_matches_portal(&proxy, &sim);
}

#[tokio::test]
async fn portal_error_statuses_are_passed_through_as_is() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).extra(DEBUG_LOG).start();
    let cases = [
        (500, "INTERNAL_SERVER_ERROR"),
        (503, "QUERY_LIMIT_EXCEEDED"),
        (429, "OPERATION_TIME_LIMIT"),
    ];
    for (i, (status, code)) in cases.into_iter().enumerate() {
        let expect = StatusCode::from_u16(status).expect("status");
        // On the forward: the portal refused it (it did not execute): rejected_by_portal.
        sim.sim
            .push_fault(fault(UPDATE, status_fault(status, code)));
        let r = update(&proxy, 238, &format!("refused {i}")).await;
        assert_eq!(r.status, expect, "{code}: {:?}", r.body);
        assert_eq!(r.json()["error"], code, "the portal's own error");
        never_success(&r);
        let e = event(
            &proxy,
            &r.event_id().expect("a forwarded call names its event"),
        );
        assert_eq!(e["outcome"], "rejected_by_portal", "{code}: {e}");
        assert_eq!(e["portal_status"], status);
        assert_eq!(e["portal_error"], code);
        assert_eq!(e["after"], e["before"], "{code}: re-read shows no change");

        // On the snapshot: the portal's answer as is, nothing forwarded or recorded.
        let updates = calls_of(&sim, UPDATE);
        let records = proxy.export().len();
        sim.sim.push_fault(fault(GET, status_fault(status, code)));
        let r = update(&proxy, 267, "never forwarded").await;
        assert_eq!(r.status, expect);
        assert_eq!(r.json()["error"], code);
        assert_eq!(calls_of(&sim, UPDATE), updates, "{code}: nothing forwarded");
        assert_eq!(proxy.export().len(), records);

        // Pass-through.
        sim.sim
            .push_fault(fault("crm.deal.list", status_fault(status, code)));
        let r = get(&proxy.hook_url("crm.deal.list")).await;
        assert_eq!(r.status, expect);
        assert_eq!(r.json()["error"], code);
    }
    assert_eq!(executed(&sim, UPDATE), 0, "a refused call is not executed");
    assert!(sim.sim.solution(238).expect("238").title.starts_with("HR"));
    assert_trail_matches_portal(&proxy, &sim);
}

#[tokio::test]
async fn invalid_json_from_the_portal_gives_502_and_unknown() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).extra(DEBUG_LOG).start();

    sim.sim.push_fault(fault(UPDATE, FaultKind::InvalidJson));
    let r = update(&proxy, 238, "garbled answer").await;
    assert_envelope(&r, StatusCode::BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE");
    let e = event(&proxy, &r.event_id().expect("id"));
    assert_eq!(
        e["outcome"], "unknown",
        "executed, but the answer could not be read: {e}"
    );
    assert_eq!(e["after"]["title"], "garbled answer");
    assert_eq!(executed(&sim, UPDATE), 1);

    let updates = calls_of(&sim, UPDATE);
    sim.sim.push_fault(fault(GET, FaultKind::InvalidJson));
    let r = update(&proxy, 267, "never forwarded").await;
    assert_envelope(&r, StatusCode::BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE");
    assert_eq!(calls_of(&sim, UPDATE), updates, "nothing forwarded");
    assert_eq!(proxy.export().len(), 1);

    // Pass-through is not read by the proxy: the portal's bytes, whatever they are.
    sim.sim
        .push_fault(fault("crm.deal.list", FaultKind::InvalidJson));
    let r = get(&proxy.hook_url("crm.deal.list")).await;
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert_eq!(
        proxy
            .metric("b24proxy_upstream_errors_total{kind=\"invalid\"}")
            .await,
        Some(2.0)
    );
    assert_trail_matches_portal(&proxy, &sim);
}

#[tokio::test]
async fn after_faults_the_next_calls_work_normally() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).extra(DEBUG_LOG).start();
    for kind in [
        FaultKind::ResetMidResponse,
        FaultKind::CloseWithoutResponse,
        FaultKind::InvalidJson,
        status_fault(503, "QUERY_LIMIT_EXCEEDED"),
    ] {
        sim.sim.push_fault(Fault {
            method: None,
            times: 1,
            kind,
        });
        never_success(&update(&proxy, 301, "x").await);
    }
    let ok = update(&proxy, 301, "fine again").await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(
        ok.json()["result"]["automatedSolution"],
        json!({"id":301,"title":"fine again","typeIds":[172]})
    );
    assert_trail_matches_portal(&proxy, &sim);
}
