//! `why --at` at the start, the middle and the head of a long log: how much of it a history
//! query folds once provenance lives in the projector state and snapshots are retained.
//!
//! Builds a data directory holding a sled log of the projector benchmarks' world (1,000 hosts,
//! 50,000 VMs, then one-change events: `engine/benches/common`), `NETFOLD_BENCH_EVENTS` in all
//! (default 10,000,000), saving a snapshot every `NETFOLD_BENCH_SNAPSHOT_EVERY` events (default
//! 10,000, the agent's default) and letting the log thin them as the agent's log does
//! (`store/src/retention.rs`). Then it opens the directory as `netfold why` does
//! ([`History::open`]: a private read-only copy) and asks `why` for one VLAN at seq 1, the
//! middle, the head, and the worst point (the last seq before the end of the widest gap between
//! retained snapshots: the longest fold), printing each answer's time (median, min and max of 7),
//! where its fold started and how many events it folded, beside the same answer from a full fold.
//! `NETFOLD_BENCH_DIR` names a directory to build in and keep; one that holds a log already is
//! reused as it is (the build takes minutes).
//!
//! Run: `cargo bench -p replay --bench why_at` (about 3 GB in a temporary directory).

#[path = "../../engine/benches/common/mod.rs"]
mod common;

/// The allocator the `netfold` binary runs with, so the figures are the product's (decoding
/// allocates every string of every event; with glibc's allocator, freeing them on the folding
/// thread, not the decoding one, costs more than the fold).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use engine::projector::State;
use engine::{Envelope, Recorded, SwitchPort, VlanId};
use replay::{History, Point};
use store::layout::{db_path, EVENTS_LOG};
use store::{Log, Store};

const BATCH: usize = 4096;
/// How many times each point is asked.
const REPEAT: usize = 7;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let total = env_u64("NETFOLD_BENCH_EVENTS", 10_000_000);
    let every = env_u64("NETFOLD_BENCH_SNAPSHOT_EVERY", 10_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let temp = tempfile::tempdir().unwrap();
    // A kept directory (`NETFOLD_BENCH_DIR`) that already holds the log is reused as it is.
    let kept = std::env::var_os("NETFOLD_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temp.path());
    let t = Instant::now();
    let head = {
        let store = Store::open(db_path(dir)).unwrap();
        let log = store.log::<Recorded>(EVENTS_LOG).unwrap();
        let mut state = State::new(&Default::default());
        let mut g = common::world();
        let mut pending: Vec<Recorded> =
            g.envs.drain(..).map(|e| Recorded { at: e.at, hypervisor: e.hypervisor, event: e.event }).collect();
        let mut i = 0u64;
        let mut next_snapshot = every;
        let reused = log.head() > 0;
        while !reused && log.head() < total {
            while pending.len() < BATCH && log.head() + (pending.len() as u64) < total {
                i += 1;
                let at = 1_790_000_000_000 + i;
                pending.extend(common::step(&mut g, i as usize).into_iter().map(|(hypervisor, event)| Recorded {
                    at,
                    hypervisor,
                    event,
                }));
            }
            let batch = std::mem::take(&mut pending);
            let from = log.head() + 1;
            rt.block_on(log.append(batch.clone())).expect("append a batch");
            for (n, r) in batch.into_iter().enumerate() {
                let seq = from + n as u64;
                state.apply(&Envelope {
                    seq,
                    at: r.at,
                    hypervisor: r.hypervisor,
                    schema: 1,
                    prev: [0; 32],
                    event: r.event,
                });
                if seq == next_snapshot {
                    log.save_snapshot(seq, state.encode()).expect("save a snapshot");
                    next_snapshot += every;
                }
            }
        }
        log.head()
    };
    println!("built a log of {head} events with a snapshot every {every} in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let h = History::open(dir).unwrap();
    println!("History::open (private read-only copy + sled open): {:.2?}", t.elapsed());

    // A VLAN the world puts on a port from its first inventory on.
    let port = SwitchPort::new("tor0", "ethernet1/0/0").unwrap();
    let vlan = VlanId::new(100).unwrap();
    let none = &|_, _| {};
    // Every retained snapshot, newest first, then the widest gap between two of them: the
    // last seq before its end folds the most.
    let mut retained = Vec::new();
    let mut below = head;
    while let Some(s) = h.log().snapshot_at_or_before(below).unwrap() {
        retained.push(s.seq);
        below = s.seq - 1;
    }
    let (start, end) = retained.windows(2).map(|w| (w[1], w[0])).max_by_key(|(a, b)| b - a).unwrap_or((0, head));
    println!("{} snapshots retained; the widest gap is {start}..{end}", retained.len());
    let worst = end - 1;
    for at in [1, head / 2, head, worst] {
        let point = Some(Point::Seq(at));
        let start = h.log().snapshot_at_or_before(at).unwrap().map_or(0, |s| s.seq);
        // Asked several times: one answer's time on a shared machine is mostly its neighbours'.
        let mut took = Vec::new();
        let mut quick = None;
        for _ in 0..REPEAT {
            let t = Instant::now();
            quick = Some(h.why(&port, vlan, point, none).unwrap());
            took.push(t.elapsed());
        }
        took.sort();
        let quick = quick.expect("asked at least once");
        let t = Instant::now();
        let full = replay::history::explain(&h.fold(point, none).unwrap(), &port, vlan);
        let full_took = t.elapsed();
        assert_eq!(
            serde_json::to_value(&quick).unwrap(),
            serde_json::to_value(&full).unwrap(),
            "why at {at}: from the snapshot and from the start must agree"
        );
        println!(
            "why --at {at}: median {:.2?} (min {:.2?}, max {:.2?} of {REPEAT}; from the snapshot at {start}: {} events \
             folded; {} reasons; since {:?}) — full fold {full_took:.2?}",
            took[REPEAT / 2],
            took[0],
            took[REPEAT - 1],
            at - start,
            quick.reasons.len(),
            quick.since.map(|s| s.0),
        );
    }
}
