//! # portal-sim
//!
//! The portal simulator: an in-memory stand-in for a Bitrix24 portal's REST module, which the
//! proxy's tests, demo and benchmarks run against instead of a real portal.
//!
//! It behaves like the *portal*, not like the proxy: it is lenient and PHP-like, and executes every
//! spelling of a call that the real portal would execute (the REST wire protocol: URL forms, PHP
//! parameter rules, batch, errors).
//! The proxy's tests send tricky spellings through the proxy and then check here that nothing
//! changed, so a simulator stricter than the portal would hide bypasses.
//!
//! # Layout
//!
//! A request goes through these files, in this order:
//!
//! | file | does |
//! |---|---|
//! | `server.rs` | accepts connections (HTTP/1.1 and h2c), reads the body, applies transport faults |
//! | `control.rs` | the `/_sim/` control surface for out-of-process users |
//! | `dispatch.rs` | one request: route, record, pick a fault, authenticate, execute, render |
//! | `route.rs` | the portal's path handling: decode, normalise, URL templates, method names |
//! | `request.rs` | the parameters the method sees (query, form, JSON, multipart), path variables |
//! | `auth.rs` | which credential the request carries and whose it is |
//! | `methods.rs` | the method table; `methods/` holds one file per family |
//! | `batch.rs` | `batch`: command parsing, `$result[..]` back-references, the envelope |
//! | `bind.rs` | the PHP controller binder and casts (`int $id`, `array $fields`, `(string)`) |
//! | `state.rs` | workplaces, smart-process types, deals, the call and mutation logs |
//! | `faults.rs` | injected faults and their serde form |
//! | `render.rs` | JSON and XML answers |
//!
//! # Behaviour worth knowing
//!
//! - Execution happens as soon as a request is read; the configured latency and a
//!   [`FaultKind::Delay`] postpone only the *answer*. A client that gives up waiting has still
//!   changed the state, as with a slow real portal.
//! - Requests under `/_sim/` are the control surface and are not recorded in [`Simulator::calls`].
//! - [`Simulator::insert_solution`] is a test-setup helper: it creates missing smart-process
//!   types and is not recorded in [`Simulator::executed_mutations`].
//! - Binding a smart-process type id that does not exist (seeded: 14, 31, 158, 172, 190, plus any
//!   created by `insert_solution`) is skipped silently, as the portal's `getBunchOfTypesByIds`
//!   does: the call succeeds and the id is simply not bound.
//! - Answers are JSON (`application/json; charset=utf-8`), or XML for a `.xml` method suffix.
//!
//! # Control surface (`/_sim/`)
//!
//! - `GET /_sim/state` → `{"solutions":[Solution...],"executed_mutations":[ExecutedMutation...],"calls":N}`
//!   (field names as the Rust structs, snake_case).
//! - `POST /_sim/faults` with a JSON [`Fault`]: `{"method":"crm.automatedsolution.update","times":1,"kind":{...}}`
//!   (`method` optional = any, `times` optional = 1), where `kind` is one of
//!   `{"kind":"status","status":503,"code":"QUERY_LIMIT_EXCEEDED","description":"Too many requests"}`,
//!   `{"kind":"error_after_execute","status":400,"code":"BX_EMPTY_REQUIRED"}`,
//!   `{"kind":"delay","ms":1500}`, `{"kind":"invalid_json"}`, `{"kind":"reset_mid_response"}`,
//!   `{"kind":"close_without_response"}`. Answers 204, or 400 for a body that is not a fault.
//! - `DELETE /_sim/faults` → 204, queue emptied.
//!
//! # Deliberately not simulated
//!
//! Rate and operating-time limits, scopes and per-user rights (every known user is an admin),
//! session (`sessid`) auth, webhook login names, HTTPS checks, `crm.type.*`, uploads, and REST 3.0
//! methods (none of the simulated methods is migrated there; see `route.rs`).

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod auth;
mod batch;
mod bind;
mod control;
mod dispatch;
mod faults;
mod methods;
mod multipart;
mod render;
mod request;
mod route;
mod server;
mod state;

pub use faults::{Fault, FaultKind};
pub use server::{serve, spawn, SimHandle};
pub use state::{ExecutedMutation, RecordedCall, Solution};

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An inbound webhook the simulated portal knows: `/rest/{user_id}/{secret}/...`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Webhook {
    pub user_id: u64,
    pub secret: String,
}

/// An OAuth access token the simulated portal accepts, and the user it acts for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OAuthToken {
    pub token: String,
    pub user_id: u64,
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub webhooks: Vec<Webhook>,
    pub oauth_tokens: Vec<OAuthToken>,
    /// Added before every answer (after the call was executed), to make benchmarks realistic.
    pub latency: Duration,
    /// Preload the sample workplaces, smart-process types and deals (see `state.rs`).
    pub seed: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            webhooks: vec![Webhook {
                user_id: 1,
                secret: "sim-secret-1".to_owned(),
            }],
            oauth_tokens: vec![OAuthToken {
                token: "sim-oauth-token-1".to_owned(),
                user_id: 1,
            }],
            latency: Duration::ZERO,
            seed: true,
        }
    }
}

/// The simulated portal: options plus shared state.
///
/// The state sits behind a std `Mutex` rather than an async one: every critical section is short,
/// synchronous and never held across an `.await` (one REST call, or one batch command, at a time).
#[derive(Debug)]
pub struct Simulator {
    opts: SimOptions,
    state: Mutex<state::State>,
}

impl Simulator {
    pub fn new(opts: SimOptions) -> Arc<Simulator> {
        let state = state::State::new(opts.seed);
        Arc::new(Simulator {
            opts,
            state: Mutex::new(state),
        })
    }

    /// Locks the state. A panic while the lock was held (a bug) must not take every later
    /// request down with it, so a poisoned lock is taken over: each operation leaves the state
    /// consistent before it can panic.
    fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// Every workplace, sorted by id.
    pub fn solutions(&self) -> Vec<Solution> {
        self.lock().solutions()
    }

    pub fn solution(&self, id: i64) -> Option<Solution> {
        self.lock().solution(id)
    }

    /// Test setup: adds a workplace bound to `type_ids` (creating unknown smart-process types),
    /// taking those types away from any workplace that held them, as `add` does.
    pub fn insert_solution(&self, title: &str, type_ids: &[i64]) -> Solution {
        self.lock().insert_solution(title, type_ids)
    }

    /// Every HTTP request that reached the simulator (except `/_sim/`), in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Every add/update/delete the simulator executed, batch commands included, in order.
    pub fn executed_mutations(&self) -> Vec<ExecutedMutation> {
        self.lock().mutations.clone()
    }

    /// Queues a fault; see [`Fault`] for how requests consume it.
    pub fn push_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Queues a fault that first lets `skip` matching requests pass.
    pub fn push_fault_after(&self, skip: u32, fault: Fault) {
        self.lock().faults.push_after(skip, fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }
}
