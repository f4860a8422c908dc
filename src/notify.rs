//! `[approvals] notify_url` and `notify_users`: approvers learn of a refusal without watching a
//! dashboard. Each refusal by a policy rule becomes one JSON POST to `notify_url` and, with
//! `notify_users`, a Bitrix24 `im.notify` to each of those portal users through the portal's
//! service webhook (`[revert] webhook_file`, or the portal's own `revert_webhook_file`).
//!
//! Never on the client's time: a refusal is queued (bounded; when full it is dropped and
//! counted) and a task of its own delivers it, retrying a failed POST with growing pauses up to
//! `max_attempts`. Delivery is at least once: a receiver that answered too late may see one
//! refusal twice, and tells them apart by `event_id`.

use crate::metrics::Metrics;
use crate::mutation::outbound;
use crate::pipeline::Pipeline;
use crate::portal::Portals;
use bytes::Bytes;
use http::{header, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause after a failed attempt; it doubles, up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// What `[approvals]` says.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub url: Option<http::Uri>,
    /// Portal users told with `im.notify`.
    pub users: Vec<i64>,
    pub queue_capacity: usize,
    pub max_attempts: u32,
}

/// One refusal, as receivers get it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub event_id: String,
    pub portal: String,
    pub method: String,
    pub solution_id: Option<i64>,
    pub rule: String,
    pub reason: String,
    pub user_id: Option<String>,
    pub integration: Option<String>,
}

impl Refusal {
    fn json(&self) -> Value {
        json!({
            "type": "refusal",
            "event_id": self.event_id,
            "portal": self.portal,
            "method": self.method,
            "solution_id": self.solution_id,
            "rule": self.rule,
            "reason": self.reason,
            "caller": {"user_id": self.user_id, "integration": self.integration},
            "approve": format!("POST /v1/events/{}/approve", self.event_id),
        })
    }

    fn message(&self) -> String {
        format!(
            "b24-audit-proxy refused {} on workplace {} (rule {}): {}. Event {} can be approved: b24-audit-proxy approvals approve {}",
            self.method,
            self.solution_id.map_or("(new)".into(), |i| i.to_string()),
            self.rule,
            self.reason,
            self.event_id,
            self.event_id
        )
    }
}

/// The sending side: cheap to call on a request path, never waits.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Refusal>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Queues `r`; drops it (counted) when the queue is full.
    pub fn refused(&self, r: Refusal) {
        if self.tx.try_send(r).is_err() {
            self.metrics.notification("dropped");
        }
    }
}

/// Starts the delivery task. It holds the pipeline weakly (for the portals' upstream clients),
/// so the pipeline going away ends it; `config` gives each portal's service webhook.
pub fn start(
    cfg: NotifyConfig,
    config: crate::config::Config,
    pipeline: Weak<Pipeline>,
    metrics: Arc<Metrics>,
) -> Result<(Notifier, tokio::task::JoinHandle<()>), String> {
    let (tx, mut rx) = mpsc::channel::<Refusal>(cfg.queue_capacity);
    let tls = crate::tls::client_config(None)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<HttpsConnector<HttpConnector>, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            if let Some(url) = &cfg.url {
                let ok = post(&client, url, &r.json(), cfg.max_attempts).await;
                m.notification(if ok { "sent" } else { "failed" });
            }
            if !cfg.users.is_empty() {
                let Some(p) = pipeline.upgrade() else { return };
                notify_users(&r, &cfg.users, &config, &p.portals, &m).await;
            }
        }
    });
    Ok((Notifier { tx, metrics }, task))
}

/// POSTs `body` until a 2xx, at most `attempts` times.
async fn post(
    client: &Client<HttpsConnector<HttpConnector>, http_body_util::Full<Bytes>>,
    url: &http::Uri,
    body: &Value,
    attempts: u32,
) -> bool {
    let mut pause = FIRST_PAUSE;
    for attempt in 1..=attempts.max(1) {
        let req = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "b24-audit-proxy")
            .body(http_body_util::Full::new(Bytes::from(body.to_string())));
        let Ok(req) = req else { return false };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return true,
            outcome => {
                let why = match outcome {
                    Ok(Ok(resp)) => format!("answered {}", resp.status()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".into(),
                };
                tracing::warn!(target: "notify", attempt, error = %why, "Refusal notification not delivered");
            }
        }
        if attempt < attempts {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
    false
}

/// `im.notify` to each user, through the refusal's portal and its service webhook.
async fn notify_users(
    r: &Refusal,
    users: &[i64],
    config: &crate::config::Config,
    portals: &Portals,
    m: &Metrics,
) {
    let portal = portals.all().iter().find(|p| p.name == r.portal);
    let hook = config
        .portal_named(Some(&r.portal))
        .and_then(|p| crate::revert::service_webhook(config, p).ok())
        .and_then(|h| crate::broker::webhooks::parse_hook(&h));
    let (Some(portal), Some(hook)) = (portal, hook) else {
        tracing::warn!(target: "notify", portal = %r.portal, "No service webhook for the portal: im.notify not sent");
        m.notification("failed");
        return;
    };
    let credential = crate::mutation::Credential::WebhookPath(hook);
    for user in users {
        let call = outbound(
            "im.notify",
            &credential,
            json!({"to": user, "message": r.message(), "type": "SYSTEM"}),
        );
        let sent = portal.upstream.call(&call, &http::HeaderMap::new()).await;
        let ok = matches!(&sent, Ok(a) if a.status.is_success());
        m.notification(if ok { "sent" } else { "failed" });
    }
}
