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

use super::world::{render_hints, value_xml, World, DVPG, DVS, HOST, VM};
use super::Shared;
use crate::vsphere::codec::{self, Body, Node};

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

/// A property filter with what it last reported per object: `(type, id) → (gen, path → XML)`.
#[derive(Debug)]
pub struct Filter {
    pub spec: Spec,
    pub version: u64,
    pub snapshot: BTreeMap<(String, String), (u64, BTreeMap<String, String>)>,
}

/// One logged-in session.
#[derive(Debug, Default)]
pub struct SimSession {
    pub key: String,
    pub views: HashMap<String, Vec<String>>,
    pub filters: BTreeMap<String, Filter>,
    /// Pending `RetrievePropertiesEx` pages: token → (page size, remaining objects).
    pub tokens: HashMap<String, (usize, Vec<String>)>,
    pub next: u64,
}

impl SimSession {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("session[{}]{}", self.key, self.next)
    }
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
    if !codec::is_xml_content_type(ct) {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected text/xml").into_response();
    }
    let req = match codec::parse_envelope(&body) {
        Ok(Body::Response(n)) => n,
        Ok(Body::Fault(_)) => return invalid_argument("request body is a fault"),
        Err(e) => return invalid_argument(&e.to_string()),
    };
    let this = req.text_of("_this").unwrap_or_default().trim().to_string();
    let method = req.name.to_string();
    match method.as_str() {
        "RetrieveServiceContent" => return ok(&method, &service_content()),
        "Login" => return login(&shared, &req),
        _ => {}
    }
    let Some(cookie) = session_cookie(&headers) else { return not_authenticated(&this) };
    if !shared.sessions.lock().map(|s| s.contains_key(&cookie)).unwrap_or(false) {
        return not_authenticated(&this);
    }
    match method.as_str() {
        "WaitForUpdatesEx" => wait_for_updates(&shared, &cookie, &this, &req).await,
        _ => {
            let mut sessions = match shared.sessions.lock() {
                Ok(s) => s,
                Err(_) => return fault("simulator state poisoned", "SystemError", ""),
            };
            let world = match shared.world.lock() {
                Ok(w) => w,
                Err(_) => return fault("simulator state poisoned", "SystemError", ""),
            };
            let Some(sess) = sessions.get_mut(&cookie) else { return not_authenticated(&this) };
            match dispatch(&world, sess, &method, &req, &this) {
                Some(r) => r,
                None => {
                    drop(world);
                    logout_or_unknown(&shared, &method, &cookie, &mut sessions)
                }
            }
        }
    }
}

fn logout_or_unknown(
    shared: &Shared,
    method: &str,
    cookie: &str,
    sessions: &mut HashMap<String, SimSession>,
) -> Response {
    if method == "Logout" {
        sessions.remove(cookie);
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

fn login(shared: &Shared, req: &Node<'_>) -> Response {
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
fn dispatch(world: &World, sess: &mut SimSession, method: &str, req: &Node<'_>, this: &str) -> Option<Response> {
    Some(match method {
        "CreateContainerView" => {
            let types: Vec<String> = req.all("type").map(|t| t.text.trim().to_string()).collect();
            let id = sess.id();
            sess.views.insert(id.clone(), types);
            ok(method, &format!("<returnval type=\"ContainerView\">{}</returnval>", escape(&id)))
        }
        "DestroyView" => {
            sess.views.remove(this);
            ok(method, "")
        }
        "CreateFilter" => {
            let Some(spec) = req.child("spec").and_then(|s| parse_spec(s, sess)) else {
                return Some(invalid_argument("spec"));
            };
            let id = sess.id();
            sess.filters.insert(id.clone(), Filter { spec, version: 0, snapshot: BTreeMap::new() });
            ok(method, &format!("<returnval type=\"PropertyFilter\">{}</returnval>", escape(&id)))
        }
        "DestroyPropertyFilter" => {
            sess.filters.remove(this);
            ok(method, "")
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
                None if world.gen_of(&kind, this).is_none() => fault(
                    "The object has already been deleted or has not been completely created",
                    "ManagedObjectNotFound",
                    &format!("<obj type=\"{}\">{}</obj>", escape(&kind), escape(this)),
                ),
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

fn parse_spec(s: &Node<'_>, sess: &SimSession) -> Option<Spec> {
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
                _ => return Vec::new(),
            };
            if world.gen_of(k, id).is_some() {
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
    for path in paths_for(spec, kind) {
        if let Some(v) = world.render(kind, id, path) {
            let _ = write!(s, "<propSet><name>{}</name>{}</propSet>", escape(path), value_xml("val", path, &v));
        }
    }
    s.push_str("</objects>");
    s
}

/// Object updates of a filter since its snapshot, at most `max`; updates the snapshot.
fn collect_updates(world: &World, f: &mut Filter, max: usize) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let current = targets(world, &f.spec);
    let mut seen = std::collections::BTreeSet::new();
    let mut truncated = false;
    for (kind, id) in current {
        let key = (kind.to_string(), id.clone());
        seen.insert(key.clone());
        let gen = world.gen_of(kind, &id).unwrap_or(0);
        if f.snapshot.get(&key).is_some_and(|(g, _)| *g == gen) {
            continue;
        }
        if out.len() >= max {
            truncated = true;
            continue;
        }
        let paths = paths_for(&f.spec, kind);
        let rendered: BTreeMap<String, String> = paths
            .iter()
            .filter_map(|p| world.render(kind, &id, p).map(|v| (p.to_string(), value_xml("val", p, &v))))
            .collect();
        let (enter, old) = match f.snapshot.get(&key) {
            None => (true, BTreeMap::new()),
            Some((_, old)) => (false, old.clone()),
        };
        let mut changes = String::new();
        for p in &paths {
            let new = rendered.get(*p);
            if !enter && new == old.get(*p) {
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
        f.snapshot.insert(key, (gen, rendered));
        if !enter && changes.is_empty() {
            continue;
        }
        out.push(format!(
            "<objectSet><kind>{}</kind><obj type=\"{kind}\">{}</obj>{changes}</objectSet>",
            if enter { "enter" } else { "modify" },
            escape(&id)
        ));
    }
    let gone: Vec<_> = f.snapshot.keys().filter(|k| !seen.contains(*k)).cloned().collect();
    for key in gone {
        if out.len() >= max {
            truncated = true;
            break;
        }
        f.snapshot.remove(&key);
        out.push(format!("<objectSet><kind>leave</kind><obj type=\"{}\">{}</obj></objectSet>", key.0, escape(&key.1)));
    }
    (out, truncated)
}

async fn wait_for_updates(shared: &Shared, cookie: &str, this: &str, req: &Node<'_>) -> Response {
    let version = req.text_of("version").unwrap_or_default().trim().to_string();
    let opts = req.child("options");
    let max_wait = opts.and_then(|o| o.text_of("maxWaitSeconds")).and_then(|v| v.trim().parse::<u64>().ok());
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
            let mut filter_sets = String::new();
            let mut any_truncated = false;
            for (id, f) in sess.filters.iter_mut() {
                if first && version.is_empty() {
                    f.snapshot.clear();
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
