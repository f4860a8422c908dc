//! Phase 9, and the one place a response is made from an outcome: the portal's answer passed on
//! with the audit headers, or a `ProxyError` rendered as the portal's error envelope (or, for a
//! portal refusal, as the portal's own answer).

use crate::answer::Answer;
use crate::body::ProxyBody;
use crate::error::{PortalRefusal, ProxyError};
use crate::rest::envelope;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

/// The response header naming the audit event of a watched call.
pub const AUDIT_EVENT_HEADER: HeaderName = HeaderName::from_static("x-audit-event-id");

/// The response header naming a batch's id.
pub const AUDIT_BATCH_HEADER: HeaderName = HeaderName::from_static("x-audit-batch-id");

/// The portal's answer as the client gets it: status, headers and bytes unchanged.
pub(crate) fn answer_response(a: Answer, event_id: Option<&str>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::bytes(a.body));
    *resp.status_mut() = a.status;
    *resp.headers_mut() = a.headers;
    // The length is the proxy's to set: the body is re-sent whole.
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    set_event_id(&mut resp, event_id);
    resp
}

/// An audited change's answer: the portal's own, plus the event ids (comma-separated for a
/// batch) and the batch id.
pub(crate) fn audited_response(
    answer: Answer,
    event_ids: &[String],
    batch_id: Option<&str>,
) -> Response<ProxyBody> {
    let mut resp = answer_response(answer, Some(&event_ids.join(",")));
    if let Some(b) = batch_id.and_then(|b| HeaderValue::from_str(b).ok()) {
        resp.headers_mut().insert(AUDIT_BATCH_HEADER, b);
    }
    resp
}

/// A failure as the client gets it: the portal's envelope with the error's status, or the
/// portal's own refusal.
pub(crate) fn error_response(e: ProxyError, event_id: Option<&str>) -> Response<ProxyBody> {
    let (status, code, description) = match e {
        ProxyError::Portal(PortalRefusal::Answer(a)) => return answer_response(*a, event_id),
        ProxyError::Portal(PortalRefusal::Command { code, description }) => {
            (StatusCode::BAD_REQUEST, code, description)
        }
        e => (e.status(), e.code().to_owned(), e.description()),
    };
    let mut resp = envelope_response(status, envelope::error_body(&code, &description));
    set_event_id(&mut resp, event_id);
    resp
}

/// A JSON envelope body with its status.
fn envelope_response(status: StatusCode, body: bytes::Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::bytes(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn set_event_id(resp: &mut Response<ProxyBody>, event_id: Option<&str>) {
    if let Some(id) = event_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut().insert(AUDIT_EVENT_HEADER, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn body_json(resp: Response<ProxyBody>) -> serde_json::Value {
        match resp.into_body() {
            ProxyBody::Bytes(b) => serde_json::from_slice(&b.unwrap_or_default()).expect("json"),
            _ => panic!("a buffered body"),
        }
    }

    #[test]
    fn a_portal_refusal_is_the_portal_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        let a = Answer {
            status: StatusCode::UNAUTHORIZED,
            headers,
            body: bytes::Bytes::from_static(b"{}"),
        };
        let resp = error_response(ProxyError::portal(a), None);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn errors_are_envelopes_with_the_event_id() {
        let e = ProxyError::uninterpretable("INVALID_PARAMETER", "'id' is required");
        let resp = error_response(e, Some("evt-1"));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[AUDIT_EVENT_HEADER], "evt-1");
        let v = body_json(resp);
        assert_eq!(v["error"], "INVALID_PARAMETER");
        let cmd = ProxyError::Portal(PortalRefusal::Command {
            code: "NOT_FOUND".into(),
            description: "batch command 'u': not found".into(),
        });
        assert_eq!(body_json(error_response(cmd, None))["error"], "NOT_FOUND");
    }
}
