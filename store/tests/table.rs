//! The key-value table (the ownership ledger lives in one) on sled and on PostgreSQL: values
//! round-trip, batches are atomic and durable across a reopen, prefix scans keep key order and
//! stop at the prefix (`tor1/` never sees `tor10/`).

#[path = "common/backends.rs"]
mod backends;
mod common;

use store::{PgStore, PgTls, Store, Table, TableBatch};

fn exercise(t: &Table) {
    assert_eq!(t.get::<u32>(b"tor1/a").unwrap(), None);
    t.insert(b"tor1/b", &2u32).unwrap();
    t.insert(b"tor1/a", &1u32).unwrap();
    t.insert(b"tor10/a", &10u32).unwrap();
    t.insert(&[b't', 0xff, 0xff], &255u32).unwrap();
    assert_eq!(t.get::<u32>(b"tor1/a").unwrap(), Some(1));
    let mut batch = TableBatch::default();
    batch.insert(b"tor1/c", &3u32).unwrap();
    batch.remove(b"tor1/b");
    t.apply(batch).unwrap();
    let scanned: Vec<(Vec<u8>, u32)> = t.scan(b"tor1/").unwrap();
    assert_eq!(scanned, vec![(b"tor1/a".to_vec(), 1), (b"tor1/c".to_vec(), 3)], "in key order, the prefix only");
    assert_eq!(t.scan::<u32>(&[b't', 0xff]).unwrap().len(), 1, "a prefix ending in 0xff");
    assert_eq!(t.scan::<u32>(b"").unwrap().len(), 4, "the empty prefix is the whole table");
    t.remove(b"tor10/a").unwrap();
    let mut staged = TableBatch::default();
    staged.insert(b"tor1/d", &4u32).unwrap();
    t.stage(staged).unwrap();
    let err = t.get::<String>(b"tor1/a").map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("tor1/a"), "a value of another type names its key: {err}");
    t.insert(b"z/rec", &common::Rec::new(7)).unwrap();
    assert_eq!(t.get(b"z/rec").unwrap(), Some(common::Rec::new(7)), "any serde value");
}

fn after_reopen(t: &Table) {
    let keys: Vec<Vec<u8>> = t.scan::<u32>(b"tor1").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&b"tor1/a"[..], b"tor1/c", b"tor1/d"]);
}

#[tokio::test]
async fn sled_table_round_trips_scans_by_prefix_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        exercise(&store.table("ledger").unwrap());
        store.flush().unwrap();
    }
    after_reopen(&Store::open(dir.path()).unwrap().table("ledger").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_round_trips_scans_by_prefix_and_survives_a_reopen() {
    let db =
        tokio::task::spawn_blocking(|| sims::postgres::Cluster::shared().database("table").unwrap()).await.unwrap();
    {
        let store = PgStore::connect(backends::Postgres::config(&db), PgTls::Off).await.unwrap();
        exercise(&store.table("ledger"));
        assert!(store.table("other").scan::<u32>(b"").unwrap().is_empty(), "tables are apart");
    }
    let store = PgStore::connect(backends::Postgres::config(&db), PgTls::Off).await.unwrap();
    after_reopen(&store.table("ledger"));
}
