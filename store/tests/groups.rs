//! Group commit at its limits on sled: appends larger than one group (`MAX_GROUP`, 65,536
//! records) and than one block (`MAX_BLOCK_BYTES`, 6 KiB) are split by the writer, never torn:
//! each append gets one contiguous range, the log reads back every record where it was
//! acknowledged, and it survives a reopen.

mod common;

use std::sync::Arc;

use common::Rec;
use store::{Log, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_larger_than_a_group_or_a_block_stay_whole_and_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = Arc::new(store.log::<Rec>("events").unwrap());
    // Three concurrent appends of 40,000 records: at most one group holds two of them (the
    // writer stops gathering at 65,536 records), and every one spans many 6 KiB blocks.
    let mut tasks = Vec::new();
    for t in 0..3u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Rec> = (0..40_000).map(|i| Rec::new(t * 1_000_000 + i)).collect();
            (t, log.append(batch).await.unwrap())
        }));
    }
    let mut ranges = Vec::new();
    for task in tasks {
        ranges.push(task.await.unwrap());
    }
    assert_eq!(log.head(), 120_000);
    let read: Vec<u64> = log.read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(read.len(), 120_000);
    for (t, range) in &ranges {
        assert_eq!(range.clone().count(), 40_000, "append {t}: one contiguous range");
        for (i, seq) in range.clone().enumerate() {
            assert_eq!(read[(seq - 1) as usize], t * 1_000_000 + i as u64, "append {t}: record {seq}");
        }
    }
    log.verify().unwrap();
    drop(log);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    assert_eq!(log.verify().unwrap().head, 120_000);
    assert_eq!(log.append(vec![Rec::new(7)]).await.unwrap(), 120_001..=120_001);
}
