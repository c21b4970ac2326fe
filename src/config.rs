//! The agent's TOML configuration: data directory, hypervisors, switches, static topology,
//! engine policy, the HTTP endpoint and logging. Parsing names the file, the line and the key;
//! validation names the entry and the key, and says what is allowed. Nothing here connects.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters::common::{SecretSource, TlsOptions};
use anyhow::{anyhow, bail, Result};
use engine::config::{MassRemoval, Policy, StaticLink, MAX_GRACE_SECS};
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// `/healthz`, `/metrics`, `/state`. Loopback by default.
    pub listen: SocketAddr,
}

impl Default for Http {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9187)) }
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
    /// vmware only: objects per `RetrievePropertiesEx` page.
    pub page_size: Option<u32>,
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
    /// ovs only: the VLAN kept on a trunk instead of leaving it empty (default 4094).
    pub parking_vlan: Option<u16>,
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
}

impl Switch {
    /// Per-request timeout of the switch's management API.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_secs.unwrap_or(5) * 1000
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub hypervisor: String,
    pub host: String,
    pub nic: String,
    /// `SWITCH:PORT`.
    pub port: String,
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

/// Everything the agent needs, validated.
pub struct Plan {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub log_format: Option<crate::cli::LogFormat>,
    pub engine: engine::config::Config,
    pub hypervisors: Vec<HypervisorPlan>,
    pub switches: Vec<SwitchPlan>,
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read config file {}: {e}", path.display()))?;
    parse(&text, path)
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
    let mut static_links = Vec::new();
    for (i, l) in c.topology.iter().enumerate() {
        let at = || format!("[[topology]] #{}", i + 1);
        static_links.push(StaticLink {
            hypervisor: HypervisorId::new(&l.hypervisor).map_err(|e| anyhow!("{}: key `hypervisor`: {e}", at()))?,
            host: l.host.clone(),
            nic: l.nic.clone(),
            port: l.port.parse::<SwitchPort>().map_err(|e| anyhow!("{}: key `port`: {e}", at()))?,
        });
    }
    let mut engine = engine::config::Config {
        policy: Policy {
            count_powered_off: c.engine.count_powered_off,
            count_vmless_networks: c.engine.count_vmless_networks,
            static_links,
        },
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
        if !(h.url.starts_with("https://") || h.url.starts_with("http://")) {
            bail!("{at}: key `url`: `{}` must start with https:// (http:// only for simulators)", h.url);
        }
        check_secret(&h.password).map_err(|e| anyhow!("{at}: key `password`: {e}"))?;
        if let Some(g) = h.grace_secs {
            check_grace("grace_secs", g).map_err(|e| anyhow!("{at}: {e}"))?;
            engine.grace_secs_per_hypervisor.insert(id.clone(), g);
        }
        if kind == Kind::XenCitrix && h.page_size.is_some() {
            bail!("{at}: key `page_size` applies to kind `vmware` only (XenAPI reads whole tables)");
        }
        let adapter = crate::agent::Adapter::from_config(kind, &h).map_err(|e| anyhow!("{at}: {e}"))?;
        hypervisors.push(HypervisorPlan { id, kind, adapter });
    }
    engine.validate().map_err(|e| anyhow!("[engine]: {e}"))?;

    let mut switch_names = BTreeSet::new();
    let mut switches = Vec::new();
    for s in c.switches {
        let at = format!("[[switch]] `{}`", s.name);
        if s.name.is_empty() || s.name.contains(':') {
            bail!("{at}: key `name`: must be non-empty and without `:`");
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
        match s.kind.as_str() {
            "ovs" | "eapi" => {
                if s.address.is_none() {
                    bail!("{at}: key `address` is required for kind `{}`", s.kind);
                }
            }
            "memory" => {}
            other => bail!("{at}: key `kind`: `{other}` is not a switch kind; allowed: `ovs`, `eapi`, `memory`"),
        }
        only("user", s.user.is_some(), "eapi")?;
        only("password", s.password.is_some(), "eapi")?;
        only("tls", s.tls.is_some(), "eapi")?;
        only("parking_vlan", s.parking_vlan.is_some(), "ovs")?;
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
        let mut policy = engine::plan::Policy {
            allowed,
            managed_ports: s.managed_ports.clone(),
            excluded_ports: s.excluded_ports.clone(),
            dry_run: s.dry_run,
            ..engine::plan::Policy::default()
        };
        if let Some(m) = s.max_removals {
            policy.max_removals = m;
        }
        let mut reconcile = engine::reconciler::Config { policy, ..engine::reconciler::Config::default() };
        if let Some(r) = s.resync_secs {
            if r == 0 {
                bail!("{at}: key `resync_secs`: must be at least 1");
            }
            reconcile.resync = Duration::from_secs(r);
        }
        switches.push(SwitchPlan { entry: s, reconcile });
    }
    Ok(Plan { data_dir: c.data_dir, http: c.http.listen, log_format: c.log_format, engine, hypervisors, switches })
}

/// Exactly one source, and it names something (the secret itself is read at connect time).
fn check_secret(s: &SecretSource) -> Result<()> {
    match (&s.password_env, &s.password_file) {
        (Some(_), Some(_)) => bail!("give password_env or password_file, not both"),
        (None, None) => bail!("give password_env (an environment variable) or password_file"),
        (Some(v), None) if v.is_empty() => bail!("password_env is empty"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(policy.manages("eth5") && !policy.manages("eth48") && !policy.manages("eth49"));
        assert_eq!(plan.engine.policy.static_links.len(), 1);
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
}
