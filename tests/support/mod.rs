//! Test helpers: the real proxy binary started on `127.0.0.1:0` with a temporary config and
//! database (`TestProxy`), the portal simulator in-process (so tests can read its state), a
//! fixed-answer upstream that records raw bytes (`FixedUpstream`), and small HTTP helpers.
//! Everything talks to loopback only and stops when dropped.

#![allow(dead_code)]

use b24_audit_proxy::body::ProxyBody;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use portal_sim::{Fault, FaultKind, SimHandle, SimOptions};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BIN: &str = env!("CARGO_BIN_EXE_b24-audit-proxy");

/// The simulator's default webhook.
pub const USER: &str = "1";
pub const SECRET: &str = "sim-secret-1";
pub const TOKEN: &str = "sim-oauth-token-1";

/// The watched method most tests drive.
pub const UPDATE: &str = "crm.automatedsolution.update";

pub async fn sim() -> SimHandle {
    portal_sim::spawn("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
        .await
        .expect("simulator starts")
}

/// A fault for the next call of `method`, once.
pub fn fault(method: &str, kind: FaultKind) -> Fault {
    Fault {
        method: Some(method.into()),
        times: 1,
        kind,
    }
}

/// The proxy binary, running.
pub struct TestProxy {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Child,
    _tmp: Option<tempfile::TempDir>,
}

impl TestProxy {
    /// Starts a proxy in front of `upstream` with `extra` appended to the config.
    pub fn start(upstream: SocketAddr, extra: &str) -> TestProxy {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut p = TestProxy::start_in(&dir, upstream, extra);
        p._tmp = Some(tmp);
        p
    }

    /// Starts a proxy whose files live in `dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(dir: &Path, upstream: SocketAddr, extra: &str) -> TestProxy {
        TestProxy::start_in_opts(
            dir,
            upstream,
            &ProxyOpts {
                extra,
                ..ProxyOpts::default()
            },
        )
    }

    /// A proxy in front of `url` (e.g. `https://127.0.0.1:PORT`), `extra` as in [`TestProxy::start`].
    pub fn start_with_upstream_url(url: &str, extra: &str) -> TestProxy {
        let unused: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        TestProxy::start_opts(
            unused,
            &ProxyOpts {
                extra,
                upstream_url: Some(url),
                ..ProxyOpts::default()
            },
        )
    }

    /// Like [`TestProxy::start`], with [`ProxyOpts`] (upstream keys overridden, a shell prelude).
    pub fn start_opts(upstream: SocketAddr, opts: &ProxyOpts<'_>) -> TestProxy {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut p = TestProxy::start_in_opts(&dir, upstream, opts);
        p._tmp = Some(tmp);
        p
    }

    /// Like [`TestProxy::start_in`], with [`ProxyOpts`].
    pub fn start_in_opts(dir: &Path, upstream: SocketAddr, opts: &ProxyOpts<'_>) -> TestProxy {
        let config = dir.join("proxy.toml");
        let (server_extra, rest) = split_server_extra(opts.extra);
        let mut upstream_keys = vec![("request_timeout", "\"5s\"")];
        for (k, v) in opts.upstream {
            match upstream_keys.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v,
                None => upstream_keys.push((k, v)),
            }
        }
        let upstream_keys: String = upstream_keys
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n{server_extra}\n\
                 [upstream]\nurl = \"{url}\"\n{upstream_keys}\
                 [audit]\ndatabase = \"{}\"\n{audit}\n\
                 {admin}{log}{rest}",
                dir.join("audit.db").display(),
                audit = opts.audit,
                url = opts
                    .upstream_url
                    .map_or_else(|| format!("http://{upstream}"), str::to_owned),
                admin = if rest.contains("[admin]") {
                    ""
                } else {
                    "[admin]\nlisten = \"127.0.0.1:0\"\n"
                },
                log = if rest.contains("[log]") {
                    ""
                } else {
                    "[log]\nlevel = \"info\"\n"
                },
            ),
        )
        .expect("write config");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("proxy.log"))
            .expect("log file");
        let mut command = match opts.shell_prelude {
            None => Command::new(BIN),
            Some(prelude) => {
                // `exec` keeps the pid: the child we hold is the proxy itself.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prelude}\nexec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("proxy starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("listening line");
        // Keep draining stdout so the proxy never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| {
                    panic!(
                        "no {key} in {line:?}; log: {}",
                        std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
                    )
                })
                .parse()
                .expect("addr")
        };
        TestProxy {
            proxy: addr("proxy="),
            admin: addr("admin="),
            dir: dir.to_path_buf(),
            config,
            child,
            _tmp: None,
        }
    }

    pub fn hook_url(&self, method: &str) -> String {
        format!("http://{}/rest/{USER}/{SECRET}/{method}", self.proxy)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `kill -9`: the process gets no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }

    /// `audit export` over this proxy's database, parsed.
    pub fn export(&self) -> Vec<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["audit", "export", "--config"])
            .arg(&self.config)
            .output()
            .expect("export runs");
        assert!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// The proxy's process id (the binary itself, also when started through a shell prelude).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("audit.db")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /readyz` on the admin listener.
    pub async fn readyz(&self) -> StatusCode {
        get(&format!("http://{}/readyz", self.admin)).await.status
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `b24proxy_upstream_errors_total{kind="timeout"}`; `None` when it is not exported.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = get(&format!("http://{}/metrics", self.admin)).await;
        metric_value(&String::from_utf8_lossy(&text.body), sample)
    }
}

/// More ways to start a [`TestProxy`]. `ProxyOpts::default()` is exactly what `start` does.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyOpts<'a> {
    /// Appended to the config, as `extra` of [`TestProxy::start`].
    pub extra: &'a str,
    /// `[upstream]` keys as `(key, TOML value)`, e.g. `("request_timeout", "\"1s\"")`;
    /// they replace the helper's own (`request_timeout = "5s"`) or are added.
    pub upstream: &'a [(&'a str, &'a str)],
    /// Shell commands run before the binary is exec'd (same pid), e.g. `trap '' XFSZ`.
    pub shell_prelude: Option<&'a str>,
    /// `[upstream] url` instead of `http://{upstream}` (e.g. an `https://` portal).
    pub upstream_url: Option<&'a str>,
    /// Lines added to the `[audit]` table, e.g. `signing_key_file = "..."`.
    pub audit: &'a str,
}

/// One sample's value from a Prometheus text exposition.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Checks the hash chain of an audit database directly: `seq` runs 1..=n without a gap, the
/// first `prev_hash` is [`GENESIS`](b24_audit_proxy::audit::chain::GENESIS), each `prev_hash` is
/// the previous row's `hash`, and `hash == sha256(prev_hash || payload)`. Returns the number of
/// entries; panics naming the first broken one.
pub fn verify_chain(db: &Path) -> usize {
    use b24_audit_proxy::audit::chain::{entry_hash, GENESIS};
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the audit database");
    let mut stmt = conn
        .prepare("SELECT seq, payload, prev_hash, hash FROM audit_entries ORDER BY seq")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .expect("query");
    let mut prev = GENESIS.to_owned();
    let mut n = 0usize;
    for row in rows {
        let (seq, payload, prev_hash, hash) = row.expect("row");
        n += 1;
        assert_eq!(seq, n as i64, "gap in the chain before seq {seq}");
        assert_eq!(
            prev_hash, prev,
            "entry {seq}: prev_hash is not the previous hash"
        );
        assert_eq!(
            entry_hash(&prev_hash, &payload),
            hash,
            "entry {seq}: hash does not match its payload"
        );
        prev = hash;
    }
    n
}

/// Fails if a webhook secret or OAuth token of the simulator appears in any file of `dir`
/// (database, WAL, key, config excluded, log).
pub fn assert_no_secrets(dir: &Path) {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() && p.extension().is_none_or(|x| x != "toml") {
                files.push(p);
            }
        }
    }
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for secret in [SECRET, TOKEN] {
            assert!(
                find(&bytes, secret.as_bytes()).is_none(),
                "{secret} found in {}",
                f.display()
            );
        }
    }
}

/// The simulator's executed mutations of one REST method.
pub fn executed(sim: &SimHandle, method: &str) -> usize {
    sim.sim
        .executed_mutations()
        .iter()
        .filter(|m| m.method == method)
        .count()
}

/// Requests of one REST method that reached the simulator.
pub fn calls_of(sim: &SimHandle, method: &str) -> usize {
    sim.sim
        .calls()
        .iter()
        .filter(|c| c.rest_method.as_deref() == Some(method))
        .count()
}

/// Polls an async condition (an HTTP probe, say) until it holds; fails after `limit`.
pub async fn eventually_async<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines of `extra` before the first `[section]` belong to `[server]`.
fn split_server_extra(extra: &str) -> (String, String) {
    match extra.find("\n[").or(if extra.starts_with('[') {
        Some(0)
    } else {
        None
    }) {
        Some(i) => (extra[..i].to_owned(), extra[i..].to_owned()),
        None => (extra.to_owned(), String::new()),
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    pub fn event_id(&self) -> Option<String> {
        self.headers
            .get("x-audit-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

pub fn client() -> Client<HttpConnector, ProxyBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(ProxyBody::bytes(body.into())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answer within 20 s")
        .expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &str) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

pub async fn post_form(url: &str, body: &str) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.to_owned(),
    )
    .await
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// Writes raw bytes on a fresh connection and reads until the peer closes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Polls `f` until it holds (linkerd's `assert_eventually!`), for state that changes in
/// another process; fails after 10 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An upstream that answers every request with the same raw bytes and records what it got.
pub struct FixedUpstream {
    pub addr: SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl FixedUpstream {
    pub async fn start(response: &'static [u8]) -> FixedUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let rec = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let Some((buf, _)) = read_request(&mut s).await else {
                        return;
                    };
                    rec.lock().expect("lock").push(buf);
                    let _ = s.write_all(response).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        FixedUpstream { addr, received }
    }
}

/// Reads one HTTP/1 request (head, then `Content-Length` body bytes) from a raw stream: the
/// bytes as received and the head lower-cased. `None` when the peer closes first.
pub async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some((buf, head));
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every file of the proxy's directory (database, WAL, logs), concatenated.
pub fn all_files(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_file() {
                out.extend(std::fs::read(e.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it (`CA:FALSE`: rustls refuses a CA
/// certificate used as a leaf).
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn make_pki(dir: &Path, name: &str) -> TestPki {
    let p = |f: &str| format!("{name}-{f}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("leaf.key"),
            "-out",
            &p("leaf.csr"),
        ],
    );
    std::fs::write(
        dir.join(p("ext.cnf")),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("leaf.pem"),
        ],
    );
    TestPki {
        ca: dir.join(p("ca.pem")),
        cert: dir.join(p("leaf.pem")),
        key: dir.join(p("leaf.key")),
    }
}
