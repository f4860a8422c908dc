//! Phases 5–9 of the pipeline for audited changes: one `crm.automatedsolution.*` call, or the
//! watched commands of a `batch` (each its own event, linked by a batch id and its `cmd` key).
//!
//! 4. **lock and snapshot** (`snapshot`).
//! 5. **plan and decide**: `plan::simulate` predicts each command's before/after and side
//!    effects in order; `policy` decides each. One refusal refuses the whole batch.
//! 6. **record intent**: all intents in one durable append, before anything is forwarded.
//! 7. **forward** the canonical re-encoding (a single call, or the batch with its watched
//!    commands rewritten).
//! 8. **record outcome**: per command from the portal's answer (`result` / `result_error`),
//!    re-reading whatever the answer does not show; side effects re-read too.
//! 9. **respond** with the portal's own bytes plus `X-Audit-Event-Id` (comma-separated for a
//!    batch) and `X-Audit-Batch-Id`.
//!
//! The entries themselves are built in `record`. Phases 6–8 run in a task of their own
//! (`Committed`, spawned through `lifecycle::Detached`), holding the locks: once the intents
//! are handed to the trail, the change is carried through to its recorded outcome even if the
//! client goes away; the request only awaits the result.

use super::change::{shown_by_the_answer, CommandResult, Item, Shape};
use super::record::{self, Shared};
use super::respond::audited_response;
use super::{request_id, reverts_event, Pipeline, RequestCtx};
use crate::audit::{new_event_id, Entry, Outcome};
use crate::body::ProxyBody;
use crate::error::{ProxyError, UpstreamFailure};
use crate::identity;
use crate::locks::SolutionGuard;
use crate::metrics::UpstreamPhase;
use crate::mutation::BatchCall;
use crate::mutation::{canonical, outbound, Credential, Interpreted, Mutation, MutationKind};
use crate::plan;
use crate::policy::Decision;
use crate::rest::batch::sub_answer;
use crate::upstream::Answer;
use http::{HeaderMap, Response};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// A change whose intents are about to be recorded: everything phases 6-8 need, owned, so it
/// can move into its own task; it holds the workplace locks until it is dropped.
struct Committed {
    credential: Credential,
    encoding: &'static str,
    headers: HeaderMap,
    items: Vec<Item>,
    planned: Vec<plan::Planned>,
    event_ids: Vec<String>,
    intents: Vec<Entry>,
    batch: Option<BatchCall>,
    /// Released when the work is done.
    _locks: Vec<SolutionGuard>,
}

/// The change taken apart: its credential and encoding, its watched items, and the batch
/// around them.
type Parts = (Credential, &'static str, Vec<Item>, Option<BatchCall>);

fn items_of(shape: Shape) -> Parts {
    match shape {
        Shape::Single(call) => {
            let item = Item {
                key: None,
                mutation: call.mutation,
            };
            (call.credential, call.encoding, vec![item], None)
        }
        Shape::Batch {
            call,
            credential,
            encoding,
        } => {
            let items = call
                .commands
                .iter()
                .filter_map(|c| {
                    c.mutation.clone().map(|m| Item {
                        key: Some(c.key.clone()),
                        mutation: m,
                    })
                })
                .collect();
            (credential, encoding, items, Some(call))
        }
    }
}

/// The verdict of the whole call: the refusing one, else the first that is not a plain allow.
fn overall_verdict(decisions: &[Decision], refused: Option<usize>) -> &'static str {
    match refused {
        Some(i) => decisions[i].verdict.label(),
        None => decisions
            .iter()
            .map(|d| d.verdict.label())
            .find(|l| *l != "allow")
            .unwrap_or("allow"),
    }
}

impl Pipeline {
    pub(crate) async fn audited(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        parts: &http::request::Parts,
        shape: Shape,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (credential, encoding, items, batch) = items_of(shape);
        let mutations: Vec<Mutation> = items.iter().map(|i| i.mutation.clone()).collect();
        if let [Some(id)] = mutations.iter().map(|m| m.solution_id).collect::<Vec<_>>()[..] {
            tracing::Span::current().record("solution_id", id);
        }
        let headers = &parts.headers;
        let fingerprint = credential
            .secret_material()
            .map(|m| self.key.fingerprint(&m));
        let client = identity::client_addr(ctx.peer, headers, &self.trusted_proxies);

        // Phase 4: lock and snapshot; an OAuth caller's user is resolved at the same time.
        let (snapshot, user) = tokio::join!(
            self.lock_and_read(ctx, &credential, &items, headers),
            self.caller_user(&credential, fingerprint.as_deref(), headers)
        );
        let (known, turns) = snapshot?;

        // Phase 5: plan and decide.
        let planned = plan::simulate(&mutations, &known);
        let decisions = self.decide(&items, &planned, user.as_deref());
        let refused = decisions.iter().position(|d| d.is_denied());
        ctx.decision = Some(overall_verdict(&decisions, refused));
        let batch_id = batch.as_ref().map(|_| new_event_id());
        let event_ids: Vec<String> = items.iter().map(|_| new_event_id()).collect();
        ctx.event_id = Some(event_ids.join(","));
        let rid = ctx
            .request_id
            .get_or_insert_with(|| request_id(headers))
            .clone();
        let reverts = reverts_event(headers);
        let intent = Shared {
            credential: &credential,
            user: user.as_deref(),
            fingerprint: fingerprint.as_deref(),
            client,
            http_method: &parts.method,
            encoding,
            batch_id: batch_id.as_deref(),
            request_id: &rid,
            reverts: reverts.as_deref(),
        };
        let intents = record::intents(&intent, &items, &planned, &decisions, &event_ids);
        if let Some(i) = refused {
            return Err(self
                .refuse(intents, &items, &planned, &decisions, &event_ids, i)
                .await);
        }

        // Phases 6-8 run in a task of their own: from the intent on, the change is carried
        // through to its recorded outcome whatever happens to the client's connection. If
        // this request is dropped now, only the answer is lost.
        let work = Committed {
            credential,
            encoding,
            headers: headers.clone(),
            items,
            planned,
            event_ids: event_ids.clone(),
            intents,
            batch,
            _locks: turns,
        };
        let answer = self.detach(ctx, work).await?;

        // Phase 9: the portal's own answer, plus the event ids.
        Ok(audited_response(answer, &event_ids, batch_id.as_deref()))
    }

    /// Hands the committed work to its own task and awaits it; the request's context gets the
    /// upstream timings and status the task recorded.
    async fn detach(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        work: Committed,
    ) -> Result<Answer, ProxyError> {
        let me = self.clone();
        let own_ctx = ctx.clone();
        // The request's span goes with the work, which may outlive the request.
        let span = tracing::Span::current();
        let (done, answer) = self
            .detached
            .spawn(async move { me.carry_out(own_ctx, work).await }.instrument(span))
            .await
            .map_err(|_| ProxyError::Internal("the audited work ended abnormally".into()))?;
        ctx.upstream_seconds = done.upstream_seconds;
        ctx.upstream_status = done.upstream_status;
        answer
    }

    /// Phase 5: each command decided by the policy in force, and counted.
    fn decide(
        &self,
        items: &[Item],
        planned: &[plan::Planned],
        user: Option<&str>,
    ) -> Vec<Decision> {
        let policy = self.current_policy();
        let decisions: Vec<_> = items
            .iter()
            .zip(planned)
            .map(|(i, p)| policy.evaluate_planned(&i.mutation, p, user))
            .collect();
        for d in &decisions {
            self.metrics.decision(d.rule, d.verdict.label());
        }
        decisions
    }

    /// The whole call is refused for command `i`: every command is recorded, none forwarded.
    async fn refuse(
        &self,
        mut entries: Vec<Entry>,
        items: &[Item],
        planned: &[plan::Planned],
        decisions: &[Decision],
        event_ids: &[String],
        i: usize,
    ) -> ProxyError {
        entries.extend(record::denied(items, planned, event_ids, i));
        if let Err(e) = self.audit.append(entries).await {
            return self.audit_failed(e);
        }
        let d = &decisions[i];
        let reason = d.reason.clone().unwrap_or_default();
        ProxyError::PolicyViolation {
            rule: d.rule.unwrap_or("policy").to_owned(),
            reason: match &items[i].key {
                Some(k) => format!("batch command '{k}': {reason}"),
                None => reason,
            },
            event_id: event_ids[i].clone(),
        }
    }

    /// Phases 6-8, in the change's own task; then the locks are released, before the answer
    /// goes anywhere (a client that does not read it holds nothing). Every exchange with the
    /// portal is bounded by `upstream.request_timeout`, so the task ends on its own.
    async fn carry_out(
        self: Arc<Self>,
        mut ctx: RequestCtx,
        mut work: Committed,
    ) -> (RequestCtx, Result<Answer, ProxyError>) {
        let result = self.record_and_forward(&mut ctx, &mut work).await;
        drop(work);
        (ctx, result)
    }

    /// Records the intents, forwards, records each command's outcome.
    async fn record_and_forward(
        &self,
        ctx: &mut RequestCtx,
        work: &mut Committed,
    ) -> Result<Answer, ProxyError> {
        let intents = std::mem::take(&mut work.intents);
        let w = &*work;
        // Phase 6: every intent is durable before anything is forwarded.
        self.audit
            .append(intents)
            .await
            .map_err(|e| self.audit_failed(e))?;

        // Phase 7: forward the canonical re-encoding.
        let forward = match &w.batch {
            None => canonical(&Interpreted {
                mutation: w.items[0].mutation.clone(),
                credential: w.credential.clone(),
                encoding: w.encoding,
            }),
            Some(call) => outbound("batch", &w.credential, call.forward_params()),
        };
        let t = Instant::now();
        let forwarded = self.upstream.call(&forward, &w.headers).await;
        ctx.upstream_seconds += t.elapsed().as_secs_f64();
        self.metrics
            .upstream(UpstreamPhase::Forward, t.elapsed().as_secs_f64());
        if let Ok(a) = &forwarded {
            ctx.upstream_status = Some(a.status.as_u16());
        }

        // Phase 8: the outcome of each command.
        let (results, answer) = self.outcomes(&w.items, w.batch.is_some(), forwarded);
        let reread = to_reread(&w.items, &w.planned, &results);
        let fresh = if reread.is_empty() {
            BTreeMap::new()
        } else {
            self.read_many(
                ctx,
                &w.credential,
                &reread,
                &w.headers,
                UpstreamPhase::Reread,
            )
            .await
            .unwrap_or_default()
        };
        let done = record::outcomes(&w.items, &w.planned, results, &w.event_ids, &fresh);
        if let Err(e) = self.audit.append(done).await {
            // The intents are durable; start-up reconciliation marks them `unknown`.
            tracing::error!(target: "audit", event_id = %w.event_ids.join(","), error = %e, "Outcome not recorded");
        }

        answer.map_err(ProxyError::Upstream)
    }

    /// Reads each command's outcome from the portal's answer to the forwarded call.
    fn outcomes(
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
fn to_reread(
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
