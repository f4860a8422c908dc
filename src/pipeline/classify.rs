//! Phase 1, classify: the path says which REST method is called and with which path credential
//! (`rest::route`, which never reads a body); an unwatched method passes through, a watched one
//! is interpreted. A path the classifier does not serve is answered here.

use super::{Pipeline, RequestCtx};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::rest::route::{classify, RouteError};
use crate::watched::Watched;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

impl Pipeline {
    /// Phase 1: classify, then pass through or interpret.
    pub(super) async fn route(
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
