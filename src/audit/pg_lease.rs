//! A replica's lease on the PostgreSQL trail, and the reconciliation of replicas that stopped.
//!
//! Every proxy writing to one PostgreSQL trail holds a row in `audit_leases` (its
//! `[audit] instance_id`, renewed every third of `[audit] lease_timeout`, expiring by the
//! database's clock), and every intent it records names that instance (`audit_entries.
//! instance_id`, filled by `pg_store.rs`). The keeper thread here renews the lease and, as
//! often, reconciles to `unknown` the open intents of instances whose lease expired: such a
//! replica stopped (killed, crashed, cut off) between recording an intent and its outcome. A
//! live replica's intents are never touched, and the writer's start-up reconciliation takes
//! only expired instances' and this instance's own earlier ones.
//!
//! Reconciliation runs through the writer's own `reconcile` on a connection of its own, under
//! the writers' lock, so two keepers reconciling at once write one outcome per intent. The
//! keeper's lock waits are bounded by its renewal period, so a long group of another replica
//! never delays the renewal past the lease. The lease is given up when the writer has stopped
//! with every intent answered (`Writer::join`).

use super::backend::Head;
use super::pg_store::PgStore;
use super::{writer, AuditError};
use crate::config::PgTrail;
use std::sync::mpsc;
use std::time::Duration;

/// The `application_name` of the keeper's connection.
const APPLICATION: &str = "b24-audit-proxy lease";

/// The running keeper; [`Keeper::stop`] gives the lease up.
pub struct Keeper {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Keeper {
    /// Opens the keeper's connection and starts renewing. Must not be called inside a tokio
    /// runtime (the blocking client; see `pg_conn.rs`).
    pub fn start(trail: PgTrail) -> Result<Keeper, AuditError> {
        let every = renewal_period(trail.replica.lease_timeout);
        let mut store = PgStore::connect_as(trail, APPLICATION, false)?;
        let ms = every.as_millis();
        store
            .session(&format!("SET lock_timeout = '{ms}ms'"))
            .map_err(|e| AuditError::Open(e.0))?;
        let (stop, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-lease".into())
            .spawn(move || run(store, every, rx))
            .map_err(|e| AuditError::Open(format!("cannot start the lease thread: {e}")))?;
        Ok(Keeper { stop, thread })
    }

    /// Stops renewing and deletes the lease row.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!(target: "audit", "Audit lease thread panicked");
        }
    }
}

/// A third of the lease: two renewals may fail (or be slow) before it expires.
pub fn renewal_period(lease_timeout: Duration) -> Duration {
    lease_timeout / 3
}

fn run(mut store: PgStore, every: Duration, stop: mpsc::Receiver<()>) {
    loop {
        if let Err(e) = store.renew_lease() {
            tracing::warn!(target: "audit", instance = %store.instance_id(), error = %e, "Cannot renew the replica lease");
        }
        // The head argument is the writer's; here the next group re-reads it under the lock.
        let mut head = Head::genesis();
        match writer::reconcile(&mut store, &mut head) {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => tracing::warn!(
                target: "audit",
                reconciled = ids.len(),
                events = %ids.join(","),
                "Open intents of a replica whose lease expired reconciled as unknown"
            ),
            Err(e) => {
                tracing::debug!(target: "audit", error = %e, "Reconciling expired replicas failed; retried next period")
            }
        }
        match stop.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            _ => break,
        }
    }
    if let Err(e) = store.drop_lease() {
        tracing::warn!(target: "audit", error = %e, "Cannot give the replica lease up; it expires on its own");
    }
}
