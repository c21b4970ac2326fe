//! Initial load over real loopback HTTP: 50 hosts and 1,000 VMs from the vCenter simulator,
//! paged `RetrievePropertiesEx` plus `QueryNetworkHint` per host, arrive as one `Inventory`.
//! (Its own test binary, so its CPU burst does not skew the latency tests.)

mod vsphere_support;

use std::collections::BTreeSet;
use std::time::Instant;

use engine::{Fact, NeighbourSource};
use sims::vsphere::SimOptions;
use vsphere_support::{inventory, start};

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
