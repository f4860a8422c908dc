//! Which credential a request carries and whose it is (docs/protocol.md, Credentials).
//!
//! Checked in the portal's handler order: OAuth first (`Authorization: Bearer`, then the `auth`
//! parameter, then `access_token`), then the inbound webhook (`aplogin` + `ap`, from the path or
//! the parameters; path variables were already merged over parameters in `request.rs`). The first
//! mechanism whose key is present decides: a wrong token does not fall back to a webhook.
//! Every failure answers 401 `NO_AUTH_FOUND` "Wrong authorization data" (the cloud answers an
//! unknown OAuth token with `invalid_token`; the simulator keeps one code on purpose).
//!
//! Not simulated: session auth (`sessid`, CSRF header), webhook login names, scopes, HTTPS
//! checks (on-premise `REST_APAUTH_ALLOW_HTTP` is assumed).

use super::{SimOptions, Simulator};
use b24_rest::php::{Array, Key, Value};

/// Parameters that carry credentials; the portal removes them before the method runs.
const AUTH_PARAMS: [&str; 4] = ["auth", "access_token", "aplogin", "ap"];

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    OAuth,
    Webhook,
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: u64,
    pub kind: AuthKind,
}

/// An authentication failure (always 401 `NO_AUTH_FOUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

impl Simulator {
    /// Authenticates a request and strips the credential parameters from `params`.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&str>,
        params: &mut Array,
    ) -> Result<Caller, AuthFailed> {
        let caller = check(self.options(), authorization, params);
        for name in AUTH_PARAMS {
            params.remove(&Key::Str(name.to_owned()));
        }
        caller
    }
}

fn check(
    opts: &SimOptions,
    authorization: Option<&str>,
    params: &Array,
) -> Result<Caller, AuthFailed> {
    let param = |name: &str| params.get_str(name).and_then(php_text);
    let token = bearer(authorization)
        .or_else(|| param("auth"))
        .or_else(|| param("access_token"));
    if let Some(token) = token {
        return opts
            .oauth_tokens
            .iter()
            .find(|t| t.token == token)
            .map(|t| Caller {
                user_id: t.user_id,
                kind: AuthKind::OAuth,
            })
            .ok_or(AuthFailed);
    }
    match (param("aplogin"), param("ap")) {
        (Some(login), Some(secret)) => {
            let user_id: u64 = login.trim().parse().map_err(|_| AuthFailed)?;
            opts.webhooks
                .iter()
                .find(|w| w.user_id == user_id && w.secret == secret)
                .map(|w| Caller {
                    user_id: w.user_id,
                    kind: AuthKind::Webhook,
                })
                .ok_or(AuthFailed)
        }
        _ => Err(AuthFailed),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: Option<&str>) -> Option<String> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(char::is_whitespace)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// A credential value as text; an empty or non-scalar value counts as absent.
fn php_text(v: &Value) -> Option<String> {
    let s = match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_rest::params::parse_str_lossy;

    fn caller(auth: Option<&str>, query: &str) -> (Result<Caller, AuthFailed>, Array) {
        let sim = Simulator::new(SimOptions::default());
        let mut p = parse_str_lossy(query.as_bytes());
        let c = sim.authenticate(auth, &mut p);
        (c, p)
    }

    #[test]
    fn each_mechanism_authenticates_and_is_stripped() {
        let oauth = Ok(Caller {
            user_id: 1,
            kind: AuthKind::OAuth,
        });
        assert_eq!(caller(Some("Bearer sim-oauth-token-1"), "").0, oauth);
        assert_eq!(caller(None, "auth=sim-oauth-token-1").0, oauth);
        assert_eq!(caller(None, "access_token=sim-oauth-token-1").0, oauth);
        let (hook, left) = caller(None, "aplogin=1&ap=sim-secret-1&id=5");
        assert_eq!(hook.map(|c| c.kind), Ok(AuthKind::Webhook));
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn bearer_is_checked_first_and_failures_do_not_fall_back() {
        assert_eq!(
            caller(Some("Bearer nope"), "auth=sim-oauth-token-1").0,
            Err(AuthFailed)
        );
        assert_eq!(
            caller(None, "auth=nope&aplogin=1&ap=sim-secret-1").0,
            Err(AuthFailed)
        );
        assert_eq!(caller(None, "aplogin=1&ap=wrong").0, Err(AuthFailed));
        assert_eq!(caller(None, "aplogin=2&ap=sim-secret-1").0, Err(AuthFailed));
        assert_eq!(caller(None, "").0, Err(AuthFailed));
    }
}
