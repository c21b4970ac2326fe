//! netfold against VMware's own vCenter simulator (vcsim, from Debian's
//! `golang-github-vmware-govmomi-dev`, built from `tests/peers/vcsim/` in GOPATH mode, offline),
//! driven through VMware's own Python SDK (pyVmomi): the real binary learns the inventory
//! pyVmomi reads, and keeps learning while another client of the same user waits on the default
//! PropertyCollector (netfold's session uses a collector of its own).
//!
//! Needs Go + govmomi and Python with pyvmomi; `.ci/run` installs them and runs:
//! `PYVMOMI_PYTHON=… cargo test --test vcsim -- --ignored`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine::{Change, Event, Fact};
use support::netfold::{Netfold, STEP};

/// Builds the vcsim main once per target directory (or takes `NETFOLD_VCSIM`).
fn vcsim_binary() -> String {
    if let Ok(p) = std::env::var("NETFOLD_VCSIM") {
        return p;
    }
    let out = format!("{}/vcsim", env!("CARGO_TARGET_TMPDIR"));
    if std::path::Path::new(&out).exists() {
        return out;
    }
    let status = Command::new("go")
        .args(["build", "-o", &out, "./tests/peers/vcsim"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env_remove("GOFLAGS")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run `go` ({e}): apt-get install golang-go golang-github-vmware-govmomi-dev")
        });
    assert!(status.success(), "building vcsim failed: is golang-github-vmware-govmomi-dev installed?");
    out
}

/// A child whose stdout lines arrive on a channel.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Lines {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines { child, rx, stdin }
    }

    /// The next line starting with `prefix` (others are skipped), within STEP.
    fn expect(&self, prefix: &str) -> String {
        self.expect_within(prefix, STEP)
    }

    fn expect_within(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => panic!("no line `{prefix}…` within {within:?}: {e}"),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in `{line}`"))
}

/// vcsim's address and credentials, from its `url:` line.
struct Vcsim {
    _proc: Lines,
    hostport: String,
    host: String,
    port: String,
    user: String,
    pass: String,
}

fn start_vcsim(args: &[&str]) -> Vcsim {
    let proc = Lines::spawn(Command::new(vcsim_binary()).args(["-l", "127.0.0.1:0"]).args(args));
    let url = proc.expect_within("url: ", Duration::from_secs(300)).trim_start_matches("url: ").to_string();
    let rest = url.strip_prefix("http://").expect("http url");
    let (creds, hostport) = rest.split_once('@').expect("credentials in the URL");
    let (user, pass) = creds.split_once(':').expect("user:pass");
    let hostport = hostport.trim_end_matches("/sdk").to_string();
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    let (host, port) = (host.to_string(), port.to_string());
    Vcsim { _proc: proc, hostport, host, port, user: user.into(), pass: pass.into() }
}

/// A netfold config for one vcsim hypervisor; `extra` lines go into its `[[hypervisor]]`.
fn netfold_config(dir: &std::path::Path, vc: &Vcsim, extra: &str) -> std::path::PathBuf {
    let config = dir.join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[[hypervisor]]
name = "vcsim"
kind = "vmware"
url = "http://{hostport}/sdk"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "VCSIM_PASSWORD" }}
wait_secs = 2
liveness_secs = 5
{extra}
"#,
            data = dir.join("data").display(),
            hostport = vc.hostport,
            user = vc.user,
        ),
    )
    .unwrap();
    config
}

/// Every event netfold's agent has logged so far.
async fn events(http: &reqwest::Client, base: &str) -> Vec<engine::Envelope> {
    let body = http.get(format!("{base}/log?from=1")).send().await.unwrap().text().await.unwrap();
    body.lines().map(|l| replay::audit::from_json(l).unwrap()).collect()
}

/// `VmHWM` of a process, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim) and Python with pyvmomi: .ci/run runs it with --ignored"]
async fn at_10000_vms_netfold_learns_what_pyvmomi_reads_although_vcsim_ignores_paging() {
    // vcsim's -vm counts per standalone host and per cluster: 9 standalone hosts and one
    // cluster of 3, 1,000 VMs each = 10,000 VMs, each with a NIC on the DV port group.
    let vc = start_vcsim(&["-host", "9", "-cluster", "1", "-cluster-host", "3", "-vm", "1000"]);
    let python = std::env::var("PYVMOMI_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!("{}/tests/vcsim_client.py", env!("CARGO_MANIFEST_DIR"));
    let client =
        Lines::spawn(Command::new(python).args([&script, &vc.host, &vc.port, &vc.user, &vc.pass, "--count-only"]));
    let hosts = field(&client.expect("COUNT HOSTS").replace("COUNT HOSTS ", "hosts="), "hosts");
    let vms = field(&client.expect("COUNT VMS").replace("COUNT VMS ", "vms="), "vms");
    assert!(vms >= 10_000, "pyVmomi reads {vms} VMs");

    // vcsim answers the whole inventory in one reply (it ignores maxObjects), far past this
    // cap; each object is well below it.
    let dir = tempfile::tempdir().unwrap();
    let config = netfold_config(dir.path(), &vc, "page_size = 500\nmax_body_bytes = 4194304");
    let started = Instant::now();
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", vc.pass.clone())]);
    let base = nf.http().await;
    let http = reqwest::Client::new();
    let deadline = started + Duration::from_secs(600);
    let learnt = loop {
        let first = events(&http, &base).await.into_iter().find_map(|e| match e.event {
            Event::Learnt { changes } => Some(changes),
            _ => None,
        });
        if let Some(changes) = first {
            break changes;
        }
        assert!(Instant::now() < deadline, "no Learnt within 600 s:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let to_learnt = started.elapsed();
    let learnt_hosts = learnt.iter().filter(|c| matches!(c, Change::Upsert(Fact::Host(_)))).count() as u64;
    let learnt_vms: std::collections::BTreeSet<&str> = learnt
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(Fact::Vnic(v)) => Some(v.vm.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!((learnt_hosts, learnt_vms.len() as u64), (hosts, vms), "netfold learnt what pyVmomi reads");
    let rss = peak_rss_kb(nf.pid());
    println!(
        "vcsim {hosts} hosts, {vms} VMs: first complete Learnt {:.1} s after start, netfold peak RSS {} MiB",
        to_learnt.as_secs_f64(),
        rss / 1024
    );
    assert!(nf.log().contains("vSphere inventory loaded"));
    nf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim) and Python with pyvmomi: .ci/run runs it with --ignored"]
async fn netfold_learns_vcsims_inventory_and_keeps_learning_beside_a_default_collector_client() {
    let python = std::env::var("PYVMOMI_PYTHON").unwrap_or_else(|_| "python3".into());
    let vcsim = Lines::spawn(Command::new(vcsim_binary()).args(["-l", "127.0.0.1:0"]));
    let url = vcsim.expect("url: ").trim_start_matches("url: ").to_string();
    // http://user:pass@127.0.0.1:PORT/sdk
    let rest = url.strip_prefix("http://").expect("http url");
    let (creds, hostport) = rest.split_once('@').expect("credentials in the URL");
    let (user, pass) = creds.split_once(':').expect("user:pass");
    let hostport = hostport.trim_end_matches("/sdk");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");

    let script = format!("{}/tests/vcsim_client.py", env!("CARGO_MANIFEST_DIR"));
    let mut client = Lines::spawn(Command::new(python).args([&script, host, port, user, pass]));
    let hosts = field(&client.expect("COUNT HOSTS").replace("COUNT HOSTS ", "hosts="), "hosts");
    let vms = field(&client.expect("COUNT VMS").replace("COUNT VMS ", "vms="), "vms");
    client.expect("WAITING");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[[hypervisor]]
name = "vcsim"
kind = "vmware"
url = "http://{hostport}/sdk"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "VCSIM_PASSWORD" }}
wait_secs = 2
liveness_secs = 5
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", pass.to_string())]);
    let base = nf.http().await;
    nf.wait_line("vSphere inventory loaded").await;
    let log = nf.log();
    let loaded = log.lines().find(|l| l.contains("vSphere inventory loaded")).unwrap();
    assert_eq!((field(loaded, "hosts"), field(loaded, "vms")), (hosts, vms), "netfold read what pyVmomi reads");

    // vcsim's hosts carry no proxySwitch: DV port groups map to the switch's summary.hostMember,
    // so no VM's NIC on one is refused (the audit trail would say so in a Refused event).
    // (The Learnt of the first read and its Refused, if any, are appended in one batch.)
    let http = reqwest::Client::new();
    let deadline = Instant::now() + STEP;
    let first = loop {
        let all = events(&http, &base).await;
        if all.iter().any(|e| matches!(e.event, Event::Learnt { .. })) {
            break all;
        }
        assert!(Instant::now() < deadline, "no Learnt within {STEP:?}:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused: Vec<_> = first
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Refused { refusals } => Some(refusals),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(refused.is_empty(), "refused at vcsim's default inventory: {refused:?}");

    // The other client is parked on the default collector; netfold must still see this change.
    client.send("ADDNIC VM Network");
    let added = client.expect("ADDED ");
    let vm_name = added.split_whitespace().nth(1).expect("the VM's name").to_string();
    assert!(added.ends_with("success"), "{added}");
    let deadline = Instant::now() + STEP;
    loop {
        let body = http.get(format!("{base}/log?from=1")).send().await.unwrap().text().await.unwrap();
        let learnt = body.lines().map(|l| replay::audit::from_json(l).unwrap()).any(|e| match e.event {
            Event::Learnt { changes } => changes.iter().any(
                |c| matches!(c, Change::Upsert(Fact::Vnic(v)) if v.vm_name == vm_name && v.network == "VM Network"),
            ),
            _ => false,
        });
        if learnt {
            break;
        }
        assert!(Instant::now() < deadline, "netfold never learnt the new NIC of {vm_name}:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nf.stop().await;
}
