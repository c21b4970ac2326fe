//! kill -9 at a random moment, again and again on the same store — a sled directory, or a
//! PostgreSQL database of the test's private cluster — loses no acknowledged append and leaves a
//! log that verifies and keeps appending from its head.
//!
//! The test re-runs its own binary as the child (`NETFOLD_CRASH_CHILD=<dir>` or
//! `NETFOLD_CRASH_PG=<port> <password> <database>` selects the child role of
//! `crash_child_role`): the child appends from several tasks and prints `seq n` for every
//! acknowledged record; the parent kills it with SIGKILL and checks the store.

#[path = "common/backends.rs"]
mod backends;
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Rec;
use rand::Rng;
use store::{Log, PgStore, PgTls, Store};

const CHILD_ENV: &str = "NETFOLD_CRASH_CHILD";
const PG_CHILD_ENV: &str = "NETFOLD_CRASH_PG";

fn pg_config(env: &str) -> store::PgConfig {
    let f: Vec<&str> = env.split(' ').collect();
    let mut c = store::PgConfig::new();
    c.host("127.0.0.1").port(f[0].parse().unwrap()).user(sims::postgres::USER).password(f[1]).dbname(f[2]);
    c
}

/// The child role; a no-op when the test runner runs it as an ordinary test.
#[test]
fn crash_child_role() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let log = Store::open(&dir).unwrap().log::<Rec>("events").unwrap();
        rt.block_on(append_forever(log));
    } else if let Ok(pg) = std::env::var(PG_CHILD_ENV) {
        rt.block_on(async move {
            let store = PgStore::connect(pg_config(&pg), PgTls::Off).await.unwrap();
            append_forever(store.log::<Rec>("events").await.unwrap()).await;
        });
    }
}

/// Appends from four tasks, printing `seq n` for every acknowledged record.
async fn append_forever<L: Log<Rec>>(log: L) {
    {
        let log = std::sync::Arc::new(log);
        let base = u64::from(std::process::id()) * 1_000_000_000;
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let size = 1 + (i % 5) as usize;
                    let batch: Vec<Rec> =
                        (0..size).map(|k| Rec::new(base + t * 100_000_000 + i * 10 + k as u64)).collect();
                    let ns: Vec<u64> = batch.iter().map(|r| r.n).collect();
                    let range = log.append(batch).await.unwrap();
                    let mut out = String::new();
                    for (seq, n) in range.zip(ns) {
                        out.push_str(&format!("{seq} {n}\n"));
                    }
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(out.as_bytes()).unwrap();
                    stdout.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[test]
fn sled_kill_nine_loses_no_acknowledged_append() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PG_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    kill_nine_rounds((CHILD_ENV, dir.path().display().to_string()), move || {
        Box::pin(std::future::ready(Store::open(&path).unwrap().log::<Rec>("events").unwrap()))
    });
}

#[test]
fn postgres_kill_nine_loses_no_acknowledged_append() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PG_CHILD_ENV).is_ok() {
        return;
    }
    let cluster = sims::postgres::Cluster::shared();
    let db = cluster.database("crash").unwrap();
    let env = format!("{} {} {db}", cluster.port(), cluster.password());
    let config = pg_config(&env);
    kill_nine_rounds((PG_CHILD_ENV, env), move || {
        let config = config.clone();
        Box::pin(async move { PgStore::connect(config, PgTls::Off).await.unwrap().log::<Rec>("events").await.unwrap() })
    });
}

/// Twelve rounds of: start the child on the store, kill it at a random moment once it has
/// acknowledged something, reopen the store (`open`) and check every acknowledged record.
fn kill_nine_rounds<L: Log<Rec>>(
    child_env: (&str, String),
    open: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = L>>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_role", "--nocapture", "--test-threads", "1"])
            .env(child_env.0, &child_env.1)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has acknowledged something, then kill it at a random moment.
        let started = Instant::now();
        let mut lines = Vec::new();
        let is_ack = |l: &String| l.split(' ').count() == 2 && l.split(' ').all(|f| f.parse::<u64>().is_ok());
        while !lines.iter().any(is_ack) && started.elapsed() < Duration::from_secs(30) {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                lines.push(l);
            }
        }
        assert!(lines.iter().any(is_ack), "round {round}: the child acknowledged nothing in 30 s: {lines:?}");
        std::thread::sleep(Duration::from_millis(rng.gen_range(1..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let before = acked.len();
        for l in lines {
            // Each batch's lines go out in one write of well under PIPE_BUF bytes, so a kill
            // never leaves half a line; anything unparsable is the test harness's own output.
            let mut it = l.split(' ');
            if let (Some(Ok(seq)), Some(Ok(n))) = (it.next().map(str::parse), it.next().map(str::parse)) {
                assert!(acked.insert(seq, n).is_none_or(|old| old == n), "seq {seq} acknowledged twice");
            }
        }
        assert!(acked.len() > before, "round {round}: no new acknowledgements");

        let log = rt.block_on(open());
        let verified = log.verify().unwrap_or_else(|e| panic!("round {round}: verify failed: {e}"));
        let (&max, _) = acked.last_key_value().unwrap();
        assert!(verified.head >= max, "round {round}: head {} below acknowledged {max}", verified.head);
        let by_seq: BTreeMap<u64, u64> = log.read(1).map(|e| e.unwrap()).map(|e| (e.seq, e.record.n)).collect();
        for (seq, n) in &acked {
            assert_eq!(by_seq.get(seq), Some(n), "round {round}: acknowledged seq {seq} lost or changed");
        }
        let next = rt.block_on(log.append(vec![Rec::new(u64::MAX - round)])).unwrap();
        assert_eq!(*next.start(), verified.head + 1, "appends continue from the head");
        acked.insert(*next.start(), u64::MAX - round);
    }
}
