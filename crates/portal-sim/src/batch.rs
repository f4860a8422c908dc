//! `batch` (docs/protocol.md, Batch): read `cmd`/`halt`, run each command string, substitute
//! back-references to earlier commands' outputs, and build the five-map envelope with PHP's JSON
//! shapes.
//!
//! Reading: top-level names are upper-cased first (a later spelling wins); `cmd` may be a map or
//! a list; `halt` is a PHP bool cast (`"false"` is true). Only the first 50 entries are
//! considered; later ones get `ERROR_BATCH_LENGTH_EXCEEDED` in `result_error`; non-string entries
//! are skipped but count. Each command is cut at `#`, split at the first `?`, and its query
//! `parse_str`'d. The method runs lower-cased first, then (only on `ERROR_METHOD_NOT_FOUND`) as
//! spelled. A nested `batch` gets `ERROR_BATCH_METHOD_NOT_ALLOWED` (the docs say so since rest
//! 24.0.0). Credentials in a command are dropped: commands run as the batch's caller.
//!
//! Executing a command is the caller's business (`dispatch.rs` passes a closure), so that the
//! state lock is taken per command, as the portal commits per command: there is no transaction.

use super::methods::{MethodError, Outcome};
use b24_rest::envelope::time_object;
use b24_rest::params::parse_str_lossy;
use b24_rest::php::{Array, Key, Value};
use std::time::SystemTime;

/// `BATCH_MAX_LENGTH`.
pub const MAX_COMMANDS: usize = 50;

/// Parameters a command may carry that the batch's own credential replaces.
const AUTH_PARAMS: [&str; 4] = ["auth", "access_token", "aplogin", "ap"];

/// The outputs of the commands run so far, keyed by command key: what `$result[..]`,
/// `$error[..]`, `$total[..]`, `$next[..]` and `$time[..]` refer to.
#[derive(Debug, Default)]
struct Outputs {
    result: Array,
    error: Array,
    total: Array,
    next: Array,
    time: Array,
}

impl Outputs {
    /// The table a root name refers to. The portal matches the name case-insensitively but then
    /// indexes its table with the spelling as written, so only the lower-case spelling finds it.
    fn root(&self, name: &str) -> Option<&Array> {
        match name {
            "result" => Some(&self.result),
            "error" => Some(&self.error),
            "total" => Some(&self.total),
            "next" => Some(&self.next),
            "time" => Some(&self.time),
            _ => None,
        }
    }
}

const ROOTS: [&str; 5] = ["result", "error", "total", "next", "time"];

/// Runs a batch. `exec(method, params, start)` executes one (non-batch) command.
pub fn run(
    params: &Array,
    mut exec: impl FnMut(&str, &Array, Option<&Value>) -> Outcome,
) -> serde_json::Value {
    let upper: Array = params
        .iter()
        .map(|(k, v)| {
            (
                Key::from_php_string(&k.as_text().to_ascii_uppercase()),
                v.clone(),
            )
        })
        .collect();
    let halt = upper.get_str("HALT").is_some_and(Value::php_bool);
    let mut out = Outputs::default();
    if let Some(Value::Array(cmd)) = upper.get_str("CMD") {
        for (i, (key, entry)) in cmd.iter().enumerate() {
            if i >= MAX_COMMANDS {
                let e = MethodError::new(
                    400,
                    "ERROR_BATCH_LENGTH_EXCEEDED",
                    "Max batch length exceeded",
                );
                out.error.set(key.clone(), Value::from_json(&e.to_json()));
                continue;
            }
            let Value::Str(command) = entry else {
                continue;
            };
            let started = SystemTime::now();
            let outcome = run_command(command, &out, &mut exec);
            out.time
                .set(key.clone(), Value::from_json(&time_object(started)));
            match outcome {
                Ok(ok) => {
                    out.result.set(key.clone(), Value::from_json(&ok.result));
                    if let Some(t) = ok.total {
                        out.total.set(key.clone(), Value::Int(t));
                    }
                    if let Some(n) = ok.next {
                        out.next.set(key.clone(), Value::Int(n));
                    }
                }
                Err(e) => {
                    out.error.set(key.clone(), Value::from_json(&e.to_json()));
                    if halt {
                        break;
                    }
                }
            }
        }
    }
    serde_json::json!({
        "result": Value::Array(out.result).to_json(),
        "result_error": Value::Array(out.error).to_json(),
        "result_total": Value::Array(out.total).to_json(),
        "result_next": Value::Array(out.next).to_json(),
        "result_time": Value::Array(out.time).to_json(),
    })
}

fn run_command(
    command: &str,
    out: &Outputs,
    exec: &mut impl FnMut(&str, &Array, Option<&Value>) -> Outcome,
) -> Outcome {
    let (method, query) = split_command(command);
    let mut params = resolve_array(&parse_str_lossy(query.as_bytes()), out);
    for name in AUTH_PARAMS {
        params.remove(&Key::Str(name.to_owned()));
    }
    let start = params.remove(&Key::Str("start".to_owned()));
    let lower = method.to_lowercase();
    if lower == "batch" {
        return Err(MethodError::new(
            405,
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "Method is not allowed for batch usage",
        ));
    }
    match exec(&lower, &params, start.as_ref()) {
        Err(e) if e.is_method_not_found() && lower != method => {
            exec(method, &params, start.as_ref())
        }
        other => other,
    }
}

/// PHP `parse_url` on a command: the fragment (from the first `#`) is dropped, the path (method)
/// ends at the first `?`, the rest is the query.
pub fn split_command(command: &str) -> (&str, &str) {
    let no_fragment = command.split('#').next().unwrap_or("");
    no_fragment.split_once('?').unwrap_or((no_fragment, ""))
}

fn resolve_array(arr: &Array, out: &Outputs) -> Array {
    arr.iter()
        .map(|(k, v)| {
            let key = match k {
                Key::Str(s) if s.contains('$') => match resolve_text(s, out) {
                    Value::Str(r) => Key::from_php_string(&r),
                    Value::Int(n) => Key::Int(n),
                    _ => k.clone(),
                },
                _ => k.clone(),
            };
            let value = match v {
                Value::Array(a) => Value::Array(resolve_array(a, out)),
                Value::Str(s) if s.contains('$') => resolve_text(s, out),
                other => other.clone(),
            };
            (key, value)
        })
        .collect()
}

/// One `$root[k1][k2]...` occurrence in a value.
#[derive(Debug, PartialEq)]
struct Reference<'a> {
    start: usize,
    end: usize,
    root: &'a str,
    path: Vec<&'a str>,
}

/// Finds every back-reference: `$` + a root name (any case) + one or more `[non-empty]` steps.
fn find_references(s: &str) -> Vec<Reference<'_>> {
    let mut refs = Vec::new();
    let mut i = 0;
    while let Some(off) = s[i..].find('$') {
        let start = i + off;
        i = start + 1;
        let rest = &s[start + 1..];
        let Some(root) = ROOTS.iter().find(|r| {
            rest.get(..r.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(r))
        }) else {
            continue;
        };
        let root_text = &s[start + 1..start + 1 + root.len()];
        let mut pos = start + 1 + root.len();
        let mut path = Vec::new();
        while s[pos..].starts_with('[') {
            let Some(close) = s[pos + 1..].find(']') else {
                break;
            };
            if close == 0 {
                break;
            }
            path.push(&s[pos + 1..pos + 1 + close]);
            pos += close + 2;
        }
        if path.is_empty() {
            continue;
        }
        refs.push(Reference {
            start,
            end: pos,
            root: root_text,
            path,
        });
        i = pos;
    }
    refs
}

/// Walks a reference: a missing step stops the walk and yields the deepest part found; a root
/// spelled in another case resolves to null.
fn resolve(r: &Reference<'_>, out: &Outputs) -> Value {
    let Some(table) = out.root(r.root) else {
        return Value::Null;
    };
    let mut cur = Value::Array(table.clone());
    for step in &r.path {
        let next = match &cur {
            Value::Array(a) => a.get_str(step).filter(|v| **v != Value::Null).cloned(),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => break,
        }
    }
    cur
}

/// A value with references: a value that is exactly one reference becomes the referenced
/// structure; references inside longer text are replaced only where they resolve to a string.
fn resolve_text(s: &str, out: &Outputs) -> Value {
    let refs = find_references(s);
    if let [only] = refs.as_slice() {
        if only.start == 0 && only.end == s.len() {
            return resolve(only, out);
        }
    }
    let mut text = String::with_capacity(s.len());
    let mut last = 0;
    for r in &refs {
        text.push_str(&s[last..r.start]);
        match resolve(r, out) {
            Value::Str(v) => text.push_str(&v),
            _ => text.push_str(&s[r.start..r.end]),
        }
        last = r.end;
    }
    text.push_str(&s[last..]);
    Value::Str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::MethodOk;
    use serde_json::json;

    fn outputs() -> Outputs {
        let mut out = Outputs::default();
        let lst = json!({"automatedSolutions": [{"id": 238, "title": "HR", "typeIds": [14, 158]}, {"id": 1, "title": "E", "typeIds": []}]});
        out.result
            .set(Key::Str("lst".into()), Value::from_json(&lst));
        out.result
            .set(Key::Str("name".into()), Value::Str("Sales".into()));
        out
    }

    fn r(s: &str) -> serde_json::Value {
        resolve_text(s, &outputs()).to_json()
    }

    /// Protocol §4.3, the verified outcomes.
    #[test]
    fn back_references_resolve_as_the_portal_does() {
        assert_eq!(
            r("$result[lst][automatedSolutions][0][typeIds]"),
            json!([14, 158])
        );
        assert_eq!(r("$result[lst][automatedSolutions][1][typeIds]"), json!([]));
        assert_eq!(r("$error[x]"), json!([]));
        assert_eq!(r("$RESULT[lst]"), json!(null));
        assert_eq!(r("$Result[lst][automatedSolutions][0][id]"), json!(null));
        // A missing step yields the deepest part found.
        assert_eq!(r("$result[lst][nope]"), r("$result[lst]"));
        assert_eq!(r("$result[lst][automatedSolutions][0][id]"), json!(238));
        // Embedded: strings substitute, anything else stays as written.
        assert_eq!(r("Copy of $result[name]!"), json!("Copy of Sales!"));
        assert_eq!(
            r("x$result[lst][automatedSolutions][0][id]"),
            json!("x$result[lst][automatedSolutions][0][id]")
        );
        assert_eq!(r("$result"), json!("$result"));
        assert_eq!(r("costs $5"), json!("costs $5"));
    }

    #[test]
    fn commands_split_like_parse_url() {
        assert_eq!(split_command("m?id=5#&fields[typeIds][]="), ("m", "id=5"));
        assert_eq!(split_command("m#x?y"), ("m", ""));
        assert_eq!(split_command("m?a=1?b=2"), ("m", "a=1?b=2"));
        assert_eq!(split_command("m"), ("m", ""));
    }

    fn batch(params: serde_json::Value) -> (serde_json::Value, Vec<(String, serde_json::Value)>) {
        let p = Value::from_json(&params)
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut seen = Vec::new();
        let out = run(&p, |m, params, _| {
            seen.push((m.to_owned(), Value::Array(params.clone()).to_json()));
            match m {
                "ok" => Ok(MethodOk::result(
                    json!({"v": Value::Array(params.clone()).to_json()}),
                )),
                "list" => Ok(MethodOk {
                    result: json!([1]),
                    total: Some(1),
                    next: None,
                }),
                _ => Err(MethodError::method_not_found()),
            }
        });
        (out, seen)
    }

    #[test]
    fn cmd_and_halt_any_case_later_spelling_wins() {
        let (out, seen) =
            batch(json!({"cmd": {"a": "ok?x=1"}, "CMD": {"b": "OK?x=2&auth=t"}, "Halt": "false"}));
        assert_eq!(seen, [("ok".to_owned(), json!({"x": "2"}))]);
        assert_eq!(out["result"], json!({"b": {"v": {"x": "2"}}}));
        // `"false"` is true: the batch stops at the first failure.
        let (_, seen) = batch(json!({"cmd": ["nope", "ok"], "halt": "false"}));
        assert_eq!(seen.len(), 1);
        let (out, seen) = batch(json!({"cmd": ["nope", "ok"], "halt": "0"}));
        assert_eq!(seen.len(), 2);
        assert_eq!(out["result_error"][0]["error"], "ERROR_METHOD_NOT_FOUND");
    }

    #[test]
    fn envelope_has_php_shapes() {
        let (out, _) = batch(json!({"cmd": ["ok", "list"]}));
        assert!(out["result"].is_array());
        assert_eq!(out["result_error"], json!([]));
        assert_eq!(out["result_total"], json!({"1": 1}));
        assert_eq!(out["result_next"], json!([]));
        assert_eq!(out["result_time"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn back_references_and_nested_batch() {
        let (out, seen) = batch(json!({"cmd": {
            "a": "ok?name=HR",
            "b": "ok?copy=$result[a][v][name]&all=$result[a][v]",
            "c": "batch?cmd[0]=ok",
        }}));
        assert_eq!(seen[1].1, json!({"copy": "HR", "all": {"name": "HR"}}));
        assert_eq!(
            out["result_error"]["c"]["error"],
            "ERROR_BATCH_METHOD_NOT_ALLOWED"
        );
    }

    #[test]
    fn only_fifty_commands_run() {
        let cmds: Vec<String> = (0..52).map(|_| "ok".to_owned()).collect();
        let (out, seen) = batch(json!({"cmd": cmds}));
        assert_eq!(seen.len(), 50);
        assert_eq!(
            out["result_error"]["50"]["error"],
            "ERROR_BATCH_LENGTH_EXCEEDED"
        );
        assert!(out["result_error"]["51"].is_object());
    }

    #[test]
    fn method_case_falls_back_to_the_original_spelling() {
        let (_, seen) = batch(json!({"cmd": ["NOPE?x=1"]}));
        assert_eq!(
            seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            ["nope", "NOPE"]
        );
    }
}
