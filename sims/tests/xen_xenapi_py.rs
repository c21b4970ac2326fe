//! Faithfulness check: the official XenAPI.py client against the simulator over loopback HTTP
//! (log in, read records, follow `event.from`). Ignored by default because it needs a Python
//! with the `XenAPI` package: `XENAPI_PYTHON=/path/to/python cargo test -p sims --test
//! xen_xenapi_py -- --ignored`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sims::xen::{SimOptions, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Python with the XenAPI package; set XENAPI_PYTHON"]
async fn official_xenapi_py_logs_in_reads_records_and_follows_events() {
    let python = std::env::var("XENAPI_PYTHON").expect("XENAPI_PYTHON names a python with XenAPI installed");
    let sim =
        Simulator::start(SimOptions { hosts: 3, vms_per_host: 4, vlans: 2, ..SimOptions::default() }).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xen_xenapi_py.py");
    let mut child = Command::new(python)
        .args([script, sim.url(), &sim.user(), &sim.password()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("script output in time");
        eprintln!("python: {line}");
        let ready = line.starts_with("ready ");
        lines.push(line);
        if ready {
            break;
        }
    }
    assert!(lines.iter().any(|l| l == "api 2.21"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("guests 12")), "{lines:?}");
    assert!(lines.iter().any(|l| l == "vlan_pifs 6"), "{lines:?}");
    let (_, _, vifs) = sim.vms().into_iter().next().unwrap();
    sim.unplug_vif(&vifs[0]).unwrap();
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("the unplug event");
    eprintln!("python: {line}");
    assert!(line.starts_with("saw vif mod"), "{line}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// xapi's data model through XenAPI.py (`xen_datamodel.py`): every served field is a field of its
/// class with the wire form of its type; argument counts, `session.get_this_host`,
/// `get_all_records_where`, empty classes and `HANDLE_INVALID` answer as xapi does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Python with the XenAPI package; set XENAPI_PYTHON"]
async fn records_follow_xapis_data_model_through_xenapi_py() {
    let python = std::env::var("XENAPI_PYTHON").expect("XENAPI_PYTHON names a python with XenAPI installed");
    let sim =
        Simulator::start(SimOptions { hosts: 3, vms_per_host: 4, vlans: 2, ..SimOptions::default() }).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xen_datamodel.py");
    let args = [script.to_string(), sim.url().to_string(), sim.user(), sim.password()];
    let out = tokio::task::spawn_blocking(move || Command::new(python).args(&args).output().expect("python starts"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for check in
        ["ok fields VM", "ok fields PIF_metrics", "ok get_this_host", "ok count_mismatch", "ok get_all_records_where"]
    {
        assert!(text.lines().any(|l| l.starts_with(check)), "missing `{check}` in:\n{text}");
    }
    assert_eq!(text.lines().last(), Some("DONE"), "{text}");
}
