//! A fixture eAPI server: an axum app on loopback that models an Arista switch's VLANs and
//! per-interface trunk lists and answers `runCmds` with eAPI's JSON shapes — results per command,
//! or a JSON-RPC error (codes 1000–1004) naming the failed command, with `data` holding the
//! results of the commands run before it. Checks basic auth. Faults can be injected per command
//! for tests; `netfold sim eapi` serves it for the demo.
//!
//! For discovery it also answers `show mac address-table`, `show lldp neighbors detail`,
//! `show port-channel` and `show mlag` in EOS's JSON shapes (`unicastTable.tableEntries[]` with
//! `macAddress`/`vlanId`/`interface`/`entryType`; `lldpNeighbors.<intf>.lldpNeighborInfo[]` with
//! `chassisId`, `systemName` and `neighborInterfaceInfo.interfaceId_v2`/`interfaceDescription`;
//! `portChannels.<Po>.activePorts`/`inactivePorts`; `show mlag` `state` and `peerLink`). As on
//! EOS, a MAC learnt on a port-channel member shows on the port-channel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

/// The JSON-RPC error codes eAPI answers a failed `runCmds` with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// 1000: the command was understood but failed.
    General,
    /// 1001: an internal error on the switch.
    Internal,
    /// 1002: invalid command or argument.
    Invalid,
    /// 1003: the command has no JSON form.
    Unconverted,
    /// 1004: not allowed here (mode or authorization).
    Incompatible,
}

impl CommandError {
    pub fn code(self) -> i64 {
        match self {
            CommandError::General => 1000,
            CommandError::Internal => 1001,
            CommandError::Invalid => 1002,
            CommandError::Unconverted => 1003,
            CommandError::Incompatible => 1004,
        }
    }
}

/// EOS VLAN ids: 1..=4094.
const VLANS: std::ops::RangeInclusive<u16> = 1..=4094;

/// An EOS VLAN list as `switchport trunk allowed vlan` takes it: `ALL`, `NONE`, `7`, `1-3,7`.
fn parse_vlan_list(s: &str) -> Result<BTreeSet<u16>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") {
        return Ok(VLANS.collect());
    }
    if s.eq_ignore_ascii_case("none") {
        return Ok(BTreeSet::new());
    }
    let id = |t: &str| {
        t.trim().parse::<u16>().ok().filter(|v| VLANS.contains(v)).ok_or_else(|| format!("`{t}` is no VLAN id"))
    };
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (id(a)?, id(b)?),
            None => (id(part)?, id(part)?),
        };
        if first > last {
            return Err(format!("range `{part}` runs backwards"));
        }
        out.extend(first..=last);
    }
    Ok(out)
}

/// An allowed list the way `show interfaces switchport` shows it (`ALL`, `NONE`, `1-3,7`).
fn render_vlan_list(set: &BTreeSet<u16>) -> String {
    if set.is_empty() {
        return "NONE".into();
    }
    if set.len() == VLANS.len() {
        return "ALL".into();
    }
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(first) = it.next() {
        let mut last = first;
        while it.peek() == Some(&(last + 1)) {
            last += 1;
            it.next();
        }
        parts.push(if first == last { first.to_string() } else { format!("{first}-{last}") });
    }
    parts.join(",")
}

/// One interface of the simulated switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// `trunk` or `access`.
    pub mode: String,
    pub allowed: BTreeSet<u16>,
    pub access_vlan: u16,
}

/// A failure injected for one exact command text.
#[derive(Clone, Debug)]
struct Fault {
    command: String,
    error: CommandError,
    message: String,
    /// How many more times it fails (`None`: always).
    remaining: Option<usize>,
}

/// An LLDP neighbour on one interface, as the simulator renders it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neighbor {
    /// `macAddress` chassis ID, in EOS's dotted form (`001c.7300.0001`) or any MAC notation.
    pub chassis_id: String,
    pub system_name: String,
    /// The neighbour's port: an interface name (`vmnic0`) or a MAC.
    pub port_id: String,
    pub port_description: String,
}

#[derive(Debug, Default)]
struct SimState {
    vlans: BTreeMap<u16, String>,
    interfaces: BTreeMap<String, Interface>,
    /// (vlan, mac, interface as learnt) of the MAC table.
    macs: Vec<(u16, String, String)>,
    lldp: BTreeMap<String, Vec<Neighbor>>,
    /// Port-channel → (member → active).
    port_channels: BTreeMap<String, BTreeMap<String, bool>>,
    /// The MLAG peer-link, when MLAG is configured.
    peer_link: Option<String>,
    faults: Vec<Fault>,
    requests: usize,
    /// The most recent command texts received (at most [`COMMAND_LOG`]).
    commands: std::collections::VecDeque<String>,
}

/// How many received command texts the simulator remembers.
const COMMAND_LOG: usize = 10_000;

/// The simulated switch. Clones share state.
#[derive(Clone)]
pub struct Sim {
    state: Arc<Mutex<SimState>>,
    auth: Arc<String>,
}

enum Mode {
    Exec,
    Enable,
    Config,
    Vlan,
    Interface(String),
}

type CmdResult = Result<Value, (CommandError, String)>;

fn invalid(what: impl Into<String>) -> (CommandError, String) {
    (CommandError::Invalid, what.into())
}

impl Sim {
    /// A switch with VLAN 1 only, accepting `username` / `password`.
    pub fn new(username: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let state = SimState { vlans: [(1, "default".to_string())].into(), ..SimState::default() };
        Self { state: Arc::new(Mutex::new(state)), auth: Arc::new(format!("Basic {token}")) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A poisoned lock only means a handler panicked; the maps are still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a trunk interface allowing `vlans` (the operator's configuration).
    pub fn with_trunk(self, name: &str, vlans: &[u16]) -> Self {
        self.set_trunk(name, vlans);
        self
    }

    /// Adds an access interface in `vlan`.
    pub fn with_access(self, name: &str, vlan: u16) -> Self {
        self.lock()
            .interfaces
            .insert(name.into(), Interface { mode: "access".into(), allowed: BTreeSet::new(), access_vlan: vlan });
        self
    }

    /// Operator edit: sets an interface's allowed list (creating it as a trunk if needed).
    pub fn set_trunk(&self, name: &str, vlans: &[u16]) {
        let allowed = vlans.iter().copied().filter(|v| VLANS.contains(v)).collect();
        self.lock().interfaces.insert(name.into(), Interface { mode: "trunk".into(), allowed, access_vlan: 1 });
    }

    /// Makes `channel` a port-channel (a trunk interface, with no VLANs) of `members`, all
    /// active (LACP).
    pub fn with_port_channel(self, channel: &str, members: &[&str]) -> Self {
        self.set_trunk(channel, &[]);
        self.lock().port_channels.insert(channel.into(), members.iter().map(|m| (m.to_string(), true)).collect());
        self
    }

    /// Configures MLAG with `peer_link` (a port-channel) as the peer-link.
    pub fn with_mlag_peer_link(self, peer_link: &str) -> Self {
        self.lock().peer_link = Some(peer_link.into());
        self
    }

    /// The switch learns `mac` on `interface` in `vlan` (a member of a port-channel learns on the
    /// port-channel, as EOS shows it); a MAC moves when learnt again elsewhere in the same VLAN.
    pub fn learn_mac(&self, interface: &str, vlan: u16, mac: &str) {
        let mut s = self.lock();
        let at = s
            .port_channels
            .iter()
            .find(|(_, m)| m.contains_key(interface))
            .map_or_else(|| interface.to_string(), |(pc, _)| pc.clone());
        s.macs.retain(|(v, m, _)| !(*v == vlan && m.eq_ignore_ascii_case(mac)));
        s.macs.push((vlan, mac.to_ascii_lowercase(), at));
    }

    /// Flushes the MAC table.
    pub fn flush_macs(&self) {
        self.lock().macs.clear();
    }

    /// Sets the LLDP neighbours seen on `interface` (none: an empty list).
    pub fn set_lldp(&self, interface: &str, neighbors: Vec<Neighbor>) {
        self.lock().lldp.insert(interface.into(), neighbors);
    }

    /// The allowed VLANs of a trunk interface.
    pub fn trunk(&self, name: &str) -> Option<Vec<u16>> {
        self.lock().interfaces.get(name).map(|i| i.allowed.iter().copied().collect())
    }

    /// The EOS rendering of an interface's allowed list (`NONE`, `ALL`, `1-3`).
    pub fn trunk_text(&self, name: &str) -> Option<String> {
        self.lock().interfaces.get(name).map(|i| render_vlan_list(&i.allowed))
    }

    /// Whether VLAN `id` exists.
    pub fn has_vlan(&self, id: u16) -> bool {
        self.lock().vlans.contains_key(&id)
    }

    /// Makes `command` fail with `error` the next `times` times (`None`: until cleared).
    pub fn fail(&self, command: &str, error: CommandError, message: &str, times: Option<usize>) {
        self.lock().faults.push(Fault { command: command.into(), error, message: message.into(), remaining: times });
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The command texts received (the most recent 10,000), in order.
    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.iter().cloned().collect()
    }

    /// `runCmds` requests served so far.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The axum app (`POST /command-api`).
    pub fn router(self) -> Router {
        Router::new().route("/command-api", post(command_api)).with_state(self)
    }

    /// Serves on `addr` (use `127.0.0.1:0`); returns the bound address and the server task.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "eAPI simulator stopped");
            }
        });
        Ok((local, task))
    }

    fn run(&self, cmd: &str, mode: &mut Mode) -> CmdResult {
        let mut s = self.lock();
        if let Some(f) = s.faults.iter_mut().find(|f| f.command == cmd && f.remaining != Some(0)) {
            if let Some(n) = f.remaining.as_mut() {
                *n -= 1;
            }
            return Err((f.error, f.message.clone()));
        }
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let configuring = matches!(mode, Mode::Config | Mode::Vlan | Mode::Interface(_));
        match words.as_slice() {
            ["enable"] => {
                *mode = Mode::Enable;
                Ok(json!({}))
            }
            ["configure"] | ["configure", "terminal"] if !matches!(mode, Mode::Exec) => {
                *mode = Mode::Config;
                Ok(json!({}))
            }
            ["exit"] | ["end"] if configuring => {
                *mode = if words[0] == "end" { Mode::Enable } else { Mode::Config };
                Ok(json!({}))
            }
            ["show", "vlan"] => Ok(show_vlan(&s)),
            ["show", "mac", "address-table"] => Ok(show_mac_table(&s)),
            ["show", "lldp", "neighbors", "detail"] => Ok(show_lldp_detail(&s)),
            ["show", "port-channel"] => Ok(show_port_channel(&s)),
            ["show", "mlag"] => Ok(show_mlag(&s)),
            ["show", "interfaces", "switchport"] => Ok(show_switchports(&s, None)),
            ["show", "interfaces", names, "switchport"] => {
                let wanted: Vec<&str> = names.split(',').collect();
                if let Some(missing) = wanted.iter().find(|n| !s.interfaces.contains_key(**n)) {
                    return Err(invalid(format!("Interface {missing} does not exist")));
                }
                Ok(show_switchports(&s, Some(&wanted)))
            }
            ["vlan", id] if configuring => {
                let v: u16 = id
                    .parse()
                    .ok()
                    .filter(|v| VLANS.contains(v))
                    .ok_or_else(|| invalid(format!("Invalid input (at token 1: '{id}')")))?;
                s.vlans.entry(v).or_insert_with(|| format!("VLAN{v:04}"));
                *mode = Mode::Vlan;
                Ok(json!({}))
            }
            ["interface", name] if configuring => {
                if !s.interfaces.contains_key(*name) {
                    return Err(invalid(format!("Interface {name} does not exist")));
                }
                *mode = Mode::Interface(name.to_string());
                Ok(json!({}))
            }
            ["switchport", "trunk", "allowed", "vlan", action @ ("add" | "remove"), list] => {
                let Mode::Interface(name) = &*mode else {
                    return Err(invalid("Invalid input (not in interface configuration mode)"));
                };
                let set = parse_vlan_list(list).map_err(|e| invalid(format!("Invalid input: {e}")))?;
                let iface = s.interfaces.get_mut(name).ok_or_else(|| invalid(format!("Interface {name} vanished")))?;
                if *action == "add" {
                    iface.allowed.extend(set);
                } else {
                    iface.allowed.retain(|v| !set.contains(v));
                }
                Ok(json!({}))
            }
            _ if !configuring && words.first().is_none_or(|w| *w != "show") => {
                Err((CommandError::Incompatible, "Invalid input (privileged or configuration mode required)".into()))
            }
            _ => Err(invalid("Invalid input")),
        }
    }
}

fn show_vlan(s: &SimState) -> Value {
    let vlans: serde_json::Map<String, Value> = s
        .vlans
        .iter()
        .map(|(id, name)| {
            let members: serde_json::Map<String, Value> = s
                .interfaces
                .iter()
                .filter(|(_, i)| if i.mode == "trunk" { i.allowed.contains(id) } else { i.access_vlan == *id })
                .map(|(n, _)| (n.clone(), json!({ "privatePromoted": false })))
                .collect();
            (id.to_string(), json!({ "name": name, "status": "active", "interfaces": members, "dynamic": false }))
        })
        .collect();
    json!({ "vlans": vlans, "sourceDetail": "" })
}

fn show_switchports(s: &SimState, only: Option<&[&str]>) -> Value {
    let ports: serde_json::Map<String, Value> = s
        .interfaces
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o.contains(&n.as_str())))
        .map(|(n, i)| {
            (
                n.clone(),
                json!({
                    "enabled": true,
                    "switchportInfo": {
                        "mode": i.mode,
                        "accessVlanId": i.access_vlan,
                        "accessVlanName": s.vlans.get(&i.access_vlan).cloned().unwrap_or_default(),
                        "trunkingNativeVlanId": 1,
                        "trunkAllowedVlans": render_vlan_list(&i.allowed),
                        "staticTrunkGroups": [],
                        "dynamicTrunkGroups": [],
                    }
                }),
            )
        })
        .collect();
    json!({ "switchports": ports })
}

fn show_mac_table(s: &SimState) -> Value {
    let entries: Vec<Value> = s
        .macs
        .iter()
        .map(|(vlan, mac, interface)| {
            json!({
                "vlanId": vlan,
                "macAddress": mac,
                "entryType": "dynamic",
                "interface": interface,
                "moves": 1,
                "lastMove": 1_790_000_000.0,
            })
        })
        .collect();
    json!({ "unicastTable": { "tableEntries": entries }, "multicastTable": { "tableEntries": [] } })
}

/// A MAC-looking port ID is `macAddress`, anything else `interfaceName` (quoted in `interfaceId`
/// as EOS does).
fn show_lldp_detail(s: &SimState) -> Value {
    let neighbors: serde_json::Map<String, Value> = s
        .lldp
        .iter()
        .map(|(intf, ns)| {
            let info: Vec<Value> = ns
                .iter()
                .map(|n| {
                    let is_mac = n.port_id.len() == 14 && n.port_id.matches('.').count() == 2
                        || n.port_id.len() == 17 && n.port_id.matches(':').count() == 5;
                    let (id_type, id) = if is_mac {
                        ("macAddress", n.port_id.clone())
                    } else {
                        ("interfaceName", format!("\"{}\"", n.port_id))
                    };
                    json!({
                        "chassisIdType": "macAddress",
                        "chassisId": n.chassis_id,
                        "systemName": n.system_name,
                        "systemDescription": "",
                        "ttl": 120,
                        "lastChangeTime": 1_790_000_000.0,
                        "neighborDiscoveryTime": 1_790_000_000.0,
                        "neighborInterfaceInfo": {
                            "interfaceIdType": id_type,
                            "interfaceId": id,
                            "interfaceId_v2": n.port_id,
                            "interfaceDescription": n.port_description,
                        },
                    })
                })
                .collect();
            (intf.clone(), json!({ "lldpNeighborInfo": info }))
        })
        .collect();
    json!({ "lldpNeighbors": neighbors })
}

fn show_port_channel(s: &SimState) -> Value {
    let channels: serde_json::Map<String, Value> = s
        .port_channels
        .iter()
        .map(|(pc, members)| {
            let ports = |active: bool| -> serde_json::Map<String, Value> {
                members
                    .iter()
                    .filter(|(_, a)| **a == active)
                    .map(|(m, _)| (m.clone(), json!({ "protocol": "lacp", "lacpMode": "active", "weight": 1 })))
                    .collect()
            };
            (
                pc.clone(),
                json!({
                    "activePorts": ports(true),
                    "inactivePorts": ports(false),
                    "rxPorts": {},
                    "recircFeature": [],
                    "inactiveLag": false,
                    "minLinks": 0,
                    "minSpeed": "0 gbps",
                    "currWeight": 0,
                    "maxWeight": 16,
                }),
            )
        })
        .collect();
    json!({ "portChannels": channels })
}

fn show_mlag(s: &SimState) -> Value {
    match &s.peer_link {
        None => json!({ "state": "disabled" }),
        Some(pl) => json!({
            "domainId": "netfold-sim",
            "localInterface": "Vlan4094",
            "localIntfStatus": "up",
            "peerLink": pl,
            "peerLinkStatus": "up",
            "peerAddress": "10.255.255.2",
            "configSanity": "consistent",
            "state": "active",
            "negStatus": "connected",
            "mlagPorts": { "Disabled": 0, "Configured": 0, "Inactive": 0, "Active-partial": 0, "Active-full": 0 },
        }),
    }
}

fn rpc_error(id: &Value, code: i64, message: String, data: Vec<Value>) -> Response {
    Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message, "data": data } }))
        .into_response()
}

async fn command_api(State(sim): State<Sim>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let authorized = headers.get("authorization").and_then(|h| h.to_str().ok()) == Some(sim.auth.as_str());
    if !authorized {
        return (StatusCode::UNAUTHORIZED, [("www-authenticate", "Basic realm=\"eAPI\"")], "Unauthorized")
            .into_response();
    }
    sim.lock().requests += 1;
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return rpc_error(&Value::Null, -32700, format!("Parse error: {e}"), vec![]),
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if req.get("method").and_then(Value::as_str) != Some("runCmds") {
        return rpc_error(&id, -32601, "Method not found".into(), vec![]);
    }
    let Some(cmds) = req.pointer("/params/cmds").and_then(Value::as_array) else {
        return rpc_error(&id, -32602, "Invalid params: cmds missing".into(), vec![]);
    };
    let texts: Vec<String> = cmds
        .iter()
        .map(|c| c.as_str().or_else(|| c.get("cmd").and_then(Value::as_str)).unwrap_or("").to_string())
        .collect();
    {
        let mut s = sim.lock();
        for t in &texts {
            if s.commands.len() == COMMAND_LOG {
                s.commands.pop_front();
            }
            s.commands.push_back(t.clone());
        }
    }
    let mut mode = Mode::Exec;
    let mut results = Vec::with_capacity(texts.len());
    for (i, cmd) in texts.iter().enumerate() {
        match sim.run(cmd, &mut mode) {
            Ok(r) => results.push(r),
            Err((kind, msg)) => {
                let message = format!("CLI command {} of {} '{}' failed: {}", i + 1, texts.len(), cmd, kind_text(kind));
                results.push(json!({ "errors": [msg] }));
                return rpc_error(&id, kind.code(), message, results);
            }
        }
    }
    Json(json!({ "jsonrpc": "2.0", "id": id, "result": results })).into_response()
}

fn kind_text(kind: CommandError) -> &'static str {
    match kind {
        CommandError::General => "could not run command",
        CommandError::Internal => "internal error",
        CommandError::Invalid => "invalid command",
        CommandError::Unconverted => "command has no JSON output",
        CommandError::Incompatible => "command not permitted",
    }
}
