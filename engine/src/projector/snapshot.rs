//! The projector state's stored form: deterministic bytes (hypervisors in id order, facts in
//! key order, bincode) for snapshots and for comparing a replayed state with the live one.
//!
//! Desired state is not stored: decoding rebuilds its index from the facts with the policy in force,
//! so a snapshot stays valid when the policy changes. Provenance is stored: the event that set
//! each fact, and since when each desired (port, VLAN) has been desired (entries the policy in
//! force no longer desires are dropped on decoding; ones it newly desires date from the
//! snapshot).
//!
//! A snapshot of an older format (1: no held removals, 2: no provenance) is refused with
//! [`SnapshotError::Format`]: snapshots are derived data, so the reader folds the log instead.
//!
//! Decoding borrows: the bulk of a snapshot is vNICs and desired (port, VLAN) entries, and
//! their strings are read as slices of the snapshot's bytes ([`StoredIn`], the same bytes as
//! [`Stored`]) and interned straight into the facts, never allocated one by one.

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::{Facts, Held, Hypervisor, Stamp, State, Status};
use crate::config::Policy;
use crate::discovery::SwitchView;
use crate::fact::{Fact, HostFact, NetworkFact, UplinkFact};
use crate::ids::{HypervisorId, Kind, SwitchPort, VlanId};

/// Version of the stored form; bump it when the form changes (older ones are refused, and the
/// log folded instead). 2: hypervisors carry the held mass removal. 3: provenance (the event
/// that set each fact; since when each desired VLAN is desired) and what each switch saw
/// (`SwitchSaw`).
pub const FORMAT: u16 = 3;

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u16,
    seq: u64,
    /// The time of the event at `seq`.
    at: crate::event::UnixMs,
    hypervisors: Vec<StoredHypervisor>,
    /// Desired (port, VLAN) → since when, in (port, VLAN) order.
    since: Vec<(SwitchPort, VlanId, Stamp)>,
    /// What each switch saw last, by switch name, with the `SwitchSaw` event it comes from.
    switches: Vec<(String, SwitchView, Stamp)>,
}

#[derive(Serialize, Deserialize)]
struct StoredHypervisor {
    id: HypervisorId,
    kind: Option<Kind>,
    endpoint: String,
    status: Status,
    held: Option<Held>,
    /// Each fact with the event that set it, in key order.
    facts: Vec<(Fact, Stamp)>,
}

/// [`Stored`] as decoding reads it: the same bytes, with the strings of the bulk (vNICs and
/// desired entries) borrowed from them.
#[derive(Deserialize)]
struct StoredIn<'a> {
    /// Read on its own first (to refuse older formats).
    _format: u16,
    seq: u64,
    at: crate::event::UnixMs,
    #[serde(borrow)]
    hypervisors: Vec<HypervisorIn<'a>>,
    #[serde(borrow)]
    since: Vec<(PortIn<'a>, VlanId, Stamp)>,
    switches: Vec<(String, SwitchView, Stamp)>,
}

/// [`StoredHypervisor`] as decoding reads it.
#[derive(Deserialize)]
struct HypervisorIn<'a> {
    id: HypervisorId,
    kind: Option<Kind>,
    endpoint: String,
    status: Status,
    held: Option<Held>,
    #[serde(borrow)]
    facts: Vec<(FactIn<'a>, Stamp)>,
}

/// A stored [`Fact`] as decoding reads it: the variants in [`Fact`]'s order (bincode stores
/// the index), a vNIC borrowed.
#[derive(Deserialize)]
enum FactIn<'a> {
    Host(HostFact),
    Uplink(UplinkFact),
    Network(NetworkFact),
    Vnic(#[serde(borrow)] VnicIn<'a>),
}

/// A stored [`crate::fact::VnicFact`], its fields in the same order, borrowed.
#[derive(Deserialize)]
pub(crate) struct VnicIn<'a> {
    pub(crate) vm: &'a str,
    pub(crate) vm_name: &'a str,
    pub(crate) nic: &'a str,
    pub(crate) mac: &'a str,
    pub(crate) host: &'a str,
    pub(crate) network: &'a str,
    pub(crate) connected: bool,
    pub(crate) powered_on: bool,
}

/// A stored [`SwitchPort`], borrowed.
#[derive(Deserialize)]
struct PortIn<'a> {
    switch: &'a str,
    port: &'a str,
}

/// A snapshot that cannot be read; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot has format {found}, this build reads format {FORMAT} (older ones carry no provenance)")]
    Format { found: u16 },
    #[error("snapshot has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl State {
    /// The state's bytes: equal states give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            format: FORMAT,
            seq: self.seq,
            at: self.at,
            hypervisors: self
                .sorted_hypervisors()
                .map(|(id, _, h)| StoredHypervisor {
                    id: id.clone(),
                    kind: h.kind,
                    endpoint: h.endpoint.clone(),
                    status: h.status,
                    held: h.held,
                    facts: h.facts.sorted_stamped(),
                })
                .collect(),
            since: {
                let mut v: Vec<_> =
                    self.since.iter().map(|(&(p, vlan), &s)| (self.ports.value(p).clone(), vlan, s)).collect();
                v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                v
            },
            switches: self
                .switches
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), self.switch_seen.get(k).copied().unwrap_or_default()))
                .collect(),
        };
        // Encoding plain owned data into a Vec cannot fail.
        bincode::serde::encode_to_vec(&stored, config()).unwrap_or_default()
    }

    /// A blake3 hash of [`State::encode`]: compare states (live against replay) by it.
    pub fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Reads bytes written by [`State::encode`], folding with `policy` from there on.
    pub fn decode(bytes: &[u8], policy: &Policy) -> Result<State, SnapshotError> {
        let decode_err = |e: bincode::error::DecodeError| SnapshotError::Decode(e.to_string());
        let (format, _): (u16, usize) = bincode::serde::decode_from_slice(bytes, config()).map_err(decode_err)?;
        let (stored, used): (StoredIn<'_>, usize) = match format {
            FORMAT => bincode::serde::borrow_decode_from_slice(bytes, config()).map_err(decode_err)?,
            found => return Err(SnapshotError::Format { found }),
        };
        if used != bytes.len() {
            return Err(SnapshotError::Trailing(bytes.len() - used));
        }
        let mut state = State::new(policy);
        (state.seq, state.at) = (stored.seq, stored.at);
        for (name, view, stamp) in stored.switches {
            state.switch_seen.insert(name.clone(), stamp);
            state.switches.insert(name, view);
        }
        for h in stored.hypervisors {
            let hv = Hypervisor {
                kind: h.kind,
                endpoint: h.endpoint,
                status: h.status,
                held: h.held,
                facts: Facts::default(),
            };
            let ix = state.insert_decoded(h.id, hv);
            let ports = &mut state.ports;
            let facts = &mut state.hypervisors[ix as usize].facts;
            facts.reserve_vnics(h.facts.iter().filter(|(f, _)| matches!(f, FactIn::Vnic(_))).count());
            for (fact, stamp) in h.facts {
                match fact {
                    FactIn::Host(f) => facts.upsert(&Fact::Host(f), ports, stamp),
                    FactIn::Uplink(f) => facts.upsert(&Fact::Uplink(f), ports, stamp),
                    FactIn::Network(f) => facts.upsert(&Fact::Network(f), ports, stamp),
                    FactIn::Vnic(v) => facts.upsert_vnic_in(&v, stamp),
                }
            }
        }
        state.rebuild_index();
        let snapshot_stamp = state.last_stamp();
        let stored_since: HashMap<(&str, &str, VlanId), Stamp> =
            stored.since.into_iter().map(|(p, vlan, s)| ((p.switch, p.port, vlan), s)).collect();
        state.since.reserve(state.vlans.len());
        for &(p, vlan) in state.vlans.keys() {
            let port = state.ports.value(p);
            let since =
                stored_since.get(&(port.switch.as_str(), port.port.as_str(), vlan)).copied().unwrap_or(snapshot_stamp);
            state.since.insert((p, vlan), since);
        }
        Ok(state)
    }
}
