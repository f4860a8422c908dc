//! Test helpers, one file per concern: the proxy binary (`proxy`), the portal simulator
//! (`simulator`), HTTP helpers and a fixed-answer upstream (`http`), a throw-away PostgreSQL
//! server (`pg`), a throw-away PKI (`pki`)
//! and a PromQL scanner (`promql`), plus the constants and polling helpers every test shares
//! (here). Everything talks to loopback only and stops when dropped. Tests `use support::*` and see
//! all of it.

// Each test binary uses a different part of these helpers.
#![allow(dead_code, unused_imports)]

mod http;
mod pg;
mod pki;
mod promql;
mod proxy;
mod simulator;

pub use self::http::*;
pub use self::pg::*;
pub use self::pki::*;
pub use self::promql::*;
pub use self::proxy::*;
pub use self::simulator::*;

use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_b24-audit-proxy");

/// The simulator's default webhook.
pub const USER: &str = "1";
pub const SECRET: &str = "sim-secret-1";
pub const TOKEN: &str = "sim-oauth-token-1";

/// The watched method most tests drive.
pub const UPDATE: &str = "crm.automatedsolution.update";

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

/// Polls `f` until it holds (linkerd's `assert_eventually!`), for state that changes in
/// another process; fails after 10 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
