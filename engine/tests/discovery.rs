//! Switch discovery through the running engine: a discovery poller over the memory switch hands
//! MAC tables to the core, which records `SwitchSaw` (only when what the switch saw changed) and
//! ties uplinks that no hypervisor and no `[[topology]]` tied; a recabled NIC moves its VLANs; a
//! source that disagrees is recorded (`TiesDisagreed`) and counted; replaying the log gives the
//! same state.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{clock_at, config, expect, hv, inventory, vlans, vm, T0};
use engine::discovery::{Discovery, LldpNeighbour};
use engine::plan::Policy;
use engine::port::{Grammar, PortName};
use engine::projector::State;
use engine::runtime::discover::Poller;
use engine::runtime::Engine;
use engine::switch::MemorySwitch;
use engine::{Envelope, Event, Fact, HostFact, Kind, NeighbourSource, NetworkFact, Recorded, UplinkFact, VlanSpec};
use store::{Log, MemoryLog};

fn p(s: &str) -> PortName {
    PortName::parse(Grammar::Memory, s).unwrap()
}

const MAC: &str = "02:00:00:00:00:11";

/// One host `h1` whose uplink `eth0` has MAC [`MAC`] and no neighbour, a network on VLAN 100 and
/// one VM on it.
fn host(uplink_port: Option<&str>) -> Vec<Fact> {
    vec![
        Fact::Host(HostFact { host: "h1".into(), name: "xen-01".into() }),
        Fact::Uplink(UplinkFact {
            host: "h1".into(),
            nic: "eth0".into(),
            mac: Some(MAC.to_ascii_uppercase().into()),
            port: uplink_port.map(|p| p.parse().unwrap()),
            source: uplink_port.map(|_| NeighbourSource::Cdp),
        }),
        Fact::Network(NetworkFact {
            host: "h1".into(),
            network: "n100".into(),
            name: "n100".into(),
            vlan: VlanSpec::Access(common::vlan(100)),
            uplinks: vec!["eth0".into()],
        }),
        vm("vm-1", "h1", "n100"),
    ]
}

fn table(entries: &[(&str, &str)]) -> Discovery {
    Discovery { macs: entries.iter().map(|(m, port)| (m.to_string(), p(port))).collect(), ..Discovery::default() }
}

fn events(log: &MemoryLog<Recorded>) -> Vec<Envelope> {
    log.read(1).map(|e| Envelope::from(e.unwrap())).collect()
}

#[tokio::test(start_paused = true)]
async fn the_mac_table_ties_a_bare_uplink_a_move_moves_its_vlans_and_a_disagreement_is_recorded() {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await.unwrap();
    let id = hv("xen");
    engine.observe(id.clone(), Kind::XenCitrix, inventory(host(None))).await.unwrap();
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[]), "no source ties the uplink yet");

    let sw = Arc::new(MemorySwitch::new("tor1").with_port("e1", []).with_port("e2", []));
    let policy = Policy { excluded_ports: [p("up")].into(), ..Policy::default() };
    let poller = Poller::new(sw.clone(), policy, std::time::Duration::from_secs(60), engine.switch_observer());
    // A VM MAC and the pNIC MAC; only the pNIC's is recorded.
    sw.set_discovery(Some(table(&[(MAC, "e1"), ("02:aa:00:00:00:01", "e2")])));
    assert_eq!(poller.round().await, Ok(Some(true)));
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("e1", &[100])]));
    let tie = engine.state().read(|s| s.ties_of(&id));
    assert_eq!(tie[0].source, Some(NeighbourSource::MacTable));
    // The same table again records nothing.
    assert_eq!(poller.round().await, Ok(Some(false)));

    // Recabled: the MAC now shows on e2; the VLAN follows.
    sw.set_discovery(Some(table(&[(MAC, "e2")])));
    assert_eq!(poller.round().await, Ok(Some(true)));
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("e2", &[100])]));

    // Also on the excluded uplink port (flooding): it ties nothing.
    sw.set_discovery(Some(table(&[(MAC, "e2"), (MAC, "up")])));
    assert_eq!(poller.round().await, Ok(Some(true)));
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[]));

    // The hypervisor now reports CDP naming e1 while the switch sees the MAC on e2: CDP wins,
    // the disagreement is recorded and counted.
    sw.set_discovery(Some(table(&[(MAC, "e2")])));
    poller.round().await.unwrap();
    engine.observe(id.clone(), Kind::XenCitrix, inventory(host(Some("tor1:e1")))).await.unwrap();
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("e1", &[100])]));
    assert_eq!(engine.metrics().tie_disagreements.load(Ordering::Relaxed), 1);
    let recorded = events(&log);
    let Some(Event::TiesDisagreed { disagreements }) =
        recorded.iter().rev().map(|e| &e.event).find(|e| e.name() == "TiesDisagreed")
    else {
        panic!("no TiesDisagreed in {recorded:?}")
    };
    assert_eq!(disagreements.len(), 1);
    let sources: Vec<String> = disagreements[0].opinions.iter().map(|(s, p)| format!("{s}: {p}")).collect();
    assert_eq!(sources, ["hypervisor CDP: tor1:e1", "switch MAC table: tor1:e2"]);

    // They agree again: an empty TiesDisagreed closes it and the metric drops.
    sw.set_discovery(Some(table(&[(MAC, "e1")])));
    poller.round().await.unwrap();
    assert_eq!(engine.metrics().tie_disagreements.load(Ordering::Relaxed), 0);
    let last = events(&log).into_iter().rev().find(|e| e.event.name() == "TiesDisagreed").unwrap();
    assert_eq!(last.event, Event::TiesDisagreed { disagreements: vec![] });

    // The log is the truth: a fold of it gives the live state, byte for byte.
    let live = engine.state().read(State::encode);
    engine.shutdown().await.unwrap();
    let mut replayed = State::new(&config().policy);
    events(&log).iter().for_each(|e| replayed.apply(e));
    assert_eq!(replayed.encode(), live);
}

#[tokio::test(start_paused = true)]
async fn a_host_learnt_after_the_switch_was_read_is_tied_without_waiting_for_the_next_poll() {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await.unwrap();
    let sw = Arc::new(MemorySwitch::new("tor1"));
    let poller =
        Poller::new(sw.clone(), Policy::default(), std::time::Duration::from_secs(60), engine.switch_observer());
    sw.set_discovery(Some(table(&[(MAC, "e1")])));
    // No pNIC is known: nothing of the table is kept (the empty view is recorded once).
    assert_eq!(poller.round().await, Ok(Some(true)));
    assert_eq!(poller.round().await, Ok(Some(false)));
    assert!(engine.state().read(|s| s.switch_view("tor1").unwrap().macs.is_empty()));
    engine.observe(hv("xen"), Kind::XenCitrix, inventory(host(None))).await.unwrap();
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("e1", &[100])]));
    engine.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn switch_lldp_by_host_name_and_nic_beats_the_mac_table_and_bonds_lift_members() {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await.unwrap();
    let id = hv("xen");
    engine.observe(id.clone(), Kind::XenCitrix, inventory(host(None))).await.unwrap();
    let sw = Arc::new(MemorySwitch::new("tor1"));
    let poller =
        Poller::new(sw.clone(), Policy::default(), std::time::Duration::from_secs(60), engine.switch_observer());
    let neighbour = LldpNeighbour {
        system_name: Some("xen-01.lab".into()),
        port_id: Some("eth0".into()),
        ..LldpNeighbour::default()
    };
    sw.set_discovery(Some(Discovery {
        macs: vec![(MAC.into(), p("e9"))],
        lldp: vec![(p("e3"), neighbour)],
        bonds: vec![(p("e3"), p("bond0")), (p("e4"), p("bond0"))],
    }));
    poller.round().await.unwrap();
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("bond0", &[100])]));
    let tie = engine.state().read(|s| s.ties_of(&id));
    assert_eq!(tie[0].source, Some(NeighbourSource::SwitchLldp));
    assert!(tie[0].disagree, "the MAC table names e9: {tie:?}");
    engine.shutdown().await.unwrap();
}

/// Real time: the poller's interval is an hour, so only the engine's ask can make it read again.
#[tokio::test]
async fn a_host_no_source_ties_makes_the_pollers_read_their_switches_at_once() {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), Arc::new(engine::clock::SystemClock)).await.unwrap();
    let sw = Arc::new(MemorySwitch::new("tor1"));
    sw.set_discovery(Some(Discovery::default()));
    let poller =
        Poller::new(sw.clone(), Policy::default(), std::time::Duration::from_secs(3600), engine.switch_observer());
    let stats = poller.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(poller.run(async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stats.rounds.load(Ordering::Relaxed) < 1 {
        assert!(std::time::Instant::now() < deadline, "no first round");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The host is cabled now; the switch learnt its MAC after the poller's first round.
    sw.set_discovery(Some(table(&[(MAC, "e1")])));
    engine.observe(hv("xen"), Kind::XenCitrix, inventory(host(None))).await.unwrap();
    while vlans(&engine.desired().borrow()) != expect(&[("e1", &[100])]) {
        assert!(std::time::Instant::now() < deadline, "not tied: {:?}", vlans(&engine.desired().borrow()));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(stats.rounds.load(Ordering::Relaxed), 2, "one round at start, one on the engine's ask");
    let _ = stop.send(());
    task.await.unwrap();
    engine.shutdown().await.unwrap();
}
