//! The OVSDB wire format (RFC 7047), as pure functions: framing of back-to-back JSON-RPC
//! messages ([`JsonFrames`], a resumable `tokio_util` decoder with a message size limit),
//! classification of incoming messages, the `transact` operations netfold sends, and
//! decoding of OVSDB datum notation (`["set",[...]]`, bare atoms for one-element sets).
//!
//! Nothing here touches a socket; [`super::client`] owns the connection.

use std::collections::{BTreeMap, BTreeSet};

use engine::port::PortName;
use engine::VlanId;
use serde_json::{json, Value};
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::{Error, Result};

/// The database netfold manages.
pub const DB: &str = "Open_vSwitch";

/// Server data quoted in an error: cut to a few hundred bytes (a row can be megabytes).
pub fn shown(v: &impl std::fmt::Display) -> String {
    engine::reconciler::cut(&v.to_string(), engine::reconciler::MAX_ERROR_TEXT)
}

/// The default largest message netfold reads from an OVSDB server (bytes).
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Splits the byte stream into JSON-RPC messages. OVSDB sends them back to back without a
/// delimiter, so this scans for the end of the top-level object or array (tracking strings and
/// escapes) and resumes where it stopped when more bytes arrive: each byte is looked at once,
/// however the message is split into reads. A message that grows past `max` bytes without
/// ending is [`Error::MessageTooLarge`] (the connection is then dropped), so a peer cannot make
/// netfold buffer without bound.
#[derive(Debug)]
pub struct JsonFrames {
    max: usize,
    /// Bytes of the current message already scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonFrames {
    pub fn new(max: usize) -> Self {
        Self { max, scanned: 0, depth: 0, in_string: false, escaped: false }
    }
}

impl Decoder for JsonFrames {
    type Item = Value;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Value>> {
        if self.scanned == 0 {
            let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            buf.advance(ws);
            match buf.first() {
                None => return Ok(None),
                Some(b'{' | b'[') => {}
                Some(&other) => {
                    return Err(Error::Codec(format!(
                        "malformed JSON-RPC stream from the server: a message starts with {:?}",
                        char::from(other)
                    )))
                }
            }
        }
        let mut end = None;
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            self.scanned = buf.len();
            if buf.len() > self.max {
                return Err(Error::MessageTooLarge { limit: self.max });
            }
            return Ok(None);
        };
        if end > self.max {
            return Err(Error::MessageTooLarge { limit: self.max });
        }
        *self = JsonFrames::new(self.max);
        let frame = buf.split_to(end);
        serde_json::from_slice(&frame)
            .map(Some)
            .map_err(|e| Error::Codec(format!("malformed JSON-RPC message from the server: {e}")))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Value>> {
        match self.decode(buf)? {
            Some(v) => Ok(Some(v)),
            None if buf.iter().all(u8::is_ascii_whitespace) => Ok(None),
            None => {
                Err(Error::Disconnected(format!("the server closed the connection {} bytes into a message", buf.len())))
            }
        }
    }
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// The answer to one of our requests.
    Response { id: u64, result: Value, error: Value },
    /// A request from the server (`echo`): must be answered with the same `id`.
    Request { id: Value, method: String, params: Value },
    /// A notification (`update` from a monitor).
    Notification { method: String, params: Value },
}

/// Classifies one JSON-RPC message.
pub fn classify(msg: Value) -> Result<Incoming> {
    let Value::Object(mut m) = msg else {
        return Err(Error::Codec(format!("JSON-RPC message is not an object: {}", shown(&msg))));
    };
    let id = m.remove("id").unwrap_or(Value::Null);
    match m.remove("method") {
        Some(Value::String(method)) => {
            let params = m.remove("params").unwrap_or(Value::Null);
            if id.is_null() {
                Ok(Incoming::Notification { method, params })
            } else {
                Ok(Incoming::Request { id, method, params })
            }
        }
        Some(other) => Err(Error::Codec(format!("JSON-RPC method is not a string: {}", shown(&other)))),
        None => {
            let id = id
                .as_u64()
                .ok_or_else(|| Error::Codec(format!("response with an id we never sent: {}", shown(&id))))?;
            Ok(Incoming::Response {
                id,
                result: m.remove("result").unwrap_or(Value::Null),
                error: m.remove("error").unwrap_or(Value::Null),
            })
        }
    }
}

/// A request with our numeric `id`.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({ "id": id, "method": method, "params": params })
}

/// The reply to a server request (`echo` answers with its own params).
pub fn reply(id: Value, result: Value) -> Value {
    json!({ "id": id, "result": result, "error": null })
}

/// `monitor` on the `Port` table (name and trunks), so any change to a port is announced.
pub fn monitor_ports_params(monitor_id: &str) -> Value {
    json!([DB, monitor_id, { "Port": { "columns": ["name", "trunks"] } }])
}

/// A set datum.
pub fn int_set(values: impl IntoIterator<Item = i64>) -> Value {
    json!(["set", values.into_iter().collect::<Vec<_>>()])
}

/// `select` of every port's name and trunks.
pub fn select_ports() -> Value {
    json!({ "op": "select", "table": "Port", "where": [], "columns": ["name", "trunks"] })
}

/// `select` of one port's trunks (the state a transaction starts from).
pub fn select_port(port: &PortName) -> Value {
    json!({ "op": "select", "table": "Port", "where": [["name", "==", port.as_str()]], "columns": ["name", "trunks"] })
}

/// Adds `vlan` to `port`'s trunks — only if it is not there yet and only if the trunk list is
/// not empty (an empty list means *all* VLANs: adding one would narrow an open port).
pub fn add_vlan(port: &PortName, vlan: VlanId) -> Value {
    let port = port.as_str();
    let v = int_set([i64::from(vlan.get())]);
    json!({
        "op": "mutate", "table": "Port",
        "where": [["name", "==", port], ["trunks", "excludes", v], ["trunks", "!=", ["set", []]]],
        "mutations": [["trunks", "insert", v]],
    })
}

/// Removes `vlan` from `port`'s trunks, guarded so the list never becomes empty: a first
/// mutation inserts the parking VLAN only when `vlan` is the sole member, then `vlan` is
/// deleted if it is still there. Both run in one transaction (atomic).
pub fn remove_vlan(port: &PortName, vlan: VlanId, parking: VlanId) -> [Value; 2] {
    let port = port.as_str();
    let v = int_set([i64::from(vlan.get())]);
    [
        json!({
            "op": "mutate", "table": "Port",
            "where": [["name", "==", port], ["trunks", "==", v]],
            "mutations": [["trunks", "insert", int_set([i64::from(parking.get())])]],
        }),
        json!({
            "op": "mutate", "table": "Port",
            "where": [["name", "==", port], ["trunks", "includes", v]],
            "mutations": [["trunks", "delete", v]],
        }),
    ]
}

/// Bumps `Open_vSwitch.next_cfg`, as `ovs-vsctl` does: ovs-vswitchd reconfigures its bridges
/// when it sees `next_cfg` move, so without this a `trunks` change sits in the database without
/// reaching the datapath (observed with the userspace datapath of OVS 3.1).
pub fn bump_next_cfg() -> Value {
    json!({ "op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]] })
}

/// A `comment` operation (RFC 7047 5.2.10): ovsdb-server logs it with the transaction.
pub fn comment(text: &str) -> Value {
    json!({ "op": "comment", "comment": text })
}

/// `transact` params for `ops`.
pub fn transact_params(ops: Vec<Value>) -> Value {
    let mut p = vec![Value::String(DB.to_string())];
    p.extend(ops);
    Value::Array(p)
}

/// The result of one operation inside a `transact` reply.
#[derive(Clone, Debug, PartialEq)]
pub enum OpReply {
    /// `{"count": n}` of a mutate.
    Count(u64),
    /// `{"rows": [...]}` of a select.
    Rows(Vec<Value>),
    /// `{"error": "...", "details": "..."}`: this operation failed and the transaction aborted.
    Error(String),
    /// `null` (not executed because an earlier operation failed) or `{}`.
    Other,
}

/// Splits a `transact` result array into per-operation replies. The array may be longer than the
/// request (a commit error is appended) and holds `null` for operations not executed.
pub fn op_replies(result: &Value) -> Result<Vec<OpReply>> {
    let arr =
        result.as_array().ok_or_else(|| Error::Codec(format!("transact result is not an array: {}", shown(result))))?;
    Ok(arr
        .iter()
        .map(|r| {
            if let Some(e) = r.get("error") {
                let error = e.as_str().unwrap_or("unknown error");
                let details = r.get("details").and_then(Value::as_str).unwrap_or("");
                OpReply::Error(shown(&if details.is_empty() {
                    error.to_string()
                } else {
                    format!("{error}: {details}")
                }))
            } else if let Some(c) = r.get("count").and_then(Value::as_u64) {
                OpReply::Count(c)
            } else if let Some(rows) = r.get("rows").and_then(Value::as_array) {
                OpReply::Rows(rows.clone())
            } else {
                OpReply::Other
            }
        })
        .collect())
}

/// Decodes a set of integers: `["set",[1,2]]`, `["set",[]]` or a bare atom `5`.
pub fn decode_int_set(v: &Value) -> Result<BTreeSet<i64>> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(|i| BTreeSet::from([i]))
            .ok_or_else(|| Error::Codec(format!("set atom {n} is not an integer"))),
        Value::Array(a) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .ok_or_else(|| Error::Codec(format!("set members are not an array: {}", shown(&a[1]))))?
            .iter()
            .map(|m| m.as_i64().ok_or_else(|| Error::Codec(format!("set member {} is not an integer", shown(m)))))
            .collect(),
        other => Err(Error::Codec(format!("expected an integer set, got {}", shown(other)))),
    }
}

/// Decodes trunks into VLAN ids. OVS allows 0..=4095 in `trunks`; the reserved ids are reported
/// as an error naming the port.
pub fn decode_trunks(port: &str, v: &Value) -> Result<BTreeSet<VlanId>> {
    decode_int_set(v)?
        .into_iter()
        .map(|i| VlanId::from_int(i).map_err(|e| Error::Codec(format!("port {port}: trunks holds {i}: {e}"))))
        .collect()
}

/// Decodes `select` rows (`name`, `trunks`) into trunk sets per port name.
pub fn decode_port_rows(rows: &[Value]) -> Result<BTreeMap<String, BTreeSet<VlanId>>> {
    rows.iter()
        .map(|row| {
            let name = row
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Codec(format!("Port row without a string name: {}", shown(row))))?;
            let trunks =
                row.get("trunks").ok_or_else(|| Error::Codec(format!("Port {} row has no trunks", shown(&name))))?;
            Ok((name.to_string(), decode_trunks(name, trunks)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_decode_from_bare_atoms_and_set_notation() {
        assert_eq!(decode_int_set(&json!(7)).unwrap(), BTreeSet::from([7]));
        assert_eq!(decode_int_set(&json!(["set", []])).unwrap(), BTreeSet::new());
        assert_eq!(decode_int_set(&json!(["set", [3, 1]])).unwrap(), BTreeSet::from([1, 3]));
        assert!(decode_int_set(&json!("x")).is_err());
        assert!(decode_int_set(&json!(["set", ["a"]])).is_err());
    }

    #[test]
    fn reserved_vlan_in_trunks_is_an_error_naming_the_port() {
        let e = decode_trunks("p1", &json!(["set", [0, 5]])).unwrap_err();
        assert!(e.to_string().contains("p1"), "{e}");
    }

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Result<Value>> {
        let mut codec = JsonFrames::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(v)) => out.push(Ok(v)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn frames_split_back_to_back_and_resume_across_reads() {
        let stream = br#"{"id":1,"result":["}{\"x"],"error":null} {"method":"echo","params":[],"id":"echo"}"#;
        // Every split of the stream into two reads gives the same two messages.
        for cut in 0..stream.len() {
            let got = frames(1024, &[&stream[..cut], &stream[cut..]]);
            let got: Vec<Value> = got.into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0]["result"][0], "}{\"x");
            assert_eq!(got[1]["method"], "echo");
        }
        assert!(frames(1024, &[b"}garbage"])[0].is_err());
    }

    #[test]
    fn a_message_past_the_limit_is_refused_naming_the_limit() {
        let mut chunks: Vec<Vec<u8>> = vec![br#"{"id":1,"result":[""#.to_vec()];
        chunks.extend(std::iter::repeat_n(vec![b'a'; 1000], 10));
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let got = frames(4096, &refs);
        let e = got.last().unwrap().as_ref().unwrap_err();
        assert!(e.to_string().contains("4096-byte limit"), "{e}");
    }

    #[test]
    fn messages_classify() {
        assert_eq!(
            classify(json!({"id":"echo","method":"echo","params":[]})).unwrap(),
            Incoming::Request { id: json!("echo"), method: "echo".into(), params: json!([]) }
        );
        assert!(matches!(
            classify(json!({"id":null,"method":"update","params":[1,{}]})).unwrap(),
            Incoming::Notification { .. }
        ));
        assert!(matches!(
            classify(json!({"id":4,"result":[],"error":null})).unwrap(),
            Incoming::Response { id: 4, .. }
        ));
        assert!(classify(json!([1])).is_err());
    }

    #[test]
    fn transact_errors_surface_per_operation() {
        let r = json!([{"rows":[]}, {"count":1}, {"error":"constraint violation","details":"bad"}, null]);
        assert_eq!(
            op_replies(&r).unwrap(),
            vec![
                OpReply::Rows(vec![]),
                OpReply::Count(1),
                OpReply::Error("constraint violation: bad".into()),
                OpReply::Other
            ]
        );
    }

    #[test]
    fn removal_guards_against_an_empty_trunk_list() {
        let p1 = PortName::parse(engine::port::Grammar::Ovs, "p1").unwrap();
        let [park, del] = remove_vlan(&p1, VlanId::new(10).unwrap(), VlanId::new(4094).unwrap());
        assert_eq!(park["where"][1], json!(["trunks", "==", ["set", [10]]]));
        assert_eq!(park["mutations"][0], json!(["trunks", "insert", ["set", [4094]]]));
        assert_eq!(del["mutations"][0], json!(["trunks", "delete", ["set", [10]]]));
    }
}
