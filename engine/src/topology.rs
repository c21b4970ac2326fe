//! Static topology (`[[topology]]`): which host NIC is cabled to which switch port, the host
//! named by its id, its name or one of its pNICs' MACs. Pure: [`resolve`] matches the entries
//! against a hypervisor's hosts and uplinks and says which (host, NIC) each one ties, or why it
//! ties none.
//!
//! An entry by id is folded by the projector ([`crate::config::StaticLink`]): ids are what the
//! facts are keyed by. Names and MACs survive a rebuilt or restored vCenter (ids change), but
//! they need the inventory to mean a host, so the session resolves them on every read that
//! touches hosts or uplinks and records the tie in the uplink's fact (`source: Static`). An
//! entry that matches no host, or more than one (vcsim gives every host the same pNIC MACs), or
//! whose NIC the host does not have, ties nothing and is refused with its reason: never applied
//! to a host it may not mean.

use std::collections::BTreeMap;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::fact::{HostFact, UplinkFact};
use crate::ids::{HypervisorId, SwitchPort};
use crate::observe::Rejected;

/// How an entry names its host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HostSelector {
    /// The host's id as the adapter reports it (vSphere moref, XenAPI host uuid).
    Id(String),
    /// The host's name (`esx-01.lab`).
    Name(String),
    /// A pNIC's MAC, lower case with colons ([`normalize_mac`]): names the host and the NIC.
    Mac(String),
}

impl fmt::Display for HostSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostSelector::Id(id) => write!(f, "host `{id}`"),
            HostSelector::Name(n) => write!(f, "host_name `{n}`"),
            HostSelector::Mac(m) => write!(f, "mac `{m}`"),
        }
    }
}

/// One `[[topology]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyEntry {
    /// Its position among the config's `[[topology]]` entries, from 1 (refusals name it).
    pub position: usize,
    pub hypervisor: HypervisorId,
    pub host: HostSelector,
    /// The uplink device (`vmnic0`); `None` only with [`HostSelector::Mac`], whose NIC it is.
    pub nic: Option<String>,
    pub port: SwitchPort,
}

impl TopologyEntry {
    fn what(&self) -> String {
        match &self.nic {
            Some(nic) => format!("[[topology]] #{} ({}, nic `{nic}` → {})", self.position, self.host, self.port),
            None => format!("[[topology]] #{} ({} → {})", self.position, self.host, self.port),
        }
    }
}

/// `aa:BB-cc…` → `aa:bb:cc…`: six hex pairs separated by `:` or `-`, or three groups of four
/// separated by `.` (`001c.7300.0001`, as EOS and IOS write MACs), else `None`.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let dotted: Vec<&str> = mac.split('.').collect();
    if dotted.len() == 3 && dotted.iter().all(|p| p.len() == 4 && p.chars().all(|c| c.is_ascii_hexdigit())) {
        let hex: String = dotted.concat().to_ascii_lowercase();
        let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
        return Some(pairs.join(":"));
    }
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// What the entries of one hypervisor tie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// (host id, NIC) → port, from entries by name or MAC (entries by id are the projector's).
    pub links: BTreeMap<(CompactString, CompactString), SwitchPort>,
    /// The entries that tie nothing, and why.
    pub refusals: Vec<Rejected>,
}

/// Matches `entries` against one hypervisor's hosts and uplinks.
pub fn resolve<'a>(
    entries: &[TopologyEntry],
    hosts: impl IntoIterator<Item = &'a HostFact>,
    uplinks: impl IntoIterator<Item = &'a UplinkFact>,
) -> Resolved {
    let hosts: Vec<&HostFact> = hosts.into_iter().collect();
    let uplinks: Vec<&UplinkFact> = uplinks.into_iter().collect();
    let has_nic = |host: &str, nic: &str| uplinks.iter().any(|u| u.host == host && u.nic == nic);
    let mut out = Resolved::default();
    // (host, nic) → (port, entry) of every entry that matched, ids included (they win).
    let mut tied: BTreeMap<(CompactString, CompactString), Vec<(&SwitchPort, &TopologyEntry)>> = BTreeMap::new();
    for e in entries {
        let refuse = |why: String| Rejected { what: e.what(), why };
        let candidates: Vec<(CompactString, CompactString)> = match (&e.host, &e.nic) {
            (HostSelector::Mac(mac), _) => uplinks
                .iter()
                .filter(|u| u.mac.as_deref().and_then(normalize_mac).as_deref() == Some(mac.as_str()))
                .map(|u| (u.host.clone(), u.nic.clone()))
                .collect(),
            (HostSelector::Id(id), Some(nic)) => {
                hosts.iter().filter(|h| h.host == id).map(|h| (h.host.clone(), nic.as_str().into())).collect()
            }
            (HostSelector::Name(name), Some(nic)) => {
                hosts.iter().filter(|h| h.name == name).map(|h| (h.host.clone(), nic.as_str().into())).collect()
            }
            (_, None) => {
                out.refusals.push(refuse("it names no NIC".into()));
                continue;
            }
        };
        match candidates.as_slice() {
            [] => out.refusals.push(refuse(match e.host {
                HostSelector::Mac(_) => "no uplink of this hypervisor has this MAC".into(),
                _ => "it matches no host of this hypervisor".into(),
            })),
            [(host, nic)] if !has_nic(host, nic) => {
                out.refusals.push(refuse(format!("host {host} has no uplink `{nic}`")))
            }
            [one] => tied.entry(one.clone()).or_default().push((&e.port, e)),
            many => {
                let list: Vec<String> = many.iter().map(|(h, n)| format!("{h}/{n}")).collect();
                out.refusals.push(refuse(format!(
                    "it matches {} uplinks ({}); applied to none of them",
                    many.len(),
                    list.join(", ")
                )));
            }
        }
    }
    for (key, ties) in tied {
        let by_id = ties.iter().find(|(_, e)| matches!(e.host, HostSelector::Id(_)));
        let others: Vec<&(&SwitchPort, &TopologyEntry)> =
            ties.iter().filter(|(_, e)| !matches!(e.host, HostSelector::Id(_))).collect();
        let ports: std::collections::BTreeSet<&SwitchPort> = ties.iter().map(|(p, _)| *p).collect();
        if ports.len() > 1 {
            let all: Vec<String> = ties.iter().map(|(p, e)| format!("#{} → {p}", e.position)).collect();
            let why = match by_id {
                Some((p, e)) => format!("{}/{} is tied to {p} by [[topology]] #{} (by id)", key.0, key.1, e.position),
                None => format!("entries tie {}/{} to different ports ({})", key.0, key.1, all.join(", ")),
            };
            for (_, e) in others.iter().filter(|(p, _)| by_id.is_none_or(|(id_port, _)| id_port != p)) {
                out.refusals.push(Rejected { what: e.what(), why: why.clone() });
            }
            continue;
        }
        if by_id.is_none() {
            out.links.insert(key, ties[0].0.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv() -> HypervisorId {
        HypervisorId::new("vc").unwrap()
    }

    fn entry(position: usize, host: HostSelector, nic: Option<&str>, port: &str) -> TopologyEntry {
        TopologyEntry { position, hypervisor: hv(), host, nic: nic.map(str::to_string), port: port.parse().unwrap() }
    }

    fn host(id: &str, name: &str) -> HostFact {
        HostFact { host: id.into(), name: name.into() }
    }

    fn uplink(host: &str, nic: &str, mac: &str) -> UplinkFact {
        UplinkFact { host: host.into(), nic: nic.into(), mac: Some(mac.into()), port: None, source: None }
    }

    /// Two hosts; host-1's vmnic0 has a MAC of its own, both vmnic1 share one (as on vcsim).
    fn world() -> (Vec<HostFact>, Vec<UplinkFact>) {
        (
            vec![host("host-1", "esx-01"), host("host-2", "esx-02")],
            vec![
                uplink("host-1", "vmnic0", "00:50:56:00:00:01"),
                uplink("host-1", "vmnic1", "00:0c:29:81:d8:aa"),
                uplink("host-2", "vmnic0", "00:50:56:00:00:02"),
                uplink("host-2", "vmnic1", "00:0c:29:81:d8:aa"),
            ],
        )
    }

    fn key(h: &str, n: &str) -> (CompactString, CompactString) {
        (h.into(), n.into())
    }

    #[test]
    fn a_host_name_or_a_mac_ties_the_one_nic_it_means() {
        let (hosts, uplinks) = world();
        let entries = [
            entry(1, HostSelector::Name("esx-02".into()), Some("vmnic0"), "tor1:Et2"),
            entry(2, HostSelector::Mac("00:50:56:00:00:01".into()), None, "tor1:Et1"),
        ];
        let r = resolve(&entries, &hosts, &uplinks);
        assert_eq!(r.refusals, vec![]);
        assert_eq!(
            r.links,
            BTreeMap::from([
                (key("host-1", "vmnic0"), "tor1:Et1".parse().unwrap()),
                (key("host-2", "vmnic0"), "tor1:Et2".parse().unwrap())
            ])
        );
    }

    #[test]
    fn a_mac_on_several_hosts_is_refused_naming_them_and_ties_nothing() {
        let (hosts, uplinks) = world();
        let entries = [entry(3, HostSelector::Mac("00:0c:29:81:d8:aa".into()), None, "tor1:Et9")];
        let r = resolve(&entries, &hosts, &uplinks);
        assert!(r.links.is_empty());
        assert_eq!(r.refusals.len(), 1);
        assert_eq!(r.refusals[0].what, "[[topology]] #3 (mac `00:0c:29:81:d8:aa` → tor1:Et9)");
        assert_eq!(r.refusals[0].why, "it matches 2 uplinks (host-1/vmnic1, host-2/vmnic1); applied to none of them");
    }

    #[test]
    fn a_name_two_hosts_share_an_unknown_name_or_a_missing_nic_is_refused() {
        let (mut hosts, uplinks) = world();
        hosts.push(host("host-3", "esx-01"));
        let entries = [
            entry(1, HostSelector::Name("esx-01".into()), Some("vmnic0"), "tor1:Et1"),
            entry(2, HostSelector::Name("esx-99".into()), Some("vmnic0"), "tor1:Et2"),
            entry(3, HostSelector::Name("esx-02".into()), Some("vmnic7"), "tor1:Et3"),
            entry(4, HostSelector::Id("host-9".into()), Some("vmnic0"), "tor1:Et4"),
        ];
        let r = resolve(&entries, &hosts, &uplinks);
        assert!(r.links.is_empty());
        let whys: Vec<&str> = r.refusals.iter().map(|r| r.why.as_str()).collect();
        assert_eq!(
            whys,
            [
                "it matches 2 uplinks (host-1/vmnic0, host-3/vmnic0); applied to none of them",
                "it matches no host of this hypervisor",
                "host host-2 has no uplink `vmnic7`",
                "it matches no host of this hypervisor",
            ]
        );
    }

    #[test]
    fn an_id_entry_ties_through_the_projector_and_wins_over_a_name_naming_another_port() {
        let (hosts, uplinks) = world();
        let entries = [
            entry(1, HostSelector::Id("host-1".into()), Some("vmnic0"), "tor1:Et1"),
            entry(2, HostSelector::Name("esx-01".into()), Some("vmnic0"), "tor1:Et5"),
            entry(3, HostSelector::Name("esx-02".into()), Some("vmnic0"), "tor1:Et2"),
            entry(4, HostSelector::Mac("00:50:56:00:00:02".into()), None, "tor1:Et2"),
        ];
        let r = resolve(&entries, &hosts, &uplinks);
        assert_eq!(r.links, BTreeMap::from([(key("host-2", "vmnic0"), "tor1:Et2".parse().unwrap())]));
        assert_eq!(r.refusals.len(), 1);
        assert!(r.refusals[0].what.starts_with("[[topology]] #2 "));
        assert_eq!(r.refusals[0].why, "host-1/vmnic0 is tied to tor1:Et1 by [[topology]] #1 (by id)");
    }

    #[test]
    fn two_name_entries_tying_one_nic_to_different_ports_are_both_refused() {
        let (hosts, uplinks) = world();
        let entries = [
            entry(1, HostSelector::Name("esx-01".into()), Some("vmnic0"), "tor1:Et1"),
            entry(2, HostSelector::Mac("00:50:56:00:00:01".into()), None, "tor1:Et5"),
        ];
        let r = resolve(&entries, &hosts, &uplinks);
        assert!(r.links.is_empty());
        assert_eq!(r.refusals.len(), 2);
        assert!(r
            .refusals
            .iter()
            .all(|x| x.why == "entries tie host-1/vmnic0 to different ports (#1 → tor1:Et1, #2 → tor1:Et5)"));
    }

    #[test]
    fn macs_are_compared_normalized() {
        assert_eq!(normalize_mac("00-0C-29-81-D8-A0").as_deref(), Some("00:0c:29:81:d8:a0"));
        assert_eq!(normalize_mac("001C.7300.00aB").as_deref(), Some("00:1c:73:00:00:ab"));
        assert_eq!(normalize_mac("001c.7300.00"), None);
        for bad in ["", "00:0c:29:81:d8", "00:0c:29:81:d8:a0:11", "0:0c:29:81:d8:a0", "zz:0c:29:81:d8:a0"] {
            assert_eq!(normalize_mac(bad), None, "{bad}");
        }
        let (hosts, mut uplinks) = world();
        uplinks[0].mac = Some("00:50:56:00:00:0A".into());
        let r = resolve(&[entry(1, HostSelector::Mac("00:50:56:00:00:0a".into()), None, "tor1:Et1")], &hosts, &uplinks);
        assert_eq!(r.links.len(), 1);
    }
}
