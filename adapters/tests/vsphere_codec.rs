//! Codec tests on hand-written vim25 samples (`tests/golden/vsphere/`): every response type the
//! adapter reads, faults, empty and truncated `WaitForUpdatesEx`, a paged
//! `RetrievePropertiesEx`, trunk and PVLAN specs, other namespace prefixes, and broken input
//! (malformed, truncated, not SOAP) giving clear errors, never a panic. The last tests map the
//! decoded pages to facts.

use adapters::vsphere::codec::{self, Backing, ChangeOp, DvsVlan, MoRef, UpdateKind, Value};
use adapters::vsphere::mapping::Inventory;
use adapters::vsphere::Error;
use engine::{Fact, NeighbourSource};

fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/golden/vsphere/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn prop<'a>(o: &'a codec::ObjectContent, name: &str) -> &'a Value {
    &o.props.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

#[test]
fn service_versions_give_the_vim25_version() {
    assert_eq!(codec::decode_service_versions(&golden("service_versions.xml")).unwrap(), "8.0.2.0");
}

#[test]
fn service_content_names_the_managers() {
    let sc = codec::decode_service_content(&golden("retrieve_service_content.xml")).unwrap();
    assert_eq!(sc.property_collector, MoRef::new("PropertyCollector", "propertyCollector"));
    assert_eq!(sc.view_manager, MoRef::new("ViewManager", "ViewManager"));
    assert_eq!(sc.session_manager, MoRef::new("SessionManager", "SessionManager"));
    assert_eq!(sc.root_folder, MoRef::new("Folder", "group-d1"));
    assert_eq!(sc.api_version.as_deref(), Some("8.0.2.0"));
}

#[test]
fn login_logout_view_and_filter_responses() {
    assert_eq!(codec::decode_login(&golden("login.xml"), "u", "netfold").unwrap(), "VSPHERE.LOCAL\\netfold");
    codec::decode_void(&golden("logout.xml"), "Logout").unwrap();
    let v = codec::decode_moref(&golden("create_container_view.xml"), "CreateContainerView").unwrap();
    assert_eq!(v.kind, "ContainerView");
    assert!(v.value.starts_with("session["));
    let f = codec::decode_moref(&golden("create_filter.xml"), "CreateFilter").unwrap();
    assert_eq!(f.kind, "PropertyFilter");
}

#[test]
fn a_response_to_another_call_is_refused() {
    let e = codec::decode_moref(&golden("create_filter.xml"), "CreateContainerView").unwrap_err();
    assert!(e.to_string().contains("expected <CreateContainerViewResponse>"), "{e}");
}

#[test]
fn invalid_login_fault_is_a_typed_authentication_error() {
    let e = codec::decode_login(&golden("fault_invalid_login.xml"), "https://vc/sdk", "netfold").unwrap_err();
    assert!(matches!(&e, Error::InvalidLogin { user, .. } if user == "netfold"), "{e:?}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("incorrect user name or password"));
}

#[test]
fn not_authenticated_fault_means_log_in_again() {
    let e = codec::decode_updates(&golden("fault_not_authenticated.xml")).unwrap_err();
    assert!(matches!(e, Error::NotAuthenticated { .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[test]
fn not_authenticated_inside_a_missing_set_means_log_in_again() {
    let e =
        codec::decode_retrieve(&golden("retrieve_missing_not_authenticated.xml"), "RetrievePropertiesEx").unwrap_err();
    assert!(matches!(&e, Error::NotAuthenticated { message } if message.contains("config.network.pnic")), "{e:?}");
}

#[test]
fn other_faults_keep_their_type_whatever_the_prefixes() {
    let e = codec::decode_updates(&golden("fault_other_prefixes.xml")).unwrap_err();
    match e {
        Error::Fault { fault_type, message, call } => {
            assert_eq!(fault_type, "InvalidArgument");
            assert!(message.contains("version"));
            assert_eq!(call, "WaitForUpdatesEx");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn paged_retrieve_first_page_has_a_token_and_host_networking() {
    let r = codec::decode_retrieve(&golden("retrieve_page1_hosts.xml"), "RetrievePropertiesEx").unwrap();
    assert_eq!(r.token.as_deref(), Some("session[52b3f1d9]52d5a0c0-7e11-4bf3-a2a4-5e2b1f0c9d33"));
    assert_eq!(r.objects.len(), 2);
    let h = &r.objects[0];
    assert_eq!(h.obj, MoRef::new("HostSystem", "host-12"));
    let Value::Pnics(p) = prop(h, "config.network.pnic") else { panic!() };
    assert_eq!(p.iter().map(|n| n.device.as_str()).collect::<Vec<_>>(), ["vmnic0", "vmnic1", "vmnic2", "vmnic3"]);
    assert_eq!(p[0].key, "key-vim.host.PhysicalNic-vmnic0");
    let Value::Vswitches(v) = prop(h, "config.network.vswitch") else { panic!() };
    assert_eq!(v[0].pnic, ["key-vim.host.PhysicalNic-vmnic0", "key-vim.host.PhysicalNic-vmnic1"]);
    let Value::Portgroups(pg) = prop(h, "config.network.portgroup") else { panic!() };
    assert_eq!(pg.iter().map(|p| p.vlan_id).collect::<Vec<_>>(), [0, 120, 4095]);
    let Value::ProxySwitches(ps) = prop(h, "config.network.proxySwitch") else { panic!() };
    assert_eq!(ps[0].pnic.len(), 2);
    assert_eq!(
        prop(h, "configManager.networkSystem"),
        &Value::MoRef(MoRef::new("HostNetworkSystem", "networkSystem-12"))
    );
    let Value::Pnics(empty) = prop(&r.objects[1], "config.network.pnic") else { panic!() };
    assert!(empty.is_empty(), "an empty array is empty, not an error");
}

#[test]
fn paged_retrieve_last_page_has_no_token_and_every_vlan_spec() {
    let r =
        codec::decode_retrieve(&golden("continue_retrieve_page2_last.xml"), "ContinueRetrievePropertiesEx").unwrap();
    assert_eq!(r.token, None);
    let vlan = |i: usize| prop(&r.objects[i], "config.defaultPortConfig.vlan").clone();
    assert_eq!(vlan(1), Value::Vlan(DvsVlan::Trunk(vec![(0, 4094)])));
    assert_eq!(vlan(2), Value::Vlan(DvsVlan::Id(230)));
    assert_eq!(vlan(3), Value::Vlan(DvsVlan::Trunk(vec![(300, 310), (400, 400)])));
    assert_eq!(vlan(4), Value::Vlan(DvsVlan::Pvlan(501)));
    let Value::Nics(nics) = prop(&r.objects[5], "config.hardware.device") else { panic!() };
    assert_eq!(nics.len(), 2, "the IDE controller and the disk are not NICs");
    assert_eq!(nics[0].backing, Backing::Network { name: "prod-120".into() });
    assert_eq!(nics[0].device_type, "VirtualVmxnet3");
    assert!(nics[0].connected);
    assert!(matches!(&nics[1].backing, Backing::DvPort { portgroup_key, .. } if portgroup_key == "dvportgroup-23"));
    assert!(!nics[1].connected);
}

#[test]
fn empty_retrieve_is_no_objects() {
    let r = codec::decode_retrieve(&golden("retrieve_empty.xml"), "RetrievePropertiesEx").unwrap();
    assert!(r.objects.is_empty() && r.token.is_none());
}

#[test]
fn xsi_type_is_resolved_by_namespace_not_by_prefix() {
    let r = codec::decode_retrieve(&golden("retrieve_other_prefixes.xml"), "RetrievePropertiesEx").unwrap();
    let o = &r.objects[0];
    assert_eq!(prop(o, "name"), &Value::Str("db & cache".into()));
    assert_eq!(prop(o, "runtime.host"), &Value::MoRef(MoRef::new("HostSystem", "host-12")));
    let Value::Nics(nics) = prop(o, "config.hardware.device") else {
        panic!("{:?}", prop(o, "config.hardware.device"))
    };
    assert_eq!(nics[0].device_type, "VirtualPCNet32", "the xsi:type in the wrong namespace is ignored");
    assert_eq!(nics[0].mac.as_deref(), Some("00:50:56:bb:00:07"));
}

#[test]
fn empty_wait_for_updates_means_no_change() {
    assert_eq!(codec::decode_updates(&golden("wait_empty.xml")).unwrap(), None);
}

#[test]
fn truncated_update_set_says_call_again() {
    let u = codec::decode_updates(&golden("wait_truncated_enter.xml")).unwrap().unwrap();
    assert!(u.truncated);
    assert_eq!(u.version, "1_1");
    assert_eq!(u.objects.len(), 2);
    assert!(u.objects.iter().all(|o| o.kind == UpdateKind::Enter));
    assert_eq!(u.objects[0].changes.len(), 3);
}

#[test]
fn modify_leave_and_every_change_op() {
    let u = codec::decode_updates(&golden("wait_modify_leave.xml")).unwrap().unwrap();
    assert!(!u.truncated);
    let kinds: Vec<_> = u.objects.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, [UpdateKind::Modify, UpdateKind::Modify, UpdateKind::Leave, UpdateKind::Modify]);
    let ops: Vec<_> = u.objects.iter().flat_map(|o| o.changes.iter().map(|c| c.op)).collect();
    assert_eq!(ops, [ChangeOp::Assign, ChangeOp::IndirectRemove, ChangeOp::Add, ChangeOp::Remove, ChangeOp::Assign]);
    assert_eq!(u.objects[3].changes[0].val, Some(Value::Vlan(DvsVlan::Pvlan(502))));
}

#[test]
fn network_hints_give_cdp_and_lldp_neighbours() {
    let h = codec::decode_network_hints(&golden("query_network_hint.xml")).unwrap();
    assert_eq!(h.len(), 3);
    let cdp = h[0].cdp.as_ref().unwrap();
    assert_eq!((cdp.dev_id.as_deref(), cdp.port_id.as_deref()), (Some("tor1.lab.example"), Some("Ethernet1/12")));
    assert_eq!(cdp.system_name.as_deref(), Some("tor1"));
    let lldp = h[1].lldp.as_ref().unwrap();
    assert_eq!(lldp.system_name(), Some("tor2"));
    assert_eq!(lldp.port_id.as_deref(), Some("Ethernet13"));
    assert!(h[2].cdp.is_none() && h[2].lldp.is_none());
}

#[test]
fn malformed_xml_is_a_clear_error() {
    let e = codec::decode_retrieve(&golden("malformed_mismatched_tag.xml"), "RetrievePropertiesEx").unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("malformed SOAP response"), "{e}");
}

#[test]
fn every_truncation_of_every_sample_errors_without_panicking() {
    for name in
        ["retrieve_page1_hosts.xml", "wait_modify_leave.xml", "query_network_hint.xml", "fault_invalid_login.xml"]
    {
        let xml = golden(name);
        // The closing `</soapenv:Envelope>` starts 20 bytes before the end (with its newline).
        for cut in (0..xml.len() - 21).step_by(7) {
            let r = codec::parse_envelope(&xml[..cut]);
            assert!(r.is_err(), "{name} cut at {cut} parsed");
        }
    }
}

#[test]
fn not_soap_is_refused() {
    let e = codec::parse_envelope(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
    assert!(e.to_string().contains("not a SOAP 1.1 Envelope"), "{e}");
    assert!(codec::parse_envelope(b"").is_err());
    assert!(codec::parse_envelope(&[0xff, 0xfe, 0x00]).is_err());
}

#[test]
fn golden_pages_map_to_facts() {
    let mut contents =
        codec::decode_retrieve(&golden("retrieve_page1_hosts.xml"), "RetrievePropertiesEx").unwrap().objects;
    contents.extend(
        codec::decode_retrieve(&golden("continue_retrieve_page2_last.xml"), "ContinueRetrievePropertiesEx")
            .unwrap()
            .objects,
    );
    let mut inv = Inventory::from_contents(contents);
    inv.set_hints("host-12", codec::decode_network_hints(&golden("query_network_hint.xml")).unwrap());
    let m = inv.facts();
    let nets: Vec<_> = m
        .facts
        .values()
        .filter_map(|f| match f {
            Fact::Network(n) => Some((n.network.to_string(), n.vlan.to_string(), n.uplinks.join(","))),
            _ => None,
        })
        .collect();
    assert_eq!(
        nets,
        [
            ("VM Network".to_string(), "untagged".to_string(), "vmnic0,vmnic1".to_string()),
            ("all-vlans".into(), "trunk 1-4094".into(), "vmnic0,vmnic1".into()),
            ("dvportgroup-23".into(), "vlan 230".into(), "vmnic2,vmnic3".into()),
            ("dvportgroup-24".into(), "trunk 300-310,400".into(), "vmnic2,vmnic3".into()),
            ("prod-120".into(), "vlan 120".into(), "vmnic0,vmnic1".into()),
        ],
        "the uplink port group is skipped; the PVLAN one is rejected"
    );
    assert_eq!(m.rejected.len(), 1);
    assert!(m.rejected[0].what.contains("isolated-501") && m.rejected[0].why.contains("not supported"));
    let uplinks: Vec<_> = m
        .facts
        .values()
        .filter_map(|f| match f {
            Fact::Uplink(u) if u.host == "host-12" => {
                Some((u.nic.clone(), u.port.as_ref().map(|p| p.to_string()), u.source))
            }
            _ => None,
        })
        .collect();
    assert_eq!(uplinks[0], ("vmnic0".into(), Some("tor1.lab.example:Ethernet1/12".into()), Some(NeighbourSource::Cdp)));
    assert_eq!(uplinks[1], ("vmnic1".into(), Some("tor2:Ethernet13".into()), Some(NeighbourSource::Lldp)));
    assert_eq!(uplinks[2], ("vmnic2".into(), None, None));
    let vnics: Vec<_> = m
        .facts
        .values()
        .filter_map(|f| match f {
            Fact::Vnic(v) => Some((v.nic.clone(), v.network.clone(), v.host.clone(), v.connected, v.powered_on)),
            _ => None,
        })
        .collect();
    assert_eq!(
        vnics,
        [
            ("4000".into(), "prod-120".into(), "host-12".into(), true, true),
            ("4001".into(), "dvportgroup-23".into(), "host-12".into(), false, true)
        ]
    );
    assert!(m.facts.values().any(|f| matches!(f, Fact::Host(h) if h.name == "esx-02.lab.example")));
}

#[test]
fn updates_apply_to_the_mirror_and_nested_paths_ask_for_a_refetch() {
    let contents = codec::decode_retrieve(&golden("continue_retrieve_page2_last.xml"), "ContinueRetrievePropertiesEx")
        .unwrap()
        .objects;
    let mut inv = Inventory::from_contents(contents);
    let u = codec::decode_updates(&golden("wait_modify_leave.xml")).unwrap().unwrap();
    let refetch: Vec<bool> = u.objects.iter().map(|o| inv.apply_update(o)).collect();
    assert_eq!(refetch, [false, true, false, false]);
    let m = inv.facts();
    assert!(m.rejected.iter().any(|r| r.what.contains("web-01") && r.why.contains("runtime.host")), "{:?}", m.rejected);
    assert!(m.rejected.iter().any(|r| r.why.contains("pvlanId 502")));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = codec::decode_retrieve(&bytes, "RetrievePropertiesEx");
            let _ = codec::decode_updates(&bytes);
            let _ = codec::decode_network_hints(&bytes);
        }

        #[test]
        fn on_mutated_samples(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let name = ["retrieve_page1_hosts.xml", "continue_retrieve_page2_last.xml", "wait_modify_leave.xml", "query_network_hint.xml"][which];
            let mut xml = golden(name);
            for (at, byte) in edits {
                let i = at.index(xml.len());
                xml[i] = byte;
            }
            let _ = codec::decode_retrieve(&xml, "RetrievePropertiesEx");
            let _ = codec::decode_retrieve(&xml, "ContinueRetrievePropertiesEx");
            let _ = codec::decode_updates(&xml);
            let _ = codec::decode_network_hints(&xml);
        }
    }
}
