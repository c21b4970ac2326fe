//! A vCenter simulator: serves the vSphere SOAP subset netfold uses (see
//! `docs/vsphere-simulator.md`) over loopback HTTP, with a generated inventory and a control API
//! for tests: add and remove hosts, VMs, port groups and NICs, power VMs on and off, move VMs,
//! change VLANs, set CDP/LLDP neighbours, drop sessions, and cut connectivity (refuse or hang).
//! Every change bumps the object's generation and wakes pending `WaitForUpdatesEx` calls.
//!
//! ```no_run
//! # async fn demo() -> sims::vsphere::Result<()> {
//! use sims::vsphere::{SimOptions, Simulator};
//! let sim = Simulator::start(SimOptions { hosts: 4, vms_per_host: 10, ..SimOptions::default() }).await?;
//! println!("{} {} {}", sim.url(), sim.user(), sim.password());
//! # Ok(()) }
//! ```

mod soap;
mod tree;
mod world;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fault::{Counts, Fault};
pub use world::{Neighbour, SimNet, SimVlan};
use world::{SimDvpg, SimDvs, SimHost, SimNic, SimPnic, SimVm, World, DVPG, DVS, HOST, VM};

/// A control call that named an object the simulator does not hold, or a set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("simulator: {0}")]
    Sim(String),
    #[error("simulator cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the simulator generates and where it listens.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    pub hosts: usize,
    pub vms_per_host: usize,
    /// Standard port groups on every host's `vSwitch0`, VLANs `first_vlan`, `first_vlan + 1` ...
    pub portgroups: usize,
    /// Distributed port groups on one DVS (each host joins it with two more pnics), VLANs
    /// `first_vlan + 100` ...; 0 = no DVS.
    pub dvs_portgroups: usize,
    pub first_vlan: i64,
    /// The switch every generated pnic is cabled to (CDP `devId`).
    pub switch_name: String,
    /// Switch port names: `{port_prefix}{n}`, `n` counting from 1 over all pnics of all hosts.
    pub port_prefix: String,
    pub user: String,
    pub password: String,
    /// Serve HTTPS with a freshly generated self-signed certificate for `localhost` and
    /// `127.0.0.1` (see [`SimHandle::ca_pem`]).
    pub tls: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hosts: 2,
            vms_per_host: 2,
            portgroups: 2,
            dvs_portgroups: 0,
            first_vlan: 100,
            switch_name: "tor1".into(),
            port_prefix: "eth".into(),
            user: "administrator@vsphere.local".into(),
            password: "netfold-sim".into(),
            tls: false,
        }
    }
}

impl SimOptions {
    /// The demo's two-host lab (2 hosts × 2 VMs on 2 port groups, VLANs 100 and 101), its pnics
    /// cabled to `switch` ports `{port_prefix}1..=4`. `netfold demo` and the end-to-end tests
    /// play their scenario on it.
    pub fn lab(switch: &str, port_prefix: &str) -> Self {
        Self {
            hosts: 2,
            vms_per_host: 2,
            portgroups: 2,
            first_vlan: 100,
            switch_name: switch.into(),
            port_prefix: port_prefix.into(),
            ..Self::default()
        }
    }
}

/// How a connectivity cut behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Close the listener and every open connection: connects are refused.
    Refuse,
    /// Accept, but never answer (requests time out).
    Hang,
}

/// State shared by the HTTP handlers and the control API.
pub(crate) struct Shared {
    world: Mutex<World>,
    sessions: Mutex<HashMap<String, soap::SimSession>>,
    changed: watch::Sender<u64>,
    hang: watch::Sender<bool>,
    /// `WaitForUpdatesEx` calls parked waiting for a change.
    parked: std::sync::atomic::AtomicUsize,
    user: String,
    password: Mutex<String>,
    /// A misbehaviour switched on by a test, and the logins and logouts served.
    pub(crate) fault: Mutex<Fault>,
    pub(crate) counts: Mutex<Counts>,
}

impl Shared {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

/// The simulator constructor.
pub struct Simulator;

impl Simulator {
    /// Generates the inventory and starts serving on `opts.listen`.
    pub async fn start(opts: SimOptions) -> Result<SimHandle> {
        let world = generate(&opts);
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            sessions: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            hang: watch::channel(false).0,
            parked: std::sync::atomic::AtomicUsize::new(0),
            user: opts.user.clone(),
            password: Mutex::new(opts.password.clone()),
            fault: Mutex::new(Fault::None),
            counts: Mutex::new(Counts::default()),
        });
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|source| Error::Listen { addr: opts.listen.to_string(), source })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen { addr: opts.listen.to_string(), source })?;
        let tls = if opts.tls { Some(self_signed()?) } else { None };
        let handle = SimHandle { shared, addr, serving: Mutex::new(None), opts, tls };
        handle.serve_on(listener);
        tracing::info!(%addr, "vCenter simulator listening");
        Ok(handle)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let hang = shared.hang.clone();
    Router::new()
        .route("/sdk/vimServiceVersions.xml", get(soap::service_versions))
        .route("/sdk", post(move |headers, body| soap::handle(shared.clone(), headers, body)))
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let mut hang = hang.subscribe();
            async move {
                let _ = hang.wait_for(|h| !*h).await;
                let resp = next.run(req).await;
                let _ = hang.wait_for(|h| !*h).await;
                resp
            }
        }))
}

/// A running simulator: its URL and credentials, and the control API.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    serving: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    opts: SimOptions,
    /// The certificate (PEM) and TLS acceptor when serving HTTPS.
    tls: Option<(String, tokio_rustls::TlsAcceptor)>,
}

/// A self-signed certificate for `localhost` / `127.0.0.1` and an acceptor serving it.
fn self_signed() -> Result<(String, tokio_rustls::TlsAcceptor)> {
    let tls_err = |e: &dyn std::fmt::Display| Error::Sim(format!("cannot set up TLS: {e}"));
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| tls_err(&e))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .map_err(|e| tls_err(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ck.cert.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimHandle {
    /// `http://127.0.0.1:PORT/sdk` (`https://` with [`SimOptions::tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/sdk", self.addr)
    }

    /// The self-signed certificate (PEM) when serving HTTPS: a CA file for clients.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|(pem, _)| pem.as_str())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn user(&self) -> &str {
        &self.opts.user
    }

    /// The current password (see [`SimHandle::set_password`]).
    pub fn password(&self) -> String {
        lock(&self.shared.password).clone()
    }

    /// Changes the password (as an operator rotating it); live sessions stay valid.
    pub fn set_password(&self, password: &str) {
        *lock(&self.shared.password) = password.to_string();
    }

    /// Switches a misbehaviour on (or off with [`Fault::None`]).
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
        self.shared.notify();
    }

    /// Logins and logouts served, sessions open.
    pub fn counts(&self) -> Counts {
        Counts { sessions: self.session_count() as u64, ..*lock(&self.shared.counts) }
    }

    fn serve_on(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        let app = router(self.shared.clone());
        let acceptor = self.tls.as_ref().map(|(_, a)| a.clone());
        let t = token.clone();
        let task = tokio::spawn(async move {
            // Open connections end with the listener: once cancelled, this task ends after them.
            let connections = tokio_util::task::TaskTracker::new();
            loop {
                let stream = tokio::select! {
                    _ = t.cancelled() => {
                        connections.close();
                        connections.wait().await;
                        return;
                    }
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "simulator accept failed");
                            continue;
                        }
                    },
                };
                let svc = TowerToHyperService::new(app.clone());
                let t = t.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let serve = async {
                        match acceptor {
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                            Some(a) => match a.accept(stream).await {
                                Ok(tls) => {
                                    let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                                }
                                Err(e) => tracing::debug!(error = %e, "simulator TLS handshake failed"),
                            },
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = t.cancelled() => {}
                    }
                });
            }
        });
        *lock(&self.serving) = Some((token, task));
    }

    fn stop_serving(&self) {
        if let Some((token, task)) = lock(&self.serving).take() {
            token.cancel();
            task.abort();
        }
    }

    /// Cuts connectivity: refuse connections (listener and open connections closed) or hang.
    pub async fn cut(&self, how: Cut) {
        match how {
            Cut::Refuse => {
                let task = lock(&self.serving).take();
                if let Some((token, task)) = task {
                    // Returns once the listener and every open connection are closed, so no
                    // answer leaves after the cut.
                    token.cancel();
                    let _ = task.await;
                }
            }
            Cut::Hang => {
                self.shared.hang.send_replace(true);
            }
        }
    }

    /// Restores connectivity after [`SimHandle::cut`] (rebinding the same port).
    pub async fn restore(&self) -> Result<()> {
        self.shared.hang.send_replace(false);
        if lock(&self.serving).is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .map_err(|source| Error::Listen { addr: self.addr.to_string(), source })?;
            self.serve_on(listener);
        }
        Ok(())
    }

    /// Drops every session server-side (as a vCenter restart or session timeout does).
    pub fn drop_sessions(&self) {
        lock(&self.shared.sessions).clear();
        self.shared.notify();
    }

    /// Number of `WaitForUpdatesEx` calls currently parked waiting for a change: once a client
    /// has one parked it has caught up with every change so far.
    pub fn parked_waits(&self) -> usize {
        self.shared.parked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.shared.world)
    }

    fn change<T>(&self, f: impl FnOnce(&mut World) -> Result<T>) -> Result<T> {
        let r = f(&mut self.world());
        if r.is_ok() {
            self.shared.notify();
        }
        r
    }

    /// Host ids (`host-N`), in order.
    pub fn host_ids(&self) -> Vec<String> {
        self.world().hosts.keys().cloned().collect()
    }

    /// VM ids (`vm-N`), in order.
    pub fn vm_ids(&self) -> Vec<String> {
        self.world().vms.keys().cloned().collect()
    }

    /// Distributed port group keys, in order.
    pub fn dvportgroup_keys(&self) -> Vec<String> {
        self.world().dvpgs.keys().cloned().collect()
    }

    /// The host a VM runs on and its NIC keys.
    pub fn vm_info(&self, vm: &str) -> Option<(String, Vec<i64>)> {
        self.world().vms.get(vm).map(|v| (v.host.clone(), v.nics.iter().map(|n| n.key).collect()))
    }

    /// Adds a host with two pnics (`vmnic0`, `vmnic1`) cabled to `switch:port0`, `switch:port1`
    /// by CDP, carrying every standard port group of the first host. Returns its id.
    pub fn add_host(&self, name: &str, cabling: [Neighbour; 2]) -> Result<String> {
        self.change(|w| {
            let portgroups = w.hosts.values().next().map(|h| h.portgroups.clone()).unwrap_or_default();
            let id = w.id("host");
            let gen = w.bump(HOST, &id);
            let [a, b] = cabling;
            let pnics = [("vmnic0", a), ("vmnic1", b)]
                .into_iter()
                .map(|(d, n)| SimPnic { device: d.into(), mac: w.mac(), cdp: Some(n), lldp: None, on_dvs: false })
                .collect();
            let ns = format!("networkSystem-{}", id.trim_start_matches("host-"));
            w.hosts.insert(
                id.clone(),
                SimHost { name: name.into(), gen, network_system: ns, pnics, portgroups, dvs: None },
            );
            Ok(id)
        })
    }

    /// Removes a host and every VM on it.
    pub fn remove_host(&self, host: &str) -> Result<()> {
        self.change(|w| {
            w.hosts.remove(host).ok_or_else(|| Error::Sim(format!("no host {host}")))?;
            w.vms.retain(|_, v| v.host != host);
            Ok(())
        })
    }

    /// Adds a powered-on VM with one NIC (key 4000) on `network`. Returns its id.
    pub fn add_vm(&self, host: &str, name: &str, network: SimNet) -> Result<String> {
        self.change(|w| {
            if !w.hosts.contains_key(host) {
                return Err(Error::Sim(format!("no host {host}")));
            }
            let id = w.id("vm");
            let gen = w.bump(VM, &id);
            let nic = SimNic { key: 4000, mac: w.mac(), connected: true, network };
            w.vms.insert(
                id.clone(),
                SimVm { name: name.into(), gen, host: host.into(), powered_on: true, nics: vec![nic] },
            );
            Ok(id)
        })
    }

    pub fn remove_vm(&self, vm: &str) -> Result<()> {
        self.change(|w| w.vms.remove(vm).map(|_| ()).ok_or_else(|| Error::Sim(format!("no VM {vm}"))))
    }

    fn with_vm<T>(&self, vm: &str, f: impl FnOnce(&mut SimVm, &mut World) -> Result<T>) -> Result<T> {
        self.change(|w| {
            let mut v = w.vms.remove(vm).ok_or_else(|| Error::Sim(format!("no VM {vm}")))?;
            let r = f(&mut v, w);
            v.gen = w.bump(VM, vm);
            w.vms.insert(vm.to_string(), v);
            r
        })
    }

    /// Adds a NIC to a VM; returns its device key.
    pub fn add_nic(&self, vm: &str, network: SimNet) -> Result<i64> {
        self.with_vm(vm, |v, w| {
            let key = v.nics.iter().map(|n| n.key).max().unwrap_or(3999) + 1;
            v.nics.push(SimNic { key, mac: w.mac(), connected: true, network });
            Ok(key)
        })
    }

    pub fn remove_nic(&self, vm: &str, key: i64) -> Result<()> {
        self.with_vm(vm, |v, _| {
            let before = v.nics.len();
            v.nics.retain(|n| n.key != key);
            if v.nics.len() == before {
                return Err(Error::Sim(format!("VM {vm} has no NIC {key}")));
            }
            Ok(())
        })
    }

    /// Connects or disconnects a NIC (`connectable.connected`).
    pub fn set_nic_connected(&self, vm: &str, key: i64, connected: bool) -> Result<()> {
        self.with_nic(vm, key, |n| n.connected = connected)
    }

    /// Moves a NIC to another network.
    pub fn set_nic_network(&self, vm: &str, key: i64, network: SimNet) -> Result<()> {
        self.with_nic(vm, key, |n| n.network = network)
    }

    fn with_nic(&self, vm: &str, key: i64, f: impl FnOnce(&mut SimNic)) -> Result<()> {
        self.with_vm(vm, |v, _| {
            let n = v
                .nics
                .iter_mut()
                .find(|n| n.key == key)
                .ok_or_else(|| Error::Sim(format!("VM {vm} has no NIC {key}")))?;
            f(n);
            Ok(())
        })
    }

    pub fn set_power(&self, vm: &str, on: bool) -> Result<()> {
        self.with_vm(vm, |v, _| {
            v.powered_on = on;
            Ok(())
        })
    }

    /// vMotion: the VM now runs on `host`.
    pub fn move_vm(&self, vm: &str, host: &str) -> Result<()> {
        let exists = self.world().hosts.contains_key(host);
        if !exists {
            return Err(Error::Sim(format!("no host {host}")));
        }
        self.with_vm(vm, |v, _| {
            v.host = host.into();
            Ok(())
        })
    }

    fn each_host(&self, mut f: impl FnMut(&mut SimHost) -> bool) -> Result<usize> {
        self.change(|w| {
            let mut n = 0;
            let ids: Vec<String> = w.hosts.keys().cloned().collect();
            for id in ids {
                let gen = w.bump(HOST, &id);
                if let Some(h) = w.hosts.get_mut(&id) {
                    if f(h) {
                        h.gen = gen;
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }

    /// Adds a standard port group with this VLAN id (raw: 0, 4095 and bad ids are allowed) to
    /// every host's `vSwitch0`.
    pub fn add_portgroup(&self, name: &str, vlan: i64) -> Result<()> {
        self.each_host(|h| {
            h.portgroups.push((name.to_string(), vlan));
            true
        })
        .map(|_| ())
    }

    pub fn remove_portgroup(&self, name: &str) -> Result<()> {
        let n = self.each_host(|h| {
            let before = h.portgroups.len();
            h.portgroups.retain(|(p, _)| p != name);
            h.portgroups.len() != before
        })?;
        if n == 0 {
            return Err(Error::Sim(format!("no port group {name}")));
        }
        Ok(())
    }

    /// Changes a standard port group's VLAN on every host.
    pub fn set_portgroup_vlan(&self, name: &str, vlan: i64) -> Result<()> {
        let n = self.each_host(|h| {
            let mut hit = false;
            for (p, v) in h.portgroups.iter_mut().filter(|(p, _)| p == name) {
                let _ = p;
                *v = vlan;
                hit = true;
            }
            hit
        })?;
        if n == 0 {
            return Err(Error::Sim(format!("no port group {name}")));
        }
        Ok(())
    }

    /// Adds a distributed port group on the (first) DVS; returns its key.
    pub fn add_dvportgroup(&self, name: &str, vlan: SimVlan) -> Result<String> {
        self.change(|w| {
            let dvs = w.dvs.keys().next().cloned().ok_or_else(|| Error::Sim("no distributed switch".into()))?;
            let id = w.id("dvportgroup");
            let gen = w.bump(DVPG, &id);
            w.dvpgs.insert(id.clone(), SimDvpg { name: name.into(), gen, dvs, vlan, uplink: false });
            Ok(id)
        })
    }

    pub fn set_dvportgroup_vlan(&self, key: &str, vlan: SimVlan) -> Result<()> {
        self.change(|w| {
            let gen = w.bump(DVPG, key);
            let p = w.dvpgs.get_mut(key).ok_or_else(|| Error::Sim(format!("no distributed port group {key}")))?;
            p.vlan = vlan;
            p.gen = gen;
            Ok(())
        })
    }

    pub fn remove_dvportgroup(&self, key: &str) -> Result<()> {
        self.change(|w| {
            w.dvpgs.remove(key).map(|_| ()).ok_or_else(|| Error::Sim(format!("no distributed port group {key}")))
        })
    }

    /// Sets (or clears) a pnic's CDP neighbour. Not covered by property filters: visible through
    /// `QueryNetworkHint` only, as on a real host.
    pub fn set_cdp(&self, host: &str, device: &str, n: Option<Neighbour>) -> Result<()> {
        self.with_pnic(host, device, |p| p.cdp = n)
    }

    /// Sets (or clears) a pnic's LLDP neighbour.
    pub fn set_lldp(&self, host: &str, device: &str, n: Option<Neighbour>) -> Result<()> {
        self.with_pnic(host, device, |p| p.lldp = n)
    }

    fn with_pnic(&self, host: &str, device: &str, f: impl FnOnce(&mut SimPnic)) -> Result<()> {
        let mut w = self.world();
        let h = w.hosts.get_mut(host).ok_or_else(|| Error::Sim(format!("no host {host}")))?;
        let p = h
            .pnics
            .iter_mut()
            .find(|p| p.device == device)
            .ok_or_else(|| Error::Sim(format!("host {host} has no pnic {device}")))?;
        f(p);
        Ok(())
    }
}

/// The generated inventory.
fn generate(o: &SimOptions) -> World {
    let mut w = World::default();
    let mut port = 0usize;
    let mut cable = |w: &mut World, device: &str, on_dvs: bool| {
        port += 1;
        SimPnic {
            device: device.into(),
            mac: w.mac(),
            cdp: Some(Neighbour { switch: o.switch_name.clone(), port: format!("{}{port}", o.port_prefix) }),
            lldp: None,
            on_dvs,
        }
    };
    let portgroups: Vec<(String, i64)> =
        (0..o.portgroups).map(|i| (format!("pg-{}", o.first_vlan + i as i64), o.first_vlan + i as i64)).collect();
    let dvs = (o.dvs_portgroups > 0).then(|| {
        let id = w.id("dvs");
        let gen = w.bump(DVS, &id);
        let uuid = format!("50 1d 2e 3f 4a 5b 6c 7d-8e 9f a0 b1 c2 d3 e4 {:02x}", w.next_id & 0xff);
        w.dvs.insert(id.clone(), SimDvs { name: "dvSwitch".into(), gen, uuid });
        let up = w.id("dvportgroup");
        let gen = w.bump(DVPG, &up);
        w.dvpgs.insert(
            up,
            SimDvpg {
                name: "dvSwitch-DVUplinks".into(),
                gen,
                dvs: id.clone(),
                vlan: SimVlan::Trunk(vec![(0, 4094)]),
                uplink: true,
            },
        );
        for i in 0..o.dvs_portgroups {
            let pg = w.id("dvportgroup");
            let gen = w.bump(DVPG, &pg);
            let vlan = o.first_vlan + 100 + i as i64;
            w.dvpgs.insert(
                pg,
                SimDvpg { name: format!("dvpg-{vlan}"), gen, dvs: id.clone(), vlan: SimVlan::Id(vlan), uplink: false },
            );
        }
        id
    });
    let dvpg_keys: Vec<String> = w.dvpgs.iter().filter(|(_, p)| !p.uplink).map(|(k, _)| k.clone()).collect();
    for h in 0..o.hosts {
        let id = w.id("host");
        let gen = w.bump(HOST, &id);
        let mut pnics = vec![cable(&mut w, "vmnic0", false), cable(&mut w, "vmnic1", false)];
        if dvs.is_some() {
            pnics.push(cable(&mut w, "vmnic2", true));
            pnics.push(cable(&mut w, "vmnic3", true));
        }
        let ns = format!("networkSystem-{}", id.trim_start_matches("host-"));
        w.hosts.insert(
            id.clone(),
            SimHost {
                name: format!("esx-{:02}.sim.local", h + 1),
                gen,
                network_system: ns,
                pnics,
                portgroups: portgroups.clone(),
                dvs: dvs.clone(),
            },
        );
        for v in 0..o.vms_per_host {
            let networks = portgroups.len() + dvpg_keys.len();
            let nics = if networks == 0 {
                Vec::new()
            } else {
                let i = v % networks;
                let network = match portgroups.get(i) {
                    Some((name, _)) => SimNet::Standard(name.clone()),
                    None => SimNet::Distributed(dvpg_keys[i - portgroups.len()].clone()),
                };
                vec![SimNic { key: 4000, mac: w.mac(), connected: true, network }]
            };
            let vm = w.id("vm");
            let gen = w.bump(VM, &vm);
            w.vms.insert(
                vm,
                SimVm { name: format!("vm-{:02}-{:03}", h + 1, v + 1), gen, host: id.clone(), powered_on: true, nics },
            );
        }
    }
    w
}
