//! Reading the PostgreSQL trail: [`PgReader`], the [`TrailReader`] of `audit list|show|verify|
//! export`, the admin API and the timeline when `[audit] database` is a PostgreSQL URL, and the
//! event query built from the filters given (as `event_query.rs` builds SQLite's), so that each
//! filter is served by an index of the event index (`migrations/pg/0001_audit_trail.sql`) and a
//! page reads only as far as its limit.
//!
//! Each read is one statement, so it sees one snapshot even while replicas append. The reader
//! holds a blocking connection: open and use it on a thread outside any tokio runtime (a
//! blocking task, the CLI).

use super::event_query::{Filter, Order};
use super::pg_conn::{self, describe};
use super::query::{record, ChainHead, EntryRow, StoredEntry, TrailReader};
use super::record::EventRecord;
use super::{AuditError, ChainEntry};
use crate::config::PgTrail;
use postgres::fallible_iterator::FallibleIterator as _;
use postgres::types::ToSql;
use std::cell::RefCell;

/// The `application_name` readers carry.
const APPLICATION: &str = "b24-audit-proxy reader";

/// A reader of the PostgreSQL trail: one connection.
pub struct PgReader {
    // TrailReader takes `&self`; the client needs `&mut` for every statement.
    client: RefCell<postgres::Client>,
}

impl PgReader {
    /// Connects (the schema must already be there: the proxy creates it).
    pub fn open(trail: &PgTrail) -> Result<PgReader, AuditError> {
        Ok(PgReader {
            client: RefCell::new(pg_conn::connect(trail, APPLICATION)?),
        })
    }

    /// Runs `sql` and calls `f` for each row as it arrives.
    fn each_row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        f: &mut dyn FnMut(&postgres::Row) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let mut client = self.client.borrow_mut();
        let mut rows = client
            .query_raw(sql, params.iter().copied())
            .map_err(read_err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(read_err)? {
            f(&row)?;
            n += 1;
        }
        Ok(n)
    }
}

fn read_err(e: postgres::Error) -> AuditError {
    AuditError::Open(describe(&e))
}

/// A bound value of the event query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    /// The page size; `None`: no limit (`LIMIT NULL`).
    Limit(Option<i64>),
}

impl Param {
    /// The value as the driver binds it.
    pub fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Int(i) => i,
            Param::Limit(l) => l,
        }
    }
}

/// The columns every event query returns: intent seq, intent payload, outcome payload, and the
/// hash of the event's last entry.
const COLUMNS: &str = "SELECT r.seq, r.payload, o.payload, COALESCE(o.hash, r.hash)";

/// The outcome entry of the intent `r`, through the unique index on outcomes' event ids.
const OUTCOME_JOIN: &str = " LEFT JOIN audit_entries o ON o.event_id = r.event_id \
     AND o.kind IN ('completed', 'reconciled')";

/// Where the query starts: the table a filter names that narrows it most (as on SQLite).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    Intent,
    Solution,
    Caller,
    Events,
    Trail,
}

impl Driver {
    fn of(filter: &Filter) -> Driver {
        if filter.event_id.is_some() {
            Driver::Intent
        } else if filter.solution_id.is_some() {
            Driver::Solution
        } else if filter.caller.is_some() {
            Driver::Caller
        } else if needs_events(filter) {
            Driver::Events
        } else {
            Driver::Trail
        }
    }

    fn from(self, filter: &Filter) -> String {
        let seq = self.seq();
        let mut from = match self {
            Driver::Intent | Driver::Trail => " FROM audit_entries r".to_owned(),
            Driver::Solution => " FROM audit_event_solutions d".to_owned(),
            Driver::Caller => " FROM audit_event_callers d".to_owned(),
            Driver::Events => " FROM audit_events e".to_owned(),
        };
        if self != Driver::Events && needs_events(filter) {
            from.push_str(&format!(" JOIN audit_events e ON e.seq = {seq}"));
        }
        if matches!(self, Driver::Solution | Driver::Caller | Driver::Events) {
            from.push_str(&format!(" JOIN audit_entries r ON r.seq = {seq}"));
        }
        from
    }

    /// The seq column the query is ordered and bounded by: the driving table's, whose index
    /// yields it in order.
    fn seq(self) -> &'static str {
        match self {
            Driver::Intent | Driver::Trail => "r.seq",
            Driver::Solution | Driver::Caller => "d.seq",
            Driver::Events => "e.seq",
        }
    }

    /// Every seq column of the query's tables, the driver's first: a bound is put on each.
    /// PostgreSQL carries equalities across a join but not ranges, so a range on the driver
    /// alone would leave a merge join reading the other tables from their start.
    fn seqs(self, filter: &Filter) -> Vec<&'static str> {
        let mut v = vec![self.seq()];
        if self != Driver::Events && needs_events(filter) {
            v.push("e.seq");
        }
        if !matches!(self, Driver::Intent | Driver::Trail) {
            v.push("r.seq");
        }
        v
    }
}

fn needs_events(filter: &Filter) -> bool {
    filter.outcome.is_some() || filter.since.is_some() || filter.until.is_some()
}

struct Query {
    sql: String,
    params: Vec<Param>,
}

impl Query {
    fn bind(&mut self, value: Param) -> usize {
        self.params.push(value);
        self.params.len()
    }

    fn and(&mut self, before: &str, value: Param, after: &str) {
        let n = self.bind(value);
        self.sql.push_str(&format!(" AND {before}${n}{after}"));
    }

    /// `since`: from the first seq whose `time_max` reaches it (one index lookup); the term on
    /// `time` keeps the bound exact past a clock that stepped back.
    fn since(&mut self, seqs: &[&str], t: &str) {
        let n = self.bind(Param::Text(t.to_owned()));
        for seq in seqs {
            self.sql.push_str(&format!(
                " AND {seq} >= COALESCE((SELECT m.seq FROM audit_events m WHERE m.time_max >= ${n} \
                 ORDER BY m.time_max, m.seq LIMIT 1), 9223372036854775807)"
            ));
        }
        self.sql.push_str(&format!(" AND e.time >= ${n}"));
    }

    /// `until`: no event before it comes after both the last seq whose `time_max` is before it
    /// and the last one written while the clock was stepped back to before it.
    fn until(&mut self, seqs: &[&str], t: &str) {
        let n = self.bind(Param::Text(t.to_owned()));
        for seq in seqs {
            self.sql.push_str(&format!(
                " AND {seq} <= GREATEST(\
                 COALESCE((SELECT m.seq FROM audit_events m WHERE m.time_max < ${n} \
                           ORDER BY m.time_max DESC, m.seq DESC LIMIT 1), 0), \
                 COALESCE((SELECT MAX(b.seq) FROM audit_events b WHERE b.time < b.time_max AND b.time < ${n}), 0))"
            ));
        }
        self.sql.push_str(&format!(" AND e.time < ${n}"));
    }
}

/// The SQL for `filter` and its parameters, in order. Public so that the tests can ask a real
/// server for its plan.
pub fn events_query(filter: &Filter) -> (String, Vec<Param>) {
    let d = Driver::of(filter);
    let mut q = Query {
        sql: format!(
            "{COLUMNS}{}{OUTCOME_JOIN} WHERE r.kind = 'received'",
            d.from(filter)
        ),
        params: Vec::new(),
    };
    if let Some(id) = &filter.event_id {
        q.and("r.event_id = ", Param::Text(id.clone()), "");
    }
    if let Some(sol) = filter.solution_id {
        match d {
            Driver::Solution => q.and("d.solution_id = ", Param::Int(sol), ""),
            _ => q.and(
                "EXISTS (SELECT 1 FROM audit_event_solutions s WHERE s.solution_id = ",
                Param::Int(sol),
                &format!(" AND s.seq = {})", d.seq()),
            ),
        }
    }
    if let Some(caller) = &filter.caller {
        let v = Param::Text(caller.clone());
        match d {
            Driver::Caller => q.and("d.caller = ", v, ""),
            _ => q.and(
                "EXISTS (SELECT 1 FROM audit_event_callers c WHERE c.caller = ",
                v,
                &format!(" AND c.seq = {})", d.seq()),
            ),
        }
    }
    match filter.outcome.as_deref() {
        Some("pending") => q.sql.push_str(" AND e.outcome IS NULL"),
        Some(o) => q.and("e.outcome = ", Param::Text(o.to_owned()), ""),
        None => {}
    }
    let seqs = d.seqs(filter);
    if let Some(t) = &filter.since {
        q.since(&seqs, t);
    }
    if let Some(t) = &filter.until {
        q.until(&seqs, t);
    }
    let (cmp, dir) = match filter.order {
        Order::Asc => (">", ""),
        Order::Desc => ("<", " DESC"),
    };
    if let Some(c) = filter.after_seq {
        let n = q.bind(Param::Int(c));
        for seq in &seqs {
            q.sql.push_str(&format!(" AND {seq} {cmp} ${n}"));
        }
    }
    let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let n = q.bind(Param::Limit(limit));
    // One event id has at most one intent (a unique index): nothing to order, and an ORDER BY
    // would only tempt the planner to walk the trail in seq order looking for it.
    if d != Driver::Intent {
        q.sql.push_str(&format!(" ORDER BY {}{dir}", d.seq()));
    }
    q.sql.push_str(&format!(" LIMIT ${n}"));
    (q.sql, q.params)
}

/// An event's entries: its intent and its outcome, each through its unique index.
const ENTRIES_OF: &str = "SELECT seq, kind, time, prev_hash, hash, payload FROM audit_entries \
     WHERE event_id = $1 AND kind = 'received' \
     UNION ALL SELECT seq, kind, time, prev_hash, hash, payload FROM audit_entries \
     WHERE event_id = $1 AND kind IN ('completed', 'reconciled') ORDER BY seq";

impl TrailReader for PgReader {
    fn each_event(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(EventRecord) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let (sql, params) = events_query(filter);
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
        self.each_row(&sql, &params, &mut |row| {
            let seq: i64 = row.try_get(0).map_err(read_err)?;
            let intent: String = row.try_get(1).map_err(read_err)?;
            let outcome: Option<String> = row.try_get(2).map_err(read_err)?;
            let hash: String = row.try_get(3).map_err(read_err)?;
            f(record(seq, &intent, outcome.as_deref(), hash)?)
        })
    }

    fn entries_of(&self, id: &str) -> Result<Vec<EntryRow>, AuditError> {
        let mut out = Vec::new();
        self.each_row(ENTRIES_OF, &[&id], &mut |r| {
            let payload: String = r.try_get(5).map_err(read_err)?;
            out.push(EntryRow {
                seq: r.try_get(0).map_err(read_err)?,
                kind: r.try_get(1).map_err(read_err)?,
                time: r.try_get(2).map_err(read_err)?,
                prev_hash: r.try_get(3).map_err(read_err)?,
                hash: r.try_get(4).map_err(read_err)?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Head and count in one statement, so they agree while replicas append.
    fn chain_head(&self) -> Result<ChainHead, AuditError> {
        let row = self
            .client
            .borrow_mut()
            .query_one(
                "SELECT h.seq, h.hash, (SELECT COUNT(*) FROM audit_entries) FROM (SELECT 1) AS one \
                 LEFT JOIN LATERAL (SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1) h ON true",
                &[],
            )
            .map_err(read_err)?;
        let seq: Option<i64> = row.try_get(0).map_err(read_err)?;
        let hash: Option<String> = row.try_get(1).map_err(read_err)?;
        let genesis = super::backend::Head::genesis();
        Ok(ChainHead {
            seq: seq.unwrap_or(genesis.seq),
            hash: hash.unwrap_or(genesis.hash),
            entries: row.try_get(2).map_err(read_err)?,
        })
    }

    fn each_entry(
        &self,
        after_seq: i64,
        limit: Option<usize>,
        f: &mut dyn FnMut(ChainEntry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        self.each_row(
            "SELECT seq, prev_hash, hash, payload FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after_seq, &limit],
            &mut |row| {
                f(ChainEntry {
                    seq: row.try_get(0).map_err(read_err)?,
                    prev_hash: row.try_get(1).map_err(read_err)?,
                    hash: row.try_get(2).map_err(read_err)?,
                    payload: row.try_get(3).map_err(read_err)?,
                })
            },
        )
    }

    fn completed_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventRecord)>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        self.each_row(
            "SELECT o.seq, r.seq, r.payload, o.payload, o.hash FROM audit_entries o \
             JOIN audit_entries r ON r.event_id = o.event_id AND r.kind = 'received' \
             WHERE o.seq > $1 AND o.kind IN ('completed', 'reconciled') ORDER BY o.seq LIMIT $2",
            &[&after_seq, &limit],
            &mut |row| {
                let intent: String = row.try_get(2).map_err(read_err)?;
                let outcome: String = row.try_get(3).map_err(read_err)?;
                let rec = record(
                    row.try_get(1).map_err(read_err)?,
                    &intent,
                    Some(&outcome),
                    row.try_get(4).map_err(read_err)?,
                )?;
                out.push((row.try_get(0).map_err(read_err)?, rec));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn each_stored(
        &self,
        f: &mut dyn FnMut(StoredEntry) -> Result<(), AuditError>,
    ) -> Result<usize, AuditError> {
        self.each_row(
            "SELECT seq, event_id, kind, method, solution_id, outcome, payload, prev_hash, hash FROM audit_entries ORDER BY seq",
            &[],
            &mut |r| {
                f(StoredEntry {
                    seq: r.try_get(0).map_err(read_err)?,
                    event_id: r.try_get(1).map_err(read_err)?,
                    kind: r.try_get(2).map_err(read_err)?,
                    method: r.try_get(3).map_err(read_err)?,
                    solution_id: r.try_get(4).map_err(read_err)?,
                    outcome: r.try_get(5).map_err(read_err)?,
                    payload: r.try_get(6).map_err(read_err)?,
                    prev_hash: r.try_get(7).map_err(read_err)?,
                    hash: r.try_get(8).map_err(read_err)?,
                })
            },
        )
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let row = self
            .client
            .borrow_mut()
            .query_opt(super::query::LATEST_CHECKPOINT, &[])
            .map_err(read_err)?;
        row.map(|r| r.try_get(0)).transpose().map_err(read_err)
    }

    fn pending_before(&self, until: &str) -> Result<bool, AuditError> {
        let row = self
            .client
            .borrow_mut()
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM audit_events WHERE outcome IS NULL AND time < $1)",
                &[&until],
            )
            .map_err(read_err)?;
        row.try_get(0).map_err(read_err)
    }
}
