//! Instances sharing the work on PostgreSQL (ADR 0014) over real processes: up to three
//! `netfold run` with one config against a private PostgreSQL 15 cluster (`sims::postgres`), the
//! XenServer simulator in a process of its own and a private Open vSwitch carrying the switch.
//! Real time, real signals. The work is two leases, `hypervisor/xen217` and `switch/tor1`: an
//! instance alone takes both; once others run, it gives the switch up (one piece each at most).
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
const GRACE_SECS: u64 = 30;
const LEASE_TTL_SECS: u64 = 4;
const SWITCH_LEASE: &str = "switch/tor1";
const XEN_LEASE: &str = "hypervisor/xen217";
const TOOK_SWITCH: &str = "took the lease switch/tor1";
const TOOK_XEN: &str = "took the lease hypervisor/xen217";
const GAVE_UP: &str = "giving the lease up";

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
        self.process(name, name, url)
    }

    /// `netfold run` as instance `name`, its config and log named `file` (two processes may be
    /// given one instance name).
    fn process(&self, file: &str, name: &str, url: &str) -> Netfold {
        let config = self.dir.path().join(format!("{file}.toml"));
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
{xen}[[switch]]
name = "{SWITCH}"
kind = "ovs"
address = "{ovsdb}"
parking_vlan = {PARKING}
resync_secs = 2
"#,
                data = self.dir.path().join("unused-data").display(),
                pw = self.password_file.display(),
                xen = self.sim.xen_entry(XEN, "CLUSTER_XEN_PASSWORD"),
                ovsdb = self.lab.tcp_endpoint(),
            ),
        )
        .expect("write config");
        let stderr = self.dir.path().join(format!("{file}.log"));
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
                    words.len() == 5 && words[1] == "lease" && words[2] == SWITCH_LEASE && words[3] == "token",
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

    /// Polls `/healthz` until one of its reasons contains `needle`.
    async fn healthz_says(&self, base: &str, needle: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let (s, h) = self.healthz(base).await;
            let reasons: Vec<&str> = h["reasons"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            if reasons.iter().any(|r| r.contains(needle)) {
                assert_eq!(s, 503, "a reason is a 503: {h}");
                return;
            }
            assert!(Instant::now() < deadline, "/healthz never said `{needle}` within {STEP:?}: {h}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

    /// Waits until the instance at `base` shows `holder` holding `lease` (it reads the lease
    /// table every third of the TTL).
    async fn shows_holder(&self, base: &str, lease: &str, holder: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let (_, h) = self.healthz(base).await;
            let work = h["cluster"]["work"].as_array().cloned().unwrap_or_default();
            let by = work.iter().find(|w| w["lease"] == lease).and_then(|w| w["holder"].as_str().map(str::to_string));
            if by.as_deref() == Some(holder) {
                return;
            }
            assert!(Instant::now() < deadline, "{base} never showed {holder} holding {lease}: {h}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn events(&self, base: &str) -> Vec<Envelope> {
        let (s, body) = self.get(base, "/log?from=1").await;
        assert_eq!(s, 200, "{body}");
        body.lines().map(|l| replay::audit::from_json(l).expect("a /log line")).collect()
    }
}

/// The holder string an instance logged when it took `lease`.
fn holder(nf: &Netfold, lease: &str) -> String {
    let took = format!("took the lease {lease}");
    let log = nf.log();
    let line = log.lines().rev().find(|l| l.contains(&took)).unwrap_or_else(|| panic!("{took}:\n{log}"));
    line.split_whitespace().find_map(|w| w.strip_prefix("holder=")).expect("holder= field").to_string()
}

/// Waits until one of `instances` logs `needle`; returns its index.
async fn first_to(instances: &[&Netfold], needle: &str) -> usize {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(i) = instances.iter().position(|nf| nf.count(needle) > 0) {
            return i;
        }
        let logs: Vec<String> = instances.iter().map(|nf| nf.log()).collect();
        assert!(Instant::now() < deadline, "no instance logged `{needle}` within {STEP:?}:\n{}", logs.join("\n---\n"));
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

/// Waits until `a`, the only instance, has taken both leases and configured the switch. The
/// others start only after that: started together, any of them may take a lease first.
async fn alone(rig: &Rig, a: &mut Netfold) {
    a.wait_line(TOOK_XEN).await;
    a.wait_line(TOOK_SWITCH).await;
    rig.switch_is(&learnt_table(), "the first instance configures the switch").await;
}

/// `a`, alone, has taken both leases and configured the switch ([`alone`]); `others` were
/// started after that, and `a` gives the switch up to one of them. Returns the index in
/// `others` of the switch's new holder.
async fn share(a: &mut Netfold, others: &mut [&mut Netfold]) -> usize {
    for nf in others.iter_mut() {
        nf.http().await;
    }
    a.wait_line(GAVE_UP).await;
    let views: Vec<&Netfold> = others.iter().map(|nf| &**nf).collect();
    first_to(&views, TOOK_SWITCH).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_lease_holders_hands_their_work_over_within_the_ttl_and_the_grace_runs_on() {
    let mut rig = Rig::start("handover").await;
    let mut a = rig.instance("nf-a");
    alone(&rig, &mut a).await;
    let mut b = rig.instance("nf-b");
    let mut c = rig.instance("nf-c");
    let s = share(&mut a, &mut [&mut b, &mut c]).await;
    let (s_nf, mut third) = if s == 0 { (b, c) } else { (c, b) };
    let s_holder = holder(&s_nf, SWITCH_LEASE);
    let third_base = third.http().await;
    assert_eq!(third.count("took the lease "), 0, "the third instance holds nothing: one piece each at most");

    // Every instance serves the whole state and names who holds what.
    let a_holder = holder(&a, XEN_LEASE);
    rig.shows_holder(&third_base, XEN_LEASE, &a_holder).await;
    rig.shows_holder(&third_base, SWITCH_LEASE, &s_holder).await;
    let (status, h) = rig.healthz(&third_base).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["cluster"]["live_instances"], 3, "{h}");
    assert_eq!(h["cluster"]["fair_share"], 1, "{h}");
    let (status, state) = rig.get(&third_base, "/state").await;
    assert!(status == 200 && state.contains("Ethernet2/"), "an instance that holds nothing folds the log: {state}");
    let shown = netfold(&["status", "--agent", &third_base]);
    let said = text(&shown.stdout);
    assert!(shown.status.success() && said.contains(&format!("{SWITCH_LEASE:<28} held by {s_holder}")), "{said}");

    // The hypervisor goes away; its holder logs the loss and keeps the VLANs. Then the switch's
    // holder is killed: the third instance takes the switch, which keeps its VLANs meanwhile.
    rig.sim.kill9();
    a.wait_line(LOST).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s_log = s_nf.log();
    s_nf.kill9().await;
    let killed = Instant::now();
    third.wait_line(TOOK_SWITCH).await;
    let took_after = killed.elapsed();
    eprintln!("switch/tor1 taken over {took_after:?} after its holder's SIGKILL (TTL {LEASE_TTL_SECS} s)");
    assert!(
        took_after < Duration::from_secs(LEASE_TTL_SECS * 2 + 10),
        "the switch was taken over {took_after:?} after the kill (TTL {LEASE_TTL_SECS} s)"
    );
    assert_eq!(rig.trunks(), learnt_table(), "the VLANs stay through the handover, inside the grace");

    // Then the hypervisor's holder is killed too, inside the grace: the last instance takes the
    // hypervisor, and the grace that started at the Lost in the log runs on under it.
    a.kill9().await;
    third.wait_line(TOOK_XEN).await;
    let taken_ms = now_ms();
    third.wait_line(REMOVING).await;
    rig.switch_is(&empty_table(), "after the grace, under the last instance").await;
    let events = rig.events(&third_base).await;
    gapless(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(kinds, ["Connected", "Learnt", "Lost", "Expired"], "nothing lost or repeated across the handovers");
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
    let (status, verify) = rig.get(&third_base, "/verify").await;
    assert_eq!(status, 200, "verify on the shared log: {verify}");

    // The switch saw one writer at a time, the last of them the third instance.
    let writers = rig.writers();
    one_writer_at_a_time(&writers);
    let third_holder = holder(&third, SWITCH_LEASE);
    let last = writers.last().cloned().unwrap_or_default();
    assert_eq!(last.0, third_holder, "the removal was written by the last holder: {writers:?}\n{s_log}");
    assert!(writers.iter().any(|(h, _)| h.starts_with("nf-a/")), "nf-a configured the switch first: {writers:?}");
    let fence = rig.lab.vsctl(&["get", "Open_vSwitch", ".", "external_ids:netfold-fence"]).expect("ovs-vsctl get");
    assert_eq!(fence.trim(), format!("\"{}\"", last.1), "the switch holds the newest token and refuses older ones");
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_switch_holder_writes_nothing_once_its_lease_is_taken() {
    let mut rig = Rig::start("fencing").await;
    let mut a = rig.instance("nf-a");
    let a_base = a.http().await;
    alone(&rig, &mut a).await;
    let mut b = rig.instance("nf-b");
    share(&mut a, &mut [&mut b]).await;
    let b_holder = holder(&b, SWITCH_LEASE);

    // The switch's holder is paused past its lease: the other instance, alone then, takes the
    // switch. The hypervisor goes away for good, and the switch is unconfigured after the grace,
    // all while the paused instance still believes the VLANs are wanted.
    signal(b.pid(), "STOP");
    a.wait_line(TOOK_SWITCH).await;
    rig.sim.kill9();
    a.wait_line(LOST).await;
    a.wait_line(REMOVING).await;
    rig.switch_is(&empty_table(), "the new holder unconfigures after the grace").await;

    // Woken, the paused instance finds its lease gone and stops that work. Its reconciler may
    // act on what it knew (VLANs wanted, missing from the switch), but it writes nothing.
    signal(b.pid(), "CONT");
    b.wait_line("lost the lease").await;
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS)).await;
    let log = b.log();
    assert_eq!(rig.trunks(), empty_table(), "the paused instance put nothing back:\n{log}");
    let writers = rig.writers();
    one_writer_at_a_time(&writers);
    let a_switch = holder(&a, SWITCH_LEASE);
    assert_eq!(writers.last().map(|w| w.0.as_str()), Some(a_switch.as_str()), "{writers:?}\n{log}");
    assert!(writers.iter().all(|(h, _)| *h == a_switch || *h == b_holder), "{writers:?}");
    let events = rig.events(&a_base).await;
    gapless(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(kinds, ["Connected", "Learnt", "Lost", "Expired"], "nothing from the paused instance:\n{log}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_hypervisor_holder_appends_nothing_once_its_lease_is_taken() {
    let mut rig = Rig::start("append_fence").await;
    let mut a = rig.instance("nf-a");
    alone(&rig, &mut a).await;
    let mut b = rig.instance("nf-b");
    share(&mut a, &mut [&mut b]).await;
    let b_base = b.http().await;

    // The hypervisor's holder is paused past its lease: the other instance, alone then, takes
    // the hypervisor. The hypervisor then goes away; the new holder records the loss, while the
    // paused instance still holds a session it believes live.
    signal(a.pid(), "STOP");
    b.wait_line(TOOK_XEN).await;
    rig.sim.kill9();
    b.wait_line(LOST).await;

    // Woken inside the grace, the paused instance's adapter finds the hypervisor gone and reports
    // it. Whether its keeper stops the adapter first or PostgreSQL refuses the append, nothing of
    // it is recorded: one Lost, then the new holder's expiry after the grace.
    signal(a.pid(), "CONT");
    a.wait_line("lost the lease hypervisor/xen217").await;
    b.wait_line(REMOVING).await;
    rig.switch_is(&empty_table(), "unconfigured after the grace").await;
    let log = a.log();
    assert_eq!(a.count(LOST), 0, "the paused instance recorded no loss of its own:\n{log}");
    for refused in log.lines().filter(|l| l.contains("the event log failed while appending")) {
        assert!(refused.contains("is no longer held with token 1: the write was refused"), "{refused}");
    }
    let events = rig.events(&b_base).await;
    gapless(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(kinds, ["Connected", "Learnt", "Lost", "Expired"], "nothing from the paused instance:\n{log}");
    let (status, verify) = rig.get(&b_base, "/verify").await;
    assert_eq!(status, 200, "verify on the shared log: {verify}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_the_store_or_left_hanging_is_unhealthy_gives_its_work_up_and_takes_it_again() {
    let rig = Rig::start("unreachable").await;
    let mut a = rig.instance("nf-a");
    alone(&rig, &mut a).await;
    let pg = sims::postgres::Cluster::shared();
    let proxy = Proxy::start(format!("{}:{}", pg.host(), pg.port()).parse().expect("an address")).await;
    let mut b = rig.instance_at("nf-b", &format!("postgres://{}@{}/{}", pg.user(), proxy.addr(), rig.db));
    share(&mut a, &mut [&mut b]).await;
    let b_base = b.http().await;
    let h = rig.healthz_becomes(&b_base, 200, "the instance holding the switch").await;
    assert_eq!(h["cluster"]["holds"].as_array().map(Vec::len), Some(2), "presence and the switch: {h}");

    // Cut off from PostgreSQL, b cannot renew: /healthz says so, it stops the switch's work
    // when the lease runs out, and a takes the switch.
    proxy.set(Mode::Refuse).await;
    rig.healthz_becomes(&b_base, 503, "an instance cut off from the store").await;
    rig.healthz_says(&b_base, "the lease switch/tor1 (token 2) may be lost").await;
    rig.healthz_says(&b_base, "cannot read or take leases").await;
    b.wait_line("lost the lease switch/tor1").await;
    a.wait_line(TOOK_SWITCH).await;

    // Reachable again, b is well and takes a share again: a gives one piece up to it.
    proxy.set(Mode::Pass).await;
    let h = rig.healthz_becomes(&b_base, 200, "an instance that reaches the store again").await;
    assert_eq!(h["cluster"]["live_instances"], 2, "{h}");
    b.wait_lines("took the lease ", 2).await;
    rig.switch_is(&learnt_table(), "still configured").await;

    // A store that stops answering without refusing (a partition that drops packets): nothing
    // waits on it for ever. b says why within a TTL, loses what it held, and once the store
    // answers again it is well and takes a share again.
    let (lost, took) = (b.count("lost the lease "), b.count("took the lease "));
    proxy.set(Mode::Hang).await;
    rig.healthz_says(&b_base, "cannot read or take leases: reading the leases: PostgreSQL did not answer within").await;
    b.wait_lines("lost the lease ", lost + 1).await;
    proxy.set(Mode::Pass).await;
    rig.healthz_becomes(&b_base, 200, "an instance whose store answers again").await;
    b.wait_lines("took the lease ", took + 1).await;
    rig.switch_is(&learnt_table(), "still configured").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_an_instances_name_takes_no_work_and_says_why() {
    let rig = Rig::start("same_name").await;
    let mut a = rig.instance("nf-a");
    a.wait_line(TOOK_SWITCH).await;
    let mut twin = rig.process("nf-a-twin", "nf-a", &rig.url);
    let twin_base = twin.http().await;
    rig.healthz_says(&twin_base, "another process holds instance/nf-a: two instances run with the name nf-a").await;
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS)).await;
    assert_eq!(twin.count("took the lease "), 0, "the twin takes no work:\n{}", twin.log());
    assert_eq!(a.count(GAVE_UP), 0, "a twin is not counted as a live instance: nothing is given up to it");
    twin.stop().await;
    a.stop().await;
}
