//! `netfold run` and `netfold config check`: load the config, start the agent on it, serve until
//! SIGINT/SIGTERM, shut down gracefully.
//!
//! Start-up fails fast, with one clear paragraph, on what an operator must fix: a bad config, a
//! data directory that cannot be opened or recovered, a switch that cannot be reached. Whatever
//! hypervisor is unreachable, netfold starts: a hypervisor the log shows as live is lost at its
//! adapter's first failed attempt (the seed's `Retrying...` line, grace armed), one never learnt
//! is retried and shows in `/healthz` until it answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adapters::{eapi, ovs};
use anyhow::{bail, Context, Result};
use engine::clock::SystemClock;
use engine::switch::{MemorySwitch, Switch};

use crate::agent::Agent;
use crate::config::{self, SwitchPlan};

pub fn check(path: &Path) -> Result<()> {
    let plan = config::load(path)?;
    println!(
        "{}: OK — {} hypervisor(s), {} switch(es), data directory {}",
        path.display(),
        plan.hypervisors.len(),
        plan.switches.len(),
        plan.data_dir.display()
    );
    Ok(())
}

pub async fn run(path: &Path, accept_loss: bool) -> Result<()> {
    let plan = config::load(path)?;
    let on_loss = if accept_loss { store::OnLoss::Accept } else { store::OnLoss::Refuse };
    let mut agent = Agent::start_with(&plan.data_dir, plan.engine, Arc::new(SystemClock), on_loss).await?;
    for h in plan.hypervisors {
        agent.add_hypervisor(h.id, h.kind, h.adapter).await?;
    }
    for s in &plan.switches {
        add_switch(&mut agent, s).await?;
    }
    let addr = agent.serve_http(plan.http).await?;
    tracing::info!(http = %addr, data_dir = %plan.data_dir.display(), "netfold running");
    wait_for_signal().await?;
    tracing::info!("shutting down: completing in-flight appends");
    agent.shutdown().await
}

/// Builds the switch's client, checks it answers, and starts its reconciler.
pub async fn add_switch(agent: &mut Agent, s: &SwitchPlan) -> Result<()> {
    let e = &s.entry;
    match e.kind.as_str() {
        "ovs" => {
            let c = ovs::Config {
                name: e.name.clone(),
                endpoint: e.address.clone().unwrap_or_default(),
                parking_vlan: e.parking_vlan.unwrap_or(4094),
                timeout_ms: e.timeout_ms(),
            };
            let sw = Arc::new(ovs::OvsSwitch::start(&c).with_context(|| format!("switch {}", e.name))?);
            preflight_switch(&*sw).await?;
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
            preflight_switch(&*sw).await?;
            agent.add_switch(sw, s.reconcile.clone())
        }
        _ => agent.add_switch(Arc::new(MemorySwitch::new(&e.name)), s.reconcile.clone()),
    }
}

/// A switch must answer a read within 10 s at start-up.
async fn preflight_switch<S: Switch>(sw: &S) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sw.read(&Default::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                bail!("switch {} is unreachable at start-up, so netfold cannot reconcile it: {e}. Check its address and that its management service is up, then start netfold again", sw.name())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
