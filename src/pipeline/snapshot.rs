//! Phase 4 of an audited change: lock and snapshot.
//!
//! Every workplace the change touches is locked (ascending ids, so two requests can never wait
//! on each other), then read with the caller's credential — one `get`, or one `batch`. When the
//! change binds a smart process the target does not hold, the workplace last seen holding it
//! (`owners`) is locked and read in the same request; when none is known, or it no longer holds
//! it, every workplace is listed in that request too (as many pages as one batch carries when
//! the proxy has never listed). An owner found in the listing is then locked without waiting
//! when no audited change ended meanwhile (`locks::try_lock_unchanged`), else the wider lock set
//! is taken in order and everything re-read. So a change costs one read request, however many
//! workplaces the portal has. The guard of `crm.type.delete` reads the listing too.

use super::change::Item;
use super::{Pipeline, RequestCtx};
use crate::error::{PortalRefusal, ProxyError, UpstreamFailure};
use crate::locks::SolutionGuard;
use crate::metrics::UpstreamPhase;
use crate::mutation::{outbound, Credential, Mutation, SolutionState};
use crate::plan::{self, Known};
use crate::rest::batch::{self, sub_answer};
use crate::upstream::Answer;
use http::HeaderMap;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// How many times the lock set may grow because a newly found owner must be locked too.
const MAX_LOCK_ROUNDS: usize = 3;

/// The most pages of `crm.automatedsolution.list` read (50 workplaces a page: 10,000 — far past
/// any plan's limit).
const MAX_LIST_PAGES: usize = 200;

impl Pipeline {
    /// `crm.type.delete` of a smart process bound to a workplace would unbind it there without
    /// an audited change: refused, naming the workplace (unbind it with an audited
    /// `crm.automatedsolution.update` first). `Ok(())`: not bound anywhere.
    pub(crate) async fn guard_type_delete(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        type_id: i64,
        headers: &HeaderMap,
    ) -> Result<(), ProxyError> {
        let all = self
            .list_all(ctx, credential, headers, 0, Vec::new())
            .await?;
        match all.iter().find(|w| w.type_ids.contains(&type_id)) {
            None => Ok(()),
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
    pub(super) async fn lock_and_read(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        items: &[Item],
        headers: &HeaderMap,
    ) -> Result<(Known, Vec<SolutionGuard>), ProxyError> {
        let portal = self.portal(ctx)?;
        let mutations: Vec<Mutation> = items.iter().map(|i| i.mutation.clone()).collect();
        let targets: BTreeSet<i64> = mutations.iter().filter_map(|m| m.solution_id).collect();
        let bound = plan::bound_types(&mutations);
        let mut found = BTreeSet::new();
        for _ in 0..MAX_LOCK_ROUNDS {
            let (guess, every_one) = portal.owners.guess(&bound);
            let lock_set: BTreeSet<i64> = targets
                .iter()
                .chain(&guess)
                .chain(&found)
                .copied()
                .collect();
            let mut guards = portal.locks.lock_all(&lock_set).await;
            let epoch = portal.locks.epoch();
            if let Some(replicas) = &portal.replica_locks {
                self.lock_replicas(replicas, &portal.name, &lock_set, &mut guards)
                    .await?;
            }
            let pages = if bound.is_empty() || every_one {
                0
            } else {
                portal.owners.pages()
            };
            let read = self
                .read_targets(ctx, credential, items, &targets, &lock_set, pages, headers)
                .await?;
            let mut known = Known {
                states: read.states,
                complete: false,
            };
            portal.owners.learn(known.states.values());
            let mut listing = read.listing;
            if listing.is_none()
                && plan::binds_new_types(&mutations, &known.states)
                && !plan::holders_read(&bound, &known.states)
            {
                // A guessed owner no longer holds it, or it was never seen: list them all.
                listing = Some(
                    self.list_all(ctx, credential, headers, 0, Vec::new())
                        .await?,
                );
            }
            if let Some(all) = listing {
                portal.owners.learn_all(&all);
                for s in all {
                    known.states.entry(s.id).or_insert(s);
                }
            }
            // Every workplace holding a smart process being bound is in `states`: listed, or
            // read fresh under its lock (a smart process belongs to one workplace at most).
            known.complete = true;
            let owners = plan::owners_of_bound(&mutations, &known, &targets);
            if owners.is_subset(&lock_set) {
                return Ok((known, guards));
            }
            // An owner found in the listing, not locked yet. When its lock is free and no
            // audited change ended since the read, the listing shows its state as it is: lock
            // it and go on, no second read.
            let missing: BTreeSet<i64> = owners.difference(&lock_set).copied().collect();
            // Not across replicas: the epoch counts this process's changes only.
            if portal.replica_locks.is_none() {
                if let Some(more) = portal.locks.try_lock_unchanged(&missing, epoch) {
                    guards.extend(more);
                    return Ok((known, guards));
                }
            }
            // Else take the wider lock set (in order) and read again, so its state cannot
            // change between the read and the forward.
            drop(guards);
            found.extend(owners);
        }
        Err(ProxyError::uninterpretable(
            "CONCURRENT_CHANGE",
            "the smart-process bindings kept changing while the proxy read them; retry the call",
        ))
    }

    /// Takes the advisory locks of `lock_set` across replicas (a PostgreSQL trail) and hangs
    /// them on the first local guard, so they are released with the local locks — at the
    /// outcome, or when the request fails or is dropped. The local locks are already held, so
    /// at most one request of this process waits for a workplace's advisory lock.
    async fn lock_replicas(
        &self,
        replicas: &std::sync::Arc<crate::audit::pg_locks::PgLocks>,
        portal: &str,
        lock_set: &BTreeSet<i64>,
        guards: &mut [SolutionGuard],
    ) -> Result<(), ProxyError> {
        use crate::audit::pg_locks::LockFailure;
        let Some(first) = guards.first_mut() else {
            return Ok(());
        };
        let held = replicas.lock(portal, lock_set).await.map_err(|e| match e {
            LockFailure::Busy => ProxyError::WorkplaceBusy,
            LockFailure::Unavailable(why) => {
                tracing::warn!(target: "audit", error = %why, "Cannot take the workplace locks across replicas");
                ProxyError::AuditUnavailable
            }
        })?;
        first.hold_with(Box::new(held));
        Ok(())
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
    ) -> Result<Read, ProxyError> {
        let single = matches!(items, [item] if item.key.is_none());
        if let (true, 0, [id]) = (
            single,
            pages,
            reads.iter().copied().collect::<Vec<_>>().as_slice(),
        ) {
            return self.read_single(ctx, credential, *id, headers).await;
        }
        if reads.is_empty() && pages == 0 {
            return Ok(Read {
                states: BTreeMap::new(),
                listing: None,
            });
        }
        let pages = pages.min(batch::MAX_COMMANDS.saturating_sub(reads.len()));
        let bundle = self
            .read_bundle(
                ctx,
                credential,
                reads,
                0..pages,
                headers,
                UpstreamPhase::Snapshot,
            )
            .await?;
        if let Some((id, error)) = bundle.refused.iter().find(|(id, _)| targets.contains(id)) {
            if single {
                // The portal's own answer to reading this workplace, as a single call gets it.
                return self.read_single(ctx, credential, *id, headers).await;
            }
            return Err(command_refused(items, *id, error));
        }
        let listing = match bundle.listing {
            Some((page, None)) => Some(page),
            // More workplaces than the pages sent: the rest in one more request when the
            // portal said how many there are, else page by page.
            Some((mut rows, Some(next))) => {
                rows.extend(
                    self.list_rest(ctx, credential, headers, next, bundle.total)
                        .await?,
                );
                Some(rows)
            }
            None => None,
        };
        Ok(Read {
            states: bundle.states,
            listing,
        })
    }

    /// One workplace read with a single `get`; a refusal is the portal's own answer.
    async fn read_single(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        id: i64,
        headers: &HeaderMap,
    ) -> Result<Read, ProxyError> {
        let state = self
            .read_one(ctx, credential, id, headers, UpstreamPhase::Snapshot)
            .await?;
        Ok(Read {
            states: BTreeMap::from([(id, state)]),
            listing: None,
        })
    }

    /// One `batch` (one request toward the portal's rate limit): a `get` of each of `ids` and
    /// `pages` pages of the listing. The portal's refusal of the batch as a whole is
    /// `ProxyError::Portal`; a refused `get` is in `refused`.
    async fn read_bundle(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        ids: &BTreeSet<i64>,
        pages: std::ops::Range<usize>,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<Bundle, ProxyError> {
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
            return Err(ProxyError::portal(answer));
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
                return Ok(Bundle {
                    listing: None,
                    ..bundle
                });
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
        Ok(bundle)
    }

    /// Reads several workplaces: one `get`, or one `batch` of `get`s. Missing ones are left out,
    /// and a refusal by the portal reads as nothing known.
    pub(crate) async fn read_many(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        ids: &BTreeSet<i64>,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<BTreeMap<i64, SolutionState>, ProxyError> {
        let read = if let [id] = ids.iter().copied().collect::<Vec<_>>()[..] {
            self.read_one(ctx, credential, id, headers, phase)
                .await
                .map(|s| BTreeMap::from([(id, s)]))
        } else {
            self.read_bundle(ctx, credential, ids, 0..0, headers, phase)
                .await
                .map(|bundle| bundle.states)
        };
        match read {
            Err(ProxyError::Portal(_)) => Ok(BTreeMap::new()),
            other => other,
        }
    }

    /// One `crm.automatedsolution.get`; the portal's refusal is `ProxyError::Portal`.
    pub(crate) async fn read_one(
        &self,
        ctx: &mut RequestCtx,
        credential: &Credential,
        id: i64,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<SolutionState, ProxyError> {
        let get = outbound("crm.automatedsolution.get", credential, json!({ "id": id }));
        let answer = self.exchange(ctx, &get, headers, phase).await?;
        let json = answer.json();
        if answer.status.is_success() {
            if let Some(state) = json.as_ref().and_then(SolutionState::from_answer) {
                return Ok(state);
            }
        }
        if json.as_ref().is_some_and(|j| j.get("error").is_some()) {
            ctx.upstream_status = Some(answer.status.as_u16());
            return Err(ProxyError::portal(answer));
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
    ) -> Result<Vec<SolutionState>, ProxyError> {
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
            if let Bundle {
                listing: Some((rows, None)),
                ..
            } = bundle
            {
                return Ok(rows);
            }
            // The portal grew meanwhile, or a page failed: page by page from here.
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
    ) -> Result<Vec<SolutionState>, ProxyError> {
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
                return Err(ProxyError::portal(answer));
            }
            let page: Vec<SolutionState> = json
                .get("result")
                .and_then(|r| r.get("automatedSolutions"))
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .ok_or(ProxyError::Upstream(UpstreamFailure::Invalid))?;
            out.extend(page);
            match json.get("next").and_then(Value::as_i64) {
                Some(next) if next > start => start = next,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// One buffered exchange with the portal, timed and counted.
    async fn exchange(
        &self,
        ctx: &mut RequestCtx,
        call: &crate::mutation::OutboundCall,
        headers: &HeaderMap,
        phase: UpstreamPhase,
    ) -> Result<Answer, ProxyError> {
        let portal = self.portal(ctx)?;
        let t = Instant::now();
        let result = portal.upstream.call(call, headers).await;
        ctx.upstream_seconds += t.elapsed().as_secs_f64();
        self.metrics.upstream(phase, t.elapsed().as_secs_f64());
        result.map_err(|k| self.upstream_failed(k))
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

/// A batch command's target the portal refused to read: its error, for the command's key.
fn command_refused(items: &[Item], id: i64, error: &Value) -> ProxyError {
    let key = items
        .iter()
        .find(|i| i.mutation.solution_id == Some(id))
        .and_then(|i| i.key.clone())
        .unwrap_or_default();
    let text = |field: &str| error.get(field).and_then(Value::as_str);
    ProxyError::Portal(PortalRefusal::Command {
        code: text("error").unwrap_or("ERROR").to_owned(),
        description: format!(
            "batch command '{key}': {}",
            text("error_description").unwrap_or("")
        ),
    })
}
