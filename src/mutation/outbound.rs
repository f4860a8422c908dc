//! The proxy's own encoding of what it read: every call it sends the portal — the canonical
//! form of an audited change, an inspected call rebuilt, a snapshot read — is built here, as a
//! JSON body with the caller's credential in the place the caller put it.

use super::credential::{Credential, Place};
use super::{Interpreted, Mutation, MutationKind};
use crate::rest::credentials as cred;
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

/// The canonical re-encoding of a mutation (design §3.3).
pub fn canonical(call: &Interpreted) -> OutboundCall {
    outbound(
        call.mutation.kind.method(),
        &call.credential,
        call.mutation.params_json(),
    )
}
