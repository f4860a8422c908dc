//! The portal simulator in-process (so tests can read its state), its faults and counts.

use portal_sim::{Fault, FaultKind, SimHandle, SimOptions};

pub async fn sim() -> SimHandle {
    portal_sim::spawn("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
        .await
        .expect("simulator starts")
}

/// A fault for the next call of `method`, once.
pub fn fault(method: &str, kind: FaultKind) -> Fault {
    Fault {
        method: Some(method.into()),
        times: 1,
        kind,
    }
}

/// The portal's update as it misbehaves for real: it applies the change (bindings included),
/// then answers 400 `BX_EMPTY_REQUIRED` — once, for the next `crm.automatedsolution.update`.
pub fn applied_then_refused() -> Fault {
    fault(
        super::UPDATE,
        FaultKind::ErrorAfterExecute {
            status: 400,
            code: "BX_EMPTY_REQUIRED".into(),
        },
    )
}

/// The simulator's executed mutations of one REST method.
pub fn executed(sim: &SimHandle, method: &str) -> usize {
    sim.sim
        .executed_mutations()
        .iter()
        .filter(|m| m.method == method)
        .count()
}

/// Requests of one REST method that reached the simulator.
pub fn calls_of(sim: &SimHandle, method: &str) -> usize {
    sim.sim
        .calls()
        .iter()
        .filter(|c| c.rest_method.as_deref() == Some(method))
        .count()
}
