//! From an HTTP request to the portal's reading of it: the REST method, the response transport,
//! and the parameters the method will see (docs/protocol.md, URL forms and Parameter sources).
//!
//! Parameters come from `portal_request_params` (query, urlencoded form, JSON, raw body), plus
//! `multipart/form-data`, which that function leaves to PHP's form parser and which is read here.
//! The URL template variables (`method`, `aplogin`, `ap`) are merged over same-named parameters.
//! When no template matched, those variables come from `$_REQUEST`: the query string and a
//! form-parsed POST body, never JSON. Credentials and `start` are taken out later (`auth.rs`,
//! `dispatch.rs`).

use super::multipart;
use super::route::{self, PathVars, RestPath, Transport};
use b24_rest::params::{parse_str_lossy, portal_request_params};
use b24_rest::php::{Array, Key, Value};
use http::Method;

/// The parts of an HTTP request the portal reads.
#[derive(Debug, Clone, Copy)]
pub struct HttpInput<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a [u8],
    pub content_type: Option<&'a [u8]>,
    pub body: &'a [u8],
}

/// A request addressed to the REST endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Under `/rest/api/` (REST 3.0).
    pub v3: bool,
    /// Lower-cased, suffix removed; empty when the request names no method.
    pub method: String,
    pub transport: Transport,
    /// Everything the request carries, credentials included.
    pub params: Array,
}

/// The portal's reading of `input`; `None` when the path is not under `/rest/`.
pub fn read(input: &HttpInput<'_>) -> Option<Routed> {
    let rest_path = route::parse_path(input.path)?;
    let mut params = request_params(input);
    let (v3, vars) = match rest_path {
        RestPath::V2 {
            vars,
            template_matched: true,
        } => (false, vars),
        RestPath::V2 {
            template_matched: false,
            ..
        } => (false, vars_from_request(input)),
        RestPath::V3 { vars } => (true, vars),
    };
    for (name, value) in [
        ("method", &vars.method),
        ("aplogin", &vars.aplogin),
        ("ap", &vars.ap),
    ] {
        if let Some(v) = value {
            params.set(Key::Str(name.to_owned()), Value::Str(v.clone()));
        }
    }
    let (method, transport) = match (&vars.method, v3) {
        (Some(m), false) => route::method_name(m),
        (Some(m), true) => (m.clone(), Transport::Json),
        (None, _) => (String::new(), Transport::Json),
    };
    Some(Routed {
        v3,
        method,
        transport,
        params,
    })
}

/// `getRequestData`, with multipart bodies read as PHP would.
fn request_params(input: &HttpInput<'_>) -> Array {
    if let Some(fields) = multipart_fields(input) {
        let mut params = parse_str_lossy(input.query);
        params.replace_with(fields);
        return params;
    }
    portal_request_params(input.method, input.content_type, input.query, input.body)
}

/// The form fields of a multipart POST; `None` for any other request.
fn multipart_fields(input: &HttpInput<'_>) -> Option<Array> {
    if input.method != Method::POST {
        return None;
    }
    let ct = String::from_utf8_lossy(input.content_type?).into_owned();
    if php_content_type(&ct) != "multipart/form-data" {
        return None;
    }
    // Without a boundary PHP reads no fields; php://input is never readable for multipart.
    Some(multipart::boundary(&ct).map_or_else(Array::new, |b| multipart::parse(input.body, &b)))
}

/// `$_REQUEST`: the query string, overridden by form fields PHP itself parsed.
fn superglobal_request(input: &HttpInput<'_>) -> Array {
    let mut req = parse_str_lossy(input.query);
    if let Some(fields) = multipart_fields(input) {
        req.replace_with(fields);
    } else if input.method == Method::POST
        && input.content_type.is_some_and(|ct| {
            php_content_type(&String::from_utf8_lossy(ct)) == "application/x-www-form-urlencoded"
        })
    {
        req.replace_with(parse_str_lossy(input.body));
    }
    req
}

fn vars_from_request(input: &HttpInput<'_>) -> PathVars {
    let req = superglobal_request(input);
    let text = |name: &str| req.get_str(name).and_then(Value::as_str).map(str::to_owned);
    PathVars {
        method: text("method"),
        aplogin: text("aplogin"),
        ap: text("ap"),
    }
}

/// How PHP's SAPI classifies a POST content type: lower-cased, cut at the first `;`, `,` or space.
fn php_content_type(ct: &str) -> String {
    ct.split([';', ',', ' '])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_post(path: &str, query: &str, ct: &str, body: &str) -> Option<Routed> {
        read(&HttpInput {
            method: &Method::POST,
            path,
            query: query.as_bytes(),
            content_type: Some(ct.as_bytes()),
            body: body.as_bytes(),
        })
    }

    #[test]
    fn path_variables_override_params() {
        let r = read_post(
            "/rest/1/k3y/CRM.AutomatedSolution.Update.json",
            "aplogin=7",
            "application/json",
            r#"{"id":5,"ap":"other","method":"x"}"#,
        )
        .expect("rest");
        assert_eq!(r.method, "crm.automatedsolution.update");
        assert_eq!(r.params.get_str("ap"), Some(&Value::Str("k3y".into())));
        assert_eq!(r.params.get_str("aplogin"), Some(&Value::Str("1".into())));
        assert_eq!(r.params.get_str("id"), Some(&Value::Int(5)));
    }

    #[test]
    fn method_from_params_only_from_query_or_form() {
        let form = read_post(
            "/rest/a/b/c/d",
            "",
            "application/x-www-form-urlencoded",
            "method=CRM.AutomatedSolution.Update&id=5",
        )
        .expect("rest");
        assert_eq!(form.method, "crm.automatedsolution.update");
        let json = read_post(
            "/rest/a/b",
            "",
            "application/json",
            r#"{"method":"user.current"}"#,
        )
        .expect("rest");
        assert_eq!(json.method, "");
        let query = read_post(
            "/rest/",
            "method=user.current.xml",
            "application/json",
            "{}",
        )
        .expect("rest");
        assert_eq!(
            (query.method.as_str(), query.transport),
            ("user.current", Transport::Xml)
        );
    }

    #[test]
    fn multipart_bodies_are_form_fields() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n9\r\n--b--\r\n";
        let r =
            read_post("/rest/x", "id=1", "multipart/form-data; boundary=b", body).expect("rest");
        assert_eq!(r.params.get_str("id"), Some(&Value::Str("9".into())));
    }
}
