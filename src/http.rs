//! The agent's HTTP endpoint: `/healthz` (200 when all is well, else 503 with the reasons:
//! [`crate::health`]), `/metrics` (OpenMetrics, or the classic
//! Prometheus text to a client that prefers `text/plain`), `/state` (JSON of the current desired state
//! and hypervisor statuses), `/log?from=SEQ` (the audit trail as JSON lines, long-polling up to
//! 20 s for new events — what `netfold log --follow` reads, since the data directory is the
//! agent's alone while it runs) and `POST /release?hypervisor=H` (lets a held mass removal
//! through: what `netfold release` calls). Loopback by default.
//!
//! [`serve`] is the serving layer around the router: at most `max_connections` connections at
//! once (more wait in the kernel's backlog), a request's headers must arrive within
//! [`HEADER_TIMEOUT`] and an idle keep-alive connection is closed after the same time (hyper's
//! header-read timer also runs while a connection waits for its next request), a WARN when
//! bound beyond loopback, and — when `[http] token_file` is set — `Authorization: Bearer TOKEN`
//! on every route but `/healthz`, compared in constant time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use adapters::common::{ExposeSecret as _, SecretString};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use axum::extract::{Query, State as Ax};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::runtime::{Releaser, SharedState};
use engine::Recorded;
use store::{AnyLog, Log};

use crate::metrics::{Format, Metrics};

#[derive(Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    registry: Arc<prometheus_client::registry::Registry>,
    state: SharedState,
    events: Arc<AnyLog<Recorded>>,
    releaser: Releaser,
}

pub fn router(metrics: Arc<Metrics>, state: SharedState, events: Arc<AnyLog<Recorded>>, releaser: Releaser) -> Router {
    let log = events.clone();
    let head = move || log.head();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/state", get(state_json))
        .route("/log", get(log_lines))
        .route("/release", post(release))
        .with_state(Ctx { registry: Arc::new(metrics.registry(state.clone(), head)), metrics, state, events, releaser })
}

async fn healthz(Ax(ctx): Ax<Ctx>) -> impl IntoResponse {
    let (ok, body) = crate::health::report(&ctx.metrics, &ctx.state);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

#[derive(serde::Deserialize)]
struct ReleaseQuery {
    hypervisor: String,
}

/// `POST /release?hypervisor=H`: 200 with how many removals were held, 404 when none is, 400
/// for a name that is not a hypervisor id.
async fn release(Ax(ctx): Ax<Ctx>, Query(q): Query<ReleaseQuery>) -> impl IntoResponse {
    let id = match engine::HypervisorId::new(&q.hypervisor) {
        Ok(id) => id,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": e.to_string() }))),
    };
    match ctx.releaser.release(id.clone()).await {
        Ok(n) => (
            StatusCode::OK,
            Json(
                serde_json::json!({ "hypervisor": id.to_string(), "released": n, "applies": "at the next full read, asked for now" }),
            ),
        ),
        Err(e @ engine::Error::NothingHeld { .. }) => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": e.to_string() })))
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": e.to_string() }))),
    }
}

/// OpenMetrics, or the classic text format for a client whose `Accept` prefers `text/plain`.
async fn metrics_text(Ax(ctx): Ax<Ctx>, headers: header::HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = crate::metrics::encode(&ctx.registry, format);
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "Accept")], body)
}

async fn state_json(Ax(ctx): Ax<Ctx>) -> Json<serde_json::Value> {
    Json(ctx.state.read(crate::audit::state_json_all))
}

#[derive(serde::Deserialize)]
struct From {
    from: u64,
}

/// Most events one `/log` answer carries.
const LOG_PAGE: usize = 1000;

/// JSON lines of the events from `from` on; waits up to 20 s for the first one.
async fn log_lines(Ax(ctx): Ax<Ctx>, Query(q): Query<From>) -> impl IntoResponse {
    let mut sub = ctx.events.subscribe(q.from.max(1));
    let mut body = String::new();
    let mut wait = Duration::from_secs(20);
    for _ in 0..LOG_PAGE {
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(Ok(e))) => {
                body.push_str(&replay::audit::json(&engine::Envelope::from(e)));
                body.push('\n');
                wait = Duration::ZERO;
            }
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "cannot serve /log");
                break;
            }
            _ => break,
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
}

/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection is kept.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How the endpoint is served.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `Authorization: Bearer` token required on every route but `/healthz`.
    pub token: Option<SecretString>,
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Requires the bearer token on every route but `/healthz`.
pub fn with_auth(router: Router, token: Option<SecretString>) -> Router {
    let Some(token) = token else { return router };
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move { authorize(&token, req, next).await }
    }))
}

async fn authorize(token: &SecretString, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.expose_secret().trim().as_bytes())) {
        next.run(req).await
    } else {
        let www = [(header::WWW_AUTHENTICATE, "Bearer")];
        (axum::http::StatusCode::UNAUTHORIZED, www, "a bearer token is required (Authorization: Bearer TOKEN)\n")
            .into_response()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their current request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            token = options.token.is_some(),
            "the HTTP endpoint is bound beyond loopback: /state and /log are readable by anyone who can reach it{}",
            if options.token.is_some() { " with the token" } else { "; set [http] token_file to require a token" }
        );
    }
    let app = with_auth(router, options.token.clone());
    let limit = Arc::new(Semaphore::new(options.max_connections.max(1)));
    // Cancelled once `shutdown` resolves: each connection finishes its current request.
    let stop = tokio_util::sync::CancellationToken::new();
    let conns = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        let header_timeout = options.header_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended");
            }
        });
    }
    stop.cancel();
    conns.close();
    conns.wait().await;
    Ok(())
}
