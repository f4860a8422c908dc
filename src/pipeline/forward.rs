//! Phases 6–8 of an audited change, in its own task: the intents made durable, then the
//! canonical re-encoding forwarded (a single call, or the batch with its watched commands
//! rewritten), then each command's outcome recorded, re-reading whatever the answer does not
//! show.

use super::audited::Committed;
use super::outcome::to_reread;
use super::record;
use super::{Pipeline, RequestCtx};
use crate::error::ProxyError;
use crate::metrics::UpstreamPhase;
use crate::mutation::{canonical, outbound, Interpreted};
use crate::upstream::Answer;
use std::collections::BTreeMap;
use std::time::Instant;

impl Pipeline {
    /// Records the intents, forwards, records each command's outcome.
    pub(super) async fn record_and_forward(
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
        let portal = self.portal(ctx)?;
        let t = Instant::now();
        let forwarded = portal.upstream.call(&forward, &w.headers).await;
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
}
