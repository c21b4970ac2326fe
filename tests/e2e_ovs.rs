//! End-to-end over real loopback protocols and a real Open vSwitch: the vCenter simulator (SOAP)
//! and the XenServer pool simulator (XenAPI XML-RPC) run in this test, a private Open vSwitch
//! ([`sims::ovs_lab`]: its own ovsdb-server and ovs-vswitchd, userspace datapath) carries
//! the switch `tor1`, and the real `netfold` binary runs against them from a generated TOML
//! config. The whole seed scenario is played, including a restart of netfold while the vCenter
//! is lost: the grace period continues from the log rather than starting again. Afterwards the
//! audit commands (`log`, `why`, `state --at`, `verify`) are checked against the known history.
//!
//! Needs Open vSwitch (`apt-get install -y openvswitch-switch`) and root (ovs-vswitchd's
//! userspace datapath opens tap devices); a missing binary fails the test, naming the package.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sims::ovs_lab::Lab;
use support::netfold::{netfold, Netfold, STEP};

mod support;

const SWITCH: &str = "tor1";
const PARKING: u16 = 4094;
const GRACE_SECS: u64 = 6;

type Table = BTreeMap<String, BTreeSet<u16>>;

fn ports() -> Vec<String> {
    (1..=4).map(|n| format!("Ethernet1/{n}")).chain((1..=2).map(|n| format!("Ethernet2/{n}"))).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The view a step waits on: OVS's trunks (ground truth, via ovs-vsctl, parking VLAN left
/// out), desired state and statuses from the agent's `/state`.
struct Rig {
    lab: Lab,
    http: reqwest::Client,
}

impl Rig {
    fn ovs_table(&self) -> Table {
        ports()
            .into_iter()
            .map(|p| {
                let t = self.lab.trunks(&p).unwrap_or_else(|e| panic!("{e}\n{}", self.lab.diagnostics()));
                (p, t.into_iter().filter(|v| *v != PARKING).collect())
            })
            .collect()
    }

    async fn state(&self, base: &str) -> Value {
        let r = self.http.get(format!("{base}/state")).send().await.expect("GET /state");
        assert!(r.status().is_success(), "/state: {}", r.status());
        r.json().await.expect("/state JSON")
    }

    /// Waits until OVS matches desired state and `cond(table, state)` holds; returns the table.
    async fn converged(&self, base: &str, what: &str, cond: impl Fn(&Table, &Value) -> bool) -> Table {
        let deadline = Instant::now() + STEP;
        loop {
            let state = self.state(base).await;
            let table = self.ovs_table();
            let mut desired: Table = ports().into_iter().map(|p| (p, BTreeSet::new())).collect();
            for p in state["ports"].as_array().expect("ports") {
                let name = p["port"].as_str().expect("port name");
                if let Some(port) = name.strip_prefix("tor1:") {
                    let vlans =
                        p["vlans"].as_array().expect("vlans").iter().map(|v| v["vlan"].as_u64().unwrap() as u16);
                    desired.entry(port.to_string()).or_default().extend(vlans);
                }
            }
            if table == desired && cond(&table, &state) {
                return table;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {STEP:?}; OVS {table:?}, desired {desired:?}\n{}",
                self.lab.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn status(state: &Value, hypervisor: &str) -> String {
    state["hypervisors"]
        .as_array()
        .expect("hypervisors")
        .iter()
        .find(|h| h["name"] == hypervisor)
        .map(|h| h["status"].to_string())
        .unwrap_or_default()
}

fn ok(args: &[&str]) -> String {
    let out = netfold(args);
    assert!(out.status.success(), "netfold {args:?} failed: {}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_scenario_on_real_ovs_with_a_restart_while_the_vcenter_is_lost() {
    let started = Instant::now();
    let lab = support::ovs::lab(ports(), |_| vec![PARKING]).await;
    let vc = sims::vsphere::Simulator::start(sims::vsphere::SimOptions::lab(SWITCH, "Ethernet1/")).await.unwrap();
    let xs = sims::xen::Simulator::start(sims::xen::SimOptions::lab(SWITCH, "Ethernet2/")).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap().to_string();
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{d}"
[http]
listen = "127.0.0.1:0"
[engine]
grace_secs = {GRACE_SECS}
[[hypervisor]]
name = "vc-east"
kind = "vmware"
url = "{vc_url}"
allow_plaintext = true
user = "{vc_user}"
password = {{ password_env = "E2E_VC_PASSWORD" }}
[[hypervisor]]
name = "xen217"
kind = "xen"
url = "{xs_url}"
allow_plaintext = true
user = "{xs_user}"
password = {{ password_env = "E2E_XEN_PASSWORD" }}
[[switch]]
name = "{SWITCH}"
kind = "ovs"
address = "{ovsdb}"
parking_vlan = {PARKING}
resync_secs = 2
"#,
            vc_url = vc.url(),
            vc_user = vc.user(),
            xs_url = xs.url(),
            xs_user = xs.user(),
            ovsdb = lab.tcp_endpoint(),
        ),
    )
    .unwrap();
    let env = [("E2E_VC_PASSWORD", vc.password().to_string()), ("E2E_XEN_PASSWORD", xs.password())];
    let rig = Rig { lab, http: reqwest::Client::new() };

    // Run 1.
    let mut nf = Netfold::start(&config, dir.path().join("run1.log"), &env);
    let base = nf.http().await;

    // 1. Learn both: their VLANs appear in OVS's `trunks`.
    let live = |s: &Value| status(s, "vc-east") == "\"Live\"" && status(s, "xen217") == "\"Live\"";
    let learnt = rig.converged(&base, "learn both", |t, s| live(s) && t.values().all(|v| !v.is_empty())).await;
    assert_eq!(learnt["Ethernet1/1"], [100, 101].into(), "{learnt:?}");
    assert_eq!(learnt["Ethernet2/1"], [100, 101].into(), "{learnt:?}");
    assert_eq!(rig.lab.trunks("Ethernet1/1").unwrap(), vec![100, 101, PARKING], "operator's parking VLAN kept");

    // 2. vMotion: the VM's VLAN follows it to the other host's ports.
    let vm = vc.vm_ids().into_iter().next().unwrap();
    let (from, _) = vc.vm_info(&vm).unwrap();
    let to = vc.host_ids().into_iter().find(|h| *h != from).unwrap();
    vc.move_vm(&vm, &to).unwrap();
    let moved = rig.converged(&base, "vMotion", |t, _| *t != learnt).await;

    // 3. A port group's VLAN changes: 101 leaves the vCenter's ports, 150 arrives.
    vc.set_portgroup_vlan("pg-101", 150).unwrap();
    let changed = rig
        .converged(&base, "port-group VLAN change", |t, _| {
            t.iter().filter(|(p, _)| p.starts_with("Ethernet1/")).all(|(_, v)| !v.contains(&101))
                && t.values().any(|v| v.contains(&150))
        })
        .await;
    assert_ne!(moved, changed);

    // 4. The XenServer drops and returns within grace: Reestablished, nothing removed.
    xs.cut();
    nf.wait_line("Xen-Citrix:Lost connection to hypervisor xen217. Retrying...").await;
    xs.restore();
    nf.wait_line("Xen-Citrix:Reestablished connection with hypervisor xen217.").await;
    let back = rig.converged(&base, "XenServer back", |_, s| live(s)).await;
    assert_eq!(back, changed, "an outage within grace removes nothing");

    // /healthz and /metrics answer on the agent's endpoint.
    let health = rig.http.get(format!("{base}/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    let metrics = rig.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in ["netfold_events_appended", "netfold_hypervisor_status", "netfold_log_head"] {
        assert!(metrics.contains(name), "no {name} in /metrics:\n{metrics}");
    }
    assert!(metrics.contains("Reestablished"), "events by kind include the Reestablished:\n{metrics}");

    // 5. The vCenter goes down; netfold is restarted while it is lost.
    let vc_pairs: Vec<(String, u16)> = back
        .iter()
        .filter(|(p, _)| p.starts_with("Ethernet1/"))
        .flat_map(|(p, v)| v.iter().map(move |v| (p.clone(), *v)))
        .collect();
    assert!(!vc_pairs.is_empty());
    vc.cut(sims::vsphere::Cut::Refuse).await;
    nf.wait_line("VMware:Lost connection to hypervisor vc-east. Retrying...").await;
    let lost_seen = Instant::now();
    // Half the grace period passes (netfold's own timer runs meanwhile), then SIGTERM.
    tokio::time::sleep_until((lost_seen + Duration::from_secs(GRACE_SECS / 2)).into()).await;
    let run1 = nf.stop().await;
    assert!(!run1.contains("Removing learnt information"), "expired before the restart:\n{run1}");
    assert_eq!(rig.ovs_table(), back, "netfold's shutdown leaves the switch alone");

    let restarted_ms = now_ms();
    let mut nf = Netfold::start(&config, dir.path().join("run2.log"), &env);
    let base = nf.http().await;
    nf.wait_line("VMware:Lost connection to hypervisor vc-east. Removing learnt information.").await;
    let expired_seen = Instant::now();
    let after = rig
        .converged(&base, "vCenter expired", |t, s| {
            status(s, "vc-east") == "\"Expired\"" && t.iter().all(|(p, v)| p.starts_with("Ethernet2/") || v.is_empty())
        })
        .await;
    assert_eq!(after["Ethernet2/1"], back["Ethernet2/1"], "the XenServer's VLANs stay");
    assert_eq!(after["Ethernet2/2"], back["Ethernet2/2"], "the XenServer's VLANs stay");
    assert_eq!(rig.lab.trunks("Ethernet1/1").unwrap(), vec![PARKING], "only the parking VLAN is left");
    nf.stop().await;

    // The audit trail: the grace period ran from the Lost event, not from the restart.
    let log: Vec<Value> =
        ok(&["log", "--data-dir", &d, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |kind: &str, h: &str| {
        log.iter().find(|e| e["kind"] == kind && e["hypervisor"] == h).unwrap_or_else(|| panic!("no {kind} for {h}"))
    };
    let (lost, expired) = (find("Lost", "vc-east"), find("Expired", "vc-east"));
    find("Reestablished", "xen217");
    let (lost_at, expired_at) = (lost["at"].as_u64().unwrap(), expired["at"].as_u64().unwrap());
    // The grace runs from the last contact, which the Lost event carries.
    let since = lost["event"]["Lost"]["since"].as_u64().expect("Lost.since");
    assert!(since <= lost_at, "last contact {since} after the loss was recorded at {lost_at}");
    let grace_ms = GRACE_SECS * 1000;
    assert!(expired_at >= since + grace_ms, "expired {expired_at} before last contact {since} + grace");
    assert!(
        expired_at < restarted_ms + grace_ms,
        "expired at {expired_at}: the grace period restarted at {restarted_ms} instead of continuing from Lost at {lost_at}"
    );
    eprintln!(
        "Lost→Expired {} ms (grace {grace_ms} ms); restart {} ms after Lost; expiry seen {:?} after Lost",
        expired_at - lost_at,
        restarted_ms.saturating_sub(lost_at),
        expired_seen - lost_seen
    );

    // why / state --at against the known history.
    let lost_seq = lost["seq"].as_u64().unwrap().to_string();
    let (port, vlan) = &vc_pairs[0];
    let (pv, v) = (format!("{SWITCH}:{port}"), vlan.to_string());
    let now = ok(&["why", "--data-dir", &d, "--port", &pv, "--vlan", &v]);
    assert!(now.contains("is not desired"), "{now}");
    let then = ok(&["why", "--data-dir", &d, "--port", &pv, "--vlan", &v, "--at", &lost_seq]);
    assert!(then.contains(&format!("VLAN {vlan} is on {pv}")) && then.contains("learnt at record"), "{then}");
    let xen_why = ok(&["why", "--data-dir", &d, "--port", "tor1:Ethernet2/1", "--vlan", "100"]);
    assert!(xen_why.contains("VLAN 100 is on tor1:Ethernet2/1"), "{xen_why}");

    let at_lost: Value = serde_json::from_str(&ok(&["state", "--data-dir", &d, "--at", &lost_seq, "--json"])).unwrap();
    assert!(status(&at_lost, "vc-east").contains("Lost"), "{at_lost}");
    assert_eq!(status(&at_lost, "xen217"), "\"Live\"");
    let lost_time = lost["time"].as_str().unwrap();
    let by_time: Value = serde_json::from_str(&ok(&["state", "--data-dir", &d, "--at", lost_time, "--json"])).unwrap();
    assert_eq!(by_time["seq"], at_lost["seq"], "--at a time and --at its sequence number agree");
    let head: Value = serde_json::from_str(&ok(&["state", "--data-dir", &d, "--json"])).unwrap();
    assert_eq!(status(&head, "vc-east"), "\"Expired\"");
    assert_eq!(status(&head, "xen217"), "\"Live\"");
    assert!(ok(&["verify", "--data-dir", &d]).contains("verify OK"));

    drop(xs);
    tokio::task::spawn_blocking(move || drop(rig)).await.unwrap();
    eprintln!("end-to-end scenario took {:?}", started.elapsed());
}

#[test]
fn demo_with_the_ovs_switch_runs_green() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = netfold(&["demo", "--switch", "ovs", "--data-dir", data.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "demo --switch ovs failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Open vSwitch") && stdout.contains("parking VLAN 4094"), "{stdout}");
    assert!(stdout.contains("nothing removed: the switch is exactly as before the outage"), "{stdout}");
    assert!(stdout.contains("VLANs still configured for the XenServer: {100, 101}"), "{stdout}");
    assert!(stdout.contains("Demo finished"), "{stdout}");
    assert!(stderr.contains("VMware:Lost connection to hypervisor vc-east. Removing learnt information."), "{stderr}");
}
