//! `netfold sim vcenter|xen|eapi`: the simulators, on their own, until Ctrl-C.

use std::net::SocketAddr;

use adapters::{eapi, vsphere, xen};
use anyhow::{Context, Result};

use crate::cli::SimCommand;

fn addr(listen: &str) -> Result<SocketAddr> {
    listen.parse().with_context(|| format!("--listen `{listen}` is not an address like 127.0.0.1:8989"))
}

pub async fn run(sim: SimCommand) -> Result<()> {
    match sim {
        SimCommand::Vcenter { listen, hosts, vms_per_host, portgroups } => {
            let opts = vsphere::sim::SimOptions {
                listen: addr(&listen)?,
                hosts,
                vms_per_host,
                portgroups,
                ..Default::default()
            };
            vsphere::sim::serve(opts).await.context("vCenter simulator")
        }
        SimCommand::Xen { listen, hosts, vms_per_host, vlans } => {
            let opts =
                xen::sim::SimOptions { listen: addr(&listen)?, hosts, vms_per_host, vlans, ..Default::default() };
            xen::sim::serve(opts, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("XenServer simulator")
        }
        SimCommand::Eapi { listen, interfaces } => {
            let mut sim = eapi::sim::Sim::new("admin", "admin");
            for i in interfaces.split(',').filter(|s| !s.is_empty()) {
                sim = sim.with_trunk(i.trim(), &[]);
            }
            let (bound, task) = sim.serve(addr(&listen)?).await.context("eAPI fixture")?;
            println!("Arista eAPI fixture: interfaces {interfaces}");
            println!("url:      http://{bound}");
            println!("user:     admin");
            println!("password: admin");
            let _ = tokio::signal::ctrl_c().await;
            task.abort();
            Ok(())
        }
    }
}
