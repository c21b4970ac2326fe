//! A small durable key-value table in the same sled database as the logs: byte keys, serde
//! values (bincode). Every write is flushed before it returns.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A named, durable key-value tree.
#[derive(Clone)]
pub struct Table {
    db: sled::Db,
    tree: sled::Tree,
}

impl Table {
    pub(crate) fn new(db: sled::Db, tree: sled::Tree) -> Self {
        Self { db, tree }
    }

    fn decode<V: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<V> {
        bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| Error::Meta {
            what: format!("table value at key {}", String::from_utf8_lossy(key)),
            reason: e.to_string(),
        })
    }

    pub fn get<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<V>> {
        match self.tree.get(key).map_err(Error::db("reading a table"))? {
            None => Ok(None),
            Some(v) => Self::decode(key, &v).map(Some),
        }
    }

    /// Sets `key` to `value`, durable on return.
    pub fn insert<V: Serialize>(&self, key: &[u8], value: &V) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(value, config())
            .map_err(|e| Error::Encode { index: 0, reason: e.to_string() })?;
        self.tree.insert(key, bytes).map_err(Error::db("writing a table"))?;
        self.flush()
    }

    /// Removes `key`, durable on return.
    pub fn remove(&self, key: &[u8]) -> Result<()> {
        self.tree.remove(key).map_err(Error::db("writing a table"))?;
        self.flush()
    }

    /// Applies every write of `batch` atomically, durable on return (one flush for all).
    pub fn apply(&self, batch: TableBatch) -> Result<()> {
        self.tree.apply_batch(batch.0).map_err(Error::db("writing a table"))?;
        self.flush()
    }

    /// Applies every write of `batch` atomically without waiting for the disk: it becomes durable
    /// with the next flush of the same store (any log append, a flushed table write,
    /// `Store::flush`). For a caller whose next step is such a flush anyway: one fsync, not two.
    pub fn stage(&self, batch: TableBatch) -> Result<()> {
        self.tree.apply_batch(batch.0).map_err(Error::db("writing a table"))
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan<V: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, V)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(Error::db("scanning a table"))?;
                Ok((k.to_vec(), Self::decode(&k, &v)?))
            })
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(Error::db("flushing a table"))
    }
}

/// Writes for [`Table::apply`], collected first so several keys share one atomic, durable write.
#[derive(Default)]
pub struct TableBatch(sled::Batch);

impl TableBatch {
    /// Sets `key` to `value`.
    pub fn insert<V: Serialize>(&mut self, key: &[u8], value: &V) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(value, config())
            .map_err(|e| Error::Encode { index: 0, reason: e.to_string() })?;
        self.0.insert(key, bytes);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
}
