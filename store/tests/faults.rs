//! The log against a real full disk (a small tmpfs this test mounts; it needs root and fails
//! loudly without it) and, under strace, proof that every acknowledgement follows an
//! `fdatasync` of sled's log file and of the head anchor.

mod common;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Rec;
use store::{Log, Store};
use tmpfs::Tmpfs;

/// Writes a file until the file system is full; returns its path.
fn fill_up(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    // Top up the last partial chunk too.
    while f.write_all(&[0xa5; 512]).is_ok() {}
    path
}

fn rec(n: u64) -> Rec {
    Rec { label: format!("{n:-<1000}"), ..Rec::new(n) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_group_keeps_the_writer_and_appends_resume_when_space_returns() {
    let fs = Tmpfs::mount(8);
    let db = fs.path().join("db");
    let mut acked = Vec::new();
    let mut n = 0;
    {
        let store = Store::open(&db).unwrap();
        let log = store.log::<Rec>("events").unwrap();
        let table = store.table("meta").unwrap();
        for _ in 0..20 {
            n += 1;
            log.append(vec![rec(n)]).await.unwrap();
            acked.push(n);
        }
        let filler = fill_up(fs.path());

        // Appends now fail with a retryable error, each on its own; none is acknowledged.
        let mut failures = 0;
        for _ in 0..200 {
            n += 1;
            match log.append(vec![rec(n), rec(n + 1000)]).await {
                Ok(_) => acked.extend([n, n + 1000]),
                Err(e) => {
                    assert!(e.is_retryable(), "a full disk is transient: {e}");
                    failures += 1;
                    if failures >= 20 {
                        break;
                    }
                }
            }
        }
        assert_eq!(failures, 20, "a full disk must fail appends");
        assert!(table.insert(b"k", &1u32).is_err(), "a table write cannot be durable either");

        // Space returns: appends resume by themselves, on the same handle.
        std::fs::remove_file(filler).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            n += 1;
            match log.append(vec![rec(n)]).await {
                Ok(_) => {
                    acked.push(n);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    assert!(e.is_retryable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("appends did not resume within 30 s after space returned: {e}"),
            }
        }
        for _ in 0..10 {
            n += 1;
            log.append(vec![rec(n)]).await.unwrap();
            acked.push(n);
        }
        table.insert(b"k", &2u32).unwrap();
    }
    // Every acknowledged record, in order, nothing else; the chain and the anchor agree.
    let store = Store::open(&db).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    let read: Vec<u64> = log.read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(read, acked);
    assert_eq!(log.verify().unwrap().head, acked.len() as u64);
    assert_eq!(store.table("meta").unwrap().get::<u32>(b"k").unwrap(), Some(2));
}

const CHILD_ENV: &str = "NETFOLD_SYNC_CHILD";

/// The child role of the strace test; a no-op when run as an ordinary test. Appends lone events
/// and batches, writing `appending i` before and `acked i` after each to a marks file (one
/// `write` each, so strace shows them in order with the syncs).
#[test]
fn sync_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = Store::open(dir.join("db")).unwrap();
        let log = store.log::<Rec>("events").unwrap();
        let mut marks = std::fs::File::create(dir.join("marks")).unwrap();
        for i in 1..=30u64 {
            let batch: Vec<Rec> = (0..(1 + i % 3 * 40)).map(|k| rec(i * 1000 + k)).collect();
            marks.write_all(format!("appending {i}\n").as_bytes()).unwrap();
            log.append(batch).await.unwrap();
            marks.write_all(format!("acked {i}\n").as_bytes()).unwrap();
        }
    });
}

#[test]
fn every_acknowledged_append_follows_an_fdatasync_of_the_log_file_and_the_anchor() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let status = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range,write", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "sync_child_role", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .status()
        .expect("strace must be installed (.ci/run installs it)");
    assert!(status.success(), "the traced child failed");
    let trace = std::fs::read_to_string(trace).unwrap();
    let db = format!("{}>", dir.path().join("db").join("db").display());
    let anchor = format!("{}>", dir.path().join("db").join("anchors").join("events").display());
    // Per append: (sled's sync_file_range, fdatasync of its log file, then of the anchor).
    let mut pending: Option<(u64, bool, bool, bool)> = None;
    let mut acked = 0;
    for line in trace.lines() {
        let number = |tag: &str| line.split(tag).nth(1).and_then(|r| r.split('\\').next()?.parse::<u64>().ok());
        if let Some(i) = number("\"appending ") {
            pending = Some((i, false, false, false));
        } else if let Some(i) = number("\"acked ") {
            let (j, ranged, db_synced, anchored) = pending.take().expect("an ack without an append");
            assert_eq!(i, j);
            assert!(ranged, "append {i}: sled wrote no sync_file_range");
            assert!(db_synced, "append {i} was acknowledged without an fdatasync of sled's log file");
            assert!(anchored, "append {i} was acknowledged without an fdatasync of the anchor after it");
            acked += 1;
        } else if let Some((_, ranged, db_synced, anchored)) = pending.as_mut() {
            if line.contains("sync_file_range(") && line.contains(&db) {
                *ranged = true;
            } else if line.contains("fdatasync(") && line.contains(&db) {
                *db_synced = true;
            } else if line.contains("fdatasync(") && line.contains(&anchor) && *db_synced {
                *anchored = true;
            }
        }
    }
    assert_eq!(acked, 30, "every append was seen in the trace");
}

/// `chattr FLAG path`: as root on ext4 an immutable file refuses writes even through a
/// descriptor already open, which lets a test fail the anchor write at will.
fn chattr(flag: &str, path: &Path) {
    let out = Command::new("chattr").arg(flag).arg(path).output().expect("cannot run chattr (e2fsprogs)");
    assert!(
        out.status.success(),
        "chattr {flag} failed (needs root and ext4): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_group_that_failed_after_reaching_sled_is_rolled_back_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    log.append(vec![Rec::new(1), Rec::new(2)]).await.unwrap();
    // The group reaches sled and is synced there, but its anchor cannot be written: it is not
    // acknowledged.
    let anchor = dir.path().join("anchors").join("events");
    chattr("+i", &anchor);
    let failed = log.append(vec![Rec::new(3)]).await;
    chattr("-i", &anchor);
    let err = failed.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("head anchor"), "{err}");
    assert_eq!(log.head(), 2, "nothing of the failed group is visible");
    // The next append first removes the unacknowledged record, then takes its place.
    assert_eq!(log.append(vec![Rec::new(4)]).await.unwrap(), 3..=3);
    drop(log);
    let log = store.log::<Rec>("events").unwrap();
    let read: Vec<u64> = log.read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(read, [1, 2, 4]);
    assert_eq!(log.verify().unwrap().head, 3);
}
