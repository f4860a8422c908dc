//! `b24-audit-proxy healthcheck --config FILE`: asks the running proxy's admin listener for
//! `/readyz` and succeeds only on a 200, so a container image needs no shell or curl for its
//! health check (the image is distroless). `admin_request` is the same client for the other
//! commands that talk to a running proxy (`approvals approve`).
//!
//! Blocking std I/O with short timeouts: it runs once and exits. A wildcard `admin.listen`
//! (`0.0.0.0`, `[::]`) is reached on loopback; with `admin.tls_cert` the request goes over TLS,
//! trusting exactly that certificate; with `admin.token_file` the token is sent.

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
/// A `/readyz` answer is a few hundred bytes; anything longer is not one.
const MAX_ANSWER: u64 = 64 * 1024;

/// `Ok(body)` when `/readyz` answers 200; otherwise why not.
pub fn check(config: &Config) -> Result<String, String> {
    let token = match &config.admin.token_file {
        Some(path) => Some(crate::server::read_token(path).map_err(|e| format!("{e:#}"))?),
        None => None,
    };
    let (status, body) = admin_request(config, "GET", "/readyz", token.as_deref(), None)?;
    if status == 200 {
        Ok(body.trim().to_owned())
    } else {
        Err(format!("/readyz answered {status}: {}", body.trim()))
    }
}

/// One request to the running proxy's admin listener (over TLS when it serves TLS), with a
/// bearer `token` and a JSON `body` when given: the answer's status and body.
pub fn admin_request(
    config: &Config,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let addr = target(config.admin.listen)?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: b24-audit-proxy-cli\r\n"
    );
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("admin listener {addr}: {e}"))?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let answer = match &config.admin.tls {
        None => exchange(tcp, &request),
        Some(files) => {
            let tls = crate::tls::pinned_client_config(&files.cert)?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(Arc::new(tls), name)
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, tcp), &request)
        }
    }
    .map_err(|e| format!("admin listener {addr}: {e}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("admin listener {addr}: not an HTTP answer"))?;
    Ok((status, body.to_owned()))
}

/// Where to connect: the configured address, a wildcard one on the loopback of its family.
fn target(listen: SocketAddr) -> Result<SocketAddr, String> {
    if listen.port() == 0 {
        return Err("admin.listen has port 0: there is no fixed port to check".into());
    }
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, listen.port()))
}

fn exchange(mut stream: impl Read + Write, request: &str) -> Result<String, String> {
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify still sent a complete answer before it.
    match stream.take(MAX_ANSWER).read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_checked_on_loopback() {
        let t = |s: &str| target(s.parse().expect("addr")).map(|a| a.to_string());
        assert_eq!(t("0.0.0.0:9090"), Ok("127.0.0.1:9090".into()));
        assert_eq!(t("[::]:9090"), Ok("[::1]:9090".into()));
        assert_eq!(t("10.1.2.3:9090"), Ok("10.1.2.3:9090".into()));
        assert!(t("127.0.0.1:0").is_err());
    }
}
