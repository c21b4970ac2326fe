//! Active/standby on one PostgreSQL store (ADR 0012): every `netfold run` with the same config
//! competes for the lease `netfold/active` (ADR 0009's leases, fencing tokens included). The one
//! that holds it runs the agent; the others wait as standbys, answering `/healthz` with who is
//! active, and take over when its lease expires (a crash, a pause, a lost network).
//!
//! What the active instance may do is bounded by the lease twice over:
//! - every event it appends carries the lease's fence, checked by PostgreSQL in the append's
//!   transaction, so once another instance has taken the lease nothing more is accepted;
//! - every switch write first asks [`Active::writable`], which counts down on this process's
//!   monotonic clock from the moment the last renewal was sent. A process that was paused
//!   (SIGSTOP, a stalled VM) finds on waking that its time is up and writes nothing.
//!
//! A lost lease ends the process with an error (the unit restarts it as a standby): the new
//! holder starts from the shared log, grace timers included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use engine::switch::{Discovery, Grammar, Observed, Op, Outcome, PortName, Switch, SwitchError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::lease::Holding;
use store::{Fence, Lease, Leases, PgLeases};

use crate::config::ClusterPlan;

/// The one lease of active/standby.
pub const ACTIVE_LEASE: &str = "netfold/active";

/// This process's hold on the active lease.
pub struct Active {
    pub lease: Lease,
    pub instance: String,
    ttl: Duration,
    base: Instant,
    /// Nanoseconds after `base` until which the lease is surely held: when the last successful
    /// take or renewal was *sent*, plus the TTL (the server counts from when it received it).
    until: AtomicU64,
}

impl Active {
    fn new(lease: Lease, instance: String, ttl: Duration, sent: Instant) -> Self {
        let a = Active { lease, instance, ttl, base: sent, until: AtomicU64::new(0) };
        a.extend(sent);
        a
    }

    fn extend(&self, sent: Instant) {
        let until = (sent + self.ttl).saturating_duration_since(self.base).as_nanos() as u64;
        self.until.fetch_max(until, Ordering::SeqCst);
    }

    /// How long the lease is surely still held (zero once it may not be).
    pub fn remaining(&self) -> Duration {
        let until = self.base + Duration::from_nanos(self.until.load(Ordering::SeqCst));
        until.saturating_duration_since(Instant::now())
    }

    /// Whether a switch write may start now: more than a quarter of the TTL is left (renewals
    /// every third keep it above two thirds while PostgreSQL answers).
    pub fn writable(&self) -> bool {
        self.remaining() > self.ttl / 4
    }

    pub fn fence(&self) -> Fence {
        self.lease.fence()
    }

    /// For `/healthz` and `netfold status`.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            role: Role::Active,
            instance: self.instance.clone(),
            lease: self.lease.name.clone(),
            holder: Some(self.lease.holder.clone()),
            token: Some(self.lease.token),
            remaining_ms: Some(self.remaining().as_millis() as u64),
        }
    }
}

/// Whether an instance works or waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Active,
    Standby,
}

/// An instance's view of the active lease: `/healthz`'s and `/status`'s `cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub role: Role,
    /// This instance's name.
    pub instance: String,
    pub lease: String,
    /// Who holds the lease: this process while active; another instance, or nobody (`None`),
    /// while standby.
    pub holder: Option<String>,
    pub token: Option<u64>,
    /// How long the holder's lease runs on: the active instance counts on its own monotonic
    /// clock, a standby reports the server's count when it last read the lease.
    pub remaining_ms: Option<u64>,
}

/// The holder string of this process in the lease table: the instance and a nonce, so two
/// processes given the same instance name (or one restarted at once) never share a lease.
pub fn holder(instance: &str) -> String {
    format!("{instance}/{:08x}", rand::random::<u32>())
}

/// What a standby knows, for its `/healthz`.
#[derive(Default)]
pub struct Standby {
    instance: String,
    active: Option<Holding>,
    error: Option<String>,
}

impl Standby {
    pub fn new(instance: &str) -> Self {
        Standby { instance: instance.to_string(), ..Standby::default() }
    }

    fn set(&mut self, active: Option<Holding>, error: Option<String>) {
        (self.active, self.error) = (active, error);
    }

    /// The active instance's holder string, as last read.
    pub fn holder(&self) -> Option<&str> {
        self.active.as_ref().map(|h| h.holder.as_str())
    }

    pub fn view(&self) -> ClusterView {
        ClusterView {
            role: Role::Standby,
            instance: self.instance.clone(),
            lease: ACTIVE_LEASE.to_string(),
            holder: self.active.as_ref().map(|h| h.holder.clone()),
            token: self.active.as_ref().map(|h| h.token),
            remaining_ms: self.active.as_ref().map(|h| h.remaining.as_millis() as u64),
        }
    }

    /// `/healthz` of a standby: 200 while it can see the store (it is ready to take over), 503
    /// with the reason while it cannot.
    pub fn report(&self) -> (bool, Value) {
        let reasons: Vec<String> = self.error.iter().cloned().collect();
        let ok = reasons.is_empty();
        let body = json!({
            "status": if ok { "standby" } else { "degraded" },
            "reasons": reasons,
            "hypervisors": {},
            "switches": {},
            "cluster": self.view(),
        });
        (ok, body)
    }
}

/// A standby's endpoint: `/healthz` ([`Standby::report`]); every other route answers 503
/// naming the active instance (the state, log and metrics are the active instance's to serve).
pub fn router(standby: Arc<Mutex<Standby>>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::Json;
    fn read(s: &Mutex<Standby>) -> std::sync::MutexGuard<'_, Standby> {
        s.lock().unwrap_or_else(|p| p.into_inner())
    }
    let health = {
        let standby = standby.clone();
        move || async move {
            let (ok, body) = read(&standby).report();
            (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body)).into_response()
        }
    };
    let elsewhere = move || async move {
        let by = read(&standby).holder().unwrap_or("no instance yet").to_string();
        let error = format!("this instance is a standby; the active instance is {by}: ask it");
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": error }))).into_response()
    };
    axum::Router::new().route("/healthz", axum::routing::get(health)).fallback(elsewhere)
}

/// Waits as a standby until this instance takes the active lease, trying every third of the
/// TTL; `standby` says meanwhile who holds it. A store error is retried (and shown) unless it
/// cannot pass.
pub async fn take(
    leases: &PgLeases,
    plan: &ClusterPlan,
    holder: &str,
    standby: &Mutex<Standby>,
) -> Result<Arc<Active>> {
    let every = plan.lease_ttl / 3;
    let mut said: Option<String> = None;
    loop {
        let sent = Instant::now();
        let attempt = match leases.acquire(ACTIVE_LEASE, holder, plan.lease_ttl).await {
            Ok(Some(lease)) => {
                return Ok(Arc::new(Active::new(lease, plan.instance.clone(), plan.lease_ttl, sent)));
            }
            Ok(None) => leases.holdings().await.map(|h| h.into_iter().find(|h| h.name == ACTIVE_LEASE)),
            Err(e) => Err(e),
        };
        let (active, error) = match attempt {
            Ok(active) => {
                let by = active.as_ref().map(|h| h.holder.clone()).unwrap_or_default();
                if said.as_deref() != Some(&by) {
                    tracing::info!(lease = ACTIVE_LEASE, holder = %by, "standby: another instance is active");
                    said = Some(by);
                }
                (active, None)
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "standby: cannot read the active lease; retrying");
                (None, Some(format!("standby: the lease {ACTIVE_LEASE} cannot be read: {e}")))
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot take the active lease")),
        };
        standby.lock().unwrap_or_else(|p| p.into_inner()).set(active, error);
        tokio::time::sleep(every).await;
    }
}

/// Renews `active` every third of its TTL for as long as it is held; returns why it no longer
/// is: PostgreSQL refused the renewal (another instance took the lease, or it expired while this
/// one was paused), or no renewal succeeded before the local deadline.
pub async fn hold(leases: PgLeases, active: Arc<Active>) -> String {
    let every = active.ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let left = active.remaining();
        if left.is_zero() {
            return "no renewal succeeded before the lease's deadline".into();
        }
        match tokio::time::timeout(left, leases.renew(&active.lease, active.ttl)).await {
            Ok(Ok(true)) => active.extend(sent),
            Ok(Ok(false)) => {
                return "PostgreSQL refused the renewal: the lease expired or another instance took it".into()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, remaining = ?active.remaining(), "cannot renew the active lease; retrying")
            }
            Err(_) => return "no renewal answered before the lease's deadline".into(),
        }
    }
}

/// A switch whose writes happen only while `active` is [`Active::writable`]; reads and
/// discovery pass through.
pub struct Gated<S> {
    inner: Arc<S>,
    active: Arc<Active>,
}

impl<S> Gated<S> {
    pub fn new(inner: Arc<S>, active: Arc<Active>) -> Self {
        Self { inner, active }
    }
}

impl<S: Switch> Switch for Gated<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn grammar(&self) -> Grammar {
        self.inner.grammar()
    }

    async fn read(&self, ports: &std::collections::BTreeSet<PortName>) -> Result<Observed, SwitchError> {
        self.inner.read(ports).await
    }

    async fn apply(&self, ops: &[Op]) -> Result<Vec<Outcome>, SwitchError> {
        if !self.active.writable() {
            return Err(SwitchError::Unreachable {
                switch: self.inner.name().to_string(),
                reason: format!(
                    "not written: instance {} may no longer hold the lease {} (token {}, {:?} left)",
                    self.active.instance,
                    self.active.lease.name,
                    self.active.lease.token,
                    self.active.remaining()
                ),
            });
        }
        self.inner.apply(ops).await
    }

    fn drift(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.drift()
    }

    async fn discover(&self) -> Result<Option<Discovery>, SwitchError> {
        self.inner.discover().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::switch::MemorySwitch;
    use engine::VlanId;

    fn add(port: &str, vlan: u16) -> Op {
        Op::AddVlan { port: PortName::parse(Grammar::Memory, port).unwrap(), vlan: VlanId::new(vlan).unwrap() }
    }

    #[tokio::test]
    async fn a_gated_switch_is_written_only_while_more_than_a_quarter_of_the_lease_is_left() {
        let sw = Arc::new(MemorySwitch::new("tor1").creating_ports());
        let lease = Lease { name: ACTIVE_LEASE.into(), holder: "nf-a/0000002a".into(), token: 7 };
        let ttl = Duration::from_secs(8);
        let renewed = |ago: u64| {
            Arc::new(Active::new(lease.clone(), "nf-a".into(), ttl, Instant::now() - Duration::from_secs(ago)))
        };

        let fresh = Gated::new(sw.clone(), renewed(0));
        fresh.apply(&[add("e1", 100)]).await.expect("written while the lease is fresh");
        // Renewed 5 s ago: 3 s of 8 left, still more than a quarter.
        Gated::new(sw.clone(), renewed(5)).apply(&[add("e1", 101)]).await.expect("3 s left");
        // Renewed 7 s ago (a pause, a stalled renewal): 1 s left, not enough to start a write.
        let stale = Gated::new(sw.clone(), renewed(7));
        let err = stale.apply(&[add("e1", 102)]).await.expect_err("refused with 1 s left");
        assert!(err.to_string().contains("nf-a") && err.to_string().contains("token 7"), "{err}");
        assert_eq!(sw.applied(), [add("e1", 100), add("e1", 101)], "the refused write never reached the switch");
        assert_eq!(sw.vlans("e1"), Some([100, 101].map(|v| VlanId::new(v).unwrap()).into()));
    }

    #[test]
    fn a_renewal_extends_from_when_it_was_sent_and_never_shortens() {
        let lease = Lease { name: ACTIVE_LEASE.into(), holder: "h".into(), token: 1 };
        let ttl = Duration::from_secs(10);
        let start = Instant::now();
        let a = Active::new(lease, "nf".into(), ttl, start);
        assert!(a.remaining() > Duration::from_secs(9) && a.writable());
        // A late answer to an older renewal does not pull the deadline back.
        a.extend(start - Duration::from_secs(5));
        assert!(a.remaining() > Duration::from_secs(9));
    }
}
