//! The OVSDB adapter and the reconciler against a real ovsdb-server + ovs-vswitchd (userspace
//! datapath), started by the harness in a private temp dir per test.

#[path = "support/ovs.rs"]
mod ovs;
#[path = "support/rig.rs"]
mod rig;

use std::collections::BTreeSet;
use std::time::Duration;

use adapters::ovs::{Config, OvsSwitch};
use engine::reconciler::Config as RConfig;
use engine::switch::{Op, OpResult, Switch};
use ovs::{wait_for, Ovs};
use rig::{ovs as pn, v, Rig};

fn switch(endpoint: String) -> OvsSwitch {
    OvsSwitch::start(&Config { name: "ovs1".into(), endpoint, parking_vlan: 4094, timeout_ms: 5000, unixctl: None })
        .unwrap()
}

async fn connected(sw: &OvsSwitch) {
    for _ in 0..500 {
        if sw.read(&BTreeSet::new()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("could not connect to ovsdb-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_follow_desired_state_and_operator_vlan_is_never_touched() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("p1", &[99]);
    ovs.add_trunk_port("p2", &[98]);
    let sw = switch(ovs.unix_endpoint());
    connected(&sw).await;
    let (rig, mut r) = Rig::new(sw, RConfig::default());

    rig.set(&[("p1", &[10, 20, 99]), ("p2", &[30])]);
    let report = r.cycle().await.unwrap();
    assert_eq!(report.failed(), 0, "{:?}", report.outcomes);
    assert_eq!(ovs.trunks("p1"), vec![10, 20, 99]);
    assert_eq!(ovs.trunks("p2"), vec![30, 98]);
    // 99 was already there: the operator's, not claimed.
    assert_eq!(rig.owned("p1"), [v(10), v(20)].into());

    rig.set(&[("p1", &[20])]);
    r.cycle().await.unwrap();
    assert_eq!(ovs.trunks("p1"), vec![20, 99], "10 removed, operator VLAN 99 kept although not desired");
    assert_eq!(ovs.trunks("p2"), vec![98], "30 removed, operator VLAN 98 kept");
    let audit = rig.audit();
    assert_eq!(audit.len(), 8, "3 intents, 3 adds, 2 removals: {audit:?}");
    assert_eq!(rig.count("applied"), 5);
    assert!(r.cycle().await.unwrap().plan.ops.is_empty(), "second cycle is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlan_removed_by_hand_is_put_back_via_the_monitor_not_the_resync() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("p1", &[99]);
    let sw = switch(ovs.tcp_endpoint());
    connected(&sw).await;
    // The resync is an hour away: only the OVSDB monitor's drift signal can repair within the wait.
    let (rig, r) = Rig::new(sw, RConfig { resync: Duration::from_secs(3600), ..RConfig::default() });
    rig.set(&[("p1", &[10])]);
    let task = tokio::spawn(r.run(std::future::pending()));
    wait_for("VLAN 10 on p1", Duration::from_secs(30), || ovs.trunks("p1").contains(&10)).await;
    ovs.vsctl(&["remove", "port", "p1", "trunks", "10"]);
    let took = wait_for("VLAN 10 back on p1", Duration::from_secs(30), || ovs.trunks("p1").contains(&10)).await;
    eprintln!("manual removal repaired in {took:?}");
    assert_eq!(ovs.trunks("p1"), vec![10, 99]);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_last_vlan_never_leaves_the_trunk_open() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("p1", &[99]);
    let sw = switch(ovs.unix_endpoint());
    connected(&sw).await;
    let (rig, mut r) = Rig::new(sw, RConfig::default());
    rig.set(&[("p1", &[10])]);
    r.cycle().await.unwrap();
    // The operator drops their own VLAN: netfold's 10 is now the only one.
    ovs.vsctl(&["remove", "port", "p1", "trunks", "99"]);
    assert_eq!(ovs.trunks("p1"), vec![10]);
    rig.set(&[]);
    let report = r.cycle().await.unwrap();
    assert_eq!(report.outcomes[0].result, OpResult::Applied);
    assert_eq!(ovs.trunks("p1"), vec![4094], "the parking VLAN replaces the last one: trunks is never empty");
    assert!(r.cycle().await.unwrap().plan.ops.is_empty(), "the parking VLAN is not netfold's to remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_trunk_is_not_narrowed_and_errors_are_per_operation() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("open", &[]);
    ovs.add_trunk_port("p1", &[99]);
    let sw = switch(ovs.unix_endpoint());
    connected(&sw).await;
    let ops = vec![
        Op::AddVlan { port: pn("open"), vlan: v(10) },
        Op::AddVlan { port: pn("p1"), vlan: v(10) },
        Op::AddVlan { port: pn("p1"), vlan: v(99) },
        Op::AddVlan { port: pn("nosuch"), vlan: v(10) },
        Op::AddVlan { port: pn("p1"), vlan: v(4094) },
    ];
    let out = sw.apply(&ops).await.unwrap();
    assert!(matches!(&out[0].result, OpResult::Failed(m) if m.contains("empty trunk list")), "{:?}", out[0]);
    assert_eq!(out[1].result, OpResult::Applied);
    assert_eq!(out[2].result, OpResult::AlreadyDone);
    assert!(matches!(&out[3].result, OpResult::Failed(m) if m.contains("no port nosuch")), "{:?}", out[3]);
    assert!(matches!(&out[4].result, OpResult::Failed(m) if m.contains("parking")), "{:?}", out[4]);
    assert!(ovs.trunks("open").is_empty());
    assert_eq!(ovs.trunks("p1"), vec![10, 99]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_decode_bare_atoms_empty_sets_and_larger_sets() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("one", &[7]);
    ovs.add_trunk_port("none", &[]);
    ovs.add_trunk_port("many", &[1, 2, 3]);
    let sw = switch(ovs.unix_endpoint());
    connected(&sw).await;
    let obs = sw.read(&["one", "none", "many", "absent"].map(pn).into()).await.unwrap();
    assert_eq!(obs[&pn("one")], [v(7)].into());
    assert!(obs[&pn("none")].is_empty());
    assert_eq!(obs[&pn("many")], [v(1), v(2), v(3)].into());
    assert!(!obs.contains_key(&pn("absent")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_server_is_unreachable_then_reconnects() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("p1", &[99]);
    // A socket nobody listens on yet: calls fail as Unreachable, not hang.
    let dead = ovs.dir().join("late.sock");
    let sw = switch(format!("unix:{}", dead.display()));
    let e = sw.read(&BTreeSet::new()).await.unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
    // Now serve it (a second remote on the same ovsdb-server): the client reconnects by itself.
    let ctl = ovs.dir().join("ovsdb-server.ctl");
    let out = std::process::Command::new("ovs-appctl")
        .arg("-t")
        .arg(&ctl)
        .args(["ovsdb-server/add-remote", &format!("punix:{}", dead.display())])
        .output()
        .expect("ovs-appctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    connected(&sw).await;
    let obs = sw.read(&[pn("p1")].into()).await.unwrap();
    assert_eq!(obs[&pn("p1")], [v(99)].into());
}

/// Writers under lease tokens (ADR 0012): ovsdb-server itself refuses a deposed writer's
/// transaction, and the fence never goes back to an older token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovsdb_refuses_the_writes_of_a_writer_whose_token_was_superseded() {
    let ovs = Ovs::start();
    ovs.add_trunk_port("p1", &[4094]);
    let add = |vlan: u16| Op::AddVlan { port: pn("p1"), vlan: v(vlan) };
    let fence =
        || ovs.vsctl(&["get", "Open_vSwitch", ".", "external_ids:netfold-fence"]).trim().trim_matches('"').to_string();
    let first = switch(ovs.unix_endpoint()).fenced_by(1);
    connected(&first).await;
    let out = first.apply(&[add(10)]).await.expect("token 1 takes the fence and writes");
    assert_eq!(out[0].result, OpResult::Applied);
    assert_eq!(fence(), "1");

    let second = switch(ovs.unix_endpoint()).fenced_by(2);
    connected(&second).await;
    second.apply(&[add(11)]).await.expect("token 2 takes the fence from 1 and writes");
    assert_eq!(fence(), "2");

    // The deposed writer's next transaction is refused by ovsdb-server, whatever it believes.
    let e = first.apply(&[add(12)]).await.expect_err("token 1 is fenced off").to_string();
    assert!(e.contains("fencing token 1") && e.contains("newer writer"), "{e}");
    // A writer that starts late with an older token does not take the fence back.
    let late = switch(ovs.unix_endpoint()).fenced_by(1);
    connected(&late).await;
    let e = late.apply(&[add(13)]).await.expect_err("an older token never lowers the fence").to_string();
    assert!(e.contains("fenced by the newer token 2"), "{e}");
    assert_eq!(fence(), "2");
    assert_eq!(ovs.trunks("p1"), vec![10, 11, 4094], "only the writes under the fence's token landed");

    // Something else in the key is named, not overwritten.
    ovs.vsctl(&["set", "Open_vSwitch", ".", "external_ids:netfold-fence=seven"]);
    let third = switch(ovs.unix_endpoint()).fenced_by(3);
    connected(&third).await;
    let e = third.apply(&[add(14)]).await.expect_err("not a token").to_string();
    assert!(e.contains("external_ids:netfold-fence is \"seven\", not a fencing token"), "{e}");
}
