//! `netfold run` and `netfold config check`: load the config, start the agent on it, serve until
//! SIGINT/SIGTERM, shut down gracefully.
//!
//! Start-up fails fast, with one clear paragraph, on what an operator must fix: a bad config, a
//! data directory that cannot be opened or recovered. Whatever hypervisor or switch is
//! unreachable, netfold starts: a hypervisor the log shows as live is lost at its adapter's
//! first failed attempt (the seed's `Retrying...` line, grace armed), one never learnt is retried
//! and shows in `/healthz` until it answers; a switch's reconciler retries with backoff and
//! reports it failing, while every other switch and every hypervisor session proceeds.
//!
//! On PostgreSQL, several instances run with one config and share the work (ADR 0014): each
//! follows the shared log, and runs the hypervisor sessions and switch reconcilers whose leases
//! it holds, up to a fair share ([`crate::cluster`]); work whose lease is lost stops at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use adapters::{eapi, ovs};
use anyhow::{Context, Result};
use engine::clock::SystemClock;
use engine::runtime::Work;
use engine::switch::{MemorySwitch, Switch};
use engine::{HypervisorId, Kind};
use store::AnyStore;

use crate::agent::{Adapter, Agent, Scope};
use crate::cluster;
use crate::config::{self, SwitchPlan};

/// Validates exactly what [`run`] validates before it starts anything ([`config::load`]).
pub fn check(path: &Path) -> Result<()> {
    let plan = config::load(path)?;
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: OK — {} hypervisor(s), {} switch(es), {}",
        path.display(),
        plan.hypervisors.len(),
        plan.switches.len(),
        plan.store.describe(&plan.data_dir)
    );
    Ok(())
}

pub async fn run(path: &Path, accept_loss: bool) -> Result<()> {
    let mut signals = Signals::watch()?;
    let plan = config::load(path)?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    if accept_loss && matches!(plan.store, config::StorePlan::Postgres(_)) {
        anyhow::bail!(
            "--accept-loss is for a sled data directory whose files lost acknowledged records; a PostgreSQL \
             log keeps what the server committed (ADR 0008): if `netfold verify` names a damaged record, \
             restore the database from its backups"
        );
    }
    let on_loss = if accept_loss { store::OnLoss::Accept } else { store::OnLoss::Refuse };
    let place = plan.store.describe(&plan.data_dir);
    let store = crate::agent::open_store(&plan.store, &plan.data_dir).await?;
    let cluster = match (&plan.cluster, &store) {
        (Some(c), AnyStore::Postgres(pg)) => Some((c.clone(), pg.leases())),
        _ => None,
    };
    let clock = Arc::new(SystemClock);
    let mut agent = Agent::start_in(store, place, plan.engine, clock, on_loss, cluster.is_some()).await?;
    // On a terminal: a line per hypervisor until its first inventory is learnt.
    agent.spawn_until_stop(crate::progress::first_learn(agent.metrics.clone(), agent.engine.state()));
    let Some((cluster, leases)) = cluster else {
        for h in plan.hypervisors {
            agent.add_hypervisor(h.id, h.kind, h.adapter).await?;
        }
        for s in &plan.switches {
            add_switch(&mut agent, s, None).await?;
        }
        let addr = agent.serve_http(&plan.http).await?;
        tracing::info!(http = %addr, data_dir = %plan.data_dir.display(), store = %plan.store.kind(), "netfold running");
        signals.wait().await;
        tracing::info!("shutting down: completing in-flight appends");
        return agent.shutdown().await;
    };
    let shares = cluster::Shares::new(&cluster);
    agent.metrics.set_cluster(shares.clone());
    let addr = agent.serve_http(&plan.http).await?;
    tracing::info!(
        http = %addr, store = %plan.store.kind(), instance = %shares.instance, holder = %shares.holder,
        "netfold running: sharing the work with the other instances on this store"
    );
    let work: Vec<Work> = plan
        .hypervisors
        .iter()
        .map(|h| Work::Hypervisor(h.id.clone()))
        .chain(plan.switches.iter().map(|s| Work::Switch(s.entry.name.clone())))
        .collect();
    let (lost_tx, mut lost) = tokio::sync::mpsc::unbounded_channel();
    let renewal = tokio::spawn(cluster::renew(leases.clone(), shares.clone(), lost_tx));
    let mut keeper = cluster::Keeper::new(leases, shares, work);
    let mut worker = Worker {
        agent: &mut agent,
        hypervisors: plan.hypervisors.into_iter().map(|h| (h.id, (h.kind, h.adapter))).collect(),
        switches: plan.switches.into_iter().map(|s| (s.entry.name.clone(), s)).collect(),
    };
    let mut rounds = tokio::time::interval(keeper.every());
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = signals.wait() => break,
            Some(work) = lost.recv() => keeper.lost(&mut worker, work).await,
            _ = rounds.tick() => keeper.round(&mut worker).await,
        }
    }
    tracing::info!("shutting down: stopping the work, then giving its leases up");
    keeper.release_all(&mut worker).await;
    renewal.abort();
    agent.shutdown().await
}

/// Starts and stops the configured work in the agent as the keeper takes and gives up leases.
struct Worker<'a> {
    agent: &'a mut Agent,
    hypervisors: BTreeMap<HypervisorId, (Kind, Adapter)>,
    switches: BTreeMap<String, SwitchPlan>,
}

impl cluster::Worker for Worker<'_> {
    async fn start(&mut self, work: &Work, hold: Arc<cluster::Hold>) -> Result<()> {
        let scope = self.agent.start_work(work, hold.fence()).await?;
        match work {
            Work::Hypervisor(id) => {
                let (kind, adapter) = self.hypervisors.get(id).context("not a configured hypervisor")?;
                self.agent.add_hypervisor_in(id.clone(), *kind, adapter.clone(), &scope).await
            }
            Work::Switch(name) => {
                let plan = self.switches.get(name).context("not a configured switch")?;
                add_switch(self.agent, plan, Some((&hold, &scope))).await
            }
        }
    }

    async fn stop(&mut self, work: &Work) {
        self.agent.stop_work(work).await;
    }
}

/// Builds the switch's client and starts its reconciler. Nothing here waits for the switch:
/// one that does not answer is retried by its reconciler (and shows as failing in `/healthz` and
/// `/metrics`). Under a lease (`under`), the switch is written only while the lease holds
/// ([`cluster::Gated`]); an OVS switch also checks the lease's token itself in every write and
/// names the instance and token in every transaction (`ovs::fence`).
pub async fn add_switch(agent: &mut Agent, s: &SwitchPlan, under: Option<(&Arc<cluster::Hold>, &Scope)>) -> Result<()> {
    fn gated<S: Switch>(
        agent: &mut Agent,
        sw: Arc<S>,
        under: Option<(&Arc<cluster::Hold>, &Scope)>,
        reconcile: engine::reconciler::Config,
    ) -> Result<()> {
        match under {
            Some((hold, scope)) => {
                agent.add_switch_in(Arc::new(cluster::Gated::new(sw, hold.clone())), reconcile, scope)
            }
            None => agent.add_switch(sw, reconcile),
        }
    }
    let e = &s.entry;
    match e.kind.as_str() {
        "ovs" => {
            let c = ovs::Config {
                name: e.name.clone(),
                endpoint: e.address.clone().unwrap_or_default(),
                parking_vlan: e.parking_vlan.unwrap_or(4094),
                timeout_ms: e.timeout_ms(),
                unixctl: e.unixctl.clone(),
            };
            let mut sw = ovs::OvsSwitch::start(&c).with_context(|| format!("switch {}", e.name))?;
            if let Some((hold, _)) = under {
                sw = sw.writing_as(hold.writer()).fenced_by(hold.lease.token);
            }
            gated(agent, Arc::new(sw), under, s.reconcile.clone())
        }
        "eapi" => {
            let c = eapi::Config {
                name: e.name.clone(),
                url: e.address.clone().unwrap_or_default(),
                username: e.user.clone().unwrap_or_default(),
                password: e.password.clone().context("eapi password")?,
                tls: e.tls.clone().unwrap_or_default(),
                timeout_ms: e.timeout_ms(),
            };
            let sw = Arc::new(eapi::EapiSwitch::new(&c).with_context(|| format!("switch {}", e.name))?);
            gated(agent, sw, under, s.reconcile.clone())
        }
        _ => {
            // Port names were checked by the config's validation.
            let sw = match &e.ports {
                Some(ports) => ports.iter().fold(MemorySwitch::new(&e.name), |sw, p| sw.with_port(p, [])),
                None => MemorySwitch::new(&e.name).creating_ports(),
            };
            gated(agent, Arc::new(sw), under, s.reconcile.clone())
        }
    }
}

/// SIGINT and SIGTERM, watched from the moment this is made: made before netfold says it is
/// running (or prints a URL), so a signal right after that is a graceful stop, never the default
/// action that kills the process.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn watch() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
        Ok(Signals { term, int })
    }

    /// Until SIGINT or SIGTERM.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
