//! Reading a request head for the pass-through lane, and deciding whether the lane may serve
//! it. The lane takes only the plain case — HTTP/1.1, `GET`/`POST`/`HEAD`, an origin-form
//! target of an unwatched method, at most one `Content-Length` and no other framing or
//! connection-level header — and leaves everything else to hyper (`Verdict::Handoff`), which
//! then answers it exactly as it answered every request before the lane existed: a watched
//! call, ambiguous framing, `Expect`, `Upgrade`, HTTP/1.0, HTTP/2's preface, a head the lane's
//! buffer cannot hold, a malformed head. So the lane never has to refuse anything itself, and
//! the framing rules of the hostile-input tests stay hyper's.

use super::{offset_in, parse_length};
use crate::rest::route::{classify, Route};
use crate::watched::Watched;
use std::ops::Range;

/// The most header fields a head may have in the lane (hyper's own default limit; a head with
/// more is handed to hyper, which refuses it).
pub const MAX_HEADERS: usize = 100;

/// The largest body the lane buffers before forwarding. Larger bodies stream through hyper.
pub const MAX_BODY: u64 = 64 * 1024;

/// A head the lane serves: what it needs, as ranges into the bytes it was read from.
#[derive(Debug, PartialEq, Eq)]
pub struct LaneHead {
    /// Length of the head in bytes (the body starts here).
    pub len: usize,
    pub method: LaneMethod,
    /// The request target (`/path?query`), as sent.
    pub target: Range<usize>,
    /// The target's path as classified: the method and the path's webhook, which `[broker]`
    /// admits or refuses.
    pub route: Route,
    /// Where the query starts inside `target`, when there is one.
    pub query_at: Option<usize>,
    /// The body's length: `Content-Length`, 0 without one.
    pub body_len: u64,
    /// Whether the client sent a `Content-Length` (forwarded as such, even when 0).
    pub has_length: bool,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
    /// `X-Request-ID`'s value, when sent.
    pub request_id: Option<Range<usize>>,
    /// `Host`'s value, when sent (an empty range for an empty value); which portal the
    /// request is for, with `[[portals]]`.
    pub host: Option<Range<usize>>,
    /// The header lines forwarded as they came (`Name: value`), without `Host`,
    /// `Content-Length` and `Connection`.
    pub forwarded: Vec<Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneMethod {
    Get,
    Post,
    Head,
}

impl LaneMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LaneMethod::Get => "GET",
            LaneMethod::Post => "POST",
            LaneMethod::Head => "HEAD",
        }
    }

    pub fn http(self) -> http::Method {
        match self {
            LaneMethod::Get => http::Method::GET,
            LaneMethod::Post => http::Method::POST,
            LaneMethod::Head => http::Method::HEAD,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
// Returned once per request and unpacked at once: boxing the head would cost an allocation per
// request on the pass-through path to save moving a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// The head is not complete yet: read more.
    Partial,
    /// The lane serves it.
    Serve(LaneHead),
    /// hyper serves the connection from this request on.
    Handoff,
}

/// Headers that make a request more than the plain case: framing, negotiation, connection
/// management. A request with any of them goes to hyper.
const HANDOFF_HEADERS: [&str; 8] = [
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

/// Reads `buf` as the start of a request and says what to do with it.
pub fn read(buf: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        Err(_) => return Verdict::Handoff,
    };
    let method = match req.method {
        Some("GET") => LaneMethod::Get,
        Some("POST") => LaneMethod::Post,
        Some("HEAD") => LaneMethod::Head,
        _ => return Verdict::Handoff,
    };
    let (Some(1), Some(target)) = (req.version, req.path) else {
        return Verdict::Handoff;
    };
    let Some((target, query_at, route)) = unwatched_target(buf, target) else {
        return Verdict::Handoff;
    };
    let mut head = LaneHead {
        len,
        method,
        target,
        route,
        query_at,
        body_len: 0,
        has_length: false,
        close: false,
        request_id: None,
        host: None,
        forwarded: Vec::with_capacity(req.headers.len()),
    };
    for h in req.headers.iter() {
        if !take_header(&mut head, buf, h) {
            return Verdict::Handoff;
        }
    }
    if head.body_len > MAX_BODY {
        return Verdict::Handoff;
    }
    Verdict::Serve(head)
}

/// The target's range and its query's offset, when it is an origin-form target that parses as
/// a URI path the way hyper parses it and names an unwatched method the classifier serves.
fn unwatched_target(buf: &[u8], target: &str) -> Option<(Range<usize>, Option<usize>, Route)> {
    if !target.starts_with('/') {
        return None;
    }
    let pq = http::uri::PathAndQuery::try_from(target).ok()?;
    // What is classified must be all that is forwarded: a target the URI parser reads as less
    // than it is (a fragment) goes to hyper, which forwards what it parsed.
    if pq.as_str() != target {
        return None;
    }
    let route = classify(pq.path()).ok()?;
    if Watched::of(&route.method).is_some() {
        return None;
    }
    let start = offset_in(buf, target.as_bytes())?;
    let query_at = target.find('?').map(|q| q + 1);
    Some((start..start + target.len(), query_at, route))
}

/// Notes one header; `false` when it sends the request to hyper.
fn take_header(head: &mut LaneHead, buf: &[u8], h: &httparse::Header<'_>) -> bool {
    let name = h.name;
    if HANDOFF_HEADERS.iter().any(|n| name.eq_ignore_ascii_case(n)) {
        return false;
    }
    if name.eq_ignore_ascii_case("content-length") {
        // A second one, equal or not, is hyper's to judge.
        if head.has_length {
            return false;
        }
        let Some(n) = parse_length(h.value) else {
            return false;
        };
        head.has_length = true;
        head.body_len = n;
        return true;
    }
    if name.eq_ignore_ascii_case("connection") {
        return match connection_close(h.value) {
            Some(close) => {
                head.close |= close;
                true
            }
            None => false,
        };
    }
    if name.eq_ignore_ascii_case("host") {
        // Two are hyper's to judge (with `[[portals]]`, a 400: which portal is meant?).
        if head.host.is_some() {
            return false;
        }
        head.host = Some(if h.value.is_empty() {
            0..0
        } else {
            match offset_in(buf, h.value) {
                Some(at) => at..at + h.value.len(),
                None => return false,
            }
        });
        return true;
    }
    let Some(line_start) = offset_in(buf, name.as_bytes()) else {
        return false;
    };
    // An empty value may not point into the buffer: the line is then the name and its colon,
    // which httparse requires to follow the name directly.
    let line_end = if h.value.is_empty() {
        line_start + name.len() + 1
    } else {
        let Some(value_start) = offset_in(buf, h.value) else {
            return false;
        };
        if name.eq_ignore_ascii_case("x-request-id") {
            head.request_id = Some(value_start..value_start + h.value.len());
        }
        value_start + h.value.len()
    };
    head.forwarded.push(line_start..line_end);
    true
}

/// `Some(close)` for a `Connection` made only of `keep-alive` and `close` tokens; `None` for
/// any other token (it names a hop-by-hop header, which hyper's path strips).
fn connection_close(v: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in v.split(|b| *b == b',') {
        let t = token.trim_ascii();
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !t.eq_ignore_ascii_case(b"keep-alive") {
            return None;
        }
    }
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIST: &str = "/rest/1/secret/crm.deal.list";

    fn serve(raw: &str) -> LaneHead {
        match read(raw.as_bytes()) {
            Verdict::Serve(h) => h,
            v => panic!("{v:?} for {raw:?}"),
        }
    }

    #[test]
    fn a_plain_unwatched_call_is_served_with_its_headers() {
        let raw = format!(
            "POST {LIST}?a=1 HTTP/1.1\r\nHost: p\r\nUser-Agent: sdk\r\nContent-Length: 3\r\nX-Request-ID: r1\r\nConnection: keep-alive\r\n\r\nabc"
        );
        let h = serve(&raw);
        assert_eq!(h.len, raw.len() - 3);
        assert_eq!(h.method, LaneMethod::Post);
        assert_eq!(&raw[h.target.clone()], format!("{LIST}?a=1"));
        assert_eq!(h.query_at, Some(LIST.len() + 1));
        assert_eq!((h.body_len, h.has_length, h.close), (3, true, false));
        assert_eq!(&raw[h.request_id.clone().unwrap()], "r1");
        let lines: Vec<&str> = h.forwarded.iter().map(|r| &raw[r.clone()]).collect();
        assert_eq!(lines, ["User-Agent: sdk", "X-Request-ID: r1"]);
    }

    #[test]
    fn connection_close_is_noted() {
        let h = serve(&format!(
            "GET {LIST} HTTP/1.1\r\nconnection: Keep-Alive, close\r\n\r\n"
        ));
        assert!(h.close);
        assert!(!h.has_length);
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert_eq!(
            read(format!("GET {LIST} HTTP/1.1\r\nHost:").as_bytes()),
            Verdict::Partial
        );
        assert_eq!(read(b""), Verdict::Partial);
    }

    #[test]
    fn everything_but_the_plain_case_goes_to_hyper() {
        let cases = [
            "GET /rest/1/s/crm.automatedsolution.update HTTP/1.1\r\n\r\n".to_owned(),
            "POST /rest/1/s/batch HTTP/1.1\r\n\r\n".to_owned(),
            "POST /rest/1/s/crm.type.update.json HTTP/1.1\r\n\r\n".to_owned(),
            format!("GET {LIST} HTTP/1.0\r\n\r\n"),
            format!("PUT {LIST} HTTP/1.1\r\n\r\n"),
            format!("GET http://p{LIST} HTTP/1.1\r\n\r\n"),
            "GET /other HTTP/1.1\r\n\r\n".to_owned(),
            format!("POST {LIST} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            format!("POST {LIST} HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            format!("POST {LIST} HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            format!("POST {LIST} HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n"),
            format!("POST {LIST} HTTP/1.1\r\nContent-Length: 65537\r\n\r\n"),
            format!("POST {LIST} HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
            format!("GET {LIST} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"),
            format!("GET {LIST} HTTP/1.1\r\nConnection: x-secret\r\n\r\n"),
            format!("GET {LIST} HTTP/1.1\r\nTE: trailers\r\n\r\n"),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
            format!("GET {LIST}#/../crm.automatedsolution.update HTTP/1.1\r\n\r\n"),
            format!("GET {LIST} HTTP/1.1\r\nbad header\r\n\r\n"),
        ];
        for raw in cases {
            assert_eq!(read(raw.as_bytes()), Verdict::Handoff, "{raw:?}");
        }
    }

    #[test]
    fn too_many_headers_go_to_hyper() {
        let many: String = (0..=MAX_HEADERS)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect();
        let raw = format!("GET {LIST} HTTP/1.1\r\n{many}\r\n");
        assert_eq!(read(raw.as_bytes()), Verdict::Handoff);
    }

    proptest! {
        /// Whatever the bytes, the reader never panics, and what it serves is a head whose
        /// ranges lie inside it and which a second reading agrees with.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Verdict::Serve(h) = read(&bytes) {
                prop_assert!(h.len <= bytes.len());
                prop_assert!(h.target.end <= h.len);
                for r in &h.forwarded {
                    prop_assert!(r.end <= h.len);
                }
                prop_assert_eq!(read(&bytes[..h.len]), Verdict::Serve(h));
            }
        }

        /// A generated plain request with arbitrary header values is served with each value
        /// forwarded byte for byte.
        #[test]
        fn plain_requests_keep_their_header_lines(
            values in proptest::collection::vec("[ -~]{0,20}", 0..8),
            body in 0u64..100,
        ) {
            let mut raw = format!("POST {LIST} HTTP/1.1\r\nHost: p\r\n");
            for (i, v) in values.iter().enumerate() {
                raw.push_str(&format!("x-v{i}: {v}\r\n"));
            }
            raw.push_str(&format!("content-length: {body}\r\n\r\n"));
            let h = serve(&raw);
            prop_assert_eq!(h.body_len, body);
            let lines: Vec<&str> = h.forwarded.iter().map(|r| &raw[r.clone()]).collect();
            let want: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("x-v{i}: {v}").trim_end().to_owned())
                .collect();
            prop_assert_eq!(lines, want);
        }
    }
}
