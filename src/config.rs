//! The agent's TOML configuration: data directory, hypervisors, switches, static topology,
//! engine policy, the HTTP endpoint and logging. Parsing names the file, the line and the key;
//! validation names the entry and the key, and says what is allowed. Nothing here connects.
//!
//! Validation is the one `config check` and `run` share ([`load`]): [`parse`] checks the text
//! alone (the adapters' own `validate`, URLs through `reqwest::Url`, cross-references between
//! `[[topology]]` and the hypervisors and switches), then [`check_environment`] reads what the
//! agent will read at start-up — every password source, `ca_file` and `token_file` — so a
//! config that `check` passes is one `run` does not refuse for its contents.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters::common::url::{parse_endpoint, redact};
use adapters::common::{ExposeSecret as _, SecretSource, SecretString, TlsOptions};
use anyhow::{anyhow, bail, Result};
use engine::config::{MassRemoval, Policy, StaticLink, MAX_GRACE_SECS};
use engine::port::{Grammar, PortName};
use engine::topology::{normalize_mac, HostSelector, TopologyEntry};
use engine::{HypervisorId, Kind, SwitchPort, VlanRange};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the log, snapshots and ledgers live.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log_format: Option<crate::cli::LogFormat>,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default, rename = "hypervisor")]
    pub hypervisors: Vec<Hypervisor>,
    #[serde(default, rename = "switch")]
    pub switches: Vec<Switch>,
    #[serde(default, rename = "topology")]
    pub topology: Vec<Link>,
    /// Where the logs and tables live: the data directory (sled, the default) or PostgreSQL.
    #[serde(default)]
    pub store: StoreSection,
    /// Several instances on one PostgreSQL store: who this one is and how long its lease lasts.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Accept password and token files that their group or others can read (a WARN at every
    /// start instead of a refusal).
    #[serde(default)]
    pub allow_readable_secrets: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// `/healthz`, `/metrics`, `/state`. Loopback by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file holding a bearer token: when set, every route but `/healthz` needs
    /// `Authorization: Bearer TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Most connections served at once (default 256); more wait in the kernel's backlog.
    pub max_connections: Option<usize>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}

impl Default for Http {
    fn default() -> Self {
        Self { listen: default_listen(), token_file: None, max_connections: None }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Default grace period, seconds (180).
    pub grace_secs: Option<u64>,
    /// Take a snapshot every this many events.
    pub snapshot_every: Option<u64>,
    #[serde(default)]
    pub count_powered_off: bool,
    #[serde(default)]
    pub count_vmless_networks: bool,
    pub mass_removal: Option<MassRemoval>,
}

/// `[store]`: sled in the data directory, or a PostgreSQL database (ADR 0008).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sled` (default) or `postgres`.
    pub kind: Option<String>,
    /// postgres: `postgres://USER@HOST:PORT/DATABASE` (no password in it: `password_file`).
    pub url: Option<String>,
    /// postgres: a file holding the password (readable by netfold only).
    pub password_file: Option<PathBuf>,
    /// postgres: TLS to the server, with the hypervisors' options (`ca_file`, `thumbprint`,
    /// `insecure`); when set, TLS is required.
    pub tls: Option<TlsOptions>,
    /// postgres: accept a server that is not on this machine without TLS (a WARN at every
    /// start).
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// `[cluster]`: instances sharing one PostgreSQL store (ADR 0014). Only with `[store] kind =
/// "postgres"`; the instances share the work, each holding the leases of the hypervisors and
/// switches it works on, up to a fair share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This instance's name in leases, `/healthz` and `netfold status` (default: the host name).
    pub instance: Option<String>,
    /// How long a lease lasts without a renewal, seconds (default 10; renewed every
    /// third of it).
    pub lease_ttl_secs: Option<u64>,
}

/// `[cluster]`, validated (present only with a PostgreSQL store).
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub instance: String,
    pub lease_ttl: Duration,
}

/// Validates `[cluster]` for `store`: `None` on sled, where one process holds the data directory.
fn cluster_plan(c: &ClusterSection, store: &StorePlan) -> Result<Option<ClusterPlan>> {
    let at = "[cluster]";
    if matches!(store, StorePlan::Sled) {
        if c.instance.is_some() || c.lease_ttl_secs.is_some() {
            bail!("{at}: applies to `[store] kind = \"postgres\"` only (on sled one process holds the data directory)");
        }
        return Ok(None);
    }
    let instance = match &c.instance {
        Some(i) => i.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| anyhow!("{at}: key `instance` is not set and the host name cannot be read: {e}"))?,
    };
    if instance.is_empty()
        || instance.len() > 64
        || !instance.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        bail!("{at}: key `instance`: `{instance}` is not a name (1 to 64 of A-Z a-z 0-9 - _ .)");
    }
    let ttl = c.lease_ttl_secs.unwrap_or(10);
    if !(2..=300).contains(&ttl) {
        bail!("{at}: key `lease_ttl_secs`: {ttl} is out of range; allowed: 2 to 300 seconds");
    }
    Ok(Some(ClusterPlan { instance, lease_ttl: Duration::from_secs(ttl) }))
}

/// The store, validated.
pub enum StorePlan {
    /// sled in the data directory.
    Sled,
    Postgres(Box<PostgresPlan>),
}

pub struct PostgresPlan {
    /// The connection (the password is added by [`check_environment`]).
    pub config: store::PgConfig,
    /// The url as configured (it holds no password), for messages.
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub tls_options: Option<TlsOptions>,
    /// Built by [`check_environment`] (it reads `ca_file`).
    pub tls: store::PgTls,
}

impl StorePlan {
    /// `sled` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            StorePlan::Sled => "sled",
            StorePlan::Postgres(_) => "postgres",
        }
    }

    /// The store for messages: the data directory or the PostgreSQL url.
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            StorePlan::Sled => format!("data directory {}", data_dir.display()),
            StorePlan::Postgres(p) => format!("PostgreSQL {}", p.url),
        }
    }
}

/// Validates `[store]`; warnings go to `warnings`.
pub fn store_plan(s: &StoreSection, warnings: &mut Vec<String>) -> Result<StorePlan> {
    let at = "[store]";
    match s.kind.as_deref().unwrap_or("sled") {
        "sled" => {
            for (key, set) in [
                ("url", s.url.is_some()),
                ("password_file", s.password_file.is_some()),
                ("tls", s.tls.is_some()),
                ("allow_plaintext", s.allow_plaintext),
            ] {
                if set {
                    bail!("{at}: key `{key}` applies to kind `postgres` only (this store is `sled`)");
                }
            }
            Ok(StorePlan::Sled)
        }
        "postgres" => {
            let url = s.url.clone().ok_or_else(|| anyhow!("{at}: key `url` is required for kind `postgres`"))?;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("{at}: key `url`: expected `postgres://USER@HOST:PORT/DATABASE`");
            }
            let config: store::PgConfig =
                url.parse().map_err(|e| anyhow!("{at}: key `url`: not a PostgreSQL url: {e}"))?;
            if config.get_password().is_some() {
                bail!("{at}: key `url`: holds a password; put it in a file readable only by netfold and name it in `password_file`");
            }
            if config.get_user().is_none() {
                bail!("{at}: key `url`: names no user (`postgres://USER@HOST/DATABASE`)");
            }
            if config.get_dbname().is_none() {
                bail!("{at}: key `url`: names no database (`postgres://USER@HOST/DATABASE`)");
            }
            if let Some(p) = &s.password_file {
                if p.as_os_str().is_empty() {
                    bail!("{at}: key `password_file` is empty");
                }
            }
            if let Some(t) = &s.tls {
                t.pinned().map_err(|e| anyhow!("{at}: key `tls.thumbprint`: {e}"))?;
            } else if !store::PgStore::is_local(&config) {
                if !s.allow_plaintext {
                    bail!("{at}: key `url`: the server is not on this machine and no `tls` is set: the password and the log would cross the network in clear; set `tls = {{}}` (system roots) or `tls = {{ ca_file = \"...\" }}`, or allow_plaintext = true");
                }
                warnings.push(format!("{at}: key `url`: `{url}` without TLS (allow_plaintext = true): the password and the log cross the network unencrypted"));
            }
            Ok(StorePlan::Postgres(Box::new(PostgresPlan {
                config,
                url,
                password_file: s.password_file.clone(),
                tls_options: s.tls.clone(),
                tls: store::PgTls::Off,
            })))
        }
        other => bail!("{at}: key `kind`: `{other}` is not a store kind; allowed: `sled`, `postgres`"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypervisor {
    pub name: String,
    /// `vmware` or `xen`.
    pub kind: String,
    pub url: String,
    pub user: String,
    pub password: SecretSource,
    #[serde(default)]
    pub tls: TlsOptions,
    /// This hypervisor's grace period, seconds (default: `engine.grace_secs`, else 180).
    pub grace_secs: Option<u64>,
    /// Session timing; each unset key keeps the adapter's default (see netfold.example.toml).
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub fatal_retry_secs: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub liveness_secs: Option<u64>,
    /// How long the hypervisor holds an update poll open (`WaitForUpdatesEx` maxWaitSeconds,
    /// `event.from` timeout); below `liveness_secs`.
    pub wait_secs: Option<u32>,
    pub resync_secs: Option<u64>,
    /// vmware only: objects per page of the inventory read (`maxObjectUpdates`) and per
    /// `RetrievePropertiesEx` page.
    pub page_size: Option<u32>,
    /// Accept an `http://` url (the password then crosses the network in clear; a WARN at
    /// every start).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Largest reply accepted from one call, bytes (default: the adapter's, sized for the
    /// largest inventory netfold targets; see README).
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    pub name: String,
    /// `ovs`, `eapi` or `memory`.
    pub kind: String,
    /// ovs: `tcp:HOST:PORT` or `unix:/path`; eapi: `https://HOST`.
    pub address: Option<String>,
    /// eapi only.
    pub user: Option<String>,
    /// eapi only.
    pub password: Option<SecretSource>,
    /// eapi only.
    pub tls: Option<TlsOptions>,
    /// eapi only: accept an `http://` address (basic auth in clear; a WARN at every start).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// ovs only: the VLAN kept on a trunk instead of leaving it empty (default 4094).
    pub parking_vlan: Option<u16>,
    /// ovs only: ovs-vswitchd's control socket (`/var/run/openvswitch/ovs-vswitchd.<pid>.ctl`) or
    /// its run directory, where the MAC table is read (default: the directory of a `unix:`
    /// address; a `tcp:` address without it does not discover).
    pub unixctl: Option<String>,
    /// How often the switch's MAC table, LLDP neighbours and bonds are read to tie host NICs to
    /// ports, seconds (default 60; 0: never).
    pub discover_secs: Option<u64>,
    /// VLANs netfold may add or remove (`["100-199", "300"]`); empty: all.
    #[serde(default)]
    pub allowed_vlans: Vec<String>,
    /// The ports facing hypervisor hosts, the only ones netfold configures; empty: every port
    /// desired state names.
    #[serde(default)]
    pub managed_ports: BTreeSet<String>,
    /// Ports netfold never touches, even if listed in `managed_ports`.
    #[serde(default)]
    pub excluded_ports: BTreeSet<String>,
    /// Most removals per cycle (blast-radius guard, default 64).
    pub max_removals: Option<usize>,
    #[serde(default)]
    pub dry_run: bool,
    /// Periodic resync, seconds (default 30).
    pub resync_secs: Option<u64>,
    /// ovs and eapi: how long one request to the switch may take, seconds (default 5).
    pub timeout_secs: Option<u64>,
    /// memory only: the switch's ports (with no VLANs); without it, ports come into being the
    /// first time netfold configures them.
    pub ports: Option<Vec<String>>,
}

impl Switch {
    /// Per-request timeout of the switch's management API.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_secs.unwrap_or(5) * 1000
    }

    /// Whose port-name grammar this switch's ports follow.
    pub fn grammar(&self) -> Grammar {
        match self.kind.as_str() {
            "eapi" => Grammar::Eos,
            "ovs" => Grammar::Ovs,
            _ => Grammar::Memory,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub hypervisor: String,
    /// The host by its id (vSphere moref, XenAPI host uuid): exactly one of `host`,
    /// `host_name` and `mac`.
    pub host: Option<String>,
    /// The host by its name: keeps applying when a vCenter is rebuilt or restored (ids change).
    pub host_name: Option<String>,
    /// A pNIC by its MAC: names the host and the NIC (no `nic` key).
    pub mac: Option<String>,
    /// The uplink device (`vmnic0`), with `host` or `host_name`.
    pub nic: Option<String>,
    /// `SWITCH:PORT`.
    pub port: String,
}

impl Link {
    /// The entry as the engine takes it; `at` names it in errors.
    fn entry(&self, position: usize, at: &str) -> Result<TopologyEntry> {
        let hypervisor = HypervisorId::new(&self.hypervisor).map_err(|e| anyhow!("{at}: key `hypervisor`: {e}"))?;
        let port = self.port.parse::<SwitchPort>().map_err(|e| anyhow!("{at}: key `port`: {e}"))?;
        let nonempty = |key: &str, v: &str| {
            if v.trim().is_empty() {
                bail!("{at}: key `{key}` is empty")
            }
            Ok(v.to_string())
        };
        let host =
            match (&self.host, &self.host_name, &self.mac) {
                (Some(id), None, None) => HostSelector::Id(nonempty("host", id)?),
                (None, Some(name), None) => HostSelector::Name(nonempty("host_name", name)?),
                (None, None, Some(mac)) => HostSelector::Mac(normalize_mac(mac).ok_or_else(|| {
                    anyhow!("{at}: key `mac`: `{mac}` is not a MAC (six hex pairs: 00:0c:29:81:d8:a0)")
                })?),
                (None, None, None) => bail!("{at}: names no host: give one of `host` (id), `host_name` or `mac`"),
                _ => bail!("{at}: is ambiguous: give only one of `host` (id), `host_name` and `mac`"),
            };
        let nic = match (&host, &self.nic) {
            (HostSelector::Mac(_), Some(_)) => bail!("{at}: key `nic`: a `mac` names its NIC; drop `nic`"),
            (HostSelector::Mac(_), None) => None,
            (_, Some(nic)) => Some(nonempty("nic", nic)?),
            (_, None) => bail!("{at}: key `nic` is missing (the uplink device, `vmnic0`)"),
        };
        Ok(TopologyEntry { position, hypervisor, host, nic, port })
    }
}

/// A validated hypervisor entry, with its adapter's configuration built and checked.
pub struct HypervisorPlan {
    pub id: HypervisorId,
    pub kind: Kind,
    pub adapter: crate::agent::Adapter,
}

fn check_grace(key: &str, g: u64) -> Result<()> {
    if !(1..=MAX_GRACE_SECS).contains(&g) {
        bail!("key `{key}`: {g} is out of range; allowed: 1 to {MAX_GRACE_SECS} seconds (one week)");
    }
    Ok(())
}

/// A validated switch entry.
pub struct SwitchPlan {
    pub entry: Switch,
    pub reconcile: engine::reconciler::Config,
}

/// The HTTP endpoint, validated.
pub struct HttpPlan {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// Read by [`check_environment`].
    pub token: Option<SecretString>,
    pub max_connections: usize,
}

/// Everything the agent needs, validated.
pub struct Plan {
    pub data_dir: PathBuf,
    pub store: StorePlan,
    /// With a PostgreSQL store: this instance and its lease.
    pub cluster: Option<ClusterPlan>,
    pub http: HttpPlan,
    pub log_format: Option<crate::cli::LogFormat>,
    pub engine: engine::config::Config,
    pub hypervisors: Vec<HypervisorPlan>,
    pub switches: Vec<SwitchPlan>,
    pub allow_readable_secrets: bool,
    /// What the operator allowed but should know (cleartext, readable secrets): `check` prints
    /// them, `run` logs each as a WARN at every start.
    pub warnings: Vec<String>,
}

/// Reads and validates `path`, then everything it names ([`check_environment`]): what both
/// `config check` and `run` call.
pub fn load(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read config file {}: {e}", path.display()))?;
    let mut plan = parse(&text, path)?;
    check_environment(&mut plan).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(plan)
}

/// Parses and validates config text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Plan> {
    let config: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    validate(config).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `FILE:LINE:COL: key `k`: message` — never quoting the line itself (it may hold a secret).
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> anyhow::Error {
    let Some(span) = e.span() else { return anyhow!("{}: {}", path.display(), e.message()) };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let key = line_text.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => anyhow!("{}:{line}:{col}: key `{k}`: {}", path.display(), e.message()),
        None => anyhow!("{}:{line}:{col}: {}", path.display(), e.message()),
    }
}

fn validate(c: Config) -> Result<Plan> {
    let mut warnings = Vec::new();
    let mut static_links = Vec::new();
    let mut topology: Vec<TopologyEntry> = Vec::new();
    for (i, l) in c.topology.iter().enumerate() {
        let at = format!("[[topology]] #{}", i + 1);
        let e = l.entry(i + 1, &at)?;
        if let Some(other) =
            topology.iter().find(|o| (&o.hypervisor, &o.host, &o.nic) == (&e.hypervisor, &e.host, &e.nic))
        {
            bail!(
                "{at}: names the same uplink as [[topology]] #{} ({} {}); give it once",
                other.position,
                e.hypervisor,
                e.host
            );
        }
        if let (HostSelector::Id(host), Some(nic)) = (&e.host, &e.nic) {
            static_links.push(StaticLink {
                hypervisor: e.hypervisor.clone(),
                host: host.clone(),
                nic: nic.clone(),
                port: e.port.clone(),
            });
        }
        topology.push(e);
    }
    let mut engine = engine::config::Config {
        policy: Policy {
            count_powered_off: c.engine.count_powered_off,
            count_vmless_networks: c.engine.count_vmless_networks,
            static_links,
        },
        topology,
        ..engine::config::Config::default()
    };
    if let Some(g) = c.engine.grace_secs {
        check_grace("grace_secs", g).map_err(|e| anyhow!("[engine]: {e}"))?;
        engine.grace_secs = g;
    }
    if let Some(n) = c.engine.snapshot_every {
        engine.snapshot_every = n;
    }
    if let Some(m) = c.engine.mass_removal {
        engine.mass_removal = m;
    }

    let mut names = BTreeSet::new();
    let mut hypervisors = Vec::new();
    for h in c.hypervisors {
        let at = format!("[[hypervisor]] `{}`", h.name);
        let id = HypervisorId::new(&h.name).map_err(|e| anyhow!("{at}: key `name`: {e}"))?;
        if !names.insert(id.clone()) {
            bail!("{at}: key `name`: the name is used twice; hypervisor names must be unique");
        }
        let kind: Kind = h.kind.parse().map_err(|e| anyhow!("{at}: key `kind`: {e}"))?;
        let url = parse_endpoint(&h.url, h.allow_plaintext).map_err(|e| anyhow!("{at}: key `url`: {e}"))?;
        if url.scheme() == "http" {
            warnings.push(plaintext_warning(&at, "url", &h.url));
        }
        check_secret(&h.password).map_err(|e| anyhow!("{at}: key `password`: {e}"))?;
        h.tls.pinned().map_err(|e| anyhow!("{at}: key `tls.thumbprint`: {e}"))?;
        if let Some(g) = h.grace_secs {
            check_grace("grace_secs", g).map_err(|e| anyhow!("{at}: {e}"))?;
            engine.grace_secs_per_hypervisor.insert(id.clone(), g);
        }
        if kind == Kind::XenCitrix && h.page_size.is_some() {
            bail!("{at}: key `page_size` applies to kind `vmware` only (XenAPI reads whole tables)");
        }
        // The adapter's configuration, validated as its constructor will (so `check` refuses it too).
        let adapter = crate::agent::Adapter::from_config(kind, &h).map_err(|e| anyhow!("{at}: {e}"))?;
        hypervisors.push(HypervisorPlan { id, kind, adapter });
    }
    engine.validate().map_err(|e| anyhow!("[engine]: {e}"))?;

    let mut switch_names = BTreeSet::new();
    let mut switches = Vec::new();
    for s in c.switches {
        let at = format!("[[switch]] `{}`", s.name);
        if s.name.is_empty() || s.name.contains(':') || s.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            bail!("{at}: key `name`: must be non-empty, without `:`, spaces or control characters");
        }
        if !switch_names.insert(s.name.clone()) {
            bail!("{at}: key `name`: the name is used twice; switch names must be unique");
        }
        let only = |key: &str, set: bool, kind: &str| -> Result<()> {
            if set && s.kind != kind {
                bail!("{at}: key `{key}` applies to kind `{kind}` only (this switch is `{}`)", s.kind);
            }
            Ok(())
        };
        match (s.kind.as_str(), s.address.as_deref()) {
            ("ovs" | "eapi", None) => bail!("{at}: key `address` is required for kind `{}`", s.kind),
            ("ovs", Some(a)) => {
                a.parse::<adapters::ovs::Endpoint>().map_err(|e| anyhow!("{at}: key `address`: {e}"))?;
            }
            ("eapi", Some(a)) => {
                let url = parse_endpoint(a, s.allow_plaintext).map_err(|e| anyhow!("{at}: key `address`: {e}"))?;
                if url.scheme() == "http" {
                    warnings.push(plaintext_warning(&at, "address", a));
                }
            }
            ("memory", _) => {}
            (other, _) => bail!("{at}: key `kind`: `{other}` is not a switch kind; allowed: `ovs`, `eapi`, `memory`"),
        }
        only("user", s.user.is_some(), "eapi")?;
        only("password", s.password.is_some(), "eapi")?;
        only("tls", s.tls.is_some(), "eapi")?;
        if let Some(t) = &s.tls {
            t.pinned().map_err(|e| anyhow!("{at}: key `tls.thumbprint`: {e}"))?;
        }
        only("allow_plaintext", s.allow_plaintext, "eapi")?;
        only("parking_vlan", s.parking_vlan.is_some(), "ovs")?;
        only("ports", s.ports.is_some(), "memory")?;
        if let Some(p) = s.parking_vlan {
            engine::VlanId::new(p).map_err(|e| anyhow!("{at}: key `parking_vlan`: {e}"))?;
        }
        if s.kind == "memory" && s.timeout_secs.is_some() {
            bail!("{at}: key `timeout_secs` applies to kinds `ovs` and `eapi` only (this switch is `memory`)");
        }
        if let Some(t) = s.timeout_secs {
            if !(1..=300).contains(&t) {
                bail!("{at}: key `timeout_secs`: {t} is out of range; allowed: 1 to 300 seconds");
            }
        }
        if s.kind == "eapi" {
            if s.user.is_none() || s.password.is_none() {
                bail!("{at}: keys `user` and `password` are required for kind `eapi`");
            }
            if let Some(p) = &s.password {
                check_secret(p).map_err(|e| anyhow!("{at}: key `password`: {e}"))?;
            }
        }
        let allowed = s
            .allowed_vlans
            .iter()
            .map(|r| r.parse::<VlanRange>().map_err(|e| anyhow!("{at}: key `allowed_vlans`: `{r}`: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let grammar = s.grammar();
        let names = |key: &str, list: &mut dyn Iterator<Item = &String>| -> Result<BTreeSet<PortName>> {
            list.map(|p| PortName::parse(grammar, p).map_err(|e| anyhow!("{at}: key `{key}`: {e}"))).collect()
        };
        if let Some(ports) = &s.ports {
            names("ports", &mut ports.iter())?;
        }
        let mut policy = engine::plan::Policy {
            allowed,
            managed_ports: names("managed_ports", &mut s.managed_ports.iter())?,
            excluded_ports: names("excluded_ports", &mut s.excluded_ports.iter())?,
            dry_run: s.dry_run,
            ..engine::plan::Policy::default()
        };
        if let Some(m) = s.max_removals {
            policy.max_removals = m;
        }
        // An intent whose VLAN is absent is dropped only once no request still queued on the
        // switch can land: twice the request timeout, at least 10 s.
        let settle = Duration::from_millis(s.timeout_ms() * 2).max(Duration::from_secs(10));
        if s.unixctl.is_some() && s.kind != "ovs" {
            bail!("{at}: key `unixctl`: only an `ovs` switch has an ovs-vswitchd control socket");
        }
        let discover_every = match s.discover_secs {
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
            None => Some(engine::runtime::discover::DEFAULT_EVERY),
        };
        let mut reconcile =
            engine::reconciler::Config { policy, settle, discover_every, ..engine::reconciler::Config::default() };
        if let Some(r) = s.resync_secs {
            if r == 0 {
                bail!("{at}: key `resync_secs`: must be at least 1");
            }
            reconcile.resync = Duration::from_secs(r);
        }
        switches.push(SwitchPlan { entry: s, reconcile });
    }
    for l in &engine.topology {
        let at = format!("[[topology]] #{}", l.position);
        if !names.contains(&l.hypervisor) {
            bail!("{at}: key `hypervisor`: `{}` is not a configured [[hypervisor]]", l.hypervisor);
        }
        if !switch_names.contains(&l.port.switch) {
            bail!("{at}: key `port`: switch `{}` is not a configured [[switch]]", l.port.switch);
        }
    }
    if let Some(p) = &c.http.token_file {
        if p.as_os_str().is_empty() {
            bail!("[http]: key `token_file` is empty");
        }
    }
    let max_connections = c.http.max_connections.unwrap_or(256);
    if max_connections == 0 {
        bail!("[http]: key `max_connections` must be at least 1");
    }
    let http = HttpPlan { listen: c.http.listen, token_file: c.http.token_file, token: None, max_connections };
    let store = store_plan(&c.store, &mut warnings)?;
    let cluster = cluster_plan(&c.cluster, &store)?;
    Ok(Plan {
        data_dir: c.data_dir,
        store,
        cluster,
        http,
        log_format: c.log_format,
        engine,
        hypervisors,
        switches,
        allow_readable_secrets: c.allow_readable_secrets,
        warnings,
    })
}

fn plaintext_warning(at: &str, key: &str, url: &str) -> String {
    format!(
        "{at}: key `{key}`: `{}` is cleartext http:// (allow_plaintext = true): credentials cross the network unencrypted",
        redact(url)
    )
}

/// Exactly one source, and it names something (the secret itself is read by
/// [`check_environment`]).
fn check_secret(s: &SecretSource) -> Result<()> {
    match (&s.password_env, &s.password_file) {
        (Some(_), Some(_)) => bail!("give password_env or password_file, not both"),
        (None, None) => bail!("give password_env (an environment variable) or password_file"),
        (Some(v), None) if v.is_empty() => bail!("password_env is empty"),
        (None, Some(p)) if p.as_os_str().is_empty() => bail!("password_file is empty"),
        _ => Ok(()),
    }
}

/// The `[http]` bearer token a client of the agent sends (`netfold status`, the audit
/// commands while the agent runs): the `token_file`'s contents, `None` when none is set.
pub fn http_token(http: &HttpPlan) -> Result<Option<SecretString>> {
    let Some(path) = &http.token_file else { return Ok(None) };
    let token = SecretSource::file(path.clone()).load().map_err(|e| anyhow!("[http]: key `token_file`: {e}"))?;
    if token.expose_secret().trim().is_empty() {
        bail!("[http]: key `token_file`: {} is empty", path.display());
    }
    Ok(Some(token))
}

/// A secret file's contents, refused (or, with `allow`, warned about in `warnings`) when its
/// group or others can read it.
fn private_secret(
    at: &str,
    key: &str,
    s: &SecretSource,
    allow: bool,
    warnings: &mut Vec<String>,
) -> Result<SecretString> {
    let secret = s.load().map_err(|e| anyhow!("{at}: key `{key}`: {e}"))?;
    if let Some((path, mode)) = s.readable_by_others() {
        let what =
            format!("{at}: key `{key}`: {} has mode {mode:03o}: its group or others can read it", path.display());
        if !allow {
            bail!("{what}; `chmod 600` it (or set allow_readable_secrets = true to accept it with a warning)");
        }
        warnings.push(format!("{what} (allow_readable_secrets = true)"));
    }
    Ok(secret)
}

/// Readies `[store]`'s connection: its password file read (through `private`), its TLS built.
fn store_access(
    pg: &mut PostgresPlan,
    private: &mut impl FnMut(&str, &str, &SecretSource) -> Result<SecretString>,
) -> Result<()> {
    if let Some(path) = pg.password_file.clone() {
        let password = private("[store]", "password_file", &SecretSource::file(path))?;
        pg.config.password(password.expose_secret());
    }
    pg.tls = postgres_tls(pg)?;
    Ok(())
}

/// The config's PostgreSQL store, readied for a reader (the audit commands) as `run` readies it,
/// and nothing else of the config's secrets read; `None` on sled. Returns the warnings too.
pub fn reader_store(plan: Plan) -> Result<Option<(PostgresPlan, Vec<String>)>> {
    let allow = plan.allow_readable_secrets;
    let StorePlan::Postgres(mut pg) = plan.store else { return Ok(None) };
    let mut warnings = Vec::new();
    store_access(&mut pg, &mut |at: &str, key: &str, s: &SecretSource| {
        private_secret(at, key, s, allow, &mut warnings)
    })?;
    Ok(Some((*pg, warnings)))
}

/// The TLS of a PostgreSQL store: built from its options (reads `ca_file`).
fn postgres_tls(pg: &PostgresPlan) -> Result<store::PgTls> {
    match &pg.tls_options {
        None => Ok(store::PgTls::Off),
        Some(t) => {
            let c = t.rustls_client_config().map_err(|e| anyhow!("[store]: key `tls`: {e}"))?;
            Ok(store::PgTls::Rustls(std::sync::Arc::new(c)))
        }
    }
}

/// A PostgreSQL store given outside a config file (`netfold store copy`): validated as
/// `[store]` is, its password file read and checked private (refused when its group or others
/// can read it), its TLS built. Returns the plan and the warnings.
pub fn postgres_store(section: &StoreSection) -> Result<(PostgresPlan, Vec<String>)> {
    let mut warnings = Vec::new();
    let StorePlan::Postgres(mut pg) = store_plan(section, &mut warnings)? else {
        bail!("[store]: kind `postgres` expected");
    };
    if let Some(path) = pg.password_file.clone() {
        let source = SecretSource::file(&path);
        let password = source.load().map_err(|e| anyhow!("password file: {e}"))?;
        if let Some((path, mode)) = source.readable_by_others() {
            bail!(
                "password file {} has mode {mode:03o}: its group or others can read it; `chmod 600` it",
                path.display()
            );
        }
        pg.config.password(password.expose_secret());
    }
    pg.tls = postgres_tls(&pg)?;
    Ok((*pg, warnings))
}

/// Reads what the agent reads at start-up: every password (environment variable set, file
/// readable and private), every `ca_file` (PEM with at least one certificate) and the HTTP
/// token. A group- or world-readable file is refused, or a warning with
/// `allow_readable_secrets = true`.
pub fn check_environment(plan: &mut Plan) -> Result<()> {
    let allow = plan.allow_readable_secrets;
    let mut warnings = Vec::new();
    let mut private = |at: &str, key: &str, s: &SecretSource| private_secret(at, key, s, allow, &mut warnings);
    let tls = |at: &str, key: &str, t: &TlsOptions| -> Result<()> {
        t.apply(reqwest::Client::builder()).map(drop).map_err(|e| anyhow!("{at}: key `{key}`: {e}"))
    };
    for h in &plan.hypervisors {
        let at = format!("[[hypervisor]] `{}`", h.id);
        private(&at, "password", h.adapter.password())?;
        tls(&at, "tls", h.adapter.tls())?;
    }
    for s in &plan.switches {
        let at = format!("[[switch]] `{}`", s.entry.name);
        if let Some(p) = &s.entry.password {
            private(&at, "password", p)?;
        }
        if let Some(t) = &s.entry.tls {
            tls(&at, "tls", t)?;
        }
    }
    if let StorePlan::Postgres(pg) = &mut plan.store {
        store_access(pg, &mut private)?;
    }
    if let Some(path) = plan.http.token_file.clone() {
        let token = private("[http]", "token_file", &SecretSource::file(path))?;
        if token.expose_secret().trim().is_empty() {
            bail!("[http]: key `token_file`: the file is empty");
        }
        plan.http.token = Some(token);
    }
    plan.warnings.extend(warnings);
    Ok(())
}

#[cfg(test)]
#[path = "../fuzz/mutate.rs"]
mod fuzz_mutate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing_never_panics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let figures = super::fuzz_mutate::campaign(root, "config", |b| {
            let _ = parse(&String::from_utf8_lossy(b), Path::new("fuzz.toml"));
        });
        assert_eq!(figures.panics, 0);
    }

    const GOOD: &str = r#"
data_dir = "/var/lib/netfold"

[engine]
grace_secs = 180

[[hypervisor]]
name = "vc-east"
kind = "vmware"
url = "https://vc-east.example/sdk"
user = "netfold@vsphere.local"
password = { password_env = "VC_EAST_PASSWORD" }
grace_secs = 300

[[hypervisor]]
name = "xen217"
kind = "xen"
url = "https://xen217.example"
user = "root"
password = { password_file = "/etc/netfold/xen217.pw" }

[[switch]]
name = "tor1"
kind = "ovs"
address = "tcp:127.0.0.1:6640"
allowed_vlans = ["100-199", "300"]
managed_ports = ["eth5", "eth48"]
excluded_ports = ["eth48"]
max_removals = 20

[[topology]]
hypervisor = "xen217"
host = "xs-01"
nic = "eth0"
port = "tor1:eth5"
"#;

    fn err(text: &str) -> String {
        parse(text, Path::new("netfold.toml")).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_shipped_example_validates() {
        let text = include_str!("../netfold.example.toml");
        let plan = parse(text, Path::new("netfold.example.toml")).unwrap();
        assert_eq!((plan.hypervisors.len(), plan.switches.len()), (2, 2));
    }

    #[test]
    fn a_full_config_validates() {
        let plan = parse(GOOD, Path::new("netfold.toml")).unwrap();
        assert_eq!(plan.hypervisors.len(), 2);
        assert_eq!(plan.hypervisors[1].kind, Kind::XenCitrix);
        assert_eq!(plan.engine.grace_for(&HypervisorId::new("vc-east").unwrap()), Duration::from_secs(300));
        assert_eq!(plan.switches[0].reconcile.policy.max_removals, 20);
        assert_eq!(plan.switches[0].entry.timeout_ms(), 5_000, "the default request timeout");
        let policy = &plan.switches[0].reconcile.policy;
        let port = |p: &str| PortName::parse(Grammar::Ovs, p).unwrap();
        assert!(policy.manages(&port("eth5")) && !policy.manages(&port("eth48")) && !policy.manages(&port("eth49")));
        assert_eq!(plan.engine.policy.static_links.len(), 1);
    }

    #[test]
    fn a_bad_thumbprint_names_the_entry_and_the_key() {
        let pin = |t: &str| format!("tls = {{ thumbprint = \"{t}\" }}\n");
        let good = format!("sha256:{}", ["0A"; 32].join(":"));
        let vc = |t: &str| GOOD.replace("grace_secs = 300\n", &format!("grace_secs = 300\n{}", pin(t)));
        assert!(parse(&vc(&good), Path::new("netfold.toml")).is_ok());
        let e = err(&vc("sha256:0A:0B"));
        assert!(
            e.contains("[[hypervisor]] `vc-east`: key `tls.thumbprint`: thumbprint `sha256:0A:0B` is refused"),
            "{e}"
        );
        let eapi = GOOD
            .replace(r#"kind = "ovs""#, "kind = \"eapi\"\nuser = \"netfold\"\npassword = { password_env = \"P\" }")
            .replace(r#"address = "tcp:127.0.0.1:6640""#, &format!("address = \"https://tor1\"\n{}", pin("AB:CD")))
            .replace(r#"managed_ports = ["eth5", "eth48"]"#, "")
            .replace(r#"excluded_ports = ["eth48"]"#, "")
            .replace(r#"port = "tor1:eth5""#, r#"port = "tor1:Ethernet5""#);
        let e = err(&eapi);
        assert!(
            e.contains("[[switch]] `tor1`: key `tls.thumbprint`: thumbprint `AB:CD` is refused")
                && e.contains("sha256:"),
            "{e}"
        );
    }

    #[test]
    fn a_switch_request_timeout_is_read_and_bounded() {
        let with = |t: &str| GOOD.replace("max_removals = 20", &format!("max_removals = 20\ntimeout_secs = {t}"));
        let plan = parse(&with("12"), Path::new("netfold.toml")).unwrap();
        assert_eq!(plan.switches[0].entry.timeout_ms(), 12_000);
        let e = err(&with("0"));
        assert!(e.contains("`tor1`: key `timeout_secs`: 0 is out of range; allowed: 1 to 300 seconds"), "{e}");
        let memory = with("3").replace(r#"kind = "ovs""#, r#"kind = "memory""#);
        assert!(err(&memory).contains("key `timeout_secs` applies to kinds `ovs` and `eapi` only"));
    }

    #[test]
    fn switch_port_lists_are_checked_and_matched_in_the_switch_grammar() {
        let eapi = GOOD
            .replace(r#"kind = "ovs""#, "kind = \"eapi\"\nuser = \"netfold\"\npassword = { password_env = \"P\" }")
            .replace(r#"address = "tcp:127.0.0.1:6640""#, r#"address = "https://tor1""#)
            .replace(r#"managed_ports = ["eth5", "eth48"]"#, r#"managed_ports = ["Et1/1", "ethernet1/2"]"#)
            .replace(r#"excluded_ports = ["eth48"]"#, r#"excluded_ports = ["Ethernet1/2"]"#);
        let plan = parse(&eapi, Path::new("netfold.toml")).unwrap();
        let policy = &plan.switches[0].reconcile.policy;
        let eos = |p: &str| PortName::parse(Grammar::Eos, p).unwrap();
        assert!(policy.manages(&eos("Ethernet1/1")) && policy.manages(&eos("ETH1/1")));
        assert!(!policy.manages(&eos("et1/2")), "excluded under another spelling");
        let e = err(&eapi.replace(r#"["Ethernet1/2"]"#, r#"["Ethernet1/2-4"]"#));
        assert!(e.contains("`tor1`: key `excluded_ports`") && e.contains("range"), "{e}");
        let e = err(&GOOD.replace(r#"excluded_ports = ["eth48"]"#, r#"excluded_ports = ["eth4,eth8"]"#));
        assert!(e.contains("key `excluded_ports`") && e.contains("`,`"), "{e}");
        let memory = GOOD.replace(r#"kind = "ovs""#, "kind = \"memory\"\nports = [\"eth5\", \"eth 6\"]");
        assert!(err(&memory).contains("key `ports`"), "{}", err(&memory));
        assert_eq!(plan.switches[0].reconcile.settle, Duration::from_secs(10), "twice the 5 s timeout, at least 10 s");
    }

    #[test]
    fn port_channels_are_managed_by_name_and_discovery_is_configured_per_switch() {
        let eapi = GOOD
            .replace(r#"kind = "ovs""#, "kind = \"eapi\"\nuser = \"netfold\"\npassword = { password_env = \"P\" }")
            .replace(r#"address = "tcp:127.0.0.1:6640""#, r#"address = "https://tor1""#)
            .replace(r#"managed_ports = ["eth5", "eth48"]"#, "managed_ports = [\"Po10\"]\ndiscover_secs = 0")
            .replace(r#"excluded_ports = ["eth48"]"#, r#"excluded_ports = ["port-channel1000"]"#);
        let plan = parse(&eapi, Path::new("netfold.toml")).unwrap();
        let r = &plan.switches[0].reconcile;
        let eos = |p: &str| PortName::parse(Grammar::Eos, p).unwrap();
        assert!(r.policy.manages(&eos("Port-Channel10")));
        assert!(r.policy.excluded_ports.contains(&eos("Po1000")));
        assert_eq!(r.discover_every, None, "0: never");
        let ovs = parse(GOOD, Path::new("netfold.toml")).unwrap();
        assert_eq!(ovs.switches[0].reconcile.discover_every, Some(Duration::from_secs(60)));
        let e = err(&eapi.replace("discover_secs = 0", "unixctl = \"/run/openvswitch\""));
        assert!(e.contains("key `unixctl`"), "{e}");
    }

    #[test]
    fn an_unknown_key_names_file_line_key_and_what_is_allowed() {
        let e = err(&GOOD.replace("max_removals = 20", "max_removal = 20"));
        assert!(e.starts_with("netfold.toml:"), "{e}");
        assert!(e.contains("max_removal") && e.contains("expected one of") && e.contains("max_removals"), "{e}");
        let line = GOOD.lines().position(|l| l.starts_with("max_removals")).unwrap() + 1;
        assert!(e.contains(&format!(":{line}:")), "{e}");
    }

    #[test]
    fn an_inline_password_is_refused_without_echoing_it() {
        let e = err(&GOOD.replace(r#"{ password_env = "VC_EAST_PASSWORD" }"#, r#""s3cr3t!""#));
        assert!(e.contains("refused") && e.contains("password_env") && e.contains("key `password`"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn bad_values_name_the_entry_and_key() {
        assert!(err(&GOOD.replace(r#"kind = "vmware""#, r#"kind = "hyperv""#)).contains("`vc-east`: key `kind`"));
        assert!(err(&GOOD.replace(r#""100-199""#, r#""0-10""#)).contains("key `allowed_vlans`"));
        assert!(err(&GOOD.replace(r#"port = "tor1:eth5""#, r#"port = "eth5""#)).contains("key `port`"));
        assert!(err(&GOOD.replace(r#"kind = "ovs""#, r#"kind = "cisco""#)).contains("allowed: `ovs`, `eapi`, `memory`"));
        let e = err(&GOOD.replace("max_removals = 20", "max_removals = 20\nuser = \"admin\""));
        assert!(e.contains("key `user` applies to kind `eapi` only"), "{e}");
        let twice = GOOD.replace(r#"name = "xen217""#, r#"name = "vc-east""#);
        assert!(err(&twice).contains("used twice"));
    }

    #[test]
    fn grace_periods_are_bounded_to_one_week_and_never_wrap() {
        for bad in ["0", "604801", "18446744073709552"] {
            let e = err(&GOOD.replace("grace_secs = 180", &format!("grace_secs = {bad}")));
            assert!(e.contains("[engine]: key `grace_secs`") && e.contains("1 to 604800"), "{bad}: {e}");
            let e = err(&GOOD.replace("grace_secs = 300", &format!("grace_secs = {bad}")));
            assert!(e.contains("`vc-east`: key `grace_secs`") && e.contains("out of range"), "{bad}: {e}");
        }
        assert!(parse(&GOOD.replace("grace_secs = 300", "grace_secs = 604800"), Path::new("n.toml")).is_ok());
    }

    #[test]
    fn session_knobs_reach_the_adapter_and_are_validated_there() {
        let knobs = "grace_secs = 300\nliveness_secs = 20\nwait_secs = 15\nbackoff_max_ms = 10000\nresync_secs = 60\npage_size = 100";
        let plan = parse(&GOOD.replace("grace_secs = 300", knobs), Path::new("n.toml")).unwrap();
        let crate::agent::Adapter::VMware(c) = &plan.hypervisors[0].adapter else { panic!("vc-east is vmware") };
        assert_eq!(
            (c.liveness_secs, c.wait_max_seconds, c.backoff_max_ms, c.resync_secs, c.page_size),
            (20, 15, 10_000, 60, 100)
        );
        let e = err(&GOOD.replace("grace_secs = 300", "grace_secs = 300\nwait_secs = 15"));
        assert!(
            e.contains("`vc-east`") && e.contains("wait_max_seconds (15)") && e.contains("liveness_secs (15)"),
            "{e}"
        );
        let xen_page = GOOD.replace("kind = \"xen\"", "kind = \"xen\"\npage_size = 10");
        assert!(err(&xen_page).contains("`xen217`: key `page_size` applies to kind `vmware` only"));
    }

    #[test]
    fn topology_takes_a_host_id_a_host_name_or_a_pnic_mac() {
        let by_name = GOOD.replace(r#"host = "xs-01""#, r#"host_name = "xs-01.lab""#);
        let plan = parse(&by_name, Path::new("netfold.toml")).unwrap();
        assert_eq!(plan.engine.topology[0].host, HostSelector::Name("xs-01.lab".into()));
        assert!(plan.engine.policy.static_links.is_empty(), "only ids are folded by the projector");
        let by_mac = GOOD.replace("host = \"xs-01\"\nnic = \"eth0\"", r#"mac = "00-0C-29-81-D8-A0""#);
        let plan = parse(&by_mac, Path::new("netfold.toml")).unwrap();
        assert_eq!(plan.engine.topology[0].host, HostSelector::Mac("00:0c:29:81:d8:a0".into()));
        assert_eq!(plan.engine.topology[0].nic, None);
        let by_id = parse(GOOD, Path::new("netfold.toml")).unwrap();
        assert_eq!(by_id.engine.topology[0].host, HostSelector::Id("xs-01".into()));
    }

    #[test]
    fn ambiguous_incomplete_or_repeated_topology_entries_are_refused_naming_the_entry() {
        let cases = [
            (GOOD.replace(r#"host = "xs-01""#, "host = \"xs-01\"\nhost_name = \"xs-01.lab\""), "[[topology]] #1: is ambiguous: give only one of `host` (id), `host_name` and `mac`"),
            (GOOD.replace(r#"host = "xs-01""#, ""), "[[topology]] #1: names no host"),
            (GOOD.replace(r#"host = "xs-01""#, r#"mac = "00:0c:29:81:d8:a0""#), "[[topology]] #1: key `nic`: a `mac` names its NIC; drop `nic`"),
            (GOOD.replace("host = \"xs-01\"\nnic = \"eth0\"", r#"mac = "00:0c:29""#), "[[topology]] #1: key `mac`: `00:0c:29` is not a MAC"),
            (GOOD.replace("nic = \"eth0\"\n", ""), "[[topology]] #1: key `nic` is missing"),
            (GOOD.replace(r#"host = "xs-01""#, r#"host_name = " ""#), "[[topology]] #1: key `host_name` is empty"),
            (format!("{GOOD}\n[[topology]]\nhypervisor = \"xen217\"\nhost = \"xs-01\"\nnic = \"eth0\"\nport = \"tor1:eth6\"\n"), "[[topology]] #2: names the same uplink as [[topology]] #1"),
            (format!("{GOOD}\n[[topology]]\nhypervisor = \"nope\"\nhost_name = \"x\"\nnic = \"eth0\"\nport = \"tor1:eth6\"\n"), "[[topology]] #2: key `hypervisor`: `nope` is not a configured [[hypervisor]]"),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "want `{want}`, got `{e}`");
        }
    }

    #[test]
    fn the_store_section_names_what_is_wrong() {
        let with = |store: &str| parse(&format!("data_dir = \"/d\"\n[store]\n{store}\n"), Path::new("s.toml"));
        assert!(matches!(with("kind = \"sled\"").unwrap().store, StorePlan::Sled));
        let err = |store: &str| with(store).err().expect("refused").to_string();
        assert!(
            err("kind = \"sled\"\nurl = \"postgres://a@b/c\"").contains("key `url` applies to kind `postgres` only")
        );
        assert!(err("kind = \"etcd\"").contains("`etcd` is not a store kind; allowed: `sled`, `postgres`"));
        assert!(err("kind = \"postgres\"").contains("key `url` is required"));
        assert!(err("kind = \"postgres\"\nurl = \"mysql://a@b/c\"")
            .contains("expected `postgres://USER@HOST:PORT/DATABASE`"));
        assert!(err("kind = \"postgres\"\nurl = \"postgres://127.0.0.1/c\"").contains("names no user"));
        let plain = err("kind = \"postgres\"\nurl = \"postgres://nf@db.example/nf\"");
        assert!(plain.contains("[store]: key `url`") && plain.contains("no `tls` is set"), "{plain}");
        let warned =
            with("kind = \"postgres\"\nurl = \"postgres://nf@db.example/nf\"\nallow_plaintext = true").unwrap();
        assert!(warned.warnings.iter().any(|w| w.contains("without TLS")), "{:?}", warned.warnings);
        let tls = with("kind = \"postgres\"\nurl = \"postgres://nf@db.example/nf\"\ntls = {}").unwrap();
        assert!(matches!(tls.store, StorePlan::Postgres(_)) && tls.warnings.is_empty());
        let local = with("kind = \"postgres\"\nurl = \"postgres://nf@localhost/nf\"").unwrap();
        assert_eq!(local.store.describe(Path::new("/d")), "PostgreSQL postgres://nf@localhost/nf");
    }

    #[test]
    fn the_cluster_section_applies_to_postgres_and_names_what_is_wrong() {
        let pg = "[store]\nkind = \"postgres\"\nurl = \"postgres://nf@localhost/nf\"";
        let with = |text: &str| parse(&format!("data_dir = \"/d\"\n{text}\n"), Path::new("c.toml"));
        let err = |text: &str| with(text).err().expect("refused").to_string();
        assert!(with("").unwrap().cluster.is_none(), "sled: one process, no lease");
        assert!(err("[cluster]\ninstance = \"a\"").contains("[cluster]: applies to `[store] kind = \"postgres\"` only"));
        let named = with(&format!("{pg}\n[cluster]\ninstance = \"nf-a.dc1\"\nlease_ttl_secs = 6")).unwrap();
        let c = named.cluster.expect("a cluster plan");
        assert_eq!((c.instance.as_str(), c.lease_ttl), ("nf-a.dc1", Duration::from_secs(6)));
        let host = with(pg).unwrap().cluster.expect("postgres always runs under the lease");
        assert!(!host.instance.is_empty() && host.lease_ttl == Duration::from_secs(10), "{host:?}");
        for bad in ["", "a b", "nf/a"] {
            let e = err(&format!("{pg}\n[cluster]\ninstance = \"{bad}\""));
            assert!(e.contains("[cluster]: key `instance`") && e.contains("is not a name"), "{bad}: {e}");
        }
        for bad in [0, 1, 301] {
            let e = err(&format!("{pg}\n[cluster]\nlease_ttl_secs = {bad}"));
            assert!(e.contains("[cluster]: key `lease_ttl_secs`") && e.contains("2 to 300 seconds"), "{bad}: {e}");
        }
    }
}
