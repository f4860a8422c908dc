//! The `/_sim/` control surface, for the demo, benchmarks and crash tests that run the simulator
//! as a separate process: read the state, queue and clear faults. The JSON forms are documented
//! in the crate docs. No authentication: the simulator is a local test tool.
//! These requests are not recorded as calls and never consume faults.

use super::render::{Answer, JSON};
use super::{Fault, Simulator};
use b24_rest::envelope::error_body;
use bytes::Bytes;
use http::Method;

/// Answers a request whose path starts with `/_sim`.
pub fn handle(sim: &Simulator, method: &Method, path: &str, body: &[u8]) -> Answer {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/_sim/state") => {
            let (solutions, mutations, calls) = {
                let st = sim.lock();
                (st.solutions(), st.mutations.clone(), st.calls.len())
            };
            let v = serde_json::json!({
                "solutions": solutions,
                "executed_mutations": mutations,
                "calls": calls,
            });
            json(200, Bytes::from(v.to_string()))
        }
        ("POST", "/_sim/faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                sim.push_fault(f);
                json(204, Bytes::new())
            }
            Err(e) => json(
                400,
                error_body("INVALID_FAULT", &format!("not a fault: {e}")),
            ),
        },
        ("DELETE", "/_sim/faults") => {
            sim.clear_faults();
            json(204, Bytes::new())
        }
        (_, "/_sim/state" | "/_sim/faults") => {
            json(405, error_body("METHOD_NOT_ALLOWED", "method not allowed"))
        }
        _ => json(404, error_body("NOT_FOUND", "unknown control path")),
    }
}

fn json(status: u16, body: Bytes) -> Answer {
    Answer {
        status,
        content_type: JSON,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimOptions;

    #[test]
    fn state_and_faults() {
        let sim = Simulator::new(SimOptions::default());
        let a = handle(&sim, &Method::GET, "/_sim/state", b"");
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
        assert_eq!(v["solutions"][0]["id"], 238);
        assert_eq!(v["calls"], 0);
        let f = br#"{"method":"batch","kind":{"kind":"status","status":503,"code":"QUERY_LIMIT_EXCEEDED","description":"Too many requests"}}"#;
        assert_eq!(handle(&sim, &Method::POST, "/_sim/faults", f).status, 204);
        assert_eq!(
            handle(&sim, &Method::POST, "/_sim/faults", b"{}").status,
            400
        );
        assert!(sim.lock().faults.take(Some("batch")).is_some());
        assert_eq!(
            handle(&sim, &Method::DELETE, "/_sim/faults", b"").status,
            204
        );
        assert_eq!(handle(&sim, &Method::GET, "/_sim/nope", b"").status, 404);
    }
}
