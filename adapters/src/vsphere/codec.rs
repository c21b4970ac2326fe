//! SOAP 1.1 / `urn:vim25` codec: pure functions from response bytes to typed values, and the
//! request bodies the client sends. No IO here; [`super::client`] owns the transport.
//!
//! Decoding goes through a small element tree ([`Node`]) built with quick-xml's namespace-aware
//! reader: element names and `xsi:type` values are resolved by namespace URI, never by the
//! literal prefix (servers use `xsi`, `XMLSchema-instance`, `ns0` ...). Unknown elements are
//! ignored; absent arrays are empty. The simulator reuses the same tree to read requests.

use std::borrow::Cow;

use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, QName, ResolveResult};
use quick_xml::NsReader;

use super::error::{Error, Result};

/// SOAP 1.1 envelope namespace.
pub const NS_SOAPENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// XML Schema instance namespace (`xsi:type`).
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// XML Schema namespace (`xsd:string` ...).
pub const NS_XSD: &str = "http://www.w3.org/2001/XMLSchema";
/// The vSphere API namespace.
pub const NS_VIM25: &str = "urn:vim25";

/// Deepest element nesting accepted (vim25 responses stay well below 20).
const MAX_DEPTH: usize = 64;

/// Namespace of an element or type name, as far as this codec cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    SoapEnv,
    Vim25,
    Xsd,
    /// No namespace (fault children `faultcode`, `faultstring`, `detail`).
    None,
    Other,
}

impl Ns {
    fn of(r: &ResolveResult<'_>) -> Ns {
        match r {
            ResolveResult::Bound(Namespace(uri)) => match *uri {
                b"http://schemas.xmlsoap.org/soap/envelope/" => Ns::SoapEnv,
                b"urn:vim25" => Ns::Vim25,
                b"http://www.w3.org/2001/XMLSchema" => Ns::Xsd,
                _ => Ns::Other,
            },
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Unknown(_) => Ns::Other,
        }
    }
}

/// One element of a decoded document: local name, namespace, resolved `xsi:type`, the `type`
/// attribute (of a `ManagedObjectReference`), text and children.
/// Names and text borrow from the input where they can (no escapes), so building the tree
/// allocates little beyond the child vectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node<'a> {
    pub name: &'a str,
    pub ns: Option<Ns>,
    /// `xsi:type`, resolved: `(namespace, local name)`.
    pub xsi_type: Option<(Ns, String)>,
    /// The plain `type` attribute (managed object references).
    pub type_attr: Option<String>,
    pub text: Cow<'a, str>,
    pub children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name (arrays: absent means empty).
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Node<'a>> + 's {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of a child, if present.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_ref())
    }

    /// The local name of the `xsi:type`, when it is in the vim25 or XML Schema namespace.
    pub fn vim_type(&self) -> Option<&str> {
        match &self.xsi_type {
            Some((Ns::Vim25 | Ns::Xsd | Ns::None, t)) => Some(t.as_str()),
            _ => None,
        }
    }

    fn int_of(&self, name: &str, what: &str) -> Result<Option<i64>> {
        match self.text_of(name) {
            None => Ok(None),
            Some(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error::malformed(what, format!("`{name}` is not an integer: `{t}`"))),
        }
    }

    fn bool_of(&self, name: &str) -> Option<bool> {
        self.text_of(name).map(|t| matches!(t.trim(), "true" | "1"))
    }
}

/// Most attributes, namespace declarations included, that one start tag may carry. vim25 tags
/// carry a handful (the envelope's `xmlns:*`, `xsi:type`, `type`). The bound keeps hostile tags
/// away from quick-xml 0.37's namespace reader, whose duplicate-attribute check is quadratic in
/// a tag's attributes (RUSTSEC-2026-0194) and whose namespace bindings are unbounded
/// (RUSTSEC-2026-0195): ADR 0006.
pub const MAX_ATTRIBUTES: usize = 64;

/// Refuses a start tag with more than [`MAX_ATTRIBUTES`] attributes before the namespace reader
/// sees it: one pass of quick-xml's plain reader (no namespace resolution), each tag's
/// attributes counted without the duplicate check. Malformed XML is left to [`parse_tree`]'s
/// reader, which reports it with its position.
fn check_attribute_counts(xml: &[u8]) -> Result<()> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    loop {
        let pos = reader.buffer_position();
        match reader.read_event() {
            Ok(Event::Start(s) | Event::Empty(s))
                if s.attributes().with_checks(false).nth(MAX_ATTRIBUTES).is_some() =>
            {
                let name = String::from_utf8_lossy(s.name().as_ref()).chars().take(40).collect::<String>();
                return Err(Error::malformed(
                    "XML",
                    format!("<{name}> at byte {pos} has more than {MAX_ATTRIBUTES} attributes"),
                ));
            }
            Ok(Event::Eof) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// Parses an XML document into a [`Node`] tree (the root element).
pub fn parse_tree(xml: &[u8]) -> Result<Node<'_>> {
    check_attribute_counts(xml)?;
    let mut reader = NsReader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Node<'_>> = Vec::new();
    let mut root: Option<Node<'_>> = None;
    loop {
        let pos = reader.buffer_position();
        let (res, ev) =
            reader.read_resolved_event().map_err(|e| Error::malformed("XML", format!("at byte {pos}: {e}")))?;
        let ns = Ns::of(&res);
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() {
                    return Err(Error::malformed("XML", format!("content after the root element at byte {pos}")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::malformed("XML", format!("nesting deeper than {MAX_DEPTH} at byte {pos}")));
                }
                let node = start_node(&reader, xml, s, ns, pos)?;
                if matches!(ev, Event::Empty(_)) {
                    attach(&mut stack, &mut root, node);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node =
                    stack.pop().ok_or_else(|| Error::malformed("XML", format!("stray end tag at byte {pos}")))?;
                attach(&mut stack, &mut root, node);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let text = text_of_event(t.into_inner(), pos)?;
                    append(&mut top.text, text);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    append(&mut top.text, Cow::Owned(String::from_utf8_lossy(&c).into_owned()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(Error::malformed("XML", format!("truncated document: <{}> is never closed", stack[0].name)));
    }
    root.ok_or_else(|| Error::malformed("XML", "empty document"))
}

/// Text content: borrowed when it holds no entity references, unescaped otherwise.
fn text_of_event(raw: Cow<'_, [u8]>, pos: u64) -> Result<Cow<'_, str>> {
    let bad = |e: &dyn std::fmt::Display| Error::malformed("XML text", format!("at byte {pos}: {e}"));
    match raw {
        Cow::Borrowed(b) => {
            let s = std::str::from_utf8(b).map_err(|e| bad(&e))?;
            match quick_xml::escape::unescape(s).map_err(|e| bad(&e))? {
                Cow::Borrowed(_) => Ok(Cow::Borrowed(s)),
                Cow::Owned(o) => Ok(Cow::Owned(o)),
            }
        }
        Cow::Owned(b) => {
            let s = String::from_utf8(b).map_err(|e| bad(&e))?;
            Ok(Cow::Owned(quick_xml::escape::unescape(&s).map_err(|e| bad(&e))?.into_owned()))
        }
    }
}

fn append<'a>(to: &mut Cow<'a, str>, more: Cow<'a, str>) {
    if to.is_empty() {
        *to = more;
    } else {
        to.to_mut().push_str(&more);
    }
}

fn attach<'a>(stack: &mut [Node<'a>], root: &mut Option<Node<'a>>, node: Node<'a>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

/// The element's local name, borrowed from the input.
fn local_name<'a>(xml: &'a [u8], qname: &[u8], pos: u64) -> Result<&'a str> {
    let off = (qname.as_ptr() as usize).wrapping_sub(xml.as_ptr() as usize);
    let raw = match xml.get(off..off.wrapping_add(qname.len())) {
        Some(r) if r == qname => r,
        _ => return Err(Error::malformed("XML", format!("element name not found in the input at byte {pos}"))),
    };
    let local = match raw.iter().position(|&b| b == b':') {
        Some(i) => &raw[i + 1..],
        None => raw,
    };
    std::str::from_utf8(local).map_err(|e| Error::malformed("XML", format!("element name at byte {pos}: {e}")))
}

fn start_node<'a>(
    reader: &NsReader<&'a [u8]>,
    xml: &'a [u8],
    s: &BytesStart<'a>,
    ns: Ns,
    pos: u64,
) -> Result<Node<'a>> {
    let name = local_name(xml, s.name().as_ref(), pos)?;
    let mut node = Node { name, ns: Some(ns), ..Node::default() };
    for a in s.attributes() {
        let a = a.map_err(|e| Error::malformed("XML attribute", format!("at byte {pos}: {e}")))?;
        let (ans, local) = reader.resolve_attribute(a.key);
        match (Ns::of(&ans), local.as_ref()) {
            (Ns::Other, b"type") if is_xsi(&ans) => {
                let value: Cow<'_, str> =
                    a.unescape_value().map_err(|e| Error::malformed("XML attribute", format!("at byte {pos}: {e}")))?;
                let (tns, tlocal) = reader.resolve_element(QName(value.as_bytes()));
                node.xsi_type = Some((Ns::of(&tns), String::from_utf8_lossy(tlocal.as_ref()).into_owned()));
            }
            (Ns::None, b"type") => {
                let value: Cow<'_, str> =
                    a.unescape_value().map_err(|e| Error::malformed("XML attribute", format!("at byte {pos}: {e}")))?;
                node.type_attr = Some(value.into_owned());
            }
            _ => {}
        }
    }
    Ok(node)
}

fn is_xsi(r: &ResolveResult<'_>) -> bool {
    matches!(r, ResolveResult::Bound(Namespace(uri)) if *uri == NS_XSI.as_bytes())
}

/// A SOAP fault, decoded: `faultstring` and the fault type from `detail` (`InvalidLogin`,
/// `NotAuthenticated` ...; the `xsi:type`, or the element name without its `Fault` suffix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub code: String,
    pub message: String,
    pub fault_type: Option<String>,
}

impl Fault {
    fn from_node(n: &Node) -> Fault {
        let fault_type = n.child("detail").and_then(|d| d.children.first()).map(|f| match f.vim_type() {
            Some(t) => t.to_string(),
            None => f.name.strip_suffix("Fault").unwrap_or(f.name).to_string(),
        });
        Fault {
            code: n.text_of("faultcode").unwrap_or_default().trim().to_string(),
            message: n.text_of("faultstring").unwrap_or_default().trim().to_string(),
            fault_type,
        }
    }

    /// The typed error for this fault, raised by `call`.
    pub fn into_error(self, call: &str, url: &str, user: &str) -> Error {
        match self.fault_type.as_deref() {
            Some("InvalidLogin") => Error::InvalidLogin { url: url.to_string(), user: user.to_string() },
            Some("NotAuthenticated") => Error::NotAuthenticated { message: self.message },
            other => Error::Fault {
                call: call.to_string(),
                fault_type: other.unwrap_or(&self.code).to_string(),
                message: self.message,
            },
        }
    }
}

/// The body of a SOAP envelope: either the response element or a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Response(Node<'a>),
    Fault(Fault),
}

/// Parses a SOAP envelope and returns its first body element (response or fault).
pub fn parse_envelope(xml: &[u8]) -> Result<Body<'_>> {
    let root = parse_tree(xml)?;
    if root.name != "Envelope" || root.ns != Some(Ns::SoapEnv) {
        return Err(Error::malformed(
            "SOAP envelope",
            format!("root element is <{}>, not a SOAP 1.1 Envelope", root.name),
        ));
    }
    let body = root
        .children
        .into_iter()
        .find(|c| c.name == "Body" && c.ns == Some(Ns::SoapEnv))
        .ok_or_else(|| Error::malformed("SOAP envelope", "no Body"))?;
    let first = body.children.into_iter().next().ok_or_else(|| Error::malformed("SOAP envelope", "empty Body"))?;
    if first.name == "Fault" && first.ns == Some(Ns::SoapEnv) {
        return Ok(Body::Fault(Fault::from_node(&first)));
    }
    Ok(Body::Response(first))
}

/// Parses a response and checks its element is `<{call}Response>`; a fault becomes its error.
pub fn response<'a>(xml: &'a [u8], call: &str, url: &str, user: &str) -> Result<Node<'a>> {
    match parse_envelope(xml)? {
        Body::Fault(f) => Err(f.into_error(call, url, user)),
        Body::Response(n) => {
            let expected = format!("{call}Response");
            if n.name != expected {
                return Err(Error::unexpected(call, format!("got <{}>, expected <{expected}>", n.name)));
            }
            Ok(n)
        }
    }
}

/// A `ManagedObjectReference`: `type` attribute plus the id text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MoRef {
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self { kind: kind.into(), value: value.into() }
    }

    fn from_node(n: &Node, what: &str) -> Result<MoRef> {
        let kind = n
            .type_attr
            .clone()
            .ok_or_else(|| Error::malformed(what, format!("<{}> has no `type` attribute", n.name)))?;
        Ok(MoRef { kind, value: n.text.trim().to_string() })
    }

    /// `<{tag} type="…">…</{tag}>`.
    pub fn to_xml(&self, tag: &str) -> String {
        format!("<{tag} type=\"{}\">{}</{tag}>", escape(&self.kind), escape(&self.value))
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The parts of `ServiceContent` the adapter uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub view_manager: MoRef,
    pub session_manager: MoRef,
    pub api_version: Option<String>,
}

/// `RetrieveServiceContentResponse`.
pub fn decode_service_content(xml: &[u8]) -> Result<ServiceContent> {
    let call = "RetrieveServiceContent";
    let n = response(xml, call, "", "")?;
    let rv = n.child("returnval").ok_or_else(|| Error::unexpected(call, "no returnval"))?;
    let mo = |name: &str| -> Result<MoRef> {
        let c = rv.child(name).ok_or_else(|| Error::unexpected(call, format!("no {name}")))?;
        MoRef::from_node(c, call)
    };
    Ok(ServiceContent {
        root_folder: mo("rootFolder")?,
        property_collector: mo("propertyCollector")?,
        view_manager: mo("viewManager")?,
        session_manager: mo("sessionManager")?,
        api_version: rv.child("about").and_then(|a| a.text_of("apiVersion")).map(str::to_string),
    })
}

/// The `urn:vim25` version from `/sdk/vimServiceVersions.xml` (not a SOAP envelope).
pub fn decode_service_versions(xml: &[u8]) -> Result<String> {
    let root = parse_tree(xml)?;
    let version = root
        .all("namespace")
        .find(|ns| ns.text_of("name").map(str::trim) == Some("urn:vim25"))
        .and_then(|ns| ns.text_of("version"))
        .map(|v| v.trim().to_string());
    version.ok_or_else(|| Error::unexpected("vimServiceVersions.xml", "no urn:vim25 namespace with a version"))
}

/// `LoginResponse`: the session's user name (the cookie travels in an HTTP header).
pub fn decode_login(xml: &[u8], url: &str, user: &str) -> Result<String> {
    let n = response(xml, "Login", url, user)?;
    let rv = n.child("returnval").ok_or_else(|| Error::unexpected("Login", "no returnval"))?;
    Ok(rv.text_of("userName").unwrap_or(user).to_string())
}

/// A response whose `returnval` is a managed object reference (`CreateContainerView`,
/// `CreateFilter`).
pub fn decode_moref(xml: &[u8], call: &str) -> Result<MoRef> {
    let n = response(xml, call, "", "")?;
    let rv = n.child("returnval").ok_or_else(|| Error::unexpected(call, "no returnval"))?;
    MoRef::from_node(rv, call)
}

/// A response with no return value (`Logout`, `DestroyPropertyFilter`).
pub fn decode_void(xml: &[u8], call: &str) -> Result<()> {
    response(xml, call, "", "").map(|_| ())
}

/// A physical NIC from `config.network.pnic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicalNic {
    pub key: String,
    pub device: String,
    pub mac: Option<String>,
}

/// A standard virtual switch from `config.network.vswitch` (`pnic` holds pnic *keys*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualSwitch {
    pub name: String,
    pub key: String,
    pub pnic: Vec<String>,
}

/// A standard port group from `config.network.portgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroup {
    pub name: String,
    pub vlan_id: i64,
    pub vswitch_name: String,
}

/// A host's proxy of a distributed switch from `config.network.proxySwitch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySwitch {
    pub dvs_uuid: String,
    pub dvs_name: String,
    pub pnic: Vec<String>,
}

/// A host's membership of a distributed switch from the switch's `config.host`
/// (`DistributedVirtualSwitchHostMember`): the host and the pNIC devices of its
/// `DistributedVirtualSwitchHostMemberPnicBacking`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DvsMember {
    pub host: MoRef,
    pub pnic_devices: Vec<String>,
}

/// What a virtual NIC is plugged into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A standard port group, by name (`deviceName`).
    Network { name: String },
    /// A distributed port group, by key.
    DvPort { portgroup_key: String, switch_uuid: String },
    /// Anything else (opaque/NSX networks ...), by its `xsi:type`.
    Other(String),
}

/// A `VirtualEthernetCard` (any subtype) from `config.hardware.device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthernetCard {
    pub key: i64,
    pub device_type: String,
    pub mac: Option<String>,
    pub connected: bool,
    pub backing: Backing,
}

/// `config.defaultPortConfig.vlan` of a distributed port group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DvsVlan {
    /// `VmwareDistributedVirtualSwitchVlanIdSpec` (0 = untagged).
    Id(i64),
    /// `VmwareDistributedVirtualSwitchTrunkVlanSpec`: inclusive ranges.
    Trunk(Vec<(i64, i64)>),
    /// `VmwareDistributedVirtualSwitchPvlanSpec`: the secondary PVLAN id.
    Pvlan(i64),
}

/// A property value, decoded by its `xsi:type`. Types the adapter does not use are kept as
/// `Other(type)` and ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    MoRef(MoRef),
    Pnics(Vec<PhysicalNic>),
    Vswitches(Vec<VirtualSwitch>),
    Portgroups(Vec<PortGroup>),
    ProxySwitches(Vec<ProxySwitch>),
    /// `ArrayOfManagedObjectReference`.
    MoRefs(Vec<MoRef>),
    /// `ArrayOfDistributedVirtualSwitchHostMember`.
    DvsMembers(Vec<DvsMember>),
    /// `ArrayOfVirtualDevice`, keeping only the Ethernet cards.
    Nics(Vec<EthernetCard>),
    Vlan(DvsVlan),
    Other(String),
}

/// The `VirtualEthernetCard` subtypes of vim25.
const ETHERNET_TYPES: &[&str] = &[
    "VirtualEthernetCard",
    "VirtualE1000",
    "VirtualE1000e",
    "VirtualPCNet32",
    "VirtualVmxnet",
    "VirtualVmxnet2",
    "VirtualVmxnet3",
    "VirtualVmxnet3Vrdma",
    "VirtualSriovEthernetCard",
];

/// Decodes a `<val xsi:type="…">` (or `<returnval>`) by its resolved type.
pub fn decode_value(n: &Node) -> Result<Value> {
    let what = "property value";
    let Some(t) = n.vim_type() else {
        return Ok(match &n.xsi_type {
            Some((_, t)) => Value::Other(t.clone()),
            None => Value::Str(n.text.to_string()),
        });
    };
    Ok(match t {
        "string" | "HostSystemConnectionState" | "VirtualMachinePowerState" | "HostSystemPowerState" => {
            Value::Str(n.text.to_string())
        }
        "int" | "long" | "short" | "byte" => Value::Int(
            n.text.trim().parse().map_err(|_| Error::malformed(what, format!("`{}` is not an integer", n.text)))?,
        ),
        "boolean" => Value::Bool(matches!(n.text.trim(), "true" | "1")),
        "ManagedObjectReference" => Value::MoRef(MoRef::from_node(n, what)?),
        "ArrayOfPhysicalNic" => Value::Pnics(
            n.all("PhysicalNic")
                .map(|p| PhysicalNic {
                    key: p.text_of("key").unwrap_or_default().to_string(),
                    device: p.text_of("device").unwrap_or_default().to_string(),
                    mac: p.text_of("mac").map(str::to_string),
                })
                .collect(),
        ),
        "ArrayOfHostVirtualSwitch" => Value::Vswitches(
            n.all("HostVirtualSwitch")
                .map(|v| VirtualSwitch {
                    name: v.text_of("name").unwrap_or_default().to_string(),
                    key: v.text_of("key").unwrap_or_default().to_string(),
                    pnic: v.all("pnic").map(|p| p.text.trim().to_string()).collect(),
                })
                .collect(),
        ),
        "ArrayOfHostPortGroup" => {
            let mut out = Vec::new();
            for p in n.all("HostPortGroup") {
                let spec = p.child("spec").ok_or_else(|| Error::malformed(what, "HostPortGroup without spec"))?;
                out.push(PortGroup {
                    name: spec.text_of("name").unwrap_or_default().to_string(),
                    vlan_id: spec.int_of("vlanId", "HostPortGroupSpec")?.unwrap_or(0),
                    vswitch_name: spec.text_of("vswitchName").unwrap_or_default().to_string(),
                });
            }
            Value::Portgroups(out)
        }
        "ArrayOfHostProxySwitch" => Value::ProxySwitches(
            n.all("HostProxySwitch")
                .map(|p| ProxySwitch {
                    dvs_uuid: p.text_of("dvsUuid").unwrap_or_default().to_string(),
                    dvs_name: p.text_of("dvsName").unwrap_or_default().to_string(),
                    pnic: p.all("pnic").map(|k| k.text.trim().to_string()).collect(),
                })
                .collect(),
        ),
        "ArrayOfManagedObjectReference" => {
            Value::MoRefs(n.all("ManagedObjectReference").map(|r| MoRef::from_node(r, what)).collect::<Result<_>>()?)
        }
        "ArrayOfDistributedVirtualSwitchHostMember" => {
            let mut out = Vec::new();
            for m in n.all("DistributedVirtualSwitchHostMember") {
                let config = m.child("config").ok_or_else(|| Error::malformed(what, "HostMember without config"))?;
                let Some(host) = config.child("host") else { continue };
                let pnic_devices = config
                    .child("backing")
                    .map(|b| b.all("pnicSpec").filter_map(|s| s.text_of("pnicDevice")).map(|d| d.trim().to_string()))
                    .into_iter()
                    .flatten()
                    .collect();
                out.push(DvsMember { host: MoRef::from_node(host, what)?, pnic_devices });
            }
            Value::DvsMembers(out)
        }
        "ArrayOfVirtualDevice" => {
            let mut out = Vec::new();
            for d in n.all("VirtualDevice") {
                let dt = d.vim_type().unwrap_or("VirtualDevice");
                if ETHERNET_TYPES.contains(&dt) || d.child("macAddress").is_some() {
                    out.push(ethernet_card(d, dt)?);
                }
            }
            Value::Nics(out)
        }
        "VmwareDistributedVirtualSwitchVlanIdSpec" => {
            Value::Vlan(DvsVlan::Id(n.int_of("vlanId", "VlanIdSpec")?.unwrap_or(0)))
        }
        "VmwareDistributedVirtualSwitchTrunkVlanSpec" => {
            let mut ranges = Vec::new();
            for r in n.all("vlanId") {
                let start =
                    r.int_of("start", "TrunkVlanSpec")?.ok_or_else(|| Error::malformed(what, "range without start"))?;
                let end =
                    r.int_of("end", "TrunkVlanSpec")?.ok_or_else(|| Error::malformed(what, "range without end"))?;
                ranges.push((start, end));
            }
            Value::Vlan(DvsVlan::Trunk(ranges))
        }
        "VmwareDistributedVirtualSwitchPvlanSpec" => {
            Value::Vlan(DvsVlan::Pvlan(n.int_of("pvlanId", "PvlanSpec")?.unwrap_or(0)))
        }
        other => Value::Other(other.to_string()),
    })
}

fn ethernet_card(d: &Node, device_type: &str) -> Result<EthernetCard> {
    let key =
        d.int_of("key", "VirtualEthernetCard")?.ok_or_else(|| Error::malformed("VirtualEthernetCard", "no key"))?;
    let backing = match d.child("backing") {
        None => Backing::Other("none".into()),
        Some(b) => match b.vim_type() {
            Some("VirtualEthernetCardNetworkBackingInfo") => {
                Backing::Network { name: b.text_of("deviceName").unwrap_or_default().to_string() }
            }
            Some("VirtualEthernetCardDistributedVirtualPortBackingInfo") => {
                let port = b.child("port");
                Backing::DvPort {
                    portgroup_key: port.and_then(|p| p.text_of("portgroupKey")).unwrap_or_default().to_string(),
                    switch_uuid: port.and_then(|p| p.text_of("switchUuid")).unwrap_or_default().to_string(),
                }
            }
            Some(t) => Backing::Other(t.to_string()),
            None => Backing::Other("untyped".into()),
        },
    };
    Ok(EthernetCard {
        key,
        device_type: device_type.to_string(),
        mac: d.text_of("macAddress").map(str::to_string),
        connected: d.child("connectable").and_then(|c| c.bool_of("connected")).unwrap_or(false),
        backing,
    })
}

/// A property that could not be read, with its fault type (`NotAuthenticated` ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingProperty {
    pub path: String,
    pub fault_type: String,
}

/// One object of a `RetrieveResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectContent {
    pub obj: MoRef,
    pub props: Vec<(String, Value)>,
    pub missing: Vec<MissingProperty>,
}

/// `RetrievePropertiesEx` / `ContinueRetrievePropertiesEx`: one page and the token for the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetrieveResult {
    pub token: Option<String>,
    pub objects: Vec<ObjectContent>,
}

fn missing_set(n: &Node) -> Vec<MissingProperty> {
    n.all("missingSet")
        .map(|m| MissingProperty {
            path: m.text_of("path").unwrap_or_default().to_string(),
            // `fault` is a LocalizedMethodFault whose inner `fault` carries the MethodFault type.
            fault_type: m
                .child("fault")
                .and_then(|f| f.child("fault").and_then(Node::vim_type).or_else(|| f.vim_type()))
                .unwrap_or("unknown")
                .to_string(),
        })
        .collect()
}

fn check_missing(missing: &[MissingProperty]) -> Result<()> {
    match missing.iter().find(|m| m.fault_type == "NotAuthenticated") {
        Some(m) => Err(Error::NotAuthenticated { message: format!("property `{}` reported NotAuthenticated", m.path) }),
        None => Ok(()),
    }
}

/// One `ObjectContent` of a retrieve result.
pub fn object_content(o: &Node, call: &str) -> Result<ObjectContent> {
    let obj =
        MoRef::from_node(o.child("obj").ok_or_else(|| Error::unexpected(call, "ObjectContent without obj"))?, call)?;
    let mut props = Vec::new();
    for p in o.all("propSet") {
        let name = p.text_of("name").unwrap_or_default().to_string();
        match p.child("val") {
            Some(v) => props.push((name, decode_value(v)?)),
            None => props.push((name, Value::Other("unset".into()))),
        }
    }
    let missing = missing_set(o);
    check_missing(&missing)?;
    Ok(ObjectContent { obj, props, missing })
}

/// Decodes a `RetrievePropertiesEx`/`ContinueRetrievePropertiesEx` response (`call` names which).
/// An absent `returnval` means no objects. A `NotAuthenticated` inside a `missingSet` is
/// returned as [`Error::NotAuthenticated`].
pub fn decode_retrieve(xml: &[u8], call: &str) -> Result<RetrieveResult> {
    let n = response(xml, call, "", "")?;
    let Some(rv) = n.child("returnval") else { return Ok(RetrieveResult::default()) };
    let mut objects = Vec::new();
    for o in rv.all("objects") {
        objects.push(object_content(o, call)?);
    }
    let token = rv.text_of("token").map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    Ok(RetrieveResult { token, objects })
}

/// `enter` / `modify` / `leave`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    Enter,
    Modify,
    Leave,
}

/// `assign` / `add` / `remove` / `indirectRemove`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Assign,
    Add,
    Remove,
    IndirectRemove,
}

/// One `PropertyChange`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyChange {
    pub name: String,
    pub op: ChangeOp,
    pub val: Option<Value>,
}

/// One `ObjectUpdate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectUpdate {
    pub kind: UpdateKind,
    pub obj: MoRef,
    pub changes: Vec<PropertyChange>,
    pub missing: Vec<MissingProperty>,
}

/// `WaitForUpdatesEx`'s `UpdateSet`, flattened over its filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateSet {
    pub version: String,
    pub truncated: bool,
    pub objects: Vec<ObjectUpdate>,
}

/// One `ObjectUpdate` of an update set's filter.
pub fn object_update(o: &Node) -> Result<ObjectUpdate> {
    let call = "WaitForUpdatesEx";
    let kind = match o.text_of("kind").map(str::trim) {
        Some("enter") => UpdateKind::Enter,
        Some("modify") => UpdateKind::Modify,
        Some("leave") => UpdateKind::Leave,
        other => return Err(Error::unexpected(call, format!("unknown ObjectUpdate kind {other:?}"))),
    };
    let obj =
        MoRef::from_node(o.child("obj").ok_or_else(|| Error::unexpected(call, "ObjectUpdate without obj"))?, call)?;
    let mut changes = Vec::new();
    for c in o.all("changeSet") {
        let op = match c.text_of("op").map(str::trim) {
            Some("assign") => ChangeOp::Assign,
            Some("add") => ChangeOp::Add,
            Some("remove") => ChangeOp::Remove,
            Some("indirectRemove") => ChangeOp::IndirectRemove,
            other => return Err(Error::unexpected(call, format!("unknown PropertyChange op {other:?}"))),
        };
        let val = c.child("val").map(decode_value).transpose()?;
        changes.push(PropertyChange { name: c.text_of("name").unwrap_or_default().to_string(), op, val });
    }
    let missing = missing_set(o);
    check_missing(&missing)?;
    Ok(ObjectUpdate { kind, obj, changes, missing })
}

/// Decodes `WaitForUpdatesExResponse`: `None` when there is no `returnval` (nothing changed
/// before `maxWaitSeconds`).
pub fn decode_updates(xml: &[u8]) -> Result<Option<UpdateSet>> {
    let call = "WaitForUpdatesEx";
    let n = response(xml, call, "", "")?;
    let Some(rv) = n.child("returnval") else { return Ok(None) };
    let version =
        rv.text_of("version").ok_or_else(|| Error::unexpected(call, "UpdateSet without version"))?.trim().to_string();
    let mut objects = Vec::new();
    for fs in rv.all("filterSet") {
        check_missing(&missing_set(fs))?;
        for o in fs.all("objectSet") {
            objects.push(object_update(o)?);
        }
    }
    let truncated = rv.bool_of("truncated").unwrap_or(false);
    Ok(Some(UpdateSet { version, truncated, objects }))
}

/// A CDP neighbour (`PhysicalNicCdpInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdpInfo {
    pub dev_id: Option<String>,
    pub port_id: Option<String>,
    pub system_name: Option<String>,
}

/// An LLDP neighbour (`LinkLayerDiscoveryProtocolInfo`); `parameter` key/value pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LldpInfo {
    pub chassis_id: Option<String>,
    pub port_id: Option<String>,
    pub parameters: Vec<(String, String)>,
}

impl LldpInfo {
    /// The `System Name` parameter.
    pub fn system_name(&self) -> Option<&str> {
        self.parameters.iter().find(|(k, _)| k == "System Name").map(|(_, v)| v.as_str())
    }
}

/// `PhysicalNicHintInfo`: the neighbours seen on one pnic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PnicHint {
    pub device: String,
    pub cdp: Option<CdpInfo>,
    pub lldp: Option<LldpInfo>,
}

fn non_empty(n: &Node, name: &str) -> Option<String> {
    n.text_of(name).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// `QueryNetworkHintResponse`: one `returnval` per pnic.
pub fn decode_network_hints(xml: &[u8]) -> Result<Vec<PnicHint>> {
    let n = response(xml, "QueryNetworkHint", "", "")?;
    Ok(n.all("returnval")
        .map(|h| PnicHint {
            device: h.text_of("device").unwrap_or_default().trim().to_string(),
            cdp: h.child("connectedSwitchPort").map(|c| CdpInfo {
                dev_id: non_empty(c, "devId"),
                port_id: non_empty(c, "portId"),
                system_name: non_empty(c, "systemName"),
            }),
            lldp: h.child("lldpInfo").map(|l| LldpInfo {
                chassis_id: non_empty(l, "chassisId"),
                port_id: non_empty(l, "portId"),
                parameters: l
                    .all("parameter")
                    .map(|p| {
                        (
                            p.text_of("key").unwrap_or_default().to_string(),
                            p.text_of("value").unwrap_or_default().trim().to_string(),
                        )
                    })
                    .collect(),
            }),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// Wraps a request body element in a SOAP 1.1 envelope.
pub fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"{NS_SOAPENV}\" \
         xmlns:xsd=\"{NS_XSD}\" xmlns:xsi=\"{NS_XSI}\"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )
}

/// `RetrieveServiceContent` on `ServiceInstance`.
pub fn retrieve_service_content() -> String {
    envelope(&format!(
        "<RetrieveServiceContent xmlns=\"{NS_VIM25}\">{}</RetrieveServiceContent>",
        MoRef::new("ServiceInstance", "ServiceInstance").to_xml("_this")
    ))
}

/// `SessionManager.Login`.
pub fn login(session_manager: &MoRef, user: &str, password: &str) -> String {
    envelope(&format!(
        "<Login xmlns=\"{NS_VIM25}\">{}<userName>{}</userName><password>{}</password></Login>",
        session_manager.to_xml("_this"),
        escape(user),
        escape(password)
    ))
}

/// `SessionManager.Logout`.
pub fn logout(session_manager: &MoRef) -> String {
    envelope(&format!("<Logout xmlns=\"{NS_VIM25}\">{}</Logout>", session_manager.to_xml("_this")))
}

/// `ViewManager.CreateContainerView` over `container` for these types, recursively.
pub fn create_container_view(view_manager: &MoRef, container: &MoRef, types: &[&str]) -> String {
    let types: String = types.iter().map(|t| format!("<type>{}</type>", escape(*t))).collect();
    envelope(&format!(
        "<CreateContainerView xmlns=\"{NS_VIM25}\">{}{}{types}<recursive>true</recursive></CreateContainerView>",
        view_manager.to_xml("_this"),
        container.to_xml("container")
    ))
}

/// A `PropertyFilterSpec` over a container view (traversing `view`), or over one object.
pub fn filter_spec(target: &MoRef, props: &[(&str, &[&str])]) -> String {
    let mut s = String::from("<propSet>");
    let mut first = true;
    for (kind, paths) in props {
        if !first {
            s.push_str("</propSet><propSet>");
        }
        first = false;
        s.push_str(&format!("<type>{}</type><all>false</all>", escape(*kind)));
        for p in *paths {
            s.push_str(&format!("<pathSet>{}</pathSet>", escape(*p)));
        }
    }
    s.push_str("</propSet>");
    if target.kind == "ContainerView" {
        s.push_str(&format!(
            "<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>traverseEntities</name>\
             <type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet>",
            target.to_xml("obj")
        ));
    } else {
        s.push_str(&format!("<objectSet>{}<skip>false</skip></objectSet>", target.to_xml("obj")));
    }
    s
}

/// `PropertyCollector.CreatePropertyCollector`: a collector of the session's own.
pub fn create_property_collector(collector: &MoRef) -> String {
    envelope(&format!(
        "<CreatePropertyCollector xmlns=\"{NS_VIM25}\">{}</CreatePropertyCollector>",
        collector.to_xml("_this")
    ))
}

/// `PropertyCollector.DestroyPropertyCollector` (its filters go with it).
pub fn destroy_property_collector(collector: &MoRef) -> String {
    envelope(&format!(
        "<DestroyPropertyCollector xmlns=\"{NS_VIM25}\">{}</DestroyPropertyCollector>",
        collector.to_xml("_this")
    ))
}

/// `PropertyFilter.DestroyPropertyFilter`.
pub fn destroy_property_filter(filter: &MoRef) -> String {
    envelope(&format!("<DestroyPropertyFilter xmlns=\"{NS_VIM25}\">{}</DestroyPropertyFilter>", filter.to_xml("_this")))
}

/// `PropertyCollector.RetrievePropertiesEx` with `maxObjects` per page.
pub fn retrieve_properties_ex(collector: &MoRef, spec: &str, max_objects: u32) -> String {
    envelope(&format!(
        "<RetrievePropertiesEx xmlns=\"{NS_VIM25}\">{}<specSet>{spec}</specSet><options><maxObjects>{max_objects}</maxObjects></options></RetrievePropertiesEx>",
        collector.to_xml("_this")
    ))
}

/// `PropertyCollector.ContinueRetrievePropertiesEx` with the previous page's token.
pub fn continue_retrieve_properties_ex(collector: &MoRef, token: &str) -> String {
    envelope(&format!(
        "<ContinueRetrievePropertiesEx xmlns=\"{NS_VIM25}\">{}<token>{}</token></ContinueRetrievePropertiesEx>",
        collector.to_xml("_this"),
        escape(token)
    ))
}

/// `PropertyCollector.CreateFilter` (`partialUpdates` false: whole property values).
pub fn create_filter(collector: &MoRef, spec: &str) -> String {
    envelope(&format!(
        "<CreateFilter xmlns=\"{NS_VIM25}\">{}<spec>{spec}</spec><partialUpdates>false</partialUpdates></CreateFilter>",
        collector.to_xml("_this")
    ))
}

/// `PropertyCollector.WaitForUpdatesEx`.
pub fn wait_for_updates_ex(collector: &MoRef, version: &str, max_wait_seconds: u32, max_object_updates: u32) -> String {
    envelope(&format!(
        "<WaitForUpdatesEx xmlns=\"{NS_VIM25}\">{}<version>{}</version><options><maxWaitSeconds>{max_wait_seconds}</maxWaitSeconds>\
         <maxObjectUpdates>{max_object_updates}</maxObjectUpdates></options></WaitForUpdatesEx>",
        collector.to_xml("_this"),
        escape(version)
    ))
}

/// `HostNetworkSystem.QueryNetworkHint` for every pnic of the host.
pub fn query_network_hint(network_system: &MoRef) -> String {
    envelope(&format!("<QueryNetworkHint xmlns=\"{NS_VIM25}\">{}</QueryNetworkHint>", network_system.to_xml("_this")))
}

/// Whether a `Content-Type` header is XML (`text/xml`, as SOAP 1.1 requires; `application/xml`
/// is tolerated).
pub fn is_xml_content_type(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "text/xml" || mime == "application/xml"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_with(attributes: usize, prefix: &str) -> Vec<u8> {
        let attrs: String = (0..attributes).map(|i| format!(" {prefix}{i}=\"urn:{i}\"")).collect();
        format!("<Envelope><a{attrs}/><b/></Envelope>").into_bytes()
    }

    #[test]
    fn a_start_tag_with_too_many_attributes_is_refused_before_namespace_resolution() {
        let ok = tag_with(MAX_ATTRIBUTES, "a");
        let t = parse_tree(&ok).unwrap();
        assert_eq!(t.children.len(), 2, "{MAX_ATTRIBUTES} attributes are accepted");
        // RUSTSEC-2026-0194: 80,000 distinct names cost seconds in quick-xml 0.37's check.
        let e = parse_tree(&tag_with(80_000, "a")).unwrap_err().to_string();
        assert!(e.contains("<a> at byte 10 has more than 64 attributes"), "{e}");
        // RUSTSEC-2026-0195: namespace declarations, bound before the resolver allocates them.
        let e = parse_tree(&tag_with(MAX_ATTRIBUTES + 1, "xmlns:p")).unwrap_err().to_string();
        assert!(e.contains("more than 64 attributes"), "{e}");
    }

    #[test]
    fn xsi_type_is_resolved_by_namespace_uri_not_prefix() {
        let xml = br#"<a xmlns:q="http://www.w3.org/2001/XMLSchema-instance" xmlns:v="urn:vim25" xmlns:x="urn:other"><b q:type="v:VirtualVmxnet3"/><c q:type="x:VirtualVmxnet3"/><d xsi:type="VirtualVmxnet3" xmlns:xsi="urn:not-xsi"/></a>"#;
        let t = parse_tree(xml).unwrap();
        assert_eq!(t.children[0].vim_type(), Some("VirtualVmxnet3"));
        assert_eq!(t.children[1].vim_type(), None, "a type in another namespace is not a vim25 type");
        assert_eq!(
            t.children[2].xsi_type, None,
            "an attribute named xsi:type outside the XSI namespace is not xsi:type"
        );
    }

    #[test]
    fn truncated_document_names_the_open_element() {
        let e = parse_tree(b"<a><b>text</b><c>").unwrap_err().to_string();
        assert!(e.contains("never closed"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let xml = "<a>".repeat(10_000);
        assert!(parse_tree(xml.as_bytes()).unwrap_err().to_string().contains("nesting deeper"));
    }

    #[test]
    fn content_type_check_accepts_soap_and_refuses_html() {
        assert!(is_xml_content_type("text/xml; charset=utf-8"));
        assert!(is_xml_content_type("Text/XML"));
        assert!(!is_xml_content_type("text/html"));
        assert!(!is_xml_content_type(""));
    }

    #[test]
    fn requests_escape_credentials() {
        let sm = MoRef::new("SessionManager", "SessionManager");
        let body = login(&sm, "a<b", "p&w\"d");
        assert!(body.contains("<userName>a&lt;b</userName>"));
        assert!(body.contains("p&amp;w&quot;d"));
        let Body::Response(n) = parse_envelope(body.as_bytes()).unwrap() else { panic!("fault") };
        assert_eq!(n.text_of("password"), Some("p&w\"d"));
    }

    #[test]
    fn decodes_dvs_members_and_reference_arrays() {
        let xml = br#"<r xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<val xsi:type="ArrayOfDistributedVirtualSwitchHostMember"><DistributedVirtualSwitchHostMember><config>
<host type="HostSystem">host-21</host><maxProxySwitchPorts>64</maxProxySwitchPorts>
<backing xsi:type="DistributedVirtualSwitchHostMemberPnicBacking"><pnicSpec><pnicDevice>vmnic1</pnicDevice>
<uplinkPortKey>8</uplinkPortKey></pnicSpec><pnicSpec><pnicDevice>vmnic2</pnicDevice></pnicSpec></backing>
</config><status>up</status></DistributedVirtualSwitchHostMember></val>
<val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="HostSystem">host-21</ManagedObjectReference>
<ManagedObjectReference type="HostSystem">host-34</ManagedObjectReference></val>
<val xsi:type="ArrayOfManagedObjectReference"></val></r>"#;
        let t = parse_tree(xml).unwrap();
        let vals: Vec<Value> = t.all("val").map(|v| decode_value(v).unwrap()).collect();
        assert_eq!(
            vals[0],
            Value::DvsMembers(vec![DvsMember {
                host: MoRef::new("HostSystem", "host-21"),
                pnic_devices: vec!["vmnic1".into(), "vmnic2".into()]
            }])
        );
        assert_eq!(
            vals[1],
            Value::MoRefs(vec![MoRef::new("HostSystem", "host-21"), MoRef::new("HostSystem", "host-34")])
        );
        assert_eq!(vals[2], Value::MoRefs(vec![]));
    }
}
