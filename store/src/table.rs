//! A small durable key-value table in the same sled database as the logs: byte keys, serde
//! values (bincode). Every write is durable (flushed and synced, ADR 0001) before it returns.

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use crate::db::{Inner, Open};
use crate::{Error, Result};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A named, durable key-value tree.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
    tree: String,
}

impl Table {
    pub(crate) fn new(inner: Arc<Inner>, tree: String) -> Self {
        Self { inner, tree }
    }

    fn with<T>(&self, f: impl FnOnce(&sled::Tree, &Open) -> Result<T>) -> Result<T> {
        self.inner.with(|open| f(&open.tree(&self.tree)?, open))
    }

    fn decode<V: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<V> {
        bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| Error::Meta {
            what: format!("table value at key {}", String::from_utf8_lossy(key)),
            reason: e.to_string(),
        })
    }

    pub fn get<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<V>> {
        match self.with(|t, _| t.get(key).map_err(Error::db("reading a table")))? {
            None => Ok(None),
            Some(v) => Self::decode(key, &v).map(Some),
        }
    }

    /// Sets `key` to `value`, durable on return.
    pub fn insert<V: Serialize>(&self, key: &[u8], value: &V) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(value, config())
            .map_err(|e| Error::Encode { index: 0, reason: e.to_string() })?;
        self.with(|t, open| {
            open.room_for(key.len() + bytes.len())?;
            t.insert(key, bytes).map_err(Error::db("writing a table"))?;
            open.sync()
        })
    }

    /// Removes `key`, durable on return.
    pub fn remove(&self, key: &[u8]) -> Result<()> {
        self.with(|t, open| {
            t.remove(key).map_err(Error::db("writing a table"))?;
            open.sync()
        })
    }

    /// Applies every write of `batch` atomically, durable on return (one flush and sync for all).
    pub fn apply(&self, batch: TableBatch) -> Result<()> {
        self.with(|t, open| {
            open.room_for(batch.bytes)?;
            t.apply_batch(batch.batch).map_err(Error::db("writing a table"))?;
            open.sync()
        })
    }

    /// Applies every write of `batch` atomically without waiting for the disk: it becomes durable
    /// with the next flush and sync of the same store (any log append, a synced table write,
    /// `Store::flush`). For a caller whose next step is such a flush anyway: one sync, not two.
    pub fn stage(&self, batch: TableBatch) -> Result<()> {
        self.with(|t, open| {
            open.room_for(batch.bytes)?;
            t.apply_batch(batch.batch).map_err(Error::db("writing a table"))
        })
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan<V: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, V)>> {
        self.with(|t, _| {
            t.scan_prefix(prefix)
                .map(|item| {
                    let (k, v) = item.map_err(Error::db("scanning a table"))?;
                    Ok((k.to_vec(), Self::decode(&k, &v)?))
                })
                .collect()
        })
    }
}

/// Writes for [`Table::apply`], collected first so several keys share one atomic, durable write.
#[derive(Default)]
pub struct TableBatch {
    batch: sled::Batch,
    /// The bytes it writes (for the free-space guard).
    bytes: usize,
}

impl TableBatch {
    /// Sets `key` to `value`.
    pub fn insert<V: Serialize>(&mut self, key: &[u8], value: &V) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(value, config())
            .map_err(|e| Error::Encode { index: 0, reason: e.to_string() })?;
        self.bytes += key.len() + bytes.len();
        self.batch.insert(key, bytes);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &[u8]) {
        self.bytes += key.len();
        self.batch.remove(key);
    }
}
