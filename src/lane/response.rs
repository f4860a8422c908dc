//! Reading the portal's answer head for the pass-through lane: its status, the end-to-end
//! header lines passed on (hop-by-hop ones and those `Connection` names are dropped, as on
//! hyper's path), how its body is framed (RFC 9112 §6.3), and whether the connection can
//! carry another request afterwards.

use super::{offset_in, parse_length};
use crate::error::UpstreamFailure;
use crate::upstream::HOP_BY_HOP;
use http::StatusCode;
use std::ops::Range;

/// Most header fields accepted in an answer.
const MAX_HEADERS: usize = 128;

/// Largest answer head accepted; past it the answer is invalid (502).
pub const MAX_HEAD: usize = 64 * 1024;

/// How the answer's body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyIn {
    None,
    Length(u64),
    Chunked,
    /// Until the portal closes the connection.
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// Bytes of the head (the body starts here).
    pub len: usize,
    /// Name and value of each header passed on.
    pub lines: Vec<(Range<usize>, Range<usize>)>,
    pub body: BodyIn,
    /// The connection may carry another request once the body is read.
    pub reusable: bool,
}

pub enum Parsed {
    Partial,
    /// An informational (1xx) answer of this many bytes, to skip.
    Informational(usize),
    Head(ResponseHead),
}

/// Reads an answer head from `buf`, for a request whose method was `HEAD` when `head_request`.
pub fn read(buf: &[u8], head_request: bool) -> Result<Parsed, UpstreamFailure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(Parsed::Partial),
        _ => return Err(UpstreamFailure::Invalid),
    };
    let code = resp.code.ok_or(UpstreamFailure::Invalid)?;
    let status = StatusCode::from_u16(code).map_err(|_| UpstreamFailure::Invalid)?;
    if status.is_informational() {
        // The lane never asks to switch protocols; any other 1xx is skipped.
        return if code == 101 {
            Err(UpstreamFailure::Invalid)
        } else {
            Ok(Parsed::Informational(len))
        };
    }
    let mut reusable = resp.version == Some(1);
    let mut connection_named: Vec<&str> = Vec::new();
    let mut chunked_last = None;
    let mut length: Option<u64> = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in std::str::from_utf8(h.value).unwrap_or("").split(',') {
                let token = token.trim();
                reusable &= !token.eq_ignore_ascii_case("close");
                connection_named.push(token);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = std::str::from_utf8(h.value)
                .unwrap_or("")
                .rsplit(',')
                .next()
                .unwrap_or("")
                .trim();
            chunked_last = Some(last.eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|b| *b == b',') {
                let n = parse_length(v.trim_ascii()).ok_or(UpstreamFailure::Invalid)?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpstreamFailure::Invalid);
                }
                length = Some(n);
            }
        }
    }
    let no_body = head_request || code == 204 || code == 304;
    let body = match (no_body, chunked_last, length) {
        (true, _, _) => BodyIn::None,
        (false, Some(true), _) => BodyIn::Chunked,
        (false, Some(false), _) => BodyIn::UntilClose,
        (false, None, Some(n)) => BodyIn::Length(n),
        (false, None, None) => BodyIn::UntilClose,
    };
    // A length beside a transfer coding was a smuggling attempt or a broken portal: do not
    // trust the connection with another request.
    reusable &= !(chunked_last.is_some() && length.is_some()) && body != BodyIn::UntilClose;
    let lines = passed_on(buf, resp.headers, &connection_named, body);
    Ok(Parsed::Head(ResponseHead {
        status,
        len,
        lines,
        body,
        reusable,
    }))
}

/// The header lines the client gets: end-to-end ones only; the length only when no body is
/// relayed (a `HEAD` or 304 answer keeps the portal's), as the lane frames relayed bodies.
fn passed_on(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
    connection_named: &[&str],
    body: BodyIn,
) -> Vec<(Range<usize>, Range<usize>)> {
    let mut lines = Vec::with_capacity(headers.len());
    for h in headers {
        let name = h.name;
        if HOP_BY_HOP
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_str()))
            || connection_named
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            || (body != BodyIn::None && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        if let (Some(n), Some(v)) = (offset_in(buf, name.as_bytes()), offset_in(buf, h.value)) {
            lines.push((n..n + name.len(), v..v + h.value.len()));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(raw: &str, head_request: bool) -> ResponseHead {
        match read(raw.as_bytes(), head_request) {
            Ok(Parsed::Head(h)) => h,
            _ => panic!("no head in {raw:?}"),
        }
    }

    fn names(raw: &str, h: &ResponseHead) -> Vec<String> {
        h.lines
            .iter()
            .map(|(n, _)| raw[n.clone()].to_owned())
            .collect()
    }

    #[test]
    fn a_length_framed_answer_is_reusable_and_hop_by_hop_headers_are_dropped() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n{}";
        let h = head(raw, false);
        assert_eq!(
            (h.status, h.body, h.reusable),
            (StatusCode::OK, BodyIn::Length(2), true)
        );
        assert_eq!(names(raw, &h), ["Content-Type"]);
        assert_eq!(h.len, raw.len() - 2);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                BodyIn::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                BodyIn::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                BodyIn::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, BodyIn::UntilClose, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, BodyIn::None, true),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                true,
                BodyIn::None,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                false,
                BodyIn::Length(5),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                BodyIn::Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n",
                false,
                BodyIn::Length(5),
                false,
            ),
        ];
        for (raw, head_request, body, reusable) in cases {
            let h = head(raw, head_request);
            assert_eq!((h.body, h.reusable), (body, reusable), "{raw:?}");
        }
        // A HEAD answer keeps the portal's length; a relayed body gets the lane's.
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(names(raw, &head(raw, true)), ["Content-Length"]);
        assert!(names(raw, &head(raw, false)).is_empty());
    }

    #[test]
    fn invalid_answers_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(read(raw.as_bytes(), false).is_err(), "{raw:?}");
        }
        assert!(matches!(
            read(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Parsed::Informational(25))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\n", false),
            Ok(Parsed::Partial)
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_answers_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400), head_request: bool) {
            if let Ok(Parsed::Head(h)) = read(&raw, head_request) {
                prop_assert!(h.len <= raw.len());
                for (n, v) in &h.lines {
                    prop_assert!(n.end <= h.len && v.end <= h.len);
                }
            }
        }
    }
}
