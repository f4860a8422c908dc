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
    forget_events(&tx, through_seq).map_err(err)?;
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

/// Removes the event index's rows of the events whose intents were removed (all of them at or
/// before `through_seq`: no event straddles the cut). A trail not yet migrated has none.
fn forget_events(tx: &Connection, through_seq: i64) -> rusqlite::Result<()> {
    let indexed: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_events')",
        [],
        |r| r.get(0),
    )?;
    if indexed {
        for table in [
            "audit_events",
            "audit_event_solutions",
            "audit_event_callers",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE seq <= ?1"),
                [through_seq],
            )?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
