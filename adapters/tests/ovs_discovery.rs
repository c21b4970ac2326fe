//! Host-to-port mapping from a real Open vSwitch's MAC table, with no `[[topology]]` and no
//! CDP/LLDP: hypervisor-like network namespaces behind veth pairs ping each other through the
//! bridge (userspace datapath), OVS learns their MACs, netfold reads `fdb/show` over
//! ovs-vswitchd's control socket, records what it saw in the log, ties each host's uplink to the
//! port its MAC is on and configures that port. A recabled host (its NIC now behind another
//! port) takes its VLAN along; a host behind an OVS bond of two veths gets its VLAN on the bond
//! port.
//!
//! Needs root and Open vSwitch (`apt-get install -y openvswitch-switch iproute2 iputils-ping`);
//! without them the test fails, naming what is missing.

#[path = "support/ovs.rs"]
mod ovs;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::ovs::{Config, OvsSwitch};
use engine::clock::SystemClock;
use engine::config::Config as EConfig;
use engine::plan::Policy;
use engine::reconciler::{Config as RConfig, Ledger, Reconciler, SwitchRecord};
use engine::runtime::discover::Poller;
use engine::runtime::Engine;
use engine::switch::Switch;
use engine::{
    Fact, HostFact, HypervisorId, Kind, NeighbourSource, NetworkFact, Observation, Recorded, UplinkFact, VlanId,
    VlanSpec, VnicFact,
};
use ovs::{Netns, Ovs, Veth};
use store::MemoryLog;

const PARKING: u16 = 4094;
/// Bounded waits for real-network effects (MAC learning, pings on a loaded 2-core machine).
const LIMIT: Duration = Duration::from_secs(60);

/// A hypervisor host's facts: one uplink per `(nic, mac)`, one network on `vlan` over all of
/// them, one running VM on it.
fn host(id: &str, uplinks: &[(&str, &str)], vlan: u16) -> Vec<Fact> {
    let mut f = vec![Fact::Host(HostFact { host: id.into(), name: format!("{id}.lab").into() })];
    for (nic, mac) in uplinks {
        f.push(Fact::Uplink(UplinkFact {
            host: id.into(),
            nic: (*nic).into(),
            mac: Some((*mac).into()),
            port: None,
            source: None,
        }));
    }
    f.push(Fact::Network(NetworkFact {
        host: id.into(),
        network: format!("net{vlan}").into(),
        name: format!("net{vlan}").into(),
        vlan: VlanSpec::Access(VlanId::new(vlan).unwrap()),
        uplinks: uplinks.iter().map(|(n, _)| (*n).into()).collect(),
    }));
    f.push(Fact::Vnic(VnicFact {
        vm: format!("vm-{id}").into(),
        vm_name: format!("vm-{id}").into(),
        nic: "0".into(),
        mac: "02:00:00:00:99:01".into(),
        host: id.into(),
        network: format!("net{vlan}").into(),
        connected: true,
        powered_on: true,
    }));
    f
}

/// The MAC of `dev` inside `ns`.
fn mac(ns: &Netns, dev: &str) -> String {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
    out.trim().to_string()
}

/// Adds `veth`'s host end to the bridge as a port netfold may manage: untagged traffic rides
/// native VLAN 1 (so the namespaces' frames are forwarded and learnt), the trunk list holds only
/// the parking VLAN.
fn plug(ovs: &Ovs, port: &str) {
    ovs.vsctl(&[
        "--timeout=20",
        "add-port",
        ovs.bridge(),
        port,
        "--",
        "set",
        "port",
        port,
        "vlan_mode=native-untagged",
        "tag=1",
        &format!("trunks=[{PARKING}]"),
    ]);
}

fn trunks(ovs: &Ovs, port: &str) -> Vec<u16> {
    ovs.trunks(port).into_iter().filter(|v| *v != PARKING).collect()
}

struct Rig {
    ovs: Ovs,
    engine: Engine,
    poller: Poller<OvsSwitch>,
    reconciler: Reconciler<OvsSwitch, MemoryLog<SwitchRecord>>,
    _store: store::Store,
}

impl Rig {
    /// Until `want` holds for the ports' trunks: let the namespaces talk (`talk`), read the MAC
    /// table, reconcile.
    async fn until(&mut self, what: &str, talk: &dyn Fn(), want: &dyn Fn(&Ovs) -> bool) {
        let start = Instant::now();
        loop {
            talk();
            self.poller.round().await.unwrap_or_else(|e| panic!("discovery failed: {e}\n{}", self.ovs.diagnostics()));
            self.reconciler.cycle().await.expect("reconcile cycle");
            if want(&self.ovs) {
                return;
            }
            let ties = self.engine.state().read(|s| s.ties_of(&HypervisorId::new("xen").unwrap()));
            assert!(
                start.elapsed() < LIMIT,
                "{what}: not reached within {LIMIT:?}\nties: {ties:#?}\n{}",
                self.ovs.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mac_table_ties_hosts_to_ports_a_recabled_host_moves_and_a_bond_gets_the_vlans() {
    let ovs = Ovs::start();
    let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
    let (va, vb) = (Veth::new(&a), Veth::new(&b));
    let (vc1, vc2) = (Veth::new(&c), Veth::new(&c));
    plug(&ovs, &va.host);
    plug(&ovs, &vb.host);
    let bond = ovs::unique("nfbo");
    ovs.vsctl(&[
        "--timeout=20",
        "add-bond",
        ovs.bridge(),
        &bond,
        &vc1.host,
        &vc2.host,
        "--",
        "set",
        "port",
        &bond,
        "bond_mode=balance-slb",
        "vlan_mode=native-untagged",
        "tag=1",
        &format!("trunks=[{PARKING}]"),
    ]);
    a.exec(&["ip", "addr", "add", "10.232.0.1/24", "dev", &va.inner]);
    b.exec(&["ip", "addr", "add", "10.232.0.2/24", "dev", &vb.inner]);
    c.exec(&["ip", "addr", "add", "10.232.0.3/24", "dev", &vc1.inner]);
    c.exec(&["ip", "addr", "add", "10.232.0.4/24", "dev", &vc2.inner]);
    let (mac_a, mac_b) = (mac(&a, &va.inner), mac(&b, &vb.inner));
    let (mac_c1, mac_c2) = (mac(&c, &vc1.inner), mac(&c, &vc2.inner));

    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), EConfig::default(), Arc::new(SystemClock)).await.unwrap();
    let xen = HypervisorId::new("xen").unwrap();
    let mut facts = host("host-a", &[("eth0", &mac_a)], 100);
    facts.extend(host("host-b", &[("eth0", &mac_b)], 200));
    facts.extend(host("host-c", &[("eth0", &mac_c1), ("eth1", &mac_c2)], 300));
    let inventory = Observation::Inventory { endpoint: "test".into(), facts, rejected: vec![] };
    engine.observe(xen.clone(), Kind::XenCitrix, inventory).await.unwrap();

    let sw = Arc::new(
        OvsSwitch::start(&Config {
            name: "tor1".into(),
            endpoint: ovs.unix_endpoint(),
            parking_vlan: PARKING,
            timeout_ms: 5000,
            unixctl: Some(ovs.lab.unixctl().display().to_string()),
        })
        .unwrap(),
    );
    for _ in 0..500 {
        if sw.read(&BTreeSet::new()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let poller = Poller::new(sw.clone(), Policy::default(), Duration::from_secs(60), engine.switch_observer());
    let store = store::Store::temporary().unwrap();
    let ledger = Ledger::new(store.table("switch-ledger").unwrap(), sw.name());
    let reconciler =
        Reconciler::new(sw.clone(), ledger, Arc::new(MemoryLog::new()), engine.desired(), RConfig::default());
    let mut rig = Rig { ovs, engine, poller, reconciler, _store: store };

    // Pings may be lost while the bridge learns; each round tries again.
    let ping_from = |ns: &Netns, dev: &str, to: &str| {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "ping", "-c", "1", "-W", "1", "-I", dev, to])
            .output();
    };
    let talk = || {
        a.ping("10.232.0.2");
        ping_from(&c, &vc1.inner, "10.232.0.1");
        ping_from(&c, &vc2.inner, "10.232.0.2");
    };
    let (pa, pb) = (va.host.clone(), vb.host.clone());
    let bond_port = bond.clone();
    rig.until("hosts tied by the MAC table", &talk, &|o| {
        trunks(o, &pa) == [100] && trunks(o, &pb) == [200] && trunks(o, &bond_port) == [300]
    })
    .await;
    let ties = rig.engine.state().read(|s| s.ties_of(&xen));
    let a_tie = ties.iter().find(|t| t.host == "host-a").unwrap();
    assert_eq!(a_tie.source, Some(NeighbourSource::MacTable));
    assert_eq!(a_tie.port.as_ref().map(|p| p.port.clone()), Some(va.host.clone()));
    let c_ties: Vec<_> = ties.iter().filter(|t| t.host == "host-c" && t.port.is_some()).collect();
    assert!(!c_ties.is_empty() && c_ties.iter().all(|t| t.port.as_ref().unwrap().port == bond), "{ties:#?}");
    assert!(ties.iter().all(|t| !t.disagree));

    // Host A is recabled: its NIC (same MAC) now sits behind a new port; the old port stays on
    // the switch, empty.
    drop(va);
    let va2 = Veth::new(&a);
    a.exec(&["ip", "link", "set", "dev", &va2.inner, "down"]);
    a.exec(&["ip", "link", "set", "dev", &va2.inner, "address", &mac_a]);
    a.exec(&["ip", "link", "set", "dev", &va2.inner, "up"]);
    a.exec(&["ip", "addr", "add", "10.232.0.1/24", "dev", &va2.inner]);
    plug(&rig.ovs, &va2.host);
    let talk = || {
        a.ping("10.232.0.2");
    };
    let (old, new) = (pa.clone(), va2.host.clone());
    rig.until("the recabled host's VLAN moved", &talk, &|o| trunks(o, &new) == [100] && trunks(o, &old).is_empty())
        .await;
    assert_eq!(trunks(&rig.ovs, &pb), [200], "the other hosts stay");
    assert_eq!(trunks(&rig.ovs, &bond), [300]);

    // The log says what the switch saw, and a replay of it gives the live state.
    let saw = log_events(&log).iter().filter(|e| e.event.name() == "SwitchSaw").count();
    assert!(saw >= 2, "at least the first sighting and the move are recorded ({saw})");
    let live = rig.engine.state().read(engine::State::encode);
    let mut replayed = engine::State::new(&engine::config::Policy::default());
    log_events(&log).iter().for_each(|e| replayed.apply(e));
    assert_eq!(replayed.encode(), live);
    drop((vb, vc1, vc2));
}

fn log_events(log: &MemoryLog<Recorded>) -> Vec<engine::Envelope> {
    use store::Log;
    log.read(1).map(|e| engine::Envelope::from(e.unwrap())).collect()
}
