//! A client connection whose writes are bounded: a write (or flush) that cannot make progress
//! for `server.send_timeout` — the client stopped reading and its receive window is full —
//! fails with `TimedOut`, so the connection closes and drops what it was sending (a streamed
//! pass-through answer, and with it the upstream connection it came from). Like nginx's
//! `send_timeout`, the limit is between two successful writes, not for the whole answer.
//! Reads are not bounded here: the header and body read timeouts see to those.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct TimedWrites<S> {
    inner: S,
    limit: Duration,
    /// Created on the first write that has to wait; most connections never need it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the write waiting now.
    armed: bool,
}

impl<S> TimedWrites<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn new(inner: S, limit: Duration) -> TimedWrites<S> {
        TimedWrites {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// After a write that could not proceed: starts (or keeps) the clock, and fails once it
    /// has run out.
    fn waited<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(t) => {
                if !self.armed {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer within server.send_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.waited(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_never_reads_fails_the_write_and_one_that_reads_does_not() {
        let (a, _unread) = tokio::io::duplex(64);
        let mut w = TimedWrites::new(a, Duration::from_millis(50));
        let err = w
            .write_all(&[0u8; 4096])
            .await
            .expect_err("the peer never reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (a, mut r) = tokio::io::duplex(64);
        let mut w = TimedWrites::new(a, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink)
                .await
                .map(|_| sink.len())
        });
        w.write_all(&[0u8; 4096]).await.expect("a reading peer");
        w.shutdown().await.expect("shutdown");
        drop(w);
        assert_eq!(reader.await.expect("join").expect("read"), 4096);
    }
}
