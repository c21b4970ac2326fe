//! The agent's HTTP endpoint: `/healthz` (200 when all is well, else 503 with the reasons:
//! [`crate::health`]), `/metrics` (OpenMetrics, or the classic Prometheus text to a client that
//! prefers `text/plain`), `/status` (what `netfold status` shows: [`crate::status`]), and the
//! audit API the CLI reads while the data directory is the agent's alone (sled lets one process
//! open it): `/state?at=&switch=` (a [`crate::audit::StateView`]), `/why?port=&vlan=&at=`,
//! `/diff?from=&to=`, `/verify`, `/log` and `/switch-log` (JSON lines; long-polling up to 20 s
//! for what `--follow` reads, or pages of what is there with `wait=false`) and `POST
//! /release?hypervisor=H` (lets a held mass removal through). The answers are computed with the
//! same functions the CLI uses on a stopped data directory (`replay` over the agent's live log),
//! and returned as data: the CLI renders them (ADR 0010). docs/openapi.json documents every
//! route: the router is built from [`ROUTES`], which a unit test below compares with the
//! document, and tests/live_audit.rs validates live answers against its schemas. Loopback by
//! default.
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
use engine::reconciler::SwitchRecord;
use engine::runtime::{Releaser, SharedState};
use engine::Recorded;
use replay::{History, Point};
use store::{AnyLog, Log};

use crate::metrics::{Format, Metrics};

/// The head a paged answer reads to (`/log`, `/switch-log` with `wait=false`).
pub const HEAD_HEADER: &str = "netfold-head";
/// Where the next page starts; absent on the last page.
pub const NEXT_HEADER: &str = "netfold-next";

/// What the endpoint serves from.
#[derive(Clone)]
pub struct Api {
    pub metrics: Arc<Metrics>,
    pub state: SharedState,
    pub events: Arc<AnyLog<Recorded>>,
    /// The switch audit log.
    pub audit: Arc<AnyLog<SwitchRecord>>,
    pub releaser: Releaser,
    /// The agent's own log as a history (`state --at`, `why`, `diff`, `verify`).
    pub history: Arc<History>,
    /// What `/status` adds to the metrics: grace periods, the ownership ledger.
    pub status: Arc<crate::status::Sources>,
}

#[derive(Clone)]
struct Ctx {
    api: Api,
    registry: Arc<prometheus_client::registry::Registry>,
}

/// Every route, method and path: the router is built from this list, and a test checks that
/// docs/openapi.json names exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/status"),
    ("GET", "/state"),
    ("GET", "/why"),
    ("GET", "/diff"),
    ("GET", "/verify"),
    ("GET", "/log"),
    ("GET", "/switch-log"),
    ("POST", "/release"),
];

pub fn router(api: Api) -> Router {
    let log = api.events.clone();
    let head = move || log.head();
    let registry = Arc::new(api.metrics.registry(api.state.clone(), head));
    let mut router = Router::new();
    for &(method, path) in ROUTES {
        let route = match (method, path) {
            ("GET", "/healthz") => get(healthz),
            ("GET", "/metrics") => get(metrics_text),
            ("GET", "/status") => get(status),
            ("GET", "/state") => get(state_json),
            ("GET", "/why") => get(why),
            ("GET", "/diff") => get(diff),
            ("GET", "/verify") => get(verify),
            ("GET", "/log") => get(log_lines),
            ("GET", "/switch-log") => get(switch_log_lines),
            ("POST", "/release") => post(release),
            _ => unreachable!("a route in ROUTES without a handler: {method} {path}"),
        };
        router = router.route(path, route);
    }
    router.with_state(Ctx { api, registry })
}

/// An error answer: `{"error": "what, with its causes"}`.
fn error(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

fn bad_request(what: &str, e: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
}

/// An error with its causes, in one line.
fn chain(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

/// Runs a computation over the history off the async workers (a fold reads the log).
async fn compute<T: serde::Serialize + Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&History) -> anyhow::Result<T> + Send + 'static,
) -> Response {
    let history = ctx.api.history.clone();
    match tokio::task::spawn_blocking(move || f(&history)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, chain(&e)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the computation failed: {e}")),
    }
}

/// A query parameter that does not parse: 400 with the reason.
struct Bad(String);

impl IntoResponse for Bad {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

fn parse_point(what: &str, s: &str) -> Result<Point, Bad> {
    s.parse::<Point>().map_err(|e| Bad(format!("{what}: {e}")))
}

async fn healthz(Ax(ctx): Ax<Ctx>) -> impl IntoResponse {
    let (ok, body) = crate::health::report(&ctx.api.metrics, &ctx.api.state);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

async fn status(Ax(ctx): Ax<Ctx>) -> Json<crate::status::StatusView> {
    Json(crate::status::collect(&ctx.api))
}

#[derive(serde::Deserialize)]
struct ReleaseQuery {
    hypervisor: String,
}

/// `POST /release?hypervisor=H`: 200 with how many removals were held, 404 when none is, 400
/// for a name that is not a hypervisor id.
async fn release(Ax(ctx): Ax<Ctx>, Query(q): Query<ReleaseQuery>) -> Response {
    let id = match engine::HypervisorId::new(&q.hypervisor) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match ctx.api.releaser.release(id.clone()).await {
        Ok(n) => Json(
            serde_json::json!({ "hypervisor": id.to_string(), "released": n, "applies": "at the next full read, asked for now" }),
        )
        .into_response(),
        Err(e @ engine::Error::NothingHeld { .. }) => error(StatusCode::NOT_FOUND, e),
        // Sharing a store: the instance holding the hypervisor's lease releases (its
        // `/healthz` and `netfold status` say which it is).
        Err(e @ engine::Error::NotHeld { .. }) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// OpenMetrics, or the classic text format for a client whose `Accept` prefers `text/plain`.
async fn metrics_text(Ax(ctx): Ax<Ctx>, headers: header::HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = crate::metrics::encode(&ctx.registry, format);
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "Accept")], body)
}

#[derive(serde::Deserialize)]
struct StateQuery {
    at: Option<String>,
    switch: Option<String>,
}

/// `GET /state`: the current state (the projected one, as of the last record applied), or with
/// `at` the state at a sequence number or time, folded from the log like `netfold state --at`.
async fn state_json(Ax(ctx): Ax<Ctx>, Query(q): Query<StateQuery>) -> Response {
    let at = match q.at.as_deref().map(|s| parse_point("at", s)).transpose() {
        Ok(at) => at,
        Err(r) => return r.into_response(),
    };
    let switch = q.switch;
    match at {
        Some(at) => compute(&ctx, move |h| crate::audit::state_of(h, Some(at), switch.as_deref(), &|_, _| {})).await,
        None => {
            let events = ctx.api.events.clone();
            let view = ctx.api.state.read(|st| {
                let seq = st.seq();
                let at = (seq > 0).then(|| events.read(seq).next()).flatten().and_then(|e| e.ok()).map(|e| e.record.at);
                crate::audit::StateView::of(st, at.map(|t| (seq, t)), switch.as_deref())
            });
            Json(view).into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct WhyQuery {
    port: String,
    vlan: u16,
    at: Option<String>,
}

/// `GET /why?port=SWITCH:PORT&vlan=N[&at=]`: [`replay::history::Why`].
async fn why(Ax(ctx): Ax<Ctx>, Query(q): Query<WhyQuery>) -> Response {
    let port: engine::SwitchPort = match q.port.parse() {
        Ok(p) => p,
        Err(e) => return bad_request("port", e),
    };
    let vlan = match engine::VlanId::new(q.vlan) {
        Ok(v) => v,
        Err(e) => return bad_request("vlan", e),
    };
    let at = match q.at.as_deref().map(|s| parse_point("at", s)).transpose() {
        Ok(at) => at,
        Err(r) => return r.into_response(),
    };
    compute(&ctx, move |h| Ok(h.why(&port, vlan, at, &|_, _| {})?)).await
}

#[derive(serde::Deserialize)]
struct DiffQuery {
    from: String,
    to: String,
}

/// `GET /diff?from=&to=`: the [`replay::history::DiffLine`]s between two points.
async fn diff(Ax(ctx): Ax<Ctx>, Query(q): Query<DiffQuery>) -> Response {
    let (a, b) = match (parse_point("from", &q.from), parse_point("to", &q.to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    compute(&ctx, move |h| Ok(h.diff(a, b, &|_, _| {})?)).await
}

/// `GET /verify`: [`replay::verify::Report`] as of the head when the check began; 500 with the
/// first failure.
async fn verify(Ax(ctx): Ax<Ctx>) -> Response {
    compute(&ctx, |h| Ok(replay::verify::verify(h, &|_, _| {})?)).await
}

#[derive(serde::Deserialize)]
struct LogQuery {
    #[serde(default = "one")]
    from: u64,
    /// With `wait=false`: the last sequence number to read (default: the head).
    to: Option<u64>,
    /// Long-poll for new records (default), or answer with what is there (`false`).
    #[serde(default = "yes")]
    wait: bool,
    hypervisor: Option<String>,
    kind: Option<String>,
    /// Unix ms.
    since: Option<u64>,
    until: Option<u64>,
}

#[derive(serde::Deserialize)]
struct SwitchLogQuery {
    #[serde(default = "one")]
    from: u64,
    to: Option<u64>,
    #[serde(default = "yes")]
    wait: bool,
    switch: Option<String>,
}

fn one() -> u64 {
    1
}

fn yes() -> bool {
    true
}

/// Most records one `/log` or `/switch-log` answer carries.
const LOG_PAGE: usize = 1000;
/// Most records one `wait=false` page reads (a narrow filter does not scan the whole log).
const LOG_SCAN: usize = 20_000;

/// One page of what `log` holds in `from..=to` (`to` at most the head): the JSON lines `line`
/// makes of the records it keeps, at most [`LOG_PAGE`] of them or [`LOG_SCAN`] records read.
fn page<R: store::Record>(
    log: &impl Log<R>,
    from: u64,
    to: Option<u64>,
    mut line: impl FnMut(store::Entry<R>) -> Option<String>,
) -> store::Result<(String, u64, Option<u64>)> {
    let head = log.head();
    let to = to.unwrap_or(head).min(head);
    let (mut body, mut kept, mut next) = (String::new(), 0, None);
    for (read, entry) in log.read(from.max(1)).enumerate() {
        let entry = entry?;
        let seq = entry.seq;
        if seq > to {
            break;
        }
        if let Some(l) = line(entry) {
            body.push_str(&l);
            body.push('\n');
            kept += 1;
        }
        if (kept >= LOG_PAGE || read + 1 >= LOG_SCAN) && seq < to {
            next = Some(seq + 1);
            break;
        }
    }
    Ok((body, to, next))
}

fn ndjson(page: store::Result<(String, u64, Option<u64>)>, what: &str) -> Response {
    match page {
        Ok((body, head, next)) => {
            let mut r = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
            r.headers_mut().insert(HEAD_HEADER, head.into());
            if let Some(n) = next {
                r.headers_mut().insert(NEXT_HEADER, n.into());
            }
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {what}: {e}")),
    }
}

/// JSON lines of the events from `from` on. Long-polling (the default, for `log --follow`): waits
/// up to 20 s for the first. With `wait=false`: a page of what the log holds, filtered like
/// `netfold log` (`hypervisor`, `kind`, `since` and `until` in unix ms), with the paging headers.
async fn log_lines(Ax(ctx): Ax<Ctx>, Query(q): Query<LogQuery>) -> Response {
    if q.wait {
        let events = ctx.api.events.clone();
        return long_poll(events, q.from, |e| replay::audit::json(&engine::Envelope::from(e)), "/log").await;
    }
    let hypervisor = match q.hypervisor.map(engine::HypervisorId::new).transpose() {
        Ok(h) => h,
        Err(e) => return bad_request("hypervisor", e),
    };
    let filter = replay::audit::Filter { hypervisor, since: q.since, until: q.until, kind: q.kind };
    let events = ctx.api.events.clone();
    let page = tokio::task::spawn_blocking(move || {
        page(&*events, q.from, q.to, |e| {
            let env = engine::Envelope::from(e);
            filter.matches(&env).then(|| replay::audit::json(&env))
        })
    })
    .await;
    match page {
        Ok(p) => ndjson(p, "the event log"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The switch audit (every switch, or `switch`'s) as JSON lines from `from` on: long-polling
/// for `netfold log --switch --follow`, or paged with `wait=false` like `/log`.
async fn switch_log_lines(Ax(ctx): Ax<Ctx>, Query(q): Query<SwitchLogQuery>) -> Response {
    let audit = ctx.api.audit.clone();
    if q.wait {
        return long_poll(audit, q.from, |e| crate::audit::switch_json(e.seq, &e.record).to_string(), "/switch-log")
            .await;
    }
    let page = tokio::task::spawn_blocking(move || {
        page(&*audit, q.from, q.to, |e| {
            q.switch
                .as_ref()
                .is_none_or(|s| *s == e.record.switch)
                .then(|| crate::audit::switch_json(e.seq, &e.record).to_string())
        })
    })
    .await;
    match page {
        Ok(p) => ndjson(p, "the switch audit log"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// JSON lines of the records from `from` on; waits up to 20 s for the first one.
async fn long_poll<R: store::Record>(
    log: Arc<AnyLog<R>>,
    from: u64,
    line: impl Fn(store::Entry<R>) -> String,
    what: &str,
) -> Response {
    let mut sub = log.subscribe(from.max(1));
    let mut body = String::new();
    let mut wait = Duration::from_secs(20);
    for _ in 0..LOG_PAGE {
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(Ok(e))) => {
                body.push_str(&line(e));
                body.push('\n');
                wait = Duration::ZERO;
            }
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "cannot serve {what}");
                break;
            }
            _ => break,
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use engine::{Event, HypervisorId, Recorded};
    use store::{Log, MemoryLog};

    /// Pages through `log` as `netfold log` does; returns the sequence numbers kept and pages.
    fn pages(log: &MemoryLog<Recorded>, keep: impl Fn(u64) -> bool) -> (Vec<u64>, usize) {
        let (mut seqs, mut n, mut from, mut to) = (Vec::new(), 0, Some(1), None);
        while let Some(f) = from {
            let (body, head, next) =
                super::page(log, f, to, |e| keep(e.seq).then(|| e.seq.to_string())).expect("a page");
            seqs.extend(body.lines().map(|l| l.parse::<u64>().unwrap()));
            n += 1;
            to = to.or(Some(head));
            from = next;
        }
        (seqs, n)
    }

    #[tokio::test]
    async fn paging_reads_every_record_once_up_to_the_head_the_first_page_saw() {
        let log = MemoryLog::new();
        let record = || Recorded { at: 1, hypervisor: HypervisorId::new("vc").unwrap(), event: Event::Expired };
        log.append((0..45_000).map(|_| record()).collect()).await.unwrap();
        let (all, n) = pages(&log, |_| true);
        assert_eq!(all, (1..=45_000).collect::<Vec<_>>());
        assert_eq!(n, 45, "pages of {} records", super::LOG_PAGE);
        // A narrow filter: each page stops after LOG_SCAN records read, and none is skipped.
        let (few, n) = pages(&log, |s| s % 7_000 == 0);
        assert_eq!(few, [7_000, 14_000, 21_000, 28_000, 35_000, 42_000]);
        assert_eq!(n, 3, "45,000 records in scans of {}", super::LOG_SCAN);
        let (none, n) = pages(&MemoryLog::new(), |_| true);
        assert!(none.is_empty() && n == 1);
    }

    /// docs/openapi.json documents exactly the routes the router serves: a route added or
    /// removed without the document fails here (the router is built from [`super::ROUTES`]).
    #[test]
    fn the_openapi_document_names_every_route_and_no_other() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")))
                .expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true), "an OpenAPI 3 document");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                let ops = ops.as_object().expect("operations");
                ops.keys().map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> =
            super::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(documented, served, "docs/openapi.json and http::ROUTES differ");
        // Every reference resolves.
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(doc["components"]["schemas"].get(name).is_some(), "no schema `{name}`");
        }
    }
}
