//! `ProxyBody`: the one body type the proxy sends, to the portal and to clients — either a
//! streamed hyper body (pass-through, never buffered) or bytes the proxy holds (a buffered
//! watched call, a canonical re-encoding, an error envelope). An enum rather than a boxed
//! trait object, so the pass-through path allocates nothing for it.
//!
//! A client's body is read through [`Timed`]: between two frames it may stall for at most
//! `server.body_read_timeout` (nginx's `client_body_timeout`), then reading fails with
//! [`Stalled`] — for a watched call before anything is forwarded, for a pass-through call by
//! aborting the upstream request it feeds.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum ProxyBody {
    Stream(Incoming),
    /// A client's body streamed on, with the between-frames time limit.
    Timed(Timed<Incoming>),
    /// Sent in one frame; `None` once sent.
    Bytes(Option<Bytes>),
}

impl ProxyBody {
    pub fn bytes(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::Bytes(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Bytes(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ProxyBody::Stream(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            ProxyBody::Timed(inner) => Pin::new(inner).poll_frame(cx),
            ProxyBody::Bytes(slot) => Poll::Ready(slot.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(inner) => inner.is_end_stream(),
            ProxyBody::Timed(inner) => inner.is_end_stream(),
            ProxyBody::Bytes(slot) => slot.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(inner) => inner.size_hint(),
            ProxyBody::Timed(inner) => inner.size_hint(),
            ProxyBody::Bytes(slot) => {
                SizeHint::with_exact(slot.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// Reads a whole body, refusing more than `limit` bytes (checked against `Content-Length` first
/// by the caller, and here again as frames arrive).
pub async fn read_capped<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if is_stall(e.into().as_ref()) {
                ReadError::Stalled
            } else {
                ReadError::Broken
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    TooLarge,
    Broken,
    /// No frame within the between-frames limit ([`Timed`]).
    Stalled,
}

/// The error a [`Timed`] body fails with when its sender stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stalled past server.body_read_timeout")
    }
}

impl std::error::Error for Stalled {}

/// Whether `e`, or anything it was caused by, is a [`Stalled`] body (hyper's client wraps the
/// error of the body it was sending).
pub fn is_stall(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<Stalled>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A body whose sender may pause at most `limit` between two frames. The timer is created on
/// the first wait only, so a body that arrives with its head costs no allocation.
#[derive(Debug)]
pub struct Timed<B> {
    inner: B,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait (it is re-armed after every frame).
    armed: bool,
}

impl<B> Timed<B> {
    pub fn new(inner: B, limit: Duration) -> Timed<B> {
        Timed {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.limit;
        let timer = match &mut this.timer {
            Some(t) => {
                if !this.armed {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => this
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        this.armed = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
