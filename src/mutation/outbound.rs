//! The proxy's own encoding of what it read: every call it sends the portal — the canonical
//! form of an audited change, an inspected call rebuilt, a snapshot read — is built here, as a
//! JSON body with the caller's credential in the place the caller put it.

use super::credential::{Credential, Place};
use super::{param_error, Interpreted, Mutation, MutationKind};
use crate::error::ProxyError;
use crate::rest::credentials::{self as cred, is_credential_param};
use crate::rest::encode::form_query;
use crate::rest::params::{self, parse_str};
use crate::rest::php::Array;
use crate::rest::route::Route;
use serde_json::json;

/// A batch command string for a mutation: `method?query` with the query in PHP form syntax
/// (`id=5&fields[title]=...&fields[typeIds][0]=14`), every value percent-encoded. An empty
/// binding set is `fields[typeIds]=`, which the portal's normaliser reads as "none".
pub fn canonical_command(m: &Mutation) -> String {
    use percent_encoding::utf8_percent_encode;
    let enc = |s: &str| utf8_percent_encode(s, UNRESERVED_KEPT).to_string();
    let mut parts = Vec::new();
    if let Some(id) = m.solution_id {
        parts.push(format!("id={id}"));
    }
    if m.kind != MutationKind::Delete {
        if let Some(t) = &m.title {
            parts.push(format!("fields[title]={}", enc(t)));
        }
        match &m.type_ids {
            Some(ids) if ids.is_empty() => parts.push("fields[typeIds]=".to_owned()),
            Some(ids) => {
                for (i, t) in ids.iter().enumerate() {
                    parts.push(format!("fields[typeIds][{i}]={t}"));
                }
            }
            None => {}
        }
    }
    format!("{}?{}", m.kind.method(), parts.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so credentials that were
/// plain in the caller's URL stay plain (and compare equal) in the forwarded one.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment or query value, percent-encoded the way every call the proxy builds writes it.
pub fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED_KEPT).to_string()
}

/// A request to send to the portal: path and query, extra headers, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    pub path_and_query: String,
    /// `Authorization` to send, when the caller used a Bearer token.
    pub authorization: Option<String>,
    pub body: String,
}

/// Builds a call of `method` with `params`, carrying `credential` where the caller put it.
pub fn outbound(method: &str, credential: &Credential, params: serde_json::Value) -> OutboundCall {
    let enc = path_segment;
    let mut body = match params {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let mut query = Vec::new();
    let mut authorization = None;
    let path = match credential {
        Credential::WebhookPath(w) => format!("/rest/{}/{}/{method}", enc(&w.user), enc(&w.secret)),
        _ => format!("/rest/{method}"),
    };
    match credential {
        Credential::WebhookParams {
            user,
            secret,
            place,
        } => match place {
            Place::Query => query.push(format!(
                "{}={}&{}={}",
                cred::APLOGIN,
                enc(user),
                cred::AP,
                enc(secret)
            )),
            Place::Body => {
                body.insert(cred::APLOGIN.into(), json!(user));
                body.insert(cred::AP.into(), json!(secret));
            }
        },
        Credential::TokenParam { name, token, place } => match place {
            Place::Query => query.push(format!("{name}={}", enc(token))),
            Place::Body => {
                body.insert((*name).into(), json!(token));
            }
        },
        Credential::Bearer(h) => authorization = Some(h.clone()),
        Credential::WebhookPath(_) | Credential::None => {}
    }
    let path_and_query = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    OutboundCall {
        path_and_query,
        authorization,
        body: serde_json::Value::Object(body).to_string(),
    }
}

/// The canonical re-encoding of a mutation (docs/architecture.md, Forwarding an inspected call).
pub fn canonical(call: &Interpreted) -> OutboundCall {
    outbound(
        call.mutation.kind.method(),
        &call.credential,
        call.mutation.params_json(),
    )
}

/// The JSON parameters of an inspected single call: everything read but the credential
/// parameters, which `outbound` puts back where the caller had its one credential.
pub fn params_without_credentials(params: &Array) -> serde_json::Value {
    let kept: Array = params
        .iter()
        .filter(|(k, _)| !is_credential_param(&k.as_text()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::Value::Object(kept.to_json_object())
}

/// A v1 call of `method` as the proxy forwards it: the route's API and transport suffix (an
/// `.xml` caller still gets XML), the credential in its place, `params` as the JSON body.
pub fn rebuilt(
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
pub fn rebuilt_v3_batch(
    route: &Route,
    headers: &http::HeaderMap,
    query: &[u8],
    body: &[u8],
) -> Result<OutboundCall, ProxyError> {
    let unreadable =
        |why: &str| ProxyError::uninterpretable("UNSUPPORTED_ENCODING", why.to_owned());
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| unreadable("the REST 3.0 batch body is not JSON"))?;
    let parsed = parse_str(query).map_err(param_error)?;
    if parsed.too_deep || parsed.vars > params::MAX_WATCHED_VARS {
        return Err(unreadable("too many or too deeply nested query parameters"));
    }
    let query = form_query(&parsed.params).ok_or_else(|| {
        unreadable("the query string has no spelling the portal reads back the same")
    })?;
    let mut path = String::from("/rest/api/");
    if let Some(w) = &route.webhook {
        path.push_str(&path_segment(&w.user));
        path.push('/');
        path.push_str(&path_segment(&w.secret));
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
