//! A fencing token the switch checks itself (ADR 0012). The writer's lease token is kept in the
//! `Open_vSwitch` row's `external_ids` under [`KEY`]. Every transaction that changes the
//! switch starts with a `wait` for that exact pair (RFC 7047 5.2.6, timeout 0), so once a newer
//! holder has put its token there, an older holder's transactions abort in ovsdb-server. That
//! holds even for one sent before its process froze and delivered after.
//!
//! Taking the fence is a compare-and-swap in one transaction, and it never lowers the token.
//! The token read is removed (`delete` of that pair), the writer's is inserted (`insert` leaves
//! an existing key alone), and a `wait` checks the writer's pair is there. If another writer
//! changed the fence in between, the `wait` fails and nothing is changed. A token lower than the
//! one read is refused before anything is sent.

use serde_json::{json, Value};

use super::{Error, Result};

/// The `external_ids` key of the `Open_vSwitch` row holding the fencing token.
pub const KEY: &str = "netfold-fence";

fn pair(token: u64) -> Value {
    json!(["map", [[KEY, token.to_string()]]])
}

/// `select` of the `Open_vSwitch` row's `external_ids`.
pub fn select() -> Value {
    json!({ "op": "select", "table": "Open_vSwitch", "where": [], "columns": ["external_ids"] })
}

/// Aborts the transaction unless the fence holds `token`.
pub fn check(token: u64) -> Value {
    json!({
        "op": "wait", "timeout": 0, "table": "Open_vSwitch",
        "where": [["external_ids", "includes", pair(token)]],
        "columns": [], "until": "==", "rows": [{}]
    })
}

/// The operations that move the fence from `current` (as read) to `token`.
pub fn take(current: Option<u64>, token: u64) -> Vec<Value> {
    let mutate = |how: &str, t: u64| json!({ "op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["external_ids", how, pair(t)]] });
    let mut ops: Vec<Value> = current.filter(|c| *c != token).map(|c| mutate("delete", c)).into_iter().collect();
    ops.push(mutate("insert", token));
    ops.push(check(token));
    ops
}

/// The token in a [`select`] reply: `None` when the key is absent.
pub fn decode(rows: &[Value]) -> Result<Option<u64>> {
    let [row] = rows else {
        return Err(Error::Codec(format!("{} Open_vSwitch rows, expected one", rows.len())));
    };
    let pairs = match &row["external_ids"] {
        Value::Array(a) if a.len() == 2 && a[0] == "map" => a[1].as_array().cloned().unwrap_or_default(),
        other => {
            return Err(Error::Codec(format!("Open_vSwitch external_ids is not a map: {}", super::codec::shown(other))))
        }
    };
    let Some(value) = pairs.iter().find(|p| p[0] == KEY).map(|p| p[1].clone()) else { return Ok(None) };
    value.as_str().and_then(|v| v.parse().ok()).map(Some).ok_or_else(|| {
        Error::Codec(format!(
            "Open_vSwitch external_ids:{KEY} is {}, not a fencing token: remove it (`ovs-vsctl remove Open_vSwitch . external_ids {KEY}`) only once no older netfold can write",
            super::codec::shown(&value)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_read_from_the_external_ids_map() {
        let row = |m: Value| vec![json!({ "external_ids": m })];
        assert_eq!(decode(&row(json!(["map", []]))).unwrap(), None);
        assert_eq!(decode(&row(json!(["map", [["system-id", "x"], [KEY, "7"]]]))).unwrap(), Some(7));
        let e = decode(&row(json!(["map", [[KEY, "seven"]]]))).unwrap_err().to_string();
        assert!(e.contains("not a fencing token") && e.contains("\"seven\""), "{e}");
        assert!(decode(&[]).unwrap_err().to_string().contains("0 Open_vSwitch rows"));
    }

    #[test]
    fn taking_the_fence_deletes_the_token_read_inserts_its_own_and_checks_it() {
        let ops = take(Some(3), 4);
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0]["mutations"][0], json!(["external_ids", "delete", ["map", [[KEY, "3"]]]]));
        assert_eq!(ops[1]["mutations"][0], json!(["external_ids", "insert", ["map", [[KEY, "4"]]]]));
        assert_eq!(ops[2], check(4));
        assert_eq!(take(None, 1).len(), 2, "nothing to delete on a switch never fenced");
        assert_eq!(take(Some(4), 4).len(), 2, "its own token is kept, not deleted");
    }
}
