//! Decide: policy rules over (mutation, prior state, caller) → a [`Decision`] that names its rule.
//!
//! Rules run in a fixed order and the first that refuses decides. In shadow mode a refusal is
//! recorded as `would_deny` and the call goes ahead, so an operator can try a rule on real
//! traffic before enforcing it. Pure: no I/O, no clock.

use crate::config::PolicyConfig;
use crate::mutation::{Mutation, MutationKind, SolutionState};
use crate::plan::Planned;
use serde::Serialize;

/// The names rules are known by in config, decisions, the trail and metrics.
pub mod rules {
    pub const DENY_EMPTY_TYPE_IDS: &str = "deny_empty_type_ids";
    pub const PROTECTED_SOLUTION: &str = "protected_solution_ids";
    pub const DENY_DELETE: &str = "deny_delete";
    pub const MAX_TYPE_IDS_REMOVED: &str = "max_type_ids_removed";
    pub const ALLOWED_USER_IDS: &str = "allowed_user_ids";
    /// Not a configurable rule: the call could not be read unambiguously (docs/architecture.md, The
    /// rule of interpretation).
    pub const UNINTERPRETABLE: &str = "uninterpretable_request";
    /// Not a configurable rule: a proxy key (`[broker]`) changed a workplace outside its
    /// `--solutions`. Enforced in shadow mode too: it is the key's grant, not a guard rail.
    pub const KEY_SCOPE: &str = "key_scope";
    pub const ALL: [&str; 7] = [
        DENY_EMPTY_TYPE_IDS,
        PROTECTED_SOLUTION,
        DENY_DELETE,
        MAX_TYPE_IDS_REMOVED,
        ALLOWED_USER_IDS,
        UNINTERPRETABLE,
        KEY_SCOPE,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Shadow mode: a rule would have refused; the call was allowed.
    WouldDeny,
    /// A rule refused, and a proxy key allowed to override it (`--may-override`) sent a reason
    /// (`X-Audit-Override-Reason`): the call was allowed, recorded as an override.
    Overridden,
    /// A rule refused, and an approver approved carrying the refused change out
    /// (`POST /v1/events/{id}/approve`).
    Approved,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
            Verdict::Overridden => "override",
            Verdict::Approved => "approved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The rule that refused (or would have); `None` when allowed.
    pub rule: Option<&'static str>,
    pub reason: Option<String>,
}

impl Decision {
    pub fn allow() -> Decision {
        Decision {
            verdict: Verdict::Allow,
            rule: None,
            reason: None,
        }
    }

    pub fn is_denied(&self) -> bool {
        self.verdict == Verdict::Deny
    }
}

/// The rules loaded from config.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy { cfg }
    }

    /// Evaluates every rule in order; `caller` is the caller's user id when known.
    pub fn evaluate(
        &self,
        m: &Mutation,
        before: Option<&SolutionState>,
        caller: Option<&str>,
    ) -> Decision {
        match self.first_refusal(m, before, caller) {
            None => Decision::allow(),
            Some((rule, reason)) => self.refusal(rule, reason),
        }
    }

    /// A refusal by `rule`: enforced, or only recorded in shadow mode.
    fn refusal(&self, rule: &'static str, reason: String) -> Decision {
        Decision {
            verdict: if self.cfg.shadow {
                Verdict::WouldDeny
            } else {
                Verdict::Deny
            },
            rule: Some(rule),
            reason: Some(reason),
        }
    }

    /// Like [`Policy::evaluate`], and also over the side effects on other workplaces: a change
    /// that would leave *any* workplace without smart processes, or change a protected one,
    /// is refused too.
    pub fn evaluate_planned(
        &self,
        m: &Mutation,
        planned: &Planned,
        caller: Option<&str>,
    ) -> Decision {
        let own = self.evaluate(m, planned.before.as_ref(), caller);
        if own.verdict != Verdict::Allow {
            return own;
        }
        match self.side_effect_refusal(planned) {
            None => own,
            Some((rule, reason)) => self.refusal(rule, reason),
        }
    }

    fn side_effect_refusal(&self, planned: &Planned) -> Option<(&'static str, String)> {
        let c = &self.cfg;
        for e in &planned.side_effects {
            let taken: Vec<String> = e
                .before
                .type_ids
                .iter()
                .filter(|t| !e.after.type_ids.contains(t))
                .map(|t| t.to_string())
                .collect();
            if c.protected_solution_ids.contains(&e.solution_id) {
                return Some((
                    rules::PROTECTED_SOLUTION,
                    format!(
                        "the change takes smart process {} from digital workplace {}, which is protected",
                        taken.join(", "),
                        e.solution_id
                    ),
                ));
            }
            if c.deny_empty_type_ids && e.after.type_ids.is_empty() {
                return Some((
                    rules::DENY_EMPTY_TYPE_IDS,
                    format!(
                        "binding smart process {} here takes it from digital workplace {}, which would be left with no smart processes",
                        taken.join(", "),
                        e.solution_id
                    ),
                ));
            }
            if let Some(max) = c.max_type_ids_removed {
                if taken.len() > max {
                    return Some((
                        rules::MAX_TYPE_IDS_REMOVED,
                        format!(
                            "the change takes {} smart processes from digital workplace {}; at most {max} may be unbound at once",
                            taken.len(),
                            e.solution_id
                        ),
                    ));
                }
            }
        }
        None
    }

    fn first_refusal(
        &self,
        m: &Mutation,
        before: Option<&SolutionState>,
        caller: Option<&str>,
    ) -> Option<(&'static str, String)> {
        let c = &self.cfg;
        if let Some(allowed) = &c.allowed_user_ids {
            if !caller.is_some_and(|u| allowed.iter().any(|a| a == u)) {
                return Some((
                    rules::ALLOWED_USER_IDS,
                    "the caller is not among the users allowed to change digital workplaces".into(),
                ));
            }
        }
        if let Some(id) = m.solution_id {
            if c.protected_solution_ids.contains(&id) {
                return Some((
                    rules::PROTECTED_SOLUTION,
                    format!("digital workplace {id} is protected"),
                ));
            }
        }
        if c.deny_delete && m.kind == MutationKind::Delete {
            return Some((
                rules::DENY_DELETE,
                "deleting digital workplaces is not allowed".into(),
            ));
        }
        if c.deny_empty_type_ids
            && m.kind != MutationKind::Delete
            && m.type_ids.as_ref().is_some_and(Vec::is_empty)
        {
            let target = m.solution_id.map_or_else(
                || "the new digital workplace".to_owned(),
                |id| format!("digital workplace {id}"),
            );
            return Some((
                rules::DENY_EMPTY_TYPE_IDS,
                format!("typeIds is empty after normalisation, which would unbind every smart process from {target}"),
            ));
        }
        if let (Some(max), Some(before), Some(after)) =
            (c.max_type_ids_removed, before, m.type_ids.as_ref())
        {
            let removed = before
                .type_ids
                .iter()
                .filter(|t| !after.contains(t))
                .count();
            if removed > max {
                return Some((
                    rules::MAX_TYPE_IDS_REMOVED,
                    format!("the change unbinds {removed} smart processes; at most {max} may be unbound at once"),
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: i64, type_ids: Option<Vec<i64>>) -> Mutation {
        Mutation {
            kind: MutationKind::Update,
            solution_id: Some(id),
            title: None,
            type_ids,
        }
    }

    fn state(ids: &[i64]) -> SolutionState {
        SolutionState {
            id: 238,
            title: "HR".into(),
            type_ids: ids.to_vec(),
        }
    }

    #[test]
    fn default_policy_refuses_only_empty_type_ids() {
        let p = Policy::new(PolicyConfig::default());
        let d = p.evaluate(&update(238, Some(vec![])), Some(&state(&[14])), Some("1"));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.rule, Some(rules::DENY_EMPTY_TYPE_IDS));
        assert!(
            p.evaluate(&update(238, Some(vec![14])), Some(&state(&[14])), Some("1"))
                .verdict
                == Verdict::Allow
        );
        // Leaving typeIds out keeps the bindings.
        assert!(
            p.evaluate(&update(238, None), Some(&state(&[14])), None)
                .verdict
                == Verdict::Allow
        );
        let add = Mutation {
            kind: MutationKind::Add,
            solution_id: None,
            title: Some("x".into()),
            type_ids: Some(vec![]),
        };
        assert_eq!(
            p.evaluate(&add, None, None).rule,
            Some(rules::DENY_EMPTY_TYPE_IDS)
        );
        let del = Mutation {
            kind: MutationKind::Delete,
            solution_id: Some(5),
            title: None,
            type_ids: None,
        };
        assert_eq!(p.evaluate(&del, None, None).verdict, Verdict::Allow);
    }

    #[test]
    fn shadow_mode_records_would_deny() {
        let p = Policy::new(PolicyConfig {
            shadow: true,
            ..PolicyConfig::default()
        });
        let d = p.evaluate(&update(238, Some(vec![])), None, None);
        assert_eq!(d.verdict, Verdict::WouldDeny);
        assert!(!d.is_denied());
        assert_eq!(d.rule, Some(rules::DENY_EMPTY_TYPE_IDS));
    }

    #[test]
    fn side_effects_that_empty_another_workplace_are_refused() {
        let p = Policy::new(PolicyConfig::default());
        let m = update(238, Some(vec![14, 31]));
        let planned = Planned {
            before: Some(state(&[14])),
            after: Some(state(&[14, 31])),
            side_effects: vec![crate::plan::SideEffect {
                solution_id: 267,
                before: SolutionState {
                    id: 267,
                    title: "Sales".into(),
                    type_ids: vec![31],
                },
                after: SolutionState {
                    id: 267,
                    title: "Sales".into(),
                    type_ids: vec![],
                },
            }],
        };
        let d = p.evaluate_planned(&m, &planned, Some("1"));
        assert_eq!(d.rule, Some(rules::DENY_EMPTY_TYPE_IDS));
        assert!(d.reason.as_deref().is_some_and(|r| r.contains("267")));
        let fine = Planned {
            side_effects: vec![],
            ..planned
        };
        assert_eq!(
            p.evaluate_planned(&m, &fine, Some("1")).verdict,
            Verdict::Allow
        );
    }

    #[test]
    fn other_rules() {
        let p = Policy::new(PolicyConfig {
            protected_solution_ids: vec![7],
            deny_delete: true,
            max_type_ids_removed: Some(1),
            allowed_user_ids: Some(vec!["1".into()]),
            ..PolicyConfig::default()
        });
        assert_eq!(
            p.evaluate(&update(238, None), None, Some("2")).rule,
            Some(rules::ALLOWED_USER_IDS)
        );
        assert_eq!(
            p.evaluate(&update(238, None), None, None).rule,
            Some(rules::ALLOWED_USER_IDS)
        );
        assert_eq!(
            p.evaluate(&update(7, None), None, Some("1")).rule,
            Some(rules::PROTECTED_SOLUTION)
        );
        let del = Mutation {
            kind: MutationKind::Delete,
            solution_id: Some(5),
            title: None,
            type_ids: None,
        };
        assert_eq!(
            p.evaluate(&del, None, Some("1")).rule,
            Some(rules::DENY_DELETE)
        );
        let d = p.evaluate(
            &update(238, Some(vec![31])),
            Some(&state(&[14, 158])),
            Some("1"),
        );
        assert_eq!(d.rule, Some(rules::MAX_TYPE_IDS_REMOVED));
        let ok = p.evaluate(
            &update(238, Some(vec![14, 31])),
            Some(&state(&[14, 158])),
            Some("1"),
        );
        assert_eq!(ok.verdict, Verdict::Allow);
    }
}
