//! `audit export`: the trail as JSON Lines for a SIEM or an auditor — one event per line (the
//! trail's own form (docs/architecture.md, Contracts), or OCSF with `--format ocsf`), or the raw
//! chain entries (`--entries`) that `scripts/verify-trail` verifies. With `--follow` it keeps
//! going, polling the database at a bounded interval and writing what was committed since, until
//! the stop flag is raised (SIGINT/SIGTERM) or `--until` has passed.
//!
//! Followed events are written once each, when their outcome is committed (so in outcome order):
//! an event still in flight is not written half-finished and again later.

use super::query::{self, Filter, TrailReader};
use super::{now_rfc3339, ocsf, AuditError, ChainEntry};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The trail's own event form (docs/architecture.md, Contracts).
    Json,
    /// OCSF API Activity (class 6003).
    Ocsf,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Raw chain entries instead of events.
    pub entries: bool,
    /// Only events received (entries written) at or after this RFC 3339 time; events only.
    pub since: Option<String>,
    /// Only events received (entries written) before this RFC 3339 time.
    pub until: Option<String>,
    /// Keep following, polling at this interval.
    pub follow: Option<Duration>,
}

/// The longest poll interval accepted: a follower must notice new events and a stop promptly.
pub const MAX_POLL: Duration = Duration::from_secs(60);

/// Rows read per query while following, so one poll never holds a read transaction long.
const PAGE: usize = 500;

/// Writes the export; returns how many lines were written.
pub fn run(
    conn: &(impl TrailReader + ?Sized),
    opts: &Options,
    out: &mut impl Write,
    stop: &AtomicBool,
) -> Result<usize, AuditError> {
    if opts.entries && opts.since.is_some() {
        return Err(AuditError::Open(
            "--entries exports the whole chain (a verifier needs its start); --since applies to events only".into(),
        ));
    }
    match (opts.follow, opts.entries) {
        (None, false) => {
            let filter = Filter {
                since: opts.since.clone(),
                until: opts.until.clone(),
                ..Filter::default()
            };
            let n =
                query::for_each_event(conn, &filter, |rec| write_event(out, &rec, opts.format))?;
            flush(out)?;
            Ok(n)
        }
        (None, true) => entries_since(conn, 0, opts, out).map(|(n, _, _)| n),
        (Some(poll), entries) => follow(conn, opts, poll.min(MAX_POLL), entries, out, stop),
    }
}

fn follow(
    conn: &(impl TrailReader + ?Sized),
    opts: &Options,
    poll: Duration,
    entries: bool,
    out: &mut impl Write,
    stop: &AtomicBool,
) -> Result<usize, AuditError> {
    let mut cursor = 0;
    let mut written = 0;
    while !stop.load(Ordering::Relaxed) {
        // Read before the poll: whatever is committed after this instant is seen next time.
        let now = now_rfc3339();
        let (n, next, past_until) = if entries {
            entries_since(conn, cursor, opts, out)?
        } else {
            events_since(conn, cursor, opts, out)?
        };
        written += n;
        cursor = next;
        if past_until || until_passed(conn, opts, &now, entries)? {
            break;
        }
        if n == 0 {
            wait(poll, stop);
        }
    }
    Ok(written)
}

/// Sleeps up to `poll`, waking early when `stop` is raised.
fn wait(poll: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = poll;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
}

/// With `--until`, following stops once that time has passed and nothing received before it
/// is still waiting for its outcome.
fn until_passed(
    conn: &(impl TrailReader + ?Sized),
    opts: &Options,
    now: &str,
    entries: bool,
) -> Result<bool, AuditError> {
    let Some(until) = &opts.until else {
        return Ok(false);
    };
    if now < until.as_str() {
        return Ok(false);
    }
    if entries {
        return Ok(true);
    }
    Ok(!conn.pending_before(until)?)
}

/// Whether an event received before `?1` still waits for its outcome: through the event index's
/// pending events (a NULL outcome), which are few, rather than every intent before `?1`.
pub(crate) const PENDING_BEFORE: &str =
    "SELECT EXISTS (SELECT 1 FROM audit_events WHERE outcome IS NULL AND time < ?1)";

/// The same, on a trail not yet migrated to the event index.
pub(crate) const LEGACY_PENDING_BEFORE: &str = "SELECT EXISTS (SELECT 1 FROM audit_entries r \
     WHERE r.kind = 'received' AND r.time < ?1 AND NOT EXISTS (SELECT 1 FROM audit_entries o \
     WHERE o.event_id = r.event_id AND o.kind IN ('completed', 'reconciled')))";

/// Chain entries after `cursor`: `(written, new cursor, an entry at or past --until was seen)`.
fn entries_since(
    conn: &(impl TrailReader + ?Sized),
    mut cursor: i64,
    opts: &Options,
    out: &mut impl Write,
) -> Result<(usize, i64, bool), AuditError> {
    let mut written = 0;
    let mut past_until = false;
    loop {
        let mut page = Vec::with_capacity(PAGE);
        let n = query::for_each_entry(conn, cursor, Some(PAGE), |e| {
            page.push(e);
            Ok(())
        })?;
        for e in page {
            if until_reached(&e, opts.until.as_deref()) {
                past_until = true;
                break;
            }
            cursor = e.seq;
            write_line(out, &e)?;
            written += 1;
        }
        if n < PAGE || past_until {
            break;
        }
    }
    flush(out)?;
    Ok((written, cursor, past_until))
}

fn until_reached(e: &ChainEntry, until: Option<&str>) -> bool {
    let Some(until) = until else { return false };
    serde_json::from_str::<serde_json::Value>(&e.payload)
        .ok()
        .and_then(|v| v.get("time").and_then(|t| t.as_str()).map(|t| t >= until))
        .unwrap_or(false)
}

/// Events whose outcome was committed after `cursor`.
fn events_since(
    conn: &(impl TrailReader + ?Sized),
    mut cursor: i64,
    opts: &Options,
    out: &mut impl Write,
) -> Result<(usize, i64, bool), AuditError> {
    let mut written = 0;
    let since = opts.since.as_deref();
    let until = opts.until.as_deref();
    loop {
        let page = query::completed_after(conn, cursor, PAGE)?;
        let n = page.len();
        for (seq, rec) in page {
            cursor = seq;
            // Filtered here, not in SQL, so the cursor moves past events filtered out too.
            let received = rec.time.as_str();
            if since.is_some_and(|s| received < s) || until.is_some_and(|u| received >= u) {
                continue;
            }
            write_event(out, &rec, opts.format)?;
            written += 1;
        }
        if n < PAGE {
            break;
        }
    }
    flush(out)?;
    Ok((written, cursor, false))
}

fn write_event(
    out: &mut impl Write,
    rec: &query::EventRecord,
    format: Format,
) -> Result<(), AuditError> {
    match format {
        Format::Json => write_line(out, rec),
        Format::Ocsf => write_line(out, &ocsf::api_activity(rec)),
    }
}

fn write_line(out: &mut impl Write, v: &impl serde::Serialize) -> Result<(), AuditError> {
    let line = serde_json::to_string(v).map_err(|e| AuditError::Open(e.to_string()))?;
    writeln!(out, "{line}").map_err(|e| AuditError::Open(format!("write: {e}")))
}

/// A follower's reader sees each batch as soon as it is written.
fn flush(out: &mut impl Write) -> Result<(), AuditError> {
    out.flush()
        .map_err(|e| AuditError::Open(format!("write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_events_are_found_the_same_way_with_and_without_the_event_index() {
        let c = query::sample_trail(4);
        c.execute(
            "INSERT INTO audit_entries (seq, event_id, kind, time, method, payload, prev_hash, hash) \
             VALUES (9, 'open', 'received', '2026-11-24T10:00:30.000Z', 'm', '{}', 'p', 'h9')",
            [],
        )
        .expect("an intent in flight");
        for (until, pending) in [
            ("2026-11-24T10:00:20.000Z", false),
            ("2026-11-24T10:00:31.000Z", true),
        ] {
            for sql in [PENDING_BEFORE, LEGACY_PENDING_BEFORE] {
                let found: bool = c.query_row(sql, [until], |r| r.get(0)).expect("query");
                assert_eq!(found, pending, "{sql} before {until}");
            }
        }
        let plan = crate::audit::query::query_plan(&c, PENDING_BEFORE, ["t"]);
        assert!(
            plan.iter()
                .any(|l| l.contains("USING INDEX audit_events_outcome (outcome=?)")),
            "{plan:?}"
        );
    }
}
