//! The proxy's own encoding of parameters it has read, for calls it forwards in its own bytes
//! (docs/architecture.md, Forwarding an inspected call): a PHP array → a query string that
//! `parse_str` reads back as exactly that array.
//!
//! PHP percent-decodes a name *before* it splits it at brackets, so no escaping can protect a
//! `[` or `]` inside a key, and `max_input_vars` or the nesting limit can cut what is sent. Rather
//! than reason about every such case, the encoder checks its own output: it parses the query it
//! built with the same `parse_str` the proxy reads with (verified against PHP by the differential
//! tests) and gives up unless the result is the array it started from. A caller that gets `None`
//! refuses the call: it cannot be forwarded meaning exactly what was read.

use crate::params::parse_str;
use crate::php::{Array, Key, Value};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters is escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `params` as `name=value&name[sub][0]=value…`, or `None` when no query string reads back as
/// exactly `params` (an empty array, a non-string leaf, a key PHP would split, too many values).
pub fn form_query(params: &Array) -> Option<String> {
    let mut out = String::new();
    for (k, v) in params.iter() {
        let mut name = escape(&k.as_text());
        push_pairs(&mut out, &mut name, v)?;
    }
    let back = parse_str(out.as_bytes()).ok()?;
    (!back.too_deep && back.params.same_entries(params)).then_some(out)
}

fn push_pairs(out: &mut String, name: &mut String, v: &Value) -> Option<()> {
    match v {
        Value::Str(s) => {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(&escape(s));
            Some(())
        }
        // `parse_str` makes an array only to hold a value, so it can never give back an empty one.
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => {
            let len = name.len();
            for (k, v) in a.iter() {
                name.push('[');
                name.push_str(&escape_key(k));
                name.push(']');
                push_pairs(out, name, v)?;
                name.truncate(len);
            }
            Some(())
        }
        // Only strings come out of `parse_str`; anything else has no form spelling.
        _ => None,
    }
}

fn escape_key(k: &Key) -> String {
    match k {
        Key::Int(n) => n.to_string(),
        Key::Str(s) => escape(s),
    }
}

fn escape(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(q: &str) -> Array {
        parse_str(q.as_bytes()).expect("parses").params
    }

    #[test]
    fn round_trips_what_parse_str_reads() {
        for q in [
            "id=5&fields[title]=A%26B+C&fields[typeIds][]=14&fields[typeIds][]=",
            "filter[>DATE]=2024-01-01T10:00:00&order[ID]=DESC",
            "a[x[y]=1&b]=2&c[%20x]=3&d[-5]=4&e[05]=5",
            "v=%00%23%3F%2B%25",
            "fields.title=x&a%20b=1",
        ] {
            let params = read(q);
            let enc = form_query(&params).expect(q);
            assert!(read(&enc).same_entries(&params), "{q} -> {enc}");
            assert!(!enc.contains('#') && !enc.contains('+'), "{enc}");
        }
    }

    #[test]
    fn gives_up_when_no_spelling_reads_back() {
        let mut inner = Array::new();
        inner.set(Key::Str("x]y".into()), Value::Str("1".into()));
        let mut a = Array::new();
        a.set(Key::Str("a".into()), Value::Array(inner));
        assert_eq!(form_query(&a), None, "a ']' inside a key cannot be written");
        let mut e = Array::new();
        e.set(Key::Str("a".into()), Value::Array(Array::new()));
        assert_eq!(form_query(&e), None, "an empty array has no form spelling");
        let mut n = Array::new();
        n.set(Key::Str("a".into()), Value::Int(1));
        assert_eq!(form_query(&n), None);
        let many: String = (0..1001).map(|i| format!("v{i}=1&")).collect();
        let big = parse_str(many.as_bytes()).expect("parses");
        assert_eq!(big.params.len(), 1000, "PHP keeps the first 1000");
        assert!(
            form_query(&big.params).is_some(),
            "1000 values are kept whole"
        );
    }

    proptest! {
        /// Whatever `parse_str` reads, the encoding either reads back the same or is refused.
        #[test]
        fn never_encodes_another_meaning(q in "([a-c\\[\\]%2B5D0 .=&_-]|%5B|%5D|%00){0,40}") {
            // Some inputs decode to invalid UTF-8, which the strict reader refuses.
            let Ok(parsed) = parse_str(q.as_bytes()) else { return Ok(()) };
            let params = parsed.params;
            if let Some(enc) = form_query(&params) {
                prop_assert!(read(&enc).same_entries(&params));
            }
        }
    }
}
