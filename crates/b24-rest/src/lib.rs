//! # b24-rest
//!
//! The Bitrix24 portal's REST wire protocol as both sides of it need it: the proxy, which must
//! read a call exactly as the portal will, and the portal simulator, which must execute it the
//! way the portal does. Nothing here does I/O or knows about auditing.
//!
//! - `php` — the PHP value model the portal's parameter readers produce, and PHP's casts
//! - `params` — the readers: `parse_str` for query strings and forms, `json_decode` for JSON
//!   bodies, and the portal's merge of the two
//! - `encode` — the proxy's canonical re-encoding of what it read
//! - `command` — how a `batch` command string splits into method and query
//! - `credentials` — the one list of parameters that carry a caller's credential
//! - `envelope` — the portal's error body and `time` object

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod command;
pub mod credentials;
pub mod encode;
pub mod envelope;
pub mod params;
pub mod php;
