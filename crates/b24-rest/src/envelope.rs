//! The portal's JSON envelopes: `{"error": CODE, "error_description": TEXT}` for failures and the
//! `time` object that every portal answer carries. The only place error bodies are rendered.

use bytes::Bytes;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

/// The error body the portal uses, with nothing else in it. `description` must never carry a
/// secret: callers pass text they built themselves, never request bytes.
pub fn error_body(code: &str, description: &str) -> Bytes {
    let v = json!({ "error": code, "error_description": description });
    Bytes::from(v.to_string())
}

/// The `time` object of a portal answer for a call that started at `start` and ended now
/// (docs/protocol.md, Envelope). SDKs read `start`, `finish`, `duration`, `processing`,
/// `date_start` and `date_finish` as required keys.
/// The keys of `time` that the SDKs read (they fail on an answer without them).
pub const TIME_KEYS_SDKS_REQUIRE: [&str; 6] = [
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
];

pub fn time_object(start: SystemTime) -> serde_json::Value {
    let finish = SystemTime::now();
    let s = unix_seconds(start);
    let f = unix_seconds(finish).max(s);
    json!({
        "start": s,
        "finish": f,
        "duration": f - s,
        "processing": f - s,
        "date_start": iso8601(start),
        "date_finish": iso8601(finish),
        "operating_reset_at": s as i64 + 600,
        "operating": 0,
    })
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `2024-05-16T11:49:56+00:00`, the portal's `date_start` shape.
pub fn iso8601(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    dt.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_the_portal_shape() {
        let b = error_body("POLICY_VIOLATION", "refused by rule \"x\"");
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["error"], "POLICY_VIOLATION");
        assert_eq!(v["error_description"], "refused by rule \"x\"");
        assert_eq!(v.as_object().map(|o| o.len()), Some(2));
    }

    #[test]
    fn time_object_has_the_keys_sdks_require() {
        let t = time_object(SystemTime::now());
        for k in TIME_KEYS_SDKS_REQUIRE {
            assert!(t.get(k).is_some(), "{k}");
        }
        assert!(t["date_start"]
            .as_str()
            .is_some_and(|s| s.ends_with("+00:00")));
    }
}
