//! Inspected calls that change nothing audited — a `batch` without a watched command, a
//! `crm.type.*` call that leaves workplace bindings alone, a REST 3.0 batch — forwarded in the
//! proxy's own encoding of what it read (design §3.2, §3.3), never in the client's bytes.
//!
//! The proxy judged such a call harmless by reading it; if the client's own bytes went on, any
//! difference between that reading and the portal's (a PHP parser quirk, a second
//! `Content-Type`, a header named in `Connection`) would run something the proxy never saw. So
//! the call is rebuilt from the parameters read: a JSON body, the proxy's own `Content-Type` and
//! length, the caller's credential where the caller put it, and only allow-listed headers
//! (`upstream::FORWARDED_HEADERS`). The answer streams back unchanged.
//!
//! Also the dispatch of those calls (`batch`, which is audited when a command is watched, and
//! `crm.type.*`): the interpret phase for inspected methods.

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::metrics::UpstreamPhase;
use crate::mutation::{self, outbound, Credential, OutboundCall};
use crate::pipeline::{Pipeline, RequestCtx, Shape};
use crate::rest::batch;
use crate::rest::credentials::is_credential_param;
use crate::rest::encode::form_query;
use crate::rest::params::{self, parse_str};
use crate::rest::php::Array;
use crate::rest::route::Route;
use crate::watched::{TypeCall, Watched};
use http::request::Parts;
use http::Response;
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

/// The JSON parameters of an inspected single call: everything read but the credential
/// parameters, which `outbound` puts back where the caller had its one credential.
pub(crate) fn params_without_credentials(params: &Array) -> serde_json::Value {
    let kept: Array = params
        .iter()
        .filter(|(k, _)| !is_credential_param(&k.as_text()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::Value::Object(kept.to_json_object())
}

/// A v1 call of `method` as the proxy forwards it: the route's API and transport suffix (an
/// `.xml` caller still gets XML), the credential in its place, `params` as the JSON body.
pub(crate) fn rebuilt(
    route: &Route,
    method: &str,
    credential: &Credential,
    params: serde_json::Value,
) -> OutboundCall {
    let method = match route.transport {
        Some("xml") => format!("{method}.xml"),
        _ => method.to_owned(),
    };
    outbound(&method, credential, params)
}

/// A REST 3.0 batch as the proxy forwards it: the body re-serialised from the JSON read (duplicate
/// keys were refused while reading, so the re-serialisation has one meaning), the query string
/// re-encoded from what `parse_str` read of it, the path's webhook and a Bearer header kept.
pub(crate) fn rebuilt_v3_batch(
    route: &Route,
    headers: &http::HeaderMap,
    query: &[u8],
    body: &[u8],
) -> Result<OutboundCall, ProxyError> {
    let unreadable =
        |why: &str| ProxyError::uninterpretable("UNSUPPORTED_ENCODING", why.to_owned());
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| unreadable("the REST 3.0 batch body is not JSON"))?;
    let parsed = parse_str(query).map_err(mutation::param_error)?;
    if parsed.too_deep || parsed.vars > params::MAX_WATCHED_VARS {
        return Err(unreadable("too many or too deeply nested query parameters"));
    }
    let query = form_query(&parsed.params).ok_or_else(|| {
        unreadable("the query string has no spelling the portal reads back the same")
    })?;
    let mut path = String::from("/rest/api/");
    if let Some(w) = &route.webhook {
        path.push_str(&mutation::path_segment(&w.user));
        path.push('/');
        path.push_str(&mutation::path_segment(&w.secret));
        path.push('/');
    }
    path.push_str("batch");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| unreadable("the Authorization header is not text"))
        })
        .transpose()?;
    Ok(OutboundCall {
        path_and_query: path,
        authorization,
        body: json.to_string(),
    })
}

impl Pipeline {
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
        if let Some(m) = methods.iter().find(|m| Watched::of(m).is_some()) {
            return Err(self.refused(ProxyError::uninterpretable(
                "BATCH_NOT_AUDITED",
                format!("REST 3.0 batch calls {m}; watched methods are not accepted inside batch"),
            )));
        }
        let call = rebuilt_v3_batch(route, &parts.headers, query, body)?;
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
        if !call.is_watched() {
            let out = rebuilt(route, "batch", &credential, call.forward_params());
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
        if let Some(type_id) = type_id {
            self.guard_type_delete(ctx, &credential, type_id, &parts.headers)
                .await?;
        } else if mutation::touches_bindings(&decoded.params) {
            return Err(ProxyError::uninterpretable(
                "BINDING_CHANGE_NOT_AUDITED",
                "crm.type calls that change digital-workplace bindings (customSectionId, customSections, isExternal) are refused; bind smart processes with crm.automatedsolution.update",
            ));
        }
        let out = rebuilt(
            route,
            Watched::Type(t).method(),
            &credential,
            params_without_credentials(&decoded.params),
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
        let t = Instant::now();
        let result = self.upstream.send_call(call, headers).await;
        ctx.upstream_seconds += t.elapsed().as_secs_f64();
        self.metrics
            .upstream(UpstreamPhase::Forward, t.elapsed().as_secs_f64());
        let resp = result.map_err(|k| self.upstream_failed(k))?;
        ctx.upstream_status = Some(resp.status().as_u16());
        Ok(resp.map(ProxyBody::Stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::route::classify;

    #[test]
    fn single_calls_keep_transport_and_credential_place() {
        let route = classify("/rest/7/s3/crm.type.update.xml").expect("route");
        let params = parse_str(b"id=3&fields[title]=x&auth=zzz").expect("parses");
        let cred = Credential::WebhookPath(route.webhook.clone().expect("webhook"));
        let call = rebuilt(
            &route,
            "crm.type.update",
            &cred,
            params_without_credentials(&params.params),
        );
        assert_eq!(call.path_and_query, "/rest/7/s3/crm.type.update.xml");
        assert_eq!(call.body, r#"{"id":"3","fields":{"title":"x"}}"#);
    }

    #[test]
    fn v3_batch_is_reserialised() {
        let route = classify("/rest/api/1/s3/batch").expect("route");
        let call = rebuilt_v3_batch(
            &route,
            &http::HeaderMap::new(),
            b"x%5Ba%5D=1",
            br#"[ {"method":"tasks.task.get", "query":{}} ]"#,
        )
        .expect("rebuilt");
        assert_eq!(call.path_and_query, "/rest/api/1/s3/batch?x[a]=1");
        assert_eq!(call.body, r#"[{"method":"tasks.task.get","query":{}}]"#);
    }
}
