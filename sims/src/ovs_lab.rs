//! A private Open vSwitch lab: its own `ovsdb-server` and `ovs-vswitchd` (userspace datapath,
//! no kernel module needed) running in a temporary directory, with one `datapath_type=netdev`
//! bridge. `netfold demo --switch ovs` drives it, and so do the end-to-end tests.
//!
//! Nothing touches the machine's own Open vSwitch: the database, sockets, logs and control
//! sockets all live in the lab's directory, and [`Lab`] tears everything down on drop (bridges
//! deleted, `ovs-vswitchd` asked to exit, both daemons killed, stray tap devices removed). When
//! the binaries are missing, [`Lab::start`] fails with [`Error::Missing`], which names the
//! `apt-get` command that installs them. These are blocking calls (short-lived child processes):
//! from async code, run them under `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The OVSDB schema Debian's `openvswitch-common` installs.
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// What to run when something is missing.
pub const INSTALL: &str = "apt-get install -y openvswitch-switch iproute2 iputils-ping";

/// How long the daemons get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A lab failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary or the schema is not installed.
    #[error("`{what}` not found: the Open vSwitch lab needs a real Open vSwitch; install it with `{INSTALL}`")]
    Missing { what: String },
    /// A command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    /// A command ran and failed.
    #[error("{command} failed: {output}")]
    Failed { command: String, output: String },
    /// Preparing the lab directory failed.
    #[error("Open vSwitch lab directory: {0}")]
    Io(#[from] std::io::Error),
    /// A daemon did not come up in time.
    #[error("{0} did not start within {START_TIMEOUT:?}")]
    Timeout(String),
    /// `ovs-vsctl` printed something this module cannot read.
    #[error("unexpected ovs-vsctl output for {what}: {output:?}")]
    Parse { what: String, output: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (Linux interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// The full path of an installed binary, searched in the usual system directories (the lab
/// must work whether or not `sbin` is on `PATH`).
pub fn require(bin: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(bin))
        .find(|p| p.exists())
        .ok_or_else(|| Error::Missing { what: bin.to_string() })
}

/// Runs `cmd` to completion; its trimmed stdout, or an error carrying stdout and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| Error::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        return Err(Error::Failed { command, output: output.trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Parses `ovs-vsctl get port P trunks` output (`[]`, `[10]`, `[10, 20]`).
pub fn parse_trunks(out: &str) -> Result<Vec<u16>> {
    out.trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| Error::Parse { what: "trunks".into(), output: out.to_string() }))
        .collect()
}

/// A private Open vSwitch with one netdev bridge, torn down on drop.
pub struct Lab {
    dir: tempfile::TempDir,
    sock: PathBuf,
    tcp_port: u16,
    bridge: String,
    vsctl: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// Creates the database, starts `ovsdb-server` (listening on a unix socket and on a free
    /// loopback TCP port) and `ovs-vswitchd`, and adds the bridge; returns once `ovs-vswitchd`
    /// has applied the bridge.
    pub fn start() -> Result<Lab> {
        let (tool, server, vswitchd) = (require("ovsdb-tool")?, require("ovsdb-server")?, require("ovs-vswitchd")?);
        let vsctl = require("ovs-vsctl")?;
        if !Path::new(SCHEMA).exists() {
            return Err(Error::Missing { what: SCHEMA.into() });
        }
        let dir = tempfile::Builder::new().prefix("netfold-ovs").tempdir()?;
        let d = dir.path().to_path_buf();
        let db = d.join("conf.db");
        run(Command::new(tool).arg("create").arg(&db).arg(SCHEMA))?;
        let sock = d.join("db.sock");
        let tcp_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let env = |c: &mut Command| {
            c.env("OVS_RUNDIR", &d)
                .env("OVS_LOGDIR", &d)
                .env("OVS_DBDIR", &d)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut lab = Lab { dir, sock: sock.clone(), tcp_port, bridge: unique("nfbr"), vsctl, children: Vec::new() };

        let mut c = Command::new(&server);
        c.arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--remote=ptcp:{tcp_port}:127.0.0.1"))
            .arg(format!("--unixctl={}", d.join("ovsdb-server.ctl").display()))
            .arg(format!("--log-file={}", d.join("ovsdb-server.log").display()));
        env(&mut c);
        let child = c.spawn().map_err(|source| Error::Spawn { command: format!("{server:?}"), source })?;
        lab.children.push(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !sock.exists() {
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!("ovsdb-server (no socket at {})", sock.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        lab.vsctl(&["--no-wait", "init"])?;

        let mut c = Command::new(&vswitchd);
        c.arg(format!("unix:{}", sock.display()))
            .arg(format!("--unixctl={}", d.join("vswitchd.ctl").display()))
            .arg(format!("--log-file={}", d.join("vswitchd.log").display()));
        env(&mut c);
        let child = c.spawn().map_err(|source| Error::Spawn { command: format!("{vswitchd:?}"), source })?;
        lab.children.push(child);
        // Without --no-wait this returns only once ovs-vswitchd has applied it: vswitchd is up.
        let br = lab.bridge.clone();
        let timeout = format!("--timeout={}", START_TIMEOUT.as_secs());
        lab.vsctl(&[&timeout, "add-br", &br, "--", "set", "bridge", &br, "datapath_type=netdev"])?;
        Ok(lab)
    }

    /// The lab's directory (database, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The OVSDB endpoint over the unix socket, as `ovs::Config::endpoint` takes it.
    pub fn unix_endpoint(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// The OVSDB endpoint over loopback TCP, as `ovs::Config::endpoint` takes it.
    pub fn tcp_endpoint(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port)
    }

    /// ovs-vswitchd's control socket (unixctl: `fdb/show` and the other `ovs-appctl` commands).
    pub fn unixctl(&self) -> PathBuf {
        self.dir.path().join("vswitchd.ctl")
    }

    /// Runs `ovs-vsctl` against the lab's database.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.vsctl);
        c.arg(format!("--db=unix:{}", self.sock.display())).args(args).env("OVS_RUNDIR", self.dir.path());
        run(&mut c)
    }

    /// Adds a trunk port to the bridge (its interface need not exist) with the given trunk
    /// VLANs; an empty list makes an open trunk.
    pub fn add_trunk_port(&self, port: &str, trunks: &[u16]) -> Result<()> {
        let list = trunks.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let t = format!("trunks=[{list}]");
        self.vsctl(&["--no-wait", "add-port", &self.bridge, port, "--", "set", "port", port, "vlan_mode=trunk", &t])?;
        Ok(())
    }

    /// [`Lab::add_trunk_port`], with an interface of type `patch` (peer `peer`, which need not
    /// exist): it gets an OpenFlow port number without a kernel device, so the bridge's MAC table
    /// can hold entries on it ([`Lab::fdb_add`]).
    pub fn add_patch_trunk_port(&self, port: &str, peer: &str, trunks: &[u16]) -> Result<()> {
        let list = trunks.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let (t, p) = (format!("trunks=[{list}]"), format!("options:peer={peer}"));
        self.vsctl(&[
            "--timeout=20",
            "add-port",
            &self.bridge,
            port,
            "--",
            "set",
            "interface",
            port,
            "type=patch",
            &p,
            "--",
            "set",
            "port",
            port,
            "vlan_mode=trunk",
            &t,
        ])?;
        Ok(())
    }

    /// Puts a static entry in the bridge's MAC learning table (`ovs-appctl fdb/add`): `mac` on
    /// `port` in `vlan`, as if a host behind the port had sent a frame. ovs-vswitchd drops such
    /// entries when it reconfigures the bridge.
    pub fn fdb_add(&self, port: &str, vlan: u16, mac: &str) -> Result<()> {
        let appctl = require("ovs-appctl")?;
        let mut c = Command::new(appctl);
        c.arg("-t").arg(self.unixctl()).args(["fdb/add", &self.bridge, port, &vlan.to_string(), mac]);
        run(&mut c)?;
        Ok(())
    }

    /// The port's trunk VLANs as `ovs-vsctl` shows them (the ground truth, not netfold's client).
    pub fn trunks(&self, port: &str) -> Result<Vec<u16>> {
        parse_trunks(&self.vsctl(&["get", "port", port, "trunks"])?)
    }

    /// `ovs-vsctl show`, the ports' VLAN columns and the tail of `ovs-vswitchd`'s log, for
    /// failure messages.
    pub fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("vswitchd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        let show = |args: &[&str]| self.vsctl(args).unwrap_or_else(|e| e.to_string());
        format!(
            "{}\n{}\n--- ovs-vswitchd.log (tail) ---\n{tail}",
            show(&["show"]),
            show(&["--columns=name,trunks,tag,vlan_mode", "list", "port"])
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Delete every bridge and wait for ovs-vswitchd to apply it (removing the bridges' tap
        // devices), ask it to exit cleanly, then stop both daemons; finally remove any tap a
        // killed daemon left behind.
        let bridges: Vec<String> =
            self.vsctl(&["list-br"]).map(|o| o.lines().map(str::to_string).collect()).unwrap_or_default();
        for br in &bridges {
            let _ = self.vsctl(&["--timeout=5", "--if-exists", "del-br", br]);
        }
        let ctl = self.dir.path().join("vswitchd.ctl");
        if let Ok(appctl) = require("ovs-appctl") {
            let _ = Command::new(appctl).arg("-t").arg(&ctl).args(["exit", "--cleanup"]).output();
        }
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(ip) = require("ip") {
            for br in &bridges {
                let _ = Command::new(&ip).args(["link", "del", br]).stderr(Stdio::null()).output();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks_parse_empty_single_and_many() {
        assert_eq!(parse_trunks("[]").unwrap(), Vec::<u16>::new());
        assert_eq!(parse_trunks("[10]\n").unwrap(), vec![10]);
        assert_eq!(parse_trunks("[10, 20, 4094]").unwrap(), vec![10, 20, 4094]);
        assert!(matches!(parse_trunks("[x]"), Err(Error::Parse { .. })));
    }

    #[test]
    fn unique_names_fit_an_interface_name_and_differ() {
        let (a, b) = (unique("nfbr"), unique("nfbr"));
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
    }

    #[test]
    fn a_missing_binary_names_the_install_command() {
        let e = require("netfold-no-such-binary").unwrap_err();
        assert!(e.to_string().contains("apt-get install -y openvswitch-switch"), "{e}");
    }
}
