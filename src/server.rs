//! Listeners and lifecycle: binds the proxy and admin listeners (each optionally over TLS),
//! accepts with a connection cap and a header-read timeout, reloads policy and TLS
//! material on SIGHUP (keeping the old ones when the new config is invalid), and shuts down in
//! order — stop accepting, let in-flight requests and the audited work of clients that already
//! left finish within the grace period, then let the audit writer commit what is queued and
//! stop. Writes to clients are bounded by `server.send_timeout` (`timed_io`).

use crate::admin::Admin;
use crate::approvals::Desk;
use crate::audit::signing::{self, HeadSigner};
use crate::audit::store;
use crate::audit::syslog::SyslogSink;
use crate::audit::writer::{OpenOptions, Writer};
use crate::audit::{AuditLog, EntrySink};
use crate::body::ProxyBody;
use crate::broker::{Broker, Webhooks};
use crate::config::Config;
use crate::lane::{Ended, Lane, Prefixed};
use crate::lifecycle::GaugeGuard;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::portal::Portals;
use crate::secrets::FingerprintKey;
use crate::timed_io::TimedWrites;
use crate::tls::ReloadableCert;
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
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower_http::catch_panic::CatchPanicLayer;

/// A running proxy.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    writer: Writer,
    grace: Duration,
    pipeline: Arc<Pipeline>,
    cert: Option<Arc<ReloadableCert>>,
    admin_cert: Option<Arc<ReloadableCert>>,
    metrics: Arc<Metrics>,
    /// With `[audit] signing_key_file`: signs the head once more on shutdown.
    heads: Option<AuditLog>,
    /// The `[audit.syslog]` sender; it ends once the writer has stopped and its queue is sent.
    syslog: Option<JoinHandle<()>>,
}

impl Running {
    /// SIGHUP: re-reads the config file and applies what can change without a restart — the
    /// policy rules and the TLS certificate. An invalid file, or TLS files that do not load,
    /// leave everything as it was.
    pub fn reload(&self, path: &Path) -> Result<(), String> {
        let result = self.try_reload(path);
        self.metrics.reloaded(result.is_ok());
        result
    }

    fn try_reload(&self, path: &Path) -> Result<(), String> {
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let listeners = [
            ("proxy", &self.cert, &new.server.tls),
            ("admin", &self.admin_cert, &new.admin.tls),
        ];
        // Both certificates load before either is swapped: a reload applies whole or not at all.
        let mut loaded = Vec::new();
        for (name, cert, files) in listeners {
            match (cert, files) {
                (Some(cert), Some(files)) => loaded.push((
                    name,
                    cert,
                    crate::tls::load_certified_key(&files.cert, &files.key)?,
                )),
                (None, None) => {}
                _ => {
                    return Err(format!(
                        "turning TLS on or off for the {name} listener needs a restart; nothing was reloaded"
                    ))
                }
            }
        }
        for (name, cert, key) in loaded {
            cert.replace(key);
            record_expiry(&self.metrics, name, cert);
        }
        self.pipeline.set_policy(Policy::new(new.policy));
        Ok(())
    }

    /// Stops accepting, drains in-flight requests and detached audited work (together bounded
    /// by the grace period), then flushes and closes the audit writer.
    pub async fn shutdown(self) {
        let Running {
            stop,
            task,
            writer,
            grace,
            pipeline,
            heads,
            syslog,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + grace;
        let _ = stop.send(true);
        if task.await.is_err() {
            tracing::error!("Server task panicked");
        }
        // Changes whose client left are still being carried to their outcome.
        if tokio::time::timeout_at(deadline, pipeline.detached.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                running = pipeline.detached.running(),
                "Audited changes still running after the grace period; their intents are reconciled at the next start"
            );
        }
        // Nothing is served any more: the head signed now is the trail's last entry.
        if let Some(store) = heads {
            sign_head(&store, "shutdown").await;
        }
        // The writer stops when the last sender of its queue is gone: this one included.
        drop(pipeline);
        let joined =
            tokio::time::timeout(grace, tokio::task::spawn_blocking(move || writer.join())).await;
        if joined.is_err() {
            tracing::warn!("Audit writer still busy after the grace period; unfinished intents are reconciled at the next start");
        }
        if let Some(task) = syslog {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
                tracing::warn!("Syslog receiver did not take the last entries within the grace period; they are in the trail");
            }
        }
    }
}

/// The opened trail and what came with it.
struct Trail {
    log: AuditLog,
    writer: Writer,
    /// The key signed heads are checked with, when heads are signed.
    public_key: Option<ed25519_dalek::VerifyingKey>,
    syslog: Option<JoinHandle<()>>,
}

/// Opens the audit store (reconciling what an earlier run left open) with its signer and feed.
fn open_trail(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Trail> {
    let (signer, sink, syslog) = audit_extras(config, metrics)?;
    let public_key = signer.as_ref().map(|s| s.public_key());
    let (log, writer, report) = store::open_database(
        &config.audit.database,
        OpenOptions {
            queue_capacity: config.audit.queue_capacity,
            max_batch: config.audit.max_batch,
            fsync_outcomes: config.audit.fsync_outcomes,
            signer,
            sink,
        },
        metrics.clone(),
    )
    .with_context(|| format!("audit database {}", config.audit.database))?;
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
    Ok(Trail {
        log,
        writer,
        public_key,
        syslog,
    })
}

/// `[broker]`: the webhooks file and the keys in the trail's database (opened after the trail,
/// so its schema is in place).
fn open_broker(config: &Config, key: &FingerprintKey) -> anyhow::Result<Option<Broker>> {
    let Some(b) = &config.broker else {
        return Ok(None);
    };
    let webhooks = Webhooks::load(&b.webhooks_file).map_err(anyhow::Error::msg)?;
    let broker = Broker::new(
        webhooks,
        b.require_keys,
        key.clone(),
        config.audit.database.sqlite_path().ok_or_else(|| {
            anyhow::anyhow!("[broker] needs a SQLite trail (proxy keys are kept in it)")
        })?,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Some(broker))
}

/// Both listeners' certificates (reloadable on SIGHUP) and their acceptors.
struct Tls {
    cert: Option<Arc<ReloadableCert>>,
    acceptor: Option<TlsAcceptor>,
    admin_cert: Option<Arc<ReloadableCert>>,
    admin_acceptor: Option<TlsAcceptor>,
}

fn load_tls(config: &Config, metrics: &Metrics) -> anyhow::Result<Tls> {
    let cert = load_cert(config.server.tls.as_ref(), "server")?;
    let acceptor = acceptor_for(cert.as_ref())?;
    let admin_cert = load_cert(config.admin.tls.as_ref(), "admin")?;
    let admin_acceptor = acceptor_for(admin_cert.as_ref())?;
    for (name, c) in [("proxy", &cert), ("admin", &admin_cert)] {
        if let Some(c) = c {
            record_expiry(metrics, name, c);
        }
    }
    Ok(Tls {
        cert,
        acceptor,
        admin_cert,
        admin_acceptor,
    })
}

/// Opens the audit store, binds both listeners and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let key = FingerprintKey::load_or_create(&config.audit.key_file)
        .with_context(|| format!("fingerprint key {}", config.audit.key_file.display()))?;
    let trail = open_trail(config, &metrics)?;
    for p in config.portals.iter().filter(|p| !p.upstream.is_https()) {
        tracing::warn!(
            portal = %p.name,
            "The portal's url is plain http://: use this only against a local portal or the simulator"
        );
    }
    let tls = load_tls(config, &metrics)?;
    metrics
        .max_connections
        .set(i64::try_from(config.server.max_connections).unwrap_or(i64::MAX));
    let portals = Portals::new(config, &metrics).map_err(anyhow::Error::msg)?;
    let reachable = portals
        .all()
        .iter()
        .map(|p| (p.name.clone(), p.upstream.reachability()))
        .collect();
    let heads = trail.public_key.is_some().then(|| trail.log.clone());
    let broker = open_broker(config, &key)?;
    let pipeline = Arc::new(
        Pipeline::new(config, portals, trail.log.clone(), key, metrics.clone()).with_broker(broker),
    );
    // The delivery task is detached: it ends when the pipeline (holding the queue's sender)
    // goes away, or with the runtime.
    match &config.approvals {
        Some(cfg) if cfg.url.is_some() || !cfg.users.is_empty() => {
            let (notifier, _task) = crate::notify::start(
                cfg.clone(),
                config.clone(),
                Arc::downgrade(&pipeline),
                metrics.clone(),
            )
            .map_err(anyhow::Error::msg)?;
            pipeline.set_notifier(notifier);
        }
        _ => {}
    }
    let lane = lane_for(config, &pipeline)?;
    let token = match &config.admin.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let admin = Arc::new(
        Admin::new(
            metrics.clone(),
            trail.log,
            config.audit.database.clone(),
            token,
            reachable,
            config.admin.ready_requires_portal,
        )
        .with_public_key(trail.public_key)
        .with_desk(Desk::new(config, pipeline.clone()).map_err(anyhow::Error::msg)?),
    );

    let proxy_listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen {}", config.server.listen))?;
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen {}", config.admin.listen))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(serve(Serve {
        config: config.clone(),
        proxy_listener,
        admin_listener,
        pipeline: pipeline.clone(),
        lane,
        admin,
        metrics: metrics.clone(),
        acceptor: tls.acceptor,
        admin_acceptor: tls.admin_acceptor,
        heads: heads.clone(),
        stop: stop_rx,
    }));
    Ok(Running {
        proxy_addr,
        admin_addr,
        stop,
        task,
        writer: trail.writer,
        grace: config.server.shutdown_grace,
        pipeline,
        cert: tls.cert,
        admin_cert: tls.admin_cert,
        metrics,
        heads,
        syslog: trail.syslog,
    })
}

/// The pass-through lane, when it is on. It reads sockets directly, so a TLS listener is served
/// by hyper alone.
fn lane_for(config: &Config, pipeline: &Arc<Pipeline>) -> anyhow::Result<Option<Arc<Lane>>> {
    if !config.server.pass_through_lane || config.server.tls.is_some() {
        return Ok(None);
    }
    let lane = Lane::new(config, pipeline.clone()).map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(lane)))
}

/// Everything the serving task owns.
struct Serve {
    config: Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    pipeline: Arc<Pipeline>,
    /// The pass-through lane, when on (plain-TCP proxy listener only).
    lane: Option<Arc<Lane>>,
    admin: Arc<Admin>,
    metrics: Arc<Metrics>,
    acceptor: Option<TlsAcceptor>,
    admin_acceptor: Option<TlsAcceptor>,
    heads: Option<AuditLog>,
    stop: watch::Receiver<bool>,
}

/// Serves both listeners, logs and signs the chain head, probes the portal; once stopped,
/// lets connections finish within the grace period.
async fn serve(s: Serve) {
    let server = &s.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let handshake_timeout = server.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let pipeline = s.pipeline.clone();
    let proxy = accept_loop(
        Accept {
            listener: s.proxy_listener,
            builder: builder.clone(),
            limits: Arc::new(Semaphore::new(server.max_connections)),
            stop: s.stop.clone(),
            metrics: Some(s.metrics.clone()),
            tls: s.acceptor.map(|a| (a, handshake_timeout)),
            first_byte: handshake_timeout,
            send_timeout: server.send_timeout,
            lane: s.lane,
        },
        &graceful,
        move |req, peer| {
            let pipeline = pipeline.clone();
            async move { Ok::<_, Infallible>(pipeline.handle(req, peer).await) }
        },
    );
    let admin = s.admin;
    let admin_loop = accept_loop(
        Accept {
            listener: s.admin_listener,
            builder,
            limits: Arc::new(Semaphore::new(64)),
            stop: s.stop.clone(),
            metrics: None,
            tls: s.admin_acceptor.map(|a| (a, handshake_timeout)),
            first_byte: handshake_timeout,
            send_timeout: server.send_timeout,
            lane: None,
        },
        &graceful,
        move |req, _peer| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(req).await) }
        },
    );
    let heads = log_chain_head(
        s.config.audit.database.clone(),
        s.config.audit.head_log_interval,
        s.heads,
        s.stop.clone(),
    );
    let probes = probe_upstream(s.pipeline, s.stop);
    tokio::join!(proxy, admin_loop, heads, probes);
    let grace = server.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "In-flight requests still running after the grace period; closing"
        );
    }
}

fn load_cert(
    files: Option<&crate::config::TlsFiles>,
    section: &str,
) -> anyhow::Result<Option<Arc<ReloadableCert>>> {
    match files {
        Some(f) => Ok(Some(
            ReloadableCert::load(&f.cert, &f.key)
                .map_err(|e| anyhow::anyhow!("{section}.tls_cert/tls_key: {e}"))?,
        )),
        None => Ok(None),
    }
}

fn acceptor_for(cert: Option<&Arc<ReloadableCert>>) -> anyhow::Result<Option<TlsAcceptor>> {
    match cert {
        Some(c) => Ok(Some(TlsAcceptor::from(Arc::new(
            crate::tls::server_config(c.clone()).map_err(anyhow::Error::msg)?,
        )))),
        None => Ok(None),
    }
}

fn record_expiry(metrics: &Metrics, listener: &str, cert: &ReloadableCert) {
    if let Some(t) = cert.expiry() {
        metrics
            .tls_cert_expiry
            .with_label_values(&[listener])
            .set(t as f64);
    }
}

/// The optional parts of the audit writer: the head signer (`[audit] signing_key_file`) and the
/// syslog feed (`[audit.syslog]`) with its sender task.
#[allow(clippy::type_complexity)]
fn audit_extras(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(
    Option<Arc<HeadSigner>>,
    Option<Arc<dyn EntrySink>>,
    Option<JoinHandle<()>>,
)> {
    let signer = match &config.audit.signing_key_file {
        Some(path) => {
            Some(Arc::new(HeadSigner::load(path).map_err(|e| {
                anyhow::anyhow!("audit.signing_key_file: {e}")
            })?))
        }
        None => None,
    };
    let Some(cfg) = &config.audit.syslog else {
        return Ok((signer, None, None));
    };
    let (dropped, sent) = (metrics.clone(), metrics.clone());
    let (sink, task) = SyslogSink::start(
        cfg,
        Box::new(move || dropped.syslog_dropped.inc()),
        Arc::new(move || sent.syslog_sent.inc()),
    );
    Ok((signer, Some(sink as Arc<dyn EntrySink>), Some(task)))
}

/// Loads the files the config names (TLS certificate and key, extra CA, admin token), so
/// `check-config` catches what would otherwise fail at start.
pub fn check_files(config: &Config) -> Result<(), String> {
    if let Some(files) = &config.server.tls {
        crate::tls::load_certified_key(&files.cert, &files.key)
            .map_err(|e| format!("server.tls_cert/tls_key: {e}"))?;
    }
    if let Some(files) = &config.admin.tls {
        crate::tls::load_certified_key(&files.cert, &files.key)
            .map_err(|e| format!("admin.tls_cert/tls_key: {e}"))?;
    }
    for p in &config.portals {
        crate::tls::client_config(p.upstream.ca_file.as_deref())
            .map_err(|e| format!("the ca_file of portal {}: {e}", p.name))?;
    }
    if let Some(path) = &config.admin.token_file {
        read_token(path).map_err(|e| e.to_string())?;
    }
    if let Some(b) = &config.broker {
        Webhooks::load(&b.webhooks_file)?;
    }
    if let Some(path) = &config.admin.approvers_file {
        crate::approvals::Approvers::load(path)?;
    }
    if let Some(path) = &config.audit.signing_key_file {
        HeadSigner::load(path).map_err(|e| format!("audit.signing_key_file: {e}"))?;
    }
    if let crate::config::TrailDatabase::Postgres(pg) = &config.audit.database {
        if let Some(path) = &pg.password_file {
            std::fs::metadata(path)
                .and_then(|_| std::fs::File::open(path))
                .map_err(|e| format!("audit.password_file {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// How often the portal's reachability is re-checked for `/readyz` when no call checks it.
const PROBE_EVERY: Duration = Duration::from_secs(10);

async fn probe_upstream(pipeline: Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        for p in pipeline.portals.all() {
            if !p.upstream.probe().await {
                tracing::warn!(portal = %p.name, "The portal is not reachable");
            }
        }
    }
}

/// The admin token: the file's content without surrounding whitespace; an empty file is refused
/// (it would make every request authorised).
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
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
/// With a signing key, the head is first signed (a `signed_head` entry), so the logged head is
/// one whose signature an auditor can check.
async fn log_chain_head(
    database: crate::config::TrailDatabase,
    every: Duration,
    signer: Option<AuditLog>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if let Some(store) = &signer {
            sign_head(store, "interval").await;
        }
        let db = database.clone();
        let head = tokio::task::spawn_blocking(move || {
            crate::audit::query::open_reader(&db).and_then(|c| crate::audit::query::chain_head(&*c))
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

/// Appends a signed head entry (skipped by the writer when the head is already signed).
async fn sign_head(store: &AuditLog, reason: &str) {
    match store.append(vec![signing::head_entry(reason)]).await {
        Ok(c) => {
            if let Some(c) = c.first() {
                tracing::info!(target: "audit", head_seq = c.seq, head_hash = %c.hash, reason, "Chain head signed");
            }
        }
        Err(e) => {
            tracing::error!(target: "audit", error = %e, reason, "Chain head could not be signed")
        }
    }
}

/// The answer to a request whose handler panicked. The panic message may quote request data,
/// so it is not shown; it is logged without the payload.
fn panic_response(_payload: Box<dyn std::any::Any + Send>) -> Response<ProxyBody> {
    tracing::error!("Request handler panicked");
    crate::pipeline::error_response(crate::error::ProxyError::Internal(String::new()), None)
}

/// One listener and how its connections are served.
struct Accept {
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    /// Connections served at once.
    limits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    /// Counts open connections (the proxy listener only).
    metrics: Option<Arc<Metrics>>,
    /// TLS acceptor and handshake time limit.
    tls: Option<(TlsAcceptor, Duration)>,
    /// How long a new plain connection may stay silent before its first byte.
    first_byte: Duration,
    /// How long a write to the client may wait for it to read.
    send_timeout: Duration,
    /// Serves plain connections first, handing them to hyper when it must.
    lane: Option<Arc<Lane>>,
}

/// The next connection with its slot, or `None` once `stop` flips. The slot is taken before
/// accepting: past the cap, connections queue in the kernel's backlog instead of being
/// accepted and starved.
async fn next_connection(
    listener: &TcpListener,
    limits: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::sync::OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        _ = stop.changed() => return None,
        p = limits.clone().acquire_owned() => p.ok()?,
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((permit, stream, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Accepts until `stop` flips, serving each connection on its own task.
async fn accept_loop<F, Fut>(accept: Accept, graceful: &GracefulShutdown, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let Accept {
        listener,
        builder,
        limits,
        mut stop,
        metrics,
        tls,
        first_byte,
        send_timeout,
        lane,
    } = accept;
    while let Some((permit, stream, peer)) = next_connection(&listener, &limits, &mut stop).await {
        let handler = handler.clone();
        // Outermost: a panic (a bug) answers one request with a 500 envelope instead of
        // dropping the connection and every request pipelined on it.
        let service = tower::ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panic_response))
            .service(tower::service_fn(move |req| handler(req, peer)));
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let lane = lane.clone();
        let stop = stop.clone();
        let open = metrics
            .as_ref()
            .map(|m| GaugeGuard::new(&m.open_connections));
        tokio::spawn(async move {
            // Held to the end of the task, like the slot's permit.
            let _open = open;
            let stream = TimedWrites::new(stream, send_timeout);
            // hyper's connection state is boxed, and so is a TLS handshake: unboxed, they would
            // size the task of every connection the lane serves, idle ones included.
            let served = match tls {
                None => match plain(stream, first_byte, lane, peer, stop).await {
                    Some(io) => {
                        let conn = builder.serve_connection(TokioIo::new(io), service);
                        Box::pin(watcher.watch(conn.into_owned())).await
                    }
                    None => Ok(()),
                },
                Some((acceptor, limit)) => {
                    match Box::pin(handshake(stream, acceptor, limit, peer)).await {
                        Some(io) => {
                            let conn = builder.serve_connection(TokioIo::new(io), service);
                            Box::pin(watcher.watch(conn.into_owned())).await
                        }
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, client_ip = %peer.ip(), "Connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// A plain connection: served by the lane when it is on, until it closes (`None`) or hands
/// the connection to hyper, whose connection it then is (with what the lane read).
async fn plain(
    stream: TimedWrites<TcpStream>,
    first_byte: Duration,
    lane: Option<Arc<Lane>>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Option<Prefixed<TimedWrites<TcpStream>>> {
    // hyper's header-read timeout starts at the first byte; a connection that sends nothing
    // at all must not hold a slot for ever either.
    let mut first = [0u8; 1];
    match tokio::time::timeout(first_byte, stream.get_ref().peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return None,
    }
    match lane {
        Some(lane) => match lane.serve(stream, peer, stop).await {
            Ended::Closed => None,
            Ended::Handoff(io) => Some(io),
        },
        None => Some(Prefixed::new(Vec::new(), stream)),
    }
}

/// The TLS handshake, within the header-read timeout: a client that never finishes it must
/// not hold a connection slot.
async fn handshake(
    stream: TimedWrites<TcpStream>,
    acceptor: TlsAcceptor,
    limit: Duration,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TimedWrites<TcpStream>>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => Some(tls_stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, client_ip = %peer.ip(), "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(client_ip = %peer.ip(), "TLS handshake timed out");
            None
        }
    }
}

/// Resolves at each SIGHUP (never, where there are no signals).
pub struct Hangups {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    pub fn new() -> Hangups {
        Hangups {
            #[cfg(unix)]
            inner: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Hangups::new()
    }
}

/// Ctrl-C or SIGTERM. The handlers are registered when this is called, not when the future is
/// first polled, so a signal arriving in between is not lost (nor fatal).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
