//! netfold's domain engine.
//!
//! Layout:
//! - [`ids`], [`fact`], [`event`]: the vocabulary — identifiers, facts with stable keys, the five
//!   events and their envelope.
//! - [`observe`]: what adapters report; the session turns it into events.
//! - [`desired`]: desired VLAN state per switch port, with reasons.
//! - [`record`]: how events are stored in the log (schema versions, upcasting).
//! - [`projector`]: the pure fold of events into [`projector::State`] — statuses, facts and
//!   desired state, incrementally; queries (`desired`, `desired_for`, `why`, `facts_of`,
//!   `status`, `desired_shared` for publishing); deterministic bytes for snapshots and replay
//!   checks (`encode`, `decode`, `state_hash`).
//! - [`session`]: the pure per-hypervisor state machine (`Session::step`) turning observations
//!   and grace timers into events and operator notices.
//! - [`config`]: grace periods, [`config::Policy`] (powered-off VMs, VM-less networks, static
//!   links), the mass-removal guard, the snapshot interval.
//! - [`topology`]: `[[topology]]` entries by host id, host name or pNIC MAC, and the pure
//!   matching ([`topology::resolve`]) the session applies and refuses by.
//! - [`discovery`]: switch-side discovery (MAC table, LLDP neighbours, bonds) and the one
//!   precedence that ties a host NIC to a switch port from every source.
//! - [`backoff`]: the one capped-exponential-backoff schedule every retry loop uses.
//! - [`clock`]: the injected clock ([`clock::TokioClock`] follows paused tokio time).
//! - [`runtime`]: the async shell that only wires — [`runtime::Engine`]:
//!   `Engine::start(Arc<log>, Config, Arc<dyn Clock>).await` (snapshot + tail, `Expired` for
//!   grace that ran out while down, timers re-armed from the log); `attach(id, kind)` → an
//!   `mpsc::Sender<Observation>`; `observe(id, kind, obs).await` → [`runtime::Outcome`];
//!   `desired()` → `watch::Receiver<Arc<Desired>>`; `state()` → [`runtime::SharedState`];
//!   `shutdown().await` (the command being handled completes its append; a final snapshot is
//!   saved; observations still queued are dropped — adapters resync with a full inventory).
//!   `metrics()` counts appended events, refused pieces, held-back mass removals, hollow
//!   inventories, append failures and snapshots.
//! - [`error`]: [`Error`] (what the runtime failed to do) and [`Invalid`] (what was refused).
//! - [`switch`]: the switch boundary trait, its operations and outcomes, and `MemorySwitch`.
//! - [`plan`]: the pure reconcile planner (policy, ownership, blast-radius guard) and the pure
//!   settlement of write-ahead intents.
//! - [`port`]: [`port::PortName`], port names validated per switch grammar (names are data).
//! - [`reconciler`]: the async shell that runs the planner per switch: write-ahead ownership
//!   ledger (intents settled by reading the switch), switch audit with causes, per-switch health.
//!
//! The pure core (projector, session state machine, planner) does no IO and reads no clock; the
//! async shell that runs it only wires.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod desired;
pub mod discovery;
pub mod error;
pub mod event;
pub mod fact;
pub mod ids;
pub mod observe;
pub mod plan;
pub mod port;
pub mod projector;
pub mod reconciler;
pub mod record;
pub mod runtime;
pub mod session;
pub mod switch;
pub mod topology;

pub use desired::{Desired, Reason, VnicRef};
pub use error::{Error, Invalid, Result};
pub use event::{Envelope, Event, Recorded, UnixMs, LOSS_RECORDER, SWITCH_RECORDER};
pub use fact::{Change, Fact, FactKey, HostFact, NeighbourSource, NetworkFact, UplinkFact, VlanSpec, VnicFact};
pub use ids::{HypervisorId, IdError, Kind, SwitchPort, VlanId, VlanRange};
pub use observe::{Ask, Observation, Rejected};
pub use projector::{HypervisorStatus, Stamp, State, Status};
pub use runtime::Engine;
