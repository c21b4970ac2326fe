//! Convergence time of the reconciler on a real Open vSwitch: 48 ports × 200 VLANs from empty
//! (each port starting with only the parking VLAN). One measured iteration = one reconcile
//! cycle (read, plan, 9,600 guarded mutations in per-port transactions, ledger and audit
//! writes); the switch and ledger are reset between iterations, outside the measurement.

#[path = "../tests/support/ovs.rs"]
mod ovs;
#[path = "../tests/support/rig.rs"]
mod rig;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adapters::ovs::{Config, OvsSwitch};
use criterion::{criterion_group, criterion_main, Criterion};
use engine::reconciler::Config as RConfig;
use engine::switch::Switch;
use ovs::Ovs;
use rig::Rig;

const PORTS: usize = 48;
const VLANS: u16 = 200;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ovs = Ovs::start();
    let ports: Vec<String> = (0..PORTS).map(|i| format!("p{i}")).collect();
    for p in &ports {
        ovs.add_trunk_port(p, &[4094]);
    }
    let (rig, mut r) = rt.block_on(async {
        let sw = OvsSwitch::start(&Config {
            name: "ovs1".into(),
            endpoint: ovs.unix_endpoint(),
            parking_vlan: 4094,
            timeout_ms: 30_000,
            unixctl: None,
        })
        .unwrap();
        for _ in 0..500 {
            if sw.read(&BTreeSet::new()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Rig::new(
            sw,
            RConfig {
                policy: engine::plan::Policy { max_removals: usize::MAX, ..Default::default() },
                ..Default::default()
            },
        )
    });
    let vlans: Vec<u16> = (1..=VLANS).collect();
    let full: Vec<(&str, &[u16])> = ports.iter().map(|p| (p.as_str(), vlans.as_slice())).collect();
    let mut g = c.benchmark_group("ovs_converge");
    g.sample_size(10);
    g.bench_function("48_ports_x_200_vlans_from_empty", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Reset: netfold removes everything it owns (not measured).
                rig.set(&[]);
                rt.block_on(r.cycle()).unwrap();
                assert!(ports.iter().all(|p| ovs.trunks(p) == vec![4094]));
                rig.set(&full);
                let start = Instant::now();
                let report = rt.block_on(r.cycle()).unwrap();
                total += start.elapsed();
                assert_eq!(report.outcomes.len(), PORTS * VLANS as usize);
                assert_eq!(report.failed(), 0);
            }
            total
        })
    });
    g.finish();
    assert_eq!(ovs.trunks("p0").len(), VLANS as usize + 1);
}

criterion_group!(benches, bench);
criterion_main!(benches);
