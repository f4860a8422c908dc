//! `revert EVENT_ID`: the call that restores an event's before-state, and with `--apply`, that
//! call sent through the proxy's own audited, policy-checked path with the service webhook of
//! `[revert] webhook_file`. The revert is an event of its own that names the event it reverts
//! (`X-Audit-Revert-Of`). It is refused when the workplace changed since the event, unless
//! forced: reverting over someone else's later change would silently undo it too.
//!
//! The proxy never stores callers' secrets, so a revert cannot be sent "as" the original caller.

use crate::audit::query::EventRecord;
use crate::audit::Outcome;
use crate::body::ProxyBody;
use crate::config::{Config, PortalConfig};
use crate::pipeline::REVERT_HEADER;
use anyhow::{bail, Context as _};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The call that undoes an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub method: &'static str,
    pub params: Value,
    /// The workplace the revert changes (for the "changed since" check); `None` for re-adding
    /// a deleted workplace.
    pub solution_id: Option<i64>,
}

/// What reverting `e` takes, or why it cannot be reverted.
pub fn plan(e: &EventRecord) -> Result<Plan, String> {
    let before = || e.before.as_ref().ok_or("the event has no before-state");
    match (e.method.as_str(), e.outcome) {
        (_, Some(o @ (Outcome::Denied | Outcome::Failed))) => Err(format!(
            "event {} changed nothing (outcome {}): there is nothing to revert",
            e.id,
            o.as_str()
        )),
        (_, None) => Err(format!("event {} is still in flight", e.id)),
        ("crm.automatedsolution.update", _) => {
            let id = e.solution_id.ok_or("the event names no workplace")?;
            let b = before()?;
            Ok(Plan {
                method: "crm.automatedsolution.update",
                params: json!({"id": id, "fields": {"title": b.title, "typeIds": b.type_ids}}),
                solution_id: Some(id),
            })
        }
        ("crm.automatedsolution.delete", Some(Outcome::Applied)) => {
            let b = before()?;
            Ok(Plan {
                method: "crm.automatedsolution.add",
                params: json!({"fields": {"title": b.title, "typeIds": b.type_ids}}),
                solution_id: None,
            })
        }
        ("crm.automatedsolution.add", _) => Err(format!(
            "an add is undone by deleting workplace {}, which the portal refuses while smart processes are bound; unbind them first, then delete it",
            e.solution_id.map_or("?".into(), |i| i.to_string())
        )),
        (m, o) => Err(format!(
            "{m} events with outcome {} cannot be reverted",
            o.map_or("-", Outcome::as_str)
        )),
    }
}

/// The plan as a command a person can read and run.
pub fn describe(plan: &Plan) -> String {
    format!(
        "POST /rest/{{uid}}/{{secret}}/{}\nContent-Type: application/json\n\n{}",
        plan.method, plan.params
    )
}

/// Where a revert of an event goes: the service webhook and, with `[[portals]]`, the host
/// of the event's portal.
struct Route {
    hook: String,
    host: Option<String>,
}

/// The route for reverting `event`: its portal's `revert_webhook_file`, else `[revert]
/// webhook_file`.
fn route(config: &Config, event: &EventRecord) -> anyhow::Result<Route> {
    let portal = config
        .portal_named(event.portal.as_deref())
        .with_context(|| {
            format!(
                "event {} was recorded for portal {}, which is not configured",
                event.id,
                event.portal.as_deref().unwrap_or("(unnamed)")
            )
        })?;
    let hook = service_webhook(config, portal)?;
    Ok(Route {
        hook,
        host: portal.host.as_ref().map(|h| match h.port {
            Some(_) => h.label(),
            // A host matched on any port: the proxy's own port is as good as any.
            None => format!("{}:{}", h.label(), config.server.listen.port()),
        }),
    })
}

/// The service webhook (`USER_ID/SECRET`) the proxy acts with for `portal`: its
/// `revert_webhook_file`, else `[revert] webhook_file`.
pub fn service_webhook(config: &Config, portal: &PortalConfig) -> anyhow::Result<String> {
    let (key, path) = match (&portal.revert_webhook_file, &config.revert.webhook_file) {
        (Some(p), _) => ("revert_webhook_file", p),
        (None, Some(p)) => ("revert.webhook_file", p),
        (None, None) => bail!("no service webhook: set [revert] webhook_file (a file holding USER_ID/SECRET of a service webhook), or the portal's revert_webhook_file"),
    };
    let hook =
        std::fs::read_to_string(path).with_context(|| format!("{key} {}", path.display()))?;
    let hook = hook.trim().trim_matches('/');
    if hook.split('/').count() != 2 || hook.split('/').any(str::is_empty) {
        bail!("{key} must hold USER_ID/SECRET");
    }
    Ok(hook.to_owned())
}

/// Sends the plan through the proxy at `config.server.listen`.
pub async fn apply(
    config: &Config,
    event: &EventRecord,
    plan: &Plan,
    force: bool,
) -> anyhow::Result<Value> {
    let Route { hook, host } = route(config, event)?;
    let base = format!("http://{}/rest/{hook}", local(config.server.listen));
    let client: Client<HttpConnector, ProxyBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let host = host.as_deref();

    if let (Some(id), false) = (plan.solution_id, force) {
        let now = call(
            &client,
            &format!("{base}/crm.automatedsolution.get"),
            &json!({"id": id}),
            host,
            None,
        )
        .await?;
        let current = now["result"]["automatedSolution"].clone();
        let left = serde_json::to_value(&event.after).unwrap_or(Value::Null);
        let same = |k: &str| current.get(k) == left.get(k);
        if !(same("title") && same("typeIds")) {
            bail!(
                "workplace {id} changed since event {}: it is now {} but the event left it {}; pass --force to revert anyway",
                event.id,
                current,
                left
            );
        }
    }
    call(
        &client,
        &format!("{base}/{}", plan.method),
        &plan.params,
        host,
        Some(&event.id),
    )
    .await
}

async fn call(
    client: &Client<HttpConnector, ProxyBody>,
    url: &str,
    body: &Value,
    host: Option<&str>,
    reverts: Option<&str>,
) -> anyhow::Result<Value> {
    let mut req = Request::post(url).header(http::header::CONTENT_TYPE, "application/json");
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    if let Some(id) = reverts {
        req = req.header(REVERT_HEADER, id);
    }
    let resp = client
        .request(req.body(ProxyBody::bytes(body.to_string()))?)
        .await
        .context("the proxy is not reachable at server.listen")?;
    let status = resp.status();
    let event = resp
        .headers()
        .get("x-audit-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.into_body().collect().await?.to_bytes();
    let mut answer: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    if let (Some(e), Value::Object(m)) = (event, &mut answer) {
        m.insert("audit_event_id".into(), json!(e));
    }
    if !status.is_success() {
        bail!("the proxy answered {status}: {answer}");
    }
    Ok(answer)
}

/// A listen address as a client address (`0.0.0.0` → `127.0.0.1`).
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Caller, RequestInfo};

    fn event(method: &str, outcome: Option<Outcome>, before: Value, after: Value) -> EventRecord {
        EventRecord {
            seq: 1,
            id: "e".into(),
            time: "t".into(),
            method: method.into(),
            solution_id: Some(238),
            portal: None,
            caller: Caller::default(),
            client_addr: None,
            request: RequestInfo::default(),
            before: serde_json::from_value(before).expect("state"),
            after: serde_json::from_value(after).expect("state"),
            decision: "allow".into(),
            rule: None,
            outcome,
            portal_status: None,
            portal_error: None,
            batch: None,
            hash: "h".into(),
            reverts: None,
            override_reason: None,
            approval: None,
            side_effects: Vec::new(),
        }
    }

    #[test]
    fn plans() {
        let before = json!({"id":238,"title":"HR","typeIds":[14,158]});
        let after = json!({"id":238,"title":"HR2","typeIds":[14]});
        let p = plan(&event(
            "crm.automatedsolution.update",
            Some(Outcome::Applied),
            before.clone(),
            after.clone(),
        ))
        .expect("update");
        assert_eq!(
            p.params,
            json!({"id":238,"fields":{"title":"HR","typeIds":[14,158]}})
        );
        let d = plan(&event(
            "crm.automatedsolution.delete",
            Some(Outcome::Applied),
            before.clone(),
            Value::Null,
        ))
        .expect("delete");
        assert_eq!(d.method, "crm.automatedsolution.add");
        assert!(plan(&event(
            "crm.automatedsolution.update",
            Some(Outcome::Denied),
            before.clone(),
            before.clone()
        ))
        .is_err());
        assert!(plan(&event(
            "crm.automatedsolution.add",
            Some(Outcome::Applied),
            Value::Null,
            after
        ))
        .is_err());
        assert!(describe(&p).contains("crm.automatedsolution.update"));
    }
}
