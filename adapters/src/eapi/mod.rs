//! Arista EOS as a managed switch, over eAPI (JSON-RPC 2.0 `runCmds` on `POST /command-api`).
//!
//! - [`codec`]: the request and reply shapes, EOS VLAN lists, `show` outputs (pure).
//! - [`client`]: the HTTP(S) transport with basic auth (the only IO).
//! - [`EapiSwitch`]: the [`engine::switch::Switch`] implementation.
//!
//! Reads use `show interfaces switchport` (trunk-mode interfaces only); writes run
//! `enable` / `configure` / `vlan N` / `interface X` / `switchport trunk allowed vlan add|remove N`.
//! eAPI stops at the first failing command; the switch maps that command back to its operation,
//! marks the operations before it applied and runs the rest again, so one bad operation never
//! blocks the others. On EOS an empty allowed list is `NONE`, so removing the last VLAN closes
//! the trunk rather than opening it.
//!
//! Interfaces are [`PortName`]s of [`Grammar::Eos`] (canonical `Ethernet1/3`, `Port-Channel10`),
//! so no range, list or stray syntax from a hypervisor ever reaches a command. A reply body is
//! read up to 16 MiB and refused beyond, with an error naming the limit; switch text quoted in an
//! error is cut to a few hundred bytes.

pub mod client;
pub mod codec;

use std::collections::BTreeSet;
use std::time::Duration;

use engine::switch::{Grammar, Observed, Op, OpResult, Outcome, PortName, Switch, SwitchError};
use serde::Deserialize;
use tokio::sync::watch;

use crate::common::{HttpClient, HttpError, SecretError, SecretSource, Timeouts, TlsOptions};

pub use client::Client;

/// The eAPI command error codes (the `code` of a JSON-RPC error from `runCmds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// 1000: the command was understood but failed (e.g. the interface does not exist).
    General,
    /// 1001: the command raised an internal error on the switch.
    Internal,
    /// 1002: invalid command or argument (syntax, out-of-range VLAN).
    Invalid,
    /// 1003: the command has no JSON form (asked with `format: json`).
    Unconverted,
    /// 1004: the command is not allowed here (mode or authorization).
    Incompatible,
    /// Any other code, kept as sent.
    Other(i64),
}

impl CommandError {
    pub fn from_code(code: i64) -> Self {
        match code {
            1000 => CommandError::General,
            1001 => CommandError::Internal,
            1002 => CommandError::Invalid,
            1003 => CommandError::Unconverted,
            1004 => CommandError::Incompatible,
            other => CommandError::Other(other),
        }
    }

    pub fn code(self) -> i64 {
        match self {
            CommandError::General => 1000,
            CommandError::Internal => 1001,
            CommandError::Invalid => 1002,
            CommandError::Unconverted => 1003,
            CommandError::Incompatible => 1004,
            CommandError::Other(c) => c,
        }
    }
}

/// An eAPI failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid. Not retryable.
    #[error("eAPI configuration: {0}")]
    Config(String),
    /// The password could not be read. Not retryable until fixed.
    #[error("eAPI password: {0}")]
    Secret(#[from] SecretError),
    /// HTTP transport failure (connect, timeout, size limit). Retryable when the cause is.
    #[error(transparent)]
    Http(HttpError),
    /// The switch refused the credentials. Not retryable.
    #[error("eAPI at {url} refused the credentials (HTTP {status})")]
    Auth { url: String, status: u16 },
    /// An unexpected HTTP status. Retryable (5xx) or not.
    #[error("eAPI at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The reply could not be read. Not retryable without a fix.
    #[error("eAPI protocol: {0}")]
    Codec(String),
    /// A command failed; eAPI ran the commands before it and none after. Not retryable as is.
    #[error("eAPI command {} `{command}` failed with code {} ({error:?}): {detail}", index + 1, error.code())]
    Command { index: usize, command: String, error: CommandError, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn into_switch(self, switch: &str) -> SwitchError {
        let switch = switch.to_string();
        let reason = self.to_string();
        match self {
            Error::Http(e) if e.is_retryable() => SwitchError::Unreachable { switch, reason },
            Error::Status { status, .. } if status >= 500 => SwitchError::Unreachable { switch, reason },
            Error::Auth { .. } => SwitchError::Auth { switch, reason },
            _ => SwitchError::Protocol { switch, reason },
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// One Arista switch managed over eAPI.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The switch's name in netfold (`SwitchPort::switch`).
    pub name: String,
    /// `https://tor1.example` (`/command-api` is appended).
    pub url: String,
    pub username: String,
    /// Where the password comes from (never inline).
    pub password: SecretSource,
    #[serde(default)]
    pub tls: TlsOptions,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// An Arista switch driven over eAPI.
pub struct EapiSwitch {
    name: String,
    client: Client,
}

const MAX_BODY: usize = 16 * 1024 * 1024;

impl EapiSwitch {
    pub fn new(config: &Config) -> Result<Self> {
        crate::common::url::parse_endpoint(&config.url, true)
            .map_err(|e| Error::Config(format!("switch {}: url {e}", config.name)))?;
        config.tls.warn_if_insecure(&config.url);
        let http = HttpClient::new(&config.tls, &Timeouts::flat(Duration::from_millis(config.timeout_ms)), MAX_BODY)
            .map_err(Error::Http)?;
        let password = config.password.load()?;
        Ok(Self {
            name: config.name.clone(),
            client: Client::new(http, &config.url, config.username.clone(), password),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every trunk interface's VLANs, by canonical name (interfaces whose names are not
    /// trunk-capable EOS names are not netfold's to address and are left out).
    async fn trunks(&self) -> Result<Observed> {
        let r = self.client.run_cmds(&["show interfaces switchport".to_string()]).await?;
        Ok(codec::parse_switchports(&r[0])?
            .into_iter()
            .filter_map(|(p, v)| PortName::parse(Grammar::Eos, &p).ok().map(|p| (p, v)))
            .collect())
    }
}

/// The commands for one operation (after `enable` / `configure`). Every argument is a
/// validated [`PortName`] in canonical EOS form or a [`engine::VlanId`]: nothing else is rendered.
fn commands(op: &Op) -> Vec<String> {
    match op {
        Op::AddVlan { port, vlan } => vec![
            format!("vlan {vlan}"),
            format!("interface {port}"),
            format!("switchport trunk allowed vlan add {vlan}"),
        ],
        Op::RemoveVlan { port, vlan } => {
            vec![format!("interface {port}"), format!("switchport trunk allowed vlan remove {vlan}")]
        }
    }
}

impl Switch for EapiSwitch {
    fn name(&self) -> &str {
        &self.name
    }

    fn grammar(&self) -> Grammar {
        Grammar::Eos
    }

    async fn read(&self, ports: &BTreeSet<PortName>) -> Result<Observed, SwitchError> {
        let all = self.trunks().await.map_err(|e| e.into_switch(&self.name))?;
        Ok(all.into_iter().filter(|(p, _)| ports.contains(p)).collect())
    }

    async fn apply(&self, ops: &[Op]) -> Result<Vec<Outcome>, SwitchError> {
        // The state before: an add of a VLAN already there is the operator's, not netfold's.
        let before = self.trunks().await.map_err(|e| e.into_switch(&self.name))?;
        let mut out: Vec<Option<Outcome>> = vec![None; ops.len()];
        let mut todo = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let has = before.get(op.port()).is_some_and(|s| s.contains(&op.vlan()));
            if before.contains_key(op.port()) && has == op.is_add() {
                out[i] = Some(Outcome { op: op.clone(), result: OpResult::AlreadyDone });
            } else {
                todo.push(i);
            }
        }
        while !todo.is_empty() {
            let mut cmds = vec!["enable".to_string(), "configure".to_string()];
            let mut owner = vec![None, None];
            for &i in &todo {
                for c in commands(&ops[i]) {
                    cmds.push(c);
                    owner.push(Some(i));
                }
            }
            match self.client.run_cmds(&cmds).await {
                Ok(_) => {
                    for &i in &todo {
                        out[i] = Some(Outcome::applied(ops[i].clone()));
                    }
                    todo.clear();
                }
                Err(Error::Command { index, command, error, detail }) => {
                    let failed = owner.get(index).copied().flatten();
                    let e = Error::Command { index, command, error, detail };
                    let Some(failed) = failed else {
                        // `enable` or `configure` itself failed: nothing ran.
                        return Err(e.into_switch(&self.name));
                    };
                    tracing::debug!(switch = %self.name, op = %ops[failed], error = %e, "eAPI command failed");
                    let pos = todo.iter().position(|&i| i == failed).unwrap_or(0);
                    for &i in &todo[..pos] {
                        out[i] = Some(Outcome::applied(ops[i].clone()));
                    }
                    out[failed] = Some(Outcome::failed(ops[failed].clone(), e.to_string()));
                    todo.drain(..=pos);
                }
                Err(e) => {
                    let reached = out.iter().any(|o| matches!(o, Some(Outcome { result: OpResult::Applied, .. })));
                    if !reached {
                        return Err(e.into_switch(&self.name));
                    }
                    let why = e.to_string();
                    for &i in &todo {
                        out[i] = Some(Outcome::failed(ops[i].clone(), why.clone()));
                    }
                    todo.clear();
                }
            }
        }
        Ok(out
            .into_iter()
            .zip(ops)
            .map(|(o, op)| o.unwrap_or_else(|| Outcome::failed(op.clone(), "not attempted")))
            .collect())
    }

    fn drift(&self) -> Option<watch::Receiver<u64>> {
        // eAPI has no change stream: drift is found by the periodic resync.
        None
    }

    async fn discover(&self) -> Result<Option<engine::discovery::Discovery>, SwitchError> {
        self.discover_now().await.map(Some).map_err(|e| e.into_switch(&self.name))
    }
}

/// The commands one discovery runs, in one request.
const DISCOVER: [&str; 4] = ["show mac address-table", "show lldp neighbors detail", "show port-channel", "show mlag"];

impl EapiSwitch {
    /// The MAC table, LLDP neighbours and port-channels, members lifted to their port-channel;
    /// nothing seen on the MLAG peer-link (or its members) is kept: a MAC there is behind the
    /// peer switch, which says nothing about this switch's ports.
    async fn discover_now(&self) -> Result<engine::discovery::Discovery> {
        let cmds: Vec<String> = DISCOVER.iter().map(|c| c.to_string()).collect();
        let r = self.client.run_cmds(&cmds).await?;
        let eos = |s: &str| PortName::parse(Grammar::Eos, s).ok();
        let bonds: Vec<(PortName, PortName)> =
            codec::parse_port_channels(&r[2])?.into_iter().filter_map(|(m, pc)| Some((eos(&m)?, eos(&pc)?))).collect();
        let peer_link = codec::parse_mlag_peer_link(&r[3])?.and_then(|p| eos(&p));
        let lift = |p: PortName| bonds.iter().find(|(m, _)| *m == p).map_or(p, |(_, pc)| pc.clone());
        let through_peer = |p: &PortName| peer_link.as_ref() == Some(p);
        let macs = codec::parse_mac_table(&r[0])?
            .into_iter()
            .filter_map(|(mac, intf)| Some((mac, lift(eos(&intf)?))))
            .filter(|(_, p)| !through_peer(p))
            .collect();
        let lldp = codec::parse_lldp_detail(&r[1])?
            .into_iter()
            .filter_map(|(intf, n)| Some((lift(eos(&intf)?), n)))
            .filter(|(p, _)| !through_peer(p))
            .collect();
        let bonds = bonds.iter().filter(|(_, pc)| !through_peer(pc)).cloned().collect();
        Ok(engine::discovery::Discovery { macs, lldp, bonds })
    }
}
