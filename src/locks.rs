//! Per-workplace serialisation (design §4): changes to one workplace go through one at a time,
//! from snapshot to recorded outcome, so every before-state is the true state before that
//! change. Different workplaces never wait for each other. Entries are removed when their last
//! holder leaves, so the map stays as small as the set of workplaces being changed right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type LockMap = Mutex<HashMap<i64, Arc<AsyncMutex<()>>>>;

#[derive(Default)]
pub struct SolutionLocks {
    // A std mutex: held only for a map lookup, never across an await.
    map: Arc<LockMap>,
}

/// Holds one workplace's lock until dropped. It owns what it needs (no borrow of the lock
/// table), so the audited work can carry its locks into its own task and release them there.
pub struct SolutionGuard {
    map: Arc<LockMap>,
    id: i64,
    guard: Option<OwnedMutexGuard<()>>,
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
        SolutionGuard {
            map: self.map.clone(),
            id,
            guard: Some(guard),
        }
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

impl Drop for SolutionGuard {
    fn drop(&mut self) {
        // Release first, then drop the map entry if nobody else holds or awaits it (the map's
        // own reference is the only one left). Waiters clone under the map lock, so no waiter
        // can appear between the check and the removal.
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
}
