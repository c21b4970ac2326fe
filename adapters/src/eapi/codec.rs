//! The Arista eAPI wire format as pure functions: the JSON-RPC 2.0 `runCmds` request, the reply
//! (results, or an error whose code and message name the failed command), and the JSON shapes
//! of `show vlan` and `show interfaces switchport` — including EOS's VLAN list notation
//! (`1-10,20`, `ALL`, `NONE`) — and, for discovery, of `show mac address-table`,
//! `show lldp neighbors detail`, `show port-channel` and `show mlag`.

use std::collections::{BTreeMap, BTreeSet};

use engine::VlanId;
use serde_json::{json, Value};

use super::{CommandError, Error, Result};

/// A reply quoted in an error: cut to a few hundred bytes (a switch's body can be megabytes).
fn shown(v: &Value) -> String {
    engine::reconciler::cut(&v.to_string(), engine::reconciler::MAX_ERROR_TEXT)
}

/// The `runCmds` request body.
pub fn run_cmds(id: &str, cmds: &[String]) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "runCmds",
        "params": { "version": 1, "cmds": cmds, "format": "json" },
        "id": id,
    })
}

/// Reads a `runCmds` reply: one result per command, or the typed error of the failed command.
/// `cmds` is the request's command list, used to name the failed command.
pub fn parse_reply(body: &[u8], cmds: &[String]) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Codec(format!("eAPI reply is not JSON: {e}")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = engine::reconciler::cut(
            err.get("message").and_then(Value::as_str).unwrap_or(""),
            engine::reconciler::MAX_ERROR_TEXT,
        );
        // `data` holds one entry per command run; the last one carries the failure's `errors`.
        let data = err.get("data").and_then(Value::as_array);
        let index = data.map(|d| d.len().saturating_sub(1)).unwrap_or(0);
        let detail = data
            .and_then(|d| d.last())
            .and_then(|l| l.get("errors"))
            .and_then(Value::as_array)
            .map(|es| es.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .map(|d| engine::reconciler::cut(&d, engine::reconciler::MAX_ERROR_TEXT))
            .filter(|s| !s.is_empty())
            .unwrap_or(message);
        let command = cmds.get(index).cloned().unwrap_or_else(|| "<unknown command>".into());
        return Err(Error::Command { index, command, error: CommandError::from_code(code), detail });
    }
    match v.get("result") {
        Some(Value::Array(r)) if r.len() == cmds.len() => Ok(r.clone()),
        Some(Value::Array(r)) => {
            Err(Error::Codec(format!("eAPI returned {} results for {} commands", r.len(), cmds.len())))
        }
        _ => Err(Error::Codec(format!("eAPI reply has neither result nor error: {}", shown(&v)))),
    }
}

/// Parses an EOS VLAN list: `ALL`, `NONE`, or comma-separated ids and ranges (`1-10,20`).
pub fn parse_vlan_list(s: &str) -> Result<BTreeSet<VlanId>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("ALL") {
        return Ok((VlanId::MIN..=VlanId::MAX).filter_map(|n| VlanId::new(n).ok()).collect());
    }
    if s.eq_ignore_ascii_case("NONE") || s.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        let r: engine::VlanRange =
            part.trim().parse().map_err(|e| Error::Codec(format!("VLAN list `{s}`: element `{part}`: {e}")))?;
        out.extend(r.iter());
    }
    Ok(out)
}

/// Renders a VLAN set the way EOS shows it (`ALL`, `NONE`, `1-3,7`).
pub fn render_vlan_list(set: &BTreeSet<VlanId>) -> String {
    if set.is_empty() {
        return "NONE".into();
    }
    if set.len() == usize::from(VlanId::MAX) {
        return "ALL".into();
    }
    let mut parts = Vec::new();
    let mut it = set.iter().map(|v| v.get()).peekable();
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

/// Trunk-allowed VLANs per interface from `show interfaces [..] switchport`. Access-mode
/// interfaces are left out (they carry no trunk list netfold could manage).
pub fn parse_switchports(v: &Value) -> Result<BTreeMap<String, BTreeSet<VlanId>>> {
    let ports = v
        .get("switchports")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Codec(format!("`show interfaces switchport` without `switchports`: {}", shown(v))))?;
    let mut out = BTreeMap::new();
    for (name, p) in ports {
        let info =
            p.get("switchportInfo").ok_or_else(|| Error::Codec(format!("interface {name}: no switchportInfo")))?;
        if info.get("mode").and_then(Value::as_str) != Some("trunk") {
            continue;
        }
        let list = info
            .get("trunkAllowedVlans")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Codec(format!("interface {name}: no trunkAllowedVlans")))?;
        out.insert(name.clone(), parse_vlan_list(list).map_err(|e| Error::Codec(format!("interface {name}: {e}")))?);
    }
    Ok(out)
}

/// (MAC, interface) of every unicast entry of `show mac address-table`.
pub fn parse_mac_table(v: &Value) -> Result<Vec<(String, String)>> {
    let entries = v.pointer("/unicastTable/tableEntries").and_then(Value::as_array).ok_or_else(|| {
        Error::Codec(format!("`show mac address-table` without unicastTable.tableEntries: {}", shown(v)))
    })?;
    entries
        .iter()
        .map(|e| {
            let field = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| Error::Codec(format!("MAC table entry without `{k}`: {}", shown(e))))
            };
            Ok((field("macAddress")?, field("interface")?))
        })
        .collect()
}

/// (local interface, neighbour) of every neighbour of `show lldp neighbors detail`. The port ID
/// is `neighborInterfaceInfo.interfaceId_v2` (older EOS: `interfaceId`, quoted for names).
pub fn parse_lldp_detail(v: &Value) -> Result<Vec<(String, engine::discovery::LldpNeighbour)>> {
    let by_intf = v
        .get("lldpNeighbors")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Codec(format!("`show lldp neighbors detail` without lldpNeighbors: {}", shown(v))))?;
    let text = |n: &Value, k: &str| n.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let mut out = Vec::new();
    for (intf, info) in by_intf {
        let neighbours = info
            .get("lldpNeighborInfo")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Codec(format!("LLDP on {intf}: no lldpNeighborInfo list")))?;
        for n in neighbours {
            let port = n.get("neighborInterfaceInfo").cloned().unwrap_or(Value::Null);
            let port_id = text(&port, "interfaceId_v2")
                .or_else(|| text(&port, "interfaceId").map(|s| s.trim_matches('"').to_string()));
            out.push((
                intf.clone(),
                engine::discovery::LldpNeighbour {
                    chassis_id: text(n, "chassisId"),
                    port_id,
                    port_description: text(&port, "interfaceDescription"),
                    system_name: text(n, "systemName"),
                },
            ));
        }
    }
    Ok(out)
}

/// (member, port-channel) of every active or inactive member of `show port-channel`.
pub fn parse_port_channels(v: &Value) -> Result<Vec<(String, String)>> {
    let channels = v
        .get("portChannels")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Codec(format!("`show port-channel` without portChannels: {}", shown(v))))?;
    let mut out = Vec::new();
    for (pc, c) in channels {
        for key in ["activePorts", "inactivePorts"] {
            if let Some(members) = c.get(key).and_then(Value::as_object) {
                out.extend(members.keys().map(|m| (m.clone(), pc.clone())));
            }
        }
    }
    Ok(out)
}

/// The MLAG peer-link of `show mlag` (`None` while MLAG is disabled or has no peer-link).
pub fn parse_mlag_peer_link(v: &Value) -> Result<Option<String>> {
    let state = v
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Codec(format!("`show mlag` without state: {}", shown(v))))?;
    Ok(match state {
        "disabled" => None,
        _ => v.get("peerLink").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    #[test]
    fn vlan_lists_round_trip_in_eos_notation() {
        let s = parse_vlan_list("1-3,7, 10-11").unwrap();
        assert_eq!(s, [1, 2, 3, 7, 10, 11].map(v).into());
        assert_eq!(render_vlan_list(&s), "1-3,7,10-11");
        assert_eq!(parse_vlan_list("ALL").unwrap().len(), 4094);
        assert_eq!(render_vlan_list(&parse_vlan_list("ALL").unwrap()), "ALL");
        assert!(parse_vlan_list("NONE").unwrap().is_empty());
        assert!(parse_vlan_list("1,5000").unwrap_err().to_string().contains("5000"));
    }

    proptest::proptest! {
        #[test]
        fn any_vlan_set_round_trips_through_eos_notation(ids in proptest::collection::btree_set(1u16..=4094, 0..300)) {
            let set: BTreeSet<VlanId> = ids.into_iter().map(v).collect();
            proptest::prop_assert_eq!(parse_vlan_list(&render_vlan_list(&set)).unwrap(), set);
        }
    }

    #[test]
    fn error_reply_names_the_failed_command() {
        let cmds: Vec<String> = ["enable", "configure", "interface Ethernet9"].map(String::from).into();
        let body = br#"{"jsonrpc":"2.0","id":"1","error":{"code":1002,"message":"CLI command 3 of 3 'interface Ethernet9' failed: invalid command","data":[{},{},{"errors":["Interface does not exist"]}]}}"#;
        match parse_reply(body, &cmds).unwrap_err() {
            Error::Command { index, command, error, detail } => {
                assert_eq!((index, command.as_str(), error), (2, "interface Ethernet9", CommandError::Invalid));
                assert_eq!(detail, "Interface does not exist");
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn a_huge_reply_with_neither_result_nor_error_is_quoted_cut() {
        let cmds: Vec<String> = vec!["show vlan".into()];
        let body = format!(r#"{{"jsonrpc":"2.0","id":"1","junk":"{}"}}"#, "x".repeat(200_000));
        let e = parse_reply(body.as_bytes(), &cmds).unwrap_err().to_string();
        assert!(e.contains("neither result nor error") && e.contains("more bytes)"), "{}", &e[..100]);
        assert!(e.len() < 500, "{} bytes", e.len());
    }

    #[test]
    fn result_count_must_match_commands() {
        let cmds: Vec<String> = vec!["show vlan".into()];
        assert!(parse_reply(br#"{"jsonrpc":"2.0","id":"1","result":[]}"#, &cmds).is_err());
        assert!(parse_reply(b"<html>", &cmds).is_err());
    }

    #[test]
    fn switchports_keep_trunks_and_skip_access_ports() {
        let j = json!({"switchports": {
            "Ethernet1": {"enabled": true, "switchportInfo": {"mode": "trunk", "trunkAllowedVlans": "10,20-21"}},
            "Ethernet2": {"enabled": true, "switchportInfo": {"mode": "access", "trunkAllowedVlans": "ALL"}},
        }});
        let p = parse_switchports(&j).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p["Ethernet1"], [10, 20, 21].map(v).into());
    }

    #[test]
    fn discovery_shapes_parse_as_eos_sends_them() {
        let macs = json!({"unicastTable": {"tableEntries": [
            {"vlanId": 10, "macAddress": "00:50:56:00:01:00", "entryType": "dynamic", "interface": "Port-Channel10", "moves": 1, "lastMove": 1.7e9}
        ]}, "multicastTable": {"tableEntries": []}});
        assert_eq!(parse_mac_table(&macs).unwrap(), [("00:50:56:00:01:00".to_string(), "Port-Channel10".to_string())]);
        assert!(parse_mac_table(&json!({})).is_err());

        // Older EOS: no interfaceId_v2, the name quoted in interfaceId.
        let lldp = json!({"lldpNeighbors": {"Ethernet1": {"lldpNeighborInfo": [{
            "chassisIdType": "macAddress", "chassisId": "0050.5600.01ff", "systemName": "esx-01.lab",
            "neighborInterfaceInfo": {"interfaceIdType": "interfaceName", "interfaceId": "\"vmnic0\"", "interfaceDescription": ""}
        }]}, "Ethernet2": {"lldpNeighborInfo": []}}});
        let n = parse_lldp_detail(&lldp).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].0, "Ethernet1");
        assert_eq!(n[0].1.port_id.as_deref(), Some("vmnic0"));
        assert_eq!(n[0].1.port_description, None, "an empty description is none");
        assert_eq!(n[0].1.system_name.as_deref(), Some("esx-01.lab"));

        let pc = json!({"portChannels": {"Port-Channel10": {
            "activePorts": {"Ethernet3": {}}, "inactivePorts": {"Ethernet4": {}}, "recircFeature": [], "inactiveLag": false
        }}});
        assert_eq!(
            parse_port_channels(&pc).unwrap(),
            [
                ("Ethernet3".to_string(), "Port-Channel10".to_string()),
                ("Ethernet4".to_string(), "Port-Channel10".to_string())
            ]
        );
        assert_eq!(parse_mlag_peer_link(&json!({"state": "disabled"})).unwrap(), None);
        assert_eq!(
            parse_mlag_peer_link(&json!({"state": "active", "peerLink": "Port-Channel1000"})).unwrap().as_deref(),
            Some("Port-Channel1000")
        );
        assert!(parse_mlag_peer_link(&json!({})).is_err());
    }
}
