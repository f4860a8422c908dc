//! A v1 `batch`, read for what it changes: the commands `rest::batch` read the portal's way,
//! each classified against the watched table. Watched commands become [`Mutation`]s, audited
//! one by one; everything that would make their effect uncertain is refused for the whole
//! batch: a nested batch, a `$result[...]`-style reference (known only at run time), a
//! credential inside a command, a suffixed method name, a `crm.type.*` command that touches
//! bindings. Every command, watched or not, is forwarded in the proxy's own encoding of what
//! was read ([`BatchCall::forward_params`]), so the portal runs exactly the commands the proxy
//! inspected.

use super::outbound::canonical_command;
use super::{read_mutation, Mutation, MutationKind};
use crate::error::ProxyError;
use crate::rest::batch::{self, BatchError, RawCommand};
use crate::rest::params::{MAX_WATCHED_VARS, PHP_MAX_INPUT_VARS};
use crate::rest::php::Array;
use crate::watched::{TypeCall, Watched};
use serde_json::json;

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

/// Reads a v1 `batch` call from its decoded parameters.
pub fn parse_batch(params: &Array) -> Result<BatchCall, ProxyError> {
    let raw = batch::read(params)?;
    let commands = raw
        .commands
        .into_iter()
        .map(command)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BatchCall {
        halt: raw.halt,
        commands,
        extra: raw.extra,
    })
}

/// One command, classified: the change it makes, or why the batch is refused.
fn command(raw: RawCommand) -> Result<Command, BatchError> {
    let watched = Watched::of(&raw.name);
    let vars_cap = if watched.is_some() {
        MAX_WATCHED_VARS
    } else {
        PHP_MAX_INPUT_VARS
    };
    if raw.query.too_deep || raw.query.vars > vars_cap {
        return Err(raw.error(
            "INVALID_PARAMETER",
            "too many or too deeply nested parameters",
        ));
    }
    let mutation = match watched {
        None => None,
        Some(w) => watched_command(w, &raw)?,
    };
    let text = match &mutation {
        Some(m) => canonical_command(m),
        None => raw.encoded().ok_or_else(|| {
            raw.error(
                "UNSUPPORTED_ENCODING",
                "its parameters have no spelling the portal would read back the same",
            )
        })?,
    };
    Ok(Command {
        key: raw.key,
        method: raw.method,
        params: raw.query.params,
        mutation,
        text,
    })
}

/// A command calling a watched method: its mutation (for `crm.automatedsolution.*`), nothing
/// (an inspected `crm.type.*` that leaves bindings alone), or a refusal.
fn watched_command(w: Watched, raw: &RawCommand) -> Result<Option<Mutation>, BatchError> {
    if w == Watched::Batch {
        return Err(raw.error("BATCH_NESTED", "a nested batch is refused"));
    }
    if raw.suffix.is_some() {
        return Err(raw.error(
            "INVALID_PARAMETER",
            format!(
                "'{}' is not how the portal names {} inside a batch",
                raw.method,
                w.method()
            ),
        ));
    }
    match w {
        Watched::Type(TypeCall::Delete) => Err(raw.error(
            "BINDING_CHANGE_NOT_AUDITED",
            "crm.type.delete inside a batch is refused (the smart process may be bound to a workplace); send it as a single call",
        )),
        Watched::Type(_) if touches_bindings(&raw.query.params) => Err(raw.error(
            "BINDING_CHANGE_NOT_AUDITED",
            "crm.type calls that change digital-workplace bindings are refused; use crm.automatedsolution.update",
        )),
        Watched::Type(_) | Watched::Batch => Ok(None),
        Watched::Solution(kind) => audited_command(kind, raw).map(Some),
    }
}

/// A `crm.automatedsolution.*` command → its mutation, refusing what cannot be known before
/// the batch runs.
fn audited_command(kind: MutationKind, raw: &RawCommand) -> Result<Mutation, BatchError> {
    if raw.has_reference() {
        return Err(raw.error(
            "BATCH_REFERENCE",
            "a $result/$error/... reference is resolved only while the batch runs, so the change cannot be checked first",
        ));
    }
    if let Some(k) = raw.credential_param() {
        return Err(raw.error(
            "AMBIGUOUS_CREDENTIALS",
            format!("'{k}' inside a batch command is overridden by the batch's own credential"),
        ));
    }
    read_mutation(kind, &raw.query.params).map_err(|e| match e {
        ProxyError::Uninterpretable { code, reason } => raw.error(code, reason),
        other => raw.error(other.code(), other.description()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::batch::MAX_COMMANDS;
    use crate::rest::params::parse_str;

    fn call(q: &str) -> Result<BatchCall, ProxyError> {
        parse_batch(&parse_str(q.as_bytes()).expect("parses").params)
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
}
