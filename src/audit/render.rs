//! Human-readable views of the trail: the table of `audit list` and the demo, and the full
//! account of one event for `audit show`, with a diff of title and bound smart processes.

use super::query::{EntryRow, EventRecord};
use crate::mutation::SolutionState;
use serde_json::Value;

/// The table's columns.
const HEADER: [&str; 7] = [
    "time",
    "method",
    "workplace",
    "caller",
    "change",
    "decision",
    "outcome",
];

/// One row of the table.
type Row = [String; 7];

/// Rows per block of the streamed table ([`TableWriter`]): a block's columns are as wide as its
/// widest cell, so only one block is held at a time, and a listing of up to this many events
/// is exactly the table [`render_table`] draws.
pub const TABLE_BLOCK: usize = 1000;

/// A readable table of events: when, who, which workplace, what changed, decision and outcome.
pub fn render_table(events: &[EventRecord]) -> String {
    let rows: Vec<Row> = events.iter().map(table_row).collect();
    let mut out = String::new();
    write_block(&mut out, &rows, true);
    out
}

/// The table of [`render_table`], written as events arrive, a block of [`TABLE_BLOCK`] rows at
/// a time (the header once, above the first).
pub struct TableWriter<W: std::io::Write> {
    out: W,
    rows: Vec<Row>,
    header_written: bool,
}

impl<W: std::io::Write> TableWriter<W> {
    pub fn new(out: W) -> TableWriter<W> {
        TableWriter {
            out,
            rows: Vec::with_capacity(TABLE_BLOCK),
            header_written: false,
        }
    }

    /// Adds one event's row; writes the block when it is full.
    pub fn push(&mut self, e: &EventRecord) -> std::io::Result<()> {
        self.rows.push(table_row(e));
        if self.rows.len() >= TABLE_BLOCK {
            self.write_rows()?;
        }
        Ok(())
    }

    /// Writes what is left (the header alone when there were no events).
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.rows.is_empty() || !self.header_written {
            self.write_rows()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_rows(&mut self) -> std::io::Result<()> {
        let mut text = String::new();
        write_block(&mut text, &self.rows, !self.header_written);
        self.header_written = true;
        self.rows.clear();
        self.out.write_all(text.as_bytes())
    }
}

fn table_row(e: &EventRecord) -> Row {
    let user = e.caller.user_id.as_deref().unwrap_or("-");
    let auth = &e.caller.auth;
    let decision = match &e.rule {
        Some(rule) => format!("{} ({rule})", e.decision),
        None => e.decision.clone(),
    };
    [
        e.time.get(11..19).unwrap_or(&e.time).to_owned(),
        e.method
            .trim_start_matches("crm.automatedsolution.")
            .to_owned(),
        e.solution_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
        match &e.caller.integration {
            // A brokered call: the integration (proxy key) is who it was.
            Some(key) => format!("{key} ({auth}:{user})"),
            None => format!("{auth}:{user}"),
        },
        describe_change(e),
        decision,
        outcome_text(e),
    ]
}

/// `rows` padded to the widest cell of each column (the header's included, so that a later
/// block never draws a column narrower than its name), under the header and its rule when
/// `header`.
fn write_block(out: &mut String, rows: &[Row], header: bool) {
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([HEADER[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    if header {
        line(&mut HEADER.iter().copied());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut rule.iter().map(String::as_str));
    }
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
}

/// The JSON array `serde_json::to_string_pretty` writes for a list of events, written one event
/// at a time (`audit list --json`).
pub struct JsonArrayWriter<W: std::io::Write> {
    out: W,
    written: usize,
}

impl<W: std::io::Write> JsonArrayWriter<W> {
    pub fn new(out: W) -> JsonArrayWriter<W> {
        JsonArrayWriter { out, written: 0 }
    }

    /// Writes one element: its pretty form indented one level, as inside the array.
    pub fn push(&mut self, e: &EventRecord) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(e).map_err(std::io::Error::other)?;
        self.out
            .write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
        for (i, l) in text.lines().enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(b"  ")?;
            self.out.write_all(l.as_bytes())?;
        }
        self.written += 1;
        Ok(())
    }

    /// Closes the array (`[]` when empty), without a newline after it.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out
            .write_all(if self.written == 0 { b"[]" } else { b"\n]" })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn outcome_text(e: &EventRecord) -> String {
    e.outcome
        .map_or("(in flight)", super::Outcome::as_str)
        .to_owned()
}

/// `title "A" → "B"; typeIds [14,158] → [14]`, from before and the requested fields.
fn describe_change(e: &EventRecord) -> String {
    let fields = e.request.params.get("fields");
    let mut parts = Vec::new();
    let before = e.before.as_ref();
    if let Some(t) = fields.and_then(|f| f.get("title")).and_then(Value::as_str) {
        match before.map(|b| b.title.as_str()) {
            Some(b) if b != t => parts.push(format!("title \"{b}\" → \"{t}\"")),
            Some(_) => {}
            None => parts.push(format!("title \"{t}\"")),
        }
    }
    if let Some(ids) = fields.and_then(|f| f.get("typeIds")) {
        match before {
            Some(b) => parts.push(format!(
                "typeIds {} → {}",
                compact(&b.type_ids),
                compact(ids)
            )),
            None => parts.push(format!("typeIds {}", compact(ids))),
        }
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}

fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Smart processes added to and removed from a workplace between two states.
pub fn binding_diff(
    before: Option<&SolutionState>,
    after: Option<&SolutionState>,
) -> (Vec<i64>, Vec<i64>) {
    let ids = |s: Option<&SolutionState>| s.map(|s| s.type_ids.clone()).unwrap_or_default();
    let (b, a) = (ids(before), ids(after));
    let added = a.iter().copied().filter(|t| !b.contains(t)).collect();
    let removed = b.iter().copied().filter(|t| !a.contains(t)).collect();
    (added, removed)
}

/// `-` for nothing, a string as it is, anything else as JSON.
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn line(out: &mut String, k: &str, v: String) {
    out.push_str(&format!("{k:<14}{v}\n"));
}

/// The header of `audit show`: who, what, decided how, answered how.
fn render_summary(out: &mut String, e: &EventRecord) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    line(out, "event", e.id.clone());
    line(out, "time", e.time.clone());
    line(out, "method", e.method.clone());
    line(
        out,
        "workplace",
        e.solution_id.map_or("-".into(), |i| i.to_string()),
    );
    line(
        out,
        "caller",
        format!(
            "{}{} user {} (fingerprint {}) from {}",
            e.caller
                .integration
                .as_ref()
                .map_or(String::new(), |i| format!("integration {i}, ")),
            e.caller.auth,
            opt(&e.caller.user_id),
            opt(&e.caller.fingerprint),
            opt(&e.client_addr)
        ),
    );
    line(out, "request", compact(&e.request));
    let decision = match &e.rule {
        Some(rule) => format!("{} by rule {rule}", e.decision),
        None => e.decision.clone(),
    };
    line(out, "decision", decision);
    line(out, "outcome", outcome_text(e));
    line(
        out,
        "portal",
        format!(
            "{}status {} error {}",
            e.portal
                .as_ref()
                .map_or(String::new(), |p| format!("{p}: ")),
            e.portal_status.map_or("-".into(), |s| s.to_string()),
            text(e.portal_error.as_ref())
        ),
    );
    if let Some(b) = &e.batch {
        line(out, "batch", compact(b));
    }
}

/// The change section of `audit show`: title, states, bindings added and removed.
fn render_change(out: &mut String, e: &EventRecord) {
    out.push_str("\nchange\n");
    let (bt, at) = (
        e.before.as_ref().map(|s| &s.title),
        e.after.as_ref().map(|s| &s.title),
    );
    match (bt, at) {
        (Some(b), Some(a)) if b != a => out.push_str(&format!("  title         {b} → {a}\n")),
        (Some(b), Some(_)) => out.push_str(&format!("  title         {b} (unchanged)\n")),
        (None, Some(a)) => out.push_str(&format!("  title         (none) → {a}\n")),
        (Some(b), None) => out.push_str(&format!("  title         {b} → (deleted or unknown)\n")),
        (None, None) => {}
    }
    out.push_str(&format!("  before        {}\n", compact(&e.before)));
    out.push_str(&format!("  after         {}\n", compact(&e.after)));
    let (added, removed) = binding_diff(e.before.as_ref(), e.after.as_ref());
    let list = |ids: &[i64]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!("  bound         + {}\n", list(&added)));
    out.push_str(&format!("  unbound       - {}\n", list(&removed)));
}

/// Everything about one event, for `audit show`.
pub fn render_event(e: &EventRecord, entries: &[EntryRow], verified: &str) -> String {
    let mut out = String::new();
    render_summary(&mut out, e);
    render_change(&mut out, e);
    out.push_str("\nchain\n");
    for entry in entries {
        out.push_str(&format!(
            "  #{:<8} {:<10} {}  {}\n",
            entry.seq, entry.kind, entry.time, entry.hash
        ));
    }
    out.push_str(&format!("  verify        {verified}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::query::{events, sample_trail, Filter};

    fn listed(n: i64) -> Vec<EventRecord> {
        events(&sample_trail(n), &Filter::default()).expect("events")
    }

    fn streamed_table(events: &[EventRecord]) -> String {
        let mut w = TableWriter::new(Vec::new());
        for e in events {
            w.push(e).expect("row");
        }
        String::from_utf8(w.finish().expect("finish")).expect("utf-8")
    }

    #[test]
    fn a_streamed_table_of_up_to_a_block_is_the_table() {
        for n in [0, 1, 7] {
            let events = listed(n);
            assert_eq!(streamed_table(&events), render_table(&events), "{n} events");
        }
        let full = listed(TABLE_BLOCK as i64);
        assert_eq!(streamed_table(&full), render_table(&full));
    }

    #[test]
    fn a_longer_table_has_one_header_and_every_row() {
        let events = listed(TABLE_BLOCK as i64 + 5);
        let text = streamed_table(&events);
        assert_eq!(text.lines().count(), 2 + events.len());
        assert_eq!(text.lines().filter(|l| l.starts_with("time")).count(), 1);
        let (first, rest) = events.split_at(TABLE_BLOCK);
        let block = |e: &[EventRecord]| {
            render_table(e)
                .lines()
                .skip(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let rows: Vec<String> = text.lines().skip(2).map(str::to_owned).collect();
        assert_eq!(rows[..TABLE_BLOCK], block(first)[..]);
        assert_eq!(rows[TABLE_BLOCK..], block(rest)[..]);
    }

    #[test]
    fn the_streamed_json_is_the_pretty_array() {
        for n in [0, 1, 3] {
            let events = listed(n);
            let mut w = JsonArrayWriter::new(Vec::new());
            for e in &events {
                w.push(e).expect("element");
            }
            let text = String::from_utf8(w.finish().expect("finish")).expect("utf-8");
            let whole = serde_json::to_string_pretty(&events).expect("json");
            assert_eq!(text, whole, "{n} events");
        }
    }
}
