//! Who holds which smart process, as last seen: learned from every workplace state the proxy
//! reads (snapshots, listings, re-reads), so that a change binding a smart process held by
//! another workplace can lock and read that owner in the same request as its target, instead
//! of listing every workplace of the portal first.
//!
//! A hint, never a fact: the snapshot reads the guessed owner under its lock, and a smart
//! process is taken as owned only when that fresh read shows it (a smart process belongs to one
//! workplace at most, so a fresh read that holds it settles who its owner is). A guess that no
//! longer holds it, or a smart process never seen, sends the snapshot back to a full listing.

use crate::mutation::SolutionState;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Bounds the map whatever a portal holds; past it the hints start over.
const MAX_ENTRIES: usize = 100_000;

/// Workplaces per page of `crm.automatedsolution.list`.
pub const LIST_PAGE: usize = 50;

#[derive(Default)]
pub struct Owners {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Smart process → the workplace seen holding it.
    holder: HashMap<i64, i64>,
    /// Workplaces in the last full listing.
    listed: Option<usize>,
}

impl Owners {
    pub fn new() -> Owners {
        Owners::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns from fresh reads of some workplaces: what each holds now.
    pub fn learn<'a>(&self, states: impl IntoIterator<Item = &'a SolutionState>) {
        let mut inner = self.inner();
        for s in states {
            inner
                .holder
                .retain(|t, w| *w != s.id || s.type_ids.contains(t));
            if inner.holder.len() + s.type_ids.len() > MAX_ENTRIES {
                inner.holder.clear();
            }
            for t in &s.type_ids {
                inner.holder.insert(*t, s.id);
            }
        }
    }

    /// Learns from a listing of every workplace: the whole map is replaced.
    pub fn learn_all(&self, all: &[SolutionState]) {
        let mut inner = self.inner();
        inner.holder.clear();
        for s in all.iter().take(MAX_ENTRIES) {
            for t in &s.type_ids {
                inner.holder.insert(*t, s.id);
            }
        }
        inner.listed = Some(all.len());
    }

    /// The workplaces last seen holding `types`, and whether every one of them has a guess.
    pub fn guess(&self, types: &BTreeSet<i64>) -> (BTreeSet<i64>, bool) {
        let inner = self.inner();
        let mut all = true;
        let mut out = BTreeSet::new();
        for t in types {
            match inner.holder.get(t) {
                Some(w) => {
                    out.insert(*w);
                }
                None => all = false,
            }
        }
        (out, all)
    }

    /// How many list pages to read with a snapshot: as many as a full listing took last time,
    /// plus one in case the portal grew; never listed, as many as one request can carry
    /// (the caller caps it at the batch's free commands), so a cold listing still fits the
    /// snapshot's one request for any portal up to a few thousand workplaces.
    pub fn pages(&self) -> usize {
        match self.inner().listed {
            Some(listed) => listed / LIST_PAGE + 1,
            None => usize::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: i64, types: &[i64]) -> SolutionState {
        SolutionState {
            id,
            title: String::new(),
            type_ids: types.to_vec(),
        }
    }

    #[test]
    fn guesses_follow_the_latest_reads() {
        let o = Owners::new();
        o.learn_all(&[s(1, &[14, 15]), s(2, &[16])]);
        assert_eq!(
            o.guess(&BTreeSet::from([14, 16])),
            (BTreeSet::from([1, 2]), true)
        );
        assert!(!o.guess(&BTreeSet::from([17])).1);
        o.learn([&s(1, &[15])]);
        assert!(!o.guess(&BTreeSet::from([14])).1, "1 gave up 14");
        o.learn([&s(3, &[16])]);
        assert_eq!(o.guess(&BTreeSet::from([16])).0, BTreeSet::from([3]));
        assert_eq!(o.pages(), 1);
        assert_eq!(
            Owners::new().pages(),
            usize::MAX,
            "cold: all the batch can carry"
        );
        let many: Vec<SolutionState> = (1..=122).map(|i| s(i, &[])).collect();
        o.learn_all(&many);
        assert_eq!(o.pages(), 3);
    }
}
