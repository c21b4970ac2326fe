//! A TCP fault proxy for tests over real processes: it forwards a loopback port to a peer and
//! can refuse connections, hang (stop forwarding, no RST, connections stay open), delay the
//! peer's replies, or pass traffic again — what a real network or a hung peer does, so netfold's
//! loss handling is tested against socket behaviour it did not choose.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
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
}

/// A running proxy; dropped, it stops.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept_loop(listener, addr, upstream, rx));
        Proxy { addr, mode, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    loop {
        tokio::select! {
            a = listener.accept() => {
                let Ok((client, _)) = a else { continue };
                tokio::spawn(connection(client, upstream, mode.clone()));
            }
            _ = mode.changed() => {
                if *mode.borrow_and_update() != Mode::Refuse {
                    continue;
                }
                // Close the port (connection tasks see Refuse and drop their sockets), then
                // open it again once the mode changes.
                drop(listener);
                while *mode.borrow_and_update() == Mode::Refuse {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                listener = loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
            }
        }
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    if *mode.borrow() == Mode::Refuse {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut up = tokio::spawn(pump(cr, sw, mode.clone(), false));
    let mut down = tokio::spawn(pump(sr, cw, mode.clone(), true));
    tokio::select! {
        _ = &mut up => {}
        _ = &mut down => {}
    }
    up.abort();
    down.abort();
}

/// Copies `from` to `to` chunk by chunk, obeying the mode before each write; `reply`: this is
/// the peer → client direction (the one `Delay` slows).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    reply: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = refused(&mut mode) => return,
        };
        loop {
            let m = *mode.borrow_and_update();
            match m {
                Mode::Refuse => return,
                Mode::Hang => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Delay(d) if reply => {
                    tokio::time::sleep(d).await;
                    break;
                }
                _ => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
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
