//! A TCP fault proxy for tests over real processes: it sits between a client (netfold) and a
//! peer (a simulator, ovsdb-server) on loopback and forwards bytes both ways until told to
//! misbehave.
//!
//! ```ignore
//! let proxy = Proxy::start(upstream_addr).await;   // listens on 127.0.0.1:0
//! proxy.set(Mode::Refuse);                          // connections reset, none forwarded
//! proxy.set(Mode::Pass);
//! proxy.set_for(b"\"mutate\"", Mode::Delay(Duration::from_secs(5))); // only replies to those
//! ```
//!
//! Modes (they apply at once, to connections already open too):
//! - [`Mode::Pass`]: forward everything.
//! - [`Mode::Refuse`]: new connections are reset (RST) on accept; open ones are closed.
//! - [`Mode::Hang`]: stop forwarding in both directions, keep every socket open (no FIN, no RST):
//!   a peer that went silent.
//! - [`Mode::Delay`]: replies (peer → client bytes) are held this long before they are forwarded.
//! - [`Mode::Cut`]: forward this many more bytes of the reply, then close both sides.
//!
//! [`Proxy::set_for`] limits the mode to the replies that follow a request whose bytes contain a
//! needle (`runCmds` with `configure`, an OVSDB `mutate`, a SOAP `RetrievePropertiesEx`); other
//! replies pass. The needle is looked for in each read of the client's bytes (plus the tail of the
//! read before, so a needle split across reads is still seen).
#![allow(dead_code)] // each test binary uses a different part of this shared helper

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Hang,
    Delay(Duration),
    Cut(usize),
}

#[derive(Clone, Debug)]
struct Rule {
    mode: Mode,
    /// Only replies after a request containing this (None: all traffic).
    needle: Option<Vec<u8>>,
}

/// A running proxy; dropping it stops accepting (open connections end with their peers).
pub struct Proxy {
    addr: SocketAddr,
    rule: watch::Sender<Rule>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (rule, rx) = watch::channel(Rule { mode: Mode::Pass, needle: None });
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let rx = rx.clone();
                if rx.borrow().mode == Mode::Refuse && rx.borrow().needle.is_none() {
                    reset(client);
                    continue;
                }
                tokio::spawn(connection(client, upstream, rx));
            }
        });
        Proxy { addr, rule, accepted, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `mode` to all traffic from now on.
    pub fn set(&self, mode: Mode) {
        self.rule.send_replace(Rule { mode, needle: None });
    }

    /// Applies `mode` to the replies that follow a request containing `needle`; the rest passes.
    pub fn set_for(&self, needle: &[u8], mode: Mode) {
        self.rule.send_replace(Rule { mode, needle: Some(needle.to_vec()) });
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

/// Closes `s` with a reset rather than a FIN.
fn reset(s: TcpStream) {
    // Linger 0 turns the close into an RST. (A failure to set it leaves an ordinary close.)
    #[allow(deprecated)] // tokio deprecates set_linger for blocking-close concerns; 0 never blocks
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

async fn connection(client: TcpStream, upstream: SocketAddr, rule: watch::Receiver<Rule>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Whether the reply now flowing answers a request that matched the rule's needle.
    let armed = Arc::new(Mutex::new(false));
    let (stop_tx, stop) = watch::channel(false);

    let up = {
        let (rule, armed, mut stop) = (rule.clone(), armed.clone(), stop.clone());
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let n = tokio::select! {
                    n = cr.read(&mut buf) => n,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let r = rule.borrow().clone();
                if let Some(needle) = &r.needle {
                    let mut window = std::mem::take(&mut tail);
                    window.extend_from_slice(&buf[..n]);
                    *armed.lock().unwrap() = window.windows(needle.len()).any(|w| w == needle.as_slice());
                    tail = window[window.len().saturating_sub(needle.len())..].to_vec();
                }
                if !wait_while_hung(&rule, &armed, &mut stop).await {
                    return;
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = {
        let (rule, armed, mut stop) = (rule.clone(), armed.clone(), stop.clone());
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::select! {
                    n = sr.read(&mut buf) => n,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mode = effective(&rule, &armed);
                match mode {
                    Mode::Delay(d) => tokio::time::sleep(d).await,
                    Mode::Cut(left) => {
                        let _ = cw.write_all(&buf[..n.min(left)]).await;
                        let _ = cw.shutdown().await;
                        return;
                    }
                    Mode::Refuse => return,
                    Mode::Pass | Mode::Hang => {}
                }
                if !wait_while_hung(&rule, &armed, &mut stop).await {
                    return;
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let mut refused = rule.clone();
    let refuse = async move {
        let _ = refused.wait_for(|r| r.mode == Mode::Refuse && r.needle.is_none()).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = refuse => {}
    }
    // Either side ending ends both (dropping the halves closes the sockets).
    let _ = stop_tx.send(true);
}

fn effective(rule: &watch::Receiver<Rule>, armed: &Mutex<bool>) -> Mode {
    let r = rule.borrow();
    match &r.needle {
        Some(_) if !*armed.lock().unwrap() => Mode::Pass,
        _ => r.mode.clone(),
    }
}

/// Holds while the rule says Hang for this traffic; false when the connection is stopping.
async fn wait_while_hung(rule: &watch::Receiver<Rule>, armed: &Mutex<bool>, stop: &mut watch::Receiver<bool>) -> bool {
    let mut rule = rule.clone();
    loop {
        if *stop.borrow() {
            return false;
        }
        if effective(&rule, armed) != Mode::Hang {
            return true;
        }
        tokio::select! {
            _ = rule.changed() => {}
            _ = stop.changed() => {}
        }
    }
}
