//! Whatever the client does, the trail finishes: a client that goes away — closes its
//! HTTP/1.1 connection, resets its HTTP/2 stream — at each phase of an audited update, a body
//! that stalls, an answer never read, and a SIGTERM while a change whose client left is still
//! running. Each case compares what the portal simulator executed with what the trail says,
//! on a proxy that is never restarted in between (a restart would turn an unfinished intent
//! into `unknown`), and checks that the in-flight gauge is back to zero.
//!
//! The simulator's injected delays make the portal slow at the chosen phase; the test waits for
//! that phase by polling (the simulator's call log, the trail, the proxy's gauges), never by
//! sleeping.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portal_sim::{Fault, FaultKind, SimHandle};
use serde_json::Value;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const GET: &str = "crm.automatedsolution.get";
const LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
enum Proto {
    /// The client closes its connection.
    Http1,
    /// The client resets its stream (the connection stays open).
    Http2,
}

fn update_body(title: &str) -> String {
    format!(r#"{{"id":238,"fields":{{"title":"{title}"}}}}"#)
}

/// A request body fed by the test, frame by frame; it ends only when the sender is dropped.
struct Fed(mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// One update on its way through the proxy, sent with the first `sent` bytes of its body; the
/// test abandons it (drops it) at the phase it wants.
enum Pending {
    Http1(Option<TcpStream>),
    Http2 {
        answer: tokio::task::JoinHandle<()>,
        /// Open while the body is incomplete (dropping it ends the stream).
        _body: Option<mpsc::UnboundedSender<Bytes>>,
        _conn: hyper::client::conn::http2::SendRequest<Fed>,
    },
}

impl Pending {
    async fn start(proto: Proto, proxy: &TestProxy, body: &str, sent: usize) -> Pending {
        let path = format!("/rest/{USER}/{SECRET}/{UPDATE}");
        match proto {
            Proto::Http1 => {
                let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.expect("head");
                s.write_all(&body.as_bytes()[..sent]).await.expect("body");
                Pending::Http1(Some(s))
            }
            Proto::Http2 => {
                let tcp = TcpStream::connect(proxy.proxy).await.expect("connect");
                let (mut conn, driver) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .expect("h2 handshake");
                tokio::spawn(driver);
                let (tx, rx) = mpsc::unbounded_channel();
                tx.send(Bytes::copy_from_slice(&body.as_bytes()[..sent]))
                    .expect("feed");
                let req = Request::post(format!("http://{}{path}", proxy.proxy))
                    .header("content-type", "application/json")
                    .header("content-length", body.len())
                    .body(Fed(rx))
                    .expect("request");
                let fut = conn.send_request(req);
                // Dropping (aborting) this task drops the response future: hyper resets the
                // stream (RST_STREAM CANCEL).
                let answer = tokio::spawn(async move {
                    let _ = fut.await;
                });
                Pending::Http2 {
                    answer,
                    _body: (sent < body.len()).then_some(tx),
                    _conn: conn,
                }
            }
        }
    }

    /// The client goes away: the connection closes (HTTP/1.1) or the stream is reset (HTTP/2;
    /// the connection itself stays up until `self` is dropped).
    async fn abandon(&mut self) {
        match self {
            Pending::Http1(s) => drop(s.take()),
            Pending::Http2 { answer, .. } => {
                answer.abort();
                let _ = answer.await;
            }
        }
    }
}

async fn gauge(proxy: &TestProxy, name: &str) -> f64 {
    proxy.metric(name).await.unwrap_or(-1.0)
}

async fn in_flight_is(proxy: &TestProxy, n: f64) {
    eventually_async(
        &format!("b24proxy_in_flight_requests == {n}"),
        LIMIT,
        || async { gauge(proxy, "b24proxy_in_flight_requests").await == n },
    )
    .await;
}

/// The trail's events for workplace changes, oldest first.
fn events(proxy: &TestProxy) -> Vec<Value> {
    proxy.export()
}

/// Waits until the trail holds `n` events, the last one with an outcome, and returns it.
async fn finished_event(proxy: &TestProxy, n: usize) -> Value {
    let mut last = Value::Null;
    eventually_async("the outcome is recorded", LIMIT, || {
        let e = events(proxy);
        let done = e.len() == n && e[n - 1]["outcome"].is_string();
        if done {
            last = e[n - 1].clone();
        }
        async move { done }
    })
    .await;
    last
}

/// After a case: nothing is in flight, and the workplace's lock is free — a plain update goes
/// through at once and is recorded `applied`.
async fn settles(proxy: &TestProxy, sim: &SimHandle, events_before: usize, title: &str) {
    in_flight_is(proxy, 0.0).await;
    let r = post_json(&proxy.hook_url(UPDATE), &update_body(title)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let e = finished_event(proxy, events_before + 1).await;
    assert_eq!(e["outcome"], "applied");
    assert_eq!(e["after"]["title"], title);
    assert_eq!(
        sim.sim.solution(238).map(|s| s.title),
        Some(title.to_owned())
    );
    in_flight_is(proxy, 0.0).await;
}

async fn proxy_for(sim: &SimHandle, extra: &str) -> TestProxy {
    TestProxy::builder(sim.addr).extra(extra).start()
}

fn delay(method: &str, ms: u64) -> Fault {
    Fault {
        method: Some(method.into()),
        times: 1,
        kind: FaultKind::Delay(Duration::from_millis(ms)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_the_body_forwards_and_records_nothing() {
    let sim = sim().await;
    let proxy = proxy_for(&sim, "").await;
    for (i, proto) in [Proto::Http1, Proto::Http2].into_iter().enumerate() {
        let body = update_body(&format!("body-{i}"));
        let mut pending = Pending::start(proto, &proxy, &body, 10).await;
        // The proxy is reading the body now.
        in_flight_is(&proxy, 1.0).await;
        pending.abandon().await;
        in_flight_is(&proxy, 0.0).await;
        assert_eq!(calls_of(&sim, GET) + calls_of(&sim, UPDATE), 0, "{proto:?}");
        assert!(events(&proxy).is_empty(), "{proto:?}: nothing recorded");
    }
    settles(&proxy, &sim, 0, "after-body").await;
    assert_eq!(executed(&sim, UPDATE), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_the_snapshot_forwards_and_records_nothing() {
    let sim = sim().await;
    let proxy = proxy_for(&sim, "").await;
    for (i, proto) in [Proto::Http1, Proto::Http2].into_iter().enumerate() {
        sim.sim.push_fault(delay(GET, 3_000));
        let body = update_body(&format!("snapshot-{i}"));
        let gets = calls_of(&sim, GET);
        let mut pending = Pending::start(proto, &proxy, &body, body.len()).await;
        eventually("the snapshot read reached the portal", || {
            calls_of(&sim, GET) == gets + 1
        })
        .await;
        pending.abandon().await;
        in_flight_is(&proxy, 0.0).await;
        assert_eq!(calls_of(&sim, UPDATE), 0, "{proto:?}: nothing forwarded");
        assert!(events(&proxy).is_empty(), "{proto:?}: nothing recorded");
    }
    // The lock of workplace 238 was released with each abandoned request.
    settles(&proxy, &sim, 0, "after-snapshot").await;
    assert_eq!(executed(&sim, UPDATE), 1);
}

/// Shared by the two cases where the client leaves once the intent is committed: the change
/// is forwarded and its real outcome recorded all the same.
async fn gone_after_the_intent(wait_for_execution: bool) {
    let sim = sim().await;
    let proxy = proxy_for(&sim, "").await;
    for (i, proto) in [Proto::Http1, Proto::Http2].into_iter().enumerate() {
        let title = format!("forward-{i}");
        let before = events(&proxy).len();
        let executed_before = executed(&sim, UPDATE);
        // The portal applies the change, then takes 1.5 s to answer.
        sim.sim.push_fault(delay(UPDATE, 1_500));
        let mut pending = Pending::start(
            proto,
            &proxy,
            &update_body(&title),
            update_body(&title).len(),
        )
        .await;
        eventually_async("the intent is in the trail", LIMIT, || {
            let n = events(&proxy).len();
            async move { n == before + 1 }
        })
        .await;
        if wait_for_execution {
            eventually("the portal executed the change", || {
                executed(&sim, UPDATE) == executed_before + 1
            })
            .await;
        }
        assert!(
            events(&proxy)[before]["outcome"].is_null(),
            "{proto:?}: the client leaves before the outcome"
        );
        pending.abandon().await;
        let e = finished_event(&proxy, before + 1).await;
        assert_eq!(e["outcome"], "applied", "{proto:?}: {e}");
        assert_eq!(e["after"]["title"], title.as_str());
        assert_eq!(executed(&sim, UPDATE), executed_before + 1, "{proto:?}");
        in_flight_is(&proxy, 0.0).await;
    }
    settles(&proxy, &sim, 2, "after-forward").await;
    assert_eq!(executed(&sim, UPDATE), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_right_after_the_intent_still_gets_its_change_recorded() {
    gone_after_the_intent(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_the_forward_still_gets_its_change_recorded() {
    gone_after_the_intent(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_the_outcome_reread_still_gets_the_real_after_state() {
    let sim = sim().await;
    let proxy = proxy_for(&sim, "").await;
    for (i, proto) in [Proto::Http1, Proto::Http2].into_iter().enumerate() {
        let title = format!("outcome-{i}");
        let before = events(&proxy).len();
        // The portal applies the change but answers with an error, so the proxy re-reads the
        // workplace for the outcome; that re-read (the second get) is slow.
        sim.sim.push_fault(applied_then_refused());
        sim.sim.push_fault_after(1, delay(GET, 1_500));
        let gets = calls_of(&sim, GET);
        let mut pending = Pending::start(
            proto,
            &proxy,
            &update_body(&title),
            update_body(&title).len(),
        )
        .await;
        eventually("the outcome re-read reached the portal", || {
            calls_of(&sim, GET) == gets + 2
        })
        .await;
        pending.abandon().await;
        let e = finished_event(&proxy, before + 1).await;
        assert_eq!(e["outcome"], "rejected_by_portal", "{proto:?}: {e}");
        assert_eq!(e["portal_error"], "BX_EMPTY_REQUIRED");
        assert_eq!(
            e["after"]["title"],
            title.as_str(),
            "{proto:?}: the re-read shows the change"
        );
        in_flight_is(&proxy, 0.0).await;
    }
    settles(&proxy, &sim, 2, "after-outcome").await;
    assert_eq!(executed(&sim, UPDATE), 3);
}

/// Reads an HTTP/1.1 answer until the proxy closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_closes_watched_and_pass_through() {
    let sim = sim().await;
    let proxy = proxy_for(&sim, "body_read_timeout = \"300ms\"").await;
    let body = update_body("stalled");
    for path in [
        format!("/rest/{USER}/{SECRET}/{UPDATE}"),
        format!("/rest/{USER}/{SECRET}/crm.lead.add"),
    ] {
        let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&body.as_bytes()[..10]).await.expect("body");
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("\"error\":\"REQUEST_TIMEOUT\""), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"));
    }
    assert_eq!(calls_of(&sim, GET) + calls_of(&sim, UPDATE), 0);
    assert_eq!(
        executed(&sim, "crm.lead.add"),
        0,
        "a truncated upload executes nothing"
    );

    // HTTP/2: the stream gets its 408, the connection stays usable.
    let tcp = TcpStream::connect(proxy.proxy).await.expect("connect");
    let (mut conn, driver) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(driver);
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Bytes::copy_from_slice(&body.as_bytes()[..10]))
        .expect("feed");
    let req = Request::post(format!(
        "http://{}/rest/{USER}/{SECRET}/{UPDATE}",
        proxy.proxy
    ))
    .header("content-type", "application/json")
    .body(Fed(rx))
    .expect("request");
    let resp = tokio::time::timeout(LIMIT, conn.send_request(req))
        .await
        .expect("an answer")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);
    assert!(events(&proxy).is_empty());
    in_flight_is(&proxy, 0.0).await;
    assert_eq!(calls_of(&sim, GET) + calls_of(&sim, UPDATE), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_cut_off_at_the_send_timeout() {
    // A large streamed pass-through answer: far more than the socket buffers hold.
    let mut answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 33554432\r\n\r\n"
            .to_vec();
    answer.resize(answer.len() + 32 * 1024 * 1024, b' ');
    let upstream = FixedUpstream::start(Box::leak(answer.into_boxed_slice())).await;
    let proxy = TestProxy::builder(upstream.addr)
        .extra("send_timeout = \"300ms\"")
        .start();
    let mut s = TcpStream::connect(proxy.proxy).await.expect("connect");
    s.write_all(
        format!("GET /rest/{USER}/{SECRET}/crm.lead.list HTTP/1.1\r\nHost: proxy\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("request");
    // The request reached the portal, so the proxy is streaming the answer to this client.
    eventually("the request reached the upstream", || {
        !upstream.received.lock().expect("lock").is_empty()
    })
    .await;
    // The client holds its socket open and reads nothing: the proxy gives up on it.
    eventually_async("the unread connection is closed", LIMIT, || async {
        gauge(&proxy, "b24proxy_open_connections").await == 0.0
    })
    .await;
    in_flight_is(&proxy, 0.0).await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_change_of_a_client_that_left() {
    let sim = sim().await;
    let mut proxy = proxy_for(&sim, "").await;
    // Answered well after the signal, and well within the test proxy's 2 s grace.
    sim.sim.push_fault(delay(UPDATE, 1_500));
    let body = update_body("drained");
    let mut pending = Pending::start(Proto::Http1, &proxy, &body, body.len()).await;
    eventually_async("the intent is in the trail", LIMIT, || {
        let n = events(&proxy).len();
        async move { n == 1 }
    })
    .await;
    pending.abandon().await;
    // The client is gone; the change is still running when the signal comes.
    assert!(events(&proxy)[0]["outcome"].is_null());
    assert!(proxy.terminate().success());
    let e = &events(&proxy)[0];
    assert_eq!(e["outcome"], "applied", "{e}\n{}", proxy.log());
    assert_eq!(executed(&sim, UPDATE), 1);
    verify_chain(&proxy.db_path());
}
