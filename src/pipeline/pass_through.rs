//! Phase 2, pass through: an unwatched call goes on as it came, its body streamed (with the
//! between-reads time limit), and the portal's answer streams back.

use super::{Pipeline, RequestCtx};
use crate::body::{ProxyBody, Timed};
use crate::error::{ProxyError, UpstreamFailure};
use crate::metrics::UpstreamPhase;
use http::{Request, Response};
use hyper::body::Incoming;
use std::time::Instant;

impl Pipeline {
    /// Phase 2: an unwatched call, forwarded as it came, streamed.
    pub(super) async fn pass_through(
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
    pub(super) async fn forward_as_is(
        &self,
        ctx: &mut RequestCtx,
        parts: http::request::Parts,
        body: ProxyBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let portal = self.portal(ctx)?;
        let t = Instant::now();
        let result = portal.upstream.forward(parts, body).await;
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
}
