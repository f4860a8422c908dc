//! The upstream side: one pooled keep-alive hyper client (rustls for `https://` portals), the
//! streaming forward of pass-through calls, and the buffered JSON calls of the audited path
//! (snapshot reads, the canonical forward, re-reads).
//!
//! The portal's address comes only from config; a request can choose the path, never the host.

use crate::body::ProxyBody;
use crate::config::UpstreamConfig;
use crate::error::UpstreamFailure;
use crate::mutation::OutboundCall;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest answer the proxy buffers from the portal for a watched call. A workplace answer is
/// well under a kilobyte; the cap only keeps a broken upstream from exhausting memory.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and `Upgrade`,
/// which the proxy never carries out: never forwarded, by either HTTP path.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and any header the `Connection` header names.
///
/// One pass over the (few) headers present rather than a removal per hop-by-hop name: on the
/// pass-through path the usual answer is "nothing to remove", found without hashing any name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    if doomed.contains(&header::CONNECTION) {
        doomed.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
        );
    }
    for name in &doomed {
        headers.remove(name);
    }
}

pub use crate::answer::Answer;

/// The host to connect to (an IPv6 address without its brackets) and the port, the scheme's
/// default when the URL names none.
pub(crate) fn host_port(authority: &http::uri::Authority, https: bool) -> (String, u16) {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    (host.to_owned(), port)
}

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host: HeaderValue,
    request_timeout: Duration,
    connect_timeout: Duration,
    /// Whether the last exchange (or probe) reached the portal; `/readyz` reads it.
    reachable: Arc<AtomicBool>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Upstream, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let tls = crate::tls::client_config(cfg.ca_file.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        let scheme = cfg
            .url
            .scheme()
            .cloned()
            .ok_or("upstream.url has no scheme")?;
        let authority = cfg
            .url
            .authority()
            .cloned()
            .ok_or("upstream.url has no host")?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        Ok(Upstream {
            client,
            scheme,
            authority,
            host,
            request_timeout: cfg.request_timeout,
            connect_timeout: cfg.connect_timeout,
            reachable: Arc::new(AtomicBool::new(true)),
        })
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamFailure> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| UpstreamFailure::Invalid)
    }

    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamFailure> {
        let result =
            match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
                Err(_) => Err(UpstreamFailure::Timeout),
                Ok(Err(e)) if e.is_connect() => Err(UpstreamFailure::Connect),
                Ok(Err(e)) if crate::body::is_stall(&e) => Err(UpstreamFailure::ClientStalled),
                Ok(Err(_)) => Err(UpstreamFailure::Reset),
                Ok(Ok(resp)) => Ok(resp),
            };
        let reached = !matches!(result, Err(UpstreamFailure::Connect));
        if self.reachable.load(Ordering::Relaxed) != reached {
            self.reachable.store(reached, Ordering::Relaxed);
        }
        result
    }

    /// The flag `/readyz` reads.
    pub fn reachability(&self) -> Arc<AtomicBool> {
        self.reachable.clone()
    }

    /// Opens (and drops) a TCP connection to the portal, updating reachability. Run now and
    /// then while no traffic does it, so readiness recovers on its own.
    pub async fn probe(&self) -> bool {
        let (host, port) = host_port(&self.authority, self.scheme == http::uri::Scheme::HTTPS);
        let ok = matches!(
            tokio::time::timeout(
                self.connect_timeout,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
        self.reachable.store(ok, Ordering::Relaxed);
        ok
    }

    /// Forwards a pass-through request: same method, path, query, headers (minus hop-by-hop,
    /// with the portal's own `Host`) and body, streamed both ways.
    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        // The request's own path and query, already parsed, under the portal's scheme and host.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).map_err(|_| UpstreamFailure::Invalid)?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, self.host.clone());
        let mut resp = self.send(Request::from_parts(parts, body)).await?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }

    /// Sends a JSON call built by the proxy and buffers the answer (for the audited path, which
    /// reads it).
    pub async fn call(
        &self,
        call: &OutboundCall,
        client_headers: &HeaderMap,
    ) -> Result<Answer, UpstreamFailure> {
        let fut = async {
            let resp = self.send_call(call, client_headers).await?;
            let (parts, body) = resp.into_parts();
            let body = crate::body::read_capped(body, MAX_ANSWER_BYTES)
                .await
                .map_err(|e| match e {
                    crate::body::ReadError::TooLarge => UpstreamFailure::Invalid,
                    crate::body::ReadError::Broken => UpstreamFailure::Reset,
                    crate::body::ReadError::Stalled => UpstreamFailure::Timeout,
                })?;
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .unwrap_or(Err(UpstreamFailure::Timeout))
    }

    /// Sends a call built by the proxy — its own method, path, `Content-Type`, length and body,
    /// and of the caller's headers only [`FORWARDED_HEADERS`] — and streams the answer back.
    /// Every inspected call leaves this way, so nothing the client sent beyond what the proxy
    /// read (a second `Content-Type`, a header named in `Connection`, a transfer coding) can
    /// change how the portal reads it.
    pub async fn send_call(
        &self,
        call: &OutboundCall,
        client_headers: &HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let mut headers = forwarded_headers(client_headers);
        headers.insert(header::HOST, self.host.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(auth) = &call.authorization {
            let v = HeaderValue::from_str(auth).map_err(|_| UpstreamFailure::Invalid)?;
            headers.insert(header::AUTHORIZATION, v);
        }
        let mut req = Request::post(self.uri(&call.path_and_query)?)
            .body(ProxyBody::bytes(call.body.clone()))
            .map_err(|_| UpstreamFailure::Invalid)?;
        *req.headers_mut() = headers;
        let mut resp = self.send(req).await?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}

/// The caller's headers a call built by the proxy carries: end-to-end headers that describe the
/// client, never the body (its type, length, coding) nor a credential (the proxy places the one
/// it read) nor anything that negotiates the answer's encoding (the proxy may have to read it).
pub const FORWARDED_HEADERS: [HeaderName; 8] = [
    header::USER_AGENT,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::ACCEPT_CHARSET,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("x-bitrix24-python-sdk-version"),
    HeaderName::from_static("x-bitrix24-python-sdk-python-version"),
];

/// The allow-listed subset of `client`, each header with every value it had. A header the
/// client named in `Connection` is hop-by-hop for it, and is dropped even when allow-listed.
pub fn forwarded_headers(client: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(FORWARDED_HEADERS.len() + 3);
    for name in &FORWARDED_HEADERS {
        if named.iter().any(|n| n == name.as_str()) {
            continue;
        }
        for v in client.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("sdk"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::USER_AGENT));
    }

    #[test]
    fn proxy_built_calls_carry_only_allow_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, HeaderValue::from_static("sdk"));
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::COOKIE, HeaderValue::from_static("PHPSESSID=1"));
        h.insert("x-bitrix-csrf-token", HeaderValue::from_static("t"));
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Accept"));
        let out = forwarded_headers(&h);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[header::USER_AGENT], "sdk");
        assert_eq!(out["x-request-id"], "r1");
    }
}
