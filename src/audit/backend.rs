//! [`AuditStore`]: what the writer needs from the place the chain is kept. The group-commit
//! writer (`writer.rs`) owns the chain — sequence numbers, hashes, signed heads, savepoints per
//! request, when to fsync — and a backend only stores rows inside transactions. SQLite
//! (`store.rs`) is the first backend; a shared database for several replicas implements the same
//! trait, taking its write lock in [`AuditStore::begin`] and reading the head under it.

use super::chain::{canonical_json, entry_hash, FORM, GENESIS};
use super::{now_rfc3339, ChainEntry, Entry};
use serde_json::json;

/// The end of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

impl Head {
    /// The position before the first entry of an empty trail.
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// An entry sealed into the chain: its stored form and the time it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub chain: ChainEntry,
    pub time: String,
}

/// Seals `entry` after `head` and advances `head`: the hashed payload (the entry's fields plus
/// position, time, identity and outcome) in canonical form, and its hash.
pub fn seal(head: &mut Head, entry: &Entry) -> Sealed {
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
    let chain = ChainEntry {
        seq,
        prev_hash: std::mem::replace(&mut head.hash, hash.clone()),
        hash,
        payload: text,
    };
    head.seq = seq;
    Sealed { chain, time }
}

/// The store could not do what was asked (I/O, full, read-only, locked, gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure(pub String);

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why one entry was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendFailure {
    /// The entry itself was refused (a constraint): the store is fine, the request is not.
    Refused(String),
    /// The store failed.
    Store(StoreFailure),
}

/// An intent with no outcome: `(event_id, method, solution_id)`, for reconciliation.
pub type OpenIntent = (String, String, Option<i64>);

/// The writer's view of a trail's storage. One value is one connection, used by the writer
/// thread alone; every method may block.
pub trait AuditStore: Send + 'static {
    /// The end of the chain as stored now.
    fn head(&mut self) -> Result<Head, StoreFailure>;
    /// Intents without an outcome, oldest first.
    fn open_intents(&mut self) -> Result<Vec<OpenIntent>, StoreFailure>;
    /// Whether the next commits must be durable against power loss (an fsync each) or only
    /// against a crash of the process. Best effort: a store that cannot switch stays durable.
    fn set_durable(&mut self, durable: bool);
    /// Begins a group's transaction holding the trail's write lock, and returns the head read
    /// under that lock (another writer may have appended since).
    fn begin(&mut self) -> Result<Head, StoreFailure>;
    /// Marks where a request's entries begin, so that they can be undone alone.
    fn savepoint(&mut self) -> Result<(), StoreFailure>;
    /// Keeps a request's entries (since the last savepoint).
    fn release(&mut self) -> Result<(), StoreFailure>;
    /// Undoes a request's entries (since the last savepoint).
    fn rollback_to_savepoint(&mut self) -> Result<(), StoreFailure>;
    /// Stores one sealed entry inside the open transaction.
    fn append(&mut self, entry: &Entry, sealed: &Sealed) -> Result<(), AppendFailure>;
    /// The kind of the entry at `seq`, if there is one.
    fn kind_at(&mut self, seq: i64) -> Result<Option<String>, StoreFailure>;
    /// Commits the group's transaction.
    fn commit(&mut self) -> Result<(), StoreFailure>;
    /// Leaves whatever transaction a failure left open, so the next `begin` can work.
    fn abandon(&mut self);
    /// A real write, committed like an append, that changes nothing in the trail: true when
    /// the store takes writes again.
    fn probe(&mut self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EntryKind;

    #[test]
    fn sealing_chains_each_entry_onto_the_last() {
        let mut head = Head::genesis();
        let entry = Entry {
            event_id: "e".into(),
            kind: EntryKind::Received,
            method: "crm.automatedsolution.update".into(),
            solution_id: Some(1),
            outcome: None,
            fields: serde_json::Map::new(),
        };
        let a = seal(&mut head, &entry);
        let b = seal(&mut head, &entry);
        assert_eq!((a.chain.seq, b.chain.seq), (1, 2));
        assert_eq!(a.chain.prev_hash, GENESIS);
        assert_eq!(b.chain.prev_hash, a.chain.hash);
        assert_eq!(head.hash, b.chain.hash);
        assert_eq!(b.chain.hash, entry_hash(&a.chain.hash, &b.chain.payload));
        assert!(a
            .chain
            .payload
            .contains(&format!("\"time\":\"{}\"", a.time)));
    }
}
