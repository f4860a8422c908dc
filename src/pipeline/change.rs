//! The audited change as the phases hand it on: its shape as interpreted, its items, and what
//! the portal's answer said of each. Plain data, shared by the snapshot, record and forward
//! phases so that none of them depends on another for its types.

use crate::audit::Outcome;
use crate::mutation::BatchCall;
use crate::mutation::{Credential, Interpreted, Mutation, SolutionState};
use crate::plan;
use serde_json::Value;

/// What a change is: a single call, or a batch.
pub(crate) enum Shape {
    Single(Interpreted),
    Batch {
        call: BatchCall,
        credential: Credential,
        encoding: &'static str,
    },
}

/// One audited change of the request.
pub(crate) struct Item {
    /// The `cmd` key, for a batch command.
    pub(crate) key: Option<String>,
    pub(crate) mutation: Mutation,
}

/// What the portal's answer to the forwarded call says of one command.
pub(crate) struct CommandResult {
    pub(crate) outcome: Outcome,
    /// From the answer itself (success).
    pub(crate) after: Option<SolutionState>,
    /// The answer does not show the state after: read it back.
    pub(crate) reread: bool,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<Value>,
}

impl CommandResult {
    /// An outcome whose after-state the answer does not show: it is read back.
    pub(crate) fn read_back(
        outcome: Outcome,
        status: Option<u16>,
        error: Option<Value>,
    ) -> CommandResult {
        CommandResult {
            outcome,
            after: None,
            reread: true,
            status,
            error,
        }
    }
}

/// Does the portal's answer itself show what a side effect did? It does when the change
/// applied and the target's state in the answer holds every smart process taken from the other
/// workplace: a smart process belongs to one workplace at most, so that workplace (locked, so
/// changed by nobody else through the proxy) now holds exactly its planned after-state, and no
/// re-read is spent on it.
pub(crate) fn shown_by_the_answer(r: &CommandResult, e: &plan::SideEffect) -> bool {
    let Some(after) = r.after.as_ref().filter(|_| r.outcome == Outcome::Applied) else {
        return false;
    };
    e.before
        .type_ids
        .iter()
        .filter(|t| !e.after.type_ids.contains(t))
        .all(|t| after.type_ids.contains(t))
}
