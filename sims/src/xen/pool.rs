//! The simulator's pool: an in-memory object store of XenAPI records, a monotonic event log
//! for `event.from`, sessions, and the dispatch of XenAPI calls. No IO: the HTTP server in
//! [`super::server`] feeds it decoded calls and waits on its change counter.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use super::xmlrpc::{Response, Value};
use super::{LLDP_PORT_ID, LLDP_SYSTEM_NAME, NULL_REF};
use crate::fault::{Counts, Fault};

use super::{SimError, SimOptions};

/// The classes the simulator stores, spelled as XenAPI spells them in method names.
pub const SIM_CLASSES: [&str; 8] = ["pool", "host", "VM", "VIF", "network", "PIF", "VLAN", "PIF_metrics"];

/// Classes every xapi pool has that the simulator holds no object of: their `get_all` and
/// `get_all_records` answer empty, as a pool without bonds or storage does, instead of
/// `MESSAGE_METHOD_UNKNOWN`.
pub const EMPTY_CLASSES: [&str; 13] = [
    "Bond",
    "SR",
    "PBD",
    "VBD",
    "VDI",
    "VM_metrics",
    "VM_guest_metrics",
    "host_metrics",
    "host_cpu",
    "tunnel",
    "network_sriov",
    "task",
    "message",
];

/// How many parameters a call takes besides the session, as xapi's generated server counts
/// them for `MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received]` (the session not
/// counted on either side; `expected` is the number without defaults), and whether it takes a
/// session first. `None` for calls the simulator does not serve.
fn arity(method: &str) -> Option<(std::ops::RangeInclusive<usize>, bool)> {
    let (_, call) = method.split_once('.')?;
    Some(match method {
        // `uname`, `pwd`, then `version` and `originator`, which have defaults.
        "session.login_with_password" => (2..=4, false),
        "session.logout" => (0..=0, true),
        "session.get_this_host" => (1..=1, true),
        "event.from" | "event_from" => (3..=3, true),
        "event.inject" => (2..=2, true),
        _ => match call {
            "get_all" | "get_all_records" => (0..=0, true),
            c if c.starts_with("get_") => (1..=1, true),
            _ => return None,
        },
    })
}

/// `get_all_records_where`'s expression, in the subset the simulator evaluates: `true`,
/// `false`, `field "NAME" = "VALUE"` and `field "NAME" <> "VALUE"`, joined by `and`.
fn matches_where(expr: &str, rec: &Record) -> Result<bool, String> {
    let mut all = true;
    for term in expr.split(" and ") {
        let t = term.trim();
        let ok = match t {
            "true" => true,
            "false" => false,
            _ => {
                let rest = t.strip_prefix("field ").ok_or_else(|| format!("cannot evaluate `{t}`"))?;
                let (name, op, value) = if let Some((n, v)) = rest.split_once(" <> ") {
                    (n, "<>", v)
                } else if let Some((n, v)) = rest.split_once(" = ") {
                    (n, "=", v)
                } else {
                    return Err(format!("cannot evaluate `{t}`"));
                };
                let unquote =
                    |q: &str| q.trim().strip_prefix('"').and_then(|q| q.strip_suffix('"')).map(str::to_string);
                let (Some(name), Some(value)) = (unquote(name), unquote(value)) else {
                    return Err(format!("cannot evaluate `{t}`: names and values are quoted"));
                };
                let field = match rec.get(&name) {
                    Some(Value::Str(v)) => v.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Int(i)) => i.to_string(),
                    _ => String::new(),
                };
                (field == value) == (op == "=")
            }
        };
        all &= ok;
    }
    Ok(all)
}

/// Events kept for `event.from`; a token older than this window gets `EVENTS_LOST`.
const EVENT_WINDOW: usize = 200_000;

pub type Record = BTreeMap<String, Value>;

/// What an `event.from` record says happened to an object (xapi's `operation` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Mod,
    Del,
}

#[derive(Clone, Debug)]
pub struct SimEvent {
    pub id: u64,
    pub class: &'static str,
    pub op: Op,
    pub reference: String,
    pub snapshot: Option<Value>,
    pub at: f64,
}

/// What a call needs from the server: an answer now, or a wait for events.
#[derive(Debug)]
pub enum Dispatch {
    Reply(Response),
    /// `event.from` with a token: wait for events after `since` in `classes` (lower case;
    /// empty = all) up to `timeout` seconds.
    WaitEvents {
        session: String,
        classes: HashSet<String>,
        since: u64,
        timeout: f64,
    },
}

/// The whole simulated pool.
#[derive(Debug)]
pub struct Pool {
    pub objects: BTreeMap<&'static str, BTreeMap<String, Record>>,
    events: VecDeque<SimEvent>,
    last_event: u64,
    sessions: HashSet<String>,
    counter: u64,
    pub user: String,
    pub password: String,
    /// Endpoint addresses (`127.0.0.1:PORT`) by endpoint index; `master_endpoint` is the one
    /// that accepts calls, the others answer `HOST_IS_SLAVE`.
    pub endpoints: Vec<String>,
    pub master_endpoint: usize,
    /// A misbehaviour switched on by a test.
    pub fault: Fault,
    /// Logins and logouts served.
    pub counts: Counts,
    /// Where each physical NIC is cabled: (PIF MAC, switch, port), whether or not its LLDP
    /// neighbour is reported through the convention.
    pub cabling: Vec<(String, String, String)>,
}

fn s(v: impl Into<String>) -> Value {
    Value::Str(v.into())
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn canonical(class: &str) -> Option<&'static str> {
    SIM_CLASSES.iter().chain(EMPTY_CLASSES.iter()).copied().find(|c| c.eq_ignore_ascii_case(class))
}

/// `event.from` tokens look like xapi's: two zero-padded counters joined by a comma.
pub fn token(id: u64) -> String {
    format!("{id:020},{:020}", 0)
}

pub fn parse_token(t: &str) -> Option<u64> {
    t.split(',').next()?.trim().parse().ok()
}

impl Pool {
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            objects: SIM_CLASSES.iter().chain(EMPTY_CLASSES.iter()).map(|c| (*c, BTreeMap::new())).collect(),
            events: VecDeque::new(),
            last_event: 0,
            sessions: HashSet::new(),
            counter: 0,
            user: user.into(),
            password: password.into(),
            endpoints: Vec::new(),
            master_endpoint: 0,
            fault: Fault::None,
            counts: Counts::default(),
            cabling: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub fn new_uuid(&mut self) -> String {
        let n = self.next();
        format!("{:08x}-5e1f-4a00-8000-{n:012x}", n.wrapping_mul(2_654_435_761) & 0xffff_ffff)
    }

    pub fn new_ref(&mut self) -> String {
        let n = self.next();
        format!("OpaqueRef:{:08x}-0000-4000-a000-{n:012x}", n.wrapping_mul(40_503) & 0xffff_ffff)
    }

    pub fn last_event(&self) -> u64 {
        self.last_event
    }

    fn log(&mut self, class: &'static str, op: Op, reference: &str, snapshot: Option<Value>) {
        self.last_event += 1;
        self.events.push_back(SimEvent {
            id: self.last_event,
            class,
            op,
            reference: reference.into(),
            snapshot,
            at: now(),
        });
        while self.events.len() > EVENT_WINDOW {
            self.events.pop_front();
        }
    }

    pub fn add(&mut self, class: &'static str, reference: &str, rec: Record) {
        let snap = Value::Struct(rec.clone());
        self.objects.entry(class).or_default().insert(reference.into(), rec);
        self.log(class, Op::Add, reference, Some(snap));
    }

    /// Changes a record in place and logs `mod` (only if it really changed).
    pub fn modify(
        &mut self,
        class: &'static str,
        reference: &str,
        f: impl FnOnce(&mut Record),
    ) -> Result<(), SimError> {
        let rec = self
            .objects
            .get_mut(class)
            .and_then(|m| m.get_mut(reference))
            .ok_or_else(|| SimError::NotFound(format!("{class} {reference}")))?;
        let before = rec.clone();
        f(rec);
        if *rec != before {
            let snap = Value::Struct(rec.clone());
            self.log(class, Op::Mod, reference, Some(snap));
        }
        Ok(())
    }

    pub fn delete(&mut self, class: &'static str, reference: &str) -> Result<Record, SimError> {
        let rec = self
            .objects
            .get_mut(class)
            .and_then(|m| m.remove(reference))
            .ok_or_else(|| SimError::NotFound(format!("{class} {reference}")))?;
        self.log(class, Op::Del, reference, None);
        Ok(rec)
    }

    pub fn get(&self, class: &str, reference: &str) -> Option<&Record> {
        self.objects.get(class).and_then(|m| m.get(reference))
    }

    /// The ref of the object of `class` with this uuid.
    pub fn by_uuid(&self, class: &'static str, uuid: &str) -> Result<String, SimError> {
        self.objects
            .get(class)
            .and_then(|m| m.iter().find(|(_, r)| r.get("uuid").and_then(Value::as_str) == Some(uuid)))
            .map(|(r, _)| r.clone())
            .ok_or_else(|| SimError::NotFound(format!("{class} with uuid {uuid}")))
    }

    pub fn field(&self, class: &str, reference: &str, name: &str) -> String {
        self.get(class, reference).and_then(|r| r.get(name)).and_then(Value::as_str).unwrap_or_default().to_string()
    }

    /// Appends `item` to (or removes it from) a set-of-refs field.
    pub fn set_member(&mut self, class: &'static str, reference: &str, field: &str, item: &str, present: bool) {
        let _ = self.modify(class, reference, |r| {
            let mut items: Vec<Value> =
                r.get(field).and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default();
            items.retain(|v| v.as_str() != Some(item));
            if present {
                items.push(s(item));
            }
            r.insert(field.into(), Value::Array(items));
        });
    }

    pub fn invalidate_sessions(&mut self) {
        self.sessions.clear();
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session_valid(&self, session: &str) -> bool {
        self.sessions.contains(session)
    }

    // -----------------------------------------------------------------------------------------
    // Building the pool

    pub fn generate(opts: &SimOptions) -> Self {
        let mut p = Pool::new(&opts.user, &opts.password);
        let nics = opts.nics_per_host.max(1);
        let mut host_refs = Vec::new();
        let mut nic_networks = Vec::new();
        for i in 0..nics {
            let n = p.add_network(&format!("Pool-wide network associated with eth{i}"), &format!("xenbr{i}"));
            nic_networks.push(n);
        }
        for h in 0..opts.hosts {
            let href = p.new_ref();
            let uuid = p.new_uuid();
            let mut rec = Record::new();
            rec.insert("uuid".into(), s(uuid));
            rec.insert("name_label".into(), s(format!("xen-{h:03}")));
            rec.insert("name_description".into(), s(""));
            rec.insert("hostname".into(), s(format!("xen-{h:03}")));
            rec.insert("address".into(), s(format!("10.0.{}.{}", h / 250, h % 250 + 1)));
            rec.insert("API_version_major".into(), s("2"));
            rec.insert("API_version_minor".into(), s("21"));
            rec.insert("enabled".into(), Value::Bool(true));
            rec.insert("PIFs".into(), Value::Array(vec![]));
            rec.insert("resident_VMs".into(), Value::Array(vec![]));
            rec.insert("other_config".into(), Value::Struct(BTreeMap::new()));
            p.add("host", &href, rec);
            for (i, net) in nic_networks.iter().enumerate() {
                let port = format!("{}{}", opts.port_prefix, h * nics + i + 1);
                let mac = format!("00:1e:{:02x}:{:02x}:{:02x}:{:02x}", (h >> 8) & 0xff, h & 0xff, i, 0);
                let lldp = opts.lldp_convention.then_some((opts.switch_name.as_str(), port.as_str()));
                p.add_physical_pif(&href, net, &format!("eth{i}"), &mac, lldp);
                p.cabling.push((mac, opts.switch_name.clone(), port));
            }
            let dom0 = p.add_vm_record(&format!("Control domain on host: xen-{h:03}"), Some(&href), false, true);
            let _ = dom0;
            host_refs.push(href);
        }
        let pool_ref = p.new_ref();
        let pool_uuid = p.new_uuid();
        let mut rec = Record::new();
        rec.insert("uuid".into(), s(pool_uuid));
        rec.insert("name_label".into(), s(opts.pool_name.clone()));
        rec.insert("master".into(), s(host_refs.first().cloned().unwrap_or_else(|| NULL_REF.into())));
        rec.insert("default_SR".into(), s(NULL_REF));
        rec.insert("other_config".into(), Value::Struct(BTreeMap::new()));
        p.add("pool", &pool_ref, rec);
        let mut vlan_networks = Vec::new();
        for k in 0..opts.vlans {
            let tag = i64::from(opts.first_vlan) + k as i64;
            vlan_networks.push(p.add_vlan_network(tag, nics - 1));
        }
        p.add_vm_record("Debian Bookworm 12 (template)", None, true, false);
        for (h, href) in host_refs.iter().enumerate() {
            for j in 0..opts.vms_per_host {
                let net = if vlan_networks.is_empty() {
                    nic_networks[0].clone()
                } else {
                    vlan_networks[(h * opts.vms_per_host + j) % vlan_networks.len()].clone()
                };
                let vm = p.add_vm_record(&format!("vm-{h:03}-{j:03}"), Some(href), false, false);
                p.add_vif(&vm, &net, "0", true);
            }
        }
        p
    }

    pub fn add_network(&mut self, name: &str, bridge: &str) -> String {
        let r = self.new_ref();
        let uuid = self.new_uuid();
        let mut rec = Record::new();
        rec.insert("uuid".into(), s(uuid));
        rec.insert("name_label".into(), s(name));
        rec.insert("name_description".into(), s(""));
        rec.insert("bridge".into(), s(bridge));
        rec.insert("MTU".into(), s("1500"));
        rec.insert("PIFs".into(), Value::Array(vec![]));
        rec.insert("VIFs".into(), Value::Array(vec![]));
        rec.insert("other_config".into(), Value::Struct(BTreeMap::new()));
        self.add("network", &r, rec);
        r
    }

    fn lldp_config(neighbour: Option<(&str, &str)>) -> Value {
        let mut oc = BTreeMap::new();
        if let Some((sw, port)) = neighbour {
            oc.insert(LLDP_SYSTEM_NAME.to_string(), s(sw));
            oc.insert(LLDP_PORT_ID.to_string(), s(port));
        }
        Value::Struct(oc)
    }

    fn add_physical_pif(&mut self, host: &str, net: &str, device: &str, mac: &str, lldp: Option<(&str, &str)>) {
        let mref = self.new_ref();
        let muuid = self.new_uuid();
        let mut m = Record::new();
        m.insert("uuid".into(), s(muuid));
        m.insert("carrier".into(), Value::Bool(true));
        m.insert("speed".into(), s("10000"));
        m.insert("duplex".into(), Value::Bool(true));
        m.insert("other_config".into(), Self::lldp_config(lldp));
        self.add("PIF_metrics", &mref, m);
        let pref = self.new_ref();
        let mut rec = self.pif_record(host, net, device, mac, -1, NULL_REF, true);
        rec.insert("metrics".into(), s(mref));
        self.add("PIF", &pref, rec);
        self.set_member("host", host, "PIFs", &pref, true);
        self.set_member("network", net, "PIFs", &pref, true);
    }

    #[allow(clippy::too_many_arguments)] // mirrors the PIF record's fields one to one
    fn pif_record(
        &mut self,
        host: &str,
        net: &str,
        device: &str,
        mac: &str,
        vlan: i64,
        vlan_master_of: &str,
        physical: bool,
    ) -> Record {
        let uuid = self.new_uuid();
        let mut rec = Record::new();
        rec.insert("uuid".into(), s(uuid));
        rec.insert("device".into(), s(device));
        rec.insert("MAC".into(), s(mac));
        rec.insert("MTU".into(), s("1500"));
        rec.insert("host".into(), s(host));
        rec.insert("network".into(), s(net));
        rec.insert("VLAN".into(), s(vlan.to_string()));
        rec.insert("VLAN_master_of".into(), s(vlan_master_of));
        rec.insert("VLAN_slave_of".into(), Value::Array(vec![]));
        rec.insert("physical".into(), Value::Bool(physical));
        rec.insert("currently_attached".into(), Value::Bool(true));
        rec.insert("management".into(), Value::Bool(physical && device == "eth0"));
        rec.insert("metrics".into(), s(NULL_REF));
        rec.insert("bond_master_of".into(), Value::Array(vec![]));
        rec.insert("other_config".into(), Value::Struct(BTreeMap::new()));
        rec
    }

    /// A VLAN network with a VLAN PIF on every host, tagged on NIC `eth{nic}`. The tag is not
    /// validated, so tests can model a pool holding a bad one.
    pub fn add_vlan_network(&mut self, tag: i64, nic: usize) -> String {
        let net = self.add_network(&format!("VLAN {tag}"), &format!("xapi{tag}"));
        let device = format!("eth{nic}");
        let hosts: Vec<String> = self.objects["host"].keys().cloned().collect();
        for host in hosts {
            let tagged = self.objects["PIF"]
                .iter()
                .find(|(_, p)| {
                    p.get("host").and_then(Value::as_str) == Some(host.as_str())
                        && p.get("device").and_then(Value::as_str) == Some(device.as_str())
                        && p.get("physical") == Some(&Value::Bool(true))
                })
                .map(|(r, _)| r.clone());
            let Some(tagged) = tagged else { continue };
            let vref = self.new_ref();
            let pref = self.new_ref();
            let vuuid = self.new_uuid();
            let mut v = Record::new();
            v.insert("uuid".into(), s(vuuid));
            v.insert("tag".into(), s(tag.to_string()));
            v.insert("tagged_PIF".into(), s(tagged.clone()));
            v.insert("untagged_PIF".into(), s(pref.clone()));
            v.insert("other_config".into(), Value::Struct(BTreeMap::new()));
            let mac = self.field("PIF", &tagged, "MAC");
            let rec = self.pif_record(&host, &net, &device, &mac, tag, &vref, false);
            self.add("PIF", &pref, rec);
            self.add("VLAN", &vref, v);
            self.set_member("PIF", &tagged, "VLAN_slave_of", &vref, true);
            self.set_member("host", &host, "PIFs", &pref, true);
            self.set_member("network", &net, "PIFs", &pref, true);
        }
        net
    }

    /// Removes a VLAN network: its VIFs first (as xapi requires), then PIFs, VLANs, network.
    pub fn remove_network(&mut self, net: &str) -> Result<(), SimError> {
        if self.get("network", net).is_none() {
            return Err(SimError::NotFound(format!("network {net}")));
        }
        let vifs: Vec<String> = self.objects["VIF"]
            .iter()
            .filter(|(_, v)| v.get("network").and_then(Value::as_str) == Some(net))
            .map(|(r, _)| r.clone())
            .collect();
        for v in vifs {
            self.remove_vif(&v)?;
        }
        let pifs: Vec<String> = self.objects["PIF"]
            .iter()
            .filter(|(_, p)| p.get("network").and_then(Value::as_str) == Some(net))
            .map(|(r, _)| r.clone())
            .collect();
        for p in pifs {
            let vlan = self.field("PIF", &p, "VLAN_master_of");
            let host = self.field("PIF", &p, "host");
            if self.get("VLAN", &vlan).is_some() {
                let tagged = self.field("VLAN", &vlan, "tagged_PIF");
                self.delete("VLAN", &vlan)?;
                self.set_member("PIF", &tagged, "VLAN_slave_of", &vlan, false);
            }
            self.delete("PIF", &p)?;
            self.set_member("host", &host, "PIFs", &p, false);
        }
        self.delete("network", net)?;
        Ok(())
    }

    pub fn add_vm_record(&mut self, name: &str, host: Option<&str>, template: bool, dom0: bool) -> String {
        let r = self.new_ref();
        let uuid = self.new_uuid();
        let mut rec = Record::new();
        rec.insert("uuid".into(), s(uuid));
        rec.insert("name_label".into(), s(name));
        rec.insert("name_description".into(), s(""));
        rec.insert("power_state".into(), s(if host.is_some() { "Running" } else { "Halted" }));
        rec.insert("resident_on".into(), s(host.unwrap_or(NULL_REF)));
        rec.insert("affinity".into(), s(host.unwrap_or(NULL_REF)));
        rec.insert("is_a_template".into(), Value::Bool(template));
        rec.insert("is_a_snapshot".into(), Value::Bool(false));
        rec.insert("is_control_domain".into(), Value::Bool(dom0));
        rec.insert("VIFs".into(), Value::Array(vec![]));
        rec.insert("memory_static_max".into(), s("4294967296"));
        rec.insert("VCPUs_max".into(), s("2"));
        rec.insert("other_config".into(), Value::Struct(BTreeMap::new()));
        self.add("VM", &r, rec);
        if let Some(h) = host {
            self.set_member("host", h, "resident_VMs", &r, true);
        }
        r
    }

    pub fn add_vif(&mut self, vm: &str, net: &str, device: &str, attached: bool) -> String {
        let r = self.new_ref();
        let uuid = self.new_uuid();
        let n = self.counter;
        let mut rec = Record::new();
        rec.insert("uuid".into(), s(uuid));
        rec.insert("device".into(), s(device));
        rec.insert(
            "MAC".into(),
            s(format!(
                "02:5e:{:02x}:{:02x}:{:02x}:{:02x}",
                (n >> 24) & 0xff,
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            )),
        );
        rec.insert("MTU".into(), s("1500"));
        rec.insert("VM".into(), s(vm));
        rec.insert("network".into(), s(net));
        rec.insert("currently_attached".into(), Value::Bool(attached));
        rec.insert("other_config".into(), Value::Struct(BTreeMap::new()));
        self.add("VIF", &r, rec);
        self.set_member("VM", vm, "VIFs", &r, true);
        self.set_member("network", net, "VIFs", &r, true);
        r
    }

    pub fn remove_vif(&mut self, vif: &str) -> Result<(), SimError> {
        let rec = self.delete("VIF", vif)?;
        let vm = rec.get("VM").and_then(Value::as_str).unwrap_or_default().to_string();
        let net = rec.get("network").and_then(Value::as_str).unwrap_or_default().to_string();
        self.set_member("VM", &vm, "VIFs", vif, false);
        self.set_member("network", &net, "VIFs", vif, false);
        Ok(())
    }

    pub fn set_lldp(&mut self, pif: &str, neighbour: Option<(&str, &str)>) -> Result<(), SimError> {
        let metrics = self.field("PIF", pif, "metrics");
        let oc = Self::lldp_config(neighbour);
        self.modify("PIF_metrics", &metrics, |r| {
            r.insert("other_config".into(), oc);
        })
    }

    // -----------------------------------------------------------------------------------------
    // XenAPI calls

    /// Handles one decoded call arriving on endpoint `endpoint`.
    pub fn dispatch(&mut self, endpoint: usize, method: &str, params: &[Value]) -> Dispatch {
        use Response::Failure;
        let fail = |v: &[&str]| Dispatch::Reply(Failure(v.iter().map(|s| s.to_string()).collect()));
        if endpoint != self.master_endpoint {
            // xapi names the master by its `host.address`.
            let master_ref = self.objects["pool"].values().next().and_then(|r| r.get("master")).and_then(Value::as_str);
            let address = master_ref
                .and_then(|m| self.objects["host"].get(m))
                .and_then(|h| h.get("address"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let master = address.or_else(|| self.endpoints.get(self.master_endpoint).cloned()).unwrap_or_default();
            return fail(&["HOST_IS_SLAVE", &master]);
        }
        let arg = |i: usize| params.get(i).and_then(Value::as_str).unwrap_or_default().to_string();
        if let Some((n, session)) = arity(method) {
            let received = params.len().saturating_sub(usize::from(session));
            if !n.contains(&received) || (session && params.is_empty()) {
                let expected = n.start().to_string();
                return fail(&["MESSAGE_PARAMETER_COUNT_MISMATCH", method, &expected, &received.to_string()]);
            }
        }
        match method {
            "session.login_with_password" => {
                if arg(0) != self.user || arg(1) != self.password {
                    return fail(&["SESSION_AUTHENTICATION_FAILED", &arg(0), "Authentication failure"]);
                }
                let sref = self.new_ref();
                self.sessions.insert(sref.clone());
                self.counts.logins += 1;
                return Dispatch::Reply(Response::Success(s(sref)));
            }
            "session.logout" => {
                if self.sessions.remove(&arg(0)) {
                    self.counts.logouts += 1;
                }
                return Dispatch::Reply(Response::Success(s("")));
            }
            _ => {}
        }
        let session = arg(0);
        if !self.sessions.contains(&session) {
            return fail(&["SESSION_INVALID", &session]);
        }
        // XenAPI.py callers write `event_from` (`from` is a Python keyword); xapi accepts both.
        if (method == "event.from" || method == "event_from") && self.fault == Fault::FailFollow {
            return fail(&["SESSION_INVALID", &session]);
        }
        if method == "event.from" || method == "event_from" {
            let classes: HashSet<String> = params
                .get(1)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
                .unwrap_or_default();
            let classes = if classes.contains("*") { HashSet::new() } else { classes };
            let tok = arg(2);
            let timeout = match params.get(3) {
                Some(Value::Double(d)) => *d,
                Some(v) => v.as_int().map_or(0.0, |i| i as f64),
                None => 0.0,
            };
            if tok.is_empty() {
                return Dispatch::Reply(Response::Success(self.snapshot_batch(&classes)));
            }
            let Some(since) = parse_token(&tok) else { return fail(&["EVENT_FROM_TOKEN_PARSE_FAILURE", &tok]) };
            return Dispatch::WaitEvents { session, classes, since, timeout };
        }
        if method == "session.get_this_host" {
            if arg(1) != session {
                return fail(&["SESSION_INVALID", &arg(1)]);
            }
            let master = self.objects["pool"].values().next().and_then(|r| r.get("master")).cloned();
            return Dispatch::Reply(Response::Success(master.unwrap_or_else(|| s(NULL_REF))));
        }
        if method == "event.inject" {
            let Some(class) = canonical(&arg(1)) else { return fail(&["HANDLE_INVALID", &arg(1), &arg(2)]) };
            let reference = arg(2);
            let Some(rec) = self.get(class, &reference).cloned() else {
                return fail(&["HANDLE_INVALID", class, &reference]);
            };
            self.log(class, Op::Mod, &reference, Some(Value::Struct(rec)));
            return Dispatch::Reply(Response::Success(s(token(self.last_event))));
        }
        let Some((class, call)) = method.split_once('.') else { return fail(&["MESSAGE_METHOD_UNKNOWN", method]) };
        let Some(class) = canonical(class) else { return fail(&["MESSAGE_METHOD_UNKNOWN", method]) };
        let objects = &self.objects[class];
        let reply = |v: Value| Dispatch::Reply(Response::Success(v));
        match call {
            "get_all_records" if self.fault == Fault::Hollow => reply(Value::Struct(BTreeMap::new())),
            "get_all_records" => {
                let mut all: BTreeMap<String, Value> =
                    objects.iter().map(|(r, rec)| (r.clone(), Value::Struct(rec.clone()))).collect();
                if self.fault == Fault::Garbage && class == "VM" {
                    if let Some(first) = all.values_mut().next() {
                        *first = s("garbage");
                    }
                }
                reply(Value::Struct(all))
            }
            "get_all" => reply(Value::Array(objects.keys().map(|r| s(r.clone())).collect())),
            "get_all_records_where" => {
                let mut all = BTreeMap::new();
                for (r, rec) in objects {
                    match matches_where(&arg(1), rec) {
                        Ok(true) => {
                            all.insert(r.clone(), Value::Struct(rec.clone()));
                        }
                        Ok(false) => {}
                        Err(why) => return fail(&["INTERNAL_ERROR", &format!("get_all_records_where: {why}")]),
                    }
                }
                reply(Value::Struct(all))
            }
            "get_by_uuid" => match objects.iter().find(|(_, r)| r.get("uuid").and_then(Value::as_str) == Some(&arg(1)))
            {
                Some((r, _)) => reply(s(r.clone())),
                None => fail(&["UUID_INVALID", class, &arg(1)]),
            },
            "get_by_name_label" => reply(Value::Array(
                objects
                    .iter()
                    .filter(|(_, r)| r.get("name_label").and_then(Value::as_str) == Some(&arg(1)))
                    .map(|(r, _)| s(r.clone()))
                    .collect(),
            )),
            _ => {
                let Some(field) = call.strip_prefix("get_") else { return fail(&["MESSAGE_METHOD_UNKNOWN", method]) };
                let Some(rec) = objects.get(&arg(1)) else { return fail(&["HANDLE_INVALID", class, &arg(1)]) };
                if field == "record" {
                    return reply(Value::Struct(rec.clone()));
                }
                match rec.get(field) {
                    Some(v) => reply(v.clone()),
                    None => fail(&["MESSAGE_METHOD_UNKNOWN", method]),
                }
            }
        }
    }

    fn wants(classes: &HashSet<String>, class: &str) -> bool {
        classes.is_empty() || classes.contains(&class.to_ascii_lowercase())
    }

    fn event_value(e: &SimEvent) -> Value {
        let mut m = BTreeMap::new();
        m.insert("id".into(), s(token(e.id)));
        m.insert("timestamp".into(), s(format!("{:.6}", e.at)));
        m.insert("class".into(), s(e.class.to_ascii_lowercase()));
        m.insert(
            "operation".into(),
            s(match e.op {
                Op::Add => "add",
                Op::Mod => "mod",
                Op::Del => "del",
            }),
        );
        m.insert("ref".into(), s(e.reference.clone()));
        if let Some(snap) = &e.snapshot {
            m.insert("snapshot".into(), snap.clone());
        }
        Value::Struct(m)
    }

    fn batch(&self, events: Vec<Value>, classes: &HashSet<String>) -> Value {
        let counts = self
            .objects
            .iter()
            .filter(|(c, _)| Self::wants(classes, c))
            .map(|(c, m)| (c.to_ascii_lowercase(), s(m.len().to_string())))
            .collect();
        let mut out = BTreeMap::new();
        out.insert("events".into(), Value::Array(events));
        out.insert("valid_ref_counts".into(), Value::Struct(counts));
        out.insert("token".into(), s(token(self.last_event)));
        Value::Struct(out)
    }

    /// `event.from` with the empty token: every current object as an `add`, as xapi does.
    fn snapshot_batch(&self, classes: &HashSet<String>) -> Value {
        let at = now();
        let mut events = Vec::new();
        for (class, objs) in &self.objects {
            if !Self::wants(classes, class) {
                continue;
            }
            for (r, rec) in objs {
                events.push(Self::event_value(&SimEvent {
                    id: self.last_event,
                    class,
                    op: Op::Add,
                    reference: r.clone(),
                    snapshot: Some(Value::Struct(rec.clone())),
                    at,
                }));
            }
        }
        self.batch(events, classes)
    }

    /// Events after `since`: `Ok(None)` when there are none yet.
    pub fn events_since(
        &self,
        session: &str,
        classes: &HashSet<String>,
        since: u64,
    ) -> Result<Option<Value>, Response> {
        if !self.sessions.contains(session) {
            return Err(Response::Failure(vec!["SESSION_INVALID".into(), session.into()]));
        }
        if since > self.last_event {
            return Err(Response::Failure(vec!["EVENT_FROM_TOKEN_PARSE_FAILURE".into(), token(since)]));
        }
        let oldest = self.events.front().map_or(self.last_event + 1, |e| e.id);
        if since + 1 < oldest && since < self.last_event {
            return Err(Response::Failure(vec!["EVENTS_LOST".into()]));
        }
        // Like xapi, report each object once with its latest state: `add` if it was created
        // after the token, `del` if it is gone, `mod` otherwise.
        let mut latest: HashMap<(&str, &str), (Op, &SimEvent)> = HashMap::new();
        for e in self.events.iter().filter(|e| e.id > since && Self::wants(classes, e.class)) {
            latest.entry((e.class, e.reference.as_str())).and_modify(|(_, last)| *last = e).or_insert((e.op, e));
        }
        let mut merged: Vec<(Op, &SimEvent)> = latest.into_values().collect();
        merged.sort_by_key(|(_, e)| e.id);
        let events: Vec<Value> = merged
            .into_iter()
            .map(|(first, last)| {
                let op = match (first, last.op) {
                    (_, Op::Del) => Op::Del,
                    (Op::Add, _) => Op::Add,
                    _ => Op::Mod,
                };
                Self::event_value(&SimEvent { op, ..last.clone() })
            })
            .collect();
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.batch(events, classes)))
    }

    /// An empty batch carrying the current token (the poll timed out).
    pub fn empty_batch(&self, classes: &HashSet<String>) -> Value {
        self.batch(Vec::new(), classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SimOptions {
        SimOptions { hosts: 2, vms_per_host: 3, vlans: 2, ..SimOptions::default() }
    }

    fn login(p: &mut Pool) -> String {
        match p.dispatch(0, "session.login_with_password", &[s("root"), s("netfold")]) {
            Dispatch::Reply(Response::Success(Value::Str(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn generated_pool_has_the_asked_shape() {
        let p = Pool::generate(&opts());
        assert_eq!(p.objects["host"].len(), 2);
        // 6 guests + 2 control domains + 1 template.
        assert_eq!(p.objects["VM"].len(), 9);
        assert_eq!(p.objects["VLAN"].len(), 4);
        assert_eq!(p.objects["PIF"].len(), 2 * 2 + 2 * 2);
    }

    #[test]
    fn bad_password_and_bad_session_fail_as_xapi_does() {
        let mut p = Pool::generate(&opts());
        let Dispatch::Reply(Response::Failure(d)) = p.dispatch(0, "session.login_with_password", &[s("root"), s("x")])
        else {
            panic!()
        };
        assert_eq!(d[0], "SESSION_AUTHENTICATION_FAILED");
        let Dispatch::Reply(Response::Failure(d)) = p.dispatch(0, "VM.get_all_records", &[s("OpaqueRef:nope")]) else {
            panic!()
        };
        assert_eq!(d, vec!["SESSION_INVALID".to_string(), "OpaqueRef:nope".into()]);
    }

    #[test]
    fn generic_getters_serve_what_xenapi_py_asks_at_login() {
        let mut p = Pool::generate(&opts());
        let sess = login(&mut p);
        let Dispatch::Reply(Response::Success(Value::Array(pools))) = p.dispatch(0, "pool.get_all", &[s(&sess)]) else {
            panic!()
        };
        let Dispatch::Reply(Response::Success(Value::Str(master))) =
            p.dispatch(0, "pool.get_master", &[s(&sess), pools[0].clone()])
        else {
            panic!()
        };
        let Dispatch::Reply(Response::Success(major)) =
            p.dispatch(0, "host.get_API_version_major", &[s(&sess), s(&master)])
        else {
            panic!()
        };
        assert_eq!(major.as_int(), Some(2));
        let Dispatch::Reply(Response::Failure(d)) = p.dispatch(0, "VM.get_record", &[s(&sess), s("OpaqueRef:gone")])
        else {
            panic!()
        };
        assert_eq!(d[0], "HANDLE_INVALID");
    }

    #[test]
    fn events_follow_tokens_and_bad_tokens_are_refused() {
        let mut p = Pool::generate(&opts());
        let sess = login(&mut p);
        let t = p.last_event();
        let vm = p.objects["VM"].keys().next().cloned().unwrap();
        p.modify("VM", &vm, |r| {
            r.insert("power_state".into(), s("Halted"));
        })
        .unwrap();
        let only_vm: HashSet<String> = ["vm".to_string()].into();
        let batch = p.events_since(&sess, &only_vm, t).unwrap().unwrap();
        let events = batch.get("events").and_then(Value::as_array).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].get("operation"), Some(&s("mod")));
        assert!(p.events_since(&sess, &only_vm, p.last_event()).unwrap().is_none());
        let Dispatch::Reply(Response::Failure(d)) =
            p.dispatch(0, "event.from", &[s(&sess), Value::Array(vec![s("VM")]), s("garbage"), Value::Double(1.0)])
        else {
            panic!()
        };
        assert_eq!(d[0], "EVENT_FROM_TOKEN_PARSE_FAILURE");
    }

    #[test]
    fn removing_a_vlan_network_deletes_its_vifs_pifs_and_vlans() {
        let mut p = Pool::generate(&opts());
        let net = p.objects["network"].iter().find(|(_, r)| r["name_label"] == s("VLAN 100")).unwrap().0.clone();
        p.remove_network(&net).unwrap();
        assert_eq!(p.objects["VLAN"].len(), 2);
        assert!(p.objects["VIF"].values().all(|v| v["network"] != s(&net)));
    }

    #[test]
    fn parameter_counts_where_expressions_and_empty_classes_answer_as_xapi() {
        let mut p = Pool::generate(&opts());
        let sess = login(&mut p);
        let failure = |d: Dispatch| match d {
            Dispatch::Reply(Response::Failure(f)) => f,
            other => panic!("not a failure: {other:?}"),
        };
        let f = failure(p.dispatch(0, "VM.get_record", &[s(&sess)]));
        // xapi counts without the session: `self` expected, nothing received.
        assert_eq!(f, ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"]);
        let f = failure(p.dispatch(0, "VM.get_all_records_where", &[s(&sess), s("field \"x\" ~ \"y\"")]));
        assert_eq!(f[0], "INTERNAL_ERROR");
        let Dispatch::Reply(Response::Success(Value::Struct(running))) =
            p.dispatch(0, "VM.get_all_records_where", &[s(&sess), s("field \"power_state\" = \"Running\"")])
        else {
            panic!()
        };
        assert!(!running.is_empty() && running.values().all(|r| r.get("power_state") == Some(&s("Running"))));
        let Dispatch::Reply(Response::Success(Value::Struct(bonds))) =
            p.dispatch(0, "Bond.get_all_records", &[s(&sess)])
        else {
            panic!()
        };
        assert!(bonds.is_empty());
    }
}
