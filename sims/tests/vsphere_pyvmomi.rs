//! Faithfulness: VMware's own Python SDK (pyVmomi) against the vCenter simulator — wrong
//! password refused as `vim.fault.InvalidLogin`, version negotiation, login, paged
//! `RetrievePropertiesEx` of hosts, VMs and distributed port groups, `QueryNetworkHint`, and
//! `WaitForUpdatesEx` seeing a power-off. Needs Python with pyvmomi:
//! `PYVMOMI_PYTHON=python3 cargo test -p sims --test vsphere_pyvmomi -- --ignored`.

use std::process::Stdio;
use std::time::Duration;

use sims::vsphere::{SimOptions, Simulator};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with pyvmomi: set PYVMOMI_PYTHON and run with --ignored"]
async fn pyvmomi_lists_the_inventory_and_follows_updates() {
    let python = std::env::var("PYVMOMI_PYTHON").unwrap_or_else(|_| "python3".into());
    let sim = Simulator::start(SimOptions {
        hosts: 2,
        vms_per_host: 3,
        portgroups: 2,
        dvs_portgroups: 1,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let script = format!("{}/tests/vsphere_pyvmomi.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .arg(sim.addr().ip().to_string())
        .arg(sim.addr().port().to_string())
        .arg(sim.user())
        .arg(sim.password())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let vm = sim.vm_ids()[0].clone();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "READY" {
                sim.set_power(&vm, false).unwrap();
            }
            out.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the script finishes");
    let status = child.wait().await.unwrap();
    let text = out.join("\n");
    assert!(status.success(), "pyvmomi script failed:\n{text}");
    for expected in [
        "INVALID-LOGIN Cannot complete login due to an incorrect user name or password.",
        "API VirtualCenter 8.0.2.0",
        "HOSTS esx-01.sim.local esx-02.sim.local",
        "VM-NAMES 6",
        "PNICS vmnic0 vmnic1 vmnic2 vmnic3",
        "DVPG dvpg-200 vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec",
        "DVPG dvSwitch-DVUplinks vim.dvs.VmwareDistributedVirtualSwitch.TrunkVlanSpec",
        "COUNT vim.HostSystem 2",
        "COUNT vim.VirtualMachine 6",
        "COUNT vim.dvs.DistributedVirtualPortgroup 2",
        "HINT vmnic0 tor1 eth1",
        "READY",
        &format!("UPDATE modify {vm} runtime.powerState assign poweredOff"),
        "DONE",
    ] {
        assert!(out.iter().any(|l| l == expected), "missing `{expected}` in:\n{text}");
    }
    assert!(out.iter().any(|l| l.starts_with("PAGES ") && l != "PAGES 1"), "paged with a token:\n{text}");
}
