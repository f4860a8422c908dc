//! What a request holds, released whatever ends it, and the audited work that outlives it.
//!
//! A request future can be dropped at any `.await`: the client closed its connection, reset
//! its HTTP/2 stream, or the connection hit a timeout. So nothing a request takes is given back
//! by code after an await — a gauge is a [`GaugeGuard`], a workplace lock a
//! `locks::SolutionGuard`, a connection slot a semaphore permit; each is released in `Drop`.
//!
//! Once an intent is about to be committed, the change must run to its recorded outcome even
//! if nobody waits for the answer any more: that work runs in its own task ([`Detached`]),
//! which the request only awaits. Dropping the request drops the answer, never the work. The
//! drain on shutdown waits for these tasks (within `server.shutdown_grace`).

use prometheus::IntGauge;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Holds one unit of a gauge (a request in flight, a connection open) until dropped.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The audited work running in tasks of its own, counted so the drain can wait for it.
#[derive(Default)]
pub struct Detached {
    state: Arc<DetachedState>,
}

#[derive(Default)]
struct DetachedState {
    running: AtomicUsize,
    idle: Notify,
}

/// Counts one task from its spawn to its end (also when it panics or the runtime drops it).
struct Running(Arc<DetachedState>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Detached {
    /// Runs `work` in its own task: it goes on when the returned handle is dropped.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.state.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.state.clone());
        tokio::spawn(async move {
            let _running = running;
            work.await
        })
    }

    /// Tasks not finished yet.
    pub fn running(&self) -> usize {
        self.state.running.load(Ordering::Acquire)
    }

    /// Resolves when no task is running (at once if none is).
    pub async fn idle(&self) {
        loop {
            // Registered before the check, so a task ending in between is not missed.
            let notified = self.state.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gauge_guard_gives_back_what_it_took() {
        let g = IntGauge::new("g", "help").expect("gauge");
        {
            let _a = GaugeGuard::new(&g);
            let _b = GaugeGuard::new(&g);
            assert_eq!(g.get(), 2);
        }
        assert_eq!(g.get(), 0);
    }

    #[tokio::test]
    async fn detached_work_survives_its_dropped_handle_and_is_waited_for() {
        let d = Detached::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let seen = done.clone();
        let handle = d.spawn(async move {
            let _ = rx.await;
            seen.fetch_add(1, Ordering::SeqCst);
        });
        drop(handle);
        assert_eq!(d.running(), 1);
        let idle = d.idle();
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), idle.as_mut())
                .await
                .is_err()
        );
        tx.send(()).expect("send");
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle once the work ends");
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(d.running(), 0);
    }
}
