//! Leases with fencing tokens (ADR 0009): who may write for a hypervisor session or a switch
//! reconciler when several netfold instances share one store.
//!
//! A lease has a name (`switch/tor1`, `hypervisor/vc-east`), a holder (an instance's id), a
//! fencing token and an expiry. Taking a free or expired lease gives a token one higher than any
//! the lease ever had (the row is never deleted, so tokens only grow); renewing keeps the token
//! and moves the expiry; releasing expires it at once. A write made on behalf of a lease carries
//! its [`Fence`] (name and token) and is checked in the same transaction as the write: once
//! another holder has taken the lease, or the lease has expired, a deposed holder's append fails
//! with [`crate::Error::Fenced`], whatever it believes about its own lease.
//!
//! [`Leases`] is the boundary trait; [`MemoryLeases`] its in-memory twin (with a clock the tests
//! move), [`crate::PgLeases`] the PostgreSQL one (`netfold_leases`, times from the server's clock).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Result;

/// A lease as its holder knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// The fencing token: higher than any earlier holder's.
    pub token: u64,
}

impl Lease {
    /// What a write on behalf of this lease carries.
    pub fn fence(&self) -> Fence {
        Fence { lease: self.name.clone(), token: self.token }
    }
}

/// The lease a write is made under: checked with the write, in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence {
    pub lease: String,
    pub token: u64,
}

/// Who holds a lease now (for `/healthz` and `netfold status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    pub name: String,
    pub holder: String,
    pub token: u64,
    /// Time left before it expires; zero when it has.
    pub remaining: Duration,
}

/// Leases. Errors: see [`crate::Error`] (a database failure is retryable; a holder that cannot
/// renew must stop writing before its lease's expiry either way).
pub trait Leases: Send + Sync + 'static {
    /// Takes lease `name` for `holder` for `ttl` if no one holds it (never taken, expired or
    /// released): a new, higher token. If `holder` holds it already, renews it (same token).
    /// `None` while someone else holds it.
    fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Extends `lease` by `ttl` from now if it is still held with its token and not expired;
    /// `false` when it was lost (the holder must stop writing).
    fn renew(&self, lease: &Lease, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;

    /// Gives `lease` up (expires it now) if still held with its token.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send;

    /// Every lease ever taken, by name.
    fn holdings(&self) -> impl Future<Output = Result<Vec<Holding>>> + Send;
}

#[derive(Clone, Debug)]
struct Row {
    holder: String,
    token: u64,
    /// On the twin's clock.
    expires_at: Duration,
}

#[derive(Default)]
struct State {
    now: Duration,
    rows: BTreeMap<String, Row>,
}

/// The in-memory twin of the PostgreSQL leases, on a clock of its own that only
/// [`MemoryLeases::advance`] moves (tests decide when a lease expires).
#[derive(Clone, Default)]
pub struct MemoryLeases {
    state: Arc<Mutex<State>>,
}

impl MemoryLeases {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single insert or field change: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the twin's clock forward.
    pub fn advance(&self, by: Duration) {
        self.lock().now += by;
    }

    /// Runs `f` while no lease can change, if `fence` is valid now; else the fence error.
    pub(crate) fn while_valid<T>(&self, fence: &Fence, f: impl FnOnce() -> T) -> Result<T> {
        let g = self.lock();
        match g.rows.get(&fence.lease) {
            Some(r) if r.token == fence.token && r.expires_at > g.now => Ok(f()),
            _ => Err(crate::Error::Fenced { lease: fence.lease.clone(), token: fence.token }),
        }
    }
}

impl Leases for MemoryLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let mut g = self.lock();
        let now = g.now;
        let row = g.rows.entry(name.to_string()).or_insert(Row { holder: String::new(), token: 0, expires_at: now });
        if row.expires_at > now && row.holder != holder {
            return Ok(None);
        }
        if row.expires_at <= now {
            row.token += 1;
            row.holder = holder.to_string();
        }
        row.expires_at = now + ttl;
        Ok(Some(Lease { name: name.to_string(), holder: holder.to_string(), token: row.token }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut g = self.lock();
        let now = g.now;
        match g.rows.get_mut(&lease.name) {
            Some(r) if r.token == lease.token && r.holder == lease.holder && r.expires_at > now => {
                r.expires_at = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut g = self.lock();
        let now = g.now;
        if let Some(r) = g.rows.get_mut(&lease.name).filter(|r| r.token == lease.token) {
            r.expires_at = r.expires_at.min(now);
        }
        Ok(())
    }

    async fn holdings(&self) -> Result<Vec<Holding>> {
        let g = self.lock();
        Ok(g.rows
            .iter()
            .map(|(name, r)| Holding {
                name: name.clone(),
                holder: r.holder.clone(),
                token: r.token,
                remaining: r.expires_at.saturating_sub(g.now),
            })
            .collect())
    }
}
