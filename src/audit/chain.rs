//! The hash chain: the canonical JSON of an entry, and `hash = SHA-256(prev_hash ‖ payload)`
//! (docs/architecture.md, The trail's guarantees; the exact form is specified in
//! `docs/trail-format.md`).
//!
//! Two canonical forms exist. Entries written by this version carry `"v":2` in their payload and
//! are canonicalised by RFC 8785 (JSON Canonicalization Scheme): keys sorted by their UTF-16 code
//! units, numbers written as ECMAScript writes a double, minimal string escaping. Entries written
//! before carry no `v` (form 1): keys sorted by their UTF-8 bytes, numbers as serde_json writes
//! them. Both forms agree on everything the proxy has ever written except non-integral numbers
//! and keys outside the Basic Multilingual Plane; the hash itself never depends on the form — it
//! is taken over the stored text — the form only says how that text must have been produced.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical form new entries are written in (the payload's `v`).
pub const FORM: u64 = 2;

/// Integers up to this magnitude are exact as doubles, so RFC 8785 writes them as they are.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// RFC 8785 canonical JSON text of a value: the form new entries are written in.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::with_capacity(512);
    write_jcs(v, &mut out);
    out
}

/// The canonical text of `v` in canonical form `form` (1: legacy, 2: RFC 8785).
pub fn canonical_json_form(v: &serde_json::Value, form: u64) -> Option<String> {
    match form {
        1 => Some(canonical_json_v1(v)),
        2 => Some(canonical_json(v)),
        _ => None,
    }
}

/// Whether `payload` (which parses to `v`) is canonical in the form it declares. Form 1 accepts
/// any spelling of a non-integral number: the JSON library that wrote those entries changed
/// its float spelling between versions (`1e21` / `1e+21`), which is why form 2 exists.
pub fn is_canonical(payload: &str, v: &serde_json::Value) -> bool {
    match form_of(v) {
        Some(1) => same_but_number_spelling(payload, &canonical_json_v1(v)),
        Some(2) => canonical_json(v) == payload,
        _ => false,
    }
}

/// `a == b`, except that number tokens outside strings compare by the double they denote.
fn same_but_number_spelling(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j, mut in_string) = (0, 0, false);
    let is_num = |c: u8| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E');
    while i < a.len() && j < b.len() {
        if !in_string && is_num(a[i]) && is_num(b[j]) {
            let (si, sj) = (i, j);
            while i < a.len() && is_num(a[i]) {
                i += 1;
            }
            while j < b.len() && is_num(b[j]) {
                j += 1;
            }
            let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<f64>().ok();
            match (num(&a[si..i]), num(&b[sj..j])) {
                (Some(x), Some(y)) if x == y => continue,
                _ => return false,
            }
        }
        if a[i] != b[j] {
            return false;
        }
        if in_string && a[i] == b'\\' {
            // An escape: the next byte is part of it, never a closing quote.
            i += 1;
            j += 1;
            if i >= a.len() || j >= b.len() || a[i] != b[j] {
                return false;
            }
        } else if a[i] == b'"' {
            in_string = !in_string;
        }
        i += 1;
        j += 1;
    }
    i == a.len() && j == b.len()
}

/// The canonical form a parsed payload declares: its `v`, or 1 when absent.
pub fn form_of(payload: &serde_json::Value) -> Option<u64> {
    match payload.get("v") {
        None => Some(1),
        Some(v) => v.as_u64(),
    }
}

fn write_jcs(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => write_jcs_number(n, out),
        J::String(s) => write_jcs_string(s, out),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_jcs(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            // RFC 8785 §3.2.3: keys compared as arrays of UTF-16 code units (for ASCII keys,
            // the common case, that is their byte order).
            let mut entries: Vec<(&str, &J)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
            entries.sort_unstable_by(|a, b| {
                if a.0.is_ascii() && b.0.is_ascii() {
                    a.0.cmp(b.0)
                } else {
                    a.0.encode_utf16().cmp(b.0.encode_utf16())
                }
            });
            out.push('{');
            for (i, (k, child)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_jcs_string(k, out);
                out.push(':');
                write_jcs(child, out);
            }
            out.push('}');
        }
    }
}

/// RFC 8785 §3.2.2.2: `"` and `\` escaped, the five short control escapes, every other control
/// character as `\u00xx` (lower-case hex), everything else as it is.
fn write_jcs_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    // Runs of characters written as they are are copied whole; only ASCII bytes are escaped,
    // so every cut falls on a character boundary.
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_jcs_number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write as _;
    // Writing into a String cannot fail.
    if let Some(u) = n.as_u64().filter(|u| *u <= MAX_SAFE_INTEGER) {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER) {
        let _ = write!(out, "{i}");
    } else {
        // Larger integers and every non-integer: the double they denote (RFC 8785 §3.2.2.3).
        out.push_str(&ecmascript_number(n.as_f64().unwrap_or(0.0)));
    }
}

/// `Number.prototype.toString()` of a finite double (ECMA-262 §6.1.6.1.20), which RFC 8785
/// adopts. Rust's `{:e}` yields the same shortest round-trip digits; only the layout differs.
pub fn ecmascript_number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // x = 0.d1d2…dk × 10^n
    let n = exp + 1;
    let mut s = String::new();
    if x < 0.0 {
        s.push('-');
    }
    if k <= n && n <= 21 {
        s.push_str(&digits);
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        s.push_str(&digits[..n as usize]);
        s.push('.');
        s.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-n) as usize));
        s.push_str(&digits);
    } else {
        s.push_str(&digits[..1]);
        if k > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if n - 1 < 0 { '-' } else { '+' });
        s.push_str(&(n - 1).abs().to_string());
    }
    s
}

/// The form-1 canonical text: keys sorted by their UTF-8 bytes, scalars as serde_json writes
/// them. Kept to verify entries written before RFC 8785 was adopted.
pub fn canonical_json_v1(v: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(512);
    write_v1(v, &mut out);
    // Only serde_json's own output and ASCII punctuation were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn write_v1(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            let mut entries: Vec<(&str, &J)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, child)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a &str or a scalar into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_v1(child, out);
            }
            out.push(b'}');
        }
        J::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_v1(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// `SHA-256(prev_hash ‖ payload)` as lower-case hex.
pub fn entry_hash(prev_hash: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "é"}], "c": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"é","z":0}]},"b":1}"#
        );
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"d":[1,{"y":"é","z":0}],"c":null},"b":1}"#)
                .expect("json");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), canonical_json_v1(&a));
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+1F600 is D83D DE00 in UTF-16, below U+FB33; in UTF-8 it sorts after.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2});
        assert_eq!(canonical_json(&v), "{\"\u{1f600}\":2,\"\u{fb33}\":1}");
        assert_eq!(canonical_json_v1(&v), "{\"\u{fb33}\":1,\"\u{1f600}\":2}");
    }

    #[test]
    fn strings_escape_only_what_rfc_8785_escapes() {
        let v = json!("a\"b\\c/\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é€😀");
        assert_eq!(
            canonical_json(&v),
            "\"a\\\"b\\\\c/\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é€😀\""
        );
    }

    #[test]
    fn numbers_are_written_as_ecmascript_writes_them() {
        // The examples of RFC 8785 Appendix B and §3.2.2.3.
        let cases: [(f64, &str); 14] = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (123456789012345680000.0, "123456789012345680000"),
            (4.50, "4.5"),
            (2e-3, "0.002"),
            (0.000000000000000000000000001, "1e-27"),
            (5e-324, "5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(ecmascript_number(x), want, "{x:e}");
        }
        assert_eq!(
            ecmascript_number(1.7976931348623157e308),
            "1.7976931348623157e+308"
        );
        assert_eq!(ecmascript_number(333333333.3333333), "333333333.3333333");
        let v: serde_json::Value =
            serde_json::from_str("[1.0, 9007199254740993, -42, 1E2, 12345678901234567890]")
                .expect("json");
        assert_eq!(
            canonical_json(&v),
            "[1,9007199254740992,-42,100,12345678901234567000]"
        );
    }

    #[test]
    fn form_1_writes_numbers_as_serde_json_does() {
        let v = json!({"big": 1e21, "ratio": 1.5, "one": 1.0, "small": 1e-7, "n": -3});
        let text = canonical_json_v1(&v);
        assert!(text.starts_with(r#"{"big":1e"#), "{text}");
        // Either spelling of 1e21 (serde_json changed it between versions) is form-1 canonical.
        for spelled in [
            r#"{"big":1e21,"n":-3,"one":1.0,"ratio":1.5,"small":1e-7}"#,
            r#"{"big":1e+21,"n":-3,"one":1.0,"ratio":1.5,"small":1e-7}"#,
        ] {
            let parsed: serde_json::Value = serde_json::from_str(spelled).expect("json");
            assert!(is_canonical(spelled, &parsed), "{spelled}");
        }
        let not: [&str; 3] = [
            r#"{"n":-3,"big":1e21,"one":1.0,"ratio":1.5,"small":1e-7}"#,
            r#"{"big":1e21, "n":-3,"one":1.0,"ratio":1.5,"small":1e-7}"#,
            r#"{"big":1e21,"n":-3,"one":1.0,"ratio":1.5,"small":1e-7,"s":"\u0041"}"#,
        ];
        for text in not {
            let parsed: serde_json::Value = serde_json::from_str(text).expect("json");
            assert!(!is_canonical(text, &parsed), "{text}");
        }
        let v2 = json!({"v": 2, "x": 1.0});
        assert!(is_canonical(r#"{"v":2,"x":1}"#, &v2));
        assert!(!is_canonical(r#"{"v":2,"x":1.0}"#, &v2));
    }

    #[test]
    fn forms_are_declared_by_v() {
        assert_eq!(form_of(&json!({"seq": 1})), Some(1));
        assert_eq!(form_of(&json!({"v": 2})), Some(2));
        assert_eq!(form_of(&json!({"v": "2"})), None);
        assert!(canonical_json_form(&json!({}), 3).is_none());
    }

    #[test]
    fn the_known_answer_in_docs_trail_format_holds() {
        let v = json!({
            "v": 2, "seq": 1, "time": "2026-12-02T09:15:00.123Z",
            "event_id": "019ad8a4-6f2e-7c31-9a55-0c8e4b1d2f60", "kind": "received",
            "method": "crm.automatedsolution.update", "solution_id": 238,
            "caller": {"user_id": "1", "auth": "webhook", "fingerprint": "3f1c9a0e5b7d2c48"},
            "before": {"typeIds": [14, 158], "title": "HR"},
        });
        let text = canonical_json(&v);
        let doc = include_str!("../../docs/trail-format.md");
        assert!(doc.contains(&format!("payload   = {text}\n")), "{text}");
        let hash = entry_hash(GENESIS, &text);
        assert_eq!(
            hash,
            "4277112e4363b3d22ea2b8da972cef455deea2218a08e534d68f87829b4a659f"
        );
        assert!(doc.contains(&format!("hash      = {hash}\n")));
    }

    #[test]
    fn hash_depends_on_prev_and_payload() {
        let h1 = entry_hash(GENESIS, "{}");
        assert_eq!(h1.len(), 64);
        assert_ne!(h1, entry_hash(&h1, "{}"));
        assert_ne!(h1, entry_hash(GENESIS, "{ }"));
        // Known answer: sha256("0"*64 + "{}").
        assert_eq!(
            h1,
            hex::encode(Sha256::digest(format!("{GENESIS}{{}}").as_bytes()))
        );
    }
}
