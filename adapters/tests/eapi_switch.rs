//! The eAPI adapter and the reconciler against the eAPI fixture server over loopback HTTP.

#[path = "support/rig.rs"]
mod rig;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adapters::common::SecretSource;
use adapters::eapi::{CommandError, Config, EapiSwitch};
use engine::reconciler::{Backoff, Config as RConfig};
use engine::switch::{Op, OpResult, Switch, SwitchError};
use rig::{eos, v, Rig};
use sims::eapi::{CommandError as SimCommandError, Sim};

const PW_ENV: &str = "NETFOLD_TEST_EAPI_PASSWORD";

async fn start(sim: &Sim) -> String {
    let (addr, _task) = sim.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    format!("http://{addr}")
}

fn switch(url: String, password_env: &str) -> EapiSwitch {
    // The password comes from the environment, as in production config.
    std::env::set_var(PW_ENV, "s3cret");
    EapiSwitch::new(&Config {
        name: "tor1".into(),
        url,
        username: "netfold".into(),
        password: SecretSource::env(password_env),
        tls: Default::default(),
        timeout_ms: 5000,
    })
    .unwrap()
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn add_and_remove_follow_desired_state_and_operator_vlan_is_never_touched() {
    let sim = Sim::new("netfold", "s3cret").with_trunk("Ethernet1", &[99]).with_trunk("Ethernet2", &[]);
    let sw = switch(start(&sim).await, PW_ENV);
    let (rig, mut r) = Rig::new(sw, RConfig::default());
    rig.set(&[("Ethernet1", &[10, 20, 99]), ("Ethernet2", &[30])]);
    assert_eq!(r.cycle().await.unwrap().failed(), 0);
    assert_eq!(sim.trunk("Ethernet1").unwrap(), vec![10, 20, 99]);
    assert_eq!(sim.trunk("Ethernet2").unwrap(), vec![30]);
    assert!(sim.has_vlan(10) && sim.has_vlan(30), "VLANs are created where they did not exist");
    assert_eq!(rig.owned("Ethernet1"), [v(10), v(20)].into());

    rig.set(&[("Ethernet1", &[20])]);
    assert_eq!(r.cycle().await.unwrap().failed(), 0);
    assert_eq!(sim.trunk("Ethernet1").unwrap(), vec![20, 99], "operator VLAN 99 stays");
    assert_eq!(sim.trunk_text("Ethernet2").unwrap(), "NONE", "last VLAN removed: the trunk is closed, not ALL");
    assert_eq!(rig.count("failed") + rig.count("already"), 0, "{:?}", rig.audit());
    assert_eq!(rig.count("applied"), rig.count("intent") + 2, "every add had its intent; two removals");
    assert!(r.cycle().await.unwrap().plan.ops.is_empty(), "idempotent");
}

#[tokio::test]
async fn vlan_removed_by_hand_is_put_back_by_the_resync() {
    let sim = Sim::new("netfold", "s3cret").with_trunk("Ethernet1", &[99]);
    let sw = switch(start(&sim).await, PW_ENV);
    let config = RConfig { resync: Duration::from_millis(200), ..RConfig::default() };
    let (rig, r) = Rig::new(sw, config);
    rig.set(&[("Ethernet1", &[10])]);
    let task = tokio::spawn(r.run(std::future::pending()));
    until("VLAN 10 added", Duration::from_secs(30), || sim.trunk("Ethernet1").unwrap().contains(&10)).await;
    sim.set_trunk("Ethernet1", &[99]);
    let took = until("VLAN 10 back", Duration::from_secs(30), || sim.trunk("Ethernet1").unwrap().contains(&10)).await;
    eprintln!("manual removal repaired in {took:?}");
    task.abort();
}

#[tokio::test]
async fn command_errors_are_typed_and_name_the_failed_command() {
    let sim = Sim::new("netfold", "s3cret").with_trunk("Ethernet1", &[]);
    let sw = switch(start(&sim).await, PW_ENV);
    let err = sw.client().run_cmds(&["enable".into(), "configure".into(), "vlan 5000".into()]).await.unwrap_err();
    match &err {
        adapters::eapi::Error::Command { index, command, error, detail } => {
            assert_eq!((*index, command.as_str(), *error), (2, "vlan 5000", CommandError::Invalid));
            assert!(detail.contains("5000"), "{detail}");
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("`vlan 5000`") && err.to_string().contains("1002"), "{err}");

    sim.fail("vlan 20", SimCommandError::General, "VLAN table full", None);
    let ops = [
        Op::AddVlan { port: eos("Ethernet1"), vlan: v(10) },
        Op::AddVlan { port: eos("Ethernet1"), vlan: v(20) },
        Op::AddVlan { port: eos("Ethernet1"), vlan: v(30) },
        Op::AddVlan { port: eos("Ethernet9"), vlan: v(40) },
    ];
    let out = sw.apply(&ops).await.unwrap();
    assert_eq!(out[0].result, OpResult::Applied);
    assert!(
        matches!(&out[1].result, OpResult::Failed(m) if m.contains("`vlan 20`") && m.contains("1000") && m.contains("VLAN table full")),
        "{:?}",
        out[1]
    );
    assert_eq!(out[2].result, OpResult::Applied, "a failed operation does not block the ones after it");
    assert!(matches!(&out[3].result, OpResult::Failed(m) if m.contains("interface Ethernet9")), "{:?}", out[3]);
    assert_eq!(sim.trunk("Ethernet1").unwrap(), vec![10, 30]);
}

#[tokio::test]
async fn partial_failure_converges_on_retry() {
    let sim = Sim::new("netfold", "s3cret").with_trunk("Ethernet1", &[]).with_trunk("Ethernet2", &[]);
    // The switch refuses VLAN 20 twice, then accepts it.
    sim.fail("switchport trunk allowed vlan add 20", SimCommandError::Internal, "transient", Some(2));
    let sw = switch(start(&sim).await, PW_ENV);
    let config = RConfig {
        backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(100) },
        ..RConfig::default()
    };
    let (rig, r) = Rig::new(sw, config);
    rig.set(&[("Ethernet1", &[10, 20]), ("Ethernet2", &[30])]);
    let task = tokio::spawn(r.run(std::future::pending()));
    // The switch state first, then the ledger the reconciler writes after the reply.
    until("convergence", Duration::from_secs(30), || {
        sim.trunk("Ethernet1").unwrap() == vec![10, 20] && rig.owned("Ethernet1") == [v(10), v(20)].into()
    })
    .await;
    assert_eq!(sim.trunk("Ethernet2").unwrap(), vec![30]);
    let audit = rig.audit();
    let failed = audit.iter().filter(|a| a.entry.kind() == "failed").count();
    assert_eq!(failed, 2, "both refusals are in the audit trail: {audit:?}");
    assert_eq!(rig.owned("Ethernet1"), [v(10), v(20)].into());
    task.abort();
}

#[tokio::test]
async fn wrong_password_and_unreachable_switch_are_whole_switch_errors() {
    let sim = Sim::new("netfold", "other");
    let sw = switch(start(&sim).await, PW_ENV);
    let e = sw.read(&BTreeSet::new()).await.unwrap_err();
    assert!(matches!(e, SwitchError::Auth { .. }), "{e}");
    assert!(!format!("{e:?}").contains("s3cret"), "the password never appears in errors");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sw = switch(format!("http://127.0.0.1:{port}"), PW_ENV);
    assert!(matches!(sw.read(&BTreeSet::new()).await, Err(SwitchError::Unreachable { .. })));
}
