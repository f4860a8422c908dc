//! Per-workplace serialisation (docs/architecture.md, The trail's guarantees): changes to one
//! workplace go through one at a time, from snapshot to recorded outcome, so every before-state is
//! the true state before that change. Different workplaces never wait for each other. Entries are
//! removed when their last holder leaves, so the map stays as small as the set of workplaces being
//! changed right now.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type LockMap = Mutex<HashMap<i64, Arc<AsyncMutex<()>>>>;

#[derive(Default)]
pub struct SolutionLocks {
    // A std mutex: held only for a map lookup, never across an await.
    map: Arc<LockMap>,
    /// Counts releases of any workplace's lock: unchanged over a span of time, no audited
    /// change ended in it.
    epoch: Arc<AtomicU64>,
}

/// Holds one workplace's lock until dropped. It owns what it needs (no borrow of the lock
/// table), so the audited work can carry its locks into its own task and release them there.
pub struct SolutionGuard {
    map: Arc<LockMap>,
    epoch: Arc<AtomicU64>,
    id: i64,
    guard: Option<OwnedMutexGuard<()>>,
    /// Locks held elsewhere for the same change (another replica's view: PostgreSQL advisory
    /// locks, `audit/pg_locks.rs`), released with this guard.
    with: Option<Box<dyn Send + Sync>>,
}

impl SolutionLocks {
    pub fn new() -> SolutionLocks {
        SolutionLocks::default()
    }

    /// Waits for the workplace's turn.
    pub async fn lock(&self, id: i64) -> SolutionGuard {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id).or_default().clone()
        };
        let guard = m.lock_owned().await;
        self.guard(id, guard)
    }

    fn guard(&self, id: i64, guard: OwnedMutexGuard<()>) -> SolutionGuard {
        SolutionGuard {
            map: self.map.clone(),
            epoch: self.epoch.clone(),
            id,
            guard: Some(guard),
            with: None,
        }
    }

    /// The release count now; see `try_lock_unchanged`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Takes the locks of `ids` without waiting, and only if no lock was released since
    /// `epoch`: then no audited change ended since, and none is running on `ids`, so what was
    /// read of them since `epoch` is still their state. `None` (nothing held) otherwise.
    /// Never waits, so it cannot deadlock with requests taking their locks in order.
    pub fn try_lock_unchanged(
        &self,
        ids: &BTreeSet<i64>,
        epoch: u64,
    ) -> Option<Vec<SolutionGuard>> {
        let mut guards = Vec::with_capacity(ids.len());
        for id in ids {
            let m = {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                map.entry(*id).or_default().clone()
            };
            match m.try_lock_owned() {
                Ok(g) => guards.push(self.guard(*id, g)),
                // Dropping what was taken counts as releases: the caller falls back anyway.
                Err(_) => return None,
            }
        }
        (self.epoch() == epoch).then_some(guards)
    }

    /// Locks several workplaces, in ascending id order: every request takes its locks in the
    /// same order, so two requests can never each hold one the other waits for.
    pub async fn lock_all(&self, ids: &std::collections::BTreeSet<i64>) -> Vec<SolutionGuard> {
        let mut guards = Vec::with_capacity(ids.len());
        for id in ids {
            guards.push(self.lock(*id).await);
        }
        guards
    }

    /// Workplaces currently locked or waited for (tests check that guards give them back).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SolutionGuard {
    /// Keeps `other` (a guard of other locks) until this guard is dropped.
    pub fn hold_with(&mut self, other: Box<dyn Send + Sync>) {
        self.with = Some(other);
    }
}

impl Drop for SolutionGuard {
    fn drop(&mut self) {
        // Release first, then drop the map entry if nobody else holds or awaits it (the map's
        // own reference is the only one left). Waiters clone under the map lock, so no waiter
        // can appear between the check and the removal.
        // Counted before the release: whoever takes the lock next sees the new count.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        // The other locks go first: a local waiter taking them next finds them free sooner.
        self.with.take();
        self.guard.take();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_workplace_at_a_time_and_cleaned_up() {
        let locks = Arc::new(SolutionLocks::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside, max_inside) = (locks.clone(), inside.clone(), max_inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(238).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn different_workplaces_do_not_wait() {
        let locks = SolutionLocks::new();
        let _a = locks.lock(1).await;
        // Would hang if 2 waited for 1.
        let _b = locks.lock(2).await;
        assert_eq!(locks.len(), 2);
    }

    #[tokio::test]
    async fn try_lock_unchanged_only_when_nothing_ended_and_nothing_holds() {
        let locks = SolutionLocks::new();
        let ids = BTreeSet::from([5, 9]);
        let e = locks.epoch();
        let held = locks
            .try_lock_unchanged(&ids, e)
            .expect("free and unchanged");
        assert!(
            locks
                .try_lock_unchanged(&BTreeSet::from([9]), locks.epoch())
                .is_none(),
            "9 is held"
        );
        drop(held);
        assert!(
            locks.try_lock_unchanged(&ids, e).is_none(),
            "a release since the epoch: the read may be stale"
        );
        assert!(locks.try_lock_unchanged(&ids, locks.epoch()).is_some());
    }
}
