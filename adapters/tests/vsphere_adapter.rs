//! The vSphere adapter against the vCenter simulator over real loopback HTTP: the initial load
//! of 50 hosts and 1,000 VMs, every kind of change arriving as exactly the right `Delta` within
//! 100 ms, re-login after a server-side session drop, connectivity cut (refused or hanging) and
//! restored, and the clear errors (wrong password, oversized body, wrong content type).
//!
//! Waiting here is on real network effects, always bounded by a deadline (no sleeps).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adapters::common::{HttpClient, Secret, SecretSource, TlsOptions};
use adapters::vsphere::client::Session;
use adapters::vsphere::sim::{Cut, Neighbour, SimHandle, SimNet, SimOptions, SimVlan, Simulator};
use adapters::vsphere::{codec, Adapter, Config, Error};
use engine::{Change, Fact, FactKey, NeighbourSource, Observation, VlanSpec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(10);
const FAST: Duration = Duration::from_millis(100);

struct Harness {
    sim: SimHandle,
    rx: mpsc::Receiver<Observation>,
    task: JoinHandle<adapters::vsphere::Result<()>>,
    _dir: tempfile::TempDir,
}

fn config(sim: &SimHandle, dir: &tempfile::TempDir, password: &str) -> Config {
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).expect("write password file");
    let mut c = Config::new(sim.url(), sim.user(), SecretSource::file(file));
    c.request_timeout_ms = 1_500;
    c.wait_max_seconds = 1;
    c.page_size = 100;
    c.topology_refresh_ms = 30;
    c.backoff_initial_ms = 50;
    c.backoff_max_ms = 200;
    c
}

async fn start(opts: SimOptions, tweak: impl FnOnce(&mut Config)) -> Harness {
    let sim = Simulator::start(opts).await.expect("simulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(&sim, &dir, sim.password());
    tweak(&mut c);
    let (tx, rx) = mpsc::channel(64);
    let adapter = Adapter::new(c).expect("adapter builds");
    let task = tokio::spawn(adapter.run(tx));
    Harness { sim, rx, task, _dir: dir }
}

async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an observation before the deadline")
        .expect("adapter running")
}

async fn inventory(rx: &mut mpsc::Receiver<Observation>) -> Vec<Fact> {
    match next(rx).await {
        Observation::Inventory { facts, .. } => facts,
        other => panic!("expected Inventory, got {other:?}"),
    }
}

/// The next observation must be a `Delta` arriving within 100 ms of `since`.
async fn delta(
    rx: &mut mpsc::Receiver<Observation>,
    since: Instant,
    what: &str,
) -> (Vec<Change>, Vec<engine::Rejected>) {
    let obs = next(rx).await;
    let took = since.elapsed();
    eprintln!("{what}: delta after {took:?}");
    assert!(took < FAST, "{what}: delta took {took:?}");
    match obs {
        Observation::Delta { changes, rejected } => (changes, rejected),
        other => panic!("{what}: expected Delta, got {other:?}"),
    }
}

fn small() -> SimOptions {
    SimOptions { hosts: 3, vms_per_host: 2, portgroups: 2, dvs_portgroups: 1, ..SimOptions::default() }
}

fn only_vnic(changes: &[Change], what: &str) -> engine::VnicFact {
    match changes {
        [Change::Upsert(Fact::Vnic(v))] => v.clone(),
        other => panic!("{what}: expected one vnic upsert, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_of_50_hosts_and_1000_vms() {
    let opts = SimOptions { hosts: 50, vms_per_host: 20, portgroups: 4, dvs_portgroups: 2, ..SimOptions::default() };
    let t0 = Instant::now();
    let mut h = start(opts, |_| {}).await;
    let facts = inventory(&mut h.rx).await;
    eprintln!("initial inventory of {} facts in {:?}", facts.len(), t0.elapsed());
    let count = |f: fn(&Fact) -> bool| facts.iter().filter(|x| f(x)).count();
    assert_eq!(count(|f| matches!(f, Fact::Host(_))), 50);
    assert_eq!(count(|f| matches!(f, Fact::Vnic(_))), 1000);
    assert_eq!(count(|f| matches!(f, Fact::Network(_))), 50 * (4 + 2));
    let ports: BTreeSet<String> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Uplink(u) => {
                assert_eq!(u.source, Some(NeighbourSource::Cdp));
                Some(u.port.as_ref().expect("every generated uplink is cabled").to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ports.len(), 200, "4 uplinks per host, each on its own switch port");
    assert!(ports.contains("tor1:eth1") && ports.contains("tor1:eth200"));
    let vlans: BTreeSet<String> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Network(n) => Some(n.vlan.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        vlans.into_iter().collect::<Vec<_>>(),
        ["vlan 100", "vlan 101", "vlan 102", "vlan 103", "vlan 200", "vlan 201"]
    );
    h.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_arrives_as_the_right_delta_within_100ms() {
    let mut h = start(small(), |_| {}).await;
    let facts = inventory(&mut h.rx).await;
    assert_eq!(facts.iter().filter(|f| matches!(f, Fact::Vnic(_))).count(), 6);
    let sim = &h.sim;
    let hosts = sim.host_ids();
    let vms = sim.vm_ids();
    let vm = vms[0].clone();

    let t = Instant::now();
    sim.set_power(&vm, false).unwrap();
    let v = only_vnic(&delta(&mut h.rx, t, "power off").await.0, "power off");
    assert!(v.vm == vm && !v.powered_on);

    let t = Instant::now();
    sim.set_power(&vm, true).unwrap();
    assert!(only_vnic(&delta(&mut h.rx, t, "power on").await.0, "power on").powered_on);

    let t = Instant::now();
    sim.move_vm(&vm, &hosts[2]).unwrap();
    assert_eq!(only_vnic(&delta(&mut h.rx, t, "move").await.0, "move").host, hosts[2]);

    let t = Instant::now();
    sim.set_nic_connected(&vm, 4000, false).unwrap();
    assert!(!only_vnic(&delta(&mut h.rx, t, "disconnect").await.0, "disconnect").connected);

    let t = Instant::now();
    sim.set_nic_network(&vm, 4000, SimNet::Standard("pg-101".into())).unwrap();
    assert_eq!(only_vnic(&delta(&mut h.rx, t, "re-plug").await.0, "re-plug").network, "pg-101");

    let t = Instant::now();
    let key = sim.add_nic(&vm, SimNet::Standard("pg-100".into())).unwrap();
    let v = only_vnic(&delta(&mut h.rx, t, "add nic").await.0, "add nic");
    assert_eq!((v.nic.as_str(), v.network.as_str()), ("4001", "pg-100"));
    assert_eq!(key, 4001);

    let t = Instant::now();
    sim.remove_nic(&vm, 4001).unwrap();
    let (c, _) = delta(&mut h.rx, t, "remove nic").await;
    assert_eq!(c, [Change::Remove(FactKey::Vnic { vm: vm.clone(), nic: "4001".into() })]);

    let t = Instant::now();
    let new_vm = sim.add_vm(&hosts[1], "new-vm", SimNet::Standard("pg-100".into())).unwrap();
    let v = only_vnic(&delta(&mut h.rx, t, "add vm").await.0, "add vm");
    assert_eq!((v.vm.as_str(), v.vm_name.as_str(), v.host.as_str()), (new_vm.as_str(), "new-vm", hosts[1].as_str()));

    let t = Instant::now();
    sim.remove_vm(&new_vm).unwrap();
    let (c, _) = delta(&mut h.rx, t, "remove vm").await;
    assert_eq!(c, [Change::Remove(FactKey::Vnic { vm: new_vm.clone(), nic: "4000".into() })]);

    // Standard port groups: one network fact per host.
    let per_host_networks = |c: &[Change], network: &str| -> Vec<VlanSpec> {
        assert_eq!(c.len(), 3, "{c:?}");
        c.iter()
            .map(|x| match x {
                Change::Upsert(Fact::Network(n)) if n.network == network => n.vlan.clone(),
                other => panic!("expected a network upsert of {network}, got {other:?}"),
            })
            .collect()
    };
    let t = Instant::now();
    sim.set_portgroup_vlan("pg-100", 333).unwrap();
    let (c, _) = delta(&mut h.rx, t, "std vlan").await;
    assert!(per_host_networks(&c, "pg-100").iter().all(|v| v.to_string() == "vlan 333"));

    let t = Instant::now();
    sim.set_portgroup_vlan("pg-100", 4095).unwrap();
    let (c, _) = delta(&mut h.rx, t, "std trunk").await;
    assert!(per_host_networks(&c, "pg-100").iter().all(|v| v.to_string() == "trunk 1-4094"));

    let t = Instant::now();
    sim.add_portgroup("pg-777", 777).unwrap();
    let (c, _) = delta(&mut h.rx, t, "add pg").await;
    assert!(per_host_networks(&c, "pg-777").iter().all(|v| v.to_string() == "vlan 777"));

    let t = Instant::now();
    sim.set_portgroup_vlan("pg-777", 5000).unwrap();
    let (c, rejected) = delta(&mut h.rx, t, "bad vlan").await;
    assert!(
        c.iter().all(|x| matches!(x, Change::Remove(FactKey::Network { network, .. }) if network == "pg-777")),
        "{c:?}"
    );
    assert_eq!(c.len(), 3);
    assert_eq!(rejected.len(), 3, "one rejection per host: {rejected:?}");
    assert!(rejected[0].why.contains("5000"));

    let t = Instant::now();
    sim.remove_portgroup("pg-777").unwrap();
    // The facts were already removed; what changes is that the rejection is gone: no delta.
    sim.remove_portgroup("pg-101").unwrap();
    let (c, _) = delta(&mut h.rx, t, "remove pg").await;
    assert!(
        c.iter().all(|x| matches!(x, Change::Remove(FactKey::Network { network, .. }) if network == "pg-101")),
        "{c:?}"
    );
    assert_eq!(c.len(), 3);

    // Distributed port groups.
    let dvpg = sim.dvportgroup_keys().into_iter().last().unwrap();
    let t = Instant::now();
    sim.set_dvportgroup_vlan(&dvpg, SimVlan::Id(444)).unwrap();
    let (c, _) = delta(&mut h.rx, t, "dvs vlan").await;
    assert!(per_host_networks(&c, &dvpg).iter().all(|v| v.to_string() == "vlan 444"));

    let t = Instant::now();
    sim.set_dvportgroup_vlan(&dvpg, SimVlan::Trunk(vec![(10, 20), (30, 30)])).unwrap();
    let (c, _) = delta(&mut h.rx, t, "dvs trunk").await;
    assert!(per_host_networks(&c, &dvpg).iter().all(|v| v.to_string() == "trunk 10-20,30"));

    let t = Instant::now();
    sim.set_dvportgroup_vlan(&dvpg, SimVlan::Pvlan(55)).unwrap();
    let (c, rejected) = delta(&mut h.rx, t, "dvs pvlan").await;
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|x| matches!(x, Change::Remove(FactKey::Network { .. }))));
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].why.contains("not supported"), "{rejected:?}");

    let t = Instant::now();
    let new_pg = sim.add_dvportgroup("dv-900", SimVlan::Id(900)).unwrap();
    let (c, _) = delta(&mut h.rx, t, "add dvpg").await;
    assert!(per_host_networks(&c, &new_pg).iter().all(|v| v.to_string() == "vlan 900"));

    // Hosts.
    let t = Instant::now();
    let cabling = [
        Neighbour { switch: "tor9".into(), port: "eth91".into() },
        Neighbour { switch: "tor9".into(), port: "eth92".into() },
    ];
    let new_host = sim.add_host("esx-new.sim.local", cabling).unwrap();
    let (c, _) = delta(&mut h.rx, t, "add host").await;
    assert!(c.contains(&Change::Upsert(Fact::Host(engine::HostFact {
        host: new_host.clone(),
        name: "esx-new.sim.local".into()
    }))));
    let ports: Vec<String> = c
        .iter()
        .filter_map(|x| match x {
            Change::Upsert(Fact::Uplink(u)) => u.port.as_ref().map(|p| p.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(ports, ["tor9:eth91", "tor9:eth92"], "the new host's CDP is read at once");
    assert!(c.iter().all(|x| match x {
        Change::Upsert(f) => matches!(f.key(), FactKey::Host { host } | FactKey::Uplink { host, .. } | FactKey::Network { host, .. } if host == new_host),
        Change::Remove(_) => false,
    }));

    // Topology (QueryNetworkHint): CDP, then LLDP once CDP is gone.
    let t = Instant::now();
    sim.set_cdp(&hosts[0], "vmnic0", Some(Neighbour { switch: "tor1".into(), port: "eth48".into() })).unwrap();
    let (c, _) = delta(&mut h.rx, t, "cdp").await;
    match c.as_slice() {
        [Change::Upsert(Fact::Uplink(u))] => {
            assert_eq!((u.nic.as_str(), u.port.as_ref().unwrap().to_string()), ("vmnic0", "tor1:eth48".to_string()));
            assert_eq!(u.source, Some(NeighbourSource::Cdp));
        }
        other => panic!("cdp: {other:?}"),
    }
    sim.set_lldp(&hosts[0], "vmnic1", Some(Neighbour { switch: "tor2".into(), port: "Ethernet7".into() })).unwrap();
    let t = Instant::now();
    sim.set_cdp(&hosts[0], "vmnic1", None).unwrap();
    let (c, _) = delta(&mut h.rx, t, "lldp").await;
    match c.as_slice() {
        [Change::Upsert(Fact::Uplink(u))] => {
            assert_eq!(u.port.as_ref().unwrap().to_string(), "tor2:Ethernet7");
            assert_eq!(u.source, Some(NeighbourSource::Lldp));
        }
        other => panic!("lldp: {other:?}"),
    }

    let t = Instant::now();
    let on_host: Vec<String> = vms.iter().filter(|v| sim.vm_info(v).unwrap().0 == hosts[1]).cloned().collect();
    sim.remove_host(&hosts[1]).unwrap();
    let (c, _) = delta(&mut h.rx, t, "remove host").await;
    assert!(c.iter().all(|x| matches!(x, Change::Remove(_))));
    assert!(c.contains(&Change::Remove(FactKey::Host { host: hosts[1].clone() })));
    for v in &on_host {
        assert!(
            c.contains(&Change::Remove(FactKey::Vnic { vm: v.clone(), nic: "4000".into() })),
            "{v} gone with its host"
        );
    }
    // Networks left on that host: pg-100 and dv-900 (pg-101 was removed, the PVLAN one rejected).
    assert_eq!(c.len(), 1 + 4 + 2 + on_host.len(), "host, 4 uplinks, 2 networks and its VMs' NICs: {c:?}");
    assert!(c.contains(&Change::Remove(FactKey::Network { host: hosts[1].clone(), network: new_pg.clone() })));
    h.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_again_after_the_session_is_dropped_server_side() {
    let mut h = start(small(), |_| {}).await;
    let first = inventory(&mut h.rx).await;
    h.sim.drop_sessions();
    let again = inventory(&mut h.rx).await;
    assert_eq!(first.len(), again.len(), "a fresh full inventory after re-login, no Disconnected");
    let deadline = Instant::now() + DEADLINE;
    while h.sim.session_count() != 1 {
        assert!(Instant::now() < deadline, "one live session after re-login");
        tokio::task::yield_now().await;
    }
    let vm = h.sim.vm_ids()[0].clone();
    let t = Instant::now();
    h.sim.set_power(&vm, false).unwrap();
    assert!(!only_vnic(&delta(&mut h.rx, t, "after re-login").await.0, "after re-login").powered_on);
    h.task.abort();
}

async fn cut_and_restore(how: Cut) {
    let mut h = start(small(), |_| {}).await;
    inventory(&mut h.rx).await;
    h.sim.cut(how).await;
    let vm = h.sim.vm_ids()[0].clone();
    h.sim.set_power(&vm, false).unwrap();
    match next(&mut h.rx).await {
        Observation::Disconnected { reason } => eprintln!("{how:?}: disconnected: {reason}"),
        other => panic!("{how:?}: expected Disconnected, got {other:?}"),
    }
    h.sim.restore().await.unwrap();
    let facts = inventory(&mut h.rx).await;
    let v = facts
        .iter()
        .find_map(|f| match f {
            Fact::Vnic(v) if v.vm == vm => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert!(!v.powered_on, "the change made during the outage is in the fresh inventory");
    let t = Instant::now();
    h.sim.set_power(&vm, true).unwrap();
    assert!(only_vnic(&delta(&mut h.rx, t, "after restore").await.0, "after restore").powered_on);
    h.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_give_disconnected_then_a_fresh_inventory() {
    cut_and_restore(Cut::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_gives_disconnected_then_a_fresh_inventory() {
    cut_and_restore(Cut::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_stops_with_a_clear_error() {
    let sim = Simulator::start(small()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let adapter = Adapter::new(config(&sim, &dir, "not-the-password")).unwrap();
    let r = tokio::time::timeout(DEADLINE, adapter.run(tx)).await.expect("stops, no retry loop");
    let e = r.unwrap_err();
    assert!(matches!(e, Error::InvalidLogin { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("incorrect user name or password") && msg.contains(sim.user()), "{msg}");
    assert!(!msg.contains("not-the-password"), "the password is never in the error");
    assert!(rx.recv().await.is_none(), "no observation on a failed login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_is_a_clear_error() {
    let opts = SimOptions { hosts: 10, vms_per_host: 10, ..SimOptions::default() };
    let h = start(opts, |c| {
        c.max_body_bytes = 16 * 1024;
        c.page_size = 500;
    })
    .await;
    let r = tokio::time::timeout(DEADLINE, h.task).await.expect("stops").expect("joins");
    let e = r.unwrap_err();
    assert!(e.to_string().contains("exceeds the 16384-byte limit"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_xml_response_is_a_clear_error() {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/sdk",
        axum::routing::post(|| async {
            ([(CONTENT_TYPE, "text/html")], "<html><body>Service Unavailable</body></html>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sdk", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = HttpClient::new(&TlsOptions::default(), Duration::from_secs(5), 1 << 20).unwrap();
    let e = Session::login(&http, &url, "u", &Secret::new("p")).await.unwrap_err();
    assert!(matches!(&e, Error::ContentType { content_type, .. } if content_type == "text/html"), "{e:?}");
    assert!(e.to_string().contains("expected text/xml"), "{e}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_raw_soap_like_vcenter() {
    let sim = Simulator::start(small()).await.unwrap();
    let http = reqwest::Client::new();
    let post = |body: String, cookie: Option<String>| {
        let mut r = http
            .post(sim.url())
            .header("Content-Type", "text/xml; charset=\"utf-8\"")
            .header("SOAPAction", "\"urn:vim25/8.0.2.0\"")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        r.send()
    };
    let pc = codec::MoRef::new("PropertyCollector", "propertyCollector");
    let r = post(codec::retrieve_properties_ex(&pc, "", 10), None).await.unwrap();
    assert_eq!(r.status(), 500);
    let body = r.bytes().await.unwrap();
    assert!(matches!(codec::decode_retrieve(&body, "RetrievePropertiesEx"), Err(Error::NotAuthenticated { .. })));

    let sm = codec::MoRef::new("SessionManager", "SessionManager");
    let r = post(codec::login(&sm, sim.user(), "wrong"), None).await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(matches!(codec::decode_login(&r.bytes().await.unwrap(), "u", "x"), Err(Error::InvalidLogin { .. })));

    let r = post(codec::login(&sm, sim.user(), sim.password()), None).await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("vmware_soap_session=\""));
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("<LoginResponse xmlns=\"urn:vim25\"><returnval>"), "{text}");

    let vm = codec::MoRef::new("ViewManager", "ViewManager");
    let root = codec::MoRef::new("Folder", "group-d1");
    let r = post(codec::create_container_view(&vm, &root, &["HostSystem"]), Some(cookie.clone())).await.unwrap();
    let view = codec::decode_moref(&r.bytes().await.unwrap(), "CreateContainerView").unwrap();
    let spec = codec::filter_spec(&view, &[("HostSystem", &["name"][..])]);
    let r = post(codec::retrieve_properties_ex(&pc, &spec, 2), Some(cookie.clone())).await.unwrap();
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("<propSet><name>name</name><val xsi:type=\"xsd:string\">esx-01.sim.local</val></propSet>"),
        "{text}"
    );
    let page = codec::decode_retrieve(text.as_bytes(), "RetrievePropertiesEx").unwrap();
    assert_eq!(page.objects.len(), 2);
    let token = page.token.expect("3 hosts in pages of 2");
    let r = post(codec::continue_retrieve_properties_ex(&pc, &token), Some(cookie.clone())).await.unwrap();
    let last = codec::decode_retrieve(&r.bytes().await.unwrap(), "ContinueRetrievePropertiesEx").unwrap();
    assert_eq!((last.objects.len(), last.token), (1, None));

    let r = post(codec::create_filter(&pc, &spec), Some(cookie.clone())).await.unwrap();
    codec::decode_moref(&r.bytes().await.unwrap(), "CreateFilter").unwrap();
    let r = post(codec::wait_for_updates_ex(&pc, "", 1, 2), Some(cookie.clone())).await.unwrap();
    let u = codec::decode_updates(&r.bytes().await.unwrap()).unwrap().unwrap();
    assert!(u.truncated, "3 enters with maxObjectUpdates 2");
    let r = post(codec::wait_for_updates_ex(&pc, &u.version, 1, 2), Some(cookie.clone())).await.unwrap();
    let u = codec::decode_updates(&r.bytes().await.unwrap()).unwrap().unwrap();
    assert_eq!((u.objects.len(), u.truncated), (1, false));
    let r = post(codec::wait_for_updates_ex(&pc, &u.version, 1, 2), Some(cookie)).await.unwrap();
    assert_eq!(
        codec::decode_updates(&r.bytes().await.unwrap()).unwrap(),
        None,
        "nothing changed within maxWaitSeconds"
    );
}
