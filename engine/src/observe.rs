//! Observations: what an adapter reports about its hypervisor, and [`Ask`]: what the engine
//! asks of the adapter in return. Adapters never write events; the engine's session turns
//! observations into events by diffing them against the projected facts, and tells the adapter
//! when its verdict differs from the adapter's view (a hollow inventory is a loss, not data).

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
    /// The session broke, or an attempt to reach the hypervisor failed; the adapter keeps
    /// retrying in the background. `silent_ms`: how long before this report the hypervisor last
    /// answered (the loss is dated then); 0 when the adapter never reached it.
    Disconnected { reason: String, silent_ms: u64 },
}

/// What the engine asks of a hypervisor's adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// The engine recorded the hypervisor as lost although the adapter still holds a session
    /// (its inventory came back hollow, or an operator released a held removal): drop the
    /// session, log in again and send a fresh `Inventory` on the retry schedule.
    Reread { reason: String },
    /// The grace period is about to run out: try to reach the hypervisor now. The engine waits
    /// for this attempt (a bounded window) before it removes what was learnt.
    LastAttempt,
}
