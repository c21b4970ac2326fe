//! The running agent, wired: the store in the data directory, the engine, one task per
//! hypervisor adapter, one reconciler per switch, the metrics tap and the HTTP endpoint. `run`
//! and `demo` both build on this; neither adds logic of its own.

use std::path::Path;
use std::sync::Arc;

use adapters::{vsphere, xen};
use anyhow::{Context, Result};
use engine::clock::{Clock, SystemClock};
use engine::reconciler::{Ledger, Reconciler, SwitchRecord};
use engine::runtime::discover::Poller;
use engine::runtime::Work;
use engine::switch::Switch;
use engine::{Engine, Event, HypervisorId, Kind, Recorded, LOSS_RECORDER};
use store::layout::{db_path, EVENTS_LOG, LEDGER_TABLE, META_TABLE, POLICY_KEY, SWITCH_AUDIT_LOG};
use store::{AnyLog, AnyStore, Fence, Log, OnLoss, PgStore, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use adapters::driver::Health;

use crate::config::{Hypervisor, StorePlan};
use crate::metrics::Metrics;

/// A hypervisor adapter's configuration.
#[derive(Clone)]
pub enum Adapter {
    VMware(vsphere::Config),
    Xen(xen::Config),
}

impl Adapter {
    /// The adapter for a configured hypervisor: the entry's keys over the adapter's defaults,
    /// validated as the adapter will use them.
    pub fn from_config(kind: Kind, h: &Hypervisor) -> Result<Self> {
        fn set<T: Copy>(to: &mut T, from: Option<T>) {
            if let Some(v) = from {
                *to = v;
            }
        }
        match kind {
            Kind::VMware => {
                let mut c = vsphere::Config::new(&h.url, &h.user, h.password.clone());
                c.tls = h.tls.clone();
                set(&mut c.backoff_initial_ms, h.backoff_initial_ms);
                set(&mut c.backoff_max_ms, h.backoff_max_ms);
                set(&mut c.fatal_retry_secs, h.fatal_retry_secs);
                set(&mut c.connect_timeout_ms, h.connect_timeout_ms);
                set(&mut c.request_timeout_ms, h.request_timeout_ms);
                set(&mut c.liveness_secs, h.liveness_secs);
                set(&mut c.wait_max_seconds, h.wait_secs);
                set(&mut c.resync_secs, h.resync_secs);
                set(&mut c.page_size, h.page_size);
                set(&mut c.max_body_bytes, h.max_body_bytes);
                c.validate()?;
                Ok(Adapter::VMware(c))
            }
            Kind::XenCitrix => {
                let mut c = xen::Config::new(&h.url, &h.user, h.password.clone());
                c.tls = h.tls.clone();
                set(&mut c.backoff_initial_ms, h.backoff_initial_ms);
                set(&mut c.backoff_max_ms, h.backoff_max_ms);
                set(&mut c.fatal_retry_secs, h.fatal_retry_secs);
                set(&mut c.connect_timeout_ms, h.connect_timeout_ms);
                set(&mut c.call_timeout_ms, h.request_timeout_ms);
                set(&mut c.liveness_secs, h.liveness_secs);
                if let Some(w) = h.wait_secs {
                    c.event_timeout_secs = f64::from(w);
                }
                set(&mut c.resync_secs, h.resync_secs);
                set(&mut c.max_body_bytes, h.max_body_bytes);
                c.validate()?;
                Ok(Adapter::Xen(c))
            }
        }
    }

    /// Where the adapter's password comes from.
    pub fn password(&self) -> &adapters::common::SecretSource {
        match self {
            Adapter::VMware(c) => &c.password,
            Adapter::Xen(c) => &c.password,
        }
    }

    pub fn tls(&self) -> &adapters::common::TlsOptions {
        match self {
            Adapter::VMware(c) => &c.tls,
            Adapter::Xen(c) => &c.tls,
        }
    }

    /// How long expiry waits for this adapter's last attempt.
    fn last_attempt_window(&self) -> std::time::Duration {
        match self {
            Adapter::VMware(c) => c.last_attempt_window(),
            Adapter::Xen(c) => c.last_attempt_window(),
        }
    }
}

pub struct Agent {
    pub engine: Engine,
    engine_config: engine::config::Config,
    pub metrics: Arc<Metrics>,
    store: AnyStore,
    events: Arc<AnyLog<Recorded>>,
    audit: Arc<AnyLog<SwitchRecord>>,
    /// The work running under a lease (instances sharing a store, ADR 0014), each with what
    /// ends it.
    running: std::collections::BTreeMap<Work, Scope>,
    /// Cancelled at shutdown: every task finishes its step and returns (adapters and the tap
    /// are dropped at once).
    stop: CancellationToken,
    /// Cancelled when a task has not returned within [`STOP_WITHIN`] of `stop`: its future is
    /// dropped at its next await.
    kill: CancellationToken,
    tasks: TaskTracker,
}

/// How long shutdown waits for the tasks after `stop` before dropping them.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

impl Agent {
    /// Opens (creating) the data directory and starts the engine on it: snapshot + tail,
    /// expiry of hypervisors whose grace ran out while netfold was down. A log that lost
    /// acknowledged records is refused.
    pub async fn start(data_dir: &Path, config: engine::config::Config, clock: Arc<dyn Clock>) -> Result<Agent> {
        Self::start_with(data_dir, config, clock, OnLoss::Refuse).await
    }

    /// Like [`Agent::start`]; with [`OnLoss::Accept`] a log that lost acknowledged records is
    /// opened anyway, and each loss is first appended to the event log as `LossAccepted`.
    pub async fn start_with(
        data_dir: &Path,
        config: engine::config::Config,
        clock: Arc<dyn Clock>,
        on_loss: OnLoss,
    ) -> Result<Agent> {
        Self::start_on(&StorePlan::Sled, data_dir, config, clock, on_loss).await
    }

    /// Like [`Agent::start_with`], on the configured store: sled in `data_dir`, or PostgreSQL.
    pub async fn start_on(
        plan: &StorePlan,
        data_dir: &Path,
        config: engine::config::Config,
        clock: Arc<dyn Clock>,
        on_loss: OnLoss,
    ) -> Result<Agent> {
        let store = open_store(plan, data_dir).await?;
        Self::start_in(store, plan.describe(data_dir), config, clock, on_loss, false).await
    }

    /// Starts the agent on an open store (`place` names it in errors). `shared`: one of
    /// several instances on the store (ADR 0014): the engine follows the log and appends only
    /// for the work started with [`Agent::start_work`], under that work's lease.
    pub async fn start_in(
        store: AnyStore,
        place: String,
        config: engine::config::Config,
        clock: Arc<dyn Clock>,
        on_loss: OnLoss,
        shared: bool,
    ) -> Result<Agent> {
        store
            .table(META_TABLE)
            .and_then(|t| t.insert(POLICY_KEY, &config.policy))
            .with_context(|| format!("cannot record the policy in the {place}"))?;
        let refused = "netfold refuses to start on a log that lost acknowledged records (`netfold verify` \
                       names them; `netfold run --accept-loss` records the loss in the log and continues)";
        let events = store.log_on_loss::<Recorded>(EVENTS_LOG, on_loss).await.context(refused)?;
        let audit = store.log_on_loss::<SwitchRecord>(SWITCH_AUDIT_LOG, on_loss).await.context(refused)?;
        let (events, audit) = (Arc::new(events), Arc::new(audit));
        record_losses(&events, &audit, &*clock).await?;
        let engine = if shared {
            Engine::start_shared(events.clone(), config.clone(), clock).await
        } else {
            Engine::start(events.clone(), config.clone(), clock).await
        };
        let engine = engine.with_context(|| format!("cannot recover state from the {place}"))?;
        let metrics = Arc::new(Metrics::default());
        metrics.set_engine(engine.metrics().clone());
        let m = metrics.clone();
        engine.metrics().observe_appends(move |took| m.append_latency.observe(took.as_secs_f64()));
        let (stop, kill, tasks) = (CancellationToken::new(), CancellationToken::new(), TaskTracker::new());
        let running = Default::default();
        let agent = Agent { engine, engine_config: config, metrics, store, events, audit, running, stop, kill, tasks };
        let tap =
            crate::metrics::tap(agent.metrics.clone(), agent.events.clone(), agent.audit.clone(), agent.engine.state());
        // The tap follows the logs until they close, which is after shutdown: it must end at
        // `stop` like every other task, or shutdown waits out its timeout while the engine's
        // grace timers keep running (an Expired could be appended during a restart).
        agent.spawn_until_stop(tap);
        Ok(agent)
    }

    /// Starts the agent on the wall clock.
    pub async fn start_now(data_dir: &Path, config: engine::config::Config) -> Result<Agent> {
        Self::start(data_dir, config, Arc::new(SystemClock)).await
    }

    /// Starts the adapter for one hypervisor; it reports into the engine until the agent stops
    /// and never stops on an error of its own (see `adapters::driver`): its health is in
    /// `/healthz` and `/metrics`.
    pub async fn add_hypervisor(&mut self, id: HypervisorId, kind: Kind, adapter: Adapter) -> Result<()> {
        let scope = self.whole();
        self.add_hypervisor_in(id, kind, adapter, &scope).await
    }

    /// Starts the adapter for one hypervisor in `scope` (see [`Agent::add_hypervisor`]).
    pub async fn add_hypervisor_in(
        &mut self,
        id: HypervisorId,
        kind: Kind,
        adapter: Adapter,
        scope: &Scope,
    ) -> Result<()> {
        let grace = self.engine_config.grace_for(&id);
        let link = self.engine.link(id.clone(), kind, adapter.last_attempt_window()).await;
        let (adapter, health): (futures::future::BoxFuture<'static, ()>, _) = match adapter {
            Adapter::VMware(c) => {
                let health = Health::new(&c.sdk_url());
                let a = vsphere::Adapter::new(c).with_context(|| format!("hypervisor {id}"))?;
                (Box::pin(a.run(link, grace, health.clone())), health)
            }
            Adapter::Xen(c) => {
                let health = Health::new(&c.url);
                let a = xen::Adapter::new(c).with_context(|| format!("hypervisor {id}"))?;
                (Box::pin(a.run(link, grace, health.clone())), health)
            }
        };
        self.metrics.add_hypervisor(id.clone(), kind, health);
        let stop = scope.stop.clone();
        self.spawn_in(scope, async move {
            stop.run_until_cancelled(adapter).await;
        });
        Ok(())
    }

    /// Starts a reconciler for `switch`.
    pub fn add_switch<S: Switch>(&mut self, switch: Arc<S>, config: engine::reconciler::Config) -> Result<()> {
        let scope = self.whole();
        self.add_switch_in(switch, config, &scope)
    }

    /// Starts `switch`'s reconciler (and discovery) in `scope`: under its lease, the ownership
    /// ledger and the switch audit are written under the lease's fence, so a deposed instance's
    /// write-ahead claim (ADR 0004) is refused by PostgreSQL rather than landing without its
    /// switch write.
    pub fn add_switch_in<S: Switch>(
        &mut self,
        switch: Arc<S>,
        config: engine::reconciler::Config,
        scope: &Scope,
    ) -> Result<()> {
        let table = self.store.table(LEDGER_TABLE).context("cannot open the ownership ledger")?;
        let table = match &scope.fence {
            Some(f) => table.fenced(f.clone()),
            None => table,
        };
        let ledger = Ledger::new(table, switch.name());
        let name = switch.name().to_string();
        if let Some(every) = config.discover_every {
            let poller = Poller::new(switch.clone(), config.policy.clone(), every, self.engine.switch_observer());
            self.metrics.add_discovery(name.clone(), poller.stats());
            self.spawn_in(scope, poller.run(scope.stop.clone().cancelled_owned()));
        }
        match &scope.fence {
            Some(f) => {
                let audit = Arc::new(store::Fenced::new(self.audit.clone(), f.clone()));
                self.spawn_reconciler(
                    name,
                    Reconciler::new(switch, ledger, audit, self.engine.desired(), config),
                    scope,
                );
            }
            None => {
                let audit = self.audit.clone();
                self.spawn_reconciler(
                    name,
                    Reconciler::new(switch, ledger, audit, self.engine.desired(), config),
                    scope,
                );
            }
        }
        Ok(())
    }

    /// Registers `reconciler`'s counters and runs it in `scope`.
    fn spawn_reconciler<S: Switch, L: Log<SwitchRecord>>(
        &self,
        name: String,
        reconciler: Reconciler<S, L>,
        scope: &Scope,
    ) {
        self.metrics.add_switch(name, reconciler.stats());
        self.spawn_in(scope, reconciler.run(scope.stop.clone().cancelled_owned()));
    }

    /// What runs for the agent's whole life.
    fn whole(&self) -> Scope {
        Scope { stop: self.stop.clone(), tasks: None, fence: None }
    }

    /// Holds `work` (`hold`: its lease) and opens the scope its tasks run in: the engine first
    /// folds the log to the store's head and, for a hypervisor, continues its grace from the log.
    pub async fn start_work(&mut self, work: &Work, fence: Fence) -> Result<Scope> {
        self.engine.hold(work.clone(), fence.clone()).await.with_context(|| format!("cannot take up {work}"))?;
        let scope = Scope { stop: self.stop.child_token(), tasks: Some(TaskTracker::new()), fence: Some(fence) };
        self.running.insert(work.clone(), scope.clone());
        Ok(scope)
    }

    /// Stops `work`'s tasks (the reconciler finishes its step; the adapter ends at once) and
    /// has the engine append nothing more for it.
    pub async fn stop_work(&mut self, work: &Work) {
        if let Some(scope) = self.running.remove(work) {
            scope.stop.cancel();
            if let Some(tasks) = &scope.tasks {
                tasks.close();
                if tokio::time::timeout(STOP_WITHIN, tasks.wait()).await.is_err() {
                    tracing::warn!(work = %work, tasks = tasks.len(), "{work}: tasks still running {STOP_WITHIN:?} after its stop");
                }
            }
        }
        // The core answers once it is done with what it is doing; that may be an append the
        // store has not answered (a database that hangs), for as long as it hangs. The keeper
        // does not wait that out: the append is under this work's fence, which the database
        // refuses once the lease is another's, and the unhold, a task of its own, still reaches
        // the core and is taken in order.
        let unhold = tokio::spawn(self.engine.unhold(work.clone()));
        if tokio::time::timeout(STOP_WITHIN, unhold).await.is_err() {
            tracing::warn!(work = %work, "{work}: the engine is busy (an append the log has not answered); \
                not waiting for it to let go (its appends are fenced)");
        }
        match work {
            Work::Hypervisor(id) => self.metrics.remove_hypervisor(id),
            Work::Switch(name) => self.metrics.remove_switch(name),
        }
    }

    /// Serves the HTTP endpoint ([`crate::http`]: health, metrics, status and the audit API
    /// the CLI reads while the agent holds the data directory) on `http.listen` until the
    /// agent stops.
    pub async fn serve_http(&mut self, http: &crate::config::HttpPlan) -> Result<std::net::SocketAddr> {
        let addr = http.listen;
        let options = crate::http::ServeOptions {
            token: http.token.clone(),
            max_connections: http.max_connections,
            header_timeout: crate::http::HEADER_TIMEOUT,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for /healthz, /metrics and /state"))?;
        let bound = listener.local_addr()?;
        let history = replay::History::live(self.store.clone(), self.events.clone(), self.engine_config.policy.clone());
        let ledger = self.store.table(LEDGER_TABLE).context("cannot open the ownership ledger")?;
        let app = crate::http::router(crate::http::Api {
            metrics: self.metrics.clone(),
            state: self.engine.state(),
            events: self.events.clone(),
            audit: self.audit.clone(),
            releaser: self.engine.releaser(),
            history: Arc::new(history),
            status: Arc::new(crate::status::Sources { engine: self.engine_config.clone(), ledger }),
        });
        let shutdown = self.stop.clone().cancelled_owned();
        self.spawn(async move {
            if let Err(e) = crate::http::serve(listener, app, options, shutdown).await {
                tracing::error!(error = %e, "http endpoint stopped");
            }
        });
        Ok(bound)
    }

    /// Runs `task` in `scope` (counted by the scope's tasks too, when it has its own).
    fn spawn_in(&self, scope: &Scope, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match &scope.tasks {
            Some(tasks) => self.spawn(tasks.track_future(task)),
            None => self.spawn(task),
        }
    }

    /// Runs `task` until it returns, or until it is killed at shutdown.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let kill = self.kill.clone();
        self.tasks.spawn(async move {
            kill.run_until_cancelled(task).await;
        });
    }

    /// Runs `task` until it returns or the agent stops (it has no step to finish).
    pub fn spawn_until_stop(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// Stops adapters, reconcilers and the endpoint, lets in-flight appends complete, saves a
    /// final snapshot and flushes the log.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(STOP_WITHIN, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                "tasks still running {STOP_WITHIN:?} after the stop: dropping them"
            );
            self.kill.cancel();
            self.tasks.wait().await;
        }
        self.engine.shutdown().await.context("engine shutdown")?;
        // Bounded: a full or failing disk must not keep netfold from stopping.
        let store = self.store.clone();
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::task::spawn_blocking(move || store.flush()),
        )
        .await
        {
            Ok(Ok(flushed)) => flushed.context("flushing the store")?,
            Ok(Err(e)) => anyhow::bail!("flushing the data directory failed: {e}"),
            Err(_) => anyhow::bail!("flushing the data directory did not finish within 5 s"),
        }
        Ok(())
    }
}

/// What a task of the agent runs under: the agent's life, or one piece of work's lease.
#[derive(Clone)]
pub struct Scope {
    /// Cancelled when the work (or the agent) stops.
    stop: CancellationToken,
    /// The work's own tasks, waited for when it stops (`None`: the agent's).
    tasks: Option<TaskTracker>,
    /// The lease the work's writes are made under.
    fence: Option<Fence>,
}

/// Opens (creating) the configured store: sled in `data_dir`, or PostgreSQL.
pub async fn open_store(plan: &StorePlan, data_dir: &Path) -> Result<AnyStore> {
    Ok(match plan {
        StorePlan::Sled => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
            let path = db_path(data_dir);
            AnyStore::Sled(Store::open(&path).with_context(|| {
                format!(
                    "cannot open the database at {} (is another netfold running on this data directory?)",
                    path.display()
                )
            })?)
        }
        StorePlan::Postgres(pg) => AnyStore::Postgres(
            PgStore::connect(pg.config.clone(), pg.tls.clone())
                .await
                .with_context(|| format!("cannot open the store at PostgreSQL {}", pg.url))?,
        ),
    })
}

/// After an accepted loss: appends a `LossAccepted` event per log that lost records (which
/// re-anchors the event log), then re-anchors the switch audit log.
async fn record_losses(events: &AnyLog<Recorded>, audit: &AnyLog<SwitchRecord>, clock: &dyn Clock) -> Result<()> {
    let losses: Vec<_> = [(EVENTS_LOG, events.loss(), events.head()), (SWITCH_AUDIT_LOG, audit.loss(), audit.head())]
        .into_iter()
        .filter_map(|(log, loss, head)| loss.map(|l| (log, l.clone(), head)))
        .collect();
    if losses.is_empty() {
        return Ok(());
    }
    let recorder = HypervisorId::new(LOSS_RECORDER)?;
    let records = losses
        .iter()
        .map(|(log, loss, head)| {
            tracing::warn!(log, loss = %loss, "starting on a log that lost acknowledged records (--accept-loss)");
            Recorded {
                at: clock.now(),
                hypervisor: recorder.clone(),
                event: Event::LossAccepted {
                    log: log.to_string(),
                    found: *head,
                    acknowledged: loss.acknowledged(),
                    detail: loss.to_string(),
                },
            }
        })
        .collect();
    events.append(records).await.context("cannot record the accepted loss in the event log")?;
    audit.anchor_head().await.context("cannot re-anchor the switch audit log")?;
    Ok(())
}
