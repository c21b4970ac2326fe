//! The OVSDB client against a scripted JSON-RPC peer on loopback: it answers the server's `echo`
//! probes, turns `update` notifications into drift, fails pending calls when the connection
//! drops, and reconnects (re-issuing its `monitor`) without the caller doing anything.

use std::time::Duration;

use adapters::ovs::client::{Client, Endpoint};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one JSON value from the peer (messages arrive back to back, no delimiter).
async fn next(s: &mut TcpStream, buf: &mut Vec<u8>) -> Value {
    loop {
        if let Some((v, used)) = adapters::ovs::codec::split_frame(buf).unwrap() {
            buf.drain(..used);
            return v;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
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
    let mut buf = Vec::new();
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
    tokio::time::timeout(Duration::from_secs(5), drift.changed()).await.expect("drift announced").unwrap();
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
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.expect("reconnect").unwrap();
    let mut buf = Vec::new();
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
