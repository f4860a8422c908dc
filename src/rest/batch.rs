//! `batch`: the commands a batch will run, read the way the portal reads them (protocol §4):
//! `cmd` and `halt` looked up case-insensitively, `halt` cast like PHP, each command split with
//! PHP `parse_url` (`command`), its query parsed with `parse_str`, its method lower-cased.
//!
//! Watched commands become [`Mutation`]s, audited one by one; everything that would make their
//! effect uncertain is refused for the whole batch: more than 50 commands (the portal silently
//! skips the rest), a nested batch, a `$result[...]`-style reference (known only at run time),
//! a credential inside a command, a suffixed method name. Every command, watched or not, is
//! forwarded in the proxy's own encoding of what was read ([`BatchCall::forward_params`]), so the
//! portal runs exactly the commands the proxy inspected; a command that has no such encoding, or
//! that `parse_url` would read as a URL, is refused.

use super::command;
use super::credentials::is_credential_param;
use super::encode::form_query;
use super::params::parse_str;
use super::php::{Array, Value};
use super::route::normalise_method;
use crate::error::ProxyError;
use crate::mutation::{canonical_command, read_mutation, Mutation, MutationKind};
use crate::watched::Watched;
use serde_json::json;

/// The portal runs at most this many commands of one batch.
pub const MAX_COMMANDS: usize = 50;

/// One command of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The `cmd` key (`"u1"`, or the list index as text).
    pub key: String,
    /// The method as the client spelled it (the portal lower-cases it to look it up).
    pub method: String,
    /// Its parameters as the portal reads them.
    pub params: Array,
    /// The change it makes, when it calls a watched method.
    pub mutation: Option<Mutation>,
    /// The command string the proxy forwards: the watched change in canonical form, or the
    /// method with the proxy's encoding of the parameters read.
    text: String,
}

impl Command {
    /// The command string the proxy forwards in place of the client's.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A v1 `batch` call, read.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCall {
    /// `halt`, after PHP's bool cast (`"false"` and `"N"` are true).
    pub halt: bool,
    pub commands: Vec<Command>,
    /// The other top-level parameters (not `cmd`, `halt` or a credential), passed along as read.
    pub extra: Array,
}

impl BatchCall {
    pub fn is_watched(&self) -> bool {
        self.commands.iter().any(|c| c.mutation.is_some())
    }

    /// The batch's parameters as the proxy forwards them (a JSON body, the credential added by
    /// the caller): every command rebuilt from what was read, keys and order kept.
    pub fn forward_params(&self) -> serde_json::Value {
        let cmd: serde_json::Map<String, serde_json::Value> = self
            .commands
            .iter()
            .map(|c| (c.key.clone(), json!(c.text())))
            .collect();
        let mut out = self.extra.to_json_object();
        out.insert("halt".into(), json!(self.halt));
        out.insert("cmd".into(), serde_json::Value::Object(cmd));
        serde_json::Value::Object(out)
    }
}

/// The single top-level parameter spelled `name` in any letter case (the portal upper-cases
/// batch parameter names); two spellings are refused.
fn one_spelling<'a>(params: &'a Array, name: &str) -> Result<Option<&'a Value>, ProxyError> {
    let mut found = None;
    for (k, v) in params.iter() {
        if k.as_text().eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(ProxyError::uninterpretable(
                    "AMBIGUOUS_PARAMETER",
                    format!("batch has more than one spelling of '{name}'"),
                ));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Reads a v1 `batch` call from its decoded parameters.
pub fn parse(params: &Array) -> Result<BatchCall, ProxyError> {
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
            return Ok(BatchCall {
                halt,
                commands: Vec::new(),
                extra,
            })
        }
    };
    if entries.len() > MAX_COMMANDS {
        return Err(ProxyError::uninterpretable(
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
    Ok(BatchCall {
        halt,
        commands,
        extra,
    })
}

/// Reads one `cmd` entry.
fn read_command(key: String, entry: &Value) -> Result<Command, ProxyError> {
    let bad = |code: &'static str, why: String| {
        ProxyError::uninterpretable(code, format!("batch command '{key}': {why}"))
    };
    let Value::Str(raw) = entry else {
        return Err(bad(
            "INVALID_BATCH_COMMAND",
            "a command must be a string \"method?query\"".into(),
        ));
    };
    let parts = command::split(raw).map_err(|e| bad("INVALID_BATCH_COMMAND", e.to_string()))?;
    // The portal parses the query only `if ($query)`: PHP finds "0" false, so `m?0` runs with
    // no parameters at all (found by the PHP differential test).
    let query = match parts.query.as_deref() {
        Some("0") | None => "",
        Some(q) => q,
    };
    let parsed =
        parse_str(query.as_bytes()).map_err(|e| bad("INVALID_PARAMETER", e.to_string()))?;
    let (method, suffix) = normalise_method(parts.method);
    let watched = Watched::of(&method);
    let vars_cap = if watched.is_some() {
        super::params::MAX_WATCHED_VARS
    } else {
        super::params::PHP_MAX_INPUT_VARS
    };
    if parsed.too_deep || parsed.vars > vars_cap {
        return Err(bad(
            "INVALID_PARAMETER",
            "too many or too deeply nested parameters".into(),
        ));
    }
    let mutation = match watched {
        None => None,
        Some(Watched::Batch) => return Err(bad("BATCH_NESTED", "a nested batch is refused".into())),
        Some(w) if suffix.is_some() => {
            return Err(bad(
                "INVALID_PARAMETER",
                format!(
                    "'{}' is not how the portal names {} inside a batch",
                    parts.method,
                    w.method()
                ),
            ))
        }
        Some(Watched::TypeDelete) => {
            return Err(bad(
                "BINDING_CHANGE_NOT_AUDITED",
                "crm.type.delete inside a batch is refused (the smart process may be bound to a workplace); send it as a single call".into(),
            ))
        }
        Some(Watched::TypeAdd | Watched::TypeUpdate) => {
            if touches_bindings(&parsed.params) {
                return Err(bad(
                    "BINDING_CHANGE_NOT_AUDITED",
                    "crm.type calls that change digital-workplace bindings are refused; use crm.automatedsolution.update".into(),
                ));
            }
            None
        }
        Some(w) => Some(read_watched(w, raw, &parsed.params).map_err(|e| match e {
            ProxyError::Uninterpretable { code, reason } => bad(code, reason),
            other => other,
        })?),
    };
    let text = match &mutation {
        Some(m) => canonical_command(m),
        None => match form_query(&parsed.params) {
            Some(q) if q.is_empty() => parts.method.to_owned(),
            Some(q) => format!("{}?{q}", parts.method),
            None => {
                return Err(bad(
                    "UNSUPPORTED_ENCODING",
                    "its parameters have no spelling the portal would read back the same".into(),
                ))
            }
        },
    };
    Ok(Command {
        key,
        method: parts.method.to_owned(),
        params: parsed.params,
        mutation,
        text,
    })
}

/// A watched `crm.automatedsolution.*` command → its mutation, refusing what cannot be known
/// before the batch runs.
fn read_watched(w: Watched, raw: &str, params: &Array) -> Result<Mutation, ProxyError> {
    // The portal substitutes references in the *decoded* keys and values, so `%24result[x]`
    // is one too.
    if raw.contains('$') || mentions_dollar(params) {
        return Err(ProxyError::uninterpretable(
            "BATCH_REFERENCE",
            "a $result/$error/... reference is resolved only while the batch runs, so the change cannot be checked first",
        ));
    }
    if let Some(k) = params
        .iter()
        .map(|(k, _)| k.as_text())
        .find(|k| is_credential_param(k))
    {
        return Err(ProxyError::uninterpretable(
            "AMBIGUOUS_CREDENTIALS",
            format!("'{k}' inside a batch command is overridden by the batch's own credential"),
        ));
    }
    let kind = match w {
        Watched::SolutionUpdate => MutationKind::Update,
        Watched::SolutionAdd => MutationKind::Add,
        _ => MutationKind::Delete,
    };
    read_mutation(kind, params)
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

/// Does a `crm.type.add`/`update` parameter set touch workplace bindings?
pub fn touches_bindings(params: &Array) -> bool {
    params.iter().any(|(k, v)| {
        k.as_text().eq_ignore_ascii_case("fields")
            && v.as_array().is_some_and(|fields| {
                fields.iter().any(|(k, _)| {
                    let k = k.as_text().to_ascii_lowercase().replace('_', "");
                    matches!(
                        k.as_str(),
                        "customsectionid" | "customsections" | "isexternal"
                    )
                })
            })
    })
}

/// `result.result[key]` or `result.result_error[key]` of a batch answer; the portal's JSON
/// prints each of these maps as an object, a list (keys 0..n-1) or `[]` (protocol §4.4).
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
pub fn v3_methods(body: &[u8]) -> Result<Vec<String>, ProxyError> {
    let bad = || {
        ProxyError::uninterpretable(
            "INVALID_BATCH",
            "a REST 3.0 batch body must be a JSON array of {\"method\", \"query\"} objects",
        )
    };
    if body.trim_ascii_start().first() != Some(&b'[') {
        return Err(bad());
    }
    let v = super::params::json_decode(body).map_err(|_| bad())?;
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
    use crate::rest::params::parse_str;

    fn call(q: &str) -> Result<BatchCall, ProxyError> {
        parse(&parse_str(q.as_bytes()).expect("parses").params)
    }

    #[test]
    fn finds_commands_in_any_case_and_form() {
        let c = call("CMD[a]=crm.deal.list%3Fstart%3D0&HaLt=0").expect("batch");
        assert!(!c.halt);
        assert_eq!(c.commands.len(), 1);
        assert_eq!(c.commands[0].text(), "crm.deal.list?start=0");
        assert!(!c.is_watched());
        let list = call("cmd[]=crm.deal.list&cmd[]=CRM.AutomatedSolution.Update%3Fid%3D5%26fields%5Btitle%5D%3Dx").expect("batch");
        assert_eq!(list.commands[1].key, "1");
        let m = list.commands[1].mutation.as_ref().expect("watched");
        assert_eq!(
            (m.kind, m.solution_id, m.title.as_deref()),
            (MutationKind::Update, Some(5), Some("x"))
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
            assert_eq!(
                call(&format!("halt={v}&cmd[a]=user.current"))
                    .expect("batch")
                    .halt,
                want,
                "halt={v}"
            );
        }
    }

    #[test]
    fn a_query_of_0_is_no_query_to_the_portal() {
        let c = call("cmd[a]=crm.type.update%3F0&cmd[b]=crm.deal.list%3F00").expect("batch");
        assert!(c.commands[0].params.is_empty());
        assert_eq!(c.commands[0].text(), "crm.type.update");
        assert_eq!(c.commands[1].text(), "crm.deal.list?00=");
    }

    #[test]
    fn fragment_cuts_the_command() {
        let c = call("cmd[a]=crm.automatedsolution.update%3Fid%3D5%26fields%5Btitle%5D%3Dx%23%26fields%5BtypeIds%5D%5B%5D%3D").expect("batch");
        let m = c.commands[0].mutation.as_ref().expect("watched");
        assert_eq!(
            m.type_ids, None,
            "everything after # is not part of the command"
        );
    }

    #[test]
    fn what_cannot_be_known_in_advance_is_refused() {
        let refusals = [
            ("cmd[a]=x&CMD[b]=y", "AMBIGUOUS_PARAMETER"),
            ("cmd[a]=batch%3Fcmd[x]=crm.deal.list", "BATCH_NESTED"),
            ("cmd[a]=crm.automatedsolution.update%3Fid%3D5%26fields%5BtypeIds%5D%3D%24result%5Bx%5D", "BATCH_REFERENCE"),
            ("cmd[a]=crm.automatedsolution.update.json%3Fid%3D5", "INVALID_PARAMETER"),
            ("cmd[a]=%20crm.automatedsolution.delete%3Fid%3D5", "INVALID_BATCH_COMMAND"),
            ("cmd[a]=crm.automatedsolution.update%3Fid%3D5%26fields%5Btitle%5D%3D%2524result%5Bx%5D", "BATCH_REFERENCE"),
            ("cmd[a]=crm.deal.list:80%3Fx%3D1", "INVALID_BATCH_COMMAND"),
            ("cmd[a]=//portal.example/crm.automatedsolution.update%3Fid%3D5", "INVALID_BATCH_COMMAND"),
            ("cmd[a]=http:crm.automatedsolution.update%3Fid%3D5", "INVALID_BATCH_COMMAND"),
            ("cmd[a][x]=crm.deal.list", "INVALID_BATCH_COMMAND"),
            ("cmd[a]=crm.automatedsolution.update%3Fid%3D5%26auth%3Dx", "AMBIGUOUS_CREDENTIALS"),
            ("cmd[a]=crm.automatedsolution.update%3Fid%3D1e1", "INVALID_PARAMETER"),
            ("cmd[a]=crm.type.update%3Fid%3D5%26fields%5BcustomSectionId%5D%3D3", "BINDING_CHANGE_NOT_AUDITED"),
        ];
        for (q, code) in refusals {
            let e = call(q).expect_err(q);
            assert_eq!(e.code(), code, "{q}: {e}");
        }
        let many: String = (0..=MAX_COMMANDS)
            .map(|i| format!("cmd[c{i}]=user.current&"))
            .collect();
        assert_eq!(call(&many).expect_err("51").code(), "BATCH_TOO_LONG");
    }

    #[test]
    fn canonical_form_keeps_order_and_rewrites_only_watched_commands() {
        let c = call("halt=1&cmd[r]=crm.deal.list%3Ffilter%5B%3EID%5D%3D1&cmd[u]=crm.automatedsolution.update%3Fid%3D5%26fields%5BtypeIds%5D%5B%5D%3D2%26fields%5BtypeIds%5D%5B%5D%3D1%26bx24%3D1").expect("batch");
        let body = c.forward_params();
        assert_eq!(body["halt"], true);
        let keys: Vec<&String> = body["cmd"].as_object().expect("map").keys().collect();
        assert_eq!(keys, ["r", "u"]);
        assert_eq!(body["cmd"]["r"], "crm.deal.list?filter[%3EID]=1");
        assert_eq!(
            body["cmd"]["u"],
            "crm.automatedsolution.update?id=5&fields[typeIds][0]=1&fields[typeIds][1]=2"
        );
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
