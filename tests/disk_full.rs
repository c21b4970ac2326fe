//! The real `netfold` binary on a data directory in a small tmpfs that this test mounts (it
//! needs root and fails loudly without it), against the XenServer simulator in its own process:
//! the disk fills while a hypervisor is lost, the `Lost` event is held back (not dropped),
//! appends resume by themselves once space is freed, SIGTERM shuts down within seconds — also
//! while the disk is still full — and no acknowledged event is lost.

mod support;
#[path = "../store/tests/common/tmpfs.rs"]
mod tmpfs;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::netfold::free_port;
use tmpfs::Tmpfs;

/// Fills the file system holding `dir`; returns the filler's path.
fn fill_up(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    while f.write_all(&[0x5a; 64 * 1024]).is_ok() {}
    while f.write_all(&[0x5a; 512]).is_ok() {}
    path
}

/// A child process whose stderr is collected as it comes.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netfold"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NETFOLD_TEST_XEN_PASSWORD", "netfold")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, out) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        Self { child, stderr }
    }

    fn wait_for(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.stderr.lock().unwrap().contains(what) {
            assert!(Instant::now() < deadline, "no `{what}` within {within:?}:\n{}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn count(&self, what: &str) -> usize {
        self.stderr.lock().unwrap().matches(what).count()
    }

    fn sigterm(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// Waits for the exit; fails the test after `within`.
    fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running {within:?} after SIGTERM:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The XenServer simulator on `port`, with `vms` VMs per host (4 hosts).
fn xen_sim(port: u16, vms: usize) -> Proc {
    let vms = vms.to_string();
    let sim = Proc::spawn(&["sim", "xen", "--listen", &format!("127.0.0.1:{port}"), "--vms-per-host", &vms]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the simulator did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    sim
}

/// The agent's `/healthz` body, read with a bare HTTP/1.0 request (its port from its log).
fn healthz(agent: &Proc) -> String {
    use std::io::Read;
    let log = agent.stderr.lock().unwrap().clone();
    let addr = log.split("netfold running http=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: netfold\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// `(seq, kind)` of every event in the data directory, after `verify` passed.
fn verified_events(data: &Path) -> Vec<(u64, String)> {
    let d = data.to_str().unwrap();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_netfold")).args(args).output().unwrap();
    let verify = run(&["verify", "--data-dir", d]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let log = run(&["log", "--data-dir", d, "--json"]);
    String::from_utf8_lossy(&log.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["seq"].as_u64().unwrap(), v["kind"].as_str().unwrap().to_string())
        })
        .collect()
}

const LOST: &str = "Lost connection to hypervisor xen1. Retrying...";
const BACK: &str = "Reestablished connection with hypervisor xen1.";
const HELD: &str = "the log cannot be appended";

/// Waits until `done()`, failing the test with the agent's log after `within`.
fn until(agent: &Proc, within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}:\n{}", agent.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// On a full disk, loses and regains the hypervisor until an event is held back; returns the
/// running sim. sled may still have room in pages it already holds, so each return brings 50
/// more VMs per host (a `Learnt` of 200 new vNICs), until an append needs new space.
fn until_held(agent: &Proc, mut sim: Proc, port: u16, vms: &mut usize) -> Proc {
    for _ in 0..20 {
        let (lost, back) = (agent.count(LOST), agent.count(BACK));
        drop(sim);
        until(agent, Duration::from_secs(60), "no Lost and nothing held", || {
            agent.count(LOST) > lost || agent.count(HELD) > 0
        });
        *vms += 50;
        sim = xen_sim(port, *vms);
        if agent.count(HELD) > 0 {
            return sim;
        }
        until(agent, Duration::from_secs(60), "no Reestablished and nothing held", || {
            agent.count(BACK) > back || agent.count(HELD) > 0
        });
        if agent.count(HELD) > 0 {
            return sim;
        }
    }
    panic!("20 outages and no append met the full disk:\n{}", agent.stderr.lock().unwrap());
}

fn kinds(events: &[(u64, String)]) -> Vec<&str> {
    events.iter().map(|(_, k)| k.as_str()).collect()
}

#[test]
fn a_full_disk_holds_events_back_until_space_returns_and_sigterm_still_stops_the_agent() {
    let fs = Tmpfs::mount(64);
    let data = fs.path().join("data");
    let port = free_port();
    let cfg = fs.path().join("netfold.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[engine]\ngrace_secs = 600\n\
             [[hypervisor]]\nname = \"xen1\"\nkind = \"xen\"\nurl = \"http://127.0.0.1:{port}\"\nallow_plaintext = true\nuser = \"root\"\n\
             password = {{ password_env = \"NETFOLD_TEST_XEN_PASSWORD\" }}\n\
             [[switch]]\nname = \"tor1\"\nkind = \"memory\"\n",
            data.display()
        ),
    )
    .unwrap();
    let run = || Proc::spawn(&["run", "-c", cfg.to_str().unwrap()]);

    // Phase 1: learn, fill the disk, then lose and regain the hypervisor until an event meets
    // the full disk (sled may still have room in pages it already holds for the first few).
    let mut vms = 2;
    let mut sim = xen_sim(port, vms);
    let mut agent = run();
    agent.wait_for("netfold running", Duration::from_secs(30));
    agent.wait_for("XenAPI inventory read", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let filler = fill_up(fs.path());
    sim = until_held(&agent, sim, port, &mut vms);
    // Held, not dropped: nothing more is logged as done while the disk is full, and health
    // says why.
    let (lost, back) = (agent.count(LOST), agent.count(BACK));
    let health = healthz(&agent);
    assert!(health.starts_with("HTTP/1.0 503") || health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("the event log refuses appends since"), "{health}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((agent.count(LOST), agent.count(BACK)), (lost, back), "an event was reported done on a full disk");
    std::fs::remove_file(&filler).unwrap();
    agent.wait_for("the log accepts appends again", Duration::from_secs(30));
    // The held event and the reconnect behind it are recorded, in order.
    until(&agent, Duration::from_secs(60), "the reconnect was not recorded", || {
        agent.count(BACK) > back && agent.count(LOST) == agent.count(BACK)
    });
    agent.sigterm();
    let status = agent.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", agent.stderr.lock().unwrap());
    let first = verified_events(&data);
    let k = kinds(&first);
    assert_eq!(&k[..2], ["Connected", "Learnt"], "{k:?}");
    let logged = |what| agent.count(what);
    assert_eq!(k.iter().filter(|k| **k == "Lost").count(), logged(LOST), "every Lost logged is in the log: {k:?}");
    assert_eq!(k.iter().filter(|k| **k == "Reestablished").count(), logged(BACK), "{k:?}");
    let last_lost = k.iter().rposition(|k| *k == "Lost").unwrap();
    assert!(k[last_lost..].contains(&"Reestablished"), "{k:?}");
    assert!(first.iter().enumerate().all(|(i, (seq, _))| *seq == i as u64 + 1), "gapless: {first:?}");

    // Phase 2: SIGTERM while the disk is full and an event is held back.
    let mut agent = run();
    agent.wait_for("netfold running", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let filler = fill_up(fs.path());
    let _sim = until_held(&agent, sim, port, &mut vms);
    agent.sigterm();
    let _ = agent.exit_within(Duration::from_secs(10));
    let stderr = agent.stderr.lock().unwrap().clone();
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_file(&filler).unwrap();
    let second = verified_events(&data);
    assert_eq!(&second[..first.len()], &first[..], "every acknowledged event is still there, unchanged");
}
