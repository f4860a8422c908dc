//! The caller's credential: found where the portal looks for it (the path's webhook, an
//! `Authorization: Bearer` header, `auth`/`access_token`, `aplogin`+`ap`), exactly one per call,
//! and remembered with its place so the proxy's own calls carry it the same way.

use crate::error::ProxyError;
use crate::rest::credentials as cred;
use crate::rest::params::parse_str;
use crate::rest::php::{Array, Value};
use crate::rest::route::{PathWebhook, Route};
use http::HeaderMap;

/// Where a parameter credential was found; it is forwarded in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Query,
    Body,
}

/// The caller's credential, exactly as it was presented. `Debug` never prints a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `/rest/{user}/{secret}/...`
    WebhookPath(PathWebhook),
    /// `aplogin` + `ap` parameters.
    WebhookParams {
        user: String,
        secret: String,
        place: Place,
    },
    /// `Authorization: Bearer ...` (the header value is forwarded as is).
    Bearer(String),
    /// `auth` or `access_token` parameter.
    TokenParam {
        name: &'static str,
        token: String,
        place: Place,
    },
    /// No credential: the portal will answer with its own auth error.
    None,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.auth_kind())?;
        if let Some(u) = self.user_id() {
            write!(f, "(user {u})")?;
        }
        Ok(())
    }
}

impl Credential {
    /// `webhook`, `oauth` or `none`, as recorded in the trail.
    pub fn auth_kind(&self) -> &'static str {
        match self {
            Credential::WebhookPath(_) | Credential::WebhookParams { .. } => "webhook",
            Credential::Bearer(_) | Credential::TokenParam { .. } => "oauth",
            Credential::None => "none",
        }
    }

    /// The webhook's user id (from the path or `aplogin`); OAuth callers have none here.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Credential::WebhookPath(w) => Some(&w.user),
            Credential::WebhookParams { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The secret material to fingerprint: webhook secret (with its user) or token.
    pub fn secret_material(&self) -> Option<String> {
        match self {
            Credential::WebhookPath(w) => Some(format!("webhook:{}:{}", w.user, w.secret)),
            Credential::WebhookParams { user, secret, .. } => {
                Some(format!("webhook:{user}:{secret}"))
            }
            Credential::Bearer(h) => Some(format!("oauth:{}", cred::bearer_token(h).unwrap_or(h))),
            Credential::TokenParam { token, .. } => Some(format!("oauth:{token}")),
            Credential::None => None,
        }
    }
}

/// Finds the one credential of the call. More than one is refused: the portal would pick one
/// by an order the proxy cannot be sure of, and the snapshot must use the same one.
pub fn credential(
    route: &Route,
    headers: &HeaderMap,
    query: &[u8],
    params: &Array,
) -> Result<Credential, ProxyError> {
    if params.get_str(cred::SESSID).is_some() || headers.contains_key("x-bitrix-csrf-token") {
        return Err(ProxyError::uninterpretable(
            "UNSUPPORTED_AUTH",
            "browser-session authentication is not accepted for audited calls; use a webhook or an OAuth token",
        ));
    }
    let mut found = Vec::new();
    if let Some(w) = &route.webhook {
        found.push(Credential::WebhookPath(w.clone()));
    }
    if let Some(h) = headers.get(http::header::AUTHORIZATION) {
        let h = h.to_str().map_err(|_| {
            ProxyError::uninterpretable("INVALID_PARAMETER", "Authorization header is not text")
        })?;
        if cred::bearer_token(h).is_some() {
            found.push(Credential::Bearer(h.to_owned()));
        }
    }
    found.extend(Params::new(query, params).credentials()?);
    match found.len() {
        0 => Ok(Credential::None),
        1 => Ok(found.remove(0)),
        _ => Err(ProxyError::uninterpretable(
            "AMBIGUOUS_CREDENTIALS",
            "the call carries more than one credential; send exactly one",
        )),
    }
}

/// A call's parameters with its query string read apart, to tell where a credential was.
struct Params<'a> {
    query: Array,
    all: &'a Array,
}

impl<'a> Params<'a> {
    fn new(query: &[u8], all: &'a Array) -> Params<'a> {
        let query = parse_str(query).map(|p| p.params).unwrap_or_default();
        Params { query, all }
    }

    /// In the query when the query has it with the value the portal reads, else in the body.
    fn place(&self, key: &str) -> Place {
        if self.query.get_str(key).is_some() && self.query.get_str(key) == self.all.get_str(key) {
            Place::Query
        } else {
            Place::Body
        }
    }

    fn text(&self, key: &str) -> Result<Option<String>, ProxyError> {
        match self.all.get_str(key) {
            None => Ok(None),
            Some(Value::Str(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(ProxyError::uninterpretable(
                "INVALID_PARAMETER",
                format!("credential parameter '{key}' must be a non-empty string"),
            )),
        }
    }

    /// The credentials carried as parameters: tokens, and a webhook as `aplogin` + `ap`.
    fn credentials(&self) -> Result<Vec<Credential>, ProxyError> {
        let mut found = Vec::new();
        for name in [cred::AUTH, cred::ACCESS_TOKEN] {
            if let Some(token) = self.text(name)? {
                found.push(Credential::TokenParam {
                    name,
                    token,
                    place: self.place(name),
                });
            }
        }
        match (self.text(cred::APLOGIN)?, self.text(cred::AP)?) {
            (Some(user), Some(secret)) => {
                if self.place(cred::APLOGIN) != self.place(cred::AP) {
                    return Err(ProxyError::uninterpretable(
                        "AMBIGUOUS_CREDENTIALS",
                        "'aplogin' and 'ap' must be sent in the same place",
                    ));
                }
                found.push(Credential::WebhookParams {
                    user,
                    secret,
                    place: self.place(cred::AP),
                })
            }
            (None, None) => {}
            _ => {
                return Err(ProxyError::uninterpretable(
                    "AMBIGUOUS_CREDENTIALS",
                    "'aplogin' and 'ap' must be sent together",
                ))
            }
        }
        Ok(found)
    }
}
