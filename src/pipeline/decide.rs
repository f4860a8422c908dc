//! Phase 5, decide: every command judged by the policy in force (read once per request), each
//! decision counted; one refusal refuses the whole call, and every command is then recorded as
//! refused with nothing forwarded.

use super::approved::Approved;
use super::change::Item;
use super::record;
use super::{Pipeline, RequestCtx};
use crate::audit::Entry;
use crate::broker::LiveKey;
use crate::error::ProxyError;
use crate::mutation::Mutation;
use crate::plan;
use crate::policy::{rules, Decision, Verdict};

/// What may let a change through that a rule refuses, besides the rules themselves: who the
/// caller is, its proxy key (scope, overridable rules), the override reason it sent, and the
/// approval being carried out.
pub(super) struct Grants<'a> {
    pub(super) user: Option<&'a str>,
    pub(super) key: Option<&'a LiveKey>,
    pub(super) override_reason: Option<&'a str>,
    pub(super) approval: Option<&'a Approved>,
}

/// A refusal by a rule the caller's key may override, with the reason it sent: allowed, and
/// recorded as an override of that rule. Anything else stands.
fn overridden(d: Decision, key: Option<&LiveKey>, reason: Option<&str>) -> Decision {
    let may = |rule: &str| key.is_some_and(|k| k.may_override.iter().any(|r| r == rule));
    match (d.verdict, d.rule) {
        (Verdict::Deny, Some(rule)) if reason.is_some() && may(rule) => Decision {
            verdict: Verdict::Overridden,
            ..d
        },
        _ => d,
    }
}

/// Why the key may not make this change (`--solutions`): the workplace it changes, or one it
/// takes a smart process from, is not among the key's; an add creates one that cannot be.
fn outside_scope(key: &LiveKey, m: &Mutation, planned: &plan::Planned) -> Option<String> {
    if !key.allows_solution(m.solution_id) {
        return Some(match m.solution_id {
            Some(id) => format!("the proxy key {} may not change workplace {id}", key.name),
            None => format!(
                "the proxy key {} may change only workplaces {:?}, not create one",
                key.name, key.solutions
            ),
        });
    }
    planned
        .side_effects
        .iter()
        .find(|s| !key.allows_solution(Some(s.solution_id)))
        .map(|s| {
            format!(
                "the proxy key {} may not change workplace {} (a smart process would be taken from it)",
                key.name, s.solution_id
            )
        })
}

/// The verdict of the whole call: the refusing one, else the first that is not a plain allow.
pub(super) fn overall_verdict(decisions: &[Decision], refused: Option<usize>) -> &'static str {
    match refused {
        Some(i) => decisions[i].verdict.label(),
        None => decisions
            .iter()
            .map(|d| d.verdict.label())
            .find(|l| *l != "allow")
            .unwrap_or("allow"),
    }
}

impl Pipeline {
    /// Phase 5: each command decided by the policy in force, and counted.
    pub(super) fn decide(
        &self,
        items: &[Item],
        planned: &[plan::Planned],
        grants: Grants<'_>,
    ) -> Vec<Decision> {
        let Grants {
            user,
            key,
            override_reason,
            approval,
        } = grants;
        let policy = self.current_policy();
        let decisions: Vec<_> = items
            .iter()
            .zip(planned)
            .map(
                |(i, p)| match key.and_then(|k| outside_scope(k, &i.mutation, p)) {
                    Some(reason) => Decision {
                        verdict: Verdict::Deny,
                        rule: Some(rules::KEY_SCOPE),
                        reason: Some(reason),
                    },
                    None => {
                        let d = overridden(
                            policy.evaluate_planned(&i.mutation, p, user),
                            key,
                            override_reason,
                        );
                        match approval {
                            Some(a) => a.apply(d),
                            None => d,
                        }
                    }
                },
            )
            .collect();
        for d in &decisions {
            self.metrics.decision(d.rule, d.verdict.label());
        }
        decisions
    }

    /// Tells the approvers (`[approvals]`) of the recorded refusal `e` of `item`. Only a
    /// refusal by a rule an approver can lift is worth telling (not a key's own scope).
    pub(super) fn tell_approvers(
        &self,
        ctx: &RequestCtx,
        e: &ProxyError,
        item: &Item,
        decision: &Decision,
        user: Option<&str>,
    ) {
        let approvable = decision.rule.is_some_and(|r| r != rules::KEY_SCOPE);
        let portal = ctx.portal.as_ref().map_or("", |p| p.name.as_str());
        let ProxyError::PolicyViolation {
            rule,
            reason,
            event_id,
        } = e
        else {
            return;
        };
        if approvable {
            self.tell_refusal(crate::notify::Refusal {
                event_id: event_id.clone(),
                portal: portal.to_owned(),
                method: item.mutation.kind.method().to_owned(),
                solution_id: item.mutation.solution_id,
                rule: rule.clone(),
                reason: reason.clone(),
                user_id: user.map(str::to_owned),
                integration: ctx.key.as_ref().map(|k| k.name.clone()),
            });
        }
    }

    /// The whole call is refused for command `i`: every command is recorded, none forwarded.
    pub(super) async fn refuse(
        &self,
        mut entries: Vec<Entry>,
        items: &[Item],
        planned: &[plan::Planned],
        decisions: &[Decision],
        event_ids: &[String],
        i: usize,
    ) -> ProxyError {
        entries.extend(record::denied(items, planned, event_ids, i));
        if let Err(e) = self.audit.append(entries).await {
            return self.audit_failed(e);
        }
        let d = &decisions[i];
        let reason = d.reason.clone().unwrap_or_default();
        ProxyError::PolicyViolation {
            rule: d.rule.unwrap_or("policy").to_owned(),
            reason: match &items[i].key {
                Some(k) => format!("batch command '{k}': {reason}"),
                None => reason,
            },
            event_id: event_ids[i].clone(),
        }
    }
}
