//! Classify: a request path → which REST method the portal will run, and the webhook credential
//! when the path carries one. Reads only the path, never the body, so it is cheap enough for
//! every pass-through call.
//!
//! The rule (documented in README, "Paths"): the proxy accepts only the canonical spellings the
//! portal's own templates match (docs/protocol.md, URL forms) —
//! `/rest/{method}`, `/rest/{uid}/{secret}/{method}`, each with at most one trailing `/`, and the
//! REST 3.0 forms `/rest/api/{method}`, `/rest/api/{uid}/{secret}/{method}`. Percent-escapes are
//! decoded once, as the portal does, and the method is compared lower-cased with a final
//! `.json`/`.xml` dropped. Every path the portal would *normalise* into something else (`//`,
//! `.`/`..` segments, an encoded `/` `\` `%` or NUL, a trailing `index.php`, a segment count that
//! makes the portal take the method from a request parameter) is refused outright with 400,
//! whatever the method: a real client never sends one, and refusing them all means no spelling
//! of a watched method can slip through as "unwatched".

use std::borrow::Cow;

/// Why a path is not served: not under `/rest/`, or not in a canonical spelling (the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    NonCanonical(&'static str),
}

/// Which REST API generation the path addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    /// `/rest/api/...` (REST 3.0: JSON only, a different batch format).
    V3,
}

/// A webhook credential carried in the path.
#[derive(Clone, PartialEq, Eq)]
pub struct PathWebhook {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for PathWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line, even through Debug.
        f.debug_struct("PathWebhook")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The classified path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The method as the portal resolves it: decoded, lower-cased, without `.json`/`.xml`.
    pub method: String,
    /// `json` or `xml` when the path ended in that suffix.
    pub transport: Option<&'static str>,
    pub version: ApiVersion,
    pub webhook: Option<PathWebhook>,
}

const PREFIX: &str = "/rest/";

/// Classifies a raw request path (without the query string).
pub fn classify(path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix(PREFIX).ok_or(RouteError::NotFound)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(RouteError::NonCanonical("no method in the path"));
    }
    let mut segs: [&str; 5] = [""; 5];
    let mut n = 0;
    for seg in rest.split('/') {
        if n == segs.len() {
            return Err(RouteError::NonCanonical(
                "too many path segments: the portal would take the method from a parameter",
            ));
        }
        segs[n] = seg;
        n += 1;
    }
    let (version, parts) = if segs[0] == "api" && (n == 2 || n == 4) {
        (ApiVersion::V3, &segs[1..n])
    } else {
        (ApiVersion::V1, &segs[..n])
    };
    let (webhook, method_seg) = match parts {
        [m] => (None, *m),
        [u, s, m] => (
            Some(PathWebhook {
                user: decode_segment(u)?.into_owned(),
                secret: decode_segment(s)?.into_owned(),
            }),
            *m,
        ),
        _ => return Err(RouteError::NonCanonical(
            "unexpected number of path segments: the portal would take the method from a parameter",
        )),
    };
    if segs[0] == "api" && version == ApiVersion::V1 {
        return Err(RouteError::NonCanonical(
            "ambiguous between a REST 3.0 path and a webhook named \"api\"",
        ));
    }
    let (method, transport) = normalise_method(&decode_segment(method_seg)?);
    if method == "index.php" {
        return Err(RouteError::NonCanonical("explicit index.php"));
    }
    Ok(Route {
        method,
        transport,
        version,
        webhook,
    })
}

/// Lower-cases and drops a final `.json`/`.xml`, in that order (so `.JSON` works), as the portal.
pub fn normalise_method(raw: &str) -> (String, Option<&'static str>) {
    let lower = raw.to_ascii_lowercase();
    for suffix in ["json", "xml"] {
        if let Some(stem) = lower.strip_suffix(suffix).and_then(|s| s.strip_suffix('.')) {
            if !stem.is_empty() {
                let t = if suffix == "json" { "json" } else { "xml" };
                return (stem.to_owned(), Some(t));
            }
        }
    }
    (lower, None)
}

/// Percent-decodes one segment, refusing what would change the path's structure once decoded.
fn decode_segment(seg: &str) -> Result<Cow<'_, str>, RouteError> {
    if seg.is_empty() {
        return Err(RouteError::NonCanonical("empty path segment (//)"));
    }
    if seg.contains('\\') {
        return Err(RouteError::NonCanonical("backslash in the path"));
    }
    let decoded: Cow<'_, str> = if seg.contains('%') {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        let s = String::from_utf8(bytes)
            .map_err(|_| RouteError::NonCanonical("path is not UTF-8 once decoded"))?;
        if s.contains(['/', '\\', '%', '\0']) {
            return Err(RouteError::NonCanonical(
                "encoded '/', '\\', '%' or NUL in the path",
            ));
        }
        Cow::Owned(s)
    } else {
        Cow::Borrowed(seg)
    };
    if decoded == "." || decoded == ".." {
        return Err(RouteError::NonCanonical("'.' or '..' segment"));
    }
    if decoded.chars().any(|c| c.is_control()) {
        return Err(RouteError::NonCanonical("control character in the path"));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn method(path: &str) -> String {
        classify(path).expect(path).method
    }

    fn refused(path: &str) -> bool {
        matches!(classify(path), Err(RouteError::NonCanonical(_)))
    }

    #[test]
    fn both_url_forms() {
        let r = classify("/rest/7/s3cr3t/crm.automatedsolution.update").expect("webhook");
        assert_eq!(r.method, "crm.automatedsolution.update");
        assert_eq!(
            r.webhook,
            Some(PathWebhook {
                user: "7".into(),
                secret: "s3cr3t".into()
            })
        );
        let o = classify("/rest/crm.automatedsolution.update").expect("oauth");
        assert_eq!(o.webhook, None);
        assert_eq!(o.version, ApiVersion::V1);
        let v3 = classify("/rest/api/1/x/tasks.task.get").expect("v3");
        assert_eq!(v3.version, ApiVersion::V3);
        assert_eq!(
            classify("/rest/api/batch").expect("v3").version,
            ApiVersion::V3
        );
    }

    #[test]
    fn method_is_normalised_like_the_portal() {
        assert_eq!(
            method("/rest/1/k/CRM.AutomatedSolution.UPDATE"),
            "crm.automatedsolution.update"
        );
        assert_eq!(
            method("/rest/1/k/crm.automatedsolution.Update.json"),
            "crm.automatedsolution.update"
        );
        assert_eq!(
            method("/rest/1/k/crm.automatedsolution.update.XML"),
            "crm.automatedsolution.update"
        );
        assert_eq!(
            method("/rest/1/k/crm.automatedsolution.%75pdate"),
            "crm.automatedsolution.update"
        );
        assert_eq!(
            method("/rest/1/k/crm%2Eautomatedsolution.update"),
            "crm.automatedsolution.update"
        );
        assert_eq!(
            method("/rest/1/k/crm.automatedsolution.update/"),
            "crm.automatedsolution.update"
        );
        // Only the last segment is a suffix.
        assert_eq!(method("/rest/1/k/crm.json.x"), "crm.json.x");
        assert_eq!(method("/rest/1/k/json"), "json");
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        for p in [
            "/rest//1/k/crm.automatedsolution.update",
            "/rest/x/../1/k/crm.automatedsolution.update",
            "/rest/./1/k/crm.automatedsolution.update",
            "/rest/1/k/%2E%2E/crm.automatedsolution.update",
            "/rest/1%2Fk%2Fcrm.automatedsolution.update",
            "/rest/1/k/crm.automatedsolution.update%2f",
            "/rest/1/k/crm.automatedsolution.update/index.php",
            "/rest/crm.automatedsolution.update/index.php",
            "/rest/1/k/crm.automatedsolution.update//",
            "/rest/a/b",
            "/rest/a/b/c/d",
            "/rest/a/b/c/d/e/f",
            "/rest/",
            "/rest/1/k/crm%25",
            "/rest/1/k/a%00b",
            "/rest/1/k/a\\b",
            "/rest/api/x/crm.automatedsolution.update",
            "/rest/1/k/%FF",
        ] {
            assert!(refused(p), "{p} must be refused");
        }
    }

    #[test]
    fn outside_rest_is_not_found() {
        for p in [
            "/",
            "/rest",
            "/REST/1/k/x",
            "/bitrix/services/main/ajax.php",
        ] {
            assert!(matches!(classify(p), Err(RouteError::NotFound)), "{p}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let r = classify("/rest/7/topsecret/x").expect("webhook");
        assert!(!format!("{r:?}").contains("topsecret"));
    }

    proptest! {
        /// Any path: classify never panics, and whatever it accepts has a method with no
        /// character that could make the portal read a different path.
        #[test]
        fn classify_total(path in "/rest/[a-zA-Z0-9%./\\\\_-]{0,40}") {
            if let Ok(r) = classify(&path) {
                prop_assert!(!r.method.is_empty());
                prop_assert!(!r.method.contains('/'));
                prop_assert!(r.method != "." && r.method != "..");
                prop_assert_eq!(r.method.to_ascii_lowercase(), r.method.clone());
            }
        }

        /// Percent-encoding any character of a canonical path never changes what it routes to.
        #[test]
        fn encoding_is_decoded_once(idx in 0usize..28) {
            let plain = "crm.automatedsolution.update";
            let i = idx % plain.len();
            let encoded = format!("{}%{:02X}{}", &plain[..i], plain.as_bytes()[i], &plain[i + 1..]);
            prop_assert_eq!(method(&format!("/rest/1/k/{encoded}")), plain);
        }
    }
}
