//! Switch faults over real processes: the real `netfold` binary, the vCenter simulator (SOAP),
//! the eAPI switch simulator and a private Open vSwitch ([`sims::ovs_lab`]), with a fault
//! proxy ([`support::proxy`]) in front of each switch.
//!
//! - netfold is SIGKILLed after the eAPI switch applied an add and before its reply arrived; on
//!   restart the intent is settled by reading the switch and the VLAN is removed once nothing
//!   needs it. An operator VLAN configured before start is never removed.
//! - OVS's reply to a `mutate`, and the eAPI simulator's reply to an add, are held longer than
//!   `timeout_secs` (no crash): the same holds. The OVS switch is unreachable when netfold starts:
//!   netfold starts anyway, learns, reports the switch failing in `/metrics`, and converges once
//!   it answers.
//! - A hypervisor reports port names that are ranges, lists, or hold spaces or newlines: they are
//!   refused, nothing is sent for them, and `netfold log --switch` (also `--follow`) shows each
//!   refusal.
//! - A `memory` switch without `ports` is configured (ports made on first use).
//! - The fault proxy itself: pass, delay (all replies, or only those to matching requests), cut,
//!   hang, refuse.
//!
//! Needs Open vSwitch (`apt-get install -y openvswitch-switch`) and root, like tests/e2e_ovs.rs.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sims::eapi::Sim as EapiSim;
use sims::vsphere::Neighbour;
use support::netfold::{netfold, Netfold, STEP};
use support::proxy::{Mode, Proxy};

const SWITCH: &str = "tor1";
const PARKING: u16 = 4094;
/// An operator's VLAN, on the switch before netfold ever ran and never desired.
const OPERATOR: u16 = 999;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ports() -> Vec<String> {
    (1..=4).map(|n| format!("Ethernet1/{n}")).collect()
}

/// `netfold log --switch tor1 --json`, parsed.
fn switch_log(data: &str) -> Vec<Value> {
    let out = netfold(&["log", "--data-dir", data, "--switch", SWITCH, "--json"]);
    assert!(out.status.success(), "netfold log --switch failed: {}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn entries<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["kind"] == kind).collect()
}

/// Waits until `cond` holds, polling every 100 ms; `what` names it in the failure.
async fn until(what: &str, mut cond: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached within {STEP:?}\n{}", diag());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn vcenter() -> sims::vsphere::SimHandle {
    sims::vsphere::Simulator::start(sims::vsphere::SimOptions::lab(SWITCH, "Ethernet1/")).await.expect("vCenter sim")
}

fn hypervisor_toml(vc: &sims::vsphere::SimHandle) -> String {
    format!(
        r#"[[hypervisor]]
name = "vc-east"
kind = "vmware"
url = "{}"
allow_plaintext = true
user = "{}"
password = {{ password_env = "FAULTS_VC_PASSWORD" }}
"#,
        vc.url(),
        vc.user()
    )
}

fn write_config(dir: &Path, data: &str, body: &str) -> PathBuf {
    let config = dir.join("netfold.toml");
    std::fs::write(&config, format!("data_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{body}")).unwrap();
    config
}

fn eapi_sim() -> EapiSim {
    // Ethernet1/1 carries the operator's VLAN; Ethernet1/4 already carries 101, which the
    // hypervisor will want too: configured by the operator before netfold, so never netfold's.
    EapiSim::new("netfold", "eapi-pw")
        .with_trunk("Ethernet1/1", &[OPERATOR])
        .with_trunk("Ethernet1/2", &[])
        .with_trunk("Ethernet1/3", &[])
        .with_trunk("Ethernet1/4", &[101])
}

fn vlans(sim: &EapiSim, port: &str) -> BTreeSet<u16> {
    sim.trunk(port).unwrap_or_default().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_between_the_eapi_apply_and_its_reply_leaks_no_vlan_and_keeps_the_operators() {
    let sim = eapi_sim();
    let (sim_addr, _sim_task) = sim.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(sim_addr).await;
    // The switch carries out every add, but netfold never hears back.
    proxy.set_for(b"switchport trunk allowed vlan add", Mode::Delay(Duration::from_secs(600))).await;
    let vc = vcenter().await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data").to_str().unwrap().to_string();
    let config = write_config(
        dir.path(),
        &d,
        &format!(
            r#"{}
[[switch]]
name = "{SWITCH}"
kind = "eapi"
address = "http://{}"
allow_plaintext = true
user = "netfold"
password = {{ password_env = "FAULTS_EAPI_PASSWORD" }}
timeout_secs = 60
resync_secs = 2
"#,
            hypervisor_toml(&vc),
            proxy.addr()
        ),
    );
    let env = [("FAULTS_VC_PASSWORD", vc.password()), ("FAULTS_EAPI_PASSWORD", "eapi-pw".to_string())];

    let mut nf = Netfold::start(&config, dir.path().join("run1.log"), &env);
    nf.http().await;
    let diag = || format!("{:?}", ports().iter().map(|p| vlans(&sim, p)).collect::<Vec<_>>());
    until("the switch applied netfold's adds", || vlans(&sim, "Ethernet1/1").contains(&100), diag).await;
    let before: Vec<BTreeSet<u16>> = ports().iter().map(|p| vlans(&sim, p)).collect();
    let run1 = nf.kill9().await;
    assert!(!run1.contains("added VLAN"), "the reply must not have arrived before the kill:\n{run1}");

    let log = switch_log(&d);
    assert!(!entries(&log, "intent").is_empty(), "intents were durable before the send: {log:?}");
    assert!(entries(&log, "applied").is_empty(), "killed before any reply: {log:?}");

    // While netfold is down, the hypervisor stops needing VLAN 101 (its port group moves to 150).
    proxy.set(Mode::Pass).await;
    vc.set_portgroup_vlan("pg-101", 150).unwrap();
    let mut nf = Netfold::start(&config, dir.path().join("run2.log"), &env);
    nf.http().await;
    until(
        "101 removed where netfold put it, 150 added",
        || {
            ports().iter().all(|p| {
                let v = vlans(&sim, p);
                (p == "Ethernet1/4" || !v.contains(&101)) && v.contains(&150)
            })
        },
        diag,
    )
    .await;
    let run2 = nf.stop().await;
    assert!(run2.contains(&format!("{SWITCH} Ethernet1/1: removed VLAN 101 (nothing needs it any more)")), "{run2}");
    assert!(run2.contains("added VLAN 150 (vc-east: VM"), "one INFO line per change with its cause:\n{run2}");
    assert!(before[0].contains(&101), "101 was added by netfold on Ethernet1/1 before the kill: {before:?}");
    assert!(vlans(&sim, "Ethernet1/1").contains(&OPERATOR), "the operator's VLAN stays: {}", diag());
    assert!(vlans(&sim, "Ethernet1/4").contains(&101), "the operator's 101 on Ethernet1/4 stays: {}", diag());

    let log = switch_log(&d);
    let settled = entries(&log, "settled");
    assert!(!settled.is_empty(), "the unanswered intents were settled: {log:?}");
    assert!(settled.iter().all(|e| e["entry"]["Settled"]["present"] == true), "the adds had landed: {settled:?}");
    assert!(settled.iter().any(|e| e["text"].as_str().unwrap().contains("present, so netfold's")), "{settled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ovs_reply_slower_than_the_timeout_leaks_no_vlan_and_an_unreachable_switch_does_not_stop_netfold() {
    let lab =
        support::ovs::lab(ports(), |p| if p == "Ethernet1/1" { vec![OPERATOR, PARKING] } else { vec![PARKING] }).await;
    let ovsdb: std::net::SocketAddr = lab.tcp_endpoint().strip_prefix("tcp:").unwrap().parse().unwrap();
    let proxy = Proxy::start(ovsdb).await;
    proxy.set(Mode::Refuse).await; // the switch is unreachable when netfold starts
    let vc = vcenter().await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data").to_str().unwrap().to_string();
    let config = write_config(
        dir.path(),
        &d,
        &format!(
            r#"{}
[[switch]]
name = "{SWITCH}"
kind = "ovs"
address = "tcp:{}"
parking_vlan = {PARKING}
timeout_secs = 2
resync_secs = 2
"#,
            hypervisor_toml(&vc),
            proxy.addr()
        ),
    );
    let env = [("FAULTS_VC_PASSWORD", vc.password())];
    let mut nf = Netfold::start(&config, dir.path().join("run.log"), &env);
    let base = nf.http().await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move { http.get(url).send().await.expect("GET").text().await.expect("body") }
    };
    // Learning does not wait for the switch; the switch shows as failing.
    let deadline = Instant::now() + STEP;
    loop {
        let state = get("/state").await;
        let metrics = get("/metrics").await;
        let health = get("/healthz").await;
        if state.contains("\"Live\"")
            && metrics.contains(&format!("netfold_switch_failing{{switch=\"{SWITCH}\"}} 1"))
            && health.contains(&format!("switch {SWITCH}: reconcile failing since"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not learnt with the switch failing:\n{state}\n{metrics}\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!nf.log().contains("is unreachable at start-up"), "start-up does not give up on a switch");

    // The switch answers, but its replies to mutations arrive after the 2 s timeout.
    proxy.set_for(b"\"mutate\"", Mode::Delay(Duration::from_secs(5))).await;
    let trunks = |p: &str| -> BTreeSet<u16> { lab.trunks(p).unwrap_or_default().into_iter().collect() };
    until("OVS carried out the adds", || trunks("Ethernet1/1").contains(&101), || lab.diagnostics()).await;
    nf.wait_line("intents stay until the switch is read").await;

    proxy.set(Mode::Pass).await;
    vc.set_portgroup_vlan("pg-101", 150).unwrap();
    until(
        "101 removed, 150 added",
        || ports().iter().all(|p| !trunks(p).contains(&101) && trunks(p).contains(&150)),
        || format!("{:?}\n{}", ports().iter().map(|p| trunks(p)).collect::<Vec<_>>(), nf.log()),
    )
    .await;
    assert!(trunks("Ethernet1/1").contains(&OPERATOR), "the operator's VLAN stays");
    let deadline = Instant::now() + STEP;
    while !get("/metrics").await.contains(&format!("netfold_switch_failing{{switch=\"{SWITCH}\"}} 0"))
        || get("/healthz").await.contains(&format!("switch {SWITCH}:"))
    {
        assert!(Instant::now() < deadline, "the switch still shows failing:\n{}", get("/metrics").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nf.stop().await;
    let log = switch_log(&d);
    let settled = entries(&log, "settled");
    assert!(settled.iter().any(|e| e["entry"]["Settled"]["present"] == true), "{log:?}");
    tokio::task::spawn_blocking(move || drop(lab)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_port_names_from_a_hypervisor_are_refused_nothing_is_sent_and_the_refusal_is_logged() {
    let sim = EapiSim::new("netfold", "eapi-pw")
        .with_trunk("Ethernet1/1", &[])
        .with_trunk("Ethernet1/2", &[])
        .with_trunk("Ethernet1/3", &[])
        .with_trunk("Ethernet1/4", &[])
        .with_trunk("Ethernet1/9", &[]);
    let (sim_addr, _sim_task) = sim.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let vc = vcenter().await;
    let hosts = vc.host_ids();
    let hostile = [
        (&hosts[0], "vmnic0", "Ethernet1/1-4,Ethernet1/9"),
        (&hosts[0], "vmnic1", "Ethernet1/2 shutdown"),
        (&hosts[1], "vmnic0", "Ethernet1/3\ninterface Ethernet1/9"),
    ];
    for (host, nic, port) in hostile {
        vc.set_cdp(host, nic, Some(Neighbour { switch: SWITCH.into(), port: port.into() })).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data").to_str().unwrap().to_string();
    let config = write_config(
        dir.path(),
        &d,
        &format!(
            r#"{}
[[switch]]
name = "{SWITCH}"
kind = "eapi"
address = "http://{sim_addr}"
allow_plaintext = true
user = "netfold"
password = {{ password_env = "FAULTS_EAPI_PASSWORD" }}
resync_secs = 2
"#,
            hypervisor_toml(&vc)
        ),
    );
    let env = [("FAULTS_VC_PASSWORD", vc.password()), ("FAULTS_EAPI_PASSWORD", "eapi-pw".to_string())];
    let mut nf = Netfold::start(&config, dir.path().join("run.log"), &env);
    let base = nf.http().await;
    // The one well-named port is configured; that is how we know the cycle ran.
    until("Ethernet1/4 configured", || !vlans(&sim, "Ethernet1/4").is_empty(), || nf.log()).await;
    nf.wait_line("refused VLAN").await;
    // `--follow` reads the refusals from the running agent.
    let followed = dir.path().join("follow.out");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_netfold"))
        .args(["log", "--switch", SWITCH, "--follow", "--agent", &base, "--kind", "refused"])
        .stdout(std::fs::File::create(&followed).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("netfold log --follow");
    let read = || std::fs::read_to_string(&followed).unwrap_or_default();
    until("--follow prints the three refusals", || read().lines().count() >= 3, read).await;
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert!(read().lines().all(|l| l.contains("refused")), "{}", read());
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 503, "refused names are not well");
    let body = health.text().await.unwrap();
    assert!(
        body.contains("6 desired VLAN(s) are on ports whose names the switch refuses"),
        "3 names × VLANs 100 and 101: {body}"
    );
    assert!(body.contains("\"refused_names\":6"), "{body}");
    let run = nf.stop().await;

    for p in ["Ethernet1/1", "Ethernet1/2", "Ethernet1/3", "Ethernet1/9"] {
        assert!(vlans(&sim, p).is_empty(), "{p} was touched: {:?}", vlans(&sim, p));
    }
    let commands = sim.commands();
    for c in &commands {
        assert!(!c.contains(',') && !c.contains('\n') && !c.contains("shutdown"), "sent {c:?}");
        assert!(!c.starts_with("interface") || c == "interface Ethernet1/4", "sent {c:?}");
    }
    let log = switch_log(&d);
    let refused: Vec<&str> = entries(&log, "refused").iter().map(|e| e["text"].as_str().unwrap()).collect();
    for shown in
        [r#""Ethernet1/1-4,Ethernet1/9""#, r#""Ethernet1/2 shutdown""#, r#""Ethernet1/3\ninterface Ethernet1/9""#]
    {
        let line =
            refused.iter().find(|t| t.contains(shown)).unwrap_or_else(|| panic!("no refusal of {shown}: {refused:?}"));
        assert!(line.contains("nothing is sent") && line.contains("vc-east: VM"), "{line}");
    }
    assert!(refused.iter().any(|t| t.contains("range") || t.contains("`,`")), "{refused:?}");
    assert!(run.contains("refused VLAN"), "each refusal is logged once:\n{run}");
    // The text form too.
    let out = netfold(&["log", "--data-dir", &d, "--switch", SWITCH, "--kind", "refused"]);
    assert!(text(&out.stdout).lines().count() >= 3 && text(&out.stdout).contains("refused"), "{}", text(&out.stdout));
}

/// The leak as first reported: an eAPI reply held longer than `timeout_secs` (no crash). The add
/// landed; the intent is settled on the retry; the VLAN goes once unneeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_eapi_reply_slower_than_the_timeout_leaks_no_vlan() {
    let sim = eapi_sim();
    let (sim_addr, _sim_task) = sim.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(sim_addr).await;
    proxy.set_for(b"switchport trunk allowed vlan add", Mode::Delay(Duration::from_secs(4))).await;
    let vc = vcenter().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data").to_str().unwrap().to_string();
    let config = write_config(
        dir.path(),
        &d,
        &format!(
            r#"{}
[[switch]]
name = "{SWITCH}"
kind = "eapi"
address = "http://{}"
allow_plaintext = true
user = "netfold"
password = {{ password_env = "FAULTS_EAPI_PASSWORD" }}
timeout_secs = 1
resync_secs = 2
"#,
            hypervisor_toml(&vc),
            proxy.addr()
        ),
    );
    let env = [("FAULTS_VC_PASSWORD", vc.password()), ("FAULTS_EAPI_PASSWORD", "eapi-pw".to_string())];
    let mut nf = Netfold::start(&config, dir.path().join("run.log"), &env);
    nf.http().await;
    let diag = || format!("{:?}", ports().iter().map(|p| vlans(&sim, p)).collect::<Vec<_>>());
    until("the switch applied netfold's adds", || vlans(&sim, "Ethernet1/1").contains(&101), diag).await;
    nf.wait_line("intents stay until the switch is read").await;
    proxy.set(Mode::Pass).await;
    vc.set_portgroup_vlan("pg-101", 150).unwrap();
    until(
        "101 removed where netfold put it, 150 added",
        || {
            ports().iter().all(|p| {
                let v = vlans(&sim, p);
                (p == "Ethernet1/4" || !v.contains(&101)) && v.contains(&150)
            })
        },
        diag,
    )
    .await;
    nf.stop().await;
    assert!(vlans(&sim, "Ethernet1/1").contains(&OPERATOR), "the operator's VLAN stays: {}", diag());
    assert!(vlans(&sim, "Ethernet1/4").contains(&101), "the operator's 101 on Ethernet1/4 stays: {}", diag());
    let log = switch_log(&d);
    assert!(entries(&log, "settled").iter().any(|e| e["entry"]["Settled"]["present"] == true), "{log:?}");
}

/// The proxy does what its docs say (other fault tests rely on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_proxy_passes_delays_cuts_hangs_and_refuses() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that answers every read with the same bytes, doubled.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&[&buf[..n], &buf[..n]].concat()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(up_addr).await;
    let ask = |req: &'static [u8], within: Duration| {
        let addr = proxy.addr();
        async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return ("reset", Vec::new()); // reset before connect() even returned
            };
            if s.write_all(req).await.is_err() {
                return ("reset", Vec::new());
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let r = tokio::time::timeout(within, async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => return "closed",
                        Err(_) => return "reset",
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if got.len() >= 2 * req.len() {
                                return "complete";
                            }
                        }
                    }
                }
            })
            .await
            .unwrap_or("silent");
            (r, got)
        }
    };
    assert_eq!(ask(b"ping", Duration::from_secs(5)).await, ("complete", b"pingping".to_vec()));

    proxy.set(Mode::Delay(Duration::from_millis(800))).await;
    let t = Instant::now();
    assert_eq!(ask(b"ping", Duration::from_secs(5)).await.0, "complete");
    assert!(t.elapsed() >= Duration::from_millis(800), "delayed only {:?}", t.elapsed());

    // Delayed far past the wait: only a request without the needle can complete within it.
    proxy.set_for(b"slow", Mode::Delay(Duration::from_secs(120))).await;
    assert_eq!(ask(b"fast", Duration::from_secs(30)).await.0, "complete", "a request without the needle passes");

    proxy.set(Mode::Cut(3)).await;
    assert_eq!(ask(b"ping", Duration::from_secs(5)).await, ("closed", b"pin".to_vec()));

    proxy.set(Mode::Hang).await;
    let (r, got) = ask(b"ping", Duration::from_millis(800)).await;
    assert_eq!((r, got.len()), ("silent", 0), "hung: nothing forwarded, the connection kept open");

    proxy.set(Mode::Refuse).await;
    let (r, got) = ask(b"ping", Duration::from_secs(5)).await;
    assert_eq!((r, got.len()), ("reset", 0), "refused: the port is closed");
    assert_eq!(proxy.accepted(), 5, "one connection per request; none while refusing");
}

/// `kind = "memory"` without `ports`: ports come into being on first use, so netfold configures
/// them (and the audit says so) instead of failing every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_switch_without_ports_creates_them_on_first_use() {
    let vc = vcenter().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data").to_str().unwrap().to_string();
    let config = write_config(
        dir.path(),
        &d,
        &format!("{}\n[[switch]]\nname = \"{SWITCH}\"\nkind = \"memory\"\n", hypervisor_toml(&vc)),
    );
    let env = [("FAULTS_VC_PASSWORD", vc.password())];
    let mut nf = Netfold::start(&config, dir.path().join("run.log"), &env);
    nf.wait_line(&format!("{SWITCH} Ethernet1/1: added VLAN 100 (vc-east: VM")).await;
    let run = nf.stop().await;
    assert!(!run.contains("failed to add"), "{run}");
    let log = switch_log(&d);
    let applied = entries(&log, "applied").len();
    assert!(applied >= 8, "both VLANs on the four ports: {applied} applied\n{log:?}");
    assert!(entries(&log, "failed").is_empty(), "{log:?}");
}
