//! Events and their envelope: the records of netfold's log.
//!
//! Events are past-tense facts about a hypervisor session. They evolve by adding: bincode
//! stores the variant index, so new variants go at the end and none is ever reordered or
//! removed; a changed shape gets a new schema version and an upcaster in `Recorded`'s
//! [`store::Record::decode`].

use serde::{Deserialize, Serialize};

use crate::fact::Change;
use crate::ids::{HypervisorId, Kind};

/// Unix time in milliseconds, as read from the supervisor's clock.
pub type UnixMs = u64;

/// What happened to one hypervisor session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// First successful login (or the first after `Expired`): the hypervisor is live.
    Connected { kind: Kind, endpoint: String },
    /// Facts were added, changed or removed; one event per observed batch.
    Learnt { changes: Vec<Change> },
    /// The session broke; facts are kept while the grace period runs, which counts from
    /// `since`: the last time the hypervisor answered (unix ms; schema 2 — schema 1 records
    /// are upcast with `since` = the record's time).
    Lost { reason: String, since: UnixMs },
    /// Back within the grace period after `outage_ms`.
    Reestablished { outage_ms: u64 },
    /// The grace period ran out while lost: every fact of the hypervisor is dropped.
    Expired,
    /// A full read would have removed more of the hypervisor's facts than the mass-removal
    /// guard allows, so none were removed. `sample`: the first keys that would have gone.
    /// Held until released (an operator, or a later full read that no longer trips the guard).
    RemovalHeld { would_remove: u64, known: u64, sample: Vec<crate::fact::FactKey> },
    /// A held removal was let through or is moot; `by`: `operator` or `resync` (a later full
    /// read no longer trips the guard).
    RemovalReleased { by: String },
    /// netfold was started with `--accept-loss` on a log that had lost acknowledged records:
    /// `log` ended at seq `found` although seq `acknowledged` had been acknowledged (`detail`
    /// says how, in words). Recorded under [`LOSS_RECORDER`] so the gap stays in the audit
    /// trail; the projector ignores it. Appended last: bincode stores the variant index.
    LossAccepted { log: String, found: u64, acknowledged: u64, detail: String },
    /// Pieces of one observation that were not learnt, each naming what and why (a vNIC on a
    /// network unknown on its host, a private-VLAN port group, a duplicate key, ...): the
    /// audit trail says why a VLAN is not configured. A full read records every refusal it
    /// found; a delta, those it brought. The projector ignores it. Appended last: bincode
    /// stores the variant index.
    Refused { refusals: Vec<crate::observe::Rejected> },
    /// Switch `switch` saw this (its MAC table entries for known hypervisor pNICs, its LLDP
    /// neighbours, its bonds / port-channels), and it differs from what it saw before. Recorded
    /// under [`SWITCH_RECORDER`]; the projector ties uplinks by it
    /// ([`crate::discovery`]). Appended last: bincode stores the variant index.
    SwitchSaw { switch: String, view: crate::discovery::SwitchView },
    /// The sources that tie this hypervisor's uplinks to switch ports disagree for these NICs
    /// (empty: they agree again). The applied tie is the first opinion of each; the projector
    /// ignores it: it is the audit trail of a disagreement. Appended last.
    TiesDisagreed { disagreements: Vec<crate::discovery::Disagreement> },
}

/// The hypervisor name a [`Event::LossAccepted`] is recorded under (it concerns no hypervisor).
pub const LOSS_RECORDER: &str = "netfold";

/// The hypervisor name a [`Event::SwitchSaw`] is recorded under (it concerns a switch).
pub const SWITCH_RECORDER: &str = LOSS_RECORDER;

impl Event {
    /// The variant's name, for metrics, filters and audit output.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Connected { .. } => "Connected",
            Event::Learnt { .. } => "Learnt",
            Event::Lost { .. } => "Lost",
            Event::Reestablished { .. } => "Reestablished",
            Event::Expired => "Expired",
            Event::RemovalHeld { .. } => "RemovalHeld",
            Event::RemovalReleased { .. } => "RemovalReleased",
            Event::LossAccepted { .. } => "LossAccepted",
            Event::Refused { .. } => "Refused",
            Event::SwitchSaw { .. } => "SwitchSaw",
            Event::TiesDisagreed { .. } => "TiesDisagreed",
        }
    }
}

/// The payload the log stores for each event: who, when, what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub at: UnixMs,
    pub hypervisor: HypervisorId,
    pub event: Event,
}

/// An event as read back from the log, with its place in the hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Gapless from 1.
    pub seq: u64,
    pub at: UnixMs,
    pub hypervisor: HypervisorId,
    /// Schema version the record was written with.
    pub schema: u16,
    /// Hash of the previous envelope's stored bytes (tamper-evident chain).
    pub prev: [u8; 32],
    pub event: Event,
}
