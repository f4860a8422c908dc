//! The audited phases (4–9) of the pipeline, run in order for one `crm.automatedsolution.*`
//! call or the watched commands of a `batch` (each its own event, linked by a batch id and its
//! `cmd` key). Each phase has its own file; this one sequences them:
//!
//! 4. **lock and snapshot** (`snapshot`), the caller's user resolved alongside (`caller`).
//! 5. **plan and decide** (`decide`): `plan::simulate` predicts each command's before/after and
//!    side effects in order; `policy` decides each. One refusal refuses the whole batch.
//! 6. **record intent** (`forward`; entries built in `record`): all intents in one durable
//!    append, before anything is forwarded.
//! 7. **forward** (`forward`) the canonical re-encoding.
//! 8. **record outcome** (`outcome`): per command from the portal's answer, re-reading
//!    whatever the answer does not show.
//! 9. **respond** (`respond`) with the portal's own bytes plus `X-Audit-Event-Id`
//!    (comma-separated for a batch) and `X-Audit-Batch-Id`.
//!
//! Phases 6–8 run in a task of their own (`Committed`, spawned through `lifecycle::Detached`),
//! holding the locks: once the intents are handed to the trail, the change is carried through
//! to its recorded outcome even if the client goes away; the request only awaits the result.

use super::caller::{self, reverts_event};
use super::change::{Item, Shape};
use super::context::request_id;
use super::decide::{overall_verdict, Grants};
use super::record::{self, Shared};
use super::respond::audited_response;
use super::{Pipeline, RequestCtx};
use crate::audit::{new_event_id, Entry};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::identity;
use crate::locks::SolutionGuard;
use crate::mutation::BatchCall;
use crate::mutation::{Credential, Mutation};
use crate::plan;
use crate::upstream::Answer;
use http::{HeaderMap, Response};
use std::sync::Arc;
use tracing::Instrument;

/// A change whose intents are about to be recorded: everything phases 6-8 need, owned, so it
/// can move into its own task; it holds the workplace locks until it is dropped.
pub(super) struct Committed {
    pub(super) credential: Credential,
    pub(super) encoding: &'static str,
    pub(super) headers: HeaderMap,
    pub(super) items: Vec<Item>,
    pub(super) planned: Vec<plan::Planned>,
    pub(super) event_ids: Vec<String>,
    pub(super) intents: Vec<Entry>,
    pub(super) batch: Option<BatchCall>,
    /// Released when the work is done.
    pub(super) _locks: Vec<SolutionGuard>,
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
        let portal = self.portal(ctx)?;
        let (snapshot, user) = tokio::join!(
            self.lock_and_read(ctx, &credential, &items, headers),
            self.caller_user(&portal, &credential, fingerprint.as_deref(), headers)
        );
        let (known, turns) = snapshot?;

        // Phase 5: plan and decide.
        let planned = plan::simulate(&mutations, &known);
        let override_reason = caller::override_reason(headers);
        if let Some(a) = &ctx.approval {
            a.still_as_refused(&planned)?;
        }
        let decisions = self.decide(
            &items,
            &planned,
            Grants {
                user: user.as_deref(),
                key: ctx.key.as_deref(),
                override_reason: override_reason.as_deref(),
                approval: ctx.approval.as_deref(),
            },
        );
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
            portal: &portal.name,
            integration: ctx.key.as_ref().map(|k| k.name.as_str()),
            override_reason: override_reason.as_deref(),
            approval: ctx.approval.as_ref().map(|a| &a.reference),
        };
        let intents = record::intents(&intent, &items, &planned, &decisions, &event_ids);
        if let Some(i) = refused {
            let e = self
                .refuse(intents, &items, &planned, &decisions, &event_ids, i)
                .await;
            self.tell_approvers(ctx, &e, &items[i], &decisions[i], user.as_deref());
            return Err(e);
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
    pub(super) async fn detach(
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

    /// Phases 6-8, in the change's own task; then the locks are released, before the answer
    /// goes anywhere (a client that does not read it holds nothing). Every exchange with the
    /// portal is bounded by `upstream.request_timeout`, so the task ends on its own.
    pub(super) async fn carry_out(
        self: Arc<Self>,
        mut ctx: RequestCtx,
        mut work: Committed,
    ) -> (RequestCtx, Result<Answer, ProxyError>) {
        let result = self.record_and_forward(&mut ctx, &mut work).await;
        drop(work);
        (ctx, result)
    }
}
