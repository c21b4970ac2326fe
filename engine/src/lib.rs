//! netfold's domain engine.
//!
//! Layout:
//! - [`ids`], [`fact`], [`event`]: the vocabulary — identifiers, facts with stable keys, the five
//!   events and their envelope.
//! - [`observe`]: what adapters report; the session turns it into events.
//! - [`desired`]: desired VLAN state per switch port, with reasons.
//! - [`record`]: how events are stored in the log (schema versions, upcasting).
//! - [`switch`]: the switch boundary trait, its operations and outcomes, and `MemorySwitch`.
//! - [`plan`]: the pure reconcile planner (policy, ownership, blast-radius guard).
//! - [`reconciler`]: the async shell that runs the planner per switch, with audit and ledger.
//!
//! The pure core (projector, session state machine, planner) does no IO and reads no clock; the
//! async shell that runs it only wires.

pub mod desired;
pub mod event;
pub mod fact;
pub mod ids;
pub mod observe;
pub mod plan;
pub mod reconciler;
pub mod record;
pub mod switch;

pub use desired::{Desired, Reason, VnicRef};
pub use event::{Envelope, Event, Recorded, UnixMs};
pub use fact::{Change, Fact, FactKey, HostFact, NeighbourSource, NetworkFact, UplinkFact, VlanSpec, VnicFact};
pub use ids::{HypervisorId, IdError, Kind, SwitchPort, VlanId, VlanRange};
pub use observe::{Observation, Rejected};
