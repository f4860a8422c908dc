//! Phase 3, interpret: a watched call's body is read (size- and time-capped) and read the
//! portal's way, by the kind the watched table gives it — an audited change becomes a `Shape`
//! for the audited phases; an inspected call that changes nothing audited (a `batch` without a
//! watched command, a `crm.type.*` call that leaves bindings alone, a REST 3.0 batch) is
//! forwarded in the proxy's own encoding of what was read (`mutation::outbound`), never in the
//! client's bytes.

use super::{Pipeline, RequestCtx, Shape};
use crate::body::{read_capped, ProxyBody, ReadError, Timed};
use crate::error::ProxyError;
use crate::metrics::UpstreamPhase;
use crate::mutation::{self, Credential, OutboundCall};
use crate::policy::rules;
use crate::rest::batch::{self};
use crate::rest::params;
use crate::rest::route::{ApiVersion, Route};
use crate::watched::{TypeCall, Watched};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// A watched call's parameters, read the portal's way (strictly: see `rest::params`).
fn decode_params(
    parts: &Parts,
    query: &[u8],
    body: &[u8],
) -> Result<params::RequestParams, ProxyError> {
    params::request_params_of(&parts.method, &parts.headers, query, body)
        .map_err(mutation::param_error)
}

impl Pipeline {
    /// Phase 3: read and interpret a watched call.
    pub(super) async fn watched(
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
                self.credential_allowed(&call.credential)?;
                self.audited(ctx, &parts, Shape::Single(call)).await
            }
        };
        result.map_err(|e| match e {
            ProxyError::Uninterpretable { .. } | ProxyError::NonCanonicalPath(_) => self.refused(e),
            other => other,
        })
    }

    /// `[broker]`: every method a batch calls must be in the key's scope.
    fn batch_in_scope<'m>(
        &self,
        ctx: &RequestCtx,
        mut methods: impl Iterator<Item = &'m str>,
    ) -> Result<(), ProxyError> {
        let Some(key) = &ctx.key else {
            return Ok(());
        };
        match methods.find(|m| !key.allows_method(&m.to_ascii_lowercase())) {
            Some(m) => Err(ProxyError::KeyScope {
                key: key.name.clone(),
                method: m.to_ascii_lowercase(),
            }),
            None => Ok(()),
        }
    }

    /// `[broker] require_keys`: a webhook in the parameters (`aplogin`/`ap`) is the real secret
    /// sent some other way, refused like one in the path.
    fn credential_allowed(&self, credential: &Credential) -> Result<(), ProxyError> {
        let required = self.broker.as_ref().is_some_and(|b| b.require_keys);
        if required && matches!(credential, Credential::WebhookParams { .. }) {
            return Err(ProxyError::NoAuth);
        }
        Ok(())
    }

    /// Counts a refusal of an unreadable watched call.
    pub(crate) fn refused(&self, e: ProxyError) -> ProxyError {
        self.metrics.decision(Some(rules::UNINTERPRETABLE), "deny");
        e
    }

    /// A REST 3.0 batch: refused if it names a watched method, else forwarded rebuilt.
    pub(crate) async fn v3_batch(
        &self,
        ctx: &mut RequestCtx,
        route: &Route,
        parts: &Parts,
        query: &[u8],
        body: &[u8],
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let methods = batch::v3_methods(body)?;
        self.batch_in_scope(ctx, methods.iter().map(String::as_str))?;
        if let Some(m) = methods.iter().find(|m| Watched::of(m).is_some()) {
            return Err(self.refused(ProxyError::uninterpretable(
                "BATCH_NOT_AUDITED",
                format!("REST 3.0 batch calls {m}; watched methods are not accepted inside batch"),
            )));
        }
        let call = mutation::rebuilt_v3_batch(route, &parts.headers, query, body)?;
        self.forward_inspected(ctx, &call, &parts.headers).await
    }

    /// A v1 `batch`: audited when a command is watched, else forwarded rebuilt.
    pub(crate) async fn v1_batch(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        route: &Route,
        parts: &Parts,
        query: &[u8],
        body: &[u8],
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let decoded = decode_params(parts, query, body)?;
        let call = mutation::parse_batch(&decoded.params)?;
        let credential = mutation::credential(route, &parts.headers, query, &decoded.params)?;
        self.credential_allowed(&credential)?;
        self.batch_in_scope(ctx, call.commands.iter().map(|c| c.method.as_str()))?;
        if !call.is_watched() {
            let out = mutation::rebuilt(route, "batch", &credential, call.forward_params());
            return self.forward_inspected(ctx, &out, &parts.headers).await;
        }
        mutation::json_transport_only(route).map_err(|e| self.refused(e))?;
        // Each command is a query string inside the batch's own transport.
        let encoding = match mutation::encoding_name(decoded.body) {
            "json" => "batch/json",
            "form" => "batch/form",
            _ => "batch/query",
        };
        let shape = Shape::Batch {
            call,
            credential,
            encoding,
        };
        self.audited(ctx, parts, shape).await
    }

    /// `crm.type.add`/`update` (refused when they touch workplace bindings) and `crm.type.delete`
    /// (refused while the smart process is bound), else forwarded rebuilt.
    pub(crate) async fn type_call(
        &self,
        ctx: &mut RequestCtx,
        t: TypeCall,
        route: &Route,
        parts: &Parts,
        query: &[u8],
        body: &[u8],
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let decoded = decode_params(parts, query, body)?;
        let type_id = match t {
            TypeCall::Delete => Some(mutation::read_id(decoded.params.get_str("id"))?),
            _ => None,
        };
        let credential = mutation::credential(route, &parts.headers, query, &decoded.params)?;
        self.credential_allowed(&credential)?;
        if let Some(type_id) = type_id {
            self.guard_type_delete(ctx, &credential, type_id, &parts.headers)
                .await?;
        } else if mutation::touches_bindings(&decoded.params) {
            return Err(ProxyError::uninterpretable(
                "BINDING_CHANGE_NOT_AUDITED",
                "crm.type calls that change digital-workplace bindings (customSectionId, customSections, isExternal) are refused; bind smart processes with crm.automatedsolution.update",
            ));
        }
        let out = mutation::rebuilt(
            route,
            Watched::Type(t).method(),
            &credential,
            mutation::params_without_credentials(&decoded.params),
        );
        self.forward_inspected(ctx, &out, &parts.headers).await
    }

    /// Forwards an inspected call in the proxy's encoding and streams the portal's answer back.
    pub(crate) async fn forward_inspected(
        &self,
        ctx: &mut RequestCtx,
        call: &OutboundCall,
        headers: &http::HeaderMap,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let portal = self.portal(ctx)?;
        let t = Instant::now();
        let result = portal.upstream.send_call(call, headers).await;
        ctx.upstream_seconds += t.elapsed().as_secs_f64();
        self.metrics
            .upstream(UpstreamPhase::Forward, t.elapsed().as_secs_f64());
        let resp = result.map_err(|k| self.upstream_failed(k))?;
        ctx.upstream_status = Some(resp.status().as_u16());
        Ok(resp.map(ProxyBody::Stream))
    }
}
