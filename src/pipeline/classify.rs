//! Phase 1, classify: the host says which portal (`portal`), the path which REST method is called
//! and with which path credential (`rest::route`, which never reads a body). With `[broker]` a
//! proxy key in the path is admitted here and replaced by its real webhook, so every later phase
//! (and the portal) sees only the real credential. An unwatched method passes through, a watched
//! one is interpreted. A path the classifier does not serve is answered here.

use super::{Pipeline, RequestCtx};
use crate::body::ProxyBody;
use crate::broker::{rewrite_path, Admission};
use crate::error::ProxyError;
use crate::rest::route::{classify, PathWebhook, Route, RouteError};
use crate::watched::Watched;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

impl Pipeline {
    /// `[broker]`: admits the path's proxy key (or refuses the request), putting the key's real
    /// webhook into `route`; the real webhook when the path is to be rewritten.
    pub(crate) fn admit(
        &self,
        ctx: &mut RequestCtx,
        route: &mut Route,
    ) -> Result<Option<PathWebhook>, ProxyError> {
        let (Some(broker), Some(hook)) = (&self.broker, &route.webhook) else {
            return Ok(None);
        };
        let portal = ctx.portal.as_ref().filter(|_| self.portals.by_host());
        match broker.admit(hook, portal.map(|p| p.name.as_str())) {
            Admission::Key(key) => {
                // A batch is judged command by command (`interpret`).
                if route.method != "batch" && !key.allows_method(&route.method) {
                    return Err(ProxyError::KeyScope {
                        key: key.name.clone(),
                        method: route.method.clone(),
                    });
                }
                route.webhook = Some(key.webhook.clone());
                let real = key.webhook.clone();
                ctx.key = Some(key);
                Ok(Some(real))
            }
            Admission::NotAKey if broker.require_keys => Err(ProxyError::NoAuth),
            Admission::NotAKey => Ok(None),
        }
    }

    /// Phase 1: classify, then pass through or interpret.
    pub(super) async fn route(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.pick_portal(ctx, &req)?;
        let mut route = classify(req.uri().path())?;
        let mut req = req;
        if let Some(real) = self.admit(ctx, &mut route)? {
            let path = req.uri().path();
            let rewritten = rewrite_path(path, &route, &real).ok_or_else(|| {
                ProxyError::Internal("a classified path could not be rewritten".into())
            })?;
            let target = match req.uri().query() {
                Some(q) => format!("{rewritten}?{q}"),
                None => rewritten,
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(
                target
                    .parse()
                    .map_err(|_| ProxyError::Internal("a rewritten path did not parse".into()))?,
            );
            *req.uri_mut() = http::Uri::from_parts(parts)
                .map_err(|_| ProxyError::Internal("a rewritten URI did not build".into()))?;
        }
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
