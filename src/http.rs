//! The agent's HTTP endpoint: `/healthz`, `/metrics` (Prometheus text), `/state` (JSON of the
//! current desired state and hypervisor statuses) and `/log?from=SEQ` (the audit trail as JSON
//! lines, long-polling up to 20 s for new events — what `netfold log --follow` reads, since the
//! data directory is the agent's alone while it runs). Loopback by default.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{Query, State as Ax};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use engine::runtime::SharedState;
use engine::Recorded;
use store::{Log, SledLog};

use crate::metrics::Metrics;

#[derive(Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    state: SharedState,
    events: Arc<SledLog<Recorded>>,
}

pub fn router(metrics: Arc<Metrics>, state: SharedState, events: Arc<SledLog<Recorded>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/state", get(state_json))
        .route("/log", get(log_lines))
        .with_state(Ctx { metrics, state, events })
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
