//! The request pipeline (design §2), phase by phase, and the one place errors become responses.
//!
//! `Pipeline::handle` is the thin outer shell: it runs the phases, turns a `ProxyError` into the
//! portal's envelope, and records metrics and the access line — once per request, whatever
//! happened. The phases in order:
//!
//! 1. **classify** (`rest::route`): path → method and path credential; never reads a body.
//! 2. **pass through** unwatched calls, streamed both ways.
//! 3. **interpret** watched calls (`mutation`, `rest::params`, `rest::batch`), body size-capped.
//! 4. **snapshot** the prior state under the workplace's lock (`locks`; `snapshot`).
//! 5. **decide** (`policy`; `audited` from here on).
//! 6. **record intent** durably (`audit`; entries built in `record`), or refuse with 503.
//! 7. **forward** the canonical re-encoding (`upstream`).
//! 8. **record outcome**, with the after-state (re-read when the portal answered with an error).
//! 9. **respond** with the portal's bytes plus `X-Audit-Event-Id`.
//!
//! A request future is dropped when its client goes away (connection closed, HTTP/2 stream
//! reset): what it holds is released by guards (`lifecycle`), and from the intent on the
//! audited work runs in its own task, so it is never cut short with it. Client bodies are read
//! through `body::Timed` (`server.body_read_timeout`, 408 past it).

mod audited;
mod change;
mod record;
mod respond;
mod snapshot;

pub(crate) use change::Shape;
pub(crate) use respond::error_response;
pub use respond::{AUDIT_BATCH_HEADER, AUDIT_EVENT_HEADER};

use crate::audit::{AuditError, AuditLog};
use crate::body::{read_capped, ProxyBody, ReadError, Timed};
use crate::config::{Cidr, Config};
use crate::error::{ProxyError, UpstreamFailure};
use crate::identity::{self, Identities};
use crate::lifecycle::{Detached, GaugeGuard};
use crate::locks::SolutionLocks;
use crate::metrics::{Metrics, UpstreamPhase};
use crate::mutation::{self, outbound, Credential};
use crate::owners::Owners;
use crate::policy::{rules, Policy};
use crate::rest::route::{classify, ApiVersion, Route, RouteError};
use crate::secrets::{redact_target, FingerprintKey};
use crate::upstream::Upstream;
use crate::watched::Watched;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Everything a request needs, shared by all connections.
pub struct Pipeline {
    pub upstream: Upstream,
    pub audit: AuditLog,
    /// Swapped whole by SIGHUP; a request reads it once.
    policy: std::sync::RwLock<Arc<Policy>>,
    pub key: FingerprintKey,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// The longest pause between two reads of a client's body.
    body_read_timeout: std::time::Duration,
    pub(crate) locks: SolutionLocks,
    /// Who was last seen holding which smart process: lets a snapshot read an owner together
    /// with its target.
    pub(crate) owners: Owners,
    /// Audited changes carried on in their own tasks; the drain waits for them.
    pub detached: Detached,
    identities: Identities,
    resolve_oauth_users: bool,
    pub(crate) trusted_proxies: Vec<Cidr>,
}

/// Per-request state, filled in by the phases and read once at the end.
#[derive(Clone)]
pub(crate) struct RequestCtx {
    start: Instant,
    pub(crate) peer: SocketAddr,
    /// The watched method's canonical name; `None` for pass-through.
    watched: Option<&'static str>,
    /// The event ids (comma-separated for a batch).
    pub(crate) event_id: Option<String>,
    pub(crate) decision: Option<&'static str>,
    pub(crate) upstream_status: Option<u16>,
    pub(crate) upstream_seconds: f64,
    /// The caller's `X-Request-ID` (when sane) or a fresh one; set when it will be used.
    pub(crate) request_id: Option<String>,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        upstream: Upstream,
        audit: AuditLog,
        key: FingerprintKey,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            upstream,
            audit,
            policy: std::sync::RwLock::new(Arc::new(Policy::new(config.policy.clone()))),
            key,
            metrics,
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
            locks: SolutionLocks::new(),
            owners: Owners::new(),
            detached: Detached::default(),
            identities: Identities::new(config.identity.cache_ttl, config.identity.cache_entries),
            resolve_oauth_users: config.identity.resolve_oauth_users,
            trusted_proxies: config.server.trusted_proxies.clone(),
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
        let logging = tracing::enabled!(target: "access", tracing::Level::INFO);
        let http1 = req.version() <= http::Version::HTTP_11;
        let target = if logging {
            Some((
                req.method().clone(),
                redact_target(req.uri().path(), req.uri().query()),
            ))
        } else {
            None
        };
        let mut t = Tracked {
            pipeline: self,
            ctx: RequestCtx {
                start: Instant::now(),
                peer,
                watched: None,
                event_id: None,
                decision: None,
                upstream_status: None,
                upstream_seconds: 0.0,
                request_id: if logging {
                    Some(request_id(req.headers()))
                } else {
                    None
                },
            },
            target,
            answered: false,
            _in_flight: GaugeGuard::new(&self.metrics.in_flight),
        };
        // One span for the request's life, so its log lines can be followed; it carries ids
        // and names only, never a credential.
        let span = tracing::info_span!(
            "request",
            request_id = t.ctx.request_id.as_deref(),
            rest_method = tracing::field::Empty,
            solution_id = tracing::field::Empty,
        );
        let routed = self.route(&mut t.ctx, req).instrument(span).await;
        let resp = match routed {
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
        t.answered = true;
        let target = t.target.take();
        self.finish(&t.ctx, resp.status().as_u16(), target);
        resp
    }

    /// Phase 1: classify, then pass through or interpret.
    async fn route(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let route = classify(req.uri().path())?;
        match Watched::of(&route.method) {
            None => self.pass_through(ctx, req).await,
            Some(w) => {
                ctx.watched = Some(w.method());
                tracing::Span::current().record("rest_method", w.method());
                // Boxed: the audited path's future is large, and unboxed it would size the
                // per-connection state of every pass-through connection too.
                Box::pin(self.watched(ctx, req, route, w)).await
            }
        }
    }

    /// Phase 2: an unwatched call, forwarded as it came, streamed.
    async fn pass_through(
        &self,
        ctx: &mut RequestCtx,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, body) = req.into_parts();
        let body = ProxyBody::Timed(Timed::new(body, self.body_read_timeout));
        self.forward_as_is(ctx, parts, body).await
    }

    /// Forwards a request unchanged (streamed, or the bytes already read) and streams the
    /// portal's answer back.
    async fn forward_as_is(
        &self,
        ctx: &mut RequestCtx,
        parts: http::request::Parts,
        body: ProxyBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let t = Instant::now();
        let result = self.upstream.forward(parts, body).await;
        ctx.upstream_seconds = t.elapsed().as_secs_f64();
        self.metrics
            .upstream(UpstreamPhase::PassThrough, ctx.upstream_seconds);
        let resp = result.map_err(|k| match k {
            UpstreamFailure::ClientStalled => self.body_timeout(),
            k => self.upstream_failed(k),
        })?;
        ctx.upstream_status = Some(resp.status().as_u16());
        Ok(resp.map(ProxyBody::Stream))
    }

    /// Phase 3: read and interpret a watched call.
    async fn watched(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        req: Request<Incoming>,
        route: Route,
        w: Watched,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, body) = req.into_parts();
        let body = read_capped(
            Timed::new(body, self.body_read_timeout),
            self.max_body_bytes,
        )
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => ProxyError::BodyTooLarge {
                limit: self.max_body_bytes,
            },
            ReadError::Broken => ProxyError::ClientBody,
            ReadError::Stalled => self.body_timeout(),
        })?;
        let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
        let result = match (route.version, w) {
            (ApiVersion::V3, Watched::Batch) => {
                self.v3_batch(ctx, &route, &parts, &query, &body).await
            }
            (ApiVersion::V3, _) => Err(ProxyError::uninterpretable(
                "UNSUPPORTED_API_VERSION",
                format!(
                    "{} is audited on the /rest/ API only, not under /rest/api/",
                    w.method()
                ),
            )),
            (ApiVersion::V1, Watched::Batch) => {
                self.v1_batch(ctx, &route, &parts, &query, &body).await
            }
            (ApiVersion::V1, Watched::Type(t)) => {
                self.type_call(ctx, t, &route, &parts, &query, &body).await
            }
            (ApiVersion::V1, Watched::Solution(kind)) => {
                let call = mutation::interpret(
                    kind,
                    &route,
                    &parts.method,
                    &parts.headers,
                    &query,
                    &body,
                )?;
                self.audited(ctx, &parts, Shape::Single(call)).await
            }
        };
        result.map_err(|e| match e {
            ProxyError::Uninterpretable { .. } | ProxyError::NonCanonicalPath(_) => self.refused(e),
            other => other,
        })
    }

    /// Counts a refusal of an unreadable watched call.
    pub(crate) fn refused(&self, e: ProxyError) -> ProxyError {
        self.metrics.decision(Some(rules::UNINTERPRETABLE), "deny");
        e
    }

    /// The caller's user id: from the webhook, or for OAuth from `user.current` (cached by
    /// token fingerprint). `None` when it cannot be resolved; the call is not refused for it
    /// (the snapshot read decides whether the credential is good).
    pub(crate) async fn caller_user(
        &self,
        credential: &Credential,
        fingerprint: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Option<String> {
        if let Some(u) = credential.user_id() {
            return Some(u.to_owned());
        }
        let fp = fingerprint?;
        if !self.resolve_oauth_users {
            return None;
        }
        let cached = self.identities.get(fp);
        self.metrics.identity_lookup(cached.is_some());
        if let Some(u) = cached {
            return Some(u);
        }
        let call = outbound("user.current", credential, json!({}));
        let t = Instant::now();
        let answer = self.upstream.call(&call, headers).await;
        self.metrics
            .upstream(UpstreamPhase::Identity, t.elapsed().as_secs_f64());
        let user = answer
            .ok()?
            .json()
            .as_ref()
            .and_then(identity::user_id_from_answer)?;
        self.identities.put(fp, user.clone());
        Some(user)
    }

    fn body_timeout(&self) -> ProxyError {
        ProxyError::BodyTimeout {
            limit_s: self.body_read_timeout.as_secs(),
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
    fn error_response(&self, ctx: &RequestCtx, e: ProxyError) -> Response<ProxyBody> {
        if let ProxyError::Internal(detail) = &e {
            tracing::error!(error = %detail, "Internal error");
        }
        if !matches!(e, ProxyError::Portal(_)) {
            self.metrics.refusal(e.code());
        }
        error_response(e, ctx.event_id.as_deref())
    }

    /// Metrics and the access line, once per request.
    fn finish(&self, ctx: &RequestCtx, status: u16, target: Option<(http::Method, String)>) {
        let seconds = ctx.start.elapsed().as_secs_f64();
        self.metrics
            .request(ctx.watched, status, seconds, ctx.upstream_seconds);
        if let Some((method, target)) = target {
            tracing::info!(
                target: "access",
                request_id = ctx.request_id.as_deref(),
                client_ip = %ctx.peer.ip(),
                http_method = %method,
                http_target = %target,
                http_status = status,
                rest_method = ctx.watched.unwrap_or("other"),
                duration_ms = seconds * 1000.0,
                upstream_ms = ctx.upstream_seconds * 1000.0,
                upstream_status = ctx.upstream_status,
                decision = ctx.decision,
                event_id = ctx.event_id.as_deref(),
                "Request"
            );
        }
    }
}

/// A request being handled: what `handle` must give back and record however it ends.
struct Tracked<'a> {
    pipeline: &'a Pipeline,
    ctx: RequestCtx,
    target: Option<(http::Method, String)>,
    /// Set once the answer is built; unset when dropped, the client went away first.
    answered: bool,
    _in_flight: GaugeGuard,
}

/// nginx's status for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let target = self.target.take();
            self.pipeline.finish(&self.ctx, CLIENT_CLOSED, target);
        }
    }
}

/// The caller's `X-Request-ID` when it is short printable ASCII (it goes into logs and the
/// trail), else a fresh UUIDv7.
pub(crate) fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// The request header with which `revert --apply` names the event it reverts. Only an event id
/// is taken (a UUID), so the header cannot smuggle anything else into the trail.
pub const REVERT_HEADER: &str = "x-audit-revert-of";

pub(crate) fn reverts_event(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(REVERT_HEADER)?.to_str().ok()?;
    uuid::Uuid::parse_str(v).ok().map(|u| u.to_string())
}

/// A path the classifier does not serve, as the client is answered.
impl From<RouteError> for ProxyError {
    fn from(e: RouteError) -> ProxyError {
        match e {
            RouteError::NotFound => ProxyError::NotFound,
            RouteError::NonCanonical(why) => ProxyError::NonCanonicalPath(why),
        }
    }
}
