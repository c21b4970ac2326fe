//! The log's contract, on sled, on its in-memory twin and on PostgreSQL (each test is written
//! once, generic over `backends::Backend`): gapless sequence numbers under concurrent appenders,
//! subscriptions without gap or duplicate, reopen, snapshots and checkpoints, corruption and
//! tamper detection naming the sequence number.

#[path = "common/backends.rs"]
mod backends;
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use backends::{Backend, Deletes, Memory, Postgres, Sled};
use common::Rec;
use store::{Error, Log, MemoryLog, Store};

backends!(sled = super::Sled:
    concurrent_appends_are_gapless_and_exactly_once,
    subscription_catches_up_then_tails_a_busy_writer,
    reopen_keeps_everything_and_appends_continue_the_chain,
    logs_in_one_store_are_independent,
    snapshots_keep_the_latest,
    older_snapshots_are_thinned_but_stay_spread_over_the_whole_log,
    a_flipped_byte_is_named_by_verify_and_read,
    a_consistent_rewrite_breaks_the_chain_at_the_next_record,
    an_unknown_storage_format_names_the_record,
    a_missing_record_is_reported_not_skipped,
    an_empty_batch_appends_nothing,
    a_corrupt_record_deep_in_a_long_read_ends_it_in_order,
    a_bounded_read_gives_its_range_and_nothing_past_it,
);
backends!(memory = super::Memory:
    concurrent_appends_are_gapless_and_exactly_once,
    subscription_catches_up_then_tails_a_busy_writer,
    reopen_keeps_everything_and_appends_continue_the_chain,
    logs_in_one_store_are_independent,
    snapshots_keep_the_latest,
    older_snapshots_are_thinned_but_stay_spread_over_the_whole_log,
    a_flipped_byte_is_named_by_verify_and_read,
    a_consistent_rewrite_breaks_the_chain_at_the_next_record,
    an_unknown_storage_format_names_the_record,
    an_empty_batch_appends_nothing,
    a_corrupt_record_deep_in_a_long_read_ends_it_in_order,
    a_bounded_read_gives_its_range_and_nothing_past_it,
);
backends!(postgres = super::Postgres:
    concurrent_appends_are_gapless_and_exactly_once,
    subscription_catches_up_then_tails_a_busy_writer,
    reopen_keeps_everything_and_appends_continue_the_chain,
    logs_in_one_store_are_independent,
    snapshots_keep_the_latest,
    older_snapshots_are_thinned_but_stay_spread_over_the_whole_log,
    a_flipped_byte_is_named_by_verify_and_read,
    a_consistent_rewrite_breaks_the_chain_at_the_next_record,
    an_unknown_storage_format_names_the_record,
    a_missing_record_is_reported_not_skipped,
    an_empty_batch_appends_nothing,
    a_corrupt_record_deep_in_a_long_read_ends_it_in_order,
    a_bounded_read_gives_its_range_and_nothing_past_it,
);

async fn concurrent_appends_are_gapless_and_exactly_once<B: Backend>() {
    let mut b = B::fresh().await;
    let log = Arc::new(b.open("t").await);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..50u64 {
                let size = (i % 3 + 1) as usize;
                let batch: Vec<Rec> = (0..size).map(|k| Rec::new(t * 1_000_000 + i * 10 + k as u64)).collect();
                let range = log.append(batch.clone()).await.unwrap();
                assert_eq!(range.clone().count(), size);
                acked.extend(range.zip(batch));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let total = acked.len() as u64;
    assert_eq!(log.head(), total);
    let read: Vec<_> = log.read(1).map(|e| e.unwrap()).collect();
    assert_eq!(read.len() as u64, total);
    for (i, e) in read.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "sequence numbers are gapless and in order");
    }
    let seqs: BTreeSet<_> = acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len() as u64, total, "no sequence number acknowledged twice");
    for (seq, rec) in acked {
        assert_eq!(read[(seq - 1) as usize].record, rec, "record {seq} holds what was appended");
    }
    log.verify().unwrap();
}

async fn subscription_catches_up_then_tails_a_busy_writer<B: Backend>() {
    let mut b = B::fresh().await;
    let log = Arc::new(b.open("t").await);
    for i in 1..=100 {
        log.append(vec![Rec::new(i)]).await.unwrap();
    }
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 101..=2000u64 {
                log.append(vec![Rec::new(i)]).await.unwrap();
            }
        })
    };
    let mut sub = log.subscribe(37);
    for expected in 37..=2000u64 {
        let e = sub.next().await.unwrap().unwrap();
        assert_eq!(e.seq, expected, "no gap, no duplicate");
        assert_eq!(e.record.n, expected);
    }
    writer.await.unwrap();
    assert_eq!(sub.position(), 2001);
}

async fn reopen_keeps_everything_and_appends_continue_the_chain<B: Backend>() {
    let mut b = B::fresh().await;
    {
        let log = b.open("events").await;
        log.append((1..=10).map(Rec::new).collect()).await.unwrap();
        log.save_snapshot(7, b"state@7".to_vec()).unwrap();
        log.set_checkpoint("reconciler-tor1", 9).unwrap();
    }
    b.restart().await;
    let log = b.open("events").await;
    assert_eq!(log.head(), 10);
    assert_eq!(log.append(vec![Rec::new(11)]).await.unwrap(), 11..=11);
    let all: Vec<_> = log.read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(all, (1..=11).collect::<Vec<_>>());
    assert_eq!(log.verify().unwrap().head, 11);
    let snap = log.latest_snapshot().unwrap().unwrap();
    assert_eq!((snap.seq, snap.bytes.as_slice()), (7, &b"state@7"[..]));
    assert_eq!(log.checkpoint("reconciler-tor1").unwrap(), Some(9));
    assert_eq!(log.checkpoint("nobody").unwrap(), None);
}

async fn logs_in_one_store_are_independent<B: Backend>() {
    let mut store = B::fresh().await;
    let a = store.open("a").await;
    let b = store.open("b").await;
    a.append(vec![Rec::new(1), Rec::new(2)]).await.unwrap();
    assert_eq!(b.append(vec![Rec::new(9)]).await.unwrap(), 1..=1);
    assert_eq!(a.head(), 2);
    a.save_snapshot(2, vec![2]).unwrap();
    a.set_checkpoint("c", 2).unwrap();
    assert_eq!(b.latest_snapshot().unwrap(), None);
    assert_eq!(b.checkpoint("c").unwrap(), None);
}

async fn snapshots_keep_the_latest<B: Backend>() {
    let mut b = B::fresh().await;
    let log = b.open("s").await;
    for seq in [10, 20, 30, 40, 50] {
        log.save_snapshot(seq, seq.to_be_bytes().to_vec()).unwrap();
    }
    assert_eq!(log.latest_snapshot().unwrap().unwrap().seq, 50);
}

async fn older_snapshots_are_thinned_but_stay_spread_over_the_whole_log<B: Backend>() {
    let mut b = B::fresh().await;
    let log = b.open("s").await;
    for seq in (1..=1000u64).map(|i| i * 10) {
        log.save_snapshot(seq, seq.to_be_bytes().to_vec()).unwrap();
    }
    let kept: Vec<u64> = (0..=10_000)
        .filter_map(|s| log.snapshot_at_or_before(s).unwrap().map(|x| x.seq))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(kept.len() <= 3 + 256 + 1, "bounded: {} kept", kept.len());
    assert_eq!(&kept[kept.len() - 3..], [9980, 9990, 10_000], "the latest are all kept");
    assert_eq!(kept[0], 10, "the oldest stays: history from the start");
    let widest = kept.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    // Nominally one per 1/256 of the span; thinning as the span grows can leave gaps wider
    // than that, never more than twice as wide.
    assert!(widest <= 10_000 / 128, "no gap wider than a 128th of the log: {widest}");
    assert_eq!(log.snapshot_at_or_before(5).unwrap(), None);
    let at = log.snapshot_at_or_before(5_555).unwrap().unwrap().seq;
    assert!(at <= 5_555 && 5_555 - at <= widest, "{at}");
}

async fn fill<B: Backend>(n: u64) -> B {
    let mut b = B::fresh().await;
    let log = b.open("events").await;
    log.append((1..=n).map(Rec::new).collect()).await.unwrap();
    drop(log);
    b
}

async fn a_flipped_byte_is_named_by_verify_and_read<B: Backend>() {
    let mut b = fill::<B>(20).await;
    b.tamper("events", 13, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x40;
    })
    .await;
    let log = b.open("events").await;
    let err = log.verify().unwrap_err();
    assert!(matches!(err, Error::Corrupt { seq: 13 }), "{err}");
    assert!(err.to_string().contains("record 13"), "{err}");
    let read: Vec<_> = log.read(10).collect();
    assert_eq!(read.len(), 4, "records 10..12 then the error, then nothing");
    assert!(matches!(read[3], Err(Error::Corrupt { seq: 13 })));
    let mut sub = log.subscribe(1);
    for _ in 1..13 {
        sub.next().await.unwrap().unwrap();
    }
    assert!(matches!(sub.next().await, Some(Err(Error::Corrupt { seq: 13 }))));
    assert!(sub.next().await.is_none());
}

async fn a_consistent_rewrite_breaks_the_chain_at_the_next_record<B: Backend>() {
    let mut b = fill::<B>(20).await;
    {
        // Re-encode record 8 with other content but a valid checksum, as a forger would: the
        // memory log stores the same bytes a sled or PostgreSQL log would for this prefix.
        let db_bytes = {
            let m2 = MemoryLog::<Rec>::new();
            m2.append((1..=7).map(Rec::new).chain([Rec::new(999)]).collect()).await.unwrap();
            let mut out = Vec::new();
            m2.tamper(8, |v| out = v.clone());
            out
        };
        b.tamper("events", 8, |v| *v = db_bytes).await;
    }
    let log = b.open("events").await;
    // The forged record itself reads back clean (its checksum is right): only the chain names it.
    assert_eq!(log.read(8).next().unwrap().unwrap().record.n, 999);
    let err = log.verify().unwrap_err();
    assert!(matches!(err, Error::Chain { seq: 9 }), "{err}");
}

async fn an_unknown_storage_format_names_the_record<B: Backend>() {
    let mut b = fill::<B>(3).await;
    b.tamper("events", 2, |v| v[0] = 9).await;
    let log = b.open("events").await;
    let err = log.verify().unwrap_err();
    assert!(matches!(err, Error::Format { seq: 2, found: 9, .. }), "{err}");
}

async fn a_missing_record_is_reported_not_skipped<B: Deletes>() {
    let mut b = B::fresh().await;
    {
        // One append per record: on sled one block per record, so deleting a block deletes
        // record 3.
        let log = b.open("events").await;
        for n in 1..=5 {
            log.append(vec![Rec::new(n)]).await.unwrap();
        }
    }
    b.delete("events", 3).await;
    let log = b.open("events").await;
    assert!(matches!(log.verify().unwrap_err(), Error::Missing { seq: 3, head: 5 }));
    let read: Vec<_> = log.read(1).collect();
    assert!(matches!(read.last(), Some(Err(Error::Missing { seq: 3, .. }))));
}

#[tokio::test]
async fn a_truncated_record_is_reported() {
    let mem = MemoryLog::<Rec>::new();
    mem.append(vec![Rec::new(1), Rec::new(2)]).await.unwrap();
    mem.tamper(2, |v| v.truncate(5));
    assert!(matches!(mem.verify().unwrap_err(), Error::Truncated { seq: 2, len: 5, .. }));
}

async fn an_empty_batch_appends_nothing<B: Backend>() {
    let mut b = B::fresh().await;
    let log = b.open("e").await;
    assert!(log.append(vec![]).await.unwrap().is_empty());
    assert_eq!(log.head(), 0);
    assert_eq!(log.verify().unwrap().head, 0);
}

#[tokio::test]
async fn reopening_right_after_drop_waits_for_sleds_lock() {
    // sled releases its lock file from background threads just after the last handle drops;
    // opening again at once must wait for it rather than fail (the flaky CI failure of 2026-11).
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=30u64 {
        let store = Store::open(dir.path()).unwrap();
        let log = store.log::<Rec>("events").unwrap();
        log.append(vec![Rec::new(round)]).await.unwrap();
        drop(log);
        drop(store);
        let raw = store::open_db(dir.path()).unwrap();
        raw.insert(b"scratch", &round.to_be_bytes()).unwrap();
        raw.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.log::<Rec>("events").unwrap().head(), 30);
}

#[test]
fn a_database_held_elsewhere_is_reported_in_use_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let _holder = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().expect("a second open must fail");
    assert!(matches!(err, Error::InUse { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
}

async fn a_corrupt_record_deep_in_a_long_read_ends_it_in_order<B: Backend>() {
    // 1,000 records read as one run, decoded in parallel: the result stays in order.
    let mut b = fill::<B>(1000).await;
    b.tamper("events", 700, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    })
    .await;
    let log = b.open("events").await;
    let read: Vec<_> = log.read(1).collect();
    assert_eq!(read.len(), 700, "records 1..=699, then the error, then nothing");
    for (i, r) in read[..699].iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().seq, i as u64 + 1);
    }
    assert!(matches!(read[699], Err(Error::Corrupt { seq: 700 })), "{:?}", read[699]);
    assert_eq!(log.read(650).count(), 51, "a read from further on stops there too");
}

async fn a_bounded_read_gives_its_range_and_nothing_past_it<B: Backend>() {
    // Longer than one read run (4,096 records), so sled reads ahead on a thread of its own.
    let mut b = fill::<B>(10_000).await;
    b.tamper("events", 6_000, |v| *v.last_mut().unwrap() ^= 0x01).await;
    let log = b.open("events").await;
    let seqs = |from, last| -> Vec<u64> { log.read_to(from, last).map(|e| e.unwrap().seq).collect() };
    assert_eq!(seqs(1, 5_999), (1..=5_999).collect::<Vec<_>>(), "the damaged record 6000 is past the range");
    assert_eq!(seqs(0, 3), vec![1, 2, 3], "seq 0 reads from the first record");
    assert_eq!(seqs(5_990, 5_999).len(), 10);
    assert!(seqs(5_000, 4_999).is_empty(), "an empty range reads nothing");
    let tail: Vec<_> = log.read_to(9_990, u64::MAX).map(|e| e.unwrap().seq).collect();
    assert_eq!(tail, (9_990..=10_000).collect::<Vec<_>>(), "a range past the head ends at the head");
    let through: Vec<_> = log.read_to(5_000, 7_000).collect();
    assert_eq!(through.len(), 1_001, "records 5000..=5999, then the error");
    assert!(matches!(through[1_000], Err(Error::Corrupt { seq: 6_000 })), "{:?}", through[1_000]);
}

/// Three stores on one database (three netfold processes) appending to the same log at once, two
/// writers each: every append lands once — none gives up however often the others win the
/// race — the sequence stays gapless and the chain verifies; each side's head and subscriptions
/// see the others' appends (NOTIFY, or the poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_three_processes_appending_to_one_log_keep_it_gapless() {
    let mut one = Postgres::fresh().await;
    let a = Arc::new(one.open("events").await);
    let other = store::PgStore::connect(Postgres::config(one.db()), store::PgTls::Off).await.unwrap();
    let b = Arc::new(other.log::<Rec>("events").await.unwrap());
    let third = store::PgStore::connect(Postgres::config(one.db()), store::PgTls::Off).await.unwrap();
    let c = Arc::new(third.log::<Rec>("events").await.unwrap());
    let mut sub = a.subscribe(1);
    let mut tasks = Vec::new();
    let writers = [a.clone(), b.clone(), c.clone(), a.clone(), b.clone(), c.clone()];
    for (t, log) in writers.into_iter().enumerate() {
        let t = t as u64;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60u64 {
                let batch: Vec<Rec> = (0..=(i % 3)).map(|k| Rec::new(t * 1_000_000 + i * 10 + k)).collect();
                let range = log.append(batch.clone()).await.unwrap();
                acked.extend(range.zip(batch.into_iter().map(|r| r.n)));
            }
            acked
        }));
    }
    let mut acked = std::collections::BTreeMap::new();
    for t in tasks {
        for (seq, n) in t.await.unwrap() {
            assert!(acked.insert(seq, n).is_none(), "seq {seq} acknowledged twice");
        }
    }
    let total = acked.len() as u64;
    assert_eq!(*acked.keys().last().unwrap(), total, "gapless: the last seq is the count");
    for seq in 1..=total {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((e.seq, e.record.n), (seq, acked[&seq]), "the subscription sees both writers' records in order");
    }
    assert_eq!(a.verify().unwrap().head, total);
    assert_eq!(b.verify().unwrap(), a.verify().unwrap());
    assert_eq!(c.verify().unwrap(), a.verify().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (a.head(), b.head(), c.head()) != (total, total, total) {
        let heads = (a.head(), b.head(), c.head());
        assert!(std::time::Instant::now() < deadline, "heads {heads:?} never all reached {total}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Without notifications (the trigger dropped, as a server that does not deliver them), a
/// subscription still sees another process's appends through the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_subscription_follows_another_writer_by_polling_without_notifications() {
    let mut one = Postgres::fresh().await;
    one.sql("DROP TRIGGER netfold_log_moved ON netfold_logs");
    let a = one.open("events").await;
    let other = store::PgStore::connect(Postgres::config(one.db()), store::PgTls::Off).await.unwrap();
    let b = other.log::<Rec>("events").await.unwrap();
    let mut sub = a.subscribe(1);
    for n in 1..=5 {
        b.append(vec![Rec::new(n)]).await.unwrap();
    }
    for n in 1..=5 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((e.seq, e.record.n), (n, n));
    }
}

/// The last record rewritten consistently (chain intact up to it) is still caught: it is not
/// the record whose hash the log's row holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_consistent_rewrite_of_the_last_record_is_named() {
    let mut b = fill::<Postgres>(8).await;
    let forged = {
        let mem = MemoryLog::<Rec>::new();
        mem.append((1..=7).map(Rec::new).chain([Rec::new(999)]).collect()).await.unwrap();
        let mut out = Vec::new();
        mem.tamper(8, |v| out = v.clone());
        out
    };
    b.tamper("events", 8, |v| *v = forged).await;
    let log = b.open("events").await;
    let err = log.verify().unwrap_err();
    assert!(matches!(&err, Error::Lost(store::Loss::Rewritten { seq: 8, .. })), "{err}");
}

/// A store opened read-only (the audit commands) reads what another process wrote, and writes
/// nothing: an append is refused with the log's name, and PostgreSQL itself refuses any other
/// write (every session is read-only). It creates no log and migrates no schema: a missing log,
/// a database without netfold's schema, are errors saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_read_only_store_reads_and_never_writes() {
    let mut b = fill::<Postgres>(5).await;
    let config = Postgres::config(b.db());
    let ro = store::PgStore::connect_read_only(config.clone(), store::PgTls::Off).await.unwrap();
    let log = ro.log::<Rec>("events").await.unwrap();
    assert_eq!(log.head(), 5);
    let read: Vec<u64> = log.read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(read, (1..=5).collect::<Vec<_>>());
    assert_eq!(log.verify().unwrap().head, 5);

    let err = log.append(vec![Rec::new(6)]).await.unwrap_err();
    assert!(matches!(&err, Error::ReadOnly(name) if name == "events"), "{err}");
    let err = ro.table("meta").insert(b"k", &1u32).unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "PostgreSQL refuses the write: {err}");
    let err = log.save_snapshot(5, vec![1, 2, 3]).unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "{err}");
    let err = ro.log::<Rec>("no-such-log").await.err().expect("a missing log is not created");
    assert!(matches!(&err, Error::NoLog(name) if name == "no-such-log"), "{err}");
    assert_eq!(b.sql("SELECT count(*) FROM netfold_logs WHERE name = 'no-such-log'").trim(), "0");
    assert_eq!(b.open("events").await.head(), 5, "nothing was appended");

    // A database nothing has run on: no schema, and none made.
    let empty =
        tokio::task::spawn_blocking(|| sims::postgres::Cluster::shared().database("ro-empty").unwrap()).await.unwrap();
    let err = store::PgStore::connect_read_only(Postgres::config(&empty), store::PgTls::Off).await.err().unwrap();
    assert!(err.to_string().contains("no netfold schema"), "{err}");
    let tables =
        sims::postgres::Cluster::shared().sql(&empty, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(tables.unwrap().trim(), "0", "reading made no table");

    // A schema older than this build's: named, not migrated.
    b.sql("DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)");
    let err = store::PgStore::connect_read_only(config, store::PgTls::Off).await.err().unwrap();
    assert!(err.to_string().contains("`netfold run` of this version migrates it"), "{err}");
}
