//! A small durable key-value table beside the logs: byte keys, serde values (bincode), in key
//! order. On sled it is a tree of the same database as the logs; on PostgreSQL, rows of
//! `netfold_tables`. Every write is durable (sled: flushed and synced, ADR 0001; PostgreSQL:
//! committed, ADR 0008) before it returns.

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use crate::db::{write_atomically, Inner, Open};
use crate::pg::PgTable;
use crate::{Error, Result};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A named, durable key-value table.
#[derive(Clone)]
pub struct Table {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled { inner: Arc<Inner>, tree: String },
    Pg(PgTable),
}

/// One write of a batch: a value to set, or `None` to remove the key.
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

impl Table {
    pub(crate) fn new(inner: Arc<Inner>, tree: String) -> Self {
        Self { backend: Backend::Sled { inner, tree } }
    }

    pub(crate) fn pg(table: PgTable) -> Self {
        Self { backend: Backend::Pg(table) }
    }

    /// This table with every write made under `fence` (PostgreSQL: checked in the write's
    /// transaction, [`Error::Fenced`] once the lease is another's or expired). On sled it is
    /// returned as it is: one process holds the data directory.
    pub fn fenced(self, fence: crate::Fence) -> Self {
        match self.backend {
            Backend::Pg(t) => Self { backend: Backend::Pg(t.fenced(fence)) },
            sled => Self { backend: sled },
        }
    }

    fn with_sled<T>(inner: &Inner, tree: &str, f: impl FnOnce(&sled::Tree, &Open) -> Result<T>) -> Result<T> {
        inner.with(|open| f(&open.tree(tree)?, open))
    }

    fn decode<V: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<V> {
        bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| Error::Meta {
            what: format!("table value at key {}", String::from_utf8_lossy(key)),
            reason: e.to_string(),
        })
    }

    pub fn get<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<V>> {
        let stored = match &self.backend {
            Backend::Sled { inner, tree } => {
                Self::with_sled(inner, tree, |t, _| t.get(key).map_err(Error::db("reading a table")))?
                    .map(|v| v.to_vec())
            }
            Backend::Pg(t) => t.get(key)?,
        };
        stored.map(|v| Self::decode(key, &v)).transpose()
    }

    /// Sets `key` to `value`, durable on return.
    pub fn insert<V: Serialize>(&self, key: &[u8], value: &V) -> Result<()> {
        let mut batch = TableBatch::default();
        batch.insert(key, value)?;
        self.apply(batch)
    }

    /// Removes `key`, durable on return.
    pub fn remove(&self, key: &[u8]) -> Result<()> {
        let mut batch = TableBatch::default();
        batch.remove(key);
        self.apply(batch)
    }

    /// Applies every write of `batch` atomically, durable on return (one flush and sync, or one
    /// transaction, for all).
    pub fn apply(&self, batch: TableBatch) -> Result<()> {
        match &self.backend {
            Backend::Sled { inner, tree } => Self::with_sled(inner, tree, |t, open| {
                open.room_for(batch.bytes)?;
                write_atomically(t, batch.writes).map_err(Error::db("writing a table"))?;
                open.sync()
            }),
            Backend::Pg(t) => t.apply(batch.writes),
        }
    }

    /// Applies every write of `batch` atomically without waiting for the disk: on sled it
    /// becomes durable with the next flush and sync of the same store (any log append, a synced
    /// table write, `Store::flush`), for a caller whose next step is such a flush anyway: one
    /// sync, not two. On PostgreSQL a transaction is durable when it commits, so this is
    /// [`Table::apply`].
    pub fn stage(&self, batch: TableBatch) -> Result<()> {
        match &self.backend {
            Backend::Sled { inner, tree } => Self::with_sled(inner, tree, |t, open| {
                open.room_for(batch.bytes)?;
                write_atomically(t, batch.writes).map_err(Error::db("writing a table"))
            }),
            Backend::Pg(t) => t.apply(batch.writes),
        }
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan<V: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, V)>> {
        let rows = match &self.backend {
            Backend::Sled { inner, tree } => Self::with_sled(inner, tree, |t, _| {
                t.scan_prefix(prefix)
                    .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::db("scanning a table")))
                    .collect::<Result<Vec<_>>>()
            })?,
            Backend::Pg(t) => t.scan(prefix)?,
        };
        rows.into_iter().map(|(k, v)| Ok((k.clone(), Self::decode(&k, &v)?))).collect()
    }

    /// Every `(key, stored bytes)` of the table, in key order (for copying a store).
    pub fn raw_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match &self.backend {
            Backend::Sled { inner, tree } => Self::with_sled(inner, tree, |t, _| {
                t.iter()
                    .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::db("scanning a table")))
                    .collect()
            }),
            Backend::Pg(t) => t.scan(&[]),
        }
    }

    /// Writes stored bytes as they are, in one durable batch (for copying a store).
    pub fn put_raw(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut batch = TableBatch::default();
        for (k, v) in entries {
            batch.bytes += k.len() + v.len();
            batch.writes.push((k, Some(v)));
        }
        self.apply(batch)
    }
}

/// Writes for [`Table::apply`], collected first so several keys share one atomic, durable write.
#[derive(Default)]
pub struct TableBatch {
    writes: Vec<Write>,
    /// The bytes it writes (for the free-space guard).
    bytes: usize,
}

impl TableBatch {
    /// Sets `key` to `value`.
    pub fn insert<V: Serialize>(&mut self, key: &[u8], value: &V) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(value, config())
            .map_err(|e| Error::Encode { index: 0, reason: e.to_string() })?;
        self.bytes += key.len() + bytes.len();
        self.writes.push((key.to_vec(), Some(bytes)));
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &[u8]) {
        self.bytes += key.len();
        self.writes.push((key.to_vec(), None));
    }
}
