//! `ProxyError`: every way a request can fail inside the proxy, and the one table that maps each
//! to an HTTP status and a portal-style error code.
//!
//! The phases of the pipeline return `Result<_, ProxyError>` and use `?`; only
//! `pipeline::Pipeline::handle` turns the error into a response (through `rest::envelope`). The
//! descriptions are written for the caller and never contain request bytes, so a secret can not
//! leak through an error message.

use crate::answer::Answer;
use http::StatusCode;
use thiserror::Error;

/// How an upstream exchange failed, as counted in metrics (`kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made: nothing reached the portal.
    Connect,
    /// No answer within the configured time.
    Timeout,
    /// The connection broke after the request was sent.
    Reset,
    /// The client's body, streamed on, stalled past `server.body_read_timeout`: the request
    /// was aborted by the proxy, not failed by the portal.
    ClientStalled,
    /// The portal answered, but not with what the proxy needs to read (e.g. invalid JSON).
    Invalid,
}

impl UpstreamFailure {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::ClientStalled => "client_stalled",
            UpstreamFailure::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Error)]
pub enum ProxyError {
    /// Only `/rest/` is proxied; other portal pages (and their side doors into the same
    /// controllers) are not reachable through the proxy.
    #[error("only the portal's /rest/ endpoint is served by this proxy")]
    NotFound,

    /// `[broker] require_keys`: the path's credential is not a live proxy key. The portal's own
    /// answer to a wrong webhook, so clients treat it as they would the portal's.
    #[error("Wrong authorization data")]
    NoAuth,

    /// A proxy key called a method outside its `--methods`.
    #[error("the proxy key {key} may not call {method}")]
    KeyScope { key: String, method: String },

    /// An approved change was not carried out: the workplace changed since it was refused.
    #[error("{0}")]
    ApprovalConflict(String),

    /// With `[[portals]]`: the request's host names no configured portal.
    #[error("this proxy serves no portal under the host the request names")]
    UnknownPortal,

    /// With `[[portals]]`: no host, more than one, or one that is not a host name; which portal
    /// is meant cannot be told.
    #[error("the request must name exactly one host (Host header or absolute target)")]
    BadHost,

    /// A path the portal would normalise into something else than its literal form.
    #[error("non-canonical REST path: {0}")]
    NonCanonicalPath(&'static str),

    /// A watched call the proxy cannot read the way the portal will (docs/architecture.md, The rule
    /// of interpretation).
    #[error("{reason}")]
    Uninterpretable { code: &'static str, reason: String },

    /// A watched call's body is over `server.max_body_bytes`.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },

    /// The client's body could not be read.
    #[error("the request body could not be read")]
    ClientBody,

    /// The client stopped sending its body for longer than `server.body_read_timeout`.
    #[error("the request body stalled for longer than {limit_s} s between reads")]
    BodyTimeout { limit_s: u64 },

    /// A policy rule refused the change.
    #[error("refused by policy rule \"{rule}\": {reason} (audit event {event_id})")]
    PolicyViolation {
        rule: String,
        reason: String,
        event_id: String,
    },

    /// The audit trail cannot make the intent durable, so the change is not forwarded.
    #[error("the audit trail is unavailable; the change was not forwarded")]
    AuditUnavailable,
    /// Another replica sharing the trail kept a workplace of the change locked for longer
    /// than the bounded wait (`audit/pg_locks.rs`); retrying later may succeed.
    #[error("a workplace of this change is being changed through another replica; retry the call")]
    WorkplaceBusy,

    #[error("{}", upstream_message(*.0))]
    Upstream(UpstreamFailure),

    /// The portal refused a read the proxy made for the caller (the snapshot's `get`, a
    /// listing): the caller gets the portal's own refusal, and nothing was forwarded.
    #[error("{}", .0.description())]
    Portal(PortalRefusal),

    /// A bug: details are logged, the caller gets a generic message.
    #[error("internal proxy error")]
    Internal(String),
}

/// How the portal's refusal of a snapshot read reaches the caller.
#[derive(Debug)]
pub enum PortalRefusal {
    /// The portal's own answer, passed on as is (a single call reads as the caller would).
    Answer(Box<Answer>),
    /// A batch command's target could not be read: the portal's error, for the command's key
    /// (the batch itself was never run).
    Command { code: String, description: String },
}

impl PortalRefusal {
    fn description(&self) -> String {
        match self {
            PortalRefusal::Answer(a) => format!("the portal answered {}", a.status),
            PortalRefusal::Command { description, .. } => description.clone(),
        }
    }
}

fn upstream_message(kind: UpstreamFailure) -> &'static str {
    match kind {
        UpstreamFailure::Connect => "the portal could not be reached",
        UpstreamFailure::Timeout => "the portal did not answer in time",
        UpstreamFailure::Reset => "the connection to the portal broke before it answered",
        UpstreamFailure::ClientStalled => "the request body stalled; the call was aborted",
        UpstreamFailure::Invalid => "the portal's answer could not be read",
    }
}

/// A batch the portal's way of reading cannot make sense of.
impl From<crate::rest::batch::BatchError> for ProxyError {
    fn from(e: crate::rest::batch::BatchError) -> ProxyError {
        ProxyError::Uninterpretable {
            code: e.code,
            reason: e.reason,
        }
    }
}

impl ProxyError {
    /// The portal's own refusal of a read made for the caller.
    pub fn portal(answer: Answer) -> ProxyError {
        ProxyError::Portal(PortalRefusal::Answer(Box::new(answer)))
    }

    pub fn uninterpretable(code: &'static str, reason: impl Into<String>) -> ProxyError {
        ProxyError::Uninterpretable {
            code,
            reason: reason.into(),
        }
    }

    /// The status table. Refusals are 4xx and never 401/429/5xx, because SDKs retry or refresh
    /// tokens on those (docs/protocol.md, SDK retries); only a genuinely transient proxy state
    /// answers 503 (a portal refusal keeps the portal's own status: it is its answer).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::UnknownPortal => StatusCode::NOT_FOUND,
            ProxyError::ApprovalConflict(_) => StatusCode::CONFLICT,
            ProxyError::NoAuth => StatusCode::UNAUTHORIZED,
            ProxyError::KeyScope { .. } => StatusCode::FORBIDDEN,
            ProxyError::BadHost => StatusCode::BAD_REQUEST,
            ProxyError::NonCanonicalPath(_)
            | ProxyError::Uninterpretable { .. }
            | ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::PolicyViolation { .. } => StatusCode::FORBIDDEN,
            ProxyError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::WorkplaceBusy => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(UpstreamFailure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Portal(PortalRefusal::Answer(a)) => a.status,
            ProxyError::Portal(PortalRefusal::Command { .. }) => StatusCode::BAD_REQUEST,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NotFound => "NOT_FOUND",
            ProxyError::UnknownPortal => "UNKNOWN_PORTAL",
            ProxyError::ApprovalConflict(_) => "WORKPLACE_CHANGED",
            ProxyError::NoAuth => "NO_AUTH_FOUND",
            ProxyError::KeyScope { .. } => "insufficient_scope",
            ProxyError::BadHost => "INVALID_HOST",
            ProxyError::NonCanonicalPath(_) => "NON_CANONICAL_PATH",
            ProxyError::Uninterpretable { code, .. } => code,
            ProxyError::BodyTooLarge { .. } => "REQUEST_TOO_LARGE",
            ProxyError::ClientBody => "INVALID_REQUEST_BODY",
            ProxyError::BodyTimeout { .. } => "REQUEST_TIMEOUT",
            ProxyError::PolicyViolation { .. } => "POLICY_VIOLATION",
            ProxyError::AuditUnavailable => "AUDIT_UNAVAILABLE",
            ProxyError::WorkplaceBusy => "WORKPLACE_BUSY",
            ProxyError::Upstream(UpstreamFailure::Timeout) => "UPSTREAM_TIMEOUT",
            ProxyError::Upstream(UpstreamFailure::Invalid) => "UPSTREAM_INVALID_RESPONSE",
            ProxyError::Upstream(_) => "UPSTREAM_UNAVAILABLE",
            // The portal's own code goes to the client; this one names the class in logs.
            ProxyError::Portal(_) => "PORTAL_REFUSED",
            ProxyError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The text for `error_description`.
    pub fn description(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins status and code for every variant: clients and dashboards rely on them.
    #[test]
    fn status_and_code_table() {
        let rows: Vec<(ProxyError, u16, &str)> = vec![
            (ProxyError::NotFound, 404, "NOT_FOUND"),
            (ProxyError::UnknownPortal, 404, "UNKNOWN_PORTAL"),
            (ProxyError::NoAuth, 401, "NO_AUTH_FOUND"),
            (ProxyError::BadHost, 400, "INVALID_HOST"),
            (ProxyError::NonCanonicalPath("x"), 400, "NON_CANONICAL_PATH"),
            (
                ProxyError::uninterpretable("AMBIGUOUS_PARAMETER", "x"),
                400,
                "AMBIGUOUS_PARAMETER",
            ),
            (
                ProxyError::BodyTooLarge { limit: 1 },
                413,
                "REQUEST_TOO_LARGE",
            ),
            (ProxyError::ClientBody, 400, "INVALID_REQUEST_BODY"),
            (
                ProxyError::BodyTimeout { limit_s: 60 },
                408,
                "REQUEST_TIMEOUT",
            ),
            (
                ProxyError::PolicyViolation {
                    rule: "r".into(),
                    reason: "x".into(),
                    event_id: "e".into(),
                },
                403,
                "POLICY_VIOLATION",
            ),
            (ProxyError::AuditUnavailable, 503, "AUDIT_UNAVAILABLE"),
            (ProxyError::WorkplaceBusy, 503, "WORKPLACE_BUSY"),
            (
                ProxyError::Upstream(UpstreamFailure::Connect),
                502,
                "UPSTREAM_UNAVAILABLE",
            ),
            (
                ProxyError::Upstream(UpstreamFailure::Reset),
                502,
                "UPSTREAM_UNAVAILABLE",
            ),
            (
                ProxyError::Upstream(UpstreamFailure::Timeout),
                504,
                "UPSTREAM_TIMEOUT",
            ),
            (
                ProxyError::Upstream(UpstreamFailure::Invalid),
                502,
                "UPSTREAM_INVALID_RESPONSE",
            ),
            (ProxyError::Internal("boom".into()), 500, "INTERNAL_ERROR"),
            (
                ProxyError::portal(Answer {
                    status: StatusCode::UNAUTHORIZED,
                    headers: http::HeaderMap::new(),
                    body: bytes::Bytes::new(),
                }),
                401,
                "PORTAL_REFUSED",
            ),
            (
                ProxyError::Portal(PortalRefusal::Command {
                    code: "NOT_FOUND".into(),
                    description: "x".into(),
                }),
                400,
                "PORTAL_REFUSED",
            ),
        ];
        for (err, status, code) in rows {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            assert!(!err.status().is_redirection() && !err.status().is_success());
        }
    }

    #[test]
    fn policy_description_names_rule_and_event() {
        let e = ProxyError::PolicyViolation {
            rule: "deny_empty_type_ids".into(),
            reason: "would unbind every smart process".into(),
            event_id: "evt-1".into(),
        };
        let d = e.description();
        assert!(d.contains("deny_empty_type_ids") && d.contains("evt-1"));
    }

    #[test]
    fn internal_details_are_not_shown() {
        assert_eq!(
            ProxyError::Internal("secret detail".into()).description(),
            "internal proxy error"
        );
    }
}
