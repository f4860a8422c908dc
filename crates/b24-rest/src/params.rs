//! Request parameters, decoded exactly as the portal decodes them.
//!
//! Three readers, each a copy of the PHP code path the portal runs (docs/protocol.md, Request
//! decoding): [`parse_str`] for query strings and form bodies (`parse_str` /
//! `php_register_variable_ex`), [`json_decode`] for JSON bodies (`json_decode($body, true)`), and
//! [`request_params`], which chooses between them by HTTP method and `Content-Type` and merges
//! query and body the way the portal's `getRequestData` does.
//!
//! Where PHP would silently do something the client probably did not mean (a duplicate JSON key,
//! invalid JSON read as an empty body, a JSON body sent as a form, variables past the input cap)
//! the readers return an error instead: the proxy refuses such a watched call rather than guess.
//! Unwatched calls never come here.

use crate::php::{Array, Key, Value};
use http::Method;
use std::fmt;

/// PHP's `max_input_nesting_level`: deeper bracket keys make PHP drop the whole variable.
pub const PHP_MAX_NESTING: usize = 64;

/// PHP's default `max_input_vars`. The portal silently drops every variable past it.
pub const PHP_MAX_INPUT_VARS: usize = 1000;

/// Why a request's parameters cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// A name or value is not UTF-8 after percent-decoding.
    InvalidUtf8,
    /// The body claims `application/json` but is not valid JSON (the portal would read it as
    /// empty and run the call with the query parameters alone).
    InvalidJson(String),
    /// A JSON object repeats a key (PHP keeps the last; a client rarely means that).
    DuplicateKey(String),
    /// Nesting deeper than the limit.
    TooDeep,
    /// More variables than the cap; the portal would silently drop the rest.
    TooManyVars(usize),
    /// A JSON body that is not an object or array.
    NotAnObject,
    /// `multipart/form-data` bodies are not interpreted.
    Multipart,
    /// A JSON-looking body sent without `Content-Type: application/json`: the portal would
    /// parse it as a form and read something else than the client meant.
    JsonAsForm,
    /// A body on a verb other than POST, which the portal ignores.
    BodyIgnored,
    /// A `Content-Type` the portal and the proxy might classify differently.
    AmbiguousContentType,
    /// More than one `Content-Type` header.
    DuplicateContentType,
    /// A raw NUL byte in an urlencoded body: PHP's form reader keeps reading past it, its
    /// `parse_str` stops there.
    RawNul,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::InvalidUtf8 => f.write_str("a parameter is not valid UTF-8"),
            ParamError::InvalidJson(e) => write!(f, "the JSON body is invalid ({e})"),
            ParamError::DuplicateKey(k) => write!(f, "the JSON body repeats the key '{k}'"),
            ParamError::TooDeep => f.write_str("parameters are nested too deeply"),
            ParamError::TooManyVars(n) => write!(f, "too many parameters ({n})"),
            ParamError::NotAnObject => f.write_str("the JSON body is not an object"),
            ParamError::Multipart => f.write_str("multipart bodies are not accepted for this method"),
            ParamError::JsonAsForm => f.write_str(
                "the body looks like JSON but Content-Type is not application/json, so the portal would read it as a form",
            ),
            ParamError::BodyIgnored => {
                f.write_str("a request body is only read on POST; send it with POST or in the query string")
            }
            ParamError::AmbiguousContentType => {
                f.write_str("the Content-Type is ambiguous; use application/json or application/x-www-form-urlencoded")
            }
            ParamError::DuplicateContentType => f.write_str(
                "the request has more than one Content-Type header; servers in front of the portal join or choose them differently",
            ),
            ParamError::RawNul => f.write_str(
                "the urlencoded body holds a raw NUL byte, which PHP's form reader and parse_str read differently; percent-encode it (%00)",
            ),
        }
    }
}

impl std::error::Error for ParamError {}

/// PHP's `php_url_decode`: `+` is a space, `%XY` with two hex digits is a byte, any other `%` is
/// kept as is.
pub fn url_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).and_then(|b| hex(*b));
                let lo = input.get(i + 2).and_then(|b| hex(*b));
                if let (Some(h), Some(l)) = (hi, lo) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The result of [`parse_str`]: the array PHP builds and how many variables it counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub params: Array,
    /// Non-empty `&`-separated pieces, which is what `max_input_vars` counts.
    pub vars: usize,
    /// A variable was nested deeper than [`PHP_MAX_NESTING`] and dropped, as PHP drops it.
    pub too_deep: bool,
}

/// PHP's `parse_str` (and the urlencoded POST reader, which registers variables the same way).
///
/// Stops counting at [`PHP_MAX_INPUT_VARS`] like PHP; the variables past it are dropped, and
/// `vars` tells the caller it happened so it can refuse.
pub fn parse_str(input: &[u8]) -> Result<Parsed, ParamError> {
    let mut params = Array::new();
    let mut vars = 0;
    let mut too_deep = false;
    for piece in c_string(input)
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
    {
        vars += 1;
        if vars > PHP_MAX_INPUT_VARS {
            continue;
        }
        let (name, value) = decode_pair(piece);
        let name = String::from_utf8(name).map_err(|_| ParamError::InvalidUtf8)?;
        let value = String::from_utf8(value).map_err(|_| ParamError::InvalidUtf8)?;
        too_deep |= !register_variable(&mut params, &name, Value::Str(value));
    }
    Ok(Parsed {
        params,
        vars,
        too_deep,
    })
}

/// PHP's `parse_str` (and the query-string reader) work on a C string: a raw NUL byte ends the
/// input, and everything after it is never read.
fn c_string(input: &[u8]) -> &[u8] {
    input
        .iter()
        .position(|b| *b == 0)
        .map_or(input, |nul| &input[..nul])
}

/// PHP's own reader of an `application/x-www-form-urlencoded` POST body (`add_post_vars` in
/// `main/php_variables.c`), which is not `parse_str`: it is binary-safe (a raw NUL inside a
/// value is kept, where `parse_str` stops reading), and it counts every `&`-separated piece,
/// empty ones included, toward `max_input_vars`, stopping after the one that passes it.
fn post_form_lossy(body: &[u8]) -> Array {
    register_lossy(body.split(|b| *b == b'&').take(PHP_MAX_INPUT_VARS + 1))
}

/// Registers each `name=value` piece as PHP does, accepting any bytes (invalid UTF-8 is
/// replaced with U+FFFD).
fn register_lossy<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Array {
    let mut params = Array::new();
    for piece in pieces {
        let (name, value) = decode_pair(piece);
        let _ = register_variable(
            &mut params,
            &String::from_utf8_lossy(&name),
            Value::Str(String::from_utf8_lossy(&value).into_owned()),
        );
    }
    params
}

/// One `name=value` piece, both percent-decoded; no `=` means an empty value. The name is a C
/// string in PHP: a decoded NUL ends it.
fn decode_pair(piece: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (name, value) = match piece.iter().position(|b| *b == b'=') {
        Some(eq) => (&piece[..eq], url_decode(&piece[eq + 1..])),
        None => (piece, Vec::new()),
    };
    let mut name = url_decode(name);
    if let Some(nul) = name.iter().position(|b| *b == 0) {
        name.truncate(nul);
    }
    (name, value)
}

/// `php_register_variable_ex`: splits `a[b][]` into its path and stores the value there.
/// Returns false when PHP's nesting limit made it drop the variable.
fn register_variable(root: &mut Array, raw_name: &str, value: Value) -> bool {
    let name = raw_name.trim_start_matches(' ');
    let bytes = name.as_bytes();
    // Before the first '[' PHP turns ' ' and '.' into '_'.
    let bracket = bytes.iter().position(|b| *b == b'[');
    let base_end = bracket.unwrap_or(bytes.len());
    let mut base: String = name[..base_end]
        .chars()
        .map(|c| if c == ' ' || c == '.' { '_' } else { c })
        .collect();
    if base.is_empty() {
        return true;
    }
    let Some(first_bracket) = bracket else {
        root.set(Key::from_php_string(&base), value);
        return true;
    };

    // Collect the bracket path; `None` is an empty `[]` (append).
    let mut path: Vec<Option<String>> = Vec::new();
    let mut pos = first_bracket; // at a '['
    loop {
        if path.len() + 1 > PHP_MAX_NESTING {
            root.remove(&Key::from_php_string(&base));
            return false;
        }
        let inner_start = pos + 1;
        // PHP skips one whitespace character before looking for `]`, so `a[ ]` (or `a[\t]`)
        // appends like `a[]`, while `a[  ]` and `a[ x]` keep their spaces in the key.
        let mut search = inner_start;
        if bytes
            .get(search)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C))
        {
            search += 1;
        }
        let single_space_empty = search > inner_start && bytes.get(search) == Some(&b']');
        let close = bytes[search..].iter().position(|b| *b == b']');
        let Some(close) = close.map(|c| c + search) else {
            if path.is_empty() {
                // No closing bracket at the first level: the '[' becomes '_' and the rest of
                // the name joins the base, with ' ', '.' and '[' turned into '_'.
                base.push('_');
                base.extend(name[inner_start..].chars().map(|c| {
                    if matches!(c, ' ' | '.' | '[') {
                        '_'
                    } else {
                        c
                    }
                }));
                root.set(Key::from_php_string(&base), value);
                return true;
            }
            // Deeper levels: what came before stays, the unterminated rest is ignored.
            break;
        };
        let inner = &name[inner_start..close];
        path.push(if inner.is_empty() || single_space_empty {
            None
        } else {
            Some(inner.to_owned())
        });
        pos = close + 1;
        if bytes.get(pos) != Some(&b'[') {
            break;
        }
    }
    assign_path(root, Key::from_php_string(&base), &path, value);
    true
}

/// Stores `value` at `arr[key][path...]`, turning non-arrays on the way into arrays as PHP does
/// (`a=1&a[]=2` leaves `a = ["2"]`); a `None` step appends.
fn assign_path(arr: &mut Array, key: Key, path: &[Option<String>], value: Value) {
    assign_step(arr, Some(key), path, value);
}

fn assign_step(arr: &mut Array, key: Option<Key>, rest: &[Option<String>], value: Value) {
    let Some((next, rest)) = rest.split_first() else {
        match key {
            Some(k) => arr.set(k, value),
            None => {
                arr.push(value);
            }
        }
        return;
    };
    let mut child = match key.as_ref().and_then(|k| arr.get_mut(k)) {
        Some(Value::Array(a)) => std::mem::take(a),
        _ => Array::new(),
    };
    let next_key = next.as_deref().map(Key::from_php_string);
    assign_step(&mut child, next_key, rest, value);
    match key {
        Some(k) => arr.set(k, Value::Array(child)),
        None => {
            arr.push(Value::Array(child));
        }
    }
}

/// `json_decode($body, true)`, except that duplicate keys, invalid JSON and nesting deeper than
/// [`PHP_MAX_NESTING`] are errors rather than silent last-wins / empty / null.
pub fn json_decode(input: &[u8]) -> Result<Value, ParamError> {
    let text = std::str::from_utf8(input).map_err(|_| ParamError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde::de::DeserializeSeed::deserialize(PhpSeed { depth: 0 }, &mut de)
        .map_err(classify_json_error)?;
    de.end().map_err(classify_json_error)?;
    Ok(value)
}

const DUPLICATE: &str = "\u{1}duplicate:";
const TOO_DEEP: &str = "\u{1}too deep";

fn classify_json_error(e: serde_json::Error) -> ParamError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE) {
        let key = rest.split(" at line ").next().unwrap_or(rest);
        return ParamError::DuplicateKey(key.to_owned());
    }
    if msg.starts_with(TOO_DEEP) || msg.starts_with("recursion limit exceeded") {
        return ParamError::TooDeep;
    }
    ParamError::InvalidJson(msg)
}

struct PhpSeed {
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for PhpSeed {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(PhpVisitor { depth: self.depth })
    }
}

struct PhpVisitor {
    depth: usize,
}

impl PhpVisitor {
    fn nested<E: serde::de::Error>(&self) -> Result<usize, E> {
        if self.depth + 1 > PHP_MAX_NESTING {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> serde::de::Visitor<'de> for PhpVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        // PHP turns integers past PHP_INT_MAX into floats.
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut out = Array::new();
        while let Some(v) = seq.next_element_seed(PhpSeed { depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut out = Array::new();
        while let Some(k) = map.next_key::<String>()? {
            let key = Key::from_php_string(&k);
            if out.get(&key).is_some() {
                return Err(serde::de::Error::custom(format!("{DUPLICATE}{k}")));
            }
            let v = map.next_value_seed(PhpSeed { depth })?;
            out.set(key, v);
        }
        Ok(Value::Array(out))
    }
}

/// How the portal read the body of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// No body was read (not POST, or empty).
    None,
    /// `application/x-www-form-urlencoded`, parsed by PHP itself.
    Form,
    /// Raw body parsed with `parse_str` (POST with another or no content type).
    RawForm,
    /// `application/json`.
    Json,
}

/// The parameters a call runs with, and how they were found.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestParams {
    pub params: Array,
    pub body: BodyEncoding,
}

/// Upper bound on the variables of one watched call. PHP drops everything past 1000; refusing
/// well below it leaves no doubt that the portal saw every variable the proxy saw.
pub const MAX_WATCHED_VARS: usize = 500;

/// The parameters the portal's `getRequestData` would hand to the method (docs/protocol.md,
/// Parameter sources).
pub fn request_params(
    method: &Method,
    content_type: Option<&[u8]>,
    query: &[u8],
    body: &[u8],
) -> Result<RequestParams, ParamError> {
    let query = parse_str(query)?;
    if query.too_deep {
        return Err(ParamError::TooDeep);
    }
    let mut vars = query.vars;
    let mut params = query.params;
    let mut encoding = BodyEncoding::None;

    if method != Method::POST {
        if !trim_php(body).is_empty() {
            return Err(ParamError::BodyIgnored);
        }
    } else {
        let ct = content_type.unwrap_or_default();
        match php_content_type(ct).as_str() {
            "application/x-www-form-urlencoded" => {
                // PHP's form reader and `parse_str` disagree only about raw NUL bytes and
                // about counting empty pieces: the first is refused, the second counted the
                // form reader's way. Without a NUL both register the same variables.
                if body.contains(&0) {
                    return Err(ParamError::RawNul);
                }
                let form = parse_str(body)?;
                if form.too_deep {
                    return Err(ParamError::TooDeep);
                }
                vars += body.split(|b| *b == b'&').count();
                if !form.params.is_empty() {
                    params.replace_with(form.params);
                    encoding = BodyEncoding::Form;
                } else if let Some(raw) = raw_form(body)? {
                    // The portal reads the raw body when PHP registered no form field (§2.1).
                    vars += raw.vars;
                    params.replace_with(raw.params);
                    encoding = BodyEncoding::RawForm;
                }
            }
            "multipart/form-data" => return Err(ParamError::Multipart),
            _ => {
                let raw = trim_php(body);
                if !raw.is_empty() {
                    let ct_text =
                        std::str::from_utf8(ct).map_err(|_| ParamError::AmbiguousContentType)?;
                    let bitrix_ct = ct_text.split(';').next().unwrap_or("");
                    if bitrix_ct == "application/json" {
                        match json_decode(raw)? {
                            Value::Array(a) => {
                                vars += a.leaf_count();
                                params.replace_with(a);
                            }
                            _ => return Err(ParamError::NotAnObject),
                        }
                        encoding = BodyEncoding::Json;
                    } else if bitrix_ct.to_ascii_lowercase().contains("json") {
                        // `Application/JSON`, `application/json ;...`: the portal's exact compare
                        // would read these as a form; the client meant JSON.
                        return Err(ParamError::AmbiguousContentType);
                    } else if matches!(raw.first(), Some(b'{' | b'[')) {
                        return Err(ParamError::JsonAsForm);
                    } else if let Some(form) = raw_form(body)? {
                        vars += form.vars;
                        params.replace_with(form.params);
                        encoding = BodyEncoding::RawForm;
                    }
                }
            }
        }
    }
    if vars > MAX_WATCHED_VARS {
        return Err(ParamError::TooManyVars(vars));
    }
    Ok(RequestParams {
        params,
        body: encoding,
    })
}

/// The raw-body reading of §2.1: the trimmed body through `parse_str`. A raw NUL is refused: PHP
/// would silently stop reading there.
fn raw_form(body: &[u8]) -> Result<Option<Parsed>, ParamError> {
    let raw = trim_php(body);
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.contains(&0) {
        return Err(ParamError::RawNul);
    }
    let form = parse_str(raw)?;
    if form.too_deep {
        return Err(ParamError::TooDeep);
    }
    Ok(Some(form))
}

/// [`request_params`] for a request's headers: the one `Content-Type` it carries (two are
/// refused, since servers in front of PHP join or pick them differently).
pub fn request_params_of(
    method: &Method,
    headers: &http::HeaderMap,
    query: &[u8],
    body: &[u8],
) -> Result<RequestParams, ParamError> {
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let content_type = types.next().map(|v| v.as_bytes());
    if types.next().is_some() {
        return Err(ParamError::DuplicateContentType);
    }
    request_params(method, content_type, query, body)
}

/// What the portal itself does with a request, with none of the proxy's refusals: duplicate JSON
/// keys keep the last value, invalid JSON is an empty body, invalid UTF-8 is replaced, variables
/// past PHP's cap are dropped. The portal simulator reads requests with this, so that a spelling
/// the proxy mis-reads changes the simulator's state the way it would change a real portal's.
pub fn portal_request_params(
    method: &Method,
    content_type: Option<&[u8]>,
    query: &[u8],
    body: &[u8],
) -> Array {
    let mut params = parse_str_lossy(query);
    if method != Method::POST {
        return params;
    }
    let ct = content_type.unwrap_or_default();
    if php_content_type(ct) == "application/x-www-form-urlencoded" {
        let form = post_form_lossy(body);
        if !form.is_empty() {
            params.replace_with(form);
            return params;
        }
    }
    let raw = trim_php(body);
    if raw.is_empty() {
        return params;
    }
    let bitrix_ct = String::from_utf8_lossy(ct);
    if bitrix_ct.split(';').next() == Some("application/json") {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(raw)
        {
            if let Value::Array(a) = Value::from_json(&serde_json::Value::Object(map)) {
                params.replace_with(a);
            }
        } else if let Ok(v @ serde_json::Value::Array(_)) =
            serde_json::from_slice::<serde_json::Value>(raw)
        {
            if let Value::Array(a) = Value::from_json(&v) {
                params.replace_with(a);
            }
        }
        return params;
    }
    params.replace_with(parse_str_lossy(raw));
    params
}

/// `parse_str` that, like PHP, accepts any bytes (invalid UTF-8 is replaced with U+FFFD).
pub fn parse_str_lossy(input: &[u8]) -> Array {
    register_lossy(
        c_string(input)
            .split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .take(PHP_MAX_INPUT_VARS),
    )
}

/// How PHP's SAPI classifies a POST content type: lower-cased, cut at the first `;`, `,` or space.
fn php_content_type(ct: &[u8]) -> String {
    let end = ct
        .iter()
        .position(|b| matches!(b, b';' | b',' | b' '))
        .unwrap_or(ct.len());
    String::from_utf8_lossy(&ct[..end]).to_ascii_lowercase()
}

/// PHP's `trim()` default character set.
fn trim_php(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0 | 0x0B);
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> serde_json::Value {
        Value::Array(parse_str(s.as_bytes()).expect("decodes").params).to_json()
    }

    /// Each row was checked against PHP 8.2's `parse_str` (docs/protocol.md, Form decoding and a
    /// local `php -r` run).
    #[test]
    fn parse_str_matches_php() {
        use serde_json::json;
        let cases = [
            (
                "fields[typeIds][]=14&fields[typeIds][]=15",
                json!({"fields":{"typeIds":["14","15"]}}),
            ),
            (
                "fields[typeIds][1]=14&fields[typeIds][0]=15",
                json!({"fields":{"typeIds":{"1":"14","0":"15"}}}),
            ),
            ("fields[typeIds][]=", json!({"fields":{"typeIds":[""]}})),
            ("fields[typeIds]=", json!({"fields":{"typeIds":""}})),
            (
                "fields[typeIds][]=14&fields[typeIds]=",
                json!({"fields":{"typeIds":""}}),
            ),
            ("id=5&id=6", json!({"id":"6"})),
            (
                "fields%5BtypeIds%5D%5B0%5D=14",
                json!({"fields":{"typeIds":["14"]}}),
            ),
            ("fields.title=x", json!({"fields_title":"x"})),
            ("fields title=x", json!({"fields_title":"x"})),
            ("fields[typeIds=1", json!({"fields_typeIds":"1"})),
            ("a[b.c=1", json!({"a_b_c":"1"})),
            ("a.b[c.d]=1", json!({"a_b":{"c.d":"1"}})),
            ("a[b]x=1", json!({"a":{"b":"1"}})),
            ("a[b][c=1", json!({"a":{"b":"1"}})),
            (" a=1", json!({"a":"1"})),
            ("a%00b=1", json!({"a":"1"})),
            ("a[=1", json!({"a_":"1"})),
            ("a]=1", json!({"a]":"1"})),
            ("a[]b]=1", json!({"a":["1"]})),
            ("a[[b]]=1", json!({"a":{"[b":"1"}})),
            ("[a]=1", json!([])),
            ("a[ b]=1", json!({"a":{" b":"1"}})),
            ("a[ ]=1", json!({"a":["1"]})),
            ("a[%09]=1", json!({"a":["1"]})),
            ("a[  ]=1", json!({"a":{"  ":"1"}})),
            ("a[ [x]=1", json!({"a":{" [x":"1"}})),
            ("a[ ", json!({"a__":""})),
            ("b[x][ ]=1", json!({"b":{"x":["1"]}})),
            ("a=1&a[]=2", json!({"a":["2"]})),
            ("a[x]=1&a=2", json!({"a":"2"})),
            ("a[-5]=x&a[]=y", json!({"a":{"-5":"x","-4":"y"}})),
            ("a[05]=1", json!({"a":{"05":"1"}})),
            ("x[]=1&x[]=2&x[1]=3", json!({"x":["1","3"]})),
            (
                "CMD[x]=1&cmd[y]=2",
                json!({"CMD":{"x":"1"},"cmd":{"y":"2"}}),
            ),
            ("a=%zz&b=%4", json!({"a":"%zz","b":"%4"})),
            ("a=x+y%2B", json!({"a":"x y+"})),
            ("&&a&b=", json!({"a":"","b":""})),
        ];
        for (input, want) in cases {
            assert_eq!(q(input), want, "parse_str({input:?})");
        }
    }

    #[test]
    fn parse_str_nesting_past_the_limit_drops_the_variable() {
        let deep = format!("keep=1&a{}=1", "[x]".repeat(PHP_MAX_NESTING + 1));
        assert_eq!(q(&deep), serde_json::json!({"keep":"1"}));
        let ok = format!("a{}=1", "[x]".repeat(PHP_MAX_NESTING));
        assert!(q(&ok)["a"].is_object());
    }

    #[test]
    fn parse_str_counts_and_caps_variables() {
        let many: String = (0..1005).map(|i| format!("v{i}=1&")).collect();
        let parsed = parse_str(many.as_bytes()).expect("decodes");
        assert_eq!(parsed.vars, 1005);
        assert_eq!(parsed.params.len(), PHP_MAX_INPUT_VARS);
    }

    #[test]
    fn json_decode_refuses_duplicates_and_depth() {
        assert_eq!(
            json_decode(br#"{"fields":{"typeIds":[1],"typeIds":[]}}"#),
            Err(ParamError::DuplicateKey("typeIds".into()))
        );
        // "5" and 5 are one key to PHP.
        assert!(matches!(
            json_decode(br#"{"5":1,"5":2}"#),
            Err(ParamError::DuplicateKey(_))
        ));
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        assert_eq!(json_decode(deep.as_bytes()), Err(ParamError::TooDeep));
        assert!(matches!(
            json_decode(b"{\"a\":"),
            Err(ParamError::InvalidJson(_))
        ));
        assert!(matches!(
            json_decode(b"{} x"),
            Err(ParamError::InvalidJson(_))
        ));
    }

    #[test]
    fn json_numbers_follow_php() {
        let v = json_decode(br#"[1, -2, 1.5, 18446744073709551615, 1e2]"#).expect("decodes");
        let a = v.as_array().expect("array");
        let vals: Vec<&Value> = a.iter().map(|(_, v)| v).collect();
        assert_eq!(vals[0], &Value::Int(1));
        assert_eq!(vals[1], &Value::Int(-2));
        assert_eq!(vals[2], &Value::Float(1.5));
        assert!(matches!(vals[3], Value::Float(_)));
        assert_eq!(vals[4], &Value::Float(100.0));
    }

    fn params(
        method: Method,
        ct: Option<&str>,
        query: &str,
        body: &str,
    ) -> Result<serde_json::Value, ParamError> {
        request_params(
            &method,
            ct.map(str::as_bytes),
            query.as_bytes(),
            body.as_bytes(),
        )
        .map(|p| Value::Array(p.params).to_json())
    }

    #[test]
    fn body_overrides_query_shallowly() {
        use serde_json::json;
        let got = params(
            Method::POST,
            Some("application/json; charset=utf-8"),
            "id=1&fields[title]=q&extra=1",
            r#"{"id":5,"fields":{"typeIds":[3]}}"#,
        );
        assert_eq!(
            got,
            Ok(json!({"id":5,"fields":{"typeIds":[3]},"extra":"1"}))
        );
        let form = params(
            Method::POST,
            Some("Application/X-WWW-Form-Urlencoded"),
            "id=1&a=2",
            "id=7",
        );
        assert_eq!(form, Ok(json!({"id":"7","a":"2"})));
    }

    #[test]
    fn only_post_reads_a_body() {
        use serde_json::json;
        assert_eq!(params(Method::GET, None, "id=5", ""), Ok(json!({"id":"5"})));
        assert_eq!(
            params(Method::PUT, Some("application/json"), "id=5", "{}"),
            Err(ParamError::BodyIgnored)
        );
    }

    #[test]
    fn content_type_confusion_is_refused() {
        let body = r#"{"id":5,"fields":{"typeIds":[1]}}"#;
        assert_eq!(
            params(Method::POST, Some("Application/JSON"), "", body),
            Err(ParamError::AmbiguousContentType)
        );
        assert_eq!(
            params(Method::POST, Some("text/plain"), "", body),
            Err(ParamError::JsonAsForm)
        );
        assert_eq!(
            params(Method::POST, None, "", body),
            Err(ParamError::JsonAsForm)
        );
        assert!(matches!(
            params(Method::POST, Some("application/json"), "", "{bad"),
            Err(ParamError::InvalidJson(_))
        ));
        assert_eq!(
            params(Method::POST, Some("application/json"), "", "5"),
            Err(ParamError::NotAnObject)
        );
        assert_eq!(
            params(
                Method::POST,
                Some("multipart/form-data; boundary=x"),
                "",
                "--x"
            ),
            Err(ParamError::Multipart)
        );
    }

    #[test]
    fn raw_body_without_form_type_is_parse_str_after_trim() {
        use serde_json::json;
        assert_eq!(
            params(
                Method::POST,
                Some("text/plain"),
                "",
                "  id=5&fields[title]=a\n"
            ),
            Ok(json!({"id":"5","fields":{"title":"a"}}))
        );
    }

    #[test]
    fn too_many_vars_is_refused() {
        let many: String = (0..=MAX_WATCHED_VARS).map(|i| format!("v{i}=1&")).collect();
        assert!(matches!(
            params(Method::GET, None, &many, ""),
            Err(ParamError::TooManyVars(_))
        ));
    }

    proptest! {
        /// Any bytes at all: the decoder never panics, and never yields more variables than PHP
        /// keeps.
        #[test]
        fn parse_str_total(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(p) = parse_str(&input) {
                prop_assert!(p.params.len() <= PHP_MAX_INPUT_VARS);
            }
        }

        /// Names built from the characters that matter to PHP's bracket parser never panic, and a
        /// plain `name=value` pair always round-trips.
        #[test]
        fn parse_str_brackets(name in "[a-c\\[\\]. _%0-9]{0,12}", value in "[a-z0-9%+]{0,8}") {
            let input = format!("{name}={value}");
            let _ = parse_str(input.as_bytes());
        }

        #[test]
        fn parse_str_plain_pairs_round_trip(name in "[a-z][a-z0-9_]{0,8}", value in "[ -~]{0,16}") {
            let enc: String = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string();
            let p = parse_str(format!("{name}={enc}").as_bytes()).expect("ascii decodes");
            prop_assert_eq!(p.params.get_str(&name), Some(&Value::Str(value.clone())));
        }

        #[test]
        fn json_decode_total(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = json_decode(&input);
        }

        #[test]
        fn json_decode_agrees_with_serde_on_valid_json(v in json_strategy()) {
            let text = serde_json::to_string(&v).expect("serialises");
            let ours = json_decode(text.as_bytes());
            // serde_json::Value keeps the last duplicate; the generator makes none.
            prop_assert!(ours.is_ok(), "{text}");
        }
    }

    fn json_strategy() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z]{0,6}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
