//! Small HTTP helpers: whole-response requests, raw bytes on a fresh connection, and a
//! fixed-answer upstream that records what it received.

use super::find;
use b24_audit_proxy::body::ProxyBody;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    pub fn event_id(&self) -> Option<String> {
        self.headers
            .get("x-audit-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

pub fn client() -> Client<HttpConnector, ProxyBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(ProxyBody::bytes(body.into())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answer within 20 s")
        .expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &str) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

pub async fn post_form(url: &str, body: &str) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.to_owned(),
    )
    .await
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// Writes raw bytes on a fresh connection and reads until the peer closes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// An upstream that answers every request with the same raw bytes and records what it got.
pub struct FixedUpstream {
    pub addr: SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl FixedUpstream {
    pub async fn start(response: &'static [u8]) -> FixedUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let rec = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let Some((buf, _)) = read_request(&mut s).await else {
                        return;
                    };
                    rec.lock().expect("lock").push(buf);
                    let _ = s.write_all(response).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        FixedUpstream { addr, received }
    }
}

/// Reads one HTTP/1 request (head, then `Content-Length` body bytes) from a raw stream: the
/// bytes as received and the head lower-cased. `None` when the peer closes first.
pub async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some((buf, head));
            }
        }
    }
}

/// A raw HTTP/1.1 exchange: what came back before the server closed the connection.
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes received in total (0 when the server closed without answering).
    pub received: usize,
}

impl RawReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request written by hand (`Connection: close`), so faults that break the
/// connection can be observed byte by byte; reads until the peer closes or resets.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawReply {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    // A reset connection ends the read with an error; keep what arrived before it.
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> RawReply {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawReply {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            received: buf.len(),
        };
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawReply {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
        received: buf.len(),
    }
}
