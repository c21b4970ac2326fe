//! `store::copy`: a sled store moved into an empty PostgreSQL database keeps every record's
//! bytes (same heads, same chain tips, same records), its snapshots, checkpoints and tables; a
//! non-empty target and a damaged source are refused before anything is written.

#[path = "common/backends.rs"]
mod backends;
mod common;

use common::Rec;
use store::{Error, Log, PgStore, PgTls, Store};

fn all_snapshots<L: Log<Rec>>(log: &L) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = log.latest_snapshot().unwrap();
    while let Some(s) = at {
        at = if s.seq == 0 { None } else { log.snapshot_at_or_before(s.seq - 1).unwrap() };
        out.push((s.seq, s.bytes));
    }
    out
}

async fn target() -> (String, PgStore) {
    let db = tokio::task::spawn_blocking(|| sims::postgres::Cluster::shared().database("copy").unwrap()).await.unwrap();
    let pg = PgStore::connect(backends::Postgres::config(&db), PgTls::Off).await.unwrap();
    (db, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_copied_to_postgres_keeps_every_byte_and_chains_the_same() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let events = store.log::<Rec>("events").unwrap();
        // More than one copy chunk, in groups of many sizes.
        let mut n = 0;
        for size in (1..=120).cycle().take(90) {
            events.append((n..n + size).map(Rec::new).collect()).await.unwrap();
            n += size;
        }
        for seq in (1..=60).map(|i| i * 80) {
            events.save_snapshot(seq, format!("state@{seq}").into_bytes()).unwrap();
        }
        events.set_checkpoint("reconciler-tor1", 4000).unwrap();
        events.set_checkpoint("tap", 17).unwrap();
        let audit = store.log::<Rec>("switch-audit").unwrap();
        audit.append((1..=5).map(Rec::new).collect()).await.unwrap();
        store.table("ledger").unwrap().insert(b"tor1/Ethernet1/10", &true).unwrap();
        store.table("ledger").unwrap().insert(b"tor1/Ethernet2/20", &false).unwrap();
        store.table("meta").unwrap().insert(b"policy", &"p".to_string()).unwrap();
    }
    let source = Store::open_read_only(dir.path()).unwrap();
    let (_db, pg) = target().await;
    let copied = store::copy::copy_to_postgres(&source, &pg, &|_, _, _| {}).await.unwrap();

    let names: Vec<&str> = copied.logs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["events", "switch-audit"]);
    assert_eq!(copied.tables, [("ledger".to_string(), 2), ("meta".to_string(), 1)]);
    assert_eq!(copied.checkpoints, 2);
    for (name, verified) in &copied.logs {
        let from = source.log::<Rec>(name).unwrap();
        let to = pg.log::<Rec>(name).await.unwrap();
        assert_eq!(from.verify().unwrap(), *verified, "{name}: same head and chain tip");
        assert_eq!(to.verify().unwrap(), *verified, "{name}");
        let a: Vec<_> = from.read(1).map(|e| e.unwrap()).collect();
        let b: Vec<_> = to.read(1).map(|e| e.unwrap()).collect();
        assert_eq!(a, b, "{name}: the same records, prev hashes and schemas");
        assert_eq!(all_snapshots(&from), all_snapshots(&to), "{name}: the same snapshots");
        assert_eq!(from.checkpoints().unwrap().len(), if name == "events" { 2 } else { 0 });
        for (c, seq) in from.checkpoints().unwrap() {
            assert_eq!(to.checkpoint(&c).unwrap(), Some(seq));
        }
        // Appends continue the copied chain.
        let next = to.append(vec![Rec::new(1)]).await.unwrap();
        assert_eq!(*next.start(), verified.head + 1);
        assert_eq!(to.verify().unwrap().head, verified.head + 1);
    }
    assert_eq!(copied.snapshots, all_snapshots(&source.log::<Rec>("events").unwrap()).len());
    assert_eq!(pg.table("ledger").get::<bool>(b"tor1/Ethernet2/20").unwrap(), Some(false));
    assert_eq!(pg.table("meta").get::<String>(b"policy").unwrap(), Some("p".into()));

    let again = store::copy::copy_to_postgres(&source, &pg, &|_, _, _| {}).await.unwrap_err();
    assert!(matches!(again, Error::NotEmpty(_)), "a second copy into the same database is refused: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_source_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.log::<Rec>("events").unwrap().append((1..=10).map(Rec::new).collect()).await.unwrap();
    }
    backends::rewrite_value(dir.path(), "events", 6, |v| {
        let last = v.len() - 1;
        v[last] ^= 1;
    });
    let source = Store::open_read_only(dir.path()).unwrap();
    let (_db, pg) = target().await;
    let err = store::copy::copy_to_postgres(&source, &pg, &|_, _, _| {}).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { seq: 6 }), "{err}");
    assert!(pg.is_empty().await.unwrap(), "nothing was written");
    assert!(pg.log_names().await.unwrap().is_empty());
}
