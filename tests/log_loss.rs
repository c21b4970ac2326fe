//! The `netfold` binary against a data directory that lost acknowledged records, as an operator
//! meets it: sled's file truncated (as a rolled-back or cut-short disk leaves it), a blob file
//! with a flipped byte, a deleted blob. `verify` names what was lost and exits non-zero, `run`
//! refuses to start unless `--accept-loss` (which records the loss in the log), and no reading
//! command changes a byte of the directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../store/tests/common/tree.rs"]
mod tree;

use engine::{Change, Event, Fact, HypervisorId, Kind, Recorded, VnicFact};
use store::Log;
use support::netfold::netfold;
use tree::contents;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `netfold:` error paragraph of a failed run (never a panic).
fn failure(out: &Output) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected a failure; stdout: {}; stderr: {err}", text(&out.stdout));
    assert!(!err.contains("panicked"), "a panic, not an error: {err}");
    err.lines().find(|l| l.starts_with("netfold: ")).unwrap_or_else(|| panic!("no error paragraph: {err}")).to_string()
}

/// Runs every reading command on `data`; the directory must be byte-identical afterwards.
/// Returns `verify`'s output.
fn read_everything(data: &Path) -> Output {
    let d = data.to_str().unwrap();
    let before = contents(data);
    let verify = netfold(&["verify", "--data-dir", d]);
    for args in [
        &["log", "--data-dir", d][..],
        &["state", "--data-dir", d],
        &["why", "--data-dir", d, "--port", "tor1:e1", "--vlan", "100"],
        &["diff", "--data-dir", d, "--from", "1", "--to", "3"],
    ] {
        let _ = netfold(args);
    }
    assert!(contents(data) == before, "a reading command changed the data directory");
    verify
}

/// A data directory whose event log holds ten events, one append each; event 5 (if `big`) is a
/// `Learnt` of 3,000 vNICs, large enough that sled keeps it in a blob file.
async fn ten_events(data: &Path, big: bool) {
    let store = store::Store::open(data.join("db")).unwrap();
    let log = store.log::<Recorded>("events").unwrap();
    let id = HypervisorId::new("xen1").unwrap();
    for n in 1..=10u64 {
        let event = match n {
            1 => Event::Connected { kind: Kind::XenCitrix, endpoint: "http://xen1".into() },
            5 if big => Event::Learnt {
                changes: (0..3000)
                    .map(|i| {
                        Change::Upsert(Fact::Vnic(VnicFact {
                            vm: format!("vm-{i:05}-{n}").into(),
                            vm_name: format!("a virtual machine with a long name {i}").into(),
                            nic: "0".into(),
                            mac: format!("52:54:00:{:02x}:{:02x}:01", i / 256, i % 256).into(),
                            host: "host-1".into(),
                            network: "net-100".into(),
                            connected: true,
                            powered_on: true,
                        }))
                    })
                    .collect(),
            },
            _ => Event::Lost { reason: format!("probe {n}"), since: 1_700_000_000_000 + n },
        };
        log.append(vec![Recorded { at: 1_700_000_000_000 + n, hypervisor: id.clone(), event }]).await.unwrap();
    }
}

fn config(dir: &Path, data: &Path) -> PathBuf {
    let cfg = dir.join("netfold.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[switch]]\nname = \"tor1\"\nkind = \"memory\"\n",
            data.display()
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test]
async fn a_truncated_log_is_named_by_verify_refused_by_run_and_accepted_only_on_request() {
    for percent in [80u64, 60, 40] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        ten_events(&data, false).await;
        let file = data.join("db").join("db");
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len * percent / 100).unwrap();

        let para = failure(&read_everything(&data));
        assert!(para.contains("but seq 10 was acknowledged"), "{percent}%: {para}");
        let found: u64 = para.split("ends at seq ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(para.contains(&format!("records {}..=10 are lost", found + 1)), "{para}");
        let log = netfold(&["log", "--data-dir", data.to_str().unwrap()]);
        assert_eq!(text(&log.stdout).lines().count() as u64, found, "log shows what is left");
        assert!(failure(&log).contains("incomplete"), "log fails after showing what is left");

        let cfg = config(dir.path(), &data);
        let cfg = cfg.to_str().unwrap();
        let refused = failure(&netfold(&["run", "-c", cfg]));
        assert!(refused.contains("refuses to start") && refused.contains("--accept-loss"), "{refused}");
        assert!(refused.contains("but seq 10 was acknowledged"), "{refused}");

        if percent == 60 {
            accept_the_loss(cfg, &data, found);
        }
    }
}

/// `run --accept-loss` starts, records the loss, and stops on SIGTERM; the log then verifies.
fn accept_the_loss(cfg: &str, data: &Path, found: u64) {
    let mut agent = Command::new(env!("CARGO_BIN_EXE_netfold"))
        .args(["run", "-c", cfg, "--accept-loss"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr until the agent exits (a closed pipe would fail its logging).
    let stderr = agent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("netfold running") {
                let _ = tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = agent.kill();
        panic!("the agent did not start: {}", drain.join().unwrap());
    }
    let pid = agent.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let seen = drain.join().unwrap();
    assert!(status.success(), "{status}: {seen}");
    assert!(seen.contains("lost acknowledged records (--accept-loss)"), "{seen}");
    let d = data.to_str().unwrap();
    let verify = netfold(&["verify", "--data-dir", d]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let accepted = text(&netfold(&["log", "--data-dir", d, "--kind", "LossAccepted", "--json"]).stdout);
    let lines: Vec<serde_json::Value> = accepted.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{accepted}");
    assert_eq!(lines[0]["seq"], found + 1);
    assert_eq!(lines[0]["event"]["LossAccepted"]["acknowledged"], 10);
}

#[tokio::test]
async fn a_flipped_byte_in_a_blob_is_named_and_the_directory_left_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ten_events(&data, true).await;
    let blobs: Vec<_> = std::fs::read_dir(data.join("db/blobs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!blobs.is_empty(), "event 5 must be in a blob file");
    for b in &blobs {
        let mut bytes = std::fs::read(b).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x04;
        std::fs::write(b, bytes).unwrap();
    }
    let para = failure(&read_everything(&data));
    assert!(para.contains("ends at seq 4 but seq 10 was acknowledged: records 5..=10 are lost"), "{para}");
    assert!(para.contains("sled discarded blob file"), "{para}");
    assert!(blobs.iter().all(|b| b.exists()), "evidence is never deleted");
}

#[tokio::test]
async fn a_deleted_blob_is_named_by_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ten_events(&data, true).await;
    for e in std::fs::read_dir(data.join("db/blobs")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let para = failure(&read_everything(&data));
    assert!(para.contains("record 5 is missing"), "{para}");
    assert!(para.contains("seq 10 was acknowledged"), "{para}");
}
