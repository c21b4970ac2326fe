//! Projector benchmarks: fold rate over a generated 1,000,000-event log, latency (with p99) of
//! applying a one-change `Learnt` to a state of 1,000 hosts / 50,000 VMs, and that state's
//! memory (resident-set growth while building it, and its snapshot size), and decoding that
//! state's snapshot.
//!
//! The generated world and log are in `common` (shared with the `fold_once` profiling example).
//!
//! `switch_saw`: folding one `SwitchSaw` (a switch's MAC table and LLDP neighbours) into a state
//! of 2,000 hosts whose 4,000 uplinks no hypervisor ties: every uplink is re-tied.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::config::Policy;
use engine::projector::State;
use engine::{Change, Envelope, Event, Fact, VnicFact};

mod common;
use common::{log, world, Gen, HOSTS_PER_HV, HYPERVISORS};

/// Sums every byte of an event's strings (touches all of its heap memory).
fn touch(e: &Envelope) -> u64 {
    let bytes = |s: &str| s.bytes().map(u64::from).sum::<u64>();
    let mut n = bytes(e.hypervisor.as_str());
    if let Event::Learnt { changes } = &e.event {
        for c in changes {
            if let Change::Upsert(Fact::Vnic(v)) = c {
                n +=
                    [&v.vm, &v.vm_name, &v.nic, &v.mac, &v.host, &v.network].into_iter().map(|s| bytes(s)).sum::<u64>();
            }
        }
    }
    n
}

fn fold(envs: &[Envelope]) -> State {
    let mut s = State::new(&Policy::default());
    envs.iter().for_each(|e| s.apply(e));
    s
}

/// CPU time this thread has run, ns (Linux): measures work, not waiting for a core on a
/// shared machine.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Resident set size of this process, bytes (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Power toggles for `n` VMs spread over the state: off for each, then on for each (the state returns to
/// where it started after a full cycle).
fn toggles(g: &Gen, n: usize) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(2 * n);
    for powered_on in [false, true] {
        for k in 0..n {
            let (id, v) = &g.vms[(k * 7919) % g.vms.len()];
            let v = VnicFact { powered_on, ..v.clone() };
            out.push(Envelope {
                seq: 0,
                at: 0,
                hypervisor: id.clone(),
                schema: 1,
                prev: [0; 32],
                event: Event::Learnt { changes: vec![Change::Upsert(Fact::Vnic(v))] },
            });
        }
    }
    out
}

fn bench_fold(c: &mut Criterion) {
    let envs = log();
    let (start, cpu0) = (Instant::now(), cpu_ns());
    let s = fold(&envs);
    let (secs, cpu1) = (start.elapsed().as_secs_f64(), cpu_ns());
    let cpu = cpu0.zip(cpu1).map(|(a, b)| (b - a) as f64 / 1e9).unwrap_or(f64::NAN);
    println!(
        "fold (single pass): {} events in {:.3} s wall = {:.0} events/s; {:.3} s on CPU = {:.0} events/s per CPU-second; {} ports desired",
        envs.len(),
        secs,
        envs.len() as f64 / secs,
        cpu,
        envs.len() as f64 / cpu,
        s.desired().ports.len()
    );
    drop(s);

    // The floor set by the events themselves: reading every string byte of every decoded
    // event (each event's strings are separate heap blocks), with no state at all.
    let (start, cpu0) = (Instant::now(), cpu_ns());
    let sum: u64 = envs.iter().map(touch).sum();
    let (secs, cpu1) = (start.elapsed().as_secs_f64(), cpu_ns());
    let cpu = cpu0.zip(cpu1).map(|(a, b)| (b - a) as f64 / 1e9).unwrap_or(f64::NAN);
    println!(
        "reading the events alone (no fold): {:.3} s wall = {:.0} events/s; {:.3} s on CPU = {:.0} events/s per CPU-second ({})",
        secs,
        envs.len() as f64 / secs,
        cpu,
        envs.len() as f64 / cpu,
        black_box(sum) % 2
    );

    let mut group = c.benchmark_group("fold");
    group.sample_size(10);
    group.throughput(Throughput::Elements(envs.len() as u64));
    group.bench_function("1M generated events", |b| b.iter_with_large_drop(|| fold(black_box(&envs))));
    group.finish();
}

fn bench_apply(c: &mut Criterion) {
    let g = world();
    let before = rss();
    let t = Instant::now();
    let mut state = fold(&g.envs);
    let built = t.elapsed();
    let after = rss();
    println!("built the 1k-host/50k-VM state from {} events in {:.3} s", g.envs.len(), built.as_secs_f64());
    let snapshot = state.encode().len();
    let vnics: usize = state.hypervisors().map(|(id, _)| state.facts_of(id).map_or(0, |f| f.len())).sum();
    let reasons: usize = state.desired().ports.values().flat_map(|p| p.values()).map(|r| r.len()).sum();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "memory: state of {} hosts / {} VMs ({} facts, {} reasons): RSS grew {:.1} MiB; snapshot {:.1} MiB",
            HYPERVISORS * HOSTS_PER_HV,
            g.vms.len(),
            vnics,
            reasons,
            a.saturating_sub(b) as f64 / (1 << 20) as f64,
            snapshot as f64 / (1 << 20) as f64
        );
    }

    // What one full copy of desired state costs (what publishing would copy if it were not
    // shared).
    let before = rss();
    let copy = engine::Desired::clone(state.desired());
    if let (Some(b), Some(a)) = (before, rss()) {
        println!(
            "memory: one copy of desired state ({} ports): RSS grew {:.1} MiB",
            copy.ports.len(),
            a.saturating_sub(b) as f64 / (1 << 20) as f64
        );
    }
    drop(copy);

    // Per-apply latency with percentiles (criterion reports mean/median only).
    let ops = toggles(&g, 20_000);
    let mut samples = Vec::with_capacity(ops.len() * 5);
    let cpu0 = cpu_ns();
    for _ in 0..5 {
        for e in &ops {
            let t = Instant::now();
            state.apply(black_box(e));
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    let cpu_per_op = cpu0.zip(cpu_ns()).map(|(a, b)| (b - a) / samples.len() as u64);
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "apply one-change Learnt @50k VMs (wall): n={} p50={} ns p90={} ns p99={} ns p99.9={} ns max={} ns; \
         mean CPU time {:?} ns/op",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1],
        cpu_per_op
    );

    // Reading desired state after one change: what the runtime does to publish. `held` plays
    // the part of the last published value (the runtime's watch channel keeps it).
    let n = 50;
    let mut read = Vec::with_capacity(n);
    for e in &ops[..n] {
        state.apply(e);
        let t = Instant::now();
        black_box(state.desired());
        read.push(t.elapsed().as_nanos() as u64);
    }
    // Publishing after one change while every value published before is still held (the
    // runtime's watch channel, reconcilers planning from older ones): each publish shares all
    // but the changed port with the last, so none copies the whole state.
    let m = 50;
    let mut publish = Vec::with_capacity(m);
    let mut kept = vec![state.desired_shared()];
    let rss0 = rss();
    for e in &ops[n..n + m] {
        state.apply(e);
        let t = Instant::now();
        let next = state.desired_shared();
        publish.push(t.elapsed().as_nanos() as u64);
        kept.push(next);
    }
    let grew = rss0.zip(rss()).map_or(f64::NAN, |(a, b)| b.saturating_sub(a) as f64);
    drop(kept);
    read.sort_unstable();
    publish.sort_unstable();
    println!(
        "desired after one change @50k VMs (wall): read (sole owner) p50={} ns max={} ns; \
         publish, every older value kept p50={} ns max={} ns, RSS grew {:.1} KiB per publish",
        read[n / 2],
        read[n - 1],
        publish[m / 2],
        publish[m - 1],
        grew / m as f64 / 1024.0
    );

    let mut i = 0usize;
    c.bench_function("apply one-change Learnt @ 1k hosts/50k VMs", |b| {
        b.iter(|| {
            state.apply(black_box(&ops[i % ops.len()]));
            i += 1;
        })
    });
    c.bench_function("encode state @ 1k hosts/50k VMs", |b| {
        b.iter_batched(|| (), |()| state.encode(), BatchSize::SmallInput)
    });
}

/// 2,000 hosts × 2 uplinks (unique MACs, no neighbour), a network on each host; and a switch view
/// that has every MAC on a port, plus `lldp` LLDP neighbours (none matching).
fn switch_world(lldp: usize) -> (State, Envelope) {
    use engine::discovery::{LldpNeighbour, LldpSighting, MacSighting, SwitchView};
    use engine::{HostFact, HypervisorId, NetworkFact, UplinkFact, VlanId, VlanSpec};
    let id = HypervisorId::new("xen").unwrap();
    let mac = |h: usize, n: usize| format!("02:00:{:02x}:{:02x}:00:{n:02x}", h >> 8, h & 0xff);
    let mut changes = Vec::new();
    for h in 0..2000 {
        let host = format!("host-{h}");
        changes
            .push(Change::Upsert(Fact::Host(HostFact { host: host.clone().into(), name: format!("xen-{h}").into() })));
        for n in 0..2 {
            changes.push(Change::Upsert(Fact::Uplink(UplinkFact {
                host: host.clone().into(),
                nic: format!("eth{n}").into(),
                mac: Some(mac(h, n).into()),
                port: None,
                source: None,
            })));
        }
        changes.push(Change::Upsert(Fact::Network(NetworkFact {
            host: host.clone().into(),
            network: "net".into(),
            name: "net".into(),
            vlan: VlanSpec::Access(VlanId::new(100).unwrap()),
            uplinks: vec!["eth0".into(), "eth1".into()],
        })));
    }
    let env = |seq: u64, hypervisor: HypervisorId, event: Event| Envelope {
        seq,
        at: 0,
        hypervisor,
        schema: 1,
        prev: [0; 32],
        event,
    };
    let mut state = State::new(&Policy { count_vmless_networks: true, ..Policy::default() });
    state.apply(&env(1, id, Event::Learnt { changes }));
    let macs = (0..2000)
        .flat_map(|h| (0..2).map(move |n| (h, n)))
        .map(|(h, n)| MacSighting { mac: mac(h, n), port: format!("Ethernet{}", 2 * h + n + 1), managed: true })
        .collect();
    let lldp = (0..lldp)
        .map(|i| LldpSighting {
            port: format!("Ethernet{}", i + 1),
            managed: true,
            neighbour: LldpNeighbour {
                system_name: Some(format!("other-{i}")),
                port_id: Some("x".into()),
                ..LldpNeighbour::default()
            },
        })
        .collect();
    let view = SwitchView { macs, lldp, bonds: vec![] };
    let saw = env(2, HypervisorId::new("netfold").unwrap(), Event::SwitchSaw { switch: "tor1".into(), view });
    (state, saw)
}

fn bench_switch_saw(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch_saw");
    g.sample_size(10);
    for lldp in [0, 4000] {
        let (state, saw) = switch_world(lldp);
        g.bench_function(format!("2000_hosts_4000_macs_{lldp}_lldp"), |b| {
            b.iter_batched(
                || state.clone(),
                |mut s| {
                    s.apply(&saw);
                    black_box(s.desired().ports.len())
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Decoding a snapshot of the 1k-host/50k-VM state: what a history query (`why --at`) and a
/// cold start pay before folding the events after it.
fn bench_snapshot_decode(c: &mut Criterion) {
    let state = fold(&world().envs);
    let bytes = state.encode();
    let policy = Policy::default();
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(20);
    group.bench_function("decode 1k hosts / 50k VMs", |b| {
        b.iter_with_large_drop(|| State::decode(black_box(&bytes), &policy).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, bench_apply, bench_fold, bench_switch_saw, bench_snapshot_decode);
criterion_main!(benches);
