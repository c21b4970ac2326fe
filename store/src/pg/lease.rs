//! [`PgLeases`]: the leases of [`crate::lease`] in `netfold_leases`, on the server's clock. Each
//! operation is one statement (one transaction); a fenced append checks its lease in the
//! transaction that inserts its records, holding the lease row `FOR SHARE` so a takeover waits
//! for the append to commit (`pg/log.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::{from_sql, PgInner};
use crate::lease::{Holding, Lease, Leases};
use crate::{Error, Result};

/// Whether a lease is held with a token, locking its row (`FOR SHARE`) until the transaction
/// ends: a fenced write checks it in its own transaction, so a takeover waits for that commit.
pub(crate) const HELD: &str =
    "SELECT 1 FROM netfold_leases WHERE name = $1 AND token = $2 AND expires_at > now() FOR SHARE";

/// The leases of one PostgreSQL store.
#[derive(Clone)]
pub struct PgLeases {
    inner: Arc<PgInner>,
}

impl PgLeases {
    pub(crate) fn new(inner: Arc<PgInner>) -> Self {
        Self { inner }
    }
}

fn interval(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

const ACQUIRE: &str = "INSERT INTO netfold_leases AS l (name, holder, token, expires_at)
    VALUES ($1, $2, 1, now() + make_interval(secs => $3))
    ON CONFLICT (name) DO UPDATE SET
        holder = EXCLUDED.holder,
        token = CASE WHEN l.expires_at <= now() THEN l.token + 1 ELSE l.token END,
        expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
    RETURNING token";

impl Leases for PgLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let (n, h) = (name.to_string(), holder.to_string());
        let token = self
            .inner
            .with_client(move |c| async move {
                let row = c.query_opt(ACQUIRE, &[&n, &h, &interval(ttl)]).await.map_err(Error::pg("taking a lease"))?;
                row.map(|r| from_sql("a lease token", r.get(0))).transpose()
            })
            .await?;
        Ok(token.map(|token| Lease { name: name.to_string(), holder: holder.to_string(), token }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let l = lease.clone();
        self.inner
            .with_client(move |c| async move {
                let n = c
                    .execute(
                        "UPDATE netfold_leases SET expires_at = now() + make_interval(secs => $4) \
                         WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
                        &[&l.name, &l.holder, &super::to_sql(l.token)?, &interval(ttl)],
                    )
                    .await
                    .map_err(Error::pg("renewing a lease"))?;
                Ok(n == 1)
            })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let l = lease.clone();
        self.inner
            .with_client(move |c| async move {
                c.execute(
                    "UPDATE netfold_leases SET expires_at = least(expires_at, now()) WHERE name = $1 AND token = $2",
                    &[&l.name, &super::to_sql(l.token)?],
                )
                .await
                .map_err(Error::pg("releasing a lease"))?;
                Ok(())
            })
            .await
    }

    async fn holdings(&self) -> Result<Vec<Holding>> {
        self.inner
            .with_client(move |c| async move {
                let rows = c
                    .query(
                        "SELECT name, holder, token, greatest(extract(epoch FROM expires_at - now()), 0)::float8 \
                         FROM netfold_leases ORDER BY name",
                        &[],
                    )
                    .await
                    .map_err(Error::pg("listing leases"))?;
                rows.iter()
                    .map(|r| {
                        Ok(Holding {
                            name: r.get(0),
                            holder: r.get(1),
                            token: from_sql("a lease token", r.get(2))?,
                            remaining: Duration::from_secs_f64(r.get::<_, f64>(3)),
                        })
                    })
                    .collect()
            })
            .await
    }
}
