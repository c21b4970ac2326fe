//! Property test: random sequences of appends, reads, subscriptions and restarts on a log —
//! sled, the memory twin and PostgreSQL — behave exactly like a `Vec` (the model), and the log
//! always verifies.

#[path = "common/backends.rs"]
mod backends;
mod common;

use backends::{Backend, Memory, Postgres, Sled};
use common::Rec;
use proptest::prelude::*;
use store::Log;

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u64>),
    Read(u64),
    Subscribe(u64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(any::<u64>(), 0..20).prop_map(Op::Append),
        2 => (0u64..200).prop_map(Op::Read),
        1 => (0u64..200).prop_map(Op::Subscribe),
        1 => Just(Op::Restart),
    ]
}

/// Runs `ops` against back end `B` and the model; the first mismatch is the failure.
fn run<B: Backend>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut model: Vec<u64> = Vec::new();
    let mut backend = rt.block_on(B::fresh());
    let mut log = Some(rt.block_on(backend.open("events")));
    for op in ops {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append(ns) => {
                let range = rt.block_on(l.append(ns.iter().copied().map(Rec::new).collect())).unwrap();
                prop_assert_eq!(*range.start(), model.len() as u64 + 1);
                prop_assert_eq!(range.count(), ns.len());
                model.extend(ns);
            }
            Op::Read(from) => {
                let got: Vec<u64> = l.read(from).map(|e| e.unwrap().record.n).collect();
                let skip = from.saturating_sub(1) as usize;
                let want: Vec<u64> = model.iter().skip(skip).copied().collect();
                prop_assert_eq!(got, want);
            }
            Op::Subscribe(from) => {
                let mut sub = l.subscribe(from);
                let skip = from.saturating_sub(1) as usize;
                for (i, want) in model.iter().enumerate().skip(skip) {
                    let e = rt.block_on(sub.next()).unwrap().unwrap();
                    prop_assert_eq!(e.seq, i as u64 + 1);
                    prop_assert_eq!(e.record.n, *want);
                }
            }
            Op::Restart => {
                drop(log.take());
                rt.block_on(backend.restart());
                log = Some(rt.block_on(backend.open("events")));
            }
        }
        let l = log.as_ref().unwrap();
        prop_assert_eq!(l.head(), model.len() as u64);
        prop_assert_eq!(l.verify().unwrap().head, model.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn sled_log_matches_a_vec_model_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        run::<Sled>(ops)?;
    }

    #[test]
    fn memory_log_matches_a_vec_model_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        run::<Memory>(ops)?;
    }

    #[test]
    fn postgres_log_matches_a_vec_model_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        run::<Postgres>(ops)?;
    }
}
