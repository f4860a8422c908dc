//! What the pass-through lane writes: the request head it sends the portal and the response
//! head it sends the client, each built once into one buffer so it leaves in one write.
//! Header names and values are copied as they were read (both already checked by httparse);
//! only the framing and connection headers are the lane's own.

use http::StatusCode;
use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows (a `HEAD` answer, 1xx, 204, 304); the header block is sent as it came.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked, re-framed by the lane.
    Chunked,
}

/// The request the portal gets: the client's method, target and header lines, the portal's
/// `Host`, and the body's length when the client gave one.
pub fn request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &[u8],
    host: &[u8],
    lines: impl Iterator<Item = impl AsRef<[u8]>>,
    length: Option<u64>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    for line in lines {
        out.extend_from_slice(line.as_ref());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The start of the client's answer: status line, the portal's end-to-end header lines, a
/// `Date` when the portal sent none (as hyper adds one), the lane's framing and `Connection`.
pub fn response_head<'a>(
    out: &mut Vec<u8>,
    status: StatusCode,
    lines: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    framing: Framing,
    close: bool,
) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut dated = false;
    for (name, value) in lines {
        dated |= name.eq_ignore_ascii_case(b"date");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        now_http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line of a chunk of `n` bytes.
pub fn chunk_size_line(out: &mut Vec<u8>, n: usize) {
    let _ = write!(out, "{n:X}\r\n");
}

/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

thread_local! {
    /// The formatted date and the second it is for: formatted once a second per thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn now_http_date(out: &mut Vec<u8>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            format_date(&mut cached.1, secs);
            cached.0 = secs;
        }
        out.extend_from_slice(&cached.1);
    });
}

fn format_date(out: &mut Vec<u8>, secs: u64) {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    if let Ok(s) = t.format(&format) {
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        let mut out = Vec::new();
        format_date(&mut out, 784_111_777);
        assert_eq!(out, b"Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn a_response_head_has_one_framing_and_the_portals_date() {
        let mut out = Vec::new();
        let lines = [
            (&b"Date"[..], &b"Sun, 06 Nov 1994 08:49:37 GMT"[..]),
            (b"x-a", b"1"),
        ];
        response_head(
            &mut out,
            StatusCode::OK,
            lines.into_iter(),
            Framing::Length(5),
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nx-a: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_request_head_carries_the_portals_host() {
        let mut out = Vec::new();
        request_head(
            &mut out,
            "POST",
            b"/rest/x?y",
            b"portal:443",
            ["User-Agent: a"].iter(),
            Some(0),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /rest/x?y HTTP/1.1\r\nhost: portal:443\r\nUser-Agent: a\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
