//! The log's back ends as the contract tests see them: sled, the in-memory twin and PostgreSQL
//! (a private cluster per test binary: `sims::postgres`). A test is written once, generic over
//! [`Backend`], and [`backends!`] makes one `#[tokio::test]` per back end of it.
//! (`#[path]`-included by the test binaries that run on every back end.)

// Each test binary that includes this file uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use store::{Log, MemoryLog, PgLog, PgStore, PgTls, SledLog, Store};

use crate::common::Rec;

/// Where a test's logs live, across restarts.
pub trait Backend: Send + Sized + 'static {
    type Log: Log<Rec>;
    /// A fresh, empty store.
    fn fresh() -> impl std::future::Future<Output = Self> + Send;
    /// The log `name` (opened once per restart).
    fn open(&mut self, name: &str) -> impl std::future::Future<Output = Self::Log> + Send;
    /// Drops every handle (the caller has dropped its logs) and reopens the store: what a
    /// restarted process finds. The memory twin keeps its logs (it has no disk to reopen).
    fn restart(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// Rewrites the stored bytes of record `seq` of log `name` below the log (the caller has
    /// dropped its logs); the next [`Backend::open`] sees them.
    fn tamper(
        &mut self,
        name: &str,
        seq: u64,
        f: impl FnOnce(&mut Vec<u8>) + Send,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// Back ends that can also lose a record outright (the memory twin's records are a `Vec`).
pub trait Deletes: Backend {
    fn delete(&mut self, name: &str, seq: u64) -> impl std::future::Future<Output = ()> + Send;
}

pub struct Sled {
    dir: tempfile::TempDir,
    store: Option<Store>,
}

impl Backend for Sled {
    type Log = SledLog<Rec>;

    async fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Some(Store::open(dir.path()).unwrap());
        Self { dir, store }
    }

    async fn open(&mut self, name: &str) -> SledLog<Rec> {
        self.store.as_ref().unwrap().log(name).unwrap()
    }

    async fn restart(&mut self) {
        drop(self.store.take());
        self.store = Some(Store::open(self.dir.path()).unwrap());
    }

    async fn tamper(&mut self, name: &str, seq: u64, f: impl FnOnce(&mut Vec<u8>) + Send) {
        drop(self.store.take());
        rewrite_value(self.dir.path(), name, seq, f);
        self.store = Some(Store::open(self.dir.path()).unwrap());
    }
}

impl Deletes for Sled {
    /// Removes the block that starts at `seq` (the tests append one record per append, so one
    /// block per record).
    async fn delete(&mut self, name: &str, seq: u64) {
        drop(self.store.take());
        {
            let db = store::open_db(self.dir.path()).unwrap();
            assert!(db.open_tree(format!("{name}.log")).unwrap().remove(seq.to_be_bytes()).unwrap().is_some());
            db.flush().unwrap();
        }
        self.store = Some(Store::open(self.dir.path()).unwrap());
    }
}

/// Rewrites one stored record of a closed sled log directly in the database, using the block
/// layout documented in `store::codec`: `[count u32]` then `[len u32][record]` per record.
pub fn rewrite_value(dir: &std::path::Path, name: &str, seq: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let db = store::open_db(dir).unwrap();
    let tree = db.open_tree(format!("{name}.log")).unwrap();
    let (k, block) = tree.range(..=seq.to_be_bytes()).next_back().unwrap().unwrap();
    let first = u64::from_be_bytes(k.as_ref().try_into().unwrap());
    let count = u32::from_be_bytes(block[0..4].try_into().unwrap()) as usize;
    let mut records = Vec::new();
    let mut at = 4;
    for _ in 0..count {
        let len = u32::from_be_bytes(block[at..at + 4].try_into().unwrap()) as usize;
        records.push(block[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    f(&mut records[(seq - first) as usize]);
    let mut out = (count as u32).to_be_bytes().to_vec();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(&r);
    }
    tree.insert(k, out).unwrap();
    db.flush().unwrap();
}

/// The in-memory twin: `open` hands out handles on one log per name, kept across "restarts".
pub struct Memory {
    logs: BTreeMap<String, MemoryLog<Rec>>,
}

impl Backend for Memory {
    type Log = MemoryLog<Rec>;

    async fn fresh() -> Self {
        Self { logs: BTreeMap::new() }
    }

    async fn open(&mut self, name: &str) -> MemoryLog<Rec> {
        self.logs.entry(name.to_string()).or_default().clone()
    }

    async fn restart(&mut self) {}

    async fn tamper(&mut self, name: &str, seq: u64, f: impl FnOnce(&mut Vec<u8>) + Send) {
        self.logs[name].tamper(seq, f);
    }
}

/// A database of its own in this test binary's PostgreSQL cluster.
pub struct Postgres {
    db: String,
    store: Option<PgStore>,
}

impl Postgres {
    pub fn config(db: &str) -> store::PgConfig {
        let c = sims::postgres::Cluster::shared();
        let mut config = store::PgConfig::new();
        config.host(c.host()).port(c.port()).user(c.user()).password(c.password()).dbname(db);
        config
    }

    async fn connect(db: &str) -> PgStore {
        PgStore::connect(Self::config(db), PgTls::Off).await.unwrap()
    }

    pub fn sql(&self, sql: &str) -> String {
        sims::postgres::Cluster::shared().sql(&self.db, sql).unwrap()
    }

    pub fn db(&self) -> &str {
        &self.db
    }
}

impl Backend for Postgres {
    type Log = PgLog<Rec>;

    async fn fresh() -> Self {
        let db =
            tokio::task::spawn_blocking(|| sims::postgres::Cluster::shared().database("log").unwrap()).await.unwrap();
        let store = Some(Self::connect(&db).await);
        Self { db, store }
    }

    async fn open(&mut self, name: &str) -> PgLog<Rec> {
        self.store.as_ref().unwrap().log(name).await.unwrap()
    }

    async fn restart(&mut self) {
        drop(self.store.take());
        self.store = Some(Self::connect(&self.db).await);
    }

    async fn tamper(&mut self, name: &str, seq: u64, f: impl FnOnce(&mut Vec<u8>) + Send) {
        drop(self.store.take());
        let hex =
            self.sql(&format!("SELECT encode(value, 'hex') FROM netfold_records WHERE log = '{name}' AND seq = {seq}"));
        let mut value = hex::decode(hex.trim()).unwrap();
        f(&mut value);
        self.sql(&format!(
            "UPDATE netfold_records SET value = decode('{}', 'hex') WHERE log = '{name}' AND seq = {seq}",
            hex::encode(&value)
        ));
        self.store = Some(Self::connect(&self.db).await);
    }
}

impl Deletes for Postgres {
    async fn delete(&mut self, name: &str, seq: u64) {
        drop(self.store.take());
        self.sql(&format!("DELETE FROM netfold_records WHERE log = '{name}' AND seq = {seq}"));
        self.store = Some(Self::connect(&self.db).await);
    }
}

/// One `#[tokio::test]` per generic test named, in a module named after the back end:
/// `backends!(sled = Sled: test_a, test_b)` makes `sled::test_a` calling `test_a::<Sled>()`.
#[macro_export]
macro_rules! backends {
    ($module:ident = $backend:ty : $($test:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test::<$backend>().await;
                }
            )+
        }
    };
}
