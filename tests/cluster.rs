//! Active/standby on PostgreSQL (ADR 0012) over real processes: three `netfold run` with one
//! config against a private PostgreSQL 15 cluster (`sims::postgres`), the XenServer simulator in
//! a process of its own and a private Open vSwitch carrying the switch. Real time, real signals.
//!
//! Who wrote the switch is recorded by the switch itself: every transaction netfold sends names
//! its instance and lease token in an OVSDB `comment`, which ovsdb-server keeps in its database
//! log (`ovsdb-tool show-log`). "Never two writers" is read from there, not from netfold.
//!
//! Needs root, Open vSwitch and PostgreSQL's server binaries, like `faults.rs` and
//! `postgres_store.rs`; a missing one fails.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::{Envelope, Event};
use serde_json::Value;
use sims::ovs_lab::Lab;
use support::netfold::{netfold, signal, text, Netfold, Sim, STEP};
use support::ovs::{self, xen_lab_empty as empty_table, xen_lab_learnt as learnt_table, xen_lab_ports as ports, Table};
use support::proxy::{Mode, Proxy};

const SWITCH: &str = "tor1";
const PARKING: u16 = 4094;
const XEN: &str = "xen217";
const LOST: &str = "Xen-Citrix:Lost connection to hypervisor xen217. Retrying...";
const REMOVING: &str = "Xen-Citrix:Lost connection to hypervisor xen217. Removing learnt information.";
const GRACE_SECS: u64 = 20;
const LEASE_TTL_SECS: u64 = 4;
const TOOK: &str = "took the active lease";
const STANDBY: &str = "standby: another instance is active";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// OVS, the simulator, one database; instances started by name.
struct Rig {
    lab: Lab,
    sim: Sim,
    dir: tempfile::TempDir,
    db: String,
    url: String,
    password_file: PathBuf,
    http: reqwest::Client,
}

impl Rig {
    async fn start(db: &str) -> Rig {
        let lab = ovs::lab(ports(), |_| vec![PARKING]).await;
        let cluster = sims::postgres::Cluster::shared();
        let db = cluster.database(db).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("pg.pw");
        std::fs::write(&password_file, format!("{}\n", cluster.password())).expect("password file");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let sim = Sim::start("xen", "tor1:Ethernet2/", "127.0.0.1:0");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Rig { lab, sim, dir, url: cluster.url(&db), db, password_file, http }
    }

    /// `netfold run` as instance `name`: the same config as every other instance but for the
    /// name.
    fn instance(&self, name: &str) -> Netfold {
        self.instance_at(name, &self.url)
    }

    /// [`Rig::instance`] reaching PostgreSQL at `url` (through a proxy).
    fn instance_at(&self, name: &str, url: &str) -> Netfold {
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[engine]
grace_secs = {GRACE_SECS}
[store]
kind = "postgres"
url = "{url}"
password_file = "{pw}"
[cluster]
instance = "{name}"
lease_ttl_secs = {LEASE_TTL_SECS}
[[hypervisor]]
name = "{XEN}"
kind = "xen"
url = "{sim}"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "CLUSTER_XEN_PASSWORD" }}
liveness_secs = 5
wait_secs = 2
connect_timeout_ms = 1000
backoff_initial_ms = 500
backoff_max_ms = 2000
resync_secs = 600
[[switch]]
name = "{SWITCH}"
kind = "ovs"
address = "{ovsdb}"
parking_vlan = {PARKING}
resync_secs = 2
"#,
                data = self.dir.path().join("unused-data").display(),
                pw = self.password_file.display(),
                sim = self.sim.url,
                user = self.sim.user,
                ovsdb = self.lab.tcp_endpoint(),
            ),
        )
        .expect("write config");
        let stderr = self.dir.path().join(format!("{name}.log"));
        Netfold::start(&config, stderr, &[("CLUSTER_XEN_PASSWORD", self.sim.password.clone())])
    }

    fn trunks(&self) -> Table {
        ovs::table(&self.lab, &ports(), PARKING)
    }

    async fn switch_is(&self, want: &Table, what: &str) {
        ovs::becomes(&self.lab, &ports(), PARKING, want, what).await
    }

    /// Every switch-changing transaction in ovsdb-server's database log, in order: (holder,
    /// token) from the comment netfold put in it.
    fn writers(&self) -> Vec<(String, u64)> {
        let db = self.lab.dir().join("conf.db");
        let out = std::process::Command::new("ovsdb-tool").arg("show-log").arg(&db).output().expect("ovsdb-tool");
        assert!(out.status.success(), "ovsdb-tool show-log: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.split("\"netfold ").nth(1))
            .map(|rest| {
                let words: Vec<&str> = rest.trim_end_matches('"').split_whitespace().collect();
                assert!(
                    words.len() == 5 && words[1] == "lease" && words[2] == "netfold/active" && words[3] == "token",
                    "a writer comment: {rest}"
                );
                (words[0].to_string(), words[4].parse().expect("token"))
            })
            .collect()
    }

    /// Every instance's log, for a failure message.
    fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|x| x == "log"));
        names.sort();
        names
            .iter()
            .map(|p| format!("--- {}\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default()))
            .collect()
    }

    async fn get(&self, base: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {base}{path}: {e}\n{}", self.logs()));
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn healthz(&self, base: &str) -> (u16, Value) {
        let (s, body) = self.get(base, "/healthz").await;
        (s, serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz JSON: {e}: {body}")))
    }

    /// Polls `/healthz` until it answers `status`; returns that body.
    async fn healthz_becomes(&self, base: &str, status: u16, what: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let (s, h) = self.healthz(base).await;
            if s == status {
                return h;
            }
            assert!(Instant::now() < deadline, "{what}: /healthz still {s} after {STEP:?}: {h}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn events(&self, base: &str) -> Vec<Envelope> {
        let (s, body) = self.get(base, "/log?from=1").await;
        assert_eq!(s, 200, "{body}");
        body.lines().map(|l| replay::audit::from_json(l).expect("a /log line")).collect()
    }
}

/// The `http=` address a log line with `needle` names.
async fn address(nf: &mut Netfold, needle: &str) -> String {
    nf.wait_line(needle).await;
    let log = nf.log();
    let line = log.lines().find(|l| l.contains(needle)).expect("the line");
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect("http= field");
    format!("http://{addr}")
}

/// The holder name an instance logged when it took the lease.
fn holder(nf: &Netfold) -> String {
    let log = nf.log();
    let line = log.lines().find(|l| l.contains(TOOK)).expect("took the lease");
    line.split_whitespace().find_map(|w| w.strip_prefix("holder=")).expect("holder= field").to_string()
}

/// Waits until one of `instances` logs that it took the lease; returns its index.
async fn taken_over(instances: &[&Netfold]) -> usize {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(i) = instances.iter().position(|nf| nf.count(TOOK) > 0) {
            return i;
        }
        let logs: Vec<String> = instances.iter().map(|nf| nf.log()).collect();
        assert!(Instant::now() < deadline, "no standby took the lease within {STEP:?}:\n{}", logs.join("\n---\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The writers in order never go back to an older token, and each token has one holder.
fn one_writer_at_a_time(writers: &[(String, u64)]) {
    let mut by_token: BTreeMap<u64, &str> = BTreeMap::new();
    for pair in writers.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "a write under token {} after one under token {}: {writers:?}",
            pair[1].1,
            pair[0].1
        );
    }
    for (holder, token) in writers {
        let first = by_token.entry(*token).or_insert(holder);
        assert_eq!(*first, holder, "token {token} written by two holders: {writers:?}");
    }
}

fn gapless(events: &[Envelope]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, want, "the shared log is gapless and has no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_active_instance_hands_over_within_the_lease_and_the_grace_runs_on() {
    let mut rig = Rig::start("handover").await;
    let mut a = rig.instance("nf-a");
    a.wait_line(TOOK).await;
    let a_base = a.http().await;
    let mut b = rig.instance("nf-b");
    let mut c = rig.instance("nf-c");
    let b_base = address(&mut b, "netfold standby").await;
    b.wait_line(STANDBY).await;
    c.wait_line(STANDBY).await;
    rig.switch_is(&learnt_table(), "the active instance configures the switch").await;

    let (s, h) = rig.healthz(&a_base).await;
    assert_eq!((s, &h["cluster"]["role"], &h["cluster"]["token"]), (200, &"active".into(), &1.into()), "{h}");
    let (s, h) = rig.healthz(&b_base).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("standby")), "{h}");
    let active = h["cluster"]["holder"].as_str().unwrap_or_default();
    assert!(active.starts_with("nf-a/"), "the standby names the active instance: {h}");
    let (s, body) = rig.get(&b_base, "/state").await;
    assert!(s == 503 && body.contains("nf-a/"), "a standby sends the audit to the active instance: {s} {body}");
    let status = netfold(&["status", "--agent", &b_base]);
    let said = text(&status.stderr);
    assert!(
        !status.status.success() && said.contains("is a standby") && said.contains(active),
        "`netfold status` asked of a standby fails naming the active instance: {said}"
    );
    let a_holder = holder(&a);

    // The hypervisor goes away; the active instance logs the loss and keeps the VLANs. Then the
    // active instance is killed well inside the grace.
    rig.sim.kill9();
    a.wait_line(LOST).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.kill9().await;
    let killed = Instant::now();

    let standbys = [&b, &c];
    let winner = taken_over(&standbys).await;
    let took_after = killed.elapsed();
    let taken_ms = now_ms();
    assert!(
        took_after < Duration::from_secs(LEASE_TTL_SECS * 2 + 10),
        "a standby took over {took_after:?} after the kill (TTL {LEASE_TTL_SECS} s)"
    );
    let (mut new, mut other) = if winner == 0 { (b, c) } else { (c, b) };
    let new_base = new.http().await;
    assert_eq!(other.count(TOOK), 0, "one instance takes the lease");
    let (_, h) = rig.healthz(&new_base).await;
    assert_eq!(h["cluster"]["token"], 2, "{h}");

    // The grace started at the Lost in the log, before the handover: it runs on, and the new
    // holder expires the hypervisor and unconfigures the VLANs.
    new.wait_line(REMOVING).await;
    rig.switch_is(&empty_table(), "after the grace, under the new holder").await;
    let events = rig.events(&new_base).await;
    gapless(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(kinds, ["Connected", "Learnt", "Lost", "Expired"], "nothing lost or repeated across the handover");
    // The grace counts from the last answer (`since`), as the Lost record says.
    let lost = events
        .iter()
        .find_map(|e| match e.event {
            Event::Lost { since, .. } => Some(since),
            _ => None,
        })
        .expect("Lost");
    let expired = events.iter().find(|e| matches!(e.event, Event::Expired)).expect("Expired").at;
    assert!(expired >= lost + GRACE_SECS * 1000, "expired {} ms after the last answer", expired - lost);
    assert!(
        expired < taken_ms + GRACE_SECS * 1000,
        "the grace ran from the loss ({lost}), not from the takeover ({taken_ms}): expired at {expired}"
    );
    let (s, verify) = rig.get(&new_base, "/verify").await;
    assert_eq!(s, 200, "verify on the shared log: {verify}");

    let writers = rig.writers();
    one_writer_at_a_time(&writers);
    let new_holder = holder(&new);
    assert!(writers.contains(&(a_holder.clone(), 1)), "nf-a wrote under token 1: {writers:?}");
    assert!(writers.contains(&(new_holder.clone(), 2)), "{new_holder} wrote under token 2: {writers:?}");
    assert!(writers.iter().all(|(h, _)| *h == a_holder || *h == new_holder), "{writers:?}");
    let fence = rig.lab.vsctl(&["get", "Open_vSwitch", ".", "external_ids:netfold-fence"]).expect("ovs-vsctl get");
    assert_eq!(fence.trim(), "\"2\"", "the switch itself holds the new token and refuses token 1");

    // A clean stop gives the lease up at once: the last standby takes it without waiting out
    // the TTL.
    new.stop().await;
    other.wait_line(TOOK).await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_instance_cannot_append_or_write_the_switch_once_its_lease_is_taken() {
    let mut rig = Rig::start("fencing").await;
    let mut a = rig.instance("nf-a");
    a.wait_line(TOOK).await;
    a.http().await;
    rig.switch_is(&learnt_table(), "the active instance configures the switch").await;
    let mut b = rig.instance("nf-b");
    b.wait_line(STANDBY).await;
    let a_holder = holder(&a);

    // Paused past its lease: the standby takes over. The hypervisor then goes away for good,
    // and the new holder expires it and unconfigures its VLANs, all while the paused instance
    // still believes they are wanted.
    signal(a.pid(), "STOP");
    b.wait_line(TOOK).await;
    let b_base = b.http().await;
    rig.sim.kill9();
    b.wait_line(LOST).await;
    b.wait_line(REMOVING).await;
    rig.switch_is(&empty_table(), "the new holder unconfigures after the grace").await;

    // Woken, the old holder finds its lease gone and stops. Its adapter and its reconciler may
    // act on what it knew (the hypervisor gone, VLANs missing from the switch), but it appends
    // nothing and writes nothing.
    signal(a.pid(), "CONT");
    let status = a.exit().await;
    let log = a.log();
    assert!(!status.success(), "losing the lease is an error exit: {status}\n{log}");
    assert!(log.contains("lost the active lease"), "{log}");
    // Whether its adapter gets to report the loss before the shutdown drops it is a race; when
    // it does, PostgreSQL refuses the append (the log below has no second Lost either way).
    for refused in log.lines().filter(|l| l.contains("the event log failed while appending")) {
        assert!(refused.contains("is no longer held with token 1: the write was refused"), "{refused}");
    }
    assert_eq!(rig.trunks(), empty_table(), "the paused instance put nothing back:\n{log}");
    let writers = rig.writers();
    one_writer_at_a_time(&writers);
    assert!(writers.iter().any(|(h, t)| *h == a_holder && *t == 1), "{writers:?}");
    assert!(writers.iter().any(|(h, t)| *h == holder(&b) && *t == 2), "{writers:?}");
    let events = rig.events(&b_base).await;
    gapless(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(kinds, ["Connected", "Learnt", "Lost", "Expired"], "no second Lost from the paused instance:\n{log}");
    let (s, h) = rig.healthz(&b_base).await;
    assert_eq!((s, &h["cluster"]["token"]), (503, &2.into()), "degraded (the hypervisor is gone), token 2: {h}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_cannot_read_the_lease_is_unhealthy_until_it_can_again() {
    let rig = Rig::start("unreadable").await;
    let mut a = rig.instance("nf-a");
    a.wait_line(TOOK).await;
    let pg = sims::postgres::Cluster::shared();
    let proxy = Proxy::start(format!("{}:{}", pg.host(), pg.port()).parse().expect("an address")).await;
    let mut b = rig.instance_at("nf-b", &format!("postgres://{}@{}/{}", pg.user(), proxy.addr(), rig.db));
    let b_base = address(&mut b, "netfold standby").await;
    b.wait_line(STANDBY).await;
    let (s, h) = rig.healthz(&b_base).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("standby")), "{h}");

    // Cut off from PostgreSQL, the standby could not take over: its /healthz says so.
    proxy.set(Mode::Refuse).await;
    let h = rig.healthz_becomes(&b_base, 503, "a standby cut off from the store").await;
    let reasons = h["reasons"].to_string();
    assert!(reasons.contains("the lease netfold/active cannot be read"), "the reason names the lease: {h}");
    assert_eq!(h["cluster"]["role"], "standby", "{h}");

    // Reachable again, it is a ready standby once more, and still takes over.
    proxy.set(Mode::Pass).await;
    let h = rig.healthz_becomes(&b_base, 200, "a standby that reaches the store again").await;
    assert!(h["cluster"]["holder"].as_str().is_some_and(|by| by.starts_with("nf-a/")), "{h}");
    a.stop().await;
    b.wait_line(TOOK).await;
    b.stop().await;
}
