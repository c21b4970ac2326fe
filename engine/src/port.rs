//! Switch port names as data, never syntax: [`PortName`], a name validated against one switch
//! back end's grammar ([`Grammar`]) and held in that back end's canonical spelling.
//!
//! Port names arrive from hypervisors (CDP/LLDP neighbour data) and from the config; a back end
//! renders them into commands (`interface Ethernet1/3` on EOS) or protocol values (an OVSDB
//! `where` condition). Every [`crate::switch::Op`] carries a `PortName`, so no text reaches a
//! switch that has not passed the grammar: EOS ranges (`Et1-4`), lists (`Et1,Et9`), spaces,
//! control characters and over-long names are refused with a [`PortNameError`] that says why.
//! Names are compared in canonical form, so the operator's `excluded_ports = ["Et1/1"]` matches
//! the `ethernet1/1` a hypervisor reports and the `Ethernet1/1` the switch shows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whose naming rules a port name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Grammar {
    /// Arista EOS interface names: `Ethernet<n>[/<n>[/<n>]][.<sub>]` or `Port-Channel<n>[.<sub>]`,
    /// in any case and with EOS's prefix abbreviations (`Et1/1`, `eth1/1`, `Po10`); canonical form
    /// `Ethernet1/1`, `Port-Channel10`.
    Eos,
    /// Open vSwitch port names: letters, digits and `. _ - / : @`, not starting with `-`. Kept
    /// as given (OVS names are case-sensitive).
    Ovs,
    /// The in-memory switch: the same rules as [`Grammar::Ovs`].
    Memory,
}

impl fmt::Display for Grammar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Grammar::Eos => "an EOS interface name",
            Grammar::Ovs => "an Open vSwitch port name",
            Grammar::Memory => "a port name",
        })
    }
}

/// The longest port name any back end accepts, in bytes.
pub const MAX_LEN: usize = 64;

/// A port name refused by a grammar; says which name (escaped, cut to [`MAX_LEN`]) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("port name {shown} is not {grammar}: {why}")]
pub struct PortNameError {
    /// The name as refused, escaped (`"eth1\n"`) and cut so it is safe to log.
    pub shown: String,
    pub grammar: Grammar,
    pub why: String,
}

/// A validated port name in its back end's canonical spelling. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PortName(String);

/// `raw` escaped (control characters and quotes visible) and cut to [`MAX_LEN`] characters.
pub fn escaped(raw: &str) -> String {
    let cut: String = raw.chars().take(MAX_LEN).collect();
    let more = if raw.chars().count() > MAX_LEN { "…" } else { "" };
    format!("{cut:?}{more}")
}

impl PortName {
    /// Validates `raw` against `grammar` and returns its canonical form.
    pub fn parse(grammar: Grammar, raw: &str) -> Result<PortName, PortNameError> {
        let refuse = |why: String| PortNameError { shown: escaped(raw), grammar, why };
        if raw.is_empty() {
            return Err(refuse("it is empty".into()));
        }
        if raw.len() > MAX_LEN {
            return Err(refuse(format!("it is {} bytes long; the limit is {MAX_LEN}", raw.len())));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(refuse(format!("it holds {c:?} (whitespace or a control character)")));
        }
        if raw.contains(',') {
            return Err(refuse("it holds `,` (a list of ports, not one port)".into()));
        }
        match grammar {
            Grammar::Eos => eos(raw).map_err(refuse),
            Grammar::Ovs | Grammar::Memory => {
                if let Some(c) = raw.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c))) {
                    return Err(refuse(format!("it holds {c:?}; allowed: letters, digits and . _ - / : @")));
                }
                if raw.starts_with('-') {
                    return Err(refuse("it starts with `-`".into()));
                }
                Ok(PortName(raw.to_string()))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name read from an audit record an older netfold wrote, before names were validated. It
    /// is only ever displayed, never sent: the upcast must not fail on a name that is invalid
    /// today (that very name may be why the record matters).
    pub(crate) fn from_old_record(raw: String) -> PortName {
        PortName(raw)
    }
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PortName {
    /// Read back from netfold's own records: checked against the generic rules (every canonical
    /// name of every grammar passes them), so a corrupt record cannot smuggle syntax in.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        PortName::parse(Grammar::Memory, &raw).map_err(serde::de::Error::custom)
    }
}

/// The interface types netfold may configure on EOS (trunk-capable), with their canonical
/// spelling and whether they take a slot/port path (`Ethernet1/2/3`) or a single number.
const EOS_TYPES: [(&str, bool); 2] = [("Ethernet", true), ("Port-Channel", false)];

/// Canonical EOS interface name of `raw`, or why it is not one.
fn eos(raw: &str) -> Result<PortName, String> {
    let split = raw.find(|c: char| c.is_ascii_digit()).ok_or("it has no interface number")?;
    let (prefix, number) = raw.split_at(split);
    let lower = prefix.to_ascii_lowercase();
    // EOS accepts any unambiguous prefix of the type name; two letters are always enough here.
    let (canonical, path) = EOS_TYPES
        .iter()
        .find(|(name, _)| lower.len() >= 2 && name.to_ascii_lowercase().starts_with(&lower))
        .ok_or_else(|| format!("`{prefix}` is not a trunk-capable interface type (Ethernet, Port-Channel)"))?;
    let (main, sub) = match number.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (number, None),
    };
    let parts: Vec<&str> = main.split('/').collect();
    if parts.len() > if *path { 3 } else { 1 } {
        return Err(format!("`{number}` has too many `/` parts for {canonical}"));
    }
    let mut out = String::from(*canonical);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&eos_number(p, number)?.to_string());
    }
    if let Some(s) = sub {
        out.push('.');
        out.push_str(&eos_number(s, number)?.to_string());
    }
    Ok(PortName(out))
}

fn eos_number(p: &str, whole: &str) -> Result<u32, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if p.contains('-') {
            format!("`{whole}` is a range (EOS would expand it to several interfaces)")
        } else {
            format!("`{whole}` is not an interface number (digits separated by `/`, then an optional `.N`)")
        });
    }
    p.parse().map_err(|_| format!("`{p}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eos_ok(raw: &str) -> String {
        PortName::parse(Grammar::Eos, raw).unwrap().to_string()
    }

    fn eos_err(raw: &str) -> String {
        PortName::parse(Grammar::Eos, raw).unwrap_err().to_string()
    }

    #[test]
    fn eos_spellings_of_one_interface_are_one_name() {
        for raw in ["Ethernet1/1", "Et1/1", "ethernet1/1", "ETH1/1", "eth01/1"] {
            assert_eq!(eos_ok(raw), "Ethernet1/1", "{raw}");
        }
        assert_eq!(eos_ok("Po10"), "Port-Channel10");
        assert_eq!(eos_ok("port-channel10.200"), "Port-Channel10.200");
        assert_eq!(eos_ok("Ethernet3"), "Ethernet3");
    }

    #[test]
    fn eos_ranges_lists_and_other_syntax_are_refused() {
        assert!(eos_err("eth1-4").contains("range"), "{}", eos_err("eth1-4"));
        assert!(eos_err("Ethernet1/1-4").contains("range"));
        assert!(eos_err("eth1-4,eth9").contains("`,`"));
        assert!(eos_err("Ethernet1 ").contains("whitespace"));
        assert!(eos_err("Ethernet1\nshow run").contains("control"));
        assert!(eos_err("Management1").contains("not a trunk-capable"));
        assert!(eos_err("Vlan10").contains("not a trunk-capable"));
        assert!(eos_err("Ethernet").contains("no interface number"));
        assert!(eos_err("Po1/2").contains("too many"));
        assert!(eos_err(&format!("Ethernet{}", "1".repeat(80))).contains("the limit is 64"));
    }

    #[test]
    fn ovs_names_are_literal_and_refuse_separators() {
        let p = PortName::parse(Grammar::Ovs, "Ethernet1/1").unwrap();
        assert_eq!(p.as_str(), "Ethernet1/1");
        assert_eq!(PortName::parse(Grammar::Ovs, "vnet-1").unwrap().as_str(), "vnet-1");
        assert_ne!(PortName::parse(Grammar::Ovs, "p1").unwrap(), PortName::parse(Grammar::Ovs, "P1").unwrap());
        for bad in ["p1,p2", "p 1", "p1\n", "-p1", "p1;ls", "p1\"", ""] {
            assert!(PortName::parse(Grammar::Ovs, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_show_the_name_escaped_and_cut() {
        let e = PortName::parse(Grammar::Ovs, &format!("x\n{}", "y".repeat(200))).unwrap_err();
        assert!(e.shown.starts_with("\"x\\n") && e.shown.ends_with('…'), "{}", e.shown);
        assert!(e.shown.len() < 80);
    }

    #[test]
    fn deserialize_validates() {
        let bad: Result<PortName, _> = serde_json_like("p1,p2");
        assert!(bad.is_err());
        assert_eq!(serde_json_like("Ethernet1").unwrap().as_str(), "Ethernet1");
    }

    fn serde_json_like(s: &str) -> Result<PortName, bincode::error::DecodeError> {
        let bytes = bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap();
        bincode::serde::decode_from_slice::<PortName, _>(&bytes, bincode::config::standard()).map(|(p, _)| p)
    }
}
