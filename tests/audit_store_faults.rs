//! Audit-store faults (issue 6): while the trail cannot be written, every watched call is refused
//! with 503 `AUDIT_UNAVAILABLE` and nothing is forwarded, unwatched calls keep passing through,
//! `/readyz` says not ready and `b24proxy_audit_write_failures_total` counts the failures; once
//! the store is writable again the proxy recovers on its own (readiness included, with no
//! traffic needed), and the chain is intact.
//!
//! The faults are real ones, made in ways that stop root (the tests run as root in CI):
//! - read-only: `chattr +i` on the database and its WAL (immutable: even root's writes fail);
//! - disk full: the proxy's `RLIMIT_FSIZE` lowered to 1 byte with `prlimit` (every write past
//!   the first byte of any file fails with `EFBIG`, as on a full disk; `SIGXFSZ` is ignored so
//!   the process survives), restored afterwards;
//! - locked: another connection holds the write lock (`BEGIN EXCLUSIVE`) past the writer's 5 s
//!   busy timeout, so that test takes a little over 5 s.

mod support;

use http::StatusCode;
use std::process::Command;
use std::time::Duration;
use support::*;

const FAILURES: &str = "b24proxy_audit_write_failures_total";

/// A watched call that would succeed if the trail were writable.
async fn watched_call(proxy: &TestProxy, title: &str) -> Reply {
    post_json(
        &proxy.hook_url(UPDATE),
        &format!(r#"{{"id":238,"fields":{{"title":"{title}"}}}}"#),
    )
    .await
}

/// What every store fault must look like from outside, while it lasts.
async fn assert_refusing(proxy: &TestProxy, sim: &portal_sim::SimHandle) {
    let updates_before = calls_of(sim, UPDATE);
    let r = watched_call(proxy, "during the fault").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}\n{}",
        r.body,
        proxy.log()
    );
    assert_eq!(r.json()["error"], "AUDIT_UNAVAILABLE");
    assert_eq!(
        calls_of(sim, UPDATE),
        updates_before,
        "an unauditable change is never forwarded"
    );
    assert_ne!(
        sim.sim.solution(238).expect("238").title,
        "during the fault"
    );

    let pass = get(&proxy.hook_url("crm.deal.list")).await;
    assert_eq!(pass.status, StatusCode::OK, "unwatched calls keep passing");
    assert!(pass.json()["result"].is_array());

    // The writer probes an unwritable store every 500 ms; for three probe intervals the
    // answer must stay "not ready" (a probe that does not really write would flip it).
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        assert_eq!(proxy.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.metric(FAILURES).await.unwrap_or(0.0) >= 1.0,
        "the failure is counted"
    );
}

/// After the fault is gone: ready again without any traffic, then watched calls work.
async fn assert_recovered(proxy: &TestProxy, sim: &portal_sim::SimHandle) {
    let updates_before = calls_of(sim, UPDATE);
    eventually_async(
        "/readyz is ready again",
        Duration::from_secs(15),
        || async { proxy.readyz().await == StatusCode::OK },
    )
    .await;
    assert_eq!(
        calls_of(sim, UPDATE),
        updates_before,
        "readiness came back with no watched call"
    );
    let r = watched_call(proxy, "after the fault").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}\n{}", r.body, proxy.log());
    assert_eq!(sim.sim.solution(238).expect("238").title, "after the fault");
    let events = proxy.export();
    let last = events.last().expect("an event");
    assert_eq!(last["outcome"], "applied");
    assert!(
        events
            .iter()
            .all(|e| e["request"]["params"]["fields"]["title"] != "during the fault"),
        "no trace of a refused change"
    );
    verify_chain(&proxy.db_path());
}

#[tokio::test]
async fn database_locked_by_another_process_refuses_watched_calls_and_recovers() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    assert_eq!(watched_call(&proxy, "before").await.status, StatusCode::OK);

    let mut locker = rusqlite::Connection::open(proxy.db_path()).expect("open");
    locker
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let tx = locker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .expect("exclusive lock");
    assert_refusing(&proxy, &sim).await;
    tx.rollback().expect("release the lock");
    drop(locker);
    assert_recovered(&proxy, &sim).await;
}

fn chattr(flag: &str, files: &[std::path::PathBuf]) {
    let out = Command::new("chattr")
        .arg(flag)
        .args(files)
        .output()
        .expect("chattr runs (e2fsprogs)");
    assert!(
        out.status.success(),
        "chattr {flag} failed (this test needs root and a filesystem with the immutable flag): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Clears the immutable flag even when the test fails, so the temp dir can be removed.
struct Immutable(Vec<std::path::PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

#[tokio::test]
async fn read_only_database_refuses_watched_calls_and_recovers() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr).start();
    assert_eq!(watched_call(&proxy, "before").await.status, StatusCode::OK);

    let db = proxy.db_path();
    let files = vec![db.clone(), db.with_extension("db-wal")];
    for f in &files {
        assert!(f.exists(), "{} exists", f.display());
    }
    chattr("+i", &files);
    let guard = Immutable(files.clone());
    assert_refusing(&proxy, &sim).await;
    chattr("-i", &files);
    drop(guard);
    assert_recovered(&proxy, &sim).await;
}

fn prlimit_fsize(pid: u32, soft: &str) {
    let out = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .output()
        .expect("prlimit runs (util-linux)");
    assert!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn disk_full_refuses_watched_calls_and_recovers() {
    let sim = sim().await;
    // SIG_IGN survives exec: a write past the limit then fails with EFBIG instead of killing.
    // The log goes to /dev/null, which the limit does not touch: here the disk that is full is
    // the database's, not the log's (see `full_log_destination_...` for the other case).
    let mut proxy = TestProxy::builder(sim.addr)
        .shell_prelude("trap '' XFSZ\nexec 2>/dev/null")
        .start();
    assert_eq!(watched_call(&proxy, "before").await.status, StatusCode::OK);

    prlimit_fsize(proxy.pid(), "1");
    assert_refusing(&proxy, &sim).await;
    assert!(proxy.is_running(), "a full disk does not kill the proxy");
    prlimit_fsize(proxy.pid(), "unlimited");
    assert_recovered(&proxy, &sim).await;
}

/// When the log file is on the full disk too, a failed log write must not cost the client its
/// answer. Today tracing-subscriber reports the failed write with `eprintln!`, which panics
/// because stderr is the file that cannot be written; the panic escapes `CatchPanicLayer` (its
/// `panic_response` logs again) and the client's connection is dropped without an answer.
#[tokio::test]
async fn full_log_destination_does_not_drop_requests() {
    let sim = sim().await;
    let proxy = TestProxy::builder(sim.addr)
        .shell_prelude("trap '' XFSZ")
        .start();
    assert_eq!(watched_call(&proxy, "before").await.status, StatusCode::OK);
    prlimit_fsize(proxy.pid(), "1");
    let pass = get(&proxy.hook_url("crm.deal.list")).await;
    assert_eq!(pass.status, StatusCode::OK, "an unwatched call is answered");
    let r = watched_call(&proxy, "during the fault").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    prlimit_fsize(proxy.pid(), "unlimited");
}
