//! Who is calling: the caller's portal user (a webhook's own, or an OAuth token's through
//! `user.current`, cached by token fingerprint), and the event a `revert --apply` names.

use super::Pipeline;
use crate::identity;
use crate::metrics::UpstreamPhase;
use crate::mutation::{outbound, Credential};
use crate::portal::Portal;
use serde_json::json;
use std::time::Instant;

impl Pipeline {
    /// The caller's user id: from the webhook, or for OAuth from `user.current` (cached by
    /// token fingerprint). `None` when it cannot be resolved; the call is not refused for it
    /// (the snapshot read decides whether the credential is good).
    pub(crate) async fn caller_user(
        &self,
        portal: &Portal,
        credential: &Credential,
        fingerprint: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Option<String> {
        if let Some(u) = credential.user_id() {
            return Some(u.to_owned());
        }
        let fp = fingerprint?;
        if !self.resolve_oauth_users {
            return None;
        }
        let cached = portal.identities.get(fp);
        self.metrics.identity_lookup(cached.is_some());
        if let Some(u) = cached {
            return Some(u);
        }
        let call = outbound("user.current", credential, json!({}));
        let t = Instant::now();
        let answer = portal.upstream.call(&call, headers).await;
        self.metrics
            .upstream(UpstreamPhase::Identity, t.elapsed().as_secs_f64());
        let user = answer
            .ok()?
            .json()
            .as_ref()
            .and_then(identity::user_id_from_answer)?;
        portal.identities.put(fp, user.clone());
        Some(user)
    }
}

/// The request header with which `revert --apply` names the event it reverts. Only an event id
/// is taken (a UUID), so the header cannot smuggle anything else into the trail.
pub const REVERT_HEADER: &str = "x-audit-revert-of";

/// The request header with which a key allowed to (`keys create --may-override RULE`) overrides
/// a policy refusal, giving the reason recorded with the change.
pub const OVERRIDE_HEADER: &str = "x-audit-override-reason";

/// Longest override reason recorded.
const MAX_OVERRIDE_REASON: usize = 500;

/// The override reason sent, when it is text worth recording: trimmed, at most
/// `MAX_OVERRIDE_REASON` bytes, no control characters (it goes into the trail and logs).
pub(crate) fn override_reason(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(OVERRIDE_HEADER)?.to_str().ok()?.trim();
    let ok = !v.is_empty() && v.len() <= MAX_OVERRIDE_REASON && !v.chars().any(char::is_control);
    ok.then(|| v.to_owned())
}

pub(crate) fn reverts_event(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(REVERT_HEADER)?.to_str().ok()?;
    uuid::Uuid::parse_str(v).ok().map(|u| u.to_string())
}
