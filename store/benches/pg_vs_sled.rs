//! Durable append and replay on PostgreSQL beside sled, in one run on this machine (ADR 0008).
//!
//! PostgreSQL is a private cluster (`sims::postgres`: Debian's `postgresql-15`, loopback TCP,
//! SCRAM login) with `fsync = on` and `synchronous_commit = on`: an append is acknowledged once
//! its commit record is flushed to the WAL. sled is a data directory on the same disk, durable as
//! netfold runs it (flush + fdatasync, ADR 0001). Each figure is measured on a fresh, empty log.
//!
//! Printed, per back end: the lone event's p50/p99 latency (sequential single appends), events/s
//! for batches of 64 and 1024 from one appender, events/s and p99 for 16 concurrent single-event
//! appenders (group commit), and the replay rate (read + decode of 100,000 events). `pg-fenced`:
//! the same on PostgreSQL with every append under a lease's fence, as instances sharing the
//! store append (ADR 0014).
//!
//! Run: `cargo bench -p store --bench pg_vs_sled` (figures depend on the machine's load: note
//! `uptime` beside them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Log, PgStore, PgTls, Store};

#[path = "common/event.rs"]
mod event;
use event::{event, Event};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONE: usize = 1000;
const CONCURRENT: usize = 16;
const REPLAY: u64 = 100_000;

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn lone<L: Log<Event>>(log: &L) -> (Duration, Duration) {
    let mut lat = Vec::with_capacity(LONE);
    for i in 0..LONE {
        let t = Instant::now();
        log.append(vec![event(i as u64)]).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    (quantile(&lat, 0.5), quantile(&lat, 0.99))
}

async fn batches<L: Log<Event>>(log: &L, batch: usize, rounds: usize) -> f64 {
    let t = Instant::now();
    for r in 0..rounds {
        log.append((0..batch).map(|i| event((r * batch + i) as u64)).collect()).await.unwrap();
    }
    (batch * rounds) as f64 / t.elapsed().as_secs_f64()
}

async fn concurrent<L: Log<Event>>(log: Arc<L>, rounds: usize) -> (f64, Duration) {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..CONCURRENT {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(rounds);
            for r in 0..rounds {
                let s = Instant::now();
                log.append(vec![event((a * rounds + r) as u64)]).await.unwrap();
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap());
    }
    lat.sort();
    ((CONCURRENT * rounds) as f64 / t.elapsed().as_secs_f64(), quantile(&lat, 0.99))
}

async fn replay<L: Log<Event>>(log: &L) -> f64 {
    for chunk in 0..REPLAY / 1000 {
        log.append((0..1000).map(|i| event(chunk * 1000 + i)).collect()).await.unwrap();
    }
    let t = Instant::now();
    let mut n = 0u64;
    for e in log.read(1) {
        e.unwrap();
        n += 1;
    }
    assert_eq!(n, REPLAY);
    n as f64 / t.elapsed().as_secs_f64()
}

/// One back end: opens a fresh log per figure with `open`.
async fn measure<L: Log<Event>, F: std::future::Future<Output = L>>(name: &str, mut open: impl FnMut(&str) -> F) {
    let (p50, p99) = lone(&open("lone").await).await;
    println!("{name:<10} lone event            p50 {p50:>10.3?}  p99 {p99:>10.3?}  ({LONE} sequential appends)");
    for (batch, rounds) in [(64usize, 100usize), (1024, 20)] {
        let rate = batches(&open(&format!("batch{batch}")).await, batch, rounds).await;
        println!("{name:<10} batch {batch:>4}            {rate:>12.0} events/s  ({rounds} batches)");
    }
    let (rate, p99) = concurrent(Arc::new(open("concurrent").await), 100).await;
    println!("{name:<10} {CONCURRENT} appenders x 1 event {rate:>11.0} events/s  p99 {p99:>10.3?}");
    let rate = replay(&open("replay").await).await;
    println!("{name:<10} replay (read+decode)  {rate:>12.0} events/s  ({REPLAY} events)");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("== durable append: PostgreSQL (synchronous_commit = on, fsync = on) vs sled ==");
    println!("load average at start: {}", uptime.trim());
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path()).unwrap();
    rt.block_on(measure("sled", |name: &str| {
        let log = sled.log::<Event>(name).unwrap();
        async move { log }
    }));
    let cluster = sims::postgres::Cluster::start().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster.database("bench").unwrap();
    let mut config = store::PgConfig::new();
    config.host(cluster.host()).port(cluster.port()).user(cluster.user()).password(cluster.password()).dbname(&db);
    let synchronous = cluster.sql(&db, "SHOW synchronous_commit").unwrap();
    let fsync = cluster.sql(&db, "SHOW fsync").unwrap();
    println!("PostgreSQL: synchronous_commit = {}, fsync = {}", synchronous.trim(), fsync.trim());
    let pg = rt.block_on(PgStore::connect(config, PgTls::Off)).unwrap();
    rt.block_on(measure("postgres", |name: &str| {
        let (pg, name) = (pg.clone(), name.to_string());
        async move { pg.log::<Event>(&name).await.unwrap() }
    }));
    // As instances sharing the store append (ADR 0014): each append under a lease's fence,
    // checked in its transaction (the log's row locked, the lease's row read `FOR SHARE`).
    let lease = rt
        .block_on(store::Leases::acquire(&pg.leases(), "hypervisor/bench", "bench", Duration::from_secs(3600)))
        .unwrap()
        .expect("a free lease");
    rt.block_on(measure("pg-fenced", |name: &str| {
        let (pg, name, fence) = (pg.clone(), format!("fenced-{name}"), lease.fence());
        async move { store::Fenced::new(Arc::new(pg.log::<Event>(&name).await.unwrap()), fence) }
    }));
    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", uptime.trim());
}
