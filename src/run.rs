//! `netfold run` and `netfold config check`: load the config, start the agent on it, serve until
//! SIGINT/SIGTERM, shut down gracefully.
//!
//! Start-up fails fast, with one clear paragraph, on what an operator must fix: a bad config, a
//! data directory that cannot be opened or recovered. Whatever hypervisor or switch is
//! unreachable, netfold starts: a hypervisor the log shows as live is lost at its adapter's
//! first failed attempt (the seed's `Retrying...` line, grace armed), one never learnt is retried
//! and shows in `/healthz` until it answers; a switch's reconciler retries with backoff and
//! reports it failing, while every other switch and every hypervisor session proceeds.

use std::path::Path;
use std::sync::Arc;

use adapters::{eapi, ovs};
use anyhow::{Context, Result};
use engine::clock::SystemClock;
use engine::switch::MemorySwitch;

use crate::agent::Agent;
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
    let signals = Signals::watch()?;
    let plan = config::load(path)?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let on_loss = if accept_loss { store::OnLoss::Accept } else { store::OnLoss::Refuse };
    let mut agent = Agent::start_on(&plan.store, &plan.data_dir, plan.engine, Arc::new(SystemClock), on_loss).await?;
    for h in plan.hypervisors {
        agent.add_hypervisor(h.id, h.kind, h.adapter).await?;
    }
    // On a terminal: a line per hypervisor until its first inventory is learnt.
    agent.spawn_until_stop(crate::progress::first_learn(agent.metrics.clone(), agent.engine.state()));
    for s in &plan.switches {
        add_switch(&mut agent, s).await?;
    }
    let addr = agent.serve_http(&plan.http).await?;
    tracing::info!(http = %addr, data_dir = %plan.data_dir.display(), store = %plan.store.kind(), "netfold running");
    signals.wait().await;
    tracing::info!("shutting down: completing in-flight appends");
    agent.shutdown().await
}

/// Builds the switch's client and starts its reconciler. Nothing here waits for the switch:
/// one that does not answer is retried by its reconciler (and shows as failing in `/healthz` and
/// `/metrics`).
pub async fn add_switch(agent: &mut Agent, s: &SwitchPlan) -> Result<()> {
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
            let sw = Arc::new(ovs::OvsSwitch::start(&c).with_context(|| format!("switch {}", e.name))?);
            agent.add_switch(sw, s.reconcile.clone())
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
            agent.add_switch(sw, s.reconcile.clone())
        }
        _ => {
            // Port names were checked by the config's validation.
            let sw = match &e.ports {
                Some(ports) => ports.iter().fold(MemorySwitch::new(&e.name), |sw, p| sw.with_port(p, [])),
                None => MemorySwitch::new(&e.name).creating_ports(),
            };
            agent.add_switch(Arc::new(sw), s.reconcile.clone())
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
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
