//! A TCP fault proxy for tests over real processes: it forwards a loopback port to a peer and
//! can refuse connections, hang (stop forwarding, no RST, connections stay open), delay the
//! peer's replies, cut a reply part-way (forward N more bytes, then close), or pass traffic again
//! — what a real network or a hung peer does, so netfold's loss handling is tested against socket
//! behaviour it did not choose.
//!
//! [`Proxy::set_for`] limits a mode to the replies that follow a request whose bytes contain a
//! needle (an eAPI `runCmds` that adds a VLAN, an OVSDB `"mutate"`, a SOAP
//! `RetrievePropertiesEx`); other replies pass. The needle is looked for in each read of the
//! client's bytes plus the tail of the read before, so one split across reads is still seen.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// The port is closed and every open connection is dropped: connects are refused.
    Refuse,
    /// Connections are accepted and kept open, but nothing is forwarded either way.
    Hang,
    /// The peer's bytes reach the client this long after they arrived.
    Delay(Duration),
    /// This many more bytes of the peer's reply reach the client, then both sides are closed.
    Cut(usize),
}

/// A running proxy; dropped, it stops.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// The mode the accept loop has acted on (for `Refuse`: the port is closed).
    applied: watch::Sender<Mode>,
    /// When set, the mode applies only to replies to requests containing these bytes.
    needle: watch::Sender<Option<Vec<u8>>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, rx) = watch::channel(Mode::Pass);
        let (needle, needle_rx) = watch::channel(None);
        let (applied, _) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            Shared { addr, upstream, needle: needle_rx, accepted: accepted.clone(), applied: applied.clone() },
            rx,
        ));
        Proxy { addr, mode, applied, needle, accepted, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `mode` to all traffic; returns once it is in force (after `Refuse`, a connect
    /// is refused; after leaving it, the port accepts again).
    pub async fn set(&self, mode: Mode) {
        self.needle.send_replace(None);
        self.switch_to(mode).await;
    }

    /// Applies `mode` (`Delay`, `Cut` or `Hang`) only to the replies that follow a request
    /// containing `needle`; everything else passes. `Refuse` always applies to everything.
    pub async fn set_for(&self, needle: &[u8], mode: Mode) {
        self.needle.send_replace(Some(needle.to_vec()));
        self.switch_to(mode).await;
    }

    async fn switch_to(&self, mode: Mode) {
        let mut applied = self.applied.subscribe();
        self.mode.send_replace(mode);
        // A later `set` from another task could move on first; the proxy is driven by one test.
        let _ = applied.wait_for(|m| *m == mode).await;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the accept loop hands to each connection, and where it reports the mode in force.
struct Shared {
    addr: SocketAddr,
    upstream: SocketAddr,
    needle: watch::Receiver<Option<Vec<u8>>>,
    accepted: Arc<AtomicUsize>,
    applied: watch::Sender<Mode>,
}

async fn accept_loop(mut listener: TcpListener, shared: Shared, mut mode: watch::Receiver<Mode>) {
    loop {
        tokio::select! {
            a = listener.accept() => {
                let Ok((client, _)) = a else { continue };
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(client, shared.upstream, mode.clone(), shared.needle.clone()));
            }
            _ = mode.changed() => {
                let now = *mode.borrow_and_update();
                if now != Mode::Refuse {
                    shared.applied.send_replace(now);
                    continue;
                }
                // Close the port (connection tasks see Refuse and drop their sockets), then
                // open it again once the mode changes.
                drop(listener);
                shared.applied.send_replace(Mode::Refuse);
                while *mode.borrow_and_update() == Mode::Refuse {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                listener = loop {
                    match TcpListener::bind(shared.addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                shared.applied.send_replace(*mode.borrow());
            }
        }
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    needle: watch::Receiver<Option<Vec<u8>>>,
) {
    if *mode.borrow() == Mode::Refuse {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Whether the reply now flowing answers a request that held the needle.
    let armed = Arc::new(AtomicBool::new(false));
    let up_dir = Direction { reply: false, needle: needle.clone(), armed: armed.clone() };
    let down_dir = Direction { reply: true, needle, armed };
    let mut up = tokio::spawn(pump(cr, sw, mode.clone(), up_dir));
    let mut down = tokio::spawn(pump(sr, cw, mode.clone(), down_dir));
    tokio::select! {
        _ = &mut up => {}
        _ = &mut down => {}
    }
    up.abort();
    down.abort();
}

/// One direction of a connection.
struct Direction {
    /// The peer → client direction (the one `Delay` slows and `Cut` cuts).
    reply: bool,
    needle: watch::Receiver<Option<Vec<u8>>>,
    armed: Arc<AtomicBool>,
}

impl Direction {
    /// The mode for this direction now: a mode limited by a needle passes unarmed replies, and
    /// never holds requests (so the request that arms it gets through).
    fn mode(&self, mode: Mode) -> Mode {
        match (&*self.needle.borrow(), mode) {
            (_, Mode::Refuse) => Mode::Refuse,
            (Some(_), _) if !self.reply || !self.armed.load(Ordering::Relaxed) => Mode::Pass,
            (_, m) => m,
        }
    }
}

/// Copies `from` to `to` chunk by chunk, obeying the mode before each write.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    dir: Direction,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = refused(&mut mode) => return,
        };
        if !dir.reply {
            if let Some(needle) = dir.needle.borrow().as_deref() {
                let mut window = std::mem::take(&mut tail);
                window.extend_from_slice(&buf[..n]);
                dir.armed.store(window.windows(needle.len()).any(|w| w == needle), Ordering::Relaxed);
                tail = window[window.len().saturating_sub(needle.len())..].to_vec();
            }
        }
        let mut len = n;
        loop {
            let m = dir.mode(*mode.borrow_and_update());
            match m {
                Mode::Refuse => return,
                Mode::Hang => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Delay(d) if dir.reply => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::Cut(left) if dir.reply => {
                    len = n.min(left);
                    let _ = to.write_all(&buf[..len]).await;
                    let _ = to.shutdown().await;
                    return;
                }
                _ => break,
            }
        }
        if to.write_all(&buf[..len]).await.is_err() {
            return;
        }
    }
}

/// Completes when the mode becomes `Refuse`.
async fn refused(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow_and_update() != Mode::Refuse {
        if mode.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
