//! The real `netfold` binary as a child process for tests: `netfold run` with its stderr (the
//! operator log) in a file, waiting for log lines, SIGTERM (clean stop) and SIGKILL, and one-shot
//! commands (`netfold log ...`); and the hypervisor simulators as processes of their own
//! (`netfold sim … --control`), driven through their control API. Every wait is a bounded wait
//! for a condition that fails naming what it last saw.
#![allow(dead_code)] // each test binary uses a different part of this shared helper

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for any one real-process effect on a loaded 2-core machine.
pub const STEP: Duration = Duration::from_secs(40);

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One `netfold run`, its stderr captured in a file.
pub struct Netfold {
    child: Child,
    stderr: PathBuf,
}

impl Netfold {
    /// Logs at `info`, or as `NETFOLD_TEST_LOG` says when it is set (a `RUST_LOG` filter: for
    /// example `info,tokio_postgres=debug` logs every statement sent to PostgreSQL).
    pub fn start(config: &Path, stderr: PathBuf, env: &[(&str, String)]) -> Netfold {
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_netfold"))
            .args(["run", "-c", config.to_str().expect("utf-8 path")])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", std::env::var("NETFOLD_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start netfold");
        Netfold { child, stderr }
    }

    /// The process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until the log contains `needle` `n` times (and the process is alive); returns how
    /// long that took.
    pub async fn wait_lines(&mut self, needle: &str, n: usize) -> Duration {
        let started = Instant::now();
        let deadline = started + STEP;
        loop {
            if self.count(needle) >= n {
                return started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("netfold exited ({status}) before logging `{needle}` ×{n}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no `{needle}` ×{n} within {STEP:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_line(&mut self, needle: &str) -> Duration {
        self.wait_lines(needle, 1).await
    }

    /// The HTTP endpoint's address, from the `netfold running http=…` line.
    pub async fn http(&mut self) -> String {
        self.wait_line("netfold running").await;
        let log = self.log();
        let line = log.lines().find(|l| l.contains("netfold running")).expect("running line");
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect("http= field");
        format!("http://{addr}")
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let out = Command::new("kill").args([sig, &pid]).output().expect("run kill");
        assert!(out.status.success(), "kill {sig} {pid}: {}", text(&out.stderr));
    }

    pub async fn exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait netfold") {
                return s;
            }
            assert!(Instant::now() < deadline, "netfold did not exit within {STEP:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill9(mut self) -> String {
        self.signal("-KILL");
        let status = self.exit().await;
        assert!(!status.success(), "SIGKILL must not look like a clean exit: {status}");
        self.log()
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.exit().await;
        let log = self.log();
        assert!(status.success(), "netfold exited with {status} on SIGTERM:\n{log}");
        log
    }
}

impl Drop for Netfold {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let out = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).output().expect("run kill");
    assert!(out.status.success(), "kill -{signal} {pid}: {}", text(&out.stderr));
}

/// How long a one-shot command may take before the test fails as hung.
pub const COMMAND: Duration = Duration::from_secs(60);

/// Runs `netfold ARGS` to completion (`RUST_LOG=info`, no `NETFOLD_CONFIG` from the caller's
/// environment), failing the test if it is still running after [`COMMAND`].
pub fn netfold(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_netfold"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NETFOLD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netfold");
    finish(child, &format!("{args:?}"))
}

/// Waits for a spawned `netfold` to exit and collects its output, failing the test (and killing
/// it) if it is still running after [`COMMAND`]; `what` names it in that failure.
pub fn finish(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + COMMAND;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("netfold {what} still running after {COMMAND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// A loopback port nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("its address").port()
}

/// A hypervisor simulator in its own process (`netfold sim vcenter|xen --lab … --control …`).
pub struct Sim {
    child: Child,
    pub url: String,
    pub user: String,
    pub password: String,
    control: String,
    http: reqwest::Client,
}

impl Sim {
    /// `kind`: `vcenter` or `xen`; `lab`: `SWITCH:PREFIX`; `listen`: the address (port 0: any).
    pub fn start(kind: &str, lab: &str, listen: &str) -> Sim {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_netfold"))
            .args(["sim", kind, "--listen", listen, "--lab", lab, "--control", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator");
        let stdout = child.stdout.take().expect("simulator stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut field = |name: &str| -> String {
            let line = lines.next().unwrap_or_else(|| panic!("the {kind} simulator ended before printing `{name}`"));
            let line = line.expect("simulator stdout");
            line.strip_prefix(name).unwrap_or_else(|| panic!("expected `{name}`, got `{line}`")).trim().to_string()
        };
        let _banner = field("");
        let (url, user, password, control) = (field("url:"), field("user:"), field("password:"), field("control:"));
        Sim { child, url, user, password, control, http: reqwest::Client::new() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `[[hypervisor]]` entry for this XenServer simulator named `name`, its password read
    /// from the environment variable `password_env`, with the short liveness and backoff a
    /// test of losses wants.
    pub fn xen_entry(&self, name: &str, password_env: &str) -> String {
        format!(
            r#"[[hypervisor]]
name = "{name}"
kind = "xen"
url = "{url}"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "{password_env}" }}
liveness_secs = 5
wait_secs = 2
connect_timeout_ms = 1000
backoff_initial_ms = 500
backoff_max_ms = 2000
resync_secs = 600
"#,
            url = self.url,
            user = self.user,
        )
    }

    /// The `host:port` it serves on.
    pub fn authority(&self) -> String {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or_default().to_string()
    }

    async fn post(&self, path: &str) {
        let r = self.http.post(format!("{}{path}", self.control)).send().await.expect("simulator control");
        assert!(r.status().is_success(), "simulator control {path}: {}", r.status());
    }

    /// `none`, `hollow`, `garbage`, `oversize`, `fail-follow`.
    pub async fn fault(&self, name: &str) {
        self.post(&format!("/fault/{name}")).await;
    }

    pub async fn set_password(&self, password: &str) {
        self.post(&format!("/password/{password}")).await;
    }

    /// `{logins, logouts, sessions}` as the simulator counted them.
    pub async fn counts(&self) -> serde_json::Value {
        self.http.get(format!("{}/counts", self.control)).send().await.expect("counts").json().await.expect("JSON")
    }

    /// SIGKILL: the port closes, connects are refused.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill9();
    }
}
