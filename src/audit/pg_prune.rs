//! `audit prune --before DATE` on a PostgreSQL trail: the statements of [`PruneTx`] on one
//! connection, in one transaction that first takes the writers' lock, as every writer's group
//! does (`pg_store.rs`). Running replicas wait for it at their next group and chain their
//! entries after the checkpoint; what is removed is decided in `prune.rs`, as on SQLite.
//!
//! Entries are append-only; the delete passes the trigger only because this transaction
//! inserted a row of `audit_prune_guard` first and removes it before committing
//! (`migrations/pg/0003_prune.sql`).

use super::backend::{Head, Sealed};
use super::pg_conn::{self, describe};
use super::pg_store::{HEAD, INSERT, WRITERS_LOCK};
use super::prune::{self, PruneTx, Pruned, DELETE_ENTRIES, EVENT_INDEX, THROUGH};
use super::{pg_migrate, AuditError, Entry, Outcome};
use crate::config::PgTrail;

/// The `application_name` of the prune's connection.
const APPLICATION: &str = "b24-audit-proxy prune";

/// How long the prune waits for the writers' lock: writers hold it for one group, so a longer
/// wait means a replica is stuck holding it, and the prune gives up rather than hang.
const LOCK_TIMEOUT: &str = "30s";

fn write_err(e: postgres::Error) -> AuditError {
    AuditError::Write(describe(&e))
}

/// Prunes the PostgreSQL trail of entries written before `before` (RFC 3339). Brings the
/// schema up to date first, as a writer does, so the prune guard is there. Blocking: call it
/// outside any tokio runtime.
pub fn prune(trail: &PgTrail, before: &str) -> Result<Pruned, AuditError> {
    let mut client = pg_conn::connect(trail, APPLICATION)?;
    pg_migrate::apply(&mut client).map_err(|e| AuditError::Open(format!("{}: {e}", trail.url)))?;
    let mut tx = client.transaction().map_err(write_err)?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .map_err(write_err)?;
    // The lock first: under READ COMMITTED every later statement's snapshot is taken after it
    // was granted, so the prune sees all the writers committed and none commits meanwhile.
    tx.batch_execute(WRITERS_LOCK).map_err(write_err)?;
    let pruned = prune::prune_in(&mut PgTx(&mut tx), before)?;
    if pruned.through_seq.is_some() {
        tx.commit().map_err(write_err)?;
    }
    Ok(pruned)
}

/// A prune's statements on PostgreSQL.
struct PgTx<'a, 'b>(&'a mut postgres::Transaction<'b>);

impl PruneTx for PgTx<'_, '_> {
    fn seq_text(&mut self, sql: &str, param: &str) -> Result<Option<i64>, AuditError> {
        let row = self.0.query_one(sql, &[&param]).map_err(write_err)?;
        row.try_get(0).map_err(write_err)
    }

    fn seq_int(&mut self, sql: &str, param: i64) -> Result<Option<i64>, AuditError> {
        let row = self.0.query_one(sql, &[&param]).map_err(write_err)?;
        row.try_get(0).map_err(write_err)
    }

    fn through(&mut self, cut: i64) -> Result<Option<(i64, String)>, AuditError> {
        let row = self.0.query_opt(THROUGH, &[&cut]).map_err(write_err)?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(write_err)
    }

    fn remove_through(&mut self, seq: i64) -> Result<i64, AuditError> {
        self.0
            .batch_execute("INSERT INTO audit_prune_guard DEFAULT VALUES")
            .map_err(write_err)?;
        let removed = self.0.execute(DELETE_ENTRIES, &[&seq]).map_err(write_err)?;
        self.0
            .batch_execute("DELETE FROM audit_prune_guard")
            .map_err(write_err)?;
        for table in EVENT_INDEX {
            self.0
                .execute(&format!("DELETE FROM {table} WHERE seq <= $1"), &[&seq])
                .map_err(write_err)?;
        }
        i64::try_from(removed).map_err(|e| AuditError::Write(e.to_string()))
    }

    fn head(&mut self) -> Result<Head, AuditError> {
        let row = self.0.query_opt(HEAD, &[]).map_err(write_err)?;
        match row {
            Some(r) => Ok(Head {
                seq: r.try_get(0).map_err(write_err)?,
                hash: r.try_get(1).map_err(write_err)?,
            }),
            None => Ok(Head::genesis()),
        }
    }

    fn insert(&mut self, entry: &Entry, sealed: &Sealed) -> Result<(), AuditError> {
        // A checkpoint is no intent: it names no instance.
        let instance: Option<String> = None;
        self.0
            .execute(
                INSERT,
                &[
                    &sealed.chain.seq,
                    &entry.event_id,
                    &entry.kind.as_str(),
                    &sealed.time,
                    &entry.method,
                    &entry.solution_id,
                    &entry.outcome.map(Outcome::as_str),
                    &sealed.chain.payload,
                    &sealed.chain.prev_hash,
                    &sealed.chain.hash,
                    &instance,
                ],
            )
            .map(|_| ())
            .map_err(write_err)
    }
}
