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
//! On PostgreSQL, several instances run with one config (ADR 0012): each waits as a standby
//! until it holds the lease `netfold/active` ([`crate::cluster`]), then runs the agent under it;
//! one that loses the lease stops with an error, having written nothing after it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use adapters::{eapi, ovs};
use anyhow::{Context, Result};
use engine::clock::SystemClock;
use engine::switch::{MemorySwitch, Switch};
use store::{AnyStore, Leases, PgLeases};

use crate::agent::Agent;
use crate::cluster;
use crate::config::{self, ClusterPlan, HttpPlan, SwitchPlan};

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
    // On PostgreSQL: a standby until this instance holds the active lease.
    let cluster = match (&plan.cluster, &store) {
        (Some(c), AnyStore::Postgres(pg)) => {
            let leases = pg.leases();
            match standby(c, &leases, &plan.http, &mut signals).await? {
                Some((active, holding)) => Some((active, leases, holding)),
                None => return Ok(()),
            }
        }
        _ => None,
    };
    let fence = cluster.as_ref().map(|(a, ..)| a.fence());
    let mut agent = Agent::start_in(store, place, plan.engine, Arc::new(SystemClock), on_loss, fence).await?;
    let active = cluster.as_ref().map(|(a, ..)| a.clone());
    if let Some(a) = &active {
        agent.metrics.set_cluster(a.clone());
    }
    for h in plan.hypervisors {
        agent.add_hypervisor(h.id, h.kind, h.adapter).await?;
    }
    // On a terminal: a line per hypervisor until its first inventory is learnt.
    agent.spawn_until_stop(crate::progress::first_learn(agent.metrics.clone(), agent.engine.state()));
    for s in &plan.switches {
        add_switch(&mut agent, s, active.as_ref()).await?;
    }
    let addr = agent.serve_http(&plan.http).await?;
    tracing::info!(http = %addr, data_dir = %plan.data_dir.display(), store = %plan.store.kind(), "netfold running");
    let Some((active, leases, mut holding)) = cluster else {
        signals.wait().await;
        tracing::info!("shutting down: completing in-flight appends");
        return agent.shutdown().await;
    };
    tokio::select! {
        _ = signals.wait() => {
            tracing::info!("shutting down: completing in-flight appends, then giving up the active lease");
            holding.abort();
            agent.shutdown().await?;
            leases.release(&active.lease).await.context("cannot give up the active lease (it expires by itself)")
        }
        why = &mut holding => {
            let why = why.unwrap_or_else(|e| format!("the lease's renewal task failed: {e}"));
            tracing::error!(lease = %active.lease.name, token = active.lease.token, "lost the active lease: {why}; stopping");
            if let Err(e) = agent.shutdown().await {
                tracing::warn!(error = %e, "shutdown after losing the lease");
            }
            anyhow::bail!(
                "instance {} lost the active lease {} (token {}): {why}; it wrote nothing after that and stopped \
                 (started again, it waits as a standby)",
                active.instance,
                active.lease.name,
                active.lease.token
            )
        }
    }
}

/// Serves a standby's `/healthz` on `http.listen` until this instance takes the active lease
/// (`Some`: the lease and its renewal task, started at once, since starting the agent can take
/// longer than the lease lasts), or until SIGINT/SIGTERM (`None`). The port is free again when
/// this returns.
async fn standby(
    plan: &ClusterPlan,
    leases: &PgLeases,
    http: &HttpPlan,
    signals: &mut Signals,
) -> Result<Option<(Arc<cluster::Active>, tokio::task::JoinHandle<String>)>> {
    let holder = cluster::holder(&plan.instance);
    let view = Arc::new(Mutex::new(cluster::Standby::new(&plan.instance)));
    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .with_context(|| format!("cannot listen on {} for /healthz", http.listen))?;
    let addr = listener.local_addr()?;
    let options = crate::http::ServeOptions {
        token: http.token.clone(),
        max_connections: http.max_connections,
        header_timeout: crate::http::HEADER_TIMEOUT,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        cluster::router(view.clone()),
        options,
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(http = %addr, instance = %plan.instance, holder = %holder, "netfold standby: waiting for the active lease");
    let taken = tokio::select! {
        t = cluster::take(leases, plan, &holder, &view) => {
            let active = t?;
            Some((active.clone(), tokio::spawn(cluster::hold(leases.clone(), active))))
        }
        _ = signals.wait() => None,
    };
    stop.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(5), server).await.is_err() {
        tracing::warn!("the standby endpoint did not close within 5 s");
    }
    if let Some((a, _)) = &taken {
        tracing::info!(lease = %a.lease.name, token = a.lease.token, holder = %holder, "took the active lease: this instance is active");
    }
    Ok(taken)
}

/// Builds the switch's client and starts its reconciler. Nothing here waits for the switch:
/// one that does not answer is retried by its reconciler (and shows as failing in `/healthz` and
/// `/metrics`). With `active`, the switch is written only while its lease holds
/// ([`cluster::Gated`]); an OVS switch also checks the lease's token itself in every write and
/// names the instance and token in every transaction (`ovs::fence`).
pub async fn add_switch(agent: &mut Agent, s: &SwitchPlan, active: Option<&Arc<cluster::Active>>) -> Result<()> {
    fn gated<S: Switch>(
        agent: &mut Agent,
        sw: Arc<S>,
        active: Option<&Arc<cluster::Active>>,
        reconcile: engine::reconciler::Config,
    ) -> Result<()> {
        match active {
            Some(a) => agent.add_switch(Arc::new(cluster::Gated::new(sw, a.clone())), reconcile),
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
            if let Some(a) = active {
                let writer = format!("netfold {} lease {} token {}", a.lease.holder, a.lease.name, a.lease.token);
                sw = sw.writing_as(writer).fenced_by(a.lease.token);
            }
            gated(agent, Arc::new(sw), active, s.reconcile.clone())
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
            gated(agent, sw, active, s.reconcile.clone())
        }
        _ => {
            // Port names were checked by the config's validation.
            let sw = match &e.ports {
                Some(ports) => ports.iter().fold(MemorySwitch::new(&e.name), |sw, p| sw.with_port(p, [])),
                None => MemorySwitch::new(&e.name).creating_ports(),
            };
            gated(agent, Arc::new(sw), active, s.reconcile.clone())
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
