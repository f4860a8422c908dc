//! The audit trail: what an entry holds, and [`AuditLog`], the handle the pipeline appends
//! through.
//!
//! - `record` — the typed intent, outcome and event every writer and reader uses
//! - `backend` — the [`AuditStore`] trait a storage backend implements; `store` — SQLite;
//!   `pg_store` — PostgreSQL, shared by replicas (`pg_conn` connects, `pg_migrate` its schema,
//!   `pg_query` its reader, `pg_url` the `[audit] database` URL)
//! - `writer` — the group-commit writer thread, generic over the backend
//! - `chain` — canonical form and hashes; `query` — the readers ([`query::TrailReader`]), whose
//!   event query `event_query` builds from the filters given
//!
//! One writer thread owns the store's connection; the async side only sends it
//! requests over a bounded channel and awaits the commit. A request's entries travel together
//! in one message and are committed in one transaction, so they are never split by a failure;
//! many requests' messages are committed together (group commit: one fsync per batch).
//! Reading (`query.rs`) uses its own connections and never blocks the writer (WAL).

pub mod backend;
pub mod backup;
pub mod chain;
mod event_query;
pub mod export;
pub mod migrate;
pub mod ocsf;
pub mod pg_conn;
pub mod pg_lease;
pub mod pg_locks;
pub mod pg_migrate;
pub mod pg_prune;
pub mod pg_query;
pub mod pg_store;
pub mod pg_url;
pub mod prune;
pub mod query;
pub mod record;
pub mod render;
pub mod signing;
pub mod store;
pub mod syslog;
pub mod verify;
pub mod writer;

pub use backend::AuditStore;

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The three kinds of entry (docs/architecture.md, The trail's guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The intent: caller, request, prior state, decision. Durable before anything is forwarded.
    Received,
    /// The outcome seen from the portal.
    Completed,
    /// Written at start-up for an intent whose outcome was never recorded.
    Reconciled,
    /// Written by `audit prune`: the entries up to `pruned_through_seq` were removed, and the
    /// chain continues from `pruned_through_hash`.
    Checkpoint,
    /// An Ed25519 signature over the entry before it (`[audit] signing_key_file`); the writer
    /// fills in the signed position and the signature when it appends the entry.
    SignedHead,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Received => "received",
            EntryKind::Completed => "completed",
            EntryKind::Reconciled => "reconciled",
            EntryKind::Checkpoint => "checkpoint",
            EntryKind::SignedHead => "signed_head",
        }
    }
}

/// How an audited mutation ended (docs/architecture.md, Contracts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The portal answered with success.
    Applied,
    /// The portal answered with an error (bindings may still have changed: see `after`).
    RejectedByPortal,
    /// Refused by the proxy; nothing was forwarded.
    Denied,
    /// Forwarded, but no answer was seen (timeout, broken connection, crash).
    Unknown,
    /// Could not be delivered to the portal at all; nothing reached it.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::RejectedByPortal => "rejected_by_portal",
            Outcome::Denied => "denied",
            Outcome::Unknown => "unknown",
            Outcome::Failed => "failed",
        }
    }

    pub const ALL: [Outcome; 5] = [
        Outcome::Applied,
        Outcome::RejectedByPortal,
        Outcome::Denied,
        Outcome::Unknown,
        Outcome::Failed,
    ];
}

/// One entry to append. `fields` holds the kind-specific content (for `received`: caller,
/// client_addr, request, before, decision, rule, reason, batch; for outcomes: outcome,
/// portal_status, portal_error, after). The writer adds `seq`, `time`, `event_id`, `kind`,
/// `method` and `solution_id` to the hashed payload.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event_id: String,
    pub kind: EntryKind,
    pub method: String,
    pub solution_id: Option<i64>,
    pub outcome: Option<Outcome>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One chain entry exactly as stored: everything needed to recompute the chain
/// (`audit export --entries`, the syslog feed; `docs/trail-format.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChainEntry {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    /// The hashed text, byte for byte.
    pub payload: String,
}

/// Receives every entry once its transaction has committed (the syslog feed). Called on the
/// writer thread: it must not block.
pub trait EntrySink: Send + Sync + 'static {
    fn committed(&self, entry: &ChainEntry);
}

/// Where an entry landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub seq: i64,
    pub hash: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    /// The queue to the writer is full: the store is not keeping up.
    #[error("audit queue is full")]
    QueueFull,
    /// The writer has stopped.
    #[error("audit writer is not running")]
    Closed,
    /// SQLite refused the write (read-only file, disk full, locked, ...).
    #[error("audit write failed: {0}")]
    Write(String),
    #[error("audit store cannot be opened: {0}")]
    Open(String),
}

pub(crate) struct AppendRequest {
    pub entries: Vec<Entry>,
    pub reply: oneshot::Sender<Result<Vec<Committed>, AuditError>>,
    pub queued_at: Instant,
}

/// Observations the writer reports (to metrics), kept out of this module so it does not depend
/// on how they are exported.
pub trait AuditObserver: Send + Sync + 'static {
    /// A group commit finished: how many requests, the outcomes it recorded, and how long the
    /// transaction took.
    fn committed(&self, requests: usize, outcomes: &[Outcome], seconds: f64);
    /// A write failed.
    fn write_failed(&self);
    /// How long a request waited in the queue plus the commit.
    fn request_latency(&self, seconds: f64);
}

/// The async handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AppendRequest>,
    capacity: usize,
    writable: Arc<AtomicBool>,
}

impl AuditLog {
    pub(crate) fn new(
        tx: mpsc::Sender<AppendRequest>,
        capacity: usize,
        writable: Arc<AtomicBool>,
    ) -> AuditLog {
        AuditLog {
            tx,
            capacity,
            writable,
        }
    }

    /// Appends one request's entries and waits until they are durable.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<Vec<Committed>, AuditError> {
        let (reply, rx) = oneshot::channel();
        let req = AppendRequest {
            entries,
            reply,
            queued_at: Instant::now(),
        };
        self.tx.try_send(req).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AuditError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => AuditError::Closed,
        })?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Requests waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }

    /// False after the last write attempt failed (until one succeeds again).
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed) && !self.tx.is_closed()
    }
}

/// A fresh event id: UUIDv7, so ids sort by creation time.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// RFC 3339 UTC with milliseconds, the trail's time format.
pub fn now_rfc3339() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

/// A time argument (`2026-11-24` or any RFC 3339 time) in the trail's own format, so string
/// comparison in SQL orders it correctly.
pub fn parse_time_arg(s: &str) -> Result<String, String> {
    let bad =
        || format!("\"{s}\" is not a date (2026-11-24) or an RFC 3339 time (2026-11-24T10:00:00Z)");
    let t = s.trim();
    if t.len() == 10 {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let d = time::Date::parse(t, &fmt).map_err(|_| bad())?;
        return Ok(format_time(d.midnight().assume_utc()));
    }
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    Ok(format_time(dt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_arguments_are_normalised_to_utc() {
        assert_eq!(
            parse_time_arg("2026-11-24").as_deref(),
            Ok("2026-11-24T00:00:00.000Z")
        );
        assert_eq!(
            parse_time_arg("2026-11-24T10:00:00+03:00").as_deref(),
            Ok("2026-11-24T07:00:00.000Z")
        );
        assert!(parse_time_arg("last week").is_err());
    }
}
