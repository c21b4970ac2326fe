//! The agent's HTTP endpoint: `/healthz`, `/metrics` (Prometheus text), `/state` (JSON of the
//! current desired state and hypervisor statuses). Loopback by default.

use std::sync::Arc;

use axum::extract::State as Ax;
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
        .with_state(Ctx { metrics, state, events })
}

async fn metrics_text(Ax(ctx): Ax<Ctx>) -> impl IntoResponse {
    let body = ctx.metrics.render(&ctx.state, ctx.events.head());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn state_json(Ax(ctx): Ax<Ctx>) -> Json<serde_json::Value> {
    Json(ctx.state.read(crate::audit::state_json_all))
}
