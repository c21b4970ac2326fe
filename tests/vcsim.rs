//! netfold against VMware's own vCenter simulator (vcsim, from Debian's
//! `golang-github-vmware-govmomi-dev`, built from `tests/peers/vcsim/` in GOPATH mode, offline),
//! driven through VMware's own Python SDK (pyVmomi): the real binary learns the inventory
//! pyVmomi reads, and keeps learning while another client of the same user waits on the default
//! PropertyCollector (netfold's session uses a collector of its own).
//!
//! Needs Go + govmomi and Python with pyvmomi; `.ci/run` installs them and runs:
//! `PYVMOMI_PYTHON=… cargo test --test vcsim -- --ignored`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine::{Change, Event, Fact};
use sims::vcsim::Vcsim;
use support::netfold::{Netfold, STEP};

/// A child whose stdout lines arrive on a channel.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Lines {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines { child, rx, stdin }
    }

    /// The next line starting with `prefix` (others are skipped), within STEP.
    fn expect(&self, prefix: &str) -> String {
        self.expect_within(prefix, STEP)
    }

    fn expect_within(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => panic!("no line `{prefix}…` within {within:?}: {e}"),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in `{line}`"))
}

/// vcsim (built from `tests/peers/vcsim` by [`sims::vcsim`]) on a free loopback port.
fn start_vcsim(args: &[&str]) -> Vcsim {
    let bin = sims::vcsim::binary(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap_or_else(|e| panic!("{e}"));
    Vcsim::start(&bin, args, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"))
}

/// A netfold config for one vcsim hypervisor; `extra` lines go into its `[[hypervisor]]`.
fn netfold_config(dir: &std::path::Path, vc: &Vcsim, extra: &str) -> std::path::PathBuf {
    let config = dir.join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[[hypervisor]]
name = "vcsim"
kind = "vmware"
url = "{url}"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "VCSIM_PASSWORD" }}
wait_secs = 2
liveness_secs = 5
{extra}
"#,
            data = dir.join("data").display(),
            url = vc.url(),
            user = vc.user,
        ),
    )
    .unwrap();
    config
}

/// Every event netfold's agent has logged so far.
async fn events(http: &reqwest::Client, base: &str) -> Vec<engine::Envelope> {
    let body = http.get(format!("{base}/log?from=1")).send().await.unwrap().text().await.unwrap();
    body.lines().map(|l| replay::audit::from_json(l).unwrap()).collect()
}

/// `VmHWM` of a process, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim) and Python with pyvmomi: .ci/run runs it with --ignored"]
async fn at_10000_vms_netfold_learns_what_pyvmomi_reads_although_vcsim_ignores_paging() {
    // vcsim's -vm counts per standalone host and per cluster: 9 standalone hosts and one
    // cluster of 3, 1,000 VMs each = 10,000 VMs, each with a NIC on the DV port group.
    let vc = start_vcsim(&["-host", "9", "-cluster", "1", "-cluster-host", "3", "-vm", "1000"]);
    let python = std::env::var("PYVMOMI_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!("{}/tests/vcsim_client.py", env!("CARGO_MANIFEST_DIR"));
    let client = Lines::spawn(Command::new(python).args([
        &script,
        &vc.host,
        &vc.port.to_string(),
        &vc.user,
        &vc.password,
        "--count-only",
    ]));
    let hosts = field(&client.expect("COUNT HOSTS").replace("COUNT HOSTS ", "hosts="), "hosts");
    let vms = field(&client.expect("COUNT VMS").replace("COUNT VMS ", "vms="), "vms");
    assert!(vms >= 10_000, "pyVmomi reads {vms} VMs");

    // vcsim answers the whole inventory in one reply (it ignores maxObjects), far past this
    // cap; each object is well below it.
    let dir = tempfile::tempdir().unwrap();
    let config = netfold_config(dir.path(), &vc, "page_size = 500\nmax_body_bytes = 4194304");
    let started = Instant::now();
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", vc.password.clone())]);
    let base = nf.http().await;
    let http = reqwest::Client::new();
    let deadline = started + Duration::from_secs(600);
    let learnt = loop {
        let first = events(&http, &base).await.into_iter().find_map(|e| match e.event {
            Event::Learnt { changes } => Some(changes),
            _ => None,
        });
        if let Some(changes) = first {
            break changes;
        }
        assert!(Instant::now() < deadline, "no Learnt within 600 s:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let to_learnt = started.elapsed();
    let learnt_hosts = learnt.iter().filter(|c| matches!(c, Change::Upsert(Fact::Host(_)))).count() as u64;
    let learnt_vms: std::collections::BTreeSet<&str> = learnt
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(Fact::Vnic(v)) => Some(v.vm.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!((learnt_hosts, learnt_vms.len() as u64), (hosts, vms), "netfold learnt what pyVmomi reads");
    let rss = peak_rss_kb(nf.pid());
    println!(
        "vcsim {hosts} hosts, {vms} VMs: first complete Learnt {:.1} s after start, netfold peak RSS {} MiB",
        to_learnt.as_secs_f64(),
        rss / 1024
    );
    assert!(nf.log().contains("vSphere inventory loaded"));
    nf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim) and Python with pyvmomi: .ci/run runs it with --ignored"]
async fn netfold_learns_vcsims_inventory_and_keeps_learning_beside_a_default_collector_client() {
    let python = std::env::var("PYVMOMI_PYTHON").unwrap_or_else(|_| "python3".into());
    let vc = start_vcsim(&[]);
    let (host, port, user, pass) = (vc.host.as_str(), vc.port.to_string(), vc.user.as_str(), vc.password.as_str());
    let script = format!("{}/tests/vcsim_client.py", env!("CARGO_MANIFEST_DIR"));
    let mut client = Lines::spawn(Command::new(python).args([&script, host, &port, user, pass]));
    let hosts = field(&client.expect("COUNT HOSTS").replace("COUNT HOSTS ", "hosts="), "hosts");
    let vms = field(&client.expect("COUNT VMS").replace("COUNT VMS ", "vms="), "vms");
    client.expect("WAITING");

    let dir = tempfile::tempdir().unwrap();
    let config = netfold_config(dir.path(), &vc, "");
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", pass.to_string())]);
    let base = nf.http().await;
    nf.wait_line("vSphere inventory loaded").await;
    let log = nf.log();
    let loaded = log.lines().find(|l| l.contains("vSphere inventory loaded")).unwrap();
    assert_eq!((field(loaded, "hosts"), field(loaded, "vms")), (hosts, vms), "netfold read what pyVmomi reads");

    // vcsim's hosts carry no proxySwitch: DV port groups map to the switch's summary.hostMember,
    // so no VM's NIC on one is refused (the audit trail would say so in a Refused event).
    // (The Learnt of the first read and its Refused, if any, are appended in one batch.)
    let http = reqwest::Client::new();
    let deadline = Instant::now() + STEP;
    let first = loop {
        let all = events(&http, &base).await;
        if all.iter().any(|e| matches!(e.event, Event::Learnt { .. })) {
            break all;
        }
        assert!(Instant::now() < deadline, "no Learnt within {STEP:?}:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused: Vec<_> = first
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Refused { refusals } => Some(refusals),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(refused.is_empty(), "refused at vcsim's default inventory: {refused:?}");

    // The other client is parked on the default collector; netfold must still see this change.
    client.send("ADDNIC VM Network");
    let added = client.expect("ADDED ");
    let vm_name = added.split_whitespace().nth(1).expect("the VM's name").to_string();
    assert!(added.ends_with("success"), "{added}");
    let deadline = Instant::now() + STEP;
    loop {
        let body = http.get(format!("{base}/log?from=1")).send().await.unwrap().text().await.unwrap();
        let learnt = body.lines().map(|l| replay::audit::from_json(l).unwrap()).any(|e| match e.event {
            Event::Learnt { changes } => changes.iter().any(
                |c| matches!(c, Change::Upsert(Fact::Vnic(v)) if v.vm_name == vm_name && v.network == "VM Network"),
            ),
            _ => false,
        });
        if learnt {
            break;
        }
        assert!(Instant::now() < deadline, "netfold never learnt the new NIC of {vm_name}:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nf.stop().await;
}

/// Every `Learnt` after `seq`, with its seq.
async fn learnt_after(http: &reqwest::Client, base: &str, seq: u64) -> Vec<(u64, Vec<Change>)> {
    let body = http.get(format!("{base}/log?from={}", seq + 1)).send().await.unwrap().text().await.unwrap();
    body.lines()
        .map(|l| replay::audit::from_json(l).unwrap())
        .filter_map(|e| match e.event {
            Event::Learnt { changes } => Some((e.seq, changes)),
            _ => None,
        })
        .collect()
}

/// The log's head, from `/state`.
async fn head(http: &reqwest::Client, base: &str) -> u64 {
    let state: serde_json::Value = http.get(format!("{base}/state")).send().await.unwrap().json().await.unwrap();
    state["seq"].as_u64().unwrap()
}

/// The VLANs desired on `port`, from `/state`.
async fn vlans_on(http: &reqwest::Client, base: &str, port: &str) -> Vec<u64> {
    let state: serde_json::Value = http.get(format!("{base}/state")).send().await.unwrap().json().await.unwrap();
    let ports = state["ports"].as_array().unwrap();
    ports
        .iter()
        .filter(|p| p["port"] == port)
        .flat_map(|p| p["vlans"].as_array().unwrap().iter().map(|v| v["vlan"].as_u64().unwrap()))
        .collect()
}

/// Drives one delta through pyVmomi and returns the one `Learnt` it caused, once the VLANs on
/// `ports` are as wanted; a second `Learnt` meanwhile fails the test.
async fn delta(
    client: &mut Lines,
    http: &reqwest::Client,
    base: &str,
    command: &str,
    ports: &[(&str, &[u64])],
) -> Vec<Change> {
    let seq = head(http, base).await;
    client.send(command);
    let done = client.expect("DONE ");
    assert!(done.split_whitespace().nth(2).is_some_and(|s| s.starts_with("success")), "{command}: {done}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let learnt = learnt_after(http, base, seq).await;
        let mut on = Vec::new();
        for (port, _) in ports {
            on.push(vlans_on(http, base, port).await);
        }
        let want: Vec<Vec<u64>> = ports.iter().map(|(_, v)| v.to_vec()).collect();
        if !learnt.is_empty() && on == want {
            assert_eq!(learnt.len(), 1, "{command}: one Learnt, not {learnt:?}");
            return learnt.into_iter().next().unwrap().1;
        }
        assert!(Instant::now() < deadline, "{command}: Learnt {learnt:?}, VLANs {on:?} (want {want:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The one vNIC upsert of `changes`.
fn the_vnic(command: &str, changes: &[Change]) -> engine::VnicFact {
    match changes {
        [Change::Upsert(Fact::Vnic(v))] => v.clone(),
        other => panic!("{command}: want exactly one vNIC change, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim) and Python with pyvmomi: .ci/run runs it with --ignored"]
async fn live_deltas_through_pyvmomi_each_learnt_once_with_topology_by_host_name() {
    // vcsim reports no CDP/LLDP: hosts map to switch ports by name. Every host's vmnic1 has the
    // same MAC on vcsim, so an entry by that MAC is refused, never applied to one of them.
    let vc = start_vcsim(&["-vm-network-vlan", "100"]);
    let python = std::env::var("PYVMOMI_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!("{}/tests/vcsim_client.py", env!("CARGO_MANIFEST_DIR"));
    let mut client =
        Lines::spawn(Command::new(python).args([&script, &vc.host, &vc.port.to_string(), &vc.user, &vc.password]));
    client.expect("WAITING");
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"resync_secs = 3
[[switch]]
name = "mem"
kind = "memory"
[[topology]]
hypervisor = "vcsim"
host_name = "DC0_H0"
nic = "vmnic0"
port = "mem:Ethernet1/1"
[[topology]]
hypervisor = "vcsim"
host_name = "DC0_C0_H0"
nic = "vmnic0"
port = "mem:Ethernet1/2"
[[topology]]
hypervisor = "vcsim"
mac = "00:0c:29:81:d8:aa"
port = "mem:Ethernet1/9"
"#;
    let config = netfold_config(dir.path(), &vc, extra);
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", vc.password.clone())]);
    let base = nf.http().await;
    let http = reqwest::Client::new();
    nf.wait_line("vSphere inventory loaded").await;

    // The first read: the shared MAC refused (audited), the named hosts tied, the other two
    // cluster hosts warned about once each and counted.
    let deadline = Instant::now() + STEP;
    let first = loop {
        let all = events(&http, &base).await;
        if all.iter().any(|e| matches!(e.event, Event::Refused { .. })) {
            break all;
        }
        assert!(Instant::now() < deadline, "no Refused within {STEP:?}:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refusals: Vec<_> = first
        .iter()
        .filter_map(|e| match &e.event {
            Event::Refused { refusals } => Some(refusals.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].what.starts_with("[[topology]] #3 (mac `00:0c:29:81:d8:aa`"), "{:?}", refusals[0]);
    assert!(refusals[0].why.starts_with("it matches 4 uplinks"), "{:?}", refusals[0]);
    let facts: Vec<Change> = first
        .iter()
        .filter_map(|e| match &e.event {
            Event::Learnt { changes } => Some(changes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let host_id = |name: &str| {
        facts
            .iter()
            .find_map(|c| match c {
                Change::Upsert(Fact::Host(h)) if h.name == name => Some(h.host.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no host {name}"))
    };
    let (h0, c0h0) = (host_id("DC0_H0"), host_id("DC0_C0_H0"));
    let tied: Vec<(String, String)> = facts
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(Fact::Uplink(u)) if u.source == Some(engine::NeighbourSource::Static) => {
                Some((u.host.to_string(), u.port.as_ref().unwrap().to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(tied.len(), 2, "{tied:?}");
    assert!(
        tied.contains(&(h0.clone(), "mem:Ethernet1/1".into()))
            && tied.contains(&(c0h0.clone(), "mem:Ethernet1/2".into()))
    );
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"netfold_hosts_without_switch_port{hypervisor="vcsim"} 2"#), "{metrics}");
    assert_eq!(nf.count("host has uplinks but no known switch port"), 2, "{}", nf.log());

    let (e1, e2): (&str, &str) = ("mem:Ethernet1/1", "mem:Ethernet1/2");
    let none: &[u64] = &[];
    let vlan: &[u64] = &[100];
    // NIC re-backing from the DV port group onto the standard "VM Network" (VLAN 100).
    let c = delta(&mut client, &http, &base, "REBACK DC0_H0_VM0 VM Network", &[(e1, vlan), (e2, none)]).await;
    let v = the_vnic("REBACK", &c);
    assert_eq!((v.vm_name.as_str(), v.network.as_str(), v.host.as_str()), ("DC0_H0_VM0", "VM Network", h0.as_str()));
    nf.wait_line("mem Ethernet1/1: added VLAN 100").await;
    // Power off, on.
    let c = delta(&mut client, &http, &base, "POWER DC0_H0_VM0 off", &[(e1, none), (e2, none)]).await;
    assert!(!the_vnic("POWER off", &c).powered_on);
    let c = delta(&mut client, &http, &base, "POWER DC0_H0_VM0 on", &[(e1, vlan), (e2, none)]).await;
    assert!(the_vnic("POWER on", &c).powered_on);
    // vMotion to the other named host: the VLAN follows the VM to its port.
    let c = delta(&mut client, &http, &base, "RELOCATE DC0_H0_VM0 DC0_C0_H0", &[(e1, none), (e2, vlan)]).await;
    assert_eq!(the_vnic("RELOCATE", &c).host, c0h0);
    // NIC disconnect.
    let c = delta(&mut client, &http, &base, "DISCONNECT DC0_H0_VM0", &[(e1, none), (e2, none)]).await;
    assert!(!the_vnic("DISCONNECT", &c).connected);
    // Destroy (vcsim unregisters only a powered-off VM): the VM on DC0_H0, re-backed first.
    delta(&mut client, &http, &base, "REBACK DC0_H0_VM1 VM Network", &[(e1, vlan), (e2, none)]).await;
    delta(&mut client, &http, &base, "POWER DC0_H0_VM1 off", &[(e1, none), (e2, none)]).await;
    let c = delta(&mut client, &http, &base, "DESTROY DC0_H0_VM1", &[(e1, none), (e2, none)]).await;
    assert!(matches!(&c[..], [Change::Remove(engine::FactKey::Vnic { .. })]), "DESTROY: {c:?}");

    // netfold's session terminated by another client: it logs in again and keeps its facts.
    let facts_before = {
        let s: serde_json::Value = http.get(format!("{base}/state")).send().await.unwrap().json().await.unwrap();
        s["hypervisors"][0]["facts"].as_u64().unwrap()
    };
    let seq = head(&http, &base).await;
    let logins = |m: &str| m.lines().find(|l| l.starts_with("netfold_adapter_logins_total{")).map(str::to_string);
    let before = logins(&http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap());
    client.send("TERMINATE-OTHERS");
    let done = client.expect("DONE TERMINATE-OTHERS");
    assert!(done.contains("success:") && !done.ends_with("success:0"), "{done}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if logins(&m) != before {
            break;
        }
        assert!(Instant::now() < deadline, "no new login after TerminateSession:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after: Vec<_> = events(&http, &base).await.into_iter().filter(|e| e.seq > seq).collect();
    assert!(
        after.iter().all(|e| !matches!(e.event, Event::Expired | Event::Learnt { .. })),
        "a terminated session loses nothing: {:?}",
        after.iter().map(|e| e.event.name()).collect::<Vec<_>>()
    );
    let s: serde_json::Value = http.get(format!("{base}/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(s["hypervisors"][0]["facts"].as_u64().unwrap(), facts_before);
    // ... and keeps learning.
    let c = delta(&mut client, &http, &base, "RELOCATE DC0_C0_RP0_VM0 DC0_H0", &[(e1, none), (e2, none)]).await;
    assert_eq!(the_vnic("RELOCATE after TerminateSession", &c).host, h0);
    let c = delta(&mut client, &http, &base, "REBACK DC0_C0_RP0_VM0 VM Network", &[(e1, vlan), (e2, none)]).await;
    assert_eq!(the_vnic("REBACK after TerminateSession", &c).network, "VM Network");

    // vcsim's ReconfigureDVPortgroup_Task sets the config without telling the property
    // collector (no update), so it is learnt at the next periodic full read (resync_secs = 3).
    for (command, want) in [
        ("DVPG-VLAN DC0_DVPG0 200", engine::VlanSpec::Access(engine::VlanId::new(200).unwrap())),
        ("DVPG-TRUNK DC0_DVPG0 300-310", engine::VlanSpec::Trunk(vec!["300-310".parse().unwrap()])),
    ] {
        let c = delta(&mut client, &http, &base, command, &[(e1, vlan), (e2, none)]).await;
        let networks: Vec<_> = c
            .iter()
            .map(|c| match c {
                Change::Upsert(Fact::Network(n)) if n.name == "DC0_DVPG0" => n.vlan.clone(),
                other => panic!("{command}: not the port group's change: {other:?}"),
            })
            .collect();
        assert_eq!(networks, vec![want; 4], "{command}: the port group on each of the switch's 4 member hosts");
    }
    nf.stop().await;
}

/// vcsim over https with its own self-signed certificate and the thumbprint govmomi prints for
/// it (`-tls`).
fn vcsim_tls() -> Vcsim {
    let vc = start_vcsim(&["-tls"]);
    assert!(vc.url().starts_with("https://"), "{}", vc.url());
    vc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim): .ci/run runs it with --ignored"]
async fn vcsims_self_signed_certificate_is_trusted_by_its_pinned_thumbprint_and_no_other() {
    let vc = vcsim_tls();
    let thumbprint = vc.thumbprint.clone().expect("vcsim -tls prints its thumbprint");
    assert_eq!(thumbprint.split(':').count(), 32, "govmomi's SHA-256 thumbprint: {thumbprint}");
    let (url, user, pass) = (vc.url(), vc.user.clone(), vc.password.clone());

    // The real binary, pinned to what govmomi says the certificate is.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[hypervisor]]\nname = \"vcsim\"\nkind = \"vmware\"\n\
             url = \"{url}\"\nuser = \"{user}\"\npassword = {{ password_env = \"VCSIM_PASSWORD\" }}\n\
             tls = {{ thumbprint = \"sha256:{thumbprint}\" }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", pass.clone())]);
    nf.wait_line("vSphere inventory loaded").await;
    nf.stop().await;

    // Without the pin the self-signed certificate is refused; with another pin, refused naming
    // the thumbprint seen, which is govmomi's.
    use adapters::common::{HttpClient, SecretString, Thumbprint, Timeouts, TlsOptions};
    let login = |tls: TlsOptions| {
        let (url, user, pass) = (url.clone(), user.clone(), pass.clone());
        async move {
            let http = HttpClient::new(&tls, &Timeouts::flat(Duration::from_secs(10)), 1 << 20).unwrap();
            adapters::vsphere::client::Session::login(&http, &url, &user, &SecretString::from(pass))
                .await
                .map(drop)
                .map_err(|e| adapters::driver::chain(&e))
        }
    };
    let e = login(TlsOptions::default()).await.unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    let other = Thumbprint([0x5A; 32]);
    let e = login(TlsOptions { thumbprint: Some(other.to_string()), ..Default::default() }).await.unwrap_err();
    assert!(e.contains(&format!("has thumbprint sha256:{thumbprint}, not the configured {other}")), "{e}");
    login(TlsOptions { thumbprint: Some(format!("sha256:{thumbprint}")), ..Default::default() }).await.unwrap();
}
