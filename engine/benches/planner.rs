//! Planner time at the scale target: 1,000 ports × 4,094 VLANs — from an empty switch (every
//! membership to add) and in steady state (nothing to do, the common case every resync).

use std::collections::BTreeSet;

use criterion::{criterion_group, criterion_main, Criterion};
use engine::plan::{plan, Policy, PortSets};
use engine::port::{Grammar, PortName};
use engine::VlanId;

fn all_vlans() -> BTreeSet<VlanId> {
    (1..=4094).map(|n| VlanId::new(n).unwrap()).collect()
}

fn bench(c: &mut Criterion) {
    let vlans = all_vlans();
    let desired: PortSets =
        (0..1000).map(|p| (PortName::parse(Grammar::Eos, &format!("ethernet1/{p}")).unwrap(), vlans.clone())).collect();
    let empty: PortSets = desired.keys().map(|p| (p.clone(), BTreeSet::new())).collect();
    let policy = Policy::default();
    let mut g = c.benchmark_group("planner_1000_ports_x_4094_vlans");
    g.sample_size(10);
    g.bench_function("from_empty", |b| {
        b.iter(|| {
            let p = plan(&desired, &empty, &PortSets::new(), &policy);
            assert_eq!(p.ops.len(), 4_094_000);
            p
        })
    });
    g.bench_function("steady_state", |b| {
        b.iter(|| {
            let p = plan(&desired, &desired, &desired, &policy);
            assert!(p.ops.is_empty());
            p
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
