//! `batch` as the portal reads it (docs/protocol.md, "batch"): `cmd` and `halt` looked up
//! case-insensitively, `halt` cast like PHP, each command split with PHP `parse_url`
//! (`command`), its query parsed with `parse_str` (a query of `"0"` is none: the portal parses it
//! only `if ($query)`), its method lower-cased; at most [`MAX_COMMANDS`] run. Also the shapes of
//! a batch's answer (`sub_answer`) and the methods of a REST 3.0 batch.
//!
//! Pure protocol: which commands matter and what they change is the proxy's business
//! (`mutation::parse_batch`).

use super::command;
use super::credentials::is_credential_param;
use super::encode::form_query;
use super::params::{json_decode, parse_str, Parsed};
use super::php::{Array, Value};
use super::route::normalise_method;

/// The portal runs at most this many commands of one batch.
pub const MAX_COMMANDS: usize = 50;

/// Why a batch cannot be read the portal's way: a portal-style error code and a reason that
/// quotes no request bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub code: &'static str,
    pub reason: String,
}

impl BatchError {
    fn new(code: &'static str, reason: impl Into<String>) -> BatchError {
        BatchError {
            code,
            reason: reason.into(),
        }
    }
}

/// A v1 `batch` call's parameters, read.
#[derive(Debug, Clone, PartialEq)]
pub struct RawBatch {
    /// `halt`, after PHP's bool cast (`"false"` and `"N"` are true).
    pub halt: bool,
    pub commands: Vec<RawCommand>,
    /// The other top-level parameters (not `cmd`, `halt` or a credential), as read.
    pub extra: Array,
}

/// One `cmd` entry, split and parsed the portal's way.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCommand {
    /// The `cmd` key (`"u1"`, or the list index as text).
    pub key: String,
    /// The command string as sent.
    pub raw: String,
    /// The method as the client spelled it.
    pub method: String,
    /// The method as the portal looks it up (lower-case, without a `.json`/`.xml` suffix).
    pub name: String,
    /// The transport suffix the spelling had, if any.
    pub suffix: Option<&'static str>,
    /// Its query, as `parse_str` reads it.
    pub query: Parsed,
}

impl RawCommand {
    /// An error about this command, for the whole batch.
    pub fn error(&self, code: &'static str, why: impl std::fmt::Display) -> BatchError {
        command_error(&self.key, code, why)
    }

    /// Does the command use a `$result[...]`-style reference? The portal substitutes them in
    /// the *decoded* keys and values, so `%24result[x]` is one too.
    pub fn has_reference(&self) -> bool {
        self.raw.contains('$') || mentions_dollar(&self.query.params)
    }

    /// The first credential parameter inside the command (the batch's own credential
    /// overrides it).
    pub fn credential_param(&self) -> Option<String> {
        self.query
            .params
            .iter()
            .map(|(k, _)| k.as_text())
            .find(|k| is_credential_param(k))
    }

    /// The command in the proxy's encoding of what was read: the method as spelled, the
    /// parameters re-encoded. `None` when they have no spelling the portal reads back the same.
    pub fn encoded(&self) -> Option<String> {
        match form_query(&self.query.params)? {
            q if q.is_empty() => Some(self.method.clone()),
            q => Some(format!("{}?{q}", self.method)),
        }
    }
}

fn command_error(key: &str, code: &'static str, why: impl std::fmt::Display) -> BatchError {
    BatchError::new(code, format!("batch command '{key}': {why}"))
}

/// The single top-level parameter spelled `name` in any letter case (the portal upper-cases
/// batch parameter names); two spellings are refused.
fn one_spelling<'a>(params: &'a Array, name: &str) -> Result<Option<&'a Value>, BatchError> {
    let mut found = None;
    for (k, v) in params.iter() {
        if k.as_text().eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(BatchError::new(
                    "AMBIGUOUS_PARAMETER",
                    format!("batch has more than one spelling of '{name}'"),
                ));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Reads a v1 `batch` call from its decoded parameters. More than [`MAX_COMMANDS`] commands is
/// refused: the portal would silently skip the rest.
pub fn read(params: &Array) -> Result<RawBatch, BatchError> {
    let halt = one_spelling(params, "halt")?.is_some_and(Value::php_bool);
    let extra: Array = params
        .iter()
        .filter(|(k, _)| {
            let t = k.as_text();
            !t.eq_ignore_ascii_case("cmd")
                && !t.eq_ignore_ascii_case("halt")
                && !is_credential_param(&t)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let entries = match one_spelling(params, "cmd")? {
        Some(Value::Array(entries)) => entries,
        // No command list (or not a list): the portal runs nothing.
        _ => {
            return Ok(RawBatch {
                halt,
                commands: Vec::new(),
                extra,
            })
        }
    };
    if entries.len() > MAX_COMMANDS {
        return Err(BatchError::new(
            "BATCH_TOO_LONG",
            format!(
                "batch has {} commands; the portal runs only the first {MAX_COMMANDS} and skips the rest silently",
                entries.len()
            ),
        ));
    }
    let commands = entries
        .iter()
        .map(|(k, v)| read_command(k.as_text(), v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RawBatch {
        halt,
        commands,
        extra,
    })
}

/// Reads one `cmd` entry: a string `method?query`, split the way `parse_url` splits it.
fn read_command(key: String, entry: &Value) -> Result<RawCommand, BatchError> {
    let Value::Str(raw) = entry else {
        return Err(command_error(
            &key,
            "INVALID_BATCH_COMMAND",
            "a command must be a string \"method?query\"",
        ));
    };
    let parts = command::split(raw)
        .map_err(|e| command_error(&key, "INVALID_BATCH_COMMAND", e.to_string()))?;
    // The portal parses the query only `if ($query)`: PHP finds "0" false, so `m?0` runs with
    // no parameters at all (found by the PHP differential test).
    let query = match parts.query.as_deref() {
        Some("0") | None => "",
        Some(q) => q,
    };
    let query = parse_str(query.as_bytes())
        .map_err(|e| command_error(&key, "INVALID_PARAMETER", e.to_string()))?;
    let (name, suffix) = normalise_method(parts.method);
    Ok(RawCommand {
        method: parts.method.to_owned(),
        raw: raw.clone(),
        key,
        name,
        suffix,
        query,
    })
}

/// Is there a `$` in any key or value, at any depth?
fn mentions_dollar(params: &Array) -> bool {
    params.iter().any(|(k, v)| {
        k.as_text().contains('$')
            || match v {
                Value::Str(s) => s.contains('$'),
                Value::Array(a) => mentions_dollar(a),
                _ => false,
            }
    })
}

/// `result.result[key]` or `result.result_error[key]` of a batch answer; the portal's JSON
/// prints each of these maps as an object, a list (keys 0..n-1) or `[]` (docs/protocol.md,
/// "batch").
pub fn sub_answer<'a>(
    answer: &'a serde_json::Value,
    map: &str,
    key: &str,
) -> Option<&'a serde_json::Value> {
    let m = answer.get("result")?.get(map)?;
    match m {
        serde_json::Value::Object(o) => o.get(key),
        serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    }
    .filter(|v| !v.is_null())
}

/// A REST 3.0 batch body (`[{"method": "...", "query": {...}}, ...]`): the methods it runs.
pub fn v3_methods(body: &[u8]) -> Result<Vec<String>, BatchError> {
    let bad = || {
        BatchError::new(
            "INVALID_BATCH",
            "a REST 3.0 batch body must be a JSON array of {\"method\", \"query\"} objects",
        )
    };
    if body.trim_ascii_start().first() != Some(&b'[') {
        return Err(bad());
    }
    let v = json_decode(body).map_err(|_| bad())?;
    let Value::Array(items) = v else {
        return Err(bad());
    };
    let mut out = Vec::new();
    for (_, item) in items.iter() {
        let Value::Array(obj) = item else {
            return Err(bad());
        };
        let Some(Value::Str(m)) = obj.get_str("method") else {
            return Err(bad());
        };
        out.push(normalise_method(m.trim()).0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_q(q: &str) -> Result<RawBatch, BatchError> {
        read(&parse_str(q.as_bytes()).expect("parses").params)
    }

    #[test]
    fn splits_names_and_suffixes_the_portal_way() {
        let list = read_q("Cmd[]=User.Current&cmd[]=CRM.AutomatedSolution.Update.json%3Fid%3D5")
            .expect_err("two spellings of cmd");
        assert_eq!(list.code, "AMBIGUOUS_PARAMETER");
        let list = read_q("cmd[]=User.Current&cmd[]=CRM.AutomatedSolution.Update.json%3Fid%3D5")
            .expect("batch");
        assert_eq!(list.commands[0].encoded().as_deref(), Some("User.Current"));
        let c = &list.commands[1];
        assert_eq!(c.key, "1");
        assert_eq!(
            (c.name.as_str(), c.suffix, c.method.as_str()),
            (
                "crm.automatedsolution.update",
                Some("json"),
                "CRM.AutomatedSolution.Update.json"
            )
        );
    }

    #[test]
    fn halt_is_cast_like_php() {
        for (v, want) in [
            ("0", false),
            ("", false),
            ("false", true),
            ("N", true),
            ("1", true),
        ] {
            let b = read_q(&format!("halt={v}&cmd[a]=user.current")).expect("batch");
            assert_eq!(b.halt, want, "halt={v}");
        }
    }

    #[test]
    fn a_query_of_0_is_no_query_to_the_portal() {
        let c = read_q("cmd[a]=crm.type.update%3F0&cmd[b]=crm.deal.list%3F00").expect("batch");
        assert!(c.commands[0].query.params.is_empty());
        assert_eq!(c.commands[0].encoded().as_deref(), Some("crm.type.update"));
        assert_eq!(
            c.commands[1].encoded().as_deref(),
            Some("crm.deal.list?00=")
        );
    }

    #[test]
    fn references_are_seen_encoded_or_not() {
        let c = read_q("cmd[a]=m%3Fx%3D%2524result%5Bb%5D&cmd[b]=m%3Fx%3D1").expect("batch");
        assert!(c.commands[0].has_reference());
        assert!(!c.commands[1].has_reference());
    }

    #[test]
    fn unreadable_batches_are_refused() {
        let refusals = [
            ("cmd[a]=x&CMD[b]=y", "AMBIGUOUS_PARAMETER"),
            (
                "cmd[a]=%20crm.automatedsolution.delete%3Fid%3D5",
                "INVALID_BATCH_COMMAND",
            ),
            ("cmd[a]=crm.deal.list:80%3Fx%3D1", "INVALID_BATCH_COMMAND"),
            (
                "cmd[a]=//portal.example/crm.automatedsolution.update%3Fid%3D5",
                "INVALID_BATCH_COMMAND",
            ),
            (
                "cmd[a]=http:crm.automatedsolution.update%3Fid%3D5",
                "INVALID_BATCH_COMMAND",
            ),
            ("cmd[a][x]=crm.deal.list", "INVALID_BATCH_COMMAND"),
        ];
        for (q, code) in refusals {
            let e = read_q(q).expect_err(q);
            assert_eq!(e.code, code, "{q}: {e:?}");
        }
        let many: String = (0..=MAX_COMMANDS)
            .map(|i| format!("cmd[c{i}]=user.current&"))
            .collect();
        assert_eq!(read_q(&many).expect_err("51").code, "BATCH_TOO_LONG");
    }

    #[test]
    fn sub_answers_in_every_php_shape() {
        let obj = json!({"result":{"result":{"u":{"x":1}},"result_error":[]}});
        assert_eq!(sub_answer(&obj, "result", "u"), Some(&json!({"x":1})));
        assert_eq!(sub_answer(&obj, "result_error", "u"), None);
        let list = json!({"result":{"result":[{"x":1},{"x":2}]}});
        assert_eq!(sub_answer(&list, "result", "1"), Some(&json!({"x":2})));
    }

    #[test]
    fn v3_batch_methods() {
        let m = v3_methods(br#"[{"method":"tasks.task.get","query":{}},{"method":"Batch"}]"#)
            .expect("ok");
        assert_eq!(m, ["tasks.task.get", "batch"]);
        assert!(v3_methods(b"{}").is_err());
    }
}
