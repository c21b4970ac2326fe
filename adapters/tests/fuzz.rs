//! Fuzzing every decoder of a peer's bytes (SOAP, XML-RPC, OVSDB JSON-RPC, eAPI JSON) with the
//! seeded mutator of `fuzz/mutate.rs` over `fuzz/corpus/`: no input may panic. CI runs the
//! default 2,000 inputs per decoder; the README gives the 1M-input command.

#[path = "../../fuzz/mutate.rs"]
mod mutate;

use std::path::Path;

use adapters::{eapi, ovs, vsphere, xen};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn soap(b: &[u8]) {
    let _ = vsphere::codec::decode_service_content(b);
    let _ = vsphere::codec::decode_service_versions(b);
    let _ = vsphere::codec::decode_login(b, "https://vc/sdk", "u");
    let _ = vsphere::codec::decode_moref(b, "CreateFilter");
    let _ = vsphere::codec::decode_void(b, "Logout");
    if let Ok(r) = vsphere::codec::decode_retrieve(b, "RetrievePropertiesEx") {
        let _ = vsphere::mapping::Inventory::from_contents(r.objects).facts();
    }
    let _ = vsphere::codec::decode_updates(b);
    let _ = vsphere::codec::decode_network_hints(b);
}

fn xmlrpc(b: &[u8]) {
    if let Ok(xen::codec::Response::Success(v)) = xen::codec::decode_response(b) {
        let _ = xen::client::decode_event_batch(&v);
        if let Some(records) = v.as_struct() {
            let mut m = xen::mapping::Mirror::default();
            for class in xen::mapping::CLASSES {
                for (r, rec) in records {
                    let _ = m.upsert(class, r, rec);
                }
            }
            let _ = m.facts();
        }
    }
}

fn ovsdb(b: &[u8]) {
    use tokio_util::codec::Decoder;
    let mut frames = ovs::codec::JsonFrames::new(ovs::codec::MAX_MESSAGE);
    let mut buf = tokio_util::bytes::BytesMut::from(b);
    while let Ok(Some(v)) = frames.decode(&mut buf) {
        if let Ok(ovs::codec::Incoming::Response { result, .. }) = ovs::codec::classify(v.clone()) {
            let _ = ovs::codec::op_replies(&result);
            if let Some(rows) = result.as_array() {
                let _ = ovs::codec::decode_port_rows(rows);
            }
        }
        let _ = ovs::codec::decode_int_set(&v);
        let _ = ovs::codec::decode_trunks("eth1", &v);
    }
}

fn eapi_json(b: &[u8]) {
    let cmds = vec!["show interfaces switchport".to_string()];
    if let Ok(results) = eapi::codec::parse_reply(b, &cmds) {
        for r in &results {
            let _ = eapi::codec::parse_switchports(r);
        }
    }
    if let Ok(s) = std::str::from_utf8(b) {
        let _ = eapi::codec::parse_vlan_list(s);
    }
}

#[test]
fn soap_decoders_never_panic() {
    assert_eq!(mutate::campaign(root(), "soap", soap).panics, 0);
}

#[test]
fn xmlrpc_decoders_never_panic() {
    assert_eq!(mutate::campaign(root(), "xmlrpc", xmlrpc).panics, 0);
}

#[test]
fn ovsdb_decoders_never_panic() {
    assert_eq!(mutate::campaign(root(), "ovsdb", ovsdb).panics, 0);
}

#[test]
fn eapi_decoders_never_panic() {
    assert_eq!(mutate::campaign(root(), "eapi", eapi_json).panics, 0);
}
