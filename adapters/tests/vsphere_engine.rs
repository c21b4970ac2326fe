//! The vSphere adapter driving the real engine runtime, against the vCenter simulator over
//! loopback HTTP: a connectivity cut that is restored within the grace period logs exactly the
//! seed's two operator lines and keeps every VLAN; one that outlasts the grace period logs the
//! "Removing learnt information." warning, removes the hypervisor's VLANs, and a later restore
//! connects afresh. Real time (HTTP timers cannot run on paused time); every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::common::SecretSource;
use adapters::vsphere::{Adapter, Config};
use engine::clock::TokioClock;
use engine::runtime::Engine;
use engine::{Desired, HypervisorId, Kind, Recorded};
use sims::vsphere::{Cut, SimOptions, Simulator};
use store::{Log, MemoryLog};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const DEADLINE: Duration = Duration::from_secs(15);

/// Captures the operator lines (level, message) of the current thread and wakes waiters.
#[derive(Clone, Default)]
struct Capture(Arc<Captured>);

#[derive(Default)]
struct Captured {
    lines: Mutex<Vec<(Level, String)>>,
    notify: Notify,
}

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        if message.contains(" connection to hypervisor ") || message.contains(" connection with hypervisor ") {
            self.0.lines.lock().unwrap().push((*event.metadata().level(), message));
            self.0.notify.notify_waiters();
        }
    }
}

impl Capture {
    fn lines(&self) -> Vec<(Level, String)> {
        self.0.lines.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` operator lines were logged.
    async fn wait_for(&self, n: usize) -> Vec<(Level, String)> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let notified = self.0.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.lines().len() >= n {
                    return self.lines();
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} operator lines before the deadline: {:?}", self.lines()))
    }
}

fn vlans(d: &Desired) -> BTreeMap<String, BTreeSet<u16>> {
    d.ports.iter().map(|(p, v)| (p.to_string(), v.keys().map(|v| v.get()).collect())).collect()
}

/// Waits (bounded) until desired state satisfies `pred`.
async fn desired_until(
    engine: &Engine,
    pred: impl Fn(&BTreeMap<String, BTreeSet<u16>>) -> bool,
) -> BTreeMap<String, BTreeSet<u16>> {
    let mut rx = engine.desired();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let now = vlans(&rx.borrow_and_update());
            if pred(&now) {
                return now;
            }
            rx.changed().await.expect("engine running");
        }
    })
    .await
    .expect("desired state before the deadline")
}

fn names(log: &MemoryLog<Recorded>) -> Vec<&'static str> {
    log.read(1).map(|e| e.expect("readable").record.event.name()).collect()
}

struct Setup {
    sim: sims::vsphere::SimHandle,
    engine: Engine,
    log: Arc<MemoryLog<Recorded>>,
    adapter: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn setup(grace_secs: u64) -> Setup {
    let sim = Simulator::start(SimOptions { hosts: 3, vms_per_host: 2, portgroups: 2, ..SimOptions::default() })
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, sim.password()).unwrap();
    let mut c = Config::new(sim.url(), sim.user(), SecretSource::file(&pw));
    c.liveness_secs = 3;
    c.wait_max_seconds = 1;
    c.backoff_initial_ms = 50;
    c.backoff_max_ms = 200;
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let config = engine::config::Config { grace_secs, ..engine::config::Config::default() };
    let engine = Engine::start(log.clone(), config, Arc::new(TokioClock::from_system())).await.expect("engine");
    let window = c.last_attempt_window();
    let link = engine.link(HypervisorId::new("vc-sim").unwrap(), Kind::VMware, window).await;
    let health = adapters::driver::Health::new(&c.url);
    let grace = Duration::from_secs(grace_secs);
    let adapter = tokio::spawn(Adapter::new(c).expect("adapter").run(link, grace, health));
    Setup { sim, engine, log, adapter, _dir: dir }
}

fn info(s: &str) -> (Level, String) {
    (Level::INFO, s.to_string())
}

#[tokio::test(flavor = "current_thread")]
async fn cut_and_restored_within_grace_logs_the_seed_lines_and_keeps_every_vlan() {
    let cap = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let s = setup(180).await;
    let before = desired_until(&s.engine, |d| !d.is_empty()).await;
    assert_eq!(before.len(), 6, "3 hosts x 2 uplinks: {before:?}");
    assert!(before.values().all(|v| v == &BTreeSet::from([100, 101])));

    s.sim.cut(Cut::Refuse).await;
    assert_eq!(cap.wait_for(1).await, [info("VMware:Lost connection to hypervisor vc-sim. Retrying...")]);
    s.sim.restore().await.unwrap();
    assert_eq!(
        cap.wait_for(2).await,
        [
            info("VMware:Lost connection to hypervisor vc-sim. Retrying..."),
            info("VMware:Reestablished connection with hypervisor vc-sim."),
        ]
    );
    assert_eq!(vlans(&s.engine.desired().borrow()), before, "no VLAN removed");
    assert_eq!(names(&s.log), ["Connected", "Learnt", "Lost", "Reestablished"]);
    s.adapter.abort();
    s.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn cut_past_grace_removes_learnt_information_and_a_restore_connects_afresh() {
    let cap = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(cap.clone()));
    let s = setup(1).await;
    let before = desired_until(&s.engine, |d| !d.is_empty()).await;

    s.sim.cut(Cut::Hang).await;
    let lines = cap.wait_for(2).await;
    assert_eq!(
        lines,
        [
            info("VMware:Lost connection to hypervisor vc-sim. Retrying..."),
            (Level::WARN, "VMware:Lost connection to hypervisor vc-sim. Removing learnt information.".to_string()),
        ]
    );
    desired_until(&s.engine, |d| d.is_empty()).await;
    assert_eq!(names(&s.log), ["Connected", "Learnt", "Lost", "Expired"]);

    s.sim.restore().await.unwrap();
    let after = desired_until(&s.engine, |d| !d.is_empty()).await;
    assert_eq!(after, before, "the fresh inventory brings the VLANs back");
    assert_eq!(&names(&s.log)[4..], ["Connected", "Learnt"]);
    s.adapter.abort();
    s.engine.shutdown().await.unwrap();
}
