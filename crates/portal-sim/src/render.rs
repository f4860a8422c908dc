//! Answers as the portal writes them: `{"result":..,"next":..,"total":..,"time":{..}}` or
//! `{"error":..,"error_description":..}` in JSON (`application/json; charset=utf-8`), or the same
//! data as XML when the method name ended in `.xml` (`text/xml; charset=utf-8`, a `<response>`
//! root, list elements as `<item>`, PHP's scalar printing: `true` → `1`, `false`/null → empty).

use super::methods::{MethodError, MethodOk};
use super::route::Transport;
use b24_rest::envelope::{error_body, time_object};
use bytes::Bytes;
use std::time::SystemTime;

pub const JSON: &str = "application/json; charset=utf-8";
pub const XML: &str = "text/xml; charset=utf-8";

/// A rendered answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// The success envelope of a call that started at `started`.
pub fn success(ok: &MethodOk, started: SystemTime, transport: Transport) -> Answer {
    let mut map = serde_json::Map::new();
    map.insert("result".into(), ok.result.clone());
    if let Some(n) = ok.next {
        map.insert("next".into(), n.into());
    }
    if let Some(t) = ok.total {
        map.insert("total".into(), t.into());
    }
    map.insert("time".into(), time_object(started));
    render(200, &serde_json::Value::Object(map), transport)
}

/// The error envelope, with the method error's own status.
pub fn error(e: &MethodError, transport: Transport) -> Answer {
    render(e.status, &e.to_json(), transport)
}

/// An error envelope from a code and text (faults, auth failures).
pub fn error_code(status: u16, code: &str, description: &str, transport: Transport) -> Answer {
    match transport {
        Transport::Json => Answer {
            status,
            content_type: JSON,
            body: error_body(code, description),
        },
        Transport::Xml => render(
            status,
            &serde_json::json!({ "error": code, "error_description": description }),
            transport,
        ),
    }
}

fn render(status: u16, v: &serde_json::Value, transport: Transport) -> Answer {
    match transport {
        Transport::Json => Answer {
            status,
            content_type: JSON,
            body: Bytes::from(v.to_string()),
        },
        Transport::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><response>");
            xml_children(v, &mut out);
            out.push_str("</response>");
            Answer {
                status,
                content_type: XML,
                body: Bytes::from(out),
            }
        }
    }
}

fn xml_children(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    let element = |name: &str, child: &J, out: &mut String| {
        // A key that is not a valid element name (digits, punctuation) becomes <item>, as the
        // portal prints PHP list keys.
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let tag = if valid { name } else { "item" };
        out.push('<');
        out.push_str(tag);
        out.push('>');
        xml_value(child, out);
        out.push_str("</");
        out.push_str(tag);
        out.push('>');
    };
    match v {
        J::Object(m) => m.iter().for_each(|(k, c)| element(k, c, out)),
        J::Array(items) => items.iter().for_each(|c| element("item", c, out)),
        _ => xml_value(v, out),
    }
}

fn xml_value(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Null | J::Bool(false) => {}
        J::Bool(true) => out.push('1'),
        J::Number(n) => out.push_str(&n.to_string()),
        J::String(s) => escape(s, out),
        J::Array(_) | J::Object(_) => xml_children(v, out),
    }
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_envelope_has_top_level_total_and_next() {
        let ok = MethodOk {
            result: serde_json::json!({"automatedSolutions": []}),
            total: Some(120),
            next: Some(50),
        };
        let a = success(&ok, SystemTime::now(), Transport::Json);
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
        let keys: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["result", "next", "total", "time"]);
        assert_eq!(a.content_type, JSON);
    }

    #[test]
    fn xml_rendering() {
        let ok = MethodOk::result(
            serde_json::json!({"automatedSolution": {"id": 5, "title": "A&B", "typeIds": [14, 15]}}),
        );
        let a = success(&ok, SystemTime::now(), Transport::Xml);
        let text = String::from_utf8_lossy(&a.body);
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><response><result><automatedSolution><id>5</id><title>A&amp;B</title><typeIds><item>14</item><item>15</item></typeIds>"), "{text}");
        assert_eq!(a.content_type, XML);
    }
}
