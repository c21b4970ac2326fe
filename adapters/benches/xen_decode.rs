//! Decoding `VM.get_all_records` for 1,000 VMs (the biggest answer of a pool's initial read),
//! reported as MB/s (bytes) and records/s (elements): the XML-RPC codec alone, and codec plus
//! the mapping's typed read into the mirror.

use std::collections::BTreeMap;

use adapters::xen::codec::{decode_response, Response, Value};
use adapters::xen::mapping::Mirror;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sims::xen::pool::Pool;
use sims::xen::xmlrpc::{self, Value as SimValue};
use sims::xen::SimOptions;

const VMS: usize = 1_000;

/// The simulator's own records and encoder: 50 hosts × 20 VMs; the answer keeps exactly 1,000
/// guests.
fn body() -> Vec<u8> {
    let pool = Pool::generate(&SimOptions { hosts: 50, vms_per_host: 20, vlans: 10, ..SimOptions::default() });
    let recs: BTreeMap<String, SimValue> = pool.objects["VM"]
        .iter()
        .filter(|(_, r)| r.get("is_control_domain") == Some(&SimValue::Bool(false)))
        .filter(|(_, r)| r.get("is_a_template") == Some(&SimValue::Bool(false)))
        .map(|(k, r)| (k.clone(), SimValue::Struct(r.clone())))
        .collect();
    assert_eq!(recs.len(), VMS);
    xmlrpc::encode_response(&xmlrpc::Response::Success(SimValue::Struct(recs)))
}

fn decode(c: &mut Criterion) {
    let body = body();
    eprintln!("VM.get_all_records for {VMS} VMs: {} bytes", body.len());
    let mut g = c.benchmark_group("xen_decode_vm_get_all_records_1000");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("codec_bytes", |b| b.iter(|| decode_response(std::hint::black_box(&body)).map(|_| ())));
    g.throughput(Throughput::Elements(VMS as u64));
    g.bench_function("codec_records", |b| b.iter(|| decode_response(std::hint::black_box(&body)).map(|_| ())));
    g.bench_function("codec_and_mirror_records", |b| {
        b.iter(|| {
            let Ok(Response::Success(Value::Struct(recs))) = decode_response(std::hint::black_box(&body)) else {
                panic!("the sample decodes");
            };
            let mut m = Mirror::default();
            for (r, rec) in &recs {
                m.upsert("VM", r, rec).expect("golden records read");
            }
            m.vms.len()
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
