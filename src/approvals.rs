//! Approvals: a second person for what policy refuses. `[admin] approvers_file` names the
//! approvers (`NAME = "TOKEN"`); `POST /v1/events/{id}/approve` with `Authorization: Bearer
//! TOKEN` and `{"reason": "...", "force": false}` has the proxy carry out the refused change
//! itself, through the audited path, as the original caller (its brokered webhook; for a caller
//! whose credential the proxy does not hold, the service webhook of `[revert] webhook_file`),
//! and answers `{"event_id": NEW_ID}`.
//!
//! Refused with 409 when the event was not refused by a policy rule, was approved already, is
//! older than `[admin] approval_ttl`, or the workplace changed since the refusal (unless
//! `force`). The new event records the approver, the reason and the event it approves
//! (`approval`); reading the refused event shows its approval (`approved_by`).

pub mod cli;

use crate::audit::query::{self, EventRecord, Filter};
use crate::audit::record::ApprovalRef;
use crate::audit::Outcome;
use crate::config::{Config, TrailDatabase};
use crate::error::ProxyError;
use crate::pipeline::{ApprovedCall, Pipeline};
use crate::policy::rules;
use crate::rest::route::PathWebhook;
use http::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest approval reason recorded.
const MAX_REASON: usize = 500;

/// The approvers: name by the SHA-256 of the token (compared in constant time).
pub struct Approvers(BTreeMap<String, [u8; 32]>);

impl Approvers {
    pub fn load(path: &Path) -> Result<Approvers, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("admin.approvers_file {}: {e}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|_| {
            format!(
                "admin.approvers_file {}: not TOML (NAME = \"TOKEN\" per line)",
                path.display()
            )
        })?;
        let mut out = BTreeMap::new();
        for (name, v) in table {
            let token = v
                .as_str()
                .map(str::trim)
                .filter(|t| t.len() >= 16)
                .ok_or_else(|| {
                    format!(
                        "admin.approvers_file: {name} must be a token of at least 16 characters"
                    )
                })?;
            out.insert(name, Sha256::digest(token.as_bytes()).into());
        }
        if out.is_empty() {
            return Err("admin.approvers_file names no approver".into());
        }
        Ok(Approvers(out))
    }

    /// The approver whose token `given` is.
    pub fn who(&self, given: &str) -> Option<&str> {
        let got: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        let mut found = None;
        // Every entry compared, each in constant time: timing tells nothing about the tokens.
        for (name, want) in &self.0 {
            let same = got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// An approval request's answer: status, and the JSON body (an error envelope when refused).
pub type Answer = (StatusCode, Value);

fn refused(status: StatusCode, code: &str, msg: impl Into<String>) -> Answer {
    (
        status,
        json!({"error": code, "error_description": msg.into()}),
    )
}

fn conflict(code: &str, msg: impl Into<String>) -> Answer {
    refused(StatusCode::CONFLICT, code, msg)
}

/// What an approval asks for.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    reason: String,
    #[serde(default)]
    force: bool,
}

/// The admin listener's approval desk.
pub struct Desk {
    approvers: Approvers,
    ttl: Duration,
    pipeline: Arc<Pipeline>,
    config: Config,
    /// Events being carried out now: a second approval of one waits for nothing, it is refused.
    in_progress: Mutex<HashSet<String>>,
}

impl Desk {
    pub fn new(config: &Config, pipeline: Arc<Pipeline>) -> Result<Option<Desk>, String> {
        let Some(path) = &config.admin.approvers_file else {
            return Ok(None);
        };
        Ok(Some(Desk {
            approvers: Approvers::load(path)?,
            ttl: config.admin.approval_ttl,
            pipeline,
            config: config.clone(),
            in_progress: Mutex::new(HashSet::new()),
        }))
    }

    /// `POST /v1/events/{id}/approve` with the bearer token `token` and the JSON `body`.
    pub async fn approve(&self, id: &str, token: Option<&str>, body: &[u8]) -> Answer {
        let Some(approver) = token.and_then(|t| self.approvers.who(t)) else {
            return refused(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "an approver's bearer token is required",
            );
        };
        let approver = approver.to_owned();
        let ask: Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(_) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER",
                    "the body must be {\"reason\": \"...\"} (and optionally \"force\": true)",
                )
            }
        };
        let reason = ask.reason.trim().to_owned();
        if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return refused(
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETER",
                format!("reason must be 1 to {MAX_REASON} characters of text"),
            );
        }
        if !self.lock(id) {
            return conflict("APPROVAL_IN_PROGRESS", "this event is being approved now");
        }
        let answer = self.carry_out(id, approver, reason, ask.force).await;
        self.unlock(id);
        answer
    }

    fn lock(&self, id: &str) -> bool {
        self.in_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned())
    }

    fn unlock(&self, id: &str) {
        self.in_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    async fn carry_out(&self, id: &str, approver: String, reason: String, force: bool) -> Answer {
        let db = self.config.audit.database.clone();
        let (id_owned, ttl) = (id.to_owned(), self.ttl);
        let checked = tokio::task::spawn_blocking(move || approvable(&db, &id_owned, ttl)).await;
        let event = match checked {
            Ok(Ok(e)) => e,
            Ok(Err(answer)) => return answer,
            Err(_) => {
                return refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "internal error",
                )
            }
        };
        let call = match self.call_for(&event, approver, reason, force) {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        match self.pipeline.carry_out_approved(call).await {
            Ok(done) => (
                StatusCode::OK,
                json!({"event_id": done.event_id, "approves": event.id, "portal_status": done.status.as_u16()}),
            ),
            Err(ProxyError::PolicyViolation { rule, event_id, .. }) => conflict(
                "REFUSED_AGAIN",
                format!("another rule ({rule}) refuses the change now; see event {event_id}"),
            ),
            Err(e) => refused(e.status(), e.code(), e.to_string()),
        }
    }

    /// The call that carries `event` out, and the credential it goes with.
    fn call_for(
        &self,
        event: &EventRecord,
        approver: String,
        reason: String,
        force: bool,
    ) -> Result<ApprovedCall, Answer> {
        let portals = &self.pipeline.portals;
        let portal = portals
            .all()
            .iter()
            .find(|p| event.portal.as_deref().is_none_or(|n| n == p.name))
            .filter(|_| event.portal.is_some() || !portals.by_host())
            .cloned()
            .ok_or_else(|| conflict("UNKNOWN_PORTAL", "the event's portal is not configured"))?;
        let portal_name = portals.by_host().then_some(portal.name.as_str());
        let key = match (&event.caller.integration, &self.pipeline.broker) {
            (Some(name), Some(b)) => Some(b.key_named(name, portal_name).ok_or_else(|| {
                conflict(
                    "NO_CREDENTIAL",
                    format!("the proxy key {name} the change came with is no longer live"),
                )
            })?),
            _ => None,
        };
        let webhook = match &key {
            Some(k) => k.webhook.clone(),
            None => {
                let cfg = self
                    .config
                    .portal_named(event.portal.as_deref())
                    .ok_or_else(|| {
                        conflict("UNKNOWN_PORTAL", "the event's portal is not configured")
                    })?;
                let hook = crate::revert::service_webhook(&self.config, cfg).map_err(|e| {
                    conflict(
                        "NO_CREDENTIAL",
                        format!("the proxy holds no credential of the caller and {e}"),
                    )
                })?;
                crate::broker::webhooks::parse_hook(&hook).ok_or_else(|| {
                    conflict(
                        "NO_CREDENTIAL",
                        "the service webhook must be USER_ID/SECRET",
                    )
                })?
            }
        };
        Ok(ApprovedCall {
            portal,
            webhook: PathWebhook {
                user: webhook.user,
                secret: webhook.secret,
            },
            key,
            method: event.method.clone(),
            params: event.request.params.clone(),
            rule: event.rule.clone().unwrap_or_default(),
            before: event.before.clone(),
            reference: ApprovalRef {
                approves: event.id.clone(),
                approver,
                reason,
                forced: force,
            },
        })
    }
}

/// The event `id`, when it may be approved now; else the answer refusing it.
fn approvable(db: &TrailDatabase, id: &str, ttl: Duration) -> Result<EventRecord, Answer> {
    let unavailable = |e: crate::audit::AuditError| {
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "AUDIT_UNAVAILABLE",
            e.to_string(),
        )
    };
    let reader = query::open_reader(db).map_err(unavailable)?;
    let event = query::event(&*reader, id)
        .map_err(unavailable)?
        .ok_or_else(|| refused(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no event {id}")))?;
    let by_policy = event.outcome == Some(Outcome::Denied)
        && event.decision == "deny"
        && event
            .rule
            .as_deref()
            .is_some_and(|r| r != rules::UNINTERPRETABLE && r != rules::KEY_SCOPE)
        && event.method.starts_with("crm.automatedsolution.");
    if !by_policy {
        return Err(conflict(
            "NOT_REFUSED_BY_POLICY",
            format!("event {id} was not a change refused by a policy rule"),
        ));
    }
    if expired(&event.time, ttl) {
        return Err(conflict(
            "APPROVAL_EXPIRED",
            format!(
                "event {id} is older than admin.approval_ttl ({}s)",
                ttl.as_secs()
            ),
        ));
    }
    if let Some(by) = approved_by(&*reader, &event).map_err(unavailable)? {
        return Err(conflict(
            "APPROVED_ALREADY",
            format!("event {id} was approved already (event {})", by["event_id"]),
        ));
    }
    Ok(event)
}

pub(crate) fn expired(time: &str, ttl: Duration) -> bool {
    let fmt = &time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(time, fmt) {
        Ok(t) => time::OffsetDateTime::now_utc() - t > ttl,
        // A time that does not parse cannot be shown to be recent.
        Err(_) => true,
    }
}

/// The event that carried out `event`'s approval, when there is one: an approval can only
/// come after the refusal, so the events since it are enough.
pub fn approved_by(
    reader: &dyn query::TrailReader,
    event: &EventRecord,
) -> Result<Option<Value>, crate::audit::AuditError> {
    let filter = Filter {
        since: Some(event.time.clone()),
        ..Filter::default()
    };
    let mut found = None;
    query::for_each_event(reader, &filter, |e: EventRecord| {
        if let Some(a) = e
            .approval
            .as_ref()
            .filter(|a| a.approves == event.id && found.is_none())
        {
            found = Some(json!({
                "event_id": e.id,
                "approver": a.approver,
                "reason": a.reason,
                "time": e.time,
                "outcome": e.outcome.map(Outcome::as_str),
            }));
        }
        Ok(())
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvers_are_found_by_token_and_short_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("approvers.toml");
        std::fs::write(
            &path,
            "alice = \"a-token-of-enough-length\"\nbob = \"another-long-token-here\"\n",
        )
        .expect("write");
        let a = Approvers::load(&path).expect("load");
        assert_eq!(a.who("a-token-of-enough-length"), Some("alice"));
        assert_eq!(a.who(" another-long-token-here "), Some("bob"));
        assert_eq!(a.who("a-token-of-enough-lengtH"), None);
        std::fs::write(&path, "alice = \"short\"\n").expect("write");
        let e = Approvers::load(&path).err().expect("short token");
        assert!(!e.contains("short\""), "{e}");
    }

    #[test]
    fn approvals_expire_after_the_ttl() {
        let now = crate::audit::now_rfc3339();
        assert!(!expired(&now, Duration::from_secs(60)));
        assert!(expired("2020-01-01T00:00:00.000Z", Duration::from_secs(60)));
        assert!(expired("not a time", Duration::from_secs(60)));
    }
}
