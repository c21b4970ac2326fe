//! Log throughput and latency on sled (durable: every acknowledged append is flushed).
//!
//! Criterion measures durable append with batches of 1, 64 and 1024 events, 1/8/64 concurrent
//! single-event appenders (group commit), and sequential read + decode. After the criterion
//! groups, the binary prints the figures the targets are stated in: events/s for each case and
//! the p50/p99 latency of a lone durable event.
//!
//! Run: `cargo bench -p store --bench log`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use store::{Log, SledLog, Store};

/// The allocator the `netfold` binary runs with, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/event.rs"]
mod event;
use event::{event, Event};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn open() -> (tempfile::TempDir, Store, Arc<SledLog<Event>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = Arc::new(store.log("bench").unwrap());
    (dir, store, log)
}

/// Events/s for `appenders` tasks each appending `rounds` batches of `batch` events.
async fn append_rate(log: &Arc<SledLog<Event>>, appenders: usize, batch: usize, rounds: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                log.append((0..batch).map(|i| event((r * batch + i) as u64)).collect()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (appenders * batch * rounds) as f64 / start.elapsed().as_secs_f64()
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("append_durable_batch");
    for batch in [1usize, 64, 1024] {
        let (_dir, _store, log) = open();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.to_async(&rt).iter(|| {
                let log = log.clone();
                async move { log.append((0..batch).map(|i| event(i as u64)).collect()).await.unwrap() }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("append_concurrent_single");
    for appenders in [1usize, 8, 64] {
        let (_dir, _store, log) = open();
        g.throughput(Throughput::Elements(appenders as u64 * 16));
        g.bench_with_input(BenchmarkId::from_parameter(appenders), &appenders, |b, &n| {
            b.to_async(&rt).iter(|| append_rate(&log, n, 1, 16))
        });
    }
    g.finish();
}

/// Reads and decodes every record, failing on any error; returns how many.
fn read_all(log: &SledLog<Event>) -> u64 {
    let mut n = 0;
    for e in log.read(1) {
        e.unwrap();
        n += 1;
    }
    n
}

fn bench_read(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, _store, log) = open();
    const N: u64 = 100_000;
    rt.block_on(async {
        for chunk in 0..N / 1000 {
            log.append((0..1000).map(|i| event(chunk * 1000 + i)).collect()).await.unwrap();
        }
    });
    let mut g = c.benchmark_group("read_decode");
    g.throughput(Throughput::Elements(N));
    g.bench_function("sequential_100k", |b| b.iter(|| assert_eq!(read_all(&log), N)));
    g.finish();
}

/// The figures the targets are stated in, printed plainly.
fn report() {
    let rt = runtime();
    println!("\n== netfold store figures (durable, sled, this machine) ==");
    for batch in [1usize, 64, 1024] {
        let (_dir, _store, log) = open();
        let rounds = (20_000 / batch).clamp(20, 2000);
        let rate = rt.block_on(append_rate(&log, 1, batch, rounds));
        println!("append batch {batch:>4}, 1 appender : {rate:>12.0} events/s");
    }
    for appenders in [1usize, 8, 64] {
        let (_dir, _store, log) = open();
        let rate = rt.block_on(append_rate(&log, appenders, 1, 4000 / appenders.min(40)));
        println!("append batch    1, {appenders:>2} appenders: {rate:>12.0} events/s (group commit)");
    }
    {
        let (_dir, _store, log) = open();
        let rate = rt.block_on(append_rate(&log, 64, 64, 40));
        println!("append batch   64, 64 appenders: {rate:>12.0} events/s (group commit)");
    }
    let (_dir, _store, log) = open();
    let mut lat: Vec<Duration> = (0..2000)
        .map(|i| {
            let t = Instant::now();
            rt.block_on(log.append(vec![event(i)])).unwrap();
            t.elapsed()
        })
        .collect();
    lat.sort();
    println!(
        "lone event durable latency: p50 {:?}, p99 {:?}, max {:?} (2000 appends)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    );
    let n = 200_000u64;
    rt.block_on(async {
        for chunk in 0..n / 1000 {
            log.append((0..1000).map(|i| event(chunk * 1000 + i)).collect()).await.unwrap();
        }
    });
    let t = Instant::now();
    let count = read_all(&log);
    println!("read + decode: {:.0} events/s ({count} events)", count as f64 / t.elapsed().as_secs_f64());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_append, bench_read
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
