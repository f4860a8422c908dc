//! `multipart/form-data` bodies, which PHP parses into form fields before the portal sees the
//! request (docs/protocol.md, Parameter sources; the docs confirm multipart works for every
//! method).
//!
//! Only text fields are read: a part with a `filename` is an upload and never becomes a
//! parameter. Each field name goes through PHP's bracket rules by re-encoding the pair as
//! `name=value` for [`parse_str_lossy`], which registers variables exactly as PHP does.
//! Part headers other than `Content-Disposition` are ignored; a malformed body yields whatever
//! parts were complete, like PHP.

use b24_rest::params::parse_str_lossy;
use b24_rest::php::Array;
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};

/// The boundary parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            Some(v.trim().trim_matches('"').to_owned())
        } else {
            None
        }
    })
}

/// The form fields of a multipart body.
pub fn parse(body: &[u8], boundary: &str) -> Array {
    let delim = format!("--{boundary}");
    let mut encoded: Vec<u8> = Vec::new();
    for part in split(body, delim.as_bytes()).into_iter().skip(1) {
        if part.starts_with(b"--") {
            break;
        }
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(head_end) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..head_end]);
        let mut value = &part[head_end + 4..];
        value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let Some((name, is_file)) = disposition(&head) else {
            continue;
        };
        if is_file {
            continue;
        }
        if !encoded.is_empty() {
            encoded.push(b'&');
        }
        encoded.extend(
            percent_encode(name.as_bytes(), NON_ALPHANUMERIC)
                .to_string()
                .bytes(),
        );
        encoded.push(b'=');
        encoded.extend(percent_encode(value, NON_ALPHANUMERIC).to_string().bytes());
    }
    parse_str_lossy(&encoded)
}

/// `(name, has filename)` from a part's `Content-Disposition: form-data; name="..."` header.
fn disposition(head: &str) -> Option<(String, bool)> {
    let line = head.lines().find(|l| {
        l.split(':')
            .next()
            .is_some_and(|h| h.trim().eq_ignore_ascii_case("content-disposition"))
    })?;
    let (_, params) = line.split_once(':')?;
    let mut name = None;
    let mut is_file = false;
    for p in params.split(';') {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(v),
            "filename" => is_file = true,
            _ => {}
        }
    }
    name.map(|n| (n, is_file))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(pos) = find(hay, delim) {
        out.push(&hay[..pos]);
        hay = &hay[pos + delim.len()..];
    }
    out.push(hay);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_rest::php::Value;

    #[test]
    fn text_fields_become_parameters_with_bracket_rules() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n238\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"fields[typeIds][]\"\r\n\r\n\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nzzz\r\n\
--XyZ--\r\n";
        let b = boundary("multipart/form-data; boundary=XyZ").expect("boundary");
        let got = Value::Array(parse(body, &b)).to_json();
        assert_eq!(
            got,
            serde_json::json!({"id":"238","fields":{"typeIds":[""]}})
        );
    }
}
