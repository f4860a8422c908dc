//! The text of the event query, built from the filters actually given so that SQLite can serve
//! each of them with an index (a `(?N IS NULL OR …)` term can use none). Values are always bound
//! parameters; only fixed fragments of SQL are put together here.
//!
//! The query is driven by the most selective table a filter names, joined in a fixed order
//! (`CROSS JOIN`) so the planner cannot start from the whole trail: one intent by id through
//! the unique index on intents' event ids; a workplace or a caller through its table of the
//! event index (`migrations/0003_event_index.sql`), whose primary key yields matches in trail
//! order; `audit_events`, one row per intent, through its index on outcome (NULL: pending) or
//! time; with none of these, the trail itself by its primary key. Rows come out in seq order,
//! so a page reads only as far as its limit, and the cursor bounds the same column the order
//! uses.
//!
//! What is returned is read from the chain's own entries (the intent's and the outcome's hashed
//! payloads); the event index only chooses which.

use rusqlite::types::Value;

/// Filters for `query::for_each_event`; every one set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events received at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only events received before this RFC 3339 time.
    pub until: Option<String>,
    pub solution_id: Option<i64>,
    /// An outcome name, or `pending` for events without one yet.
    pub outcome: Option<String>,
    /// A webhook/OAuth user id or a credential fingerprint.
    pub caller: Option<String>,
    /// A single event.
    pub event_id: Option<String>,
    /// Only events past this cursor (intent sequence number) in the listing order: later
    /// ones when ascending, earlier ones when [`Order::Desc`] — so a cursor taken from the last
    /// event of one page always continues with the next page.
    pub after_seq: Option<i64>,
    /// At most this many events.
    pub limit: Option<usize>,
    /// Trail order (the default, what export and `audit list` use) or newest first.
    pub order: Order,
}

/// The order events are listed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first: trail order.
    #[default]
    Asc,
    /// Newest first (the timeline page).
    Desc,
}

/// The columns every event query returns: intent seq, intent payload, outcome payload, and the
/// hash of the event's last entry.
const COLUMNS: &str = "SELECT r.seq, r.payload, o.payload, COALESCE(o.hash, r.hash)";

/// The outcome entry of the intent `r`, through the unique index on outcomes' event ids.
const OUTCOME_JOIN: &str = " LEFT JOIN audit_entries o ON o.event_id = r.event_id \
     AND o.kind IN ('completed', 'reconciled')";

/// Where the query starts: the table a filter names that narrows it most.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// One intent by event id.
    Intent,
    /// A workplace's events.
    Solution,
    /// A caller's events.
    Caller,
    /// Every intent, through the indexes of `audit_events` (outcome, time).
    Events,
    /// Every intent, in the trail itself: nothing to filter on but the cursor.
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

    /// The tables, driver first; `audit_events` only when a term reads it, so a listing of
    /// everything (an export) reads the trail alone, as before the index.
    fn from(self, filter: &Filter) -> String {
        let seq = self.seq();
        let mut from = match self {
            Driver::Intent | Driver::Trail => " FROM audit_entries r".to_owned(),
            Driver::Solution => " FROM audit_event_solutions d".to_owned(),
            Driver::Caller => " FROM audit_event_callers d".to_owned(),
            Driver::Events => " FROM audit_events e".to_owned(),
        };
        if self != Driver::Events && needs_events(filter) {
            from.push_str(&format!(" CROSS JOIN audit_events e ON e.seq = {seq}"));
        }
        if matches!(self, Driver::Solution | Driver::Caller | Driver::Events) {
            from.push_str(&format!(" CROSS JOIN audit_entries r ON r.seq = {seq}"));
        }
        from
    }

    /// The seq column the query is ordered and bounded by: the driving table's, so that its
    /// index order is the result's order.
    fn seq(self) -> &'static str {
        match self {
            Driver::Intent | Driver::Trail => "r.seq",
            Driver::Solution | Driver::Caller => "d.seq",
            Driver::Events => "e.seq",
        }
    }
}

/// Whether a filter reads `audit_events` (outcome and time live there).
fn needs_events(filter: &Filter) -> bool {
    filter.outcome.is_some() || filter.since.is_some() || filter.until.is_some()
}

/// SQL text being put together, and the values its placeholders stand for.
struct Query {
    sql: String,
    params: Vec<Value>,
}

impl Query {
    /// Binds `value`; returns its placeholder's number.
    fn bind(&mut self, value: Value) -> usize {
        self.params.push(value);
        self.params.len()
    }

    /// Appends ` AND {before}?N{after}`, binding `value` to `?N`.
    fn and(&mut self, before: &str, value: Value, after: &str) {
        let n = self.bind(value);
        self.sql.push_str(&format!(" AND {before}?{n}{after}"));
    }

    /// `since`: the first seq at or after it is where `time_max` first reaches it (one index
    /// lookup); the term on `time` keeps the bound exact past a clock that stepped back.
    fn since(&mut self, seq: &str, t: &str) {
        let n = self.bind(Value::Text(t.to_owned()));
        self.sql.push_str(&format!(
            " AND {seq} >= (SELECT m.seq FROM audit_events m WHERE m.time_max >= ?{n} \
             ORDER BY m.time_max, m.seq LIMIT 1) AND e.time >= ?{n}"
        ));
    }

    /// `until`: no event before it comes after both the last seq whose `time_max` is before it
    /// and the last one written while the clock was stepped back to before it.
    fn until(&mut self, seq: &str, t: &str) {
        let n = self.bind(Value::Text(t.to_owned()));
        self.sql.push_str(&format!(
            " AND {seq} <= MAX(\
             COALESCE((SELECT m.seq FROM audit_events m WHERE m.time_max < ?{n} \
                       ORDER BY m.time_max DESC, m.seq DESC LIMIT 1), 0), \
             COALESCE((SELECT MAX(b.seq) FROM audit_events b INDEXED BY audit_events_stepped_back WHERE b.time < b.time_max AND b.time < ?{n}), 0)) \
             AND e.time < ?{n}"
        ));
    }
}

/// The SQL for `filter` and its parameters, in order.
pub(crate) fn events_query(filter: &Filter) -> (String, Vec<Value>) {
    let d = Driver::of(filter);
    let mut q = Query {
        sql: format!(
            "{COLUMNS}{}{OUTCOME_JOIN} WHERE r.kind = 'received'",
            d.from(filter)
        ),
        params: Vec::new(),
    };
    if let Some(id) = &filter.event_id {
        q.and("r.event_id = ", Value::Text(id.clone()), "");
    }
    if let Some(sol) = filter.solution_id {
        match d {
            Driver::Solution => q.and("d.solution_id = ", Value::Integer(sol), ""),
            _ => q.and(
                "EXISTS (SELECT 1 FROM audit_event_solutions s WHERE s.solution_id = ",
                Value::Integer(sol),
                &format!(" AND s.seq = {})", d.seq()),
            ),
        }
    }
    if let Some(caller) = &filter.caller {
        let v = Value::Text(caller.clone());
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
        Some(o) => q.and("e.outcome = ", Value::Text(o.to_owned()), ""),
        None => {}
    }
    if let Some(t) = &filter.since {
        q.since(d.seq(), t);
    }
    if let Some(t) = &filter.until {
        q.until(d.seq(), t);
    }
    let (cmp, dir) = match filter.order {
        Order::Asc => (">", ""),
        Order::Desc => ("<", " DESC"),
    };
    if let Some(c) = filter.after_seq {
        q.and(&format!("{} {cmp} ", d.seq()), Value::Integer(c), "");
    }
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    q.params.push(Value::Integer(limit));
    q.sql.push_str(&format!(
        " ORDER BY {}{dir} LIMIT ?{}",
        d.seq(),
        q.params.len()
    ));
    (q.sql, q.params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn schema() -> Connection {
        let mut c = Connection::open_in_memory().expect("db");
        super::super::migrate::apply(&mut c).expect("schema");
        c
    }

    /// The plan SQLite chooses, one detail per line.
    fn plan(c: &Connection, f: &Filter) -> Vec<String> {
        let (sql, params) = events_query(f);
        crate::audit::query::query_plan(c, &sql, rusqlite::params_from_iter(params))
    }

    /// A plan line that reads more than its filter selects: a table scanned, or rows sorted
    /// (which reads every match before the first is returned).
    fn reads_too_much(line: &str) -> bool {
        line.starts_with("SCAN")
            || line.contains("TEMP B-TREE")
            || (line.starts_with("SEARCH") && !line.contains(" USING "))
    }

    #[test]
    fn every_filter_is_served_by_an_index_in_both_orders() {
        let c = schema();
        for f in filters() {
            for order in [Order::Asc, Order::Desc] {
                let f = Filter {
                    order,
                    limit: Some(100),
                    ..f.clone()
                };
                let plan = plan(&c, &f);
                assert!(
                    !plan.iter().any(|l| reads_too_much(l)),
                    "{f:?}:\n  {}",
                    plan.join("\n  ")
                );
            }
        }
    }

    #[test]
    fn listing_everything_reads_the_trail_in_order() {
        let plan = plan(&schema(), &Filter::default());
        assert_eq!(plan[0], "SCAN r", "{plan:?}");
        assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// Each filter of `/v1/events` alone, and some together.
    fn filters() -> Vec<Filter> {
        let d = Filter::default;
        vec![
            Filter {
                since: Some("2026-11-24T00:00:00.000Z".into()),
                ..d()
            },
            Filter {
                until: Some("2026-11-24T00:00:00.000Z".into()),
                ..d()
            },
            Filter {
                solution_id: Some(238),
                ..d()
            },
            Filter {
                outcome: Some("denied".into()),
                ..d()
            },
            Filter {
                outcome: Some("pending".into()),
                ..d()
            },
            Filter {
                caller: Some("1".into()),
                ..d()
            },
            Filter {
                event_id: Some("e".into()),
                ..d()
            },
            Filter {
                after_seq: Some(9),
                ..d()
            },
            Filter {
                solution_id: Some(238),
                outcome: Some("denied".into()),
                caller: Some("1".into()),
                after_seq: Some(9),
                ..d()
            },
            Filter {
                outcome: Some("denied".into()),
                since: Some("2026".into()),
                ..d()
            },
            Filter {
                caller: Some("1".into()),
                until: Some("2026".into()),
                since: Some("2025".into()),
                ..d()
            },
            Filter {
                outcome: Some("pending".into()),
                after_seq: Some(9),
                ..d()
            },
        ]
    }
}
