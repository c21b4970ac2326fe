//! The XML-RPC codec and the mapping on hand-written xapi samples (`tests/golden/xen/`): bare
//! and typed strings, empty values, nested structs, failures, `event.from` batches, a large
//! `get_all_records`, and malformed input that must give a clear error, never a panic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use adapters::xen::client::{decode_event_batch, Operation};
use adapters::xen::codec::{decode_response, encode_call, CodecError, Response, Value};
use adapters::xen::mapping::Mirror;
use engine::{Fact, FactKey, NeighbourSource, SwitchPort, VlanId, VlanSpec};
use proptest::prelude::*;
use sims::xen::xmlrpc::{self, Value as SimValue};

fn golden(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/xen").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn success(name: &str) -> Value {
    match decode_response(&golden(name)).expect(name) {
        Response::Success(v) => v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn login_result_is_a_bare_string() {
    assert_eq!(success("login_success.xml"), Value::str("OpaqueRef:8b2c0d27-6a2e-4f3d-9a42-1d3c7e5f9a10"));
}

#[test]
fn failures_carry_code_and_params_bare_or_typed() {
    let f = |n| match decode_response(&golden(n)).unwrap() {
        Response::Failure(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(f("failure_session_invalid.xml"), ["SESSION_INVALID", "OpaqueRef:8b2c0d27-6a2e-4f3d-9a42-1d3c7e5f9a10"]);
    assert_eq!(f("failure_host_is_slave.xml"), ["HOST_IS_SLAVE", "10.20.0.11"]);
    assert_eq!(f("failure_auth.xml"), ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]);
    assert_eq!(
        decode_response(&golden("fault.xml")).unwrap(),
        Response::Fault { code: -1, message: "Cannot parse request".into() }
    );
}

#[test]
fn vm_records_decode_with_empty_values_and_nested_structs() {
    let v = success("vm_get_all_records.xml");
    let recs = v.as_struct().unwrap();
    assert_eq!(recs.len(), 3);
    let web = &recs["OpaqueRef:0a1b2c3d-0000-4000-a000-000000000001"];
    assert_eq!(web.get("name_label"), Some(&Value::str("web-01 & friends")));
    assert_eq!(web.get("name_description"), Some(&Value::str("")));
    assert_eq!(web.get("memory_static_max").and_then(Value::as_int), Some(4_294_967_296));
    assert_eq!(web.get("is_a_template"), Some(&Value::Bool(false)));
    assert_eq!(web.get("VIFs").and_then(Value::as_array).map(<[Value]>::len), Some(2));
    let oc = web.get("other_config").unwrap();
    assert_eq!(oc.get("base_template_name"), Some(&Value::str("Debian Bookworm 12")));
    assert_eq!(oc.get("empty"), Some(&Value::str("")));
    assert_eq!(web.get("blocked_operations"), Some(&Value::Struct(BTreeMap::new())));
    assert_eq!(web.get("tags"), Some(&Value::Array(vec![])));
    let tmpl = &recs["OpaqueRef:0a1b2c3d-0000-4000-a000-000000000003"];
    assert_eq!(tmpl.get("name_description"), Some(&Value::str("")));
    assert_eq!(tmpl.get("is_a_template").and_then(Value::as_bool), Some(true));
}

#[test]
fn golden_pool_maps_to_the_expected_facts() {
    let mut m = Mirror::default();
    for (r, rec) in success("vm_get_all_records.xml").as_struct().unwrap() {
        m.upsert("VM", r, rec).unwrap();
    }
    for (class, recs) in success("pool_records.xml").as_struct().unwrap() {
        for (r, rec) in recs.as_struct().unwrap() {
            m.upsert(class, r, rec).unwrap();
        }
    }
    let (facts, rejected) = m.facts();
    assert!(rejected.is_empty(), "{rejected:?}");
    let host = "1c9a3b5d-aaaa-4bbb-8ccc-ddddeeeeffff".to_string();
    let Fact::Network(n) =
        &facts[&FactKey::Network { host: host.clone().into(), network: "4d3c2b1a-0000-4000-8000-000000000120".into() }]
    else {
        panic!()
    };
    assert_eq!(
        (n.name.as_str(), &n.vlan, &n.uplinks.iter().map(|u| u.as_str()).collect::<Vec<_>>()[..]),
        ("VLAN 120 (prod)", &VlanSpec::Access(VlanId::new(120).unwrap()), &["eth0"][..])
    );
    let Fact::Uplink(u) = &facts[&FactKey::Uplink { host: host.clone().into(), nic: "eth0".into() }] else { panic!() };
    assert_eq!(u.port, Some(SwitchPort::new("tor1", "ethernet1/1/3").unwrap()));
    assert_eq!(u.source, Some(NeighbourSource::Lldp));
    // Two VIFs of the guest; the control domain and the template have none.
    let vnics: Vec<_> = facts.values().filter_map(|f| if let Fact::Vnic(v) = f { Some(v) } else { None }).collect();
    assert_eq!(vnics.len(), 2);
    assert!(vnics.iter().all(|v| v.vm == "6f1e0c7a-3c5d-4b3e-9d2a-0e8f1a2b3c4d" && v.host == host && v.powered_on));
    assert!(vnics.iter().any(|v| v.nic == "1" && !v.connected && v.network == "4d3c2b1a-0000-4000-8000-0000000000e0"));
    // 1 host + 1 uplink + 2 networks + 2 vnics.
    assert_eq!(facts.len(), 6);
}

#[test]
fn event_from_batch_has_mod_with_snapshot_and_del_without() {
    let b = decode_event_batch(&success("event_from.xml")).unwrap();
    assert_eq!(b.token, "00000000000000000043,00000000000000000000");
    assert_eq!(b.events.len(), 2);
    assert_eq!((b.events[0].class.as_str(), b.events[0].operation), ("vif", Operation::Mod));
    assert_eq!(b.events[0].snapshot.as_ref().and_then(|s| s.get("currently_attached")), Some(&Value::Bool(false)));
    assert_eq!((b.events[1].operation, b.events[1].snapshot.is_none()), (Operation::Del, true));
}

/// The simulator's value as netfold's client should read it (the two codecs share no code).
fn as_client(v: &SimValue) -> Value {
    match v {
        SimValue::Str(s) => Value::Str(s.clone()),
        SimValue::Int(i) => Value::Int(*i),
        SimValue::Bool(b) => Value::Bool(*b),
        SimValue::Double(d) => Value::Double(*d),
        SimValue::DateTime(s) => Value::DateTime(s.clone()),
        SimValue::Array(a) => Value::Array(a.iter().map(as_client).collect()),
        SimValue::Struct(m) => Value::Struct(m.iter().map(|(k, v)| (k.clone(), as_client(v))).collect()),
        SimValue::Nil => Value::Nil,
    }
}

/// The simulator's encoding of `v` in xapi's success envelope.
fn sim_success(v: SimValue) -> Vec<u8> {
    xmlrpc::encode_response(&xmlrpc::Response::Success(v))
}

#[test]
fn a_large_get_all_records_from_the_simulator_decodes_whole() {
    let n = 5_000;
    let recs: BTreeMap<String, SimValue> = (0..n)
        .map(|i| {
            let mut r = BTreeMap::new();
            r.insert("uuid".to_string(), SimValue::str(format!("uuid-{i}")));
            r.insert("name_label".to_string(), SimValue::str(format!("vm <{i}> & co")));
            r.insert("name_description".to_string(), SimValue::str(""));
            r.insert("VIFs".to_string(), SimValue::Array(vec![SimValue::str(format!("OpaqueRef:vif-{i}"))]));
            r.insert("is_a_template".to_string(), SimValue::Bool(i % 7 == 0));
            r.insert("other_config".to_string(), SimValue::Struct(BTreeMap::new()));
            (format!("OpaqueRef:vm-{i}"), SimValue::Struct(r))
        })
        .collect();
    let expected = as_client(&SimValue::Struct(recs.clone()));
    let body = sim_success(SimValue::Struct(recs));
    assert!(body.len() > 1_000_000, "a realistic size: {} bytes", body.len());
    let Response::Success(back) = decode_response(&body).unwrap() else { panic!() };
    assert_eq!(back, expected);
}

#[test]
fn failures_and_faults_from_the_simulator_decode_to_their_codes() {
    let failed =
        xmlrpc::encode_response(&xmlrpc::Response::Failure(vec!["SESSION_INVALID".into(), "OpaqueRef:x".into()]));
    assert_eq!(
        decode_response(&failed).unwrap(),
        Response::Failure(vec!["SESSION_INVALID".into(), "OpaqueRef:x".into()])
    );
    let fault = xmlrpc::encode_response(&xmlrpc::Response::Fault { code: -1, message: "cannot parse".into() });
    assert_eq!(decode_response(&fault).unwrap(), Response::Fault { code: -1, message: "cannot parse".into() });
}

/// Values xapi's data model uses (no `Nil`: xapi never sends it), nested a few levels.
fn sim_value() -> impl Strategy<Value = SimValue> {
    let leaf = prop_oneof![
        "\\PC{0,20}".prop_map(SimValue::Str),
        any::<i64>().prop_map(SimValue::Int),
        any::<bool>().prop_map(SimValue::Bool),
        (-1e9f64..1e9).prop_map(SimValue::Double),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(SimValue::Array),
            proptest::collection::btree_map("[A-Za-z_<&>]{1,8}", inner, 0..6).prop_map(SimValue::Struct),
        ]
    })
}

proptest! {
    /// The client reads whatever the simulator writes, value for value.
    #[test]
    fn the_client_reads_every_value_the_simulator_writes(v in sim_value()) {
        let expected = as_client(&v);
        prop_assert_eq!(decode_response(&sim_success(v)).unwrap(), Response::Success(expected));
    }

    /// The simulator reads every call the client writes, parameter for parameter.
    #[test]
    fn the_simulator_reads_every_call_the_client_writes(params in proptest::collection::vec(sim_value(), 0..4)) {
        let body = encode_call("VM.get_record", &params.iter().map(as_client).collect::<Vec<_>>());
        let call = xmlrpc::decode_call(&body).unwrap();
        prop_assert_eq!(call.method, "VM.get_record");
        prop_assert_eq!(call.params, params);
    }
}

#[test]
fn malformed_xml_gives_a_clear_error_naming_the_place() {
    let cases: &[(&str, &str)] = &[
        ("truncated.xml", "end of document"),
        ("mismatched_end.xml", "malformed XML at byte"),
        ("bad_boolean.xml", "bad boolean value `2`"),
        ("no_status.xml", "no Status member"),
        ("html.xml", "expected methodResponse"),
        ("bad_int.xml", "bad int value `12x`"),
    ];
    for (name, want) in cases {
        let err = decode_response(&golden(&format!("malformed/{name}"))).expect_err(name);
        let text = err.to_string();
        assert!(text.contains(want), "{name}: `{text}` should contain `{want}`");
        if !matches!(err, CodecError::Envelope(_)) {
            assert!(text.contains("at byte"), "{name}: `{text}` should say where");
        }
    }
}

#[test]
fn a_record_that_is_not_a_struct_fails_the_read_and_removes_nothing() {
    let mut m = Mirror::default();
    for (r, rec) in success("vm_get_all_records.xml").as_struct().unwrap() {
        m.upsert("VM", r, rec).unwrap();
    }
    let before = m.facts();
    let (r, _) = success("vm_get_all_records.xml")
        .as_struct()
        .unwrap()
        .iter()
        .next()
        .map(|(r, v)| (r.clone(), v.clone()))
        .unwrap();
    let err = m.upsert("VM", &r, &Value::str("garbage")).unwrap_err();
    assert_eq!(err.why, "the record is not a struct");
    assert!(err.what.contains(&r), "names the record: {err:?}");
    assert_eq!(m.facts(), before, "the object is kept, not taken for deleted");
}
