//! One request to the simulated portal, after its body has been read: route it, record it, take
//! a fault, authenticate, execute, render. Synchronous and I/O-free, so that `server.rs` can run it
//! under `catch_unwind` and so that it is easy to test.
//!
//! Faults that change the answer (`Status`, `ErrorAfterExecute`, `InvalidJson`) are applied here;
//! faults that act on the connection (`Delay`, `ResetMidResponse`, `CloseWithoutResponse`) are
//! handed back to `server.rs` as a [`WireFault`].

use super::auth::AuthFailed;
use super::batch;
use super::faults::FaultKind;
use super::methods::{self, CaseCache, Ctx, MethodError};
use super::render::{self, Answer};
use super::request::{self, HttpInput, Routed};
use super::route::Transport;
use super::state::RecordedCall;
use super::Simulator;
use b24_rest::php::Key;
use bytes::Bytes;
use http::{HeaderMap, Method};
use std::time::{Duration, SystemTime};

/// A request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

/// What the connection must do besides (or instead of) sending the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFault {
    None,
    Delay(Duration),
    ResetMidResponse,
    CloseWithoutResponse,
}

/// The body of an [`FaultKind::InvalidJson`] answer: what a misbehaving front server sends.
const NOT_JSON: &str = "<html><head><title>Bad Gateway</title></head><body>upstream sent an invalid response</body></html>";

impl Simulator {
    /// Handles one request to a non-`/_sim/` path.
    pub(crate) fn handle(&self, inc: Incoming<'_>) -> (Answer, WireFault) {
        let content_type = inc
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes());
        let routed = request::read(&HttpInput {
            method: inc.method,
            path: inc.path,
            query: inc.query.as_bytes(),
            content_type,
            body: inc.body,
        });
        let rest_method = routed
            .as_ref()
            .map(|r| r.method.clone())
            .filter(|m| !m.is_empty());
        let fault = {
            let mut st = self.lock();
            // A long demo or benchmark run must not grow without bound: past the cap the
            // oldest half of the call log goes (tests look at a handful of recent calls).
            if st.calls.len() >= MAX_RECORDED_CALLS {
                st.calls.drain(..MAX_RECORDED_CALLS / 2);
            }
            st.calls.push(recorded(&inc, rest_method.clone()));
            match routed {
                Some(_) => st.faults.take(rest_method.as_deref()),
                None => None,
            }
        };
        let Some(routed) = routed else {
            return (not_a_rest_path(), WireFault::None);
        };
        let transport = routed.transport;
        if let Some(FaultKind::Status {
            status,
            code,
            description,
        }) = &fault
        {
            return (
                render::error_code(*status, code, description, transport),
                WireFault::None,
            );
        }
        let authorization = inc
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let answer = self.execute(routed, authorization);
        match fault {
            None | Some(FaultKind::Status { .. }) => (answer, WireFault::None),
            Some(FaultKind::ErrorAfterExecute { status, code }) => (
                render::error_code(
                    status,
                    &code,
                    "Simulated failure after the call was executed",
                    transport,
                ),
                WireFault::None,
            ),
            Some(FaultKind::InvalidJson) => (
                Answer {
                    status: 200,
                    content_type: render::JSON,
                    body: Bytes::from_static(NOT_JSON.as_bytes()),
                },
                WireFault::None,
            ),
            Some(FaultKind::Delay(d)) => (answer, WireFault::Delay(d)),
            Some(FaultKind::ResetMidResponse) => (answer, WireFault::ResetMidResponse),
            Some(FaultKind::CloseWithoutResponse) => (answer, WireFault::CloseWithoutResponse),
        }
    }

    /// Authenticates and runs the call.
    fn execute(&self, routed: Routed, authorization: Option<&str>) -> Answer {
        let started = SystemTime::now();
        let transport = routed.transport;
        let mut params = routed.params;
        let caller = match self.authenticate(authorization, &mut params) {
            Ok(c) => c,
            Err(AuthFailed) => {
                return render::error_code(
                    401,
                    "NO_AUTH_FOUND",
                    "Wrong authorization data",
                    transport,
                );
            }
        };
        // REST 3.0 exists as a prefix only: no simulated method is migrated there.
        if routed.v3 {
            return render::error(&MethodError::method_not_found(), Transport::Json);
        }
        let start = params.remove(&Key::Str("start".to_owned()));
        params.remove(&Key::Str("state".to_owned()));
        let mut ctx = Ctx {
            caller,
            case_cache: CaseCache::default(),
        };
        let outcome = if routed.method == "batch" {
            let result = batch::run(&params, |method, p, start| {
                let mut st = self.lock();
                methods::call(&mut st, &mut ctx, method, p, start)
            });
            Ok(methods::MethodOk::result(result))
        } else {
            let mut st = self.lock();
            methods::call(&mut st, &mut ctx, &routed.method, &params, start.as_ref())
        };
        match outcome {
            Ok(ok) => render::success(&ok, started, transport),
            Err(e) => render::error(&e, transport),
        }
    }
}

/// How many calls the log keeps before trimming.
const MAX_RECORDED_CALLS: usize = 20_000;

fn recorded(inc: &Incoming<'_>, rest_method: Option<String>) -> RecordedCall {
    RecordedCall {
        http_method: inc.method.as_str().to_owned(),
        path: inc.path.to_owned(),
        query: inc.query.to_owned(),
        headers: inc
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: inc.body.clone(),
        rest_method,
    }
}

/// What the portal's web server answers outside the REST endpoint.
fn not_a_rest_path() -> Answer {
    Answer {
        status: 404,
        content_type: "text/html; charset=utf-8",
        body: Bytes::from_static(b"<html><body><h1>404 Not Found</h1></body></html>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fault, SimOptions};

    fn call(
        sim: &Simulator,
        method: Method,
        path: &str,
        query: &str,
        ct: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut headers = HeaderMap::new();
        if let Some(ct) = ct {
            if let Ok(v) = ct.parse() {
                headers.insert(http::header::CONTENT_TYPE, v);
            }
        }
        let body = Bytes::from(body.to_owned());
        let (a, _) = sim.handle(Incoming {
            method: &method,
            path,
            query,
            headers: &headers,
            body: &body,
        });
        (
            a.status,
            serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[test]
    fn get_with_query_runs_the_update() {
        let sim = Simulator::new(SimOptions::default());
        let (status, body) = call(
            &sim,
            Method::GET,
            "/rest/1/sim-secret-1/CRM.AutomatedSolution.Update.json",
            "id=238&fields[typeIds][]=",
            None,
            "",
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(sim.solution(238).map(|s| s.type_ids), Some(vec![]));
        let calls = sim.calls();
        assert_eq!(
            calls[0].rest_method.as_deref(),
            Some("crm.automatedsolution.update")
        );
    }

    #[test]
    fn json_looking_text_body_is_read_as_a_form() {
        let sim = Simulator::new(SimOptions::default());
        let body = r#"{"x":"&id=238&fields[typeIds][]=\"}"}"#;
        let (status, _) = call(
            &sim,
            Method::POST,
            "/rest/1/sim-secret-1/crm.automatedsolution.update",
            "",
            Some("text/plain"),
            body,
        );
        assert_eq!(status, 200);
        assert_eq!(sim.solution(238).map(|s| s.type_ids), Some(vec![]));
    }

    #[test]
    fn status_fault_does_not_execute() {
        let sim = Simulator::new(SimOptions::default());
        sim.push_fault(Fault {
            method: Some("crm.automatedsolution.update".into()),
            times: 1,
            kind: FaultKind::Status {
                status: 503,
                code: "QUERY_LIMIT_EXCEEDED".into(),
                description: "Too many requests".into(),
            },
        });
        let q = "id=238&fields[typeIds][]=";
        let (status, body) = call(
            &sim,
            Method::GET,
            "/rest/1/sim-secret-1/crm.automatedsolution.update",
            q,
            None,
            "",
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("QUERY_LIMIT_EXCEEDED"))
        );
        assert!(sim.executed_mutations().is_empty());
    }

    #[test]
    fn batch_shares_the_case_cache_and_records_each_mutation() {
        let sim = Simulator::new(SimOptions::default());
        let body = serde_json::json!({"cmd": {
            "g": "crm.automatedsolution.get?id=267",
            "a": "crm.automatedsolution.add?fields[TITLE]=New&fields[TYPE_IDS][]=31",
        }});
        let (status, out) = call(
            &sim,
            Method::POST,
            "/rest/batch",
            "auth=sim-oauth-token-1",
            Some("application/json"),
            &body.to_string(),
        );
        assert_eq!(status, 200, "{out}");
        assert_eq!(
            out["result"]["result"]["a"]["automatedSolution"]["typeIds"],
            serde_json::json!([31])
        );
        assert_eq!(sim.executed_mutations().len(), 1);
        assert_eq!(sim.solution(267).map(|s| s.type_ids), Some(vec![]));
    }

    #[test]
    fn rest_v3_has_none_of_the_methods() {
        let sim = Simulator::new(SimOptions::default());
        let (status, body) = call(
            &sim,
            Method::POST,
            "/rest/api/1/sim-secret-1/crm.automatedsolution.update",
            "",
            Some("application/json"),
            r#"{"id":238,"fields":{"typeIds":[]}}"#,
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("ERROR_METHOD_NOT_FOUND"))
        );
        assert_eq!(sim.solution(238).map(|s| s.type_ids), Some(vec![14, 158]));
    }
}
