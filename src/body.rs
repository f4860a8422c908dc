//! `ProxyBody`: the one body type the proxy sends, to the portal and to clients — either a
//! streamed hyper body (pass-through, never buffered) or bytes the proxy holds (a buffered
//! watched call, a canonical re-encoding, an error envelope). An enum rather than a boxed
//! trait object, so the pass-through path allocates nothing for it.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum ProxyBody {
    Stream(Incoming),
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
            ProxyBody::Bytes(slot) => Poll::Ready(slot.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(inner) => inner.is_end_stream(),
            ProxyBody::Bytes(slot) => slot.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(inner) => inner.size_hint(),
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
{
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Broken)?;
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
}
