//! `netfold run` and `netfold config check`: load the config, start the agent on it, serve until
//! SIGINT/SIGTERM, shut down gracefully.
//!
//! Start-up fails fast, with one clear paragraph, on what an operator must fix: a bad config, a
//! data directory that cannot be opened or recovered, a hypervisor that cannot be reached and
//! that the log has never known. A hypervisor the log already knows may be down at start-up
//! (netfold restarted during an outage): its grace period continues from the log and the adapter
//! keeps retrying. A switch may be down at start-up too (under maintenance): its reconciler
//! retries with backoff and reports it failing, while every other switch and every hypervisor
//! session proceeds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adapters::{eapi, ovs};
use anyhow::{bail, Context, Result};
use engine::switch::MemorySwitch;

use crate::agent::{Adapter, Agent};
use crate::config::{self, HypervisorPlan, SwitchPlan};

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

pub async fn run(path: &Path) -> Result<()> {
    let plan = config::load(path)?;
    let mut agent = Agent::start_now(&plan.data_dir, plan.engine).await?;
    let known: Vec<_> = agent.engine.state().read(|s| s.hypervisors().map(|(id, _)| id.clone()).collect());
    for h in &plan.hypervisors {
        if !known.contains(&h.id) {
            preflight_hypervisor(h).await?;
        }
        agent.add_hypervisor(h.id.clone(), h.kind, Adapter::from_config(h.kind, &h.entry))?;
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

/// A hypervisor the log has never known must at least accept a TCP connection.
async fn preflight_hypervisor(h: &HypervisorPlan) -> Result<()> {
    let url = reqwest_url(&h.entry.url)?;
    let addr = format!("{}:{}", url.0, url.1);
    match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!(
            "hypervisor {} ({}) is unreachable at {addr}: {e}. netfold has never learnt from it, so there is nothing to keep while it retries: check `url` and that the service is up, then start netfold again",
            h.id, h.kind
        ),
        Err(_) => bail!("hypervisor {} ({}) did not answer at {addr} within 10 s: check `url` and the network path", h.id, h.kind),
    }
}

/// `(host, port)` of an http(s) URL.
fn reqwest_url(url: &str) -> Result<(String, u16)> {
    let (scheme, rest) = url.split_once("://").context("url has no scheme")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let default = if scheme == "https" { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            Ok((host.to_string(), port.parse().with_context(|| format!("bad port in url {url}"))?))
        }
        _ => Ok((authority.to_string(), default)),
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
