//! The simulator's HTTP side: one accept loop per endpoint (pool member), each connection
//! served by hyper with an axum router that accepts `POST` on any path (`/` for most clients,
//! `/RPC2` for Python's `xmlrpc.client`). Cutting connectivity drops every open connection
//! and every new one until it is restored.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::xmlrpc::{self, Response, Value};
use crate::fault::{Fault, OVERSIZE_BYTES};

use super::pool::{Dispatch, Pool};

/// Longest `event.from` poll the simulator holds open.
const MAX_POLL: Duration = Duration::from_secs(300);

/// State shared by every endpoint and the control handle.
#[derive(Debug)]
pub struct Shared {
    pub pool: Mutex<Pool>,
    /// Bumped on every change (objects, sessions, master): wakes `event.from` polls.
    pub changed: watch::Sender<u64>,
    pub cut: AtomicBool,
    /// Cancelled to drop every open connection; replaced after each cut.
    pub conns: Mutex<CancellationToken>,
    /// Ends all accept loops when the simulator is dropped.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn new(pool: Pool) -> Arc<Self> {
        Arc::new(Self {
            pool: Mutex::new(pool),
            changed: watch::channel(0).0,
            cut: AtomicBool::new(false),
            conns: Mutex::new(CancellationToken::new()),
            shutdown: CancellationToken::new(),
        })
    }

    /// Runs `f` on the pool and wakes waiting polls.
    pub fn with_pool<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> T {
        let out = {
            let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut p)
        };
        self.changed.send_modify(|n| *n += 1);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            t.cancel();
            *t = CancellationToken::new();
        }
    }
}

#[derive(Clone)]
struct Endpoint {
    shared: Arc<Shared>,
    index: usize,
}

/// Binds `addr`, registers it as endpoint number N in the pool and serves it in the background.
pub async fn start_endpoint(shared: &Arc<Shared>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let index = shared.with_pool(|p| {
        p.endpoints.push(local.to_string());
        p.endpoints.len() - 1
    });
    let ep = Endpoint { shared: shared.clone(), index };
    let router = Router::new().fallback(post(handle)).with_state(ep);
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shared.shutdown.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            if shared.cut.load(Ordering::SeqCst) {
                drop(stream);
                continue;
            }
            let token = shared.conns.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let stop = shared.shutdown.clone();
            let svc = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = token.cancelled() => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(local)
}

fn xml(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

async fn handle(State(ep): State<Endpoint>, body: Bytes) -> HttpResponse {
    let call = match xmlrpc::decode_call(&body) {
        Ok(c) => c,
        Err(e) => {
            let fault = Response::Fault { code: -1, message: format!("cannot parse the request: {e}") };
            return xml(StatusCode::OK, xmlrpc::encode_response(&fault));
        }
    };
    // Calls that log an event or end a session wake the waiting polls; reads do not.
    let dispatched = if matches!(call.method.as_str(), "event.inject" | "session.logout") {
        ep.shared.with_pool(|p| p.dispatch(ep.index, &call.method, &call.params))
    } else {
        ep.shared.lock().dispatch(ep.index, &call.method, &call.params)
    };
    let resp = match dispatched {
        Dispatch::Reply(r) => r,
        Dispatch::WaitEvents { session, classes, since, timeout } => {
            wait_events(&ep.shared, &session, &classes, since, timeout).await
        }
    };
    let mut body = xmlrpc::encode_response(&resp);
    if call.method.ends_with(".get_all_records") && ep.shared.lock().fault == Fault::Oversize {
        body.resize(body.len() + OVERSIZE_BYTES, b' ');
    }
    xml(StatusCode::OK, body)
}

async fn wait_events(shared: &Shared, session: &str, classes: &HashSet<String>, since: u64, timeout: f64) -> Response {
    let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(MAX_POLL).min(MAX_POLL);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = shared.changed.subscribe();
    loop {
        rx.borrow_and_update();
        {
            let p = shared.lock();
            match p.events_since(session, classes, since) {
                Err(r) => return r,
                Ok(Some(v)) => return Response::Success(v),
                Ok(None) => {}
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let p = shared.lock();
    if !p.session_valid(session) {
        return Response::Failure(vec!["SESSION_INVALID".into(), session.into()]);
    }
    Response::Success(p.empty_batch(classes))
}

/// Used by the control handle to read a string field.
pub fn str_field(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}
