//! Carrying out an approved change (`POST /v1/events/{id}/approve`, `approvals.rs`): the proxy
//! itself sends the change a rule refused, as the original caller, through the audited path
//! like any other call — lock, fresh snapshot, decision, intent, forward, outcome. Two things
//! differ: the refusal by the approved rule becomes the decision `approved` (any other rule
//! still refuses), and the change is carried out only while the workplace is as it was when
//! it was refused (unless forced), checked on the fresh snapshot under the workplace's lock.

use super::change::Shape;
use super::{Pipeline, Tracked};
use crate::audit::record::ApprovalRef;
use crate::broker::LiveKey;
use crate::error::ProxyError;
use crate::mutation::{self, path_segment, SolutionState};
use crate::plan::Planned;
use crate::policy::{Decision, Verdict};
use crate::portal::Portal;
use crate::rest::route::{classify, PathWebhook};
use crate::watched::Watched;
use http::{header, Method, Request};
use std::net::SocketAddr;
use std::sync::Arc;

/// The approval a request carries out (`RequestCtx::approval`).
pub(crate) struct Approved {
    pub(crate) reference: ApprovalRef,
    /// The rule whose refusal is approved.
    rule: String,
    /// The workplace as it was when the change was refused.
    before: Option<SolutionState>,
}

impl Approved {
    /// The approved rule's refusal becomes `approved`; every other decision stands.
    pub(super) fn apply(&self, d: Decision) -> Decision {
        match (d.verdict, d.rule) {
            (Verdict::Deny, Some(rule)) if rule == self.rule => Decision {
                verdict: Verdict::Approved,
                ..d
            },
            _ => d,
        }
    }

    /// Refuses, before anything is recorded, when the fresh snapshot shows the workplace changed
    /// since the refusal (the approver judged that state, not this one), unless forced.
    pub(super) fn still_as_refused(&self, planned: &[Planned]) -> Result<(), ProxyError> {
        let now = planned.first().and_then(|p| p.before.as_ref());
        if self.reference.forced || now == self.before.as_ref() {
            return Ok(());
        }
        Err(ProxyError::ApprovalConflict(
            "the workplace changed since the change was refused; approve with \"force\": true to carry it out anyway".into(),
        ))
    }
}

/// A refused change to carry out, and as whom.
pub struct ApprovedCall {
    pub portal: Arc<Portal>,
    /// The webhook it is sent with: the caller's brokered one, or the service webhook.
    pub webhook: PathWebhook,
    /// The caller's proxy key, when it had one (the new event names the same integration).
    pub key: Option<Arc<LiveKey>>,
    /// The refused event's method and parameters, as recorded.
    pub method: String,
    pub params: serde_json::Value,
    pub rule: String,
    pub before: Option<SolutionState>,
    pub reference: ApprovalRef,
}

/// What carrying it out gave: the portal's status and the new event.
pub struct Carried {
    pub status: http::StatusCode,
    pub event_id: Option<String>,
}

/// Where an approved call comes from in the access line and the trail: the proxy itself.
const SELF: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Pipeline {
    /// Sends `call` through the audited path. The portal's answer is not the approver's to
    /// read; the new event records it.
    pub async fn carry_out_approved(
        self: &Arc<Self>,
        call: ApprovedCall,
    ) -> Result<Carried, ProxyError> {
        let path = format!(
            "/rest/{}/{}/{}",
            path_segment(&call.webhook.user),
            path_segment(&call.webhook.secret),
            call.method
        );
        let body = serde_json::to_vec(&call.params)
            .map_err(|e| ProxyError::Internal(format!("approved parameters: {e}")))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .map_err(|e| ProxyError::Internal(format!("approved request: {e}")))?;
        let mut t = Tracked::start(self, &req, SELF);
        t.ctx.portal = Some(call.portal.clone());
        t.ctx.key = call.key.clone();
        t.ctx.approval = Some(Arc::new(Approved {
            reference: call.reference.clone(),
            rule: call.rule.clone(),
            before: call.before.clone(),
        }));
        let (parts, ()) = req.into_parts();
        let result = async {
            let route = classify(&path)?;
            let Some(Watched::Solution(kind)) = Watched::of(&route.method) else {
                return Err(ProxyError::Internal(format!(
                    "{} is not a change that can be approved",
                    call.method
                )));
            };
            let interpreted =
                mutation::interpret(kind, &route, &parts.method, &parts.headers, b"", &body)?;
            self.audited(&mut t.ctx, &parts, Shape::Single(interpreted))
                .await
        }
        .await;
        let event_id = t.ctx.event_id.clone();
        match result {
            Ok(resp) => {
                t.answered(resp.status().as_u16());
                Ok(Carried {
                    status: resp.status(),
                    event_id,
                })
            }
            Err(e) => {
                t.answered(e.status().as_u16());
                Err(e)
            }
        }
    }
}
