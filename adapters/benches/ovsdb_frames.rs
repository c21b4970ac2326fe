//! The cost of framing a 10 MB OVSDB reply that arrives in 64 KiB reads: netfold's resumable
//! `JsonFrames` decoder (scans each byte once, parses the message once) beside the way the
//! client framed before it (try to parse the whole buffer from its start after every read, so
//! a 10 MB reply is parsed ~160 times). Prints MB/s for both.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

use adapters::ovs::codec::{JsonFrames, MAX_MESSAGE};

const READ: usize = 64 * 1024;

/// A `transact` reply selecting `Port` rows with trunks, about 10 MB.
fn reply() -> Vec<u8> {
    let rows: Vec<Value> = (0..40_000)
        .map(|i| {
            json!({
                "_uuid": ["uuid", format!("{i:08x}-0000-4000-8000-000000000000")],
                "name": format!("port-{i}"),
                "trunks": ["set", (1..=40).collect::<Vec<u32>>()],
                "other_config": ["map", [["netfold", "managed"]]],
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "id": 7, "error": null, "result": [{ "rows": rows }] })).unwrap()
}

fn resumable(bytes: &[u8]) -> Value {
    let mut frames = JsonFrames::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    for chunk in bytes.chunks(READ) {
        buf.extend_from_slice(chunk);
        if let Some(v) = frames.decode(&mut buf).expect("a valid reply") {
            return v;
        }
    }
    panic!("the reply never completed");
}

/// Before the decoder: after every read, parse the buffer from its start; an EOF error means
/// "wait for more".
fn reparse(bytes: &[u8]) -> Value {
    let mut buf = Vec::new();
    for chunk in bytes.chunks(READ) {
        buf.extend_from_slice(chunk);
        match serde_json::from_slice::<Value>(&buf) {
            Ok(v) => return v,
            Err(e) if e.is_eof() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the reply never completed");
}

fn bench(c: &mut Criterion) {
    let bytes = reply();
    eprintln!("OVSDB reply: {} bytes in {} reads of {READ} bytes", bytes.len(), bytes.len().div_ceil(READ));
    assert_eq!(resumable(&bytes), reparse(&bytes), "both framings read the same message");
    let mut g = c.benchmark_group("ovsdb_frames_10mb");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(10);
    g.bench_function("resumable_decoder", |b| b.iter(|| resumable(std::hint::black_box(&bytes))));
    g.bench_function("reparse_from_start", |b| b.iter(|| reparse(std::hint::black_box(&bytes))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
