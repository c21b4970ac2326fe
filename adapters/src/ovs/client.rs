//! The OVSDB connection: one background task owns the socket (TCP or unix), matches replies to
//! requests by id, answers the server's `echo` probes, keeps a `monitor` on the `Port` table and
//! announces every update as drift, and reconnects with capped exponential backoff when the
//! connection drops (re-establishing the monitor). Callers talk to it through [`Client::call`].
//! Incoming messages are framed by [`codec::JsonFrames`]: a message larger than the limit
//! ([`codec::MAX_MESSAGE`] by default) drops the connection with an error naming the limit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::codec::{self, Incoming};
use super::{Error, Result};

/// Where ovsdb-server listens, in OVS's own notation: `tcp:127.0.0.1:6640` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            Ok(Endpoint::Tcp(addr.to_string()))
        } else if let Some(path) = s.strip_prefix("unix:") {
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else {
            Err(Error::Config(format!("endpoint `{s}` must be tcp:HOST:PORT or unix:PATH")))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Server text cut for logs and errors.
fn cut(text: &str) -> String {
    engine::reconciler::cut(text, engine::reconciler::MAX_ERROR_TEXT)
}

struct Call {
    method: String,
    params: Value,
    reply: oneshot::Sender<Result<Value>>,
}

/// A handle on the connection task. Cloning shares the connection; the task ends when every
/// handle is dropped.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::Sender<Call>,
    drift: watch::Receiver<u64>,
    timeout: Duration,
}

const MONITOR_ID: &str = "netfold-ports";
/// Id of our own `monitor` request; user calls start above it.
const MONITOR_REQ: u64 = 0;

impl Client {
    /// Starts the connection task (it connects in the background and keeps reconnecting).
    pub fn start(endpoint: Endpoint, timeout: Duration, backoff_max: Duration) -> Self {
        Self::start_with(endpoint, timeout, backoff_max, codec::MAX_MESSAGE)
    }

    /// [`Client::start`] with a limit on the size of one incoming message (bytes).
    pub fn start_with(endpoint: Endpoint, timeout: Duration, backoff_max: Duration, max_message: usize) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let (drift_tx, drift_rx) = watch::channel(0u64);
        tokio::spawn(run(endpoint, rx, drift_tx, backoff_max, max_message));
        Self { calls: tx, drift: drift_rx, timeout }
    }

    /// Sends one JSON-RPC request and waits (up to the timeout) for its result. A JSON-RPC level
    /// `error` becomes [`Error::Rpc`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let (reply, rx) = oneshot::channel();
        self.calls
            .send(Call { method: method.to_string(), params, reply })
            .await
            .map_err(|_| Error::Disconnected("the connection task has stopped".into()))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(Error::Timeout(self.timeout)),
            Ok(Err(_)) => Err(Error::Disconnected("the connection closed before the reply".into())),
            Ok(Ok(r)) => r,
        }
    }

    /// `transact` on the Open_vSwitch database.
    pub async fn transact(&self, ops: Vec<Value>) -> Result<Value> {
        self.call("transact", codec::transact_params(ops)).await
    }

    /// Bumped on every monitor update (and after every reconnect).
    pub fn drift(&self) -> watch::Receiver<u64> {
        self.drift.clone()
    }
}

async fn run(
    endpoint: Endpoint,
    mut calls: mpsc::Receiver<Call>,
    drift: watch::Sender<u64>,
    backoff_max: Duration,
    max_message: usize,
) {
    let mut failures: u32 = 0;
    loop {
        let outcome = match &endpoint {
            Endpoint::Tcp(addr) => match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    Some(serve(s, &mut calls, &drift, max_message).await)
                }
                Err(e) => {
                    debug!(%endpoint, error = %e, "connect failed");
                    None
                }
            },
            Endpoint::Unix(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(s) => Some(serve(s, &mut calls, &drift, max_message).await),
                Err(e) => {
                    debug!(%endpoint, error = %e, "connect failed");
                    None
                }
            },
        };
        match outcome {
            Some(Ok(())) => return, // every handle dropped
            Some(Err(e)) => {
                warn!(%endpoint, error = %e, "OVSDB connection lost");
                failures = 1;
            }
            None => failures = failures.saturating_add(1),
        }
        let base = Duration::from_millis(100).saturating_mul(1 << failures.min(10)).min(backoff_max);
        let delay = base.mul_f64(0.5 + 0.5 * rand::random::<f64>());
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                call = calls.recv() => match call {
                    None => return,
                    Some(c) => { let _ = c.reply.send(Err(Error::Disconnected(format!("not connected to {endpoint}")))); }
                },
            }
        }
    }
}

/// Serves one connection until it breaks (`Err`) or every handle is dropped (`Ok`).
///
/// Reading never waits on writing: outgoing messages are queued to a writer future polled in
/// the same `select!`. (Awaiting a write inside the read loop deadlocks once both sides' socket
/// buffers are full: the server stops reading while it waits to send us monitor updates, and
/// we stop reading while we wait to send it requests.)
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    calls: &mut mpsc::Receiver<Call>,
    drift: &watch::Sender<u64>,
    max_message: usize,
) -> Result<()> {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut frames = FramedRead::new(rd, codec::JsonFrames::new(max_message));
    let (out, mut queued) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = async move {
        while let Some(bytes) = queued.recv().await {
            wr.write_all(&bytes).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::pin!(writer);
    let mut pending: HashMap<u64, oneshot::Sender<Result<Value>>> = HashMap::new();
    let mut next_id = MONITOR_REQ + 1;
    let send = |msg: Value| serde_json::to_vec(&msg).map_err(|e| Error::Codec(e.to_string()));
    // The queue's receiver lives in `writer` until this function returns: sends cannot fail.
    let _ = out.send(send(codec::request(MONITOR_REQ, "monitor", codec::monitor_ports_params(MONITOR_ID)))?);
    info!("OVSDB connected; monitoring Port");
    // Whatever happened while we were away counts as drift.
    drift.send_modify(|n| *n += 1);
    let result = loop {
        tokio::select! {
            w = &mut writer => break Err(match w {
                Ok(()) => Error::Disconnected("the writer stopped".into()),
                Err(e) => e.into(),
            }),
            msg = frames.next() => {
                let msg = match msg {
                    None => break Err(Error::Disconnected("server closed the connection".into())),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(m)) => m,
                };
                match codec::classify(msg) {
                    Ok(Incoming::Response { id, result, error }) => {
                        if id == MONITOR_REQ {
                            if !error.is_null() {
                                break Err(Error::Rpc(format!("monitor refused: {}", cut(&error.to_string()))));
                            }
                        } else if let Some(tx) = pending.remove(&id) {
                            let _ = tx.send(if error.is_null() { Ok(result) } else { Err(Error::Rpc(cut(&error.to_string()))) });
                        }
                    }
                    Ok(Incoming::Request { id, method, params }) if method == "echo" => match send(codec::reply(id, params)) {
                        Ok(bytes) => {
                            let _ = out.send(bytes);
                        }
                        Err(e) => break Err(e),
                    },
                    Ok(Incoming::Request { method, .. }) => debug!(method = %cut(&method), "ignoring server request"),
                    Ok(Incoming::Notification { method, .. }) => {
                        if method == "update" {
                            drift.send_modify(|n| *n += 1);
                        }
                    }
                    Err(e) => warn!(error = %cut(&e.to_string()), "ignoring a message"),
                }
            }
            call = calls.recv() => {
                let Some(call) = call else { break Ok(()) };
                let id = next_id;
                next_id += 1;
                match send(codec::request(id, &call.method, call.params)) {
                    Ok(bytes) => {
                        let _ = out.send(bytes);
                        pending.insert(id, call.reply);
                    }
                    Err(e) => { let _ = call.reply.send(Err(e)); }
                }
            }
        }
    };
    let why = match &result {
        Err(e) => format!("the connection dropped before the reply: {e}"),
        Ok(()) => "the connection dropped before the reply".to_string(),
    };
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(Error::Disconnected(why.clone())));
    }
    result
}
