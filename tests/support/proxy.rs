//! The proxy binary under test: `TestProxy` started on `127.0.0.1:0` with a temporary config and
//! database, its options (`ProxyOpts`), and checks over what it leaves on disk.

use super::http::get;
use super::{find, BIN, SECRET, TOKEN, USER};
use http::StatusCode;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
    /// The one way to start a proxy: in front of `upstream`, configured by the builder's calls.
    pub fn builder(upstream: SocketAddr) -> ProxyBuilder {
        ProxyBuilder {
            upstream,
            dir: None,
            extra: String::new(),
            upstream_keys: Vec::new(),
            shell_prelude: None,
            upstream_url: None,
            audit: String::new(),
            portals: Vec::new(),
            database: None,
        }
    }

    fn start_in(dir: &Path, upstream: SocketAddr, opts: &ProxyBuilder) -> TestProxy {
        let config = dir.join("proxy.toml");
        let (server_extra, rest) = split_server_extra(&opts.extra);
        let mut upstream_keys = vec![("request_timeout", "\"5s\"")];
        for (k, v) in &opts.upstream_keys {
            match upstream_keys.iter_mut().find(|(key, _)| *key == k.as_str()) {
                Some(slot) => slot.1 = v.as_str(),
                None => upstream_keys.push((k.as_str(), v.as_str())),
            }
        }
        let upstream_keys: String = upstream_keys
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        // With `[[portals]]`, `[upstream]` holds only the shared settings.
        let url_line = if opts.portals.is_empty() {
            format!(
                "url = \"{}\"\n",
                opts.upstream_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{upstream}"))
            )
        } else {
            String::new()
        };
        let portals: String = opts
            .portals
            .iter()
            .map(|(host, lines)| format!("\n[[portals]]\nhost = \"{host}\"\n{lines}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n{server_extra}\n\
                 [upstream]\n{url_line}{upstream_keys}\
                 [audit]\ndatabase = \"{database}\"\n{audit}\n\
                 {admin}{log}{rest}{portals}",
                database = opts
                    .database
                    .clone()
                    .unwrap_or_else(|| dir.join("audit.db").display().to_string()),
                audit = opts.audit,
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
        let mut command = match &opts.shell_prelude {
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

/// How a [`TestProxy`] is started; `TestProxy::builder(upstream).start()` is the plain case.
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    upstream: SocketAddr,
    dir: Option<PathBuf>,
    extra: String,
    upstream_keys: Vec<(String, String)>,
    shell_prelude: Option<String>,
    upstream_url: Option<String>,
    audit: String,
    /// `[[portals]]` entries: the host, and the entry's other lines (`url = ...`).
    portals: Vec<(String, String)>,
    database: Option<String>,
}

impl ProxyBuilder {
    /// Files live in `dir` (kept by the caller, e.g. across a restart) instead of a temporary
    /// directory dropped with the proxy.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Appended to the config; lines before the first `[section]` belong to `[server]`.
    pub fn extra(mut self, extra: &str) -> Self {
        self.extra = extra.to_owned();
        self
    }

    /// One `[upstream]` key as a TOML value, e.g. `("request_timeout", "\"1s\"")`; it replaces
    /// the helper's own (`request_timeout = "5s"`) or is added.
    pub fn upstream_key(mut self, key: &str, value: &str) -> Self {
        self.upstream_keys.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Shell commands run before the binary is exec'd (same pid), e.g. `trap '' XFSZ`.
    pub fn shell_prelude(mut self, prelude: &str) -> Self {
        self.shell_prelude = Some(prelude.to_owned());
        self
    }

    /// `[upstream] url` instead of `http://{upstream}` (e.g. an `https://` portal).
    pub fn upstream_url(mut self, url: &str) -> Self {
        self.upstream_url = Some(url.to_owned());
        self
    }

    /// A `[[portals]]` entry served under `host`, with its other lines (`url = "..."`,
    /// `name = "..."`); with any, `[upstream]` gets no `url`.
    pub fn portal(mut self, host: &str, lines: &str) -> Self {
        self.portals.push((host.to_owned(), lines.to_owned()));
        self
    }

    /// Lines added to the `[audit]` table, e.g. `signing_key_file = "..."`.
    pub fn audit(mut self, lines: &str) -> Self {
        self.audit = lines.to_owned();
        self
    }

    /// `[audit] database` instead of `audit.db` in the proxy's directory (a PostgreSQL URL).
    pub fn database(mut self, value: &str) -> Self {
        self.database = Some(value.to_owned());
        self
    }

    pub fn start(self) -> TestProxy {
        match &self.dir {
            Some(dir) => TestProxy::start_in(dir, self.upstream, &self),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let mut p = TestProxy::start_in(tmp.path(), self.upstream, &self);
                p._tmp = Some(tmp);
                p
            }
        }
    }
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
