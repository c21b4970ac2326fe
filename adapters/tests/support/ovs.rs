//! Test harness for a real Open vSwitch: a private ovsdb-server and ovs-vswitchd (userspace
//! datapath) in a temporary directory, a `datapath_type=netdev` bridge, and network namespaces
//! with veth pairs. Everything is torn down on drop. Missing binaries make the test fail loudly,
//! naming what to install — never a silent pass.
#![allow(dead_code)] // each test binary uses a different part of this shared harness

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const INSTALL: &str =
    "install Debian's Open vSwitch, iproute2 and ping: apt-get install -y openvswitch-switch iproute2 iputils-ping";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

fn require(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` not found: the OVS tests need a real Open vSwitch — {INSTALL}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} ({INSTALL})"));
    if !out.status.success() {
        panic!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A private Open vSwitch with one netdev bridge.
pub struct Ovs {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub tcp_port: u16,
    pub bridge: String,
    children: Vec<Child>,
}

impl Ovs {
    pub fn start() -> Ovs {
        let (tool, server, vswitchd) = (require("ovsdb-tool"), require("ovsdb-server"), require("ovs-vswitchd"));
        require("ovs-vsctl");
        assert!(Path::new(SCHEMA).exists(), "{SCHEMA} is missing — {INSTALL}");
        let dir = tempfile::Builder::new().prefix("netfold-ovs").tempdir().expect("temp dir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let db = d.join("conf.db");
        run(Command::new(tool).arg("create").arg(&db).arg(SCHEMA));
        let sock = d.join("db.sock");
        let tcp_port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let env = |c: &mut Command| {
            c.env("OVS_RUNDIR", d).env("OVS_LOGDIR", d).env("OVS_DBDIR", d).stdout(Stdio::null()).stderr(Stdio::null());
        };
        let mut c = Command::new(server);
        c.arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--remote=ptcp:{tcp_port}:127.0.0.1"))
            .arg(format!("--unixctl={}", d.join("ovsdb-server.ctl").display()))
            .arg(format!("--log-file={}", d.join("ovsdb-server.log").display()));
        env(&mut c);
        let mut me = Ovs { dir, sock: sock.clone(), tcp_port, bridge: unique("nfbr"), children: Vec::new() };
        me.children.push(c.spawn().unwrap_or_else(|e| panic!("cannot start ovsdb-server: {e} ({INSTALL})")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "ovsdb-server did not create {}", sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        me.vsctl(&["--no-wait", "init"]);
        let mut c = Command::new(vswitchd);
        c.arg(format!("unix:{}", sock.display()))
            .arg(format!("--unixctl={}", d.join("vswitchd.ctl").display()))
            .arg(format!("--log-file={}", d.join("vswitchd.log").display()));
        env(&mut c);
        me.children.push(c.spawn().unwrap_or_else(|e| panic!("cannot start ovs-vswitchd: {e} ({INSTALL})")));
        // Without --no-wait this returns only once ovs-vswitchd has applied it: vswitchd is up.
        let br = me.bridge.clone();
        me.vsctl(&["--timeout=20", "add-br", &br, "--", "set", "bridge", &br, "datapath_type=netdev"]);
        me
    }

    pub fn unix_endpoint(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    pub fn tcp_endpoint(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port)
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let mut c = Command::new(require("ovs-vsctl"));
        c.arg(format!("--db=unix:{}", self.sock.display())).args(args).env("OVS_RUNDIR", self.dir.path());
        run(&mut c)
    }

    /// Adds a trunk port (its interface need not exist) with the given trunk VLANs.
    pub fn add_trunk_port(&self, port: &str, trunks: &[u16]) {
        let list = trunks.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let mut args = vec!["--no-wait", "add-port", &self.bridge, port, "--", "set", "port", port, "vlan_mode=trunk"];
        let t = format!("trunks=[{list}]");
        args.push(&t);
        self.vsctl(&args);
    }

    /// `ovs-vsctl show` and the tail of ovs-vswitchd's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("vswitchd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}\n{}\n--- ovs-vswitchd.log (tail) ---\n{}",
            self.vsctl(&["show"]),
            self.vsctl(&["--columns=name,trunks,tag,vlan_mode", "list", "port"]),
            tail.join("\n")
        )
    }

    /// The port's trunk VLANs as ovs-vsctl shows them (the ground truth, not our client).
    pub fn trunks(&self, port: &str) -> Vec<u16> {
        let out = self.vsctl(&["get", "port", port, "trunks"]);
        out.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().expect("trunk id"))
            .collect()
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // Delete every bridge and wait for ovs-vswitchd to apply it (removing the bridges' tap
        // devices), ask it to exit cleanly, then stop both daemons; finally remove any tap a
        // killed daemon left behind.
        let db = format!("--db=unix:{}", self.sock.display());
        let bridges = Command::new("ovs-vsctl")
            .args([&db, "list-br"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        for br in &bridges {
            let _ = Command::new("ovs-vsctl").args([&db, "--timeout=5", "--if-exists", "del-br", br]).output();
        }
        let ctl = self.dir.path().join("vswitchd.ctl");
        let _ = Command::new("ovs-appctl").arg("-t").arg(&ctl).args(["exit", "--cleanup"]).output();
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for br in &bridges {
            let _ = Command::new("ip").args(["link", "del", br]).stderr(Stdio::null()).output();
        }
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let ip = require("ip");
        let name = unique("nfns");
        run(Command::new(&ip).args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> String {
        run(Command::new(require("ip")).args(["netns", "exec", &self.name]).args(args))
    }

    /// Whether `addr` answers one ping within a second.
    pub fn ping(&self, addr: &str) -> bool {
        require("ping");
        Command::new(require("ip"))
            .args(["netns", "exec", &self.name, "ping", "-c", "1", "-W", "1", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth pair: `host` stays in the root namespace (to become an OVS port), `inner` moves to
/// `ns`. Deleted on drop (deleting one end deletes both).
pub struct Veth {
    pub host: String,
    pub inner: String,
}

impl Veth {
    pub fn new(ns: &Netns) -> Veth {
        let ip = require("ip");
        let host = unique("nfvh");
        let inner = unique("nfvi");
        run(Command::new(&ip).args(["link", "add", &host, "type", "veth", "peer", "name", &inner]));
        let v = Veth { host, inner };
        run(Command::new(&ip).args(["link", "set", &v.inner, "netns", &ns.name]));
        run(Command::new(&ip).args(["link", "set", &v.host, "up"]));
        ns.exec(&["ip", "link", "set", &v.inner, "up"]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host]).output();
    }
}

/// Polls `f` until it holds or `limit` passes (real-network effects only); returns the time taken.
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
