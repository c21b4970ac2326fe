//! The engine's errors: what the runtime could not do ([`Error`]) and why an observation, or
//! part of one, was refused before anything was appended ([`Invalid`]).
//!
//! `Invalid` values are not failures of the engine: the rest of the observation is still learnt
//! and each refused piece is reported (returned to the caller, logged, counted).

use crate::fact::FactKey;
use crate::ids::HypervisorId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the engine runtime failed to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log refused or failed an append or a read. Retryable when the store error is
    /// (see `store::Error`); nothing of the failed batch was applied.
    #[error("the event log failed while {context}: {source}")]
    Log {
        context: &'static str,
        #[source]
        source: store::Error,
    },
    /// A stored projector snapshot does not decode. Not retryable; start-up falls back to a
    /// full fold and reports this as a warning.
    #[error("projector snapshot at seq {seq} does not decode: {reason}")]
    Snapshot { seq: u64, reason: String },
    /// The engine has stopped (shut down, or its core task ended). Not retryable on this handle.
    #[error("the engine has stopped: {0}")]
    Stopped(&'static str),
    /// A configuration value is unusable. Not retryable: fix the configuration.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// A release was asked for a hypervisor with no held removal. Not retryable as such.
    #[error("hypervisor {hypervisor} has no held removal to release")]
    NothingHeld { hypervisor: HypervisorId },
    /// This instance does not hold the lease of the work asked for (instances sharing one
    /// store, ADR 0014): another instance works on it, or none yet. Not retryable here.
    #[error("this instance does not hold the lease {lease}: another instance works on it")]
    NotHeld { lease: String },
}

impl Error {
    pub(crate) fn log(context: &'static str) -> impl FnOnce(store::Error) -> Error {
        move |source| Error::Log { context, source }
    }
}

/// A piece of an observation that was refused before anything was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The adapter could not map something (a VLAN of 0 or 4095, a PVLAN, a dangling reference).
    #[error("hypervisor {hypervisor}: adapter rejected {what}: {why}")]
    Adapter { hypervisor: HypervisorId, what: String, why: String },
    /// A vNIC names a network that the hypervisor does not report on the vNIC's host.
    #[error("hypervisor {hypervisor}: vnic {vm}/{nic} is on network `{network}`, unknown on host {host}")]
    UnknownNetwork { hypervisor: HypervisorId, vm: String, nic: String, host: String, network: String },
    /// Two different facts (or changes) share one key in a single observation; all are refused.
    #[error("hypervisor {hypervisor}: {count} different entries share the key `{key}`; none of them is learnt")]
    DuplicateKey { hypervisor: HypervisorId, key: FactKey, count: usize },
    /// A delta removes a fact the engine does not know.
    #[error("hypervisor {hypervisor}: delta removes `{key}`, which is not known")]
    UnknownRemoval { hypervisor: HypervisorId, key: FactKey },
    /// A delta arrived while the session has no live inventory (before the first inventory, or
    /// while lost); the next inventory resynchronises.
    #[error("hypervisor {hypervisor}: delta ignored while the session is {session}; the next inventory resyncs")]
    DeltaOutOfSession { hypervisor: HypervisorId, session: &'static str },
    /// A resync would remove more than the allowed share of the hypervisor's facts at once: the
    /// removals are held back (additions and changes are still learnt).
    #[error(
        "hypervisor {hypervisor}: resync would remove {would_remove} of {known} facts (more than {share_pct}%); \
         removals held back"
    )]
    MassRemovalHeldBack { hypervisor: HypervisorId, would_remove: usize, known: usize, share_pct: u32 },
    /// An inventory came back empty or hollow while facts were known: treated as a lost
    /// connection, never as a mass deletion.
    #[error("hypervisor {hypervisor}: inventory came back {what} while {known} facts are known; treated as a lost connection")]
    HollowInventory { hypervisor: HypervisorId, what: &'static str, known: usize },
    /// A `[[topology]]` entry ties no uplink (it matches no host, several, or a NIC the host
    /// does not have): it is applied to none rather than to a host it may not mean.
    #[error("hypervisor {hypervisor}: {what} is not applied: {why}")]
    Topology { hypervisor: HypervisorId, what: String, why: String },
}

impl Invalid {
    /// What was refused and why, for the audit trail ([`crate::Event::Refused`]); `None` for
    /// what the log records otherwise (a held mass removal is `RemovalHeld`, a hollow inventory
    /// is `Lost`) and for a delta outside a session (nothing is lost: the next inventory
    /// resyncs).
    pub fn refusal(&self) -> Option<crate::observe::Rejected> {
        use crate::observe::Rejected;
        let r = |what: String, why: String| Some(Rejected { what, why });
        match self {
            Invalid::Adapter { what, why, .. } | Invalid::Topology { what, why, .. } => r(what.clone(), why.clone()),
            Invalid::UnknownNetwork { vm, nic, host, network, .. } => {
                r(format!("vnic {vm}/{nic}"), format!("its network `{network}` is unknown on host {host}"))
            }
            Invalid::DuplicateKey { key, count, .. } => {
                r(key.to_string(), format!("{count} different entries share this key in one observation"))
            }
            Invalid::UnknownRemoval { key, .. } => r(key.to_string(), "a delta removes it, but it is not known".into()),
            Invalid::MassRemovalHeldBack { .. }
            | Invalid::HollowInventory { .. }
            | Invalid::DeltaOutOfSession { .. } => None,
        }
    }
}
