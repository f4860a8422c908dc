//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers),
//! `/readyz` (the audit trail is writable — without it no watched call can be served; the
//! portal's reachability is reported in the body, and counts only with
//! `[admin] ready_requires_portal`, because a portal outage must not take every replica out of
//! its Service at once), and the
//! read API over the trail — `/v1/events` (filters, pagination), `/v1/events/{id}`,
//! `/v1/chain/head`, `/v1/chain/verify` — behind a bearer token when `[admin] token_file` is
//! set. Kept on its own address so it can stay on loopback or a private network.
//! It also serves the audit timeline page under `/ui/` (see `ui`), whose data requests go to the
//! same `/v1/` API with the same token.
//!
//! Trail reads run on the blocking pool with their own read-only connection (WAL lets them run
//! beside the writer); the token is compared in constant time.

use crate::approvals::Desk;
use crate::audit::query::{self, Filter, Order, TrailReader};
use crate::audit::{verify, AuditLog};
use crate::body::ProxyBody;
use crate::config::TrailDatabase;
use crate::metrics::Metrics;
use crate::rest::envelope;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An approval's body: a reason and a flag.
const MAX_APPROVAL_BODY: usize = 16 * 1024;
const APPROVAL_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The event id of `/v1/events/{id}/approve`.
fn approve_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/events/")?
        .strip_suffix("/approve")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Events per page when the caller does not say, and the most it may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub struct Admin {
    metrics: Arc<Metrics>,
    audit: AuditLog,
    database: TrailDatabase,
    /// SHA-256 of the configured token; `None`: the API is open.
    token_digest: Option<[u8; 32]>,
    /// Each portal's name and whether it was reachable at the last exchange or probe.
    portals: Vec<(String, Arc<AtomicBool>)>,
    ready_requires_portal: bool,
    /// With `[admin] approvers_file`: approvals of refused changes.
    desk: Option<Arc<Desk>>,
    /// With `[audit] signing_key_file`: `/v1/chain/verify` checks every signed head with it.
    public_key: Option<ed25519_dalek::VerifyingKey>,
}

impl Admin {
    pub fn new(
        metrics: Arc<Metrics>,
        audit: AuditLog,
        database: TrailDatabase,
        token: Option<String>,
        portals: Vec<(String, Arc<AtomicBool>)>,
        ready_requires_portal: bool,
    ) -> Admin {
        Admin {
            metrics,
            audit,
            database,
            token_digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            portals,
            ready_requires_portal,
            public_key: None,
            desk: None,
        }
    }

    /// Serves approvals with `desk` (`[admin] approvers_file`).
    pub fn with_desk(mut self, desk: Option<Desk>) -> Admin {
        self.desk = desk.map(Arc::new);
        self
    }

    /// Checks signed heads with `key` in `/v1/chain/verify`.
    pub fn with_public_key(mut self, key: Option<ed25519_dalek::VerifyingKey>) -> Admin {
        self.public_key = key;
        self
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if let Some(id) = approve_path(req.uri().path()) {
            let id = id.to_owned();
            return self.approve(req, &id).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                envelope::error_body("METHOD_NOT_ALLOWED", "use GET"),
            );
        }
        let not_found = || {
            json(
                StatusCode::NOT_FOUND,
                envelope::error_body("NOT_FOUND", "no such admin endpoint"),
            )
        };
        match req.uri().path() {
            "/metrics" => self.metrics_page().await,
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            // The timeline page's static files: no data in them, so no token (the page sends
            // it with every /v1/ request it makes).
            p if crate::ui::is_ui_path(p) => crate::ui::serve(p).unwrap_or_else(not_found),
            "/readyz" => self.readiness(),
            p if p.starts_with("/v1/") => self.v1(&req).await,
            _ => not_found(),
        }
    }

    /// `POST /v1/events/{id}/approve` (`approvals`): authorised by an approver's token, not the
    /// admin token.
    async fn approve(&self, req: Request<Incoming>, id: &str) -> Response<ProxyBody> {
        let Some(desk) = &self.desk else {
            return json(
                StatusCode::NOT_FOUND,
                envelope::error_body("NOT_FOUND", "approvals need [admin] approvers_file"),
            );
        };
        if req.method() != Method::POST {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                envelope::error_body("METHOD_NOT_ALLOWED", "use POST"),
            );
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::rest::credentials::bearer_token)
            .map(str::to_owned);
        let body = tokio::time::timeout(
            APPROVAL_BODY_TIMEOUT,
            crate::body::read_capped(req.into_body(), MAX_APPROVAL_BODY),
        )
        .await;
        let Ok(Ok(body)) = body else {
            return json(
                StatusCode::BAD_REQUEST,
                envelope::error_body("INVALID_REQUEST_BODY", "the body could not be read"),
            );
        };
        let (status, value) = desk.approve(id, token.as_deref(), &body).await;
        json(status, Bytes::from(value.to_string()))
    }

    /// `/metrics`: the gauges read at scrape time, then the whole registry.
    async fn metrics_page(&self) -> Response<ProxyBody> {
        self.metrics
            .audit_queue_depth
            .set(self.audit.queue_depth() as i64);
        self.metrics
            .audit_writable
            .set(i64::from(self.audit.is_writable()));
        let mut every = true;
        for (name, up) in &self.portals {
            let up = up.load(Ordering::Relaxed);
            every &= up;
            self.metrics.portal_reachable(name, up);
        }
        self.metrics.upstream_reachable.set(i64::from(every));
        self.refresh_trail_gauges().await;
        let mut resp = Response::new(ProxyBody::bytes(self.metrics.render()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    /// `/readyz`: ready when the trail is writable (and a portal reachable, when configured
    /// to require it); the body says which part is not. With several portals, one portal's
    /// outage does not make the replica unready: every replica reaches the portals the same
    /// way, so taking one out of service would only move that portal's failures elsewhere and
    /// stop the other portals' traffic; the body names the unreachable ones.
    fn readiness(&self) -> Response<ProxyBody> {
        let audit = self.audit.is_writable();
        let unreachable: Vec<&str> = self
            .portals
            .iter()
            .filter(|(_, up)| !up.load(Ordering::Relaxed))
            .map(|(name, _)| name.as_str())
            .collect();
        let upstream = match unreachable.len() {
            0 => "reachable",
            n if n < self.portals.len() => "partly_reachable",
            _ => "unreachable",
        };
        let ready = audit && (upstream != "unreachable" || !self.ready_requires_portal);
        let mut body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "audit": if audit { "writable" } else { "unavailable" },
            "upstream": upstream,
            "ready_requires_portal": self.ready_requires_portal,
        });
        if self.portals.len() > 1 {
            body["unreachable_portals"] = json!(unreachable);
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, Bytes::from(body.to_string()))
    }

    /// The `/v1/` API: bearer-authorised, each query on a blocking thread of its own.
    async fn v1(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if !self.authorised(req) {
            let mut resp = json(
                StatusCode::UNAUTHORIZED,
                envelope::error_body("UNAUTHORIZED", "a valid bearer token is required"),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let db = self.database.clone();
        let path = req.uri().path().to_owned();
        let key = self.public_key;
        let result =
            tokio::task::spawn_blocking(move || api(&db, key.as_ref(), &path, &query)).await;
        match result {
            Ok(Ok((status, body))) => json(status, Bytes::from(body.to_string())),
            Ok(Err(ApiError(status, code, msg))) => json(status, envelope::error_body(code, &msg)),
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                envelope::error_body("INTERNAL_ERROR", "internal error"),
            ),
        }
    }

    /// The chain head and the database size, read at scrape time from the file itself (not
    /// from the writer's memory), so they show what an auditor would find. A failed read keeps
    /// the previous values; `audit_writable` reports the trouble.
    async fn refresh_trail_gauges(&self) {
        let db = self.database.clone();
        let read = tokio::task::spawn_blocking(move || {
            let head = query::open_reader(&db)
                .and_then(|c| query::chain_head(&*c))
                .ok()
                .map(|h| h.seq);
            // The file's size; a PostgreSQL trail has no file here, and the gauge is not set.
            let size = db.sqlite_path().map(|db| {
                let mut wal = db.as_os_str().to_owned();
                wal.push("-wal");
                [db.as_os_str().to_owned(), wal]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            });
            (head, size)
        })
        .await;
        if let Ok((head, size)) = read {
            if let Some(seq) = head {
                self.metrics.audit_chain_head_seq.set(seq);
            }
            if let Some(size) = size {
                self.metrics
                    .audit_database_bytes
                    .set(i64::try_from(size).unwrap_or(i64::MAX));
            }
        }
    }

    /// Constant-time comparison of digests, so response timing tells nothing about the token.
    fn authorised(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = &self.token_digest else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::rest::credentials::bearer_token)
            .unwrap_or("");
        let got: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        got.iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

struct ApiError(StatusCode, &'static str, String);

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", msg.into())
}

/// The `/v1/` routes; runs on the blocking pool.
fn api(
    db: &TrailDatabase,
    public_key: Option<&ed25519_dalek::VerifyingKey>,
    path: &str,
    query: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let reader = query::open_reader(db).map_err(unavailable)?;
    let conn = &*reader;
    match path {
        "/v1/events" => events_page(conn, query),
        "/v1/chain/head" => {
            let head = query::chain_head(conn).map_err(unavailable)?;
            Ok((StatusCode::OK, json!(head)))
        }
        "/v1/chain/verify" => Ok(chain_verify(conn, public_key, query)),
        p => match p
            .strip_prefix("/v1/events/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            Some(id) => event_detail(conn, id),
            None => Err(ApiError(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such endpoint".into(),
            )),
        },
    }
}

fn unavailable(e: crate::audit::AuditError) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
        e.to_string(),
    )
}

/// `/v1/events`: one page of the filtered events, with the cursor of the next.
fn events_page(conn: &dyn TrailReader, query: &str) -> Result<(StatusCode, Value), ApiError> {
    let mut filter = filter_from_query(query)?;
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    filter.limit = Some(limit + 1);
    let mut events = query::events(conn, &filter).map_err(unavailable)?;
    let more = events.len() > limit;
    events.truncate(limit);
    let next = if more {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    let items: Vec<Value> = events.iter().map(with_cursor).collect();
    Ok((
        StatusCode::OK,
        json!({ "events": items, "next_cursor": next }),
    ))
}

/// `/v1/chain/verify`: the whole chain re-verified (against `head` when given).
fn chain_verify(
    conn: &dyn TrailReader,
    public_key: Option<&ed25519_dalek::VerifyingKey>,
    query: &str,
) -> (StatusCode, Value) {
    let head = param(query, "head");
    let opts = verify::Options {
        head: head.as_deref(),
        public_key,
    };
    match verify::verify_with(conn, opts) {
        Ok(v) => (
            StatusCode::OK,
            json!({"ok": true, "entries": v.entries, "head_seq": v.head_seq, "head_hash": v.head_hash, "pruned_through": v.pruned_through,
                   "signed_heads": v.signed_heads, "signatures_checked": v.signatures_checked,
                   "last_signed_seq": v.last_signed.as_ref().map(|(s, _)| *s)}),
        ),
        Err(e) => (StatusCode::OK, json!({"ok": false, "error": e.to_string()})),
    }
}

/// `/v1/events/{id}`: the event, its entries, the binding diff and whether it can be reverted.
fn event_detail(conn: &dyn TrailReader, id: &str) -> Result<(StatusCode, Value), ApiError> {
    let Some(event) = query::event(conn, id).map_err(unavailable)? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no event {id}"),
        ));
    };
    let entries = query::entries_of(conn, id).map_err(unavailable)?;
    // A refused change may have been carried out since, on approval.
    let approved_by = match event.outcome {
        Some(crate::audit::Outcome::Denied) => {
            crate::approvals::approved_by(conn, &event).map_err(unavailable)?
        }
        _ => None,
    };
    let (added, removed) =
        crate::audit::render::binding_diff(event.before.as_ref(), event.after.as_ref());
    Ok((
        StatusCode::OK,
        json!({
            "event": with_cursor(&event),
            "entries": entries,
            "diff": {"type_ids_added": added, "type_ids_removed": removed},
            "approved_by": approved_by,
            "revert_command": format!("b24-audit-proxy revert {} --config FILE", event.id),
            // Whether `revert` would accept it, and why not.
            "revert": match crate::revert::plan(&event) {
                Ok(_) => json!({"possible": true}),
                Err(why) => json!({"possible": false, "reason": why}),
            },
        }),
    ))
}

fn with_cursor(e: &query::EventRecord) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("cursor".into(), json!(e.seq));
    }
    v
}

/// The value of one query parameter, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// `solution_id`, `since`, `until`, `outcome`, `caller`, `limit`, `cursor`, `order`
/// (`asc`, the default, or `desc`: newest first, the cursor then meaning "older than").
fn filter_from_query(query: &str) -> Result<Filter, ApiError> {
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        param(query, name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad_request(format!("'{name}' must be an integer")))
            })
            .transpose()
    };
    let outcome = param(query, "outcome");
    if let Some(o) = &outcome {
        let known = [
            "applied",
            "rejected_by_portal",
            "denied",
            "unknown",
            "failed",
            "pending",
        ];
        if !known.contains(&o.as_str()) {
            return Err(bad_request(format!("unknown outcome '{o}'")));
        }
    }
    let order = match param(query, "order").as_deref() {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(o) => {
            return Err(bad_request(format!(
                "'order' must be asc or desc, not '{o}'"
            )))
        }
    };
    Ok(Filter {
        since: param(query, "since"),
        until: param(query, "until"),
        solution_id: int("solution_id")?,
        outcome,
        caller: param(query, "caller"),
        event_id: None,
        after_seq: int("cursor")?,
        limit: int("limit")?.map(|l| l.max(1) as usize),
        order,
    })
}

fn json(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::bytes(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_from_the_query() {
        let f = filter_from_query("solution_id=238&outcome=denied&caller=1&since=2026-01-01T00%3A00%3A00Z&limit=5&cursor=9")
            .unwrap_or_else(|_| panic!("valid"));
        assert_eq!(f.solution_id, Some(238));
        assert_eq!(f.outcome.as_deref(), Some("denied"));
        assert_eq!(f.since.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!((f.limit, f.after_seq), (Some(5), Some(9)));
        assert!(filter_from_query("outcome=weird").is_err());
        assert!(filter_from_query("solution_id=x").is_err());
    }

    #[test]
    fn order_is_ascending_unless_desc_is_asked_for() {
        let order = |q: &str| filter_from_query(q).map(|f| f.order).ok();
        assert_eq!(order(""), Some(Order::Asc));
        assert_eq!(order("order=asc"), Some(Order::Asc));
        assert_eq!(order("order=desc&cursor=7"), Some(Order::Desc));
        assert_eq!(order("order=DESC"), None, "refused, not silently ascending");
        assert_eq!(order("order=random"), None);
    }
}
