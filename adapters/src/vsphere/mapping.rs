//! vSphere data → engine facts. [`Inventory`] is the adapter's mirror of the vendor objects
//! (property maps per managed object, plus the CDP/LLDP hints per host); [`Inventory::facts`]
//! maps the whole mirror to facts keyed by [`FactKey`], and [`engine::fact::diff`] turns two such maps into
//! the exact [`Change`]s between them. Pure: no IO, no clock.
//!
//! Rules: a host → `HostFact`; each pnic → `UplinkFact` (switch port from CDP `devId` (else
//! `systemName`) + `portId`, else LLDP `System Name` + `portId`); each standard port group →
//! `NetworkFact` keyed by its name (VLAN 0 untagged, 1..=4094 access, 4095 — guest tagging — trunk
//! 1-4094, which each switch's reconciler clips to its `allowed_vlans` and logs), uplinks
//! the vswitch's pnic keys resolved to device names; each distributed port group (not an uplink
//! group: `config.uplink`, or listed in its switch's `config.uplinkPortgroup`) → one
//! `NetworkFact` per member host of its switch (the host's `proxySwitch`, else the switch's
//! `config.host`, else its `summary.hostMember` with uplinks unknown), keyed by the port
//! group key (`VlanIdSpec`, `TrunkVlanSpec` — a range starting at 0 starts at 1 —, `PvlanSpec`
//! rejected); each `VirtualEthernetCard` → `VnicFact`. What cannot be mapped is `Rejected`.
//!
//! At scale (50,000 VMs) mapping and diffing the whole mirror per update costs hundreds of
//! milliseconds, so the mirror also records which objects changed ([`Inventory::apply_update`]
//! marks them; an `enter` re-sending identical properties marks nothing), and [`Mapper`] keeps
//! each object's facts: [`Mapper::sync`] maps only the changed objects and diffs only their
//! facts. Distributed port groups depend on hosts and switches, so they are re-mapped together
//! whenever a host, switch or port group changed (never on a VM change).

use std::collections::{BTreeMap, BTreeSet};

use compact_str::{CompactString, ToCompactString};
use engine::{
    Change, Fact, FactKey, HostFact, NeighbourSource, NetworkFact, Rejected, SwitchPort, UplinkFact, VlanId, VlanRange,
    VlanSpec, VnicFact,
};

use super::codec::{Backing, ChangeOp, DvsVlan, MoRef, ObjectContent, ObjectUpdate, PnicHint, UpdateKind, Value};

/// Managed object types the adapter watches.
pub const HOST: &str = "HostSystem";
pub const VM: &str = "VirtualMachine";
pub const DVPG: &str = "DistributedVirtualPortgroup";
/// The base type: a container view or property spec of it covers its subtypes
/// (`VmwareDistributedVirtualSwitch` on vCenter; vcsim types its switch as the base type).
pub const DVS: &str = "DistributedVirtualSwitch";

/// Whether a managed object type is a distributed switch (the base type or a subtype).
pub fn is_dvs(kind: &str) -> bool {
    kind == DVS || kind == "VmwareDistributedVirtualSwitch"
}

/// Types of the container view.
pub const VIEW_TYPES: &[&str] = &[HOST, VM, DVPG, DVS];

/// Property paths read per type.
pub const HOST_PATHS: &[&str] = &[
    "name",
    "runtime.connectionState",
    "config.network.pnic",
    "config.network.vswitch",
    "config.network.portgroup",
    "config.network.proxySwitch",
    "configManager.networkSystem",
];
pub const VM_PATHS: &[&str] = &["name", "runtime.host", "runtime.powerState", "config.hardware.device"];
pub const DVPG_PATHS: &[&str] =
    &["key", "name", "config.distributedVirtualSwitch", "config.defaultPortConfig.vlan", "config.uplink"];
pub const DVS_PATHS: &[&str] = &["uuid", "name", "config.host", "config.uplinkPortgroup", "summary.hostMember"];

/// The property sets of the filter and the initial retrieve.
pub fn prop_specs() -> Vec<(&'static str, &'static [&'static str])> {
    vec![(HOST, HOST_PATHS), (VM, VM_PATHS), (DVPG, DVPG_PATHS), (DVS, DVS_PATHS)]
}

/// Facts by key, plus what could not be mapped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    pub facts: BTreeMap<FactKey, Fact>,
    pub rejected: Vec<Rejected>,
    /// Keys mapped twice with different contents: every copy is dropped, never last-wins.
    conflicts: BTreeSet<FactKey>,
}

/// The adapter's mirror of the vendor objects.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    objects: BTreeMap<MoRef, BTreeMap<String, Value>>,
    /// Objects a retrieve returned twice with different properties (or one property twice):
    /// neither copy is mirrored; the object maps to this rejection until it is read cleanly.
    conflicts: BTreeMap<MoRef, Rejected>,
    hints: BTreeMap<String, Vec<PnicHint>>,
    /// Objects changed since the last [`Mapper::sync`].
    dirty: BTreeSet<MoRef>,
}

/// The facts and rejections mapped from one object (or from all distributed port groups).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ObjectFacts {
    facts: Vec<Fact>,
    rejected: Vec<Rejected>,
}

impl From<Mapped> for ObjectFacts {
    fn from(m: Mapped) -> Self {
        Self { facts: m.facts.into_values().collect(), rejected: m.rejected }
    }
}

impl ObjectFacts {
    fn by_key(&self) -> BTreeMap<FactKey, Fact> {
        self.facts.iter().map(|f| (f.key(), f.clone())).collect()
    }
}

/// The facts of the mirror, kept per object so that [`Mapper::sync`] costs what changed.
#[derive(Clone, Debug, Default)]
pub struct Mapper {
    per_object: BTreeMap<MoRef, ObjectFacts>,
    dvpgs: ObjectFacts,
}

impl Mapper {
    /// Maps the objects changed since the last call and returns exactly the changes to the facts
    /// (sorted by key, as [`engine::fact::diff`]) and the rejections that are new for those
    /// objects. The first call on a fresh mirror maps everything.
    pub fn sync(&mut self, inv: &mut Inventory) -> (Vec<Change>, Vec<Rejected>) {
        let dirty = std::mem::take(&mut inv.dirty);
        let mut changes = Vec::new();
        let mut rejected = Vec::new();
        let mut dvpgs_stale = false;
        for m in dirty {
            dvpgs_stale |= m.kind != VM;
            let new = match inv.objects.get(&m) {
                _ if inv.conflicts.contains_key(&m) => {
                    ObjectFacts { facts: Vec::new(), rejected: vec![inv.conflicts[&m].clone()] }
                }
                Some(p) if m.kind == HOST => {
                    let mut out = Mapped::default();
                    inv.host_facts(&m.value, p, &mut out);
                    ObjectFacts::from(out)
                }
                Some(p) if m.kind == VM => {
                    let mut out = Mapped::default();
                    vm_facts(&m, p, &mut out);
                    ObjectFacts::from(out)
                }
                _ => ObjectFacts::default(),
            };
            let old = self.per_object.remove(&m).unwrap_or_default();
            compare(&old, &new, &mut changes, &mut rejected);
            if new != ObjectFacts::default() {
                self.per_object.insert(m, new);
            }
        }
        if dvpgs_stale {
            let new = ObjectFacts::from(inv.dvpg_facts());
            compare(&self.dvpgs, &new, &mut changes, &mut rejected);
            self.dvpgs = new;
        }
        changes.sort_by_key(Change::key);
        (changes, rejected)
    }

    /// Every fact and rejection currently mapped (as [`Inventory::facts`] of the mirror at the
    /// last [`Mapper::sync`]).
    pub fn all(&self) -> Mapped {
        let mut out = Mapped::default();
        let hosts = self.per_object.iter().filter(|(m, _)| m.kind == HOST).map(|(_, o)| o);
        let vms = self.per_object.iter().filter(|(m, _)| m.kind == VM).map(|(_, o)| o);
        for o in hosts.chain(std::iter::once(&self.dvpgs)).chain(vms) {
            out.facts.extend(o.facts.iter().map(|f| (f.key(), f.clone())));
            out.rejected.extend(o.rejected.iter().cloned());
        }
        out
    }
}

/// The changes from one object's old facts to its new ones, and its new rejections.
fn compare(old: &ObjectFacts, new: &ObjectFacts, changes: &mut Vec<Change>, rejected: &mut Vec<Rejected>) {
    if old.facts != new.facts {
        changes.extend(engine::fact::diff(&old.by_key(), &new.by_key()));
    }
    rejected.extend(new.rejected.iter().filter(|r| !old.rejected.contains(r)).cloned());
}

fn known_path(kind: &str, path: &str) -> bool {
    prop_specs().iter().any(|(k, paths)| *k == kind && paths.contains(&path))
}

impl Inventory {
    /// A mirror of a new filter's first update sets (the full read,
    /// [`super::client::Session::initial_updates`]): each `enter` is an object with every
    /// property it has, read as [`Inventory::from_contents`] reads a retrieve (an object that
    /// enters twice with different properties is not mirrored); a `modify` or `leave` (a change
    /// made while the pages were read) is applied after them. Returns the mirror and the objects
    /// to re-read whole (a change to a path the mirror does not keep).
    pub fn from_updates(updates: Vec<ObjectUpdate>) -> (Self, BTreeSet<MoRef>) {
        let (enters, later): (Vec<ObjectUpdate>, Vec<ObjectUpdate>) =
            updates.into_iter().partition(|u| u.kind == UpdateKind::Enter);
        let contents = enters
            .into_iter()
            .map(|u| ObjectContent {
                obj: u.obj,
                props: u
                    .changes
                    .into_iter()
                    .filter(|c| matches!(c.op, ChangeOp::Assign | ChangeOp::Add))
                    .filter_map(|c| Some((c.name, c.val?)))
                    .collect(),
                missing: u.missing,
            })
            .collect();
        let mut inv = Self::from_contents(contents);
        let refetch = later.iter().filter(|u| inv.apply_update(u)).map(|u| u.obj.clone()).collect();
        (inv, refetch)
    }

    /// A mirror of a full `RetrievePropertiesEx` result. An object returned twice with
    /// different properties is not mirrored: it maps to a rejection naming both copies.
    pub fn from_contents(contents: Vec<ObjectContent>) -> Self {
        let mut inv = Inventory::default();
        let mut seen: BTreeMap<MoRef, BTreeMap<String, Value>> = BTreeMap::new();
        for c in contents {
            let obj = c.obj.clone();
            let Some(props) = inv.props_of(c) else { continue };
            match seen.get(&obj) {
                Some(first) if *first != props => {
                    let why = format!(
                        "returned twice in one retrieve with different properties (first {}, then {}): neither copy is used",
                        describe(first),
                        describe(&props)
                    );
                    inv.conflict(obj, why);
                }
                Some(_) => {}
                None => {
                    seen.insert(obj.clone(), props.clone());
                    if !inv.conflicts.contains_key(&obj) {
                        inv.dirty.insert(obj.clone());
                        inv.objects.insert(obj, props);
                    }
                }
            }
        }
        inv
    }

    /// Replaces one object with freshly retrieved contents.
    pub fn replace_object(&mut self, c: ObjectContent) {
        let obj = c.obj.clone();
        let Some(props) = self.props_of(c) else { return };
        if self.conflicts.remove(&obj).is_some() || self.objects.get(&obj) != Some(&props) {
            self.dirty.insert(obj.clone());
            self.objects.insert(obj, props);
        }
    }

    /// The property map of one object; a property given twice with different values makes the
    /// object a conflict (`None`).
    fn props_of(&mut self, c: ObjectContent) -> Option<BTreeMap<String, Value>> {
        let mut props = BTreeMap::new();
        for (name, v) in c.props {
            match props.get(&name) {
                Some(first) if *first != v => {
                    let why = format!("property `{name}` returned twice with different values ({first:?}, then {v:?})");
                    self.conflict(c.obj, why);
                    return None;
                }
                _ => {
                    props.insert(name, v);
                }
            }
        }
        Some(props)
    }

    fn conflict(&mut self, obj: MoRef, why: String) {
        self.objects.remove(&obj);
        self.dirty.insert(obj.clone());
        let what = format!("{} {}", obj.kind, obj.value);
        self.conflicts.entry(obj).or_insert(Rejected { what, why });
    }

    /// Whether the mirror holds this object.
    pub fn contains(&self, m: &MoRef) -> bool {
        self.objects.contains_key(m)
    }

    /// Number of mirrored objects of a type.
    pub fn count(&self, kind: &str) -> usize {
        self.objects.keys().filter(|m| m.kind == kind).count()
    }

    /// Applies one `ObjectUpdate`. Returns `true` when a change could not be applied as a whole
    /// property (a nested path such as `config.hardware.device[4000]`): the caller must re-read
    /// the object.
    pub fn apply_update(&mut self, u: &ObjectUpdate) -> bool {
        let apply = |props: &mut BTreeMap<String, Value>| {
            let mut refetch = false;
            for c in &u.changes {
                if !known_path(&u.obj.kind, &c.name) {
                    refetch = true;
                    continue;
                }
                match (c.op, &c.val) {
                    (ChangeOp::Assign | ChangeOp::Add, Some(v)) => {
                        props.insert(c.name.clone(), v.clone());
                    }
                    _ => {
                        props.remove(&c.name);
                    }
                }
            }
            refetch
        };
        match u.kind {
            UpdateKind::Leave => {
                if self.objects.remove(&u.obj).is_some() {
                    self.dirty.insert(u.obj.clone());
                }
                if u.obj.kind == HOST && self.hints.remove(&u.obj.value).is_some() {
                    self.dirty.insert(u.obj.clone());
                }
                false
            }
            UpdateKind::Enter => {
                // An object that enters again with the same properties (a peer re-sending what
                // it sent) is not mapped again: a cheap comparison.
                let mut props = BTreeMap::new();
                let refetch = apply(&mut props);
                if self.conflicts.remove(&u.obj).is_some() || self.objects.get(&u.obj) != Some(&props) {
                    self.dirty.insert(u.obj.clone());
                    self.objects.insert(u.obj.clone(), props);
                }
                refetch
            }
            UpdateKind::Modify => {
                self.dirty.insert(u.obj.clone());
                apply(self.objects.entry(u.obj.clone()).or_default())
            }
        }
    }

    /// Stores the `QueryNetworkHint` answer of a host; returns whether it changed.
    pub fn set_hints(&mut self, host: &str, hints: Vec<PnicHint>) -> bool {
        if self.hints.get(host) == Some(&hints) {
            return false;
        }
        self.hints.insert(host.to_string(), hints);
        self.dirty.insert(MoRef::new(HOST, host));
        true
    }

    /// `(host id, its HostNetworkSystem)` for every host.
    pub fn network_systems(&self) -> Vec<(String, MoRef)> {
        self.objects
            .iter()
            .filter(|(m, _)| m.kind == HOST)
            .filter_map(|(m, p)| match p.get("configManager.networkSystem") {
                Some(Value::MoRef(ns)) => Some((m.value.clone(), ns.clone())),
                _ => None,
            })
            .collect()
    }

    /// Maps the whole mirror to facts.
    pub fn facts(&self) -> Mapped {
        let mut out = Mapped::default();
        for (m, p) in self.objects.iter().filter(|(m, _)| m.kind == HOST) {
            self.host_facts(&m.value, p, &mut out);
        }
        let dvpgs = self.dvpg_facts();
        out.facts.extend(dvpgs.facts);
        out.rejected.extend(dvpgs.rejected);
        for (m, p) in self.objects.iter().filter(|(m, _)| m.kind == VM) {
            vm_facts(m, p, &mut out);
        }
        out.rejected.extend(self.conflicts.values().cloned());
        out
    }

    /// The facts of every distributed port group (one network per member host).
    fn dvpg_facts(&self) -> Mapped {
        let mut out = Mapped::default();
        let switches: BTreeMap<&MoRef, DvsMembers> =
            self.objects.iter().filter(|(m, _)| is_dvs(&m.kind)).map(|(m, p)| (m, self.dvs_members(p))).collect();
        for (m, p) in self.objects.iter().filter(|(m, _)| m.kind == DVPG) {
            dvpg_facts(m, p, &switches, &mut out);
        }
        out
    }

    /// Which hosts of the mirror belong to a distributed switch, with their uplink pNIC devices
    /// (see [`DvsMembers`]).
    fn dvs_members(&self, dvs: &BTreeMap<String, Value>) -> DvsMembers {
        let mut out = DvsMembers::default();
        if let Some(Value::MoRefs(pgs)) = dvs.get("config.uplinkPortgroup") {
            out.uplink_portgroups = pgs.iter().map(|r| r.value.clone()).collect();
        }
        let Some(Value::Str(uuid)) = dvs.get("uuid") else { return out };
        out.known = true;
        let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Last resort: `summary.hostMember` (vcsim serves only this): members, uplinks unknown.
        if let Some(Value::MoRefs(members)) = dvs.get("summary.hostMember") {
            hosts.extend(members.iter().map(|h| (h.value.clone(), Vec::new())));
        }
        // The switch's own record of each member and its uplink pNICs.
        if let Some(Value::DvsMembers(members)) = dvs.get("config.host") {
            hosts.extend(members.iter().map(|m| (m.host.value.clone(), m.pnic_devices.clone())));
        }
        // The host's proxy switch, where present, is what the host itself reports.
        for (m, p) in self.objects.iter().filter(|(m, _)| m.kind == HOST) {
            let Some(Value::ProxySwitches(ps)) = p.get("config.network.proxySwitch") else { continue };
            let pnics = match p.get("config.network.pnic") {
                Some(Value::Pnics(v)) => v.as_slice(),
                _ => &[],
            };
            for proxy in ps.iter().filter(|s| s.dvs_uuid == *uuid) {
                let devices = proxy
                    .pnic
                    .iter()
                    .filter_map(|k| pnics.iter().find(|n| &n.key == k).map(|n| n.device.clone()))
                    .collect();
                hosts.insert(m.value.clone(), devices);
            }
        }
        out.hosts =
            hosts.into_iter().filter(|(h, _)| self.objects.contains_key(&MoRef::new(HOST, h.as_str()))).collect();
        out
    }

    fn host_facts(&self, host: &str, p: &BTreeMap<String, Value>, out: &mut Mapped) {
        let name = match p.get("name") {
            Some(Value::Str(n)) => n.clone(),
            _ => host.to_string(),
        };
        insert(out, Fact::Host(HostFact { host: host.into(), name: name.into() }));
        let pnics = match p.get("config.network.pnic") {
            Some(Value::Pnics(v)) => v.as_slice(),
            _ => &[],
        };
        let hints = self.hints.get(host).map(Vec::as_slice).unwrap_or(&[]);
        for nic in pnics {
            let (port, source) = match hints.iter().find(|h| h.device == nic.device).and_then(neighbour) {
                Some((port, source)) => (Some(port), Some(source)),
                None => (None, None),
            };
            insert(
                out,
                Fact::Uplink(UplinkFact {
                    host: host.into(),
                    nic: nic.device.as_str().into(),
                    mac: nic.mac.as_deref().map(CompactString::from),
                    port,
                    source,
                }),
            );
        }
        let device_of = |key: &str| pnics.iter().find(|n| n.key == key).map(|n| CompactString::from(n.device.as_str()));
        let vswitches = match p.get("config.network.vswitch") {
            Some(Value::Vswitches(v)) => v.as_slice(),
            _ => &[],
        };
        if let Some(Value::Portgroups(pgs)) = p.get("config.network.portgroup") {
            for pg in pgs {
                let what = format!("port group \"{}\" on {host}", pg.name);
                let vlan = match pg.vlan_id {
                    0 => VlanSpec::Untagged,
                    4095 => VlanSpec::Trunk(vec![VlanRange::new(
                        VlanId::new(1).expect("1 is a VLAN"),
                        VlanId::new(4094).expect("4094 is a VLAN"),
                    )
                    .expect("1 <= 4094")]),
                    n => match VlanId::from_int(n) {
                        Ok(v) => VlanSpec::Access(v),
                        Err(e) => {
                            out.rejected.push(Rejected { what, why: e.to_string() });
                            continue;
                        }
                    },
                };
                let uplinks = vswitches
                    .iter()
                    .find(|v| v.name == pg.vswitch_name)
                    .map(|v| v.pnic.iter().filter_map(|k| device_of(k)).collect())
                    .unwrap_or_default();
                insert(
                    out,
                    Fact::Network(NetworkFact {
                        host: host.into(),
                        network: pg.name.as_str().into(),
                        name: pg.name.as_str().into(),
                        vlan,
                        uplinks,
                    }),
                );
            }
        }
    }
}

/// Adds a mapped fact. The same key mapped twice with different contents (two port groups
/// with one key, a NIC key repeated) is rejected naming both copies, and every copy of that key
/// is dropped — never last-wins.
fn insert(out: &mut Mapped, f: Fact) {
    let key = f.key();
    if out.conflicts.contains(&key) {
        return;
    }
    match out.facts.get(&key) {
        Some(first) if *first != f => {
            let why = format!("mapped twice with different contents: {first:?} and {f:?}; neither is used");
            out.rejected.push(Rejected { what: key.to_string(), why });
            out.facts.remove(&key);
            out.conflicts.insert(key);
        }
        Some(_) => {}
        None => {
            out.facts.insert(key, f);
        }
    }
}

/// A short description of an object's properties for a duplicate's rejection: the name and
/// the VLAN spec when present.
fn describe(props: &BTreeMap<String, Value>) -> String {
    let mut parts = Vec::new();
    for key in ["name", "key", "config.defaultPortConfig.vlan"] {
        if let Some(v) = props.get(key) {
            parts.push(format!("{key} = {v:?}"));
        }
    }
    if parts.is_empty() {
        format!("{} properties", props.len())
    } else {
        parts.join(", ")
    }
}

/// The switch port a pnic hint names: CDP first, then LLDP.
fn neighbour(h: &PnicHint) -> Option<(SwitchPort, NeighbourSource)> {
    if let Some(c) = &h.cdp {
        let switch = c.dev_id.as_deref().or(c.system_name.as_deref());
        if let (Some(s), Some(p)) = (switch, c.port_id.as_deref()) {
            if let Ok(sp) = SwitchPort::new(s, p) {
                return Some((sp, NeighbourSource::Cdp));
            }
        }
    }
    if let Some(l) = &h.lldp {
        if let (Some(s), Some(p)) = (l.system_name(), l.port_id.as_deref()) {
            if let Ok(sp) = SwitchPort::new(s, p) {
                return Some((sp, NeighbourSource::Lldp));
            }
        }
    }
    None
}

fn dvs_vlan(v: &DvsVlan) -> Result<VlanSpec, String> {
    match v {
        DvsVlan::Id(0) => Ok(VlanSpec::Untagged),
        DvsVlan::Id(n) => VlanId::from_int(*n).map(VlanSpec::Access).map_err(|e| e.to_string()),
        DvsVlan::Trunk(ranges) => {
            let mut out = Vec::new();
            for &(a, b) in ranges {
                let a = if a == 0 { 1 } else { a };
                let first = VlanId::from_int(a).map_err(|e| format!("trunk range {a}-{b}: {e}"))?;
                let last = VlanId::from_int(b).map_err(|e| format!("trunk range {a}-{b}: {e}"))?;
                out.push(VlanRange::new(first, last).map_err(|e| e.to_string())?);
            }
            if out.is_empty() {
                return Err("trunk VLAN spec with no ranges".into());
            }
            Ok(VlanSpec::Trunk(out))
        }
        DvsVlan::Pvlan(id) => Err(format!("private VLAN (PvlanSpec, pvlanId {id}) is not supported")),
    }
}

/// The members of one distributed switch. A host's membership comes from the first of: its
/// `config.network.proxySwitch` for the switch's uuid (pnic keys resolved to devices), the
/// switch's `config.host` (pnic devices of its backing), the switch's `summary.hostMember`
/// (uplinks unknown). Hosts not in the mirror are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DvsMembers {
    /// Whether the switch's uuid is known (the switch was read).
    known: bool,
    /// Member host id → its uplink pNIC devices.
    hosts: BTreeMap<String, Vec<String>>,
    /// Keys of the switch's uplink port groups (`config.uplinkPortgroup`): never VM networks.
    uplink_portgroups: BTreeSet<String>,
}

fn dvpg_facts(m: &MoRef, p: &BTreeMap<String, Value>, switches: &BTreeMap<&MoRef, DvsMembers>, out: &mut Mapped) {
    if matches!(p.get("config.uplink"), Some(Value::Bool(true))) {
        return;
    }
    let dvs = match p.get("config.distributedVirtualSwitch") {
        Some(Value::MoRef(d)) => switches.get(d).filter(|s| s.known).ok_or_else(|| d.to_string()),
        _ => Err("none".to_string()),
    };
    if matches!(&dvs, Ok(s) if s.uplink_portgroups.contains(&m.value)) {
        return;
    }
    let key = match p.get("key") {
        Some(Value::Str(k)) => k.clone(),
        _ => m.value.clone(),
    };
    let name = match p.get("name") {
        Some(Value::Str(n)) => n.clone(),
        _ => key.clone(),
    };
    let what = format!("distributed port group \"{name}\" ({key})");
    let vlan = match p.get("config.defaultPortConfig.vlan") {
        Some(Value::Vlan(v)) => match dvs_vlan(v) {
            Ok(v) => v,
            Err(why) => {
                out.rejected.push(Rejected { what, why });
                return;
            }
        },
        other => {
            out.rejected.push(Rejected { what, why: format!("no usable VLAN spec ({other:?})") });
            return;
        }
    };
    let dvs = match dvs {
        Ok(s) => s,
        Err(d) => {
            let why = format!("its distributed switch ({d}) is not in the inventory");
            out.rejected.push(Rejected { what, why });
            return;
        }
    };
    for (host, uplinks) in &dvs.hosts {
        insert(
            out,
            Fact::Network(NetworkFact {
                host: host.as_str().into(),
                network: key.as_str().into(),
                name: name.as_str().into(),
                vlan: vlan.clone(),
                uplinks: uplinks.iter().map(|u| CompactString::from(u.as_str())).collect(),
            }),
        );
    }
}

fn vm_facts(m: &MoRef, p: &BTreeMap<String, Value>, out: &mut Mapped) {
    let Some(Value::Nics(nics)) = p.get("config.hardware.device") else { return };
    let vm_name = match p.get("name") {
        Some(Value::Str(n)) => n.clone(),
        _ => m.value.clone(),
    };
    let host = match p.get("runtime.host") {
        Some(Value::MoRef(h)) => h.value.clone(),
        _ => {
            if !nics.is_empty() {
                out.rejected
                    .push(Rejected { what: format!("VM \"{vm_name}\" ({})", m.value), why: "no runtime.host".into() });
            }
            return;
        }
    };
    let powered_on = matches!(p.get("runtime.powerState"), Some(Value::Str(s)) if s == "poweredOn");
    for nic in nics {
        let what = format!("NIC {} of VM \"{vm_name}\" ({})", nic.key, m.value);
        let network = match &nic.backing {
            Backing::Network { name } => name.clone(),
            Backing::DvPort { portgroup_key, .. } => portgroup_key.clone(),
            Backing::Other(t) => {
                out.rejected.push(Rejected { what, why: format!("unsupported network backing {t}") });
                continue;
            }
        };
        let Some(mac) = nic.mac.clone() else {
            out.rejected.push(Rejected { what, why: "no MAC address".into() });
            continue;
        };
        insert(
            out,
            Fact::Vnic(VnicFact {
                vm: m.value.as_str().into(),
                vm_name: vm_name.as_str().into(),
                nic: nic.key.to_compact_string(),
                mac: mac.into(),
                host: host.as_str().into(),
                network: network.into(),
                connected: nic.connected,
                powered_on,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::codec::{CdpInfo, LldpInfo, PhysicalNic, PortGroup, PropertyChange, VirtualSwitch};
    use engine::{fact::diff, Change};

    fn host_with(vlan: i64) -> Inventory {
        let props = vec![
            ("name".to_string(), Value::Str("esx-1".into())),
            (
                "config.network.pnic".to_string(),
                Value::Pnics(vec![PhysicalNic {
                    key: "key-vim.host.PhysicalNic-vmnic0".into(),
                    device: "vmnic0".into(),
                    mac: Some("aa".into()),
                }]),
            ),
            (
                "config.network.vswitch".to_string(),
                Value::Vswitches(vec![VirtualSwitch {
                    name: "vSwitch0".into(),
                    key: "k".into(),
                    pnic: vec!["key-vim.host.PhysicalNic-vmnic0".into()],
                }]),
            ),
            (
                "config.network.portgroup".to_string(),
                Value::Portgroups(vec![PortGroup {
                    name: "pg".into(),
                    vlan_id: vlan,
                    vswitch_name: "vSwitch0".into(),
                }]),
            ),
        ];
        Inventory::from_contents(vec![ObjectContent { obj: MoRef::new(HOST, "host-1"), props, missing: vec![] }])
    }

    fn net(inv: &Inventory) -> Option<NetworkFact> {
        inv.facts().facts.values().find_map(|f| match f {
            Fact::Network(n) => Some(n.clone()),
            _ => None,
        })
    }

    fn host_content(pgs: Vec<PortGroup>) -> ObjectContent {
        let mut c = host_with(10).objects.into_iter().next().map(|(obj, p)| (obj, p.into_iter().collect())).unwrap();
        let props: &mut Vec<(String, Value)> = &mut c.1;
        props.retain(|(k, _)| k != "config.network.portgroup");
        props.push(("config.network.portgroup".into(), Value::Portgroups(pgs)));
        ObjectContent { obj: c.0, props: c.1, missing: vec![] }
    }

    fn pg(name: &str, vlan: i64) -> PortGroup {
        PortGroup { name: name.into(), vlan_id: vlan, vswitch_name: "vSwitch0".into() }
    }

    #[test]
    fn the_same_moref_twice_with_different_vlans_is_rejected_naming_both() {
        let inv = Inventory::from_contents(vec![host_content(vec![pg("pg", 10)]), host_content(vec![pg("pg", 20)])]);
        let mut mapper = Mapper::default();
        let mut inv2 = inv.clone();
        let (changes, rejected) = mapper.sync(&mut inv2);
        assert!(changes.is_empty(), "neither copy is mapped: {changes:?}");
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].what, "HostSystem host-1");
        assert!(rejected[0].why.contains("returned twice"), "{}", rejected[0].why);
        assert_eq!(mapper.all().rejected, rejected);
        assert!(inv.facts().facts.is_empty() && inv.facts().rejected == rejected);
        // Identical copies collapse; a clean re-read of the object is mapped.
        let twice = Inventory::from_contents(vec![host_content(vec![pg("pg", 10)]), host_content(vec![pg("pg", 10)])]);
        assert!(twice.facts().rejected.is_empty() && net(&twice).is_some());
        inv2.replace_object(host_content(vec![pg("pg", 30)]));
        let (changes, _) = mapper.sync(&mut inv2);
        assert!(!changes.is_empty());
        assert!(mapper.all().rejected.is_empty());
    }

    #[test]
    fn one_fact_key_mapped_twice_is_rejected_naming_both_copies() {
        let inv = Inventory::from_contents(vec![host_content(vec![pg("pg", 10), pg("pg", 20), pg("pg", 30)])]);
        let m = inv.facts();
        assert!(net(&inv).is_none(), "no copy wins");
        let r: Vec<_> = m.rejected.iter().filter(|r| r.why.contains("mapped twice")).collect();
        assert_eq!(r.len(), 1, "{:?}", m.rejected);
        assert!(r[0].why.contains("Access(VlanId(10))") && r[0].why.contains("Access(VlanId(20))"), "{}", r[0].why);
    }

    /// An `enter` update carrying an object's properties as `assign` changes.
    fn enter(c: ObjectContent) -> ObjectUpdate {
        let changes =
            c.props.into_iter().map(|(name, v)| PropertyChange { name, op: ChangeOp::Assign, val: Some(v) }).collect();
        ObjectUpdate { kind: UpdateKind::Enter, obj: c.obj, changes, missing: c.missing }
    }

    #[test]
    fn a_filters_first_update_sets_read_as_a_retrieve_and_later_changes_apply_after_them() {
        let (inv, refetch) = Inventory::from_updates(vec![enter(host_content(vec![pg("pg", 10)]))]);
        assert!(refetch.is_empty());
        let retrieved = Inventory::from_contents(vec![host_content(vec![pg("pg", 10)])]);
        assert_eq!(inv.facts(), retrieved.facts(), "the same mirror as a retrieve of the same object");
        assert_eq!(net(&inv).unwrap().vlan.to_string(), "vlan 10");
        // Entering twice with different properties: neither copy, as in a retrieve.
        let (twice, _) = Inventory::from_updates(vec![
            enter(host_content(vec![pg("pg", 10)])),
            enter(host_content(vec![pg("pg", 20)])),
        ]);
        assert!(net(&twice).is_none());
        assert!(twice.facts().rejected[0].why.contains("returned twice"), "{:?}", twice.facts().rejected);
        // A change made while the pages were read applies after the enters, whatever its page.
        let modify = ObjectUpdate {
            kind: UpdateKind::Modify,
            obj: MoRef::new(HOST, "host-1"),
            changes: vec![PropertyChange {
                name: "config.network.portgroup".into(),
                op: ChangeOp::Assign,
                val: Some(Value::Portgroups(vec![pg("pg", 30)])),
            }],
            missing: vec![],
        };
        let (changed, refetch) = Inventory::from_updates(vec![modify, enter(host_content(vec![pg("pg", 10)]))]);
        assert!(refetch.is_empty());
        assert_eq!(net(&changed).unwrap().vlan.to_string(), "vlan 30");
        let leave =
            ObjectUpdate { kind: UpdateKind::Leave, obj: MoRef::new(HOST, "host-1"), changes: vec![], missing: vec![] };
        let (left, _) = Inventory::from_updates(vec![enter(host_content(vec![pg("pg", 10)])), leave]);
        assert!(left.facts().facts.is_empty(), "{:?}", left.facts());
        // A change to a path the mirror does not keep is re-read whole.
        let odd = ObjectUpdate {
            kind: UpdateKind::Modify,
            obj: MoRef::new(HOST, "host-1"),
            changes: vec![PropertyChange {
                name: "config.network.portgroup[\"pg\"]".into(),
                op: ChangeOp::Remove,
                val: None,
            }],
            missing: vec![],
        };
        let (_, refetch) = Inventory::from_updates(vec![enter(host_content(vec![pg("pg", 10)])), odd]);
        assert_eq!(refetch.into_iter().collect::<Vec<_>>(), vec![MoRef::new(HOST, "host-1")]);
    }

    #[test]
    fn a_property_given_twice_with_different_values_rejects_the_object() {
        let mut c = host_content(vec![pg("pg", 10)]);
        c.props.push(("config.network.portgroup".into(), Value::Portgroups(vec![pg("pg", 20)])));
        let inv = Inventory::from_contents(vec![c]);
        assert!(inv.facts().facts.is_empty());
        assert!(inv.facts().rejected[0].why.contains("property `config.network.portgroup` returned twice"));
    }

    #[test]
    fn standard_vlan_ids_map_to_specs() {
        assert_eq!(net(&host_with(0)).unwrap().vlan, VlanSpec::Untagged);
        assert_eq!(net(&host_with(120)).unwrap().vlan.to_string(), "vlan 120");
        assert_eq!(net(&host_with(4095)).unwrap().vlan.to_string(), "trunk 1-4094");
        let n = net(&host_with(120)).unwrap();
        assert_eq!(n.uplinks, vec!["vmnic0".to_string()], "pnic keys resolve to device names");
    }

    #[test]
    fn out_of_range_vlan_is_rejected_not_panicking() {
        let inv = host_with(5000);
        let m = inv.facts();
        assert!(net(&inv).is_none());
        assert_eq!(m.rejected.len(), 1);
        assert!(m.rejected[0].what.contains("pg") && m.rejected[0].why.contains("5000"), "{:?}", m.rejected);
    }

    #[test]
    fn cdp_wins_over_lldp_and_lldp_is_used_alone() {
        let mut inv = host_with(0);
        let lldp = LldpInfo {
            chassis_id: None,
            port_id: Some("eth2".into()),
            parameters: vec![("System Name".into(), "tor2".into())],
        };
        inv.set_hints("host-1", vec![PnicHint { device: "vmnic0".into(), cdp: None, lldp: Some(lldp.clone()) }]);
        let up = |inv: &Inventory| {
            inv.facts()
                .facts
                .values()
                .find_map(|f| match f {
                    Fact::Uplink(u) => Some(u.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(up(&inv).port.unwrap().to_string(), "tor2:eth2");
        assert_eq!(up(&inv).source, Some(NeighbourSource::Lldp));
        let cdp = CdpInfo { dev_id: Some("tor1".into()), port_id: Some("eth1".into()), system_name: None };
        inv.set_hints("host-1", vec![PnicHint { device: "vmnic0".into(), cdp: Some(cdp), lldp: Some(lldp) }]);
        assert_eq!(up(&inv).port.unwrap().to_string(), "tor1:eth1");
        assert_eq!(up(&inv).source, Some(NeighbourSource::Cdp));
    }

    fn dvs_world(dvs_props: Vec<(String, Value)>) -> Inventory {
        let dvpg = |id: &str, vlan: DvsVlan| ObjectContent {
            obj: MoRef::new(DVPG, id),
            props: vec![
                ("key".into(), Value::Str(id.into())),
                ("name".into(), Value::Str(format!("pg-{id}"))),
                ("config.distributedVirtualSwitch".into(), Value::MoRef(MoRef::new(DVS, "dvs-1"))),
                ("config.defaultPortConfig.vlan".into(), Value::Vlan(vlan)),
            ],
            missing: vec![],
        };
        let mut props = vec![("uuid".to_string(), Value::Str("u-1".into()))];
        props.extend(dvs_props);
        Inventory::from_contents(vec![
            host_content(vec![]),
            ObjectContent { obj: MoRef::new(HOST, "host-2"), props: vec![], missing: vec![] },
            ObjectContent { obj: MoRef::new(DVS, "dvs-1"), props, missing: vec![] },
            dvpg("dvportgroup-1", DvsVlan::Trunk(vec![(0, 4094)])),
            dvpg("dvportgroup-2", DvsVlan::Id(120)),
        ])
    }

    fn dv_networks(inv: &Inventory) -> Vec<(CompactString, CompactString, Vec<CompactString>)> {
        inv.facts()
            .facts
            .values()
            .filter_map(|f| match f {
                Fact::Network(n) if n.network.starts_with("dvportgroup") => {
                    Some((n.host.clone(), n.network.clone(), n.uplinks.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn dv_port_groups_map_to_the_members_the_switch_names_and_never_to_its_uplink_group() {
        use crate::vsphere::codec::DvsMember;
        let uplink_group =
            ("config.uplinkPortgroup".to_string(), Value::MoRefs(vec![MoRef::new(DVPG, "dvportgroup-1")]));
        // config.host names the member and its uplink pNICs; a host not in the mirror is left out.
        let members = Value::DvsMembers(vec![
            DvsMember { host: MoRef::new(HOST, "host-1"), pnic_devices: vec!["vmnic0".into()] },
            DvsMember { host: MoRef::new(HOST, "host-9"), pnic_devices: vec!["vmnic0".into()] },
        ]);
        let inv = dvs_world(vec![uplink_group.clone(), ("config.host".into(), members)]);
        assert_eq!(dv_networks(&inv), vec![("host-1".into(), "dvportgroup-2".into(), vec!["vmnic0".into()])]);
        // summary.hostMember alone (what vcsim serves): members with uplinks unknown.
        let summary = Value::MoRefs(vec![MoRef::new(HOST, "host-1"), MoRef::new(HOST, "host-2")]);
        let inv = dvs_world(vec![uplink_group, ("summary.hostMember".into(), summary.clone())]);
        assert_eq!(
            dv_networks(&inv),
            vec![("host-1".into(), "dvportgroup-2".into(), vec![]), ("host-2".into(), "dvportgroup-2".into(), vec![])]
        );
        // Without config.uplinkPortgroup the trunk group is a network like any other.
        let inv = dvs_world(vec![("summary.hostMember".into(), summary)]);
        assert_eq!(dv_networks(&inv).len(), 4);
        // A port group whose switch was not read is rejected, not dropped.
        let mut inv = dvs_world(vec![]);
        inv.apply_update(&update(UpdateKind::Leave, MoRef::new(DVS, "dvs-1"), &[]));
        let r = inv.facts().rejected;
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].why.contains("DistributedVirtualSwitch:dvs-1") && r[0].why.contains("not in the inventory"));
    }

    #[test]
    fn trunk_and_pvlan_specs() {
        assert_eq!(dvs_vlan(&DvsVlan::Trunk(vec![(0, 4094)])).unwrap().to_string(), "trunk 1-4094");
        assert_eq!(dvs_vlan(&DvsVlan::Trunk(vec![(100, 199), (300, 300)])).unwrap().to_string(), "trunk 100-199,300");
        assert!(dvs_vlan(&DvsVlan::Pvlan(12)).unwrap_err().contains("not supported"));
        assert!(dvs_vlan(&DvsVlan::Trunk(vec![(10, 5000)])).is_err());
        assert!(dvs_vlan(&DvsVlan::Id(4095)).is_err());
    }

    fn update(kind: UpdateKind, obj: MoRef, props: &[(&str, Value)]) -> ObjectUpdate {
        use crate::vsphere::codec::PropertyChange;
        let changes = props
            .iter()
            .map(|(n, v)| PropertyChange { name: n.to_string(), op: ChangeOp::Assign, val: Some(v.clone()) })
            .collect();
        ObjectUpdate { kind, obj, changes, missing: vec![] }
    }

    fn vm_props(name: &str, host: &str) -> Vec<(&'static str, Value)> {
        use crate::vsphere::codec::EthernetCard;
        let nic = EthernetCard {
            key: 4000,
            device_type: "VirtualVmxnet3".into(),
            mac: Some("00:50:56:00:00:01".into()),
            connected: true,
            backing: Backing::Network { name: "pg".into() },
        };
        vec![
            ("name", Value::Str(name.into())),
            ("runtime.host", Value::MoRef(MoRef::new(HOST, host))),
            ("runtime.powerState", Value::Str("poweredOn".into())),
            ("config.hardware.device", Value::Nics(vec![nic])),
        ]
    }

    #[test]
    fn mapper_sync_gives_exactly_the_diff_of_the_whole_mirror() {
        let mut inv = host_with(10);
        let vm = MoRef::new(VM, "vm-1");
        inv.apply_update(&update(UpdateKind::Enter, vm.clone(), &vm_props("web", "host-1")));
        let mut mapper = Mapper::default();
        let (first, rejected) = mapper.sync(&mut inv);
        assert!(rejected.is_empty());
        assert_eq!(first, diff(&BTreeMap::new(), &inv.facts().facts), "first sync maps everything");
        assert_eq!(mapper.all(), inv.facts());

        // Each step: the synced changes equal the diff of the full mapping before and after.
        let steps: Vec<fn(&mut Inventory)> = vec![
            |inv| {
                inv.apply_update(&update(UpdateKind::Modify, MoRef::new(VM, "vm-1"), &vm_props("web2", "host-1")));
            },
            |inv| {
                let lldp = LldpInfo {
                    chassis_id: None,
                    port_id: Some("eth9".into()),
                    parameters: vec![("System Name".into(), "tor2".into())],
                };
                inv.set_hints("host-1", vec![PnicHint { device: "vmnic0".into(), cdp: None, lldp: Some(lldp) }]);
            },
            |inv| {
                let pg = PortGroup { name: "pg".into(), vlan_id: 5000, vswitch_name: "vSwitch0".into() };
                inv.apply_update(&update(
                    UpdateKind::Modify,
                    MoRef::new(HOST, "host-1"),
                    &[("config.network.portgroup", Value::Portgroups(vec![pg]))],
                ));
            },
            |inv| {
                inv.apply_update(&update(UpdateKind::Leave, MoRef::new(VM, "vm-1"), &[]));
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            let before = inv.facts();
            step(&mut inv);
            let after = inv.facts();
            let (changes, rejected) = mapper.sync(&mut inv);
            assert_eq!(changes, diff(&before.facts, &after.facts), "step {i}");
            let new: Vec<Rejected> = after.rejected.iter().filter(|r| !before.rejected.contains(r)).cloned().collect();
            assert_eq!(rejected, new, "step {i}");
            assert_eq!(mapper.all(), after, "step {i}");
        }
    }

    #[test]
    fn an_enter_resending_identical_properties_maps_nothing() {
        let mut inv = Inventory::default();
        let vm = MoRef::new(VM, "vm-1");
        inv.apply_update(&update(UpdateKind::Enter, vm.clone(), &vm_props("web", "host-1")));
        let mut mapper = Mapper::default();
        assert_eq!(mapper.sync(&mut inv).0.len(), 1);
        inv.apply_update(&update(UpdateKind::Enter, vm.clone(), &vm_props("web", "host-1")));
        assert!(inv.dirty.is_empty(), "identical enter leaves the object clean");
        assert_eq!(mapper.sync(&mut inv), (vec![], vec![]));
        inv.apply_update(&update(UpdateKind::Enter, vm, &vm_props("web", "host-2")));
        let (c, _) = mapper.sync(&mut inv);
        assert!(matches!(c.as_slice(), [Change::Upsert(Fact::Vnic(v))] if v.host == "host-2"), "{c:?}");
    }

    #[test]
    fn diff_reports_exactly_the_changed_facts() {
        let a = host_with(10).facts().facts;
        let b = host_with(11).facts().facts;
        let d = diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0], Change::Upsert(Fact::Network(n)) if n.vlan.to_string() == "vlan 11"));
        assert!(diff(&a, &a).is_empty());
        let gone = diff(&a, &BTreeMap::new());
        assert!(gone.iter().all(|c| matches!(c, Change::Remove(_))));
        assert_eq!(gone.len(), a.len());
    }
}
