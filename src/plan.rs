//! Plan: what a sequence of mutations (one call, or the watched commands of a batch, in order)
//! will do to the workplaces, before anything is forwarded.
//!
//! For each mutation: its before-state (for the second change to one workplace in a batch, the
//! first change's result), its predicted after-state, and its side effects — binding a smart
//! process to one workplace takes it away from whichever workplace held it (docs/protocol.md,
//! Workplace updates step 6). Pure: the caller reads the states, this only applies the portal's
//! rules to them.

use crate::mutation::{Mutation, MutationKind, SolutionState};
use std::collections::{BTreeMap, BTreeSet};

/// Another workplace changed by a mutation: a smart process it held was bound elsewhere. The
/// audit record's own type, so the plan is recorded as it was made.
pub use crate::audit::record::SideEffect;

/// One mutation, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub before: Option<SolutionState>,
    /// `None` for a delete; an add's predicted state has id 0 (the portal assigns it).
    pub after: Option<SolutionState>,
    pub side_effects: Vec<SideEffect>,
}

/// The workplaces a plan needs to know: the targets, and — when `owners` is `Some` — every
/// workplace of the portal (to find who holds a smart process being bound).
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub states: BTreeMap<i64, SolutionState>,
    /// True when `states` holds every workplace that holds a smart process being bound: all
    /// workplaces were listed, or each such smart process was seen in a fresh read of one.
    pub complete: bool,
}

/// Does any mutation bind a smart process its target does not hold yet? Then the owners must
/// be read, because that smart process is taken from them.
pub fn binds_new_types(mutations: &[Mutation], targets: &BTreeMap<i64, SolutionState>) -> bool {
    mutations.iter().any(|m| match (m.kind, &m.type_ids) {
        (MutationKind::Add, Some(ids)) => !ids.is_empty(),
        (MutationKind::Update, Some(ids)) => {
            let held = m
                .solution_id
                .and_then(|id| targets.get(&id))
                .map(|s| s.type_ids.as_slice())
                .unwrap_or_default();
            ids.iter().any(|t| !held.contains(t))
        }
        _ => false,
    })
}

/// The workplaces (other than `targets`) holding a smart process that `mutations` bind.
/// Every smart process a change binds (updates and adds with `typeIds`).
pub fn bound_types(mutations: &[Mutation]) -> BTreeSet<i64> {
    mutations
        .iter()
        .filter(|m| m.kind != MutationKind::Delete)
        .filter_map(|m| m.type_ids.as_ref())
        .flatten()
        .copied()
        .collect()
}

/// Is every smart process in `bound` held by one of `states`? Then, since a smart process
/// belongs to one workplace at most, `states` holds every owner that matters.
pub fn holders_read(bound: &BTreeSet<i64>, states: &BTreeMap<i64, SolutionState>) -> bool {
    bound
        .iter()
        .all(|t| states.values().any(|s| s.type_ids.contains(t)))
}

pub fn owners_of_bound(
    mutations: &[Mutation],
    known: &Known,
    targets: &BTreeSet<i64>,
) -> BTreeSet<i64> {
    let bound = bound_types(mutations);
    known
        .states
        .values()
        .filter(|s| !targets.contains(&s.id) && s.type_ids.iter().any(|t| bound.contains(t)))
        .map(|s| s.id)
        .collect()
}

/// Applies the mutations in order to the known states.
pub fn simulate(mutations: &[Mutation], known: &Known) -> Vec<Planned> {
    let mut states = known.states.clone();
    let mut out = Vec::with_capacity(mutations.len());
    for m in mutations {
        let before = m.solution_id.and_then(|id| states.get(&id).cloned());
        let after = match m.kind {
            MutationKind::Delete => None,
            MutationKind::Update => before.clone().map(|mut s| {
                if let Some(t) = &m.title {
                    s.title = t.clone();
                }
                if let Some(ids) = &m.type_ids {
                    s.type_ids = ids.clone();
                }
                s
            }),
            MutationKind::Add => Some(SolutionState {
                id: 0,
                title: m.title.clone().unwrap_or_default(),
                type_ids: m.type_ids.clone().unwrap_or_default(),
            }),
        };
        let mut side_effects = Vec::new();
        if known.complete {
            if let Some(a) = &after {
                let held = before
                    .as_ref()
                    .map(|b| b.type_ids.as_slice())
                    .unwrap_or_default();
                let newly: Vec<i64> = a
                    .type_ids
                    .iter()
                    .copied()
                    .filter(|t| !held.contains(t))
                    .collect();
                if !newly.is_empty() {
                    for (id, other) in states.iter_mut() {
                        if Some(*id) == m.solution_id
                            || !other.type_ids.iter().any(|t| newly.contains(t))
                        {
                            continue;
                        }
                        let before_other = other.clone();
                        other.type_ids.retain(|t| !newly.contains(t));
                        side_effects.push(SideEffect {
                            solution_id: *id,
                            before: before_other,
                            after: other.clone(),
                        });
                    }
                }
            }
        }
        match (m.kind, m.solution_id, &after) {
            (MutationKind::Delete, Some(id), _) => {
                states.remove(&id);
            }
            (MutationKind::Update, Some(id), Some(a)) => {
                states.insert(id, a.clone());
            }
            _ => {}
        }
        out.push(Planned {
            before,
            after,
            side_effects,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: i64, ids: &[i64]) -> SolutionState {
        SolutionState {
            id,
            title: format!("w{id}"),
            type_ids: ids.to_vec(),
        }
    }

    fn update(id: i64, title: Option<&str>, ids: Option<&[i64]>) -> Mutation {
        Mutation {
            kind: MutationKind::Update,
            solution_id: Some(id),
            title: title.map(str::to_owned),
            type_ids: ids.map(<[i64]>::to_vec),
        }
    }

    fn known(states: &[SolutionState], complete: bool) -> Known {
        Known {
            states: states.iter().map(|s| (s.id, s.clone())).collect(),
            complete,
        }
    }

    #[test]
    fn a_second_change_to_one_workplace_starts_from_the_first_ones_result() {
        let k = known(&[s(238, &[14, 158])], false);
        let p = simulate(
            &[update(238, Some("A"), None), update(238, None, Some(&[14]))],
            &k,
        );
        assert_eq!(p[0].before, Some(s(238, &[14, 158])));
        assert_eq!(p[1].before.as_ref().map(|b| b.title.as_str()), Some("A"));
        assert_eq!(
            p[1].after.as_ref().map(|a| a.type_ids.clone()),
            Some(vec![14])
        );
    }

    #[test]
    fn binding_takes_the_type_from_its_owner() {
        let k = known(
            &[s(238, &[14, 158]), s(267, &[31]), s(301, &[172, 190])],
            true,
        );
        let p = simulate(&[update(238, None, Some(&[14, 158, 31, 172]))], &k);
        let effects: Vec<(i64, Vec<i64>)> = p[0]
            .side_effects
            .iter()
            .map(|e| (e.solution_id, e.after.type_ids.clone()))
            .collect();
        assert_eq!(effects, vec![(267, vec![]), (301, vec![190])]);
        let add = Mutation {
            kind: MutationKind::Add,
            solution_id: None,
            title: Some("new".into()),
            type_ids: Some(vec![190]),
        };
        let p = simulate(&[add], &k);
        assert_eq!(p[0].side_effects[0].solution_id, 301);
        assert_eq!(p[0].side_effects[0].after.type_ids, vec![172]);
    }

    #[test]
    fn owners_are_only_needed_when_new_types_are_bound() {
        let targets = known(&[s(238, &[14, 158])], false).states;
        assert!(!binds_new_types(
            &[update(238, None, Some(&[14]))],
            &targets
        ));
        assert!(!binds_new_types(&[update(238, Some("x"), None)], &targets));
        assert!(binds_new_types(
            &[update(238, None, Some(&[14, 31]))],
            &targets
        ));
        let all = known(&[s(238, &[14]), s(267, &[31]), s(301, &[172])], true);
        let owners = owners_of_bound(
            &[update(238, None, Some(&[14, 31]))],
            &all,
            &BTreeSet::from([238]),
        );
        assert_eq!(owners, BTreeSet::from([267]));
    }

    #[test]
    fn delete_then_nothing_more_is_known() {
        let k = known(&[s(5, &[])], false);
        let del = Mutation {
            kind: MutationKind::Delete,
            solution_id: Some(5),
            title: None,
            type_ids: None,
        };
        let p = simulate(&[del, update(5, Some("x"), None)], &k);
        assert_eq!(p[0].after, None);
        assert_eq!(p[1].before, None);
    }
}
