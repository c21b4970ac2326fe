//! The XenAPI adapter against the pool simulator over real loopback HTTP: initial load of a
//! 50-host / 1,000-VM pool, every kind of change as the exact delta (its latency printed; the
//! figure is the `xen_decode` bench's), and the recoveries (SESSION_INVALID, HOST_IS_SLAVE,
//! connectivity cut and restored, bad password fixed, a reply over the size cap).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use std::sync::Arc;

use adapters::common::SecretSource;
use adapters::driver::{Health, LinkState};
use adapters::xen::{Adapter, Config};
use engine::runtime::Link;
use engine::{Change, Fact, FactKey, NeighbourSource, Observation, SwitchPort, VlanId, VlanSpec};
use sims::xen::{SimOptions, Simulator};
use tokio::sync::mpsc;

/// Generous bound for real-network effects (reconnects, big inventories in debug builds).
const DEADLINE: Duration = Duration::from_secs(30);

struct Running {
    sim: Simulator,
    rx: mpsc::Receiver<Observation>,
    health: Arc<Health>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn config(sim: &Simulator, password: &str) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{password}\n")).expect("write password");
    let mut c = Config::new(sim.url(), sim.user(), SecretSource::file(pw));
    c.event_timeout_secs = 5.0;
    c.liveness_secs = 8;
    c.backoff_initial_ms = 20;
    c.backoff_max_ms = 200;
    c.fatal_retry_secs = 1;
    (c, dir)
}

fn spawn(c: Config) -> (mpsc::Receiver<Observation>, Arc<Health>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let (_asks, asks) = mpsc::channel(1);
    let health = Health::new(&c.url);
    let adapter = Adapter::new(c).expect("adapter");
    let task = tokio::spawn(adapter.run(Link { observations: tx, asks }, Duration::from_secs(180), health.clone()));
    (rx, health, task)
}

async fn start(opts: SimOptions) -> Running {
    let sim = Simulator::start(opts).await.expect("simulator");
    let (c, dir) = config(&sim, &sim.password());
    let (rx, health, task) = spawn(c);
    Running { sim, rx, health, task, _dir: dir }
}

async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
    tokio::time::timeout(DEADLINE, rx.recv()).await.expect("an observation in time").expect("adapter alive")
}

async fn inventory(rx: &mut mpsc::Receiver<Observation>) -> (String, Vec<Fact>) {
    match next(rx).await {
        Observation::Inventory { endpoint, facts, rejected } => {
            assert!(rejected.is_empty(), "{rejected:?}");
            (endpoint, facts)
        }
        other => panic!("expected Inventory, got {other:?}"),
    }
}

/// Applies `change` to the simulator and returns the delta with the time it took to arrive.
async fn delta_after(
    r: &mut Running,
    change: impl FnOnce(&Simulator),
) -> (Vec<Change>, Vec<engine::Rejected>, Duration) {
    let t0 = Instant::now();
    change(&r.sim);
    match next(&mut r.rx).await {
        Observation::Delta { changes, rejected } => (changes, rejected, t0.elapsed()),
        other => panic!("expected Delta, got {other:?}"),
    }
}

/// The two 50-host tests take turns: on a 2-core machine they would otherwise measure each
/// other.
static BIG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn big() -> SimOptions {
    SimOptions { hosts: 50, vms_per_host: 20, vlans: 10, ..SimOptions::default() }
}

fn count(facts: &[Fact], f: impl Fn(&Fact) -> bool) -> usize {
    facts.iter().filter(|x| f(x)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_inventory_of_50_hosts_and_1000_vms() {
    let _turn = BIG.lock().await;
    let mut r = start(big()).await;
    let t0 = Instant::now();
    let (endpoint, facts) = inventory(&mut r.rx).await;
    eprintln!("inventory of {} facts in {:?}", facts.len(), t0.elapsed());
    assert_eq!(endpoint, r.sim.url());
    assert_eq!(count(&facts, |f| matches!(f, Fact::Host(_))), 50);
    assert_eq!(count(&facts, |f| matches!(f, Fact::Vnic(_))), 1000);
    // Two physical NICs per host, each with its LLDP neighbour on tor1.
    assert_eq!(count(&facts, |f| matches!(f, Fact::Uplink(u) if u.source == Some(NeighbourSource::Lldp))), 100);
    // Per host: two untagged NIC networks and ten VLAN networks.
    assert_eq!(count(&facts, |f| matches!(f, Fact::Network(n) if n.vlan == VlanSpec::Untagged)), 100);
    assert_eq!(count(&facts, |f| matches!(f, Fact::Network(n) if matches!(n.vlan, VlanSpec::Access(_)))), 500);
    let uplink = facts
        .iter()
        .find_map(|f| match f {
            Fact::Uplink(u) if u.nic == "eth1" && u.port.as_ref().is_some_and(|p| p.port == "ethernet1/1/2") => Some(u),
            _ => None,
        })
        .expect("host 0's eth1 is cabled to ethernet1/1/2");
    assert_eq!(uplink.port, Some(SwitchPort::new("tor1", "ethernet1/1/2").unwrap()));
    let vlans: BTreeSet<u16> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Network(n) => n.vlan.vlans().next().map(VlanId::get),
            _ => None,
        })
        .collect();
    assert_eq!(vlans, (100..110).collect());
    r.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_arrives_as_the_exact_delta() {
    let _turn = BIG.lock().await;
    let mut r = start(big()).await;
    let (_, facts) = inventory(&mut r.rx).await;
    let hosts = r.sim.hosts();
    let (h0, h1) = (hosts[0].uuid.clone(), hosts[1].uuid.clone());
    let vlan100 = r.sim.networks().into_iter().find(|(_, n)| n == "VLAN 100").map(|(u, _)| u).unwrap();
    let mut worst = Duration::ZERO;
    let mut check = |what: &str, took: Duration| {
        eprintln!("{what}: delta after {took:?}");
        worst = worst.max(took);
    };

    // VM created.
    let mut vm = None;
    let (changes, _, took) =
        delta_after(&mut r, |s| vm = Some(s.create_vm(&h0, "web-new", &[&vlan100]).unwrap())).await;
    check("create_vm", took);
    let vm = vm.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let Change::Upsert(Fact::Vnic(v)) = &changes[0] else { panic!("{changes:?}") };
    assert_eq!((v.vm.as_str(), v.vm_name.as_str(), v.nic.as_str()), (vm.uuid.as_str(), "web-new", "0"));
    assert_eq!(
        (v.host.as_str(), v.network.as_str(), v.connected, v.powered_on),
        (h0.as_str(), vlan100.as_str(), true, true)
    );

    // VIF unplugged, then plugged.
    let (changes, _, took) = delta_after(&mut r, |s| s.unplug_vif(&vm.vifs[0]).unwrap()).await;
    check("unplug_vif", took);
    assert!(matches!(&changes[..], [Change::Upsert(Fact::Vnic(v))] if !v.connected), "{changes:?}");
    let (changes, _, took) = delta_after(&mut r, |s| s.plug_vif(&vm.vifs[0]).unwrap()).await;
    check("plug_vif", took);
    assert!(matches!(&changes[..], [Change::Upsert(Fact::Vnic(v))] if v.connected), "{changes:?}");

    // VM migrated to another host.
    let (changes, _, took) = delta_after(&mut r, |s| s.move_vm(&vm.uuid, &h1).unwrap()).await;
    check("move_vm", took);
    assert!(matches!(&changes[..], [Change::Upsert(Fact::Vnic(v))] if v.host == h1), "{changes:?}");

    // VM halted.
    let (changes, _, took) = delta_after(&mut r, |s| s.set_power(&vm.uuid, false, None).unwrap()).await;
    check("halt", took);
    assert!(matches!(&changes[..], [Change::Upsert(Fact::Vnic(v))] if !v.powered_on && v.host == h1), "{changes:?}");

    // VLAN network added: one network fact per host, on the VLAN's NIC.
    let mut net = String::new();
    let (changes, _, took) = delta_after(&mut r, |s| net = s.add_vlan(300).unwrap()).await;
    check("add_vlan", took);
    assert_eq!(changes.len(), 50);
    assert!(changes.iter().all(|c| matches!(c, Change::Upsert(Fact::Network(n))
        if n.network == net && n.vlan == VlanSpec::Access(VlanId::new(300).unwrap()) && n.uplinks == ["eth1"])));

    // VLAN network removed.
    let (changes, _, took) = delta_after(&mut r, |s| s.remove_network(&net).unwrap()).await;
    check("remove_network", took);
    assert_eq!(changes.len(), 50);
    assert!(changes.iter().all(|c| matches!(c, Change::Remove(FactKey::Network { network, .. }) if *network == net)));

    // A bad tag is rejected, per host, and nothing else changes.
    let (changes, rejected, took) = delta_after(&mut r, |s| drop(s.add_vlan(4095).unwrap())).await;
    check("add_vlan 4095", took);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(rejected.len(), 50);
    assert!(rejected[0].what.contains("VLAN 4095") && rejected[0].why.contains("4095"), "{:?}", rejected[0]);

    // LLDP neighbour changed.
    let (changes, _, took) =
        delta_after(&mut r, |s| s.set_lldp(&h0, "eth0", Some(("tor2", "ethernet1/9"))).unwrap()).await;
    check("set_lldp", took);
    assert!(
        matches!(&changes[..], [Change::Upsert(Fact::Uplink(u))]
            if u.host == h0 && u.nic == "eth0" && u.port == Some(SwitchPort::new("tor2", "ethernet1/9").unwrap())),
        "{changes:?}"
    );

    // VM destroyed.
    let (changes, _, took) = delta_after(&mut r, |s| s.destroy_vm(&vm.uuid).unwrap()).await;
    check("destroy_vm", took);
    assert_eq!(changes, vec![Change::Remove(FactKey::Vnic { vm: vm.uuid.as_str().into(), nic: "0".into() })]);

    eprintln!("worst delta latency {worst:?} over a pool of {} facts", facts.len());
    r.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_invalid_logs_in_again_and_resumes() {
    let mut r = start(SimOptions::default()).await;
    let (_, before) = inventory(&mut r.rx).await;
    r.sim.invalidate_sessions();
    let (_, after) = inventory(&mut r.rx).await;
    let keyed =
        |facts: &[Fact]| facts.iter().map(|f| (f.key(), f.clone())).collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(keyed(&before), keyed(&after));
    let host = r.sim.hosts()[0].uuid.clone();
    let net = r.sim.networks()[0].0.clone();
    let (changes, _, _) = delta_after(&mut r, |s| drop(s.create_vm(&host, "after-relogin", &[&net]).unwrap())).await;
    assert_eq!(changes.len(), 1);
    r.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_slave_reconnects_to_the_master_named() {
    let mut r = start(SimOptions::default()).await;
    let (endpoint, _) = inventory(&mut r.rx).await;
    assert_eq!(endpoint, r.sim.url());
    let master = r.sim.make_slave().await.unwrap();
    assert_ne!(master, r.sim.url());
    // Session invalidated by the master change → re-login on the old endpoint → HOST_IS_SLAVE
    // → the adapter follows the master and reads the pool there.
    let (endpoint, facts) = inventory(&mut r.rx).await;
    assert_eq!(endpoint, master);
    assert!(!facts.is_empty());
    let host = r.sim.hosts()[0].uuid.clone();
    let net = r.sim.networks()[0].0.clone();
    let (changes, _, _) = delta_after(&mut r, |s| drop(s.create_vm(&host, "on-new-master", &[&net]).unwrap())).await;
    assert_eq!(changes.len(), 1);
    r.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_cut_and_restored_gives_disconnected_then_inventory() {
    let mut r = start(SimOptions::default()).await;
    let (_, before) = inventory(&mut r.rx).await;
    r.sim.cut();
    match next(&mut r.rx).await {
        Observation::Disconnected { reason, .. } => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(r.health.get().state, LinkState::Retrying);
    assert_eq!(r.health.get().losses, 1);
    // A change during the outage shows up in the fresh inventory.
    let host = r.sim.hosts()[0].uuid.clone();
    let net = r.sim.networks()[0].0.clone();
    let vm = r.sim.create_vm(&host, "born-during-outage", &[&net]).unwrap();
    r.sim.restore();
    // Failed attempts before the restore each report their failure; then the inventory.
    let after = loop {
        match next(&mut r.rx).await {
            Observation::Disconnected { .. } => continue,
            Observation::Inventory { facts, .. } => break facts,
            other => panic!("expected Inventory, got {other:?}"),
        }
    };
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.iter().any(|f| matches!(f, Fact::Vnic(v) if v.vm == vm.uuid)));
    assert_eq!(r.health.get().losses, 1, "one loss, however many attempts");
    r.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_password_retries_slowly_with_a_clear_error_and_recovers_once_fixed() {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let (c, _dir) = config(&sim, "wrong");
    let before = sim.last_event();
    let (mut rx, health, task) = spawn(c);
    let Observation::Disconnected { reason, .. } = next(&mut rx).await else { panic!("a failed attempt first") };
    assert!(reason.contains("SESSION_AUTHENTICATION_FAILED") && reason.contains("root"), "{reason}");
    assert!(!reason.contains("wrong"), "the password must not appear: {reason}");
    assert_eq!(health.get().state, LinkState::Failing);
    assert_eq!(sim.last_event(), before);
    sim.set_password("wrong");
    loop {
        match next(&mut rx).await {
            Observation::Disconnected { .. } => continue,
            Observation::Inventory { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(health.get().state, LinkState::Live);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_token_surfaces_as_a_full_reread() {
    use adapters::common::{SecretString, Timeouts, TlsOptions};
    use adapters::xen::client::{Client, Session};
    use adapters::xen::Recovery;
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let client =
        Client::new(sim.url(), &TlsOptions::default(), &Timeouts::flat(Duration::from_secs(5)), 1 << 20).unwrap();
    let session = Session::login(client, &sim.user(), &SecretString::from(sim.password())).await.unwrap();
    let err = session.event_from(&["VM"], "not-a-token", 1.0).await.unwrap_err();
    assert_eq!(err.code(), Some("EVENT_FROM_TOKEN_PARSE_FAILURE"), "{err}");
    assert_eq!(err.recovery(), Recovery::Reread);
    let err = session.get_all_records("no_such_class").await.unwrap_err();
    assert_eq!(err.code(), Some("MESSAGE_METHOD_UNKNOWN"), "{err}");
    session.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_size_limit_is_a_clear_error_retried_slowly() {
    let sim = Simulator::start(SimOptions { hosts: 4, vms_per_host: 10, ..SimOptions::default() }).await.unwrap();
    let (mut c, _dir) = config(&sim, &sim.password());
    c.max_body_bytes = 4096;
    let (mut rx, health, task) = spawn(c);
    for attempt in 1..=3 {
        let Observation::Disconnected { reason, .. } = next(&mut rx).await else { panic!("attempt {attempt} fails") };
        assert!(reason.contains("exceeds the 4096-byte limit"), "{reason}");
    }
    let h = health.get();
    assert_eq!(h.state, LinkState::Failing);
    assert!(h.logins >= 2 && h.logouts >= 2, "each abandoned session is logged out: {h:?}");
    task.abort();
}
