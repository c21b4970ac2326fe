//! Host-to-port mapping from an Arista switch over eAPI (the eAPI simulator on loopback HTTP,
//! answering in EOS's JSON shapes): LLDP neighbours, the MAC table, port-channels and the MLAG
//! peer-link, through the running engine (events in a log) and a reconciler to the switch. And a
//! disagreement between the hypervisor's CDP and the switch is recorded, counted and reported.

#[path = "support/rig.rs"]
mod rig;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use adapters::common::SecretSource;
use adapters::eapi::{Config, EapiSwitch};
use engine::clock::SystemClock;
use engine::config::Config as EConfig;
use engine::plan::Policy;
use engine::reconciler::{Config as RConfig, Ledger, Reconciler, SwitchRecord};
use engine::runtime::discover::Poller;
use engine::runtime::Engine;
use engine::switch::Switch;
use engine::{
    Event, Fact, HostFact, HypervisorId, Kind, NeighbourSource, NetworkFact, Observation, Recorded, SwitchPort,
    UplinkFact, VlanId, VlanSpec, VnicFact,
};
use sims::eapi::{Neighbor, Sim};
use store::{Log, MemoryLog};

const PW_ENV: &str = "NETFOLD_TEST_EAPI_DISCOVERY_PASSWORD";

/// A host with uplinks `(nic, mac, cdp port)` and one network on `vlan` over all of them, with a
/// running VM.
fn host(id: &str, name: &str, uplinks: &[(&str, &str, Option<&str>)], vlan: u16) -> Vec<Fact> {
    let mut f = vec![Fact::Host(HostFact { host: id.into(), name: name.into() })];
    for (nic, mac, cdp) in uplinks {
        f.push(Fact::Uplink(UplinkFact {
            host: id.into(),
            nic: (*nic).into(),
            mac: Some((*mac).into()),
            port: cdp.map(|p| SwitchPort::new("tor1", p).unwrap()),
            source: cdp.map(|_| NeighbourSource::Cdp),
        }));
    }
    f.push(Fact::Network(NetworkFact {
        host: id.into(),
        network: format!("net{vlan}").into(),
        name: format!("net{vlan}").into(),
        vlan: VlanSpec::Access(VlanId::new(vlan).unwrap()),
        uplinks: uplinks.iter().map(|(n, _, _)| (*n).into()).collect(),
    }));
    f.push(Fact::Vnic(VnicFact {
        vm: format!("vm-{id}").into(),
        vm_name: format!("vm-{id}").into(),
        nic: "4000".into(),
        mac: "00:50:56:aa:00:01".into(),
        host: id.into(),
        network: format!("net{vlan}").into(),
        connected: true,
        powered_on: true,
    }));
    f
}

struct Rig {
    sim: Sim,
    engine: Engine,
    log: Arc<MemoryLog<Recorded>>,
    poller: Poller<EapiSwitch>,
    reconciler: Reconciler<EapiSwitch, MemoryLog<SwitchRecord>>,
    _store: store::Store,
}

async fn rig(sim: Sim, facts: Vec<Fact>) -> Rig {
    let (addr, _task) = sim.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    std::env::set_var(PW_ENV, "s3cret");
    let sw = Arc::new(
        EapiSwitch::new(&Config {
            name: "tor1".into(),
            url: format!("http://{addr}"),
            username: "netfold".into(),
            password: SecretSource::env(PW_ENV),
            tls: Default::default(),
            timeout_ms: 5000,
        })
        .unwrap(),
    );
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), EConfig::default(), Arc::new(SystemClock)).await.unwrap();
    let inventory = Observation::Inventory { endpoint: "vc".into(), facts, rejected: vec![] };
    engine.observe(HypervisorId::new("vc").unwrap(), Kind::VMware, inventory).await.unwrap();
    let poller = Poller::new(sw.clone(), Policy::default(), Duration::from_secs(60), engine.switch_observer());
    let store = store::Store::temporary().unwrap();
    let ledger = Ledger::new(store.table("switch-ledger").unwrap(), sw.name());
    let reconciler = Reconciler::new(sw, ledger, Arc::new(MemoryLog::new()), engine.desired(), RConfig::default());
    Rig { sim, engine, log, poller, reconciler, _store: store }
}

impl Rig {
    async fn round(&mut self) {
        self.poller.round().await.expect("discovery round");
        assert_eq!(self.reconciler.cycle().await.expect("reconcile").failed(), 0);
    }

    fn ties(&self) -> Vec<engine::projector::UplinkTie> {
        self.engine.state().read(|s| s.ties_of(&HypervisorId::new("vc").unwrap()))
    }
}

fn sim() -> Sim {
    Sim::new("netfold", "s3cret")
        .with_trunk("Ethernet1", &[])
        .with_trunk("Ethernet2", &[])
        .with_trunk("Ethernet3", &[])
        .with_trunk("Ethernet4", &[])
        .with_trunk("Ethernet5", &[])
        .with_trunk("Ethernet49", &[])
        .with_trunk("Ethernet50", &[])
        .with_port_channel("Port-Channel10", &["Ethernet3", "Ethernet4"])
        .with_port_channel("Port-Channel1000", &["Ethernet49", "Ethernet50"])
        .with_mlag_peer_link("Port-Channel1000")
}

#[tokio::test]
async fn lldp_the_mac_table_and_port_channels_tie_hosts_and_the_peer_link_never_does() {
    let facts = [
        // Tied by the switch's LLDP: ESXi sends its host name and vmnic name.
        host("host-1", "esx-01.lab", &[("vmnic0", "00:50:56:00:01:00", None)], 101),
        // Tied by the MAC table.
        host("host-2", "esx-02.lab", &[("vmnic0", "00:50:56:00:02:00", None)], 102),
        // Bonded: both NICs' MACs show on Port-Channel10 (members Ethernet3/4).
        host(
            "host-3",
            "esx-03.lab",
            &[("vmnic0", "00:50:56:00:03:00", None), ("vmnic1", "00:50:56:00:03:01", None)],
            103,
        ),
        // Only seen through the MLAG peer-link: behind the peer switch, not here.
        host("host-4", "esx-04.lab", &[("vmnic0", "00:50:56:00:04:00", None)], 104),
    ]
    .concat();
    let mut r = rig(sim(), facts).await;
    r.sim.set_lldp(
        "Ethernet1",
        vec![Neighbor {
            chassis_id: "0050.5600.01ff".into(),
            system_name: "esx-01.lab".into(),
            port_id: "vmnic0".into(),
            port_description: "vmnic0".into(),
        }],
    );
    r.sim.learn_mac("Ethernet2", 1, "00:50:56:00:02:00");
    r.sim.learn_mac("Ethernet3", 1, "00:50:56:00:03:00");
    r.sim.learn_mac("Ethernet4", 1, "00:50:56:00:03:01");
    r.sim.learn_mac("Ethernet49", 1, "00:50:56:00:04:00");
    r.sim.learn_mac("Ethernet5", 1, "00:50:56:99:99:99"); // a VM's MAC: not a pNIC, not recorded
    r.round().await;

    assert_eq!(r.sim.trunk("Ethernet1").unwrap(), vec![101]);
    assert_eq!(r.sim.trunk("Ethernet2").unwrap(), vec![102]);
    assert_eq!(r.sim.trunk("Port-Channel10").unwrap(), vec![103], "the VLAN goes on the port-channel");
    assert_eq!(r.sim.trunk("Ethernet3").unwrap(), Vec::<u16>::new(), "never on a member");
    assert_eq!(r.sim.trunk("Ethernet4").unwrap(), Vec::<u16>::new());
    assert_eq!(r.sim.trunk("Port-Channel1000").unwrap(), Vec::<u16>::new(), "never through the peer-link");
    assert_eq!(r.sim.trunk("Ethernet49").unwrap(), Vec::<u16>::new());

    let ties = r.ties();
    let source = |host: &str, nic: &str| ties.iter().find(|t| t.host == host && t.nic == nic).and_then(|t| t.source);
    assert_eq!(source("host-1", "vmnic0"), Some(NeighbourSource::SwitchLldp));
    assert_eq!(source("host-2", "vmnic0"), Some(NeighbourSource::MacTable));
    assert_eq!(source("host-3", "vmnic1"), Some(NeighbourSource::MacTable));
    assert_eq!(source("host-4", "vmnic0"), None);
    let views = r.engine.state().read(|s| s.switch_view("tor1").cloned()).unwrap();
    assert!(views.macs.iter().all(|m| m.mac != "00:50:56:99:99:99"), "{views:?}");
    assert!(views.bonds.iter().all(|b| b.bond != "Port-Channel1000"), "the peer-link is no host bond");

    // host-2 is recabled to Ethernet5: its VLAN moves.
    r.sim.learn_mac("Ethernet5", 1, "00:50:56:00:02:00");
    r.round().await;
    assert_eq!(r.sim.trunk("Ethernet5").unwrap(), vec![102]);
    assert_eq!(r.sim.trunk("Ethernet2").unwrap(), Vec::<u16>::new());
}

#[tokio::test]
async fn cdp_and_the_switch_disagreeing_is_recorded_counted_and_cdp_wins() {
    // The hypervisor says Ethernet1 (CDP); the switch sees the NIC's MAC on Ethernet2 and LLDP
    // from it on Ethernet2.
    let facts = host("host-1", "esx-01.lab", &[("vmnic0", "00:50:56:00:01:00", Some("Ethernet1"))], 101);
    let mut r = rig(sim(), facts).await;
    r.sim.learn_mac("Ethernet2", 1, "00:50:56:00:01:00");
    r.sim.set_lldp(
        "Ethernet2",
        vec![Neighbor {
            chassis_id: "0050.5600.0100".into(),
            system_name: "esx-01".into(),
            port_id: "0050.5600.0100".into(),
            port_description: String::new(),
        }],
    );
    r.round().await;
    assert_eq!(r.sim.trunk("Ethernet1").unwrap(), vec![101], "the hypervisor's CDP comes first");
    assert_eq!(r.sim.trunk("Ethernet2").unwrap(), Vec::<u16>::new());
    assert_eq!(r.engine.metrics().tie_disagreements.load(Ordering::Relaxed), 1);
    let events: Vec<Event> = r.log.read(1).map(|e| e.unwrap().record.event).collect();
    let disagreement = events
        .iter()
        .find_map(|e| match e {
            Event::TiesDisagreed { disagreements } => disagreements.first().cloned(),
            _ => None,
        })
        .expect("a TiesDisagreed record");
    let said: Vec<String> = disagreement.opinions.iter().map(|(s, p)| format!("{s}: {p}")).collect();
    assert_eq!(
        said,
        ["hypervisor CDP: tor1:Ethernet1", "switch LLDP: tor1:Ethernet2", "switch MAC table: tor1:Ethernet2"]
    );
}
