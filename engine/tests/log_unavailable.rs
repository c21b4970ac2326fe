//! The engine over a log that refuses appends for a while (a full disk), or leaves one
//! unanswered (a store that hangs), on paused time: the refused events are held and retried
//! every second, observations behind them wait in order, nothing is dropped, doubled or applied
//! before it is durable, and the metrics say since when the log has been unavailable.

mod common;

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use engine::runtime::{Engine, Metrics};
use engine::Recorded;
use store::{Entry, Log, MemoryLog, Seq, Snapshot, Subscription, Verified};
use tokio::sync::watch;

/// A memory log whose next `refuse` appends fail as a full disk would, and whose appends
/// wait while `answering` is false, as a store that hangs.
struct Faulty {
    inner: MemoryLog<Recorded>,
    refuse: AtomicU32,
    answering: watch::Sender<bool>,
}

impl Faulty {
    fn refusing(refuse: u32) -> Self {
        Faulty { inner: MemoryLog::new(), refuse: AtomicU32::new(refuse), answering: watch::Sender::new(true) }
    }
}

impl Log<Recorded> for Faulty {
    async fn append(&self, batch: Vec<Recorded>) -> store::Result<RangeInclusive<Seq>> {
        let _ = self.answering.subscribe().wait_for(|answering| *answering).await;
        if self.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(store::Error::NoSpace { path: "/data".into(), free: 0, need: 1 << 20 });
        }
        self.inner.append(batch).await
    }
    fn head(&self) -> Seq {
        self.inner.head()
    }
    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = store::Result<Entry<Recorded>>> + Send + '_> {
        self.inner.read(from)
    }
    fn subscribe(&self, from: Seq) -> Subscription<Recorded> {
        self.inner.subscribe(from)
    }
    fn verify(&self) -> store::Result<Verified> {
        self.inner.verify()
    }
    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> store::Result<()> {
        self.inner.save_snapshot(seq, bytes)
    }
    fn latest_snapshot(&self) -> store::Result<Option<Snapshot>> {
        self.inner.latest_snapshot()
    }
    fn checkpoint(&self, name: &str) -> store::Result<Option<Seq>> {
        self.inner.checkpoint(name)
    }
    fn set_checkpoint(&self, name: &str, seq: Seq) -> store::Result<()> {
        self.inner.set_checkpoint(name, seq)
    }
}

#[tokio::test(start_paused = true)]
async fn refused_appends_are_held_and_retried_and_later_observations_wait_in_order() -> anyhow::Result<()> {
    let log = Arc::new(Faulty::refusing(3));
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    let tx = engine.attach(id.clone(), VMWARE);
    tx.send(inventory(host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]))).await?;
    tx.send(disconnected()).await?;
    settle().await;

    // Held: nothing appended, the metrics say since when.
    assert_eq!(log.head(), 0);
    assert_eq!(engine.metrics().log_unavailable_since(), Some(T0));
    tokio::time::advance(Duration::from_millis(1500)).await;
    settle().await;
    assert_eq!(log.head(), 0, "still refused after two attempts");

    // The third retry (a second later) is accepted: everything, once, in order.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_millis(500)).await;
        settle().await;
    }
    let names: Vec<_> = log.read(1).map(|e| e.unwrap().record.event.name()).collect();
    assert_eq!(names, ["Connected", "Learnt", "Lost"]);
    assert_eq!(engine.metrics().log_unavailable_since(), None);
    assert_eq!(Metrics::get(&engine.metrics().append_failures), 3);
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10])]));
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_held_append_without_waiting_for_the_log() -> anyhow::Result<()> {
    let log = Arc::new(Faulty::refusing(u32::MAX));
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let tx = engine.attach(hv("vc-east"), VMWARE);
    tx.send(inventory(host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]))).await?;
    settle().await;
    assert!(engine.metrics().log_unavailable_since().is_some());
    tokio::time::timeout(Duration::from_secs(5), engine.shutdown()).await??;
    assert_eq!(log.head(), 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_append_left_unanswered_is_reported_and_nothing_is_applied_before_it_is_durable() -> anyhow::Result<()> {
    let log = Arc::new(Faulty::refusing(0));
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let tx = engine.attach(hv("vc-east"), VMWARE);
    log.answering.send_replace(false);
    tx.send(inventory(host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]))).await?;
    settle().await;
    let metrics = engine.metrics();
    assert_eq!(metrics.log_unanswered_since(T0 + 4_000), None, "4 s without an answer is a slow store, not a hung one");
    assert_eq!(metrics.log_unanswered_since(T0 + 6_000), Some(T0), "unanswered since the append was sent");
    assert_eq!(metrics.log_unavailable_since(), None, "nothing was refused");
    assert_eq!(log.head(), 0);
    assert!(vlans(&engine.desired().borrow()).is_empty(), "nothing applied before it is durable");

    // The answer comes: once, in order, and the report is gone.
    log.answering.send_replace(true);
    settle().await;
    let names: Vec<_> = log.read(1).map(|e| e.unwrap().record.event.name()).collect();
    assert_eq!(names, ["Connected", "Learnt"]);
    assert_eq!(engine.metrics().log_unanswered_since(T0 + 60_000), None, "answered");
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10])]));
    engine.shutdown().await?;
    Ok(())
}
