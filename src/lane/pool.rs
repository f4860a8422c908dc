//! The pass-through lane's connections to the portal: plain TCP or rustls (HTTP/1.1 only),
//! kept alive and reused, newest first. Each connection is driven by the task of the request
//! using it — nothing crosses tasks per request — and carries its own read buffer, so an idle
//! one costs its socket and one buffer, and only up to `upstream.pool_max_idle` are kept.

use crate::config::UpstreamConfig;
use crate::error::UpstreamFailure;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// A connection's read buffer: an answer's head and the first part of its body fit in one read.
const READ_BUFFER: usize = 16 * 1024;

pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection to the portal and what was read from it but not yet used.
pub struct Conn {
    pub io: Io,
    pub buf: Vec<u8>,
    /// Taken from the pool (it served an earlier request), rather than just opened.
    pub reused: bool,
}

pub struct Pool {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// Shared with `/readyz`: whether the portal could be reached last time.
    reachable: Arc<AtomicBool>,
}

impl Pool {
    pub fn new(cfg: &UpstreamConfig, reachable: Arc<AtomicBool>) -> Result<Pool, String> {
        let authority = cfg.url.authority().ok_or("upstream.url has no host")?;
        let (host, port) = crate::upstream::host_port(authority, cfg.is_https());
        let tls = if cfg.is_https() {
            let mut config = crate::tls::client_config(cfg.ca_file.as_deref())?;
            // The lane speaks HTTP/1.1 only; a portal offering h2 must not pick it.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Pool {
            host,
            port,
            tls,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle,
            idle: Mutex::new(Vec::new()),
            reachable,
        })
    }

    /// A live idle connection, or a new one.
    pub async fn checkout(&self) -> Result<Conn, UpstreamFailure> {
        if let Some(conn) = self.take_idle() {
            return Ok(conn);
        }
        let result = self.connect().await;
        let reached = result.is_ok();
        if self.reachable.load(Ordering::Relaxed) != reached {
            self.reachable.store(reached, Ordering::Relaxed);
        }
        result
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((mut conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && !conn.io.is_stale() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, UpstreamFailure> {
        let open = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| UpstreamFailure::Connect)?;
            let _ = tcp.set_nodelay(true);
            let io = match &self.tls {
                None => Io::Plain(tcp),
                Some((connector, name)) => Io::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|_| UpstreamFailure::Connect)?,
                )),
            };
            Ok(Conn {
                io,
                buf: Vec::with_capacity(READ_BUFFER),
                reused: false,
            })
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .unwrap_or(Err(UpstreamFailure::Connect))
    }

    /// Gives a connection back after a complete exchange; beyond `max_idle` it is closed.
    pub fn put(&self, mut conn: Conn) {
        conn.buf.clear();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }

    /// An idle connection with anything to read has been closed by the portal (or sent what it
    /// should not have): either way it cannot carry another request.
    fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.tcp().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more into `buf` (growing it to at least the read buffer's size).
    pub async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        use tokio::io::AsyncReadExt as _;
        if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            buf.reserve(READ_BUFFER);
        }
        self.read_buf(buf).await
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
