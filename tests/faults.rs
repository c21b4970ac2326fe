//! Loss and return as the operator manual says, under real faults: the real `netfold` binary,
//! the hypervisor simulators as processes of their own (`netfold sim … --control`), a TCP fault
//! proxy between them ([`support::proxy`]), and a private Open vSwitch carrying the switch
//! (ground truth for "which VLANs are on the port"). Real time, real signals; every wait is
//! bounded and generous, and what is asserted is semantics — lines, events, VLANs — never
//! latency beyond "within the liveness bound".
//!
//! Needs root and Open vSwitch (`openvswitch-switch`), like `e2e_ovs.rs`; a missing one fails.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine::{Change, Envelope, Event};
use serde_json::Value;
use sims::ovs_lab::Lab;
use support::netfold::{signal, Netfold, Sim, STEP};
use support::ovs::{self, xen_lab_empty as empty_table, xen_lab_learnt as learnt_table, xen_lab_ports as ports, Table};
use support::proxy::{Mode, Proxy};

const SWITCH: &str = "tor1";
const PARKING: u16 = 4094;
const XEN: &str = "xen217";
const LOST: &str = "Xen-Citrix:Lost connection to hypervisor xen217. Retrying...";
const BACK: &str = "Xen-Citrix:Reestablished connection with hypervisor xen217.";
const REMOVING: &str = "Xen-Citrix:Lost connection to hypervisor xen217. Removing learnt information.";
/// The liveness bound the rig configures (and `wait_secs` below it).
const LIVENESS_SECS: u64 = 5;

/// What a scenario varies.
struct Setup {
    grace_secs: u64,
    resync_secs: u64,
    /// The password netfold is given (default: the simulator's).
    password: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self { grace_secs: 20, resync_secs: 600, password: None }
    }
}

/// One scenario's world: OVS, the XenServer simulator process behind a proxy, netfold.
struct Rig {
    lab: Lab,
    sim: Sim,
    proxy: Proxy,
    nf: Option<Netfold>,
    base: String,
    config: PathBuf,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    runs: usize,
    http: reqwest::Client,
}

impl Rig {
    async fn start(setup: Setup) -> Rig {
        let lab = ovs::lab(ports(), |_| vec![PARKING]).await;
        let sim = Sim::start("xen", "tor1:Ethernet2/", "127.0.0.1:0");
        let upstream = sim.authority().parse().expect("simulator address");
        let proxy = Proxy::start(upstream).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("netfold.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[engine]
grace_secs = {grace}
[[hypervisor]]
name = "{XEN}"
kind = "xen"
url = "http://{proxy}"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "FAULTS_XEN_PASSWORD" }}
liveness_secs = {LIVENESS_SECS}
wait_secs = 2
connect_timeout_ms = 1000
backoff_initial_ms = 500
backoff_max_ms = 30000
fatal_retry_secs = 3
resync_secs = {resync}
max_body_bytes = 1048576
[[switch]]
name = "{SWITCH}"
kind = "ovs"
address = "{ovsdb}"
parking_vlan = {PARKING}
resync_secs = 2
"#,
                data = data.display(),
                grace = setup.grace_secs,
                proxy = proxy.addr(),
                user = sim.user,
                resync = setup.resync_secs,
                ovsdb = lab.tcp_endpoint(),
            ),
        )
        .expect("write config");
        let password = setup.password.map_or_else(|| sim.password.clone(), str::to_string);
        let mut rig = Rig {
            lab,
            sim,
            proxy,
            nf: None,
            base: String::new(),
            config,
            dir,
            env: vec![("FAULTS_XEN_PASSWORD", password)],
            runs: 0,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        };
        rig.run().await;
        rig
    }

    /// Starts (or restarts) netfold on the same data directory.
    async fn run(&mut self) {
        self.runs += 1;
        let stderr = self.dir.path().join(format!("netfold-{}.log", self.runs));
        let mut nf = Netfold::start(&self.config, stderr, &self.env);
        self.base = nf.http().await;
        self.nf = Some(nf);
    }

    fn nf(&mut self) -> &mut Netfold {
        self.nf.as_mut().expect("netfold running")
    }

    fn trunks(&self) -> Table {
        ovs::table(&self.lab, &ports(), PARKING)
    }

    /// Waits until OVS carries `want`.
    async fn switch_is(&self, want: &Table, what: &str) {
        ovs::becomes(&self.lab, &ports(), PARKING, want, what).await
    }

    /// Every event in the log, from the running agent's `/log`.
    async fn events(&self) -> Vec<Envelope> {
        let body = self
            .http
            .get(format!("{}/log?from=1", self.base))
            .send()
            .await
            .expect("GET /log")
            .text()
            .await
            .expect("/log body");
        body.lines().map(|l| replay::audit::from_json(l).expect("a /log line")).collect()
    }

    async fn kinds(&self) -> Vec<&'static str> {
        self.events().await.iter().map(|e| e.event.name()).collect()
    }

    async fn healthz(&self) -> (u16, Value) {
        let r = self.http.get(format!("{}/healthz", self.base)).send().await.expect("GET /healthz");
        (r.status().as_u16(), r.json().await.expect("/healthz JSON"))
    }

    /// Waits until `/healthz` answers `status`; returns its body.
    async fn health_becomes(&self, status: u16) -> Value {
        self.health_until(status, "").await
    }

    /// Waits until `/healthz` answers `status` with `needle` among its reasons.
    async fn health_until(&self, status: u16, needle: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let (s, body) = self.healthz().await;
            if s == status && body["reasons"].to_string().contains(needle) {
                return body;
            }
            assert!(Instant::now() < deadline, "/healthz stayed {s}, expected {status} naming `{needle}`: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts with the XenServer learnt and its VLANs on the switch.
    async fn learnt(&mut self) {
        self.nf().wait_line("XenAPI inventory read").await;
        self.switch_is(&learnt_table(), "after the first learn").await;
        assert_eq!(self.kinds().await, ["Connected", "Learnt"]);
    }

    /// Asserts OVS keeps `want` for `d` (sampled), then returns.
    async fn switch_stays(&self, want: &Table, d: Duration, what: &str) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            assert_eq!(&self.trunks(), want, "{what}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Removals among the learnt changes of `events`.
fn removals(events: &[Envelope]) -> usize {
    events
        .iter()
        .map(|e| match &e.event {
            Event::Learnt { changes } => changes.iter().filter(|c| matches!(c, Change::Remove(_))).count(),
            _ => 0,
        })
        .sum()
}

async fn down_while_netfold_was_down(sigkill: bool) {
    let mut rig = Rig::start(Setup::default()).await;
    rig.learnt().await;
    let nf = rig.nf.take().expect("running");
    if sigkill {
        nf.kill9().await;
    } else {
        nf.stop().await;
    }
    rig.sim.kill9();
    let down = Instant::now();
    rig.run().await;
    // The log shows the pool as live: the first failed attempt reports the loss.
    rig.nf().wait_line(LOST).await;
    assert_eq!(rig.nf().count(LOST), 1, "{}", rig.nf().log());
    assert_eq!(rig.kinds().await, ["Connected", "Learnt", "Lost"]);
    let body = rig.health_becomes(503).await;
    assert!(body["reasons"].to_string().contains("xen217"), "{body}");
    // Kept through the grace period, removed after it.
    rig.switch_stays(&learnt_table(), Duration::from_secs(5), "facts are kept while lost").await;
    rig.nf().wait_line(REMOVING).await;
    assert!(down.elapsed() >= Duration::from_secs(20), "expired before the grace ran out: {:?}", down.elapsed());
    rig.switch_is(&empty_table(), "after expiry").await;
    assert_eq!(rig.kinds().await, ["Connected", "Learnt", "Lost", "Expired"]);
    rig.nf.take().expect("running").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_while_netfold_was_stopped_is_lost_at_start_and_expires_after_grace() {
    down_while_netfold_was_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_while_netfold_was_killed_is_lost_at_start_and_expires_after_grace() {
    down_while_netfold_was_down(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_five_seconds_before_the_grace_ends_keeps_everything() {
    let mut rig = Rig::start(Setup::default()).await;
    rig.learnt().await;
    rig.proxy.set(Mode::Refuse).await;
    rig.nf().wait_line(LOST).await;
    rig.switch_stays(&learnt_table(), Duration::from_secs(14), "while lost within grace").await;
    rig.proxy.set(Mode::Pass).await;
    rig.nf().wait_line(BACK).await;
    assert_eq!(rig.kinds().await, ["Connected", "Learnt", "Lost", "Reestablished"]);
    assert_eq!(rig.nf().count(REMOVING), 0);
    assert_eq!(rig.trunks(), learnt_table(), "no switch change");
    rig.health_becomes(200).await;
    rig.nf.take().expect("running").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_peer_is_lost_within_the_liveness_bound_and_expires_at_last_contact_plus_grace() {
    let mut rig = Rig::start(Setup::default()).await;
    rig.learnt().await;
    let hung = Instant::now();
    rig.proxy.set(Mode::Hang).await;
    let took = rig.nf().wait_line(LOST).await;
    // Liveness 5 s, plus one poll (2 s) and margin for a loaded machine.
    assert!(took <= Duration::from_secs(LIVENESS_SECS + 8), "hung peer noticed after {took:?}");
    let events = rig.events().await;
    let lost = events.iter().find(|e| e.event.name() == "Lost").expect("Lost");
    let Event::Lost { since, .. } = lost.event else { unreachable!() };
    assert!(since < lost.at, "the loss is dated at the last contact ({since}), before it was noticed ({})", lost.at);
    assert!(lost.at - since >= 2_000, "silence before the loss: {} ms", lost.at - since);
    rig.nf().wait_line(REMOVING).await;
    let hung_for = hung.elapsed();
    let events = rig.events().await;
    let expired = events.iter().find(|e| e.event == Event::Expired).expect("Expired");
    // At last contact + grace, plus at most the last attempt's window.
    let after = expired.at - since;
    assert!((20_000..20_000 + 12_000).contains(&after), "expired {after} ms after the last contact");
    assert!(hung_for < Duration::from_secs(20 + 12), "expired {hung_for:?} after the hang began");
    rig.switch_is(&empty_table(), "after expiry").await;
    rig.proxy.set(Mode::Pass).await;
    rig.nf().wait_line("XenAPI inventory read").await;
    rig.switch_is(&learnt_table(), "learnt afresh").await;
    rig.nf.take().expect("running").stop().await;
}

/// A peer that stays reachable but answers badly for a while: nothing is removed, it is
/// reestablished once healthy. `fault`: the simulator fault; `expect`: a log fragment it causes.
async fn misbehaves_then_recovers(fault: &str, expect: &str) {
    let mut rig = Rig::start(Setup { resync_secs: 3, ..Setup::default() }).await;
    rig.learnt().await;
    rig.sim.fault(fault).await;
    rig.nf().wait_line(LOST).await;
    rig.nf().wait_line(expect).await;
    rig.switch_stays(&learnt_table(), Duration::from_secs(4), "while the peer misbehaves").await;
    let body = rig.health_becomes(503).await;
    assert!(body["reasons"].to_string().contains("xen217"), "{body}");
    rig.sim.fault("none").await;
    rig.nf().wait_line(BACK).await;
    let events = rig.events().await;
    assert_eq!(
        removals(&events),
        0,
        "nothing removed: {:?}",
        events.iter().map(|e| e.event.name()).collect::<Vec<_>>()
    );
    assert!(!events.iter().any(|e| e.event == Event::Expired));
    assert_eq!(rig.trunks(), learnt_table());
    rig.health_becomes(200).await;
    rig.nf.take().expect("running").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hollow_inventory_is_a_loss_and_a_healthy_reread_reestablishes_with_nothing_removed() {
    misbehaves_then_recovers("hollow", "inventory came back empty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_table_is_a_failed_read_never_a_deletion() {
    misbehaves_then_recovers("garbage", "the record is not a struct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reply_is_retried_and_recovers() {
    misbehaves_then_recovers("oversize", "byte limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_in_health_and_recovers_once_right() {
    let mut rig = Rig::start(Setup { password: Some("not-yet-right"), ..Setup::default() }).await;
    // The first 503 may still say "connecting"; the refused login follows.
    let body = rig.health_until(503, "SESSION_AUTHENTICATION_FAILED").await;
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("SESSION_AUTHENTICATION_FAILED") && reasons.contains("failing"), "{body}");
    assert!(!body.to_string().contains("not-yet-right"), "the password never shows: {body}");
    rig.nf().wait_line("retrying soon cannot fix it").await;
    rig.sim.set_password("not-yet-right").await;
    rig.nf().wait_line("XenAPI inventory read").await;
    rig.switch_is(&learnt_table(), "learnt once the password is right").await;
    let body = rig.health_becomes(200).await;
    assert_eq!(body["status"], "ok");
    assert!(!rig.nf().log().contains("not-yet-right"), "the password never reaches the log");
    rig.nf.take().expect("running").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_flaps_within_grace_change_nothing_on_the_switch() {
    let mut rig = Rig::start(Setup::default()).await;
    rig.learnt().await;
    for flap in 1..=10 {
        rig.proxy.set(Mode::Refuse).await;
        rig.nf().wait_lines(LOST, flap).await;
        rig.proxy.set(Mode::Pass).await;
        rig.nf().wait_lines(BACK, flap).await;
        assert_eq!(rig.trunks(), learnt_table(), "flap {flap}");
    }
    let kinds = rig.kinds().await;
    assert_eq!(kinds.iter().filter(|k| **k == "Lost").count(), 10);
    assert_eq!(kinds.iter().filter(|k| **k == "Reestablished").count(), 10);
    assert!(!kinds.contains(&"Expired"));
    assert_eq!(removals(&rig.events().await), 0);
    rig.nf.take().expect("running").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_storm_is_one_login_per_backoff_step_each_logged_out() {
    let mut rig = Rig::start(Setup::default()).await;
    rig.learnt().await;
    let before = rig.sim.counts().await;
    rig.sim.fault("fail-follow").await;
    let watch = Duration::from_secs(20);
    tokio::time::sleep(watch).await;
    let after = rig.sim.counts().await;
    let logins = after["logins"].as_u64().unwrap() - before["logins"].as_u64().unwrap();
    let logouts = after["logouts"].as_u64().unwrap() - before["logouts"].as_u64().unwrap();
    // Backoff 0.5 s doubling (jittered down to half, never more than grace/10 = 2 s apart): at most
    // ~1 login a second, far from a zero-delay loop; every abandoned session logged out (the
    // current one may be open).
    assert!((2..=watch.as_secs() + 2).contains(&logins), "{logins} logins in {watch:?}");
    assert!(logouts + 1 >= logins, "{logins} logins but {logouts} logouts");
    rig.sim.fault("none").await;
    rig.switch_stays(&learnt_table(), Duration::from_secs(2), "a storm within grace removes nothing").await;
    assert_eq!(removals(&rig.events().await), 0);
    rig.nf.take().expect("running").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_never_learnt_and_unreachable_does_not_stop_start_up() {
    let mut rig = Rig::start(Setup::default()).await;
    rig.learnt().await;
    rig.nf.take().expect("running").stop().await;
    // A fresh data directory: netfold has never learnt from this pool, and it is down.
    std::fs::remove_dir_all(rig.dir.path().join("data")).expect("remove data");
    rig.proxy.set(Mode::Refuse).await;
    rig.run().await;
    let body = rig.health_until(503, "xen217 (Xen-Citrix): adapter retrying").await;
    assert_eq!(body["status"], "degraded");
    rig.proxy.set(Mode::Pass).await;
    rig.nf().wait_line("XenAPI inventory read").await;
    rig.health_becomes(200).await;
    assert_eq!(rig.kinds().await, ["Connected", "Learnt"]);
    // SIGSTOP/SIGCONT of the simulator: a hung peer from the process side, then back.
    signal(rig.sim.pid(), "STOP");
    rig.nf().wait_line(LOST).await;
    signal(rig.sim.pid(), "CONT");
    rig.nf().wait_line(BACK).await;
    assert_eq!(removals(&rig.events().await), 0);
    rig.nf.take().expect("running").stop().await;
}
