//! Shared harness of the vSphere adapter tests: a simulator, an adapter running against it over
//! loopback HTTP, and bounded waits for observations (real network effects, never sleeps).
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::common::SecretSource;
use adapters::driver::Health;
use adapters::vsphere::{Adapter, Config};
use engine::runtime::Link;
use engine::{Ask, Change, Fact, Observation};
use sims::vsphere::{SimHandle, SimOptions, Simulator};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Harness {
    pub sim: SimHandle,
    pub rx: mpsc::Receiver<Observation>,
    /// What the test, standing in for the engine, asks of the adapter.
    pub asks: mpsc::Sender<Ask>,
    pub health: Arc<Health>,
    pub task: JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

pub fn config(sim: &SimHandle, dir: &tempfile::TempDir, password: &str) -> Config {
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).expect("write password file");
    let mut c = Config::new(sim.url(), sim.user(), SecretSource::file(file));
    c.liveness_secs = 3;
    c.wait_max_seconds = 1;
    c.page_size = 100;
    c.topology_refresh_ms = 30;
    c.backoff_initial_ms = 50;
    c.backoff_max_ms = 200;
    c
}

pub async fn start(opts: SimOptions, tweak: impl FnOnce(&mut Config)) -> Harness {
    let sim = Simulator::start(opts).await.expect("simulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(&sim, &dir, &sim.password());
    tweak(&mut c);
    let (tx, rx) = mpsc::channel(64);
    let (asks, asks_rx) = mpsc::channel(8);
    let health = Health::new(&c.url);
    let adapter = Adapter::new(c).expect("adapter builds");
    let link = Link { observations: tx, asks: asks_rx };
    let task = tokio::spawn(adapter.run(link, Duration::from_secs(180), health.clone()));
    Harness { sim, rx, asks, health, task, _dir: dir }
}

pub async fn next(rx: &mut mpsc::Receiver<Observation>) -> Observation {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an observation before the deadline")
        .expect("adapter running")
}

pub async fn inventory(rx: &mut mpsc::Receiver<Observation>) -> Vec<Fact> {
    match next(rx).await {
        Observation::Inventory { facts, .. } => facts,
        other => panic!("expected Inventory, got {other:?}"),
    }
}

/// The next observation must be a `Delta` (how long it took is printed, never asserted: the
/// figure is the `vsphere_parse` bench's).
pub async fn delta(
    rx: &mut mpsc::Receiver<Observation>,
    since: Instant,
    what: &str,
) -> (Vec<Change>, Vec<engine::Rejected>) {
    let obs = next(rx).await;
    eprintln!("{what}: delta after {:?}", since.elapsed());
    match obs {
        Observation::Delta { changes, rejected } => (changes, rejected),
        other => panic!("{what}: expected Delta, got {other:?}"),
    }
}

pub fn small() -> SimOptions {
    SimOptions { hosts: 3, vms_per_host: 2, portgroups: 2, dvs_portgroups: 1, ..SimOptions::default() }
}

pub fn only_vnic(changes: &[Change], what: &str) -> engine::VnicFact {
    match changes {
        [Change::Upsert(Fact::Vnic(v))] => v.clone(),
        other => panic!("{what}: expected one vnic upsert, got {other:?}"),
    }
}

/// Waits until the adapter has caught up: a `WaitForUpdatesEx` is parked in the simulator.
pub async fn steady(sim: &SimHandle) {
    let deadline = Instant::now() + DEADLINE;
    while sim.parked_waits() == 0 {
        assert!(Instant::now() < deadline, "the adapter never parked a WaitForUpdatesEx");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
