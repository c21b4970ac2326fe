//! A [`crate::Table`] on PostgreSQL: rows `(tbl, key, value)` of `netfold_tables`, bytea keys in
//! byte order (the order sled keeps), each batch of writes one transaction.

use std::sync::Arc;

use super::{to_sql, PgInner};
use crate::table::Write;
use crate::{Error, Fence, Result};

#[derive(Clone)]
pub(crate) struct PgTable {
    inner: Arc<PgInner>,
    name: String,
    /// Every write checks this lease first, in its transaction.
    fence: Option<Fence>,
}

/// The least key greater than every key starting with `prefix` (`None`: there is none).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PgTable {
    pub(crate) fn new(inner: Arc<PgInner>, name: &str) -> Self {
        Self { inner, name: name.to_string(), fence: None }
    }

    pub(crate) fn fenced(self, fence: Fence) -> Self {
        Self { fence: Some(fence), ..self }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (name, key) = (self.name.clone(), key.to_vec());
        self.inner.with_client_blocking(move |c| async move {
            let row = c
                .query_opt("SELECT value FROM netfold_tables WHERE tbl = $1 AND key = $2", &[&name, &key])
                .await
                .map_err(Error::pg("reading a table"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub(crate) fn apply(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (name, fence) = (self.name.clone(), self.fence.clone());
        self.inner.with_client_blocking(move |mut c| async move {
            let tx = c.transaction().await.map_err(Error::pg("writing a table"))?;
            if let Some(f) = fence {
                // FOR SHARE: a takeover (an update of the lease's row) waits for this commit.
                let held = tx
                    .query_opt(super::lease::HELD, &[&f.lease, &to_sql(f.token)?])
                    .await
                    .map_err(Error::pg("checking a lease"))?;
                if held.is_none() {
                    return Err(Error::Fenced { lease: f.lease, token: f.token });
                }
            }
            let put = tx
                .prepare_cached(
                    "INSERT INTO netfold_tables (tbl, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await
                .map_err(Error::pg("writing a table"))?;
            let del = tx
                .prepare_cached("DELETE FROM netfold_tables WHERE tbl = $1 AND key = $2")
                .await
                .map_err(Error::pg("writing a table"))?;
            for (key, value) in writes {
                match value {
                    Some(v) => tx.execute(&put, &[&name, &key, &v]).await,
                    None => tx.execute(&del, &[&name, &key]).await,
                }
                .map_err(Error::pg("writing a table"))?;
            }
            tx.commit().await.map_err(Error::pg("writing a table"))
        })
    }

    pub(crate) fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (name, from, to) = (self.name.clone(), prefix.to_vec(), after_prefix(prefix));
        self.inner.with_client_blocking(move |c| async move {
            let rows = c
                .query(
                    "SELECT key, value FROM netfold_tables WHERE tbl = $1 AND key >= $2 \
                     AND ($3::bytea IS NULL OR key < $3) ORDER BY key",
                    &[&name, &from, &to],
                )
                .await
                .map_err(Error::pg("scanning a table"))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn the_end_of_a_prefix_range_carries_past_0xff() {
        assert_eq!(after_prefix(b"tor1/"), Some(b"tor10".to_vec()));
        assert_eq!(after_prefix(&[1, 0xff]), Some(vec![2]));
        assert_eq!(after_prefix(&[0xff, 0xff]), None);
        assert_eq!(after_prefix(&[]), None);
    }
}
