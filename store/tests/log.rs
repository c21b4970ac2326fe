//! The log's contract, on sled and on its in-memory twin: gapless sequence numbers under
//! concurrent appenders, subscriptions without gap or duplicate, reopen, corruption and tamper
//! detection naming the sequence number.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::Rec;
use store::{Error, Log, MemoryLog, Store};

async fn concurrent_appends_are_gapless_and_exactly_once<L: Log<Rec>>(log: Arc<L>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_concurrent_appends_are_gapless_and_exactly_once() {
    let store = Store::temporary().unwrap();
    concurrent_appends_are_gapless_and_exactly_once(Arc::new(store.log::<Rec>("t").unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_appends_are_gapless_and_exactly_once() {
    concurrent_appends_are_gapless_and_exactly_once(Arc::new(MemoryLog::<Rec>::new())).await;
}

async fn subscription_catches_up_then_tails<L: Log<Rec>>(log: Arc<L>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_subscription_catches_up_then_tails_a_busy_writer() {
    let store = Store::temporary().unwrap();
    subscription_catches_up_then_tails(Arc::new(store.log::<Rec>("t").unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_subscription_catches_up_then_tails_a_busy_writer() {
    subscription_catches_up_then_tails(Arc::new(MemoryLog::<Rec>::new())).await;
}

#[tokio::test]
async fn reopen_keeps_everything_and_appends_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let log = store.log::<Rec>("events").unwrap();
        log.append((1..=10).map(Rec::new).collect()).await.unwrap();
        log.save_snapshot(7, b"state@7".to_vec()).unwrap();
        log.set_checkpoint("reconciler-tor1", 9).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
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

#[tokio::test]
async fn logs_in_one_store_are_independent() {
    let store = Store::temporary().unwrap();
    let a = store.log::<Rec>("a").unwrap();
    let b = store.log::<Rec>("b").unwrap();
    a.append(vec![Rec::new(1), Rec::new(2)]).await.unwrap();
    assert_eq!(b.append(vec![Rec::new(9)]).await.unwrap(), 1..=1);
    assert_eq!(a.head(), 2);
}

#[tokio::test]
async fn snapshots_keep_the_latest() {
    let store = Store::temporary().unwrap();
    let log = store.log::<Rec>("s").unwrap();
    for seq in [10, 20, 30, 40, 50] {
        log.save_snapshot(seq, seq.to_be_bytes().to_vec()).unwrap();
    }
    assert_eq!(log.latest_snapshot().unwrap().unwrap().seq, 50);
}

#[tokio::test]
async fn older_snapshots_are_thinned_but_stay_spread_over_the_whole_log() {
    let store = Store::temporary().unwrap();
    let log = store.log::<Rec>("s").unwrap();
    for seq in (1..=1000u64).map(|i| i * 10) {
        log.save_snapshot(seq, seq.to_be_bytes().to_vec()).unwrap();
    }
    let kept: Vec<u64> = (0..=10_000)
        .filter_map(|s| log.snapshot_at_or_before(s).unwrap().map(|x| x.seq))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(kept.len() <= 3 + 32 + 1, "bounded: {} kept", kept.len());
    assert_eq!(&kept[kept.len() - 3..], [9980, 9990, 10_000], "the latest are all kept");
    assert_eq!(kept[0], 10, "the oldest stays: history from the start");
    let widest = kept.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    // Nominally one per 1/32 of the span; thinning as the span grows can leave gaps of a few
    // spacings, never more than an eighth of the log.
    assert!(widest <= 10_000 / 8, "no gap wider than an eighth of the log: {widest}");
    assert_eq!(log.snapshot_at_or_before(5).unwrap(), None);
    let at = log.snapshot_at_or_before(5_555).unwrap().unwrap().seq;
    assert!(at <= 5_555 && 5_555 - at <= widest, "{at}");
}

/// Rewrites one stored record of a closed sled log directly in the database, using the block
/// layout documented in `store::codec`: `[count u32]` then `[len u32][record]` per record.
fn rewrite_value(dir: &std::path::Path, seq: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let db = store::open_db(dir).unwrap();
    let tree = db.open_tree("events.log").unwrap();
    let (k, block) = tree.range(..=seq.to_be_bytes()).next_back().unwrap().unwrap();
    let first = u64::from_be_bytes(k.as_ref().try_into().unwrap());
    let count = u32::from_be_bytes(block[0..4].try_into().unwrap()) as usize;
    let mut records = Vec::new();
    let mut at = 4;
    for _ in 0..count {
        let len = u32::from_be_bytes(block[at..at + 4].try_into().unwrap()) as usize;
        records.push(block[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    f(&mut records[(seq - first) as usize]);
    let mut out = (count as u32).to_be_bytes().to_vec();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(&r);
    }
    tree.insert(k, out).unwrap();
    db.flush().unwrap();
}

async fn fill(dir: &std::path::Path, n: u64) {
    let store = Store::open(dir).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    log.append((1..=n).map(Rec::new).collect()).await.unwrap();
}

#[tokio::test]
async fn a_flipped_byte_is_named_by_verify_and_read() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    rewrite_value(dir.path(), 13, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x40;
    });
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
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

#[tokio::test]
async fn a_consistent_rewrite_breaks_the_chain_at_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20).await;
    {
        // Re-encode record 8 with other content but a valid checksum, as a forger would: the
        // memory log stores the same bytes a sled log would for this prefix.
        let db_bytes = {
            let m2 = MemoryLog::<Rec>::new();
            m2.append((1..=7).map(Rec::new).chain([Rec::new(999)]).collect()).await.unwrap();
            let mut out = Vec::new();
            m2.tamper(8, |v| out = v.clone());
            out
        };
        rewrite_value(dir.path(), 8, |v| *v = db_bytes);
    }
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    // The forged record itself reads back clean (its checksum is right): only the chain names it.
    assert_eq!(log.read(8).next().unwrap().unwrap().record.n, 999);
    let err = log.verify().unwrap_err();
    assert!(matches!(err, Error::Chain { seq: 9 }), "{err}");
}

#[tokio::test]
async fn an_unknown_storage_format_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 3).await;
    rewrite_value(dir.path(), 2, |v| v[0] = 9);
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    let err = log.verify().unwrap_err();
    assert!(matches!(err, Error::Format { seq: 2, found: 9, .. }), "{err}");
}

#[tokio::test]
async fn a_missing_record_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        // One append per record: one block per record, so deleting a block deletes record 3.
        let store = Store::open(dir.path()).unwrap();
        let log = store.log::<Rec>("events").unwrap();
        for n in 1..=5 {
            log.append(vec![Rec::new(n)]).await.unwrap();
        }
    }
    {
        let db = store::open_db(dir.path()).unwrap();
        db.open_tree("events.log").unwrap().remove(3u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
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

#[tokio::test]
async fn an_empty_batch_appends_nothing() {
    let store = Store::temporary().unwrap();
    let log = store.log::<Rec>("e").unwrap();
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

#[tokio::test]
async fn a_corrupt_record_deep_in_a_long_read_ends_it_in_order() {
    // 1,000 records read as one run, decoded in parallel: the result stays in order.
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1000).await;
    rewrite_value(dir.path(), 700, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    });
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    let read: Vec<_> = log.read(1).collect();
    assert_eq!(read.len(), 700, "records 1..=699, then the error, then nothing");
    for (i, r) in read[..699].iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().seq, i as u64 + 1);
    }
    assert!(matches!(read[699], Err(Error::Corrupt { seq: 700 })), "{:?}", read[699]);
    assert_eq!(log.read(650).count(), 51, "a read from further on stops there too");
}
