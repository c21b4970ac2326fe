//! The seed scenarios, given/when/then, on paused tokio time: the exact operator log lines and
//! the resulting desired state for lost-then-back, lost past grace, restarts while lost and
//! after the grace ran out (over a real sled log reopened from disk), and flapping.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use engine::runtime::Engine;
use engine::{Event, Recorded, Status};
use store::{Log, MemoryLog, SledLog, Store};

fn events<L: Log<Recorded>>(log: &L) -> Vec<(u64, Event)> {
    log.read(1).map(|e| e.unwrap()).map(|e| (e.record.at, e.record.event)).collect()
}

fn names<L: Log<Recorded>>(log: &L) -> Vec<&'static str> {
    events(log).iter().map(|(_, e)| e.name()).collect()
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
    settle().await;
}

/// An engine over a fresh in-memory log, its clock at `T0`.
async fn on_memory(config: engine::config::Config) -> anyhow::Result<(Arc<MemoryLog<Recorded>>, Engine)> {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config, clock_at(T0)).await?;
    Ok((log, engine))
}

/// An engine over the sled log in `dir` (opened, or reopened from disk), its clock at `now`.
async fn on_disk(dir: &Path, now: u64) -> anyhow::Result<(Arc<SledLog<Recorded>>, Engine)> {
    let log = Arc::new(Store::open(dir)?.log("events")?);
    let engine = Engine::start(log.clone(), config(), clock_at(now)).await?;
    Ok((log, engine))
}

#[tokio::test(start_paused = true)]
async fn lost_then_back_within_grace_removes_no_vlan() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let (log, engine) = on_memory(config()).await?;
    let id = hv("vc-east");
    let facts = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10), ("pg-20", 20)]);

    // Given a live hypervisor whose VMs need VLANs 10 and 20 on ethernet1/1/1.
    engine.observe(id.clone(), VMWARE, inventory(facts.clone())).await?;
    let mut desired = engine.desired();
    assert_eq!(vlans(&desired.borrow_and_update()), expect(&[("ethernet1/1/1", &[10, 20])]));

    // When it is lost for two minutes and comes back with the same inventory.
    engine.observe(id.clone(), VMWARE, disconnected()).await?;
    advance(120).await;
    engine.observe(id.clone(), VMWARE, inventory(facts)).await?;
    advance(600).await;

    // Then: two operator lines, nothing learnt, no VLAN removed, no switch change needed.
    assert_eq!(
        cap.operator_lines(),
        vec![
            info("VMware:Lost connection to hypervisor vc-east. Retrying..."),
            info("VMware:Reestablished connection with hypervisor vc-east."),
        ]
    );
    assert_eq!(names(&*log), ["Connected", "Learnt", "Lost", "Reestablished"]);
    assert_eq!(events(&*log)[3].1, Event::Reestablished { outage_ms: 120_000 });
    assert!(!desired.has_changed()?, "desired state must not have changed");
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10, 20])]));
    assert_eq!(engine.state().read(|s| s.status(&id).map(|s| s.status)), Some(Status::Live));
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn resync_after_an_outage_learns_only_what_changed_during_it() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let (log, engine) = on_memory(config()).await?;
    let id = hv("vc-east");
    let facts = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10), ("pg-20", 20)]);
    engine.observe(id.clone(), VMWARE, inventory(facts.clone())).await?;

    // When, during a 30 s outage, the VM on pg-20 went away and one on pg-10 appeared.
    engine.observe(id.clone(), VMWARE, disconnected()).await?;
    advance(30).await;
    let mut after: Vec<_> =
        facts.into_iter().filter(|f| !matches!(f, engine::Fact::Vnic(v) if v.network == "pg-20")).collect();
    after.push(vm("vm-new", "h1", "pg-10"));
    engine.observe(id.clone(), VMWARE, inventory(after)).await?;

    // Then exactly those two changes are learnt, and VLAN 20 leaves the port.
    let all = events(&*log);
    let Event::Learnt { changes } = &all.last().unwrap().1 else { panic!("expected a Learnt last, got {all:?}") };
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0], engine::Change::Upsert(vm("vm-new", "h1", "pg-10")));
    assert!(matches!(&changes[1], engine::Change::Remove(engine::FactKey::Vnic { vm, .. }) if vm == "vm-h1-pg-20"));
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10])]));
    assert_eq!(cap.operator_lines().len(), 2);
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn lost_past_grace_removes_its_vlans_and_keeps_shared_ones() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let (log, engine) = on_memory(config()).await?;
    let (vc, xen) = (hv("vc-east"), hv("xen217"));

    // Given vc-east needing 10 and 20 on ethernet1/1/1 and 30 on ethernet1/1/2, and xen217
    // needing 10 on ethernet1/1/1 too.
    let mut vc_facts = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10), ("pg-20", 20)]);
    vc_facts.extend(host_facts("h2", "ethernet1/1/2", &[("pg-30", 30)]));
    engine.observe(vc.clone(), VMWARE, inventory(vc_facts.clone())).await?;
    engine.observe(xen.clone(), XEN, inventory(host_facts("x1", "ethernet1/1/1", &[("net-10", 10)]))).await?;
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10, 20]), ("ethernet1/1/2", &[30])]));

    // When vc-east is lost and does not come back.
    engine.observe(vc.clone(), VMWARE, disconnected()).await?;
    advance(179).await;
    assert_eq!(cap.operator_lines(), vec![info("VMware:Lost connection to hypervisor vc-east. Retrying...")]);
    assert_eq!(vlans(&engine.desired().borrow()).len(), 2, "nothing removed within the grace period");
    advance(1).await;

    // Then its facts and the VLANs only it needed are gone; VLAN 10 stays for xen217.
    assert_eq!(
        cap.operator_lines(),
        vec![
            info("VMware:Lost connection to hypervisor vc-east. Retrying..."),
            warn("VMware:Lost connection to hypervisor vc-east. Removing learnt information."),
        ]
    );
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10])]));
    let reasons = engine.state().read(|s| s.why(&port("ethernet1/1/1"), vlan(10)));
    assert!(reasons.iter().all(|r| r.hypervisor == xen) && reasons.len() == 1, "{reasons:?}");
    let status = engine.state().read(|s| s.status(&vc)).unwrap();
    assert_eq!(status.status, Status::Expired);
    assert_eq!(status.kind, Some(VMWARE));
    assert!(engine.state().read(|s| s.facts_of(&vc).unwrap().is_empty()));
    assert_eq!(events(&*log).last().unwrap(), &(T0 + 180_000, Event::Expired));

    // And a later reconnect starts over with Connected.
    engine.observe(vc.clone(), VMWARE, inventory(vc_facts)).await?;
    assert_eq!(&names(&*log)[6..], ["Connected", "Learnt"]);
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/1", &[10, 20]), ("ethernet1/1/2", &[30])]));
    assert_eq!(cap.operator_lines().len(), 2);
    engine.shutdown().await?;
    Ok(())
}

/// Runs netfold once: a live hypervisor, lost at `T0 + 10 s`, then netfold stops at
/// `T0 + 40 s`. Leaves the log in `dir`.
async fn first_run_lost_then_stop(dir: &Path) -> anyhow::Result<()> {
    let (_log, engine) = on_disk(dir, T0).await?;
    let id = hv("xen217");
    engine.observe(id.clone(), XEN, inventory(host_facts("x1", "ethernet1/1/5", &[("net-7", 7)]))).await?;
    advance(10).await;
    engine.observe(id.clone(), XEN, disconnected()).await?;
    advance(30).await;
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn restart_while_lost_continues_the_grace_period_from_the_log() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let dir = tempfile::tempdir()?;
    let id = hv("xen217");

    // Given netfold stopped while xen217 was lost (since T0 + 10 s).
    first_run_lost_then_stop(dir.path()).await?;
    assert_eq!(cap.operator_lines(), vec![info("Xen-Citrix:Lost connection to hypervisor xen217. Retrying...")]);

    // When it starts again 100 s after the loss (log reopened from disk).
    let (log, engine) = on_disk(dir.path(), T0 + 110_000).await?;
    let mut desired = engine.desired();
    let status = engine.state().read(|s| s.status(&id)).unwrap();
    assert_eq!(status.status, Status::Lost { since: T0 + 10_000 });
    assert_eq!(vlans(&desired.borrow_and_update()), expect(&[("ethernet1/1/5", &[7])]));

    // Then nothing expires before T0 + 10 s + 180 s...
    let head = log.head();
    advance(79).await;
    assert_eq!(log.head(), head, "expired too early");
    assert_eq!(cap.operator_lines().len(), 1);

    // ...and at that moment the grace ends exactly as if netfold had never stopped.
    tokio::time::advance(Duration::from_secs(1)).await;
    desired.changed().await?;
    assert_eq!(
        cap.operator_lines(),
        vec![
            info("Xen-Citrix:Lost connection to hypervisor xen217. Retrying..."),
            warn("Xen-Citrix:Lost connection to hypervisor xen217. Removing learnt information."),
        ]
    );
    assert_eq!(events(&*log).last().unwrap(), &(T0 + 190_000, Event::Expired));
    assert!(desired.borrow().ports.is_empty());
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn restart_after_the_grace_ran_out_expires_at_start_up() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let dir = tempfile::tempdir()?;
    let id = hv("xen217");

    // Given netfold stopped while xen217 was lost (since T0 + 10 s).
    first_run_lost_then_stop(dir.path()).await?;

    // When it starts again 200 s after the loss: the grace ran out while it was down.
    let (log, engine) = on_disk(dir.path(), T0 + 210_000).await?;

    // Then `Expired` is appended at start-up, stamped with the start-up time.
    assert_eq!(
        cap.operator_lines(),
        vec![
            info("Xen-Citrix:Lost connection to hypervisor xen217. Retrying..."),
            warn("Xen-Citrix:Lost connection to hypervisor xen217. Removing learnt information."),
        ]
    );
    assert_eq!(names(&*log), ["Connected", "Learnt", "Lost", "Expired"]);
    assert_eq!(events(&*log).last().unwrap(), &(T0 + 210_000, Event::Expired));
    assert!(engine.desired().borrow().ports.is_empty());
    assert_eq!(engine.state().read(|s| s.status(&id).map(|s| s.status)), Some(Status::Expired));
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn flapping_ten_times_within_grace_removes_nothing() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let (log, engine) = on_memory(config()).await?;
    let id = hv("vc-east");
    let facts = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10), ("pg-20", 20)]);

    // Given a live hypervisor attached through its observation channel.
    let tx = engine.attach(id.clone(), VMWARE);
    tx.send(inventory(facts.clone())).await?;
    settle().await;
    let mut desired = engine.desired();
    assert_eq!(vlans(&desired.borrow_and_update()), expect(&[("ethernet1/1/1", &[10, 20])]));

    // When the connection flaps ten times, each outage 20 s, 300 s in all (longer than the
    // grace period), then stays up.
    for _ in 0..10 {
        tx.send(disconnected()).await?;
        tx.send(disconnected()).await?; // repeated disconnects while lost add nothing
        settle().await;
        advance(20).await;
        tx.send(inventory(facts.clone())).await?;
        settle().await;
        advance(10).await;
    }
    advance(1_000).await;

    // Then ten Lost/Reestablished pairs, nothing removed, desired state never changed.
    let mut expected = Vec::new();
    for _ in 0..10 {
        expected.push(info("VMware:Lost connection to hypervisor vc-east. Retrying..."));
        expected.push(info("VMware:Reestablished connection with hypervisor vc-east."));
    }
    assert_eq!(cap.operator_lines(), expected);
    let n = names(&*log);
    assert_eq!(n.len(), 2 + 20);
    assert!(!n.contains(&"Expired") && n.iter().filter(|e| **e == "Learnt").count() == 1, "{n:?}");
    assert!(!desired.has_changed()?);
    assert_eq!(vlans(&desired.borrow()), expect(&[("ethernet1/1/1", &[10, 20])]));
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn each_hypervisor_expires_on_its_own_grace_period() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let mut config = config();
    config.grace_secs_per_hypervisor.insert(hv("xen217"), 30);
    let (_log, engine) = on_memory(config).await?;

    // Given two hypervisors, xen217 with a 30 s grace period, vc-east with the default 180 s.
    engine.observe(hv("xen217"), XEN, inventory(host_facts("x1", "ethernet1/1/1", &[("n", 7)]))).await?;
    engine.observe(hv("vc-east"), VMWARE, inventory(host_facts("h1", "ethernet1/1/2", &[("pg", 8)]))).await?;

    // When both are lost at the same moment and 30 s pass.
    engine.observe(hv("xen217"), XEN, disconnected()).await?;
    engine.observe(hv("vc-east"), VMWARE, disconnected()).await?;
    advance(30).await;

    // Then only xen217 has expired.
    assert_eq!(
        cap.operator_lines(),
        vec![
            info("Xen-Citrix:Lost connection to hypervisor xen217. Retrying..."),
            info("VMware:Lost connection to hypervisor vc-east. Retrying..."),
            warn("Xen-Citrix:Lost connection to hypervisor xen217. Removing learnt information."),
        ]
    );
    assert_eq!(vlans(&engine.desired().borrow()), expect(&[("ethernet1/1/2", &[8])]));
    advance(150).await;
    assert_eq!(cap.operator_lines().len(), 4);
    assert!(engine.desired().borrow().ports.is_empty());
    engine.shutdown().await?;
    Ok(())
}
