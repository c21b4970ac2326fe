//! `netfold demo`: the embedded default. It starts a vCenter simulator and a XenServer pool
//! simulator on loopback, runs the real agent against them (real SOAP and XML-RPC, a real sled
//! log in a data directory) with an in-memory switch, and plays the seed scenario with a short
//! grace period: learn both; a VM moves host; a port group's VLAN changes; the XenServer drops
//! and returns within grace; the vCenter stays down past grace. Each step waits until the switch
//! has converged, and the demo fails (non-zero exit) if any step does not happen.
//!
//! The switch is in memory by default; `--switch ovs` starts a private Open vSwitch
//! ([`sims::ovs_lab`]) and drives it over OVSDB. Its six trunk ports keep the simulators'
//! names (`Ethernet1/1`…: OVSDB accepts `/` in a port name; the ports have no kernel device)
//! and start with only the parking VLAN, which the demo's tables leave out.
//!
//! The vCenter reports CDP/LLDP for its hosts; the XenServer pool, like a real one, reports
//! nothing about cabling, so its PIFs are tied by their MACs through the switch's MAC table
//! (ADR 0011). The in-memory switch's table holds the PIF MACs on the ports the simulator cables
//! them to. Open vSwitch learns MACs only from frames, and the lab's ports have no devices to
//! carry any, so the demo puts the PIF MACs into OVS's real MAC learning table with
//! `ovs-appctl fdb/add` (the XenServer's two ports are patch ports, which have OpenFlow port
//! numbers), again every second as a host's traffic would (ovs-vswitchd flushes them when it
//! reconfigures the bridge); netfold reads them back with `fdb/show` over the control socket,
//! exactly as on a production switch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use adapters::common::SecretSource;
use adapters::{ovs, vsphere, xen};
use anyhow::{bail, Context, Result};
use engine::discovery::Discovery;
use engine::projector::Status;
use engine::switch::{Grammar, MemorySwitch, PortName, Switch};
use engine::{HypervisorId, Kind, VlanId};
use sims::ovs_lab::Lab;
use tokio::time::Instant;

use crate::agent::{Adapter, Agent};
use crate::cli::{DemoArgs, DemoSwitch};

const SWITCH: &str = "tor1";
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The OVS switch's parking VLAN (kept on a trunk instead of leaving it empty).
const PARKING: u16 = 4094;

/// The switch's VLANs per port, as the demo prints and compares them.
type PortTable = BTreeMap<String, BTreeSet<u16>>;

pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("netfold-demo-{}", std::process::id())),
    };
    if store::layout::db_path(&data_dir).exists() {
        bail!("{} already holds a netfold database: give the demo a fresh --data-dir", data_dir.display());
    }
    println!("netfold demo — grace period {} s (production default 180 s)", args.grace_secs);
    println!("data directory: {}\n", data_dir.display());

    let vc = sims::vsphere::Simulator::start(sims::vsphere::SimOptions::lab(SWITCH, "Ethernet1/"))
        .await
        .context("starting the vCenter simulator")?;
    let xen_opts = sims::xen::SimOptions { lldp_convention: false, ..sims::xen::SimOptions::lab(SWITCH, "Ethernet2/") };
    let xs = sims::xen::Simulator::start(xen_opts).await.context("starting the XenServer simulator")?;
    println!("vCenter simulator   {}  (SOAP, urn:vim25)", vc.url());
    println!("XenServer simulator {}  (XenAPI XML-RPC)\n", xs.url());

    let config = engine::config::Config { grace_secs: args.grace_secs, ..Default::default() };
    let mut agent = Agent::start_now(&data_dir, config).await?;
    // The switch's host-facing ports, as cabled in the simulators (no VLANs on them yet).
    let ports: Vec<String> =
        (1..=4).map(|n| format!("Ethernet1/{n}")).chain((1..=2).map(|n| format!("Ethernet2/{n}"))).collect();
    let reconcile = engine::reconciler::Config {
        resync: Duration::from_secs(2),
        discover_every: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    // Where the XenServer's PIFs are cabled, as the switch's MAC table will show it.
    let cabling: Vec<(String, String)> = xs.cabling().into_iter().map(|(mac, _, port)| (mac, port)).collect();
    println!("XenServer PIFs are tied through the switch's MAC table (XenAPI reports no LLDP):");
    for (mac, port) in &cabling {
        println!("  {mac} on {SWITCH}:{port}");
    }
    println!();

    // The simulators' passwords reach the adapters the production way: through the environment.
    std::env::set_var("NETFOLD_DEMO_VC_PASSWORD", vc.password());
    std::env::set_var("NETFOLD_DEMO_XEN_PASSWORD", xs.password());
    let mut vcfg = vsphere::Config::new(vc.url(), vc.user(), SecretSource::env("NETFOLD_DEMO_VC_PASSWORD"));
    vcfg.wait_max_seconds = 1;
    vcfg.liveness_secs = 3;
    vcfg.connect_timeout_ms = 1_000;
    vcfg.backoff_initial_ms = 200;
    vcfg.backoff_max_ms = 1_000;
    let mut xcfg = xen::Config::new(xs.url(), xs.user(), SecretSource::env("NETFOLD_DEMO_XEN_PASSWORD"));
    xcfg.event_timeout_secs = 1.0;
    xcfg.liveness_secs = 3;
    xcfg.connect_timeout_ms = 1_000;
    xcfg.backoff_initial_ms = 200;
    xcfg.backoff_max_ms = 1_000;
    let (vc_id, xs_id) = (HypervisorId::new("vc-east")?, HypervisorId::new("xen217")?);
    agent.add_hypervisor(vc_id.clone(), Kind::VMware, Adapter::VMware(vcfg)).await?;
    agent.add_hypervisor(xs_id.clone(), Kind::XenCitrix, Adapter::Xen(xcfg)).await?;

    let xen_ports: BTreeSet<String> = cabling.iter().map(|(_, p)| p.clone()).collect();
    let sc = Scenario { vc: &vc, xs: &xs, vc_id: &vc_id, xs_id: &xs_id, grace_secs: args.grace_secs, xen_ports };
    let (after, lab) = match args.switch {
        DemoSwitch::Memory => {
            let switch = Arc::new(ports.iter().fold(MemorySwitch::new(SWITCH), |s, p| s.with_port(p, [])));
            let macs = cabling.iter().map(|(mac, p)| PortName::parse(Grammar::Memory, p).map(|p| (mac.clone(), p)));
            let macs = macs.collect::<Result<Vec<_>, _>>()?;
            switch.set_discovery(Some(Discovery { macs, ..Discovery::default() }));
            agent.add_switch(switch.clone(), reconcile)?;
            let demo = Demo { agent: &agent, switch: &*switch, ports: ports.into_iter().collect(), parking: None };
            (demo.play(&sc).await?, None)
        }
        DemoSwitch::Ovs => {
            let (lab, switch) = start_ovs(&ports, &sc.xen_ports).await?;
            let lab = Arc::new(lab);
            let teach = teach_macs(lab.clone(), cabling.clone());
            agent.add_switch(switch.clone(), reconcile)?;
            let parking = Some(PARKING);
            let demo = Demo { agent: &agent, switch: &*switch, ports: ports.into_iter().collect(), parking };
            let played = demo.play(&sc).await;
            teach.abort();
            let _ = teach.await;
            (played?, Some(lab))
        }
    };

    println!("\nFinal desired state (ports, VLANs, reasons):");
    agent.engine.state().read(|st| crate::audit::print_desired(st, None));
    let elapsed = started.elapsed();
    agent.shutdown().await?;
    drop(xs);
    if let Some(lab) = lab {
        // Tearing the lab down runs ovs-vsctl and waits for the daemons: off the runtime.
        tokio::task::spawn_blocking(move || drop(lab)).await.context("stopping the Open vSwitch lab")?;
    }
    println!("\nDemo finished in {:.1} s. The log stays in {} — try:", elapsed.as_secs_f64(), data_dir.display());
    let dd = data_dir.display();
    println!("  netfold log   --data-dir {dd}");
    println!("  netfold state --data-dir {dd} --at 3");
    if let Some((port, vlan)) = first_port_vlan(&after) {
        println!("  netfold why   --data-dir {dd} --port {SWITCH}:{port} --vlan {vlan}");
    }
    println!("  netfold verify --data-dir {dd}");
    Ok(())
}

fn first_port_vlan(t: &PortTable) -> Option<(String, u16)> {
    t.iter().find_map(|(p, v)| v.iter().next().map(|v| (p.clone(), *v)))
}

fn step(n: u32, what: &str) {
    println!("\n== Step {n}: {what}");
}

struct Demo<'a, S> {
    agent: &'a Agent,
    switch: &'a S,
    /// The switch's host-facing ports.
    ports: BTreeSet<String>,
    /// A VLAN the switch keeps on otherwise empty trunks, left out of the tables.
    parking: Option<u16>,
}

/// What a step waits for, read from the projected state.
struct View<'a>(&'a engine::State);

impl View<'_> {
    fn status(&self, id: &HypervisorId) -> Option<Status> {
        self.0.status(id).map(|s| s.status)
    }
    fn live(&self, id: &HypervisorId) -> bool {
        self.status(id) == Some(Status::Live)
    }
    fn lost(&self, id: &HypervisorId) -> bool {
        matches!(self.status(id), Some(Status::Lost { .. }))
    }
    fn expired(&self, id: &HypervisorId) -> bool {
        self.status(id) == Some(Status::Expired)
    }
    fn vm_on(&self, id: &HypervisorId, vm: &str, host: &str) -> bool {
        self.0.facts_of(id).is_some_and(|f| {
            f.iter().any(|r| matches!(r.to_fact(), engine::Fact::Vnic(v) if v.vm == vm && v.host == host))
        })
    }
}

/// The peers the scenario acts on.
struct Scenario<'a> {
    vc: &'a sims::vsphere::SimHandle,
    xs: &'a sims::xen::Simulator,
    vc_id: &'a HypervisorId,
    xs_id: &'a HypervisorId,
    grace_secs: u64,
    /// The switch ports the XenServer's PIFs are cabled to.
    xen_ports: BTreeSet<String>,
}

/// Puts the XenServer's PIF MACs in the lab's MAC table every second (see the module docs)
/// until aborted.
fn teach_macs(lab: Arc<Lab>, cabling: Vec<(String, String)>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (lab, cabling) = (lab.clone(), cabling.clone());
            let taught = tokio::task::spawn_blocking(move || {
                cabling.iter().try_for_each(|(mac, port)| lab.fdb_add(port, PARKING, mac))
            })
            .await;
            if let Ok(Err(e)) = taught {
                tracing::warn!(error = %e, "cannot put the XenServer's MACs in the lab's MAC table");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Starts the Open vSwitch lab with the demo's trunk ports (parking VLAN only; those in
/// `patched` as patch ports, which can hold MAC table entries) and connects netfold's OVSDB
/// client to it.
async fn start_ovs(ports: &[String], patched: &BTreeSet<String>) -> Result<(Lab, Arc<ovs::OvsSwitch>)> {
    let owned = ports.to_vec();
    let patched = patched.clone();
    let lab = tokio::task::spawn_blocking(move || -> Result<Lab, sims::ovs_lab::Error> {
        let lab = Lab::start()?;
        for (i, p) in owned.iter().enumerate() {
            if patched.contains(p) {
                lab.add_patch_trunk_port(p, &format!("nfdemo-peer{i}"), &[PARKING])?;
            } else {
                lab.add_trunk_port(p, &[PARKING])?;
            }
        }
        Ok(lab)
    })
    .await
    .context("starting the Open vSwitch lab")?
    .context("`netfold demo --switch ovs` needs Open vSwitch on this machine (or run `netfold demo` for the in-memory switch)")?;
    println!(
        "Open vSwitch        {}  (OVSDB; bridge {}, userspace datapath, parking VLAN {PARKING})",
        lab.unix_endpoint(),
        lab.bridge()
    );
    let c = ovs::Config {
        name: SWITCH.into(),
        endpoint: lab.unix_endpoint(),
        parking_vlan: PARKING,
        timeout_ms: 5_000,
        unixctl: Some(lab.unixctl().display().to_string()),
    };
    let switch = Arc::new(ovs::OvsSwitch::start(&c).context("connecting to the Open vSwitch lab")?);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while let Err(e) = switch.read(&BTreeSet::new()).await {
        if Instant::now() >= deadline {
            bail!("the Open vSwitch lab's OVSDB at {} did not answer: {e}", lab.unix_endpoint());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((lab, switch))
}

impl<S: Switch> Demo<'_, S> {
    /// Plays the five steps; returns the switch's table at the end.
    async fn play(&self, sc: &Scenario<'_>) -> Result<PortTable> {
        step(1, "learn both hypervisors");
        let xen_ports = &sc.xen_ports;
        let learnt = self
            .converged(|t, st| {
                st.live(sc.vc_id)
                    && st.live(sc.xs_id)
                    && !xen_ports.is_empty()
                    && xen_ports.iter().all(|p| t.get(p).is_some_and(|v| !v.is_empty()))
            })
            .await?;
        print_table(&learnt);
        let ties = self.agent.engine.state().read(|s| s.ties_of(sc.xs_id));
        for t in &ties {
            let source = t.source.map_or("nothing".to_string(), |s| s.to_string());
            let port = t.port.as_ref().map_or("no port".to_string(), ToString::to_string);
            println!("  {} uplink {}/{} -> {port} (by {source})", sc.xs_id, t.host, t.nic);
        }
        if ties.iter().any(|t| t.source != Some(engine::NeighbourSource::MacTable)) {
            bail!("the XenServer's PIFs were not all tied by the switch's MAC table");
        }

        step(2, "a VM moves to another host (vMotion)");
        let vm = sc.vc.vm_ids().into_iter().next().context("the vCenter simulator has no VM")?;
        let (from, _) = sc.vc.vm_info(&vm).context("VM vanished")?;
        let to = sc.vc.host_ids().into_iter().find(|h| *h != from).context("only one host")?;
        let before = self.table().await?;
        sc.vc.move_vm(&vm, &to)?;
        println!("  {vm}: {from} -> {to}");
        let moved = self.converged(|t, st| st.vm_on(sc.vc_id, &vm, &to) && *t != PortTable::new()).await?;
        print_changes(&before, &moved);

        step(3, "a port group's VLAN changes (pg-101: VLAN 101 -> 150)");
        let before = self.table().await?;
        sc.vc.set_portgroup_vlan("pg-101", 150)?;
        let changed = self.converged(|t, _| t.values().any(|v| v.contains(&150))).await?;
        print_changes(&before, &changed);

        step(4, "the XenServer drops and returns within the grace period");
        let before = self.table().await?;
        sc.xs.cut();
        self.converged(|_, st| st.lost(sc.xs_id)).await?;
        tokio::time::sleep(Duration::from_secs(sc.grace_secs.min(4) / 2 + 1)).await;
        sc.xs.restore();
        let back = self.converged(|_, st| st.live(sc.xs_id)).await?;
        if back != before {
            print_changes(&before, &back);
            bail!("the switch changed across an outage within grace; nothing should have been removed");
        }
        println!("  nothing removed: the switch is exactly as before the outage");

        step(5, "the vCenter stays down past the grace period");
        let before = self.table().await?;
        sc.vc.cut(sims::vsphere::Cut::Refuse).await;
        let vc_ports: BTreeSet<String> = self.ports_of(sc.vc_id);
        let after = self
            .converged(|t, st| st.expired(sc.vc_id) && vc_ports.iter().all(|p| t.get(p).is_none_or(|v| v.is_empty())))
            .await?;
        print_changes(&before, &after);
        let kept: BTreeSet<u16> = after.values().flatten().copied().collect();
        println!("  VLANs still configured for the XenServer: {kept:?}");
        Ok(after)
    }

    /// The switch's VLANs on every port netfold's desired state has ever named or the switch has.
    async fn table(&self) -> Result<PortTable> {
        let mut ports = self.agent.engine.state().read(|s| {
            s.desired().ports.keys().filter(|p| p.switch == SWITCH).map(|p| p.port.clone()).collect::<BTreeSet<_>>()
        });
        ports.extend(self.ports.iter().cloned());
        let grammar = self.switch.grammar();
        let names: BTreeSet<PortName> = ports.iter().filter_map(|p| PortName::parse(grammar, p).ok()).collect();
        let observed = self.switch.read(&names).await.with_context(|| format!("reading switch {SWITCH}"))?;
        Ok(ports
            .into_iter()
            .map(|p| {
                let name = PortName::parse(grammar, &p).ok();
                let v = name
                    .and_then(|n| observed.get(&n))
                    .into_iter()
                    .flatten()
                    .map(|v| v.get())
                    .filter(|v| Some(*v) != self.parking);
                (p, v.collect())
            })
            .collect())
    }

    /// The ports `id`'s facts cable to.
    fn ports_of(&self, id: &HypervisorId) -> BTreeSet<String> {
        self.agent.engine.state().read(|s| {
            s.desired()
                .ports
                .iter()
                .filter(|(_, vlans)| vlans.values().flatten().any(|r| r.hypervisor == *id))
                .map(|(p, _)| p.port.clone())
                .collect()
        })
    }

    /// Waits until `cond` holds and the switch matches desired state; returns the switch table.
    async fn converged(&self, cond: impl Fn(&PortTable, &View) -> bool) -> Result<PortTable> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            // A failed read (the switch reconnecting) is retried until the deadline.
            let table = self.table().await.unwrap_or_default();
            let desired: PortTable = self.agent.engine.state().read(|s| {
                s.desired()
                    .vlans_for(SWITCH)
                    .into_iter()
                    .map(|(p, v)| (p, v.into_iter().map(VlanId::get).collect()))
                    .collect()
            });
            let in_step = table.iter().all(|(p, v)| desired.get(p).cloned().unwrap_or_default() == *v)
                && desired.iter().all(|(p, v)| table.get(p) == Some(v));
            if in_step && self.agent.engine.state().read(|s| cond(&table, &View(s))) {
                return Ok(table);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the demo step did not complete within {} s; the switch holds {table:?}, desired is {desired:?}",
                    STEP_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn print_table(t: &PortTable) {
    for (p, v) in t {
        println!("  {SWITCH}:{p:<14} VLANs {v:?}");
    }
}

fn print_changes(before: &PortTable, after: &PortTable) {
    let ports: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut any = false;
    for p in ports {
        let (b, a) = (before.get(p).cloned().unwrap_or_default(), after.get(p).cloned().unwrap_or_default());
        let added: Vec<_> = a.difference(&b).collect();
        let removed: Vec<_> = b.difference(&a).collect();
        if !added.is_empty() || !removed.is_empty() {
            any = true;
            println!("  {SWITCH}:{p:<14} added {added:?} removed {removed:?}");
        }
    }
    if !any {
        println!("  (no VLAN change on the switch)");
    }
}
