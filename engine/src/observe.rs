//! Observations: what an adapter reports about its hypervisor. Adapters never write events;
//! the engine's session turns observations into events by diffing them against the projected
//! facts.

use serde::{Deserialize, Serialize};

use crate::fact::{Change, Fact};

/// Something an adapter could not map into a fact (a VLAN of 0, a PVLAN spec, a dangling
/// reference). It is reported, never guessed; the rest of the batch is still learnt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// What was rejected, naming the object (`port group "pg-120" on host-12`).
    pub what: String,
    /// Why, in words an operator understands.
    pub why: String,
}

/// One report from a hypervisor adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// The complete inventory: on first connect, after every re-login or reconnect.
    Inventory {
        /// The endpoint actually connected to (URL), for the `Connected` event.
        endpoint: String,
        facts: Vec<Fact>,
        rejected: Vec<Rejected>,
    },
    /// What changed since the previous observation.
    Delta { changes: Vec<Change>, rejected: Vec<Rejected> },
    /// The session broke; the adapter keeps retrying in the background.
    Disconnected { reason: String },
}
