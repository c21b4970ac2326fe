//! The OVSDB client against a scripted JSON-RPC peer on loopback: it answers the server's `echo`
//! probes, turns `update` notifications into drift, fails pending calls when the connection
//! drops, and reconnects (re-issuing its `monitor`) without the caller doing anything; a message
//! that never ends is cut off at the limit (bounded memory), with an error naming the limit.

use std::time::Duration;

use adapters::ovs::client::{Client, Endpoint};
use adapters::ovs::codec::JsonFrames;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Reads one JSON value from the peer (messages arrive back to back, no delimiter).
async fn next(s: &mut TcpStream, buf: &mut BytesMut) -> Value {
    let mut frames = JsonFrames::new(64 * 1024 * 1024);
    loop {
        if let Some(v) = frames.decode(buf).unwrap() {
            return v;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("peer read timed out")
            .unwrap();
        assert!(n > 0, "client closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn send(s: &mut TcpStream, v: Value) {
    s.write_all(&serde_json::to_vec(&v).unwrap()).await.unwrap();
}

#[tokio::test]
async fn answers_echo_reports_updates_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Client::start(Endpoint::Tcp(addr.to_string()), Duration::from_secs(5), Duration::from_millis(200));
    let mut drift = client.drift();

    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let monitor = next(&mut s, &mut buf).await;
    assert_eq!(monitor["method"], "monitor");
    assert_eq!(monitor["params"][2]["Port"]["columns"], json!(["name", "trunks"]));
    send(&mut s, json!({"id": monitor["id"], "result": {}, "error": null})).await;

    // The server's inactivity probe must be answered with the same id and params.
    send(&mut s, json!({"id": "echo", "method": "echo", "params": ["x"]})).await;
    let reply = next(&mut s, &mut buf).await;
    assert_eq!(reply, json!({"id": "echo", "result": ["x"], "error": null}));

    // A monitor update is drift.
    let seen = *drift.borrow_and_update();
    send(&mut s, json!({"id": null, "method": "update", "params": ["netfold-ports", {"Port": {}}]})).await;
    tokio::time::timeout(Duration::from_secs(30), drift.changed()).await.expect("drift announced").unwrap();
    assert!(*drift.borrow() > seen);

    // A call in flight when the connection drops fails as Disconnected (retryable).
    let c2 = client.clone();
    let pending =
        tokio::spawn(async move { c2.transact(vec![json!({"op": "select", "table": "Port", "where": []})]).await });
    let req = next(&mut s, &mut buf).await;
    assert_eq!(req["method"], "transact");
    drop(s);
    let err = pending.await.unwrap().unwrap_err();
    assert!(err.is_retryable(), "{err}");

    // The client reconnects on its own and monitors again; calls work once more.
    let (mut s, _) =
        tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.expect("reconnect").unwrap();
    let mut buf = BytesMut::new();
    let monitor = next(&mut s, &mut buf).await;
    assert_eq!(monitor["method"], "monitor");
    send(&mut s, json!({"id": monitor["id"], "result": {}, "error": null})).await;
    let c3 = client.clone();
    let call = tokio::spawn(async move { c3.transact(vec![]).await });
    let req = next(&mut s, &mut buf).await;
    send(&mut s, json!({"id": req["id"], "result": [], "error": null})).await;
    assert_eq!(call.await.unwrap().unwrap(), json!([]));

    // A JSON-RPC level error is surfaced as such.
    let c4 = client.clone();
    let call = tokio::spawn(async move { c4.call("transact", json!(["Nope"])).await });
    let req = next(&mut s, &mut buf).await;
    send(&mut s, json!({"id": req["id"], "result": null, "error": "unknown database"})).await;
    let err = call.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("unknown database"), "{err}");
}

/// Both directions full at once must not deadlock: the server floods monitor updates without
/// reading while the client has megabytes of requests to send (a large reconcile against a
/// busy ovsdb-server). The client keeps reading while its writes wait, so the server's flood
/// completes, it then reads every request, and every call gets its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffers_both_ways_do_not_deadlock() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Client::start(Endpoint::Tcp(addr.to_string()), Duration::from_secs(60), Duration::from_millis(200));
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let monitor = next(&mut s, &mut buf).await;
    send(&mut s, json!({"id": monitor["id"], "result": {}, "error": null})).await;

    const CALLS: usize = 64;
    let big = "x".repeat(256 * 1024);
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let (c, big) = (client.clone(), big.clone());
            tokio::spawn(async move { c.transact(vec![json!({"op": "comment", "comment": big, "n": i})]).await })
        })
        .collect();
    // 16 MiB of updates, written before reading anything (16 MiB of requests are waiting).
    let update = serde_json::to_vec(
        &json!({"id": null, "method": "update", "params": ["netfold-ports", {"Port": {}, "pad": big}]}),
    )
    .unwrap();
    let flood = async {
        for _ in 0..64 {
            s.write_all(&update).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), flood).await.expect("the client stopped reading: deadlock");
    for _ in 0..CALLS {
        let req = next(&mut s, &mut buf).await;
        send(&mut s, json!({"id": req["id"], "result": [{}], "error": null})).await;
    }
    for c in calls {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), c).await.expect("reply").unwrap().unwrap(),
            json!([{}])
        );
    }
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value")
}

/// A peer that answers a call with a message that never ends (300 MB and counting): the client
/// stops at its limit, fails the call with an error naming the limit, drops the connection and
/// reconnects; memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_message_is_cut_off_at_the_limit_with_bounded_memory() {
    const LIMIT: usize = 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client =
        Client::start_with(Endpoint::Tcp(addr.to_string()), Duration::from_secs(60), Duration::from_millis(200), LIMIT);
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let monitor = next(&mut s, &mut buf).await;
    send(&mut s, json!({"id": monitor["id"], "result": {}, "error": null})).await;
    let before = rss_kib();
    let c = client.clone();
    let call = tokio::spawn(async move { c.transact(vec![]).await });
    let req = next(&mut s, &mut buf).await;
    assert_eq!(req["method"], "transact");
    let flood = async move {
        s.write_all(format!(r#"{{"id":{},"result":[{{"rows":[{{"name":""#, req["id"]).as_bytes()).await.unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        // Until the client hangs up (it must), or 300 MB if it never does.
        while sent < 300 * 1024 * 1024 {
            if s.write_all(&chunk).await.is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        sent
    };
    let sent = tokio::time::timeout(Duration::from_secs(60), flood).await.expect("the flood finished");
    let err = tokio::time::timeout(Duration::from_secs(10), call).await.expect("the call ended").unwrap().unwrap_err();
    assert!(err.to_string().contains("1048576-byte limit"), "{err}");
    assert!(sent < 300 * 1024 * 1024, "the client hung up after {sent} bytes");
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB while the peer sent {sent} bytes");
    // And it reconnects on its own.
    let (mut s, _) =
        tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.expect("reconnect").unwrap();
    let monitor = next(&mut s, &mut BytesMut::new()).await;
    assert_eq!(monitor["method"], "monitor");
}
