//! The generated world and log the projector benchmarks (and the `fold_once` profiling example)
//! fold: 10 hypervisors × 100 hosts, each host with 2 uplinks cabled to its own ports, 10
//! networks (one VLAN each) and 50 powered-on VMs; the log is that inventory followed by
//! one-change events (power toggles, network moves) and the occasional lost/reestablished pair.
// Each benchmark and example that includes this module uses a part of it.
#![allow(dead_code)]

use engine::{
    Change, Envelope, Event, Fact, HostFact, HypervisorId, Kind, NeighbourSource, NetworkFact, SwitchPort, UplinkFact,
    VlanId, VlanSpec, VnicFact,
};

pub const HYPERVISORS: usize = 10;
pub const HOSTS_PER_HV: usize = 100;
pub const NETS_PER_HOST: usize = 10;
pub const VMS_PER_HOST: usize = 50;
pub const LOG_EVENTS: usize = 1_000_000;

pub struct Gen {
    pub envs: Vec<Envelope>,
    pub vms: Vec<(HypervisorId, VnicFact)>,
}

impl Gen {
    fn push(&mut self, hypervisor: &HypervisorId, event: Event) {
        let seq = self.envs.len() as u64 + 1;
        self.envs.push(Envelope { seq, at: seq, hypervisor: hypervisor.clone(), schema: 1, prev: [0; 32], event });
    }
}

/// The inventory of the whole world: `Connected` + one `Learnt` per host.
pub fn world() -> Gen {
    let mut g = Gen { envs: Vec::new(), vms: Vec::new() };
    for h in 0..HYPERVISORS {
        let id = HypervisorId::new(format!("hv{h}")).unwrap();
        g.push(&id, Event::Connected { kind: Kind::VMware, endpoint: format!("https://hv{h}") });
        for host_i in 0..HOSTS_PER_HV {
            let host = format!("host-{h}-{host_i}");
            let mut facts =
                vec![Fact::Host(HostFact { host: host.clone().into(), name: format!("{host}.lab").into() })];
            for nic in 0..2 {
                facts.push(Fact::Uplink(UplinkFact {
                    host: host.clone().into(),
                    nic: format!("vmnic{nic}").into(),
                    mac: Some(format!("02:00:00:{h:02x}:{host_i:02x}:{nic:02x}").into()),
                    port: Some(SwitchPort::new(format!("tor{nic}"), format!("ethernet1/{h}/{host_i}")).unwrap()),
                    source: Some(NeighbourSource::Lldp),
                }));
            }
            for n in 0..NETS_PER_HOST {
                facts.push(Fact::Network(NetworkFact {
                    host: host.clone().into(),
                    network: format!("pg-{n}").into(),
                    name: format!("pg-{n}").into(),
                    vlan: VlanSpec::Access(VlanId::new(100 + n as u16).unwrap()),
                    uplinks: vec!["vmnic0".into(), "vmnic1".into()],
                }));
            }
            for v in 0..VMS_PER_HOST {
                let vnic = VnicFact {
                    vm: format!("vm-{h}-{host_i}-{v}").into(),
                    vm_name: format!("app-{h}-{host_i}-{v}").into(),
                    nic: "4000".into(),
                    mac: format!("00:50:56:{h:02x}:{host_i:02x}:{v:02x}").into(),
                    host: host.as_str().into(),
                    network: format!("pg-{}", v % NETS_PER_HOST).into(),
                    connected: true,
                    powered_on: true,
                };
                g.vms.push((id.clone(), vnic.clone()));
                facts.push(Fact::Vnic(vnic));
            }
            g.push(&id, Event::Learnt { changes: facts.into_iter().map(Change::Upsert).collect() });
        }
    }
    g
}

/// The world's inventory followed by one-change events (power toggles, network moves) and the
/// occasional lost/reestablished pair, `LOG_EVENTS` in all.
pub fn log() -> Vec<Envelope> {
    let mut g = world();
    let mut i = 0usize;
    while g.envs.len() < LOG_EVENTS {
        i += 1;
        for (id, event) in step(&mut g, i) {
            g.push(&id, event);
        }
    }
    g.envs.truncate(LOG_EVENTS);
    g.envs
}

/// The events of step `i` (from 1) after the inventory: every 10,000th step a lost/reestablished
/// pair, otherwise one vNIC's power toggle or network move (which `g` remembers).
pub fn step(g: &mut Gen, i: usize) -> Vec<(HypervisorId, Event)> {
    if i.is_multiple_of(10_000) {
        let id = g.vms[i % g.vms.len()].0.clone();
        return vec![
            (id.clone(), Event::Lost { reason: "timeout".into(), since: 0 }),
            (id, Event::Reestablished { outage_ms: 5_000 }),
        ];
    }
    let k = (i * 7919) % g.vms.len();
    let (id, mut v) = g.vms[k].clone();
    if i.is_multiple_of(3) {
        v.network = format!("pg-{}", (i / 3) % NETS_PER_HOST).into();
    } else {
        v.powered_on = !v.powered_on;
    }
    g.vms[k].1 = v.clone();
    vec![(id, Event::Learnt { changes: vec![Change::Upsert(Fact::Vnic(v))] })]
}
