//! netfold's durable, append-only log. It stores typed records it does not interpret.
//!
//! Layout:
//! - [`Log`]: the boundary trait — append (durable, group-committed), read, subscribe (catch-up
//!   then live tail), verify (hash chain), snapshots and consumer checkpoints.
//! - [`SledLog`] (over [`Store`], one sled database) and [`MemoryLog`], its in-memory twin.
//! - [`PgLog`] (over [`PgStore`], one PostgreSQL database; ADR 0008): the same semantics for
//!   several machines sharing one history.
//!   [`Store`] owns sled: it syncs what sled wrote before anything is acknowledged, refuses a
//!   write that would run the disk out, reopens sled after an IO error, and opens a private
//!   copy for reading ([`Store::open_read_only`]).
//! - `anchor`: each log's last acknowledged head, kept outside sled, so a log that lost
//!   acknowledged records is named ([`Loss`]) instead of silently shorter.
//! - [`codec`]: the stored form of a record and the hash chain, shared by both.
//! - [`Table`]: a small durable key-value tree (the reconciler's ownership ledger lives in one),
//!   on sled or PostgreSQL.
//! - `retention`: which snapshots a durable log keeps.
//! - [`AnyStore`] / [`AnyLog`]: the configured back end, whichever it is; [`Fenced`]: a log
//!   whose every append is made under one lease.
//! - [`lease`]: leases with fencing tokens ([`Leases`]: [`PgLeases`], [`MemoryLeases`]) and
//!   appends checked against them in the same transaction (`append_fenced`; ADR 0009).
//! - [`copy`]: a sled store copied into an empty PostgreSQL database, verified by chain hash.
//! - [`layout`]: the database path in a data directory and the names of netfold's logs and tables.
//!
//! Every record is `[format][schema][prev hash][crc][payload]`; its hash (over its sequence number
//! and those bytes) is the next record's `prev`, starting from [`GENESIS`].

mod anchor;
mod any;
mod codec;
pub mod copy;
mod db;
mod error;
pub mod layout;
pub mod lease;
mod memory;
mod pg;
mod retention;
mod sled_log;
mod subscribe;
mod table;

use std::future::Future;
use std::ops::RangeInclusive;

pub use anchor::Anchor;
pub use any::{AnyLog, AnyStore, Fenced};
pub use codec::{hash_record, FORMAT};
pub use db::{open_db, Store};
pub use error::{Error, Loss, Result};
pub use lease::{Fence, Lease, Leases, MemoryLeases};
pub use memory::MemoryLog;
pub use pg::{PgLeases, PgLog, PgStore, PgTls};
pub use sled_log::{OnLoss, SledLog};
pub use subscribe::Subscription;
pub use table::{Table, TableBatch};
/// How to reach a PostgreSQL server (host, port, user, password, database): the driver's own.
pub use tokio_postgres::Config as PgConfig;

/// Sequence number of a record: gapless from 1. 0 means "before the first record".
pub type Seq = u64;
/// A blake3 hash.
pub type Hash = [u8; 32];
/// The `prev` of the first record.
pub const GENESIS: Hash = [0; 32];

/// A payload the log can hold. The log stores bytes; the type knows its schema version and how
/// to read every older version (upcasting).
pub trait Record: Sized + Send + Sync + 'static {
    /// The schema version new records are written with.
    const SCHEMA: u16;
    /// The stored bytes; an error means the value cannot be represented (never a log failure).
    fn encode(&self) -> std::result::Result<Vec<u8>, String>;
    /// Reads bytes written with `schema`, upcasting older versions; an error says why.
    fn decode(schema: u16, bytes: &[u8]) -> std::result::Result<Self, String>;
}

/// A record as read back, with its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<R> {
    pub seq: Seq,
    pub schema: u16,
    pub prev: Hash,
    pub record: R,
}

/// A saved snapshot of some consumer's state as of `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: Seq,
    pub bytes: Vec<u8>,
}

/// What [`Log::verify`] found: the whole log decodes and chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The last sequence number checked (the head).
    pub head: Seq,
    /// Hash of the last record ([`GENESIS`] for an empty log).
    pub tip: Hash,
}

/// The append-only log. Errors: see [`Error`]; each variant says whether retrying can help.
pub trait Log<R: Record>: Send + Sync + 'static {
    /// Appends `batch` atomically and returns the sequence numbers it was given, only once the
    /// batch is durable. Concurrent callers share one flush (group commit). An empty batch is
    /// a no-op returning an empty range at the head.
    fn append(&self, batch: Vec<R>) -> impl Future<Output = Result<RangeInclusive<Seq>>> + Send;

    /// Appends `batch` as [`Log::append`] does, only while `fence`'s lease is held with its
    /// token: a log several processes write (PostgreSQL) checks it in the append's transaction
    /// and fails a deposed holder's append with [`Error::Fenced`] (ADR 0009). A log with one
    /// writer (sled, whose directory lock already admits one process; the in-memory twin)
    /// appends as `append` does.
    fn append_fenced(&self, batch: Vec<R>, fence: &Fence) -> impl Future<Output = Result<RangeInclusive<Seq>>> + Send {
        let _ = fence;
        self.append(batch)
    }

    /// The durable head as the store holds it now. [`Log::head`] is what this process last
    /// learnt: for a log other processes append to, their appends reach it a moment later
    /// (PostgreSQL's notification), so whoever must have read everything before acting (a new
    /// lease holder) asks the store here. A log with one writer answers `head()`.
    fn current_head(&self) -> impl Future<Output = Result<Seq>> + Send {
        let head = self.head();
        async move { Ok(head) }
    }

    /// The last durable sequence number (0 for an empty log).
    fn head(&self) -> Seq;

    /// Records `from..=head` in order. A record that cannot be read ends the iteration with an
    /// error naming its sequence number.
    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_>;

    /// Records `from..=last` (`last` past the head: to the head) in order, as [`Log::read`]
    /// gives them: a reader that knows where it stops makes the log read and decode nothing
    /// beyond it.
    fn read_to(&self, from: Seq, last: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        // `read` gives `from..` without a gap (or ends with an error): the first so many.
        let wanted = if last < from.max(1) { 0 } else { (last - from.max(1)).saturating_add(1) };
        Box::new(self.read(from).take(usize::try_from(wanted).unwrap_or(usize::MAX)))
    }

    /// Records from `from` on: first those already in the log, then each new one as it becomes
    /// durable — no gap, no duplicate.
    fn subscribe(&self, from: Seq) -> Subscription<R>;

    /// Walks the whole log: every record decodes and its `prev` is the hash of the one before.
    /// The error names the first sequence number that fails.
    fn verify(&self) -> Result<Verified>;

    /// Saves a snapshot of consumer state as of `seq` (durable on return).
    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()>;

    /// The most recent snapshot, if any.
    fn latest_snapshot(&self) -> Result<Option<Snapshot>>;

    /// The most recent snapshot taken at or before `seq`, if any: where a query about the state
    /// at `seq` starts folding. Logs keep older snapshots thinned out (bounded space), so this
    /// is at most one retained interval before `seq`.
    fn snapshot_at_or_before(&self, seq: Seq) -> Result<Option<Snapshot>> {
        Ok(self.latest_snapshot()?.filter(|s| s.seq <= seq))
    }

    /// The position a named consumer last recorded.
    fn checkpoint(&self, name: &str) -> Result<Option<Seq>>;

    /// Records a named consumer's position (durable on return).
    fn set_checkpoint(&self, name: &str, seq: Seq) -> Result<()>;
}
