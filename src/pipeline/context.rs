//! The per-request context, owned by the pipeline for one request: filled in by the phases,
//! read once at the end, when the metrics and the access line are written — whether the
//! request was answered or its client went away first (`Tracked`).

use super::approved::Approved;
use super::Pipeline;
use crate::broker::LiveKey;
use crate::lifecycle::GaugeGuard;
use crate::portal::Portal;
use crate::secrets::redact_target;
use http::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Per-request state, filled in by the phases and read once at the end.
#[derive(Clone)]
pub(crate) struct RequestCtx {
    start: Instant,
    pub(crate) peer: SocketAddr,
    /// The watched method's canonical name; `None` for pass-through.
    pub(super) watched: Option<&'static str>,
    /// The event ids (comma-separated for a batch).
    pub(crate) event_id: Option<String>,
    pub(crate) decision: Option<&'static str>,
    pub(crate) upstream_status: Option<u16>,
    pub(crate) upstream_seconds: f64,
    /// The caller's `X-Request-ID` (when sane) or a fresh one; set when it will be used.
    pub(crate) request_id: Option<String>,
    /// The portal the request is for, once picked (`Pipeline::pick_portal`).
    pub(crate) portal: Option<Arc<Portal>>,
    /// The proxy key the request came with (`[broker]`), once admitted.
    pub(crate) key: Option<Arc<LiveKey>>,
    /// Set when the request is the proxy carrying out an approved change.
    pub(crate) approval: Option<Arc<Approved>>,
}

/// What the access line and the request id are taken from.
pub(crate) struct Head<'h> {
    pub(crate) method: &'h http::Method,
    pub(crate) path: &'h str,
    pub(crate) query: Option<&'h str>,
    /// The caller's `X-Request-ID`, when it sent one.
    pub(crate) request_id: Option<&'h str>,
}

/// A request being handled: what `handle` must give back and record however it ends.
pub(crate) struct Tracked<'a> {
    pipeline: &'a Pipeline,
    pub(crate) ctx: RequestCtx,
    /// The method and redacted target for the access line; `None` when it is not written.
    target: Option<(http::Method, String)>,
    /// Set once the answer is built; unset when dropped, the client went away first.
    answered: bool,
    _in_flight: GaugeGuard,
}

/// nginx's status for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

impl<'a> Tracked<'a> {
    /// Starts tracking a request: counted in flight from now on. What only the access line
    /// needs is taken only when the access line is on.
    pub(super) fn start<B>(pipeline: &'a Pipeline, req: &Request<B>, peer: SocketAddr) -> Self {
        let head = Head {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            request_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        };
        Tracked::start_head(pipeline, &head, peer)
    }

    /// `start` for a request head read by the pass-through lane, which has no `Request`.
    pub(crate) fn start_head(pipeline: &'a Pipeline, head: &Head<'_>, peer: SocketAddr) -> Self {
        let logging = tracing::enabled!(target: "access", tracing::Level::INFO);
        let target = logging.then(|| (head.method.clone(), redact_target(head.path, head.query)));
        Tracked {
            pipeline,
            ctx: RequestCtx {
                start: Instant::now(),
                peer,
                watched: None,
                event_id: None,
                decision: None,
                upstream_status: None,
                upstream_seconds: 0.0,
                request_id: logging.then(|| request_id_of(head.request_id)),
                portal: None,
                key: None,
                approval: None,
            },
            target,
            answered: false,
            _in_flight: GaugeGuard::new(&pipeline.metrics.in_flight),
        }
    }

    /// One span for the request's life, so its log lines can be followed; it carries ids and
    /// names only, never a credential.
    pub(super) fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "request",
            request_id = self.ctx.request_id.as_deref(),
            rest_method = tracing::field::Empty,
            solution_id = tracing::field::Empty,
        )
    }

    /// The request is answered with `status`: metrics and the access line, now.
    pub(crate) fn answered(mut self, status: u16) {
        self.answered = true;
        let target = self.target.take();
        self.pipeline.finish(&self.ctx, status, target);
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let target = self.target.take();
            self.pipeline.finish(&self.ctx, CLIENT_CLOSED, target);
        }
    }
}

impl Pipeline {
    /// Metrics and the access line, once per request.
    pub(super) fn finish(
        &self,
        ctx: &RequestCtx,
        status: u16,
        target: Option<(http::Method, String)>,
    ) {
        let seconds = ctx.start.elapsed().as_secs_f64();
        self.metrics
            .request(ctx.watched, status, seconds, ctx.upstream_seconds);
        if let Some(p) = &ctx.portal {
            p.counters.count(ctx.watched.is_some(), status);
        }
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

/// The caller's `X-Request-ID` when it is short printable ASCII (it goes into logs and the
/// trail), else a fresh UUIDv7.
pub(crate) fn request_id(headers: &http::HeaderMap) -> String {
    request_id_of(headers.get("x-request-id").and_then(|v| v.to_str().ok()))
}

fn request_id_of(given: Option<&str>) -> String {
    given
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}
