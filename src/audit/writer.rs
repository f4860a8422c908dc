//! The writer thread: commits queued requests in groups onto any [`AuditStore`], chains every
//! entry, signs heads, and reconciles unfinished intents at start-up.
//!
//! Group commit: the thread blocks for one request, then takes whatever else is already queued
//! (up to `max_batch`), and commits them all in one transaction — one fsync for the lot. Each
//! request sits in its own savepoint, so a request whose insert fails is rolled back alone and
//! its entries are never half-written; a failed commit fails every request of the group, and the
//! chain head stays where it was.

use super::backend::{seal, AppendFailure, AuditStore, Head, StoreFailure};
use super::record::{Reconciliation, Subject};
use super::signing::HeadSigner;
use super::{
    AppendRequest, AuditError, AuditLog, AuditObserver, ChainEntry, Committed, Entry, EntryKind,
    EntrySink, Outcome,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// While the store is not writable the writer polls its queue at this interval (instead of
/// blocking on it), so that it can also probe the store between requests.
const UNWRITABLE_POLL: Duration = Duration::from_millis(20);

/// How often a store that is not writable is probed, so that readiness comes back on its own
/// once the fault is gone, without waiting for a watched call to succeed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The running writer; join it after the last [`AuditLog`] clone is dropped to be sure every
/// queued entry was committed.
pub struct Writer {
    thread: std::thread::JoinHandle<()>,
    /// Stopped once the writer has committed its last request (a PostgreSQL replica's lease,
    /// which must outlive every intent it covers).
    after: Option<Box<dyn FnOnce() + Send>>,
}

impl Writer {
    /// Waits for the writer to commit what is queued and stop. Call after dropping every
    /// `AuditLog` clone (the thread stops when the channel closes).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!(target: "audit", "Audit writer thread panicked");
        }
        if let Some(after) = self.after {
            after();
        }
    }

    /// Runs `after` once the writer has stopped (in `join`).
    pub(super) fn then(mut self, after: Box<dyn FnOnce() + Send>) -> Writer {
        self.after = Some(after);
        self
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
    /// Also fsync groups that hold only outcome entries (see `WriterState::commit_group`).
    pub fsync_outcomes: bool,
    /// Signs `signed_head` entries; without it they are refused.
    pub signer: Option<Arc<HeadSigner>>,
    /// Told about every committed entry (the syslog feed).
    pub sink: Option<Arc<dyn EntrySink>>,
}

/// Reconciles what an earlier run left unfinished and starts the writer thread on `store`.
pub fn start<S: AuditStore>(
    mut store: S,
    schema_version: i64,
    opts: OpenOptions,
    observer: Arc<dyn AuditObserver>,
) -> Result<(AuditLog, Writer, OpenReport), AuditError> {
    let open = |e: StoreFailure| AuditError::Open(e.0);
    let mut head = store.head().map_err(open)?;
    let reconciled = reconcile(&mut store, &mut head).map_err(open)?;
    let report = OpenReport {
        schema_version,
        entries: head.seq,
        reconciled,
    };
    let (tx, rx) = mpsc::channel(opts.queue_capacity);
    let writable = Arc::new(AtomicBool::new(true));
    let state = WriterState {
        store,
        head,
        max_batch: opts.max_batch,
        writable: writable.clone(),
        observer,
        fsync_outcomes: opts.fsync_outcomes,
        durable: true,
        signer: opts.signer,
        sink: opts.sink,
    };
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || state.run(rx))
        .map_err(|e| AuditError::Open(format!("cannot start the writer thread: {e}")))?;
    let log = AuditLog::new(tx, opts.queue_capacity, writable);
    Ok((
        log,
        Writer {
            thread,
            after: None,
        },
        report,
    ))
}

/// Gives every intent that has no outcome a `reconciled` entry with outcome `unknown`: the
/// proxy stopped between recording the intent and seeing the portal's answer, so whether the
/// change was applied is not known. Which intents count is the store's to say (on PostgreSQL,
/// only those of replicas whose lease expired).
///
/// The intents are read again under the write lock `begin` takes: two replicas reconciling at
/// once then write one outcome per intent, the second seeing the first's (and the outcome's
/// unique index refuses a second one should a store not hold its lock).
pub(super) fn reconcile<S: AuditStore>(
    store: &mut S,
    head: &mut Head,
) -> Result<Vec<String>, StoreFailure> {
    if store.open_intents()?.is_empty() {
        return Ok(Vec::new());
    }
    let mut new_head = store.begin()?;
    let open = match store.open_intents() {
        Ok(open) if open.is_empty() => {
            store.abandon();
            return Ok(Vec::new());
        }
        Ok(open) => open,
        Err(e) => {
            store.abandon();
            return Err(e);
        }
    };
    for (event_id, method, solution_id) in &open {
        let entry = Reconciliation {
            reason: "the proxy stopped before the portal's answer was recorded".into(),
        }
        .entry(Subject {
            event_id,
            method,
            solution_id: *solution_id,
        });
        let sealed = seal(&mut new_head, &entry);
        if let Err(e) = store.append(&entry, &sealed) {
            store.abandon();
            return Err(match e {
                AppendFailure::Refused(why) => StoreFailure(why),
                AppendFailure::Store(f) => f,
            });
        }
    }
    if let Err(e) = store.commit() {
        store.abandon();
        return Err(e);
    }
    *head = new_head;
    Ok(open.into_iter().map(|(id, _, _)| id).collect())
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
fn sign_head<S: AuditStore>(
    store: &mut S,
    head: &Head,
    entry: &Entry,
    signer: Option<&HeadSigner>,
) -> Result<SignedHead, AppendFailure> {
    let Some(signer) = signer else {
        return Err(AppendFailure::Refused(
            "no [audit] signing_key_file is configured".into(),
        ));
    };
    if head.seq == 0 {
        return Ok(SignedHead::Skip);
    }
    let kind = store.kind_at(head.seq).map_err(AppendFailure::Store)?;
    if kind.as_deref() == Some(EntryKind::SignedHead.as_str()) {
        return Ok(SignedHead::Skip);
    }
    let mut signed = entry.clone();
    signed.fields.extend(signer.sign(head.seq, &head.hash));
    Ok(SignedHead::Insert(signed))
}

struct WriterState<S> {
    store: S,
    head: Head,
    max_batch: usize,
    writable: Arc<AtomicBool>,
    observer: Arc<dyn AuditObserver>,
    fsync_outcomes: bool,
    /// What the store was last told: true for commits durable against power loss.
    durable: bool,
    signer: Option<Arc<HeadSigner>>,
    sink: Option<Arc<dyn EntrySink>>,
}

/// Each request's result inside a group, and whether the store itself failed on one of them.
struct GroupResults {
    results: Vec<Result<Vec<ChainEntry>, AuditError>>,
    /// A request failed because of the store (I/O, full, read-only), not because of its own
    /// entries (a constraint): the trail is not writable even if the group commits.
    store_failed: bool,
}

impl<S: AuditStore> WriterState<S> {
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
                self.store.abandon();
                if self.store.probe() {
                    tracing::info!(target: "audit", "Audit trail writable again");
                    self.writable.store(true, Ordering::Relaxed);
                    continue;
                }
            }
            std::thread::sleep(UNWRITABLE_POLL);
        }
    }

    /// Commits a group in one transaction.
    ///
    /// A group with an intent (or a reconciliation, or anything but outcomes) is committed
    /// durable (SQLite: `synchronous=FULL`): the fsync that makes the intent durable before the
    /// change is forwarded. A group of outcome entries only is committed without it (unless
    /// `audit.fsync_outcomes`): in WAL mode that survives a crash of the process, and the next
    /// intent's fsync makes it durable against power loss too; an outcome lost to a power cut
    /// leaves its intent to be reconciled as `unknown`, never a false claim.
    fn commit_group(&mut self, group: &mut Vec<AppendRequest>) {
        self.store.abandon();
        let durable = self.fsync_outcomes
            || group
                .iter()
                .any(|r| r.entries.iter().any(|e| e.kind != EntryKind::Completed));
        if durable != self.durable {
            self.store.set_durable(durable);
            self.durable = durable;
        }
        let started = Instant::now();
        let start_head = self.head.clone();
        let outcome = self.write_group(group).and_then(|results| {
            self.store.commit()?;
            Ok(results)
        });
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(results) => self.deliver(group, results, seconds),
            Err(e) => {
                self.store.abandon();
                self.head = start_head;
                self.fail_group(group, &e);
            }
        }
    }

    /// Writes every request of the group inside one transaction, each in its own savepoint.
    fn write_group(&mut self, group: &[AppendRequest]) -> Result<GroupResults, StoreFailure> {
        // The head is re-read under the write lock, so an entry appended by another writer
        // (`audit prune`'s checkpoint, another replica) is chained onto, not collided with.
        self.head = self.store.begin()?;
        let mut out = GroupResults {
            results: Vec::with_capacity(group.len()),
            store_failed: false,
        };
        for req in group {
            let sp_head = self.head.clone();
            self.store.savepoint()?;
            match self.write_request(&req.entries) {
                Ok(committed) => {
                    self.store.release()?;
                    out.results.push(Ok(committed));
                }
                Err(e) => {
                    self.store.rollback_to_savepoint()?;
                    self.head = sp_head;
                    let why = match e {
                        // A refused signed head is the request's own fault, like a constraint.
                        AppendFailure::Refused(why) => why,
                        AppendFailure::Store(f) => {
                            out.store_failed = true;
                            f.0
                        }
                    };
                    out.results.push(Err(AuditError::Write(why)));
                }
            }
        }
        Ok(out)
    }

    /// Seals and stores one request's entries, advancing the head.
    fn write_request(&mut self, entries: &[Entry]) -> Result<Vec<ChainEntry>, AppendFailure> {
        let mut committed = Vec::with_capacity(entries.len());
        for entry in entries {
            let signed;
            let entry = if entry.kind == EntryKind::SignedHead {
                match sign_head(&mut self.store, &self.head, entry, self.signer.as_deref())? {
                    SignedHead::Insert(e) => {
                        signed = e;
                        &signed
                    }
                    SignedHead::Skip => continue,
                }
            } else {
                entry
            };
            // On failure the caller rolls the request back and puts the head back with it.
            let sealed = seal(&mut self.head, entry);
            self.store.append(entry, &sealed)?;
            committed.push(sealed.chain);
        }
        Ok(committed)
    }

    /// Answers every request of a committed group and reports it.
    fn deliver(&mut self, group: &mut Vec<AppendRequest>, results: GroupResults, seconds: f64) {
        self.writable
            .store(!results.store_failed, Ordering::Relaxed);
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut ok_requests = 0;
        for (req, res) in group.drain(..).zip(results.results) {
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

    /// Fails every request of a group whose transaction did not commit.
    fn fail_group(&mut self, group: &mut Vec<AppendRequest>, e: &StoreFailure) {
        self.writable.store(false, Ordering::Relaxed);
        tracing::error!(target: "audit", error = %e, requests = group.len(), "Audit commit failed");
        let err = AuditError::Write(e.0.clone());
        for req in group.drain(..) {
            self.observer.write_failed();
            let _ = req.reply.send(Err(err.clone()));
        }
    }
}
