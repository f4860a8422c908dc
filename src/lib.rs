//! # b24-audit-proxy
//!
//! An audit-logging reverse proxy for a Bitrix24 portal's REST endpoint. Integrations point
//! their webhook URL at the proxy instead of the portal; every call passes through, and every
//! call that changes a digital workplace (`crm.automatedsolution.*`) is read the way the portal
//! reads it, checked against policy, recorded in a tamper-evident SQLite trail before it is
//! forwarded, and recorded again with its outcome.
//!
//! ## The pipeline, in order (`pipeline.rs`; one file per phase in `pipeline/`)
//! 1. classify — `rest::route`: path → REST method and path credential (never reads a body)
//! 2. pass through — `upstream`: unwatched calls, streamed both ways
//! 3. interpret — `watched` (the table of watched methods), `mutation`, `rest::params`,
//!    `rest::batch`: watched calls → `Mutation`s; inspected calls forwarded rebuilt
//! 4. snapshot — prior state under the workplaces' locks (`locks`, `owners`)
//! 5. decide — `plan`, `policy`
//! 6. record intent — `audit` (durable before anything is forwarded)
//! 7. forward — the proxy's own encoding of what it read (`mutation::outbound`)
//! 8. record outcome — status, portal error, after-state
//! 9. respond — the portal's bytes plus `X-Audit-Event-Id`; errors rendered in one place
//!
//! ## Layout
//! - `config` — TOML schema, defaults, validation (exit 78, `EX_CONFIG`, on bad config)
//! - `error` — `ProxyError`, the status/code table
//! - `server` — listeners, connection cap, graceful shutdown; `admin` — metrics and health;
//!   `healthcheck` — the `healthcheck` sub-command's `/readyz` client
//! - `lifecycle` — guards for what a request holds, and the audited work that outlives it;
//!   `timed_io` — writes to clients bounded by `server.send_timeout`
//! - `audit` — typed records, the `AuditStore` backend trait (SQLite first), the writer thread
//!   with group commit, hash chain, migrations, the `TrailReader` queries (`docs/architecture.md`)
//! - `secrets` — keyed fingerprints and log redaction; `metrics` — every metric, defined once
//! - `demo` — the guided demo, against the portal simulator (the `portal-sim` crate); the
//!   protocol code the proxy and the simulator share is the `b24-rest` crate (`rest` re-exports it)
//!
//! ## Public surface
//! What the binary, a user embedding the proxy, or a test needs: [`start`] and [`Running`],
//! `config`, `server` (signals, file checks), the trail (`audit`: records, queries, verify,
//! export, prune, backup), `revert`, `healthcheck`, `demo`, and the readers of untrusted input
//! that the property tests drive (`rest`, `mutation`, `watched`, `policy`, `body`). The pipeline
//! and its helpers are private.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admin;
mod answer;
pub mod approvals;
pub mod audit;
pub mod body;
pub mod broker;
pub mod config;
pub mod demo;
pub mod error;
pub mod healthcheck;
mod identity;
mod lane;
mod lifecycle;
mod locks;
mod metrics;
pub mod mutation;
pub mod notify;
mod owners;
mod pipeline;
mod plan;
pub mod policy;
pub mod portal;
pub mod rest;
pub mod revert;
mod secrets;
pub mod server;
mod timed_io;
mod tls;
mod ui;
mod upstream;
pub mod watched;

pub use server::{start, Running};
