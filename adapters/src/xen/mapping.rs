//! XenAPI records → netfold facts. Pure: no IO, no clock.
//!
//! [`Mirror`] holds the pool's objects of the eight classes the adapter reads (pool, host, VM,
//! VIF, network, PIF, VLAN, PIF_metrics), filled from `get_all_records` and kept current by
//! `event.from`; [`Mirror::facts`] maps the whole mirror to facts, and [`engine::fact::diff`] turns two fact
//! sets into the exact changes (the fact-level delta).
//!
//! The mapping:
//! - `HostFact { host: host.uuid, name: host.name_label }`.
//! - `UplinkFact` per physical PIF (`physical = true`): `nic = device`, `mac = MAC`. No XenServer
//!   release reports a NIC's LLDP neighbour through XenAPI, so the port is normally `None` and the
//!   engine ties the PIF by its MAC through the switch's MAC table or LLDP table
//!   (`engine::discovery`, ADR 0011). Optionally, a netfold convention an operator's script may
//!   fill: the PIF's `PIF_metrics.other_config` keys [`LLDP_SYSTEM_NAME`] and [`LLDP_PORT_ID`],
//!   when both are set, give the port (source `Lldp`, ahead of the switch's sources).
//! - `NetworkFact` per (host, network) where the host has a PIF on the network: a VLAN PIF
//!   (`VLAN >= 0`) → its `VLAN_master_of` VLAN record → `Access(tag)`, uplink = the
//!   `tagged_PIF`'s device; any other PIF → `Untagged`, uplink = its own device.
//! - `VnicFact` per VIF of a VM that is not a template, snapshot or control domain: `nic` = VIF
//!   device, `host` = `resident_on`'s uuid (`affinity`'s when halted, empty if neither),
//!   `connected = currently_attached`, `powered_on = power_state == Running`.
//! - A tag of 0 or ≥ 4095, a missing field or a dangling reference → [`Rejected`]; the rest of
//!   the pool is still mapped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use engine::fact::diff;
use engine::{
    Change, Fact, FactKey, HostFact, NeighbourSource, NetworkFact, Rejected, SwitchPort, UplinkFact, VlanId, VlanSpec,
    VnicFact,
};

use super::client::{Operation, XenEvent};
use super::codec::Value;

/// `PIF_metrics.other_config` key holding the LLDP neighbour's system name (the switch): an
/// optional netfold convention, not xapi's (see the module docs).
pub const LLDP_SYSTEM_NAME: &str = "lldp_neighbor_system_name";
/// `PIF_metrics.other_config` key holding the LLDP neighbour's port id (`ethernet1/1/3`).
pub const LLDP_PORT_ID: &str = "lldp_neighbor_port_id";

/// The classes read with `get_all_records` and followed with `event.from`.
pub const CLASSES: [&str; 8] = ["pool", "host", "VM", "VIF", "network", "PIF", "VLAN", "PIF_metrics"];

/// The null reference.
pub const NULL_REF: &str = "OpaqueRef:NULL";

#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub uuid: String,
    pub name_label: String,
    /// The management address (`host.address`): where a `HOST_IS_SLAVE` redirect may lead.
    pub address: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    pub uuid: String,
    pub name_label: String,
    pub power_state: String,
    pub resident_on: String,
    pub affinity: String,
    pub is_a_template: bool,
    pub is_a_snapshot: bool,
    pub is_control_domain: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vif {
    pub uuid: String,
    pub device: String,
    pub mac: String,
    pub vm: String,
    pub network: String,
    pub currently_attached: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub uuid: String,
    pub name_label: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pif {
    pub uuid: String,
    pub device: String,
    pub mac: String,
    pub host: String,
    pub network: String,
    pub vlan: i64,
    pub vlan_master_of: String,
    pub physical: bool,
    pub metrics: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vlan {
    pub uuid: String,
    pub tag: i64,
    pub tagged_pif: String,
    pub untagged_pif: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PifMetrics {
    pub other_config: BTreeMap<String, String>,
}

/// Reads a record's fields, naming the record in every error.
struct Fields<'a> {
    class: &'a str,
    reference: &'a str,
    rec: &'a Value,
}

impl<'a> Fields<'a> {
    fn new(class: &'a str, reference: &'a str, rec: &'a Value) -> Result<Self, Rejected> {
        let f = Self { class, reference, rec };
        if rec.as_struct().is_none() {
            return Err(f.reject("the record is not a struct"));
        }
        Ok(f)
    }

    fn reject(&self, why: impl Into<String>) -> Rejected {
        Rejected { what: format!("{} {}", self.class, self.reference), why: why.into() }
    }

    fn str(&self, name: &str) -> Result<String, Rejected> {
        self.rec
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.reject(format!("field `{name}` is missing or not a string")))
    }

    fn str_or(&self, name: &str, default: &str) -> String {
        self.rec.get(name).and_then(Value::as_str).unwrap_or(default).to_string()
    }

    fn bool(&self, name: &str) -> Result<bool, Rejected> {
        self.rec
            .get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.reject(format!("field `{name}` is missing or not a boolean")))
    }

    fn int(&self, name: &str) -> Result<i64, Rejected> {
        self.rec
            .get(name)
            .and_then(Value::as_int)
            .ok_or_else(|| self.reject(format!("field `{name}` is missing or not an integer")))
    }

    fn string_map(&self, name: &str) -> BTreeMap<String, String> {
        self.rec
            .get(name)
            .and_then(Value::as_struct)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
            .unwrap_or_default()
    }
}

/// The adapter's copy of the pool, keyed by opaque ref.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    pub hosts: HashMap<String, Host>,
    pub vms: HashMap<String, Vm>,
    pub vifs: HashMap<String, Vif>,
    pub networks: HashMap<String, Network>,
    pub pifs: HashMap<String, Pif>,
    pub vlans: HashMap<String, Vlan>,
    pub metrics: HashMap<String, PifMetrics>,
    /// The pool's master host ref (from `pool.get_all_records`).
    pub master: Option<String>,
    /// Which parts of the fact set the records changed since [`Mirror::take_dirty`].
    dirty: Parts,
}

/// The three parts of the fact set, each derived from a few classes: hosts (host), links
/// (host, network, PIF, VLAN, PIF_metrics → uplinks and networks), vnics (host, VM, VIF,
/// network). A record change marks only the parts that read it, and only when a field the
/// mapping reads changed (a VM's `VIFs` set growing marks nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub hosts: bool,
    pub links: bool,
    pub vnics: bool,
}

impl Parts {
    pub const ALL: Parts = Parts { hosts: true, links: true, vnics: true };

    fn of(class: &str) -> Parts {
        match class {
            "host" => Parts::ALL,
            "vm" | "vif" => Parts { vnics: true, ..Parts::default() },
            "network" => Parts { links: true, vnics: true, ..Parts::default() },
            "pif" | "vlan" | "pif_metrics" => Parts { links: true, ..Parts::default() },
            _ => Parts::default(),
        }
    }

    fn add(&mut self, o: Parts) {
        self.hosts |= o.hosts;
        self.links |= o.links;
        self.vnics |= o.vnics;
    }

    pub fn any(&self) -> bool {
        self.hosts || self.links || self.vnics
    }
}

/// Stores `v` under `r`; true when that changed anything.
fn put<T: PartialEq>(map: &mut HashMap<String, T>, r: String, v: T) -> bool {
    match map.get(&r) {
        Some(old) if *old == v => false,
        _ => {
            map.insert(r, v);
            true
        }
    }
}

impl Mirror {
    /// Stores (or replaces) one record. `class` is matched case-insensitively (event records
    /// name classes in lower case). Unknown classes are ignored.
    ///
    /// A record that does not have the shape of xapi's data model (not a struct, a field
    /// missing or of the wrong type) is an error and changes nothing: the caller treats the
    /// read as failed, never as the object's deletion.
    pub fn upsert(&mut self, class: &str, reference: &str, rec: &Value) -> Result<(), Rejected> {
        self.read(&class.to_ascii_lowercase(), reference, rec)
    }

    fn read(&mut self, class: &str, r: &str, rec: &Value) -> Result<(), Rejected> {
        let f = Fields::new(class, r, rec)?;
        let r = r.to_string();
        let changed = match class {
            "pool" => {
                self.master = Some(f.str("master")?);
                false
            }
            "host" => put(
                &mut self.hosts,
                r,
                Host { uuid: f.str("uuid")?, name_label: f.str("name_label")?, address: f.str_or("address", "") },
            ),
            "vm" => put(
                &mut self.vms,
                r,
                Vm {
                    uuid: f.str("uuid")?,
                    name_label: f.str("name_label")?,
                    power_state: f.str("power_state")?,
                    resident_on: f.str_or("resident_on", NULL_REF),
                    affinity: f.str_or("affinity", NULL_REF),
                    is_a_template: f.bool("is_a_template")?,
                    is_a_snapshot: f.bool("is_a_snapshot").unwrap_or(false),
                    is_control_domain: f.bool("is_control_domain")?,
                },
            ),
            "vif" => put(
                &mut self.vifs,
                r,
                Vif {
                    uuid: f.str("uuid")?,
                    device: f.str("device")?,
                    mac: f.str("MAC")?,
                    vm: f.str("VM")?,
                    network: f.str("network")?,
                    currently_attached: f.bool("currently_attached")?,
                },
            ),
            "network" => put(&mut self.networks, r, Network { uuid: f.str("uuid")?, name_label: f.str("name_label")? }),
            "pif" => put(
                &mut self.pifs,
                r,
                Pif {
                    uuid: f.str("uuid")?,
                    device: f.str("device")?,
                    mac: f.str("MAC")?,
                    host: f.str("host")?,
                    network: f.str("network")?,
                    vlan: f.int("VLAN")?,
                    vlan_master_of: f.str_or("VLAN_master_of", NULL_REF),
                    physical: f.bool("physical")?,
                    metrics: f.str_or("metrics", NULL_REF),
                },
            ),
            "vlan" => put(
                &mut self.vlans,
                r,
                Vlan {
                    uuid: f.str("uuid")?,
                    tag: f.int("tag")?,
                    tagged_pif: f.str("tagged_PIF")?,
                    untagged_pif: f.str("untagged_PIF")?,
                },
            ),
            "pif_metrics" => put(&mut self.metrics, r, PifMetrics { other_config: f.string_map("other_config") }),
            _ => false,
        };
        if changed {
            self.dirty.add(Parts::of(class));
        }
        Ok(())
    }

    /// The `address` of every pool member read (the redirect trust of [`super::redirect`]).
    pub fn addresses(&self) -> Vec<String> {
        self.hosts.values().map(|h| h.address.clone()).filter(|a| !a.is_empty()).collect()
    }

    /// The parts changed since the last call, and resets them.
    pub fn take_dirty(&mut self) -> Parts {
        std::mem::take(&mut self.dirty)
    }

    /// Forgets one record.
    pub fn remove(&mut self, class: &str, reference: &str) {
        let class = class.to_ascii_lowercase();
        let removed = match class.as_str() {
            "host" => self.hosts.remove(reference).is_some(),
            "vm" => self.vms.remove(reference).is_some(),
            "vif" => self.vifs.remove(reference).is_some(),
            "network" => self.networks.remove(reference).is_some(),
            "pif" => self.pifs.remove(reference).is_some(),
            "vlan" => self.vlans.remove(reference).is_some(),
            "pif_metrics" => self.metrics.remove(reference).is_some(),
            _ => false,
        };
        if removed {
            self.dirty.add(Parts::of(&class));
        }
    }

    /// Applies one `event.from` event.
    /// Applies one `event.from` event; a snapshot that does not read is an error (see
    /// [`Mirror::upsert`]).
    pub fn apply(&mut self, e: &XenEvent) -> Result<(), Rejected> {
        match (e.operation, &e.snapshot) {
            (Operation::Del, _) => {
                self.remove(&e.class, &e.reference);
                Ok(())
            }
            (_, Some(snap)) => self.upsert(&e.class, &e.reference, snap),
            // add/mod without a snapshot carries nothing to store.
            (_, None) => Ok(()),
        }
    }

    fn host_uuid(&self, r: &str) -> Option<&str> {
        self.hosts.get(r).map(|h| h.uuid.as_str())
    }

    /// Maps the whole mirror to facts (keyed, so the result is deterministic) and rejections.
    pub fn facts(&self) -> (BTreeMap<FactKey, Fact>, Vec<Rejected>) {
        let mut facts = BTreeMap::new();
        let mut rejected: Vec<Rejected> = Vec::new();
        for part in [Part::Hosts, Part::Links, Part::Vnics] {
            self.part(part, &mut facts, &mut rejected);
        }
        rejected.sort_by(|a, b| (&a.what, &a.why).cmp(&(&b.what, &b.why)));
        (facts, rejected)
    }

    /// Maps one part of the mirror.
    pub fn part(&self, part: Part, facts: &mut BTreeMap<FactKey, Fact>, rejected: &mut Vec<Rejected>) {
        let mut put = |f: Fact| {
            facts.insert(f.key(), f);
        };
        match part {
            Part::Hosts => {
                for h in self.hosts.values() {
                    put(Fact::Host(HostFact { host: h.uuid.as_str().into(), name: h.name_label.as_str().into() }));
                }
            }
            Part::Links => self.links(&mut put, rejected),
            Part::Vnics => self.vnics(&mut put, rejected),
        }
    }

    fn links(&self, put: &mut impl FnMut(Fact), rejected: &mut Vec<Rejected>) {
        for (pref, pif) in &self.pifs {
            let Some(host) = self.host_uuid(&pif.host) else {
                rejected
                    .push(Rejected { what: format!("PIF {}", pif.uuid), why: format!("host {} is unknown", pif.host) });
                continue;
            };
            if pif.physical {
                let port = self.metrics.get(&pif.metrics).and_then(|m| {
                    let sw = m.other_config.get(LLDP_SYSTEM_NAME)?;
                    let port = m.other_config.get(LLDP_PORT_ID)?;
                    SwitchPort::new(sw.clone(), port.clone()).ok()
                });
                put(Fact::Uplink(UplinkFact {
                    host: host.into(),
                    nic: pif.device.as_str().into(),
                    mac: (!pif.mac.is_empty()).then(|| pif.mac.as_str().into()),
                    source: port.as_ref().map(|_| NeighbourSource::Lldp),
                    port,
                }));
            }
            let Some(net) = self.networks.get(&pif.network) else {
                rejected.push(Rejected {
                    what: format!("PIF {} ({}) on host {host}", pif.uuid, pif.device),
                    why: format!("network {} is unknown", pif.network),
                });
                continue;
            };
            let (vlan, uplink) = if pif.vlan >= 0 {
                let Some(v) = self.vlans.get(&pif.vlan_master_of) else {
                    rejected.push(Rejected {
                        what: format!("network \"{}\" ({}) on host {host}", net.name_label, net.uuid),
                        why: format!("VLAN PIF {pref} names VLAN {} which is unknown", pif.vlan_master_of),
                    });
                    continue;
                };
                let tag = match VlanId::from_int(v.tag) {
                    Ok(t) => t,
                    Err(e) => {
                        rejected.push(Rejected {
                            what: format!("network \"{}\" ({}) on host {host}", net.name_label, net.uuid),
                            why: e.to_string(),
                        });
                        continue;
                    }
                };
                let uplink = self.pifs.get(&v.tagged_pif).map_or_else(|| pif.device.clone(), |p| p.device.clone());
                (VlanSpec::Access(tag), uplink)
            } else {
                (VlanSpec::Untagged, pif.device.clone())
            };
            put(Fact::Network(NetworkFact {
                host: host.into(),
                network: net.uuid.as_str().into(),
                name: net.name_label.as_str().into(),
                vlan,
                uplinks: vec![uplink.into()],
            }));
        }
    }

    fn vnics(&self, put: &mut impl FnMut(Fact), rejected: &mut Vec<Rejected>) {
        for vif in self.vifs.values() {
            let Some(vm) = self.vms.get(&vif.vm) else {
                rejected.push(Rejected { what: format!("VIF {}", vif.uuid), why: format!("VM {} is unknown", vif.vm) });
                continue;
            };
            if vm.is_a_template || vm.is_a_snapshot || vm.is_control_domain {
                continue;
            }
            let Some(net) = self.networks.get(&vif.network) else {
                rejected.push(Rejected {
                    what: format!("VIF {} of VM \"{}\" ({})", vif.device, vm.name_label, vm.uuid),
                    why: format!("network {} is unknown", vif.network),
                });
                continue;
            };
            let host = self.host_uuid(&vm.resident_on).or_else(|| self.host_uuid(&vm.affinity)).unwrap_or_default();
            put(Fact::Vnic(VnicFact {
                vm: vm.uuid.as_str().into(),
                vm_name: vm.name_label.as_str().into(),
                nic: vif.device.as_str().into(),
                mac: vif.mac.as_str().into(),
                host: host.into(),
                network: net.uuid.as_str().into(),
                connected: vif.currently_attached,
                powered_on: vm.power_state == "Running",
            }));
        }
    }
}

/// One of the three parts of the fact set (see [`Parts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Hosts,
    Links,
    Vnics,
}

/// The fact set kept part by part, so an event batch re-maps only the parts it touched and
/// diffs only those.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    parts: [BTreeMap<FactKey, Fact>; 3],
    rejected: [Vec<Rejected>; 3],
}

impl Facts {
    /// Maps every part of `m` (and clears its dirty marks).
    pub fn full(m: &mut Mirror) -> Self {
        let mut f = Facts::default();
        f.refresh(m, Parts::ALL);
        m.take_dirty();
        f
    }

    /// Re-maps the parts `m` marks dirty; returns the changes and the rejections not reported
    /// before.
    pub fn update(&mut self, m: &mut Mirror) -> (Vec<Change>, Vec<Rejected>) {
        let dirty = m.take_dirty();
        let before = self.rejected();
        let changes = self.refresh(m, dirty);
        (changes, new_rejections(&before, &self.rejected()))
    }

    fn refresh(&mut self, m: &Mirror, dirty: Parts) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, (part, is_dirty)) in
            [(Part::Hosts, dirty.hosts), (Part::Links, dirty.links), (Part::Vnics, dirty.vnics)].into_iter().enumerate()
        {
            if !is_dirty {
                continue;
            }
            let mut facts = BTreeMap::new();
            let mut rejected = Vec::new();
            m.part(part, &mut facts, &mut rejected);
            changes.extend(diff(&self.parts[i], &facts));
            self.parts[i] = facts;
            self.rejected[i] = rejected;
        }
        changes
    }

    /// Every fact, in key order within each part.
    pub fn all(&self) -> impl Iterator<Item = &Fact> {
        self.parts.iter().flat_map(|p| p.values())
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every current rejection, sorted.
    pub fn rejected(&self) -> Vec<Rejected> {
        let mut r: Vec<Rejected> = self.rejected.iter().flatten().cloned().collect();
        r.sort_by(|a, b| (&a.what, &a.why).cmp(&(&b.what, &b.why)));
        r
    }
}

/// Rejections in `new` that were not already reported in `old`.
pub fn new_rejections(old: &[Rejected], new: &[Rejected]) -> Vec<Rejected> {
    let seen: BTreeSet<(&str, &str)> = old.iter().map(|r| (r.what.as_str(), r.why.as_str())).collect();
    new.iter().filter(|r| !seen.contains(&(r.what.as_str(), r.why.as_str()))).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: &[(&str, Value)]) -> Value {
        Value::Struct(fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn s(v: &str) -> Value {
        Value::str(v)
    }

    /// One host, eth0 physical with LLDP, VLAN 120 on eth0, a VM on it, a template and dom0.
    fn pool(tag: &str) -> Mirror {
        let mut m = Mirror::default();
        m.upsert("host", "H", &rec(&[("uuid", s("h-uuid")), ("name_label", s("xen-01"))])).unwrap();
        m.upsert(
            "network",
            "N0",
            &rec(&[("uuid", s("n0")), ("name_label", s("Pool-wide network associated with eth0"))]),
        )
        .unwrap();
        m.upsert("network", "N120", &rec(&[("uuid", s("n120")), ("name_label", s("VLAN 120"))])).unwrap();
        let mut oc = BTreeMap::new();
        oc.insert(LLDP_SYSTEM_NAME.to_string(), s("tor1"));
        oc.insert(LLDP_PORT_ID.to_string(), s("ethernet1/1/3"));
        m.upsert("PIF_metrics", "M0", &rec(&[("other_config", Value::Struct(oc))])).unwrap();
        let pif = |dev: &str, net: &str, vlan: &str, master: &str, phys: bool, metrics: &str| {
            rec(&[
                ("uuid", s(&format!("pif-{net}"))),
                ("device", s(dev)),
                ("MAC", s(if phys { "00:11:22:33:44:55" } else { "" })),
                ("host", s("H")),
                ("network", s(net)),
                ("VLAN", s(vlan)),
                ("VLAN_master_of", s(master)),
                ("physical", Value::Bool(phys)),
                ("metrics", s(metrics)),
            ])
        };
        m.upsert("PIF", "P0", &pif("eth0", "N0", "-1", NULL_REF, true, "M0")).unwrap();
        m.upsert("PIF", "P120", &pif("eth0", "N120", tag, "V120", false, NULL_REF)).unwrap();
        m.upsert(
            "VLAN",
            "V120",
            &rec(&[("uuid", s("v120")), ("tag", s(tag)), ("tagged_PIF", s("P0")), ("untagged_PIF", s("P120"))]),
        )
        .unwrap();
        let vm = |uuid: &str, tmpl: bool, dom0: bool| {
            rec(&[
                ("uuid", s(uuid)),
                ("name_label", s(uuid)),
                ("power_state", s("Running")),
                ("resident_on", s("H")),
                ("is_a_template", Value::Bool(tmpl)),
                ("is_control_domain", Value::Bool(dom0)),
            ])
        };
        m.upsert("VM", "VM1", &vm("web-1", false, false)).unwrap();
        m.upsert("VM", "T", &vm("template", true, false)).unwrap();
        m.upsert("VM", "D0", &vm("dom0", false, true)).unwrap();
        for (r, vmr) in [("VIF1", "VM1"), ("VIFT", "T"), ("VIFD", "D0")] {
            m.upsert(
                "VIF",
                r,
                &rec(&[
                    ("uuid", s(r)),
                    ("device", s("0")),
                    ("MAC", s("aa:bb:cc:00:00:01")),
                    ("VM", s(vmr)),
                    ("network", s("N120")),
                    ("currently_attached", Value::Bool(true)),
                ]),
            )
            .unwrap();
        }
        m
    }

    #[test]
    fn vlan_pif_maps_to_access_vlan_on_the_tagged_device() {
        let (facts, rejected) = pool("120").facts();
        assert!(rejected.is_empty(), "{rejected:?}");
        let net = &facts[&FactKey::Network { host: "h-uuid".into(), network: "n120".into() }];
        let Fact::Network(n) = net else { panic!() };
        assert_eq!(n.vlan, VlanSpec::Access(VlanId::new(120).unwrap()));
        assert_eq!(n.uplinks, vec!["eth0".to_string()]);
        let Fact::Network(u) = &facts[&FactKey::Network { host: "h-uuid".into(), network: "n0".into() }] else {
            panic!()
        };
        assert_eq!(u.vlan, VlanSpec::Untagged);
    }

    #[test]
    fn uplink_port_comes_from_lldp_keys() {
        let (facts, _) = pool("120").facts();
        let Fact::Uplink(u) = &facts[&FactKey::Uplink { host: "h-uuid".into(), nic: "eth0".into() }] else { panic!() };
        assert_eq!(u.port, Some(SwitchPort::new("tor1", "ethernet1/1/3").unwrap()));
        assert_eq!(u.source, Some(NeighbourSource::Lldp));
        assert_eq!(u.mac.as_deref(), Some("00:11:22:33:44:55"));
        // Only physical PIFs are uplinks.
        assert_eq!(facts.keys().filter(|k| matches!(k, FactKey::Uplink { .. })).count(), 1);
    }

    #[test]
    fn templates_and_control_domains_have_no_vnics() {
        let (facts, _) = pool("120").facts();
        let vnics: Vec<_> = facts.values().filter_map(|f| if let Fact::Vnic(v) = f { Some(v) } else { None }).collect();
        assert_eq!(vnics.len(), 1);
        assert_eq!(vnics[0].vm, "web-1");
        assert_eq!(vnics[0].host, "h-uuid");
        assert!(vnics[0].connected && vnics[0].powered_on);
    }

    #[test]
    fn bad_tags_are_rejected_and_the_rest_is_kept() {
        for tag in ["0", "4095", "70000"] {
            let (facts, rejected) = pool(tag).facts();
            assert_eq!(rejected.len(), 1, "{tag}");
            assert!(rejected[0].what.contains("VLAN 120") && rejected[0].why.contains("out of range"), "{rejected:?}");
            assert!(!facts.contains_key(&FactKey::Network { host: "h-uuid".into(), network: "n120".into() }));
            assert!(facts.contains_key(&FactKey::Host { host: "h-uuid".into() }));
        }
    }

    #[test]
    fn a_record_missing_fields_is_an_error_naming_it_and_changes_nothing() {
        let mut m = pool("120");
        let before = m.facts();
        let e = m.upsert("VIF", "VIF1", &rec(&[("uuid", s("x"))])).unwrap_err();
        assert!(e.what == "vif VIF1" && e.why.contains("device"), "{e:?}");
        assert_eq!(m.facts(), before, "the VIF is kept, not taken for deleted");
    }

    #[test]
    fn diff_is_exact() {
        let before = pool("120").facts().0;
        let mut m = pool("120");
        m.apply(&XenEvent {
            class: "vif".into(),
            operation: Operation::Mod,
            reference: "VIF1".into(),
            snapshot: Some(rec(&[
                ("uuid", s("VIF1")),
                ("device", s("0")),
                ("MAC", s("aa:bb:cc:00:00:01")),
                ("VM", s("VM1")),
                ("network", s("N120")),
                ("currently_attached", Value::Bool(false)),
            ])),
        })
        .unwrap();
        let changes = diff(&before, &m.facts().0);
        assert_eq!(changes.len(), 1);
        assert!(matches!(&changes[0], Change::Upsert(Fact::Vnic(v)) if !v.connected));
        m.apply(&XenEvent { class: "vm".into(), operation: Operation::Del, reference: "VM1".into(), snapshot: None })
            .unwrap();
        m.apply(&XenEvent { class: "vif".into(), operation: Operation::Del, reference: "VIF1".into(), snapshot: None })
            .unwrap();
        let changes = diff(&before, &m.facts().0);
        assert_eq!(changes, vec![Change::Remove(FactKey::Vnic { vm: "web-1".into(), nic: "0".into() })]);
    }

    /// The events the property test draws from: every class, add/mod/del, relevant and
    /// irrelevant field changes.
    fn event(i: usize) -> XenEvent {
        let ev = |class: &str, op, r: &str, snap: Option<Value>| XenEvent {
            class: class.into(),
            operation: op,
            reference: r.into(),
            snapshot: snap,
        };
        let vif = |attached: bool, net: &str| {
            rec(&[
                ("uuid", s("VIF1")),
                ("device", s("0")),
                ("MAC", s("aa:bb:cc:00:00:01")),
                ("VM", s("VM1")),
                ("network", s(net)),
                ("currently_attached", Value::Bool(attached)),
            ])
        };
        let vm = |state: &str, vifs: usize| {
            rec(&[
                ("uuid", s("web-1")),
                ("name_label", s("web-1")),
                ("power_state", s(state)),
                ("resident_on", s("H")),
                ("is_a_template", Value::Bool(false)),
                ("is_control_domain", Value::Bool(false)),
                ("VIFs", Value::Array(vec![s("VIF1"); vifs])),
            ])
        };
        let vlan = |tag: &str| {
            rec(&[("uuid", s("v120")), ("tag", s(tag)), ("tagged_PIF", s("P0")), ("untagged_PIF", s("P120"))])
        };
        let host = |name: &str| rec(&[("uuid", s("h-uuid")), ("name_label", s(name))]);
        let mut oc = BTreeMap::new();
        oc.insert(LLDP_SYSTEM_NAME.to_string(), s("tor9"));
        oc.insert(LLDP_PORT_ID.to_string(), s("et1"));
        match i % 14 {
            0 => ev("vif", Operation::Mod, "VIF1", Some(vif(false, "N120"))),
            1 => ev("vif", Operation::Mod, "VIF1", Some(vif(true, "N0"))),
            2 => ev("vif", Operation::Del, "VIF1", None),
            3 => ev("vif", Operation::Add, "VIF1", Some(vif(true, "N120"))),
            4 => ev("vm", Operation::Mod, "VM1", Some(vm("Halted", 1))),
            5 => ev("vm", Operation::Mod, "VM1", Some(vm("Running", 3))),
            6 => ev("vm", Operation::Del, "VM1", None),
            7 => ev("vlan", Operation::Mod, "V120", Some(vlan("0"))),
            8 => ev("vlan", Operation::Mod, "V120", Some(vlan("121"))),
            9 => ev("host", Operation::Mod, "H", Some(host("xen-renamed"))),
            10 => ev("pif_metrics", Operation::Mod, "M0", Some(rec(&[("other_config", Value::Struct(oc))]))),
            11 => ev("network", Operation::Del, "N120", None),
            12 => ev("network", Operation::Add, "N120", Some(rec(&[("uuid", s("n120")), ("name_label", s("VLAN x"))]))),
            _ => ev("vif", Operation::Mod, "VIF1", Some(rec(&[("uuid", s("broken"))]))),
        }
    }

    proptest::proptest! {
        /// Re-mapping only the dirty parts gives exactly what a full re-map gives.
        #[test]
        fn incremental_facts_equal_a_full_remap(ops in proptest::collection::vec(0usize..14, 1..40)) {
            let mut m = pool("120");
            let mut inc = Facts::full(&mut m);
            let mut model: BTreeMap<FactKey, Fact> = inc.all().map(|f| (f.key(), f.clone())).collect();
            for i in ops {
                // Op 13 is a broken snapshot: an error that leaves the mirror as it was.
                let applied = m.apply(&event(i));
                proptest::prop_assert_eq!(applied.is_err(), i == 13);
                let (changes, _) = inc.update(&mut m);
                for c in changes {
                    match c {
                        Change::Upsert(f) => { model.insert(f.key(), f); }
                        Change::Remove(k) => { model.remove(&k); }
                    }
                }
                let (full, rejected) = m.facts();
                proptest::prop_assert_eq!(&model, &full);
                proptest::prop_assert_eq!(inc.rejected(), rejected);
            }
        }
    }

    #[test]
    fn a_vm_vifs_set_change_marks_nothing_dirty() {
        let mut m = pool("120");
        m.take_dirty();
        m.apply(&event(5)).unwrap();
        // power_state Running → Running, only VIFs changed: no part is dirty.
        assert!(!m.take_dirty().any());
        m.apply(&event(4)).unwrap();
        assert_eq!(m.take_dirty(), Parts { vnics: true, ..Parts::default() });
    }
}
