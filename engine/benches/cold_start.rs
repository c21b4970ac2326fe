//! Replay and cold start from a durable log, the two log-side targets of the design: replay
//! (read + decode + fold from disk) at ≥ 2,000,000 events/s, and cold start on a 10,000,000-event
//! log in < 2 s through snapshots.
//!
//! Builds a sled log of the projector benchmarks' world (1,000 hosts, 50,000 VMs) followed by
//! their one-change events (`common::step`), `NETFOLD_BENCH_EVENTS` in all (default 10,000,000; about 2 GB on disk), and
//! saves a snapshot 5,000 events before the head, the expected distance with the engine's default
//! of a snapshot every 10,000 events. Then it prints:
//! - replay: the whole log read, decoded and folded from disk, events/s;
//! - cold start: reopening the database and `Engine::start` from that snapshot + the tail; then
//!   three more starts, each after a clean shutdown (which snapshots at the head, so no tail).
//!
//! The database's files are in the page cache (it was just written): a process cold start, not a
//! cold disk.
//!
//! Run: `cargo bench -p engine --bench cold_start` (the log is built in a temporary directory).

mod common;

/// The allocator the `netfold` binary runs with, so the figures are the product's (decoding
/// allocates every string of every event; with glibc's allocator, freeing them on the folding
/// thread, not the decoding one, costs more than the fold).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::clock::SystemClock;
use engine::config::{Config, Policy};
use engine::projector::State;
use engine::runtime::Engine;
use engine::{Envelope, Recorded};
use store::{Log, Store};

/// Events appended per batch while building the log.
const BATCH: usize = 4096;
/// How far before the head the snapshot is taken.
const TAIL: u64 = 5_000;

fn events() -> u64 {
    std::env::var("NETFOLD_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
}

/// Appends the generated log to `log`, returning the head.
async fn build(log: &store::SledLog<Recorded>, total: u64) -> u64 {
    let mut g = common::world();
    let inventory: Vec<Recorded> =
        g.envs.drain(..).map(|e| Recorded { at: e.at, hypervisor: e.hypervisor, event: e.event }).collect();
    log.append(inventory).await.expect("append the inventory");
    let mut i = 0;
    while log.head() < total {
        let want = (total - log.head()).min(BATCH as u64) as usize;
        let mut batch = Vec::with_capacity(want + 1);
        while batch.len() < want {
            i += 1;
            let at = 1_790_000_000_000 + i as u64;
            batch.extend(common::step(&mut g, i).into_iter().map(|(hypervisor, event)| Recorded {
                at,
                hypervisor,
                event,
            }));
        }
        log.append(batch).await.expect("append a batch");
    }
    log.head()
}

fn main() {
    let total = events();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::default();

    let t = Instant::now();
    let head = {
        let store = Store::open(dir.path()).unwrap();
        let log = store.log::<Recorded>("events").unwrap();
        rt.block_on(build(&log, total))
    };
    println!("built a log of {head} events in {:.1} s", t.elapsed().as_secs_f64());

    // Replay: everything from disk, read + decode + fold, on a freshly opened database.
    let (state, replay) = {
        let store = Store::open(dir.path()).unwrap();
        let log = store.log::<Recorded>("events").unwrap();
        let (t, cpu, fold_cpu) = (Instant::now(), process_cpu(), thread_cpu());
        let mut state = State::new(&policy);
        let mut snapshot = None;
        for entry in log.read(1) {
            let envelope = Envelope::from(entry.expect("read the log"));
            state.apply(&envelope);
            if envelope.seq == head - TAIL {
                snapshot = Some(state.encode());
            }
        }
        let replay = (t.elapsed(), process_cpu() - cpu, thread_cpu() - fold_cpu);
        log.save_snapshot(head - TAIL, snapshot.expect("the snapshot point was folded")).unwrap();
        (state, replay)
    };
    let (wall, cpu, fold_cpu) = replay;
    println!(
        "replay from disk (read + decode + fold): {head} events in {:.2} s = {:.0} events/s; \
         CPU {:.2} s in all ({:.2} µs/event), {:.2} s on the folding thread ({:.2} µs/event)",
        wall.as_secs_f64(),
        head as f64 / wall.as_secs_f64(),
        cpu,
        cpu * 1e6 / head as f64,
        fold_cpu,
        fold_cpu * 1e6 / head as f64,
    );

    // Cold start: open the database and start the engine from the snapshot + tail. A clean
    // shutdown saves a snapshot at the head, so only the first start has the tail to fold.
    let mut starts: Vec<(Duration, Duration)> = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        let store = Store::open(dir.path()).unwrap();
        let log = Arc::new(store.log::<Recorded>("events").unwrap());
        let opened = t.elapsed();
        let engine = rt.block_on(Engine::start(log, Config::default(), Arc::new(SystemClock))).expect("start");
        starts.push((t.elapsed(), opened));
        let recovered = engine.state().read(|s| s.state_hash());
        assert_eq!(recovered, state.state_hash(), "snapshot + tail must equal the full fold");
        rt.block_on(engine.shutdown()).unwrap();
    }
    let show = |(all, open): (Duration, Duration)| format!("{all:.2?} (opening the database {open:.2?})");
    println!("cold start (snapshot at {} + {TAIL}-event tail): {}", head - TAIL, show(starts[0]));
    for &s in &starts[1..] {
        println!("start after a clean shutdown (snapshot at the head): {}", show(s));
    }
    println!("disk: {:.2} GB", dir_size(dir.path()) as f64 / 1e9);
}

/// CPU time of the whole process, s (Linux: user + system, in clock ticks of 10 ms): the work
/// replay does on every thread, whatever else runs on the machine.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at its closing ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time of the calling thread, s (Linux).
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
