//! End-to-end tests of the `netfold` binary as an operator uses it: the demo runs green and
//! leaves a history that `log`, `state`, `why` and `verify` answer from; bad config, an
//! corrupt data directory each give one clear paragraph and a non-zero exit — never a panic.
//! (Neither an unreachable hypervisor nor an unreachable switch stops start-up: tests/faults.rs
//! and tests/switch_faults.rs show netfold running, retrying and reporting them.)

mod support;

use std::path::Path;
use std::process::Output;
use support::netfold::netfold;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A failure an operator can act on: non-zero, one `netfold:` paragraph, no panic.
fn assert_clear_failure(out: &Output, mentions: &[&str]) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "a panic, not an error: {err}");
    let para = err.lines().find(|l| l.starts_with("netfold: ")).unwrap_or_else(|| panic!("no error paragraph: {err}"));
    for m in mentions {
        assert!(para.contains(m), "`{m}` not in: {para}");
    }
    para.to_string()
}

#[test]
fn demo_runs_green_and_leaves_an_auditable_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let d = data.to_str().unwrap();
    let out = netfold(&["demo", "--data-dir", d]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for line in [
        "Xen-Citrix:Lost connection to hypervisor xen217. Retrying...",
        "Xen-Citrix:Reestablished connection with hypervisor xen217.",
        "VMware:Lost connection to hypervisor vc-east. Retrying...",
        "VMware:Lost connection to hypervisor vc-east. Removing learnt information.",
    ] {
        assert!(stderr.contains(line), "missing seed line `{line}`:\n{stderr}");
    }
    assert!(stdout.contains("nothing removed: the switch is exactly as before the outage"), "{stdout}");
    assert!(stdout.contains("Demo finished"), "{stdout}");

    let log = netfold(&["log", "--data-dir", d]);
    assert!(log.status.success(), "{}", text(&log.stderr));
    let log = text(&log.stdout);
    for kind in ["Connected", "Learnt", "Lost", "Reestablished", "Expired"] {
        assert!(log.contains(kind), "no {kind} in the audit log:\n{log}");
    }
    let lost = netfold(&["log", "--data-dir", d, "--kind", "lost", "--json"]);
    let lines: Vec<serde_json::Value> =
        text(&lost.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2, "one Lost per hypervisor");
    assert!(lines.iter().all(|l| l["kind"] == "Lost"));

    // The XenServer's VLANs are still there; why names a VM and the events behind it.
    let why = netfold(&["why", "--data-dir", d, "--port", "tor1:Ethernet2/1", "--vlan", "100"]);
    let why = text(&why.stdout);
    assert!(why.contains("VLAN 100 is on tor1:Ethernet2/1") && why.contains("learnt at record"), "{why}");
    // The vCenter's were removed when it expired, but were kept through its loss (the two
    // sessions' records interleave as they race, so the seq comes from the log, not a guess).
    let gone = text(&netfold(&["why", "--data-dir", d, "--port", "tor1:Ethernet1/3", "--vlan", "100"]).stdout);
    assert!(gone.contains("is not desired"), "{gone}");
    let vc_lost = lines.iter().find(|l| l["hypervisor"] == "vc-east").expect("vc-east's Lost")["seq"].to_string();
    let was = netfold(&["why", "--data-dir", d, "--port", "tor1:Ethernet1/3", "--vlan", "100", "--at", &vc_lost]);
    let was = text(&was.stdout);
    assert!(was.contains("VLAN 100 is on tor1:Ethernet1/3"), "at vc-east's Lost (record {vc_lost}): {was}");

    let state = netfold(&["state", "--data-dir", d, "--json"]);
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let statuses: Vec<_> = state["hypervisors"].as_array().unwrap().iter().map(|h| h["status"].clone()).collect();
    assert!(statuses.contains(&serde_json::json!("Expired")) && statuses.contains(&serde_json::json!("Live")));

    let verify = netfold(&["verify", "--data-dir", d]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("verify OK"));

    // The vCenter's expiry took VLAN 100 off Ethernet1/3 between its loss and the head.
    let head = text(&verify.stdout).split("verify OK: ").nth(1).and_then(|t| t.split(' ').next()).unwrap().to_string();
    let diff = netfold(&["diff", "--data-dir", d, "--from", &vc_lost, "--to", &head]);
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    let diff = text(&diff.stdout);
    assert!(diff.lines().any(|l| l.starts_with("- tor1:Ethernet1/3 vlan 100")), "{diff}");
    assert!(!diff.contains("tor1:Ethernet2/1 vlan 100"), "the XenServer's VLAN did not change:\n{diff}");
    let same = text(&netfold(&["diff", "--data-dir", d, "--from", &head, "--to", &head]).stdout);
    assert!(same.starts_with("Desired state is the same"), "{same}");

    // --hypervisor keeps one hypervisor's events, and every one of them.
    let xen = text(&netfold(&["log", "--data-dir", d, "--hypervisor", "xen217"]).stdout);
    let xen_lines = log.lines().filter(|l| l.contains(" xen217 ")).count();
    assert!(xen_lines > 0 && xen.lines().count() == xen_lines, "{xen}");
    assert!(!xen.contains("vc-east"), "{xen}");

    // Tamper with one record: verify fails, naming it. An agent starting without a snapshot to
    // lean on folds the whole log and refuses to run on it.
    tamper(&data.join("db"), 2);
    drop_snapshots(&data.join("db"));
    let verify = netfold(&["verify", "--data-dir", d]);
    assert_clear_failure(&verify, &["record 2"]);
    let cfg = dir.path().join("netfold.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{d}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[switch]]\nname = \"tor1\"\nkind = \"memory\"\n"
        ),
    )
    .unwrap();
    assert_clear_failure(&netfold(&["run", "-c", cfg.to_str().unwrap()]), &["record 2"]);
}

/// Flips a byte inside record `seq` (block layout: `[count u32]` then `[len u32][record]`).
fn tamper(db: &Path, seq: u64) {
    let db = store::open_db(db).unwrap();
    let tree = db.open_tree("events.log").unwrap();
    let (k, block) = tree.range(..=seq.to_be_bytes()).next_back().unwrap().unwrap();
    let first = u64::from_be_bytes(k.as_ref().try_into().unwrap());
    let mut block = block.to_vec();
    let mut at = 4;
    for _ in first..seq {
        at += 4 + u32::from_be_bytes(block[at..at + 4].try_into().unwrap()) as usize;
    }
    block[at + 4 + 50] ^= 0x20;
    tree.insert(k, block).unwrap();
    db.flush().unwrap();
}

fn drop_snapshots(db: &Path) {
    let db = store::open_db(db).unwrap();
    db.open_tree("events.snapshots").unwrap().clear().unwrap();
    db.flush().unwrap();
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("netfold.toml");
    std::fs::write(&cfg, "data_dir = \"/tmp/x\"\n[[switch]]\nname = \"tor1\"\nkind = \"memory\"\nmax_removal = 3\n")
        .unwrap();
    let c = cfg.to_str().unwrap();
    let para = assert_clear_failure(&netfold(&["config", "check", "-c", c]), &["netfold.toml:5:", "max_removal"]);
    assert!(para.contains("max_removals"), "says what is allowed: {para}");
    assert_clear_failure(&netfold(&["run", "-c", c]), &["netfold.toml:5:"]);
    std::fs::write(&cfg, "data_dir = \"/tmp/x\"\n[[hypervisor]]\nname = \"vc\"\nkind = \"vmware\"\nurl = \"https://vc/sdk\"\nuser = \"u\"\npassword = \"hunter2\"\n").unwrap();
    let para = assert_clear_failure(&netfold(&["config", "check", "-c", c]), &["refused", "password_env"]);
    assert!(!para.contains("hunter2"));
    assert_clear_failure(
        &netfold(&["config", "check", "-c", "/nonexistent/netfold.toml"]),
        &["cannot read config file"],
    );
}

#[test]
fn a_directory_that_is_not_a_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_clear_failure(
        &netfold(&["log", "--data-dir", dir.path().to_str().unwrap()]),
        &["not a netfold data directory"],
    );
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(db.join("db"), vec![0xa5u8; 4096]).unwrap();
    assert_clear_failure(&netfold(&["verify", "--data-dir", dir.path().to_str().unwrap()]), &["cannot"]);
    let cfg = dir.path().join("netfold.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n", dir.path().display()))
        .unwrap();
    assert_clear_failure(&netfold(&["run", "-c", cfg.to_str().unwrap()]), &["cannot open the database"]);
}
