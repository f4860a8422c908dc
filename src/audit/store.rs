//! The SQLite trail: the first [`AuditStore`] backend. One read-write connection in WAL mode,
//! owned by the writer thread (`writer.rs`); the schema comes from `migrate.rs`. Readers open
//! their own connections (`query.rs`) and never block it.
//!
//! Durability is the `synchronous` pragma: FULL (an fsync per commit) for groups that hold an
//! intent, NORMAL for outcome-only groups unless `audit.fsync_outcomes` (see
//! `writer.rs`). Each group is a `BEGIN IMMEDIATE` transaction, so the write lock is taken
//! before the head is read, and each request a savepoint.

use super::backend::{seal, AppendFailure, AuditStore, Head, OpenIntent, StoreFailure};
use super::writer::{self, OpenOptions, OpenReport, Writer};
use super::{migrate, AuditError, AuditLog, AuditObserver, Committed, Entry, Outcome};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long SQLite waits for a lock held by another process (e.g. an `audit export` reader
/// checkpointing) before a write fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The probe's busy timeout: short, so that a lock held elsewhere does not hold queued requests
/// up behind the probe.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Opens (creating if needed) the database, applies migrations, reconciles unfinished intents
/// and starts the writer thread.
pub fn open(
    path: &Path,
    opts: OpenOptions,
    observer: Arc<dyn AuditObserver>,
) -> Result<(AuditLog, Writer, OpenReport), AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| AuditError::Open(format!("{}: {e}", dir.display())))?;
    }
    let mut conn = open_connection(path)?;
    let schema_version = migrate::apply(&mut conn).map_err(AuditError::Open)?;
    writer::start(SqliteStore { conn }, schema_version, opts, observer)
}

/// Opens the configured trail: the SQLite file, or the PostgreSQL database (`pg_store.rs`).
pub fn open_database(
    db: &crate::config::TrailDatabase,
    opts: OpenOptions,
    observer: Arc<dyn AuditObserver>,
) -> Result<(AuditLog, Writer, OpenReport), AuditError> {
    match db {
        crate::config::TrailDatabase::Sqlite(path) => open(path, opts, observer),
        crate::config::TrailDatabase::Postgres(pg) => super::pg_store::open(pg, opts, observer),
    }
}

/// A read-write connection with the trail's pragmas.
pub fn open_connection(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| AuditError::Open(format!("{}: {e}", path.display())))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| AuditError::Open(e.to_string()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::Open(format!(
            "journal_mode is {mode}, WAL is required"
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| AuditError::Open(e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| AuditError::Open(e.to_string()))?;
    Ok(conn)
}

/// The last entry, or the genesis position of an empty trail.
pub fn load_head(conn: &Connection) -> rusqlite::Result<Head> {
    let row = conn.query_row(
        "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
    );
    match row {
        Ok((seq, hash)) => Ok(Head { seq, hash }),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(Head::genesis()),
        Err(e) => Err(e),
    }
}

/// Inserts one entry after `head`, advancing it (the broker's entries, inside their own
/// transaction).
pub(crate) fn insert(
    conn: &Connection,
    head: &mut Head,
    entry: &Entry,
) -> rusqlite::Result<Committed> {
    let mut next = head.clone();
    let sealed = seal(&mut next, entry);
    insert_row(conn, entry, &sealed)?;
    *head = next;
    Ok(Committed {
        seq: sealed.chain.seq,
        hash: sealed.chain.hash,
    })
}

pub(crate) fn insert_row(
    conn: &Connection,
    entry: &Entry,
    sealed: &super::backend::Sealed,
) -> rusqlite::Result<()> {
    // Cached: parsing the statement again for every entry was a sixth of the writer's work.
    conn.prepare_cached(
        "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        sealed.chain.seq,
        entry.event_id,
        entry.kind.as_str(),
        sealed.time,
        entry.method,
        entry.solution_id,
        entry.outcome.map(Outcome::as_str),
        sealed.chain.payload,
        sealed.chain.prev_hash,
        sealed.chain.hash
    ])?;
    Ok(())
}

/// The SQLite backend: the writer's connection.
pub struct SqliteStore {
    conn: Connection,
}

fn failure(e: rusqlite::Error) -> StoreFailure {
    StoreFailure(e.to_string())
}

impl AuditStore for SqliteStore {
    fn head(&mut self) -> Result<Head, StoreFailure> {
        load_head(&self.conn).map_err(failure)
    }

    fn open_intents(&mut self) -> Result<Vec<OpenIntent>, StoreFailure> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.event_id, r.method, r.solution_id FROM audit_entries r \
                 WHERE r.kind = 'received' AND NOT EXISTS \
                 (SELECT 1 FROM audit_entries o WHERE o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled')) \
                 ORDER BY r.seq",
            )
            .map_err(failure)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(failure)?;
        rows.collect::<Result<_, _>>().map_err(failure)
    }

    fn set_durable(&mut self, durable: bool) {
        let pragma = if durable {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        if let Err(e) = self.conn.execute_batch(pragma) {
            tracing::warn!(target: "audit", error = %e, "Cannot change the audit trail's synchronous mode");
        }
    }

    fn begin(&mut self) -> Result<Head, StoreFailure> {
        // IMMEDIATE takes the write lock first; the head is then read inside it.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(failure)?;
        load_head(&self.conn).map_err(failure)
    }

    fn savepoint(&mut self) -> Result<(), StoreFailure> {
        self.conn
            .execute_batch("SAVEPOINT request")
            .map_err(failure)
    }

    fn release(&mut self) -> Result<(), StoreFailure> {
        self.conn.execute_batch("RELEASE request").map_err(failure)
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreFailure> {
        self.conn
            .execute_batch("ROLLBACK TO request; RELEASE request")
            .map_err(failure)
    }

    fn append(
        &mut self,
        entry: &Entry,
        sealed: &super::backend::Sealed,
    ) -> Result<(), AppendFailure> {
        insert_row(&self.conn, entry, sealed).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => AppendFailure::Refused(e.to_string()),
            _ => AppendFailure::Store(failure(e)),
        })
    }

    fn kind_at(&mut self, seq: i64) -> Result<Option<String>, StoreFailure> {
        self.conn
            .prepare_cached("SELECT kind FROM audit_entries WHERE seq = ?1")
            .and_then(|mut s| s.query_row([seq], |r| r.get(0)).optional())
            .map_err(failure)
    }

    fn commit(&mut self) -> Result<(), StoreFailure> {
        self.conn.execute_batch("COMMIT").map_err(failure)
    }

    /// A failed COMMIT can leave the connection inside the transaction (SQLite keeps it open
    /// after SQLITE_BUSY and some I/O errors); every later `BEGIN` would then fail. Roll back
    /// whatever is left.
    fn abandon(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(target: "audit", error = %e, "Cannot roll back a failed audit transaction");
            }
        }
    }

    /// `user_version` rewritten with its own value (the schema version lives in its own
    /// table): it fails for the same reasons an append fails — read-only file, full disk, lock.
    fn probe(&mut self) -> bool {
        let _ = self.conn.busy_timeout(PROBE_BUSY_TIMEOUT);
        let result = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            tx.execute_batch(&format!("PRAGMA user_version = {v}"))?;
            tx.commit()
        })();
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(target: "audit", error = %e, "Audit trail still not writable");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{entry_hash, GENESIS};
    use crate::audit::EntryKind;

    struct Quiet;
    impl AuditObserver for Quiet {
        fn committed(&self, _: usize, _: &[Outcome], _: f64) {}
        fn write_failed(&self) {}
        fn request_latency(&self, _: f64) {}
    }

    fn entry(event: &str, kind: EntryKind, outcome: Option<Outcome>) -> Entry {
        Entry {
            event_id: event.into(),
            kind,
            method: "crm.automatedsolution.update".into(),
            solution_id: Some(238),
            outcome,
            fields: serde_json::Map::new(),
        }
    }

    fn opts() -> OpenOptions {
        OpenOptions {
            queue_capacity: 64,
            max_batch: 16,
            fsync_outcomes: false,
            signer: None,
            sink: None,
        }
    }

    #[tokio::test]
    async fn appends_are_chained_and_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let (store, writer, report) = open(&path, opts(), Arc::new(Quiet)).expect("open");
        assert_eq!(report.entries, 0);
        let c = store
            .append(vec![
                entry("e1", EntryKind::Received, None),
                entry("e1", EntryKind::Completed, Some(Outcome::Applied)),
            ])
            .await
            .expect("append");
        assert_eq!(c.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
        drop(store);
        writer.join();

        let conn = Connection::open(&path).expect("reopen");
        let rows: Vec<(String, String, String)> = conn
            .prepare("SELECT payload, prev_hash, hash FROM audit_entries ORDER BY seq")
            .expect("prep")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows[0].1, GENESIS);
        assert_eq!(rows[1].1, rows[0].2);
        for (payload, prev, hash) in &rows {
            assert_eq!(&entry_hash(prev, payload), hash);
        }
    }

    #[tokio::test]
    async fn a_failing_request_does_not_take_its_group_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, writer, _) =
            open(&dir.path().join("a.db"), opts(), Arc::new(Quiet)).expect("open");
        store
            .append(vec![entry("dup", EntryKind::Received, None)])
            .await
            .expect("first");
        // Same event id twice: the schema refuses the second intent; the other request lands.
        let (a, b) = tokio::join!(
            store.append(vec![entry("dup", EntryKind::Received, None)]),
            store.append(vec![entry("ok", EntryKind::Received, None)])
        );
        assert!(matches!(a, Err(AuditError::Write(_))));
        let b = b.expect("second request commits");
        assert_eq!(b[0].seq, 2, "the failed request left no gap in the chain");
        drop(store);
        writer.join();
    }

    #[tokio::test]
    async fn unfinished_intents_are_reconciled_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        {
            let (store, writer, _) = open(&path, opts(), Arc::new(Quiet)).expect("open");
            store
                .append(vec![entry("open", EntryKind::Received, None)])
                .await
                .expect("intent");
            store
                .append(vec![
                    entry("done", EntryKind::Received, None),
                    entry("done", EntryKind::Completed, Some(Outcome::Applied)),
                ])
                .await
                .expect("done");
            drop(store);
            writer.join();
        }
        let (store, writer, report) = open(&path, opts(), Arc::new(Quiet)).expect("reopen");
        assert_eq!(report.reconciled, vec!["open".to_owned()]);
        drop(store);
        writer.join();
        let (store, writer, report) = open(&path, opts(), Arc::new(Quiet)).expect("third open");
        assert!(report.reconciled.is_empty(), "reconciled once only");
        assert_eq!(report.entries, 4);
        drop(store);
        writer.join();
    }
}
