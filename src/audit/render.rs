//! Human-readable views of the trail: the table of `audit list` and the demo, and the full
//! account of one event for `audit show`, with a diff of title and bound smart processes.

use super::query::{EntryRow, EventRecord};
use crate::mutation::SolutionState;
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
        let user = e.caller.user_id.as_deref().unwrap_or("-");
        let auth = &e.caller.auth;
        let decision = match &e.rule {
            Some(rule) => format!("{} ({rule})", e.decision),
            None => e.decision.clone(),
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
            outcome_text(e),
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
            "{} user {} (fingerprint {}) from {}",
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
            "status {} error {}",
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
