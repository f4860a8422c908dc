//! Reading the trail: one [`EventRecord`] per audited mutation (its intent joined with its
//! outcome, `record.rs`), streamed in trail order; the raw chain entries; the JSON Lines export.
//!
//! [`TrailReader`] is what a backend implements to be read; the functions here work on any
//! reader. The SQLite reader is a read-only connection of its own, so it can run beside a
//! serving proxy (WAL).

pub use super::event_query::{Filter, Order};
pub use super::record::EventRecord;
use super::record::{Completion, Intent, Stored};
use super::{AuditError, ChainEntry};
use crate::config::TrailDatabase;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// Opens the trail for reading only (it must exist).
pub fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| AuditError::Open(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| AuditError::Open(e.to_string()))?;
    Ok(conn)
}

/// The event query of a trail written before the event index (schema 1 and 2, read by `audit
/// list` or `export` before the proxy has migrated it) up to its ORDER BY; `$cmp` is how the
/// cursor (`?7`) bounds `r.seq`. Every filter is a term here, so it scans the trail.
macro_rules! legacy_events_sql {
    ($cmp:literal) => {
        concat!(
            "SELECT r.seq, r.payload, o.payload, COALESCE(o.hash, r.hash) FROM audit_entries r \
             LEFT JOIN audit_entries o ON o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled') \
             WHERE r.kind = 'received' \
               AND (?1 IS NULL OR r.time >= ?1) \
               AND (?2 IS NULL OR r.time < ?2) \
               AND (?3 IS NULL OR r.solution_id = ?3 OR o.solution_id = ?3) \
               AND (?4 IS NULL OR o.outcome = ?4 OR (?4 = 'pending' AND o.seq IS NULL)) \
               AND (?5 IS NULL OR json_extract(r.payload, '$.caller.user_id') = ?5 \
                    OR json_extract(r.payload, '$.caller.fingerprint') = ?5) \
               AND (?6 IS NULL OR r.event_id = ?6) \
               AND (?7 IS NULL OR r.seq ",
            $cmp,
            " ?7)"
        )
    };
}

/// A trail that can be read: what `audit list|show|export|verify`, the admin API and the
/// timeline need from a backend. Each method streams or pages, so memory stays bounded.
pub trait TrailReader {
    /// Calls `f` for each event matching `filter`, in `filter.order`; returns how many.
    fn each_event(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(EventRecord) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError>;
    /// The chain entries of one event (intent, outcome), in chain order.
    fn entries_of(&self, id: &str) -> Result<Vec<EntryRow>, AuditError>;
    /// The newest entry and how many there are.
    fn chain_head(&self) -> Result<ChainHead, AuditError>;
    /// Calls `f` for each chain entry after `after_seq`, in chain order, at most `limit`.
    fn each_entry(
        &self,
        after_seq: i64,
        limit: Option<usize>,
        f: &mut dyn FnMut(ChainEntry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError>;
    /// The events whose outcome entry comes after `after_seq`, in the order of those outcome
    /// entries, at most `limit`: `(outcome seq, event)`.
    fn completed_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventRecord)>, AuditError>;
    /// Calls `f` for every stored entry with the columns queries filter on, in chain order, in
    /// one read (what `audit verify` checks against the hashed payloads).
    fn each_stored(
        &self,
        f: &mut dyn FnMut(StoredEntry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError>;
    /// The newest `checkpoint` entry's payload, if any.
    fn latest_checkpoint(&self) -> Result<Option<String>, AuditError>;
    /// Whether an event received before `until` still waits for its outcome.
    fn pending_before(&self, until: &str) -> Result<bool, AuditError>;
}

/// One stored entry as its row holds it: the chain fields and the columns that repeat payload
/// fields for queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub method: String,
    pub solution_id: Option<i64>,
    pub outcome: Option<String>,
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The newest checkpoint's payload: through the partial index of checkpoints (SQLite schema 3
/// on, and PostgreSQL), so a trail never pruned is not walked back to its start to learn so.
pub(crate) const LATEST_CHECKPOINT: &str =
    "SELECT payload FROM audit_entries WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1";

/// Opens a reader of the configured trail: a read-only SQLite connection, or a PostgreSQL
/// connection (use it outside any tokio runtime: a blocking task, the CLI).
pub fn open_reader(db: &TrailDatabase) -> Result<Box<dyn TrailReader>, AuditError> {
    Ok(match db {
        TrailDatabase::Sqlite(path) => Box::new(open_read_only(path)?),
        TrailDatabase::Postgres(pg) => Box::new(super::pg_query::PgReader::open(pg)?),
    })
}

/// Calls `f` for each event in `filter.order` (trail order by default).
pub fn for_each_event<R: TrailReader + ?Sized>(
    reader: &R,
    filter: &Filter,
    mut f: impl FnMut(EventRecord) -> Result<(), AuditError>,
) -> Result<usize, AuditError> {
    reader.each_event(filter, &mut f)
}

/// Calls `f` for each chain entry after `after_seq`, in chain order, at most `limit` of them
/// (the raw form `audit export --entries` writes); returns how many there were.
pub fn for_each_entry<R: TrailReader + ?Sized>(
    reader: &R,
    after_seq: i64,
    limit: Option<usize>,
    mut f: impl FnMut(ChainEntry) -> Result<(), AuditError>,
) -> Result<usize, AuditError> {
    reader.each_entry(after_seq, limit, &mut f)
}

/// Collects the events matching `filter`.
pub fn events<R: TrailReader + ?Sized>(
    reader: &R,
    filter: &Filter,
) -> Result<Vec<EventRecord>, AuditError> {
    let mut out = Vec::new();
    for_each_event(reader, filter, |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// One event by id.
pub fn event<R: TrailReader + ?Sized>(
    reader: &R,
    id: &str,
) -> Result<Option<EventRecord>, AuditError> {
    let filter = Filter {
        event_id: Some(id.to_owned()),
        ..Filter::default()
    };
    Ok(events(reader, &filter)?.into_iter().next())
}

/// The chain entries of one event, for `audit show`.
pub fn entries_of<R: TrailReader + ?Sized>(
    reader: &R,
    id: &str,
) -> Result<Vec<EntryRow>, AuditError> {
    reader.entries_of(id)
}

/// The newest entry: what an external system should keep a copy of.
pub fn chain_head<R: TrailReader + ?Sized>(reader: &R) -> Result<ChainHead, AuditError> {
    reader.chain_head()
}

/// How `audit export --follow` learns which events finished (see [`TrailReader`]).
pub fn completed_after<R: TrailReader + ?Sized>(
    reader: &R,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<(i64, EventRecord)>, AuditError> {
    reader.completed_after(after_seq, limit)
}

/// Writes the JSON Lines export; returns how many events were written.
pub fn export<R: TrailReader + ?Sized>(
    reader: &R,
    filter: &Filter,
    out: &mut impl Write,
) -> Result<usize, AuditError> {
    for_each_event(reader, filter, |rec| {
        let line = serde_json::to_string(&rec).map_err(|e| AuditError::Open(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| AuditError::Open(format!("write: {e}")))
    })
}

/// The chain entries of one event (intent, outcome), for `audit show`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntryRow {
    pub seq: i64,
    pub kind: String,
    pub time: String,
    pub prev_hash: String,
    pub hash: String,
    pub payload: Value,
}

/// The newest entry: what an external system should keep a copy of.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
    pub entries: i64,
}

pub(crate) fn record(
    seq: i64,
    intent: &str,
    outcome: Option<&str>,
    hash: String,
) -> Result<EventRecord, AuditError> {
    let bad = |e: serde_json::Error| AuditError::Open(format!("unreadable audit entry: {e}"));
    let i: Stored<Intent> = serde_json::from_str(intent).map_err(bad)?;
    let o: Option<Stored<Completion>> = match outcome {
        Some(text) => Some(serde_json::from_str(text).map_err(bad)?),
        None => None,
    };
    Ok(EventRecord::join(seq, i, o, hash))
}

/// An event's entries: its intent and its outcome, the only kinds that share an event id (a
/// checkpoint or a signed head has an id of its own). One term per partial index on
/// `event_id`, so each is a lookup rather than a walk through the trail.
const ENTRIES_OF: &str = "SELECT seq, kind, time, prev_hash, hash, payload FROM audit_entries \
     WHERE event_id = ?1 AND kind = 'received' \
     UNION ALL SELECT seq, kind, time, prev_hash, hash, payload FROM audit_entries \
     WHERE event_id = ?1 AND kind IN ('completed', 'reconciled') ORDER BY seq";

fn read_err(e: rusqlite::Error) -> AuditError {
    AuditError::Open(e.to_string())
}

/// Whether the trail has the event index (schema 3 on): a trail not yet migrated is still read,
/// the slow way.
pub(crate) fn has_event_index(conn: &Connection) -> Result<bool, AuditError> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_events')",
    )
    .and_then(|mut s| s.query_row([], |r| r.get(0)))
    .map_err(read_err)
}

/// The query of a trail without the event index, with its eight parameters.
fn legacy_events_query(filter: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let sql = match filter.order {
        Order::Asc => concat!(legacy_events_sql!(">"), " ORDER BY r.seq LIMIT ?8"),
        Order::Desc => concat!(legacy_events_sql!("<"), " ORDER BY r.seq DESC LIMIT ?8"),
    };
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let params = vec![
        text(&filter.since),
        text(&filter.until),
        int(filter.solution_id),
        text(&filter.outcome),
        text(&filter.caller),
        text(&filter.event_id),
        int(filter.after_seq),
        Value::Integer(limit),
    ];
    (sql.to_owned(), params)
}

/// The SQLite reader: a connection to the trail's file.
impl TrailReader for Connection {
    fn each_event(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(EventRecord) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let (sql, params) = if has_event_index(self)? {
            super::event_query::events_query(filter)
        } else {
            legacy_events_query(filter)
        };
        let mut stmt = self.prepare_cached(&sql).map_err(read_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(read_err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(read_err)? {
            let seq: i64 = row.get(0).map_err(read_err)?;
            let intent: String = row.get(1).map_err(read_err)?;
            let outcome: Option<String> = row.get(2).map_err(read_err)?;
            let hash: String = row.get(3).map_err(read_err)?;
            f(record(seq, &intent, outcome.as_deref(), hash)?)?;
            n += 1;
        }
        Ok(n)
    }

    fn entries_of(&self, id: &str) -> Result<Vec<EntryRow>, AuditError> {
        let mut stmt = self.prepare_cached(ENTRIES_OF).map_err(read_err)?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(EntryRow {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    time: r.get(2)?,
                    prev_hash: r.get(3)?,
                    hash: r.get(4)?,
                    payload: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
                })
            })
            .map_err(read_err)?;
        rows.collect::<Result<_, _>>().map_err(read_err)
    }

    fn chain_head(&self) -> Result<ChainHead, AuditError> {
        let head = super::store::load_head(self).map_err(read_err)?;
        let entries: i64 = self
            .query_row("SELECT COUNT(*) FROM audit_entries", [], |r| r.get(0))
            .map_err(read_err)?;
        Ok(ChainHead {
            seq: head.seq,
            hash: head.hash,
            entries,
        })
    }

    fn each_entry(
        &self,
        after_seq: i64,
        limit: Option<usize>,
        f: &mut dyn FnMut(ChainEntry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let mut stmt = self
            .prepare_cached(
                "SELECT seq, prev_hash, hash, payload FROM audit_entries WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(read_err)?;
        let limit = limit.map_or(-1, |l| l as i64);
        let mut rows = stmt
            .query(rusqlite::params![after_seq, limit])
            .map_err(read_err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(read_err)? {
            f(ChainEntry {
                seq: row.get(0).map_err(read_err)?,
                prev_hash: row.get(1).map_err(read_err)?,
                hash: row.get(2).map_err(read_err)?,
                payload: row.get(3).map_err(read_err)?,
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// One query per page: the intent is found through the unique index on intents' event ids.
    fn completed_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventRecord)>, AuditError> {
        let mut stmt = self
            .prepare_cached(
                "SELECT o.seq, r.seq, r.payload, o.payload, o.hash FROM audit_entries o \
                 JOIN audit_entries r ON r.event_id = o.event_id AND r.kind = 'received' \
                 WHERE o.seq > ?1 AND o.kind IN ('completed', 'reconciled') ORDER BY o.seq LIMIT ?2",
            )
            .map_err(read_err)?;
        let mut rows = stmt
            .query(rusqlite::params![after_seq, limit as i64])
            .map_err(read_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(read_err)? {
            let outcome_seq: i64 = row.get(0).map_err(read_err)?;
            let intent: String = row.get(2).map_err(read_err)?;
            let outcome: String = row.get(3).map_err(read_err)?;
            let rec = record(
                row.get(1).map_err(read_err)?,
                &intent,
                Some(&outcome),
                row.get(4).map_err(read_err)?,
            )?;
            out.push((outcome_seq, rec));
        }
        Ok(out)
    }

    fn each_stored(
        &self,
        f: &mut dyn FnMut(StoredEntry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let mut stmt = self
            .prepare("SELECT seq, event_id, kind, method, solution_id, outcome, payload, prev_hash, hash FROM audit_entries ORDER BY seq")
            .map_err(read_err)?;
        let mut rows = stmt.query([]).map_err(read_err)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(read_err)? {
            f(StoredEntry {
                seq: r.get(0).map_err(read_err)?,
                event_id: r.get(1).map_err(read_err)?,
                kind: r.get(2).map_err(read_err)?,
                method: r.get(3).map_err(read_err)?,
                solution_id: r.get(4).map_err(read_err)?,
                outcome: r.get(5).map_err(read_err)?,
                payload: r.get(6).map_err(read_err)?,
                prev_hash: r.get(7).map_err(read_err)?,
                hash: r.get(8).map_err(read_err)?,
            })?;
            n += 1;
        }
        Ok(n)
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        use rusqlite::OptionalExtension as _;
        self.query_row(LATEST_CHECKPOINT, [], |r| r.get(0))
            .optional()
            .map_err(read_err)
    }

    fn pending_before(&self, until: &str) -> Result<bool, AuditError> {
        let sql = if has_event_index(self)? {
            super::export::PENDING_BEFORE
        } else {
            super::export::LEGACY_PENDING_BEFORE
        };
        self.query_row(sql, [until], |r| r.get(0)).map_err(read_err)
    }
}

#[cfg(test)]
/// A trail of `n` applied updates (intent + outcome each), alternating workplaces 238/267;
/// hashes are placeholders — listing never verifies the chain.
pub(crate) fn sample_trail(n: i64) -> Connection {
    let mut c = Connection::open_in_memory().expect("db");
    super::migrate::apply(&mut c).expect("schema");
    let mut seq = 0;
    for i in 1..=n {
        let id = format!("ev{i}");
        let sol = if i % 2 == 0 { 267 } else { 238 };
        let time = format!("2026-11-24T10:00:{i:02}.000Z");
        for (kind, outcome) in [("received", None), ("completed", Some("applied"))] {
            seq += 1;
            let payload = serde_json::json!({
                "event_id": id, "kind": kind, "time": time, "solution_id": sol,
                "method": "crm.automatedsolution.update", "outcome": outcome,
                "caller": {"auth": "webhook", "user_id": "1"},
            });
            c.execute(
                "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, 'crm.automatedsolution.update', ?5, ?6, ?7, 'p', ?8)",
                rusqlite::params![seq, id, kind, time, sol, outcome, payload.to_string(), format!("h{seq}")],
            )
            .expect("insert");
        }
    }
    c
}

#[cfg(test)]
/// The plan SQLite chooses for `sql` with `params`, one detail per line.
pub(crate) fn query_plan<P: rusqlite::Params>(c: &Connection, sql: &str, params: P) -> Vec<String> {
    c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("prepare")
        .query_map(params, |r| r.get(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(n: i64) -> Connection {
        sample_trail(n)
    }

    fn ids(c: &Connection, f: &Filter) -> Vec<String> {
        events(c, f)
            .expect("query")
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    #[test]
    fn an_events_entries_are_found_through_the_event_id_indexes() {
        let c = trail(3);
        let plan = query_plan(&c, ENTRIES_OF, ["ev2"]);
        assert!(plan.iter().all(|l| !l.starts_with("SCAN")), "{plan:?}");
        let kinds: Vec<(i64, String)> = entries_of(&c, "ev2")
            .expect("entries")
            .into_iter()
            .map(|e| (e.seq, e.kind))
            .collect();
        assert_eq!(
            kinds,
            [(3, "received".to_owned()), (4, "completed".to_owned())]
        );
    }

    #[test]
    fn the_default_order_is_the_trail_order() {
        let c = trail(4);
        assert_eq!(ids(&c, &Filter::default()), ["ev1", "ev2", "ev3", "ev4"]);
        let page = Filter {
            after_seq: Some(3),
            limit: Some(2),
            ..Filter::default()
        };
        assert_eq!(ids(&c, &page), ["ev3", "ev4"], "intents after entry 3");
    }

    #[test]
    fn descending_lists_newest_first_and_its_cursor_means_older_than() {
        let c = trail(5);
        let desc = Filter {
            order: Order::Desc,
            ..Filter::default()
        };
        assert_eq!(ids(&c, &desc), ["ev5", "ev4", "ev3", "ev2", "ev1"]);

        // Paging: the cursor of a page's last event continues with the next-older events.
        let first = events(
            &c,
            &Filter {
                limit: Some(2),
                ..desc.clone()
            },
        )
        .expect("page 1");
        assert_eq!(
            first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["ev5", "ev4"]
        );
        let cursor = first.last().map(|e| e.seq);
        let second = Filter {
            after_seq: cursor,
            limit: Some(2),
            ..desc.clone()
        };
        assert_eq!(ids(&c, &second), ["ev3", "ev2"]);

        // Filters combine with the order as they do ascending.
        let one_workplace = Filter {
            solution_id: Some(238),
            since: Some("2026-11-24T10:00:02.000Z".into()),
            ..desc
        };
        assert_eq!(ids(&c, &one_workplace), ["ev5", "ev3"]);
    }

    /// A varied trail: workplaces 238/267 and adds that learn their id from the outcome, three
    /// callers, every outcome and events still in flight, and a clock that steps back.
    fn varied_trail(c: &Connection) {
        let outcomes = [
            Some("applied"),
            Some("denied"),
            None,
            Some("unknown"),
            Some("rejected_by_portal"),
        ];
        let mut seq = 0;
        for i in 1..=60i64 {
            let id = format!("ev{i}");
            let sol = match i % 3 {
                0 => None,
                1 => Some(238),
                _ => Some(267),
            };
            let minute = if (20..26).contains(&i) { i - 15 } else { i };
            let time = format!("2026-11-24T10:{minute:02}:00.000Z");
            let caller = serde_json::json!({"auth": "webhook", "user_id": (i % 3).to_string(), "fingerprint": format!("fp{}", i % 2)});
            let outcome = outcomes[(i % 5) as usize];
            let mut insert = |kind: &str, sol: Option<i64>, outcome: Option<&str>| {
                seq += 1;
                let payload = serde_json::json!({
                    "event_id": id, "kind": kind, "time": time, "solution_id": sol,
                    "method": "crm.automatedsolution.update", "outcome": outcome, "caller": caller,
                });
                c.execute(
                    "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, 'crm.automatedsolution.update', ?5, ?6, ?7, 'p', ?8)",
                    rusqlite::params![seq, id, kind, time, sol, outcome, payload.to_string(), format!("h{seq}")],
                )
                .expect("insert");
            };
            insert("received", sol, None);
            if let Some(o) = outcome {
                let kind = if o == "unknown" {
                    "reconciled"
                } else {
                    "completed"
                };
                insert(kind, sol.or(Some(300 + i)), Some(o));
            }
        }
    }

    /// `(intent seq, last hash)` of each event selected.
    type Selected = Vec<(i64, String)>;

    fn both_ways(c: &Connection, f: &Filter) -> (Selected, Selected) {
        let run = |(sql, params): (String, Vec<rusqlite::types::Value>)| {
            let mut stmt = c.prepare(&sql).expect("prepare");
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((r.get(0)?, r.get(3)?))
                })
                .expect("query");
            rows.collect::<Result<Vec<_>, _>>().expect("rows")
        };
        (
            run(super::super::event_query::events_query(f)),
            run(legacy_events_query(f)),
        )
    }

    #[test]
    fn the_event_index_selects_what_the_scan_selects() {
        let c = trail(0);
        varied_trail(&c);
        let times = [
            None,
            Some("2026-11-24T10:07:00.000Z"),
            Some("2026-11-24T10:22:00.000Z"),
        ];
        let mut checked = 0;
        for since in times {
            for until in [
                None,
                Some("2026-11-24T10:09:30.000Z"),
                Some("2026-11-24T10:40:00.000Z"),
            ] {
                for solution_id in [None, Some(238), Some(302), Some(999)] {
                    for outcome in [None, Some("applied"), Some("pending"), Some("unknown")] {
                        for caller in [None, Some("1"), Some("fp0")] {
                            for (order, after_seq) in [
                                (Order::Asc, None),
                                (Order::Asc, Some(30)),
                                (Order::Desc, Some(70)),
                            ] {
                                let f = Filter {
                                    since: since.map(str::to_owned),
                                    until: until.map(str::to_owned),
                                    solution_id,
                                    outcome: outcome.map(str::to_owned),
                                    caller: caller.map(str::to_owned),
                                    after_seq,
                                    order,
                                    limit: Some(7),
                                    ..Filter::default()
                                };
                                let (new, old) = both_ways(&c, &f);
                                assert_eq!(new, old, "{f:?}");
                                checked += usize::from(!new.is_empty());
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "the filters select something: {checked}");
        let one = Filter {
            event_id: Some("ev21".into()),
            ..Filter::default()
        };
        let (new, old) = both_ways(&c, &one);
        assert_eq!((new.len(), new), (1, old));
    }

    #[test]
    fn a_trail_migrated_to_the_event_index_lists_what_it_listed_before() {
        let mut c = Connection::open_in_memory().expect("db");
        super::super::migrate::apply_through(&mut c, 2).expect("schema 2");
        varied_trail(&c);
        assert!(!has_event_index(&c).expect("schema"));
        let filters = [
            Filter::default(),
            Filter {
                solution_id: Some(238),
                ..Filter::default()
            },
            Filter {
                solution_id: Some(306),
                ..Filter::default()
            },
            Filter {
                outcome: Some("denied".into()),
                ..Filter::default()
            },
            Filter {
                outcome: Some("pending".into()),
                order: Order::Desc,
                ..Filter::default()
            },
            Filter {
                caller: Some("fp1".into()),
                ..Filter::default()
            },
            Filter {
                since: Some("2026-11-24T10:08:00.000Z".into()),
                until: Some("2026-11-24T10:30:00.000Z".into()),
                ..Filter::default()
            },
        ];
        let before: Vec<Vec<EventRecord>> = filters
            .iter()
            .map(|f| events(&c, f).expect("before"))
            .collect();
        super::super::migrate::apply(&mut c).expect("schema 3");
        assert!(has_event_index(&c).expect("schema"));
        for (f, was) in filters.iter().zip(&before) {
            assert_eq!(&events(&c, f).expect("after"), was, "{f:?}");
            assert!(!was.is_empty(), "{f:?} selects something");
        }
    }

    #[test]
    fn a_trail_cut_short_by_hand_and_written_on_lists_what_it_holds() {
        let c = trail(0);
        varied_trail(&c);
        let head: i64 = c
            .query_row("SELECT MAX(seq) FROM audit_entries", [], |r| r.get(0))
            .expect("head");
        c.execute_batch(
            "DROP TRIGGER audit_entries_no_delete; \
             DELETE FROM audit_entries WHERE seq > (SELECT MAX(seq) - 9 FROM audit_entries);",
        )
        .expect("cut");
        // The writer continues after the new head: the same seqs, other events.
        let mut seq = head - 9;
        for i in 0..3 {
            for (kind, outcome) in [("received", None), ("completed", Some("failed"))] {
                seq += 1;
                let payload = serde_json::json!({"caller": {"user_id": "again"}, "event_id": format!("new{i}")});
                c.execute(
                    "INSERT INTO audit_entries (seq, event_id, kind, time, method, solution_id, outcome, payload, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, '2026-11-24T11:00:00.000Z', 'm', 777, ?4, ?5, 'p', ?6)",
                    rusqlite::params![seq, format!("new{i}"), kind, outcome, payload.to_string(), format!("n{seq}")],
                )
                .expect("written on");
            }
        }
        for f in [
            Filter::default(),
            Filter {
                solution_id: Some(238),
                ..Filter::default()
            },
            Filter {
                solution_id: Some(777),
                ..Filter::default()
            },
            Filter {
                caller: Some("1".into()),
                ..Filter::default()
            },
            Filter {
                caller: Some("again".into()),
                ..Filter::default()
            },
            Filter {
                outcome: Some("pending".into()),
                ..Filter::default()
            },
            Filter {
                outcome: Some("failed".into()),
                ..Filter::default()
            },
        ] {
            let (new, old) = both_ways(&c, &f);
            assert_eq!(new, old, "{f:?}");
        }
    }
}
