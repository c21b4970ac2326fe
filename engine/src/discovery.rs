//! Switch-side discovery: what a switch itself says about who is cabled where, and the one
//! precedence that turns every source into the port a host NIC leads to.
//!
//! A switch back end reports a [`Discovery`] (its MAC table, its LLDP neighbours and its bonds /
//! port-channels, member ports already folded into their bond). The discovery poller
//! ([`crate::runtime::discover`]) marks each sighting managed or not by the switch's policy and
//! keeps only the MACs of known hypervisor pNICs; the engine records the result as
//! [`crate::Event::SwitchSaw`] when it changed. The projector folds those events into [`Seen`]
//! and ties uplinks by [`resolve`]. Pure: no IO, no clock.
//!
//! **Precedence** (docs/adr/0011-host-to-port-mapping-from-the-switch.md), first that applies:
//! 1. static topology (`[[topology]]`, by id in the projector, by name or MAC in the session);
//! 2. the hypervisor's own CDP/LLDP report;
//! 3. the switch's LLDP neighbour table;
//! 4. the switch's MAC table (a pNIC MAC seen on a port).
//!
//! Within the switch sources, the highest one that has any sighting of a NIC decides, and it
//! ties only when every sighting names one and the same port and that port is managed: a MAC
//! seen on several ports (flooding, an inter-switch uplink) or on an excluded or unmanaged port
//! ties nothing. Whatever the source, a port that is a member of a bond / port-channel the
//! switch reported is replaced by the bond: VLANs go on the port-channel, never on one member.

use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::fact::{NeighbourSource, UplinkFact};
use crate::ids::SwitchPort;
use crate::plan::Policy;
use crate::port::{Grammar, PortName};
use crate::topology::normalize_mac;

/// An LLDP neighbour as a switch reports it on one of its ports (all fields as sent by the
/// neighbour; any may be missing).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LldpNeighbour {
    /// Chassis ID (often the host's MAC).
    pub chassis_id: Option<String>,
    /// Port ID: the neighbour's interface name (`vmnic0`) or MAC.
    pub port_id: Option<String>,
    /// Port description (Linux lldpd: the interface name).
    pub port_description: Option<String>,
    /// System name (the host's name).
    pub system_name: Option<String>,
}

/// What a switch back end read: sightings by port name in the back end's grammar, member ports
/// already replaced by their bond / port-channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// (MAC, port): a MAC learnt on a port (any case, `:` or `-`).
    pub macs: Vec<(String, PortName)>,
    /// (port, neighbour).
    pub lldp: Vec<(PortName, LldpNeighbour)>,
    /// (member, bond): every member of every bond / port-channel.
    pub bonds: Vec<(PortName, PortName)>,
}

/// A pNIC MAC seen on a port of the switch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MacSighting {
    /// Lower case with colons.
    pub mac: String,
    pub port: String,
    /// Whether the switch's policy manages the port (not excluded, in `managed_ports`).
    pub managed: bool,
}

/// An LLDP neighbour on a port of the switch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LldpSighting {
    pub port: String,
    pub managed: bool,
    pub neighbour: LldpNeighbour,
}

/// A bond / port-channel member and its bond.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BondMember {
    pub member: String,
    pub bond: String,
}

/// What one switch saw, as recorded in the log (sorted, no duplicates).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SwitchView {
    pub macs: Vec<MacSighting>,
    pub lldp: Vec<LldpSighting>,
    pub bonds: Vec<BondMember>,
}

impl SwitchView {
    /// The view of `d` under `policy`, keeping the MACs `keep` says are hypervisor pNICs (the
    /// rest of a MAC table, VMs above all, is not netfold's business and would bloat the log).
    ///
    /// A pNIC MAC that `previous` (what the switch saw before) has and `d` lacks keeps its old
    /// ports: a MAC table forgets quiet hosts (ageing, a flush on reconfiguration), and a host
    /// that merely went quiet must not lose its VLANs. Only a sighting elsewhere moves it.
    pub fn of(
        d: &Discovery,
        policy: &Policy,
        keep: impl Fn(&str) -> bool,
        previous: Option<&SwitchView>,
    ) -> SwitchView {
        let mut macs: BTreeSet<MacSighting> = d
            .macs
            .iter()
            .filter_map(|(mac, port)| {
                let mac = normalize_mac(mac)?;
                keep(&mac).then(|| MacSighting { mac, port: port.to_string(), managed: policy.manages(port) })
            })
            .collect();
        let fresh: BTreeSet<String> = macs.iter().map(|m| m.mac.clone()).collect();
        for old in previous.into_iter().flat_map(|p| &p.macs) {
            if !fresh.contains(&old.mac) && keep(&old.mac) {
                // Judged by the policy in force. (Recorded names are canonical, and every
                // canonical name passes the generic grammar.)
                let managed = PortName::parse(Grammar::Memory, &old.port).is_ok_and(|p| policy.manages(&p));
                macs.insert(MacSighting { managed, ..old.clone() });
            }
        }
        let lldp: BTreeSet<LldpSighting> = d
            .lldp
            .iter()
            .map(|(port, n)| LldpSighting {
                port: port.to_string(),
                managed: policy.manages(port),
                neighbour: n.clone(),
            })
            .collect();
        let bonds: BTreeSet<BondMember> =
            d.bonds.iter().map(|(m, b)| BondMember { member: m.to_string(), bond: b.to_string() }).collect();
        SwitchView {
            macs: macs.into_iter().collect(),
            lldp: lldp.into_iter().collect(),
            bonds: bonds.into_iter().collect(),
        }
    }
}

/// A sighting as the index holds it: which port, whether managed.
type Spot = (SwitchPort, bool);

/// Every switch's view, indexed for tying uplinks: MAC → spots, the LLDP sightings (indexed by
/// the MAC their port ID names and by their system name's first label), and member → bond.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    by_mac: HashMap<String, BTreeSet<Spot>>,
    lldp: Vec<(Spot, LldpNeighbour)>,
    lldp_by_mac: HashMap<String, Vec<usize>>,
    lldp_by_name: HashMap<String, Vec<usize>>,
    bonds: HashMap<SwitchPort, SwitchPort>,
}

/// A host or system name's first DNS label, lower case (`ESX-01.lab` → `esx-01`).
fn label(s: &str) -> String {
    s.split('.').next().unwrap_or(s).to_ascii_lowercase()
}

impl Seen {
    /// The index of `views` (switch name → view).
    pub fn new(views: &BTreeMap<String, SwitchView>) -> Seen {
        let mut s = Seen::default();
        for (switch, v) in views {
            let at = |port: &str| SwitchPort { switch: switch.clone(), port: port.to_string() };
            for m in &v.macs {
                s.by_mac.entry(m.mac.clone()).or_default().insert((at(&m.port), m.managed));
            }
            for l in &v.lldp {
                let i = s.lldp.len();
                if let Some(m) = l.neighbour.port_id.as_deref().and_then(normalize_mac) {
                    s.lldp_by_mac.entry(m).or_default().push(i);
                }
                if let Some(n) = &l.neighbour.system_name {
                    s.lldp_by_name.entry(label(n)).or_default().push(i);
                }
                s.lldp.push(((at(&l.port), l.managed), l.neighbour.clone()));
            }
            for b in &v.bonds {
                s.bonds.insert(at(&b.member), at(&b.bond));
            }
        }
        s
    }

    /// Whether no switch reported anything (the projector then skips all of this).
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty() && self.lldp.is_empty() && self.bonds.is_empty()
    }

    /// The bond `port` is a member of, else `port` itself.
    pub fn lift(&self, port: SwitchPort) -> SwitchPort {
        match self.bonds.get(&port) {
            Some(b) => b.clone(),
            None => port,
        }
    }

    /// The spots where the switches saw `uplink` of the host named `host_name`, by source
    /// (switch LLDP first, then MAC table); sources without a sighting are left out.
    pub fn sightings(&self, host_name: &str, uplink: &UplinkFact) -> Vec<(NeighbourSource, BTreeSet<Spot>)> {
        let mac = uplink.mac.as_deref().and_then(normalize_mac);
        let by_mac = mac.as_ref().and_then(|m| self.lldp_by_mac.get(m)).into_iter().flatten();
        let by_name = (!host_name.is_empty()).then(|| self.lldp_by_name.get(&label(host_name))).flatten();
        let lldp: BTreeSet<Spot> = by_mac
            .chain(by_name.into_iter().flatten())
            .filter_map(|&i| self.lldp.get(i))
            .filter(|(_, n)| lldp_matches(n, host_name, &uplink.nic, mac.as_deref()))
            .map(|(s, _)| s.clone())
            .collect();
        let macs = mac.and_then(|m| self.by_mac.get(&m)).cloned().unwrap_or_default();
        [(NeighbourSource::SwitchLldp, lldp), (NeighbourSource::MacTable, macs)]
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// The port the switches tie `uplink` to, and by which source (see the module docs).
    pub fn switch_tie(&self, host_name: &str, uplink: &UplinkFact) -> Option<(SwitchPort, NeighbourSource)> {
        let (source, spots) = self.sightings(host_name, uplink).into_iter().next()?;
        let ports: BTreeSet<SwitchPort> = spots.iter().map(|(p, _)| self.lift(p.clone())).collect();
        let all_managed = spots.iter().all(|(_, managed)| *managed);
        match (ports.len(), all_managed) {
            (1, true) => ports.into_iter().next().map(|p| (p, source)),
            _ => None,
        }
    }
}

/// Whether LLDP neighbour `n` is the NIC `nic` (MAC `mac`) of host `host_name`: its port ID is
/// that MAC, or its system name is the host's (or the host's first DNS label) and its port ID or
/// description is the NIC's name.
fn lldp_matches(n: &LldpNeighbour, host_name: &str, nic: &str, mac: Option<&str>) -> bool {
    let by_mac = mac.is_some() && n.port_id.as_deref().and_then(normalize_mac).as_deref() == mac;
    let by_name = !host_name.is_empty()
        && n.system_name.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(host_name) || label(s) == label(host_name))
        && (n.port_id.as_deref() == Some(nic) || n.port_description.as_deref() == Some(nic));
    by_mac || by_name
}

/// The port `uplink` leads to and the source that says so, by the precedence in the module
/// docs: `link` (a static link by id) first, then the uplink's own port (`[[topology]]` by name
/// or MAC, or the hypervisor's CDP/LLDP), then the switches; a bond member is lifted to its bond.
pub fn resolve(
    seen: &Seen,
    link: Option<&SwitchPort>,
    uplink: Option<&UplinkFact>,
    host_name: &str,
) -> Option<(SwitchPort, NeighbourSource)> {
    let tie = match (link, uplink) {
        (Some(p), _) => Some((p.clone(), NeighbourSource::Static)),
        (None, Some(u)) => match &u.port {
            Some(p) => Some((p.clone(), u.source.unwrap_or(NeighbourSource::Lldp))),
            None => seen.switch_tie(host_name, u),
        },
        (None, None) => None,
    }?;
    Some((seen.lift(tie.0), tie.1))
}

/// Every source's say on one uplink: the port each source ties it to (bond-lifted), in
/// precedence order. Sources that say nothing (or nothing unambiguous) are left out.
pub fn opinions(
    seen: &Seen,
    link: Option<&SwitchPort>,
    uplink: &UplinkFact,
    host_name: &str,
) -> Vec<(NeighbourSource, SwitchPort)> {
    let mut out = Vec::new();
    if let Some(p) = link {
        out.push((NeighbourSource::Static, seen.lift(p.clone())));
    }
    if let Some(p) = &uplink.port {
        out.push((uplink.source.unwrap_or(NeighbourSource::Lldp), seen.lift(p.clone())));
    }
    for (source, spots) in seen.sightings(host_name, uplink) {
        let ports: BTreeSet<SwitchPort> = spots.iter().map(|(p, _)| seen.lift(p.clone())).collect();
        if ports.len() == 1 && spots.iter().all(|(_, m)| *m) {
            out.extend(ports.into_iter().map(|p| (source, p)));
        }
    }
    out
}

/// Whether the sources in `opinions` name more than one port.
pub fn disagree(opinions: &[(NeighbourSource, SwitchPort)]) -> bool {
    opinions.iter().map(|(_, p)| p).collect::<BTreeSet<_>>().len() > 1
}

/// One uplink whose sources disagree, as recorded in [`crate::Event::TiesDisagreed`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Disagreement {
    pub host: CompactString,
    pub nic: CompactString,
    /// The port each source names, in precedence order (the first one is applied).
    pub opinions: Vec<(NeighbourSource, SwitchPort)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> SwitchPort {
        s.parse().unwrap()
    }

    fn uplink(mac: &str, port: Option<&str>, source: Option<NeighbourSource>) -> UplinkFact {
        UplinkFact { host: "h1".into(), nic: "eth0".into(), mac: Some(mac.into()), port: port.map(sp), source }
    }

    fn view(macs: &[(&str, &str, bool)], lldp: &[(&str, LldpNeighbour)], bonds: &[(&str, &str)]) -> SwitchView {
        SwitchView {
            macs: macs
                .iter()
                .map(|(m, p, k)| MacSighting { mac: m.to_string(), port: p.to_string(), managed: *k })
                .collect(),
            lldp: lldp
                .iter()
                .map(|(p, n)| LldpSighting { port: p.to_string(), managed: true, neighbour: n.clone() })
                .collect(),
            bonds: bonds.iter().map(|(m, b)| BondMember { member: m.to_string(), bond: b.to_string() }).collect(),
        }
    }

    fn seen(v: SwitchView) -> Seen {
        Seen::new(&BTreeMap::from([("tor1".to_string(), v)]))
    }

    const MAC: &str = "02:00:00:00:00:01";

    #[test]
    fn a_mac_on_one_managed_port_ties_by_the_mac_table() {
        let s = seen(view(&[(MAC, "p1", true)], &[], &[]));
        assert_eq!(
            resolve(&s, None, Some(&uplink(MAC, None, None)), "h1"),
            Some((sp("tor1:p1"), NeighbourSource::MacTable))
        );
        // Compared normalized.
        let s = seen(view(&[(MAC, "p1", true)], &[], &[]));
        assert!(resolve(&s, None, Some(&uplink("02-00-00-00-00-01", None, None)), "h1").is_some());
    }

    #[test]
    fn a_mac_on_several_ports_or_on_an_unmanaged_port_ties_nothing() {
        let s = seen(view(&[(MAC, "p1", true), (MAC, "p2", true)], &[], &[]));
        assert_eq!(resolve(&s, None, Some(&uplink(MAC, None, None)), "h1"), None);
        let s = seen(view(&[(MAC, "p1", false)], &[], &[]));
        assert_eq!(resolve(&s, None, Some(&uplink(MAC, None, None)), "h1"), None);
        // Seen on a managed and an excluded port: still nothing.
        let s = seen(view(&[(MAC, "p1", true), (MAC, "up", false)], &[], &[]));
        assert_eq!(resolve(&s, None, Some(&uplink(MAC, None, None)), "h1"), None);
    }

    #[test]
    fn static_beats_the_hypervisor_which_beats_switch_lldp_which_beats_the_mac_table() {
        let n =
            LldpNeighbour { system_name: Some("h1.lab".into()), port_id: Some("eth0".into()), ..Default::default() };
        let s = seen(view(&[(MAC, "p4", true)], &[("p3", n)], &[]));
        let cdp = uplink(MAC, Some("tor1:p2"), Some(NeighbourSource::Cdp));
        let link = sp("tor1:p1");
        assert_eq!(resolve(&s, Some(&link), Some(&cdp), "h1"), Some((link.clone(), NeighbourSource::Static)));
        assert_eq!(resolve(&s, None, Some(&cdp), "h1"), Some((sp("tor1:p2"), NeighbourSource::Cdp)));
        let bare = uplink(MAC, None, None);
        assert_eq!(resolve(&s, None, Some(&bare), "h1"), Some((sp("tor1:p3"), NeighbourSource::SwitchLldp)));
        let ops = opinions(&s, Some(&link), &cdp, "h1");
        let sources: Vec<NeighbourSource> = ops.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sources,
            [NeighbourSource::Static, NeighbourSource::Cdp, NeighbourSource::SwitchLldp, NeighbourSource::MacTable]
        );
        assert!(disagree(&ops));
        assert!(!disagree(&opinions(&seen(view(&[(MAC, "p2", true)], &[], &[])), None, &cdp, "h1")));
    }

    #[test]
    fn lldp_matches_by_port_id_mac_or_by_system_name_and_nic_name() {
        let by_mac = LldpNeighbour { port_id: Some("02:00:00:00:00:01".into()), ..Default::default() };
        assert!(lldp_matches(&by_mac, "other", "eth9", Some(MAC)));
        let by_name = LldpNeighbour {
            system_name: Some("H1".into()),
            port_description: Some("eth0".into()),
            ..Default::default()
        };
        assert!(lldp_matches(&by_name, "h1.lab", "eth0", None));
        assert!(!lldp_matches(&by_name, "h2", "eth0", None));
        assert!(!lldp_matches(&by_name, "h1", "eth1", None));
    }

    #[test]
    fn a_bond_member_is_lifted_to_its_bond_whatever_the_source() {
        let s = seen(view(&[(MAC, "m1", true)], &[], &[("m1", "bond0"), ("m2", "bond0")]));
        assert_eq!(
            resolve(&s, None, Some(&uplink(MAC, None, None)), "h1"),
            Some((sp("tor1:bond0"), NeighbourSource::MacTable))
        );
        let cdp = uplink("02:00:00:00:00:09", Some("tor1:m2"), Some(NeighbourSource::Lldp));
        assert_eq!(resolve(&s, None, Some(&cdp), "h1"), Some((sp("tor1:bond0"), NeighbourSource::Lldp)));
        // Two MACs of one host seen on two members of one bond tie both NICs to the bond.
        let s = seen(view(&[(MAC, "m1", true), (MAC, "m2", true)], &[], &[("m1", "bond0"), ("m2", "bond0")]));
        assert_eq!(resolve(&s, None, Some(&uplink(MAC, None, None)), "h1").map(|t| t.0), Some(sp("tor1:bond0")));
    }

    #[test]
    fn the_view_marks_policy_and_keeps_only_pnic_macs() {
        let p = |s: &str| PortName::parse(Grammar::Ovs, s).unwrap();
        let d = Discovery {
            macs: vec![
                ("02:00:00:00:00:01".into(), p("p1")),
                ("02:00:00:00:00:99".into(), p("p1")),
                ("02-00-00-00-00-02".into(), p("up")),
                ("not a mac".into(), p("p1")),
            ],
            lldp: vec![],
            bonds: vec![(p("m1"), p("bond0"))],
        };
        let policy = Policy { excluded_ports: [p("up")].into(), ..Policy::default() };
        let v = SwitchView::of(&d, &policy, |m| m != "02:00:00:00:00:99", None);
        assert_eq!(
            v.macs,
            vec![
                MacSighting { mac: "02:00:00:00:00:01".into(), port: "p1".into(), managed: true },
                MacSighting { mac: "02:00:00:00:00:02".into(), port: "up".into(), managed: false },
            ]
        );
        assert_eq!(v.bonds, vec![BondMember { member: "m1".into(), bond: "bond0".into() }]);
    }

    #[test]
    fn a_mac_the_table_forgot_keeps_its_port_until_it_is_seen_elsewhere() {
        let p = |s: &str| PortName::parse(Grammar::Ovs, s).unwrap();
        let keep = |_: &str| true;
        let first = Discovery {
            macs: vec![("02:00:00:00:00:01".into(), p("p1")), ("02:00:00:00:00:02".into(), p("p2"))],
            ..Discovery::default()
        };
        let v1 = SwitchView::of(&first, &Policy::default(), keep, None);
        // 01 aged out, 02 moved to p3.
        let second = Discovery { macs: vec![("02:00:00:00:00:02".into(), p("p3"))], ..Discovery::default() };
        let v2 = SwitchView::of(&second, &Policy::default(), keep, Some(&v1));
        let got: Vec<(&str, &str)> = v2.macs.iter().map(|m| (m.mac.as_str(), m.port.as_str())).collect();
        assert_eq!(got, [("02:00:00:00:00:01", "p1"), ("02:00:00:00:00:02", "p3")]);
        // A MAC that is no pNIC any more is not kept.
        let v3 = SwitchView::of(&second, &Policy::default(), |m| m != "02:00:00:00:00:01", Some(&v1));
        assert_eq!(v3.macs.len(), 1);
    }
}
