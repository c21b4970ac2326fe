//! The simulator's inventory: hosts with pnics, standard port groups and a distributed switch
//! proxy; VMs with Ethernet cards; distributed port groups and switches. Each object carries a
//! generation bumped on every change, so property filters re-render only what changed. Rendering
//! produces vim25 XML exactly as vCenter puts it on the wire (`xsi:type` on every value, arrays
//! named by item type, morefs with `type`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::tree;

/// A CDP or LLDP neighbour of a pnic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub switch: String,
    pub port: String,
}

/// A physical NIC of a simulated host.
#[derive(Clone, Debug)]
pub struct SimPnic {
    pub device: String,
    pub mac: String,
    pub cdp: Option<Neighbour>,
    pub lldp: Option<Neighbour>,
    /// On the distributed switch (else on `vSwitch0`).
    pub on_dvs: bool,
}

#[derive(Clone, Debug)]
pub struct SimHost {
    pub name: String,
    pub gen: u64,
    pub network_system: String,
    pub pnics: Vec<SimPnic>,
    /// Standard port groups on `vSwitch0`: name and VLAN id (kept raw: tests set bad ones).
    pub portgroups: Vec<(String, i64)>,
    /// The distributed switch this host is a member of.
    pub dvs: Option<String>,
}

/// What a VM NIC is plugged into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimNet {
    /// A standard port group, by name.
    Standard(String),
    /// A distributed port group, by key.
    Distributed(String),
}

#[derive(Clone, Debug)]
pub struct SimNic {
    pub key: i64,
    pub mac: String,
    pub connected: bool,
    pub network: SimNet,
}

#[derive(Clone, Debug)]
pub struct SimVm {
    pub name: String,
    pub gen: u64,
    pub host: String,
    pub powered_on: bool,
    pub nics: Vec<SimNic>,
}

/// A distributed port group's VLAN setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimVlan {
    Id(i64),
    Trunk(Vec<(i64, i64)>),
    Pvlan(i64),
}

#[derive(Clone, Debug)]
pub struct SimDvpg {
    pub name: String,
    pub gen: u64,
    pub dvs: String,
    pub vlan: SimVlan,
    pub uplink: bool,
}

#[derive(Clone, Debug)]
pub struct SimDvs {
    pub name: String,
    pub gen: u64,
    pub uuid: String,
}

pub const HOST: &str = "HostSystem";
pub const VM: &str = "VirtualMachine";
pub const DVPG: &str = "DistributedVirtualPortgroup";
pub const DVS: &str = "VmwareDistributedVirtualSwitch";

/// The property paths served per type. A path outside this list is refused — `InvalidProperty`
/// in the object's `missingSet` of a retrieve (as vcsim answers) or as the fault of a `Fetch` —
/// never silently left out. `docs/vsphere-simulator.md` lists the same paths.
pub const SERVED: [(&str, &[&str]); 4] = [
    (
        HOST,
        &[
            "name",
            "runtime.connectionState",
            "configManager.networkSystem",
            "config.network.pnic",
            "config.network.vswitch",
            "config.network.portgroup",
            "config.network.proxySwitch",
        ],
    ),
    (VM, &["name", "runtime.host", "runtime.powerState", "config.hardware.device", "network"]),
    (DVPG, &["key", "name", "config.distributedVirtualSwitch", "config.uplink", "config.defaultPortConfig.vlan"]),
    (DVS, &["uuid", "name", "config.host", "config.uplinkPortgroup", "summary.hostMember"]),
];

/// The data objects the simulator assembles from the served paths below them, with their vim25
/// types: what pyVmomi fetches for `vm.runtime.powerState` or `host.config.network.portgroup`
/// (the top-level property, whole).
const COMPOSITES: [(&str, &str, &str); 7] = [
    (VM, "runtime", "VirtualMachineRuntimeInfo"),
    (VM, "config", "VirtualMachineConfigInfo"),
    (VM, "config.hardware", "VirtualHardware"),
    (HOST, "runtime", "HostRuntimeInfo"),
    (HOST, "config", "HostConfigInfo"),
    (HOST, "config.network", "HostNetworkInfo"),
    (HOST, "configManager", "HostConfigManager"),
];

fn composite(kind: &str, path: &str) -> Option<&'static str> {
    COMPOSITES.iter().find(|(k, p, _)| *k == kind && *p == path).map(|(_, _, t)| *t)
}

/// Whether the simulator serves `path` on objects of type `kind` (a leaf, a composite, or a
/// place in the inventory tree).
pub fn serves(kind: &str, path: &str) -> bool {
    let world_kind = [HOST, VM, DVPG, DVS].contains(&kind);
    SERVED.iter().chain(tree::SERVED.iter()).any(|(k, paths)| *k == kind && paths.contains(&path))
        || composite(kind, path).is_some()
        || (world_kind && path == "parent")
}

/// The order in which [`World::walk`] visits object types.
const WALK_ORDER: [&str; 4] = [HOST, VM, DVPG, DVS];

/// Whether a container view over `types` shows objects of `kind`.
fn wants(types: &[String], kind: &str) -> bool {
    types
        .iter()
        .any(|t| t == kind || (kind == DVS && t == "DistributedVirtualSwitch") || (kind == DVPG && t == "Network"))
}

/// `(id, generation)` of a map's objects, after `from` when given.
fn gens<'w: 'x, 'x, V>(
    m: &'w BTreeMap<String, V>,
    from: Option<&'x str>,
    gen: fn(&V) -> u64,
) -> Box<dyn Iterator<Item = (&'w str, u64)> + 'x> {
    use std::ops::Bound;
    let lower = from.map_or(Bound::Unbounded, Bound::Excluded);
    Box::new(m.range::<str, _>((lower, Bound::Unbounded)).map(move |(k, v)| (k.as_str(), gen(v))))
}

/// Every simulated object.
#[derive(Debug, Default)]
pub struct World {
    pub next_id: u64,
    pub gen: u64,
    pub next_mac: u64,
    pub hosts: BTreeMap<String, SimHost>,
    pub vms: BTreeMap<String, SimVm>,
    pub dvpgs: BTreeMap<String, SimDvpg>,
    pub dvs: BTreeMap<String, SimDvs>,
    /// Objects by the generation [`World::bump`] gave them (an object given a newer one since
    /// is found again under it; its older entry is stale and skipped): what changed since a
    /// generation is a range of this, not a walk of every object.
    changed: BTreeMap<u64, (&'static str, String)>,
}

impl World {
    pub fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// The next generation, for object `id` of type `kind` (which the caller gives it).
    pub fn bump(&mut self, kind: &'static str, id: &str) -> u64 {
        self.gen += 1;
        self.changed.insert(self.gen, (kind, id.to_string()));
        let objects = self.hosts.len() + self.vms.len() + self.dvpgs.len() + self.dvs.len();
        if self.changed.len() > 2 * objects + 1024 {
            let mut changed = std::mem::take(&mut self.changed);
            changed.retain(|gen, (kind, id)| self.gen_of(kind, id) == Some(*gen) || *gen == self.gen);
            self.changed = changed;
        }
        self.gen
    }

    /// `(type, id, generation)` of the objects of these types whose generation is above
    /// `since`, in walk order ([`World::walk`]'s).
    pub fn changed_since(&self, types: &[String], since: u64) -> Vec<(&'static str, &str, u64)> {
        let mut out: Vec<(&'static str, &str, u64)> = self
            .changed
            .range(since + 1..)
            .filter(|(_, (kind, _))| wants(types, kind))
            .filter_map(|(gen, (kind, id))| {
                self.lookup(kind, id).filter(|(_, g)| g == gen).map(|(id, g)| (*kind, id, g))
            })
            .collect();
        out.sort_by_key(|(kind, id, _)| (WALK_ORDER.iter().position(|o| o == kind), *id));
        out
    }

    pub fn mac(&mut self) -> String {
        self.next_mac += 1;
        let m = self.next_mac;
        format!("00:50:56:{:02x}:{:02x}:{:02x}", (m >> 16) & 0xff, (m >> 8) & 0xff, m & 0xff)
    }

    /// `(type, id, generation)` of every object of these types.
    pub fn objects(&self, types: &[String]) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        let want = |t: &str| types.iter().any(|x| x == t || (t == DVS && x == "DistributedVirtualSwitch"));
        if want(HOST) {
            out.extend(self.hosts.iter().map(|(id, h)| (HOST, id.clone(), h.gen)));
        }
        if want(VM) {
            out.extend(self.vms.iter().map(|(id, v)| (VM, id.clone(), v.gen)));
        }
        if want(DVPG) || types.iter().any(|t| t == "Network") {
            out.extend(self.dvpgs.iter().map(|(id, p)| (DVPG, id.clone(), p.gen)));
        }
        if want(DVS) {
            out.extend(self.dvs.iter().map(|(id, s)| (DVS, id.clone(), s.gen)));
        }
        out
    }

    /// `(type, id, generation)` of every object of these types, in a fixed order (hosts, VMs,
    /// distributed port groups, distributed switches; by id within a type), starting after
    /// `after` when given: what property filters walk, resuming a truncated pass where it stopped.
    pub fn walk<'w: 'x, 'x>(
        &'w self,
        types: &'x [String],
        after: Option<(&'x str, &'x str)>,
    ) -> impl Iterator<Item = (&'static str, &'w str, u64)> + 'x {
        let start = after.and_then(|(k, _)| WALK_ORDER.iter().position(|o| *o == k)).unwrap_or(0);
        WALK_ORDER[start..].iter().filter(move |k| wants(types, k)).flat_map(move |&kind| {
            let from = after.filter(|(k, _)| *k == kind).map(|(_, id)| id);
            let it: Box<dyn Iterator<Item = (&'w str, u64)> + 'x> = match kind {
                HOST => gens(&self.hosts, from, |h| h.gen),
                VM => gens(&self.vms, from, |v| v.gen),
                DVPG => gens(&self.dvpgs, from, |p| p.gen),
                _ => gens(&self.dvs, from, |s| s.gen),
            };
            it.map(move |(id, gen)| (kind, id, gen))
        })
    }

    /// One object's id as the world stores it, and its generation.
    pub fn lookup(&self, kind: &str, id: &str) -> Option<(&str, u64)> {
        match kind {
            HOST => self.hosts.get_key_value(id).map(|(k, h)| (k.as_str(), h.gen)),
            VM => self.vms.get_key_value(id).map(|(k, v)| (k.as_str(), v.gen)),
            DVPG => self.dvpgs.get_key_value(id).map(|(k, p)| (k.as_str(), p.gen)),
            DVS => self.dvs.get_key_value(id).map(|(k, s)| (k.as_str(), s.gen)),
            _ => None,
        }
    }

    /// How many objects of these types exist.
    pub fn count(&self, types: &[String]) -> usize {
        WALK_ORDER
            .iter()
            .filter(|k| wants(types, k))
            .map(|&k| match k {
                HOST => self.hosts.len(),
                VM => self.vms.len(),
                DVPG => self.dvpgs.len(),
                _ => self.dvs.len(),
            })
            .sum()
    }

    /// The generation of one object, if it exists.
    pub fn gen_of(&self, kind: &str, id: &str) -> Option<u64> {
        match kind {
            HOST => self.hosts.get(id).map(|h| h.gen),
            VM => self.vms.get(id).map(|v| v.gen),
            DVPG => self.dvpgs.get(id).map(|p| p.gen),
            DVS => self.dvs.get(id).map(|s| s.gen),
            // The tree is derived, so it has no generations of its own.
            _ => tree::exists(self, kind, id).then_some(0),
        }
    }

    /// One property of one object as `(xsi:type, inner XML)`; `None` when unset or unknown.
    pub fn render(&self, kind: &str, id: &str, path: &str) -> Option<(String, String)> {
        if let Some(ty) = composite(kind, path) {
            return Some((ty.to_string(), self.render_fields(kind, id, path)));
        }
        if path == "parent" && self.gen_of(kind, id).is_some() {
            if let Some(p) = tree::parent_of(kind, id) {
                return Some(p);
            }
        }
        match kind {
            HOST => self.hosts.get(id).and_then(|h| self.render_host(h, path)),
            VM => self.vms.get(id).and_then(|v| self.render_vm(v, path)),
            DVPG => self.dvpgs.get(id).and_then(|p| render_dvpg(id, p, path)),
            DVS => self.dvs.get(id).and_then(|s| self.render_dvs(id, s, path)),
            _ => tree::render(self, kind, id, path),
        }
    }

    /// The fields of a composite: each served path one level below `prefix`, arrays as repeated
    /// field elements, nested composites as data objects of their own.
    fn render_fields(&self, kind: &str, id: &str, prefix: &str) -> String {
        let leaves = SERVED.iter().filter(|(k, _)| *k == kind).flat_map(|(_, p)| p.iter());
        let mut fields: Vec<&str> = leaves
            .filter_map(|p| p.strip_prefix(prefix)?.strip_prefix('.'))
            .map(|rest| rest.split('.').next().unwrap_or(rest))
            .collect();
        fields.dedup();
        let mut out = String::new();
        for field in fields {
            let path = format!("{prefix}.{field}");
            let Some((ty, inner)) = self.render(kind, id, &path) else { continue };
            match ty.strip_prefix("ArrayOf") {
                // `<PhysicalNic xsi:type=…>…</PhysicalNic>…` → `<pnic xsi:type=…>…</pnic>…`
                Some(item) => out.push_str(
                    &inner
                        .replace(&format!("<{item} "), &format!("<{field} "))
                        .replace(&format!("</{item}>"), &format!("</{field}>")),
                ),
                None => out.push_str(&value_xml(field, &path, &(ty, inner))),
            }
        }
        out
    }

    fn render_dvs(&self, id: &str, s: &SimDvs, path: &str) -> Option<(String, String)> {
        let members = || self.hosts.iter().filter(move |(_, h)| h.dvs.as_deref() == Some(id));
        Some(match path {
            "uuid" => string(&s.uuid),
            "name" => string(&s.name),
            // DistributedVirtualSwitchHostMember: the host and the pnics backing its uplinks.
            "config.host" => {
                let mut out = String::new();
                for (hid, h) in members() {
                    let _ = write!(
                        out,
                        "<DistributedVirtualSwitchHostMember xsi:type=\"DistributedVirtualSwitchHostMember\"><config><host type=\"HostSystem\">{}</host>\
                         <backing xsi:type=\"DistributedVirtualSwitchHostMemberPnicBacking\">",
                        escape(hid)
                    );
                    for p in h.pnics.iter().filter(|p| p.on_dvs) {
                        let _ = write!(out, "<pnicSpec><pnicDevice>{}</pnicDevice></pnicSpec>", escape(&p.device));
                    }
                    out.push_str("</backing><maxProxySwitchPorts>512</maxProxySwitchPorts></config><status>up</status></DistributedVirtualSwitchHostMember>");
                }
                ("ArrayOfDistributedVirtualSwitchHostMember".into(), out)
            }
            "config.uplinkPortgroup" => {
                let mut out = String::new();
                for (pid, _) in self.dvpgs.iter().filter(|(_, p)| p.dvs == id && p.uplink) {
                    let _ = write!(
                        out,
                        "<ManagedObjectReference type=\"DistributedVirtualPortgroup\" xsi:type=\"ManagedObjectReference\">{}</ManagedObjectReference>",
                        escape(pid)
                    );
                }
                ("ArrayOfManagedObjectReference".into(), out)
            }
            "summary.hostMember" => {
                let mut out = String::new();
                for (hid, _) in members() {
                    let _ = write!(
                        out,
                        "<ManagedObjectReference type=\"HostSystem\" xsi:type=\"ManagedObjectReference\">{}</ManagedObjectReference>",
                        escape(hid)
                    );
                }
                ("ArrayOfManagedObjectReference".into(), out)
            }
            _ => return None,
        })
    }

    fn render_host(&self, h: &SimHost, path: &str) -> Option<(String, String)> {
        Some(match path {
            "name" => string(&h.name),
            "runtime.connectionState" => ("HostSystemConnectionState".into(), "connected".into()),
            "configManager.networkSystem" => ("ManagedObjectReference".into(), escape(&h.network_system).into_owned()),
            "config.network.pnic" => {
                let mut s = String::new();
                for (i, p) in h.pnics.iter().enumerate() {
                    let _ = write!(
                        s,
                        "<PhysicalNic xsi:type=\"PhysicalNic\"><key>key-vim.host.PhysicalNic-{d}</key><device>{d}</device>\
                         <pci>0000:{i:02x}:00.0</pci><driver>ixgben</driver><linkSpeed><speedMb>10000</speedMb><duplex>true</duplex></linkSpeed>\
                         <wakeOnLanSupported>false</wakeOnLanSupported><mac>{m}</mac><fcoeConfiguration><priorityClass>3</priorityClass></fcoeConfiguration>\
                         <vmDirectPathGen2Supported>false</vmDirectPathGen2Supported><resourcePoolSchedulerAllowed>true</resourcePoolSchedulerAllowed>\
                         <autoNegotiateSupported>true</autoNegotiateSupported></PhysicalNic>",
                        d = escape(&p.device),
                        m = p.mac
                    );
                }
                ("ArrayOfPhysicalNic".into(), s)
            }
            "config.network.vswitch" => {
                let mut s = String::from(
                    "<HostVirtualSwitch xsi:type=\"HostVirtualSwitch\"><name>vSwitch0</name><key>key-vim.host.VirtualSwitch-vSwitch0</key>\
                     <numPorts>2560</numPorts><numPortsAvailable>2540</numPortsAvailable><mtu>1500</mtu>",
                );
                for (pg, _) in &h.portgroups {
                    let _ = write!(s, "<portgroup>key-vim.host.PortGroup-{}</portgroup>", escape(pg));
                }
                for p in h.pnics.iter().filter(|p| !p.on_dvs) {
                    let _ = write!(s, "<pnic>key-vim.host.PhysicalNic-{}</pnic>", escape(&p.device));
                }
                s.push_str("<spec><numPorts>128</numPorts><mtu>1500</mtu></spec></HostVirtualSwitch>");
                ("ArrayOfHostVirtualSwitch".into(), s)
            }
            "config.network.portgroup" => {
                let mut s = String::new();
                for (name, vlan) in &h.portgroups {
                    let n = escape(name);
                    let _ = write!(
                        s,
                        "<HostPortGroup xsi:type=\"HostPortGroup\"><key>key-vim.host.PortGroup-{n}</key><port><key>key-vim.host.PortGroup.Port-{n}</key></port>\
                         <vswitch>key-vim.host.VirtualSwitch-vSwitch0</vswitch><computedPolicy><security><allowPromiscuous>false</allowPromiscuous></security></computedPolicy>\
                         <spec><name>{n}</name><vlanId>{vlan}</vlanId><vswitchName>vSwitch0</vswitchName><policy></policy></spec></HostPortGroup>"
                    );
                }
                ("ArrayOfHostPortGroup".into(), s)
            }
            "config.network.proxySwitch" => {
                let mut s = String::new();
                if let Some(dvs) = h.dvs.as_ref().and_then(|d| self.dvs.get(d)) {
                    let _ = write!(
                        s,
                        "<HostProxySwitch xsi:type=\"HostProxySwitch\"><dvsUuid>{u}</dvsUuid><dvsName>{n}</dvsName><key>{u}</key>\
                         <numPorts>512</numPorts><numPortsAvailable>500</numPortsAvailable>",
                        u = escape(&dvs.uuid),
                        n = escape(&dvs.name)
                    );
                    for p in h.pnics.iter().filter(|p| p.on_dvs) {
                        let _ = write!(s, "<pnic>key-vim.host.PhysicalNic-{}</pnic>", escape(&p.device));
                    }
                    s.push_str("<mtu>1500</mtu></HostProxySwitch>");
                }
                ("ArrayOfHostProxySwitch".into(), s)
            }
            _ => return None,
        })
    }

    fn render_vm(&self, v: &SimVm, path: &str) -> Option<(String, String)> {
        Some(match path {
            "name" => string(&v.name),
            "runtime.host" => ("ManagedObjectReference".into(), escape(&v.host).into_owned()),
            "runtime.powerState" => {
                ("VirtualMachinePowerState".into(), if v.powered_on { "poweredOn" } else { "poweredOff" }.into())
            }
            "config.hardware.device" => {
                let mut s = String::from(
                    "<VirtualDevice xsi:type=\"VirtualPCIController\"><key>100</key><deviceInfo><label>PCI controller 0</label>\
                     <summary>PCI controller 0</summary></deviceInfo><busNumber>0</busNumber></VirtualDevice>",
                );
                for (i, n) in v.nics.iter().enumerate() {
                    let backing = match &n.network {
                        SimNet::Standard(name) => format!(
                            "<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName><useAutoDetect>false</useAutoDetect>\
                             <network type=\"Network\">{}</network></backing>",
                            escape(name),
                            escape(network_id(name).as_str()).into_owned()
                        ),
                        SimNet::Distributed(key) => {
                            let uuid = self
                                .dvpgs
                                .get(key)
                                .and_then(|p| self.dvs.get(&p.dvs))
                                .map(|d| d.uuid.clone())
                                .unwrap_or_default();
                            format!(
                                "<backing xsi:type=\"VirtualEthernetCardDistributedVirtualPortBackingInfo\"><port><switchUuid>{}</switchUuid>\
                                 <portgroupKey>{}</portgroupKey><portKey>{}</portKey><connectionCookie>{}</connectionCookie></port></backing>",
                                escape(&uuid),
                                escape(key),
                                n.key,
                                n.key * 7 + 1
                            )
                        }
                    };
                    let summary = match &n.network {
                        SimNet::Standard(name) => escape(name).into_owned(),
                        SimNet::Distributed(key) => format!("DVSwitch: {}", escape(key)),
                    };
                    let _ = write!(
                        s,
                        "<VirtualDevice xsi:type=\"VirtualVmxnet3\"><key>{k}</key><deviceInfo><label>Network adapter {l}</label><summary>{summary}</summary></deviceInfo>\
                         {backing}<connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>{c}</connected><status>ok</status></connectable>\
                         <slotInfo xsi:type=\"VirtualDevicePciBusSlotInfo\"><pciSlotNumber>{slot}</pciSlotNumber></slotInfo><controllerKey>100</controllerKey><unitNumber>{u}</unitNumber>\
                         <addressType>assigned</addressType><macAddress>{m}</macAddress><wakeOnLanEnabled>true</wakeOnLanEnabled>\
                         <resourceAllocation><reservation>0</reservation><share><shares>50</shares><level>normal</level></share><limit>-1</limit></resourceAllocation>\
                         <uptCompatibilityEnabled>true</uptCompatibilityEnabled></VirtualDevice>",
                        k = n.key,
                        l = i + 1,
                        c = n.connected,
                        slot = 192 + i * 32,
                        u = 7 + i,
                        m = n.mac
                    );
                }
                ("ArrayOfVirtualDevice".into(), s)
            }
            "network" => {
                let mut s = String::new();
                let mut seen = std::collections::BTreeSet::new();
                for n in &v.nics {
                    let (kind, id) = match &n.network {
                        SimNet::Standard(name) => ("Network", network_id(name)),
                        SimNet::Distributed(key) => (DVPG, key.clone()),
                    };
                    if seen.insert((kind, id.clone())) {
                        let _ = write!(
                            s,
                            "<ManagedObjectReference type=\"{kind}\" xsi:type=\"ManagedObjectReference\">{}</ManagedObjectReference>",
                            escape(&id)
                        );
                    }
                }
                ("ArrayOfManagedObjectReference".into(), s)
            }
            _ => return None,
        })
    }
}

/// The moref id of a standard port group's `Network` (the simulator names it after the port group).
pub fn network_id(name: &str) -> String {
    format!("network-{name}")
}

fn string(s: &str) -> (String, String) {
    ("xsd:string".into(), escape(s).into_owned())
}

fn render_dvpg(id: &str, p: &SimDvpg, path: &str) -> Option<(String, String)> {
    Some(match path {
        "key" => string(id),
        "name" => string(&p.name),
        "config.distributedVirtualSwitch" => ("ManagedObjectReference".into(), escape(&p.dvs).into_owned()),
        "config.uplink" => ("xsd:boolean".into(), p.uplink.to_string()),
        "config.defaultPortConfig.vlan" => match &p.vlan {
            SimVlan::Id(v) => (
                "VmwareDistributedVirtualSwitchVlanIdSpec".into(),
                format!("<inherited>false</inherited><vlanId>{v}</vlanId>"),
            ),
            SimVlan::Trunk(r) => {
                let mut s = String::from("<inherited>false</inherited>");
                for (a, b) in r {
                    let _ = write!(s, "<vlanId><start>{a}</start><end>{b}</end></vlanId>");
                }
                ("VmwareDistributedVirtualSwitchTrunkVlanSpec".into(), s)
            }
            SimVlan::Pvlan(v) => (
                "VmwareDistributedVirtualSwitchPvlanSpec".into(),
                format!("<inherited>false</inherited><pvlanId>{v}</pvlanId>"),
            ),
        },
        _ => return None,
    })
}

/// The moref `type` of a property rendered as `ManagedObjectReference`.
pub fn moref_type(path: &str) -> &'static str {
    match path {
        "configManager.networkSystem" => "HostNetworkSystem",
        "runtime.host" => HOST,
        "config.distributedVirtualSwitch" => DVS,
        _ => "ManagedEntity",
    }
}

/// `<{tag} xsi:type="…">…</{tag}>` for a rendered value (morefs get their `type` attribute).
pub fn value_xml(tag: &str, path: &str, (ty, inner): &(String, String)) -> String {
    if let Some(kind) = ty.strip_prefix("ManagedObjectReference:") {
        format!("<{tag} type=\"{kind}\" xsi:type=\"ManagedObjectReference\">{inner}</{tag}>")
    } else if ty == "ManagedObjectReference" {
        format!("<{tag} type=\"{}\" xsi:type=\"ManagedObjectReference\">{inner}</{tag}>", moref_type(path))
    } else {
        format!("<{tag} xsi:type=\"{ty}\">{inner}</{tag}>")
    }
}

/// The `QueryNetworkHint` answer for a host: one `PhysicalNicHintInfo` per pnic.
pub fn render_hints(h: &SimHost) -> String {
    let mut s = String::new();
    for p in &h.pnics {
        let _ = write!(s, "<returnval><device>{}</device>", escape(&p.device));
        if let Some(c) = &p.cdp {
            let _ = write!(
                s,
                "<connectedSwitchPort><cdpVersion>2</cdpVersion><timeout>0</timeout><ttl>180</ttl><samples>60</samples>\
                 <devId>{sw}</devId><address>10.0.0.1</address><portId>{port}</portId><deviceCapability><router>true</router>\
                 <transparentBridge>false</transparentBridge><sourceRouteBridge>false</sourceRouteBridge><networkSwitch>true</networkSwitch>\
                 <host>false</host><igmpEnabled>true</igmpEnabled><repeater>false</repeater></deviceCapability>\
                 <softwareVersion>netfold-sim</softwareVersion><hardwarePlatform>sim</hardwarePlatform><ipPrefix>0.0.0.0</ipPrefix>\
                 <ipPrefixLen>0</ipPrefixLen><vlan>1</vlan><fullDuplex>true</fullDuplex><mtu>9216</mtu><systemName>{sw}</systemName>\
                 <systemOID>1.3.6.1.4.1.9</systemOID><mgmtAddr>10.0.0.1</mgmtAddr><location></location></connectedSwitchPort>",
                sw = escape(&c.switch),
                port = escape(&c.port)
            );
        }
        if let Some(l) = &p.lldp {
            let _ = write!(
                s,
                "<lldpInfo><chassisId>00:1c:73:00:00:01</chassisId><portId>{port}</portId><timeToLive>120</timeToLive>\
                 <parameter><key>Port Description</key><value xsi:type=\"xsd:string\">{port}</value></parameter>\
                 <parameter><key>System Name</key><value xsi:type=\"xsd:string\">{sw}</value></parameter></lldpInfo>",
                sw = escape(&l.switch),
                port = escape(&l.port)
            );
        }
        s.push_str("</returnval>");
    }
    s
}
