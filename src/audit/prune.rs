//! `audit prune --before DATE`: retention that keeps the chain verifiable.
//!
//! It removes a *prefix* of the chain — every entry up to the last one written before `DATE`,
//! moved earlier if needed so that no event loses its intent while keeping its outcome — and
//! appends a `checkpoint` entry that names the last removed entry's sequence number and hash.
//! `audit verify` then starts the chain from that hash. All in one IMMEDIATE transaction, so a
//! running proxy's writer simply waits for it and chains its next entries after the checkpoint.

use super::backend::Head;
use super::store::{insert, load_head, open_connection};
use super::{new_event_id, AuditError, Entry, EntryKind};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::json;
use std::path::Path;

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Entries removed (0 when there was nothing old enough).
    pub removed: i64,
    /// The last removed entry, when any.
    pub through_seq: Option<i64>,
    /// The checkpoint entry's sequence number.
    pub checkpoint_seq: Option<i64>,
}

/// Prunes the trail at `path` of entries written before `before` (RFC 3339).
pub fn prune(path: &Path, before: &str) -> Result<Pruned, AuditError> {
    let mut conn = open_connection(path)?;
    prune_conn(&mut conn, before)
}

pub(crate) fn prune_conn(conn: &mut Connection, before: &str) -> Result<Pruned, AuditError> {
    let err = |e: rusqlite::Error| AuditError::Write(e.to_string());
    let nothing = Pruned {
        removed: 0,
        through_seq: None,
        checkpoint_seq: None,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let Some(cut) = cut_point(&tx, before).map_err(err)? else {
        return Ok(nothing);
    };
    let through: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_entries WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1",
            [cut],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(err)?;
    let Some((through_seq, through_hash)) = through else {
        return Ok(nothing);
    };
    tx.execute("INSERT INTO audit_prune_guard (pruning) VALUES (1)", [])
        .map_err(err)?;
    let removed = tx
        .execute(
            "DELETE FROM audit_entries WHERE seq <= ?1",
            params![through_seq],
        )
        .map_err(err)?;
    tx.execute("DELETE FROM audit_prune_guard", [])
        .map_err(err)?;
    let mut head = load_head(&tx).map_err(err)?;
    if head.seq == 0 {
        // Everything went: the checkpoint continues right after the last removed entry.
        head = Head {
            seq: through_seq,
            hash: through_hash.clone(),
        };
    }
    let mut fields = serde_json::Map::new();
    fields.insert("pruned_through_seq".into(), json!(through_seq));
    fields.insert("pruned_through_hash".into(), json!(through_hash));
    fields.insert("pruned_before".into(), json!(before));
    fields.insert("removed".into(), json!(removed));
    let checkpoint = Entry {
        event_id: new_event_id(),
        kind: EntryKind::Checkpoint,
        method: "audit.prune".into(),
        solution_id: None,
        outcome: None,
        fields,
    };
    let committed = insert(&tx, &mut head, &checkpoint).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(Pruned {
        removed: removed as i64,
        through_seq: Some(through_seq),
        checkpoint_seq: Some(committed.seq),
    })
}

/// The last entry to remove: the last one written before `before`, moved before any event that
/// is open at it (intent at or before the cut, outcome after it or not yet written), until no
/// event straddles the cut. `None` when nothing is old enough.
fn cut_point(tx: &Connection, before: &str) -> rusqlite::Result<Option<i64>> {
    let last_old: Option<i64> = tx.query_row(
        "SELECT MAX(seq) FROM audit_entries WHERE time < ?1",
        [before],
        |r| r.get(0),
    )?;
    let Some(mut cut) = last_old else {
        return Ok(None);
    };
    loop {
        let straddling: Option<i64> = tx.query_row(
            "SELECT MIN(r.seq) FROM audit_entries r WHERE r.kind = 'received' AND r.seq <= ?1 AND NOT EXISTS \
             (SELECT 1 FROM audit_entries o WHERE o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled') AND o.seq <= ?1)",
            [cut],
            |r| r.get(0),
        )?;
        match straddling {
            Some(s) if s <= cut => cut = s - 1,
            _ => return Ok(Some(cut)),
        }
    }
}
