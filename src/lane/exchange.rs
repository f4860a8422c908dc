//! One exchange in the pass-through lane: the client's body read whole (it is small: larger
//! ones go through hyper), the request sent to the portal in one write, the answer's head
//! read, and its body relayed — length-framed as it came, chunked or close-delimited
//! re-framed as chunks of the lane's own. A failure before the answer's head is the proxy's
//! envelope (502/504, or 408 for a stalled body), exactly as on hyper's path; a failure after
//! it closes the client's connection, so a cut answer never looks complete.

use super::chunked::Decoder;
use super::head::{LaneHead, LaneMethod};
use super::pool::{Conn, Pool};
use super::response::{self, BodyIn, Parsed, ResponseHead};
use super::wire::{self, Framing};
use super::{read_until, Admitted, ClientIo, Lane};
use crate::body::ProxyBody;
use crate::error::{ProxyError, UpstreamFailure};
use crate::metrics::UpstreamPhase;
use crate::pipeline::{Head, Tracked};
use std::io;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the connection does after an exchange.
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// The relay broke (the portal's side or the client's): both connections are dropped.
struct Broken;

impl Lane {
    /// Serves one request whose head is `head`, at the start of `buf`. On return `buf` holds
    /// only what the client sent after this request.
    pub(super) async fn exchange(
        &self,
        client: &mut ClientIo,
        buf: &mut Vec<u8>,
        head: LaneHead,
        admitted: Admitted,
        peer: SocketAddr,
        stop: &watch::Receiver<bool>,
    ) -> Next {
        let Admitted {
            portal,
            key,
            target: rewritten,
        } = admitted;
        let Some(upstream) = self.portals.get(portal.index) else {
            return Next::Close;
        };
        let method = head.method.http();
        let target = std::str::from_utf8(&buf[head.target.clone()]).unwrap_or("");
        let (path, query) = match head.query_at {
            Some(q) => (&target[..q - 1], Some(&target[q..])),
            None => (target, None),
        };
        let request_id = head
            .request_id
            .clone()
            .and_then(|r| std::str::from_utf8(&buf[r]).ok());
        let info = Head {
            method: &method,
            path,
            query,
            request_id,
        };
        let mut t = Tracked::start_head(&self.pipeline, &info, peer);
        t.ctx.portal = Some(portal);
        t.ctx.key = key;
        // Bounded by head::MAX_BODY, so it fits in usize.
        let total = head.len + usize::try_from(head.body_len).unwrap_or(usize::MAX);
        while buf.len() < total {
            let deadline = Instant::now() + self.body_read_timeout;
            match read_until(&mut *client, buf, deadline).await {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    // The rest of the body may still come: the connection cannot be reused.
                    let e = self.pipeline.body_timeout();
                    return self.refuse(client, t, e, true).await;
                }
                // The client left mid-body: nothing was forwarded (499 in the access line).
                _ => return Next::Close,
            }
        }
        let mut out = Vec::with_capacity(total + upstream.host.len() + 64);
        wire::request_head(
            &mut out,
            head.method.as_str(),
            rewritten.as_deref().unwrap_or(&buf[head.target.clone()]),
            &upstream.host,
            head.forwarded.iter().map(|r| &buf[r.clone()]),
            head.has_length.then_some(head.body_len),
        );
        out.extend_from_slice(&buf[head.len..total]);
        buf.drain(..total);
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(
            self.request_timeout,
            self.send(&upstream.pool, &out, head.method == LaneMethod::Head),
        )
        .await
        .unwrap_or(Err(UpstreamFailure::Timeout));
        t.ctx.upstream_seconds = started.elapsed().as_secs_f64();
        self.pipeline
            .metrics
            .upstream(UpstreamPhase::PassThrough, t.ctx.upstream_seconds);
        let (conn, resp) = match sent {
            Ok(sent) => sent,
            Err(k) => {
                let e = self.pipeline.upstream_failed(k);
                return self.refuse(client, t, e, head.close).await;
            }
        };
        t.ctx.upstream_status = Some(resp.status.as_u16());
        t.answered(resp.status.as_u16());
        let close = head.close || *stop.borrow();
        self.relay(client, &upstream.pool, conn, resp, close).await
    }

    /// Answers with the proxy's envelope for `e`.
    async fn refuse(
        &self,
        client: &mut ClientIo,
        t: Tracked<'_>,
        e: ProxyError,
        close: bool,
    ) -> Next {
        let resp = self.pipeline.error_response(&t.ctx, e);
        let status = resp.status();
        t.answered(status.as_u16());
        let (parts, body) = resp.into_parts();
        let body = match body {
            ProxyBody::Bytes(Some(b)) => b,
            _ => bytes::Bytes::new(),
        };
        let mut out = Vec::with_capacity(256 + body.len());
        let lines = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        wire::response_head(
            &mut out,
            status,
            lines,
            Framing::Length(body.len() as u64),
            close,
        );
        out.extend_from_slice(&body);
        if client.write_all(&out).await.is_err() {
            return Next::Close;
        }
        finish(client, close).await
    }

    /// Sends the request on a pooled (or new) connection and reads the answer's head.
    async fn send(
        &self,
        pool: &Pool,
        request: &[u8],
        head_request: bool,
    ) -> Result<(Conn, ResponseHead), UpstreamFailure> {
        let mut conn = pool.checkout().await?;
        if conn.io.write_all(request).await.is_err() {
            if !conn.reused {
                return Err(UpstreamFailure::Reset);
            }
            // A kept connection the portal had closed: the portal read nothing from it.
            conn = pool.checkout().await?;
            conn.io
                .write_all(request)
                .await
                .map_err(|_| UpstreamFailure::Reset)?;
        }
        let head = read_head(&mut conn, head_request).await?;
        Ok((conn, head))
    }

    /// Sends the answer's head and relays its body; the connection goes back to the pool when
    /// the body ended cleanly where its framing said.
    async fn relay(
        &self,
        client: &mut ClientIo,
        pool: &Pool,
        mut conn: Conn,
        resp: ResponseHead,
        close: bool,
    ) -> Next {
        let framing = match resp.body {
            BodyIn::None => Framing::None,
            BodyIn::Length(n) => Framing::Length(n),
            BodyIn::Chunked | BodyIn::UntilClose => Framing::Chunked,
        };
        let mut out = Vec::with_capacity(512);
        let lines = resp
            .lines
            .iter()
            .map(|(n, v)| (&conn.buf[n.clone()], &conn.buf[v.clone()]));
        wire::response_head(&mut out, resp.status, lines, framing, close);
        let relayed = match resp.body {
            BodyIn::None => {
                conn.buf.drain(..resp.len);
                client.write_all(&out).await.map_err(|_| Broken)
            }
            BodyIn::Length(n) => {
                self.relay_length(client, &mut conn, &out, resp.len, n)
                    .await
            }
            BodyIn::Chunked | BodyIn::UntilClose => {
                conn.buf.drain(..resp.len);
                let until_close = resp.body == BodyIn::UntilClose;
                self.relay_chunked(client, &mut conn, out, until_close)
                    .await
            }
        };
        if relayed.is_err() {
            return Next::Close;
        }
        if resp.reusable && conn.buf.is_empty() {
            pool.put(conn);
        }
        finish(client, close).await
    }

    /// A body of `n` bytes, as it came: the part read with the head leaves with it in one
    /// vectored write, without being copied.
    async fn relay_length(
        &self,
        client: &mut ClientIo,
        conn: &mut Conn,
        head: &[u8],
        body_at: usize,
        n: u64,
    ) -> Result<(), Broken> {
        let mut left = n;
        let mut from = body_at;
        let mut first = Some(head);
        loop {
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(conn.buf.len() - from);
            let body = &conn.buf[from..from + take];
            match first.take() {
                Some(head) => write_both(client, head, body).await?,
                None => client.write_all(body).await.map_err(|_| Broken)?,
            }
            left -= take as u64;
            // What is left past the body stays, and keeps the connection from being reused.
            conn.buf.drain(..from + take);
            from = 0;
            if left == 0 {
                return Ok(());
            }
            self.read_portal(conn).await?;
        }
    }

    /// A chunked body decoded and re-chunked, or (`until_close`) a body that ends when the
    /// portal closes, chunked as it comes.
    async fn relay_chunked(
        &self,
        client: &mut ClientIo,
        conn: &mut Conn,
        mut out: Vec<u8>,
        until_close: bool,
    ) -> Result<(), Broken> {
        let mut decoder = Decoder::default();
        loop {
            if until_close {
                chunk(&mut out, &conn.buf);
                conn.buf.clear();
            } else {
                let used = decoder
                    .decode(&conn.buf, |data| chunk(&mut out, data))
                    .map_err(|_| Broken)?;
                conn.buf.drain(..used);
                if decoder.is_done() {
                    out.extend_from_slice(wire::LAST_CHUNK);
                    return client.write_all(&out).await.map_err(|_| Broken);
                }
            }
            if !out.is_empty() {
                client.write_all(&out).await.map_err(|_| Broken)?;
                out.clear();
            }
            match self.read_portal(conn).await {
                Ok(()) => {}
                Err(Broken) if until_close && conn.buf.is_empty() => {
                    return client.write_all(wire::LAST_CHUNK).await.map_err(|_| Broken)
                }
                Err(b) => return Err(b),
            }
        }
    }

    /// Reads more of the answer's body; the portal closing or stalling past
    /// `upstream.request_timeout` is `Broken`.
    async fn read_portal(&self, conn: &mut Conn) -> Result<(), Broken> {
        match tokio::time::timeout(self.request_timeout, conn.io.read_more(&mut conn.buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            _ => Err(Broken),
        }
    }
}

/// Reads the answer's head, skipping informational (1xx) answers.
async fn read_head(conn: &mut Conn, head_request: bool) -> Result<ResponseHead, UpstreamFailure> {
    loop {
        match response::read(&conn.buf, head_request)? {
            Parsed::Head(h) => return Ok(h),
            Parsed::Informational(n) => {
                conn.buf.drain(..n);
                continue;
            }
            Parsed::Partial => {}
        }
        match conn.io.read_more(&mut conn.buf).await {
            Ok(n) if n > 0 => {}
            _ => return Err(UpstreamFailure::Reset),
        }
    }
}

/// Writes `a` then `b`, in as few writes as the socket takes (one, usually).
async fn write_both(client: &mut ClientIo, a: &[u8], b: &[u8]) -> Result<(), Broken> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        let bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
        let n = client.write_vectored(&bufs).await.map_err(|_| Broken)?;
        if n == 0 {
            return Err(Broken);
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

/// Appends one chunk of `data` (nothing for no data: an empty chunk would end the body).
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    wire::chunk_size_line(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// After a complete exchange: keep the connection, or close it cleanly.
async fn finish(client: &mut ClientIo, close: bool) -> Next {
    if close {
        let _ = client.shutdown().await;
        return Next::Close;
    }
    Next::KeepAlive
}
