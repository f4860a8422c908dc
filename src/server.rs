//! Listeners and lifecycle: binds the proxy and admin listeners, accepts with a connection cap
//! and a header-read timeout, and shuts down in order — stop accepting, let in-flight requests
//! finish within the grace period, then let the audit writer commit what is queued and stop.

use crate::admin::Admin;
use crate::audit::store::{self, OpenOptions, Writer};
use crate::body::ProxyBody;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::secrets::FingerprintKey;
use crate::upstream::Upstream;
use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

/// A running proxy.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    writer: Writer,
    grace: Duration,
}

impl Running {
    /// Stops accepting, drains in-flight requests (bounded by the grace period), then flushes
    /// and closes the audit writer.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if self.task.await.is_err() {
            tracing::error!("Server task panicked");
        }
        let writer = self.writer;
        let joined = tokio::time::timeout(
            self.grace,
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("Audit writer still busy after the grace period; unfinished intents are reconciled at the next start");
        }
    }
}

/// Opens the audit store, binds both listeners and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let key = FingerprintKey::load_or_create(&config.audit.key_file)
        .with_context(|| format!("fingerprint key {}", config.audit.key_file.display()))?;
    let (audit, writer, report) = store::open(
        &config.audit.database,
        OpenOptions {
            queue_capacity: config.audit.queue_capacity,
            max_batch: config.audit.max_batch,
        },
        metrics.clone(),
    )
    .with_context(|| format!("audit database {}", config.audit.database.display()))?;
    tracing::info!(
        target: "audit",
        schema_version = report.schema_version,
        entries = report.entries,
        reconciled = report.reconciled.len(),
        "Audit trail open"
    );
    for id in &report.reconciled {
        tracing::warn!(target: "audit", event_id = %id, "Intent without outcome reconciled as unknown");
    }
    if !config.upstream.is_https() {
        tracing::warn!(
            "upstream.url is plain http://: use this only against a local portal or the simulator"
        );
    }
    let upstream = Upstream::new(&config.upstream).map_err(anyhow::Error::msg)?;
    let pipeline = Arc::new(Pipeline::new(
        config,
        upstream,
        audit.clone(),
        key,
        metrics.clone(),
    ));
    let token = match &config.admin.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let admin = Arc::new(Admin::new(
        metrics.clone(),
        audit,
        config.audit.database.clone(),
        token,
    ));

    let proxy_listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen {}", config.server.listen))?;
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen {}", config.admin.listen))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (stop, stop_rx) = watch::channel(false);
    let stop_heads = stop_rx.clone();
    let database = config.audit.database.clone();
    let head_interval = config.audit.head_log_interval;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let limits = Arc::new(Semaphore::new(config.server.max_connections));
    let grace = config.server.shutdown_grace;

    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let proxy = {
            let pipeline = pipeline.clone();
            accept_loop(
                proxy_listener,
                builder.clone(),
                limits.clone(),
                &graceful,
                stop_rx.clone(),
                Some(metrics.clone()),
                move |req, peer| {
                    let pipeline = pipeline.clone();
                    async move { Ok::<_, Infallible>(pipeline.handle(req, peer).await) }
                },
            )
        };
        let admin_loop = accept_loop(
            admin_listener,
            builder,
            Arc::new(Semaphore::new(64)),
            &graceful,
            stop_rx,
            None,
            move |req, _peer| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            },
        );
        let heads = log_chain_head(database, head_interval, stop_heads);
        tokio::join!(proxy, admin_loop, heads);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "In-flight requests still running after the grace period; closing"
            );
        }
    });
    Ok(Running {
        proxy_addr,
        admin_addr,
        stop,
        task,
        writer,
        grace,
    })
}

/// The admin token: the file's content without surrounding whitespace; an empty file is refused
/// (it would make every request authorised).
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("admin.token_file {}", path.display()))?
        .trim()
        .to_owned();
    if token.is_empty() {
        anyhow::bail!("admin.token_file {} is empty", path.display());
    }
    Ok(token)
}

/// Logs the chain head now and then, so a log pipeline keeps copies an attacker with the
/// database alone cannot rewrite (`audit verify --head` checks them).
async fn log_chain_head(
    database: std::path::PathBuf,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let db = database.clone();
        let head = tokio::task::spawn_blocking(move || {
            crate::audit::query::open_read_only(&db)
                .and_then(|c| crate::audit::query::chain_head(&c))
        })
        .await;
        match head {
            Ok(Ok(h)) => {
                tracing::info!(target: "audit", head_seq = h.seq, head_hash = %h.hash, entries = h.entries, "Chain head")
            }
            Ok(Err(e)) => tracing::warn!(target: "audit", error = %e, "Chain head not readable"),
            Err(_) => {}
        }
    }
}

/// The answer to a request whose handler panicked. The panic message may quote request data,
/// so it is not shown; it is logged without the payload.
fn panic_response(_payload: Box<dyn std::any::Any + Send>) -> Response<ProxyBody> {
    tracing::error!("Request handler panicked");
    let mut resp = Response::new(ProxyBody::bytes(crate::rest::envelope::error_body(
        "INTERNAL_ERROR",
        "internal proxy error",
    )));
    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// Accepts until `stop` flips, serving each connection on its own task.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    limits: Arc<Semaphore>,
    graceful: &GracefulShutdown,
    mut stop: watch::Receiver<bool>,
    metrics: Option<Arc<Metrics>>,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    loop {
        // Wait for a free slot before accepting: past the cap, connections queue in the
        // kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            _ = stop.changed() => return,
            p = limits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        // Outermost: a panic (a bug) answers one request with a 500 envelope instead of
        // dropping the connection and every request pipelined on it.
        let service = tower::ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panic_response))
            .service(tower::service_fn(move |req| handler(req, peer)));
        let service = TowerToHyperService::new(service);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let metrics = metrics.clone();
        if let Some(m) = &metrics {
            m.open_connections.inc();
        }
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, client_ip = %peer.ip(), "Connection ended with an error");
            }
            if let Some(m) = metrics {
                m.open_connections.dec();
            }
            drop(permit);
        });
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
