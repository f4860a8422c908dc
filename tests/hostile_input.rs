//! Hostile input (issue 6): bodies over the cap, slow headers (slowloris), too many connections,
//! ambiguous framing, hop-by-hop headers, and watched calls with invalid UTF-8, deep nesting or
//! huge numbers. Each is refused cleanly — a 4xx envelope or a closed connection, nothing
//! forwarded — and the proxy keeps serving afterwards.

mod support;

use http::StatusCode;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status of a raw HTTP/1.1 answer, if there is one.
fn status_of(reply: &[u8]) -> Option<u16> {
    let line = reply.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Reads until the peer closes or `limit` passes; returns what came and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}

async fn still_serving(proxy: &TestProxy) {
    let r = get(&proxy.hook_url("crm.deal.list")).await;
    assert_eq!(r.status, StatusCode::OK, "the proxy still serves");
}

#[tokio::test]
async fn bodies_over_the_cap_get_413_and_nothing_is_forwarded() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("max_body_bytes = 1024\n")
        .start();
    let path = format!("/rest/{USER}/{SECRET}/{UPDATE}");
    let big = format!(
        r#"{{"id":238,"fields":{{"title":"{}"}}}}"#,
        "x".repeat(4096)
    );

    // Announced with Content-Length.
    let r = post_json(&proxy.hook_url(UPDATE), &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "REQUEST_TOO_LARGE");

    // Chunked, no length announced: cut off once the cap is passed.
    let chunk = "x".repeat(700);
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nhost: p\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    assert_eq!(
        status_of(&raw(proxy.proxy, chunked.as_bytes()).await),
        Some(413)
    );

    // A huge Content-Length with no body at all: answered at once, the body is not awaited.
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    s.write_all(
        format!("POST {path} HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .expect("write");
    let (reply, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&reply),
        Some(413),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    assert_eq!(calls_of(&sim, UPDATE), 0, "nothing forwarded");
    assert_eq!(
        calls_of(&sim, "crm.automatedsolution.get"),
        0,
        "not even a snapshot"
    );
    still_serving(&proxy).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_read_timeout() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("header_read_timeout = \"1s\"\n")
        .start();
    // Slowloris: a request line, then one header byte every 200 ms, for ever.
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    s.write_all(
        format!("GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nhost: p\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(6) {
        tick.tick().await;
        if s.write_all(b"x").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) => {
                // A 408 answer before the close is fine; keep reading until closed.
            }
            Err(_) => {}
        }
    }
    assert!(cut, "a dripping header is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut near the 1 s timeout, after {:?}",
        started.elapsed()
    );
    assert!(sim.sim.calls().is_empty(), "nothing forwarded");
    still_serving(&proxy).await;
}

/// A connection that never sends a byte — on accept, or idle after a keep-alive answer — holds
/// one of the `max_connections` slots for ever: hyper's header-read timer only starts with the
/// first byte of a request head, so `max_connections` idle sockets shut the proxy out.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_cut_off_too() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("header_read_timeout = \"1s\"\n")
        .start();
    // Nothing at all after connecting.
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        closed && started.elapsed() < Duration::from_secs(4),
        "a silent connection was held for {:?}",
        started.elapsed()
    );
    // Idle after one keep-alive request.
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    s.write_all(
        format!("GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nhost: p\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.expect("answer");
    assert_eq!(status_of(&buf[..n]), Some(200));
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        closed && started.elapsed() < Duration::from_secs(4),
        "an idle keep-alive connection was held for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_are_bounded_by_max_connections() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .extra("max_connections = 3\n")
        .start();
    let request = format!("GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nhost: p\r\n\r\n");
    // Three keep-alive connections, each served once and then held open.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).await.expect("answer");
        assert_eq!(status_of(&buf[..n]), Some(200));
        held.push(s);
    }
    assert_eq!(
        proxy.metric("b24proxy_open_connections").await,
        Some(3.0),
        "three open (the scrape goes to the admin listener, which has its own slots)"
    );
    // A fourth waits in the backlog: no answer while the three are held.
    let mut fourth = TcpStream::connect(proxy.proxy).await.expect("connect");
    fourth.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 65536];
    let waited = tokio::time::timeout(Duration::from_millis(700), fourth.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the fourth connection is not served past the cap"
    );
    // One closes: the fourth is served.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), fourth.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .expect("read");
    assert_eq!(status_of(&buf[..n]), Some(200));
}

/// Duplicate, differing `Content-Length` and a `Transfer-Encoding` other than chunked are
/// refused with 400. `Content-Length` *with* `Transfer-Encoding: chunked` is handled the other
/// way RFC 9112 §6.1 allows (hyper's choice, below the proxy's code): chunked wins, the
/// `Content-Length` is removed before anything is forwarded, and the connection is closed
/// after the answer — so the bytes after the chunked body are never read as a request.
#[tokio::test]
async fn ambiguous_framing_is_refused_or_neutralised_and_never_smuggled() {
    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"result\":1}";
    let upstream = FixedUpstream::start(ANSWER).await;
    let proxy = TestProxy::builder(upstream.addr).start();
    let sim = sim().await;
    let watched = TestProxy::builder(sim.addr).start();
    let pass_path = format!("/rest/{USER}/{SECRET}/crm.deal.add");
    let watched_path = format!("/rest/{USER}/{SECRET}/{UPDATE}");

    let refused = [
        (
            "two different Content-Length",
            "POST {path} HTTP/1.1\r\nhost: p\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 6\r\ncontent-length: 10\r\n\r\nid=238&fie",
        ),
        (
            "Transfer-Encoding that is not chunked",
            "POST {path} HTTP/1.1\r\nhost: p\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: gzip\r\n\r\nid=238",
        ),
        (
            "chunked, then another coding",
            "POST {path} HTTP/1.1\r\nhost: p\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked, gzip\r\n\r\n6\r\nid=238\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST {path} HTTP/1.0\r\nhost: p\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n6\r\nid=238\r\n0\r\n\r\n",
        ),
    ];
    for (what, template) in refused {
        for (addr, path) in [(proxy.proxy, &pass_path), (watched.proxy, &watched_path)] {
            let reply = raw(addr, template.replace("{path}", path).as_bytes()).await;
            assert_eq!(
                status_of(&reply),
                Some(400),
                "{what} on {path}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    assert!(
        upstream.received.lock().expect("lock").is_empty(),
        "no refused message was forwarded"
    );

    // CL + TE, with a second request hidden behind the chunked body.
    let body = r#"{"id":238,"fields":{"title":"te wins"}}"#;
    let hidden = format!("GET /rest/{USER}/{SECRET}/user.current HTTP/1.1\r\nhost: p\r\n\r\n");
    let smuggle = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{hidden}",
            body.len()
        )
    };
    let reply = raw(proxy.proxy, smuggle(&pass_path).as_bytes()).await;
    assert_eq!(status_of(&reply), Some(200));
    assert_eq!(
        reply.windows(12).filter(|w| w == b"HTTP/1.1 200").count(),
        1,
        "one answer: the hidden request is not served"
    );
    let got = upstream.received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "one request forwarded");
    let head = String::from_utf8_lossy(&got[0][..find(&got[0], b"\r\n\r\n").expect("head")])
        .to_ascii_lowercase();
    assert!(
        !head.contains("content-length: 5"),
        "the conflicting length is dropped: {head}"
    );
    assert!(!String::from_utf8_lossy(&got[0]).contains("user.current"));

    let reply = raw(watched.proxy, smuggle(&watched_path).as_bytes()).await;
    assert_eq!(
        status_of(&reply),
        Some(200),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(
        sim.sim.solution(238).expect("238").title,
        "te wins",
        "read as chunked"
    );
    assert_eq!(
        calls_of(&sim, "user.current"),
        0,
        "the hidden request never ran"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-portal: 1\r\nconnection: x-resp-hop\r\nx-resp-hop: secret-ish\r\nkeep-alive: timeout=5\r\nproxy-authenticate: Basic\r\nupgrade: h2c\r\ncontent-length: 12\r\n\r\n{\"result\":1}";
    let upstream = FixedUpstream::start(ANSWER).await;
    let proxy = TestProxy::builder(upstream.addr).start();
    let request = format!(
        "POST /rest/{USER}/{SECRET}/crm.deal.add HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\nx-request-id: keep-me\r\nconnection: close, X-Req-Hop\r\nx-req-hop: drop\r\nkeep-alive: 300\r\nte: trailers\r\nproxy-authorization: Basic Zm9vOmJhcg==\r\nproxy-connection: keep-alive\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    let reply = raw(proxy.proxy, request.as_bytes()).await;
    let split = find(&reply, b"\r\n\r\n").expect("head") + 4;
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-portal: 1"), "{head}");
    for h in ["x-resp-hop", "keep-alive", "proxy-authenticate", "upgrade"] {
        assert!(
            !head.contains(&format!("\n{h}:")),
            "{h} reached the client: {head}"
        );
    }
    let got = upstream.received.lock().expect("lock")[0].clone();
    let got_head = String::from_utf8_lossy(&got[..find(&got, b"\r\n\r\n").expect("head")])
        .to_ascii_lowercase();
    assert!(got_head.contains("x-request-id: keep-me"), "{got_head}");
    for h in [
        "x-req-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !got_head.contains(&format!("\n{h}:")),
            "{h} was forwarded: {got_head}"
        );
    }

    // The audited path builds its own request: the same headers are not carried over.
    let sim = sim().await;
    let watched = TestProxy::builder(sim.addr).start();
    let r = send(
        http::Method::POST,
        &watched.hook_url(UPDATE),
        &[
            ("content-type", "application/json"),
            ("connection", "x-req-hop"),
            ("x-req-hop", "drop"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-request-id", "keep-me"),
        ],
        r#"{"id":238,"fields":{"title":"hop"}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let call = sim
        .sim
        .calls()
        .into_iter()
        .find(|c| c.rest_method.as_deref() == Some(UPDATE))
        .expect("forwarded");
    let names: Vec<String> = call
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert!(names.contains(&"x-request-id".to_owned()), "{names:?}");
    for h in ["x-req-hop", "te", "proxy-authorization"] {
        assert!(!names.contains(&h.to_owned()), "{h} forwarded: {names:?}");
    }
}

#[tokio::test]
async fn oversized_header_sections_are_refused() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let many: String = (0..2000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let reply = raw(
        proxy.proxy,
        format!("GET /rest/{USER}/{SECRET}/crm.deal.list HTTP/1.1\r\nhost: p\r\n{many}\r\n")
            .as_bytes(),
    )
    .await;
    let status = status_of(&reply);
    assert!(
        status.is_none() || status == Some(431) || status == Some(400),
        "{status:?}"
    );
    assert!(sim.sim.calls().is_empty(), "nothing forwarded");
    still_serving(&proxy).await;
}

#[tokio::test]
async fn invalid_utf8_deep_nesting_and_huge_numbers_are_refused_cleanly() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let url = proxy.hook_url(UPDATE);
    let before = sim.sim.solutions();
    let deep_json = format!(
        r#"{{"id":238,"fields":{{"title":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_object = format!(
        r#"{{"id":238,"fields":{}{}}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    );
    let json_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8 in JSON",
            b"{\"id\":238,\"fields\":{\"title\":\"\xff\xfe\"}}".to_vec(),
        ),
        (
            "overlong UTF-8 in JSON",
            b"{\"id\":238,\"fields\":{\"title\":\"\xc0\xaf\"}}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"id":238,"fields":{"title":"\ud800"}}"#.to_vec(),
        ),
        ("deep arrays", deep_json.into_bytes()),
        ("deep objects", deep_object.into_bytes()),
        (
            "id 1e999",
            br#"{"id":1e999,"fields":{"title":"x"}}"#.to_vec(),
        ),
        (
            "id past i64",
            br#"{"id":123456789012345678901234567890,"fields":{"title":"x"}}"#.to_vec(),
        ),
        (
            "id as a float",
            br#"{"id":238.5,"fields":{"title":"x"}}"#.to_vec(),
        ),
        (
            "typeIds past i64",
            br#"{"id":238,"fields":{"typeIds":[14,99999999999999999999999]}}"#.to_vec(),
        ),
        (
            "typeIds 1e400",
            br#"{"id":238,"fields":{"typeIds":[14,1e400]}}"#.to_vec(),
        ),
        (
            "typeIds huge negative",
            br#"{"id":238,"fields":{"typeIds":[14,-1e300]}}"#.to_vec(),
        ),
    ];
    for (what, body) in json_cases {
        let r = send(
            http::Method::POST,
            &url,
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::FORBIDDEN,
            "{what}: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        );
        assert!(r.json()["error"].is_string(), "{what}: an envelope");
    }
    let form_cases = [
        (
            "invalid UTF-8 in a form",
            "id=238&fields[title]=%FF%FE".to_owned(),
        ),
        (
            "invalid UTF-8 in a key",
            "id=238&fields[%C0%AF]=x".to_owned(),
        ),
        (
            "id past i64 in a form",
            "id=99999999999999999999&fields[title]=x".to_owned(),
        ),
    ];
    for (what, body) in &form_cases {
        let r = post_form(&url, body).await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::FORBIDDEN,
            "{what}: {} {:?}",
            r.status,
            r.body
        );
        assert!(r.json()["error"].is_string(), "{what}: an envelope");
        let q = get(&format!("{url}?{body}")).await;
        assert!(
            q.status.is_client_error(),
            "{what} in the query: {}",
            q.status
        );
    }
    assert_eq!(calls_of(&sim, UPDATE), 0, "nothing forwarded");
    assert_eq!(sim.sim.solutions(), before);
    still_serving(&proxy).await;
}

/// PHP drops a form variable nested deeper than `max_input_nesting_level` (64) without a word,
/// and so does `parse_str`; the call then goes ahead without it. Harmless for the portal's
/// state (the canonical re-encoding carries what was evaluated), but it is exactly the "PHP
/// silently does something the client did not mean" case the readers otherwise refuse.
#[tokio::test]
async fn deep_form_keys_in_a_watched_call_are_refused() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let deep_form = format!(
        "id=238&fields[title]=t&fields[typeIds]{}=1",
        "[a]".repeat(100)
    );
    let r = post_form(&proxy.hook_url(UPDATE), &deep_form).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.json()["error"], "INVALID_REQUEST_BODY");
    assert_eq!(calls_of(&sim, UPDATE), 0);
}
