//! What the simulated portal stores: digital workplaces ("automated solutions") and the
//! smart-process types bound to them, a few deals, and the logs tests read back (calls, executed
//! mutations, queued faults).
//!
//! The one invariant: a smart-process type is bound to at most one workplace. Every binding
//! change goes through [`State::set_bindings`], which takes the types away from whichever
//! workplace held them (docs/protocol.md, Workplace updates). Parameter decoding and response
//! shapes are not here; the methods in `methods/` do that.

use super::faults::FaultQueue;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A digital workplace as the portal returns it (`{id, title, typeIds}`), type ids sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Solution {
    pub id: i64,
    pub title: String,
    pub type_ids: Vec<i64>,
}

/// One HTTP request as it reached the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub http_method: String,
    /// The path as sent, still percent-encoded.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The REST method after the portal's normalisation (`None` outside `/rest/`).
    pub rest_method: Option<String>,
}

/// An add, update or delete the simulator really executed, with the workplace before and after.
/// Side effects on *other* workplaces (a type taken away from them) show in the state only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutedMutation {
    pub seq: u64,
    pub method: String,
    pub solution_id: i64,
    pub before: Option<Solution>,
    pub after: Option<Solution>,
}

/// A seeded deal, in the classic CRM REST shape (upper-case keys, string values).
#[derive(Debug, Clone, PartialEq)]
pub struct Deal {
    pub id: i64,
    pub title: String,
    pub stage_id: &'static str,
    pub opportunity: String,
    pub assigned_by_id: u64,
}

/// Smart-process types of the sample portal.
const SEED_TYPES: [i64; 5] = [14, 31, 158, 172, 190];

/// Sample workplaces: enough to have one with two types, one with a single type, and a type
/// (190) bound to none, so that "steal", "unbind all" and "bind a free type" are all testable.
const SEED_SOLUTIONS: [(i64, &str, &[i64]); 3] = [
    (238, "HR & Customer Success", &[14, 158]),
    (267, "Sales", &[31]),
    (301, "Support", &[172]),
];

/// More than two 50-row pages, so `next` and `total` are exercised.
const SEED_DEALS: i64 = 120;

const DEAL_STAGES: [&str; 4] = ["NEW", "PREPARATION", "EXECUTING", "WON"];

#[derive(Debug)]
pub struct State {
    solutions: BTreeMap<i64, Solution>,
    /// Smart-process types that exist; binding an unknown id is silently skipped, as the portal's
    /// `getBunchOfTypesByIds` does.
    types: BTreeSet<i64>,
    next_solution_id: i64,
    pub deals: Vec<Deal>,
    pub calls: Vec<RecordedCall>,
    pub mutations: Vec<ExecutedMutation>,
    next_seq: u64,
    pub faults: FaultQueue,
    /// `im.notify` calls answered so far (the last notification's id).
    pub notifications: u64,
}

impl State {
    pub fn new(seed: bool) -> State {
        let mut s = State {
            solutions: BTreeMap::new(),
            types: BTreeSet::new(),
            next_solution_id: 1,
            deals: Vec::new(),
            calls: Vec::new(),
            mutations: Vec::new(),
            next_seq: 1,
            notifications: 0,
            faults: FaultQueue::default(),
        };
        if seed {
            s.types.extend(SEED_TYPES);
            for (id, title, types) in SEED_SOLUTIONS {
                s.solutions.insert(
                    id,
                    Solution {
                        id,
                        title: title.to_owned(),
                        type_ids: types.to_vec(),
                    },
                );
                s.next_solution_id = s.next_solution_id.max(id + 1);
            }
            s.deals = (1..=SEED_DEALS)
                .map(|id| Deal {
                    id,
                    title: format!("Deal #{id}"),
                    stage_id: DEAL_STAGES[(id as usize) % DEAL_STAGES.len()],
                    opportunity: format!("{}.00", id * 100),
                    assigned_by_id: 1,
                })
                .collect();
        }
        s
    }

    pub fn solutions(&self) -> Vec<Solution> {
        self.solutions.values().cloned().collect()
    }

    pub fn solution(&self, id: i64) -> Option<Solution> {
        self.solutions.get(&id).cloned()
    }

    /// Adds a workplace with no bindings; the caller binds types with [`State::set_bindings`].
    pub fn add_solution(&mut self, title: String) -> i64 {
        let id = self.next_solution_id;
        self.next_solution_id += 1;
        self.solutions.insert(
            id,
            Solution {
                id,
                title,
                type_ids: Vec::new(),
            },
        );
        id
    }

    pub fn set_title(&mut self, id: i64, title: String) {
        if let Some(s) = self.solutions.get_mut(&id) {
            s.title = title;
        }
    }

    pub fn remove_solution(&mut self, id: i64) -> Option<Solution> {
        self.solutions.remove(&id)
    }

    /// Replaces the bindings of workplace `id` with the existing types among `type_ids`, and takes
    /// each of them away from any other workplace.
    pub fn set_bindings(&mut self, id: i64, type_ids: &[i64]) {
        let wanted: BTreeSet<i64> = type_ids
            .iter()
            .copied()
            .filter(|t| self.types.contains(t))
            .collect();
        for (other_id, other) in self.solutions.iter_mut() {
            if *other_id != id {
                other.type_ids.retain(|t| !wanted.contains(t));
            }
        }
        if let Some(s) = self.solutions.get_mut(&id) {
            s.type_ids = wanted.into_iter().collect();
        }
    }

    pub fn insert_solution(&mut self, title: &str, type_ids: &[i64]) -> Solution {
        self.types
            .extend(type_ids.iter().copied().filter(|t| *t > 0));
        let id = self.add_solution(title.to_owned());
        self.set_bindings(id, type_ids);
        self.solution(id).unwrap_or(Solution {
            id,
            title: title.to_owned(),
            type_ids: Vec::new(),
        })
    }

    pub fn record_mutation(
        &mut self,
        method: &str,
        solution_id: i64,
        before: Option<Solution>,
        after: Option<Solution>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.mutations.push(ExecutedMutation {
            seq,
            method: method.to_owned(),
            solution_id,
            before,
            after,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_has_the_documented_workplaces() {
        let s = State::new(true);
        let ids: Vec<i64> = s.solutions().iter().map(|s| s.id).collect();
        assert_eq!(ids, [238, 267, 301]);
        assert_eq!(s.solution(238).map(|s| s.type_ids), Some(vec![14, 158]));
        assert!(State::new(false).solutions().is_empty());
    }

    #[test]
    fn binding_steals_from_the_previous_holder() {
        let mut s = State::new(true);
        s.set_bindings(267, &[31, 14]);
        assert_eq!(s.solution(267).map(|s| s.type_ids), Some(vec![14, 31]));
        assert_eq!(s.solution(238).map(|s| s.type_ids), Some(vec![158]));
    }

    #[test]
    fn unknown_types_are_skipped() {
        let mut s = State::new(true);
        s.set_bindings(301, &[999, 190]);
        assert_eq!(s.solution(301).map(|s| s.type_ids), Some(vec![190]));
    }

    #[test]
    fn insert_creates_types_and_steals() {
        let mut s = State::new(true);
        let new = s.insert_solution("X", &[158, 500]);
        assert_eq!(new.type_ids, [158, 500]);
        assert_eq!(new.id, 302);
        assert_eq!(s.solution(238).map(|s| s.type_ids), Some(vec![14]));
    }
}
