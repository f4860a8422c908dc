//! The audit record in typed form: what an intent (`received`) and an outcome (`completed`,
//! `reconciled`) entry hold, and the event readers see (an intent joined with its outcome).
//!
//! The writer turns these into the generic [`Entry`] the chain stores; queries, export, the
//! admin API, the timeline's JSON and revert read them back through the same types, so a field
//! is named and typed once. Explicit `null`s are part of the hashed form: an `Option` field is
//! written as `null` when empty, except the few marked "left out when empty", which older
//! entries never had (`docs/trail-format.md`). Fields of nested objects are declared in the
//! order the canonical form sorts them, so an event read back serialises as it was stored.
//! Reading is lenient the way the untyped reader was: a field an entry lacks reads as empty.

use super::{Entry, EntryKind, Outcome};
use crate::mutation::SolutionState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who made the call: how they authenticated, the portal user when known, and the keyed
/// fingerprint of the credential (never the credential itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Caller {
    pub auth: String,
    pub fingerprint: Option<String>,
    pub user_id: Option<String>,
    /// The proxy key the call came with (`[broker]`): the integration, by the key's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
}

/// The call as the proxy read it: HTTP method, body encoding, and the mutation's parameters
/// without credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RequestInfo {
    pub encoding: String,
    pub http_method: String,
    pub params: Value,
}

/// A watched command's place in its `batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    pub id: String,
    pub key: String,
}

/// Another workplace a change takes smart processes from, as planned before the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideEffect {
    pub after: SolutionState,
    pub before: SolutionState,
    pub solution_id: i64,
}

/// How the state of a side effect's workplace after the call was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterSource {
    /// Read back from the portal after the call.
    #[serde(rename = "re-read")]
    Reread,
    /// Shown by the target's own state in the portal's answer.
    #[serde(rename = "answer")]
    Answer,
}

/// A side effect's workplace after the call (`null` when it could not be read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideEffectAfter {
    pub solution_id: i64,
    pub after: Option<SolutionState>,
    /// Left out when the state was not learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AfterSource>,
}

/// The intent: everything known before the call is forwarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Intent {
    pub caller: Caller,
    pub client_addr: Option<String>,
    pub request: RequestInfo,
    pub before: Option<SolutionState>,
    /// `allow`, `deny` or `would_deny` (shadow mode).
    pub decision: String,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub batch: Option<BatchRef>,
    /// Left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub side_effects: Vec<SideEffect>,
    /// Older entries have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The event this one reverts (`revert --apply`); left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<String>,
    /// The portal the change was for (`[[portals]] name`, or the single portal's host);
    /// entries written before portals were named have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// Why a proxy key overrode a policy refusal (`decision` is `override`, `rule` the rule);
    /// left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
    /// The approval this change carries out (`decision` is `approved`); left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
}

/// A second person's approval of a refused change: which event, who, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ApprovalRef {
    /// The refused event this change carries out.
    pub approves: String,
    /// The approver's name (`[admin] approvers_file`).
    pub approver: String,
    pub reason: String,
    /// Carried out although the workplace had changed since the refusal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// The outcome: what the portal answered and the state after. A `reconciled` entry holds only
/// its `reason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Completion {
    pub portal_status: Option<u16>,
    pub portal_error: Option<Value>,
    pub after: Option<SolutionState>,
    /// Left out when the change had no side effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects_after: Option<Vec<SideEffectAfter>>,
    /// Why the proxy decided this outcome itself (a batch refused because of another command);
    /// left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why start-up reconciliation wrote an `unknown` outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub reason: String,
}

/// What identifies the change an entry belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub event_id: &'a str,
    pub method: &'a str,
    pub solution_id: Option<i64>,
}

fn fields(value: &impl Serialize) -> Map<String, Value> {
    // The record types hold only strings, numbers, maps and JSON values: serialising them
    // cannot fail, and an object is what they are.
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Intent {
    /// The `received` entry of this intent.
    pub fn entry(&self, s: Subject<'_>) -> Entry {
        Entry {
            event_id: s.event_id.to_owned(),
            kind: EntryKind::Received,
            method: s.method.to_owned(),
            solution_id: s.solution_id,
            outcome: None,
            fields: fields(self),
        }
    }
}

impl Completion {
    /// The `completed` entry recording `outcome`.
    pub fn entry(&self, s: Subject<'_>, outcome: Outcome) -> Entry {
        Entry {
            event_id: s.event_id.to_owned(),
            kind: EntryKind::Completed,
            method: s.method.to_owned(),
            solution_id: s.solution_id,
            outcome: Some(outcome),
            fields: fields(self),
        }
    }
}

impl Reconciliation {
    /// The `reconciled` entry: outcome `unknown`.
    pub fn entry(&self, s: Subject<'_>) -> Entry {
        Entry {
            event_id: s.event_id.to_owned(),
            kind: EntryKind::Reconciled,
            method: s.method.to_owned(),
            solution_id: s.solution_id,
            outcome: Some(Outcome::Unknown),
            fields: fields(self),
        }
    }
}

/// The header every stored payload carries besides its kind's fields.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StoredHeader {
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub method: String,
    pub solution_id: Option<i64>,
    pub outcome: Option<Outcome>,
}

/// A stored intent or outcome payload: its header and its kind's fields.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Stored<T> {
    #[serde(flatten)]
    pub header: StoredHeader,
    #[serde(flatten)]
    pub body: T,
}

/// A planned side effect joined with what was seen after the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideEffectSeen {
    pub after: SolutionState,
    pub before: SolutionState,
    pub solution_id: i64,
    pub after_seen: Option<SolutionState>,
    /// Older trails carry no source (their states were re-read); left out then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_source: Option<AfterSource>,
}

/// One audited mutation, as exported (`audit export`), listed by the admin API and shown by
/// the timeline: its intent joined with its outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    /// Position of the intent in the chain: the pagination cursor, not part of the export.
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub time: String,
    pub method: String,
    pub solution_id: Option<i64>,
    /// The portal the change was for; left out for events recorded before portals were named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    pub caller: Caller,
    pub client_addr: Option<String>,
    pub request: RequestInfo,
    pub before: Option<SolutionState>,
    pub after: Option<SolutionState>,
    pub decision: String,
    pub rule: Option<String>,
    /// `null` while the call is still in flight.
    pub outcome: Option<Outcome>,
    pub portal_status: Option<u16>,
    pub portal_error: Option<Value>,
    pub batch: Option<BatchRef>,
    /// Hash of the event's last entry in the chain.
    pub hash: String,
    /// The event this one reverts (`revert --apply`), if any.
    pub reverts: Option<String>,
    /// Why a proxy key overrode a policy refusal; left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
    /// The approval this event carries out; left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    /// Other workplaces the change took smart processes from, as planned, with what was seen
    /// after the call.
    pub side_effects: Vec<SideEffectSeen>,
}

impl EventRecord {
    /// Joins a stored intent with its stored outcome (`None` while in flight).
    pub(crate) fn join(
        seq: i64,
        intent: Stored<Intent>,
        outcome: Option<Stored<Completion>>,
        hash: String,
    ) -> EventRecord {
        let (oh, o) = match outcome {
            Some(o) => (Some(o.header), o.body),
            None => (None, Completion::default()),
        };
        let i = intent.body;
        let seen = o.side_effects_after.unwrap_or_default();
        let side_effects = i
            .side_effects
            .into_iter()
            .map(|e| {
                let found = seen.iter().find(|x| x.solution_id == e.solution_id);
                SideEffectSeen {
                    solution_id: e.solution_id,
                    before: e.before,
                    after: e.after,
                    after_seen: found.and_then(|x| x.after.clone()),
                    after_source: found.and_then(|x| x.source),
                }
            })
            .collect();
        EventRecord {
            seq,
            id: intent.header.event_id,
            time: intent.header.time,
            method: intent.header.method,
            // An add has no id until the portal answers; its outcome entry carries the new one.
            solution_id: intent
                .header
                .solution_id
                .or(oh.as_ref().and_then(|h| h.solution_id)),
            portal: i.portal,
            caller: i.caller,
            client_addr: i.client_addr,
            request: i.request,
            before: i.before,
            after: o.after,
            decision: i.decision,
            rule: i.rule,
            outcome: oh.and_then(|h| h.outcome),
            portal_status: o.portal_status,
            portal_error: o.portal_error,
            batch: i.batch,
            hash,
            reverts: i.reverts,
            override_reason: i.override_reason,
            approval: i.approval,
            side_effects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(id: i64, types: &[i64]) -> SolutionState {
        SolutionState {
            id,
            title: format!("W{id}"),
            type_ids: types.to_vec(),
        }
    }

    #[test]
    fn an_intent_keeps_its_explicit_nulls_and_leaves_out_what_older_entries_lack() {
        let i = Intent {
            caller: Caller {
                auth: "webhook".into(),
                user_id: Some("1".into()),
                fingerprint: Some("f".into()),
                ..Caller::default()
            },
            client_addr: Some("127.0.0.1".into()),
            request: RequestInfo {
                http_method: "POST".into(),
                encoding: "json".into(),
                params: json!({"id": 7}),
            },
            decision: "allow".into(),
            request_id: Some("r".into()),
            ..Intent::default()
        };
        let f = Value::Object(fields(&i));
        assert_eq!(
            f,
            json!({
                "caller": {"auth": "webhook", "user_id": "1", "fingerprint": "f"},
                "client_addr": "127.0.0.1",
                "request": {"http_method": "POST", "encoding": "json", "params": {"id": 7}},
                "before": null, "decision": "allow", "rule": null, "reason": null,
                "batch": null, "request_id": "r"
            })
        );
    }

    #[test]
    fn a_completion_writes_its_side_effects_with_their_source() {
        let c = Completion {
            portal_status: Some(200),
            after: Some(state(7, &[1])),
            side_effects_after: Some(vec![
                SideEffectAfter {
                    solution_id: 8,
                    after: Some(state(8, &[])),
                    source: Some(AfterSource::Answer),
                },
                SideEffectAfter {
                    solution_id: 9,
                    after: None,
                    source: None,
                },
            ]),
            ..Completion::default()
        };
        assert_eq!(
            Value::Object(fields(&c)),
            json!({
                "portal_status": 200, "portal_error": null,
                "after": {"id": 7, "title": "W7", "typeIds": [1]},
                "side_effects_after": [
                    {"solution_id": 8, "after": {"id": 8, "title": "W8", "typeIds": []}, "source": "answer"},
                    {"solution_id": 9, "after": null}
                ]
            })
        );
    }

    #[test]
    fn an_event_joins_its_intent_and_outcome() {
        let intent: Stored<Intent> = serde_json::from_value(json!({
            "v": 2, "seq": 1, "kind": "received", "event_id": "e", "time": "t",
            "method": "crm.automatedsolution.add", "solution_id": null,
            "caller": {"auth": "oauth", "user_id": null, "fingerprint": "f"},
            "client_addr": "::1", "request": {"http_method": "POST", "encoding": "form", "params": {}},
            "before": null, "decision": "allow", "rule": null, "reason": null, "batch": null,
            "side_effects": [{"solution_id": 8, "before": {"id": 8, "title": "W8", "typeIds": [1]},
                              "after": {"id": 8, "title": "W8", "typeIds": []}}]
        }))
        .expect("intent");
        let outcome: Stored<Completion> = serde_json::from_value(json!({
            "v": 2, "seq": 2, "kind": "completed", "event_id": "e", "time": "t2",
            "method": "crm.automatedsolution.add", "solution_id": 9, "outcome": "applied",
            "portal_status": 200, "portal_error": null,
            "after": {"id": 9, "title": "W9", "typeIds": [1]},
            "side_effects_after": [{"solution_id": 8, "after": {"id": 8, "title": "W8", "typeIds": []}, "source": "re-read"}]
        }))
        .expect("outcome");
        let e = EventRecord::join(1, intent, Some(outcome), "h".into());
        assert_eq!(
            e.solution_id,
            Some(9),
            "an add is filed under the id it created"
        );
        assert_eq!(e.outcome, Some(Outcome::Applied));
        assert_eq!(e.side_effects[0].after_seen, Some(state(8, &[])));
        assert_eq!(e.side_effects[0].after_source, Some(AfterSource::Reread));
        let exported = serde_json::to_value(&e).expect("json");
        assert_eq!(exported["side_effects"][0]["after_source"], "re-read");
        assert_eq!(exported["reverts"], Value::Null);
        assert!(exported.get("seq").is_none(), "the cursor is not exported");
    }
}
