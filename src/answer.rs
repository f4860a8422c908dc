//! A buffered answer from the portal: what the proxy reads of the calls it makes itself, and
//! what it passes on whole when the portal refuses one of them.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// A buffered answer from the portal.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}
