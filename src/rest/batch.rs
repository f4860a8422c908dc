//! `batch`: finding the commands a batch will run, read the way the portal reads them
//! (protocol §4.2): `cmd` looked up case-insensitively, each command cut at `#`, split at the
//! first `?`, its method lower-cased.
//!
//! Until batches are audited command by command, a batch that contains any watched command (or
//! another batch, or a spelling that could become one) is refused, and any other batch passes
//! through with its bytes unchanged.

use super::php::{Array, Value};
use super::route::normalise_method;
use crate::error::ProxyError;
use crate::watched::Watched;

/// One command of a batch, as far as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The `cmd` key (`"u1"`, or the list index as text).
    pub key: String,
    /// Lower-cased method, with a final `.json`/`.xml` dropped for the watched check only.
    pub method: String,
    /// The raw query part after the first `?`, before the `#` cut.
    pub query: String,
}

/// The commands of a v1 `batch` call, from its already decoded parameters.
pub fn commands(params: &Array) -> Result<Vec<Command>, ProxyError> {
    let mut cmd: Option<&Value> = None;
    for (k, v) in params.iter() {
        if k.as_text().eq_ignore_ascii_case("cmd") {
            if cmd.is_some() {
                return Err(ProxyError::uninterpretable(
                    "AMBIGUOUS_PARAMETER",
                    "batch has more than one spelling of 'cmd'",
                ));
            }
            cmd = Some(v);
        }
    }
    let Some(Value::Array(entries)) = cmd else {
        // No command list: the portal runs nothing.
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries.iter() {
        // The portal skips non-string entries.
        let Value::Str(text) = v else { continue };
        let text = text.split('#').next().unwrap_or("");
        let (method, query) = text.split_once('?').unwrap_or((text, ""));
        let (method, _) = normalise_method(method.trim());
        out.push(Command {
            key: k.as_text(),
            method,
            query: query.to_owned(),
        });
    }
    Ok(out)
}

/// Refuses a batch that would run a watched command; `Ok` means it may pass through unchanged.
pub fn ensure_unwatched(commands: &[Command]) -> Result<(), ProxyError> {
    for c in commands {
        if let Some(w) = Watched::of(&c.method) {
            let reason = if w == Watched::Batch {
                format!(
                    "batch command '{}' is a nested batch, which the proxy refuses",
                    c.key
                )
            } else {
                format!(
                    "batch command '{}' calls {}; watched methods are not yet accepted inside batch, send it as a single call",
                    c.key,
                    w.method()
                )
            };
            return Err(ProxyError::uninterpretable("BATCH_NOT_AUDITED", reason));
        }
    }
    Ok(())
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

    fn cmds(q: &str) -> Vec<Command> {
        commands(&parse_str(q.as_bytes()).expect("parses").params).expect("commands")
    }

    #[test]
    fn finds_commands_in_any_case_and_form() {
        let c = cmds("CMD[a]=crm.deal.list%3Fstart%3D0&halt=0");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].method, "crm.deal.list");
        assert_eq!(c[0].query, "start=0");
        let list = cmds("cmd[]=crm.deal.list&cmd[]=CRM.AutomatedSolution.Update%3Fid%3D5");
        assert_eq!(list[1].key, "1");
        assert_eq!(list[1].method, "crm.automatedsolution.update");
    }

    #[test]
    fn fragment_cuts_the_command() {
        let c = cmds("cmd[a]=crm.deal.list%23crm.automatedsolution.update");
        assert_eq!(c[0].method, "crm.deal.list");
    }

    #[test]
    fn two_spellings_of_cmd_are_refused() {
        let p = parse_str(b"cmd[a]=x&CMD[b]=y").expect("parses").params;
        assert!(commands(&p).is_err());
    }

    #[test]
    fn watched_and_nested_are_refused() {
        assert!(ensure_unwatched(&cmds("cmd[a]=crm.automatedsolution.update%3Fid%3D1")).is_err());
        assert!(ensure_unwatched(&cmds("cmd[a]=crm.automatedsolution.update.json")).is_err());
        assert!(ensure_unwatched(&cmds("cmd[a]=%20crm.automatedsolution.delete")).is_err());
        assert!(ensure_unwatched(&cmds("cmd[a]=batch%3Fcmd[x]=crm.deal.list")).is_err());
        assert!(ensure_unwatched(&cmds("cmd[a]=crm.deal.list&cmd[b]=user.current")).is_ok());
    }

    #[test]
    fn v3_batch_methods() {
        let m = v3_methods(br#"[{"method":"tasks.task.get","query":{}},{"method":"Batch"}]"#)
            .expect("ok");
        assert_eq!(m, ["tasks.task.get", "batch"]);
        assert!(v3_methods(b"{}").is_err());
    }
}
