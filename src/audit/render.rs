//! Human-readable views of the trail: the table of `audit list` and the demo, and the full
//! account of one event for `audit show`, with a diff of title and bound smart processes.

use super::query::{EntryRow, EventRecord};
use serde_json::Value;

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

/// The type ids of a `{id, title, typeIds}` state.
fn type_ids(v: &Value) -> Vec<i64> {
    v.get("typeIds")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// Smart processes added to and removed from a workplace between two states.
pub fn binding_diff(before: &Value, after: &Value) -> (Vec<i64>, Vec<i64>) {
    let (b, a) = (type_ids(before), type_ids(after));
    let added = a.iter().copied().filter(|t| !b.contains(t)).collect();
    let removed = b.iter().copied().filter(|t| !a.contains(t)).collect();
    (added, removed)
}

/// Everything about one event, for `audit show`.
pub fn render_event(e: &EventRecord, entries: &[EntryRow], verified: &str) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    line(&mut out, "event", e.id.clone());
    line(&mut out, "time", e.time.clone());
    line(&mut out, "method", e.method.clone());
    line(
        &mut out,
        "workplace",
        e.solution_id.map_or("-".into(), |i| i.to_string()),
    );
    line(
        &mut out,
        "caller",
        format!(
            "{} user {} (fingerprint {}) from {}",
            text(&e.caller["auth"]),
            text(&e.caller["user_id"]),
            text(&e.caller["fingerprint"]),
            text(&e.client_addr)
        ),
    );
    line(&mut out, "request", e.request.to_string());
    let decision = match e.rule.as_str() {
        Some(rule) => format!("{} by rule {rule}", text(&e.decision)),
        None => text(&e.decision),
    };
    line(&mut out, "decision", decision);
    line(
        &mut out,
        "outcome",
        e.outcome.clone().unwrap_or_else(|| "(in flight)".into()),
    );
    line(
        &mut out,
        "portal",
        format!(
            "status {} error {}",
            text(&e.portal_status),
            text(&e.portal_error)
        ),
    );
    if !e.batch.is_null() {
        line(&mut out, "batch", e.batch.to_string());
    }
    out.push_str("\nchange\n");
    let (bt, at) = (e.before.get("title"), e.after.get("title"));
    match (bt, at) {
        (Some(b), Some(a)) if b != a => {
            out.push_str(&format!("  title         {} → {}\n", text(b), text(a)))
        }
        (Some(b), Some(_)) => out.push_str(&format!("  title         {} (unchanged)\n", text(b))),
        (None, Some(a)) => out.push_str(&format!("  title         (none) → {}\n", text(a))),
        (Some(b), None) => out.push_str(&format!(
            "  title         {} → (deleted or unknown)\n",
            text(b)
        )),
        (None, None) => {}
    }
    out.push_str(&format!("  before        {}\n", compact(&e.before)));
    out.push_str(&format!("  after         {}\n", compact(&e.after)));
    let (added, removed) = binding_diff(&e.before, &e.after);
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
