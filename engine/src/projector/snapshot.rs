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
//! Decoding borrows: the bulk of a snapshot is vNICs, and their strings are read as slices of
//! the snapshot's bytes ([`StoredIn`], the same bytes as [`Stored`]) and interned straight into
//! the facts, never allocated one by one. Desired entries' provenance is stored per port, each
//! port named once before its VLANs, not once per (port, VLAN). A hypervisor's
//! vNICs are stored apart from its other facts ([`StoredVnics`]): their strings in one text,
//! validated as UTF-8 once rather than string by string, each vNIC giving its strings' lengths;
//! each (host, network) they attach to is stored (and interned) once, vNICs naming it by index.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::{Facts, Held, Hypervisor, Stamp, State, Status};
use crate::config::Policy;
use crate::discovery::SwitchView;
use crate::fact::Fact;
use crate::ids::{HypervisorId, Kind, SwitchPort, VlanId};

/// Version of the stored form; bump it when the form changes (older ones are refused, and the
/// log folded instead). 2: hypervisors carry the held mass removal. 3: provenance (the event
/// that set each fact; since when each desired VLAN is desired) and what each switch saw
/// (`SwitchSaw`). 4: a hypervisor's vNICs in `StoredVnics`. 5: since when each desired VLAN is
/// desired, grouped by port.
pub const FORMAT: u16 = 5;

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u16,
    seq: u64,
    /// The time of the event at `seq`.
    at: crate::event::UnixMs,
    hypervisors: Vec<StoredHypervisor>,
    /// Each port with desired VLANs, in order, with each VLAN (in order) and since when.
    since: Vec<(SwitchPort, Vec<(VlanId, Stamp)>)>,
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
    /// Each host, uplink and network fact with the event that set it, in key order.
    facts: Vec<(Fact, Stamp)>,
    vnics: StoredVnics<String>,
}

/// A hypervisor's vNICs, in key order. `text` holds, in this order, each place's host and
/// network, then each vNIC's VM id, VM name, NIC id and MAC; the lengths say where each ends.
#[derive(Serialize, Deserialize)]
struct StoredVnics<T> {
    text: T,
    /// Each (host, network) some vNIC attaches to, in the order the vNICs first name them: the
    /// lengths of its host and network in `text`.
    places: Vec<(u32, u32)>,
    vnics: Vec<StoredVnic>,
}

/// A vNIC in [`StoredVnics`].
#[derive(Serialize, Deserialize)]
struct StoredVnic {
    /// Its (host, network): an index into [`StoredVnics::places`].
    place: u32,
    /// The lengths of its VM id, VM name, NIC id and MAC in [`StoredVnics::text`].
    lens: [u32; 4],
    connected: bool,
    powered_on: bool,
    set: Stamp,
}

impl StoredVnics<String> {
    /// `vnics` (in key order) with the events that set them.
    fn new<'a>(vnics: impl Iterator<Item = (&'a crate::fact::VnicFact, Stamp)>) -> Self {
        let mut out = StoredVnics { text: String::new(), places: Vec::new(), vnics: Vec::new() };
        let mut places: HashMap<(&str, &str), u32> = HashMap::default();
        let mut text = |s: &str| {
            out.text.push_str(s);
            s.len() as u32
        };
        let mut stored = Vec::new();
        for (v, set) in vnics {
            let next = places.len() as u32;
            let place = *places.entry((v.host.as_str(), v.network.as_str())).or_insert_with(|| {
                out.places.push((text(&v.host), text(&v.network)));
                next
            });
            stored.push((place, v, set));
        }
        for (place, v, set) in stored {
            let lens = [text(&v.vm), text(&v.vm_name), text(&v.nic), text(&v.mac)];
            out.vnics.push(StoredVnic { place, lens, connected: v.connected, powered_on: v.powered_on, set });
        }
        out
    }
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
    since: Vec<(SwitchPort, Vec<(VlanId, Stamp)>)>,
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
    facts: Vec<(Fact, Stamp)>,
    #[serde(borrow)]
    vnics: StoredVnics<&'a str>,
}

/// A vNIC read from [`StoredVnics`], its strings borrowed, its (host, network) interned.
pub(crate) struct VnicIn<'a> {
    pub(crate) vm: &'a str,
    pub(crate) vm_name: &'a str,
    pub(crate) nic: &'a str,
    pub(crate) mac: &'a str,
    /// The ids of its host and network.
    pub(crate) at: super::facts::Pair,
    pub(crate) connected: bool,
    pub(crate) powered_on: bool,
}

/// A snapshot that cannot be read; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot has format {found}, this build reads format {FORMAT} (the log is folded instead)")]
    Format { found: u16 },
    #[error("snapshot: the vNICs of hypervisor {hypervisor}: {what}")]
    Vnics { hypervisor: HypervisorId, what: String },
    #[error("snapshot has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Upserts the vNICs of `stored` (hypervisor `id`'s) into `facts`.
fn read_vnics(id: &HypervisorId, stored: StoredVnics<&str>, facts: &mut Facts) -> Result<(), SnapshotError> {
    let bad = |what: String| SnapshotError::Vnics { hypervisor: id.clone(), what };
    let text = stored.text;
    let mut at = 0;
    let mut piece = |len: u32| {
        let end = at + len as usize;
        let s = text.get(at..end).ok_or_else(|| {
            bad(format!("{len} bytes from byte {at} are not a string of its {}-byte text", text.len()))
        })?;
        at = end;
        Ok(s)
    };
    let mut places = Vec::with_capacity(stored.places.len());
    for (host, network) in stored.places {
        let (host, network) = (piece(host)?, piece(network)?);
        places.push((facts.intern(host), facts.intern(network)));
    }
    facts.reserve_vnics(stored.vnics.len());
    let mut per_place = vec![0usize; places.len()];
    for v in &stored.vnics {
        if let Some(n) = per_place.get_mut(v.place as usize) {
            *n += 1;
        }
    }
    for (&at, n) in places.iter().zip(per_place) {
        if n > 0 {
            facts.reserve_attached(at, n);
        }
    }
    for v in stored.vnics {
        let Some(&place) = places.get(v.place as usize) else {
            return Err(bad(format!("a vNIC names place {} of {}", v.place, places.len())));
        };
        let [vm, vm_name, nic, mac] = v.lens;
        let vnic = VnicIn {
            vm: piece(vm)?,
            vm_name: piece(vm_name)?,
            nic: piece(nic)?,
            mac: piece(mac)?,
            at: place,
            connected: v.connected,
            powered_on: v.powered_on,
        };
        if !facts.insert_vnic_in(&vnic, v.set) {
            return Err(bad(format!("vNIC {}/{} is stored twice", vnic.vm, vnic.nic)));
        }
    }
    if at != text.len() {
        return Err(bad(format!("{} bytes of its text belong to no vNIC", text.len() - at)));
    }
    Ok(())
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
                .map(|(id, _, h)| {
                    let (mut facts, mut vnics) = (Vec::new(), Vec::new());
                    for (fact, set) in h.facts.sorted_stamped() {
                        match fact {
                            Fact::Vnic(v) => vnics.push((v, set)),
                            other => facts.push((other, set)),
                        }
                    }
                    StoredHypervisor {
                        id: id.clone(),
                        kind: h.kind,
                        endpoint: h.endpoint.clone(),
                        status: h.status,
                        held: h.held,
                        facts,
                        vnics: StoredVnics::new(vnics.iter().map(|(v, set)| (v, *set))),
                    }
                })
                .collect(),
            since: {
                let mut by_port: BTreeMap<&SwitchPort, Vec<(VlanId, Stamp)>> = BTreeMap::new();
                for (&(p, vlan), &s) in &self.since {
                    by_port.entry(self.ports.value(p)).or_default().push((vlan, s));
                }
                by_port
                    .into_iter()
                    .map(|(port, mut vlans)| {
                        vlans.sort_unstable_by_key(|&(vlan, _)| vlan);
                        (port.clone(), vlans)
                    })
                    .collect()
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
            let id = h.id.clone();
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
            for (fact, stamp) in h.facts {
                facts.upsert(Cow::Owned(fact), ports, stamp);
            }
            read_vnics(&id, h.vnics, facts)?;
        }
        state.rebuild_index();
        // Only what the policy in force desires keeps its date; what it newly desires dates from
        // the snapshot.
        state.since.reserve(state.vlans.len());
        for (port, vlans) in stored.since {
            let Some(p) = state.ports.get(&port) else { continue };
            for (vlan, since) in vlans {
                if state.vlans.contains_key(&(p, vlan)) {
                    state.since.insert((p, vlan), since);
                }
            }
        }
        let snapshot_stamp = state.last_stamp();
        for &k in state.vlans.keys() {
            state.since.entry(k).or_insert(snapshot_stamp);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::VnicFact;

    fn vnic(vm: &str, network: &str) -> VnicFact {
        VnicFact {
            vm: vm.into(),
            vm_name: format!("{vm}-name").into(),
            nic: "4000".into(),
            mac: "00:50:56:00:00:01".into(),
            host: "host-1".into(),
            network: network.into(),
            connected: true,
            powered_on: true,
        }
    }

    /// A stored state of one hypervisor whose vNICs are `vnics`, bent by `bend`.
    fn stored(bend: impl FnOnce(&mut StoredVnics<String>)) -> Vec<u8> {
        let facts = [vnic("vm-1", "pg-1"), vnic("vm-2", "pg-1"), vnic("vm-3", "pg-2")];
        let mut vnics = StoredVnics::new(facts.iter().map(|v| (v, Stamp { seq: 1, at: 1 })));
        bend(&mut vnics);
        let hypervisor = StoredHypervisor {
            id: HypervisorId::new("hv1").unwrap(),
            kind: Some(Kind::VMware),
            endpoint: "https://hv1".into(),
            status: Status::Live,
            held: None,
            facts: Vec::new(),
            vnics,
        };
        let stored = Stored {
            format: FORMAT,
            seq: 1,
            at: 1,
            hypervisors: vec![hypervisor],
            since: Vec::new(),
            switches: Vec::new(),
        };
        bincode::serde::encode_to_vec(&stored, config()).unwrap()
    }

    #[test]
    fn vnics_name_each_place_once_and_read_back() {
        let bytes = stored(|v| {
            assert_eq!(v.places.len(), 2, "two (host, network) pairs for three vNICs");
            assert_eq!(v.vnics.iter().map(|n| n.place).collect::<Vec<_>>(), [0, 0, 1]);
        });
        let state = State::decode(&bytes, &Policy::default()).unwrap();
        let facts = state.facts_of(&HypervisorId::new("hv1").unwrap()).unwrap();
        assert_eq!(facts.vnic("vm-3", "4000"), Some(vnic("vm-3", "pg-2")));
        assert_eq!(state.encode(), bytes, "the same bytes again");
    }

    #[test]
    fn vnics_that_do_not_fit_their_text_are_refused_naming_the_hypervisor() {
        type Bend = Box<dyn FnOnce(&mut StoredVnics<String>)>;
        let cases: [(&str, Bend); 5] = [
            ("past the end", Box::new(|v| v.vnics[2].lens[3] += 1)),
            ("text left over", Box::new(|v| v.text.push('x'))),
            ("a place that is not there", Box::new(|v| v.vnics[1].place = 7)),
            (
                "a vNIC stored twice",
                Box::new(|v| {
                    let first = &v.vnics[0];
                    let (lens, set) = (first.lens, first.set);
                    v.text.push_str("vm-1vm-1-name400000:50:56:00:00:01");
                    v.vnics.push(StoredVnic { place: 0, lens, connected: true, powered_on: true, set });
                }),
            ),
            // "é" is two bytes: a length of one ends inside it.
            (
                "a split character",
                Box::new(|v| {
                    v.text.insert(0, 'é');
                    v.places[0].0 = 1;
                }),
            ),
        ];
        for (case, bend) in cases {
            let Err(err) = State::decode(&stored(bend), &Policy::default()) else { panic!("{case}: decoded") };
            assert!(
                matches!(&err, SnapshotError::Vnics { hypervisor, .. } if hypervisor.as_str() == "hv1"),
                "{case}: {err}"
            );
        }
    }
}
