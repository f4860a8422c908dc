//! The PostgreSQL trail: an [`AuditStore`] backend several replicas can append to at once,
//! keeping one contiguous chain. The writer thread (`writer.rs`) still owns the chain; this only
//! stores rows.
//!
//! Each group's transaction first takes the one row of `audit_writer_lock` `FOR UPDATE` and
//! only then reads the head, so a writer in another process that committed meanwhile is chained
//! onto; the lock is released by the commit. Requests are savepoints, as on SQLite. Round trips
//! are what a group costs here: the start is one, and a request's release travels with the
//! next request's savepoint. Durability
//! is `synchronous_commit`: `on` (the WAL flushed before COMMIT returns) for groups holding an
//! intent, `off` for outcome-only groups unless `audit.fsync_outcomes` — a lost outcome leaves
//! its intent to be reconciled as `unknown`, as on SQLite.
//!
//! A connection that broke (the server restarted, the network dropped) is opened again at the
//! next `begin` or probe, so the trail becomes writable again without a restart.

use super::backend::{AppendFailure, AuditStore, Head, OpenIntent, Sealed, StoreFailure};
use super::pg_conn::{self, describe};
use super::writer::{self, OpenOptions, OpenReport, Writer};
use super::{pg_lease, pg_migrate, AuditError, AuditLog, AuditObserver, Entry, EntryKind, Outcome};
use crate::config::PgTrail;
use std::sync::Arc;

/// The `application_name` the writer's connections carry (seen in `pg_stat_activity`).
const APPLICATION: &str = "b24-audit-proxy writer";

/// How long the probe waits for the writers' lock held elsewhere, so that queued requests are
/// not held up behind it.
const PROBE_LOCK_TIMEOUT: &str = "100ms";

/// One entry (the writer's appends, and `audit prune`'s checkpoint: `pg_prune.rs`).
pub(super) const INSERT: &str = "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash, instance_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Intents without an outcome that may be reconciled: those recorded before intents named their
/// instance, those of instances whose lease expired or that hold none, and (`$2`, at start-up
/// only) this instance's own, left by an earlier run under the same id. A live replica's are
/// never among them. Found through the event index's pending rows, not a scan of the trail.
const OPEN_INTENTS: &str = "SELECT r.event_id, r.method, r.solution_id FROM audit_events e \
     JOIN audit_entries r ON r.seq = e.seq \
     WHERE e.outcome IS NULL AND r.kind = 'received' AND (r.instance_id IS NULL \
        OR (r.instance_id = $1 AND $2) \
        OR (r.instance_id <> $1 AND NOT EXISTS (SELECT 1 FROM audit_leases l \
            WHERE l.instance_id = r.instance_id AND l.expires_at > now()))) \
     ORDER BY e.seq";

/// Takes or renews this instance's lease, timed by the database's clock.
const RENEW_LEASE: &str = "INSERT INTO audit_leases (instance_id, heartbeat, expires_at) \
     VALUES ($1, now(), now() + $2::bigint * interval '1 millisecond') \
     ON CONFLICT (instance_id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat, expires_at = EXCLUDED.expires_at";

pub(super) const HEAD: &str = "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1";

/// The writers' lock (the statement `BEGIN` holds too): `audit prune` takes it as well.
pub(super) const WRITERS_LOCK: &str = "SELECT 1 FROM audit_writer_lock FOR UPDATE";

/// A group's start, sent as one simple query: the transaction, the writers' lock, the head read
/// under it, and the savepoint of the group's first request.
const BEGIN: &str = "BEGIN; SELECT 1 FROM audit_writer_lock FOR UPDATE; \
     SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1; SAVEPOINT request";

/// The writer's session settings, set on every connection it opens:
/// - commits durable until told otherwise (`set_durable`), whatever the server's default;
/// - a writers' lock held elsewhere for longer than SQLite's busy timeout fails the group
///   rather than holding every queued request;
/// - a session left idle inside a transaction (a replica frozen or cut off while it held the
///   lock) is ended by the server, so the lock does not stay taken.
const SESSION: &str = "SET synchronous_commit = on; SET lock_timeout = '5s'; \
     SET idle_in_transaction_session_timeout = '10s'";

/// SQLSTATE class 23: integrity constraint violation (unique, check, not null, foreign key).
const CONSTRAINT_CLASS: &str = "23";

/// Connects, applies migrations, reconciles unfinished intents and starts the writer thread.
/// Safe to call from async code: the blocking client is used on a thread of its own.
pub fn open(
    trail: &PgTrail,
    opts: OpenOptions,
    observer: Arc<dyn AuditObserver>,
) -> Result<(AuditLog, Writer, OpenReport), AuditError> {
    let trail = trail.clone();
    pg_conn::off_runtime(move || {
        let mut store = PgStore::connect(trail.clone())?;
        // The lease first: from here on no other replica reconciles what this one records.
        store
            .renew_lease()
            .map_err(|e| AuditError::Open(format!("cannot take the replica lease: {e}")))?;
        let version = store.schema_version;
        let (log, writer, report) = writer::start(store, version, opts, observer)?;
        let keeper = pg_lease::Keeper::start(trail)?;
        Ok((log, writer.then(Box::new(move || keeper.stop())), report))
    })
}

/// The PostgreSQL backend: the writer's connection.
pub struct PgStore {
    trail: PgTrail,
    client: postgres::Client,
    insert: postgres::Statement,
    schema_version: i64,
    /// A transaction is open on this connection (`begin` to `commit`/`abandon`).
    in_tx: bool,
    /// A statement failed inside the transaction: PostgreSQL refuses everything but a rollback
    /// until the savepoint is rolled back to, and would turn a COMMIT into a silent ROLLBACK.
    aborted: bool,
    /// `release` was called and not yet sent (see `release`).
    pending_release: bool,
    /// `begin` made the savepoint the group's first request starts in.
    savepoint_ready: bool,
    /// What the session's `synchronous_commit` is now (true: `on`).
    durable: bool,
    /// What the writer last asked `set_durable` for: `begin` makes the session match it before
    /// a group starts, so an intent is never committed without its flush because a SET failed.
    wanted_durable: bool,
    /// `open_intents` includes this instance's own (the writer's connection at start-up: they
    /// are an earlier run's); the lease keeper's connection leaves them to the live writer.
    reconcile_own: bool,
    /// Settings of this connection's own beyond [`SESSION`] (`session`), made again on a new
    /// connection.
    extra_session: Option<String>,
}

fn failure(e: postgres::Error) -> StoreFailure {
    StoreFailure(describe(&e))
}

impl PgStore {
    /// Opens the writer's connection and brings the schema up to date.
    pub fn connect(trail: PgTrail) -> Result<PgStore, AuditError> {
        Self::connect_as(trail, APPLICATION, true)
    }

    /// A connection named `application`; `reconcile_own` as the field says.
    pub(super) fn connect_as(
        trail: PgTrail,
        application: &str,
        reconcile_own: bool,
    ) -> Result<PgStore, AuditError> {
        let mut client = pg_conn::connect(&trail, application)?;
        let schema_version = pg_migrate::apply(&mut client)
            .map_err(|e| AuditError::Open(format!("{}: {e}", trail.url)))?;
        client
            .batch_execute(SESSION)
            .map_err(|e| AuditError::Open(describe(&e)))?;
        let insert = client
            .prepare(INSERT)
            .map_err(|e| AuditError::Open(describe(&e)))?;
        Ok(PgStore {
            trail,
            client,
            insert,
            schema_version,
            in_tx: false,
            aborted: false,
            pending_release: false,
            savepoint_ready: false,
            durable: true,
            wanted_durable: true,
            reconcile_own,
            extra_session: None,
        })
    }

    /// Runs session settings on this connection, and on every one opened again after it.
    pub(super) fn session(&mut self, sql: &str) -> Result<(), StoreFailure> {
        self.client.batch_execute(sql).map_err(failure)?;
        self.extra_session = Some(sql.to_owned());
        Ok(())
    }

    /// This instance's id among the replicas.
    pub(super) fn instance_id(&self) -> &str {
        &self.trail.replica.instance_id
    }

    /// Takes or renews this instance's lease for `[audit] lease_timeout` from now.
    pub(super) fn renew_lease(&mut self) -> Result<(), StoreFailure> {
        self.reconnect_if_closed()?;
        let ms = i64::try_from(self.trail.replica.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let id = self.trail.replica.instance_id.clone();
        self.client
            .execute(RENEW_LEASE, &[&id, &ms])
            .map(|_| ())
            .map_err(failure)
    }

    /// Gives the lease up: this instance stopped with every intent it recorded answered.
    pub(super) fn drop_lease(&mut self) -> Result<(), StoreFailure> {
        self.reconnect_if_closed()?;
        let id = self.trail.replica.instance_id.clone();
        self.client
            .execute("DELETE FROM audit_leases WHERE instance_id = $1", &[&id])
            .map(|_| ())
            .map_err(failure)
    }

    /// A new connection when the old one is closed; false when none could be opened.
    fn reconnect_if_closed(&mut self) -> Result<(), StoreFailure> {
        if !self.client.is_closed() {
            return Ok(());
        }
        let mut client =
            pg_conn::connect(&self.trail, APPLICATION).map_err(|e| StoreFailure(e.to_string()))?;
        // The same session as the first connection: lock and idle-in-transaction limits.
        client.batch_execute(SESSION).map_err(failure)?;
        if let Some(extra) = &self.extra_session {
            client.batch_execute(extra).map_err(failure)?;
        }
        self.insert = client.prepare(INSERT).map_err(failure)?;
        self.client = client;
        self.in_tx = false;
        self.aborted = false;
        let durable = self.durable;
        self.durable = !durable;
        self.set_durable(durable);
        tracing::info!(target: "audit", database = %self.trail.url, "Audit trail connection opened again");
        Ok(())
    }

    /// Makes the session's `synchronous_commit` what the writer wants.
    fn apply_durable(&mut self) -> Result<(), StoreFailure> {
        if self.durable == self.wanted_durable {
            return Ok(());
        }
        let sql = if self.wanted_durable {
            "SET synchronous_commit = on"
        } else {
            "SET synchronous_commit = off"
        };
        self.client.batch_execute(sql).map_err(failure)?;
        self.durable = self.wanted_durable;
        Ok(())
    }

    /// Sends a release that `release` deferred, when something other than the next savepoint
    /// comes first.
    fn flush_release(&mut self) -> Result<(), StoreFailure> {
        if std::mem::take(&mut self.pending_release) {
            self.in_tx_exec("RELEASE SAVEPOINT request")?;
        }
        Ok(())
    }

    /// Runs `sql` inside the transaction, noting a failure (see `aborted`).
    fn in_tx_exec(&mut self, sql: &str) -> Result<(), StoreFailure> {
        self.client.batch_execute(sql).map_err(|e| {
            self.aborted = true;
            failure(e)
        })
    }

    fn read_head(&mut self) -> Result<Head, postgres::Error> {
        Ok(match self.client.query_opt(HEAD, &[])? {
            Some(row) => Head {
                seq: row.try_get(0)?,
                hash: row.try_get(1)?,
            },
            None => Head::genesis(),
        })
    }
}

impl AuditStore for PgStore {
    fn head(&mut self) -> Result<Head, StoreFailure> {
        self.read_head().map_err(failure)
    }

    fn open_intents(&mut self) -> Result<Vec<OpenIntent>, StoreFailure> {
        let id = self.trail.replica.instance_id.clone();
        let own = self.reconcile_own;
        let in_tx = self.in_tx;
        let rows = self.client.query(OPEN_INTENTS, &[&id, &own]).map_err(|e| {
            self.aborted |= in_tx;
            failure(e)
        })?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, postgres::Error>>()
            .map_err(failure)
    }

    fn set_durable(&mut self, durable: bool) {
        self.wanted_durable = durable;
        if let Err(e) = self.apply_durable() {
            tracing::warn!(target: "audit", error = %e, "Cannot change the audit trail's synchronous_commit");
        }
    }

    /// One round trip: the transaction, the lock, the head and the first request's savepoint.
    fn begin(&mut self) -> Result<Head, StoreFailure> {
        self.reconnect_if_closed()?;
        self.apply_durable()?;
        self.in_tx = true;
        self.aborted = false;
        self.pending_release = false;
        self.savepoint_ready = false;
        // The lock first, then the head: under READ COMMITTED the head query's snapshot is
        // taken after the lock was granted, so it sees what the lock's last holder committed.
        let messages = self.client.simple_query(BEGIN).map_err(|e| {
            self.aborted = true;
            failure(e)
        })?;
        self.savepoint_ready = true;
        // The head is the row of the second statement (the lock's row comes first).
        let mut statement = 0;
        let mut head = None;
        for m in &messages {
            match m {
                postgres::SimpleQueryMessage::CommandComplete(_) => statement += 1,
                postgres::SimpleQueryMessage::Row(row) if statement == 2 => head = Some(row),
                _ => {}
            }
        }
        let Some(row) = head else {
            return Ok(Head::genesis());
        };
        let seq = row
            .get(0)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| StoreFailure("the trail's head has no readable seq".into()))?;
        let hash = row
            .get(1)
            .ok_or_else(|| StoreFailure("the trail's head has no hash".into()))?;
        Ok(Head {
            seq,
            hash: hash.to_owned(),
        })
    }

    /// The savepoint `begin` made, or the previous request's release and this savepoint in one
    /// round trip.
    fn savepoint(&mut self) -> Result<(), StoreFailure> {
        if std::mem::take(&mut self.savepoint_ready) {
            return Ok(());
        }
        if std::mem::take(&mut self.pending_release) {
            return self.in_tx_exec("RELEASE SAVEPOINT request; SAVEPOINT request");
        }
        self.in_tx_exec("SAVEPOINT request")
    }

    /// Deferred to the next `savepoint` (or dropped by `commit`, which releases every
    /// savepoint): a release alone changes nothing another statement could see.
    fn release(&mut self) -> Result<(), StoreFailure> {
        self.pending_release = true;
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreFailure> {
        self.flush_release()?;
        self.client
            .batch_execute("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request")
            .map_err(failure)?;
        self.aborted = false;
        Ok(())
    }

    fn append(&mut self, entry: &Entry, sealed: &Sealed) -> Result<(), AppendFailure> {
        self.flush_release().map_err(AppendFailure::Store)?;
        let kind = entry.kind.as_str();
        let outcome = entry.outcome.map(Outcome::as_str);
        // Intents name their instance, so that only an expired lease's are reconciled.
        let instance = (entry.kind == EntryKind::Received).then(|| self.instance_id().to_owned());
        let result = self.client.execute(
            &self.insert,
            &[
                &sealed.chain.seq,
                &entry.event_id,
                &kind,
                &sealed.time,
                &entry.method,
                &entry.solution_id,
                &outcome,
                &sealed.chain.payload,
                &sealed.chain.prev_hash,
                &sealed.chain.hash,
                &instance,
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                self.aborted = true;
                let constraint = e
                    .code()
                    .is_some_and(|c| c.code().starts_with(CONSTRAINT_CLASS));
                Err(if constraint {
                    AppendFailure::Refused(describe(&e))
                } else {
                    AppendFailure::Store(failure(e))
                })
            }
        }
    }

    fn kind_at(&mut self, seq: i64) -> Result<Option<String>, StoreFailure> {
        self.flush_release()?;
        let row = self
            .client
            .query_opt("SELECT kind FROM audit_entries WHERE seq = $1", &[&seq])
            .map_err(|e| {
                self.aborted = true;
                failure(e)
            })?;
        row.map(|r| r.try_get(0)).transpose().map_err(failure)
    }

    fn commit(&mut self) -> Result<(), StoreFailure> {
        if self.aborted {
            return Err(StoreFailure(
                "the audit transaction failed and cannot be committed".into(),
            ));
        }
        self.pending_release = false;
        self.savepoint_ready = false;
        self.client.batch_execute("COMMIT").map_err(failure)?;
        self.in_tx = false;
        Ok(())
    }

    /// Rolls back what a failure left open; cheap when nothing is (the writer calls it before
    /// every group).
    fn abandon(&mut self) {
        if !self.in_tx {
            return;
        }
        self.in_tx = false;
        self.aborted = false;
        self.pending_release = false;
        self.savepoint_ready = false;
        if self.client.is_closed() {
            return;
        }
        if let Err(e) = self.client.batch_execute("ROLLBACK") {
            tracing::warn!(target: "audit", error = %describe(&e), "Cannot roll back a failed audit transaction");
        }
    }

    /// Takes the writers' lock (waiting briefly) and rewrites `probed_at`, committed: it fails
    /// for the reasons an append fails — the server gone, read-only, out of space, the lock held.
    fn probe(&mut self) -> bool {
        if let Err(e) = self.reconnect_if_closed() {
            tracing::debug!(target: "audit", error = %e, "Audit trail still not reachable");
            return false;
        }
        let result = (|| -> Result<(), postgres::Error> {
            let mut tx = self.client.transaction()?;
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{PROBE_LOCK_TIMEOUT}'; \
                 UPDATE audit_writer_lock SET probed_at = now()"
            ))?;
            tx.commit()
        })();
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(target: "audit", error = %describe(&e), "Audit trail still not writable");
                false
            }
        }
    }
}
