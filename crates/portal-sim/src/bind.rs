//! The PHP side of calling a controller action: how the portal's binder matches request
//! parameters to `int $id` / `array $fields` (docs/protocol.md, Controller binding), and the PHP
//! casts the methods use (`(string)`, `(bool)`, `is_numeric`).
//!
//! Top-level names are matched case-sensitively. Binder failures are the engine's error code
//! `100` (an integer in the JSON) with HTTP 400, worded as the portal words them.

use super::methods::MethodError;
use b24_rest::php::{Array, Value};

/// `int $id` (required): any PHP numeric value, coerced; booleans, arrays and non-numeric strings
/// are refused.
pub fn int_param(params: &Array, name: &str) -> Result<i64, MethodError> {
    match params.get_str(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(v) => coerce_int(v).ok_or_else(|| invalid(name, v, "int")),
    }
}

/// `array $name = []` / `array $name = null`: an absent or null value gives `None`, a non-array
/// is refused.
pub fn opt_array_param(params: &Array, name: &str) -> Result<Option<Array>, MethodError> {
    match params.get_str(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.clone())),
        Some(v) => Err(invalid(name, v, "array")),
    }
}

/// The coercion of a PHP value to an `int` parameter in coercive typing mode.
pub fn coerce_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::Float(_) => v.php_int(),
        Value::Str(s) if is_numeric(s) => v.php_int(),
        _ => None,
    }
}

/// PHP 8 `is_numeric`: optional surrounding whitespace, a sign, digits with an optional
/// fraction, and an optional exponent. Hex, octal and binary are not numeric.
pub fn is_numeric(s: &str) -> bool {
    let ws: &[char] = &[' ', '\t', '\n', '\r', '\x0B', '\x0C'];
    let t = s.trim_start_matches(ws).trim_end_matches(ws);
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i, i > start)
    };
    let (after_int, has_int) = digits(i);
    i = after_int;
    let mut has_frac = false;
    if b.get(i) == Some(&b'.') {
        let (after_frac, f) = digits(i + 1);
        has_frac = f;
        i = after_frac;
    }
    if !has_int && !has_frac {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut k = i + 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let (after_exp, has_exp) = digits(k);
        if !has_exp {
            return false;
        }
        i = after_exp;
    }
    i == b.len()
}

/// PHP `(string)` / `strval`.
pub fn php_string(v: &Value) -> String {
    match v {
        Value::Null | Value::Bool(false) => String::new(),
        Value::Bool(true) => "1".to_owned(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => php_float_string(*f),
        Value::Str(s) => s.clone(),
        Value::Array(_) => "Array".to_owned(),
    }
}

/// PHP 8 float-to-string (`serialize_precision = -1`): the shortest round-trip form, with
/// integral values printed without a fraction.
fn php_float_string(f: f64) -> String {
    if f.is_nan() {
        return "NAN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "INF" } else { "-INF" }.to_owned();
    }
    if f.fract() == 0.0 && f.abs() < 1e15 {
        return format!("{}", f as i64);
    }
    format!("{f}")
}

fn missing(name: &str) -> MethodError {
    MethodError::binder(format!("Could not find value for parameter {{{name}}}"))
}

fn invalid(name: &str, v: &Value, ty: &str) -> MethodError {
    let shown = match v {
        Value::Array(_) => "Array".to_owned(),
        other => php_string(other),
    };
    MethodError::binder(format!(
        "Invalid value {{{shown}}} to match with parameter {{{name}}}. Should be value of type {ty}."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_rest::params::parse_str_lossy;

    #[test]
    fn id_binds_like_php() {
        for (q, want) in [
            ("id=5", Some(5)),
            ("id=+5", Some(5)),
            ("id=%205", Some(5)),
            ("id=5%20", Some(5)),
            ("id=05", Some(5)),
            ("id=5.9", Some(5)),
            ("id=1e1", Some(10)),
            ("id=-3", Some(-3)),
            ("id=abc", None),
            ("id=5abc", None),
            ("id=0x1A", None),
            ("id=", None),
            ("id[]=5", None),
            ("ID=5", None),
        ] {
            let p = parse_str_lossy(q.as_bytes());
            assert_eq!(int_param(&p, "id").ok(), want, "{q}");
        }
        let json = Value::from_json(&serde_json::json!({"id": true, "f": 7.9}));
        let a = json.as_array().cloned().unwrap_or_default();
        assert!(int_param(&a, "id").is_err());
        assert_eq!(int_param(&a, "f").ok(), Some(7));
    }

    #[test]
    fn binder_errors_are_worded_as_the_portal() {
        let p = parse_str_lossy(b"id=abc&fields=x");
        let e = int_param(&p, "nope").err().map(|e| e.description);
        assert_eq!(
            e.as_deref(),
            Some("Could not find value for parameter {nope}")
        );
        let e = int_param(&p, "id").err().map(|e| e.description);
        assert_eq!(
            e.as_deref(),
            Some("Invalid value {abc} to match with parameter {id}. Should be value of type int.")
        );
        assert!(opt_array_param(&p, "fields").is_err());
        assert_eq!(opt_array_param(&p, "order").ok(), Some(None));
    }

    #[test]
    fn casts_follow_php() {
        assert!(Value::Str("false".into()).php_bool());
        assert!(Value::Str("N".into()).php_bool());
        assert!(!Value::Str("0".into()).php_bool());
        assert!(!Value::Str(String::new()).php_bool());
        assert!(!Value::Int(0).php_bool());
        assert_eq!(php_string(&Value::Float(1.0)), "1");
        assert_eq!(php_string(&Value::Float(1.5)), "1.5");
        assert_eq!(php_string(&Value::Bool(true)), "1");
        assert_eq!(php_string(&Value::Array(Array::new())), "Array");
    }
}
