//! A XenServer pool simulator served over loopback HTTP, for tests, benchmarks and the demo.
//!
//! It keeps an in-memory object store (pool, host, VM, VIF, network, PIF, VLAN, PIF_metrics
//! records with xapi's field names and wire types) and a monotonic event log for `event.from`,
//! and speaks xapi's XML-RPC closely enough for the official `XenAPI.py` to log in, read
//! records and follow events. The subset served is listed in `docs/xen-simulator.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sims::xen::SimError> {
//! use sims::xen::{SimOptions, Simulator};
//! let sim = Simulator::start(SimOptions { hosts: 50, vms_per_host: 20, vlans: 10, ..SimOptions::default() }).await?;
//! println!("{} {} {}", sim.url(), sim.user(), sim.password());
//! let host = sim.hosts()[0].uuid.clone();
//! let net = sim.add_vlan(300)?;
//! let vm = sim.create_vm(&host, "web-7", &[&net])?; // appears in event.from
//! sim.unplug_vif(&vm.vifs[0])?;
//! sim.cut();     // every connection drops: the adapter reports Disconnected
//! sim.restore(); // it reconnects and reports a fresh Inventory
//! # Ok(()) }
//! ```
//!
//! Layout: [`pool`] (object store, event log, call dispatch — no IO), [`server`] (HTTP).

pub mod pool;
pub mod server;
pub mod xmlrpc;

use std::net::SocketAddr;
use std::sync::Arc;

use xmlrpc::Value;

use pool::Pool;
use server::{str_field, Shared};

/// xapi's null reference (a field that points at nothing).
pub const NULL_REF: &str = "OpaqueRef:NULL";
/// A netfold convention, not xapi's: no XenServer release reports LLDP neighbours through
/// XenAPI. The simulator puts the neighbour of each physical NIC in its `PIF_metrics`
/// `other_config` under these keys, and netfold's Xen adapter reads them there (see
/// `docs/xen-simulator.md`, "netfold conventions").
pub const LLDP_SYSTEM_NAME: &str = "lldp_neighbor_system_name";
/// The port half of the convention above.
pub const LLDP_PORT_ID: &str = "lldp_neighbor_port_id";

/// How to build and serve the simulated pool.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Where the pool master listens (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    pub hosts: usize,
    pub vms_per_host: usize,
    /// VLAN networks, tags `first_vlan ..`; each has a VLAN PIF on every host.
    pub vlans: usize,
    pub first_vlan: u16,
    /// Physical NICs per host (`eth0..`); VLANs ride the last one.
    pub nics_per_host: usize,
    /// The LLDP neighbour every physical NIC reports: this switch ...
    pub switch_name: String,
    /// ... and port `{port_prefix}{n}`, n = host index × nics_per_host + nic + 1.
    pub port_prefix: String,
    /// Whether each physical NIC's neighbour is reported under the netfold convention keys in
    /// `PIF_metrics.other_config` (no XenServer release does this; off, the pool is as a real
    /// one: the cabling is only in [`Simulator::cabling`], for a switch to learn).
    pub lldp_convention: bool,
    pub user: String,
    pub password: String,
    pub pool_name: String,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hosts: 2,
            vms_per_host: 2,
            vlans: 2,
            first_vlan: 100,
            nics_per_host: 2,
            switch_name: "tor1".into(),
            port_prefix: "ethernet1/1/".into(),
            lldp_convention: true,
            user: "root".into(),
            password: "netfold".into(),
            pool_name: "sim-pool".into(),
        }
    }
}

impl SimOptions {
    /// The demo's two-host pool (2 hosts × 2 VMs on VLANs 100 and 101, one NIC per host), its
    /// NICs cabled to `switch` ports `{port_prefix}1..=2`. `netfold demo` and the end-to-end
    /// tests play their scenario on it.
    pub fn lab(switch: &str, port_prefix: &str) -> Self {
        Self {
            hosts: 2,
            vms_per_host: 2,
            vlans: 2,
            first_vlan: 100,
            nics_per_host: 1,
            switch_name: switch.into(),
            port_prefix: port_prefix.into(),
            ..Self::default()
        }
    }
}

/// A control operation that named something the pool does not hold, or a bind failure.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator: no {0}")]
    NotFound(String),
    #[error("simulator: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A host of the simulated pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimHost {
    pub uuid: String,
    pub name: String,
}

/// A VM created through [`Simulator::create_vm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimVm {
    pub uuid: String,
    /// VIF uuids, one per requested network, devices `0..`.
    pub vifs: Vec<String>,
}

/// A running simulator; dropping it stops every endpoint.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    url: String,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl Simulator {
    /// Generates the pool and starts serving it.
    pub async fn start(opts: SimOptions) -> Result<Self, SimError> {
        let shared = Shared::new(Pool::generate(&opts));
        let addr = server::start_endpoint(&shared, opts.listen)
            .await
            .map_err(|source| SimError::Bind { addr: opts.listen, source })?;
        // A second member listens from the start, as a slave: its `host.address` is known to
        // clients before a fail-over names it (all members share 127.0.0.1, so addresses carry
        // the port).
        let standby_at = SocketAddr::from((opts.listen.ip(), 0));
        let standby = server::start_endpoint(&shared, standby_at)
            .await
            .map_err(|source| SimError::Bind { addr: standby_at, source })?;
        shared.with_pool(|p| {
            let hosts: Vec<String> = p.objects["host"].keys().cloned().collect();
            let master = p.objects["pool"].values().next().and_then(|r| r.get("master")).and_then(|v| v.as_str());
            let master = master.map(str::to_string).or_else(|| hosts.first().cloned());
            let other = hosts.iter().find(|h| Some(*h) != master.as_ref()).cloned();
            for (host, at) in [(master, addr), (other, standby)] {
                // Part of the generated pool, not a change: no event is logged.
                if let Some(r) = host.and_then(|h| p.objects.get_mut("host")?.get_mut(&h)) {
                    r.insert("address".into(), Value::str(at.to_string()));
                }
            }
        });
        Ok(Self { shared, url: format!("http://{addr}") })
    }

    /// The URL of the endpoint the simulator started with (after [`Self::make_slave`] it
    /// answers `HOST_IS_SLAVE`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn user(&self) -> String {
        self.shared.lock_pool().user.clone()
    }

    pub fn password(&self) -> String {
        self.shared.lock_pool().password.clone()
    }

    /// Switches a misbehaviour on (or off with [`Fault::None`]).
    pub fn set_fault(&self, fault: crate::fault::Fault) {
        self.shared.lock_pool().fault = fault;
    }

    /// Logins and logouts served, sessions open.
    pub fn counts(&self) -> crate::fault::Counts {
        let p = self.shared.lock_pool();
        crate::fault::Counts { sessions: p.session_count() as u64, ..p.counts }
    }

    /// Changes the root password (as `session.change_password` would); sessions stay valid.
    pub fn set_password(&self, password: &str) {
        self.shared.lock_pool().password = password.to_string();
    }

    /// The id of the last event logged (for tests that count events).
    pub fn last_event(&self) -> u64 {
        self.shared.lock_pool().last_event()
    }

    /// Where each physical NIC is cabled: (PIF MAC, switch, port), as a switch would learn it.
    pub fn cabling(&self) -> Vec<(String, String, String)> {
        self.shared.lock_pool().cabling.clone()
    }

    pub fn hosts(&self) -> Vec<SimHost> {
        let p = self.shared.lock_pool();
        p.objects["host"]
            .values()
            .map(|r| SimHost { uuid: str_field(r.get("uuid")), name: str_field(r.get("name_label")) })
            .collect()
    }

    /// (uuid, name_label) of every network.
    pub fn networks(&self) -> Vec<(String, String)> {
        let p = self.shared.lock_pool();
        p.objects["network"].values().map(|r| (str_field(r.get("uuid")), str_field(r.get("name_label")))).collect()
    }

    /// (uuid, name_label, VIF uuids) of every guest VM (no templates, no control domains).
    pub fn vms(&self) -> Vec<(String, String, Vec<String>)> {
        let p = self.shared.lock_pool();
        p.objects["VM"]
            .values()
            .filter(|r| r.get("is_a_template") == Some(&Value::Bool(false)))
            .filter(|r| r.get("is_control_domain") == Some(&Value::Bool(false)))
            .map(|r| {
                let vifs = r
                    .get("VIFs")
                    .and_then(Value::as_array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| p.get("VIF", v.as_str()?).map(|vr| str_field(vr.get("uuid"))))
                    .collect();
                (str_field(r.get("uuid")), str_field(r.get("name_label")), vifs)
            })
            .collect()
    }

    /// Creates a running VM on `host` with one attached VIF per network (devices `0..`).
    pub fn create_vm(&self, host: &str, name: &str, networks: &[&str]) -> Result<SimVm, SimError> {
        self.shared.with_pool(|p| {
            let href = p.by_uuid("host", host)?;
            let nets = networks.iter().map(|n| p.by_uuid("network", n)).collect::<Result<Vec<_>, _>>()?;
            let vm = p.add_vm_record(name, Some(&href), false, false);
            let vifs = nets
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let r = p.add_vif(&vm, n, &i.to_string(), true);
                    p.field("VIF", &r, "uuid")
                })
                .collect();
            Ok(SimVm { uuid: p.field("VM", &vm, "uuid"), vifs })
        })
    }

    /// Destroys a VM and its VIFs (VIFs first, as xapi does).
    pub fn destroy_vm(&self, vm: &str) -> Result<(), SimError> {
        self.shared.with_pool(|p| {
            let r = p.by_uuid("VM", vm)?;
            let vifs: Vec<String> = p
                .get("VM", &r)
                .and_then(|rec| rec.get("VIFs"))
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            for v in vifs {
                p.remove_vif(&v)?;
            }
            let host = p.field("VM", &r, "resident_on");
            p.delete("VM", &r)?;
            if host != NULL_REF {
                p.set_member("host", &host, "resident_VMs", &r, false);
            }
            Ok(())
        })
    }

    /// Live-migrates a VM: `resident_on` changes to `host`.
    pub fn move_vm(&self, vm: &str, host: &str) -> Result<(), SimError> {
        self.shared.with_pool(|p| {
            let r = p.by_uuid("VM", vm)?;
            let to = p.by_uuid("host", host)?;
            let from = p.field("VM", &r, "resident_on");
            p.modify("VM", &r, |rec| {
                rec.insert("resident_on".into(), Value::str(to.clone()));
                rec.insert("affinity".into(), Value::str(to.clone()));
            })?;
            p.set_member("host", &from, "resident_VMs", &r, false);
            p.set_member("host", &to, "resident_VMs", &r, true);
            Ok(())
        })
    }

    /// Starts (`Running`) or shuts down (`Halted`, `resident_on` NULL) a VM.
    pub fn set_power(&self, vm: &str, running: bool, host: Option<&str>) -> Result<(), SimError> {
        self.shared.with_pool(|p| {
            let r = p.by_uuid("VM", vm)?;
            let on = match host {
                Some(h) => p.by_uuid("host", h)?,
                None => p.field("VM", &r, "affinity"),
            };
            p.modify("VM", &r, |rec| {
                rec.insert("power_state".into(), Value::str(if running { "Running" } else { "Halted" }));
                rec.insert("resident_on".into(), Value::str(if running { on.as_str() } else { NULL_REF }));
            })
        })
    }

    fn set_attached(&self, vif: &str, attached: bool) -> Result<(), SimError> {
        self.shared.with_pool(|p| {
            let r = p.by_uuid("VIF", vif)?;
            p.modify("VIF", &r, |rec| {
                rec.insert("currently_attached".into(), Value::Bool(attached));
            })
        })
    }

    /// `VIF.plug`: `currently_attached` becomes true.
    pub fn plug_vif(&self, vif: &str) -> Result<(), SimError> {
        self.set_attached(vif, true)
    }

    /// `VIF.unplug`: `currently_attached` becomes false.
    pub fn unplug_vif(&self, vif: &str) -> Result<(), SimError> {
        self.set_attached(vif, false)
    }

    /// Adds a VLAN network (a VLAN PIF on every host, on the last NIC) and returns its uuid.
    /// The tag is not checked, so a test can give the pool a bad one (0, 4095).
    pub fn add_vlan(&self, tag: i64) -> Result<String, SimError> {
        self.shared.with_pool(|p| {
            let nics = p.objects["PIF"]
                .values()
                .filter(|r| r.get("physical") == Some(&Value::Bool(true)))
                .filter_map(|r| r.get("device").and_then(Value::as_str))
                .filter_map(|d| d.strip_prefix("eth")?.parse::<usize>().ok())
                .max()
                .unwrap_or(0);
            let net = p.add_vlan_network(tag, nics);
            Ok(p.field("network", &net, "uuid"))
        })
    }

    /// Removes a network, its VIFs, PIFs and VLAN records.
    pub fn remove_network(&self, network: &str) -> Result<(), SimError> {
        self.shared.with_pool(|p| {
            let r = p.by_uuid("network", network)?;
            p.remove_network(&r)
        })
    }

    /// Sets (or clears) the LLDP neighbour reported for `device` on `host`.
    pub fn set_lldp(&self, host: &str, device: &str, neighbour: Option<(&str, &str)>) -> Result<(), SimError> {
        self.shared.with_pool(|p| {
            let href = p.by_uuid("host", host)?;
            let pif = p.objects["PIF"]
                .iter()
                .find(|(_, r)| {
                    str_field(r.get("host")) == href
                        && str_field(r.get("device")) == device
                        && r.get("physical") == Some(&Value::Bool(true))
                })
                .map(|(r, _)| r.clone())
                .ok_or_else(|| SimError::NotFound(format!("physical PIF {device} on host {host}")))?;
            p.set_lldp(&pif, neighbour)
        })
    }

    /// Fails over to the other member (the standby endpoint opened at start, whose
    /// `host.address` the pool lists): it becomes master and its URL is returned; the old
    /// endpoint answers every call with `HOST_IS_SLAVE [new master address]`; every session is
    /// invalidated, as on a real master change. Called again, fails back.
    pub async fn make_slave(&self) -> Result<String, SimError> {
        let local = self.shared.with_pool(|p| {
            p.master_endpoint = (p.master_endpoint + 1) % p.endpoints.len();
            p.invalidate_sessions();
            let local = p.endpoints[p.master_endpoint].clone();
            let next = p.objects["host"]
                .iter()
                .find(|(_, r)| r.get("address").and_then(Value::as_str) == Some(local.as_str()))
                .map(|(h, _)| h.clone());
            if let (Some(pool), Some(next)) = (p.objects["pool"].keys().next().cloned(), next) {
                let _ = p.modify("pool", &pool, |r| {
                    r.insert("master".into(), Value::str(next));
                });
            }
            local
        });
        Ok(format!("http://{local}"))
    }

    /// Every session becomes invalid: the next call on it gets `SESSION_INVALID`.
    pub fn invalidate_sessions(&self) {
        self.shared.with_pool(Pool::invalidate_sessions);
    }

    /// Drops every open connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.shared.set_cut(true);
    }

    pub fn restore(&self) {
        self.shared.set_cut(false);
    }
}

impl Shared {
    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}
