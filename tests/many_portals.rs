//! `[[portals]]`: one proxy in front of two portal simulators, each served under its own host.
//! Every test drives the real binary over loopback and checks where each call went (the
//! simulators' own records), what the trail says about it, and that a request naming no
//! configured portal — or no host, or two — reaches neither portal.

mod support;

use http::{Method, StatusCode};
use portal_sim::SimHandle;
use serde_json::json;
use std::process::Command;
use support::*;

/// Two simulators and a proxy serving them as `a.test` (any port) and `b.test` (named "b").
async fn two_portals() -> (SimHandle, SimHandle, TestProxy) {
    let a = sim().await;
    let b = sim().await;
    let proxy = TestProxy::builder(a.addr)
        .portal(
            "a.test",
            &format!("url = \"http://{}\"\nname = \"a\"", a.addr),
        )
        .portal(
            "B.test",
            &format!("url = \"http://{}\"\nname = \"b\"", b.addr),
        )
        .start();
    (a, b, proxy)
}

async fn with_host(method: Method, url: &str, host: &str, body: &str) -> Reply {
    send(
        method,
        url,
        &[("host", host), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

fn rest_calls(sim: &SimHandle) -> usize {
    sim.sim.calls().len()
}

#[tokio::test]
async fn each_host_reaches_its_own_portal_and_the_trail_names_it() {
    let (a, b, proxy) = two_portals().await;
    let url = proxy.hook_url(UPDATE);

    let on_a = with_host(
        Method::POST,
        &url,
        "a.test",
        r#"{"id":238,"fields":{"title":"On A"}}"#,
    )
    .await;
    assert_eq!(on_a.status, StatusCode::OK, "{:?}", on_a.body);
    // Case and one trailing dot do not matter; a port does not either for an entry without one.
    let on_b = with_host(
        Method::POST,
        &url,
        "b.TEST.:8080",
        r#"{"id":238,"fields":{"title":"On B"}}"#,
    )
    .await;
    assert_eq!(on_b.status, StatusCode::OK, "{:?}", on_b.body);
    assert_eq!(a.sim.solution(238).expect("a 238").title, "On A");
    assert_eq!(b.sim.solution(238).expect("b 238").title, "On B");

    let events = proxy.export();
    let portal_of = |id: &str| {
        events
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["portal"].clone())
    };
    assert_eq!(
        portal_of(&on_a.event_id().expect("a event")),
        Some(json!("a"))
    );
    assert_eq!(
        portal_of(&on_b.event_id().expect("b event")),
        Some(json!("b"))
    );
    // Each event's before-state was read from its own portal (the simulators start alike, so
    // the second update's before-state shows the first did not reach it).
    let b_event = events.iter().find(|e| e["portal"] == "b").expect("b event");
    assert_ne!(b_event["before"]["title"], "On A");

    // An absolute-form target names the portal itself; its authority wins over `Host`.
    let body = r#"{"id":267,"fields":{"title":"Abs"}}"#;
    let raw_reply = raw(
        proxy.proxy,
        format!(
            "POST http://a.test/rest/{USER}/{SECRET}/{UPDATE} HTTP/1.1\r\nHost: b.test\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n\
             {body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(
        raw_reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw_reply)
    );
    assert_eq!(a.sim.solution(267).expect("a 267").title, "Abs");
    assert_ne!(b.sim.solution(267).expect("b 267").title, "Abs");

    assert_eq!(
        proxy
            .metric(
                r#"b24proxy_portal_requests_total{portal="b",route="watched",status_class="2xx"}"#
            )
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn pass_through_goes_to_the_portal_the_host_names_in_the_lane_and_in_hyper() {
    let (a, b, proxy) = two_portals().await;
    let list = proxy.hook_url("crm.deal.list");
    let (a0, b0) = (calls_of(&a, "crm.deal.list"), calls_of(&b, "crm.deal.list"));

    // Plain HTTP/1.1 (the lane), then a chunked body (handed to hyper).
    let lane = with_host(Method::GET, &list, "b.test", "").await;
    assert_eq!(lane.status, StatusCode::OK, "{:?}", lane.body);
    let chunked = raw(
        proxy.proxy,
        format!(
            "POST /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nHost: a.test\r\n\
             Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\
             Connection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        chunked.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&chunked)
    );
    assert_eq!(calls_of(&a, "crm.deal.list") - a0, 1);
    assert_eq!(calls_of(&b, "crm.deal.list") - b0, 1);
    assert_eq!(
        proxy
            .metric(r#"b24proxy_portal_requests_total{portal="b",route="pass_through",status_class="2xx"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_host_naming_no_portal_or_no_single_host_reaches_neither() {
    let (a, b, proxy) = two_portals().await;
    let before = (rest_calls(&a), rest_calls(&b));
    let update = proxy.hook_url(UPDATE);
    let list = proxy.hook_url("crm.deal.list");
    let body = r#"{"id":238,"fields":{"typeIds":[14]}}"#;

    for (url, method) in [(&update, Method::POST), (&list, Method::GET)] {
        let r = with_host(method, url, "c.test", body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
        assert_eq!(r.json()["error"], "UNKNOWN_PORTAL");
    }
    // A name that is not a host, two Host headers, none at all (HTTP/1.0 may omit it).
    let bad_name = with_host(Method::GET, &list, "a.test@b.test", "").await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_name.json()["error"], "INVALID_HOST");
    for request in [
        format!(
            "GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\
             Connection: close\r\n\r\n"
        ),
        format!("GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.0\r\n\r\n"),
        format!(
            "POST /rest/{USER}/{SECRET}/{UPDATE} HTTP/1.1\r\nHost: a.test\r\nhost: a.test\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    ] {
        let reply = raw(proxy.proxy, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.0 400"),
            "{request:?}: {text}"
        );
        assert!(text.contains("INVALID_HOST"), "{text}");
    }
    assert_eq!(
        (rest_calls(&a), rest_calls(&b)),
        before,
        "nothing reached a portal"
    );
    assert!(proxy.export().is_empty(), "nothing was audited");
    assert_eq!(
        proxy
            .metric(r#"b24proxy_refusals_total{code="UNKNOWN_PORTAL"}"#)
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn readiness_and_metrics_name_each_portal() {
    let a = sim().await;
    // Portal b's address: a port nothing listens on any more.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = gone.local_addr().expect("addr");
    drop(gone);
    let proxy = TestProxy::builder(a.addr)
        .portal(
            "a.test",
            &format!("url = \"http://{}\"\nname = \"a\"", a.addr),
        )
        .portal("b.test", &format!("url = \"http://{dead}\"\nname = \"b\""))
        .start();
    // b is marked unreachable by the first call that fails (or the next probe).
    let r = with_host(Method::GET, &proxy.hook_url("crm.deal.list"), "b.test", "").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    let ready = get(&format!("http://{}/readyz", proxy.admin)).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "one portal down keeps the replica in service"
    );
    assert_eq!(ready.json()["upstream"], "partly_reachable");
    assert_eq!(ready.json()["unreachable_portals"], json!(["b"]));
    assert_eq!(
        proxy
            .metric(r#"b24proxy_portal_reachable{portal="b"}"#)
            .await,
        Some(0.0)
    );
    assert_eq!(
        proxy
            .metric(r#"b24proxy_portal_reachable{portal="a"}"#)
            .await,
        Some(1.0)
    );
}

// Multi-threaded: the CLI runs blocking while the in-process simulators keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_goes_to_the_events_portal_with_its_own_service_webhook() {
    let (a, b, proxy) = two_portals().await;
    let hook = proxy.dir.join("b-hook");
    std::fs::write(&hook, format!("{USER}/{SECRET}\n")).expect("hook");
    // The CLI needs the proxy's real port, and portal b's service webhook.
    let text = std::fs::read_to_string(&proxy.config).expect("config");
    let text = text
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", proxy.proxy),
            1,
        )
        .replacen(
            "name = \"b\"",
            &format!("name = \"b\"\nrevert_webhook_file = \"{}\"", hook.display()),
            1,
        );
    let config = proxy.dir.join("cli.toml");
    std::fs::write(&config, text).expect("cli config");

    let original = b.sim.solution(238).expect("238");
    let changed = with_host(
        Method::POST,
        &proxy.hook_url(UPDATE),
        "b.test",
        r#"{"id":238,"fields":{"title":"Oops on B"}}"#,
    )
    .await;
    let event = changed.event_id().expect("event");
    let a_title = a.sim.solution(238).expect("a 238").title;

    let out = Command::new(BIN)
        .args(["revert", &event, "--apply", "--config"])
        .arg(&config)
        .output()
        .expect("revert runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b.sim.solution(238).expect("b 238").title, original.title);
    assert_eq!(
        a.sim.solution(238).expect("a 238").title,
        a_title,
        "a is untouched"
    );
    let events = proxy.export();
    let revert = events.last().expect("revert event");
    assert_eq!(revert["reverts"], event.as_str());
    assert_eq!(revert["portal"], "b");
}
