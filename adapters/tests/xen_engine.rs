//! The seed scenario end to end over real loopback HTTP: the pool simulator, the XenAPI
//! adapter and the engine runtime (memory log). Connectivity is cut and restored within the
//! grace period (`Lost … Retrying...`, then `Reestablished …`, with what changed during the
//! outage learnt), then cut past it (`Lost … Removing learnt information.`, VLANs unconfigured).
//!
//! Real time, not paused: the adapter talks to the simulator over real sockets. The grace
//! period is set to 3 s and every wait is a bounded poll with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::common::SecretSource;
use adapters::xen::{Adapter, Config};
use engine::config::Config as EngineConfig;
use engine::{Desired, Engine, HypervisorId, Kind, Recorded};
use sims::xen::{SimOptions, Simulator};
use store::MemoryLog;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const DEADLINE: Duration = Duration::from_secs(20);

/// Captures the operator lines (`… connection to/with hypervisor …`) with their level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        if m.0.contains(" connection to hypervisor ") || m.0.contains(" connection with hypervisor ") {
            self.0.lock().unwrap().push((*event.metadata().level(), m.0));
        }
    }
}

impl Capture {
    fn lines(&self) -> Vec<(Level, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` operator lines were logged.
    async fn wait_for(&self, n: usize) -> Vec<(Level, String)> {
        let until = Instant::now() + DEADLINE;
        while self.lines().len() < n {
            assert!(Instant::now() < until, "timed out waiting for operator line {n}: {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.lines()
    }
}

fn vlans(d: &Desired) -> BTreeMap<String, BTreeSet<u16>> {
    d.ports.iter().map(|(p, v)| (p.to_string(), v.keys().map(|v| v.get()).collect())).collect()
}

fn expect(pairs: &[(&str, &[u16])]) -> BTreeMap<String, BTreeSet<u16>> {
    pairs.iter().map(|(p, v)| (p.to_string(), v.iter().copied().collect())).collect()
}

/// Waits (bounded) until the desired state is `want`.
async fn desired_becomes(engine: &Engine, want: &BTreeMap<String, BTreeSet<u16>>) {
    let mut rx = engine.desired();
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if vlans(&rx.borrow_and_update()) == *want {
            return;
        }
        let got = vlans(&rx.borrow());
        tokio::time::timeout_at(until, rx.changed())
            .await
            .unwrap_or_else(|_| panic!("desired state never became {want:?}; it is {got:?}"))
            .expect("engine running");
    }
}

#[tokio::test]
async fn xen_outage_within_and_past_grace_gives_the_seed_messages_and_unconfigures_vlans() -> anyhow::Result<()> {
    let cap = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));

    let id = HypervisorId::new("xen217")?;
    let mut config = EngineConfig::default();
    config.grace_secs_per_hypervisor.insert(id.clone(), 3);
    let engine =
        Engine::start(Arc::new(MemoryLog::<Recorded>::new()), config, Arc::new(engine::clock::SystemClock)).await?;

    // Two hosts, VLANs 100 and 101 on eth1, which LLDP places on tor1 ethernet1/1/2 and 1/1/4.
    let sim = Simulator::start(SimOptions { hosts: 2, vms_per_host: 2, vlans: 2, ..SimOptions::default() }).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pw"), sim.password())?;
    let mut c = Config::new(sim.url(), sim.user(), SecretSource::file(dir.path().join("pw")));
    c.event_timeout_secs = 5.0;
    c.liveness_secs = 8;
    c.backoff_initial_ms = 20;
    c.backoff_max_ms = 100;
    let link = engine.link(id.clone(), Kind::XenCitrix, c.last_attempt_window()).await;
    let health = adapters::driver::Health::new(&c.url);
    let adapter = tokio::spawn(Adapter::new(c)?.run(link, std::time::Duration::from_secs(3), health));

    desired_becomes(&engine, &expect(&[("tor1:ethernet1/1/2", &[100, 101]), ("tor1:ethernet1/1/4", &[100, 101])]))
        .await;

    // Cut: the adapter reports Disconnected, the engine logs the first seed line.
    sim.cut();
    let lines = cap.wait_for(1).await;
    assert_eq!(lines, [(Level::INFO, "Xen-Citrix:Lost connection to hypervisor xen217. Retrying...".to_string())]);
    // During the outage VLAN 300 appears with a VM on the first host.
    let host = sim.hosts()[0].uuid.clone();
    let net = sim.add_vlan(300)?;
    sim.create_vm(&host, "born-during-outage", &[&net])?;
    sim.restore();

    // Back within grace: reestablished, and the change made during the outage is learnt.
    let lines = cap.wait_for(2).await;
    assert_eq!(lines[1], (Level::INFO, "Xen-Citrix:Reestablished connection with hypervisor xen217.".to_string()));
    let both = expect(&[("tor1:ethernet1/1/2", &[100, 101, 300]), ("tor1:ethernet1/1/4", &[100, 101])]);
    desired_becomes(&engine, &both).await;

    // Cut for longer than the grace period: the VLANs it needed are unconfigured.
    sim.cut();
    let lines = cap.wait_for(4).await;
    assert_eq!(
        lines[2..],
        [
            (Level::INFO, "Xen-Citrix:Lost connection to hypervisor xen217. Retrying...".to_string()),
            (Level::WARN, "Xen-Citrix:Lost connection to hypervisor xen217. Removing learnt information.".to_string()),
        ]
    );
    desired_becomes(&engine, &BTreeMap::new()).await;

    adapter.abort();
    engine.shutdown().await?;
    Ok(())
}

/// A pool as a real one: no LLDP through XenAPI (the `other_config` convention off). The
/// switch's MAC table holds the PIF MACs on the ports they are cabled to; the engine ties every
/// PIF by its MAC (`PIF.MAC`) and the VLANs land on those ports.
#[tokio::test]
async fn a_pool_without_lldp_maps_its_pifs_by_mac_through_the_switch() -> anyhow::Result<()> {
    let id = HypervisorId::new("xen217")?;
    let engine = Engine::start(
        Arc::new(MemoryLog::<Recorded>::new()),
        EngineConfig::default(),
        Arc::new(engine::clock::SystemClock),
    )
    .await?;
    let opts = SimOptions { hosts: 2, vms_per_host: 2, vlans: 2, lldp_convention: false, ..SimOptions::default() };
    let sim = Simulator::start(opts).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pw"), sim.password())?;
    let mut c = Config::new(sim.url(), sim.user(), SecretSource::file(dir.path().join("pw")));
    c.event_timeout_secs = 5.0;
    let link = engine.link(id.clone(), Kind::XenCitrix, c.last_attempt_window()).await;
    let health = adapters::driver::Health::new(&c.url);
    let adapter = tokio::spawn(Adapter::new(c)?.run(link, std::time::Duration::from_secs(3), health));

    // Learnt, but nothing reaches a port: XenAPI says nothing about cabling.
    let until = Instant::now() + DEADLINE;
    while engine.state().read(|s| s.facts_of(&id).map_or(0, |f| f.len())) == 0 {
        assert!(Instant::now() < until, "the pool was never learnt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(vlans(&engine.desired().borrow()), BTreeMap::new());

    let switch = Arc::new(engine::switch::MemorySwitch::new("tor1"));
    let port = |p: &str| engine::port::PortName::parse(engine::port::Grammar::Memory, p).unwrap();
    let macs = sim.cabling().into_iter().map(|(mac, _, p)| (mac, port(&p))).collect();
    switch.set_discovery(Some(engine::discovery::Discovery { macs, ..Default::default() }));
    let poller = engine::runtime::discover::Poller::new(
        switch,
        engine::plan::Policy::default(),
        Duration::from_secs(60),
        engine.switch_observer(),
    );
    poller.round().await.map_err(anyhow::Error::msg)?;
    desired_becomes(&engine, &expect(&[("tor1:ethernet1/1/2", &[100, 101]), ("tor1:ethernet1/1/4", &[100, 101])]))
        .await;
    let ties = engine.state().read(|s| s.ties_of(&id));
    assert!(ties.iter().all(|t| t.source == Some(engine::NeighbourSource::MacTable)), "{ties:#?}");

    adapter.abort();
    engine.shutdown().await?;
    Ok(())
}
