//! Reading the trail: one [`EventRecord`] per audited mutation (its intent joined with its
//! outcome), streamed in trail order; the JSON Lines export of design §6 and the readable table
//! the demo prints. Uses its own read-only connection, so it can run beside a serving proxy.

use super::AuditError;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// One audited mutation, as exported (design §6 `audit export`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub id: String,
    pub time: String,
    pub method: String,
    pub solution_id: Option<i64>,
    pub caller: Value,
    pub client_addr: Value,
    pub request: Value,
    pub before: Value,
    pub after: Value,
    pub decision: Value,
    pub rule: Value,
    /// `null` while the call is still in flight.
    pub outcome: Option<String>,
    pub portal_status: Value,
    pub portal_error: Value,
    pub batch: Value,
    /// Hash of the event's last entry in the chain.
    pub hash: String,
}

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

/// Filters for [`for_each_event`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events received at or after this RFC 3339 time.
    pub since: Option<String>,
    pub solution_id: Option<i64>,
}

/// Calls `f` for each event in trail order.
pub fn for_each_event(
    conn: &Connection,
    filter: &Filter,
    mut f: impl FnMut(EventRecord) -> Result<(), AuditError>,
) -> Result<usize, AuditError> {
    let err = |e: rusqlite::Error| AuditError::Open(e.to_string());
    let mut stmt = conn
        .prepare(
            "SELECT r.payload, o.payload, COALESCE(o.hash, r.hash) FROM audit_entries r \
             LEFT JOIN audit_entries o ON o.event_id = r.event_id AND o.kind <> 'received' \
             WHERE r.kind = 'received' AND (?1 IS NULL OR r.time >= ?1) AND (?2 IS NULL OR r.solution_id = ?2 OR o.solution_id = ?2) \
             ORDER BY r.seq",
        )
        .map_err(err)?;
    let mut rows = stmt
        .query(rusqlite::params![filter.since, filter.solution_id])
        .map_err(err)?;
    let mut n = 0;
    while let Some(row) = rows.next().map_err(err)? {
        let intent: String = row.get(0).map_err(err)?;
        let outcome: Option<String> = row.get(1).map_err(err)?;
        let hash: String = row.get(2).map_err(err)?;
        f(record(&intent, outcome.as_deref(), hash)?)?;
        n += 1;
    }
    Ok(n)
}

fn record(intent: &str, outcome: Option<&str>, hash: String) -> Result<EventRecord, AuditError> {
    let bad = |e: serde_json::Error| AuditError::Open(format!("unreadable audit entry: {e}"));
    let i: Value = serde_json::from_str(intent).map_err(bad)?;
    let o: Value = match outcome {
        Some(text) => serde_json::from_str(text).map_err(bad)?,
        None => Value::Null,
    };
    let get = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    Ok(EventRecord {
        id: get(&i, "event_id").as_str().unwrap_or_default().to_owned(),
        time: get(&i, "time").as_str().unwrap_or_default().to_owned(),
        method: get(&i, "method").as_str().unwrap_or_default().to_owned(),
        // An add has no id until the portal answers; its outcome entry carries the new one.
        solution_id: get(&i, "solution_id")
            .as_i64()
            .or_else(|| get(&o, "solution_id").as_i64()),
        caller: get(&i, "caller"),
        client_addr: get(&i, "client_addr"),
        request: get(&i, "request"),
        before: get(&i, "before"),
        after: get(&o, "after"),
        decision: get(&i, "decision"),
        rule: get(&i, "rule"),
        outcome: o.get("outcome").and_then(Value::as_str).map(str::to_owned),
        portal_status: get(&o, "portal_status"),
        portal_error: get(&o, "portal_error"),
        batch: get(&i, "batch"),
        hash,
    })
}

/// Writes the JSON Lines export; returns how many events were written.
pub fn export(
    conn: &Connection,
    filter: &Filter,
    out: &mut impl Write,
) -> Result<usize, AuditError> {
    for_each_event(conn, filter, |rec| {
        let line = serde_json::to_string(&rec).map_err(|e| AuditError::Open(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| AuditError::Open(format!("write: {e}")))
    })
}

/// A readable table of events: when, who, which workplace, what changed, decision and outcome.
pub fn render_table(events: &[EventRecord]) -> String {
    let mut rows = vec![[
        "time".to_owned(),
        "method".to_owned(),
        "workplace".to_owned(),
        "caller".to_owned(),
        "change".to_owned(),
        "decision".to_owned(),
        "outcome".to_owned(),
    ]];
    for e in events {
        let user = e
            .caller
            .get("user_id")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let auth = e.caller.get("auth").and_then(Value::as_str).unwrap_or("-");
        let decision = match e.rule.as_str() {
            Some(rule) => format!("{} ({rule})", e.decision.as_str().unwrap_or("-")),
            None => e.decision.as_str().unwrap_or("-").to_owned(),
        };
        rows.push([
            e.time.get(11..19).unwrap_or(&e.time).to_owned(),
            e.method
                .trim_start_matches("crm.automatedsolution.")
                .to_owned(),
            e.solution_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            format!("{auth}:{user}"),
            describe_change(e),
            decision,
            e.outcome
                .clone()
                .unwrap_or_else(|| "(in flight)".to_owned()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}

/// `title "A" → "B"; typeIds [14,158] → [14]`, from before and the requested fields.
fn describe_change(e: &EventRecord) -> String {
    let fields = e.request.get("params").and_then(|p| p.get("fields"));
    let mut parts = Vec::new();
    let before_title = e.before.get("title").and_then(Value::as_str);
    if let Some(t) = fields.and_then(|f| f.get("title")).and_then(Value::as_str) {
        match before_title {
            Some(b) if b != t => parts.push(format!("title \"{b}\" → \"{t}\"")),
            Some(_) => {}
            None => parts.push(format!("title \"{t}\"")),
        }
    }
    if let Some(ids) = fields.and_then(|f| f.get("typeIds")) {
        match e.before.get("typeIds") {
            Some(b) => parts.push(format!("typeIds {} → {}", compact(b), compact(ids))),
            None => parts.push(format!("typeIds {}", compact(ids))),
        }
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
