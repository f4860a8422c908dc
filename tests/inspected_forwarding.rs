//! "The portal executes only what the proxy read and recorded": every call the proxy inspects
//! and lets through — a batch with no watched command, a `crm.type.*` side door, a REST 3.0
//! batch — leaves in the proxy's own encoding (JSON body, its own `Content-Type` and length,
//! allow-listed headers), never in the client's bytes; what cannot be read one way only is
//! refused before anything is forwarded. Named regression cases for the four families of
//! reading differences (batch command splitting, PHP's form reader, header combinations, the
//! proxy's own hop-by-hop handling) and for the refused-path secret leak.

mod support;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;

const OK_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nX-Portal: yes\r\n\r\n{\"result\":true}";

/// What the fixed upstream received for the one request sent: head (lower-cased) and body.
fn received(up: &FixedUpstream) -> (String, Value) {
    let all = up.received.lock().expect("lock").clone();
    assert_eq!(all.len(), 1, "exactly one request reached the portal");
    let req = &all[0];
    let end = find(req, b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
    let body = serde_json::from_slice(&req[end + 4..]).expect("the forwarded body is JSON");
    (head, body)
}

fn header_count(head: &str, name: &str) -> usize {
    head.lines()
        .filter(|l| l.starts_with(&format!("{name}:")))
        .count()
}

#[tokio::test]
async fn an_unwatched_form_batch_leaves_as_the_proxys_json() {
    let up = FixedUpstream::start(OK_ANSWER).await;
    let proxy = TestProxy::builder(up.addr).start();
    let r = send(
        Method::POST,
        &proxy.hook_url("batch"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("connection", "keep-alive, X-Junk"),
            ("x-junk", "1"),
            ("cookie", "PHPSESSID=abc"),
            ("user-agent", "sdk/1"),
        ],
        "CMD[a]=crm.deal.list%3Ffilter%5B%3EID%5D%3D1%26select%5B%5D%3DID%23frag&HALT=N&start=-1",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        &r.body[..],
        b"{\"result\":true}",
        "the answer is the portal's"
    );
    assert_eq!(r.headers["x-portal"], "yes");
    let (head, body) = received(&up);
    assert!(head.starts_with(&format!("post /rest/{USER}/{SECRET}/batch ")));
    assert_eq!(header_count(&head, "content-type"), 1);
    assert!(head.contains("content-type: application/json\r\n"));
    assert!(head.contains("user-agent: sdk/1"));
    for gone in ["x-junk", "cookie", "connection: keep-alive, x-junk"] {
        assert!(!head.contains(gone), "{gone} reached the portal: {head}");
    }
    assert_eq!(
        body,
        json!({"start": "-1", "halt": true, "cmd": {"a": "crm.deal.list?filter[%3EID]=1&select[0]=ID"}})
    );
}

#[tokio::test]
async fn crm_type_calls_and_rest3_batches_leave_in_the_proxys_encoding() {
    let up = FixedUpstream::start(OK_ANSWER).await;
    let proxy = TestProxy::builder(up.addr).start();
    let r = send(
        Method::POST,
        &proxy.hook_url("crm.type.update.xml"),
        &[("content-type", "text/plain")],
        "id=3&fields[title]=A%26B&entityTypeId=1030",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (head, body) = received(&up);
    assert!(
        head.starts_with(&format!("post /rest/{USER}/{SECRET}/crm.type.update.xml ")),
        "the transport the client asked for is kept: {head}"
    );
    assert_eq!(
        body,
        json!({"id": "3", "fields": {"title": "A&B"}, "entityTypeId": "1030"})
    );

    let up = FixedUpstream::start(OK_ANSWER).await;
    let proxy = TestProxy::builder(up.addr).start();
    let r = send(
        Method::POST,
        &format!("http://{}/rest/api/{USER}/{SECRET}/batch?x=1", proxy.proxy),
        &[("content-type", "text/plain")],
        r#"  [{"method": "tasks.task.get", "query": {"id": 1}}]  "#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (head, body) = received(&up);
    assert!(head.starts_with(&format!("post /rest/api/{USER}/{SECRET}/batch?x=1 ")));
    assert!(head.contains("content-type: application/json\r\n"));
    assert_eq!(
        body,
        json!([{"method": "tasks.task.get", "query": {"id": 1}}])
    );
}

/// Family 1: `parse_url` reads `a:crm.automatedsolution.update?…` as scheme `a` and path
/// `crm.automatedsolution.update`, so the portal would run an update a split at `?` calls
/// `a:crm.automatedsolution.update`. Every command `parse_url` reads as a URL is refused.
#[tokio::test]
async fn batch_commands_that_parse_url_reads_as_urls_are_refused() {
    let up = FixedUpstream::start(OK_ANSWER).await;
    let proxy = TestProxy::builder(up.addr).start();
    for cmd in [
        "a:crm.automatedsolution.update?id=238&fields[typeIds]=",
        "x:80?id=238",
        "//portal.example/crm.automatedsolution.update?id=238&fields[typeIds]=",
        "user:pw@host/crm.automatedsolution.update?id=238",
        " crm.automatedsolution.update?id=238&fields[typeIds]=",
        "crm.automatedsolution.update\u{1}?id=238&fields[typeIds]=",
        "crm.deal.list#a:80",
    ] {
        let body = json!({"cmd": {"r": "crm.deal.list", "x": cmd}}).to_string();
        let r = post_json(&proxy.hook_url("batch"), &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{cmd:?}: {:?}", r.body);
        assert_eq!(r.json()["error"], "INVALID_BATCH_COMMAND", "{cmd:?}");
    }
    assert!(
        up.received.lock().expect("lock").is_empty(),
        "nothing forwarded"
    );
}

/// Family 2: PHP's form reader keeps reading past a raw NUL where `parse_str` stops, so a
/// body with one has two readings: refused.
#[tokio::test]
async fn urlencoded_bodies_with_a_raw_nul_are_refused() {
    let (sim, proxy) = sim_and_proxy().await;
    for ct in ["application/x-www-form-urlencoded", "text/plain"] {
        let r = send(
            Method::POST,
            &proxy.hook_url("batch"),
            &[("content-type", ct)],
            &b"cmd[a]=crm.deal.list&x=\0&cmd[b]=crm.automatedsolution.update%3Fid%3D238%26fields%5BtypeIds%5D%3D"[..],
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ct}");
        assert_eq!(r.json()["error"], "UNSUPPORTED_ENCODING");
    }
    assert!(sim.sim.executed_mutations().is_empty());
}

/// Family 3: two `Content-Type` headers are joined by some servers in front of PHP and chosen
/// from by others, so an inspected call carrying two is refused.
#[tokio::test]
async fn two_content_types_on_an_inspected_call_are_refused() {
    let (sim, proxy) = sim_and_proxy().await;
    for method in ["batch", "crm.type.update", "crm.automatedsolution.update"] {
        let r = send(
            Method::POST,
            &proxy.hook_url(method),
            &[
                ("content-type", "text/plain"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "id=238&cmd[a]=crm.deal.list&fields[title]=x",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method}");
        assert_eq!(r.json()["error"], "UNSUPPORTED_ENCODING", "{method}");
    }
    assert!(sim.sim.executed_mutations().is_empty());
}

/// Family 4: a header the client names in `Connection` is dropped by the proxy; when the call
/// left in the client's bytes, dropping `Content-Type` changed the portal's reading. Now the
/// proxy's own `Content-Type` goes with its own body, whatever `Connection` says, and the
/// simulator runs exactly the commands the proxy read.
#[tokio::test]
async fn connection_cannot_change_the_reading_of_a_forwarded_body() {
    let (sim, proxy) = sim_and_proxy().await;
    let r = send(
        Method::POST,
        &proxy.hook_url("batch"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("connection", "Content-Type, Content-Length"),
        ],
        "cmd[a]=crm.automatedsolution.list&cmd[b]=crm.automatedsolution.get%3Fid%3D238",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let v = r.json();
    assert!(
        v["result"]["result"]["b"]["automatedSolution"]["id"] == 238,
        "the portal read the commands the proxy read: {v}"
    );
    assert!(sim.sim.executed_mutations().is_empty());
}

/// A refused path is logged redacted whatever its shape: no secret in the log, the metrics or
/// the database.
#[tokio::test]
async fn refused_paths_never_leak_the_secret() {
    let (_sim, proxy) = sim_and_proxy().await;
    for path in [
        format!("/rest/{USER}%2F{SECRET}%2Fcrm.deal.list"),
        format!("/rest//{USER}/{SECRET}/crm.deal.list"),
        format!("/rest/{USER}/{SECRET}/./crm.deal.list"),
        format!("/rest/{USER}/{SECRET}/../{SECRET}/crm.deal.list"),
        format!("/rest/{USER}/{SECRET}/crm.deal.list/index.php"),
        format!("/rest/{USER}/{SECRET}/crm.deal.list//"),
        format!("/rest/a/{USER}/{SECRET}/crm.deal.list"),
        format!("/rest/api/a/{USER}/{SECRET}/batch"),
        format!("/rest/{USER}/{SECRET}%00/crm.deal.list"),
        format!("/rest/{USER}/{SECRET}/crm.deal.list?auth%5B%5D={SECRET}&%61p={SECRET}"),
        format!("/other/{SECRET}"),
    ] {
        let r = get(&format!("http://{}{path}", proxy.proxy)).await;
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{path}: {}",
            r.status
        );
        assert!(
            find(&r.body, SECRET.as_bytes()).is_none(),
            "{path}: the answer names the secret"
        );
    }
    let metrics = get(&format!("http://{}/metrics", proxy.admin)).await;
    assert!(find(&metrics.body, SECRET.as_bytes()).is_none());
    eventually("the access lines are written", || {
        proxy.log().matches("Request").count() >= 11
    })
    .await;
    assert_no_secrets(&proxy.dir);
}

async fn sim_and_proxy() -> (portal_sim::SimHandle, TestProxy) {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    (sim, proxy)
}
