//! Folds the projector benchmark's generated 1,000,000-event log once, for profiling under
//! `valgrind --tool=callgrind` (repeatable instruction counts on a shared machine, where the
//! criterion benchmark's many passes would take too long). With an argument `gen`, only
//! generates the log (the baseline to subtract).

use std::hint::black_box;

use engine::config::Policy;
use engine::projector::State;

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let envs = common::log();
    if std::env::args().nth(1).as_deref() == Some("gen") {
        black_box(&envs);
        return;
    }
    let cpu0 = cpu_ns();
    let mut s = State::new(&Policy::default());
    for e in &envs {
        s.apply(black_box(e));
    }
    let cpu = cpu0.zip(cpu_ns()).map(|(a, b)| (b - a) as f64 / 1e9).unwrap_or(f64::NAN);
    println!(
        "folded {} events in {:.3} s on CPU = {:.0} events/s per CPU-second; {} ports desired",
        envs.len(),
        cpu,
        envs.len() as f64 / cpu,
        s.desired().ports.len()
    );
}

/// CPU time this thread has run, ns (Linux).
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}
