//! Property tests of the projector over random event sequences (and, for replay, random
//! observation sequences driven through the running engine):
//! - incremental state equals a fresh fold of the facts it ends with;
//! - snapshot + tail equals a full fold, byte for byte;
//! - `desired()` equals a naive recompute from the facts after every event;
//! - provenance (the event that set each fact, since when each desired VLAN is desired) equals a
//!   naive model kept beside the fold;
//! - the state replayed from the log is byte-identical to the live engine's state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{clock_at, T0};
use engine::config::{Config, MassRemoval, Policy, StaticLink};
use engine::discovery::{BondMember, LldpNeighbour, LldpSighting, MacSighting, SwitchView};
use engine::projector::{Stamp, State};
use engine::runtime::Engine;
use engine::{
    Change, Envelope, Event, Fact, HostFact, HypervisorId, Kind, NetworkFact, Observation, Recorded, SwitchPort,
    UplinkFact, VlanId, VlanRange, VlanSpec, VnicFact,
};
use proptest::prelude::*;
use store::{Log, MemoryLog};

const HYPERVISORS: &[&str] = &["vc", "xen"];
const HOSTS: &[&str] = &["h0", "h1"];
const NICS: &[&str] = &["n0", "n1"];
const NETS: &[&str] = &["net0", "net1", "net2"];
const VMS: &[&str] = &["vm0", "vm1", "vm2", "vm3", "vm4"];
const PORTS: &[&str] = &["p0", "p1", "p2"];
const MACS: &[&str] = &["02:00:00:00:00:00", "02:00:00:00:00:01", "02:00:00:00:00:02"];

fn pick(xs: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(xs).prop_map(str::to_string)
}

fn port() -> impl Strategy<Value = SwitchPort> {
    pick(PORTS).prop_map(|p| SwitchPort::new("tor1", p).unwrap())
}

fn vlan_spec() -> impl Strategy<Value = VlanSpec> {
    prop_oneof![
        Just(VlanSpec::Untagged),
        (1u16..6).prop_map(|v| VlanSpec::Access(VlanId::new(v).unwrap())),
        proptest::collection::vec((1u16..8, 0u16..3), 0..3).prop_map(|rs| VlanSpec::Trunk(
            rs.into_iter()
                .map(|(a, n)| VlanRange::new(VlanId::new(a).unwrap(), VlanId::new(a + n).unwrap()).unwrap())
                .collect()
        )),
    ]
}

fn fact() -> impl Strategy<Value = Fact> {
    prop_oneof![
        (pick(HOSTS), pick(&["a", "b"]))
            .prop_map(|(host, name)| Fact::Host(HostFact { host: host.into(), name: name.into() })),
        (pick(HOSTS), pick(NICS), pick(MACS), proptest::option::of(port())).prop_map(|(host, nic, mac, port)| {
            Fact::Uplink(UplinkFact { host: host.into(), nic: nic.into(), mac: Some(mac.into()), port, source: None })
        }),
        (pick(HOSTS), pick(NETS), vlan_spec(), proptest::sample::subsequence(NICS, 0..=2)).prop_map(
            |(host, network, vlan, uplinks)| Fact::Network(NetworkFact {
                host: host.into(),
                name: network.clone().into(),
                network: network.into(),
                vlan,
                uplinks: uplinks.into_iter().map(Into::into).collect(),
            })
        ),
        (pick(VMS), pick(&["0", "1"]), pick(HOSTS), pick(NETS), any::<bool>(), any::<bool>()).prop_map(
            |(vm, nic, host, network, connected, powered_on)| Fact::Vnic(VnicFact {
                vm_name: format!("{vm}-name").into(),
                vm: vm.into(),
                nic: nic.into(),
                mac: "m".into(),
                host: host.into(),
                network: network.into(),
                connected,
                powered_on,
            })
        ),
    ]
}

/// What a switch saw: sightings of the pNIC MACs on its ports (some unmanaged), LLDP
/// neighbours naming hosts by name and NIC, and a bond of two ports.
fn switch_view() -> impl Strategy<Value = SwitchView> {
    let sighting = (pick(MACS), pick(PORTS), any::<bool>()).prop_map(|(mac, port, m)| MacSighting {
        managed: m || port != "p2",
        mac,
        port,
    });
    let lldp = (pick(PORTS), pick(&["a", "b"]), pick(NICS)).prop_map(|(port, name, nic)| LldpSighting {
        port,
        managed: true,
        neighbour: LldpNeighbour { system_name: Some(name), port_description: Some(nic), ..LldpNeighbour::default() },
    });
    (proptest::collection::btree_set(sighting, 0..5), proptest::collection::btree_set(lldp, 0..2), any::<bool>())
        .prop_map(|(macs, lldp, bond)| SwitchView {
            macs: macs.into_iter().collect(),
            lldp: lldp.into_iter().collect(),
            bonds: if bond {
                ["p1", "p2"].iter().map(|m| BondMember { member: m.to_string(), bond: "b0".into() }).collect()
            } else {
                vec![]
            },
        })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![3 => fact().prop_map(Change::Upsert), 1 => fact().prop_map(|f| Change::Remove(f.key()))]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => proptest::sample::select(&[Kind::VMware, Kind::XenCitrix][..])
            .prop_map(|kind| Event::Connected { kind, endpoint: "e".into() }),
        6 => proptest::collection::vec(change(), 1..6).prop_map(|changes| Event::Learnt { changes }),
        1 => (0u64..1_000_000).prop_map(|since| Event::Lost { reason: "r".into(), since }),
        1 => (0u64..1000).prop_map(|outage_ms| Event::Reestablished { outage_ms }),
        1 => Just(Event::Expired),
        1 => (1u64..100).prop_map(|would_remove| Event::RemovalHeld { would_remove, known: 100, sample: vec![] }),
        1 => Just(Event::RemovalReleased { by: "operator".into() }),
        2 => (pick(&["tor1", "tor2"]), switch_view()).prop_map(|(switch, view)| Event::SwitchSaw { switch, view }),
    ]
}

fn envelopes() -> impl Strategy<Value = Vec<Envelope>> {
    proptest::collection::vec((pick(HYPERVISORS), event()), 0..60).prop_map(|evs| {
        evs.into_iter()
            .enumerate()
            .map(|(i, (h, event))| Envelope {
                seq: i as u64 + 1,
                at: 1_000 * (i as u64 + 1),
                hypervisor: HypervisorId::new(h).unwrap(),
                schema: 1,
                prev: [0; 32],
                event,
            })
            .collect()
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(off, vmless, link)| Policy {
        count_powered_off: off,
        count_vmless_networks: vmless,
        static_links: if link {
            vec![StaticLink {
                hypervisor: HypervisorId::new("vc").unwrap(),
                host: "h0".into(),
                nic: "n1".into(),
                port: SwitchPort::new("tor1", "p9").unwrap(),
            }]
        } else {
            vec![]
        },
    })
}

fn fold(policy: &Policy, envs: &[Envelope]) -> State {
    let mut s = State::new(policy);
    envs.iter().for_each(|e| s.apply(e));
    s
}

/// Facts of every hypervisor, sorted: what "the same knowledge" means.
fn all_facts(s: &State) -> Vec<(HypervisorId, Vec<Fact>)> {
    s.hypervisors()
        .map(|(id, _)| (id.clone(), s.facts_of(id).unwrap().sorted().into_iter().map(|(_, f)| f.to_fact()).collect()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn desired_equals_a_naive_recompute_after_every_event(policy in policy(), envs in envelopes()) {
        let mut s = State::new(&policy);
        for e in &envs {
            s.apply(e);
            prop_assert_eq!(s.desired(), &s.recompute_desired(), "after seq {}", e.seq);
        }
        for (port, vlans) in &s.desired().ports {
            for (vlan, reasons) in vlans {
                prop_assert_eq!(s.why(port, *vlan), reasons.iter().cloned().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn provenance_equals_a_naive_model_after_every_event(policy in policy(), envs in envelopes()) {
        use std::collections::BTreeMap;
        let mut s = State::new(&policy);
        let mut set_by: BTreeMap<(HypervisorId, engine::FactKey), (Fact, Stamp)> = BTreeMap::new();
        let mut since: BTreeMap<(SwitchPort, VlanId), Stamp> = BTreeMap::new();
        for e in &envs {
            let stamp = Stamp { seq: e.seq, at: e.at };
            match &e.event {
                Event::Learnt { changes } => {
                    for c in changes {
                        let k = (e.hypervisor.clone(), c.key());
                        match c {
                            // An upsert that changes nothing leaves the fact's provenance alone.
                            Change::Upsert(f) if set_by.get(&k).is_some_and(|(old, _)| old == f) => {}
                            Change::Upsert(f) => {
                                set_by.insert(k, (f.clone(), stamp));
                            }
                            Change::Remove(_) => {
                                set_by.remove(&k);
                            }
                        }
                    }
                }
                Event::Expired => set_by.retain(|(h, _), _| *h != e.hypervisor),
                _ => {}
            }
            s.apply(e);
            let desired: Vec<(SwitchPort, VlanId)> =
                s.desired().ports.iter().flat_map(|(p, vs)| vs.keys().map(move |v| (p.clone(), *v))).collect();
            since.retain(|k, _| desired.contains(k));
            for k in desired {
                since.entry(k).or_insert(stamp);
            }
            for ((h, key), (_, stamp)) in &set_by {
                prop_assert_eq!(s.facts_of(h).and_then(|f| f.set_by(key)), Some(*stamp), "{} {} after seq {}", h, key, e.seq);
            }
            for ((port, vlan), stamp) in &since {
                prop_assert_eq!(s.desired_since(port, *vlan), Some(*stamp), "{} vlan {} after seq {}", port, vlan, e.seq);
            }
        }
    }

    #[test]
    fn incremental_state_equals_a_fresh_fold_of_its_facts(policy in policy(), envs in envelopes()) {
        let live = fold(&policy, &envs);
        // A fresh fold: one Learnt per hypervisor with exactly the facts the history ended with.
        // What the switches saw comes first: the uplinks are tied as they are learnt.
        let saw = live.switch_views().map(|(switch, view)| {
            (HypervisorId::new("netfold").unwrap(), Event::SwitchSaw { switch: switch.clone(), view: view.clone() })
        });
        let learnt = all_facts(&live)
            .into_iter()
            .map(|(hypervisor, facts)| (hypervisor, Event::Learnt { changes: facts.into_iter().map(Change::Upsert).collect() }));
        let fresh_envs: Vec<Envelope> = saw
            .chain(learnt)
            .enumerate()
            .map(|(i, (hypervisor, event))| Envelope { seq: i as u64 + 1, at: 0, hypervisor, schema: 1, prev: [0; 32], event })
            .collect();
        let fresh = fold(&policy, &fresh_envs);
        prop_assert_eq!(live.desired(), fresh.desired());
        prop_assert_eq!(all_facts(&live), all_facts(&fresh));
    }

    #[test]
    fn snapshot_plus_tail_equals_a_full_fold(policy in policy(), envs in envelopes(), split in any::<proptest::sample::Index>()) {
        let k = if envs.is_empty() { 0 } else { split.index(envs.len() + 1) };
        let full = fold(&policy, &envs);
        let head = fold(&policy, &envs[..k]);
        let mut resumed = State::decode(&head.encode(), &policy).unwrap();
        envs[k..].iter().for_each(|e| resumed.apply(e));
        prop_assert_eq!(resumed.encode(), full.encode());
        prop_assert_eq!(resumed.state_hash(), full.state_hash());
        prop_assert_eq!(resumed.desired(), full.desired());
    }
}

/// Something that happens to one hypervisor while the engine runs.
#[derive(Clone, Debug)]
enum Step {
    Inventory(usize, Vec<Fact>),
    Delta(usize, Vec<Change>),
    Disconnect(usize),
    Advance(u64),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let h = 0..HYPERVISORS.len();
    proptest::collection::vec(
        prop_oneof![
            3 => (h.clone(), proptest::collection::vec(fact(), 0..12)).prop_map(|(h, f)| Step::Inventory(h, f)),
            3 => (h.clone(), proptest::collection::vec(change(), 1..4)).prop_map(|(h, c)| Step::Delta(h, c)),
            1 => h.prop_map(Step::Disconnect),
            1 => (1u64..400).prop_map(Step::Advance),
        ],
        0..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn state_replayed_from_the_log_is_byte_identical_to_the_live_state(policy in policy(), steps in steps()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let (live_bytes, live_desired, log) = rt.block_on(async {
            let log = Arc::new(MemoryLog::<Recorded>::new());
            let config = Config {
                policy: policy.clone(),
                grace_secs: 180,
                mass_removal: MassRemoval { share: 0.5, min_facts: 3 },
                snapshot_every: 7,
                ..Config::default()
            };
            let engine = Engine::start(log.clone(), config, clock_at(T0)).await.unwrap();
            let kinds = [Kind::VMware, Kind::XenCitrix];
            for step in steps {
                let (h, obs) = match step {
                    Step::Inventory(h, facts) => (h, Observation::Inventory { endpoint: "e".into(), facts, rejected: vec![] }),
                    Step::Delta(h, changes) => (h, Observation::Delta { changes, rejected: vec![] }),
                    Step::Disconnect(h) => (h, Observation::Disconnected { reason: "r".into(), silent_ms: 0 }),
                    Step::Advance(s) => {
                        tokio::time::advance(Duration::from_secs(s)).await;
                        common::settle().await;
                        continue;
                    }
                };
                engine.observe(HypervisorId::new(HYPERVISORS[h]).unwrap(), kinds[h], obs).await.unwrap();
            }
            let out = engine.state().read(|s| (s.encode(), s.desired().clone()));
            engine.shutdown().await.unwrap();
            (out.0, out.1, log)
        });
        let replayed: Vec<Envelope> = log.read(1).map(|e| Envelope::from(e.unwrap())).collect();
        let replayed = fold(&policy, &replayed);
        prop_assert_eq!(replayed.encode(), live_bytes);
        prop_assert_eq!(replayed.desired(), &live_desired);
        prop_assert!(log.verify().is_ok());
        // The latest snapshot, plus the tail, is the same state too.
        if let Some(snap) = log.latest_snapshot().unwrap() {
            let mut s = State::decode(&snap.bytes, &policy).unwrap();
            log.read(snap.seq + 1).for_each(|e| s.apply(&Envelope::from(e.unwrap())));
            prop_assert_eq!(s.encode(), replayed.encode());
        }
    }
}
