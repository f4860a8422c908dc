//! The hash chain: canonical JSON of an entry, and `hash = SHA-256(prev_hash ‖ canonical JSON)`
//! (design §4). Canonical means object keys sorted by their UTF-8 bytes and no insignificant
//! whitespace, so the same entry always hashes the same, whichever code wrote it.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Canonical JSON text of a value.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(512);
    write_canonical(v, &mut out);
    // Only serde_json's own output and ASCII punctuation were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
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
                write_canonical(child, out);
            }
            out.push(b'}');
        }
        J::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
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
