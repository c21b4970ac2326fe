//! What Open vSwitch says about its neighbours, as pure functions: the MAC learning table
//! (`fdb/show` text from ovs-vswitchd's control socket), and the OVSDB rows that name its
//! OpenFlow port numbers (`Interface.ofport`) and bonds (a `Port` with several `Interface`s).
//! [`mapping`] joins them into an [`engine::discovery::Discovery`]: each MAC on the `Port` its
//! interface belongs to — for a bond, the bond port — and every bond's members.
//!
//! OVS 3.1 has no LLDP neighbour table on the control socket (`lldp/neighbor` is "not a valid
//! command"; its LLDP code only serves Auto Attach), so an Open vSwitch reports no LLDP here.

use std::collections::BTreeMap;

use engine::discovery::Discovery;
use engine::port::{Grammar, PortName};
use serde_json::{json, Value};

use super::codec::shown;
use super::{Error, Result};

/// Where `fdb/show` says a MAC was learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdbPort {
    /// An OpenFlow port number (`Interface.ofport`).
    Number(i64),
    /// The bridge's own internal port.
    Local,
}

/// One `fdb/show` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub port: FdbPort,
    pub vlan: u16,
    pub mac: String,
}

/// Parses `fdb/show` output:
///
/// ```text
///  port  VLAN  MAC                Age
///     1     0  66:6d:a7:8a:18:9d    0
/// LOCAL     0  aa:bb:cc:dd:ee:ff    5
/// ```
///
/// The header is required (a reply without it is not a MAC table); a line that does not parse
/// is an error naming it.
pub fn parse_fdb(text: &str) -> Result<Vec<FdbEntry>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().map(|l| l.split_whitespace().collect()).unwrap_or_default();
    if header.len() < 3 || header[0] != "port" || header[1] != "VLAN" || header[2] != "MAC" {
        return Err(Error::Codec(format!("fdb/show answered without its header: {}", shown(&text))));
    }
    lines
        .map(|line| {
            let bad = || Error::Codec(format!("fdb/show line {} does not parse", shown(&line)));
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [port, vlan, mac, ..] = cols.as_slice() else { return Err(bad()) };
            let port = match *port {
                "LOCAL" => FdbPort::Local,
                n => FdbPort::Number(n.parse().map_err(|_| bad())?),
            };
            let vlan = vlan.parse().map_err(|_| bad())?;
            let mac = engine::topology::normalize_mac(mac).ok_or_else(bad)?;
            Ok(FdbEntry { port, vlan, mac })
        })
        .collect()
}

/// `select` of every interface's uuid, name and OpenFlow port number.
pub fn select_interfaces() -> Value {
    json!({ "op": "select", "table": "Interface", "where": [], "columns": ["_uuid", "name", "ofport"] })
}

/// `select` of every port's name and interfaces (uuids).
pub fn select_port_interfaces() -> Value {
    json!({ "op": "select", "table": "Port", "where": [], "columns": ["name", "interfaces"] })
}

/// `select` of every bridge's name.
pub fn select_bridges() -> Value {
    json!({ "op": "select", "table": "Bridge", "where": [], "columns": ["name"] })
}

fn uuid(v: &Value) -> Option<String> {
    match v.as_array()?.as_slice() {
        [tag, id] if tag == "uuid" => id.as_str().map(str::to_string),
        _ => None,
    }
}

/// The uuids of a set of references: `["uuid","x"]` or `["set",[["uuid","x"],...]]`.
fn uuid_set(v: &Value) -> Result<Vec<String>> {
    if let Some(u) = uuid(v) {
        return Ok(vec![u]);
    }
    match v.as_array().map(Vec::as_slice) {
        Some([tag, members]) if tag == "set" => members
            .as_array()
            .ok_or_else(|| Error::Codec(format!("uuid set members are not an array: {}", shown(members))))?
            .iter()
            .map(|m| uuid(m).ok_or_else(|| Error::Codec(format!("uuid set member {} is not a uuid", shown(m)))))
            .collect(),
        _ => Err(Error::Codec(format!("expected a set of uuids, got {}", shown(v)))),
    }
}

fn name(row: &Value, table: &str) -> Result<String> {
    row.get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Codec(format!("{table} row without a string name: {}", shown(row))))
}

/// Interface rows → (uuid → (name, ofport)); an interface without an OpenFlow port yet
/// (`ofport` an empty set, or -1 when it failed) has none.
pub fn decode_interfaces(rows: &[Value]) -> Result<BTreeMap<String, (String, Option<i64>)>> {
    rows.iter()
        .map(|row| {
            let id = row
                .get("_uuid")
                .and_then(uuid)
                .ok_or_else(|| Error::Codec(format!("Interface row without a uuid: {}", shown(row))))?;
            let ofport = row.get("ofport").and_then(Value::as_i64).filter(|n| *n >= 0);
            Ok((id, (name(row, "Interface")?, ofport)))
        })
        .collect()
}

/// Port rows → (port name → its interfaces' uuids).
pub fn decode_ports(rows: &[Value]) -> Result<BTreeMap<String, Vec<String>>> {
    rows.iter()
        .map(|row| {
            let interfaces = row
                .get("interfaces")
                .ok_or_else(|| Error::Codec(format!("Port row without interfaces: {}", shown(row))))?;
            Ok((name(row, "Port")?, uuid_set(interfaces)?))
        })
        .collect()
}

/// Bridge rows → bridge names.
pub fn decode_bridges(rows: &[Value]) -> Result<Vec<String>> {
    rows.iter().map(|row| name(row, "Bridge")).collect()
}

/// Joins the MAC tables with the ports: each MAC on the `Port` of the interface whose ofport
/// `fdb/show` names (the bridge's LOCAL port and unknown numbers are left out), and each bond
/// (a port with more than one interface) with its members. Names the OVS grammar refuses are
/// left out (netfold could not configure them anyway).
pub fn mapping(
    fdb: &[FdbEntry],
    interfaces: &BTreeMap<String, (String, Option<i64>)>,
    ports: &BTreeMap<String, Vec<String>>,
) -> Discovery {
    let parse = |s: &str| PortName::parse(Grammar::Ovs, s).ok();
    let mut by_ofport: BTreeMap<i64, PortName> = BTreeMap::new();
    let mut bonds = Vec::new();
    for (port, ifaces) in ports {
        let Some(port_name) = parse(port) else { continue };
        for id in ifaces {
            let Some((iface, ofport)) = interfaces.get(id) else { continue };
            if let Some(n) = ofport {
                by_ofport.insert(*n, port_name.clone());
            }
            if ifaces.len() > 1 {
                if let Some(member) = parse(iface) {
                    bonds.push((member, port_name.clone()));
                }
            }
        }
    }
    let macs = fdb
        .iter()
        .filter_map(|e| match e.port {
            FdbPort::Number(n) => by_ofport.get(&n).map(|p| (e.mac.clone(), p.clone())),
            FdbPort::Local => None,
        })
        .collect();
    Discovery { macs, lldp: Vec::new(), bonds }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As OVS 3.1 answered in a lab (a bond of dvhc+dvhd is port 3/4).
    const FDB: &str = " port  VLAN  MAC                Age\n    2     0  ca:7f:21:28:78:f2    3\n    3     0  7a:5f:d5:1c:33:55    2\n    1     0  66:6d:a7:8a:18:9d    2\nLOCAL     0  0e:00:00:00:00:01    1\n";

    #[test]
    fn fdb_show_parses_numbers_local_and_normalizes_macs() {
        let e = parse_fdb(FDB).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0], FdbEntry { port: FdbPort::Number(2), vlan: 0, mac: "ca:7f:21:28:78:f2".into() });
        assert_eq!(e[3].port, FdbPort::Local);
        assert!(parse_fdb(" port  VLAN  MAC                Age\n").unwrap().is_empty());
        assert!(parse_fdb("no such bridge").is_err());
        let e = parse_fdb(" port  VLAN  MAC  Age\n  x  0  66:6d:a7:8a:18:9d 1\n").unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
    }

    #[test]
    fn macs_land_on_their_port_and_bond_members_on_the_bond() {
        let interfaces = decode_interfaces(&[
            json!({"_uuid": ["uuid", "i1"], "name": "dvha", "ofport": 1}),
            json!({"_uuid": ["uuid", "i2"], "name": "dvhb", "ofport": 2}),
            json!({"_uuid": ["uuid", "i3"], "name": "dvhc", "ofport": 3}),
            json!({"_uuid": ["uuid", "i4"], "name": "dvhd", "ofport": 4}),
            json!({"_uuid": ["uuid", "i5"], "name": "new", "ofport": ["set", []]}),
        ])
        .unwrap();
        assert_eq!(interfaces["i5"], ("new".to_string(), None));
        let ports = decode_ports(&[
            json!({"name": "dvha", "interfaces": ["uuid", "i1"]}),
            json!({"name": "dvhb", "interfaces": ["set", [["uuid", "i2"]]]}),
            json!({"name": "bond0", "interfaces": ["set", [["uuid", "i3"], ["uuid", "i4"]]]}),
        ])
        .unwrap();
        let d = mapping(&parse_fdb(FDB).unwrap(), &interfaces, &ports);
        let macs: Vec<(String, String)> = d.macs.iter().map(|(m, p)| (m.clone(), p.to_string())).collect();
        assert_eq!(
            macs,
            [
                ("ca:7f:21:28:78:f2".to_string(), "dvhb".to_string()),
                ("7a:5f:d5:1c:33:55".to_string(), "bond0".to_string()),
                ("66:6d:a7:8a:18:9d".to_string(), "dvha".to_string()),
            ]
        );
        let bonds: Vec<(String, String)> = d.bonds.iter().map(|(m, b)| (m.to_string(), b.to_string())).collect();
        assert_eq!(bonds, [("dvhc".to_string(), "bond0".to_string()), ("dvhd".to_string(), "bond0".to_string())]);
    }

    #[test]
    fn bad_rows_are_errors_naming_the_table() {
        assert!(decode_ports(&[json!({"name": "p"})]).unwrap_err().to_string().contains("Port row without interfaces"));
        assert!(decode_interfaces(&[json!({"name": "i"})]).unwrap_err().to_string().contains("without a uuid"));
        assert!(decode_ports(&[json!({"name": "p", "interfaces": ["set", [1]]})]).is_err());
    }
}
