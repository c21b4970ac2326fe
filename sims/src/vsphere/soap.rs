//! The simulator's SOAP endpoint: reads a request envelope with the adapter's own codec,
//! dispatches on the method element, and answers as vCenter does (`…Response` with
//! `returnval`, faults as HTTP 500 with `detail`). Sessions are `vmware_soap_session` cookies;
//! property filters keep a per-object snapshot so `WaitForUpdatesEx` reports exactly the
//! properties that changed since the version the client holds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;

use super::tree::{self, ROOT_FOLDER};
use super::world::{render_hints, serves, value_xml, World, DVPG, DVS, HOST, VM};
use super::Shared;
use crate::fault::{Fault, OVERSIZE_BYTES};
use crate::xml::{self, Element as Node};

/// What a filter or a retrieve reads: types and paths, over a container view or one object.
#[derive(Clone, Debug)]
pub struct Spec {
    pub props: Vec<(String, Vec<String>)>,
    pub target: Target,
}

#[derive(Clone, Debug)]
pub enum Target {
    View(Vec<String>),
    Object(String, String),
}

/// What a filter last reported of one object: its generation and each property's value XML.
type Reported = (u64, BTreeMap<String, String>);

/// A property filter with what it last reported per object (`type → id → (gen, path → XML)`).
///
/// A *pass* compares every covered object with the snapshot; a pass cut short by
/// `maxObjectUpdates` resumes after the last object it reached (`cursor`), so paging through a
/// large inventory costs one walk in all. Once a pass completed, `synced` holds the world
/// generation it started at: later calls look only at objects with a newer generation, plus a
/// scan for objects that left when the object count says some did.
#[derive(Debug)]
pub struct Filter {
    /// The `PropertyCollector` the filter was created on (its updates go to that collector).
    pub collector: String,
    pub spec: Spec,
    pub version: u64,
    pub snapshot: BTreeMap<&'static str, BTreeMap<String, Reported>>,
    cursor: Option<(&'static str, String)>,
    pass_start: u64,
    synced: Option<u64>,
}

impl Filter {
    pub fn new(collector: &str, spec: Spec) -> Self {
        Self {
            collector: collector.to_string(),
            spec,
            version: 0,
            snapshot: BTreeMap::new(),
            cursor: None,
            pass_start: 0,
            synced: None,
        }
    }

    /// Forgets what was reported: the next call reports every object (`enter`).
    pub fn reset(&mut self) {
        self.snapshot.clear();
        self.cursor = None;
        self.synced = None;
    }

    fn reported_gen(&self, kind: &str, id: &str) -> Option<u64> {
        self.snapshot.get(kind).and_then(|m| m.get(id)).map(|(g, _)| *g)
    }

    fn reported_len(&self) -> usize {
        self.snapshot.values().map(BTreeMap::len).sum()
    }
}

/// One logged-in session.
#[derive(Debug, Default)]
pub struct SimSession {
    pub key: String,
    pub views: HashMap<String, Vec<String>>,
    pub filters: BTreeMap<String, Filter>,
    /// Collectors made with `CreatePropertyCollector` (besides the service's own).
    pub collectors: std::collections::BTreeSet<String>,
    /// Pending `RetrievePropertiesEx` pages: token → (page size, remaining objects).
    pub tokens: HashMap<String, (usize, Vec<String>)>,
    pub next: u64,
}

/// The service's own collector, as `RetrieveServiceContent` names it.
const DEFAULT_COLLECTOR: &str = "propertyCollector";

impl SimSession {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("session[{}]{}", self.key, self.next)
    }

    /// Whether `this` names a collector this session may use.
    fn has_collector(&self, this: &str) -> bool {
        this == DEFAULT_COLLECTOR || self.collectors.contains(this)
    }
}

fn collector_not_found(this: &str) -> Response {
    fault(
        "The object has already been deleted or has not been completely created",
        "ManagedObjectNotFound",
        &format!("<obj type=\"PropertyCollector\">{}</obj>", escape(this)),
    )
}

const ENVELOPE_HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenc=\"http://schemas.xmlsoap.org/soap/encoding/\" \
     xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n<soapenv:Body>\n";
const ENVELOPE_TAIL: &str = "\n</soapenv:Body>\n</soapenv:Envelope>";

fn xml_response(status: StatusCode, body: String, cookie: Option<String>) -> Response {
    let mut r =
        (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], format!("{ENVELOPE_HEAD}{body}{ENVELOPE_TAIL}"))
            .into_response();
    if let Some(c) = cookie {
        if let Ok(v) = format!("vmware_soap_session=\"{c}\"; Path=/; HttpOnly; Secure;").parse() {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

fn ok(method: &str, inner: &str) -> Response {
    xml_response(StatusCode::OK, format!("<{method}Response xmlns=\"urn:vim25\">{inner}</{method}Response>"), None)
}

/// A SOAP fault with a vim25 fault in `detail`.
pub fn fault(message: &str, fault_type: &str, detail_inner: &str) -> Response {
    xml_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{}</faultstring><detail>\
             <{fault_type}Fault xmlns=\"urn:vim25\" xsi:type=\"{fault_type}\">{detail_inner}</{fault_type}Fault></detail></soapenv:Fault>",
            escape(message)
        ),
        None,
    )
}

fn not_authenticated(this: &str) -> Response {
    fault(
        "The session is not authenticated.",
        "NotAuthenticated",
        &format!("<object type=\"PropertyCollector\">{}</object><privilegeId>System.View</privilegeId>", escape(this)),
    )
}

fn invalid_argument(what: &str) -> Response {
    fault(
        &format!("A specified parameter was not correct: {what}"),
        "InvalidArgument",
        &format!("<invalidProperty>{}</invalidProperty>", escape(what)),
    )
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("vmware_soap_session="))
        .map(|v| v.trim_matches('"').to_string())
        .next()
}

/// `GET /sdk/vimServiceVersions.xml`.
pub async fn service_versions() -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<namespaces version=\"1.0\">\n <namespace>\n  <name>urn:vim25</name>\n  \
         <version>8.0.2.0</version>\n  <priorVersions>\n   <version>8.0.1.0</version>\n   <version>7.0.3.0</version>\n  </priorVersions>\n \
         </namespace>\n</namespaces>\n",
    )
        .into_response()
}

/// `POST /sdk`.
pub async fn handle(shared: Arc<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if mime != "text/xml" && mime != "application/xml" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected text/xml").into_response();
    }
    let req = match request(&body) {
        Ok(n) => n,
        Err(e) => return invalid_argument(&e),
    };
    let this = req.text_of("_this").unwrap_or_default().trim().to_string();
    let method = req.name.to_string();
    match method.as_str() {
        "RetrieveServiceContent" => return ok(&method, &service_content()),
        "Login" => return login(&shared, &req),
        _ => {}
    }
    let misbehaviour = shared.fault.lock().map(|f| *f).unwrap_or_default();
    let Some(cookie) = session_cookie(&headers) else { return not_authenticated(&this) };
    if !shared.sessions.lock().map(|s| s.contains_key(&cookie)).unwrap_or(false) {
        return not_authenticated(&this);
    }
    // A full read: a retrieve, or a filter's first update sets (`WaitForUpdatesEx` from "").
    let follow = method == "WaitForUpdatesEx" && req.text_of("version").is_some_and(|v| !v.trim().is_empty());
    let full_read = method.starts_with("RetrieveProperties") || (method == "WaitForUpdatesEx" && !follow);
    let r = match method.as_str() {
        "WaitForUpdatesEx" if follow && misbehaviour == Fault::FailFollow => {
            fault("simulated failure", "SystemError", "")
        }
        _ if misbehaviour == Fault::Hollow && (full_read || follow) => hollow(&method, &req, follow).await,
        "WaitForUpdatesEx" => wait_for_updates(&shared, &cookie, &this, &req).await,
        _ => dispatch_locked(&shared, &method, &req, &this, &cookie),
    };
    if misbehaviour == Fault::Oversize && full_read {
        oversize(r).await
    } else {
        r
    }
}

/// What a hollow server answers: a retrieve or a filter's first update set without objects,
/// and a follow call that waits out its `maxWaitSeconds` with nothing to report.
async fn hollow(method: &str, req: &Node, follow: bool) -> Response {
    match method {
        "RetrieveProperties" => ok(method, ""),
        "RetrievePropertiesEx" => ok(method, "<returnval></returnval>"),
        _ if follow => {
            tokio::time::sleep(Duration::from_secs(max_wait_seconds(req).unwrap_or(60))).await;
            ok(method, "")
        }
        _ => ok(method, "<returnval><version>hollow</version><truncated>false</truncated></returnval>"),
    }
}

const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The one element in a SOAP 1.1 request's `Body`: the method and its arguments.
fn request(body: &[u8]) -> Result<Node, String> {
    let root = xml::parse(body)?;
    if root.name != "Envelope" || root.ns.as_deref() != Some(SOAP_ENV) {
        return Err(format!("the root element is <{}>, not a SOAP 1.1 Envelope", root.name));
    }
    let body = root
        .children
        .into_iter()
        .find(|c| c.name == "Body" && c.ns.as_deref() == Some(SOAP_ENV))
        .ok_or("the envelope has no Body")?;
    let call = body.children.into_iter().next().ok_or("the Body is empty")?;
    if call.name == "Fault" && call.ns.as_deref() == Some(SOAP_ENV) {
        return Err("the request body is a fault".into());
    }
    Ok(call)
}

/// Every method but `WaitForUpdatesEx`, answered under the session and world locks.
fn dispatch_locked(shared: &Shared, method: &str, req: &Node, this: &str, cookie: &str) -> Response {
    let mut sessions = match shared.sessions.lock() {
        Ok(s) => s,
        Err(_) => return fault("simulator state poisoned", "SystemError", ""),
    };
    let world = match shared.world.lock() {
        Ok(w) => w,
        Err(_) => return fault("simulator state poisoned", "SystemError", ""),
    };
    let Some(sess) = sessions.get_mut(cookie) else { return not_authenticated(this) };
    match dispatch(&world, sess, method, req, this) {
        Some(r) => r,
        None => {
            drop(world);
            logout_or_unknown(shared, method, cookie, &mut sessions)
        }
    }
}

/// The reply with its body padded past [`OVERSIZE_BYTES`] (whitespace after the envelope).
async fn oversize(r: Response) -> Response {
    let (parts, body) = r.into_parts();
    let mut bytes = axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
    bytes.resize(bytes.len() + OVERSIZE_BYTES, b' ');
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn logout_or_unknown(
    shared: &Shared,
    method: &str,
    cookie: &str,
    sessions: &mut HashMap<String, SimSession>,
) -> Response {
    if method == "Logout" {
        if sessions.remove(cookie).is_some() {
            if let Ok(mut c) = shared.counts.lock() {
                c.logouts += 1;
            }
        }
        shared.notify();
        return ok(method, "");
    }
    fault(
        &format!("Unable to resolve WSDL method name {method}"),
        "MethodNotFound",
        &format!("<method>{}</method>", escape(method)),
    )
}

fn service_content() -> String {
    "<returnval><rootFolder type=\"Folder\">group-d1</rootFolder><propertyCollector type=\"PropertyCollector\">propertyCollector</propertyCollector>\
     <viewManager type=\"ViewManager\">ViewManager</viewManager><about><name>VMware vCenter Server</name>\
     <fullName>VMware vCenter Server 8.0.2 build-22385739 (netfold simulator)</fullName><vendor>VMware, Inc.</vendor><version>8.0.2</version>\
     <build>22385739</build><localeVersion>INTL</localeVersion><localeBuild>000</localeBuild><osType>linux-x64</osType>\
     <productLineId>vpx</productLineId><apiType>VirtualCenter</apiType><apiVersion>8.0.2.0</apiVersion>\
     <instanceUuid>8a5d4b8e-6f4c-4e0a-9f1e-netfoldsim01</instanceUuid><licenseProductName>VMware VirtualCenter Server</licenseProductName>\
     <licenseProductVersion>8.0</licenseProductVersion></about><setting type=\"OptionManager\">VpxSettings</setting>\
     <userDirectory type=\"UserDirectory\">UserDirectory</userDirectory><sessionManager type=\"SessionManager\">SessionManager</sessionManager>\
     <authorizationManager type=\"AuthorizationManager\">AuthorizationManager</authorizationManager>\
     <searchIndex type=\"SearchIndex\">SearchIndex</searchIndex></returnval>"
        .to_string()
}

fn login(shared: &Shared, req: &Node) -> Response {
    let user = req.text_of("userName").unwrap_or_default();
    let password = req.text_of("password").unwrap_or_default();
    let expected = shared.password.lock().map(|p| p.clone()).unwrap_or_default();
    if user != shared.user || password != expected {
        return fault("Cannot complete login due to an incorrect user name or password.", "InvalidLogin", "");
    }
    let cookie = super::random_hex(20);
    let key = super::random_hex(16);
    let now = rfc3339_now();
    let inner = format!(
        "<returnval><key>{key}</key><userName>{u}</userName><fullName>{u}</fullName><loginTime>{now}</loginTime>\
         <lastActiveTime>{now}</lastActiveTime><locale>en</locale><messageLocale>en</messageLocale><extensionSession>false</extensionSession>\
         <ipAddress>127.0.0.1</ipAddress><userAgent>netfold</userAgent><callCount>0</callCount></returnval>",
        u = escape(user)
    );
    if let Ok(mut s) = shared.sessions.lock() {
        s.insert(cookie.clone(), SimSession { key, ..SimSession::default() });
    }
    if let Ok(mut c) = shared.counts.lock() {
        c.logins += 1;
    }
    let mut r = ok("Login", &inner);
    if let Ok(v) = format!("vmware_soap_session=\"{cookie}\"; Path=/; HttpOnly; Secure;").parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Methods answered under the world lock. `None` for `Logout` and unknown methods.
fn dispatch(world: &World, sess: &mut SimSession, method: &str, req: &Node, this: &str) -> Option<Response> {
    Some(match method {
        "CreateContainerView" => {
            let container = req.child("container").map(|c| c.text.trim()).unwrap_or_default();
            let recursive = req.text_of("recursive").map(str::trim) == Some("true");
            if container != ROOT_FOLDER {
                // The simulator models no folders, datacenters or clusters below the root.
                let kind = req.child("container").and_then(|c| c.type_attr.clone()).unwrap_or_default();
                return Some(match world.gen_of(&kind, container) {
                    None => not_found(&kind, container),
                    Some(_) => invalid_argument("container"),
                });
            }
            let mut types: Vec<String> = req.all("type").map(|t| t.text.trim().to_string()).collect();
            if types.is_empty() {
                // No type named: every managed entity.
                types = [HOST, VM, DVPG, DVS].map(String::from).to_vec();
            }
            if !recursive {
                // The root folder's own children are datacenters, which the simulator does not
                // model: a flat view of it holds no host, VM, port group or switch.
                types.clear();
            }
            let id = sess.id();
            sess.views.insert(id.clone(), types);
            ok(method, &format!("<returnval type=\"ContainerView\">{}</returnval>", escape(&id)))
        }
        "DestroyView" => {
            sess.views.remove(this);
            ok(method, "")
        }
        "CreatePropertyCollector" if sess.has_collector(this) => {
            let id = format!("{}-pc", sess.id());
            sess.collectors.insert(id.clone());
            ok(method, &format!("<returnval type=\"PropertyCollector\">{}</returnval>", escape(&id)))
        }
        "DestroyPropertyCollector" if sess.collectors.remove(this) => {
            sess.filters.retain(|_, f| f.collector != this);
            ok(method, "")
        }
        "CreatePropertyCollector" | "DestroyPropertyCollector" => collector_not_found(this),
        "CreateFilter" => {
            if !sess.has_collector(this) {
                return Some(collector_not_found(this));
            }
            let Some(spec) = req.child("spec").and_then(|s| parse_spec(s, sess)) else {
                return Some(invalid_argument("spec"));
            };
            let id = sess.id();
            sess.filters.insert(id.clone(), Filter::new(this, spec));
            ok(method, &format!("<returnval type=\"PropertyFilter\">{}</returnval>", escape(&id)))
        }
        "DestroyPropertyFilter" => match sess.filters.remove(this) {
            Some(_) => ok(method, ""),
            None => fault(
                "The object has already been deleted or has not been completely created",
                "ManagedObjectNotFound",
                &format!("<obj type=\"PropertyFilter\">{}</obj>", escape(this)),
            ),
        },
        "RetrievePropertiesEx" | "RetrieveProperties" | "ContinueRetrievePropertiesEx" if !sess.has_collector(this) => {
            collector_not_found(this)
        }
        "RetrievePropertiesEx" | "RetrieveProperties" => {
            let mut objects = Vec::new();
            for s in req.all("specSet") {
                let Some(spec) = parse_spec(s, sess) else { return Some(invalid_argument("specSet")) };
                if let Target::Object(kind, id) = &spec.target {
                    if kind == "ContainerView" {
                        objects.extend(view_content(world, sess, &spec, id));
                        continue;
                    }
                }
                if let Target::Object(kind, id) = &spec.target {
                    if world.gen_of(kind, id).is_none() {
                        return Some(not_found(kind, id));
                    }
                }
                for (kind, id) in targets(world, &spec) {
                    objects.push(object_content(world, &spec, kind, &id));
                }
            }
            if method == "RetrieveProperties" {
                // The pre-Ex call: every `ObjectContent` is a `returnval` of its own, no paging.
                let inner: String =
                    objects.iter().map(|o| format!("<returnval>{}</returnval>", strip_objects(o))).collect();
                return Some(ok(method, &inner));
            }
            let max = req
                .child("options")
                .and_then(|o| o.text_of("maxObjects"))
                .and_then(|m| m.trim().parse::<usize>().ok())
                .filter(|m| *m > 0)
                .unwrap_or(usize::MAX);
            page(sess, method, objects, max)
        }
        "ContinueRetrievePropertiesEx" => {
            let token = req.text_of("token").unwrap_or_default().trim().to_string();
            let Some((size, rest)) = sess.tokens.remove(&token) else { return Some(invalid_argument("token")) };
            page(sess, method, rest, size)
        }
        "Fetch" => {
            // pyVmomi's property accessor: one property of one object.
            let kind = req.child("_this").and_then(|t| t.type_attr.clone()).unwrap_or_default();
            let prop = req.text_of("prop").unwrap_or_default().trim().to_string();
            if kind == "ContainerView" && prop == "view" {
                let Some(types) = sess.views.get(this) else { return Some(invalid_argument("_this")) };
                let inner: String = world
                    .objects(types)
                    .into_iter()
                    .map(|(k, id, _)| format!("<returnval type=\"{k}\">{}</returnval>", escape(&id)))
                    .collect();
                return Some(ok(method, &inner));
            }
            match world.render(&kind, this, &prop) {
                Some(v) => ok(method, &value_xml("returnval", &prop, &v)),
                None if world.gen_of(&kind, this).is_none() => not_found(&kind, this),
                None => fault(
                    &format!("{prop} is not served by the simulator"),
                    "InvalidProperty",
                    &format!("<name>{}</name>", escape(&prop)),
                ),
            }
        }
        "QueryNetworkHint" => match world.hosts.values().find(|h| h.network_system == this) {
            Some(h) => ok(method, &render_hints(h)),
            None => fault(
                "The object has already been deleted or has not been completely created",
                "ManagedObjectNotFound",
                &format!("<obj type=\"HostNetworkSystem\">{}</obj>", escape(this)),
            ),
        },
        _ => return None,
    })
}

/// Answers one page of `objects` (rendered `ObjectContent`s) and keeps the rest under a token.
fn page(sess: &mut SimSession, method: &str, mut objects: Vec<String>, size: usize) -> Response {
    if objects.is_empty() {
        return ok(method, "");
    }
    let mut inner = String::from("<returnval>");
    if objects.len() > size {
        let rest = objects.split_off(size);
        let token = sess.id();
        let _ = write!(inner, "<token>{}</token>", escape(&token));
        sess.tokens.insert(token, (size, rest));
    }
    for o in objects {
        inner.push_str(&o);
    }
    inner.push_str("</returnval>");
    ok(method, &inner)
}

fn parse_spec(s: &Node, sess: &SimSession) -> Option<Spec> {
    let props = s
        .all("propSet")
        .map(|p| {
            (
                p.text_of("type").unwrap_or_default().trim().to_string(),
                p.all("pathSet").map(|x| x.text.trim().to_string()).collect(),
            )
        })
        .collect();
    let os = s.child("objectSet")?;
    let obj = os.child("obj")?;
    let kind = obj.type_attr.clone()?;
    let id = obj.text.trim().to_string();
    let target =
        if kind == "ContainerView" { Target::View(sess.views.get(&id)?.clone()) } else { Target::Object(kind, id) };
    Some(Spec { props, target })
}

fn paths_for<'a>(spec: &'a Spec, kind: &str) -> Vec<&'a str> {
    spec.props
        .iter()
        .filter(|(t, _)| {
            t == kind || (kind == DVS && t == "DistributedVirtualSwitch") || (kind == DVPG && t == "Network")
        })
        .flat_map(|(_, p)| p.iter().map(String::as_str))
        .collect()
}

/// `(type, id)` of every object a spec covers (only types with a property set).
fn targets(world: &World, spec: &Spec) -> Vec<(&'static str, String)> {
    let wanted = |k: &str| !paths_for(spec, k).is_empty() || spec.props.iter().any(|(t, _)| t == k);
    match &spec.target {
        Target::View(types) => {
            world.objects(types).into_iter().filter(|(k, _, _)| wanted(k)).map(|(k, id, _)| (k, id)).collect()
        }
        Target::Object(kind, id) => {
            let k: &'static str = match kind.as_str() {
                HOST => HOST,
                VM => VM,
                DVPG => DVPG,
                DVS => DVS,
                tree::FOLDER => tree::FOLDER,
                tree::DATACENTER => tree::DATACENTER,
                tree::COMPUTE => tree::COMPUTE,
                tree::NETWORK => tree::NETWORK,
                _ => return Vec::new(),
            };
            if wanted(k) && world.gen_of(k, id).is_some() {
                vec![(k, id.clone())]
            } else {
                Vec::new()
            }
        }
    }
}

/// `<objects>…</objects>` → `…`.
fn strip_objects(o: &str) -> &str {
    o.strip_prefix("<objects>").and_then(|o| o.strip_suffix("</objects>")).unwrap_or(o)
}

/// A container view's own `view` property: the morefs of the objects it shows.
fn view_content(world: &World, sess: &SimSession, spec: &Spec, id: &str) -> Option<String> {
    let types = sess.views.get(id)?;
    let mut s = format!("<objects><obj type=\"ContainerView\">{}</obj>", escape(id));
    if paths_for(spec, "ContainerView").contains(&"view") {
        s.push_str("<propSet><name>view</name><val xsi:type=\"ArrayOfManagedObjectReference\">");
        for (kind, oid, _) in world.objects(types) {
            let _ = write!(
                s,
                "<ManagedObjectReference type=\"{kind}\" xsi:type=\"ManagedObjectReference\">{}</ManagedObjectReference>",
                escape(&oid)
            );
        }
        s.push_str("</val></propSet>");
    }
    s.push_str("</objects>");
    Some(s)
}

fn object_content(world: &World, spec: &Spec, kind: &str, id: &str) -> String {
    let mut s = format!("<objects><obj type=\"{kind}\">{}</obj>", escape(id));
    let mut missing = String::new();
    for path in paths_for(spec, kind) {
        if !serves(kind, path) {
            let p = escape(path);
            let _ = write!(
                missing,
                "<missingSet><path>{p}</path><fault><fault xsi:type=\"InvalidProperty\"><name>{p}</name></fault>\
                 <localizedMessage></localizedMessage></fault></missingSet>"
            );
        } else if let Some(v) = world.render(kind, id, path) {
            let _ = write!(s, "<propSet><name>{}</name>{}</propSet>", escape(path), value_xml("val", path, &v));
        }
    }
    s.push_str(&missing);
    s.push_str("</objects>");
    s
}

/// `ManagedObjectNotFound` for a reference to an object the simulator does not hold.
fn not_found(kind: &str, id: &str) -> Response {
    fault(
        "The object has already been deleted or has not been completely created",
        "ManagedObjectNotFound",
        &format!("<obj type=\"{}\">{}</obj>", escape(kind), escape(id)),
    )
}

/// Which object types a spec reads properties of.
fn wanted(spec: &Spec, kind: &str) -> bool {
    !paths_for(spec, kind).is_empty() || spec.props.iter().any(|(t, _)| t == kind)
}

/// The objects a spec covers, `(type, id, gen)`, in walk order, after `after` when given.
fn walk<'w: 'x, 'x>(
    world: &'w World,
    spec: &'x Spec,
    after: Option<(&'x str, &'x str)>,
) -> Box<dyn Iterator<Item = (&'static str, &'w str, u64)> + 'x> {
    match &spec.target {
        Target::View(types) => {
            // Decided once per type, not per object: the walk covers every object at scale.
            let want = [HOST, VM, DVPG, DVS].map(|k| wanted(spec, k));
            Box::new(world.walk(types, after).filter(move |(k, _, _)| match *k {
                HOST => want[0],
                VM => want[1],
                DVPG => want[2],
                _ => want[3],
            }))
        }
        Target::Object(kind, id) => {
            let k: Option<&'static str> = [HOST, VM, DVPG, DVS].into_iter().find(|k| k == kind);
            let one = k.filter(|_| after.is_none()).and_then(|k| world.lookup(k, id).map(|(id, g)| (k, id, g)));
            Box::new(one.into_iter())
        }
    }
}

/// Object updates of a filter since its snapshot, at most `max`; updates the snapshot.
fn collect_updates(world: &World, f: &mut Filter, max: usize) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let incremental = f.synced.filter(|_| matches!(f.spec.target, Target::View(_)));
    if let Some(synced) = incremental {
        // Only objects changed since the last complete pass can differ from the snapshot.
        // No generation above `synced`: nothing changed (the usual call that then parks).
        let changed: Vec<(&'static str, &str, u64)> = match &f.spec.target {
            Target::View(types) if world.gen > synced => {
                world.changed_since(types, synced).into_iter().filter(|(k, _, _)| wanted(&f.spec, k)).collect()
            }
            _ => Vec::new(),
        };
        let fresh = changed.iter().filter(|(k, id, _)| f.reported_gen(k, id).is_none()).count();
        let expected = f.reported_len() + fresh;
        for (kind, id, gen) in changed {
            if f.reported_gen(kind, id) == Some(gen) {
                continue;
            }
            if out.len() >= max {
                return (out, true);
            }
            report(world, f, kind, id, gen, &mut out);
        }
        let Target::View(types) = &f.spec.target else { return (out, false) };
        // Fewer objects than reported plus new ones: some left.
        if world.count(types) != expected && leaves(world, f, max, &mut out) {
            return (out, true);
        }
        f.synced = Some(world.gen);
        return (out, false);
    }
    if f.cursor.is_none() {
        f.pass_start = world.gen;
    }
    let cursor = f.cursor.take();
    let after = cursor.as_ref().map(|(k, id)| (*k, id.as_str()));
    let pending: Vec<(&'static str, &str, u64)> = walk(world, &f.spec, after).collect();
    // The last object visited: a truncated pass resumes after it.
    let mut last = cursor.as_ref().map(|(k, id)| (*k, id.as_str()));
    for (kind, id, gen) in pending {
        if f.reported_gen(kind, id) != Some(gen) {
            if out.len() >= max {
                // `max` > 0, so at least one object was visited and `last` is set.
                f.cursor = last.map(|(k, id)| (k, id.to_string()));
                return (out, true);
            }
            report(world, f, kind, id, gen, &mut out);
        }
        last = Some((kind, id));
    }
    if leaves(world, f, max, &mut out) {
        return (out, true);
    }
    f.synced = Some(f.pass_start);
    (out, false)
}

/// Reports `leave` for snapshot objects that no longer exist (at most up to `max` updates in
/// `out`); returns whether some were left for the next call.
fn leaves(world: &World, f: &mut Filter, max: usize, out: &mut Vec<String>) -> bool {
    let gone: Vec<(&'static str, String)> = f
        .snapshot
        .iter()
        .flat_map(|(k, m)| m.keys().map(move |id| (*k, id)))
        .filter(|(k, id)| world.gen_of(k, id).is_none())
        .map(|(k, id)| (k, id.clone()))
        .collect();
    for (kind, id) in gone {
        if out.len() >= max {
            return true;
        }
        if let Some(m) = f.snapshot.get_mut(kind) {
            m.remove(&id);
        }
        out.push(format!("<objectSet><kind>leave</kind><obj type=\"{kind}\">{}</obj></objectSet>", escape(&id)));
    }
    false
}

/// Renders one object, compares it with the snapshot and pushes its `enter` or `modify` update
/// (nothing when no reported property changed); records it in the snapshot.
fn report(world: &World, f: &mut Filter, kind: &'static str, id: &str, gen: u64, out: &mut Vec<String>) {
    let paths = paths_for(&f.spec, kind);
    let rendered: BTreeMap<String, String> = paths
        .iter()
        .filter_map(|p| world.render(kind, id, p).map(|v| (p.to_string(), value_xml("val", p, &v))))
        .collect();
    let old = f.snapshot.get(kind).and_then(|m| m.get(id)).map(|(_, old)| old);
    let enter = old.is_none();
    let mut changes = String::new();
    for p in &paths {
        let new = rendered.get(*p);
        if !enter && new == old.and_then(|o| o.get(*p)) {
            continue;
        }
        match new {
            Some(v) => {
                let _ = write!(changes, "<changeSet><name>{}</name><op>assign</op>{v}</changeSet>", escape(*p));
            }
            None if !enter => {
                let _ = write!(changes, "<changeSet><name>{}</name><op>assign</op></changeSet>", escape(*p));
            }
            None => {}
        }
    }
    f.snapshot.entry(kind).or_default().insert(id.to_string(), (gen, rendered));
    if !enter && changes.is_empty() {
        return;
    }
    out.push(format!(
        "<objectSet><kind>{}</kind><obj type=\"{kind}\">{}</obj>{changes}</objectSet>",
        if enter { "enter" } else { "modify" },
        escape(id)
    ));
}

/// A `WaitForUpdatesEx`'s `options.maxWaitSeconds`, when given.
fn max_wait_seconds(req: &Node) -> Option<u64> {
    req.child("options").and_then(|o| o.text_of("maxWaitSeconds")).and_then(|v| v.trim().parse().ok())
}

async fn wait_for_updates(shared: &Shared, cookie: &str, this: &str, req: &Node) -> Response {
    let version = req.text_of("version").unwrap_or_default().trim().to_string();
    let opts = req.child("options");
    let max_wait = max_wait_seconds(req);
    let max_objects = opts
        .and_then(|o| o.text_of("maxObjectUpdates"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(usize::MAX);
    let deadline = max_wait.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut changed = shared.changed.subscribe();
    let mut first = true;
    loop {
        changed.borrow_and_update();
        {
            let (Ok(mut sessions), Ok(world)) = (shared.sessions.lock(), shared.world.lock()) else {
                return fault("simulator state poisoned", "SystemError", "");
            };
            let Some(sess) = sessions.get_mut(cookie) else { return not_authenticated(this) };
            if !sess.has_collector(this) {
                return collector_not_found(this);
            }
            let mut filter_sets = String::new();
            let mut any_truncated = false;
            for (id, f) in sess.filters.iter_mut().filter(|(_, f)| f.collector == this) {
                if first && version.is_empty() {
                    f.reset();
                }
                let (updates, truncated) = collect_updates(&world, f, max_objects);
                any_truncated |= truncated;
                if !updates.is_empty() {
                    f.version += 1;
                    let _ = write!(
                        filter_sets,
                        "<filterSet><filter type=\"PropertyFilter\">{}</filter>{}</filterSet>",
                        escape(id),
                        updates.concat()
                    );
                }
            }
            first = false;
            if !filter_sets.is_empty() {
                sess.next += 1;
                let v = sess.next;
                return ok(
                    "WaitForUpdatesEx",
                    &format!("<returnval><version>{v}</version>{filter_sets}<truncated>{any_truncated}</truncated></returnval>"),
                );
            }
        }
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let _parked = Parked::new(&shared.parked);
        tokio::select! {
            r = changed.changed() => if r.is_err() { return ok("WaitForUpdatesEx", "") },
            _ = timeout => return ok("WaitForUpdatesEx", ""),
        }
    }
}

/// Counts a parked `WaitForUpdatesEx` for as long as it lives.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::world::{SimNet, SimNic, SimVm};
    use crate::vsphere::{generate, SimOptions};

    fn spec() -> Spec {
        Spec {
            props: vec![(HOST.into(), vec!["name".into()]), (VM.into(), vec!["name".into(), "runtime.host".into()])],
            target: Target::View(vec![HOST.into(), VM.into()]),
        }
    }

    /// `(kind, id)` of each object update, in order.
    fn updates(out: &[String]) -> Vec<(String, String)> {
        out.iter()
            .map(|u| {
                let between = |a: &str, b: &str| {
                    let s = &u[u.find(a).unwrap() + a.len()..];
                    s[..s.find(b).unwrap()].to_string()
                };
                (between("<kind>", "</kind>"), between("\">", "</obj>"))
            })
            .collect()
    }

    /// Calls until a call is not truncated; every call's updates.
    fn drain(w: &World, f: &mut Filter, max: usize) -> Vec<Vec<(String, String)>> {
        let mut calls = Vec::new();
        loop {
            let (out, truncated) = collect_updates(w, f, max);
            assert!(out.len() <= max);
            calls.push(updates(&out));
            if !truncated {
                return calls;
            }
        }
    }

    fn add_vm(w: &mut World, host: &str) -> String {
        let id = w.id("vm");
        let gen = w.bump(VM, &id);
        let nic = SimNic { key: 4000, mac: w.mac(), connected: true, network: SimNet::Standard("pg-100".into()) };
        w.vms.insert(
            id.clone(),
            SimVm { name: "late".into(), gen, host: host.into(), powered_on: true, nics: vec![nic] },
        );
        id
    }

    #[test]
    fn paged_first_pass_reports_every_object_once_and_later_calls_only_changes() {
        let mut w = generate(&SimOptions { hosts: 10, vms_per_host: 5, ..SimOptions::default() });
        let mut f = Filter::new(DEFAULT_COLLECTOR, spec());
        // Hosts are walked first: 10 hosts and the first 5 VMs.
        let (first, truncated) = collect_updates(&w, &mut f, 15);
        assert!(truncated);
        assert_eq!(first.len(), 15);

        // Between pages: change an object already reported, remove one already reported and
        // one not reached yet, add one.
        let reported = updates(&first);
        let seen_vm = reported.iter().find(|(_, id)| id.starts_with("vm-")).unwrap().1.clone();
        let gone_seen = reported.iter().filter(|(_, id)| id.starts_with("vm-")).nth(1).unwrap().1.clone();
        let gone_unseen = w.vms.keys().last().unwrap().clone();
        let gen = w.bump(VM, &seen_vm);
        let v = w.vms.get_mut(&seen_vm).unwrap();
        v.name = "renamed".into();
        v.gen = gen;
        w.vms.remove(&gone_seen);
        w.vms.remove(&gone_unseen);
        let host = w.hosts.keys().next().unwrap().clone();
        let late = add_vm(&mut w, &host);

        let rest: Vec<(String, String)> = drain(&w, &mut f, 7).concat();
        let mut all: Vec<(String, String)> = reported.iter().cloned().chain(rest.iter().cloned()).collect();
        assert!(all.contains(&("leave".into(), gone_seen.clone())), "{all:?}");
        // Changes behind the cursor (the rename, the late VM if it sorts before the cursor)
        // arrive by the end of the pass or in the next call.
        all.extend(drain(&w, &mut f, 7).concat());
        assert!(all.contains(&("modify".into(), seen_vm.clone())), "{all:?}");
        // The pass resumes where it stopped: no object is entered twice, the unreached removed
        // one never appears, and the late one does.
        let enters: Vec<&String> = all.iter().filter(|(k, _)| k == "enter").map(|(_, id)| id).collect();
        let unique: std::collections::BTreeSet<&String> = enters.iter().copied().collect();
        assert_eq!(enters.len(), unique.len(), "entered twice: {all:?}");
        assert!(!unique.contains(&gone_unseen));
        assert!(unique.contains(&late));
        assert_eq!(unique.len(), 10 + 50 - 1 + 1, "every object that existed when reached");

        assert_eq!(drain(&w, &mut f, 7).concat(), vec![], "steady: nothing to report");
        assert!(f.synced.is_some(), "a completed pass switches to looking at newer generations only");

        // Incremental calls: a change, and a removal with an addition (same object count).
        let gen = w.bump(VM, &late);
        let v = w.vms.get_mut(&late).unwrap();
        v.host = w.hosts.keys().nth(1).unwrap().clone();
        v.gen = gen;
        assert_eq!(drain(&w, &mut f, 7).concat(), vec![("modify".to_string(), late.clone())]);
        w.vms.remove(&seen_vm);
        let newer = add_vm(&mut w, &host);
        let mut got = drain(&w, &mut f, 7).concat();
        got.sort();
        assert_eq!(got, vec![("enter".to_string(), newer), ("leave".to_string(), seen_vm)]);
        assert_eq!(drain(&w, &mut f, 7).concat(), vec![]);

        // A reset (a new `WaitForUpdatesEx("")`) reports everything again.
        f.reset();
        let again = drain(&w, &mut f, 500).concat();
        assert_eq!(again.len(), w.hosts.len() + w.vms.len());
        assert_eq!(again.len(), 10 + 50 - 3 + 2, "three VMs removed, two added");
        assert!(again.iter().all(|(k, _)| k == "enter"));
    }
}
