//! The pass-through lane (`server.pass_through_lane`): plain HTTP/1.1 pass-through calls relayed
//! by the proxy's own HTTP/1.1 code. Each test drives real sockets: a scripted portal on
//! loopback that answers in the framings the lane must re-frame, and a client that keeps its
//! connection open across calls — keep-alive, pipelining, a watched call in the middle (the
//! connection is handed to hyper), a portal that drops kept connections, idle and stalled
//! clients. The differential test runs the same calls through a proxy with the lane and one
//! without, and requires the same answers and the same requests at the portal.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIST: &str = "crm.deal.list";

/// A portal that answers each request with what `answer` makes of its head (lower-cased),
/// closing the connection after it when `answer` says so.
struct Scripted {
    addr: std::net::SocketAddr,
    /// Each request as received, with the number of the connection it came on.
    received: Arc<Mutex<Vec<Received>>>,
}

type Answer = fn(&str) -> (Vec<u8>, bool);

/// A request's connection number and its bytes.
type Received = (usize, Vec<u8>);

impl Scripted {
    async fn start(answer: Answer) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        // Numbers the connections (the proxy's readiness probe opens some that carry nothing).
        let count = Arc::new(AtomicUsize::new(0));
        let rec = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst);
                let rec = rec.clone();
                tokio::spawn(async move {
                    while let Some((buf, head)) = read_request(&mut s).await {
                        rec.lock().expect("lock").push((id, buf));
                        let (bytes, close) = answer(&head);
                        if s.write_all(&bytes).await.is_err() || close {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, received }
    }

    fn requests(&self) -> Vec<String> {
        let got = self.received.lock().expect("lock");
        got.iter()
            .map(|(_, r)| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// How many distinct connections carried requests.
    fn carrying_connections(&self) -> usize {
        let got = self.received.lock().expect("lock");
        let mut ids: Vec<usize> = got.iter().map(|(id, _)| *id).collect();
        ids.dedup();
        ids.len()
    }
}

/// The answer for a path: each framing the lane handles, chosen by the method name.
fn by_path(head: &str) -> (Vec<u8>, bool) {
    let first = head.lines().next().unwrap_or("");
    let a: &[u8] = if first.contains("chunked.test") {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n"
    } else if first.contains("close.test") {
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
            true,
        );
    } else if first.contains("empty.test") {
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    } else if first.contains("cached.test") {
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
    } else if first.contains("interim.test") {
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    } else if first.starts_with("head ") {
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret-hop\r\nKeep-Alive: timeout=5\r\nX-Portal: 1\r\nContent-Length: 12\r\n\r\n{\"result\":1}"
    };
    (a.to_vec(), false)
}

/// One answer read from a kept-alive connection: status, lower-cased headers, decoded body.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one answer; `no_body` for a HEAD request. Bytes after it stay in `pending`.
async fn read_answer(s: &mut TcpStream, pending: &mut Vec<u8>, no_body: bool) -> Option<Got> {
    let end = loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            break end;
        }
        fill(s, pending).await?;
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut got = Got {
        status,
        headers,
        body: Vec::new(),
    };
    if no_body || status == 204 || status == 304 {
        return Some(got);
    }
    if got.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(e) = find(pending, b"\r\n") {
                    break e;
                }
                fill(s, pending).await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&pending[..line_end]).ok()?, 16).ok()?;
            pending.drain(..line_end + 2);
            while pending.len() < size + 2 {
                fill(s, pending).await?;
            }
            got.body.extend_from_slice(&pending[..size]);
            pending.drain(..size + 2);
            if size == 0 {
                return Some(got);
            }
        }
    }
    let len: usize = got.header("content-length")?.parse().ok()?;
    while pending.len() < len {
        fill(s, pending).await?;
    }
    got.body = pending.drain(..len).collect();
    Some(got)
}

async fn fill(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            pending.extend_from_slice(&chunk[..n]);
            Some(())
        }
        _ => None,
    }
}

fn call(method: &str, verb: &str, extra: &str, body: &str) -> String {
    format!(
        "{verb} /rest/{USER}/{SECRET}/{method}?x=1 HTTP/1.1\r\nHost: proxy\r\nConnection: keep-alive\r\nX-Client: c1\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `request` on a kept connection and reads its answer.
async fn call_on(
    s: &mut TcpStream,
    pending: &mut Vec<u8>,
    no_body: bool,
    request: &str,
) -> Option<Got> {
    s.write_all(request.as_bytes()).await.expect("write");
    read_answer(s, pending, no_body).await
}

async fn handoffs(proxy: &TestProxy) -> f64 {
    proxy
        .metric("b24proxy_lane_handoffs_total")
        .await
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn plain_calls_are_relayed_on_kept_connections_without_hop_by_hop_headers() {
    let portal = Scripted::start(by_path).await;
    let proxy = TestProxy::builder(portal.addr).start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let mut pending = Vec::new();
    for i in 0..3 {
        let body = format!("start={i}");
        let got = call_on(&mut s, &mut pending, false, &call(LIST, "POST", "", &body))
            .await
            .expect("answer");
        assert_eq!(got.status, 200);
        assert_eq!(got.body, b"{\"result\":1}");
        assert_eq!(got.header("x-portal"), Some("1"));
        assert_eq!(got.header("content-length"), Some("12"));
        for hop in ["x-hop", "keep-alive", "connection"] {
            assert_eq!(got.header(hop), None, "{hop} passed on");
        }
    }
    let requests = portal.requests();
    assert_eq!(requests.len(), 3);
    for (i, r) in requests.iter().enumerate() {
        let lower = r.to_ascii_lowercase();
        assert!(
            lower.starts_with(&format!(
                "post /rest/{USER}/{SECRET}/{LIST}?x=1 http/1.1\r\n"
            )),
            "{r}"
        );
        assert!(
            lower.contains(&format!("\r\nhost: {}\r\n", portal.addr)),
            "{r}"
        );
        assert!(lower.contains("\r\nx-client: c1\r\n"), "{r}");
        assert!(!lower.contains("connection:"), "{r}");
        assert!(r.ends_with(&format!("\r\n\r\nstart={i}")), "{r}");
    }
    assert_eq!(
        portal.carrying_connections(),
        1,
        "one kept portal connection"
    );
    assert_eq!(handoffs(&proxy).await, 0.0);
}

#[tokio::test]
async fn chunked_close_delimited_and_bodiless_answers_are_reframed() {
    let portal = Scripted::start(by_path).await;
    let proxy = TestProxy::builder(portal.addr).start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let mut pending = Vec::new();
    let cases: [(&str, &str, Option<&[u8]>, u16); 6] = [
        ("chunked.test", "GET", Some(b"{\"a\":1}"), 200),
        ("close.test", "GET", Some(b"until the end"), 200),
        ("empty.test", "GET", None, 204),
        ("cached.test", "GET", None, 304),
        ("interim.test", "POST", Some(b"ok"), 200),
        (LIST, "HEAD", None, 200),
    ];
    for (method, verb, body, status) in cases {
        let got = call_on(
            &mut s,
            &mut pending,
            verb == "HEAD",
            &call(method, verb, "", ""),
        )
        .await
        .expect(method);
        assert_eq!(got.status, status, "{method}");
        match body {
            Some(b) => assert_eq!(got.body, b, "{method}"),
            None => assert!(got.body.is_empty(), "{method}"),
        }
        assert_eq!(got.header("x-trailer"), None, "trailers are not headers");
        if method == "close.test" || method == "chunked.test" {
            assert_eq!(got.header("transfer-encoding"), Some("chunked"), "{method}");
        }
    }
    // The HEAD answer kept the portal's length; the connection still works after every case.
    let got = call_on(&mut s, &mut pending, false, &call(LIST, "GET", "", ""))
        .await
        .expect("last");
    assert_eq!(got.status, 200);
    assert_eq!(handoffs(&proxy).await, 0.0);
}

#[tokio::test]
async fn pipelined_calls_are_answered_in_order() {
    let portal = Scripted::start(by_path).await;
    let proxy = TestProxy::builder(portal.addr).start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let batch = [
        call("chunked.test", "GET", "", ""),
        call(LIST, "POST", "", "a=1"),
        call("empty.test", "GET", "", ""),
    ]
    .concat();
    s.write_all(batch.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    let statuses = [200, 200, 204];
    let bodies: [&[u8]; 3] = [b"{\"a\":1}", b"{\"result\":1}", b""];
    for (status, body) in statuses.iter().zip(bodies) {
        let got = read_answer(&mut s, &mut pending, false)
            .await
            .expect("answer");
        assert_eq!((got.status, got.body.as_slice()), (*status, body));
    }
}

#[tokio::test]
async fn a_watched_call_hands_the_connection_to_hyper_which_serves_the_rest() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let mut pending = Vec::new();
    let got = call_on(&mut s, &mut pending, false, &call(LIST, "POST", "", ""))
        .await
        .expect("list");
    assert_eq!(got.status, 200);
    let update = r#"{"id":238,"fields":{"title":"via the lane's connection"}}"#;
    let watched = call(
        "crm.automatedsolution.update",
        "POST",
        "Content-Type: application/json\r\n",
        update,
    );
    s.write_all(watched.as_bytes()).await.expect("write");
    let got = read_answer(&mut s, &mut pending, false)
        .await
        .expect("update");
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert!(got.header("x-audit-event-id").is_some(), "audited");
    let got = call_on(&mut s, &mut pending, false, &call(LIST, "POST", "", ""))
        .await
        .expect("list again");
    assert_eq!(got.status, 200);
    assert_eq!(handoffs(&proxy).await, 1.0);
    assert_eq!(proxy.export().len(), 1, "one event in the trail");
}

/// A portal that closes every connection after one answer, without saying so: the lane finds
/// the kept connection closed and opens another, and the client never notices.
#[tokio::test]
async fn a_portal_that_drops_kept_connections_is_reconnected_to() {
    fn then_close(head: &str) -> (Vec<u8>, bool) {
        (by_path(head).0, true)
    }
    let portal = Scripted::start(then_close).await;
    let proxy = TestProxy::builder(portal.addr).start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let mut pending = Vec::new();
    for _ in 0..4 {
        let got = call_on(&mut s, &mut pending, false, &call(LIST, "POST", "", ""))
            .await
            .expect("answer");
        assert_eq!(got.status, 200);
    }
    assert_eq!(
        portal.requests().len(),
        4,
        "each call reached the portal once"
    );
    assert_eq!(
        portal.carrying_connections(),
        4,
        "a new connection for each"
    );
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_nothing_is_forwarded() {
    let portal = Scripted::start(by_path).await;
    let proxy = TestProxy::builder(portal.addr)
        .extra("body_read_timeout = \"1s\"\n")
        .start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let head = format!(
        "POST /rest/{USER}/{SECRET}/{LIST} HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\nabc"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    let got = read_answer(&mut s, &mut pending, false)
        .await
        .expect("answer");
    assert_eq!(got.status, 408);
    assert_eq!(got.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection closes");
    assert!(portal.requests().is_empty(), "nothing forwarded");
}

#[tokio::test]
async fn an_idle_kept_connection_is_closed_after_the_header_read_timeout() {
    let portal = Scripted::start(by_path).await;
    let proxy = TestProxy::builder(portal.addr)
        .extra("header_read_timeout = \"1s\"\n")
        .start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    let mut pending = Vec::new();
    s.write_all(call(LIST, "GET", "", "").as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_answer(&mut s, &mut pending, false)
            .await
            .expect("answer")
            .status,
        200
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "closed with nothing sent: {closed:?}"
    );
}

/// What a client gets and what the portal receives must not depend on the lane: the same
/// calls, through a proxy with it and one without, against the same portal.
#[tokio::test]
async fn the_lane_and_hyper_give_the_same_answers_and_send_the_same_requests() {
    let portal = Scripted::start(by_path).await;
    let lane = TestProxy::builder(portal.addr).start();
    let hyper = TestProxy::builder(portal.addr)
        .extra("pass_through_lane = false\n")
        .start();
    let calls = [
        (
            LIST,
            "POST",
            "Content-Type: application/x-www-form-urlencoded\r\nAccept: */*\r\n",
            "start=50&filter%5BID%5D=1",
        ),
        (LIST, "GET", "X-Request-ID: r-1\r\nCookie: a=b\r\n", ""),
        (LIST, "HEAD", "", ""),
        ("chunked.test", "GET", "", ""),
        ("close.test", "POST", "", "x"),
        ("empty.test", "GET", "", ""),
        ("cached.test", "GET", "If-None-Match: \"x\"\r\n", ""),
        ("interim.test", "POST", "", "y"),
    ];
    let mut answers = Vec::new();
    for proxy in [&lane, &hyper] {
        let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
        let mut pending = Vec::new();
        let mut got = Vec::new();
        for (method, verb, extra, body) in calls {
            let a = call_on(
                &mut s,
                &mut pending,
                verb == "HEAD",
                &call(method, verb, extra, body),
            )
            .await
            .expect(method);
            let mut headers: Vec<(String, String)> =
                a.headers.into_iter().filter(|(k, _)| k != "date").collect();
            headers.sort();
            got.push((a.status, headers, a.body));
        }
        answers.push(got);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(handoffs(&lane).await, 0.0, "the lane served every call");
    // The portal got the same requests, header names compared without case and in order.
    let requests = portal.requests();
    let (via_lane, via_hyper) = requests.split_at(calls.len());
    let normal = |r: &String| {
        let (head, body) = r.split_once("\r\n\r\n").expect("head");
        let mut lines: Vec<String> = head
            .split("\r\n")
            .map(|l| match l.split_once(':') {
                Some((k, v)) => format!("{}:{}", k.to_ascii_lowercase(), v.trim()),
                None => l.to_owned(),
            })
            .collect();
        lines[1..].sort();
        (lines, body.to_owned())
    };
    for (a, b) in via_lane.iter().zip(via_hyper) {
        assert_eq!(normal(a), normal(b));
    }
}

/// Generated calls — header sets with duplicates, odd case, empty and non-ASCII values; every
/// method the lane takes; bodies of random bytes; pipelined or one by one — through both
/// proxies: the portal must receive the same requests and the client the same answers.
#[tokio::test]
async fn generated_calls_reach_the_portal_the_same_with_the_lane_and_without() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("B24_LANE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (B24_LANE_DIFF_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let portal = Scripted::start(by_path).await;
    let lane = TestProxy::builder(portal.addr).start();
    let hyper = TestProxy::builder(portal.addr)
        .extra("pass_through_lane = false\n")
        .start();
    let names = [
        "X-A",
        "x-a",
        "User-Agent",
        "Accept",
        "Cookie",
        "X-Request-ID",
        "x-b_c",
    ];
    let values: [&[u8]; 7] = [
        b"v",
        b"",
        b"a, b",
        b"  padded",
        b"\xc3\xbc",
        b"1;q=0.5",
        b"x\ty",
    ];
    let methods = [
        LIST,
        "chunked.test",
        "close.test",
        "empty.test",
        "interim.test",
    ];
    let mut calls: Vec<(Vec<u8>, bool)> = Vec::new();
    for _ in 0..40 {
        let verb = ["GET", "POST", "HEAD"][rng.gen_range(0..3)];
        let method = methods[rng.gen_range(0..methods.len())];
        let mut req = format!(
            "{verb} /rest/{USER}/{SECRET}/{method}?q={} HTTP/1.1\r\nHost: x\r\n",
            rng.gen_range(0..1000)
        )
        .into_bytes();
        for _ in 0..rng.gen_range(0..6) {
            req.extend_from_slice(names[rng.gen_range(0..names.len())].as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(values[rng.gen_range(0..values.len())]);
            req.extend_from_slice(b"\r\n");
        }
        let body: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
        if !body.is_empty() || rng.gen_bool(0.5) {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(&body);
        calls.push((req, verb == "HEAD"));
    }
    let mut answers = Vec::new();
    for proxy in [&lane, &hyper] {
        let mut got = Vec::new();
        let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
        let mut pending = Vec::new();
        for (req, head) in &calls {
            s.write_all(req).await.expect("write");
            let a = read_answer(&mut s, &mut pending, *head).await;
            let Some(a) = a else {
                got.push(None);
                s = TcpStream::connect(proxy.proxy).await.expect("reconnect");
                pending.clear();
                continue;
            };
            let mut headers: Vec<(String, String)> =
                a.headers.into_iter().filter(|(k, _)| k != "date").collect();
            headers.sort();
            got.push(Some((a.status, headers, a.body)));
        }
        answers.push(got);
    }
    for (i, (a, b)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert_eq!(
            a,
            b,
            "call {i} (seed {seed}): {:?}",
            String::from_utf8_lossy(&calls[i].0)
        );
    }
    // Header lines compared by lower-cased name, values in their order (stable by name).
    let normal = |r: &String| {
        let (head, body) = r.split_once("\r\n\r\n").expect("head");
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("").to_owned();
        let mut fields: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        (first, fields, body.to_owned())
    };
    let requests = portal.requests();
    assert_eq!(
        requests.len(),
        2 * calls.len(),
        "every call reached the portal once per proxy"
    );
    let (via_lane, via_hyper) = requests.split_at(calls.len());
    for (i, (a, b)) in via_lane.iter().zip(via_hyper).enumerate() {
        assert_eq!(normal(a), normal(b), "call {i} (seed {seed})");
    }
    assert_eq!(handoffs(&lane).await, 0.0, "the lane served every call");
}

/// SIGTERM with one kept connection idle and one call in flight in the lane: the idle one is
/// closed at once, the call in flight is answered in full (and told the connection closes),
/// and the proxy exits cleanly.
#[tokio::test]
async fn sigterm_closes_idle_lane_connections_and_finishes_the_call_in_flight() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let portal = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let (g, n) = (gate.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (g, n) = (g.clone(), n.clone());
            tokio::spawn(async move {
                while let Some((_, head)) = read_request(&mut s).await {
                    if n.fetch_add(1, Ordering::SeqCst) > 0 {
                        // Every call after the first waits until the test lets it go.
                        g.notified().await;
                    }
                    let _ = s.write_all(&by_path(&head).0).await;
                }
            });
        }
    });
    let mut proxy = TestProxy::builder(portal).start();
    let mut idle = TcpStream::connect(proxy.proxy).await.expect("connect");
    let mut pending = Vec::new();
    idle.write_all(call(LIST, "GET", "", "").as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_answer(&mut idle, &mut pending, false)
            .await
            .expect("first")
            .status,
        200
    );
    let mut busy = TcpStream::connect(proxy.proxy).await.expect("connect");
    busy.write_all(call(LIST, "POST", "", "a=1").as_bytes())
        .await
        .expect("write");
    eventually("the slow call reached the portal", || {
        seen.load(Ordering::SeqCst) == 2
    })
    .await;

    let pid = proxy.pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection is closed: {closed:?}"
    );
    gate.notify_one();
    let mut pending = Vec::new();
    let got = read_answer(&mut busy, &mut pending, false)
        .await
        .expect("the call in flight is answered");
    assert_eq!(
        (got.status, got.body.as_slice()),
        (200, &b"{\"result\":1}"[..])
    );
    assert_eq!(got.header("connection"), Some("close"));
    let status = proxy.terminate();
    assert!(status.success(), "{status:?}: {}", proxy.log());
}
