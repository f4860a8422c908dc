//! Every audit trail entry a request writes, built in one place: the intents (`received`), the
//! outcomes of a refused change (`denied`), and the outcomes read from the portal's answer.

use super::change::{shown_by_the_answer, CommandResult, Item};
use crate::audit::{Entry, EntryKind, Outcome};
use crate::mutation::{Credential, Mutation, SolutionState};
use crate::plan;
use crate::policy::Decision;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What every intent of one request shares: who asked, from where, how, and why.
pub(crate) struct Intent<'a> {
    pub(crate) credential: &'a Credential,
    pub(crate) user: Option<&'a str>,
    pub(crate) fingerprint: Option<&'a str>,
    pub(crate) client: std::net::IpAddr,
    pub(crate) http_method: &'a http::Method,
    pub(crate) encoding: &'static str,
    pub(crate) batch_id: Option<&'a str>,
    pub(crate) request_id: &'a str,
    pub(crate) reverts: Option<&'a str>,
}

/// The intent of each command, recorded before anything is forwarded.
pub(crate) fn intents(
    c: &Intent<'_>,
    items: &[Item],
    planned: &[plan::Planned],
    decisions: &[Decision],
    event_ids: &[String],
) -> Vec<Entry> {
    let (credential, user, fingerprint, client, encoding) =
        (c.credential, c.user, c.fingerprint, c.client, c.encoding);
    let (batch_id, rid, reverts) = (c.batch_id, c.request_id, c.reverts);
    items
        .iter()
        .zip(planned)
        .zip(decisions)
        .zip(event_ids)
        .map(|(((item, p), d), event_id)| {
            let mut f = Map::new();
            f.insert(
                "caller".into(),
                json!({"auth": credential.auth_kind(), "user_id": user, "fingerprint": fingerprint}),
            );
            f.insert("client_addr".into(), json!(client.to_string()));
            f.insert(
                "request".into(),
                json!({"http_method": c.http_method.as_str(), "encoding": encoding, "params": item.mutation.params_json()}),
            );
            f.insert("before".into(), json!(p.before));
            f.insert("decision".into(), json!(d.verdict.label()));
            f.insert("rule".into(), json!(d.rule));
            f.insert("reason".into(), json!(d.reason));
            f.insert(
                "batch".into(),
                match (&batch_id, &item.key) {
                    (Some(b), Some(k)) => json!({"id": b, "key": k}),
                    _ => Value::Null,
                },
            );
            if !p.side_effects.is_empty() {
                f.insert("side_effects".into(), json!(p.side_effects));
            }
            f.insert("request_id".into(), json!(rid));
            if let Some(r) = &reverts {
                f.insert("reverts".into(), json!(r));
            }
            Entry {
                event_id: event_id.clone(),
                kind: EntryKind::Received,
                method: item.mutation.kind.method().to_owned(),
                solution_id: item.mutation.solution_id,
                outcome: None,
                fields: f,
            }
        })
        .collect()
}

/// The whole call is refused because command `i` is: every command is recorded, none
/// forwarded.
pub(crate) fn denied(
    items: &[Item],
    planned: &[plan::Planned],
    event_ids: &[String],
    i: usize,
) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(items.len());
    for ((item, p), event_id) in items.iter().zip(planned).zip(event_ids) {
        let mut out = outcome_fields(None, None, p.before.as_ref());
        if item.key.is_some() && item.key != items[i].key {
            out.insert(
                "reason".into(),
                json!(format!(
                    "refused with its batch: command '{}' was refused",
                    items[i].key.as_deref().unwrap_or("")
                )),
            );
        }
        entries.push(outcome_entry(
            event_id,
            &item.mutation,
            item.mutation.solution_id,
            Outcome::Denied,
            out,
        ));
    }
    entries
}

/// The outcome of each forwarded command, from the answer or, where it does not show it, from
/// the states read back (`fresh`).
pub(crate) fn outcomes(
    items: &[Item],
    planned: &[plan::Planned],
    results: Vec<CommandResult>,
    event_ids: &[String],
    fresh: &BTreeMap<i64, SolutionState>,
) -> Vec<Entry> {
    let mut done = Vec::with_capacity(items.len());
    for (((item, p), r), event_id) in items.iter().zip(planned).zip(results).zip(event_ids) {
        let mut side_effects_after = None;
        let after = match (r.after.clone(), r.reread, item.mutation.solution_id) {
            (Some(a), _, _) => Some(a),
            (None, true, Some(id)) => fresh.get(&id).cloned(),
            (None, _, _) if r.outcome == Outcome::Failed => p.before.clone(),
            _ => None,
        };
        if !p.side_effects.is_empty() {
            let actual: Vec<Value> = p
                .side_effects
                .iter()
                .map(|e| match fresh.get(&e.solution_id) {
                    Some(seen) => {
                        json!({"solution_id": e.solution_id, "after": seen, "source": "re-read"})
                    }
                    None if shown_by_the_answer(&r, e) => {
                        json!({"solution_id": e.solution_id, "after": e.after, "source": "answer"})
                    }
                    None => json!({"solution_id": e.solution_id, "after": null}),
                })
                .collect();
            side_effects_after = Some(actual);
        }
        let mut out = outcome_fields(r.status, r.error, after.as_ref());
        if let Some(actual) = side_effects_after {
            out.insert("side_effects_after".into(), json!(actual));
        }
        let solution_id = item.mutation.solution_id.or(after.as_ref().map(|s| s.id));
        done.push(outcome_entry(
            event_id,
            &item.mutation,
            solution_id,
            r.outcome,
            out,
        ));
    }
    done
}

fn outcome_fields(
    status: Option<u16>,
    error: Option<Value>,
    after: Option<&SolutionState>,
) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("portal_status".into(), json!(status));
    f.insert("portal_error".into(), error.unwrap_or(Value::Null));
    f.insert("after".into(), json!(after));
    f
}

fn outcome_entry(
    event_id: &str,
    m: &Mutation,
    solution_id: Option<i64>,
    outcome: Outcome,
    fields: Map<String, Value>,
) -> Entry {
    Entry {
        event_id: event_id.to_owned(),
        kind: EntryKind::Completed,
        method: m.kind.method().to_owned(),
        solution_id,
        outcome: Some(outcome),
        fields,
    }
}
