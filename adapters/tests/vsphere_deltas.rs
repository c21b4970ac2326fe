//! Every kind of vCenter change — power, vMotion, NIC connect/re-plug/add/remove, VM add/remove,
//! standard and distributed port group VLANs (access, trunk, 4095, PVLAN, out of range), port
//! group add/remove, host add/remove, CDP and LLDP neighbours — arrives as exactly the right
//! `Delta` within 100 ms, over real loopback HTTP against the simulator.

mod vsphere_support;

use std::time::Instant;

use engine::{Change, Fact, FactKey, NeighbourSource, VlanSpec};
use sims::vsphere::{Neighbour, SimNet, SimVlan};
use vsphere_support::{delta, inventory, only_vnic, small, start, steady};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_arrives_as_the_right_delta_within_100ms() {
    let mut h = start(small(), |_| {}).await;
    let facts = inventory(&mut h.rx).await;
    assert_eq!(facts.iter().filter(|f| matches!(f, Fact::Vnic(_))).count(), 6);
    steady(&h.sim).await;
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
    assert_eq!(c, [Change::Remove(FactKey::Vnic { vm: vm.as_str().into(), nic: "4001".into() })]);

    let t = Instant::now();
    let new_vm = sim.add_vm(&hosts[1], "new-vm", SimNet::Standard("pg-100".into())).unwrap();
    let v = only_vnic(&delta(&mut h.rx, t, "add vm").await.0, "add vm");
    assert_eq!((v.vm.as_str(), v.vm_name.as_str(), v.host.as_str()), (new_vm.as_str(), "new-vm", hosts[1].as_str()));

    let t = Instant::now();
    sim.remove_vm(&new_vm).unwrap();
    let (c, _) = delta(&mut h.rx, t, "remove vm").await;
    assert_eq!(c, [Change::Remove(FactKey::Vnic { vm: new_vm.as_str().into(), nic: "4000".into() })]);

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
        host: new_host.clone().into(),
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
    assert!(c.contains(&Change::Remove(FactKey::Host { host: hosts[1].clone().into() })));
    for v in &on_host {
        assert!(
            c.contains(&Change::Remove(FactKey::Vnic { vm: v.as_str().into(), nic: "4000".into() })),
            "{v} gone with its host"
        );
    }
    // Networks left on that host: pg-100 and dv-900 (pg-101 was removed, the PVLAN one rejected).
    assert_eq!(c.len(), 1 + 4 + 2 + on_host.len(), "host, 4 uplinks, 2 networks and its VMs' NICs: {c:?}");
    assert!(
        c.contains(&Change::Remove(FactKey::Network { host: hosts[1].clone().into(), network: new_pg.clone().into() }))
    );
    h.task.abort();
}
