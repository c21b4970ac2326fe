//! The agent's HTTP endpoint: `/healthz` (200 when all is well, else 503 with the reasons:
//! [`crate::health`]), `/metrics` (Prometheus text), `/state` (JSON of the current desired state
//! and hypervisor statuses), `/log?from=SEQ` (the audit trail as JSON lines, long-polling up to
//! 20 s for new events — what `netfold log --follow` reads, since the data directory is the
//! agent's alone while it runs) and `POST /release?hypervisor=H` (lets a held mass removal
//! through: what `netfold release` calls). Loopback by default.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{Query, State as Ax};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::runtime::{Releaser, SharedState};
use engine::Recorded;
use store::{Log, SledLog};

use crate::metrics::Metrics;

#[derive(Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    state: SharedState,
    events: Arc<SledLog<Recorded>>,
    releaser: Releaser,
}

pub fn router(metrics: Arc<Metrics>, state: SharedState, events: Arc<SledLog<Recorded>>, releaser: Releaser) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/state", get(state_json))
        .route("/log", get(log_lines))
        .route("/release", post(release))
        .with_state(Ctx { metrics, state, events, releaser })
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

async fn metrics_text(Ax(ctx): Ax<Ctx>) -> impl IntoResponse {
    let body = ctx.metrics.render(&ctx.state, ctx.events.head());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
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
