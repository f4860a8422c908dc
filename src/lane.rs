//! The pass-through lane: the proxy listener's own HTTP/1.1 server for the calls the proxy
//! does not inspect. It reads a request head with httparse, and when the request is the plain
//! case (`head::read`) relays it to the portal over its own pooled connections (`pool`) and
//! the answer back, all in the connection's task; anything else — a watched call, unusual
//! framing, HTTP/2 — is handed to hyper with the bytes already read (`prefixed`), and hyper
//! serves the connection from there exactly as it served every connection before.
//!
//! Why a lane of its own: hyper's HTTP/1 server keeps 8–16 KiB of buffers per connection for
//! the connection's life and spends most of a pass-through request's CPU on header maps and
//! their hashing. The lane holds no buffer while a connection is idle (it waits for
//! readiness, then reads), copies header lines as bytes, and makes one write each way per
//! exchange in the common case. The timeouts are the listener's: `header_read_timeout` for an
//! idle connection and for a head once its first byte came, `body_read_timeout` between body
//! reads, `send_timeout` per write to the client (`timed_io`), `upstream.request_timeout`
//! until the answer's head and between reads of its body. Metrics and the access line are the
//! pipeline's (`Tracked`), so a request served here is counted like any other.

mod chunked;
mod exchange;
mod head;
mod pool;
mod prefixed;
mod response;
mod wire;

pub(crate) use prefixed::Prefixed;

use crate::broker::{rewrite_path, Admission, LiveKey};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::portal::Portal;
use crate::timed_io::TimedWrites;
use head::Verdict;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Largest request head the lane reads; a longer one is handed to hyper, which applies its own
/// limit.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// What a client read starts with: most request heads fit.
const FIRST_READ: usize = 4 * 1024;

pub(crate) type ClientIo = TimedWrites<TcpStream>;

/// What a request the lane serves goes out with.
pub(crate) struct Admitted {
    portal: Arc<Portal>,
    /// The proxy key it came with (`[broker]`).
    key: Option<Arc<LiveKey>>,
    /// The target to send instead of the client's (the key replaced by the real webhook).
    target: Option<Vec<u8>>,
}

/// The lane's side of one portal.
struct Upstream {
    pool: pool::Pool,
    /// The portal's `Host`.
    host: Vec<u8>,
}

/// How a connection left the lane.
pub(crate) enum Ended {
    Closed,
    /// hyper takes the connection, re-reading these bytes first.
    Handoff(Prefixed<ClientIo>),
}

pub(crate) struct Lane {
    pipeline: Arc<Pipeline>,
    /// Per portal, by its index: the connections to it and the `Host` it is sent.
    portals: Vec<Upstream>,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    request_timeout: Duration,
}

impl Lane {
    pub(crate) fn new(config: &Config, pipeline: Arc<Pipeline>) -> Result<Lane, String> {
        let portals = config
            .portals
            .iter()
            .zip(pipeline.portals.all())
            .map(|(cfg, portal)| {
                let pool = pool::Pool::new(&cfg.upstream, portal.upstream.reachability())?;
                let host = cfg
                    .upstream
                    .url
                    .authority()
                    .ok_or("the portal's url has no host")?
                    .as_str()
                    .as_bytes()
                    .to_vec();
                Ok(Upstream { pool, host })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // Every portal shares `[upstream]`'s timeouts.
        let request_timeout = config
            .portals
            .first()
            .map_or(crate::config::defaults::REQUEST_TIMEOUT, |p| {
                p.upstream.request_timeout
            });
        Ok(Lane {
            pipeline,
            portals,
            header_read_timeout: config.server.header_read_timeout,
            body_read_timeout: config.server.body_read_timeout,
            request_timeout,
        })
    }

    /// Serves a connection until it closes or is handed to hyper.
    pub(crate) async fn serve(
        &self,
        mut client: ClientIo,
        peer: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Ended {
        if *stop.borrow() {
            return Ended::Closed;
        }
        // One wait for the stop signal per connection, not one registration per request.
        let mut waiting = stop.clone();
        let stopped = waiting.changed();
        tokio::pin!(stopped);
        let mut buf: Vec<u8> = Vec::new();
        loop {
            if buf.is_empty() {
                // Idle: nothing is held but the socket until the next request starts.
                buf = Vec::new();
                if !self.wait_for_request(&client, stopped.as_mut()).await {
                    return Ended::Closed;
                }
            }
            let deadline = Instant::now() + self.header_read_timeout;
            let head = loop {
                match head::read(&buf) {
                    Verdict::Serve(h) => match self.admit(&buf, &h) {
                        Some(admitted) => break (h, admitted),
                        // A host that names no portal, a key refused: hyper answers it.
                        None => return self.handoff(buf, client),
                    },
                    Verdict::Handoff => return self.handoff(buf, client),
                    Verdict::Partial if buf.len() >= MAX_REQUEST_HEAD => {
                        return self.handoff(buf, client)
                    }
                    Verdict::Partial => match read_until(&mut client, &mut buf, deadline).await {
                        Ok(n) if n > 0 => {}
                        // Closed, broken, or the head did not come in time: hyper would
                        // close too, without an answer.
                        _ => return Ended::Closed,
                    },
                }
            };
            let (head, admitted) = head;
            let exchange = self.exchange(&mut client, &mut buf, head, admitted, peer, &stop);
            match Box::pin(exchange).await {
                exchange::Next::KeepAlive => {}
                exchange::Next::Close => return Ended::Closed,
            }
        }
    }

    /// What the lane serves the request with: its portal (by `Host`; any request, with a single
    /// portal) and, with `[broker]`, its admitted key and the target with the real webhook in
    /// the key's place. `None` when hyper must answer: no such portal, or a path credential the
    /// broker refuses or a method outside the key's scope (hyper answers those the same way).
    fn admit(&self, buf: &[u8], head: &head::LaneHead) -> Option<Admitted> {
        let host = head.host.clone().map(|r| &buf[r]);
        let portal = self.pipeline.portals.pick(host).ok()?.clone();
        let (Some(broker), Some(hook)) = (&self.pipeline.broker, &head.route.webhook) else {
            return Some(Admitted {
                portal,
                key: None,
                target: None,
            });
        };
        let name = self
            .pipeline
            .portals
            .by_host()
            .then_some(portal.name.as_str());
        match broker.admit(hook, name) {
            Admission::Key(key) if key.allows_method(&head.route.method) => {
                let target = std::str::from_utf8(&buf[head.target.clone()]).ok()?;
                let (path, query) = match head.query_at {
                    Some(q) => (&target[..q - 1], Some(&target[q..])),
                    None => (target, None),
                };
                let mut rewritten = rewrite_path(path, &head.route, &key.webhook)?;
                if let Some(q) = query {
                    rewritten.push('?');
                    rewritten.push_str(q);
                }
                Some(Admitted {
                    portal,
                    key: Some(key),
                    target: Some(rewritten.into_bytes()),
                })
            }
            Admission::NotAKey if !broker.require_keys => Some(Admitted {
                portal,
                key: None,
                target: None,
            }),
            _ => None,
        }
    }

    fn handoff(&self, buf: Vec<u8>, client: ClientIo) -> Ended {
        self.pipeline.metrics.lane_handoffs.inc();
        Ended::Handoff(Prefixed::new(buf, client))
    }

    /// Waits for the first byte of the next request: `false` when the connection closed, the
    /// proxy is stopping (`stopped` resolved; it is never polled again after that), or nothing
    /// came within `header_read_timeout` (hyper's header timer runs while a connection is
    /// idle, too).
    async fn wait_for_request<F>(&self, client: &ClientIo, stopped: Pin<&mut F>) -> bool
    where
        F: Future,
    {
        tokio::select! {
            // Polled in order: no random choice per request.
            biased;
            _ = stopped => false,
            r = tokio::time::timeout(self.header_read_timeout, client.get_ref().readable()) => {
                matches!(r, Ok(Ok(())))
            }
        }
    }
}

/// Where `part` (a slice httparse returned) starts in `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    (start + part.len() <= buf.len()).then_some(start)
}

/// A `Content-Length` value of plain digits (what RFC 9110 allows: no sign, no list), within
/// u64.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Reads what the client sent into `buf`, waiting at most until `deadline`. `Ok(0)` is the
/// client closing; a timeout is an error.
async fn read_until(
    client: &mut ClientIo,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<usize> {
    tokio::time::timeout_at(deadline, read_some(client, buf))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// One read from the client into `buf`'s spare room (made first when there is little).
///
/// Through `AsyncRead`, not `try_read`: a read that does not fill the room clears the socket's
/// readiness, so the next idle wait really waits — rather than waking at once, finding nothing
/// and waiting again inside a read with a buffer allocated for the whole idle time.
async fn read_some(client: &mut ClientIo, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(FIRST_READ.max(buf.len()));
    }
    client.read_buf(buf).await
}
