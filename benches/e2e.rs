//! End-to-end latency benchmark: a change made in the vCenter simulator → the VLAN applied on a
//! real Open vSwitch, through the real `netfold` binary (SOAP property collector → engine → sled
//! log → projector → reconciler → OVSDB).
//!
//! Two runs: a small inventory (2 hosts, 4 VMs) and a loaded one (1,000 hosts and 50,000 VMs,
//! 2,000 switch ports; `NETFOLD_BENCH_HOSTS` / `NETFOLD_BENCH_VMS_PER_HOST` override). In each, a
//! bench VM's NIC is moved back and forth between two port groups (VLANs 3000 and 3001) 1,000
//! times (`NETFOLD_BENCH_CHANGES`); each change waits until OVS's `trunks` on the VM's host port
//! holds the new VLAN, observed through an OVSDB monitor (no polling interval in the figure).
//! Prints p50/p90/p99/max, the initial learn time, and the RSS of the netfold process and of
//! this process (which hosts the simulator).
//!
//! Run: `cargo bench --bench e2e` (needs Open vSwitch: `apt-get install -y openvswitch-switch`).
//! `NETFOLD_BENCH_CHANGES` / `NETFOLD_BENCH_LOADED_CHANGES` set the number of changes per run,
//! `NETFOLD_BENCH_ONLY=small|loaded` runs one of the two, `NETFOLD_BENCH_KEEP=1` keeps each run's
//! directory (config, data, `netfold.log`; `NETFOLD_BENCH_LOG` sets its `RUST_LOG`). In the loaded run only the first
//! `NETFOLD_BENCH_MANAGED_PORTS` (default 4) of the 2,000 cabled ports exist on OVS and are
//! managed (the rest are `excluded_ports`): the engine carries the whole inventory, while the
//! switch side stays what a real top-of-rack switch is. (With all 2,000 on the lab OVS, the
//! first reconcile sends 2,000 per-port transactions, each bumping `next_cfg` so that
//! ovs-vswitchd reconfigures 2,000 device-less ports; requests pass the 5 s timeout.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adapters::ovs::{self, OvsSwitch};
use anyhow::{bail, Context, Result};
use engine::switch::Switch;
use engine::switch::{Grammar, PortName};
use sims::ovs_lab::Lab;
use sims::vsphere::{SimHandle, SimNet, SimOptions, Simulator};

const PARKING: u16 = 4094;
const VLAN_A: u16 = 3000;
const VLAN_B: u16 = 3001;
/// Bounds on one change reaching the switch and on the initial learn.
const CHANGE_LIMIT: Duration = Duration::from_secs(20);
const LEARN_LIMIT: Duration = Duration::from_secs(600);

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Netfold(Child);

impl Netfold {
    fn stop(mut self) -> Result<()> {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().context("kill -TERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("netfold did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Netfold {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits (OVSDB monitor updates, with a 50 ms safety read) until `cond` holds on the ports read.
async fn until(
    sw: &OvsSwitch,
    drift: &mut tokio::sync::watch::Receiver<u64>,
    ports: &BTreeSet<PortName>,
    limit: Duration,
    cond: impl Fn(&engine::switch::Observed) -> bool,
) -> Result<engine::switch::Observed> {
    let deadline = Instant::now() + limit;
    loop {
        drift.borrow_and_update();
        if let Ok(obs) = sw.read(ports).await {
            if cond(&obs) {
                return Ok(obs);
            }
        }
        if Instant::now() > deadline {
            bail!("the switch did not reach the expected state within {limit:?}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), drift.changed()).await;
    }
}

async fn scenario(label: &str, hosts: usize, vms_per_host: usize, managed: usize, changes: usize) -> Result<()> {
    let all_ports = hosts * 2;
    let n_ports = managed.min(all_ports);
    println!(
        "\n== {label}: {hosts} hosts, {} VMs, {all_ports} cabled ports of which {n_ports} on OVS and managed, {changes} changes",
        hosts * vms_per_host
    );
    let ports: Vec<String> = (1..=n_ports).map(|n| format!("Ethernet1/{n}")).collect();
    // Ports beyond `managed` are excluded by the switch policy: netfold plans nothing for them.
    let excluded: Vec<String> = (n_ports + 1..=all_ports).map(|n| format!("\"Ethernet1/{n}\"")).collect();
    let lab_ports = ports.clone();
    let lab = tokio::task::spawn_blocking(move || -> Result<Lab> {
        let lab = Lab::start()?;
        // One ovs-vsctl transaction per 250 ports.
        for chunk in lab_ports.chunks(250) {
            let mut args: Vec<String> = vec!["--no-wait".into()];
            for p in chunk {
                let cmd = format!("add-port {} {p} -- set port {p} vlan_mode=trunk trunks=[{PARKING}]", lab.bridge());
                args.push("--".into());
                args.extend(cmd.split(' ').map(String::from));
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.vsctl(&refs)?;
        }
        Ok(lab)
    })
    .await??;

    let t = Instant::now();
    let vc: SimHandle = Simulator::start(SimOptions {
        hosts,
        vms_per_host,
        portgroups: 2,
        first_vlan: 100,
        switch_name: "tor1".into(),
        port_prefix: "Ethernet1/".into(),
        ..Default::default()
    })
    .await?;
    println!("simulator up in {:.2} s", t.elapsed().as_secs_f64());
    vc.add_portgroup("pg-bench-a", i64::from(VLAN_A))?;
    vc.add_portgroup("pg-bench-b", i64::from(VLAN_B))?;
    let host = vc.host_ids().into_iter().next().context("no host")?;
    let vm = vc.add_vm(&host, "bench-vm", SimNet::Standard("pg-bench-a".into()))?;

    let dir = tempfile::tempdir()?;
    if std::env::var_os("NETFOLD_BENCH_KEEP").is_some() {
        println!("keeping the run's directory (config, data, netfold.log): {}", dir.path().display());
    }
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[hypervisor]]\nname = \"vc\"\nkind = \"vmware\"\nurl = \"{}\"\nallow_plaintext = true\nuser = \"{}\"\npassword = {{ password_env = \"BENCH_VC_PASSWORD\" }}\n[[switch]]\nname = \"tor1\"\nkind = \"ovs\"\naddress = \"{}\"\nexcluded_ports = [{}]\n",
            dir.path().join("data").display(),
            vc.url(),
            vc.user(),
            lab.unix_endpoint(),
            excluded.join(", ")
        ),
    )?;
    let stderr = std::fs::File::create(dir.path().join("netfold.log"))?;
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_netfold"))
        .args(["run", "-c", config.to_str().context("path")?])
        .env("BENCH_VC_PASSWORD", vc.password())
        .env("RUST_LOG", std::env::var("NETFOLD_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("start netfold")?;
    let nf = Netfold(child);
    let pid = nf.0.id();

    let sw = OvsSwitch::start(&ovs::Config {
        name: "tor1".into(),
        endpoint: lab.unix_endpoint(),
        parking_vlan: PARKING,
        timeout_ms: 30_000,
        unixctl: None,
    })?;
    let mut drift = sw.drift().context("the OVS switch has no monitor")?;
    let all: BTreeSet<PortName> = ports.iter().map(|p| PortName::parse(Grammar::Ovs, p)).collect::<Result<_, _>>()?;
    let learnt = until(&sw, &mut drift, &all, LEARN_LIMIT, |o| {
        o.len() == n_ports
            && o.values().all(|v| v.iter().any(|v| v.get() == 100) && v.iter().any(|v| v.get() == 101))
            && o.values().any(|v| v.iter().any(|v| v.get() == VLAN_A))
    })
    .await
    .with_context(|| log_tail(dir.path()))?;
    let learn = t.elapsed();
    let watched: BTreeSet<PortName> =
        learnt.iter().filter(|(_, v)| v.iter().any(|v| v.get() == VLAN_A)).map(|(p, _)| p.clone()).collect();
    let (rss, hwm) = rss_mib(pid);
    let (own, own_hwm) = rss_mib(std::process::id());
    println!("initial learn → all {n_ports} ports configured: {:.2} s; bench VM on {watched:?}", learn.as_secs_f64());
    println!("RSS after learn: netfold {rss:.1} MiB (peak {hwm:.1}); bench process with simulator {own:.1} MiB (peak {own_hwm:.1})");

    let mut lat = Vec::with_capacity(changes);
    let mut first = None;
    // Change 0 is a warm-up, reported on its own: at scale it waits behind the agent's
    // post-learn work.
    for i in 0..=changes {
        let (pg, vlan) = if i % 2 == 0 { ("pg-bench-b", VLAN_B) } else { ("pg-bench-a", VLAN_A) };
        let t = Instant::now();
        vc.set_nic_network(&vm, 4000, SimNet::Standard(pg.into()))?;
        let limit = if i == 0 { LEARN_LIMIT } else { CHANGE_LIMIT };
        until(&sw, &mut drift, &watched, limit, |o| {
            watched.iter().all(|p| o.get(p).is_some_and(|v| v.iter().any(|v| v.get() == vlan)))
        })
        .await
        .with_context(|| format!("change {i}: {}", log_tail(dir.path())))?;
        if i == 0 {
            first = Some(t.elapsed());
        } else {
            lat.push(t.elapsed());
        }
    }
    if let Some(f) = first {
        println!("first change after learn (warm-up, not in the figures): {:.1} ms", ms(f));
    }
    lat.sort();
    let mean = lat.iter().sum::<Duration>() / lat.len().max(1) as u32;
    println!(
        "change in simulator → VLAN applied on OVS, n={}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        lat.len(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().context("no samples")?),
        ms(mean)
    );
    let (rss, hwm) = rss_mib(pid);
    let (own, own_hwm) = rss_mib(std::process::id());
    println!("RSS after changes: netfold {rss:.1} MiB (peak {hwm:.1}); bench process with simulator {own:.1} MiB (peak {own_hwm:.1})");
    nf.stop()?;
    drop(sw);
    if std::env::var_os("NETFOLD_BENCH_KEEP").is_some() {
        let _ = dir.keep();
    }
    tokio::task::spawn_blocking(move || drop(lab)).await?;
    Ok(())
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("netfold.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!("netfold log tail:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
}

fn main() -> Result<()> {
    // `cargo test --benches` runs bench binaries without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let changes = env_usize("NETFOLD_BENCH_CHANGES", 1_000)?;
    let loaded_changes = env_usize("NETFOLD_BENCH_LOADED_CHANGES", changes)?;
    let hosts = env_usize("NETFOLD_BENCH_HOSTS", 1_000)?;
    let vms = env_usize("NETFOLD_BENCH_VMS_PER_HOST", 50)?;
    let managed = env_usize("NETFOLD_BENCH_MANAGED_PORTS", 4)?;
    let only = std::env::var("NETFOLD_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        if only != "loaded" {
            scenario("small inventory", 2, 2, 4, changes).await?;
        }
        if only != "small" {
            scenario("loaded inventory", hosts, vms, managed, loaded_changes).await?;
        }
        Ok(())
    })
}
