//! The real `netfold` binary as a child process for tests: `netfold run` with its stderr (the
//! operator log) in a file, waiting for log lines, SIGTERM (clean stop) and SIGKILL, and one-shot
//! commands (`netfold log ...`).
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
    pub fn start(config: &Path, stderr: PathBuf, env: &[(&str, String)]) -> Netfold {
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_netfold"))
            .args(["run", "-c", config.to_str().expect("utf-8 path")])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start netfold");
        Netfold { child, stderr }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn wait_line(&mut self, needle: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("netfold exited ({status}) before logging `{needle}`:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no `{needle}` within {STEP:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// Runs `netfold ARGS` to completion.
pub fn netfold(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netfold")).args(args).output().expect("run netfold")
}
