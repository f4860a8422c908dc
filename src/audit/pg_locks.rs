//! Workplace locks across replicas sharing a PostgreSQL trail: session advisory locks taken
//! beside the in-process ones (`locks.rs`), so that one workplace is changed by one replica at
//! a time, from snapshot to recorded outcome, and every before-state stays the true state.
//!
//! Each locked set holds one connection of a small pool (the async client: this runs on the
//! request path) for as long as its guard lives. The keys are ascending workplace ids of one
//! portal — the same order as the in-process locks, on every replica — so two requests never
//! each hold a lock the other waits for. A wait is bounded by the session's `lock_timeout`
//! (server-side: an abandoned wait cannot go on to take the lock later), after which the
//! request is refused with 503 `WORKPLACE_BUSY`.
//!
//! Release: dropping the guard (the outcome recorded, an error, the client gone) unlocks on a
//! task and returns the connection to the pool; if that fails, or there is no runtime, the
//! connection is closed, which ends the session and so releases its locks. A replica killed
//! while holding locks loses its connections, and the server releases them with the session.

use super::pg_conn::{self, describe};
use super::pg_url::SslMode;
use crate::config::PgTrail;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `application_name` of the lock sessions.
const APPLICATION: &str = "b24-audit-proxy locks";

/// How long a request waits for a workplace another replica is changing.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Idle lock sessions kept for reuse; more are opened when needed and closed when returned.
const POOL_IDLE: usize = 16;

/// Lock sessions open at once at most (each audited change in progress holds one), so that a
/// burst of changes cannot use up the server's `max_connections`. A change that finds them all
/// taken waits for one within the same bound as for a lock.
pub const MAX_SESSIONS: usize = 64;

/// SQLSTATE `lock_not_available`: the wait hit `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Why the locks were not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockFailure {
    /// Another replica held one of them for longer than [`LOCK_WAIT`].
    Busy,
    /// The database could not be reached or failed.
    Unavailable(String),
}

/// The pool of lock sessions of one trail.
pub struct PgLocks {
    trail: PgTrail,
    wait: Duration,
    idle: Mutex<Vec<tokio_postgres::Client>>,
    sessions: Arc<tokio::sync::Semaphore>,
}

/// Holds a set of advisory locks until dropped.
pub struct PgLockGuard {
    client: Option<tokio_postgres::Client>,
    owner: Arc<PgLocks>,
    /// This session's place among [`MAX_SESSIONS`], given back once it is unlocked.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The lock key of a workplace of a portal: 64 bits of SHA-256 over both, so portals never
/// share keys, and apart from the migration lock's constant (`pg_migrate.rs`) in practice.
pub fn key(portal: &str, workplace: i64) -> i64 {
    let mut h = Sha256::new();
    h.update(b"b24-audit-proxy workplace\0");
    h.update(portal.as_bytes());
    h.update(b"\0");
    h.update(workplace.to_be_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

impl PgLocks {
    /// A pool that connects when first used, of at most [`MAX_SESSIONS`] sessions.
    pub fn new(trail: PgTrail, wait: Duration) -> Arc<PgLocks> {
        Self::with_sessions(trail, wait, MAX_SESSIONS)
    }

    /// A pool of at most `sessions` sessions open at once.
    pub fn with_sessions(trail: PgTrail, wait: Duration, sessions: usize) -> Arc<PgLocks> {
        Arc::new(PgLocks {
            trail,
            wait,
            idle: Mutex::new(Vec::new()),
            sessions: Arc::new(tokio::sync::Semaphore::new(sessions)),
        })
    }

    /// Takes the locks of `workplaces` of `portal`, in ascending id order, waiting at most
    /// the pool's wait for each.
    pub async fn lock(
        self: &Arc<Self>,
        portal: &str,
        workplaces: &BTreeSet<i64>,
    ) -> Result<PgLockGuard, LockFailure> {
        let permit = tokio::time::timeout(self.wait, self.sessions.clone().acquire_owned())
            .await
            .map_err(|_| LockFailure::Busy)?
            .map_err(|_| LockFailure::Unavailable("the lock sessions are closed".into()))?;
        let client = self.session().await?;
        // From here the guard owns the session: an early return (or the caller's future being
        // dropped mid-wait) releases whatever was taken.
        let mut guard = PgLockGuard {
            client: Some(client),
            owner: self.clone(),
            permit: Some(permit),
        };
        for id in workplaces {
            let k = key(portal, *id);
            let Some(client) = guard.client.as_ref() else {
                return Err(LockFailure::Unavailable("no lock session".into()));
            };
            if let Err(e) = client.execute("SELECT pg_advisory_lock($1)", &[&k]).await {
                let busy = e.code().is_some_and(|c| c.code() == LOCK_NOT_AVAILABLE);
                return Err(if busy {
                    LockFailure::Busy
                } else {
                    // Not worth reusing: close it (releasing its locks).
                    guard.client = None;
                    LockFailure::Unavailable(describe(&e))
                });
            }
        }
        Ok(guard)
    }

    /// An idle session, or a new one.
    async fn session(&self) -> Result<tokio_postgres::Client, LockFailure> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.connect().await,
            }
        }
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, LockFailure> {
        let unavailable = |e: String| LockFailure::Unavailable(format!("{}: {e}", self.trail.url));
        let mut cfg = pg_conn::config(&self.trail, APPLICATION)
            .map_err(|e| LockFailure::Unavailable(e.to_string()))?;
        // A session on a connection that died silently is found out in about a minute, not
        // after the system's two hours (the server ends its side by its own keepalives).
        cfg.keepalives_idle(Duration::from_secs(30));
        let client = match self.trail.url.sslmode {
            SslMode::Disable => {
                let (client, conn) = cfg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| unavailable(describe(&e)))?;
                tokio::spawn(drive(conn));
                client
            }
            mode => {
                let tls = pg_conn::tls(mode).map_err(unavailable)?;
                let (client, conn) = cfg
                    .connect(tls)
                    .await
                    .map_err(|e| unavailable(describe(&e)))?;
                tokio::spawn(drive(conn));
                client
            }
        };
        let ms = self.wait.as_millis();
        client
            .batch_execute(&format!("SET lock_timeout = '{ms}ms'"))
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        Ok(client)
    }

    /// Returns a session that holds no lock any more.
    fn give_back(&self, client: tokio_postgres::Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_IDLE {
            idle.push(client);
        }
    }
}

/// Runs a connection until it closes; its end (or failure) is seen by the client's next call.
async fn drive<F, E>(conn: F)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(e) = conn.await {
        tracing::debug!(target: "audit", error = %e, "Lock session closed");
    }
}

impl Drop for PgLockGuard {
    fn drop(&mut self) {
        let permit = self.permit.take();
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // Closing the connection ends the session, which releases its locks.
            return;
        };
        let owner = self.owner.clone();
        rt.spawn(async move {
            match client.batch_execute("SELECT pg_advisory_unlock_all()").await {
                Ok(()) => owner.give_back(client),
                Err(e) => {
                    tracing::debug!(target: "audit", error = %describe(&e), "Closing a lock session that could not unlock")
                }
            }
            // The session is unlocked and pooled, or closed: its place is free.
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_portal_and_workplace_and_are_stable() {
        assert_eq!(key("main", 238), key("main", 238));
        assert_ne!(key("main", 238), key("main", 267));
        assert_ne!(key("main", 238), key("other", 238));
    }
}
