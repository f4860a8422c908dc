//! Every audit trail entry a request writes, built in one place from the typed records of
//! `audit::record`: the intents (`received`), the outcomes of a refused change (`denied`), and
//! the outcomes read from the portal's answer.

use super::change::{shown_by_the_answer, CommandResult, Item};
use crate::audit::record::{
    AfterSource, ApprovalRef, BatchRef, Caller, Completion, Intent, RequestInfo, SideEffectAfter,
    Subject,
};
use crate::audit::{Entry, Outcome};
use crate::mutation::{Credential, Mutation, SolutionState};
use crate::plan;
use crate::policy::{Decision, Verdict};
use std::collections::BTreeMap;

/// What every intent of one request shares: who asked, from where, how, and why.
pub(crate) struct Shared<'a> {
    pub(crate) credential: &'a Credential,
    pub(crate) user: Option<&'a str>,
    pub(crate) fingerprint: Option<&'a str>,
    pub(crate) client: std::net::IpAddr,
    pub(crate) http_method: &'a http::Method,
    pub(crate) encoding: &'static str,
    pub(crate) batch_id: Option<&'a str>,
    pub(crate) request_id: &'a str,
    pub(crate) reverts: Option<&'a str>,
    /// The portal's name (`[[portals]] name`, or the single portal's host).
    pub(crate) portal: &'a str,
    /// The proxy key's name, for a brokered call.
    pub(crate) integration: Option<&'a str>,
    /// `X-Audit-Override-Reason`, as sent; recorded with a command whose refusal it overrode.
    pub(crate) override_reason: Option<&'a str>,
    /// The approval being carried out; recorded with the command it allowed.
    pub(crate) approval: Option<&'a ApprovalRef>,
}

/// What identifies the change an entry of `m` belongs to.
fn subject<'a>(event_id: &'a str, m: &'a Mutation, solution_id: Option<i64>) -> Subject<'a> {
    Subject {
        event_id,
        method: m.kind.method(),
        solution_id,
    }
}

/// The intent of each command, recorded before anything is forwarded.
pub(crate) fn intents(
    c: &Shared<'_>,
    items: &[Item],
    planned: &[plan::Planned],
    decisions: &[Decision],
    event_ids: &[String],
) -> Vec<Entry> {
    let caller = Caller {
        auth: c.credential.auth_kind().to_owned(),
        fingerprint: c.fingerprint.map(str::to_owned),
        user_id: c.user.map(str::to_owned),
        integration: c.integration.map(str::to_owned),
    };
    items
        .iter()
        .zip(planned)
        .zip(decisions)
        .zip(event_ids)
        .map(|(((item, p), d), event_id)| {
            Intent {
                caller: caller.clone(),
                client_addr: Some(c.client.to_string()),
                request: RequestInfo {
                    encoding: c.encoding.to_owned(),
                    http_method: c.http_method.as_str().to_owned(),
                    params: item.mutation.params_json(),
                },
                before: p.before.clone(),
                decision: d.verdict.label().to_owned(),
                rule: d.rule.map(str::to_owned),
                reason: d.reason.clone(),
                batch: match (c.batch_id, &item.key) {
                    (Some(b), Some(k)) => Some(BatchRef {
                        id: b.to_owned(),
                        key: k.clone(),
                    }),
                    _ => None,
                },
                side_effects: p.side_effects.clone(),
                request_id: Some(c.request_id.to_owned()),
                reverts: c.reverts.map(str::to_owned),
                portal: Some(c.portal.to_owned()),
                override_reason: (d.verdict == Verdict::Overridden)
                    .then(|| c.override_reason.map(str::to_owned))
                    .flatten(),
                approval: (d.verdict == Verdict::Approved)
                    .then(|| c.approval.cloned())
                    .flatten(),
            }
            .entry(subject(event_id, &item.mutation, item.mutation.solution_id))
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
    items
        .iter()
        .zip(planned)
        .zip(event_ids)
        .map(|((item, p), event_id)| {
            let reason = (item.key.is_some() && item.key != items[i].key).then(|| {
                format!(
                    "refused with its batch: command '{}' was refused",
                    items[i].key.as_deref().unwrap_or("")
                )
            });
            Completion {
                after: p.before.clone(),
                reason,
                ..Completion::default()
            }
            .entry(
                subject(event_id, &item.mutation, item.mutation.solution_id),
                Outcome::Denied,
            )
        })
        .collect()
}

/// Where each side effect's workplace stands after the call: re-read, shown by the answer, or
/// not known.
fn side_effects_after(
    p: &plan::Planned,
    r: &CommandResult,
    fresh: &BTreeMap<i64, SolutionState>,
) -> Option<Vec<SideEffectAfter>> {
    (!p.side_effects.is_empty()).then(|| {
        p.side_effects
            .iter()
            .map(|e| {
                let (after, source) = match fresh.get(&e.solution_id) {
                    Some(seen) => (Some(seen.clone()), Some(AfterSource::Reread)),
                    None if shown_by_the_answer(r, e) => {
                        (Some(e.after.clone()), Some(AfterSource::Answer))
                    }
                    None => (None, None),
                };
                SideEffectAfter {
                    solution_id: e.solution_id,
                    after,
                    source,
                }
            })
            .collect()
    })
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
        let after = match (r.after.clone(), r.reread, item.mutation.solution_id) {
            (Some(a), _, _) => Some(a),
            (None, true, Some(id)) => fresh.get(&id).cloned(),
            (None, _, _) if r.outcome == Outcome::Failed => p.before.clone(),
            _ => None,
        };
        let side_effects_after = side_effects_after(p, &r, fresh);
        let solution_id = item.mutation.solution_id.or(after.as_ref().map(|s| s.id));
        let outcome = r.outcome;
        let out = Completion {
            portal_status: r.status,
            portal_error: r.error,
            after,
            side_effects_after,
            reason: None,
        };
        done.push(out.entry(subject(event_id, &item.mutation, solution_id), outcome));
    }
    done
}
