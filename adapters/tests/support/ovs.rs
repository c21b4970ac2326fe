//! Test harness for a real Open vSwitch: the library's [`sims::ovs_lab::Lab`] (private
//! ovsdb-server + ovs-vswitchd, netdev bridge) behind a panicking wrapper, plus network
//! namespaces with veth pairs and a bounded poll. Everything is torn down on drop. Missing
//! binaries make the test fail loudly, naming what to install — never a silent pass.
#![allow(dead_code)] // each test binary uses a different part of this shared harness

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use lab::unique;
use sims::ovs_lab::{self as lab, Lab};

fn require(bin: &str) -> std::path::PathBuf {
    lab::require(bin).unwrap_or_else(|e| panic!("{e}"))
}

fn run(cmd: &mut Command) -> String {
    lab::run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// A private Open vSwitch with one netdev bridge (the library lab; test failures panic).
pub struct Ovs {
    pub lab: Lab,
}

impl Ovs {
    pub fn start() -> Ovs {
        Ovs { lab: Lab::start().unwrap_or_else(|e| panic!("cannot start the Open vSwitch lab: {e}")) }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.lab.dir()
    }

    pub fn bridge(&self) -> &str {
        self.lab.bridge()
    }

    pub fn unix_endpoint(&self) -> String {
        self.lab.unix_endpoint()
    }

    pub fn tcp_endpoint(&self) -> String {
        self.lab.tcp_endpoint()
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        self.lab.vsctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn add_trunk_port(&self, port: &str, trunks: &[u16]) {
        self.lab.add_trunk_port(port, trunks).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn diagnostics(&self) -> String {
        self.lab.diagnostics()
    }

    pub fn trunks(&self, port: &str) -> Vec<u16> {
        self.lab.trunks(port).unwrap_or_else(|e| panic!("{e}"))
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
