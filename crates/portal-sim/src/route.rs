//! The portal's path handling (docs/protocol.md, URL forms): which REST method a path names, with
//! which path variables, and in which transport the answer goes.
//!
//! Order, as the portal does it: `rawurldecode` the path, normalise it (runs of `/` collapse,
//! `.`/`..` resolve, a trailing `/` means `/index.php`), require the `/rest/` prefix, then match
//! the URL templates `{method}`, `{method}/`, `{aplogin}/{ap}/{method}` and
//! `{aplogin}/{ap}/{method}/`. No match leaves the variables to the request parameters
//! (`request.rs`). Method names are lower-cased and lose a final `.json`/`.xml` segment.
//!
//! REST 3.0 (`/rest/api/...`) is recognised and reported as such; none of the simulated methods
//! is migrated there, so `dispatch.rs` answers `ERROR_METHOD_NOT_FOUND` (404) to every method on
//! that prefix, `batch` included (the REST 3.0 JSON-array batch is therefore never executed).
//!
//! Inferred rather than documented: `/rest/` and `/rest/index.php` themselves match no template
//! (they are the endpoint's own index page), so they take the method from the parameters.

/// The response format, chosen by the method name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Json,
    Xml,
}

/// The variables the URL templates can set; `None` when the path did not set one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathVars {
    pub method: Option<String>,
    pub aplogin: Option<String>,
    pub ap: Option<String>,
}

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestPath {
    /// The classic REST endpoint. `vars` is empty when no template matched: the method (and any
    /// webhook credential) then comes from the request parameters.
    V2 {
        vars: PathVars,
        template_matched: bool,
    },
    /// `/rest/api/...`: REST 3.0, with the method name (lower-cased) and webhook variables.
    V3 { vars: PathVars },
}

/// `rawurldecode`: `%XY` becomes the byte, `+` stays a plus.
pub fn raw_url_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = input.get(i + 1).and_then(|b| (*b as char).to_digit(16));
            let lo = input.get(i + 2).and_then(|b| (*b as char).to_digit(16));
            if let (Some(h), Some(l)) = (hi, lo) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// `IO\Path::normalize` plus the trailing-slash rule: the segments of the page, with `index.php`
/// appended after a trailing `/`. `None` when `..` climbs above the root (the portal refuses).
pub fn normalise(decoded: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s.to_owned()),
        }
    }
    let ends_in_dir = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if ends_in_dir || out.is_empty() {
        out.push("index.php".to_owned());
    }
    Some(out)
}

/// The REST reading of a raw (still percent-encoded) request path; `None` outside `/rest/`.
pub fn parse_path(raw_path: &str) -> Option<RestPath> {
    let decoded = String::from_utf8_lossy(&raw_url_decode(raw_path.as_bytes())).into_owned();
    let segments = normalise(&decoded)?;
    let (first, rel) = segments.split_first()?;
    if first != "rest" || rel.is_empty() {
        return None;
    }
    if rel.first().map(String::as_str) == Some("api") && rel.len() > 1 {
        return Some(RestPath::V3 {
            vars: v3_vars(&rel[1..]),
        });
    }
    let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
    let vars = match rel.as_slice() {
        ["index.php"] => None,
        [m] | [m, "index.php"] => Some(PathVars {
            method: Some((*m).to_owned()),
            ..PathVars::default()
        }),
        [a, p, m] | [a, p, m, "index.php"] => Some(PathVars {
            method: Some((*m).to_owned()),
            aplogin: Some((*a).to_owned()),
            ap: Some((*p).to_owned()),
        }),
        _ => None,
    };
    Some(RestPath::V2 {
        template_matched: vars.is_some(),
        vars: vars.unwrap_or_default(),
    })
}

fn v3_vars(rel: &[String]) -> PathVars {
    let strip_index = |s: &[String]| -> Vec<String> {
        let mut v = s.to_vec();
        if v.len() > 1 && v.last().map(String::as_str) == Some("index.php") {
            v.pop();
        }
        v
    };
    match strip_index(rel).as_slice() {
        [a, p, m] => PathVars {
            method: Some(m.to_lowercase()),
            aplogin: Some(a.clone()),
            ap: Some(p.clone()),
        },
        [m] => PathVars {
            method: Some(m.to_lowercase()),
            ..PathVars::default()
        },
        _ => PathVars::default(),
    }
}

/// The portal's method-name rule: lower-case first, then a final `json`/`xml` dot-segment is
/// the transport; any other final segment stays part of the name.
pub fn method_name(raw: &str) -> (String, Transport) {
    let lower = raw.to_lowercase();
    if let Some((name, suffix)) = lower.rsplit_once('.') {
        match suffix {
            "json" => return (name.to_owned(), Transport::Json),
            "xml" => return (name.to_owned(), Transport::Xml),
            _ => {}
        }
    }
    (lower, Transport::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(path: &str) -> Option<(PathVars, bool)> {
        match parse_path(path)? {
            RestPath::V2 {
                vars,
                template_matched,
            } => Some((vars, template_matched)),
            RestPath::V3 { .. } => None,
        }
    }

    fn hook(method: &str) -> PathVars {
        PathVars {
            method: Some(method.into()),
            aplogin: Some("1".into()),
            ap: Some("k3y".into()),
        }
    }

    #[test]
    fn spellings_of_one_webhook_call_reach_the_same_method() {
        let want = Some((hook("crm.automatedsolution.update"), true));
        for p in [
            "/rest/1/k3y/crm.automatedsolution.update",
            "/rest/1/k3y/crm.automatedsolution.update/",
            "/rest/1/k3y/crm.automatedsolution.update/index.php",
            "/rest/1/k3y/crm.automatedsolution.%75pdate",
            "/rest//1/k3y/crm.automatedsolution.update",
            "/rest/x/../1/k3y/crm.automatedsolution.update",
            "/rest/./1/k3y//crm.automatedsolution.update",
            "/rest/1%2Fk3y%2Fcrm.automatedsolution.update",
            "//rest/1/k3y/crm.automatedsolution.update",
        ] {
            assert_eq!(v2(p), want, "{p}");
        }
    }

    #[test]
    fn token_paths_and_fallbacks() {
        let m = |s: &str| {
            Some((
                PathVars {
                    method: Some(s.into()),
                    ..PathVars::default()
                },
                true,
            ))
        };
        assert_eq!(v2("/rest/user.current"), m("user.current"));
        assert_eq!(v2("/rest/user.current/"), m("user.current"));
        let fallback = Some((PathVars::default(), false));
        assert_eq!(v2("/rest/a/b"), fallback);
        assert_eq!(v2("/rest/a/b/c/d"), fallback);
        assert_eq!(v2("/rest/"), fallback);
        assert_eq!(v2("/rest/index.php"), fallback);
        assert_eq!(v2("/rest"), None);
        assert_eq!(v2("/other/user.current"), None);
        assert_eq!(v2("/rest/../../x"), None);
        assert_eq!(v2("/REST/user.current"), None);
    }

    #[test]
    fn rest_v3_prefix_is_recognised() {
        assert_eq!(
            parse_path("/rest/api/1/k3y/CRM.AutomatedSolution.Update"),
            Some(RestPath::V3 {
                vars: hook("crm.automatedsolution.update")
            })
        );
        assert!(matches!(
            parse_path("/rest/api/batch"),
            Some(RestPath::V3 { .. })
        ));
    }

    #[test]
    fn method_names_follow_the_portal() {
        let j = Transport::Json;
        assert_eq!(
            method_name("CRM.AutomatedSolution.Update.json"),
            ("crm.automatedsolution.update".into(), j)
        );
        assert_eq!(
            method_name("crm.automatedsolution.update.JSON"),
            ("crm.automatedsolution.update".into(), j)
        );
        assert_eq!(
            method_name("crm.automatedsolution.update.XML"),
            ("crm.automatedsolution.update".into(), Transport::Xml)
        );
        assert_eq!(
            method_name("crm.automatedsolution.update.json.json"),
            ("crm.automatedsolution.update.json".into(), j)
        );
        assert_eq!(
            method_name("crm.automatedsolution.update.yaml"),
            ("crm.automatedsolution.update.yaml".into(), j)
        );
    }

    #[test]
    fn raw_decode_keeps_plus() {
        assert_eq!(raw_url_decode(b"a+b%2Bc%zz%4"), b"a+b+c%zz%4");
    }
}
