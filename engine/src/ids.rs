//! Identifiers of the domain: hypervisors, their kind, VLAN ids and switch ports.
//!
//! Every value here is validated when it is built, so the rest of the engine (and the log) never
//! holds a VLAN of 0 or 4095 or an empty name.

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The configured, unique name of a hypervisor manager (`xen217`, `vc-east`).
/// Every event carries one; kept inline when short (as a vNIC's strings: [`crate::fact::VnicFact`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HypervisorId(CompactString);

impl HypervisorId {
    /// A hypervisor id; empty names and names with whitespace or control characters are refused.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IdError::HypervisorName(name));
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HypervisorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HypervisorId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

/// The kind of hypervisor manager. Rendered `VMware` / `Xen-Citrix` in operator log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    VMware,
    XenCitrix,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::VMware => "VMware",
            Kind::XenCitrix => "Xen-Citrix",
        })
    }
}

impl FromStr for Kind {
    type Err = IdError;
    /// Accepts the display form and the config spellings (`vmware`, `xen`, `xen-citrix`).
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.to_ascii_lowercase().as_str() {
            "vmware" | "vsphere" | "vcenter" => Ok(Kind::VMware),
            "xen-citrix" | "xencitrix" | "xen" | "xenserver" | "xcp-ng" => Ok(Kind::XenCitrix),
            _ => Err(IdError::Kind(s.to_string())),
        }
    }
}

/// An 802.1Q VLAN id, 1..=4094 (0 and 4095 are reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct VlanId(u16);

impl VlanId {
    pub const MIN: u16 = 1;
    pub const MAX: u16 = 4094;

    pub fn new(id: u16) -> Result<Self, IdError> {
        if (Self::MIN..=Self::MAX).contains(&id) {
            Ok(Self(id))
        } else {
            Err(IdError::Vlan(i64::from(id)))
        }
    }

    /// Any integer type that may hold an out-of-range value (vendor data arrives as i64, u32...).
    pub fn from_int(id: i64) -> Result<Self, IdError> {
        u16::try_from(id).ok().and_then(|v| Self::new(v).ok()).ok_or(IdError::Vlan(id))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for VlanId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = u16::deserialize(d)?;
        VlanId::new(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<u16> for VlanId {
    type Error = IdError;
    fn try_from(v: u16) -> Result<Self, IdError> {
        Self::new(v)
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for VlanId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let n: i64 = s.trim().parse().map_err(|_| IdError::VlanText(s.to_string()))?;
        Self::from_int(n)
    }
}

/// An inclusive range of VLAN ids, `first <= last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VlanRange {
    first: VlanId,
    last: VlanId,
}

impl VlanRange {
    pub fn new(first: VlanId, last: VlanId) -> Result<Self, IdError> {
        if first > last {
            return Err(IdError::Range(first.get(), last.get()));
        }
        Ok(Self { first, last })
    }

    pub fn single(v: VlanId) -> Self {
        Self { first: v, last: v }
    }

    pub fn first(&self) -> VlanId {
        self.first
    }

    pub fn last(&self) -> VlanId {
        self.last
    }

    pub fn contains(&self, v: VlanId) -> bool {
        self.first <= v && v <= self.last
    }

    pub fn iter(&self) -> impl Iterator<Item = VlanId> {
        (self.first.get()..=self.last.get()).map(VlanId)
    }
}

impl fmt::Display for VlanRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for VlanRange {
    type Err = IdError;
    /// `120` or `100-199`.
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.split_once('-') {
            Some((a, b)) => Self::new(a.parse()?, b.parse()?),
            None => Ok(Self::single(s.parse()?)),
        }
    }
}

/// A port on a managed switch: `tor1` + `ethernet1/1/3`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SwitchPort {
    pub switch: String,
    pub port: String,
}

impl SwitchPort {
    pub fn new(switch: impl Into<String>, port: impl Into<String>) -> Result<Self, IdError> {
        let (switch, port) = (switch.into(), port.into());
        if switch.is_empty() || port.is_empty() {
            return Err(IdError::Port(format!("{switch}:{port}")));
        }
        Ok(Self { switch, port })
    }
}

impl fmt::Display for SwitchPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.switch, self.port)
    }
}

impl FromStr for SwitchPort {
    type Err = IdError;
    /// `SWITCH:PORT`, split at the first colon (ports may contain `/` but switch names no `:`).
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (switch, port) = s.split_once(':').ok_or_else(|| IdError::Port(s.to_string()))?;
        Self::new(switch, port)
    }
}

/// A value that is not a valid identifier; says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("VLAN {0} is out of range: a VLAN id must be 1..=4094 (0 and 4095 are reserved)")]
    /// The value as received (`-1` stays -1).
    Vlan(i64),
    #[error("`{0}` is not a VLAN id: expected a number 1..=4094")]
    VlanText(String),
    #[error("VLAN range {0}-{1} is reversed: the first id must not exceed the last")]
    Range(u16, u16),
    #[error("hypervisor name `{0}` is invalid: it must be non-empty, without spaces")]
    HypervisorName(String),
    #[error("hypervisor kind `{0}` is unknown: expected `vmware` or `xen-citrix`")]
    Kind(String),
    #[error("switch port `{0}` is invalid: expected SWITCH:PORT, both non-empty")]
    Port(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_zero_and_4095_are_refused() {
        assert_eq!(VlanId::new(0), Err(IdError::Vlan(0)));
        assert_eq!(VlanId::new(4095), Err(IdError::Vlan(4095)));
        assert_eq!(VlanId::from_int(-1), Err(IdError::Vlan(-1)));
        assert!(IdError::Vlan(-1).to_string().starts_with("VLAN -1 is out of range"));
        assert!(VlanId::from_int(70000).is_err());
        assert_eq!(VlanId::new(4094).unwrap().get(), 4094);
    }

    #[test]
    fn vlan_deserialize_validates() {
        let bytes = bincode::serde::encode_to_vec(0u16, bincode::config::standard()).unwrap();
        let r: Result<(VlanId, usize), _> = bincode::serde::decode_from_slice(&bytes, bincode::config::standard());
        assert!(r.is_err());
    }

    #[test]
    fn kind_renders_as_operators_know_it() {
        assert_eq!(Kind::VMware.to_string(), "VMware");
        assert_eq!(Kind::XenCitrix.to_string(), "Xen-Citrix");
    }

    #[test]
    fn switch_port_parses_at_first_colon() {
        let p: SwitchPort = "tor1:ethernet1/1/3".parse().unwrap();
        assert_eq!(p.switch, "tor1");
        assert_eq!(p.port, "ethernet1/1/3");
        assert!("tor1".parse::<SwitchPort>().is_err());
    }

    #[test]
    fn ranges_parse_and_validate() {
        let r: VlanRange = "100-102".parse().unwrap();
        assert_eq!(r.iter().count(), 3);
        assert!("102-100".parse::<VlanRange>().is_err());
        assert!("0-10".parse::<VlanRange>().is_err());
    }
}
