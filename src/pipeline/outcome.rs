//! Phase 8, the outcome of each command, read from the portal's answer to the forwarded call
//! (`result` / `result_error` per batch key); what the answer does not show is re-read.

use super::change::{shown_by_the_answer, CommandResult, Item};
use super::Pipeline;
use crate::audit::Outcome;
use crate::error::UpstreamFailure;
use crate::mutation::MutationKind;
use crate::plan;
use crate::rest::batch::sub_answer;
use crate::upstream::Answer;
use serde_json::Value;
use std::collections::BTreeSet;

impl Pipeline {
    /// Reads each command's outcome from the portal's answer to the forwarded call.
    pub(super) fn outcomes(
        &self,
        items: &[Item],
        is_batch: bool,
        forwarded: Result<Answer, UpstreamFailure>,
    ) -> (Vec<CommandResult>, Result<Answer, UpstreamFailure>) {
        let answer = match forwarded {
            Ok(a) => a,
            Err(k) => {
                self.metrics.upstream_error(k.label());
                return (unanswered(items, k), Err(k));
            }
        };
        let status = Some(answer.status.as_u16());
        let Some(json) = answer.json() else {
            self.metrics
                .upstream_error(UpstreamFailure::Invalid.label());
            let results = items
                .iter()
                .map(|_| CommandResult::read_back(Outcome::Unknown, status, None))
                .collect();
            return (results, Err(UpstreamFailure::Invalid));
        };
        let whole_error = (!answer.status.is_success() || json.get("error").is_some())
            .then(|| json.get("error").cloned().unwrap_or(Value::Null));
        if whole_error.is_some() {
            self.metrics.upstream_error("status");
        }
        let results = items
            .iter()
            .map(|item| match &whole_error {
                Some(e) => {
                    CommandResult::read_back(Outcome::RejectedByPortal, status, Some(e.clone()))
                }
                None => command_result(item, &json, is_batch, status),
            })
            .collect();
        (results, Ok(answer))
    }
}

/// The workplaces whose state after the change the answer does not show: the targets of
/// commands read back, and the side effects the answer does not cover.
pub(super) fn to_reread(
    items: &[Item],
    planned: &[plan::Planned],
    results: &[CommandResult],
) -> BTreeSet<i64> {
    let mut reread: BTreeSet<i64> = BTreeSet::new();
    for ((item, p), r) in items.iter().zip(planned).zip(results) {
        if r.reread {
            if let Some(id) = item.mutation.solution_id {
                reread.insert(id);
            }
        }
        reread.extend(
            p.side_effects
                .iter()
                .filter(|e| !shown_by_the_answer(r, e))
                .map(|e| e.solution_id),
        );
    }
    reread
}

/// No answer came: a refused connection changed nothing; past it, whether anything changed is
/// read back.
fn unanswered(items: &[Item], k: UpstreamFailure) -> Vec<CommandResult> {
    let outcome = if k == UpstreamFailure::Connect {
        Outcome::Failed
    } else {
        Outcome::Unknown
    };
    items
        .iter()
        .map(|_| CommandResult {
            outcome,
            after: None,
            reread: outcome == Outcome::Unknown,
            status: None,
            error: None,
        })
        .collect()
}

/// One command's outcome from an answer that is not an error as a whole.
fn command_result(item: &Item, json: &Value, is_batch: bool, status: Option<u16>) -> CommandResult {
    let (result, error) = match (&item.key, is_batch) {
        (Some(k), true) => (
            sub_answer(json, "result", k).cloned(),
            sub_answer(json, "result_error", k)
                .and_then(|e| e.get("error"))
                .cloned(),
        ),
        _ => (json.get("result").cloned(), None),
    };
    match (result, error) {
        (_, Some(e)) => CommandResult::read_back(Outcome::RejectedByPortal, status, Some(e)),
        (Some(r), None) => CommandResult {
            outcome: Outcome::Applied,
            after: match item.mutation.kind {
                MutationKind::Delete => None,
                _ => r
                    .get("automatedSolution")
                    .and_then(|s| serde_json::from_value(s.clone()).ok()),
            },
            reread: false,
            status,
            error: None,
        },
        // Not run (the batch halted before it): whether anything changed is read back.
        (None, None) => CommandResult::read_back(Outcome::Unknown, status, None),
    }
}
