//! A private Open vSwitch for the binary's tests ([`sims::ovs_lab`]): started with its trunk
//! ports, read back as port → VLANs (the parking VLAN left out), and waited on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sims::ovs_lab::Lab;

use super::netfold::STEP;

/// Port → trunk VLANs.
pub type Table = BTreeMap<String, BTreeSet<u16>>;

/// Starts a lab with each of `ports` a trunk carrying `trunks(port)`; panics naming the peer
/// when Open vSwitch is missing or does not start.
pub async fn lab(ports: Vec<String>, trunks: impl Fn(&str) -> Vec<u16> + Send + 'static) -> Lab {
    tokio::task::spawn_blocking(move || {
        let lab = Lab::start().unwrap_or_else(|e| panic!("cannot start the Open vSwitch lab: {e}"));
        for p in &ports {
            lab.add_trunk_port(p, &trunks(p)).unwrap_or_else(|e| panic!("{e}"));
        }
        lab
    })
    .await
    .expect("the lab's start-up task")
}

/// The trunk VLANs of `ports`, without `parking`.
pub fn table(lab: &Lab, ports: &[String], parking: u16) -> Table {
    ports
        .iter()
        .map(|p| {
            let t = lab.trunks(p).unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
            (p.clone(), t.into_iter().filter(|v| *v != parking).collect())
        })
        .collect()
}

/// Waits (bounded by [`STEP`]) until OVS carries `want` on `ports`.
pub async fn becomes(lab: &Lab, ports: &[String], parking: u16, want: &Table, what: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let t = table(lab, ports, parking);
        if &t == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: OVS has {t:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The XenServer simulator's cabling (`netfold sim xen --lab tor1:Ethernet2/`): two hosts, one
/// NIC each, on these ports.
pub fn xen_lab_ports() -> Vec<String> {
    vec!["Ethernet2/1".into(), "Ethernet2/2".into()]
}

/// The XenServer lab learnt: VLANs 100 and 101 on both hosts' ports.
pub fn xen_lab_learnt() -> Table {
    xen_lab_ports().into_iter().map(|p| (p, BTreeSet::from([100, 101]))).collect()
}

/// The XenServer lab's ports carrying nothing but the parking VLAN.
pub fn xen_lab_empty() -> Table {
    xen_lab_ports().into_iter().map(|p| (p, BTreeSet::new())).collect()
}
