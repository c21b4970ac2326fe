//! Golden eAPI wire tests against Arista's documented JSON shapes, not netfold's own simulator:
//! `tests/golden/eapi/` (its README names the source of each sample).
//!
//! - Requests: netfold's [`EapiSwitch`] reads and applies against a peer that records each
//!   body; every body must be, as a JSON tree, Arista's `runCmds` request (ANTA's request
//!   template) with netfold's commands. JSON objects are compared as JSON defines them (member
//!   order does not matter); the only value not compared is `id`, which JSON-RPC leaves to the
//!   client (netfold counts, ANTA writes `EapiExplorer-1`): it must be a string.
//! - Replies: [`codec::parse_reply`] and [`codec::parse_switchports`] on Arista's (ANTA's) and
//!   fake-switches' samples: results per command, error codes 1000 and 1002, the failed
//!   command named from `data`, and access ports (whose `trunkAllowedVlans` says `ALL`) left out.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use adapters::common::SecretSource;
use adapters::eapi::{codec, CommandError, Config, EapiSwitch, Error};
use engine::switch::{Grammar, Op, PortName, Switch};
use engine::VlanId;
use serde_json::{json, Value};

fn golden(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/eapi").join(name);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn golden_bytes(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/eapi").join(name)).unwrap()
}

fn eos(name: &str) -> PortName {
    PortName::parse(Grammar::Eos, name).unwrap()
}

fn vlan(n: u16) -> VlanId {
    VlanId::new(n).unwrap()
}

/// What the recording peer answers: a switchport table for `show interfaces switchport`
/// (Ethernet1 a closed trunk, Ethernet2 carrying 130), an empty result per command otherwise.
fn answer(request: &Value) -> Value {
    let cmds = request["params"]["cmds"].as_array().cloned().unwrap_or_default();
    let result: Vec<Value> = if cmds == [json!("show interfaces switchport")] {
        let port =
            |allowed: &str| json!({"enabled": true, "switchportInfo": {"mode": "trunk", "trunkAllowedVlans": allowed}});
        vec![json!({"sourceDetail": "", "switchports": {"Ethernet1": port("NONE"), "Ethernet2": port("130")}})]
    } else {
        cmds.iter().map(|_| json!({})).collect()
    };
    json!({"jsonrpc": "2.0", "id": request["id"], "result": result})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_netfold_sends_is_aristas_runcmds_shape() {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/command-api",
        axum::routing::post(move |body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).expect("netfold sent JSON");
                let reply = answer(&request);
                record.lock().unwrap().push(request);
                axum::Json(reply)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    std::env::set_var("NETFOLD_TEST_EAPI_GOLDEN_PW", "s3cret");
    let sw = EapiSwitch::new(&Config {
        name: "tor1".into(),
        url,
        username: "netfold".into(),
        password: SecretSource::env("NETFOLD_TEST_EAPI_GOLDEN_PW"),
        tls: Default::default(),
        timeout_ms: 30_000,
    })
    .unwrap();
    let observed = sw.read(&BTreeSet::from([eos("Ethernet1"), eos("Ethernet2")])).await.unwrap();
    assert_eq!(observed[&eos("Ethernet2")], BTreeSet::from([vlan(130)]));
    sw.apply(&[Op::AddVlan { port: eos("Ethernet1"), vlan: vlan(120) }]).await.unwrap();
    sw.apply(&[Op::RemoveVlan { port: eos("Ethernet2"), vlan: vlan(130) }]).await.unwrap();
    server.abort();

    let sent = std::mem::take(&mut *seen.lock().unwrap());
    let expected = [
        "request_show_interfaces_switchport.json",
        "request_show_interfaces_switchport.json",
        "request_add_vlan.json",
        "request_show_interfaces_switchport.json",
        "request_remove_vlan.json",
    ];
    assert_eq!(sent.len(), expected.len(), "{sent:#?}");
    for (i, (mut ours, name)) in sent.into_iter().zip(expected).enumerate() {
        let theirs = golden(name);
        assert!(ours["id"].is_string(), "request {i}: the id is a string: {ours}");
        ours["id"] = theirs["id"].clone();
        assert_eq!(ours, theirs, "request {i} differs from {name}");
    }
}

fn cmds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn aristas_success_reply_gives_one_result_per_command() {
    let r =
        codec::parse_reply(&golden_bytes("reply_anta_success.json"), &cmds(&["show version", "show clock"])).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["modelName"], "cEOSLab");
    assert_eq!(r[1]["timezone"], "EST");
}

fn failure(name: &str, sent: &[&str]) -> (usize, String, CommandError, String) {
    match codec::parse_reply(&golden_bytes(name), &cmds(sent)).unwrap_err() {
        Error::Command { index, command, error, detail } => (index, command, error, detail),
        e => panic!("{name}: {e}"),
    }
}

#[test]
fn aristas_error_replies_name_the_failed_command_and_code() {
    let invalid = "Invalid input (at token 1: 'bad')".to_string();
    // 1002, the second of three: `data` holds the first command's output, then the failure.
    assert_eq!(
        failure("reply_anta_error_1002.json", &["show version", "bad command", "show clock"]),
        (1, "bad command".into(), CommandError::Invalid, invalid.clone())
    );
    // The first of three fails: `data` holds only the failure.
    assert_eq!(
        failure("reply_anta_error_1002_first_of_3.json", &["show bad command", "show version", "show hostname"]),
        (0, "show bad command".into(), CommandError::Invalid, invalid.clone())
    );
    // A text-format output (a JSON string) before the failure counts as one command.
    assert_eq!(
        failure("reply_anta_error_1002_string_data.json", &["show bgp ipv4 unicast summary", "show bad command"]),
        (1, "show bad command".into(), CommandError::Invalid, invalid)
    );
    // 1000: understood but could not run; the per-command `errors` are the detail.
    assert_eq!(
        failure("reply_fake_switches_error_1000.json", &["show vlan 999"]),
        (0, "show vlan 999".into(), CommandError::General, "VLAN 999 not found in current VLAN database".into())
    );
}

#[test]
fn access_ports_are_not_read_as_trunks_open_to_all() {
    let r = codec::parse_reply(
        &golden_bytes("reply_fake_switches_show_interfaces_switchport.json"),
        &cmds(&["show interfaces switchport"]),
    )
    .unwrap();
    assert_eq!(r[0]["switchports"]["Ethernet1"]["switchportInfo"]["trunkAllowedVlans"], "ALL");
    assert!(codec::parse_switchports(&r[0]).unwrap().is_empty(), "both ports are in access mode");
}
