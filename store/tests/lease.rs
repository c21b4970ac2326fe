//! Leases with fencing tokens (ADR 0009), on PostgreSQL and on the in-memory twin: tokens only
//! grow, a held lease is refused to others until it expires or is released, and an append made
//! under a lease that was taken over fails — checked in the append's own transaction, so every
//! append a deposed holder got acknowledged comes before the new holder's first.

#[path = "common/backends.rs"]
mod backends;
mod common;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rec;
use store::{Error, Fence, Lease, Leases, Log, MemoryLeases, MemoryLog, PgLeases, PgLog};

/// A log and the leases its fenced appends are checked against.
trait Rig: Send + Sync + Sized + 'static {
    type L: Leases;
    type Log: Log<Rec>;
    async fn new() -> Self;
    fn leases(&self) -> &Self::L;
    fn log(&self) -> &Self::Log;
    async fn append_fenced(&self, batch: Vec<Rec>, fence: &Fence) -> store::Result<RangeInclusive<u64>>;
    /// Lets `ttl` pass (the twin's clock; real time on PostgreSQL, whose clock is the server's).
    fn pass(&self, ttl: Duration);
}

struct Memory {
    leases: MemoryLeases,
    log: MemoryLog<Rec>,
}

impl Rig for Memory {
    type L = MemoryLeases;
    type Log = MemoryLog<Rec>;
    async fn new() -> Self {
        Self { leases: MemoryLeases::new(), log: MemoryLog::new() }
    }
    fn leases(&self) -> &MemoryLeases {
        &self.leases
    }
    fn log(&self) -> &MemoryLog<Rec> {
        &self.log
    }
    async fn append_fenced(&self, batch: Vec<Rec>, fence: &Fence) -> store::Result<RangeInclusive<u64>> {
        self.log.append_fenced_by(batch, &self.leases, fence).await
    }
    fn pass(&self, ttl: Duration) {
        self.leases.advance(ttl);
    }
}

struct Postgres {
    _backend: backends::Postgres,
    leases: PgLeases,
    log: PgLog<Rec>,
}

impl Rig for Postgres {
    type L = PgLeases;
    type Log = PgLog<Rec>;
    async fn new() -> Self {
        use backends::Backend as _;
        let mut b = backends::Postgres::fresh().await;
        let log = b.open("events").await;
        let store = store::PgStore::connect(backends::Postgres::config(b.db()), store::PgTls::Off).await.unwrap();
        Self { leases: store.leases(), log, _backend: b }
    }
    fn leases(&self) -> &PgLeases {
        &self.leases
    }
    fn log(&self) -> &PgLog<Rec> {
        &self.log
    }
    async fn append_fenced(&self, batch: Vec<Rec>, fence: &Fence) -> store::Result<RangeInclusive<u64>> {
        self.log.append_fenced(batch, fence).await
    }
    fn pass(&self, _ttl: Duration) {}
}

const TTL: Duration = Duration::from_millis(800);

/// Takes `name` for `holder`, waiting (bounded) for the current holder's lease to run out.
async fn take<L: Leases>(leases: &L, name: &str, holder: &str) -> Lease {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = leases.acquire(name, holder, TTL).await.unwrap() {
            return l;
        }
        assert!(Instant::now() < deadline, "{holder} never took {name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tokens_grow_and_a_deposed_holder_cannot_append<R: Rig>() {
    let rig = R::new().await;
    let l = rig.leases();
    let a = l.acquire("switch/tor1", "a", TTL).await.unwrap().expect("a free lease is taken");
    assert_eq!(l.acquire("switch/tor1", "b", TTL).await.unwrap(), None, "held: refused to another");
    assert_eq!(l.acquire("switch/tor1", "a", TTL).await.unwrap(), Some(a.clone()), "its holder renews, same token");
    assert!(l.renew(&a, TTL).await.unwrap());
    assert_eq!(rig.append_fenced(vec![Rec::new(1)], &a.fence()).await.unwrap(), 1..=1);

    rig.pass(TTL * 2);
    let b = take(rig.leases(), "switch/tor1", "b").await;
    assert!(b.token > a.token, "a new holder gets a higher token: {} after {}", b.token, a.token);
    assert!(!l.renew(&a, TTL).await.unwrap(), "a deposed holder cannot renew");
    let err = rig.append_fenced(vec![Rec::new(2)], &a.fence()).await.unwrap_err();
    assert!(matches!(&err, Error::Fenced { lease, token } if lease == "switch/tor1" && *token == a.token), "{err}");
    assert!(err.to_string().contains("switch/tor1") && err.to_string().contains(&a.token.to_string()), "{err}");
    assert_eq!(rig.append_fenced(vec![Rec::new(3)], &b.fence()).await.unwrap(), 2..=2);
    assert_eq!(rig.log().append(vec![Rec::new(4)]).await.unwrap(), 3..=3, "unfenced appends are not affected");

    l.release(&b).await.unwrap();
    assert!(rig.append_fenced(vec![Rec::new(5)], &b.fence()).await.is_err(), "released: fenced");
    let a2 = l.acquire("switch/tor1", "a", TTL).await.unwrap().expect("a released lease is free");
    assert!(a2.token > b.token);
    let other = l.acquire("hypervisor/vc-east", "b", TTL).await.unwrap().unwrap();
    assert_eq!(other.token, 1, "each lease has its own tokens");
    let h = l.holdings().await.unwrap();
    let tor1 = h.iter().find(|h| h.name == "switch/tor1").unwrap();
    assert_eq!((tor1.holder.as_str(), tor1.token), ("a", a2.token));
    assert!(tor1.remaining > Duration::ZERO && tor1.remaining <= TTL);
    let records: Vec<u64> = rig.log().read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(records, [1, 3, 4], "nothing of the refused appends was written");
    rig.log().verify().unwrap();
}

backends!(memory = super::Memory: tokens_grow_and_a_deposed_holder_cannot_append);
backends!(postgres = super::Postgres: tokens_grow_and_a_deposed_holder_cannot_append);

/// A holder appending as fast as it can while its lease runs out and another takes it: every
/// append it got acknowledged has a lower sequence number than the new holder's first, and its
/// first refused append is `Fenced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_takeover_orders_every_acknowledged_append_of_the_deposed_holder_before_the_new_ones() {
    let rig = Arc::new(Postgres::new().await);
    let a = rig.leases().acquire("switch/tor1", "a", TTL).await.unwrap().unwrap();
    let writer = {
        let (rig, fence) = (rig.clone(), a.fence());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            for n in 0.. {
                match rig.append_fenced(vec![Rec::new(n)], &fence).await {
                    Ok(r) => acked.push(*r.start()),
                    Err(e) => return (acked, e),
                }
                assert!(Instant::now() < deadline, "never fenced");
            }
            unreachable!()
        })
    };
    let b = take(rig.leases(), "switch/tor1", "b").await;
    let first = *rig.append_fenced(vec![Rec::new(u64::MAX)], &b.fence()).await.unwrap().start();
    let (acked, err) = writer.await.unwrap();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(!acked.is_empty(), "a appended while it held the lease");
    assert!(acked.iter().all(|s| *s < first), "an append of a acknowledged after b's first: {first} vs {acked:?}");
    rig.log().verify().unwrap();
}

/// `store::Fenced`, what a switch's reconciler appends its audit through on PostgreSQL (ADR
/// 0014): the plain `Log::append` of the wrapped log is made under the fence, and fails once
/// another holder has the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_fenced_log_appends_only_while_its_lease_holds() {
    use backends::Backend as _;
    let b = backends::Postgres::fresh().await;
    let pg = store::PgStore::connect(backends::Postgres::config(b.db()), store::PgTls::Off).await.unwrap();
    let leases = pg.leases();
    let any = store::AnyStore::Postgres(pg);
    let a = leases.acquire("switch/tor1", "a", TTL).await.unwrap().expect("free");
    let plain = std::sync::Arc::new(any.log_on_loss::<Rec>("events", store::OnLoss::Refuse).await.unwrap());
    let fenced = store::Fenced::new(plain.clone(), a.fence());
    assert_eq!(fenced.append(vec![Rec::new(1)]).await.unwrap(), 1..=1, "appended under a held lease");

    let b_lease = take(&leases, "switch/tor1", "b").await;
    let err = fenced.append(vec![Rec::new(2)]).await.unwrap_err();
    assert!(matches!(&err, Error::Fenced { token, .. } if *token == a.token), "{err}");
    let by_b = store::Fenced::new(plain.clone(), b_lease.fence());
    assert_eq!(by_b.head(), 1);
    assert_eq!(by_b.append(vec![Rec::new(3)]).await.unwrap(), 2..=2, "the new holder appends");
    let records: Vec<u64> = by_b.read(1).map(|e| e.unwrap().record.n).collect();
    assert_eq!(records, [1, 3], "nothing of the refused append was written");
}

/// `Table::fenced`, what the ownership ledger of `netfold run` on PostgreSQL is written through
/// (ADR 0012): a write-ahead claim of a deposed holder is refused in its own transaction, so it
/// never lands without the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_fenced_table_writes_only_while_its_lease_holds() {
    use backends::Backend as _;
    let b = backends::Postgres::fresh().await;
    let pg = store::PgStore::connect(backends::Postgres::config(b.db()), store::PgTls::Off).await.unwrap();
    let leases = pg.leases();
    let a = leases.acquire("switch/tor1", "a", TTL).await.unwrap().expect("free");
    let by_a = pg.table("ledger").fenced(a.fence());
    by_a.insert(b"tor1/e1/100", &1u8).unwrap();

    let b_lease = take(&leases, "switch/tor1", "b").await;
    let err = by_a.insert(b"tor1/e1/101", &1u8).unwrap_err();
    assert!(matches!(&err, Error::Fenced { token, .. } if *token == a.token), "{err}");
    let err = by_a.remove(b"tor1/e1/100").unwrap_err();
    assert!(matches!(&err, Error::Fenced { .. }), "a removal is fenced too: {err}");
    let by_b = pg.table("ledger").fenced(b_lease.fence());
    by_b.insert(b"tor1/e1/102", &1u8).unwrap();
    let keys: Vec<Vec<u8>> = by_b.scan::<u8>(b"tor1/").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [b"tor1/e1/100".to_vec(), b"tor1/e1/102".to_vec()], "nothing of the refused writes landed");
}

/// What a new lease holder reads before it acts (ADR 0014): another process's append reaches
/// this process's published head only with PostgreSQL's notification, a moment later, but
/// `current_head` asks the database, and reads then reach it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_current_head_includes_another_processs_append_before_its_notification() {
    use backends::Backend as _;
    let b = backends::Postgres::fresh().await;
    let here = store::PgStore::connect(backends::Postgres::config(b.db()), store::PgTls::Off).await.unwrap();
    let elsewhere = store::PgStore::connect(backends::Postgres::config(b.db()), store::PgTls::Off).await.unwrap();
    let ours: PgLog<Rec> = here.log("events").await.unwrap();
    let theirs: PgLog<Rec> = elsewhere.log("events").await.unwrap();
    let mut appended = 0;
    for n in 1..=20u64 {
        // Each round appends elsewhere and asks at once, before the notification can arrive
        // (when it has, the published head already counts it, and the check holds as well).
        theirs.append(vec![Rec::new(n)]).await.unwrap();
        appended += 1;
        let head = ours.current_head().await.unwrap();
        assert_eq!(head, appended, "the database's head, whatever the notification did");
        let read: Vec<u64> = ours.read(1).map(|e| e.unwrap().record.n).collect();
        assert_eq!(read, (1..=n).collect::<Vec<_>>(), "a read right after reaches it");
    }
}
