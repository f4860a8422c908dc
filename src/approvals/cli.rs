//! `b24-audit-proxy approvals list|show|approve`: the approval desk from the command line.
//! `list` and `show` read the trail; `approve` asks the running proxy (its admin listener, as
//! `POST /v1/events/{id}/approve` with the approver's token), because only the proxy may carry
//! a change out — through its own audited path, under its workplace locks.

use super::{approved_by, expired};
use crate::audit::query::{self, EventRecord, Filter, Order};
use crate::audit::Outcome;
use crate::config::Config;
use crate::policy::rules;
use serde_json::json;
use std::path::PathBuf;

/// One `approvals` command.
#[derive(Debug, Clone)]
pub enum ApprovalsCommand {
    List,
    Show {
        id: String,
    },
    Approve {
        id: String,
        reason: String,
        force: bool,
        /// A file holding the approver's token (never an argument: it would be in `ps`).
        token_file: PathBuf,
    },
}

/// Refusals by policy shown by `list`, at most.
const LIST_LIMIT: usize = 200;

fn refused_by_policy(e: &EventRecord) -> bool {
    e.outcome == Some(Outcome::Denied)
        && e.decision == "deny"
        && e.rule
            .as_deref()
            .is_some_and(|r| r != rules::UNINTERPRETABLE && r != rules::KEY_SCOPE)
}

/// Runs `cmd`; the text to print.
pub fn run(cfg: &Config, cmd: ApprovalsCommand) -> Result<String, String> {
    match cmd {
        ApprovalsCommand::List => list(cfg),
        ApprovalsCommand::Show { id } => show(cfg, &id),
        ApprovalsCommand::Approve {
            id,
            reason,
            force,
            token_file,
        } => {
            let token = crate::server::read_token(&token_file).map_err(|e| format!("{e:#}"))?;
            let body = json!({"reason": reason, "force": force}).to_string();
            let path = format!("/v1/events/{id}/approve");
            let (status, answer) =
                crate::healthcheck::admin_request(cfg, "POST", &path, Some(&token), Some(&body))?;
            if status == 200 {
                Ok(format!("approved: {}", answer.trim()))
            } else {
                Err(format!("the proxy answered {status}: {}", answer.trim()))
            }
        }
    }
}

fn list(cfg: &Config) -> Result<String, String> {
    let reader = query::open_reader(&cfg.audit.database).map_err(|e| e.to_string())?;
    let ttl = cfg.admin.approval_ttl;
    let since = crate::audit::format_time(time::OffsetDateTime::now_utc() - ttl);
    let filter = Filter {
        since: Some(since),
        outcome: Some("denied".into()),
        order: Order::Desc,
        ..Filter::default()
    };
    let mut rows = Vec::new();
    query::for_each_event(&*reader, &filter, |e| {
        if refused_by_policy(&e) && rows.len() < LIST_LIMIT {
            rows.push(e);
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(format!(
            "no refusals by policy in the last {}s (admin.approval_ttl)",
            ttl.as_secs()
        ));
    }
    let mut out = vec![format!(
        "{:<36}  {:<24}  {:<30}  {:>9}  {:<22}  STATUS",
        "EVENT", "TIME", "METHOD", "WORKPLACE", "RULE"
    )];
    for e in rows {
        let status = match approved_by(&*reader, &e).map_err(|e| e.to_string())? {
            Some(by) => format!(
                "approved by {} (event {})",
                by["approver"].as_str().unwrap_or("?"),
                by["event_id"].as_str().unwrap_or("?")
            ),
            None if expired(&e.time, ttl) => "expired".into(),
            None => "pending".into(),
        };
        out.push(format!(
            "{:<36}  {:<24}  {:<30}  {:>9}  {:<22}  {status}",
            e.id,
            e.time,
            e.method,
            e.solution_id.map_or("-".into(), |i| i.to_string()),
            e.rule.as_deref().unwrap_or("-"),
        ));
    }
    Ok(out.join("\n"))
}

fn show(cfg: &Config, id: &str) -> Result<String, String> {
    let reader = query::open_reader(&cfg.audit.database).map_err(|e| e.to_string())?;
    let e = query::event(&*reader, id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no event {id}"))?;
    let mut out = vec![
        format!("event      {}", e.id),
        format!("time       {}", e.time),
        format!(
            "method     {} on workplace {}",
            e.method,
            e.solution_id.map_or("-".into(), |i| i.to_string())
        ),
        format!(
            "caller     {}user {}",
            e.caller
                .integration
                .as_ref()
                .map_or(String::new(), |i| format!("integration {i}, ")),
            e.caller.user_id.as_deref().unwrap_or("-")
        ),
        format!(
            "decision   {} {}",
            e.decision,
            e.rule.as_deref().unwrap_or("")
        ),
        format!("request    {}", e.request.params),
    ];
    if let Some(a) = &e.approval {
        out.push(format!(
            "carries out the approval of {} by {}: {}",
            a.approves, a.approver, a.reason
        ));
    }
    if refused_by_policy(&e) {
        let status = match approved_by(&*reader, &e).map_err(|e| e.to_string())? {
            Some(by) => format!("approved by {} — event {}, outcome {}", by["approver"].as_str().unwrap_or("?"), by["event_id"].as_str().unwrap_or("?"), by["outcome"].as_str().unwrap_or("pending")),
            None if expired(&e.time, cfg.admin.approval_ttl) => "not approved; too old to approve (admin.approval_ttl)".into(),
            None => format!("pending: b24-audit-proxy approvals approve {} --config FILE --reason TEXT --token-file FILE", e.id),
        };
        out.push(format!("approval   {status}"));
    } else if e.approval.is_none() {
        out.push("approval   not a change refused by policy: nothing to approve".into());
    }
    Ok(out.join("\n"))
}
