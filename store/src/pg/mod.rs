//! The PostgreSQL back end (ADR 0008): [`PgStore`] is one database holding any number of named
//! logs ([`PgLog`]) and tables, the same as a sled [`crate::Store`], for deployments where more
//! than one machine must see the same history.
//!
//! - **Its own runtime.** Every database call runs on a small tokio runtime the store owns (two
//!   worker threads): the pool's connections, each log's writer task and its head listener live
//!   there. The [`crate::Log`] trait is partly synchronous (`head`, `read`, `verify`, snapshots,
//!   checkpoints) like sled's calls, so the synchronous methods hand their query to that runtime
//!   and block the calling thread on the answer ([`Rt::block`]) — as a sled read blocks on its
//!   disk — which is safe from any thread, async or not, since the work never runs on the
//!   caller's own runtime; a worker of a multi-thread runtime blocks in `block_in_place`, so the
//!   runtime's other tasks go on meanwhile. `append` is asynchronous end to end.
//! - **Schema.** Versioned migrations in `store/migrations` (refinery, embedded at build time),
//!   run under an advisory lock when the store is opened, so two instances starting together
//!   migrate once.
//! - **TLS.** [`PgTls`]: plain TCP (loopback, a Unix socket) or rustls with a caller-built client
//!   configuration (the binary builds it with the hypervisors' trust options).

mod lease;
mod log;
mod table;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use lease::PgLeases;
pub use log::PgLog;
pub(crate) use table::PgTable;

use crate::{Error, Result, Seq};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Connections a store's pool holds at most: one per log writer, one per concurrent reader.
const POOL_SIZE: usize = 8;
/// How long a call waits for a pooled connection (or for a new one to be made) before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Arbitrary key of the advisory lock held while migrating (`"netfold\0"` as a number).
const MIGRATION_LOCK: i64 = 0x6e65_7466_6f6c_6400;

/// How a store reaches the server.
#[derive(Clone)]
pub enum PgTls {
    /// No TLS (a Unix socket or loopback).
    Off,
    /// TLS with this rustls client configuration.
    Rustls(Arc<rustls::ClientConfig>),
}

impl PgTls {
    fn manager(&self, config: tokio_postgres::Config) -> Manager {
        let mc = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        match self {
            PgTls::Off => Manager::from_config(config, tokio_postgres::NoTls, mc),
            PgTls::Rustls(c) => {
                Manager::from_config(config, tokio_postgres_rustls::MakeRustlsConnect::new((**c).clone()), mc)
            }
        }
    }

    /// A connection of its own (not from the pool), driven by a task on the current runtime;
    /// its notifications go to `notices`. For LISTEN and for migrations.
    async fn connect(
        &self,
        config: &tokio_postgres::Config,
        notices: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
    ) -> Result<tokio_postgres::Client> {
        match self {
            PgTls::Off => {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(Error::pg("connecting"))?;
                tokio::spawn(drive(conn, notices));
                Ok(client)
            }
            PgTls::Rustls(c) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**c).clone());
                let (client, conn) = config.connect(tls).await.map_err(Error::pg("connecting"))?;
                tokio::spawn(drive(conn, notices));
                Ok(client)
            }
        }
    }
}

/// Drives a dedicated connection until it closes, forwarding its notifications.
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notices: Option<tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(message) = futures::StreamExt::next(&mut messages).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if let Some(tx) = &notices {
                    let _ = tx.send(n);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "a PostgreSQL connection closed");
                break;
            }
        }
    }
}

/// The name of the store runtime's threads.
const THREAD_NAME: &str = "netfold-pg";

/// The store's runtime: where every database call runs.
pub(crate) struct Rt {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl Rt {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|e| Error::Closed(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(Self { runtime: Mutex::new(Some(runtime)), handle })
    }

    /// Runs `fut` on the store's runtime and waits for it, from any thread. On a thread of a
    /// multi-thread tokio runtime the wait is [`tokio::task::block_in_place`]: the runtime
    /// hands that thread's other tasks to another one meanwhile. Without it, two callers
    /// waiting on a database that does not answer (the pool waits up to 30 s for a connection)
    /// held both worker threads of a 2-core machine, and every timer and socket of the process
    /// stood still with them: lease renewals, the keeper's bounds, `/healthz`.
    pub(crate) fn block<T: Send + 'static>(&self, fut: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = move || rx.recv().map_err(|_| Error::Closed("the PostgreSQL runtime stopped".into()))?;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    /// Runs `fut` on the store's runtime; the caller awaits it from its own.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.handle.spawn(fut).await.map_err(|e| Error::Closed(format!("a PostgreSQL task failed: {e}")))?
    }

    pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) -> tokio::task::JoinHandle<()> {
        self.handle.spawn(fut)
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio refuses inside async code: let it go instead.
        // The last handle can be dropped by one of the runtime's own tasks (an aborted
        // listener): then it is let go from a thread of its own, never from inside itself.
        if let Some(rt) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if std::thread::current().name() == Some(THREAD_NAME) {
                std::thread::spawn(move || rt.shutdown_background());
            } else {
                rt.shutdown_background();
            }
        }
    }
}

pub(crate) struct PgInner {
    pub pool: Pool,
    pub rt: Rt,
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
    /// Opened with [`PgStore::connect_read_only`]: every session is read-only.
    pub read_only: bool,
}

/// One PostgreSQL database holding netfold's logs and tables.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<PgInner>,
}

impl PgStore {
    /// Connects to the database `config` names and brings its schema up to date (migrations in
    /// `store/migrations`). An unreachable server or a refused login is an error naming it.
    pub async fn connect(config: tokio_postgres::Config, tls: PgTls) -> Result<Self> {
        let inner = PgInner::new(config, tls, false)?;
        let migrating = inner.clone();
        inner.rt.run(async move { migrate(&migrating).await }).await?;
        Ok(Self { inner })
    }

    /// Connects for reading only (the audit commands): every session the store opens is
    /// read-only (`default_transaction_read_only`), so PostgreSQL itself refuses any write; the
    /// schema is not migrated but must be the one this build knows. A log that does not exist
    /// is an error rather than created.
    pub async fn connect_read_only(mut config: tokio_postgres::Config, tls: PgTls) -> Result<Self> {
        let options = [config.get_options().unwrap_or_default(), "-c default_transaction_read_only=on"].join(" ");
        config.options(options.trim());
        let inner = PgInner::new(config, tls, true)?;
        let checking = inner.clone();
        inner.rt.run(async move { schema_is_current(&checking).await }).await?;
        Ok(Self { inner })
    }

    /// Whether every host `config` names is on this machine (a Unix socket or a loopback
    /// address): where plain TCP exposes nothing.
    pub fn is_local(config: &tokio_postgres::Config) -> bool {
        config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Unix(_) => true,
            tokio_postgres::config::Host::Tcp(name) => {
                name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        })
    }

    /// The log named `name`, created empty if the database has none. Open each log once per
    /// process (its writer task owns the local head); other processes may append to the same
    /// log: each append is checked against the database's head in its own transaction.
    pub async fn log<R: crate::Record>(&self, name: &str) -> Result<PgLog<R>> {
        PgLog::open(self.inner.clone(), name).await
    }

    /// The store's leases (ADR 0009).
    pub fn leases(&self) -> PgLeases {
        PgLeases::new(self.inner.clone())
    }

    /// The durable key-value table named `name`.
    pub fn table(&self, name: &str) -> crate::Table {
        crate::Table::pg(PgTable::new(self.inner.clone(), name))
    }

    /// Whether the database holds no record, snapshot, checkpoint or table entry (a target for
    /// `netfold store copy`).
    pub async fn is_empty(&self) -> Result<bool> {
        self.inner
            .with_client(move |c| async move {
                let row = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM netfold_records) + (SELECT count(*) FROM netfold_snapshots) \
                         + (SELECT count(*) FROM netfold_checkpoints) + (SELECT count(*) FROM netfold_tables)",
                        &[],
                    )
                    .await
                    .map_err(Error::pg("counting what the database holds"))?;
                Ok(row.get::<_, i64>(0) == 0)
            })
            .await
    }

    /// The names of the logs the database holds.
    pub async fn log_names(&self) -> Result<Vec<String>> {
        self.inner
            .with_client(move |c| async move {
                let rows = c
                    .query("SELECT name FROM netfold_logs ORDER BY name", &[])
                    .await
                    .map_err(Error::pg("listing the logs"))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await
    }
}

impl PgStore {
    /// Creates the (empty) row of log `name` for an import.
    pub(crate) async fn import_log(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.inner
            .with_client(move |c| async move {
                c.execute("INSERT INTO netfold_logs (name) VALUES ($1) ON CONFLICT DO NOTHING", &[&name])
                    .await
                    .map_err(Error::pg("creating the log"))?;
                Ok(())
            })
            .await
    }

    /// Appends stored records as they are (already chained, after `head`), in one transaction.
    pub(crate) async fn import_records(&self, name: &str, head: Seq, rows: Vec<(Seq, Vec<u8>)>) -> Result<()> {
        let Some((last, value)) = rows.last() else { return Ok(()) };
        let tip = crate::codec::hash_record(*last, value);
        let new_head = to_sql(*last)?;
        let seqs = rows.iter().map(|(s, _)| to_sql(*s)).collect::<Result<Vec<_>>>()?;
        let values: Vec<Vec<u8>> = rows.into_iter().map(|(_, v)| v).collect();
        let (name, head) = (name.to_string(), to_sql(head)?);
        self.inner
            .with_client(move |c| async move {
                let n = c
                    .execute(log::APPEND, &[&name, &head, &new_head, &&tip[..], &seqs, &values])
                    .await
                    .map_err(Error::pg("copying records"))?;
                if n as usize != seqs.len() {
                    return Err(Error::Unavailable(format!("the log `{name}` was appended to during the copy")));
                }
                Ok(())
            })
            .await
    }

    /// Writes snapshots and checkpoints as they are, in one transaction.
    pub(crate) async fn import_meta(
        &self,
        name: &str,
        snapshots: Vec<crate::Snapshot>,
        checkpoints: Vec<(String, Seq)>,
    ) -> Result<()> {
        let name = name.to_string();
        self.inner
            .with_client(move |mut c| async move {
                let tx = c.transaction().await.map_err(Error::pg("copying snapshots"))?;
                for s in snapshots {
                    tx.execute(
                        "INSERT INTO netfold_snapshots (log, seq, bytes) VALUES ($1, $2, $3)",
                        &[&name, &to_sql(s.seq)?, &s.bytes],
                    )
                    .await
                    .map_err(Error::pg("copying snapshots"))?;
                }
                for (cname, seq) in checkpoints {
                    tx.execute(
                        "INSERT INTO netfold_checkpoints (log, name, seq) VALUES ($1, $2, $3)",
                        &[&name, &cname, &to_sql(seq)?],
                    )
                    .await
                    .map_err(Error::pg("copying checkpoints"))?;
                }
                tx.commit().await.map_err(Error::pg("copying snapshots"))
            })
            .await
    }
}

impl PgInner {
    fn new(mut config: tokio_postgres::Config, tls: PgTls, read_only: bool) -> Result<Arc<Self>> {
        // TLS is required when configured and not attempted otherwise: never a silent downgrade.
        config.ssl_mode(match tls {
            PgTls::Off => tokio_postgres::config::SslMode::Disable,
            PgTls::Rustls(_) => tokio_postgres::config::SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("netfold");
        }
        let rt = Rt::new()?;
        let pool = Pool::builder(tls.manager(config.clone()))
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| Error::Unavailable(format!("cannot build the PostgreSQL pool: {e}")))?;
        Ok(Arc::new(PgInner { pool, rt, config, tls, read_only }))
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| Error::Unavailable(format!("no PostgreSQL connection: {e}")))
    }

    /// Runs `f` with a pooled connection on the store's runtime; the caller awaits the answer
    /// from its own runtime.
    pub(crate) async fn with_client<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let inner = self.clone();
        self.rt.run(async move { f(inner.client().await?).await }).await
    }

    /// [`Self::with_client`] for synchronous callers: blocks the calling thread (any thread,
    /// async or not) until the answer is there.
    pub(crate) fn with_client_blocking<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let inner = self.clone();
        self.rt.block(async move { f(inner.client().await?).await })
    }
}

async fn migrate(inner: &PgInner) -> Result<()> {
    let mut client = inner.tls.connect(&inner.config, None).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(Error::pg("taking the migration lock"))?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    let report = report.map_err(|e| Error::Migrate(e.to_string()))?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "PostgreSQL schema migrated");
    }
    Ok(())
}

/// For a read-only store: the database's schema is the newest this build migrates to (an
/// older one needs `netfold run` of this build to migrate it; a newer one, a newer netfold).
async fn schema_is_current(inner: &PgInner) -> Result<()> {
    let known = embedded::migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0);
    let client = inner.client().await?;
    let applied = match client.query_one("SELECT max(version) FROM refinery_schema_history", &[]).await {
        Ok(row) => row.get::<_, Option<i32>>(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(e) => return Err(Error::pg("reading the schema version")(e)),
    };
    match applied {
        Some(v) if v as u32 == known => Ok(()),
        Some(v) => Err(Error::Migrate(format!(
            "the database's schema is at version {v}, this netfold reads version {known}: {}",
            if (v as u32) < known { "`netfold run` of this version migrates it" } else { "use a newer netfold" }
        ))),
        None => Err(Error::Migrate("the database holds no netfold schema: no netfold has run on it".into())),
    }
}

/// A sequence number as PostgreSQL stores it (`bigint`).
pub(crate) fn to_sql(seq: Seq) -> Result<i64> {
    i64::try_from(seq)
        .map_err(|_| Error::Meta { what: format!("sequence number {seq}"), reason: "beyond bigint".into() })
}

/// A sequence number read back from PostgreSQL.
pub(crate) fn from_sql(what: &str, v: i64) -> Result<Seq> {
    Seq::try_from(v).map_err(|_| Error::Meta { what: what.to_string(), reason: format!("negative: {v}") })
}
