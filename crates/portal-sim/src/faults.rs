//! Injected faults: what a test asks the simulated portal to do wrong, and which requests get it.
//!
//! A [`Fault`] applies to the next `times` requests whose normalised REST method matches (`None`
//! matches any request under `/rest/`). Each request takes at most one fault: the first matching
//! one in the queue, in the order they were pushed. A fault pushed with a `skip` count
//! ([`FaultQueue::push_after`]) first lets that many matching requests pass unharmed — to fault
//! the proxy's re-read but not its snapshot read of the same method, say. Faults match whole HTTP
//! requests, never the commands inside a `batch`. How each kind is carried out on the wire is
//! `server.rs`'s concern.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A queued fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Normalised REST method to match (`crm.automatedsolution.update`, `batch`); `None` = any.
    #[serde(default)]
    pub method: Option<String>,
    /// How many matching requests it applies to.
    #[serde(default = "one")]
    pub times: u32,
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

/// What goes wrong. Serialised with a `kind` tag; see the crate docs for the
/// JSON form. `Delay` travels as `{"kind":"delay","ms":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "FaultKindRepr", from = "FaultKindRepr")]
pub enum FaultKind {
    /// Answer with this portal error envelope; the call is not executed.
    Status {
        status: u16,
        code: String,
        description: String,
    },
    /// Execute the call, then answer with an error anyway (docs/protocol.md, Workplace updates: the
    /// bindings were set even though the portal reports a failure).
    ErrorAfterExecute { status: u16, code: String },
    /// Execute, then wait this long before answering normally.
    Delay(Duration),
    /// Execute, then answer 200 with a body that is not JSON.
    InvalidJson,
    /// Execute, send the headers and part of the body, then drop the connection.
    ResetMidResponse,
    /// Execute, then close the connection without answering.
    CloseWithoutResponse,
}

impl FaultKind {
    /// False for the one kind that answers without executing the call.
    pub fn executes(&self) -> bool {
        !matches!(self, FaultKind::Status { .. })
    }
}

/// The wire form of [`FaultKind`]: an internally tagged enum cannot hold a bare `Duration`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FaultKindRepr {
    Status {
        status: u16,
        code: String,
        description: String,
    },
    ErrorAfterExecute {
        status: u16,
        code: String,
    },
    Delay {
        ms: u64,
    },
    InvalidJson,
    ResetMidResponse,
    CloseWithoutResponse,
}

impl From<FaultKind> for FaultKindRepr {
    fn from(k: FaultKind) -> Self {
        match k {
            FaultKind::Status {
                status,
                code,
                description,
            } => FaultKindRepr::Status {
                status,
                code,
                description,
            },
            FaultKind::ErrorAfterExecute { status, code } => {
                FaultKindRepr::ErrorAfterExecute { status, code }
            }
            FaultKind::Delay(d) => FaultKindRepr::Delay {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            FaultKind::InvalidJson => FaultKindRepr::InvalidJson,
            FaultKind::ResetMidResponse => FaultKindRepr::ResetMidResponse,
            FaultKind::CloseWithoutResponse => FaultKindRepr::CloseWithoutResponse,
        }
    }
}

impl From<FaultKindRepr> for FaultKind {
    fn from(r: FaultKindRepr) -> Self {
        match r {
            FaultKindRepr::Status {
                status,
                code,
                description,
            } => FaultKind::Status {
                status,
                code,
                description,
            },
            FaultKindRepr::ErrorAfterExecute { status, code } => {
                FaultKind::ErrorAfterExecute { status, code }
            }
            FaultKindRepr::Delay { ms } => FaultKind::Delay(Duration::from_millis(ms)),
            FaultKindRepr::InvalidJson => FaultKind::InvalidJson,
            FaultKindRepr::ResetMidResponse => FaultKind::ResetMidResponse,
            FaultKindRepr::CloseWithoutResponse => FaultKind::CloseWithoutResponse,
        }
    }
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub struct FaultQueue {
    pending: Vec<Fault>,
    /// Per pending fault: matching requests still to let pass.
    skips: Vec<u32>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault) {
        self.push_after(0, fault);
    }

    /// Queues a fault that lets the next `skip` matching requests pass first.
    pub fn push_after(&mut self, skip: u32, fault: Fault) {
        if fault.times > 0 {
            self.pending.push(fault);
            self.skips.push(skip);
        }
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.skips.clear();
    }

    /// Takes one use of the first fault matching `rest_method`, if any.
    pub fn take(&mut self, rest_method: Option<&str>) -> Option<FaultKind> {
        let mut found = None;
        for (i, f) in self.pending.iter().enumerate() {
            let matches = match (&f.method, rest_method) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            if !matches {
                continue;
            }
            if self.skips[i] > 0 {
                self.skips[i] -= 1;
                continue;
            }
            found = Some(i);
            break;
        }
        let pos = found?;
        let fault = &mut self.pending[pos];
        let kind = fault.kind.clone();
        fault.times -= 1;
        if fault.times == 0 {
            self.pending.remove(pos);
            self.skips.remove(pos);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_is_tagged() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":{"kind":"delay","ms":250}}"#).expect("fault");
        assert_eq!(f.kind, FaultKind::Delay(Duration::from_millis(250)));
        assert_eq!((f.method, f.times), (None, 1));
        let s = serde_json::to_value(FaultKind::Status {
            status: 503,
            code: "QUERY_LIMIT_EXCEEDED".into(),
            description: "Too many requests".into(),
        })
        .expect("json");
        assert_eq!(s["kind"], "status");
        assert_eq!(s["status"], 503);
        let c: FaultKind =
            serde_json::from_str(r#"{"kind":"close_without_response"}"#).expect("kind");
        assert_eq!(c, FaultKind::CloseWithoutResponse);
        assert!(serde_json::from_str::<FaultKind>(r#"{"kind":"nope"}"#).is_err());
    }

    #[test]
    fn a_skipping_fault_lets_the_first_matching_requests_pass() {
        let mut q = FaultQueue::default();
        q.push_after(
            1,
            Fault {
                method: Some("crm.automatedsolution.get".into()),
                times: 1,
                kind: FaultKind::InvalidJson,
            },
        );
        assert_eq!(q.take(Some("batch")), None);
        assert_eq!(q.take(Some("crm.automatedsolution.get")), None);
        assert_eq!(
            q.take(Some("crm.automatedsolution.get")),
            Some(FaultKind::InvalidJson)
        );
        assert_eq!(q.take(Some("crm.automatedsolution.get")), None);
    }

    #[test]
    fn queue_matches_in_order_and_counts_down() {
        let mut q = FaultQueue::default();
        q.push(Fault {
            method: Some("batch".into()),
            times: 2,
            kind: FaultKind::InvalidJson,
        });
        q.push(Fault {
            method: None,
            times: 1,
            kind: FaultKind::ResetMidResponse,
        });
        assert_eq!(
            q.take(Some("user.current")),
            Some(FaultKind::ResetMidResponse)
        );
        assert_eq!(q.take(Some("user.current")), None);
        assert_eq!(q.take(Some("batch")), Some(FaultKind::InvalidJson));
        assert_eq!(q.take(Some("batch")), Some(FaultKind::InvalidJson));
        assert_eq!(q.take(Some("batch")), None);
    }
}
