//! The eAPI client against fake HTTP peers that misbehave: a body that never ends (chunked,
//! hundreds of megabytes) is cut off at the body limit with an error naming it and bounded
//! memory; a body that stops half-way fails at the request timeout.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adapters::common::SecretSource;
use adapters::eapi::{Config, EapiSwitch};
use engine::switch::{Switch, SwitchError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PW_ENV: &str = "NETFOLD_TEST_EAPI_LIMITS_PASSWORD";

fn switch(addr: std::net::SocketAddr, timeout_ms: u64) -> EapiSwitch {
    std::env::set_var(PW_ENV, "s3cret");
    EapiSwitch::new(&Config {
        name: "tor1".into(),
        url: format!("http://{addr}"),
        username: "netfold".into(),
        password: SecretSource::env(PW_ENV),
        tls: Default::default(),
        timeout_ms,
    })
    .unwrap()
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value")
}

/// Serves one connection: reads the request head, writes `head`, then runs `body`.
async fn peer<F, Fut>(head: &'static str, body: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<u64>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        body(s).await
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_is_cut_off_at_the_limit_with_bounded_memory() {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let (addr, task) = peer(head, |mut s| async move {
        let data = vec![b' '; 64 * 1024];
        let chunk = [format!("{:x}\r\n", data.len()).into_bytes(), data, b"\r\n".to_vec()].concat();
        let mut sent = 0u64;
        while sent < 400 * 1024 * 1024 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    })
    .await;
    let sw = switch(addr, 60_000);
    let before = rss_kib();
    let err = sw.read(&BTreeSet::new()).await.unwrap_err();
    let grown = rss_kib().saturating_sub(before);
    assert!(matches!(err, SwitchError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("exceeds the 16777216-byte limit"), "{err}");
    let sent = task.await.unwrap();
    assert!(sent < 400 * 1024 * 1024, "the client hung up after {sent} bytes");
    assert!(grown < 96 * 1024, "RSS grew by {grown} KiB while the peer sent {sent} bytes");
}

#[tokio::test]
async fn a_body_that_stops_half_way_fails_at_the_request_timeout() {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"jsonrpc\":";
    let (addr, _task) = peer(head, |s| async move {
        // Holds the connection open without sending the rest.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
        0
    })
    .await;
    let sw = switch(addr, 1_000);
    let start = Instant::now();
    let err = sw.read(&BTreeSet::new()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(matches!(err, SwitchError::Unreachable { .. }), "a stalled reply is retryable: {err}");
}
