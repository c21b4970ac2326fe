//! Open vSwitch as a managed switch, over OVSDB (RFC 7047).
//!
//! - [`codec`]: the wire format as pure functions (framing, datum decoding, guarded mutations).
//! - [`client`]: the connection task (echo, monitor, reconnect).
//! - [`unixctl`] and [`discovery`]: the MAC table from ovs-vswitchd's control socket
//!   (`fdb/show`, JSON-RPC) joined with OVSDB's `Interface.ofport` and bonds, for
//!   [`Switch::discover`].
//! - [`OvsSwitch`]: the [`engine::switch::Switch`] implementation the reconciler drives; ports
//!   are [`PortName`]s of [`Grammar::Ovs`]; incoming messages are limited to
//!   [`codec::MAX_MESSAGE`] bytes.
//!
//! netfold manages the `trunks` column of `Port` rows and nothing else (`vlan_mode` and `tag`
//! stay the operator's). An empty `trunks` means *all VLANs* in OVS, so netfold never empties
//! it (a parking VLAN is inserted atomically when the last VLAN is removed) and never narrows an
//! open port by adding to an empty list; see docs/adr/0002-ovs-never-empty-trunks.md.

pub mod client;
pub mod codec;
pub mod discovery;
pub mod fence;
pub mod unixctl;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use engine::switch::{Grammar, Observed, Op, OpResult, Outcome, PortName, Switch, SwitchError};
use engine::VlanId;
use serde::Deserialize;
use tokio::sync::watch;

pub use client::{Client, Endpoint};
use codec::OpReply;

/// An OVSDB failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid. Not retryable.
    #[error("OVS configuration: {0}")]
    Config(String),
    /// Socket IO failed. Retryable.
    #[error("OVSDB connection IO: {0}")]
    Io(#[from] std::io::Error),
    /// Not connected, or the connection dropped before the reply. Retryable.
    #[error("OVSDB disconnected: {0}")]
    Disconnected(String),
    /// No reply in time. Retryable.
    #[error("OVSDB request timed out after {0:?}")]
    Timeout(Duration),
    /// The server sent something this client cannot read. Not retryable without a fix.
    #[error("OVSDB protocol: {0}")]
    Codec(String),
    /// The server answered a request with a JSON-RPC `error`. Not retryable as is.
    #[error("OVSDB refused the request: {0}")]
    Rpc(String),
    /// The server sent a message larger than the limit without ending it; the connection is
    /// dropped (and re-made). Retryable, but a server that keeps doing it needs an operator.
    #[error("OVSDB message exceeds the {limit}-byte limit without ending; connection dropped")]
    MessageTooLarge { limit: usize },
    /// The switch's fence holds a newer writer's token ([`fence`]): this writer was deposed and
    /// ovsdb-server refused its write. Not retryable.
    #[error("OVSDB refused a write under fencing token {mine}: {why}")]
    Fenced { mine: u64, why: String },
    /// ovs-vswitchd's control socket answered a command with an error (`no such bridge`). Not
    /// retryable as is.
    #[error("ovs-vswitchd refused {command}: {text}")]
    Vswitchd { command: String, text: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the whole switch is unreachable (as opposed to a bad answer).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Disconnected(_) | Error::Timeout(_))
    }

    fn into_switch(self, switch: &str) -> SwitchError {
        let switch = switch.to_string();
        if self.is_retryable() {
            SwitchError::Unreachable { switch, reason: self.to_string() }
        } else {
            SwitchError::Protocol { switch, reason: self.to_string() }
        }
    }
}

fn default_parking() -> u16 {
    4094
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// One Open vSwitch managed by netfold.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The switch's name in netfold (`SwitchPort::switch`).
    pub name: String,
    /// `tcp:127.0.0.1:6640` or `unix:/var/run/openvswitch/db.sock`.
    pub endpoint: String,
    /// A VLAN that carries no traffic anywhere, kept on a trunk instead of leaving it empty.
    /// netfold refuses to add or remove it. Default 4094.
    #[serde(default = "default_parking")]
    pub parking_vlan: u16,
    /// Per-request timeout in milliseconds (default 5000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// ovs-vswitchd's control socket (`/var/run/openvswitch/ovs-vswitchd.<pid>.ctl`), or its run
    /// directory (the socket is found through `ovs-vswitchd.pid`): where the MAC table is read
    /// for discovery. Default: the directory of a `unix:` endpoint; none for `tcp:` (the
    /// control socket is local only), and then the switch does not discover.
    #[serde(default)]
    pub unixctl: Option<String>,
}

/// An Open vSwitch driven over OVSDB.
pub struct OvsSwitch {
    name: String,
    client: Client,
    parking: VlanId,
    unixctl: Option<unixctl::Target>,
    timeout: Duration,
    /// Written into every transaction that changes the switch as an OVSDB `comment`, which
    /// ovsdb-server keeps with the transaction in its database log (`ovsdb-tool show-log`).
    writer: Option<String>,
    /// The lease token this writer holds: checked by ovsdb-server in every write ([`fence`]).
    fence: Option<u64>,
    /// Whether the fence was taken on the switch (once, before the first write).
    fence_taken: std::sync::atomic::AtomicBool,
}

impl OvsSwitch {
    /// Validates `config` and starts the connection task (connection happens in the background;
    /// calls fail with [`SwitchError::Unreachable`] until it is up). Must be called inside a Tokio
    /// runtime: the connection task is spawned on it.
    pub fn start(config: &Config) -> Result<Self> {
        let endpoint: Endpoint = config.endpoint.parse()?;
        let parking = VlanId::new(config.parking_vlan)
            .map_err(|e| Error::Config(format!("switch {}: parking_vlan: {e}", config.name)))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let unixctl = match (&config.unixctl, &endpoint) {
            (Some(path), _) => Some(unixctl::Target::new(path)),
            (None, Endpoint::Unix(db)) => db.parent().map(unixctl::Target::new),
            (None, Endpoint::Tcp(_)) => None,
        };
        let client = Client::start(endpoint, timeout, Duration::from_secs(5));
        Ok(Self {
            name: config.name.clone(),
            client,
            parking,
            unixctl,
            timeout,
            writer: None,
            fence: None,
            fence_taken: Default::default(),
        })
    }

    /// The rows of one `select`.
    async fn select(&self, op: serde_json::Value) -> Result<Vec<serde_json::Value>> {
        match codec::op_replies(&self.client.transact(vec![op]).await?)?.into_iter().next() {
            Some(OpReply::Rows(rows)) => Ok(rows),
            other => Err(Error::Codec(format!("select returned {}", codec::shown(&format!("{other:?}"))))),
        }
    }

    /// Every bridge's MAC table joined with the ports and bonds (see [`discovery`]).
    async fn discover_now(&self, target: &unixctl::Target) -> Result<engine::discovery::Discovery> {
        let bridges = discovery::decode_bridges(&self.select(discovery::select_bridges()).await?)?;
        let interfaces = discovery::decode_interfaces(&self.select(discovery::select_interfaces()).await?)?;
        let ports = discovery::decode_ports(&self.select(discovery::select_port_interfaces()).await?)?;
        let mut fdb = Vec::new();
        for bridge in &bridges {
            let text = unixctl::call(target, "fdb/show", &[bridge], self.timeout).await.map_err(|e| match e {
                Error::Vswitchd { command, text } => Error::Vswitchd { command: format!("{command} {bridge}"), text },
                other => other,
            })?;
            fdb.extend(discovery::parse_fdb(&text)?);
        }
        Ok(discovery::mapping(&fdb, &interfaces, &ports))
    }

    /// Names who writes in every transaction that changes the switch (an OVSDB `comment`, kept
    /// by ovsdb-server in its database log): which netfold instance, under which lease token.
    pub fn writing_as(mut self, writer: impl Into<String>) -> Self {
        self.writer = Some(writer.into());
        self
    }

    /// Writes only under lease token `token`: before its first write it takes the switch's fence
    /// (never lowering it), and every write is checked against it by ovsdb-server ([`fence`]).
    pub fn fenced_by(mut self, token: u64) -> Self {
        self.fence = Some(token);
        self
    }

    /// Takes the switch's fence for `token` unless already taken by this writer.
    async fn take_fence(&self, token: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.fence_taken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let current = fence::decode(&self.select(fence::select()).await?)?;
        if let Some(c) = current.filter(|c| *c > token) {
            return Err(Error::Fenced { mine: token, why: format!("the switch is fenced by the newer token {c}") });
        }
        let mut wire = fence::take(current, token);
        if let Some(w) = &self.writer {
            wire.push(codec::comment(w));
        }
        let replies = codec::op_replies(&self.client.transact(wire).await?)?;
        if let Some(err) = replies.iter().find_map(|r| if let OpReply::Error(e) = r { Some(e.clone()) } else { None }) {
            return Err(Error::Fenced {
                mine: token,
                why: format!("the fence changed while it was taken (another writer): {err}"),
            });
        }
        tracing::info!(switch = %self.name, token, previous = ?current, "took the switch's fence");
        self.fence_taken.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The underlying connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Applies one port's operations in one transaction; on an abort, retries them one by one so
    /// each operation gets its own outcome.
    async fn apply_port(&self, port: &PortName, ops: &[&Op]) -> Result<Vec<Outcome>> {
        let mut wire = vec![codec::select_port(port)];
        if let Some(t) = self.fence {
            wire.push(fence::check(t));
        }
        let mut index = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::AddVlan { vlan, .. } => wire.push(codec::add_vlan(port, *vlan)),
                Op::RemoveVlan { vlan, .. } => wire.extend(codec::remove_vlan(port, *vlan, self.parking)),
            }
            index.push(wire.len() - 1);
        }
        wire.push(codec::bump_next_cfg());
        if let Some(w) = &self.writer {
            wire.push(codec::comment(w));
        }
        let replies = codec::op_replies(&self.client.transact(wire).await?)?;
        if let (Some(t), Some(OpReply::Error(e))) = (self.fence, replies.get(1)) {
            return Err(Error::Fenced { mine: t, why: format!("a newer writer's token is on the switch ({e})") });
        }
        if let Some(err) = replies.iter().find_map(|r| if let OpReply::Error(e) = r { Some(e.clone()) } else { None }) {
            if ops.len() == 1 {
                return Ok(vec![Outcome::failed(ops[0].clone(), format!("OVSDB transaction aborted: {err}"))]);
            }
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.extend(Box::pin(self.apply_port(port, &[*op])).await?);
            }
            return Ok(out);
        }
        let before = match replies.first() {
            Some(OpReply::Rows(rows)) => codec::decode_port_rows(rows)?.remove(port.as_str()),
            other => {
                return Err(Error::Codec(format!(
                    "select of port {port} returned {}",
                    codec::shown(&format!("{other:?}"))
                )))
            }
        };
        ops.iter()
            .zip(index)
            .map(|(op, i)| {
                let count = match replies.get(i) {
                    Some(OpReply::Count(c)) => *c,
                    other => {
                        return Err(Error::Codec(format!(
                            "mutate for `{op}` returned {}",
                            codec::shown(&format!("{other:?}"))
                        )))
                    }
                };
                let result = match (&before, count) {
                    (_, c) if c > 0 => OpResult::Applied,
                    (None, _) => OpResult::Failed(format!("no port {port} on switch {}", self.name)),
                    (Some(t), _) if t.is_empty() && op.is_add() => OpResult::Failed(format!(
                        "port {port} has an empty trunk list (it carries every VLAN): netfold will not narrow it"
                    )),
                    _ => OpResult::AlreadyDone,
                };
                Ok(Outcome { op: (*op).clone(), result })
            })
            .collect()
    }
}

impl Switch for OvsSwitch {
    fn name(&self) -> &str {
        &self.name
    }

    fn grammar(&self) -> Grammar {
        Grammar::Ovs
    }

    async fn read(&self, ports: &BTreeSet<PortName>) -> Result<Observed, SwitchError> {
        let result = self.client.transact(vec![codec::select_ports()]).await.map_err(|e| e.into_switch(&self.name))?;
        let rows = match codec::op_replies(&result).map_err(|e| e.into_switch(&self.name))?.into_iter().next() {
            Some(OpReply::Rows(rows)) => rows,
            other => {
                return Err(SwitchError::Protocol {
                    switch: self.name.clone(),
                    reason: format!("select on Port returned {}", codec::shown(&format!("{other:?}"))),
                })
            }
        };
        let all = codec::decode_port_rows(&rows).map_err(|e| e.into_switch(&self.name))?;
        // Ports whose names netfold could not address (the grammar refuses them) cannot be
        // asked for, so they are simply not looked up.
        Ok(all
            .into_iter()
            .filter_map(|(p, v)| PortName::parse(Grammar::Ovs, &p).ok().map(|p| (p, v)))
            .filter(|(p, _)| ports.contains(p))
            .collect())
    }

    async fn apply(&self, ops: &[Op]) -> Result<Vec<Outcome>, SwitchError> {
        if let Some(t) = self.fence {
            self.take_fence(t).await.map_err(|e| e.into_switch(&self.name))?;
        }
        let mut out: Vec<Option<Outcome>> = vec![None; ops.len()];
        // Runs of same-kind operations, in order: all additions complete before any removal.
        let mut start = 0;
        let mut reached = false;
        let mut last_err = None;
        while start < ops.len() {
            let kind = ops[start].is_add();
            let end = ops[start..].iter().position(|o| o.is_add() != kind).map_or(ops.len(), |n| start + n);
            let mut by_port: BTreeMap<&PortName, Vec<usize>> = BTreeMap::new();
            for i in start..end {
                if ops[i].vlan() == self.parking {
                    out[i] = Some(Outcome::failed(
                        ops[i].clone(),
                        format!(
                            "VLAN {} is the parking VLAN of switch {}: netfold never manages it",
                            self.parking, self.name
                        ),
                    ));
                } else {
                    by_port.entry(ops[i].port()).or_default().push(i);
                }
            }
            let results = futures::future::join_all(by_port.iter().map(|(port, idx)| async move {
                let port_ops: Vec<&Op> = idx.iter().map(|&i| &ops[i]).collect();
                (idx, port_ops.clone(), self.apply_port(port, &port_ops).await)
            }))
            .await;
            for (idx, port_ops, r) in results {
                match r {
                    Ok(outcomes) => {
                        reached = true;
                        for (&i, o) in idx.iter().zip(outcomes) {
                            out[i] = Some(o);
                        }
                    }
                    Err(e @ Error::Fenced { .. }) => return Err(e.into_switch(&self.name)),
                    Err(e) => {
                        let why = e.to_string();
                        for (&i, op) in idx.iter().zip(port_ops) {
                            out[i] = Some(Outcome::failed(op.clone(), why.clone()));
                        }
                        if e.is_retryable() {
                            last_err = Some(e);
                        } else {
                            reached = true;
                        }
                    }
                }
            }
            start = end;
        }
        if let (false, Some(e)) = (reached, last_err) {
            return Err(e.into_switch(&self.name));
        }
        Ok(out
            .into_iter()
            .zip(ops)
            .map(|(o, op)| o.unwrap_or_else(|| Outcome::failed(op.clone(), "not attempted")))
            .collect())
    }

    fn drift(&self) -> Option<watch::Receiver<u64>> {
        Some(self.client.drift())
    }

    async fn discover(&self) -> Result<Option<engine::discovery::Discovery>, SwitchError> {
        let Some(target) = &self.unixctl else { return Ok(None) };
        self.discover_now(target).await.map(Some).map_err(|e| e.into_switch(&self.name))
    }
}
