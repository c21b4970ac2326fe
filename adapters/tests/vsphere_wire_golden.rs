//! Golden vSphere wire tests against VMware's own peers, not netfold's: for every SOAP call
//! netfold makes, the request VMware's pyVmomi sends and the reply VMware's vCenter simulator
//! (vcsim) gives, captured through a recording proxy by `tests/vsphere_capture.py` into
//! `tests/golden/vsphere/vcsim/` (its README says how).
//!
//! - Requests: netfold's builders (`vsphere::codec`), given the same arguments — the managed
//!   objects netfold's own decoders read from vcsim's captured replies, netfold's property paths
//!   and paging — must build the tree pyVmomi sent. `support/wire_tree.rs` says what the tree
//!   comparison ignores (prefixes, declarations, formatting); the one pyVmomi-specific
//!   difference dropped here is the `versionId` attribute pyVmomi stamps on each parameter.
//! - Replies: netfold's decoders must read vcsim's captured replies to the values below.
//! - The ignored test starts vcsim again, recaptures, and fails if a reply or a request changed
//!   shape, ignoring only the volatile values [`volatile`] lists. With `NETFOLD_RECAPTURE=1`
//!   it writes the fresh capture over the checked-in one instead (review the diff).

#[path = "support/captures.rs"]
mod captures;
#[path = "support/wire_tree.rs"]
mod wire_tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters::vsphere::codec::{self, ChangeOp, MoRef, UpdateKind, Value};
use adapters::vsphere::mapping::{self, Inventory};
use adapters::vsphere::Error;
use engine::Fact;
use wire_tree::{Element, Item};

/// The credentials vcsim is started with for the capture.
const USER: &str = "user";
const PASSWORD: &str = "pass";
/// netfold's defaults: `page_size` and `wait_max_seconds` (adapters/src/vsphere/config.rs).
const PAGE: u32 = 500;
const WAIT: u32 = 10;
/// The wait of the capture's last, empty `WaitForUpdatesEx`.
const QUIET_WAIT: u32 = 1;
/// The token the capture passes to `ContinueRetrievePropertiesEx` (vcsim pages nothing).
const TOKEN: &str = "1";
/// vcsim's model for the capture: one standalone host, one VM, one distributed port group.
const VCSIM_ARGS: &[&str] =
    &["-cluster", "0", "-host", "1", "-vm", "1", "-pg", "1", "-username", USER, "-password", PASSWORD];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vsphere/vcsim")
}

use captures::xml_files as files;

fn golden(name: &str) -> Vec<u8> {
    let p = golden_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn reply(call: &str) -> Vec<u8> {
    golden(&format!("{call}.response.xml"))
}

fn tree(what: &str, xml: &[u8]) -> Element {
    wire_tree::parse(xml).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// pyVmomi's `versionId="…"` on each parameter element (its own annotation; vCenter reads the
/// version from the SOAPAction header, which netfold sends) is dropped.
fn without_version_ids(mut t: Element) -> Element {
    t.walk_mut(&mut |e| {
        e.attrs.remove("versionId");
    });
    t
}

fn props_of<'a>(o: &'a codec::ObjectContent, name: &str) -> &'a Value {
    &o.props.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{}: no {name}", o.obj)).1
}

/// netfold's request for each captured call, built with netfold's builders from what netfold's
/// decoders read in vcsim's captured replies.
fn netfold_requests() -> BTreeMap<&'static str, String> {
    let sc = codec::decode_service_content(&reply("RetrieveServiceContent")).unwrap();
    let pc = codec::decode_moref(&reply("CreatePropertyCollector"), "CreatePropertyCollector").unwrap();
    let view = codec::decode_moref(&reply("CreateContainerView"), "CreateContainerView").unwrap();
    let filter = codec::decode_moref(&reply("CreateFilter"), "CreateFilter").unwrap();
    let all = codec::decode_retrieve(&reply("RetrievePropertiesEx"), "RetrievePropertiesEx").unwrap();
    let host = all.objects.iter().find(|o| o.obj.kind == mapping::HOST).expect("a host");
    let Value::MoRef(network_system) = props_of(host, "configManager.networkSystem") else { panic!("a moref") };
    let vm = &all.objects.iter().find(|o| o.obj.kind == mapping::VM).expect("a VM").obj;
    let enter = codec::decode_updates(&reply("WaitForUpdatesEx.enter")).unwrap().expect("an update set");
    let modify = codec::decode_updates(&reply("WaitForUpdatesEx.modify")).unwrap().expect("an update set");
    let spec = codec::filter_spec(&view, &mapping::prop_specs());
    BTreeMap::from([
        ("RetrieveServiceContent", codec::retrieve_service_content()),
        ("Login", codec::login(&sc.session_manager, USER, PASSWORD)),
        ("CreatePropertyCollector", codec::create_property_collector(&sc.property_collector)),
        ("CreateContainerView", codec::create_container_view(&sc.view_manager, &sc.root_folder, mapping::VIEW_TYPES)),
        ("RetrievePropertiesEx", codec::retrieve_properties_ex(&pc, &spec, PAGE)),
        ("ContinueRetrievePropertiesEx", codec::continue_retrieve_properties_ex(&pc, TOKEN)),
        ("QueryNetworkHint", codec::query_network_hint(network_system)),
        ("CreateFilter", codec::create_filter(&pc, &spec)),
        ("WaitForUpdatesEx.enter", codec::wait_for_updates_ex(&pc, "", WAIT, PAGE)),
        ("WaitForUpdatesEx.modify", codec::wait_for_updates_ex(&pc, &enter.version, WAIT, PAGE)),
        ("WaitForUpdatesEx.none", codec::wait_for_updates_ex(&pc, &modify.version, QUIET_WAIT, PAGE)),
        (
            "RetrievePropertiesEx.object",
            codec::retrieve_properties_ex(&pc, &codec::filter_spec(vm, &mapping::prop_specs()), 1),
        ),
        ("DestroyPropertyFilter", codec::destroy_property_filter(&filter)),
        ("DestroyPropertyCollector", codec::destroy_property_collector(&pc)),
        ("Logout", codec::logout(&sc.session_manager)),
    ])
}

#[test]
fn every_request_netfold_builds_is_the_tree_pyvmomi_sends() {
    let captured: std::collections::BTreeSet<String> =
        files(&golden_dir()).into_keys().filter_map(|n| n.strip_suffix(".request.xml").map(str::to_string)).collect();
    let ours = netfold_requests();
    assert_eq!(
        captured.iter().map(String::as_str).collect::<Vec<_>>(),
        ours.keys().copied().collect::<Vec<_>>(),
        "the captured calls and the calls built here differ"
    );
    for (call, body) in &ours {
        let a = without_version_ids(tree(&format!("netfold's {call}"), body.as_bytes()));
        let b = without_version_ids(tree(&format!("pyVmomi's {call}"), &golden(&format!("{call}.request.xml"))));
        if let Some(d) = wire_tree::first_difference(&a, &b) {
            panic!(
                "{call}: netfold's request differs from pyVmomi's at {d}\nnetfold:\n{}pyVmomi:\n{}",
                a.render(),
                b.render()
            );
        }
    }
}

#[test]
fn the_tree_comparison_resolves_prefixes_and_sees_a_moved_element() {
    // Same tree under other prefixes: equal. Two elements swapped: a difference.
    let a = tree("a", br#"<s:E xmlns:s="urn:e" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><F xmlns="urn:vim25"><x i:type="T">1</x><y/></F></s:E>"#);
    let b = tree("b", br#"<E xmlns="urn:e"><v:F xmlns:v="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><v:x xsi:type="v:T">1</v:x><v:y></v:y></v:F></E>"#);
    assert_eq!(wire_tree::first_difference(&a, &b), None, "{}\n{}", a.render(), b.render());
    let c = tree("c", br#"<E xmlns="urn:e"><F xmlns="urn:vim25"><y/><x xmlns:q="http://www.w3.org/2001/XMLSchema-instance" q:type="T">1</x></F></E>"#);
    assert!(wire_tree::first_difference(&a, &c).is_some());
}

#[test]
fn vcsims_service_content_login_and_created_objects_decode() {
    assert_eq!(codec::decode_service_versions(&reply("ServiceVersions")).unwrap(), "6.5");
    let sc = codec::decode_service_content(&reply("RetrieveServiceContent")).unwrap();
    assert_eq!(sc.root_folder, MoRef::new("Folder", "group-d1"));
    assert_eq!(sc.property_collector, MoRef::new("PropertyCollector", "propertyCollector"));
    assert_eq!(sc.view_manager, MoRef::new("ViewManager", "ViewManager"));
    assert_eq!(sc.session_manager, MoRef::new("SessionManager", "SessionManager"));
    assert_eq!(sc.api_version.as_deref(), Some("6.5"));
    assert_eq!(codec::decode_login(&reply("Login"), "http://vcsim", USER).unwrap(), USER);
    for (call, kind) in [
        ("CreatePropertyCollector", "PropertyCollector"),
        ("CreateContainerView", "ContainerView"),
        ("CreateFilter", "PropertyFilter"),
    ] {
        let m = codec::decode_moref(&reply(call), call).unwrap();
        assert_eq!(m.kind, kind, "{call}");
        assert!(m.value.starts_with("session["), "{call}: vcsim names session objects by session: {m}");
    }
    for call in ["DestroyPropertyFilter", "DestroyPropertyCollector", "Logout"] {
        codec::decode_void(&reply(call), call).unwrap_or_else(|e| panic!("{call}: {e}"));
    }
}

#[test]
fn vcsims_inventory_decodes_and_maps_to_facts() {
    let r = codec::decode_retrieve(&reply("RetrievePropertiesEx"), "RetrievePropertiesEx").unwrap();
    assert_eq!(r.token, None, "vcsim 0.24.2 ignores maxObjects");
    let mut objs: Vec<String> = r.objects.iter().map(|o| o.obj.to_string()).collect();
    objs.sort();
    assert_eq!(
        objs,
        [
            "DistributedVirtualPortgroup:dvportgroup-11",
            "DistributedVirtualPortgroup:dvportgroup-13",
            "DistributedVirtualSwitch:dvs-9",
            "HostSystem:host-21",
            "VirtualMachine:vm-27"
        ]
    );
    let vm = r.objects.iter().find(|o| o.obj.kind == mapping::VM).unwrap();
    assert_eq!(props_of(vm, "runtime.host"), &Value::MoRef(MoRef::new("HostSystem", "host-21")));
    assert_eq!(props_of(vm, "runtime.powerState"), &Value::Str("poweredOn".into()));
    let Value::Nics(nics) = props_of(vm, "config.hardware.device") else { panic!("nics") };
    assert_eq!(nics.len(), 1, "{nics:?}");
    let host = r.objects.iter().find(|o| o.obj.kind == mapping::HOST).unwrap();
    let Value::Pnics(pnics) = props_of(host, "config.network.pnic") else { panic!("pnics") };
    assert_eq!(pnics.iter().map(|p| p.device.as_str()).collect::<Vec<_>>(), ["vmnic0", "vmnic1"]);

    let hints = codec::decode_network_hints(&reply("QueryNetworkHint")).unwrap();
    assert_eq!(hints.iter().map(|h| h.device.as_str()).collect::<Vec<_>>(), ["vmnic0", "vmnic1"]);
    assert!(hints.iter().all(|h| h.cdp.is_none() && h.lldp.is_none()), "vcsim sees no neighbours: {hints:?}");

    let mut inv = Inventory::from_contents(r.objects);
    inv.set_hints("host-21", hints);
    let m = inv.facts();
    assert!(m.rejected.is_empty(), "{:?}", m.rejected);
    // vcsim's model: one host, two standard port groups on vmnic0, the DVS uplink port group
    // (a 1-4094 trunk) and one distributed port group, one VM with one NIC on it.
    assert_eq!(m.facts.len(), 8, "{:#?}", m.facts);
    let networks: Vec<String> = m
        .facts
        .values()
        .filter_map(|f| match f {
            Fact::Network(n) => Some(format!("{} {:?} {:?}", n.network, n.vlan, n.uplinks)),
            _ => None,
        })
        .collect();
    assert_eq!(
        networks,
        [
            "Management Network Untagged [\"vmnic0\"]",
            "VM Network Untagged [\"vmnic0\"]",
            "dvportgroup-11 Trunk([VlanRange { first: VlanId(1), last: VlanId(4094) }]) []",
            "dvportgroup-13 Untagged []",
        ]
    );
    let vnics: Vec<_> = m.facts.values().filter_map(|f| if let Fact::Vnic(v) = f { Some(v) } else { None }).collect();
    let [v] = &vnics[..] else { panic!("one vNIC: {vnics:?}") };
    assert_eq!(
        (v.vm.as_str(), v.host.as_str(), v.network.as_str(), v.mac.as_str(), v.connected, v.powered_on),
        ("vm-27", "host-21", "dvportgroup-13", "00:0c:29:36:63:62", false, true)
    );
}

#[test]
fn vcsims_updates_decode_enter_modify_and_nothing() {
    let enter = codec::decode_updates(&reply("WaitForUpdatesEx.enter")).unwrap().expect("an update set");
    assert!(!enter.truncated);
    assert_eq!(enter.objects.len(), 5);
    assert!(enter.objects.iter().all(|o| o.kind == UpdateKind::Enter), "{:?}", enter.objects);
    let modify = codec::decode_updates(&reply("WaitForUpdatesEx.modify")).unwrap().expect("an update set");
    let [u] = &modify.objects[..] else { panic!("one update: {modify:?}") };
    assert_eq!((u.kind, &u.obj), (UpdateKind::Modify, &MoRef::new("VirtualMachine", "vm-27")));
    let [c] = &u.changes[..] else { panic!("one change: {u:?}") };
    assert_eq!(
        (c.name.as_str(), c.op, &c.val),
        ("runtime.powerState", ChangeOp::Assign, &Some(Value::Str("poweredOff".into())))
    );
    assert_eq!(codec::decode_updates(&reply("WaitForUpdatesEx.none")).unwrap(), None, "no returnval: nothing changed");
    let one = codec::decode_retrieve(&reply("RetrievePropertiesEx.object"), "RetrievePropertiesEx").unwrap();
    let [o] = &one.objects[..] else { panic!("one object: {one:?}") };
    assert_eq!(props_of(o, "runtime.powerState"), &Value::Str("poweredOff".into()));
}

#[test]
fn vcsims_answer_to_continue_retrieve_is_a_method_not_found_fault() {
    let e = codec::decode_retrieve(&reply("ContinueRetrievePropertiesEx"), "ContinueRetrievePropertiesEx").unwrap_err();
    let Error::Fault { call, fault_type, message } = &e else { panic!("{e:?}") };
    assert_eq!((call.as_str(), fault_type.as_str()), ("ContinueRetrievePropertiesEx", "MethodNotFound"));
    assert!(message.contains("does not implement: ContinueRetrievePropertiesEx"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Recapture.

/// The values a recapture may change without the shape changing, replaced by placeholders in
/// text and attribute values before comparing:
/// - UUIDs (session keys, `session[…]…` object ids, instance UUIDs): `<uuid>`;
/// - `xsd:dateTime` values (`loginTime`, `lastActiveTime`, `bootTime` …): `<time>`;
/// - vcsim's per-process numbers in CD-ROM device names (`cdrom--201-<n>`) and datastore paths
///   (`/tmp/govcsim-DC0-LocalDS_0-<n>@…`): `<n>`;
/// - versions: the text of `userAgent` (pyVmomi, Python and kernel versions), `fullName`,
///   `version`, `build`, `apiVersion` and `licenseProductVersion` elements, and pyVmomi's
///   `versionId` attribute: `<version>`.
fn volatile(mut t: Element) -> Element {
    let uuid =
        regex::Regex::new(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}").unwrap();
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?").unwrap();
    let numbers = regex::Regex::new(r"(cdrom--\d+-|/tmp/govcsim-[^/@<]*-)\d+").unwrap();
    let clean = |s: &str| {
        let s = uuid.replace_all(s, "<uuid>");
        let s = time.replace_all(&s, "<time>");
        numbers.replace_all(&s, "${1}<n>").into_owned()
    };
    const VERSIONS: &[&str] = &["userAgent", "fullName", "version", "build", "apiVersion", "licenseProductVersion"];
    t.walk_mut(&mut |e| {
        let local = e.name.rsplit('}').next().unwrap_or_default().to_string();
        for (k, v) in e.attrs.iter_mut() {
            *v = if k == "versionId" { "<version>".into() } else { clean(v) };
        }
        for c in &mut e.children {
            if let Item::Text(s) = c {
                *s = if VERSIONS.contains(&local.as_str()) { "<version>".into() } else { clean(s) };
            }
        }
    });
    t
}

#[test]
fn volatile_values_are_all_that_the_recapture_ignores() {
    let a = br#"<r><key>8b4eecd2-3817-408d-8620-a8dcc56e85ba</key><loginTime>2026-12-02T00:15:14.760143181Z</loginTime><userAgent>pyvmomi 9</userAgent><x v="session[8b4eecd2-3817-408d-8620-a8dcc56e85ba]">cdrom--201-824637896736</x><n>vm-27</n></r>"#;
    let b = br#"<r><key>00000000-1111-2222-3333-444444444444</key><loginTime>2027-01-01T10:00:00Z</loginTime><userAgent>pyvmomi 10</userAgent><x v="session[00000000-1111-2222-3333-444444444444]">cdrom--201-1</x><n>vm-27</n></r>"#;
    let c = br#"<r><key>00000000-1111-2222-3333-444444444444</key><loginTime>2027-01-01T10:00:00Z</loginTime><userAgent>pyvmomi 10</userAgent><x v="session[00000000-1111-2222-3333-444444444444]">cdrom--201-1</x><n>vm-28</n></r>"#;
    let (a, b, c) = (volatile(tree("a", a)), volatile(tree("b", b)), volatile(tree("c", c)));
    assert_eq!(wire_tree::first_difference(&a, &b), None);
    assert!(wire_tree::first_difference(&a, &c).unwrap().contains("vm-28"), "an object id is not volatile");
}

#[test]
#[ignore = "needs vcsim (Go + govmomi) and pyVmomi: set PYVMOMI_PYTHON and run with --ignored"]
fn vcsim_and_pyvmomi_still_answer_and_ask_as_captured() {
    let bin = sims::vcsim::binary(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap_or_else(|e| panic!("{e}"));
    let vc = sims::vcsim::Vcsim::start(&bin, VCSIM_ARGS, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let out = tempfile::tempdir().unwrap();
    let props: Vec<(&str, &[&str])> = mapping::prop_specs();
    let spec = serde_json::json!({ "props": props, "page": PAGE, "wait": WAIT }).to_string();
    let port = vc.port.to_string();
    let strs = [vc.host.as_str(), &port, &vc.user, &vc.password];
    let args: Vec<&std::ffi::OsStr> =
        strs.iter().map(|a| a.as_ref()).chain([out.path().as_os_str(), spec.as_ref()]).collect();
    captures::run_script("PYVMOMI_PYTHON", "vsphere_capture.py", &args);
    let fresh = files(out.path());
    if std::env::var_os("NETFOLD_RECAPTURE").is_some() {
        for (name, bytes) in &fresh {
            std::fs::write(golden_dir().join(name), bytes).unwrap();
        }
        eprintln!("NETFOLD_RECAPTURE: wrote {} files into {}", fresh.len(), golden_dir().display());
        return;
    }
    let checked_in = files(&golden_dir());
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        checked_in.keys().collect::<Vec<_>>(),
        "the captured exchanges changed"
    );
    for (name, bytes) in &fresh {
        let a = volatile(tree(&format!("fresh {name}"), bytes));
        let b = volatile(tree(&format!("checked-in {name}"), &checked_in[name]));
        if let Some(d) = wire_tree::first_difference(&a, &b) {
            panic!(
                "{name} changed shape at {d}; review and rerun with NETFOLD_RECAPTURE=1\nfresh:\n{}checked in:\n{}",
                a.render(),
                b.render()
            );
        }
    }
}
