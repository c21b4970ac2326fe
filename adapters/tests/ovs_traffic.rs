//! Proof that the VLANs netfold configures really carry traffic: two network namespaces behind a
//! real Open vSwitch (userspace datapath) reach each other only while the reconciler has put
//! their VLAN on the trunk port, and not after it removed it.
//!
//! Topology (this kernel has no 802.1Q module, so the tagging happens inside OVS): the bridge
//! under test plays the top-of-rack switch, a second netdev bridge plays the hypervisor's virtual
//! switch, and an OVS patch pair is the cable between them. Namespace A sits on an access port
//! (VLAN 100, the operator's) of the ToR; namespace B on an access port (VLAN 100) of the host
//! switch. The ToR end of the cable is a trunk port managed by netfold, starting with only the
//! parking VLAN. Addresses are private to the two namespaces.

#[path = "support/ovs.rs"]
mod ovs;
#[path = "support/rig.rs"]
mod rig;

use std::collections::BTreeSet;
use std::time::Duration;

use adapters::ovs::{Config, OvsSwitch};
use engine::reconciler::Config as RConfig;
use engine::switch::Switch;
use ovs::{Netns, Ovs, Veth};
use rig::Rig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_reach_each_other_only_while_netfold_carries_their_vlan() {
    let ovs = Ovs::start();
    let (a, b) = (Netns::new(), Netns::new());
    let (va, vb) = (Veth::new(&a), Veth::new(&b));
    a.exec(&["ip", "addr", "add", "10.231.100.1/24", "dev", &va.inner]);
    b.exec(&["ip", "addr", "add", "10.231.100.2/24", "dev", &vb.inner]);
    let host_br = ovs::unique("nfhb");
    let (uplink, cable) = (ovs::unique("nfup"), ovs::unique("nfca"));
    ovs.vsctl(&["--timeout=20", "add-br", &host_br, "--", "set", "bridge", &host_br, "datapath_type=netdev"]);
    ovs.vsctl(&["--timeout=20", "add-port", ovs.bridge(), &va.host, "tag=100"]);
    ovs.vsctl(&["--timeout=20", "add-port", &host_br, &vb.host, "tag=100"]);
    // The cable: ToR side is netfold's trunk port (parking VLAN only); host side trunks all.
    ovs.vsctl(&[
        "--timeout=20",
        "add-port",
        ovs.bridge(),
        &cable,
        "--",
        "set",
        "interface",
        &cable,
        "type=patch",
        &format!("options:peer={uplink}"),
        "--",
        "set",
        "port",
        &cable,
        "vlan_mode=trunk",
        "trunks=[4094]",
    ]);
    ovs.vsctl(&[
        "--timeout=20",
        "add-port",
        &host_br,
        &uplink,
        "--",
        "set",
        "interface",
        &uplink,
        "type=patch",
        &format!("options:peer={cable}"),
    ]);

    assert!(!a.ping("10.231.100.2"), "no path before netfold adds VLAN 100 to the trunk");

    let sw = OvsSwitch::start(&Config {
        name: "ovs1".into(),
        endpoint: ovs.unix_endpoint(),
        parking_vlan: 4094,
        timeout_ms: 5000,
        unixctl: None,
    })
    .unwrap();
    for _ in 0..500 {
        if sw.read(&BTreeSet::new()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (rig, mut r) = Rig::new(sw, RConfig::default());
    rig.set(&[(&cable, &[100])]);
    assert_eq!(r.cycle().await.unwrap().failed(), 0);
    assert_eq!(ovs.trunks(&cable), vec![100, 4094]);
    // Bounded but generous: up to 30 one-second pings while MAC learning settles (the userspace
    // datapath is slow to forward the first packets on a loaded 2-core machine).
    let reached = (0..30).any(|_| a.ping("10.231.100.2"));
    assert!(reached, "A must reach B while VLAN 100 is on the trunk\n{}", ovs.diagnostics());
    assert!((0..30).any(|_| b.ping("10.231.100.1")), "and B must reach A");

    rig.set(&[]);
    assert_eq!(r.cycle().await.unwrap().failed(), 0);
    assert_eq!(ovs.trunks(&cable), vec![4094]);
    // Flush neighbour caches so a stale entry cannot make this pass or fail by accident.
    a.exec(&["ip", "neigh", "flush", "all"]);
    assert!(!a.ping("10.231.100.2"), "A must not reach B once VLAN 100 is removed");
    assert!(!a.ping("10.231.100.2"), "still no path");
    ovs.vsctl(&["--no-wait", "del-br", &host_br]);
}
