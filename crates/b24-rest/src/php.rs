//! The PHP value model the portal's parameter readers produce.
//!
//! The portal is a PHP application: whatever arrives as a query string, a form body or JSON ends up
//! as PHP arrays of strings (or, from JSON, numbers, booleans and null). Reproducing *that* value,
//! rather than a Rust-flavoured reading of the bytes, is what lets the proxy evaluate exactly what
//! the portal will execute. This file holds only the data model and the PHP casts the portal
//! applies to it; the decoders live in `params.rs`.

use std::fmt;

/// A PHP array key. PHP turns a string key that is a canonical decimal integer into an integer
/// key (`"5"` → `5`, but `"05"`, `"+5"`, `" 5"` and `"-0"` stay strings), so two spellings that
/// PHP merges must be one key here too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    /// Builds a key the way `zend_symtable_update` does (`ZEND_HANDLE_NUMERIC_STR`).
    pub fn from_php_string(s: &str) -> Key {
        match canonical_int(s) {
            Some(n) => Key::Int(n),
            None => Key::Str(s.to_owned()),
        }
    }

    /// The key as PHP would print it.
    pub fn as_text(&self) -> String {
        match self {
            Key::Int(n) => n.to_string(),
            Key::Str(s) => s.clone(),
        }
    }

    /// True when the key, as text, equals `name` exactly.
    pub fn is(&self, name: &str) -> bool {
        match self {
            Key::Str(s) => s == name,
            Key::Int(n) => canonical_int(name) == Some(*n),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(n) => write!(f, "{n}"),
            Key::Str(s) => f.write_str(s),
        }
    }
}

/// `"123"` / `"-7"` → the integer; anything PHP would keep as a string key → `None`.
fn canonical_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    if s == "-0" {
        return None;
    }
    s.parse::<i64>().ok()
}

/// An ordered PHP array: insertion order is kept, an update keeps the key's first position,
/// and `[]` appends at one past the largest integer key ever set (0 when there is none; after a
/// lone `-5` it is `-4`, as the PHP 8.2 builds checked here do).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Array {
    entries: Vec<(Key, Value)>,
    next_index: Option<i64>,
}

impl Array {
    pub fn new() -> Array {
        Array::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Looks a key up by its text, with PHP's numeric-key folding.
    pub fn get_str(&self, name: &str) -> Option<&Value> {
        self.get(&Key::from_php_string(name))
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Value> {
        self.entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// `$a[$key] = $value`.
    pub fn set(&mut self, key: Key, value: Value) {
        if let Key::Int(n) = key {
            if self.next_index.is_none_or(|next| n >= next) {
                self.next_index = Some(n.saturating_add(1));
            }
        }
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.entries.push((key, value)),
        }
    }

    /// `$a[] = $value`. Returns the key used.
    pub fn push(&mut self, value: Value) -> Key {
        let key = Key::Int(self.next_index.unwrap_or(0));
        self.set(key.clone(), value);
        key
    }

    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let pos = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(pos).1)
    }

    /// `array_replace($self, $other)` at the top level only, which is how the portal lets body
    /// parameters override query parameters.
    pub fn replace_with(&mut self, other: Array) {
        for (k, v) in other.entries {
            self.set(k, v);
        }
    }

    /// True when the keys are exactly 0..n-1 in order: PHP's `json_encode` prints such an array
    /// as a JSON list, anything else as an object.
    pub fn is_list(&self) -> bool {
        self.entries
            .iter()
            .enumerate()
            .all(|(i, (k, _))| *k == Key::Int(i as i64))
    }

    /// The same keys and values in the same order, at every level. Unlike `==` this ignores
    /// where the next `[]` would append, which no reader of a finished array can observe.
    pub fn same_entries(&self, other: &Array) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((ka, va), (kb, vb))| {
                    ka == kb
                        && match (va, vb) {
                            (Value::Array(a), Value::Array(b)) => a.same_entries(b),
                            (a, b) => a == b,
                        }
                })
    }

    /// The array as a JSON object, whatever its keys: the top level of a JSON request body the
    /// proxy builds. `json_decode` gives back the same keys (a canonical integer key text
    /// becomes an integer key again) in the same order.
    pub fn to_json_object(&self) -> serde_json::Map<String, serde_json::Value> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_text(), v.to_json()))
            .collect()
    }

    /// The number of leaf values, for the `max_input_vars`-style caps.
    pub fn leaf_count(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, v)| match v {
                Value::Array(a) => a.leaf_count().max(1),
                _ => 1,
            })
            .sum()
    }
}

impl FromIterator<(Key, Value)> for Array {
    fn from_iter<T: IntoIterator<Item = (Key, Value)>>(iter: T) -> Self {
        let mut a = Array::new();
        for (k, v) in iter {
            a.set(k, v);
        }
        a
    }
}

/// A PHP value as the portal sees a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Array),
}

impl Value {
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// PHP's `(int)` cast, as PHP 8 on a 64-bit build performs it. `None` where the result depends
    /// on the PHP version or platform (out-of-range floats and float strings, NaN): the caller
    /// refuses such input instead of guessing.
    pub fn php_int(&self) -> Option<i64> {
        match self {
            Value::Null => Some(0),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Int(n) => Some(*n),
            Value::Float(f) => float_to_int(*f),
            Value::Str(s) => string_to_int(s),
            Value::Array(a) => Some(i64::from(!a.is_empty())),
        }
    }

    /// What `json_decode($text, true)` makes of a parsed JSON value (last duplicate wins, numeric
    /// string keys become integer keys, integers past `i64` become floats).
    pub fn from_json(v: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => {
                let mut a = Array::new();
                for item in items {
                    a.push(Value::from_json(item));
                }
                Value::Array(a)
            }
            J::Object(map) => Value::Array(
                map.iter()
                    .map(|(k, v)| (Key::from_php_string(k), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// PHP's `(bool)` cast: `""`, `"0"`, `0`, `0.0`, `null` and `[]` are false; everything else
    /// (including the string `"false"`) is true.
    pub fn php_bool(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !(s.is_empty() || s == "0"),
            Value::Array(a) => !a.is_empty(),
        }
    }

    /// Converts to JSON the way PHP's `json_encode` prints it (lists for 0..n-1 keys).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(n) => J::from(*n),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Array(a) if a.is_list() => {
                J::Array(a.iter().map(|(_, v)| v.to_json()).collect())
            }
            Value::Array(a) => {
                J::Object(a.iter().map(|(k, v)| (k.as_text(), v.to_json())).collect())
            }
        }
    }
}

/// Floats in this range convert exactly on every PHP version; outside it PHP 7 and PHP 8 differ.
fn float_to_int(f: f64) -> Option<i64> {
    if f.is_finite() && f.abs() < 9.0e15 {
        Some(f.trunc() as i64)
    } else {
        None
    }
}

/// PHP 8 `(int)"..."` (`is_numeric_string` with errors allowed): leading whitespace skipped, then
/// the longest prefix of the form `[+-]?(digits[.digits]|.digits)[e[+-]digits]`; no prefix gives 0.
/// A prefix with a fraction or exponent is read as a float and truncated (`"1e3"` → 1000,
/// `"14.9"` → 14); hex, octal and binary spellings are not numeric to PHP (`"0x1A"` → 0). An
/// integer that does not fit saturates in PHP; that is reported as `None` so callers refuse it.
fn string_to_int(s: &str) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0B', '\x0C']);
    let b = t.as_bytes();
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_end = digits_from(end);
    let has_int = int_end > end;
    end = int_end;
    let mut is_float = false;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits_from(end + 1);
        if has_int || frac_end > end + 1 {
            is_float = true;
            end = frac_end;
        }
    }
    if !has_int && !is_float {
        return Some(0);
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut k = end + 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let exp_end = digits_from(k);
        if exp_end > k {
            is_float = true;
            end = exp_end;
        }
    }
    let prefix = &t[..end];
    if is_float {
        prefix.parse::<f64>().ok().and_then(float_to_int)
    } else {
        prefix.parse::<i64>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    #[test]
    fn numeric_string_keys_fold_to_integers() {
        assert_eq!(Key::from_php_string("5"), Key::Int(5));
        assert_eq!(Key::from_php_string("-5"), Key::Int(-5));
        assert_eq!(Key::from_php_string("05"), Key::Str("05".into()));
        assert_eq!(Key::from_php_string("+5"), Key::Str("+5".into()));
        assert_eq!(Key::from_php_string(" 5"), Key::Str(" 5".into()));
        assert_eq!(Key::from_php_string("-0"), Key::Str("-0".into()));
        assert_eq!(
            Key::from_php_string("99999999999999999999"),
            Key::Str("99999999999999999999".into())
        );
    }

    #[test]
    fn int_cast_matches_php8() {
        let cases: &[(&str, Option<i64>)] = &[
            ("14", Some(14)),
            (" 14", Some(14)),
            ("14,15", Some(14)),
            ("14abc", Some(14)),
            ("14.9", Some(14)),
            ("1e3", Some(1000)),
            ("1e", Some(1)),
            ("0x1A", Some(0)),
            ("abc", Some(0)),
            ("", Some(0)),
            ("-5", Some(-5)),
            ("+5", Some(5)),
            (".5", Some(0)),
            ("5.", Some(5)),
            ("99999999999999999999", None),
        ];
        for (input, want) in cases {
            assert_eq!(s(input).php_int(), *want, "(int)\"{input}\"");
        }
        assert_eq!(Value::Float(14.9).php_int(), Some(14));
        assert_eq!(Value::Float(f64::NAN).php_int(), None);
        assert_eq!(Value::Bool(true).php_int(), Some(1));
        assert_eq!(Value::Null.php_int(), Some(0));
        assert_eq!(Value::Array(Array::new()).php_int(), Some(0));
        let mut one = Array::new();
        one.push(Value::Int(5));
        assert_eq!(Value::Array(one).php_int(), Some(1));
    }

    #[test]
    fn append_follows_the_largest_integer_key() {
        let mut a = Array::new();
        a.set(Key::Int(5), s("x"));
        assert_eq!(a.push(s("y")), Key::Int(6));
        let mut b = Array::new();
        b.set(Key::Int(-5), s("x"));
        assert_eq!(b.push(s("y")), Key::Int(-4));
    }

    #[test]
    fn update_keeps_first_position() {
        let mut a = Array::new();
        a.set(Key::Str("a".into()), s("1"));
        a.set(Key::Str("b".into()), s("2"));
        a.set(Key::Str("a".into()), s("3"));
        let keys: Vec<String> = a.iter().map(|(k, _)| k.as_text()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(a.get_str("a"), Some(&s("3")));
    }

    #[test]
    fn json_shape_follows_php() {
        let mut list = Array::new();
        list.push(s("a"));
        list.push(s("b"));
        assert_eq!(Value::Array(list).to_json(), serde_json::json!(["a", "b"]));
        let mut map = Array::new();
        map.set(Key::Int(1), s("a"));
        map.set(Key::Int(0), s("b"));
        assert_eq!(
            Value::Array(map).to_json(),
            serde_json::json!({"1": "a", "0": "b"})
        );
    }
}
