//! Shared test harness: a tracing layer that captures log lines, fixture hypervisors with
//! facts, and helpers to build engines over a memory or sled log on paused tokio time.

#![allow(dead_code)] // each test binary uses a different subset of the harness

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use engine::clock::TokioClock;
use engine::config::Config;
use engine::{
    Desired, Fact, HostFact, HypervisorId, Kind, NeighbourSource, NetworkFact, Observation, SwitchPort, UplinkFact,
    VlanId, VlanSpec, VnicFact,
};
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One captured tracing event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub level: Level,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

/// Captures every event of the thread it is installed on.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Line>>>);

struct Visitor<'a>(&'a mut Line);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.0.fields.insert(field.name().to_string(), format!("{value:?}"));
        }
    }
}

thread_local! {
    /// The capture buffer of the test running on this thread, if it installed one.
    static CURRENT: std::cell::RefCell<Option<Arc<Mutex<Vec<Line>>>>> = const { std::cell::RefCell::new(None) };
}

/// The process-wide subscriber: routes each event to the capture of the thread it happens on.
/// (A global subscriber, not per-thread defaults: tracing caches callsite interest globally,
/// and per-thread defaults in parallel tests can lose events.)
struct Route;

impl<S: Subscriber> Layer<S> for Route {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Line { level: *event.metadata().level(), message: String::new(), fields: BTreeMap::new() };
        event.record(&mut Visitor(&mut line));
        CURRENT.with(|c| {
            if let Some(buf) = c.borrow().as_ref() {
                buf.lock().unwrap().push(line);
            }
        });
    }
}

/// Stops capturing on this thread when dropped.
pub struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl Capture {
    /// Captures the events of the current thread (the paused current-thread test runtime runs
    /// every task there) until the returned guard drops.
    pub fn install() -> (Self, Installed) {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Route));
        });
        let cap = Capture::default();
        CURRENT.with(|c| *c.borrow_mut() = Some(cap.0.clone()));
        (cap, Installed)
    }

    /// The operator lines (the seed's connection messages), in order, with their level.
    pub fn operator_lines(&self) -> Vec<(Level, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.message.contains(" connection to hypervisor ") || l.message.contains(" connection with hypervisor ")
            })
            .map(|l| {
                assert!(l.fields.contains_key("hypervisor"), "operator line without hypervisor field: {l:?}");
                (l.level, l.message.clone())
            })
            .collect()
    }

    pub fn all(&self) -> Vec<Line> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

pub fn info(s: &str) -> (Level, String) {
    (Level::INFO, s.to_string())
}

pub fn warn(s: &str) -> (Level, String) {
    (Level::WARN, s.to_string())
}

pub fn vlan(v: u16) -> VlanId {
    VlanId::new(v).unwrap()
}

pub fn port(p: &str) -> SwitchPort {
    SwitchPort::new("tor1", p).unwrap()
}

pub fn hv(name: &str) -> HypervisorId {
    HypervisorId::new(name).unwrap()
}

/// A host with one uplink cabled to `tor1:<port>` and networks `(id, vlan)`, each with one
/// powered-on, connected VM.
pub fn host_facts(host: &str, switch_port: &str, nets: &[(&str, u16)]) -> Vec<Fact> {
    let mut f = vec![
        Fact::Host(HostFact { host: host.into(), name: format!("{host}.lab").into() }),
        Fact::Uplink(UplinkFact {
            host: host.into(),
            nic: "nic0".into(),
            mac: Some("02:00:00:00:00:01".into()),
            port: Some(port(switch_port)),
            source: Some(NeighbourSource::Lldp),
        }),
    ];
    for (net, v) in nets {
        f.push(Fact::Network(NetworkFact {
            host: host.into(),
            network: (*net).into(),
            name: (*net).into(),
            vlan: VlanSpec::Access(vlan(*v)),
            uplinks: vec!["nic0".into()],
        }));
        f.push(vm(&format!("vm-{host}-{net}"), host, net));
    }
    f
}

pub fn vm(id: &str, host: &str, network: &str) -> Fact {
    Fact::Vnic(VnicFact {
        vm: id.into(),
        vm_name: format!("{id}-name").into(),
        nic: "0".into(),
        mac: "00:16:3e:00:00:01".into(),
        host: host.into(),
        network: network.into(),
        connected: true,
        powered_on: true,
    })
}

pub fn inventory(facts: Vec<Fact>) -> Observation {
    Observation::Inventory { endpoint: "https://sim.local".into(), facts, rejected: vec![] }
}

pub fn disconnected() -> Observation {
    Observation::Disconnected { reason: "connection refused".into(), silent_ms: 0 }
}

/// Desired state as `{port: {vlans}}` (reasons left out).
pub fn vlans(d: &Desired) -> BTreeMap<String, BTreeSet<u16>> {
    d.ports.iter().map(|(p, v)| (p.to_string(), v.keys().map(|v| v.get()).collect())).collect()
}

pub fn expect(pairs: &[(&str, &[u16])]) -> BTreeMap<String, BTreeSet<u16>> {
    pairs.iter().map(|(p, v)| (format!("tor1:{p}"), v.iter().copied().collect())).collect()
}

/// A clock at a round unix time, following paused tokio time.
pub fn clock_at(ms: u64) -> Arc<TokioClock> {
    Arc::new(TokioClock::starting_at(ms))
}

pub const T0: u64 = 1_790_000_000_000;

pub fn config() -> Config {
    Config::default()
}

/// Lets every ready task run (the engine's core task, forwarders) on the current-thread
/// runtime.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

pub const VMWARE: Kind = Kind::VMware;
pub const XEN: Kind = Kind::XenCitrix;
