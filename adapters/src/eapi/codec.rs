//! The Arista eAPI wire format as pure functions: the JSON-RPC 2.0 `runCmds` request, the reply
//! (results, or an error whose code and message name the failed command), and the JSON shapes
//! of `show vlan` and `show interfaces switchport` — including EOS's VLAN list notation
//! (`1-10,20`, `ALL`, `NONE`).

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
}
