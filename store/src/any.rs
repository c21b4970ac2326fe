//! One type for "the configured store", so the agent, its HTTP endpoint and replay hold a log
//! without knowing which back end it is on: [`AnyStore`] opens [`AnyLog`]s and [`crate::Table`]s
//! on sled ([`crate::Store`]) or PostgreSQL ([`crate::PgStore`]); [`AnyLog`] is a [`Log`] that
//! forwards to the one it holds.

use std::ops::RangeInclusive;

use crate::lease::Fence;
use crate::Log;
use crate::{
    Entry, Loss, OnLoss, PgLog, PgStore, Record, Result, Seq, SledLog, Snapshot, Store, Subscription, Table, Verified,
};

/// The store netfold runs on.
#[derive(Clone)]
pub enum AnyStore {
    Sled(Store),
    Postgres(PgStore),
}

/// A log on either back end.
pub enum AnyLog<R> {
    Sled(SledLog<R>),
    Postgres(PgLog<R>),
}

/// A log whose every [`Log::append`] is made under one lease ([`Log::append_fenced`]): what a
/// switch's reconciler appends its audit through while its instance holds the switch's lease.
/// Everything else passes through.
pub struct Fenced<L> {
    log: std::sync::Arc<L>,
    fence: Fence,
}

impl<L> Fenced<L> {
    pub fn new(log: std::sync::Arc<L>, fence: Fence) -> Self {
        Self { log, fence }
    }
}

impl AnyStore {
    /// The log named `name`. `on_loss` is sled's: a PostgreSQL log has no head anchor of its own
    /// to lose against (the database's durability is the server's; ADR 0008).
    pub async fn log_on_loss<R: Record>(&self, name: &str, on_loss: OnLoss) -> Result<AnyLog<R>> {
        match self {
            AnyStore::Sled(s) => s.log_on_loss(name, on_loss).map(AnyLog::Sled),
            AnyStore::Postgres(p) => p.log(name).await.map(AnyLog::Postgres),
        }
    }

    /// The durable key-value table named `name`.
    pub fn table(&self, name: &str) -> Result<Table> {
        match self {
            AnyStore::Sled(s) => s.table(name),
            AnyStore::Postgres(p) => Ok(p.table(name)),
        }
    }

    /// Makes everything written so far durable: sled's flush and sync; on PostgreSQL every
    /// write was committed before it returned, so there is nothing left to do.
    pub fn flush(&self) -> Result<()> {
        match self {
            AnyStore::Sled(s) => s.flush(),
            AnyStore::Postgres(_) => Ok(()),
        }
    }
}

impl<R: Record> AnyLog<R> {
    /// The acknowledged records lost against the head anchor (sled only).
    pub fn loss(&self) -> Option<&Loss> {
        match self {
            AnyLog::Sled(l) => l.loss(),
            AnyLog::Postgres(_) => None,
        }
    }

    /// Re-anchors the head after an accepted loss (sled only: see [`SledLog::anchor_head`]).
    pub async fn anchor_head(&self) -> Result<()> {
        match self {
            AnyLog::Sled(l) => l.anchor_head().await,
            AnyLog::Postgres(_) => Ok(()),
        }
    }
}

impl<R: Record> Log<R> for AnyLog<R> {
    async fn append(&self, batch: Vec<R>) -> Result<RangeInclusive<Seq>> {
        match self {
            AnyLog::Sled(l) => l.append(batch).await,
            AnyLog::Postgres(l) => l.append(batch).await,
        }
    }

    async fn append_fenced(&self, batch: Vec<R>, fence: &Fence) -> Result<RangeInclusive<Seq>> {
        match self {
            AnyLog::Sled(l) => l.append_fenced(batch, fence).await,
            AnyLog::Postgres(l) => l.append_fenced(batch, fence).await,
        }
    }

    async fn current_head(&self) -> Result<Seq> {
        match self {
            AnyLog::Sled(l) => l.current_head().await,
            AnyLog::Postgres(l) => l.current_head().await,
        }
    }

    fn head(&self) -> Seq {
        match self {
            AnyLog::Sled(l) => l.head(),
            AnyLog::Postgres(l) => l.head(),
        }
    }

    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        match self {
            AnyLog::Sled(l) => l.read(from),
            AnyLog::Postgres(l) => l.read(from),
        }
    }

    fn read_to(&self, from: Seq, last: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        match self {
            AnyLog::Sled(l) => l.read_to(from, last),
            AnyLog::Postgres(l) => l.read_to(from, last),
        }
    }

    fn subscribe(&self, from: Seq) -> Subscription<R> {
        match self {
            AnyLog::Sled(l) => l.subscribe(from),
            AnyLog::Postgres(l) => l.subscribe(from),
        }
    }

    fn verify(&self) -> Result<Verified> {
        match self {
            AnyLog::Sled(l) => l.verify(),
            AnyLog::Postgres(l) => l.verify(),
        }
    }

    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()> {
        match self {
            AnyLog::Sled(l) => l.save_snapshot(seq, bytes),
            AnyLog::Postgres(l) => l.save_snapshot(seq, bytes),
        }
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        match self {
            AnyLog::Sled(l) => l.latest_snapshot(),
            AnyLog::Postgres(l) => l.latest_snapshot(),
        }
    }

    fn snapshot_at_or_before(&self, seq: Seq) -> Result<Option<Snapshot>> {
        match self {
            AnyLog::Sled(l) => l.snapshot_at_or_before(seq),
            AnyLog::Postgres(l) => l.snapshot_at_or_before(seq),
        }
    }

    fn checkpoint(&self, name: &str) -> Result<Option<Seq>> {
        match self {
            AnyLog::Sled(l) => l.checkpoint(name),
            AnyLog::Postgres(l) => l.checkpoint(name),
        }
    }

    fn set_checkpoint(&self, name: &str, seq: Seq) -> Result<()> {
        match self {
            AnyLog::Sled(l) => l.set_checkpoint(name, seq),
            AnyLog::Postgres(l) => l.set_checkpoint(name, seq),
        }
    }
}

impl<R: Record, L: Log<R>> Log<R> for Fenced<L> {
    async fn append(&self, batch: Vec<R>) -> Result<RangeInclusive<Seq>> {
        self.log.append_fenced(batch, &self.fence).await
    }

    async fn append_fenced(&self, batch: Vec<R>, fence: &Fence) -> Result<RangeInclusive<Seq>> {
        self.log.append_fenced(batch, fence).await
    }

    async fn current_head(&self) -> Result<Seq> {
        self.log.current_head().await
    }

    fn head(&self) -> Seq {
        self.log.head()
    }

    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        self.log.read(from)
    }

    fn read_to(&self, from: Seq, last: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        self.log.read_to(from, last)
    }

    fn subscribe(&self, from: Seq) -> Subscription<R> {
        self.log.subscribe(from)
    }

    fn verify(&self) -> Result<Verified> {
        self.log.verify()
    }

    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()> {
        self.log.save_snapshot(seq, bytes)
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        self.log.latest_snapshot()
    }

    fn snapshot_at_or_before(&self, seq: Seq) -> Result<Option<Snapshot>> {
        self.log.snapshot_at_or_before(seq)
    }

    fn checkpoint(&self, name: &str) -> Result<Option<Seq>> {
        self.log.checkpoint(name)
    }

    fn set_checkpoint(&self, name: &str, seq: Seq) -> Result<()> {
        self.log.set_checkpoint(name, seq)
    }
}
