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
    let mut s = State::new(&Policy::default());
    for e in &envs {
        s.apply(black_box(e));
    }
    println!("folded {} events; seq {}; {} ports desired", envs.len(), s.seq(), s.desired().ports.len());
}
