//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers),
//! `/readyz` (the audit trail is writable: without it no watched call can be served). Kept on
//! its own address so it can stay on loopback or a private network.

use crate::audit::AuditStore;
use crate::body::ProxyBody;
use crate::metrics::Metrics;
use crate::rest::envelope;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

pub struct Admin {
    metrics: Arc<Metrics>,
    audit: AuditStore,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, audit: AuditStore) -> Admin {
        Admin { metrics, audit }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                envelope::error_body("METHOD_NOT_ALLOWED", "use GET"),
            );
        }
        match req.uri().path() {
            "/metrics" => {
                self.metrics
                    .audit_queue_depth
                    .set(self.audit.queue_depth() as i64);
                let mut resp = Response::new(ProxyBody::bytes(self.metrics.render()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/readyz" => {
                if self.audit.is_writable() {
                    json(
                        StatusCode::OK,
                        r#"{"status":"ready","audit":"writable"}"#.into(),
                    )
                } else {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status":"not_ready","audit":"unavailable"}"#.into(),
                    )
                }
            }
            _ => json(
                StatusCode::NOT_FOUND,
                envelope::error_body("NOT_FOUND", "no such admin endpoint"),
            ),
        }
    }
}

fn json(status: StatusCode, body: bytes::Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::bytes(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
