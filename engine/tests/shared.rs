//! Two engines on one log, as instances sharing a store run them (ADR 0014), on paused tokio
//! time: each folds what the other appends, appends only for the work it holds, and a
//! hypervisor taken over while lost keeps the grace that started at its `Lost` in the log. The
//! same over real processes, PostgreSQL and Open vSwitch: `tests/cluster.rs` at the top level.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use engine::runtime::{Engine, Work};
use engine::{Error, Recorded, Status};
use store::{Fence, Log, MemoryLog};

fn names<L: Log<Recorded>>(log: &L) -> Vec<&'static str> {
    log.read(1).map(|e| e.unwrap().record.event.name()).collect()
}

#[tokio::test(start_paused = true)]
async fn engines_sharing_a_log_fold_each_others_appends_and_a_takeover_keeps_the_grace_from_the_log(
) -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let a = Engine::start_shared(log.clone(), config(), clock_at(T0)).await?;
    let b = Engine::start_shared(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    let work = Work::Hypervisor(id.clone());
    let fence = |token| Fence { lease: work.lease(), token };
    let facts = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]);

    // Held by nobody: what an adapter sends is not recorded.
    let refused = a.observe(id.clone(), VMWARE, inventory(facts.clone())).await.unwrap_err();
    assert!(matches!(&refused, Error::NotHeld { lease } if lease == "hypervisor/vc-east"), "{refused}");
    assert!(names(&*log).is_empty());

    // Held by a: a learns, and b, which holds nothing, folds it and wants the same VLANs.
    a.hold(work.clone(), fence(1)).await?;
    a.observe(id.clone(), VMWARE, inventory(facts)).await?;
    settle().await;
    let want = expect(&[("ethernet1/1/1", &[10])]);
    assert_eq!(vlans(&a.desired().borrow()), want);
    assert_eq!(vlans(&b.desired().borrow()), want, "b follows the log a appends to");
    let err = b.observe(id.clone(), VMWARE, disconnected()).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "b does not hold it: {err}");

    // Lost under a; a's lease then goes (a crash, a pause), and b takes it a minute later.
    a.observe(id.clone(), VMWARE, disconnected()).await?;
    advance(60).await;
    a.unhold(work.clone()).await;
    b.hold(work.clone(), fence(2)).await?;
    assert!(matches!(
        b.state().read(|s| s.status(&id).map(|s| s.status)),
        Some(Status::Lost { since }) if since == T0
    ));

    // The grace (3 min) runs from the Lost at T0, not from the takeover: b expires it two
    // minutes later, and a (following) unconfigures too. a records nothing more for it.
    advance(110).await;
    assert_eq!(names(&*log), ["Connected", "Learnt", "Lost"], "not yet: 170 s after the loss");
    advance(10).await;
    assert_eq!(names(&*log), ["Connected", "Learnt", "Lost", "Expired"]);
    let expired = log.read(4).next().unwrap()?.record.at;
    assert_eq!(expired, T0 + 180_000, "expired at the loss + grace");
    settle().await;
    assert!(vlans(&a.desired().borrow()).is_empty() && vlans(&b.desired().borrow()).is_empty());
    assert!(a.observe(id.clone(), VMWARE, disconnected()).await.is_err(), "a no longer holds it");
    let lines = cap.operator_lines();
    assert_eq!(
        lines.iter().filter(|(_, l)| l.contains("Removing learnt information")).count(),
        1,
        "one instance removes: {lines:?}"
    );
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
    settle().await;
}
