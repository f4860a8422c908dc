//! The request pipeline, phase by phase (docs/architecture.md, "The request phases"): one
//! file per phase under `pipeline/`, each an `impl Pipeline` block over the per-request
//! context (`context::RequestCtx`) that the pipeline owns for the request's life.
//!
//! `Pipeline::handle` is the thin outer shell: it runs the phases, turns a `ProxyError` into a
//! response (`respond`, the one renderer), and records metrics and the access line — once per
//! request, whatever happened (`context::Tracked`). The phases in order:
//!
//! 1. **classify** (`classify`; `rest::route`): path → method and path credential.
//! 2. **pass through** (`pass_through`) unwatched calls, streamed both ways.
//! 3. **interpret** (`interpret`; `mutation`, `rest::params`, `rest::batch`) watched calls, body
//!    size-capped; inspected calls that change nothing audited are forwarded rebuilt here.
//! 4. **snapshot** (`snapshot`) the prior state under the workplaces' locks (`locks`).
//! 5. **decide** (`decide`; `policy`). `audited` sequences phases 4–9.
//! 6. **record intent** durably (`forward`; entries built in `record`), or refuse with 503.
//! 7. **forward** (`forward`) the canonical re-encoding (`mutation::outbound`).
//! 8. **record outcome** (`outcome`), with the after-state (re-read when the answer lacks it).
//! 9. **respond** (`respond`) with the portal's bytes plus `X-Audit-Event-Id`.
//!
//! A request future is dropped when its client goes away (connection closed, HTTP/2 stream
//! reset): what it holds is released by guards (`lifecycle`), and from the intent on the
//! audited work runs in its own task, so it is never cut short with it. Client bodies are read
//! through `body::Timed` (`server.body_read_timeout`, 408 past it).

mod approved;
mod audited;
mod caller;
mod change;
mod classify;
mod context;
mod decide;
mod forward;
mod interpret;
mod outcome;
mod pass_through;
mod record;
mod respond;
mod snapshot;

pub use approved::ApprovedCall;
pub use caller::REVERT_HEADER;
pub(crate) use change::Shape;
pub(crate) use context::{Head, RequestCtx, Tracked};
pub(crate) use respond::error_response;

use crate::audit::{AuditError, AuditLog};
use crate::body::ProxyBody;
use crate::broker::Broker;
use crate::config::{Cidr, Config};
use crate::error::{ProxyError, UpstreamFailure};
use crate::lifecycle::Detached;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::portal::{Portal, Portals, Unmatched};
use crate::secrets::FingerprintKey;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument;

/// Everything a request needs, shared by all connections.
pub struct Pipeline {
    /// The portals served, each with its upstream client, locks, owners and identities.
    pub portals: Portals,
    pub audit: AuditLog,
    /// Swapped whole by SIGHUP; a request reads it once.
    policy: std::sync::RwLock<Arc<Policy>>,
    pub key: FingerprintKey,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// The longest pause between two reads of a client's body.
    body_read_timeout: std::time::Duration,
    /// Audited changes carried on in their own tasks; the drain waits for them.
    pub detached: Detached,
    /// `[broker]`: the real webhooks and the live proxy keys.
    pub(crate) broker: Option<Broker>,
    /// `[approvals]`: told of every refusal by a policy rule; set once, after start.
    notifier: std::sync::OnceLock<crate::notify::Notifier>,
    resolve_oauth_users: bool,
    pub(crate) trusted_proxies: Vec<Cidr>,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        portals: Portals,
        audit: AuditLog,
        key: FingerprintKey,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            portals,
            audit,
            policy: std::sync::RwLock::new(Arc::new(Policy::new(config.policy.clone()))),
            key,
            metrics,
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
            detached: Detached::default(),
            broker: None,
            notifier: std::sync::OnceLock::new(),
            resolve_oauth_users: config.identity.resolve_oauth_users,
            trusted_proxies: config.server.trusted_proxies.clone(),
        }
    }

    /// Serves proxy keys with `broker` (`[broker]`).
    pub fn with_broker(mut self, broker: Option<Broker>) -> Pipeline {
        self.broker = broker;
        self
    }

    /// Tells `notifier` of refusals from now on.
    pub fn set_notifier(&self, notifier: crate::notify::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// Queues a refusal for the approvers (never waits).
    pub(crate) fn tell_refusal(&self, r: crate::notify::Refusal) {
        if let Some(n) = self.notifier.get() {
            n.refused(r);
        }
    }

    /// Replaces the policy (SIGHUP); requests already past the decide phase keep the old one.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// The policy in force now.
    pub(crate) fn current_policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Handles one request. Never fails: every error becomes an envelope. When the client goes
    /// away first this future is dropped at whatever await it is in; `Tracked` then gives back
    /// the in-flight gauge and writes the access line (status 499, nginx's "client closed").
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let http1 = req.version() <= http::Version::HTTP_11;
        let mut t = Tracked::start(self, &req, peer);
        let span = t.span();
        let resp = match self.route(&mut t.ctx, req).instrument(span).await {
            Ok(resp) => resp,
            Err(e) => {
                let timeout = matches!(e, ProxyError::BodyTimeout { .. });
                let mut resp = self.error_response(&t.ctx, e);
                if http1 && timeout {
                    // The rest of the body may still come: the connection cannot be reused.
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
        };
        t.answered(resp.status().as_u16());
        resp
    }

    pub(crate) fn body_timeout(&self) -> ProxyError {
        ProxyError::BodyTimeout {
            limit_s: self.body_read_timeout.as_secs(),
        }
    }

    /// The portal the request is for (picked in `route`, or by the lane).
    pub(crate) fn portal(&self, ctx: &RequestCtx) -> Result<Arc<Portal>, ProxyError> {
        ctx.portal
            .clone()
            .ok_or_else(|| ProxyError::Internal("no portal picked for the request".into()))
    }

    /// Picks the portal for `req` into `ctx`.
    pub(crate) fn pick_portal<B>(
        &self,
        ctx: &mut RequestCtx,
        req: &Request<B>,
    ) -> Result<(), ProxyError> {
        match self.portals.for_request(req) {
            Ok(p) => {
                ctx.portal = Some(p.clone());
                Ok(())
            }
            Err(Unmatched::BadHost) => Err(ProxyError::BadHost),
            Err(Unmatched::Unknown) => Err(ProxyError::UnknownPortal),
        }
    }

    pub(crate) fn upstream_failed(&self, k: UpstreamFailure) -> ProxyError {
        self.metrics.upstream_error(k.label());
        ProxyError::Upstream(k)
    }

    pub(crate) fn audit_failed(&self, e: AuditError) -> ProxyError {
        tracing::error!(target: "audit", error = %e, "Audit trail unavailable; change not forwarded");
        if matches!(e, AuditError::QueueFull | AuditError::Closed) {
            self.metrics.audit_write_failures.inc();
        }
        ProxyError::AuditUnavailable
    }

    /// Logs and counts a failure, then renders it (`respond`). A portal refusal is the
    /// portal's answer, not a refusal of the proxy's, so it is not counted as one.
    pub(crate) fn error_response(&self, ctx: &RequestCtx, e: ProxyError) -> Response<ProxyBody> {
        if let ProxyError::Internal(detail) = &e {
            tracing::error!(error = %detail, "Internal error");
        }
        if !matches!(e, ProxyError::Portal(_)) {
            self.metrics.refusal(e.code());
        }
        error_response(e, ctx.event_id.as_deref())
    }
}
