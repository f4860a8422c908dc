//! The simulator's listener: accepts connections, serves HTTP/1.1 and h2c (hyper-util's auto
//! builder, one task per connection, keep-alive), reads each body, and carries out the faults
//! that act on the connection rather than on the answer.
//!
//! Every request's synchronous part runs under `catch_unwind`: a bug answers 500
//! `INTERNAL_SERVER_ERROR` instead of taking the connection (or the server) down. Shutdown stops
//! accepting, asks open connections to finish gracefully, and aborts the stragglers after a grace
//! period. Not here: TLS (the simulator is plain HTTP on loopback).

use super::control;
use super::dispatch::{Incoming, WireFault};
use super::render::{self, Answer};
use super::route::Transport;
use super::{SimOptions, Simulator};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// Larger bodies are refused with 413, as the portal's front server would; generous, because the
/// simulator must accept whatever the proxy lets through.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How long open connections get to finish after shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (for example, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A running simulator. Dropping it does not stop the server; call [`SimHandle::shutdown`].
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// Stops accepting, lets open connections finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "Portal simulator task failed");
        }
    }
}

/// Binds `addr` (port 0 picks a free port) and serves a new simulator in a background task.
pub async fn spawn(addr: SocketAddr, opts: SimOptions) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Simulator::new(opts);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped handle keeps the server running; only an explicit shutdown stops it.
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let task = tokio::spawn(serve(listener, sim.clone(), shutdown));
    tracing::debug!(%addr, "Portal simulator listening");
    Ok(SimHandle {
        addr,
        sim,
        stop: Some(stop),
        task,
    })
}

/// Serves `sim` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    sim: Arc<Simulator>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(serve_connection(stream, sim.clone(), stop_rx.clone()));
                    // Reap finished connections so the set does not grow without bound.
                    while conns.try_join_next().is_some() {}
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Portal simulator accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
    Ok(())
}

async fn serve_connection(stream: TcpStream, sim: Arc<Simulator>, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let svc = hyper::service::service_fn(move |req| handle_request(sim.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "Portal simulator connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The service's error: tells hyper to drop the connection without answering.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DropConnection {}

async fn handle_request(
    sim: Arc<Simulator>,
    req: Request<IncomingBody>,
) -> Result<Response<SimBody>, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let a = render::error_code(
                413,
                "REQUEST_ENTITY_TOO_LARGE",
                "Request entity too large",
                Transport::Json,
            );
            return Ok(respond(a));
        }
        // The client went away while sending; nobody is left to answer.
        Err(_) => return Err(DropConnection),
    };
    let path = parts.uri.path();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return Ok(respond(control::handle(&sim, &parts.method, path, &body)));
    }
    let incoming = Incoming {
        method: &parts.method,
        path,
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    let (answer, wire) = std::panic::catch_unwind(AssertUnwindSafe(|| sim.handle(incoming)))
        .unwrap_or_else(|_| {
            tracing::error!("Portal simulator panicked while handling a request");
            let a = render::error_code(
                500,
                "INTERNAL_SERVER_ERROR",
                "Internal server error",
                Transport::Json,
            );
            (a, WireFault::None)
        });
    let latency = sim.options().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match wire {
        WireFault::None => Ok(respond(answer)),
        WireFault::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(respond(answer))
        }
        WireFault::CloseWithoutResponse => Err(DropConnection),
        WireFault::ResetMidResponse => Ok(respond_truncated(answer)),
    }
}

fn respond(a: Answer) -> Response<SimBody> {
    let mut resp = Response::new(SimBody::full(a.body));
    *resp.status_mut() =
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    resp
}

/// Headers announcing the whole body, then half of it, then a broken connection.
fn respond_truncated(a: Answer) -> Response<SimBody> {
    let full = a.body.len();
    let mut resp = respond(Answer {
        body: Bytes::new(),
        ..a.clone()
    });
    *resp.body_mut() = SimBody::truncated(a.body.slice(..full / 2), full as u64);
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(full));
    resp
}

/// A response body: either the whole answer, or a prefix followed by an error (which makes
/// hyper abort the connection).
#[derive(Debug)]
pub struct SimBody {
    data: Option<Bytes>,
    fail: bool,
    /// Polls answered `Pending` before failing, so hyper flushes the prefix to the socket first.
    yields_left: u8,
    announced: u64,
}

impl SimBody {
    fn full(data: Bytes) -> SimBody {
        let announced = data.len() as u64;
        SimBody {
            data: (!data.is_empty()).then_some(data),
            fail: false,
            yields_left: 0,
            announced,
        }
    }

    fn truncated(prefix: Bytes, announced: u64) -> SimBody {
        SimBody {
            data: (!prefix.is_empty()).then_some(prefix),
            fail: true,
            yields_left: 2,
            announced,
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if !this.fail {
            return Poll::Ready(None);
        }
        if this.yields_left > 0 {
            this.yields_left -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset mid-response",
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.fail
    }

    fn size_hint(&self) -> SizeHint {
        if self.fail {
            SizeHint::with_exact(self.announced)
        } else {
            SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
        }
    }
}
