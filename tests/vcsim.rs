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
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => panic!("no line `{prefix}…` within {STEP:?}: {e}"),
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

    // The other client is parked on the default collector; netfold must still see this change.
    client.send("ADDNIC VM Network");
    let added = client.expect("ADDED ");
    let vm_name = added.split_whitespace().nth(1).expect("the VM's name").to_string();
    assert!(added.ends_with("success"), "{added}");
    let http = reqwest::Client::new();
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

/// vcsim over https with its own self-signed certificate, the thumbprint govmomi prints for it
/// (`-tls`), and the `url:` line's parts.
fn vcsim_tls() -> (Lines, String, String, String, String) {
    let vcsim = Lines::spawn(Command::new(vcsim_binary()).args(["-l", "127.0.0.1:0", "-tls"]));
    let thumbprint = vcsim.expect("thumbprint: ").trim_start_matches("thumbprint: ").to_string();
    let url = vcsim.expect("url: ").trim_start_matches("url: ").to_string();
    let rest = url.strip_prefix("https://").expect("https url");
    let (creds, hostport) = rest.split_once('@').expect("credentials in the URL");
    let (user, pass) = creds.split_once(':').expect("user:pass");
    let hostport = hostport.trim_end_matches("/sdk").to_string();
    (vcsim, thumbprint, hostport, user.to_string(), pass.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Go + govmomi (vcsim): .ci/run runs it with --ignored"]
async fn vcsims_self_signed_certificate_is_trusted_by_its_pinned_thumbprint_and_no_other() {
    let (_vcsim, thumbprint, hostport, user, pass) = vcsim_tls();
    assert_eq!(thumbprint.split(':').count(), 32, "govmomi's SHA-256 thumbprint: {thumbprint}");
    let url = format!("https://{hostport}/sdk");

    // The real binary, pinned to what govmomi says the certificate is.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[hypervisor]]\nname = \"vcsim\"\nkind = \"vmware\"\n\
             url = \"{url}\"\nuser = \"{user}\"\npassword = {{ password_env = \"VCSIM_PASSWORD\" }}\n\
             tls = {{ thumbprint = \"sha256:{thumbprint}\" }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("VCSIM_PASSWORD", pass.clone())]);
    nf.wait_line("vSphere inventory loaded").await;
    nf.stop().await;

    // Without the pin the self-signed certificate is refused; with another pin, refused naming
    // the thumbprint seen, which is govmomi's.
    use adapters::common::{HttpClient, SecretString, Thumbprint, Timeouts, TlsOptions};
    let login = |tls: TlsOptions| {
        let (url, user, pass) = (url.clone(), user.clone(), pass.clone());
        async move {
            let http = HttpClient::new(&tls, &Timeouts::flat(Duration::from_secs(10)), 1 << 20).unwrap();
            adapters::vsphere::client::Session::login(&http, &url, &user, &SecretString::from(pass))
                .await
                .map(drop)
                .map_err(|e| adapters::driver::chain(&e))
        }
    };
    let e = login(TlsOptions::default()).await.unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    let other = Thumbprint([0x5A; 32]);
    let e = login(TlsOptions { thumbprint: Some(other.to_string()), ..Default::default() }).await.unwrap_err();
    assert!(e.contains(&format!("has thumbprint sha256:{thumbprint}, not the configured {other}")), "{e}");
    login(TlsOptions { thumbprint: Some(format!("sha256:{thumbprint}")), ..Default::default() }).await.unwrap();
}
