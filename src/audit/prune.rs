//! `audit prune --before DATE`: retention that keeps the chain verifiable.
//!
//! It removes a *prefix* of the chain — every entry up to the last one written before `DATE`,
//! moved earlier if needed so that no event loses its intent while keeping its outcome — and
//! appends a `checkpoint` entry that names the last removed entry's sequence number and hash.
//! `audit verify` then starts the chain from that hash. All in one transaction that excludes the
//! writers (SQLite: IMMEDIATE; PostgreSQL: the writers' lock, `pg_prune.rs`), so a running
//! proxy's writer simply waits for it and chains its next entries after the checkpoint.
//!
//! What a prune removes is decided here once, for both backends ([`prune_in`]): each backend only
//! runs the statements of [`PruneTx`] inside its own transaction.

use super::backend::{seal, Head, Sealed};
use super::store::{insert_row, load_head, open_connection};
use super::{new_event_id, AuditError, Entry, EntryKind};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
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

impl Pruned {
    fn nothing() -> Pruned {
        Pruned {
            removed: 0,
            through_seq: None,
            checkpoint_seq: None,
        }
    }
}

// The statements both backends run. `$1` is a positional parameter on PostgreSQL and, on
// SQLite, a named one bound by its position: the same text serves both.

/// The last entry written before the date.
pub(crate) const LAST_BEFORE: &str = "SELECT MAX(seq) FROM audit_entries WHERE time < $1";

/// The first intent at or before the cut whose outcome is not at or before it.
pub(crate) const STRADDLING: &str = "SELECT MIN(r.seq) FROM audit_entries r \
     WHERE r.kind = 'received' AND r.seq <= $1 AND NOT EXISTS (SELECT 1 FROM audit_entries o \
        WHERE o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled') AND o.seq <= $1)";

/// The last entry at or before the cut.
pub(crate) const THROUGH: &str =
    "SELECT seq, hash FROM audit_entries WHERE seq <= $1 ORDER BY seq DESC LIMIT 1";

/// Removes the entries through the cut (the caller has lifted the append-only guard).
pub(crate) const DELETE_ENTRIES: &str = "DELETE FROM audit_entries WHERE seq <= $1";

/// The event index's tables, keyed by their event's intent seq: the rows of removed events
/// go with them (all of them at or before the cut: no event straddles it).
pub(crate) const EVENT_INDEX: [&str; 3] = [
    "audit_events",
    "audit_event_solutions",
    "audit_event_callers",
];

/// The statements of a prune, run by one backend inside a transaction that holds off every
/// writer until it ends.
pub(crate) trait PruneTx {
    /// One seq (or none) from a statement taking one parameter: [`LAST_BEFORE`] with the date,
    /// [`STRADDLING`] with the cut.
    fn seq_text(&mut self, sql: &str, param: &str) -> Result<Option<i64>, AuditError>;
    fn seq_int(&mut self, sql: &str, param: i64) -> Result<Option<i64>, AuditError>;
    /// [`THROUGH`].
    fn through(&mut self, cut: i64) -> Result<Option<(i64, String)>, AuditError>;
    /// Removes entries and event index rows through `seq`, the entries under the backend's
    /// prune guard; returns how many entries went.
    fn remove_through(&mut self, seq: i64) -> Result<i64, AuditError>;
    /// The last entry left, or genesis.
    fn head(&mut self) -> Result<Head, AuditError>;
    /// Inserts the sealed checkpoint.
    fn insert(&mut self, entry: &Entry, sealed: &Sealed) -> Result<(), AuditError>;
}

/// The prune itself, inside `tx`; the caller commits it.
pub(crate) fn prune_in(tx: &mut dyn PruneTx, before: &str) -> Result<Pruned, AuditError> {
    let Some(cut) = cut_point(tx, before)? else {
        return Ok(Pruned::nothing());
    };
    let Some((through_seq, through_hash)) = tx.through(cut)? else {
        return Ok(Pruned::nothing());
    };
    let removed = tx.remove_through(through_seq)?;
    let mut head = tx.head()?;
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
    let sealed = seal(&mut head, &checkpoint);
    tx.insert(&checkpoint, &sealed)?;
    Ok(Pruned {
        removed,
        through_seq: Some(through_seq),
        checkpoint_seq: Some(sealed.chain.seq),
    })
}

/// The last entry to remove: the last one written before `before`, moved before any event that
/// is open at it (intent at or before the cut, outcome after it or not yet written), until no
/// event straddles the cut. `None` when nothing is old enough.
fn cut_point(tx: &mut dyn PruneTx, before: &str) -> Result<Option<i64>, AuditError> {
    let Some(mut cut) = tx.seq_text(LAST_BEFORE, before)? else {
        return Ok(None);
    };
    loop {
        match tx.seq_int(STRADDLING, cut)? {
            Some(s) if s <= cut => cut = s - 1,
            _ => return Ok(Some(cut)),
        }
    }
}

/// Prunes the SQLite trail at `path` of entries written before `before` (RFC 3339).
pub fn prune(path: &Path, before: &str) -> Result<Pruned, AuditError> {
    let mut conn = open_connection(path)?;
    prune_conn(&mut conn, before)
}

pub(crate) fn prune_conn(conn: &mut Connection, before: &str) -> Result<Pruned, AuditError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(write_err)?;
    let pruned = prune_in(&mut SqliteTx(&tx), before)?;
    if pruned.through_seq.is_some() {
        tx.commit().map_err(write_err)?;
    }
    Ok(pruned)
}

fn write_err(e: rusqlite::Error) -> AuditError {
    AuditError::Write(e.to_string())
}

/// A prune's statements on SQLite.
struct SqliteTx<'a>(&'a Connection);

impl PruneTx for SqliteTx<'_> {
    fn seq_text(&mut self, sql: &str, param: &str) -> Result<Option<i64>, AuditError> {
        self.0
            .query_row(sql, [param], |r| r.get(0))
            .map_err(write_err)
    }

    fn seq_int(&mut self, sql: &str, param: i64) -> Result<Option<i64>, AuditError> {
        self.0
            .query_row(sql, [param], |r| r.get(0))
            .map_err(write_err)
    }

    fn through(&mut self, cut: i64) -> Result<Option<(i64, String)>, AuditError> {
        self.0
            .query_row(THROUGH, [cut], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(write_err)
    }

    fn remove_through(&mut self, seq: i64) -> Result<i64, AuditError> {
        let tx = self.0;
        let removed = (|| -> rusqlite::Result<usize> {
            tx.execute("INSERT INTO audit_prune_guard (pruning) VALUES (1)", [])?;
            let removed = tx.execute(DELETE_ENTRIES, [seq])?;
            tx.execute("DELETE FROM audit_prune_guard", [])?;
            // A trail not yet migrated to the event index has none to clean.
            let indexed: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_events')",
                [],
                |r| r.get(0),
            )?;
            if indexed {
                for table in EVENT_INDEX {
                    tx.execute(&format!("DELETE FROM {table} WHERE seq <= $1"), [seq])?;
                }
            }
            Ok(removed)
        })()
        .map_err(write_err)?;
        i64::try_from(removed).map_err(|e| AuditError::Write(e.to_string()))
    }

    fn head(&mut self) -> Result<Head, AuditError> {
        load_head(self.0).map_err(write_err)
    }

    fn insert(&mut self, entry: &Entry, sealed: &Sealed) -> Result<(), AuditError> {
        insert_row(self.0, entry, sealed).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    /// `n` events, one a minute from 10:00; the last one still in flight.
    fn trail(n: i64) -> Connection {
        let mut c = Connection::open_in_memory().expect("db");
        super::super::migrate::apply(&mut c).expect("schema");
        let mut seq = 0;
        for i in 1..=n {
            let time = format!("2026-11-24T10:{i:02}:00.000Z");
            let kinds: &[(&str, Option<&str>)] = if i == n {
                &[("received", None)]
            } else {
                &[("received", None), ("completed", Some("applied"))]
            };
            for (kind, outcome) in kinds {
                seq += 1;
                let payload = json!({"seq": seq, "event_id": format!("ev{i}"), "kind": kind, "time": time,
                                     "caller": {"user_id": format!("u{}", i % 2)}, "solution_id": 200 + i % 3});
                c.execute(
                    "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, 'm', ?5, ?6, ?7, 'p', ?8)",
                    params![seq, format!("ev{i}"), kind, time, 200 + i % 3, outcome, payload.to_string(), format!("h{seq}")],
                )
                .expect("insert");
            }
        }
        c
    }

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    #[test]
    fn the_event_index_loses_exactly_the_pruned_events() {
        let mut c = trail(10);
        let p = prune_conn(&mut c, "2026-11-24T10:04:30.000Z").expect("prune");
        assert_eq!(p.through_seq, Some(8), "events 1-4, two entries each");
        let left = "SELECT COUNT(*) FROM audit_entries WHERE kind = 'received'";
        assert_eq!(count(&c, left), 6);
        assert_eq!(count(&c, "SELECT COUNT(*) FROM audit_events"), 6);
        assert_eq!(count(&c, "SELECT MIN(seq) FROM audit_events"), 9);
        for table in ["audit_event_solutions", "audit_event_callers"] {
            let stale = format!("SELECT COUNT(*) FROM {table} WHERE seq <= 8");
            assert_eq!(count(&c, &stale), 0, "{table}");
            let kept = format!("SELECT COUNT(DISTINCT seq) FROM {table}");
            assert_eq!(count(&c, &kept), 6, "{table}");
        }
        let f = |outcome: &str| super::super::query::Filter {
            outcome: Some(outcome.into()),
            ..Default::default()
        };
        let listed = |f| super::super::query::events(&c, &f).expect("list").len();
        assert_eq!(listed(f("applied")), 5);
        assert_eq!(listed(f("pending")), 1);
        let by_caller = super::super::query::Filter {
            caller: Some("u1".into()),
            ..Default::default()
        };
        assert_eq!(listed(by_caller), 3, "events 5, 7, 9");
    }
}
