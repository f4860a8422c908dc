//! The writer thread: owns the SQLite connection, commits queued requests in groups, chains
//! every entry, and reconciles unfinished intents at start-up.
//!
//! Group commit: the thread blocks for one request, then takes whatever else is already queued
//! (up to `max_batch`), and commits them all in one transaction — one fsync
//! (`synchronous=FULL`, WAL) for the lot. Each request sits in its own savepoint, so a request
//! whose insert fails is rolled back alone and its entries are never half-written; a failed
//! commit fails every request of the group, and the chain head stays where it was.

use super::chain::FORM;
use super::chain::{canonical_json, entry_hash, GENESIS};
use super::signing::HeadSigner;
use super::{
    migrate, now_rfc3339, AppendRequest, AuditError, AuditObserver, AuditStore, ChainEntry,
    Committed, Entry, EntryKind, EntrySink, Outcome,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long SQLite waits for a lock held by another process (e.g. an `audit export` reader
/// checkpointing) before a write fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// While the store is not writable the writer polls its queue at this interval (instead of
/// blocking on it), so that it can also probe the store between requests.
const UNWRITABLE_POLL: Duration = Duration::from_millis(20);

/// How often a store that is not writable is probed, so that readiness comes back on its own
/// once the fault is gone, without waiting for a watched call to succeed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The probe's busy timeout: short, so that a lock held elsewhere does not hold queued requests
/// up behind the probe.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The running writer; join it after the last [`AuditStore`] clone is dropped to be sure every
/// queued entry was committed.
pub struct Writer {
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Waits for the writer to commit what is queued and stop. Call after dropping every
    /// `AuditStore` clone (the thread stops when the channel closes).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!(target: "audit", "Audit writer thread panicked");
        }
    }
}

/// What opening the store found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub schema_version: i64,
    pub entries: i64,
    /// Intents without an outcome that got a `reconciled` entry now.
    pub reconciled: Vec<String>,
}

pub struct OpenOptions {
    pub queue_capacity: usize,
    pub max_batch: usize,
    /// Also fsync groups that hold only outcome entries (see [`WriterState::commit_group`]).
    pub fsync_outcomes: bool,
    /// Signs `signed_head` entries; without it they are refused.
    pub signer: Option<Arc<HeadSigner>>,
    /// Told about every committed entry (the syslog feed).
    pub sink: Option<Arc<dyn EntrySink>>,
}

/// Opens (creating if needed) the database, applies migrations, reconciles unfinished intents
/// and starts the writer thread.
pub fn open(
    path: &Path,
    opts: OpenOptions,
    observer: Arc<dyn AuditObserver>,
) -> Result<(AuditStore, Writer, OpenReport), AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| AuditError::Open(format!("{}: {e}", dir.display())))?;
    }
    let mut conn = open_connection(path)?;
    let schema_version = migrate::apply(&mut conn).map_err(AuditError::Open)?;
    let mut head = Head::load(&conn)?;
    let reconciled = reconcile(&mut conn, &mut head)?;
    let report = OpenReport {
        schema_version,
        entries: head.seq,
        reconciled,
    };

    let (tx, rx) = mpsc::channel(opts.queue_capacity);
    let writable = Arc::new(AtomicBool::new(true));
    let state = WriterState {
        conn,
        head,
        max_batch: opts.max_batch,
        writable: writable.clone(),
        observer,
        fsync_outcomes: opts.fsync_outcomes,
        synced: true,
        signer: opts.signer,
        sink: opts.sink,
    };
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || state.run(rx))
        .map_err(|e| AuditError::Open(format!("cannot start the writer thread: {e}")))?;
    let store = AuditStore {
        tx,
        capacity: opts.queue_capacity,
        writable,
    };
    Ok((store, Writer { thread }, report))
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

/// The end of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

impl Head {
    fn load(conn: &Connection) -> Result<Head, AuditError> {
        Head::load_in(conn).map_err(|e| AuditError::Open(e.to_string()))
    }

    /// The last entry, or the genesis position of an empty trail.
    pub fn load_in(conn: &Connection) -> rusqlite::Result<Head> {
        let row = conn.query_row(
            "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        );
        match row {
            Ok((seq, hash)) => Ok(Head { seq, hash }),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// Inserts one entry after `head`, advancing it.
pub(crate) fn insert(
    conn: &Connection,
    head: &mut Head,
    entry: &Entry,
) -> rusqlite::Result<Committed> {
    insert_entry(conn, head, entry).map(|e| Committed {
        seq: e.seq,
        hash: e.hash,
    })
}

/// Inserts one entry after `head`, advancing it; returns the entry as stored.
pub(crate) fn insert_entry(
    conn: &Connection,
    head: &mut Head,
    entry: &Entry,
) -> rusqlite::Result<ChainEntry> {
    let seq = head.seq + 1;
    let time = now_rfc3339();
    let mut payload = entry.fields.clone();
    payload.insert("v".into(), json!(FORM));
    payload.insert("seq".into(), json!(seq));
    payload.insert("time".into(), json!(time));
    payload.insert("event_id".into(), json!(entry.event_id));
    payload.insert("kind".into(), json!(entry.kind.as_str()));
    payload.insert("method".into(), json!(entry.method));
    payload.insert("solution_id".into(), json!(entry.solution_id));
    if let Some(o) = entry.outcome {
        payload.insert("outcome".into(), json!(o.as_str()));
    }
    let text = canonical_json(&serde_json::Value::Object(payload));
    let hash = entry_hash(&head.hash, &text);
    // Cached: parsing the statement again for every entry was a sixth of the writer's work.
    conn.prepare_cached(
        "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
            seq,
            entry.event_id,
            entry.kind.as_str(),
            time,
            entry.method,
            entry.solution_id,
            entry.outcome.map(Outcome::as_str),
            text,
            head.hash,
            hash
        ],
    )?;
    let stored = ChainEntry {
        seq,
        prev_hash: std::mem::replace(&mut head.hash, hash.clone()),
        hash,
        payload: text,
    };
    head.seq = seq;
    Ok(stored)
}

/// What to do with a `signed_head` entry at the current head.
enum SignedHead {
    /// The entry to insert, with the signature over the head.
    Insert(Entry),
    /// The head is already signed (or the trail is empty): nothing to sign.
    Skip,
}

/// Completes a `signed_head` entry for the current head. An idle proxy does not add a new
/// signed head every interval: the head it would sign is already a signed head.
fn sign_head(
    conn: &Connection,
    head: &Head,
    entry: &Entry,
    signer: Option<&HeadSigner>,
) -> rusqlite::Result<Result<SignedHead, String>> {
    let Some(signer) = signer else {
        return Ok(Err("no [audit] signing_key_file is configured".into()));
    };
    if head.seq == 0 {
        return Ok(Ok(SignedHead::Skip));
    }
    let kind: Option<String> = conn
        .prepare_cached("SELECT kind FROM audit_entries WHERE seq = ?1")?
        .query_row([head.seq], |r| r.get(0))
        .optional()?;
    if kind.as_deref() == Some(EntryKind::SignedHead.as_str()) {
        return Ok(Ok(SignedHead::Skip));
    }
    let mut signed = entry.clone();
    signed.fields.extend(signer.sign(head.seq, &head.hash));
    Ok(Ok(SignedHead::Insert(signed)))
}

/// Gives every intent that has no outcome a `reconciled` entry with outcome `unknown`: the
/// proxy stopped between recording the intent and seeing the portal's answer, so whether the
/// change was applied is not known.
fn reconcile(conn: &mut Connection, head: &mut Head) -> Result<Vec<String>, AuditError> {
    let open: Vec<(String, String, Option<i64>)> = {
        let mut stmt = conn
            .prepare(
                "SELECT r.event_id, r.method, r.solution_id FROM audit_entries r \
                 WHERE r.kind = 'received' AND NOT EXISTS \
                 (SELECT 1 FROM audit_entries o WHERE o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled')) \
                 ORDER BY r.seq",
            )
            .map_err(|e| AuditError::Open(e.to_string()))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| AuditError::Open(e.to_string()))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| AuditError::Open(e.to_string()))?
    };
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let tx = conn
        .transaction()
        .map_err(|e| AuditError::Open(e.to_string()))?;
    let mut new_head = head.clone();
    for (event_id, method, solution_id) in &open {
        let mut fields = serde_json::Map::new();
        fields.insert(
            "reason".into(),
            json!("the proxy stopped before the portal's answer was recorded"),
        );
        let entry = Entry {
            event_id: event_id.clone(),
            kind: EntryKind::Reconciled,
            method: method.clone(),
            solution_id: *solution_id,
            outcome: Some(Outcome::Unknown),
            fields,
        };
        insert(&tx, &mut new_head, &entry).map_err(|e| AuditError::Open(e.to_string()))?;
    }
    tx.commit().map_err(|e| AuditError::Open(e.to_string()))?;
    *head = new_head;
    Ok(open.into_iter().map(|(id, _, _)| id).collect())
}

struct WriterState {
    conn: Connection,
    head: Head,
    max_batch: usize,
    writable: Arc<AtomicBool>,
    observer: Arc<dyn AuditObserver>,
    fsync_outcomes: bool,
    /// The connection's `synchronous` setting now: true for FULL.
    synced: bool,
    signer: Option<Arc<HeadSigner>>,
    sink: Option<Arc<dyn EntrySink>>,
}

impl WriterState {
    fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) {
        let mut group = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.next_request(&mut rx) {
            group.push(first);
            while group.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(req) => group.push(req),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
        tracing::debug!(target: "audit", "Audit writer stopped");
    }

    /// The next request to commit; `None` once every sender is gone. While the store is
    /// writable this blocks on the queue. While it is not, it polls the queue and probes the
    /// store every [`PROBE_INTERVAL`]: a probe that commits marks the store writable again.
    fn next_request(&mut self, rx: &mut mpsc::Receiver<AppendRequest>) -> Option<AppendRequest> {
        let mut last_probe = Instant::now();
        loop {
            if self.writable.load(Ordering::Relaxed) {
                return rx.blocking_recv();
            }
            match rx.try_recv() {
                Ok(req) => return Some(req),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if last_probe.elapsed() >= PROBE_INTERVAL {
                last_probe = Instant::now();
                if self.probe() {
                    tracing::info!(target: "audit", "Audit trail writable again");
                    self.writable.store(true, Ordering::Relaxed);
                    continue;
                }
            }
            std::thread::sleep(UNWRITABLE_POLL);
        }
    }

    /// A real write, committed and synced exactly like an append, that changes nothing in the
    /// trail: `user_version` rewritten with its own value (the schema version lives in its own
    /// table). It fails for the same reasons an append fails: read-only file, full disk, lock.
    fn probe(&mut self) -> bool {
        self.leave_failed_transaction();
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

    /// A failed COMMIT can leave the connection inside the transaction (SQLite keeps it open
    /// after SQLITE_BUSY and some I/O errors, and rusqlite's rollback-on-drop may fail too);
    /// every later `BEGIN` would then fail. Roll back whatever is left.
    fn leave_failed_transaction(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(target: "audit", error = %e, "Cannot roll back a failed audit transaction");
            }
        }
    }

    /// Commits a group in one transaction.
    ///
    /// A group with an intent (or a reconciliation, or anything but outcomes) is committed
    /// with `synchronous=FULL`: the fsync that makes the intent durable before the change is
    /// forwarded. A group of outcome entries only is committed with `synchronous=NORMAL`
    /// (unless `audit.fsync_outcomes`): in WAL mode that survives a crash of the process, and
    /// the next intent's fsync makes it durable against power loss too; an outcome lost to a
    /// power cut leaves its intent to be reconciled as `unknown`, never a false claim.
    fn commit_group(&mut self, group: &mut Vec<AppendRequest>) {
        self.leave_failed_transaction();
        let full = self.fsync_outcomes
            || group
                .iter()
                .any(|r| r.entries.iter().any(|e| e.kind != EntryKind::Completed));
        if full != self.synced {
            let pragma = if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if self.conn.execute_batch(pragma).is_ok() {
                self.synced = full;
            }
        }
        let started = Instant::now();
        let start_head = self.head.clone();
        let mut results: Vec<Result<Vec<ChainEntry>, AuditError>> = Vec::with_capacity(group.len());
        // A request that failed because of the store (I/O, full, read-only), not because of its
        // own entries (a constraint), means the trail is not writable even if the group commits.
        let mut store_failed = false;
        let outcome = (|| -> rusqlite::Result<()> {
            // IMMEDIATE takes the write lock first; the head is then re-read inside it, so an
            // entry appended by another writer (`audit prune`'s checkpoint) is chained onto,
            // not collided with.
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            self.head = Head::load_in(&tx)?;
            for req in group.iter() {
                let sp_head = self.head.clone();
                tx.execute_batch("SAVEPOINT request")?;
                let mut committed = Vec::with_capacity(req.entries.len());
                let mut failed = None;
                for entry in &req.entries {
                    let signed;
                    let entry = if entry.kind == EntryKind::SignedHead {
                        match sign_head(&tx, &self.head, entry, self.signer.as_deref())? {
                            Ok(SignedHead::Insert(e)) => {
                                signed = e;
                                &signed
                            }
                            Ok(SignedHead::Skip) => continue,
                            Err(why) => {
                                failed = Some(Err(why));
                                break;
                            }
                        }
                    } else {
                        entry
                    };
                    match insert_entry(&tx, &mut self.head, entry) {
                        Ok(c) => committed.push(c),
                        Err(e) => {
                            failed = Some(Ok(e));
                            break;
                        }
                    }
                }
                match failed {
                    None => {
                        tx.execute_batch("RELEASE request")?;
                        results.push(Ok(committed));
                    }
                    Some(e) => {
                        // A refused signed head is the request's own fault, like a constraint.
                        store_failed |= e.as_ref().is_ok_and(|e| {
                            !matches!(
                                e.sqlite_error_code(),
                                Some(rusqlite::ErrorCode::ConstraintViolation)
                            )
                        });
                        tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
                        self.head = sp_head;
                        let why = e.map_or_else(|why| why, |e| e.to_string());
                        results.push(Err(AuditError::Write(why)));
                    }
                }
            }
            tx.commit()
        })();
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                self.writable.store(!store_failed, Ordering::Relaxed);
                let mut outcomes: Vec<Outcome> = Vec::new();
                let mut ok_requests = 0;
                for (req, res) in group.drain(..).zip(results) {
                    let res = match res {
                        Ok(stored) => {
                            ok_requests += 1;
                            outcomes.extend(req.entries.iter().filter_map(|e| e.outcome));
                            if let Some(sink) = &self.sink {
                                stored.iter().for_each(|e| sink.committed(e));
                            }
                            Ok(stored
                                .into_iter()
                                .map(|e| Committed {
                                    seq: e.seq,
                                    hash: e.hash,
                                })
                                .collect())
                        }
                        Err(e) => {
                            self.observer.write_failed();
                            Err(e)
                        }
                    };
                    self.observer
                        .request_latency(req.queued_at.elapsed().as_secs_f64());
                    // A dropped receiver means the request was cancelled; the entries stay.
                    let _ = req.reply.send(res);
                }
                self.observer.committed(ok_requests, &outcomes, seconds);
            }
            Err(e) => {
                self.head = start_head;
                self.writable.store(false, Ordering::Relaxed);
                tracing::error!(target: "audit", error = %e, requests = group.len(), "Audit commit failed");
                let err = AuditError::Write(e.to_string());
                for req in group.drain(..) {
                    self.observer.write_failed();
                    let _ = req.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
