//! `netfold sim vcenter|xen|eapi`: the simulators, on their own, until SIGINT/SIGTERM. With
//! `--control ADDR` a hypervisor simulator also serves a small test control API (faults,
//! password, login counts), so a fault test can drive a simulator in another process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sims::fault::{Counts, Fault};

use crate::cli::{SimCommand, SimCommon};

fn addr(listen: &str) -> Result<SocketAddr> {
    listen.parse().with_context(|| format!("`{listen}` is not an address like 127.0.0.1:8989"))
}

/// `SWITCH:PREFIX` of `--lab`.
fn lab(spec: &str) -> Result<(String, String)> {
    spec.split_once(':')
        .filter(|(s, p)| !s.is_empty() && !p.is_empty())
        .map(|(s, p)| (s.to_string(), p.to_string()))
        .with_context(|| format!("--lab `{spec}` is not SWITCH:PREFIX (e.g. tor1:Ethernet2/)"))
}

/// What the control API drives, and what is printed at start.
trait Controlled: Send + Sync + 'static {
    fn set_fault(&self, fault: Fault);
    fn set_password(&self, password: &str);
    fn counts(&self) -> Counts;
    fn url(&self) -> String;
    fn user(&self) -> String;
    fn password(&self) -> String;
}

impl Controlled for sims::vsphere::SimHandle {
    fn set_fault(&self, fault: Fault) {
        sims::vsphere::SimHandle::set_fault(self, fault)
    }
    fn set_password(&self, password: &str) {
        sims::vsphere::SimHandle::set_password(self, password)
    }
    fn counts(&self) -> Counts {
        sims::vsphere::SimHandle::counts(self)
    }
    fn url(&self) -> String {
        sims::vsphere::SimHandle::url(self)
    }
    fn user(&self) -> String {
        sims::vsphere::SimHandle::user(self).to_string()
    }
    fn password(&self) -> String {
        sims::vsphere::SimHandle::password(self)
    }
}

impl Controlled for sims::xen::Simulator {
    fn set_fault(&self, fault: Fault) {
        sims::xen::Simulator::set_fault(self, fault)
    }
    fn set_password(&self, password: &str) {
        sims::xen::Simulator::set_password(self, password)
    }
    fn counts(&self) -> Counts {
        sims::xen::Simulator::counts(self)
    }
    fn url(&self) -> String {
        sims::xen::Simulator::url(self).to_string()
    }
    fn user(&self) -> String {
        sims::xen::Simulator::user(self)
    }
    fn password(&self) -> String {
        sims::xen::Simulator::password(self)
    }
}

/// Prints what a client needs (`banner`, `url:`, `user:`, `password:`, then `control:` when
/// asked for) and serves until SIGINT/SIGTERM.
async fn announce_and_serve(banner: &str, sim: Arc<dyn Controlled>, control: Option<String>) -> Result<()> {
    let mut signals = crate::run::Signals::watch()?;
    println!("{banner}");
    println!("url:      {}", sim.url());
    println!("user:     {}", sim.user());
    println!("password: {}", sim.password());
    if let Some(c) = control {
        serve_control(sim, &c).await?;
    }
    signals.wait().await;
    Ok(())
}

/// Serves the control API on `listen` (loopback only); prints `control: http://ADDR`.
async fn serve_control(sim: Arc<dyn Controlled>, listen: &str) -> Result<()> {
    let at = addr(listen)?;
    if !at.ip().is_loopback() {
        anyhow::bail!("--control `{listen}` must be a loopback address: the control API has no authentication");
    }
    let listener = tokio::net::TcpListener::bind(at).await.with_context(|| format!("cannot listen on {listen}"))?;
    println!("control:  http://{}", listener.local_addr()?);
    let app = Router::new()
        .route(
            "/fault/{name}",
            post(|State(sim): State<Arc<dyn Controlled>>, Path(name): Path<String>| async move {
                match name.parse::<Fault>() {
                    Ok(f) => {
                        sim.set_fault(f);
                        (StatusCode::OK, format!("fault {name}\n"))
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
                }
            }),
        )
        .route(
            "/password/{new}",
            post(|State(sim): State<Arc<dyn Controlled>>, Path(new): Path<String>| async move {
                sim.set_password(&new);
                "password changed\n"
            }),
        )
        .route("/counts", get(|State(sim): State<Arc<dyn Controlled>>| async move { Json(sim.counts()) }))
        .with_state(sim);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator control API stopped");
        }
    });
    Ok(())
}

pub async fn run(sim: SimCommand) -> Result<()> {
    match sim {
        SimCommand::Vcenter { listen, hosts, vms_per_host, portgroups, common: SimCommon { lab: l, control } } => {
            let mut opts = match l {
                Some(spec) => {
                    let (switch, prefix) = lab(&spec)?;
                    sims::vsphere::SimOptions::lab(&switch, &prefix)
                }
                None => sims::vsphere::SimOptions { hosts, vms_per_host, portgroups, ..Default::default() },
            };
            opts.listen = addr(&listen)?;
            let sim = sims::vsphere::Simulator::start(opts).await.context("vCenter simulator")?;
            announce_and_serve("vCenter simulator", Arc::new(sim), control).await
        }
        SimCommand::Xen { listen, hosts, vms_per_host, vlans, common: SimCommon { lab: l, control } } => {
            let mut opts = match l {
                Some(spec) => {
                    let (switch, prefix) = lab(&spec)?;
                    sims::xen::SimOptions::lab(&switch, &prefix)
                }
                None => sims::xen::SimOptions { hosts, vms_per_host, vlans, ..Default::default() },
            };
            opts.listen = addr(&listen)?;
            let sim = sims::xen::Simulator::start(opts).await.context("XenServer simulator")?;
            announce_and_serve("XenServer simulator", Arc::new(sim), control).await
        }
        SimCommand::Eapi { listen, interfaces } => {
            let mut sim = sims::eapi::Sim::new("admin", "admin");
            for i in interfaces.split(',').filter(|s| !s.is_empty()) {
                sim = sim.with_trunk(i.trim(), &[]);
            }
            let mut signals = crate::run::Signals::watch()?;
            let (bound, task) = sim.serve(addr(&listen)?).await.context("eAPI fixture")?;
            println!("Arista eAPI fixture: interfaces {interfaces}");
            println!("url:      http://{bound}");
            println!("user:     admin");
            println!("password: admin");
            signals.wait().await;
            task.abort();
            Ok(())
        }
    }
}
