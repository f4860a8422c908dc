//! A real PostgreSQL 15 for the tests: `initdb` into a temporary directory, the server listening
//! on 127.0.0.1 only (a free port; its unix socket in the same directory), password
//! authentication over TCP, TLS offered (a throw-away CA, [`PgServer::ca`]), and a fresh
//! database per test ([`PgServer::database`]). One server
//! is shared by the tests of a binary that run at once ([`PgServer::shared`]); it is stopped
//! (`pg_ctl stop -m immediate`, by its data directory) when the last of them drops it, also
//! when a test panics.
//!
//! PostgreSQL refuses to run as root: as root, every command runs as the `postgres` user through
//! `runuser`, in a directory handed to that user; as anyone else, directly. `scripts/test`
//! installs the server where its binaries are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Where Debian's postgresql-15 puts its binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The superuser's password (a throw-away cluster on loopback).
const SUPERUSER_PASSWORD: &str = "pg-test-superuser-pw";

/// The role the tests' trails are written by, and its password.
pub const PG_USER: &str = "b24audit";
pub const PG_PASSWORD: &str = "pg-test-audit-pw";

/// A running PostgreSQL server.
pub struct PgServer {
    pub port: u16,
    /// The CA that signed the server's TLS certificate (for 127.0.0.1): TLS is on, and plain
    /// TCP accepted too.
    pub ca: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// The server the tests running now share, started when there is none.
    pub fn shared() -> Arc<PgServer> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.upgrade() {
            return s;
        }
        let s = Arc::new(PgServer::start());
        *slot = Arc::downgrade(&s);
        s
    }

    /// A server of its own.
    pub fn start() -> PgServer {
        let bin = Path::new(PG_BIN);
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL 15 is not installed ({PG_BIN}/initdb): scripts/test installs it"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown the cluster's directory to postgres"
            );
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("pwfile");
        if as_postgres {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status();
        }
        let server = PgServer {
            port: 0,
            ca: PathBuf::new(),
            data: data.clone(),
            as_postgres,
            _dir: dir,
        };
        let out = server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth-host=scram-sha-256".as_ref(),
                "--auth-local=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                // Not C: the trail's columns must order alike whatever the locale.
                "--locale=C.UTF-8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        let _ = std::fs::remove_file(&pwfile);
        let mut server = server;
        // TLS: the server reads server.crt and server.key (its own, mode 0600) from its data
        // directory.
        let pki_dir = server._dir.path().join("pki");
        std::fs::create_dir(&pki_dir).expect("pki dir");
        let pki = super::pki::make_pki(&pki_dir, "pg");
        for (from, to) in [(&pki.cert, "server.crt"), (&pki.key, "server.key")] {
            let dest = data.join(to);
            std::fs::copy(from, &dest).expect("copy the server's certificate");
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if server.as_postgres {
                let _ = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&dest)
                    .status();
            }
        }
        server.ca = pki.ca;
        // A port taken between our probe and the server's bind: try another.
        for _ in 0..5 {
            server.port = free_port();
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off -c ssl=on",
                server.port,
                server._dir.path().display()
            );
            let log = server._dir.path().join("server.log");
            let out = server.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    opts.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "30".as_ref(),
                    "start".as_ref(),
                ],
            );
            if out.status.success() {
                server.create_role();
                eprintln!("PostgreSQL test server on 127.0.0.1:{}", server.port);
                return server;
            }
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let path = Path::new(PG_BIN).join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.args(args).output().expect("run a PostgreSQL program")
    }

    /// A superuser connection to `dbname`, on a thread outside any tokio runtime.
    pub fn admin<T: Send>(
        &self,
        dbname: &str,
        f: impl FnOnce(&mut postgres::Client) -> T + Send,
    ) -> T {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname={dbname}",
            self.port
        );
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
                f(&mut c)
            })
            .join()
            .expect("admin thread")
        })
    }

    fn create_role(&self) {
        self.admin("postgres", |c| {
            c.batch_execute(&format!(
                "CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'"
            ))
            .expect("create role");
        });
    }

    /// A fresh, empty database owned by [`PG_USER`]; returns its name.
    pub fn database(&self) -> String {
        let name = format!(
            "trail_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.admin("postgres", |c| {
            c.batch_execute(&format!("CREATE DATABASE {name} OWNER {PG_USER}"))
                .expect("create database");
        });
        name
    }

    /// The `[audit] database` URL of `dbname`, without its password (give it through
    /// `password_file`), plain TCP on loopback.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    /// The URL of `dbname` with its password and `sslmode`.
    pub fn url_tls(&self, dbname: &str, sslmode: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{dbname}?sslmode={sslmode}",
            self.port
        )
    }

    /// The same URL with the password in it.
    pub fn url_with_password(&self, dbname: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    /// The trail's connection settings as the proxy reads them from its config.
    pub fn trail(&self, dbname: &str) -> b24_audit_proxy::config::PgTrail {
        b24_audit_proxy::config::PgTrail {
            url: b24_audit_proxy::audit::pg_url::PgUrl::parse(&self.url_with_password(dbname))
                .expect("url"),
            password_file: None,
            replica: Default::default(),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if !out.status.success() {
            eprintln!("pg_ctl stop: {}", text(&out));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An audit observer that records nothing: the store-level tests drive the writer directly.
pub struct Quiet;

impl b24_audit_proxy::audit::AuditObserver for Quiet {
    fn committed(&self, _: usize, _: &[b24_audit_proxy::audit::Outcome], _: f64) {}
    fn write_failed(&self) {}
    fn request_latency(&self, _: f64) {}
}

/// A two-worker runtime, for tests that open a PostgreSQL store from synchronous code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
