//! Phases 4–9 of the pipeline for audited changes: one `crm.automatedsolution.*` call, or the
//! watched commands of a `batch` (each its own event, linked by a batch id and its `cmd` key).
//!
//! 4. **lock and snapshot**: every workplace the change touches is locked (ascending ids, so two
//!    requests can never wait on each other), then read with the caller's credential — one
//!    `get`, or one `batch`. When the change binds a smart process the target does not hold,
//!    the workplace last seen holding it (`owners`) is locked and read in the same request;
//!    when none is known, or it no longer holds it, every workplace is listed (in that request
//!    too, when possible) and an owner not locked yet is locked and everything re-read.
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
//! Phases 6–8 run in a task of their own (`Committed`, spawned through `lifecycle::Detached`),
//! holding the locks: once the intents are handed to the trail, the change is carried through
//! to its recorded outcome even if the client goes away; the request only awaits the result.

use crate::audit::record::{
    AfterSource, BatchRef, Caller, Completion, Intent, RequestInfo, SideEffectAfter, Subject,
};
use crate::audit::{new_event_id, Entry, Outcome};
use crate::body::ProxyBody;
use crate::error::{ProxyError, UpstreamFailure};
use crate::identity;
use crate::locks::SolutionGuard;
use crate::metrics::UpstreamPhase;
use crate::mutation::{
    canonical, outbound, Credential, Interpreted, Mutation, MutationKind, SolutionState,
};
use crate::pipeline::{
    answer_response, request_id, reverts_event, Pipeline, RequestCtx, AUDIT_EVENT_HEADER,
};
use crate::plan::{self, Known};
use crate::rest::batch::{self, sub_answer, BatchCall};
use crate::rest::envelope;
use crate::upstream::Answer;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// The response header naming a batch's id.
pub const AUDIT_BATCH_HEADER: HeaderName = HeaderName::from_static("x-audit-batch-id");

/// How many times the lock set may grow because a newly found owner must be locked too.
const MAX_LOCK_ROUNDS: usize = 3;

/// The most pages of `crm.automatedsolution.list` read (50 workplaces a page: 10,000 — far past
/// any plan's limit).
const MAX_LIST_PAGES: usize = 200;

/// What a change is: a single call, or a batch.
pub(crate) enum Shape {
    Single(Interpreted),
    Batch {
        call: BatchCall,
        credential: Credential,
        encoding: &'static str,
    },
}

/// One audited change of the request.
struct Item {
    /// The `cmd` key, for a batch command.
    key: Option<String>,
    mutation: Mutation,
}

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

/// Why the snapshot stopped the call: the portal's own refusal, answered as is.
enum Stop {
    Answer(Box<Answer>),
    Envelope(StatusCode, bytes::Bytes),
}

impl Pipeline {
    pub(crate) async fn audited(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        parts: &http::request::Parts,
        shape: Shape,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (credential, encoding, items, batch) = match shape {
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
        };
        let mutations: Vec<Mutation> = items.iter().map(|i| i.mutation.clone()).collect();
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
        let (known, turns) = match snapshot? {
            Ok(read) => read,
            Err(Stop::Answer(a)) => return Ok(answer_response(*a, None)),
            Err(Stop::Envelope(status, body)) => return Ok(envelope_response(status, body)),
        };

        // Phase 5: plan and decide.
        let planned = plan::simulate(&mutations, &known);
        let policy = self.current_policy();
        let decisions: Vec<_> = items
            .iter()
            .zip(&planned)
            .map(|(i, p)| policy.evaluate_planned(&i.mutation, p, user.as_deref()))
            .collect();
        for d in &decisions {
            self.metrics.decision(d.rule, d.verdict.label());
        }
        let refused = decisions.iter().position(|d| d.is_denied());
        ctx.decision = Some(match refused {
            Some(i) => decisions[i].verdict.label(),
            None => decisions
                .iter()
                .map(|d| d.verdict.label())
                .find(|l| *l != "allow")
                .unwrap_or("allow"),
        });
        let batch_id = batch.as_ref().map(|_| new_event_id());
        let event_ids: Vec<String> = items.iter().map(|_| new_event_id()).collect();
        ctx.event_id = Some(event_ids.join(","));
        let rid = ctx
            .request_id
            .get_or_insert_with(|| request_id(headers))
            .clone();
        let reverts = reverts_event(headers);

        let intents: Vec<Entry> = items
            .iter()
            .zip(&planned)
            .zip(&decisions)
            .zip(&event_ids)
            .map(|(((item, p), d), event_id)| {
                Intent {
                    caller: Caller {
                        auth: credential.auth_kind().to_owned(),
                        user_id: user.clone(),
                        fingerprint: fingerprint.clone(),
                    },
                    client_addr: Some(client.to_string()),
                    request: RequestInfo {
                        http_method: parts.method.as_str().to_owned(),
                        encoding: encoding.to_owned(),
                        params: item.mutation.params_json(),
                    },
                    before: p.before.clone(),
                    decision: d.verdict.label().to_owned(),
                    rule: d.rule.map(str::to_owned),
                    reason: d.reason.clone(),
                    batch: match (&batch_id, &item.key) {
                        (Some(b), Some(k)) => Some(BatchRef {
                            id: b.clone(),
                            key: k.clone(),
                        }),
                        _ => None,
                    },
                    side_effects: p.side_effects.clone(),
                    request_id: Some(rid.clone()),
                    reverts: reverts.clone(),
                }
                .entry(subject(
                    event_id,
                    &item.mutation,
                    item.mutation.solution_id,
                ))
            })
            .collect();

        if let Some(i) = refused {
            // The whole call is refused: every command is recorded, none forwarded.
            let mut entries = intents;
            for ((item, p), event_id) in items.iter().zip(&planned).zip(&event_ids) {
                let reason = (item.key.is_some() && item.key != items[i].key).then(|| {
                    format!(
                        "refused with its batch: command '{}' was refused",
                        items[i].key.as_deref().unwrap_or("")
                    )
                });
                let out = Completion {
                    after: p.before.clone(),
                    reason,
                    ..Completion::default()
                };
                entries.push(out.entry(
                    subject(event_id, &item.mutation, item.mutation.solution_id),
                    Outcome::Denied,
                ));
            }
            self.audit
                .append(entries)
                .await
                .map_err(|e| self.audit_failed(e))?;
            let d = &decisions[i];
            let reason = d.reason.clone().unwrap_or_default();
            return Err(ProxyError::PolicyViolation {
                rule: d.rule.unwrap_or("policy").to_owned(),
                reason: match &items[i].key {
                    Some(k) => format!("batch command '{k}': {reason}"),
                    None => reason,
                },
                event_id: event_ids[i].clone(),
            });
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
        let me = self.clone();
        let own_ctx = ctx.clone();
        let (done, answer) = self
            .detached
            .spawn(async move { me.carry_out(own_ctx, work).await })
            .await
            .map_err(|_| ProxyError::Internal("the audited work ended abnormally".into()))?;
        ctx.upstream_seconds = done.upstream_seconds;
        ctx.upstream_status = done.upstream_status;

        // Phase 9: the portal's own answer, plus the event ids.
        let mut resp = answer_response(answer?, None);
        if let Ok(v) = HeaderValue::from_str(&event_ids.join(",")) {
            resp.headers_mut().insert(AUDIT_EVENT_HEADER, v);
        }
        if let Some(b) = batch_id
            .as_deref()
            .and_then(|b| HeaderValue::from_str(b).ok())
        {
            resp.headers_mut().insert(AUDIT_BATCH_HEADER, b);
        }
        Ok(resp)
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
        let Committed {
            credential,
            encoding,
            headers,
            items,
            planned,
            event_ids,
            batch,
            ..
        } = &*work;
        let encoding = *encoding;
        // Phase 6: every intent is durable before anything is forwarded.
        self.audit
            .append(intents)
            .await
            .map_err(|e| self.audit_failed(e))?;

        // Phase 7: forward the canonical re-encoding.
        let forward = match &batch {
            None => canonical(&Interpreted {
                mutation: items[0].mutation.clone(),
                credential: credential.clone(),
                encoding,
            }),
            Some(call) => outbound("batch", credential, call.forward_params()),
        };
        let t = Instant::now();
        let forwarded = self.upstream.call(&forward, headers).await;
        ctx.upstream_seconds += t.elapsed().as_secs_f64();
        self.metrics
            .upstream(UpstreamPhase::Forward, t.elapsed().as_secs_f64());

        // Phase 8: the outcome of each command.
        let (results, answer) = self.outcomes(ctx, items, batch.is_some(), forwarded);
        let mut reread: BTreeSet<i64> = BTreeSet::new();
        for ((item, p), r) in items.iter().zip(planned).zip(&results) {
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
        let fresh = if reread.is_empty() {
            BTreeMap::new()
        } else {
            self.read_many(ctx, credential, &reread, headers, UpstreamPhase::Reread)
                .await
                .unwrap_or_default()
        };
        let mut done = Vec::with_capacity(items.len());
        for (((item, p), r), event_id) in items.iter().zip(planned).zip(results).zip(event_ids) {
            let after = match (r.after.clone(), r.reread, item.mutation.solution_id) {
                (Some(a), _, _) => Some(a),
                (None, true, Some(id)) => fresh.get(&id).cloned(),
                (None, _, _) if r.outcome == Outcome::Failed => p.before.clone(),
                _ => None,
            };
            let side_effects_after = (!p.side_effects.is_empty()).then(|| {
                p.side_effects
                    .iter()
                    .map(|e| {
                        let (after, source) = match fresh.get(&e.solution_id) {
                            Some(seen) => (Some(seen.clone()), Some(AfterSource::Reread)),
                            None if shown_by_the_answer(&r, e) => {
                                (Some(e.after.clone()), Some(AfterSource::Answer))
                            }
                            None => (None, None),
                        };
                        SideEffectAfter {
                            solution_id: e.solution_id,
                            after,
                            source,
                        }
                    })
                    .collect()
            });
            let solution_id = item.mutation.solution_id.or(after.as_ref().map(|s| s.id));
            let out = Completion {
                portal_status: r.status,
                portal_error: r.error,
                after,
                side_effects_after,
                reason: None,
            };
            done.push(out.entry(subject(event_id, &item.mutation, solution_id), r.outcome));
        }
        if let Err(e) = self.audit.append(done).await {
            // The intents are durable; start-up reconciliation marks them `unknown`.
            tracing::error!(target: "audit", event_id = %event_ids.join(","), error = %e, "Outcome not recorded");
        }

        answer.map_err(ProxyError::Upstream)
    }

    /// `crm.type.delete` of a smart process bound to a workplace would unbind it there without
    /// an audited change: refused, naming the workplace (unbind it with an audited
    /// `crm.automatedsolution.update` first). `Ok(None)`: not bound anywhere, forward as is.
    pub(crate) async fn guard_type_delete(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        type_id: i64,
        headers: &HeaderMap,
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let all = match self
            .list_all(ctx, credential, headers, 0, Vec::new())
            .await?
        {
            Ok(all) => all,
            Err(Stop::Answer(a)) => return Ok(Some(answer_response(*a, None))),
            Err(Stop::Envelope(status, body)) => return Ok(Some(envelope_response(status, body))),
        };
        match all.iter().find(|w| w.type_ids.contains(&type_id)) {
            None => Ok(None),
            Some(w) => Err(ProxyError::uninterpretable(
                "BINDING_CHANGE_NOT_AUDITED",
                format!(
                    "smart process {type_id} is bound to digital workplace {}; deleting it would unbind it there unaudited: unbind it with crm.automatedsolution.update first",
                    w.id
                ),
            )),
        }
    }

    /// Locks every workplace the change touches and reads them (phase 4), in one request
    /// whenever the owners of the smart processes it binds are known (`owners`): the targets
    /// and the workplaces last seen holding those smart processes are locked and read together,
    /// and when a smart process has no such owner the listing of every workplace goes in the
    /// same request. Only a guess that turns out wrong costs another round.
    async fn lock_and_read(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        items: &[Item],
        headers: &HeaderMap,
    ) -> Result<Result<(Known, Vec<SolutionGuard>), Stop>, ProxyError> {
        let mutations: Vec<Mutation> = items.iter().map(|i| i.mutation.clone()).collect();
        let targets: BTreeSet<i64> = mutations.iter().filter_map(|m| m.solution_id).collect();
        let bound = plan::bound_types(&mutations);
        let mut found = BTreeSet::new();
        for _ in 0..MAX_LOCK_ROUNDS {
            let (guess, every_one) = self.owners.guess(&bound);
            let lock_set: BTreeSet<i64> = targets
                .iter()
                .chain(&guess)
                .chain(&found)
                .copied()
                .collect();
            let guards = self.locks.lock_all(&lock_set).await;
            let pages = if bound.is_empty() || every_one {
                0
            } else {
                self.owners.pages()
            };
            let read = match self
                .read_targets(ctx, credential, items, &targets, &lock_set, pages, headers)
                .await?
            {
                Ok(read) => read,
                Err(stop) => return Ok(Err(stop)),
            };
            let mut known = Known {
                states: read.states,
                complete: false,
            };
            self.owners.learn(known.states.values());
            let mut listing = read.listing;
            if listing.is_none()
                && plan::binds_new_types(&mutations, &known.states)
                && !plan::holders_read(&bound, &known.states)
            {
                // A guessed owner no longer holds it, or it was never seen: list them all.
                listing = match self
                    .list_all(ctx, credential, headers, 0, Vec::new())
                    .await?
                {
                    Ok(all) => Some(all),
                    Err(stop) => return Ok(Err(stop)),
                };
            }
            if let Some(all) = listing {
                self.owners.learn_all(&all);
                for s in all {
                    known.states.entry(s.id).or_insert(s);
                }
            }
            // Every workplace holding a smart process being bound is in `states`: listed, or
            // read fresh under its lock (a smart process belongs to one workplace at most).
            known.complete = true;
            let owners = plan::owners_of_bound(&mutations, &known, &targets);
            if owners.is_subset(&lock_set) {
                return Ok(Ok((known, guards)));
            }
            // An owner not locked yet: take the wider lock set (in order) and read again, so
            // its state cannot change between the read and the forward.
            drop(guards);
            found.extend(owners);
        }
        Err(ProxyError::uninterpretable(
            "CONCURRENT_CHANGE",
            "the smart-process bindings kept changing while the proxy read them; retry the call",
        ))
    }

    /// The states of `reads` (the targets and guessed owners) and, with `pages` > 0, the
    /// listing of every workplace, in one request. A refusal by the portal of a target stops
    /// the call: the portal's own answer for a single call, its error for the command's key for
    /// a batch; a guessed owner that cannot be read is left out.
    #[allow(clippy::too_many_arguments)]
    async fn read_targets(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        items: &[Item],
        targets: &BTreeSet<i64>,
        reads: &BTreeSet<i64>,
        pages: usize,
        headers: &HeaderMap,
    ) -> Result<Result<Read, Stop>, ProxyError> {
        let single = matches!(items, [item] if item.key.is_none());
        if let (true, 0, [id]) = (
            single,
            pages,
            reads.iter().copied().collect::<Vec<_>>().as_slice(),
        ) {
            return self.read_single(ctx, credential, *id, headers).await;
        }
        if reads.is_empty() && pages == 0 {
            return Ok(Ok(Read {
                states: BTreeMap::new(),
                listing: None,
            }));
        }
        let pages = pages.min(batch::MAX_COMMANDS.saturating_sub(reads.len()));
        let bundle = match self
            .read_bundle(
                ctx,
                credential,
                reads,
                0..pages,
                headers,
                UpstreamPhase::Snapshot,
            )
            .await?
        {
            Ok(b) => b,
            Err(a) => return Ok(Err(Stop::Answer(a))),
        };
        if let Some((id, error)) = bundle.refused.iter().find(|(id, _)| targets.contains(id)) {
            if single {
                // The portal's own answer to reading this workplace, as a single call gets it.
                return self.read_single(ctx, credential, *id, headers).await;
            }
            let key = items
                .iter()
                .find(|i| i.mutation.solution_id == Some(*id))
                .and_then(|i| i.key.clone())
                .unwrap_or_default();
            let code = error
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("ERROR");
            let desc = error
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            let body = envelope::error_body(code, &format!("batch command '{key}': {desc}"));
            return Ok(Err(Stop::Envelope(StatusCode::BAD_REQUEST, body)));
        }
        let listing = match bundle.listing {
            Some((page, None)) => Some(page),
            // More workplaces than the pages sent: the rest in one more request when the
            // portal said how many there are, else page by page.
            Some((mut rows, Some(next))) => {
                let rest = self
                    .list_rest(ctx, credential, headers, next, bundle.total)
                    .await?;
                match rest {
                    Ok(more) => {
                        rows.extend(more);
                        Some(rows)
                    }
                    Err(stop) => return Ok(Err(stop)),
                }
            }
            None => None,
        };
        Ok(Ok(Read {
            states: bundle.states,
            listing,
        }))
    }

    /// One workplace read with a single `get`; a refusal is the portal's own answer.
    async fn read_single(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        id: i64,
        headers: &HeaderMap,
    ) -> Result<Result<Read, Stop>, ProxyError> {
        Ok(self
            .read_one(ctx, credential, id, headers, UpstreamPhase::Snapshot)
            .await?
            .map(|s| Read {
                states: BTreeMap::from([(id, s)]),
                listing: None,
            })
            .map_err(Stop::Answer))
    }

    /// One `batch` (one request toward the portal's rate limit): a `get` of each of `ids` and
    /// `pages` pages of the listing.
    async fn read_bundle(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        ids: &BTreeSet<i64>,
        pages: std::ops::Range<usize>,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<Result<Bundle, Box<Answer>>, ProxyError> {
        let mut cmd: Map<String, Value> = ids
            .iter()
            .map(|id| {
                (
                    format!("s{id}"),
                    json!(format!("crm.automatedsolution.get?id={id}")),
                )
            })
            .collect();
        for page in pages.clone() {
            cmd.insert(
                format!("l{page}"),
                json!(format!(
                    "crm.automatedsolution.list?order[id]=ASC&start={}",
                    page * crate::owners::LIST_PAGE
                )),
            );
        }
        let call = outbound("batch", credential, json!({"halt": false, "cmd": cmd}));
        let answer = self.exchange(ctx, &call, headers, phase).await?;
        let invalid = || {
            self.metrics
                .upstream_error(UpstreamFailure::Invalid.label());
            ProxyError::Upstream(UpstreamFailure::Invalid)
        };
        let Some(json) = answer.json() else {
            return Err(invalid());
        };
        if !answer.status.is_success() || json.get("error").is_some() {
            ctx.upstream_status = Some(answer.status.as_u16());
            return Ok(Err(Box::new(answer)));
        }
        let mut bundle = Bundle::default();
        for id in ids {
            let key = format!("s{id}");
            if let Some(e) = sub_answer(&json, "result_error", &key) {
                bundle.refused.push((*id, e.clone()));
                continue;
            }
            let state = sub_answer(&json, "result", &key)
                .and_then(|r| r.get("automatedSolution"))
                .and_then(|s| serde_json::from_value::<SolutionState>(s.clone()).ok())
                .ok_or_else(invalid)?;
            bundle.states.insert(*id, state);
        }
        let mut listing: Vec<SolutionState> = Vec::new();
        for page in pages.clone() {
            let key = format!("l{page}");
            let Some(rows) = sub_answer(&json, "result", &key)
                .and_then(|r| r.get("automatedSolutions"))
                .and_then(|l| serde_json::from_value::<Vec<SolutionState>>(l.clone()).ok())
            else {
                // A page the portal would not give: the listing is read on its own, if needed.
                return Ok(Ok(Bundle {
                    listing: None,
                    ..bundle
                }));
            };
            listing.extend(rows);
            bundle.total = bundle
                .total
                .or_else(|| sub_answer(&json, "result_total", &key).and_then(Value::as_i64));
            let next = sub_answer(&json, "result_next", &key).and_then(Value::as_i64);
            if next.is_none() || page + 1 == pages.end {
                bundle.listing = Some((listing, next));
                break;
            }
        }
        Ok(Ok(bundle))
    }

    /// Reads several workplaces: one `get`, or one `batch` of `get`s. Missing ones are left out.
    pub(crate) async fn read_many(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        ids: &BTreeSet<i64>,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<BTreeMap<i64, SolutionState>, ProxyError> {
        if ids.len() == 1 {
            let id = *ids.iter().next().unwrap_or(&0);
            return Ok(
                match self.read_one(ctx, credential, id, headers, phase).await? {
                    Ok(s) => BTreeMap::from([(id, s)]),
                    Err(_) => BTreeMap::new(),
                },
            );
        }
        Ok(
            match self
                .read_bundle(ctx, credential, ids, 0..0, headers, phase)
                .await?
            {
                Ok(bundle) => bundle.states,
                Err(_) => BTreeMap::new(),
            },
        )
    }

    /// One `crm.automatedsolution.get`. `Ok(Err(answer))` is the portal's own refusal.
    pub(crate) async fn read_one(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        id: i64,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<Result<SolutionState, Box<Answer>>, ProxyError> {
        let get = outbound("crm.automatedsolution.get", credential, json!({ "id": id }));
        let answer = self.exchange(ctx, &get, headers, phase).await?;
        let json = answer.json();
        if answer.status.is_success() {
            if let Some(state) = json.as_ref().and_then(SolutionState::from_answer) {
                return Ok(Ok(state));
            }
        }
        if json.as_ref().is_some_and(|j| j.get("error").is_some()) {
            ctx.upstream_status = Some(answer.status.as_u16());
            return Ok(Err(Box::new(answer)));
        }
        self.metrics
            .upstream_error(UpstreamFailure::Invalid.label());
        Err(ProxyError::Upstream(UpstreamFailure::Invalid))
    }

    /// The listing from offset `next` on: every remaining page in one `batch` when `total`
    /// says how many (and they fit one), else page by page.
    async fn list_rest(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        headers: &HeaderMap,
        next: i64,
        total: Option<i64>,
    ) -> Result<Result<Vec<SolutionState>, Stop>, ProxyError> {
        let page = crate::owners::LIST_PAGE as i64;
        let fits = total.filter(|t| *t > next && (t - next) / page < batch::MAX_COMMANDS as i64);
        if let (Some(total), 0) = (fits, next % page) {
            let first = (next / page) as usize;
            let last = ((total + page - 1) / page) as usize;
            let none = BTreeSet::new();
            let bundle = self
                .read_bundle(
                    ctx,
                    credential,
                    &none,
                    first..last,
                    headers,
                    UpstreamPhase::Snapshot,
                )
                .await?;
            match bundle {
                Ok(Bundle {
                    listing: Some((rows, None)),
                    ..
                }) => return Ok(Ok(rows)),
                Err(a) => return Ok(Err(Stop::Answer(a))),
                // The portal grew meanwhile, or a page failed: page by page from here.
                Ok(_) => {}
            }
        }
        self.list_all(ctx, credential, headers, next, Vec::new())
            .await
    }

    /// Every workplace, page by page (`crm.automatedsolution.list`), from offset `start` on,
    /// after the `out` already read.
    async fn list_all(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        headers: &HeaderMap,
        mut start: i64,
        mut out: Vec<SolutionState>,
    ) -> Result<Result<Vec<SolutionState>, Stop>, ProxyError> {
        for _ in 0..MAX_LIST_PAGES {
            let call = outbound(
                "crm.automatedsolution.list",
                credential,
                json!({"order": {"id": "ASC"}, "start": start}),
            );
            let answer = self
                .exchange(ctx, &call, headers, UpstreamPhase::Snapshot)
                .await?;
            let Some(json) = answer.json() else {
                self.metrics
                    .upstream_error(UpstreamFailure::Invalid.label());
                return Err(ProxyError::Upstream(UpstreamFailure::Invalid));
            };
            if !answer.status.is_success() || json.get("error").is_some() {
                return Ok(Err(Stop::Answer(Box::new(answer))));
            }
            let page: Vec<SolutionState> = json
                .get("result")
                .and_then(|r| r.get("automatedSolutions"))
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .ok_or(ProxyError::Upstream(UpstreamFailure::Invalid))?;
            out.extend(page);
            match json.get("next").and_then(Value::as_i64) {
                Some(next) if next > start => start = next,
                _ => return Ok(Ok(out)),
            }
        }
        Ok(Ok(out))
    }

    /// One buffered exchange with the portal, timed and counted.
    async fn exchange(
        &self,
        ctx: &mut RequestCtx,
        call: &crate::mutation::OutboundCall,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<Answer, ProxyError> {
        let t = Instant::now();
        let result = self.upstream.call(call, headers).await;
        ctx.upstream_seconds += t.elapsed().as_secs_f64();
        self.metrics.upstream(phase, t.elapsed().as_secs_f64());
        result.map_err(|k| self.upstream_failed(k))
    }

    /// Reads each command's outcome from the portal's answer to the forwarded call.
    fn outcomes(
        &self,
        ctx: &mut RequestCtx,
        items: &[Item],
        is_batch: bool,
        forwarded: Result<Answer, UpstreamFailure>,
    ) -> (Vec<CommandResult>, Result<Answer, UpstreamFailure>) {
        let answer = match forwarded {
            Ok(a) => a,
            Err(k) => {
                self.metrics.upstream_error(k.label());
                let outcome = if k == UpstreamFailure::Connect {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                };
                let results = items
                    .iter()
                    .map(|_| CommandResult {
                        outcome,
                        after: None,
                        reread: outcome == Outcome::Unknown,
                        status: None,
                        error: None,
                    })
                    .collect();
                return (results, Err(k));
            }
        };
        ctx.upstream_status = Some(answer.status.as_u16());
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
            .map(|item| {
                if let Some(e) = &whole_error {
                    return CommandResult::read_back(
                        Outcome::RejectedByPortal,
                        status,
                        Some(e.clone()),
                    );
                }
                let (result, error) = match (&item.key, is_batch) {
                    (Some(k), true) => (
                        sub_answer(&json, "result", k).cloned(),
                        sub_answer(&json, "result_error", k)
                            .and_then(|e| e.get("error"))
                            .cloned(),
                    ),
                    _ => (json.get("result").cloned(), None),
                };
                match (result, error) {
                    (_, Some(e)) => {
                        CommandResult::read_back(Outcome::RejectedByPortal, status, Some(e))
                    }
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
            })
            .collect();
        (results, Ok(answer))
    }
}

/// What the snapshot read: the targets and guessed owners, and every workplace when listed.
struct Read {
    states: BTreeMap<i64, SolutionState>,
    listing: Option<Vec<SolutionState>>,
}

/// One bundled read: the states read, the ids the portal refused, and the listing's pages with
/// the offset of the next page when there are more.
#[derive(Default)]
struct Bundle {
    states: BTreeMap<i64, SolutionState>,
    refused: Vec<(i64, Value)>,
    listing: Option<(Vec<SolutionState>, Option<i64>)>,
    /// How many workplaces the portal has, when a listing page said.
    total: Option<i64>,
}

impl CommandResult {
    /// An outcome whose after-state the answer does not show: it is read back.
    fn read_back(outcome: Outcome, status: Option<u16>, error: Option<Value>) -> CommandResult {
        CommandResult {
            outcome,
            after: None,
            reread: true,
            status,
            error,
        }
    }
}

struct CommandResult {
    outcome: Outcome,
    /// From the answer itself (success).
    after: Option<SolutionState>,
    /// The answer does not show the state after: read it back.
    reread: bool,
    status: Option<u16>,
    error: Option<Value>,
}

/// Does the portal's answer itself show what a side effect did? It does when the change
/// applied and the target's state in the answer holds every smart process taken from the other
/// workplace: a smart process belongs to one workplace at most, so that workplace (locked, so
/// changed by nobody else through the proxy) now holds exactly its planned after-state, and no
/// re-read is spent on it.
fn shown_by_the_answer(r: &CommandResult, e: &plan::SideEffect) -> bool {
    let Some(after) = r.after.as_ref().filter(|_| r.outcome == Outcome::Applied) else {
        return false;
    };
    e.before
        .type_ids
        .iter()
        .filter(|t| !e.after.type_ids.contains(t))
        .all(|t| after.type_ids.contains(t))
}

/// What identifies the change an entry of `m` belongs to.
fn subject<'a>(event_id: &'a str, m: &'a Mutation, solution_id: Option<i64>) -> Subject<'a> {
    Subject {
        event_id,
        method: m.kind.method(),
        solution_id,
    }
}

fn envelope_response(status: StatusCode, body: bytes::Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::bytes(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}
