//! netfold on PostgreSQL as an operator moves to it (ADR 0008), against a private cluster
//! (`sims::postgres`; Debian's `postgresql-15`, the test fails loudly without it): the demo's
//! history in a data directory is copied with `netfold store copy` (verified by chain hash; a
//! second copy into the same database is refused), then `netfold run` with
//! `[store] kind = "postgres"` folds that history from PostgreSQL and serves it; the audit
//! commands given that config read the database and answer as from the directory; `config check`
//! refuses a password file others can read and a password in the url; over TLS the server's
//! certificate is verified (`--ca-file` trusts it, the system roots alone do not). A database
//! that stops answering (through a TCP proxy that holds the bytes) holds events back: nothing is
//! applied, `/healthz` says an append is unanswered, the keeper goes on with its rounds, and
//! everything lands once it answers.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::netfold::{netfold, Netfold, Sim, STEP};
use support::proxy::{Mode, Proxy};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn password_file(dir: &Path, mode: u32) -> std::path::PathBuf {
    let p = dir.join(format!("pg-{mode:o}.pw"));
    std::fs::write(&p, format!("{}\n", sims::postgres::Cluster::shared().password())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn config(dir: &Path, url: &str, pw: &Path) -> std::path::PathBuf {
    config_with(dir, url, pw, "")
}

/// [`config`], then `more` (TOML) after it.
fn config_with(dir: &Path, url: &str, pw: &Path, more: &str) -> std::path::PathBuf {
    let path = dir.join("netfold.toml");
    let text = format!(
        r#"data_dir = "{data}"

[http]
listen = "127.0.0.1:0"

[store]
kind = "postgres"
url = "{url}"
password_file = "{pw}"

[[switch]]
name = "tor1"
kind = "memory"
{more}"#,
        data = dir.join("unused-data").display(),
        pw = pw.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Everything netfold keeps in a database, counted: what a reader must leave as it was.
const WRITTEN: &str = "SELECT (SELECT count(*) FROM netfold_records), (SELECT count(*) FROM netfold_snapshots), \
     (SELECT count(*) FROM netfold_checkpoints), (SELECT count(*) FROM netfold_tables), \
     (SELECT string_agg(name || ':' || head, ',' ORDER BY name) FROM netfold_logs)";

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: netfold\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn a_demo_history_copied_to_postgres_is_what_run_serves_from_it() {
    let cluster = sims::postgres::Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let d = data.to_str().unwrap();
    let demo = netfold(&["demo", "--data-dir", d]);
    assert!(demo.status.success(), "demo failed: {}", text(&demo.stderr));
    let before = netfold(&["log", "--data-dir", d, "--json"]);
    let events = text(&before.stdout).lines().count() as u64;
    assert!(events >= 5, "the demo left a history: {events} events");

    let db = cluster.database("copy_run").unwrap();
    let url = cluster.url(&db);
    let pw = password_file(dir.path(), 0o600);
    let pw_arg = pw.to_str().unwrap();
    let copy = netfold(&["store", "copy", "--from", d, "--to", &url, "--password-file", pw_arg]);
    let out = text(&copy.stdout);
    assert!(copy.status.success(), "store copy failed: {}{}", out, text(&copy.stderr));
    assert!(out.contains(&format!("log events: {events} records, verified, chain tip ")), "{out}");
    assert!(
        out.contains("log switch-audit: ") && out.contains("table ledger: ") && out.contains("table meta: 1 entries"),
        "{out}"
    );
    assert!(
        !out.contains(cluster.password()) && !text(&copy.stderr).contains(cluster.password()),
        "the password is never printed"
    );

    let again = netfold(&["store", "copy", "--from", d, "--to", &url, "--password-file", pw_arg]);
    let err = text(&again.stderr);
    assert!(!again.status.success() && err.contains("already holds"), "a second copy is refused: {err}");

    let readable = password_file(dir.path(), 0o644);
    let loose = netfold(&["store", "copy", "--from", d, "--to", &url, "--password-file", readable.to_str().unwrap()]);
    assert!(!loose.status.success() && text(&loose.stderr).contains("mode 644"), "{}", text(&loose.stderr));

    // Given the config, the audit commands read the database itself (no instance runs), answer
    // as they do from the data directory, and write nothing.
    let cfg = config(dir.path(), &url, &pw);
    let c = cfg.to_str().unwrap();
    let written = || cluster.sql(&db, WRITTEN).unwrap();
    let before = written();
    for args in [
        &["log"][..],
        &["log", "--json"],
        &["log", "--switch", "tor1"],
        &["state"],
        &["state", "--at", "5", "--json"],
        &["why", "--port", "tor1:Ethernet1/1", "--vlan", "100", "--at", "5"],
        &["diff", "--from", "1", "--to", "12"],
        &["verify"],
    ] {
        let from_dir = netfold(&[args, &["--data-dir", d]].concat());
        let from_pg = netfold(&[args, &["-c", c]].concat());
        assert!(from_dir.status.success(), "{args:?} on the data directory: {}", text(&from_dir.stderr));
        assert!(from_pg.status.success(), "{args:?} on PostgreSQL: {}", text(&from_pg.stderr));
        assert_eq!(text(&from_pg.stdout), text(&from_dir.stdout), "{args:?}: PostgreSQL answers as the directory");
    }
    assert_eq!(written(), before, "reading wrote nothing");
    let loose_cfg = dir.path().join("loose.toml");
    let loose_text = std::fs::read_to_string(&cfg).unwrap().replace(pw.to_str().unwrap(), readable.to_str().unwrap());
    std::fs::write(&loose_cfg, loose_text).unwrap();
    let loose = netfold(&["log", "-c", loose_cfg.to_str().unwrap()]);
    assert!(!loose.status.success() && text(&loose.stderr).contains("mode 644"), "{}", text(&loose.stderr));

    // `--accept-loss` is sled's: on PostgreSQL it is refused before anything is opened.
    let accept = netfold(&["run", "--accept-loss", "--config", c]);
    let said = text(&accept.stderr);
    assert!(!accept.status.success() && said.contains("restore the database from its backups"), "{said}");
    assert_eq!(written(), before, "nothing was written");

    // `run` on the copied database: the engine folds the demo's history from PostgreSQL.
    let check = netfold(&["config", "check", "--config", c]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains(&format!("PostgreSQL {url}")), "{}", text(&check.stdout));
    let mut agent = Command::new(env!("CARGO_BIN_EXE_netfold"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "netfold did not start on PostgreSQL");
        let line = lines.next().expect("netfold exited").unwrap();
        assert!(!line.contains(cluster.password()), "the password is never logged: {line}");
        if line.contains("netfold running") {
            assert!(line.contains("store=postgres"), "{line}");
            break line.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect("http= field").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let state = get(&addr, "/state");
    assert!(state.contains("xen217") && state.contains("vc-east"), "the copied history is served: {state}");
    let log = get(&addr, "/log?from=1");
    assert!(log.contains("Learnt"), "{log}");
    // SIGTERM: a graceful stop.
    Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "netfold did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let head = cluster.sql(&db, "SELECT head FROM netfold_logs WHERE name = 'events'").unwrap();
    assert!(head.trim().parse::<u64>().unwrap() >= events, "{head}");
}

#[test]
fn config_check_refuses_a_readable_password_file_and_a_password_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = sims::postgres::Cluster::shared();
    let readable = password_file(dir.path(), 0o640);
    let cfg = config(dir.path(), &cluster.url("netfold"), &readable);
    let out = netfold(&["config", "check", "--config", cfg.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("[store]: key `password_file`") && err.contains("mode 640"), "{err}");

    let pw = password_file(dir.path(), 0o600);
    let cfg = config(dir.path(), "postgres://netfold:hunter2@127.0.0.1:5432/netfold", &pw);
    let out = netfold(&["config", "check", "--config", cfg.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("holds a password") && !err.contains("hunter2"), "{err}");

    let cfg = config(dir.path(), "postgres://netfold@db.example:5432/netfold", &pw);
    let out = netfold(&["config", "check", "--config", cfg.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("no `tls` is set"), "{err}");
}

#[test]
fn store_copy_over_tls_verifies_the_servers_certificate() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cluster = sims::postgres::Cluster::start_tls(&ck.cert.pem(), &ck.key_pair.serialize_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        // A data directory with one log and the policy table, as `run` leaves it.
        let store = store::Store::open(store::layout::db_path(&data)).unwrap();
        store.table("meta").unwrap().insert(b"policy", &"p".to_string()).unwrap();
    }
    let pw = dir.path().join("pw");
    std::fs::write(&pw, cluster.password()).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let db = cluster.database("tls").unwrap();
    let url = cluster.url(&db);
    let (d, pw) = (data.to_str().unwrap(), pw.to_str().unwrap());

    let untrusted = netfold(&["store", "copy", "--from", d, "--to", &url, "--password-file", pw, "--tls"]);
    let err = text(&untrusted.stderr);
    assert!(!untrusted.status.success() && err.to_lowercase().contains("certificate"), "{err}");

    let trusted = netfold(&[
        "store",
        "copy",
        "--from",
        d,
        "--to",
        &url,
        "--password-file",
        pw,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert!(text(&trusted.stdout).contains("table meta: 1 entries"), "{}", text(&trusted.stdout));
}

/// `/healthz`'s reasons, polled until `done` holds of them (within [`STEP`]).
async fn reasons_until(base: &str, what: &str, done: impl Fn(&[String]) -> bool, nf: &Netfold) -> Vec<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        let answer = match http.get(format!("{base}/healthz")).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let reasons: Vec<String> = match &answer {
            Ok(h) => {
                h["reasons"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)).collect()
            }
            Err(_) => Vec::new(),
        };
        if answer.is_ok() && done(&reasons) {
            return reasons;
        }
        assert!(Instant::now() < deadline, "{what}: not within {STEP:?}: /healthz said {answer:#?}\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_holds_events_back_says_so_and_the_keeper_goes_on() {
    const UNANSWERED: &str = "the event log has not answered an append";
    const LOST: &str = "hypervisor xen217: lost since";
    let pg = sims::postgres::Cluster::shared();
    let db = pg.database("unanswered").unwrap();
    let proxy = Proxy::start(format!("{}:{}", pg.host(), pg.port()).parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), 0o600);
    let mut sim = Sim::start("xen", "tor1:Ethernet2/", "127.0.0.1:0");
    let url = format!("postgres://{}@{}/{db}", pg.user(), proxy.addr());
    let more = format!("[cluster]\nlease_ttl_secs = 4\n{}", sim.xen_entry("xen217", "XEN_PASSWORD"));
    let config = config_with(dir.path(), &url, &pw, &more);
    let mut nf = Netfold::start(&config, dir.path().join("netfold.log"), &[("XEN_PASSWORD", sim.password.clone())]);
    let base = nf.http().await;
    let deadline = Instant::now() + STEP;
    while !reqwest::get(format!("{base}/state")).await.unwrap().text().await.unwrap().contains("Ethernet2/") {
        assert!(Instant::now() < deadline, "nothing learnt within {STEP:?}:\n{}", nf.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reasons_until(&base, "healthy once learnt", |r| r.is_empty(), &nf).await;

    // The database stops answering, then the hypervisor goes away: its loss cannot be recorded.
    proxy.set(Mode::Hang).await;
    sim.kill9();
    let r =
        reasons_until(&base, "an unanswered append reported", |r| r.iter().any(|r| r.contains(UNANSWERED)), &nf).await;
    assert!(!r.iter().any(|r| r.contains(LOST)), "the loss is not applied before it is durable: {r:#?}");
    // The hypervisor's lease runs out meanwhile and its work is stopped; the keeper goes on with
    // its rounds (each gives up on the database after a TTL) instead of waiting for the engine.
    nf.wait_line("stopping hypervisor xen217: its lease is lost").await;
    let rounds = nf.count("cannot share the work this round");
    nf.wait_lines("cannot share the work this round", rounds + 2).await;

    // The database answers again: the loss lands and the report is gone.
    proxy.set(Mode::Pass).await;
    reasons_until(
        &base,
        "the loss recorded, nothing unanswered",
        |r| r.iter().any(|r| r.contains(LOST)) && !r.iter().any(|r| r.contains(UNANSWERED)),
        &nf,
    )
    .await;
    assert!(nf.log().contains("Xen-Citrix:Lost connection to hypervisor xen217. Retrying..."), "{}", nf.log());
    nf.stop().await;
}
