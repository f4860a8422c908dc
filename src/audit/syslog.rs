//! `[audit.syslog]`: every committed chain entry is also sent to a syslog receiver as an RFC 5424
//! message, over TCP with octet-counting framing (RFC 6587 §3.4.1) or over UDP (RFC 5426).
//!
//! A request never waits for syslog and never fails because of it: the writer thread hands each
//! committed entry to a bounded queue with `try_send` and moves on; when the queue is full (the
//! receiver is slow or unreachable) the entry is dropped and counted
//! (`b24proxy_syslog_dropped_total`) — the trail itself still has it. One sender task drains the
//! queue, reconnecting with a capped backoff. The message text is the entry exactly as
//! `audit export --entries` writes it, so what a SIEM collects can be verified with
//! `scripts/verify-trail` too.

use super::{ChainEntry, EntrySink};
use crate::config::{SyslogConfig, SyslogTransport};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A receiver that accepts a connection but stops reading must not hold the sender forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The writer thread's end of the queue.
pub struct SyslogSink {
    tx: mpsc::Sender<ChainEntry>,
    on_drop: Box<dyn Fn() + Send + Sync>,
}

impl EntrySink for SyslogSink {
    fn committed(&self, entry: &ChainEntry) {
        if self.tx.try_send(entry.clone()).is_err() {
            (self.on_drop)();
        }
    }
}

impl SyslogSink {
    /// Starts the sender task (on the current Tokio runtime). `on_drop` is called for each
    /// entry the full queue refused, `on_sent` for each one handed to the network.
    pub fn start(
        cfg: &SyslogConfig,
        on_drop: Box<dyn Fn() + Send + Sync>,
        on_sent: Arc<dyn Fn() + Send + Sync>,
    ) -> (Arc<SyslogSink>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let header = Header {
            facility: cfg.facility,
            hostname: cfg.hostname.clone().unwrap_or_else(local_hostname),
            app_name: cfg.app_name.clone(),
            procid: std::process::id().to_string(),
        };
        let task = tokio::spawn(send_loop(cfg.clone(), header, rx, on_sent));
        let sink = Arc::new(SyslogSink { tx, on_drop });
        (sink, task)
    }
}

/// The fixed fields of every message.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

/// This machine's host name, or the RFC 5424 NILVALUE when it cannot be read.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".into())
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG`. The
/// timestamp is the entry's own; MSGID its kind; MSG the entry as `audit export --entries`
/// writes it. Severity: warning for a denied, unknown or failed outcome, notice for one the
/// portal rejected, informational otherwise.
pub fn format_message(h: &Header, entry: &ChainEntry) -> Vec<u8> {
    let payload: Value = serde_json::from_str(&entry.payload).unwrap_or(Value::Null);
    let text = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("-");
    let severity = match payload.get("outcome").and_then(Value::as_str) {
        Some("denied") | Some("unknown") | Some("failed") => 4,
        Some("rejected_by_portal") => 5,
        _ => 6,
    };
    let msgid: String = text("kind").chars().take(32).collect();
    let line = serde_json::to_string(entry).unwrap_or_default();
    let mut out = format!(
        "<{}>1 {} {} {} {} {} - \u{feff}",
        u16::from(h.facility) * 8 + severity,
        text("time"),
        h.hostname,
        h.app_name,
        h.procid,
        msgid
    )
    .into_bytes();
    out.extend_from_slice(line.as_bytes());
    out
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

async fn connect(cfg: &SyslogConfig) -> std::io::Result<Conn> {
    let connect = async {
        match cfg.transport {
            SyslogTransport::Tcp => Ok(Conn::Tcp(TcpStream::connect(&cfg.address).await?)),
            SyslogTransport::Udp => {
                let addr = tokio::net::lookup_host(&cfg.address)
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let sock = UdpSocket::bind(local).await?;
                sock.connect(addr).await?;
                Ok(Conn::Udp(sock))
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("connect timed out")))
}

async fn send(conn: &mut Conn, msg: &[u8]) -> std::io::Result<()> {
    let io = async {
        match conn {
            Conn::Tcp(s) => {
                // RFC 6587 octet counting: "LEN SP MSG", LEN the message's length in octets.
                let mut frame = format!("{} ", msg.len()).into_bytes();
                frame.extend_from_slice(msg);
                s.write_all(&frame).await
            }
            Conn::Udp(s) => s.send(msg).await.map(|_| ()),
        }
    };
    tokio::time::timeout(WRITE_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("write timed out")))
}

async fn send_loop(
    cfg: SyslogConfig,
    header: Header,
    mut rx: mpsc::Receiver<ChainEntry>,
    on_sent: Arc<dyn Fn() + Send + Sync>,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = BACKOFF_MIN;
    let mut healthy = true;
    while let Some(entry) = rx.recv().await {
        let msg = format_message(&header, &entry);
        // The message is kept until it is sent; meanwhile new entries wait in the bounded
        // queue, and are dropped there once it is full.
        loop {
            let result = match conn.as_mut() {
                Some(c) => send(c, &msg).await,
                None => match connect(&cfg).await {
                    Ok(mut c) => {
                        let r = send(&mut c, &msg).await;
                        conn = Some(c);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    on_sent();
                    if !healthy {
                        tracing::info!(target: "audit", address = %cfg.address, "Syslog receiver reachable again");
                    }
                    healthy = true;
                    backoff = BACKOFF_MIN;
                    break;
                }
                Err(e) => {
                    conn = None;
                    if healthy {
                        tracing::warn!(target: "audit", address = %cfg.address, error = %e, "Syslog receiver unreachable; entries are queued, then dropped and counted");
                    }
                    healthy = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_rfc_5424() {
        let h = Header {
            facility: 13,
            hostname: "proxy-1".into(),
            app_name: "b24-audit-proxy".into(),
            procid: "42".into(),
        };
        let e = ChainEntry {
            seq: 3,
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
            payload: r#"{"kind":"completed","outcome":"denied","seq":3,"time":"2026-11-24T10:00:00.000Z","v":2}"#.into(),
        };
        let msg = String::from_utf8(format_message(&h, &e)).expect("utf-8");
        let (head, body) = msg.split_once('\u{feff}').expect("BOM");
        // facility 13 × 8 + warning (4)
        assert_eq!(
            head,
            "<108>1 2026-11-24T10:00:00.000Z proxy-1 b24-audit-proxy 42 completed - "
        );
        let back: ChainEntry = serde_json::from_str(body).expect("the entry");
        assert_eq!(back, e);
    }
}
