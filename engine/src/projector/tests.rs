//! Unit tests of the projector's rule: which facts put which VLANs on which ports, and how
//! each event kind changes that.

use super::*;
use crate::config::StaticLink;
use crate::fact::{HostFact, NetworkFact, UplinkFact, VlanSpec, VnicFact};
use crate::ids::VlanRange;

fn id() -> HypervisorId {
    HypervisorId::new("vc").unwrap()
}

fn v(n: u16) -> VlanId {
    VlanId::new(n).unwrap()
}

fn port(p: &str) -> SwitchPort {
    SwitchPort::new("tor1", p).unwrap()
}

fn env(seq: u64, event: Event) -> Envelope {
    Envelope { seq, at: seq * 1000, hypervisor: id(), schema: 1, prev: [0; 32], event }
}

fn uplink(nic: &str, p: Option<&str>) -> Fact {
    Fact::Uplink(UplinkFact { host: "h1".into(), nic: nic.into(), mac: None, port: p.map(port), source: None })
}

fn network(net: &str, vlan: VlanSpec) -> Fact {
    Fact::Network(NetworkFact {
        host: "h1".into(),
        network: net.into(),
        name: net.into(),
        vlan,
        uplinks: vec!["nic0".into()],
    })
}

fn vnic(vm: &str, net: &str, powered_on: bool, connected: bool) -> Fact {
    Fact::Vnic(VnicFact {
        vm: vm.into(),
        vm_name: vm.into(),
        nic: "0".into(),
        mac: "m".into(),
        host: "h1".into(),
        network: net.into(),
        connected,
        powered_on,
    })
}

fn learnt(seq: u64, facts: Vec<Fact>) -> Envelope {
    env(seq, Event::Learnt { changes: facts.into_iter().map(Change::Upsert).collect() })
}

fn vlans_on(s: &State, p: &str) -> Vec<u16> {
    s.desired().ports.get(&port(p)).map(|m| m.keys().map(|v| v.get()).collect()).unwrap_or_default()
}

#[test]
fn powered_on_connected_vm_puts_its_network_vlan_on_the_cabled_port() {
    let mut s = State::new(&Policy::default());
    s.apply(&env(1, Event::Connected { kind: Kind::VMware, endpoint: "e".into() }));
    s.apply(&learnt(
        2,
        vec![
            Fact::Host(HostFact { host: "h1".into(), name: "h1".into() }),
            uplink("nic0", Some("p1")),
            network("pg", VlanSpec::Access(v(10))),
            vnic("vm1", "pg", true, true),
        ],
    ));
    assert_eq!(vlans_on(&s, "p1"), [10]);
    let why = s.why(&port("p1"), v(10));
    assert_eq!(why.len(), 1);
    assert_eq!(why[0].vnic.as_ref().unwrap().vm, "vm1");
    assert_eq!(s.desired(), &s.recompute_desired());
}

#[test]
fn powered_off_disconnected_and_untagged_put_nothing_by_default() {
    let mut s = State::new(&Policy::default());
    s.apply(&learnt(
        1,
        vec![
            uplink("nic0", Some("p1")),
            network("pg", VlanSpec::Access(v(10))),
            network("native", VlanSpec::Untagged),
            vnic("off", "pg", false, false),
            vnic("unplugged", "pg", true, false),
            vnic("untagged", "native", true, true),
        ],
    ));
    assert!(s.desired().ports.is_empty());
}

#[test]
fn policy_counts_powered_off_vms_and_vmless_networks() {
    let policy = Policy { count_powered_off: true, count_vmless_networks: true, static_links: vec![] };
    let mut s = State::new(&policy);
    s.apply(&learnt(
        1,
        vec![
            uplink("nic0", Some("p1")),
            network("pg", VlanSpec::Access(v(10))),
            network("empty", VlanSpec::Access(v(11))),
            vnic("off", "pg", false, false),
        ],
    ));
    assert_eq!(vlans_on(&s, "p1"), [10, 11]);
    assert!(s.why(&port("p1"), v(11)).iter().all(|r| r.vnic.is_none()));
    assert_eq!(s.desired(), &s.recompute_desired());
}

#[test]
fn trunk_ranges_put_every_vlan_of_the_range() {
    let mut s = State::new(&Policy::default());
    let r = VlanRange::new(v(100), v(103)).unwrap();
    s.apply(&learnt(
        1,
        vec![uplink("nic0", Some("p1")), network("t", VlanSpec::Trunk(vec![r])), vnic("vm", "t", true, true)],
    ));
    assert_eq!(vlans_on(&s, "p1"), [100, 101, 102, 103]);
}

#[test]
fn static_link_wins_over_the_reported_neighbour() {
    let link = StaticLink { hypervisor: id(), host: "h1".into(), nic: "nic0".into(), port: port("p9") };
    let mut s = State::new(&Policy { static_links: vec![link], ..Policy::default() });
    s.apply(&learnt(
        1,
        vec![uplink("nic0", Some("p1")), network("pg", VlanSpec::Access(v(10))), vnic("vm", "pg", true, true)],
    ));
    assert_eq!(vlans_on(&s, "p9"), [10]);
    assert!(vlans_on(&s, "p1").is_empty());
}

#[test]
fn recabling_an_uplink_moves_the_vlans() {
    let mut s = State::new(&Policy::default());
    s.apply(&learnt(
        1,
        vec![uplink("nic0", Some("p1")), network("pg", VlanSpec::Access(v(10))), vnic("vm", "pg", true, true)],
    ));
    s.apply(&learnt(2, vec![uplink("nic0", Some("p2"))]));
    assert!(vlans_on(&s, "p1").is_empty());
    assert_eq!(vlans_on(&s, "p2"), [10]);
    assert_eq!(s.desired(), &s.recompute_desired());
}

#[test]
fn expired_drops_every_fact_and_lost_keeps_them() {
    let mut s = State::new(&Policy::default());
    s.apply(&env(1, Event::Connected { kind: Kind::XenCitrix, endpoint: "e".into() }));
    s.apply(&learnt(
        2,
        vec![uplink("nic0", Some("p1")), network("pg", VlanSpec::Access(v(10))), vnic("vm", "pg", true, true)],
    ));
    s.apply(&env(3, Event::Lost { reason: "x".into(), since: 3000 }));
    assert_eq!(s.status(&id()).unwrap().status, Status::Lost { since: 3000 });
    assert_eq!(vlans_on(&s, "p1"), [10]);
    let before = s.desired_version();
    s.apply(&env(4, Event::Expired));
    assert_eq!(
        s.status(&id()).unwrap(),
        HypervisorStatus { kind: Some(Kind::XenCitrix), status: Status::Expired, held: None }
    );
    assert!(s.desired().ports.is_empty());
    assert!(s.facts_of(&id()).unwrap().is_empty());
    assert!(s.desired_version() > before);
}

#[test]
fn snapshot_round_trips_to_the_same_bytes_and_desired_state() {
    let mut s = State::new(&Policy::default());
    s.apply(&learnt(
        1,
        vec![uplink("nic0", Some("p1")), network("pg", VlanSpec::Access(v(10))), vnic("vm", "pg", true, true)],
    ));
    let bytes = s.encode();
    let back = State::decode(&bytes, &Policy::default()).unwrap();
    assert_eq!(back.encode(), bytes);
    assert_eq!(back.desired(), s.desired());
    assert_eq!(back.seq(), 1);
    assert!(State::decode(&bytes[..bytes.len() - 1], &Policy::default()).is_err());
}

/// A snapshot keeps since when each VLAN is desired; decoded under another policy, what that
/// policy still desires keeps its date, what it newly desires dates from the snapshot, and what
/// it no longer desires is gone.
#[test]
fn a_snapshot_keeps_since_when_each_vlan_is_desired_under_the_policy_in_force() {
    let vmless = Policy { count_vmless_networks: true, ..Policy::default() };
    let mut s = State::new(&Policy::default());
    s.apply(&learnt(1, vec![uplink("nic0", Some("p1")), uplink("nic1", Some("p2"))]));
    s.apply(&learnt(2, vec![network("pg", VlanSpec::Access(v(10))), network("empty", VlanSpec::Access(v(20)))]));
    s.apply(&learnt(3, vec![vnic("vm", "pg", true, true)]));
    s.apply(&learnt(4, vec![uplink("nic9", None)]));
    let at = |seq: u64| Some(Stamp { seq, at: seq * 1000 });
    assert_eq!((s.desired_since(&port("p1"), v(10)), s.desired_since(&port("p1"), v(20))), (at(3), None));

    let back = State::decode(&s.encode(), &vmless).unwrap();
    assert_eq!(back.desired_since(&port("p1"), v(10)), at(3), "still desired: its date");
    assert_eq!(back.desired_since(&port("p1"), v(20)), at(4), "newly desired: the snapshot's");

    let mut s = State::new(&vmless);
    s.apply(&learnt(1, vec![uplink("nic0", Some("p1"))]));
    s.apply(&learnt(2, vec![network("pg", VlanSpec::Access(v(10))), network("empty", VlanSpec::Access(v(20)))]));
    let back = State::decode(&s.encode(), &Policy::default()).unwrap();
    assert_eq!(vlans_on(&back, "p1"), Vec::<u16>::new());
    assert!(back.since.is_empty(), "no longer desired: no date kept for it");
}

/// A published (held) value never changes; reads after changes — in place, or on a clone that
/// shares the unchanged ports with held values — always equal a naive recompute.
#[test]
fn desired_stays_exact_when_published_values_are_held() {
    let mut s = State::new(&Policy::default());
    s.apply(&learnt(
        1,
        vec![
            uplink("nic0", Some("p1")),
            network("a", VlanSpec::Access(v(10))),
            network("b", VlanSpec::Access(v(20))),
            network("c", VlanSpec::Trunk(vec![VlanRange::new(v(30), v(32)).unwrap()])),
        ],
    ));
    let nets = ["a", "b", "c"];
    // The value the runtime last published (its watch channel holds it), and what it was.
    let mut published = (s.desired_shared(), s.recompute_desired());
    let mut held: Vec<(Arc<Desired>, Desired)> = Vec::new();
    for i in 0..200u64 {
        let vm = format!("vm{}", i % 7);
        let net = nets[(i as usize * 5 / 3) % 3];
        s.apply(&learnt(i + 2, vec![vnic(&vm, net, i % 4 != 0, i % 5 != 0)]));
        match i % 4 {
            // A reader that keeps nothing.
            0 => assert_eq!(s.desired(), &s.recompute_desired()),
            // The runtime: publish, replacing the last published value.
            1 | 2 => {
                published = (s.desired_shared(), s.recompute_desired());
                assert_eq!(*published.0, published.1);
            }
            // A subscriber that keeps what it was given for a while.
            _ => {
                let d = s.desired_shared();
                held.push((d.clone(), s.recompute_desired()));
                published = (d, s.recompute_desired());
            }
        }
        if i % 9 == 0 {
            held.truncate(held.len().saturating_sub(1));
        }
        for (d, then) in held.iter().chain([&published]) {
            assert_eq!(&**d, then, "a held value changed (step {i})");
        }
    }
    assert_eq!(s.desired(), &s.recompute_desired());
}

/// Publishing after one change while the last published value is held shares every port the
/// change did not touch with it (a persistent map): nothing is copied whole.
#[test]
fn a_new_desired_value_shares_every_untouched_port_with_the_held_one() {
    let mut s = State::new(&Policy::default());
    let mut facts = Vec::new();
    for h in 0..500 {
        let host = format!("h{h}");
        let p = format!("Ethernet1/{h}");
        facts.push(Fact::Uplink(UplinkFact {
            host: host.clone().into(),
            nic: "nic0".into(),
            mac: None,
            port: Some(port(&p)),
            source: None,
        }));
        facts.push(Fact::Network(NetworkFact {
            host: host.clone().into(),
            network: "pg".into(),
            name: "pg".into(),
            vlan: VlanSpec::Access(v(10)),
            uplinks: vec!["nic0".into()],
        }));
        let Fact::Vnic(mut vm) = vnic(&format!("vm{h}"), "pg", true, true) else { unreachable!() };
        vm.host = host.into();
        facts.push(Fact::Vnic(vm));
    }
    s.apply(&learnt(1, facts));
    let held = s.desired_shared();
    assert_eq!(held.ports.len(), 500);
    let Fact::Vnic(mut off) = vnic("vm7", "pg", false, true) else { unreachable!() };
    off.host = "h7".into();
    s.apply(&learnt(2, vec![Fact::Vnic(off)]));
    let next = s.desired_shared();
    assert!(!next.ports.contains_key(&port("Ethernet1/7")) && held.ports.contains_key(&port("Ethernet1/7")));
    let shared =
        next.ports.iter().filter(|(p, vlans)| held.ports.get(*p).is_some_and(|h| std::ptr::eq(h, *vlans))).count();
    assert!(shared >= 400, "only {shared} of 499 untouched ports are shared with the held value");
    assert_eq!(*next, s.recompute_desired());
}
