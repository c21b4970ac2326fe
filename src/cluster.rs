//! Instances sharing one PostgreSQL store share the work (ADR 0014): every `netfold run` with
//! the same config follows the shared log and takes leases (ADR 0009's table and fencing tokens)
//! on pieces of work — `hypervisor/<id>` for a hypervisor's session, `switch/<name>` for a
//! switch's reconciler and discovery — up to a fair share: the configured work divided by the
//! live instances, rounded up. An instance is live while it holds its presence lease
//! `instance/<name>`. When an instance dies, its leases expire and the others take them.
//!
//! What an instance may do for a piece of work is bounded by its lease twice over:
//! - every event it appends for the work carries the lease's fence, checked by PostgreSQL in
//!   the append's transaction, so once another instance has taken the lease nothing more is
//!   accepted;
//! - every switch write first asks [`Hold::writable`], which counts down on this process's
//!   monotonic clock from the moment the last renewal was sent. A process that was paused
//!   (SIGSTOP, a stalled VM) finds on waking that its time is up and writes nothing. An OVS
//!   switch also checks the token itself (`adapters::ovs::fence`).
//!
//! A lease that cannot be renewed stops its work at once (the adapter or reconciler is
//! cancelled; the engine appends nothing more for it); the instance goes on with the rest and
//! takes work again when its share allows.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use engine::runtime::Work;
use engine::switch::{Discovery, Grammar, Observed, Op, Outcome, PortName, Switch, SwitchError};
use serde::{Deserialize, Serialize};
use store::lease::Holding;
use store::{Fence, Lease, Leases, PgLeases};
use tokio::sync::mpsc;

use crate::config::ClusterPlan;

/// The lease an instance holds while it runs: how the others count it in the fair share.
pub fn presence_lease(instance: &str) -> String {
    format!("instance/{instance}")
}

/// A lease this process holds, counted down on its own monotonic clock.
pub struct Hold {
    pub lease: Lease,
    pub instance: String,
    ttl: Duration,
    base: Instant,
    /// Nanoseconds after `base` until which the lease is surely held: when the last successful
    /// take or renewal was *sent*, plus the TTL (the server counts from when it received it).
    until: AtomicU64,
    /// Set once a renewal was refused or came too late: nothing extends it again.
    lost: AtomicBool,
}

impl Hold {
    fn new(lease: Lease, instance: String, ttl: Duration, sent: Instant) -> Self {
        let h = Hold { lease, instance, ttl, base: sent, until: AtomicU64::new(0), lost: AtomicBool::new(false) };
        h.extend(sent);
        h
    }

    fn extend(&self, sent: Instant) {
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        let until = (sent + self.ttl).saturating_duration_since(self.base).as_nanos() as u64;
        self.until.fetch_max(until, Ordering::SeqCst);
    }

    /// The lease is gone: no write starts under it any more.
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.until.store(0, Ordering::SeqCst);
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

    /// How an OVS switch's transactions name their writer.
    pub fn writer(&self) -> String {
        format!("netfold {} lease {} token {}", self.lease.holder, self.lease.name, self.lease.token)
    }

    fn view(&self) -> HeldView {
        HeldView {
            lease: self.lease.name.clone(),
            token: self.lease.token,
            remaining_ms: self.remaining().as_millis() as u64,
        }
    }
}

/// A lease this instance holds, as `/healthz` and `netfold status` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldView {
    pub lease: String,
    pub token: u64,
    /// Counted on this instance's monotonic clock.
    pub remaining_ms: u64,
}

/// A lease as the store last showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub lease: String,
    /// `None` once it expired (free).
    pub holder: Option<String>,
    pub token: u64,
    pub remaining_ms: u64,
}

/// An instance's view of the cluster: `/healthz`'s and `/status`'s `cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This instance's name.
    pub instance: String,
    /// Its holder string in the lease table (the name and a nonce).
    pub holder: String,
    /// Instances holding their presence lease, as last read.
    pub live_instances: usize,
    /// How many pieces of work this instance takes at most.
    pub fair_share: usize,
    /// What this instance holds.
    pub holds: Vec<HeldView>,
    /// Every piece of work's lease (who holds what), as last read.
    pub work: Vec<LeaseView>,
}

/// The holder string of this process in the lease table: the instance and a nonce, so two
/// processes given the same instance name (or one restarted at once) never share a lease.
pub fn holder(instance: &str) -> String {
    format!("{instance}/{:08x}", rand::random::<u32>())
}

/// What the keeper knows, shared with health, status and the renewal task.
pub struct Shares {
    pub instance: String,
    pub holder: String,
    ttl: Duration,
    state: Mutex<SharesState>,
}

#[derive(Default)]
struct SharesState {
    presence: Option<Arc<Hold>>,
    held: BTreeMap<Work, Arc<Hold>>,
    live: usize,
    fair: usize,
    /// The work's leases, as last read.
    work: Vec<(Work, Option<Holding>)>,
    /// Work no instance held at the last read, and at the two last.
    free_before: BTreeSet<Work>,
    unheld: BTreeSet<Work>,
    /// Why the last round could not read or take leases.
    error: Option<String>,
}

impl Shares {
    pub fn new(plan: &ClusterPlan) -> Arc<Self> {
        Arc::new(Shares {
            instance: plan.instance.clone(),
            holder: holder(&plan.instance),
            ttl: plan.lease_ttl,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, SharesState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For `/healthz` and `netfold status`.
    pub fn view(&self) -> ClusterView {
        let s = self.state();
        ClusterView {
            instance: self.instance.clone(),
            holder: self.holder.clone(),
            live_instances: s.live,
            fair_share: s.fair,
            holds: s.presence.iter().chain(s.held.values()).map(|h| h.view()).collect(),
            work: s
                .work
                .iter()
                .map(|(w, h)| {
                    let live = h.as_ref().filter(|h| !h.remaining.is_zero());
                    LeaseView {
                        lease: w.lease(),
                        holder: live.map(|h| h.holder.clone()),
                        token: h.as_ref().map_or(0, |h| h.token),
                        remaining_ms: live.map_or(0, |h| h.remaining.as_millis() as u64),
                    }
                })
                .collect(),
        }
    }

    /// What is not well, for `/healthz`: a held lease that may be lost, leases that cannot be
    /// read or taken, work no instance holds.
    pub fn reasons(&self) -> Vec<String> {
        let s = self.state();
        let mut out = Vec::new();
        if let Some(e) = &s.error {
            out.push(format!("instance {}: {e}", self.instance));
        }
        if s.presence.is_none() {
            out.push(format!(
                "instance {}: does not hold its presence lease {}: it takes no work",
                self.instance,
                presence_lease(&self.instance)
            ));
        }
        for h in s.held.values().filter(|h| !h.writable()) {
            out.push(format!(
                "instance {}: the lease {} (token {}) may be lost ({:?} left): its writes stopped, its appends are fenced",
                self.instance,
                h.lease.name,
                h.lease.token,
                h.remaining()
            ));
        }
        for w in &s.unheld {
            out.push(format!("{w}: no instance holds its lease {}: nobody works on it", w.lease()));
        }
        out
    }
}

/// A switch whose writes happen only while `hold` is [`Hold::writable`]; reads and discovery
/// pass through.
pub struct Gated<S> {
    inner: Arc<S>,
    hold: Arc<Hold>,
}

impl<S> Gated<S> {
    pub fn new(inner: Arc<S>, hold: Arc<Hold>) -> Self {
        Self { inner, hold }
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
        if !self.hold.writable() {
            return Err(SwitchError::Unreachable {
                switch: self.inner.name().to_string(),
                reason: format!(
                    "not written: instance {} may no longer hold the lease {} (token {}, {:?} left)",
                    self.hold.instance,
                    self.hold.lease.name,
                    self.hold.lease.token,
                    self.hold.remaining()
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

/// Renews every lease this instance holds every third of the TTL, each within the time it has
/// left. A lease whose renewal PostgreSQL refuses, or that runs out before one is answered, is
/// lost at once ([`Hold::writable`] is false from then on) and its work sent on `lost` for the
/// keeper to stop. A lost presence lease is taken again by the next round.
pub async fn renew(leases: PgLeases, shares: Arc<Shares>, lost: mpsc::UnboundedSender<Work>) {
    let every = shares.ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        let (presence, held) = {
            let s = shares.state();
            (s.presence.clone(), s.held.iter().map(|(w, h)| (Some(w.clone()), h.clone())).collect::<Vec<_>>())
        };
        for (work, hold) in presence.map(|p| (None, p)).into_iter().chain(held) {
            let sent = Instant::now();
            let left = hold.remaining();
            let why = if left.is_zero() {
                Some("no renewal succeeded before the lease's deadline".to_string())
            } else {
                match tokio::time::timeout(left, leases.renew(&hold.lease, shares.ttl)).await {
                    Ok(Ok(true)) => {
                        hold.extend(sent);
                        None
                    }
                    Ok(Ok(false)) => {
                        Some("PostgreSQL refused the renewal: the lease expired or another instance took it".into())
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(lease = %hold.lease.name, error = %e, remaining = ?hold.remaining(), "cannot renew a lease; retrying");
                        None
                    }
                    Err(_) => Some("no renewal answered before the lease's deadline".into()),
                }
            };
            let Some(why) = why else { continue };
            hold.lose();
            tracing::error!(lease = %hold.lease.name, token = hold.lease.token, "lost the lease {}: {why}", hold.lease.name);
            match work {
                Some(w) => {
                    let _ = lost.send(w);
                }
                None => {
                    let mut s = shares.state();
                    if s.presence.as_ref().is_some_and(|p| Arc::ptr_eq(p, &hold)) {
                        s.presence = None;
                    }
                }
            }
        }
    }
}

/// Starts and stops the work this instance holds (the agent does it for the keeper).
pub trait Worker {
    /// Starts `work` under `hold` (the engine first folds the log to the store's head).
    fn start(&mut self, work: &Work, hold: Arc<Hold>) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Stops `work` (its tasks end; the engine appends nothing more for it).
    fn stop(&mut self, work: &Work) -> impl std::future::Future<Output = ()> + Send;
}

/// Takes and gives up leases so that this instance holds its fair share of `work`.
pub struct Keeper {
    leases: PgLeases,
    shares: Arc<Shares>,
    work: Vec<Work>,
}

impl Keeper {
    pub fn new(leases: PgLeases, shares: Arc<Shares>, work: Vec<Work>) -> Self {
        Keeper { leases, shares, work }
    }

    /// How often to run [`Keeper::round`]: every third of the TTL.
    pub fn every(&self) -> Duration {
        self.shares.ttl / 3
    }

    /// This instance's share: the work divided by the live instances, rounded up.
    fn fair(work: usize, live: usize) -> usize {
        work.div_ceil(live.max(1))
    }

    /// Stops work whose lease was lost.
    pub async fn lost(&mut self, worker: &mut impl Worker, work: Work) {
        let gone = self.shares.state().held.remove(&work);
        if gone.is_some() {
            tracing::warn!(work = %work, "stopping {work}: its lease is lost");
            worker.stop(&work).await;
        }
    }

    /// One round: holds the presence lease, reads every lease, then takes free work while
    /// below the fair share and gives work up (after stopping it) while above.
    pub async fn round(&mut self, worker: &mut impl Worker) {
        if let Err(e) = self.try_round(worker).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot share the work this round; retrying");
            self.shares.state().error = Some(format!("cannot read or take leases: {e:#}"));
        }
    }

    /// `op` on the leases, given up with an error naming `what` once it has taken longer than
    /// a TTL: a round waiting on a PostgreSQL that does not answer (a partition that drops
    /// packets, a connection that hangs) would stop taking and giving up work without a word.
    /// Given up, the round fails and `/healthz` says why; an acquire that PostgreSQL carries
    /// out after all holds a lease nobody renews, which expires within the TTL.
    async fn bounded<T>(&self, what: impl std::fmt::Display, op: impl Future<Output = store::Result<T>>) -> Result<T> {
        let within = self.shares.ttl;
        match tokio::time::timeout(within, op).await {
            Ok(out) => out.with_context(|| what.to_string()),
            Err(_) => bail!("{what}: PostgreSQL did not answer within {within:?} (the lease TTL)"),
        }
    }

    async fn try_round(&mut self, worker: &mut impl Worker) -> Result<()> {
        let (ttl, holder) = (self.shares.ttl, self.shares.holder.clone());
        let presence = presence_lease(&self.shares.instance);
        if self.shares.state().presence.is_none() {
            let sent = Instant::now();
            let taken =
                self.bounded(format!("taking the lease {presence}"), self.leases.acquire(&presence, &holder, ttl));
            match taken.await? {
                Some(lease) => {
                    let hold = Arc::new(Hold::new(lease, self.shares.instance.clone(), ttl, sent));
                    self.shares.state().presence = Some(hold);
                }
                None => {
                    self.shares.state().error = Some(format!(
                        "another process holds {presence}: two instances run with the name {}",
                        self.shares.instance
                    ));
                    return Ok(());
                }
            }
        }
        let holdings: BTreeMap<String, Holding> = self
            .bounded("reading the leases", self.leases.holdings())
            .await?
            .into_iter()
            .map(|h| (h.name.clone(), h))
            .collect();
        let live =
            holdings.values().filter(|h| h.name.starts_with("instance/") && !h.remaining.is_zero()).count().max(1);
        let fair = Self::fair(self.work.len(), live);
        let free: Vec<Work> = self
            .work
            .iter()
            .filter(|w| holdings.get(&w.lease()).is_none_or(|h| h.remaining.is_zero()))
            .cloned()
            .collect();
        {
            let mut s = self.shares.state();
            s.live = live;
            s.fair = fair;
            s.work = self.work.iter().map(|w| (w.clone(), holdings.get(&w.lease()).cloned())).collect();
            let now_free: BTreeSet<Work> = free.iter().cloned().collect();
            s.unheld = now_free.intersection(&s.free_before).cloned().collect();
            s.free_before = now_free;
            s.error = None;
        }
        // Above the share (an instance joined): give the last work up, stopped first.
        let held: Vec<Work> = self.shares.state().held.keys().cloned().collect();
        for work in held.iter().rev().take(held.len().saturating_sub(fair)) {
            worker.stop(work).await;
            let hold = self.shares.state().held.remove(work);
            if let Some(h) = hold {
                tracing::info!(work = %work, lease = %h.lease.name, token = h.lease.token, live, fair, "giving the lease up: above the fair share");
                self.bounded(format!("giving the lease {} up", h.lease.name), self.leases.release(&h.lease)).await?;
            }
        }
        // Below it: take free work, starting at a place of this instance's own, so instances
        // starting together do not all reach for the same lease first.
        let start = self.shares.holder.bytes().map(usize::from).sum::<usize>() % free.len().max(1);
        for work in free.iter().cycle().skip(start).take(free.len()) {
            if self.shares.state().held.len() >= fair {
                break;
            }
            let sent = Instant::now();
            let name = work.lease();
            let taken = self.bounded(format!("taking the lease {name}"), self.leases.acquire(&name, &holder, ttl));
            let Some(lease) = taken.await? else { continue };
            let hold = Arc::new(Hold::new(lease, self.shares.instance.clone(), ttl, sent));
            self.shares.state().held.insert(work.clone(), hold.clone());
            tracing::info!(work = %work, lease = %hold.lease.name, token = hold.lease.token, holder = %holder, live, fair, "took the lease {}", hold.lease.name);
            if let Err(e) = worker.start(work, hold.clone()).await {
                tracing::error!(work = %work, error = %format!("{e:#}"), "cannot start {work}; giving its lease up");
                worker.stop(work).await;
                self.shares.state().held.remove(work);
                self.bounded(format!("giving the lease {} up", hold.lease.name), self.leases.release(&hold.lease))
                    .await?;
            }
        }
        Ok(())
    }

    /// Stops all work and gives every lease up (a clean stop: the others take over at once
    /// instead of after the TTL).
    pub async fn release_all(&mut self, worker: &mut impl Worker) {
        let held: Vec<(Work, Arc<Hold>)> = std::mem::take(&mut self.shares.state().held).into_iter().collect();
        for (work, _) in &held {
            worker.stop(work).await;
        }
        let presence = self.shares.state().presence.take();
        for hold in held.iter().map(|(_, h)| h).chain(presence.iter()) {
            let given =
                self.bounded(format!("giving the lease {} up", hold.lease.name), self.leases.release(&hold.lease));
            if let Err(e) = given.await {
                tracing::warn!(lease = %hold.lease.name, error = %format!("{e:#}"), "cannot give the lease up (it expires by itself)");
            }
        }
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
        let lease = Lease { name: "switch/tor1".into(), holder: "nf-a/0000002a".into(), token: 7 };
        let ttl = Duration::from_secs(8);
        let renewed = |ago: u64| {
            Arc::new(Hold::new(lease.clone(), "nf-a".into(), ttl, Instant::now() - Duration::from_secs(ago)))
        };

        let fresh = Gated::new(sw.clone(), renewed(0));
        fresh.apply(&[add("e1", 100)]).await.expect("written while the lease is fresh");
        // Renewed 5 s ago: 3 s of 8 left, still more than a quarter.
        Gated::new(sw.clone(), renewed(5)).apply(&[add("e1", 101)]).await.expect("3 s left");
        // Renewed 7 s ago (a pause, a stalled renewal): 1 s left, not enough to start a write.
        let stale = Gated::new(sw.clone(), renewed(7));
        let err = stale.apply(&[add("e1", 102)]).await.expect_err("refused with 1 s left");
        assert!(err.to_string().contains("nf-a") && err.to_string().contains("token 7"), "{err}");
        // A lost lease: refused at once, however much time its last renewal had bought.
        let lost = renewed(0);
        lost.lose();
        lost.extend(Instant::now());
        let err = Gated::new(sw.clone(), lost).apply(&[add("e1", 103)]).await.expect_err("refused once lost");
        assert!(err.to_string().contains("switch/tor1"), "{err}");
        assert_eq!(sw.applied(), [add("e1", 100), add("e1", 101)], "the refused writes never reached the switch");
        assert_eq!(sw.vlans("e1"), Some([100, 101].map(|v| VlanId::new(v).unwrap()).into()));
    }

    #[test]
    fn a_renewal_extends_from_when_it_was_sent_and_never_shortens() {
        let lease = Lease { name: "switch/tor1".into(), holder: "h".into(), token: 1 };
        let ttl = Duration::from_secs(10);
        let start = Instant::now();
        let a = Hold::new(lease, "nf".into(), ttl, start);
        assert!(a.remaining() > Duration::from_secs(9) && a.writable());
        // A late answer to an older renewal does not pull the deadline back.
        a.extend(start - Duration::from_secs(5));
        assert!(a.remaining() > Duration::from_secs(9));
    }

    #[test]
    fn the_fair_share_is_the_work_over_the_live_instances_rounded_up() {
        assert_eq!(Keeper::fair(2, 3), 1, "two pieces over three instances: one each at most");
        assert_eq!(Keeper::fair(5, 2), 3);
        assert_eq!(Keeper::fair(4, 2), 2);
        assert_eq!(Keeper::fair(3, 0), 3, "alone (or unable to count): all of it");
    }
}
