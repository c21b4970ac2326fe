//! XenAPI records → netfold facts. Pure: no IO, no clock.
//!
//! [`Mirror`] holds the pool's objects of the eight classes the adapter reads (pool, host, VM,
//! VIF, network, PIF, VLAN, PIF_metrics), filled from `get_all_records` and kept current by
//! `event.from`; [`Mirror::facts`] maps the whole mirror to facts, and [`diff`] turns two fact
//! sets into the exact changes (the fact-level delta).
//!
//! The mapping:
//! - `HostFact { host: host.uuid, name: host.name_label }`.
//! - `UplinkFact` per physical PIF (`physical = true`): `nic = device`, `mac = MAC`; the switch
//!   port comes from the PIF's `PIF_metrics.other_config` keys [`LLDP_SYSTEM_NAME`] and
//!   [`LLDP_PORT_ID`] (source `Lldp`) when both are set, otherwise `None`.
//! - `NetworkFact` per (host, network) where the host has a PIF on the network: a VLAN PIF
//!   (`VLAN >= 0`) → its `VLAN_master_of` VLAN record → `Access(tag)`, uplink = the
//!   `tagged_PIF`'s device; any other PIF → `Untagged`, uplink = its own device.
//! - `VnicFact` per VIF of a VM that is not a template, snapshot or control domain: `nic` = VIF
//!   device, `host` = `resident_on`'s uuid (`affinity`'s when halted, empty if neither),
//!   `connected = currently_attached`, `powered_on = power_state == Running`.
//! - A tag of 0 or ≥ 4095, a missing field or a dangling reference → [`Rejected`]; the rest of
//!   the pool is still mapped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use engine::{
    Change, Fact, FactKey, HostFact, NeighbourSource, NetworkFact, Rejected, SwitchPort, UplinkFact, VlanId, VlanSpec,
    VnicFact,
};

use super::client::{Operation, XenEvent};
use super::codec::Value;

/// `PIF_metrics.other_config` key holding the LLDP neighbour's system name (the switch).
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
    /// Records that could not be read, by (class, ref): reported with the facts.
    pub bad: BTreeMap<(String, String), Rejected>,
}

impl Mirror {
    /// Stores (or replaces) one record. `class` is matched case-insensitively (event records
    /// name classes in lower case). Unknown classes are ignored.
    pub fn upsert(&mut self, class: &str, reference: &str, rec: &Value) {
        let key = (class.to_ascii_lowercase(), reference.to_string());
        match self.read(&key.0, reference, rec) {
            Ok(()) => {
                self.bad.remove(&key);
            }
            Err(r) => {
                self.remove(&key.0, reference);
                self.bad.insert(key, r);
            }
        }
    }

    fn read(&mut self, class: &str, r: &str, rec: &Value) -> Result<(), Rejected> {
        let f = Fields::new(class, r, rec)?;
        let r = r.to_string();
        match class {
            "pool" => self.master = Some(f.str("master")?),
            "host" => {
                self.hosts.insert(r, Host { uuid: f.str("uuid")?, name_label: f.str("name_label")? });
            }
            "vm" => {
                self.vms.insert(
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
                );
            }
            "vif" => {
                self.vifs.insert(
                    r,
                    Vif {
                        uuid: f.str("uuid")?,
                        device: f.str("device")?,
                        mac: f.str("MAC")?,
                        vm: f.str("VM")?,
                        network: f.str("network")?,
                        currently_attached: f.bool("currently_attached")?,
                    },
                );
            }
            "network" => {
                self.networks.insert(r, Network { uuid: f.str("uuid")?, name_label: f.str("name_label")? });
            }
            "pif" => {
                self.pifs.insert(
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
                );
            }
            "vlan" => {
                self.vlans.insert(
                    r,
                    Vlan {
                        uuid: f.str("uuid")?,
                        tag: f.int("tag")?,
                        tagged_pif: f.str("tagged_PIF")?,
                        untagged_pif: f.str("untagged_PIF")?,
                    },
                );
            }
            "pif_metrics" => {
                self.metrics.insert(r, PifMetrics { other_config: f.string_map("other_config") });
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets one record.
    pub fn remove(&mut self, class: &str, reference: &str) {
        let class = class.to_ascii_lowercase();
        self.bad.remove(&(class.clone(), reference.to_string()));
        match class.as_str() {
            "host" => drop(self.hosts.remove(reference)),
            "vm" => drop(self.vms.remove(reference)),
            "vif" => drop(self.vifs.remove(reference)),
            "network" => drop(self.networks.remove(reference)),
            "pif" => drop(self.pifs.remove(reference)),
            "vlan" => drop(self.vlans.remove(reference)),
            "pif_metrics" => drop(self.metrics.remove(reference)),
            _ => {}
        }
    }

    /// Applies one `event.from` event.
    pub fn apply(&mut self, e: &XenEvent) {
        match (e.operation, &e.snapshot) {
            (Operation::Del, _) => self.remove(&e.class, &e.reference),
            (_, Some(snap)) => self.upsert(&e.class, &e.reference, snap),
            // add/mod without a snapshot carries nothing to store.
            (_, None) => {}
        }
    }

    fn host_uuid(&self, r: &str) -> Option<&str> {
        self.hosts.get(r).map(|h| h.uuid.as_str())
    }

    /// Maps the whole mirror to facts (keyed, so the result is deterministic) and rejections.
    pub fn facts(&self) -> (BTreeMap<FactKey, Fact>, Vec<Rejected>) {
        let mut facts = BTreeMap::new();
        let mut rejected: Vec<Rejected> = self.bad.values().cloned().collect();
        let mut put = |f: Fact| {
            facts.insert(f.key(), f);
        };
        for h in self.hosts.values() {
            put(Fact::Host(HostFact { host: h.uuid.clone(), name: h.name_label.clone() }));
        }
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
                    host: host.to_string(),
                    nic: pif.device.clone(),
                    mac: (!pif.mac.is_empty()).then(|| pif.mac.clone()),
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
                host: host.to_string(),
                network: net.uuid.clone(),
                name: net.name_label.clone(),
                vlan,
                uplinks: vec![uplink],
            }));
        }
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
                vm: vm.uuid.clone(),
                vm_name: vm.name_label.clone(),
                nic: vif.device.clone(),
                mac: vif.mac.clone(),
                host: host.to_string(),
                network: net.uuid.clone(),
                connected: vif.currently_attached,
                powered_on: vm.power_state == "Running",
            }));
        }
        rejected.sort_by(|a, b| (&a.what, &a.why).cmp(&(&b.what, &b.why)));
        (facts, rejected)
    }
}

/// The changes that turn `old` into `new`: upserts for added or changed facts, removals for
/// facts that are gone. Ordered by key.
pub fn diff(old: &BTreeMap<FactKey, Fact>, new: &BTreeMap<FactKey, Fact>) -> Vec<Change> {
    let mut out = Vec::new();
    for (k, f) in new {
        if old.get(k) != Some(f) {
            out.push(Change::Upsert(f.clone()));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push(Change::Remove(k.clone()));
        }
    }
    out
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
        m.upsert("host", "H", &rec(&[("uuid", s("h-uuid")), ("name_label", s("xen-01"))]));
        m.upsert(
            "network",
            "N0",
            &rec(&[("uuid", s("n0")), ("name_label", s("Pool-wide network associated with eth0"))]),
        );
        m.upsert("network", "N120", &rec(&[("uuid", s("n120")), ("name_label", s("VLAN 120"))]));
        let mut oc = BTreeMap::new();
        oc.insert(LLDP_SYSTEM_NAME.to_string(), s("tor1"));
        oc.insert(LLDP_PORT_ID.to_string(), s("ethernet1/1/3"));
        m.upsert("PIF_metrics", "M0", &rec(&[("other_config", Value::Struct(oc))]));
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
        m.upsert("PIF", "P0", &pif("eth0", "N0", "-1", NULL_REF, true, "M0"));
        m.upsert("PIF", "P120", &pif("eth0", "N120", tag, "V120", false, NULL_REF));
        m.upsert(
            "VLAN",
            "V120",
            &rec(&[("uuid", s("v120")), ("tag", s(tag)), ("tagged_PIF", s("P0")), ("untagged_PIF", s("P120"))]),
        );
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
        m.upsert("VM", "VM1", &vm("web-1", false, false));
        m.upsert("VM", "T", &vm("template", true, false));
        m.upsert("VM", "D0", &vm("dom0", false, true));
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
            );
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
    fn missing_fields_are_rejected_naming_the_record() {
        let mut m = pool("120");
        m.upsert("VIF", "VIF9", &rec(&[("uuid", s("x"))]));
        let (_, rejected) = m.facts();
        assert!(rejected.iter().any(|r| r.what == "vif VIF9" && r.why.contains("device")), "{rejected:?}");
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
        });
        let changes = diff(&before, &m.facts().0);
        assert_eq!(changes.len(), 1);
        assert!(matches!(&changes[0], Change::Upsert(Fact::Vnic(v)) if !v.connected));
        m.apply(&XenEvent { class: "vm".into(), operation: Operation::Del, reference: "VM1".into(), snapshot: None });
        m.apply(&XenEvent { class: "vif".into(), operation: Operation::Del, reference: "VIF1".into(), snapshot: None });
        let changes = diff(&before, &m.facts().0);
        assert_eq!(changes, vec![Change::Remove(FactKey::Vnic { vm: "web-1".into(), nic: "0".into() })]);
    }
}
