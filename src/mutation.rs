//! Interpret: a watched `crm.automatedsolution.*` call → a [`Mutation`] (what will change) and
//! the caller's [`Credential`]; and the canonical re-encoding that is forwarded instead of the
//! client's bytes (docs/architecture.md, Forwarding an inspected call), so no parser difference
//! between proxy and portal can turn the evaluated call into another one.
//!
//! The reading is strict where the portal is lenient (docs/architecture.md, The rule of
//! interpretation): duplicate or mis-spelled keys, ids that only PHP's coercion turns into numbers,
//! more than one credential, unknown field names — all refused with a 400 that says which
//! parameter.

mod batch;
mod credential;
mod outbound;

pub use crate::watched::MutationKind;
pub use batch::{parse_batch, touches_bindings, BatchCall, Command};
pub use credential::{credential, Credential, Place};
pub use outbound::{
    canonical, canonical_command, outbound, params_without_credentials, path_segment, rebuilt,
    rebuilt_v3_batch, OutboundCall,
};

use crate::error::ProxyError;
use crate::rest::params::{request_params_of, BodyEncoding, ParamError};
use crate::rest::php::{Array, Value};
use crate::rest::route::Route;
use http::{HeaderMap, Method};
use serde::Serialize;
use serde_json::json;

/// What one call will do, with every value already normalised the way the portal normalises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub kind: MutationKind,
    /// The workplace; `None` for `add`.
    pub solution_id: Option<i64>,
    /// The new title, when the call sets one.
    pub title: Option<String>,
    /// The new binding set (sorted, deduplicated, positive), when the call sets one.
    pub type_ids: Option<Vec<i64>>,
}

impl Mutation {
    /// The effective parameters, as recorded in the trail (no credential in it).
    pub fn params_json(&self) -> serde_json::Value {
        let mut fields = serde_json::Map::new();
        if let Some(t) = &self.title {
            fields.insert("title".into(), json!(t));
        }
        if let Some(ids) = &self.type_ids {
            fields.insert("typeIds".into(), json!(ids));
        }
        let mut out = serde_json::Map::new();
        if let Some(id) = self.solution_id {
            out.insert("id".into(), json!(id));
        }
        if self.kind != MutationKind::Delete {
            out.insert("fields".into(), serde_json::Value::Object(fields));
        }
        serde_json::Value::Object(out)
    }
}

/// A watched call, read.
#[derive(Debug, Clone)]
pub struct Interpreted {
    pub mutation: Mutation,
    pub credential: Credential,
    /// How the client encoded it (`json`, `form`, `query`), for the trail.
    pub encoding: &'static str,
}

/// Reads a watched `crm.automatedsolution.*` call.
pub fn interpret(
    kind: MutationKind,
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    query: &[u8],
    body: &[u8],
) -> Result<Interpreted, ProxyError> {
    json_transport_only(route)?;
    let decoded = request_params_of(method, headers, query, body).map_err(param_error)?;
    let params = decoded.params;
    let credential = credential(route, headers, query, &params)?;

    let mutation = read_mutation(kind, &params)?;
    let encoding = encoding_name(decoded.body);
    Ok(Interpreted {
        mutation,
        credential,
        encoding,
    })
}

/// An audited call's answer is read by the proxy, so it must come in JSON: a `.xml` call is
/// refused (an inspected call that changes nothing audited keeps its transport).
pub fn json_transport_only(route: &Route) -> Result<(), ProxyError> {
    if route.transport == Some("xml") {
        return Err(ProxyError::uninterpretable(
            "UNSUPPORTED_TRANSPORT",
            "audited calls are accepted with the JSON transport only (drop the .xml suffix)",
        ));
    }
    Ok(())
}

/// How the client encoded a call, as recorded in the trail.
pub fn encoding_name(body: BodyEncoding) -> &'static str {
    match body {
        BodyEncoding::Json => "json",
        BodyEncoding::Form | BodyEncoding::RawForm => "form",
        BodyEncoding::None => "query",
    }
}

/// The mutation a call (or a batch command) with these parameters makes, read strictly.
pub fn read_mutation(kind: MutationKind, params: &Array) -> Result<Mutation, ProxyError> {
    for (k, _) in params.iter() {
        let text = k.as_text();
        let lower = text.to_ascii_lowercase();
        if (lower == "id" || lower == "fields") && text != lower {
            return Err(ProxyError::uninterpretable(
                "AMBIGUOUS_PARAMETER",
                format!("parameter '{text}' is spelled differently from '{lower}'; the portal ignores it"),
            ));
        }
    }
    let solution_id = match kind {
        MutationKind::Add => None,
        MutationKind::Update | MutationKind::Delete => Some(read_id(params.get_str("id"))?),
    };
    let (title, type_ids) = match (kind, params.get_str("fields")) {
        (MutationKind::Delete, _) | (_, None) => (None, None),
        (_, Some(Value::Array(fields))) => read_fields(fields)?,
        (_, Some(_)) => {
            return Err(ProxyError::uninterpretable(
                "INVALID_PARAMETER",
                "'fields' must be an object",
            ))
        }
    };
    Ok(Mutation {
        kind,
        solution_id,
        title,
        type_ids,
    })
}

pub fn param_error(e: ParamError) -> ProxyError {
    let code = match e {
        ParamError::DuplicateKey(_) => "AMBIGUOUS_PARAMETER",
        ParamError::TooManyVars(_) => "TOO_MANY_PARAMETERS",
        ParamError::Multipart
        | ParamError::AmbiguousContentType
        | ParamError::DuplicateContentType
        | ParamError::JsonAsForm
        | ParamError::RawNul => "UNSUPPORTED_ENCODING",
        ParamError::BodyIgnored => "UNSUPPORTED_ENCODING",
        ParamError::InvalidUtf8
        | ParamError::InvalidJson(_)
        | ParamError::TooDeep
        | ParamError::NotAnObject => "INVALID_REQUEST_BODY",
    };
    ProxyError::uninterpretable(code, e.to_string())
}

/// `id`: a JSON integer or a string of ASCII digits, positive (docs/protocol.md, Controller
/// binding). PHP would also coerce `" 5"`, `"5.9"` and `"1e1"`; those are refused so the snapshot
/// is surely of the id the portal uses.
pub fn read_id(v: Option<&Value>) -> Result<i64, ProxyError> {
    let bad = |why: &str| ProxyError::uninterpretable("INVALID_PARAMETER", format!("'id' {why}"));
    let n = match v {
        None => return Err(bad("is required")),
        Some(Value::Int(n)) => *n,
        Some(Value::Str(s))
            if !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse::<i64>().map_err(|_| bad("is out of range"))?
        }
        Some(_) => return Err(bad("must be a positive integer (digits only)")),
    };
    if n <= 0 {
        return Err(bad("must be a positive integer"));
    }
    Ok(n)
}

fn read_fields(fields: &Array) -> Result<(Option<String>, Option<Vec<i64>>), ProxyError> {
    let mut title = None;
    let mut type_ids = None;
    for (k, v) in fields.iter() {
        let name = k.as_text();
        let folded = name.to_ascii_lowercase().replace('_', "");
        match (name.as_str(), folded.as_str()) {
            ("title", _) => title = Some(read_title(v)?),
            ("typeIds", _) => type_ids = Some(normalise_type_ids(v)?),
            (_, "title") | (_, "typeids") => {
                return Err(ProxyError::uninterpretable(
                    "AMBIGUOUS_PARAMETER",
                    format!(
                        "field '{name}' is read differently by the portal depending on the other keys; spell it '{}'",
                        if folded == "title" { "title" } else { "typeIds" }
                    ),
                ))
            }
            _ => {
                return Err(ProxyError::uninterpretable(
                    "UNSUPPORTED_FIELD",
                    format!("field '{name}' is not a field of a digital workplace (title, typeIds)"),
                ))
            }
        }
    }
    Ok((title, type_ids))
}

fn read_title(v: &Value) -> Result<String, ProxyError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(ProxyError::uninterpretable(
            "INVALID_PARAMETER",
            "'fields.title' must be a string",
        )),
    }
}

/// The portal's `TYPE_IDS` normaliser (docs/protocol.md, Workplace updates): cast to array, `(int)`
/// each element, keep values > 0, deduplicate, sort. A cast whose result depends on the PHP build
/// (huge numbers) is refused.
pub fn normalise_type_ids(v: &Value) -> Result<Vec<i64>, ProxyError> {
    let one;
    let items: Vec<&Value> = match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(|(_, v)| v).collect(),
        scalar => {
            one = scalar;
            vec![one]
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let n = item.php_int().ok_or_else(|| {
            ProxyError::uninterpretable(
                "INVALID_PARAMETER",
                "a 'typeIds' element is a number out of range",
            )
        })?;
        if n > 0 {
            out.push(n);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A workplace as the portal returns it (`{id, title, typeIds}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SolutionState {
    pub id: i64,
    pub title: String,
    #[serde(rename = "typeIds")]
    pub type_ids: Vec<i64>,
}

impl SolutionState {
    /// Reads `result.automatedSolution` of a get/add/update answer.
    pub fn from_answer(answer: &serde_json::Value) -> Option<SolutionState> {
        serde_json::from_value(answer.get("result")?.get("automatedSolution")?.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::route::classify;

    fn run(
        path: &str,
        method: Method,
        ct: Option<&str>,
        query: &str,
        body: &str,
    ) -> Result<Interpreted, ProxyError> {
        let route = classify(path).expect("route");
        let mut headers = HeaderMap::new();
        if let Some(ct) = ct {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().expect("header"));
        }
        interpret(
            MutationKind::Update,
            &route,
            &method,
            &headers,
            query.as_bytes(),
            body.as_bytes(),
        )
    }

    const HOOK: &str = "/rest/1/k3y/crm.automatedsolution.update";

    #[test]
    fn the_three_encodings_read_the_same() {
        let json = run(
            HOOK,
            Method::POST,
            Some("application/json"),
            "",
            r#"{"id":238,"fields":{"title":"HR","typeIds":[158,14,14]}}"#,
        )
        .expect("json");
        let form = run(
            HOOK,
            Method::POST,
            Some("application/x-www-form-urlencoded"),
            "",
            "id=238&fields[title]=HR&fields[typeIds][]=158&fields[typeIds][]=14",
        )
        .expect("form");
        let get = run(
            HOOK,
            Method::GET,
            None,
            "id=238&fields[title]=HR&fields[typeIds][0]=14&fields[typeIds][1]=158",
            "",
        )
        .expect("get");
        for call in [&json, &form, &get] {
            assert_eq!(call.mutation.solution_id, Some(238));
            assert_eq!(call.mutation.title.as_deref(), Some("HR"));
            assert_eq!(call.mutation.type_ids, Some(vec![14, 158]));
        }
        assert_eq!(
            (json.encoding, form.encoding, get.encoding),
            ("json", "form", "query")
        );
    }

    #[test]
    fn type_ids_normalise_like_the_portal() {
        let cases: &[(&str, &[i64])] = &[
            (r#"[]"#, &[]),
            (r#"null"#, &[]),
            (r#""""#, &[]),
            (r#""0""#, &[]),
            (r#"[""]"#, &[]),
            (r#"[0]"#, &[]),
            (r#"["abc"]"#, &[]),
            (r#"[-5]"#, &[]),
            (r#"false"#, &[]),
            (r#"["0x1A"]"#, &[]),
            (r#"[[]]"#, &[]),
            (r#""14""#, &[14]),
            (r#"" 14""#, &[14]),
            (r#""14,15""#, &[14]),
            (r#"["14abc"]"#, &[14]),
            (r#"[14.9]"#, &[14]),
            (r#"["1e3"]"#, &[1000]),
            (r#"true"#, &[1]),
            (r#"[[5]]"#, &[1]),
            (r#"[3,1,3,2]"#, &[1, 2, 3]),
        ];
        for (json, want) in cases {
            let v = crate::rest::params::json_decode(json.as_bytes()).expect(json);
            assert_eq!(
                normalise_type_ids(&v).expect(json),
                *want,
                "typeIds = {json}"
            );
        }
        let huge = crate::rest::params::json_decode(b"[1e300]").expect("json");
        assert!(normalise_type_ids(&huge).is_err());
    }

    #[test]
    fn strict_refusals() {
        let j = Some("application/json");
        let refusals = [
            (r#"{"id":"5.9","fields":{}}"#, "INVALID_PARAMETER"),
            (r#"{"id":" 5","fields":{}}"#, "INVALID_PARAMETER"),
            (r#"{"id":"1e1","fields":{}}"#, "INVALID_PARAMETER"),
            (r#"{"id":0}"#, "INVALID_PARAMETER"),
            (r#"{"fields":{}}"#, "INVALID_PARAMETER"),
            (r#"{"id":5,"fields":"x"}"#, "INVALID_PARAMETER"),
            (
                r#"{"id":5,"fields":{"TYPE_IDS":[]}}"#,
                "AMBIGUOUS_PARAMETER",
            ),
            (
                r#"{"id":5,"fields":{"typeIds":[1],"TYPE_IDS":[]}}"#,
                "AMBIGUOUS_PARAMETER",
            ),
            (
                r#"{"id":5,"fields":{"typeIds":[1],"typeIds":[]}}"#,
                "AMBIGUOUS_PARAMETER",
            ),
            (r#"{"id":5,"ID":6}"#, "AMBIGUOUS_PARAMETER"),
            (r#"{"id":5,"fields":{"code":"x"}}"#, "UNSUPPORTED_FIELD"),
            (r#"{"id":5,"fields":{"title":["x"]}}"#, "INVALID_PARAMETER"),
            (r#"{"id":5,"auth":"tok"}"#, "AMBIGUOUS_CREDENTIALS"),
            (r#"{"id":5,"sessid":"x"}"#, "UNSUPPORTED_AUTH"),
            (r#"{"id":5"#, "INVALID_REQUEST_BODY"),
        ];
        for (body, code) in refusals {
            let e = run(HOOK, Method::POST, j, "", body).expect_err(body);
            assert_eq!(e.code(), code, "{body}: {e}");
        }
    }

    #[test]
    fn credentials_are_found_where_the_portal_looks() {
        let oauth = "/rest/crm.automatedsolution.update";
        let c = run(
            oauth,
            Method::POST,
            Some("application/json"),
            "",
            r#"{"id":5,"auth":"tok"}"#,
        )
        .expect("auth");
        assert!(matches!(
            c.credential,
            Credential::TokenParam {
                name: "auth",
                place: Place::Body,
                ..
            }
        ));
        let q = run(
            oauth,
            Method::POST,
            Some("application/json"),
            "access_token=tok",
            r#"{"id":5}"#,
        )
        .expect("q");
        assert!(matches!(
            q.credential,
            Credential::TokenParam {
                name: "access_token",
                place: Place::Query,
                ..
            }
        ));
        let ap = run(oauth, Method::GET, None, "aplogin=3&ap=s&id=5", "").expect("ap");
        assert_eq!(ap.credential.user_id(), Some("3"));
        let none = run(oauth, Method::GET, None, "id=5", "").expect("none");
        assert_eq!(none.credential, Credential::None);
        assert!(!format!("{:?}", c.credential).contains("tok"));
    }

    #[test]
    fn canonical_form_keeps_the_credential_in_place() {
        let c = run(
            HOOK,
            Method::GET,
            None,
            "id=5&fields[typeIds][]=14&fields[title]=a%26b",
            "",
        )
        .expect("get");
        let out = canonical(&c);
        assert_eq!(
            out.path_and_query,
            "/rest/1/k3y/crm.automatedsolution.update"
        );
        let body: serde_json::Value = serde_json::from_str(&out.body).expect("json");
        assert_eq!(
            body,
            json!({"id":5,"fields":{"title":"a&b","typeIds":[14]}})
        );

        let oauth = run(
            "/rest/crm.automatedsolution.update",
            Method::POST,
            Some("application/json"),
            "auth=t%26",
            r#"{"id":5}"#,
        )
        .expect("q");
        let out = canonical(&oauth);
        assert_eq!(
            out.path_and_query,
            "/rest/crm.automatedsolution.update?auth=t%26"
        );
        assert_eq!(out.body, r#"{"id":5,"fields":{}}"#);
    }

    #[test]
    fn missing_fields_change_nothing() {
        let c = run(
            HOOK,
            Method::POST,
            Some("application/json"),
            "",
            r#"{"id":5}"#,
        )
        .expect("ok");
        assert_eq!(c.mutation.title, None);
        assert_eq!(c.mutation.type_ids, None);
    }
}
