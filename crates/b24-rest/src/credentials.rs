//! The one list of request parameters that carry a caller's credential (docs/protocol.md,
//! Credentials), used by interpretation (which credential a call has), `batch` (a credential inside
//! a command is overridden by the batch's own) and log redaction (whose values never reach a log
//! line).
//!
//! The portal reads these names case-sensitively, as PHP array keys: `AUTH` is an ordinary
//! parameter to it. Redaction compares case-insensitively all the same, because hiding a value
//! that was not a credential costs nothing.

/// OAuth access token (checked after an `Authorization: Bearer` header).
pub const AUTH: &str = "auth";
/// OAuth access token, the other spelling.
pub const ACCESS_TOKEN: &str = "access_token";
/// Webhook user (id or login), with [`AP`].
pub const APLOGIN: &str = "aplogin";
/// Webhook secret, with [`APLOGIN`].
pub const AP: &str = "ap";
/// Browser-session token.
pub const SESSID: &str = "sessid";

/// Parameters the portal reads as credentials.
pub const CREDENTIAL_PARAMS: [&str; 5] = [AUTH, ACCESS_TOKEN, APLOGIN, AP, SESSID];

/// Secret-bearing parameters that are not REST credentials but must not be logged either
/// (an OAuth refresh token or an application secret pasted into a URL by mistake).
const OTHER_SECRET_PARAMS: [&str; 2] = ["refresh_token", "client_secret"];

/// Is `name` (a decoded top-level parameter name) one the portal reads as a credential?
pub fn is_credential_param(name: &str) -> bool {
    CREDENTIAL_PARAMS.contains(&name)
}

/// Must the value of a parameter called `name` be hidden from logs? `name` is the top-level
/// name as PHP registers it (before any `[`), compared without regard to case.
pub fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    CREDENTIAL_PARAMS.contains(&lower.as_str()) || OTHER_SECRET_PARAMS.contains(&lower.as_str())
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case, one space,
/// the token without surrounding blanks); `None` for any other scheme or an empty token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let scheme = value.get(..7)?;
    let token = value[7..].trim();
    (scheme.eq_ignore_ascii_case("bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_exact_secrets_are_any_case() {
        assert!(is_credential_param("auth"));
        assert!(!is_credential_param("AUTH"));
        assert!(is_secret_param("AUTH"));
        assert!(is_secret_param("Refresh_Token"));
        assert!(!is_secret_param("start"));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bEaReR  abc "), Some("abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bear"), None);
        assert_eq!(bearer_token("Bearer\u{e9}x"), None);
    }
}
