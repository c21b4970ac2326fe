//! How the engine treats suspicious or bad observations: hollow inventories are a lost
//! connection, big resync removals are held back, bad pieces are refused before anything is
//! appended while the rest of the batch is still learnt.

mod common;

use std::sync::Arc;

use common::*;
use engine::runtime::{Engine, Metrics};
use engine::{Change, Event, Fact, FactKey, HostFact, Invalid, Observation, Recorded, Rejected, Status};
use store::{Log, MemoryLog};

fn last_event(log: &MemoryLog<Recorded>) -> Event {
    log.read(1).map(|e| e.unwrap().record.event).last().unwrap()
}

fn many_vms(n: usize) -> Vec<Fact> {
    let mut f = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]);
    f.extend((0..n).map(|i| vm(&format!("vm-{i}"), "h1", "pg-10")));
    f
}

#[tokio::test(start_paused = true)]
async fn an_empty_inventory_is_a_lost_connection_not_a_mass_deletion() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    engine.observe(id.clone(), VMWARE, inventory(many_vms(5))).await?;
    let mut desired = engine.desired();
    desired.borrow_and_update();

    let out = engine.observe(id.clone(), VMWARE, inventory(vec![])).await?;

    assert!(matches!(&out.invalid[..], [Invalid::HollowInventory { what: "empty", known: 9, .. }]), "{out:?}");
    assert!(matches!(last_event(&log), Event::Lost { reason, .. } if reason.contains("empty")));
    assert_eq!(cap.operator_lines(), vec![info("VMware:Lost connection to hypervisor vc-east. Retrying...")]);
    assert_eq!(engine.state().read(|s| s.facts_of(&id).unwrap().len()), 9);
    assert!(!desired.has_changed()?);
    assert_eq!(Metrics::get(&engine.metrics().hollow_inventories), 1);
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_inventory_with_every_property_missing_is_a_lost_connection() -> anyhow::Result<()> {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("xen217");
    engine.observe(id.clone(), XEN, inventory(many_vms(3))).await?;
    let blank = vec![Fact::Host(HostFact { host: "h1".into(), name: String::new().into() })];
    let out = engine.observe(id.clone(), XEN, inventory(blank)).await?;
    assert!(matches!(&out.invalid[..], [Invalid::HollowInventory { what: "with every property missing", .. }]));
    assert!(matches!(
        engine.state().read(|s| s.status(&id).unwrap().status),
        Status::Lost { since } if since == T0
    ));
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_resync_removing_most_facts_is_held_back_and_reported() -> anyhow::Result<()> {
    let (cap, _guard) = Capture::install();
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    engine.observe(id.clone(), VMWARE, inventory(many_vms(40))).await?;
    let before = engine.desired().borrow().clone();

    // A re-login inventory that lost 40 of 44 facts but changed one.
    let mut partial = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]);
    if let Some(Fact::Host(h)) = partial.first_mut() {
        h.name = "renamed".into();
    }
    let out = engine.observe(id.clone(), VMWARE, inventory(partial)).await?;

    assert!(
        matches!(&out.invalid[..], [Invalid::MassRemovalHeldBack { would_remove: 40, known: 44, share_pct: 50, .. }]),
        "{out:?}"
    );
    let tail = tail_events(&log, 2);
    let Event::Learnt { changes } = &tail[0] else { panic!("expected the change to be learnt: {tail:?}") };
    assert_eq!(changes.len(), 1);
    assert!(matches!(&changes[0], Change::Upsert(Fact::Host(h)) if h.name == "renamed"));
    let Event::RemovalHeld { would_remove: 40, known: 44, sample } = &tail[1] else {
        panic!("expected the hold in the log: {tail:?}")
    };
    assert_eq!(sample.len(), 20);
    assert_eq!(*engine.desired().borrow().as_ref(), *before.as_ref());
    assert_eq!(Metrics::get(&engine.metrics().mass_removals_held_back), 1);
    assert!(cap.all().iter().any(|l| l.level == tracing::Level::WARN && l.fields["error"].contains("held back")));
    let held = engine.state().read(|s| s.status(&id).and_then(|st| st.held)).expect("held in the state");
    assert_eq!(held.would_remove, 40);

    // The same removal seen again is not logged twice.
    let head = log.head();
    let mut again = host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]);
    if let Some(Fact::Host(h)) = again.first_mut() {
        h.name = "renamed".into();
    }
    engine.observe(id.clone(), VMWARE, inventory(again.clone())).await?;
    assert_eq!(log.head(), head);

    // An operator lets it through: the next full read removes the 40 facts.
    assert_eq!(engine.release(id.clone()).await?, 40);
    engine.observe(id.clone(), VMWARE, inventory(again)).await?;
    let tail = tail_events(&log, 2);
    assert_eq!(tail[0], Event::RemovalReleased { by: "operator".into() });
    assert!(
        matches!(&tail[1], Event::Learnt { changes } if changes.len() == 40 && changes.iter().all(|c| matches!(c, Change::Remove(_))))
    );
    assert_eq!(engine.state().read(|s| s.status(&id).and_then(|st| st.held)), None);
    assert!(engine.release(id.clone()).await.is_err(), "nothing is held any more");
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_held_removal_ends_when_a_later_full_read_no_longer_trips_the_guard() -> anyhow::Result<()> {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    engine.observe(id.clone(), VMWARE, inventory(many_vms(40))).await?;
    engine.observe(id.clone(), VMWARE, inventory(host_facts("h1", "ethernet1/1/1", &[("pg-10", 10)]))).await?;
    assert!(matches!(tail_events(&log, 1)[0], Event::RemovalHeld { .. }));
    engine.observe(id.clone(), VMWARE, inventory(many_vms(40))).await?;
    assert_eq!(tail_events(&log, 1)[0], Event::RemovalReleased { by: "resync".into() });
    assert_eq!(engine.state().read(|s| s.status(&id).and_then(|st| st.held)), None);
    engine.shutdown().await?;
    Ok(())
}

fn tail_events(log: &MemoryLog<Recorded>, n: usize) -> Vec<Event> {
    let all: Vec<Event> = log.read(1).map(|e| e.unwrap().record.event).collect();
    all[all.len() - n..].to_vec()
}

#[tokio::test(start_paused = true)]
async fn bad_pieces_are_refused_before_appending_and_the_rest_is_learnt() -> anyhow::Result<()> {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    engine.observe(id.clone(), VMWARE, inventory(many_vms(1))).await?;

    let good = vm("vm-good", "h1", "pg-10");
    let dangling = vm("vm-dangling", "h1", "no-such-net");
    let dup_a = vm("vm-dup", "h1", "pg-10");
    let mut dup_b = vm("vm-dup", "h1", "pg-10");
    if let Fact::Vnic(v) = &mut dup_b {
        v.mac = "other".into();
    }
    let delta = Observation::Delta {
        changes: vec![
            Change::Upsert(good.clone()),
            Change::Upsert(dangling),
            Change::Upsert(dup_a),
            Change::Upsert(dup_b),
            Change::Remove(FactKey::Vnic { vm: "vm-never".into(), nic: "0".into() }),
        ],
        rejected: vec![Rejected { what: "port group \"pg-0\" on h1".into(), why: "VLAN 0 is reserved".into() }],
    };
    let out = engine.observe(id.clone(), VMWARE, delta).await?;

    assert_eq!(out.invalid.len(), 4, "{:#?}", out.invalid);
    assert!(out.invalid.iter().any(|i| matches!(i, Invalid::Adapter { why, .. } if why.contains("VLAN 0"))));
    assert!(out
        .invalid
        .iter()
        .any(|i| matches!(i, Invalid::UnknownNetwork { network, .. } if network == "no-such-net")));
    assert!(out.invalid.iter().any(|i| matches!(i, Invalid::DuplicateKey { count: 2, .. })));
    assert!(out.invalid.iter().any(|i| matches!(i, Invalid::UnknownRemoval { .. })));
    assert!(out.invalid.iter().all(|i| !i.to_string().is_empty()));
    // What was learnt, then every refusal with what and why, for the audit trail.
    let [learnt, refused] = &tail_events(&log, 2)[..] else { unreachable!() };
    assert_eq!(*learnt, Event::Learnt { changes: vec![Change::Upsert(good)] });
    let Event::Refused { refusals } = refused else { panic!("not Refused: {refused:?}") };
    let whats: Vec<&str> = refusals.iter().map(|r| r.what.as_str()).collect();
    assert_eq!(whats, ["port group \"pg-0\" on h1", "vnic vm-dup/0", "vnic vm-dangling/0", "vnic vm-never/0"]);
    assert!(refusals[2].why.contains("no-such-net"), "{refusals:?}");
    assert_eq!(Metrics::get(&engine.metrics().invalid_observations), 4);
    engine.shutdown().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_delta_before_any_inventory_is_refused() -> anyhow::Result<()> {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let out = engine
        .observe(
            hv("x"),
            XEN,
            Observation::Delta { changes: vec![Change::Upsert(vm("a", "h", "n"))], rejected: vec![] },
        )
        .await?;
    assert!(matches!(&out.invalid[..], [Invalid::DeltaOutOfSession { session: "new", .. }]));
    assert_eq!(log.head(), 0);
    engine.shutdown().await?;
    Ok(())
}

/// Each full read of a hypervisor refuses what it still holds that netfold cannot take: the log
/// records a set of refusals when it appears or changes, not on every read.
#[tokio::test(start_paused = true)]
async fn a_full_read_refusing_what_the_last_one_refused_records_nothing_new() -> anyhow::Result<()> {
    let log = Arc::new(MemoryLog::<Recorded>::new());
    let engine = Engine::start(log.clone(), config(), clock_at(T0)).await?;
    let id = hv("vc-east");
    let pvlan = Rejected { what: "distributed port group \"p\" (dvportgroup-9)".into(), why: "private VLAN".into() };
    let vlan0 = Rejected { what: "port group \"pg-0\" on h1".into(), why: "VLAN 0 is reserved".into() };
    let read = |rejected: Vec<Rejected>| Observation::Inventory {
        endpoint: "https://vc-east/sdk".into(),
        facts: many_vms(2),
        rejected,
    };
    let refusals = |log: &MemoryLog<Recorded>| -> Vec<Vec<String>> {
        log.read(1)
            .filter_map(|e| match e.unwrap().record.event {
                Event::Refused { refusals } => Some(refusals.into_iter().map(|r| r.what).collect()),
                _ => None,
            })
            .collect()
    };
    let first = || vec![pvlan.what.clone()];

    engine.observe(id.clone(), VMWARE, read(vec![pvlan.clone()])).await?;
    engine.observe(id.clone(), VMWARE, read(vec![pvlan.clone()])).await?;
    assert_eq!(refusals(&log), [first()], "the same refusal on the next full read is not recorded again");
    let head = log.head();
    engine.observe(id.clone(), VMWARE, read(vec![pvlan.clone()])).await?;
    assert_eq!(log.head(), head, "an unchanged full read appends nothing at all");

    engine.observe(id.clone(), VMWARE, read(vec![pvlan.clone(), vlan0.clone()])).await?;
    engine.observe(id.clone(), VMWARE, read(vec![])).await?;
    engine.observe(id.clone(), VMWARE, read(vec![pvlan.clone()])).await?;
    let both = vec![pvlan.what.clone(), vlan0.what.clone()];
    assert_eq!(refusals(&log), [first(), both.clone(), first()], "a changed set is recorded, and again after none");

    // A delta refusing something means the set is no longer the one recorded: the next full
    // read records its refusals again.
    let delta = Observation::Delta { changes: vec![], rejected: vec![vlan0.clone()] };
    engine.observe(id.clone(), VMWARE, delta).await?;
    engine.observe(id.clone(), VMWARE, read(vec![pvlan.clone()])).await?;
    assert_eq!(refusals(&log), [first(), both, first(), vec![vlan0.what.clone()], first()]);
    engine.shutdown().await?;
    Ok(())
}
