//! The one hypervisor session driver: log in → full read → follow → on error: report, back off,
//! retry, log out. The vSphere and the XenAPI adapters plug into it as a [`Peer`] (the protocol
//! steps only), so every retry, liveness and loss-reporting rule lives here once.
//!
//! ```text
//!            ┌──────────── retry: backoff (at most grace/10 while lost); fatal errors: slow ─────┐
//!            v                                                                                    │
//!   login ──> read ──Inventory──> follow ──Delta…  (every resync interval: read again) ──error ───┤
//!                                   └── Ask::Reread (the engine judged the inventory a loss) ─────┤
//!   backoff sleep <── Ask::LastAttempt (the grace is about to run out) wakes it at once ──────────┘
//! ```
//!
//! The rules, each in one place:
//! - A failed attempt is reported as `Disconnected` (the first one of a loss logs `connection
//!   lost`; later ones `reconnect failed (attempt n, next in s): <cause>`), whether or not this
//!   process ever reached the peer: a hypervisor the log shows as live is lost at the first
//!   failed attempt after a restart. The loss carries how long the peer had been silent, so the
//!   engine dates it at the last contact.
//! - The backoff resets only once a session reached steady state (the peer answered a follow
//!   request); a session that dies right after its read keeps backing off, so a storm is at most
//!   one login per backoff step. Every abandoned session is logged out (bounded).
//! - A session the server dropped (`NotAuthenticated`, `SESSION_INVALID`) after its inventory
//!   was sent is re-opened without reporting a loss: at once after steady state, else after the
//!   backoff.
//! - Fatal errors (wrong password, reply over the size cap) never stop the adapter: they retry
//!   on the slow schedule, are logged at ERROR each time and show in [`Health`]. They are not
//!   bounded by the grace (retrying a wrong password often can lock the account); the engine's
//!   last-attempt ask still gives them one try before expiry.
//! - Every `resync` interval the session reads the whole inventory again; the engine diffs it
//!   like a reconnect, so a missed update stream is repaired.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::backoff::Backoff;
use engine::runtime::Link;
use engine::{Ask, Change, Fact, Observation, Rejected};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

/// What an error means for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The peer is unreachable or answered nonsense: report the loss, back off, reconnect.
    Transport,
    /// The server dropped the session (or its event token): log in again and re-read, at once
    /// when the session had reached steady state, else after the backoff.
    SessionGone,
    /// Retrying soon cannot help (wrong password, a reply over the size cap, a refused
    /// redirect): report, log at ERROR, retry on the slow schedule.
    Fatal,
}

/// A full read of the hypervisor.
#[derive(Clone, Debug, PartialEq)]
pub struct Inventory {
    /// The endpoint actually read (printable: no credentials).
    pub endpoint: String,
    pub facts: Vec<Fact>,
    pub rejected: Vec<Rejected>,
}

/// One hypervisor protocol, as the driver uses it. Every call must be bounded in time by the
/// peer's own timeouts (connect, liveness, request), so a hung peer fails a call.
pub trait Peer: Send + Sync {
    type Session: Send;
    type Error: std::error::Error + Send + Sync;

    /// The protocol, for log lines (`vSphere`, `XenAPI`).
    const PROTOCOL: &'static str;

    fn class(error: &Self::Error) -> Class;

    /// The configured endpoint, printable.
    fn endpoint(&self) -> String;

    /// Logs in (following whatever redirects the protocol has).
    fn login(&self) -> impl Future<Output = Result<Self::Session, Self::Error>> + Send;

    /// Reads the whole inventory and (re)starts whatever `follow` resumes from.
    fn read(&self, session: &mut Self::Session) -> impl Future<Output = Result<Inventory, Self::Error>> + Send;

    /// Follows changes until an error: each answered request is told to `out.answered()`, each
    /// change sent with `out.delta(..)`. The driver may drop this future at any await (a resync
    /// or an ask); the next `read` starts over.
    fn follow(
        &self,
        session: &mut Self::Session,
        out: &Follow,
    ) -> impl Future<Output = Result<Infallible, Self::Error>> + Send;

    /// Logs out, best effort (the driver bounds the time).
    fn logout(&self, session: Self::Session) -> impl Future<Output = ()> + Send;
}

/// The driver's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub backoff: Backoff,
    /// The hypervisor's grace period: while lost, attempts are at most `grace / 10` apart.
    pub grace: Duration,
    /// Between attempts after a fatal error.
    pub fatal_retry: Duration,
    /// Between full re-reads of a live session.
    pub resync: Duration,
    /// The longest a logout may take (a hung peer must not hold up the next attempt).
    pub logout: Duration,
}

impl Timing {
    /// The schedule from an adapter's knobs (milliseconds and seconds as the config names them).
    pub fn from_knobs(
        backoff_initial_ms: u64,
        backoff_max_ms: u64,
        fatal_retry_secs: u64,
        resync_secs: u64,
        connect_timeout_ms: u64,
        grace: Duration,
    ) -> Self {
        Timing {
            backoff: Backoff::new(Duration::from_millis(backoff_initial_ms), Duration::from_millis(backoff_max_ms)),
            grace,
            fatal_retry: Duration::from_secs(fatal_retry_secs),
            resync: Duration::from_secs(resync_secs),
            logout: Duration::from_millis(connect_timeout_ms),
        }
    }

    /// How long the engine waits for a last attempt before expiry: a connect and a login, each
    /// within the liveness bound.
    pub fn last_attempt_window(t: &crate::common::Timeouts) -> Duration {
        t.connect + 2 * t.liveness
    }

    /// The wait before the next attempt. `lost`: the engine holds the hypervisor as lost.
    /// `jitter ∈ [0, 1]`.
    pub fn delay(&self, class: Class, attempt: u32, lost: bool, jitter: f64) -> Duration {
        match class {
            Class::Fatal => self.fatal_retry,
            _ if lost => self.backoff.delay(attempt, jitter).min(self.grace / 10),
            _ => self.backoff.delay(attempt, jitter),
        }
    }
}

/// The peer's channel to the engine during `follow`, and its liveness mark.
pub struct Follow {
    tx: mpsc::Sender<Observation>,
    contact: Contact,
    health: Arc<Health>,
}

impl Follow {
    /// The peer answered a follow request: it is alive, and the session reached steady state.
    pub fn answered(&self) {
        self.contact.mark(true);
        self.health.update(|h| h.last_contact_ms = Some(unix_ms()));
    }

    /// Sends a delta (waits while the engine is busy; a closed engine ends the driver).
    pub async fn delta(&self, changes: Vec<Change>, rejected: Vec<Rejected>) {
        if changes.is_empty() && rejected.is_empty() {
            return;
        }
        let _ = self.tx.send(Observation::Delta { changes, rejected }).await;
    }
}

/// When the peer last answered, and whether the current session reached steady state.
#[derive(Clone, Default)]
struct Contact(Arc<Mutex<ContactState>>);

#[derive(Default)]
struct ContactState {
    last: Option<Instant>,
    steady: bool,
}

impl Contact {
    fn mark(&self, steady: bool) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.last = Some(Instant::now());
        c.steady |= steady;
    }

    /// How long the peer has been silent (0 when it never answered).
    fn silent(&self) -> Duration {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.last.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Whether the session that just ended reached steady state; resets for the next one.
    fn take_steady(&self) -> bool {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()).steady)
    }
}

/// Where an adapter stands, for `/healthz`, `/metrics` and `netfold status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No attempt has finished yet.
    Connecting,
    /// A session is open and its inventory was sent.
    Live,
    /// The last attempt failed; retrying with backoff.
    Retrying,
    /// The last attempt failed with an error retrying soon cannot fix; retrying slowly.
    Failing,
}

/// A snapshot of an adapter's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkHealth {
    pub state: LinkState,
    pub endpoint: String,
    /// The last failure's message with its causes (cleared when a session is live).
    pub last_error: Option<String>,
    /// Unix ms of the last answer from the peer.
    pub last_contact_ms: Option<u64>,
    /// Failed attempts since the last steady session.
    pub attempt: u32,
    /// Unix ms of the next attempt, while waiting for one.
    pub next_attempt_ms: Option<u64>,
    pub logins: u64,
    pub logouts: u64,
    /// Losses reported (sessions that ended, or attempts that failed after a live session).
    pub losses: u64,
    pub resyncs: u64,
}

/// An adapter's health, shared with whoever reports it.
#[derive(Debug)]
pub struct Health(Mutex<LinkHealth>);

impl Health {
    pub fn new(endpoint: &str) -> Arc<Self> {
        Arc::new(Health(Mutex::new(LinkHealth {
            state: LinkState::Connecting,
            endpoint: endpoint.to_string(),
            last_error: None,
            last_contact_ms: None,
            attempt: 0,
            next_attempt_ms: None,
            logins: 0,
            logouts: 0,
            losses: 0,
            resyncs: 0,
        })))
    }

    /// The current health.
    pub fn get(&self) -> LinkHealth {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut LinkHealth)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The message of `e` with every underlying cause (`…: …: Connection refused (os error 111)`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How one connection ended.
enum Ended<E> {
    /// The engine is gone: stop.
    Closed,
    /// The engine recorded a loss the session did not see (a hollow inventory, a release).
    Reread(String),
    Failed(E),
}

/// Runs `peer` until the engine drops the link: never stops on an error.
pub async fn run<P: Peer>(peer: P, timing: Timing, link: Link, health: Arc<Health>) {
    let Link { observations: tx, mut asks } = link;
    let contact = Contact::default();
    let endpoint = peer.endpoint();
    // Failures since the last steady session (the backoff exponent).
    let mut attempt = 0u32;
    // The engine holds the hypervisor as lost (we reported it, or it told us).
    let mut lost = false;
    loop {
        let span = tracing::info_span!("session", protocol = P::PROTOCOL, endpoint = %endpoint);
        let (ended, session, reported) =
            connection(&peer, &timing, &tx, &mut asks, &contact, &health).instrument(span).await;
        let steady = contact.take_steady();
        lost &= !reported;
        let class = match &ended {
            Ended::Closed => {
                logout(&peer, &timing, session, &health).await;
                return;
            }
            Ended::Reread(reason) => {
                // Not a reset of the backoff even after steady state: a peer that keeps
                // answering hollow inventories is re-read at most once per backoff step.
                info!(endpoint = %endpoint, "{} session dropped to read again: {reason}", P::PROTOCOL);
                lost = true;
                health.update(|h| h.state = LinkState::Retrying);
                Class::Transport
            }
            Ended::Failed(e) => {
                if steady {
                    attempt = 0;
                }
                let class = P::class(e);
                let cause = chain(e);
                // The server dropped a session whose inventory the engine has: nothing is lost,
                // log in again — at once after steady state, else after the backoff (no storm).
                if class == Class::SessionGone && reported {
                    info!(endpoint = %endpoint, error = %cause, "{} session dropped by the server; logging in again", P::PROTOCOL);
                    logout(&peer, &timing, session, &health).await;
                    if !steady {
                        let delay = timing.delay(class, attempt, lost, rand::random::<f64>());
                        attempt = attempt.saturating_add(1);
                        if !wait(delay, &tx, &mut asks).await {
                            return;
                        }
                    }
                    continue;
                }
                // Report first: the logout of a hung peer must not delay the loss.
                report(P::PROTOCOL, &endpoint, &health, class, attempt, !lost, &cause, &timing);
                let silent_ms = contact.silent().as_millis() as u64;
                if tx.send(Observation::Disconnected { reason: cause.clone(), silent_ms }).await.is_err() {
                    return;
                }
                lost = true;
                class
            }
        };
        logout(&peer, &timing, session, &health).await;
        let delay = timing.delay(class, attempt, lost, rand::random::<f64>());
        health.update(|h| h.next_attempt_ms = Some(unix_ms() + delay.as_millis() as u64));
        attempt = attempt.saturating_add(1);
        if !wait(delay, &tx, &mut asks).await {
            return;
        }
    }
}

/// Logs a failed attempt (the first of a loss as `connection lost`) and records it in health.
#[allow(clippy::too_many_arguments)] // one call site; the pieces are the log line's fields
fn report(
    protocol: &str,
    endpoint: &str,
    health: &Health,
    class: Class,
    attempt: u32,
    first: bool,
    cause: &str,
    timing: &Timing,
) {
    let n = attempt + 1;
    let next_s = timing.delay(class, attempt, true, 1.0).as_secs_f64();
    health.update(|h| {
        h.state = if class == Class::Fatal { LinkState::Failing } else { LinkState::Retrying };
        h.last_error = Some(cause.to_string());
        h.attempt = n;
        h.losses += u64::from(first);
    });
    match (first, class) {
        (_, Class::Fatal) => {
            error!(
            endpoint, attempt = n, next_in_s = next_s,
            "{protocol} connection failed and retrying soon cannot fix it (attempt {n}, next in {next_s:.0}s): {cause}"
        )
        }
        (true, _) => warn!(endpoint, error = cause, "{protocol} connection lost: {cause}"),
        (false, _) => warn!(
            endpoint,
            attempt = n,
            next_in_s = next_s,
            "{protocol} reconnect failed (attempt {n}, next in {next_s:.1}s): {cause}"
        ),
    }
}

/// Sleeps `delay`, or less when the engine asks for a last attempt. `false`: the engine is gone.
async fn wait(delay: Duration, tx: &mpsc::Sender<Observation>, asks: &mut mpsc::Receiver<Ask>) -> bool {
    let until = Instant::now() + delay;
    let mut asks_open = !asks.is_closed();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            _ = tx.closed() => return false,
            ask = asks.recv(), if asks_open => match ask {
                Some(Ask::LastAttempt) => {
                    info!("grace period almost over: trying now");
                    return true;
                }
                // Not in a session: nothing to drop.
                Some(Ask::Reread { .. }) => {}
                None => asks_open = false,
            },
        }
    }
}

/// One connection: login, read, inventory, then follow until it ends. Returns the session (if
/// one was opened) for the caller to log out after reporting, and whether an inventory was sent.
async fn connection<P: Peer>(
    peer: &P,
    timing: &Timing,
    tx: &mpsc::Sender<Observation>,
    asks: &mut mpsc::Receiver<Ask>,
    contact: &Contact,
    health: &Arc<Health>,
) -> (Ended<P::Error>, Option<P::Session>, bool) {
    let mut session = match peer.login().await {
        Ok(s) => s,
        Err(e) => return (Ended::Failed(e), None, false),
    };
    contact.mark(false);
    health.update(|h| h.logins += 1);
    if let Err(e) = read_and_send(peer, &mut session, tx, contact, health).await {
        return (e, Some(session), false);
    }
    let follow = Follow { tx: tx.clone(), contact: contact.clone(), health: health.clone() };
    let mut resync_at = Instant::now() + timing.resync;
    let mut asks_open = !asks.is_closed();
    loop {
        let ended = tokio::select! {
            r = peer.follow(&mut session, &follow) => match r {
                Ok(never) => match never {},
                Err(e) => Some(Ended::Failed(e)),
            },
            _ = tokio::time::sleep_until(resync_at) => None,
            _ = tx.closed() => Some(Ended::Closed),
            ask = asks.recv(), if asks_open => match ask {
                Some(Ask::Reread { reason }) => Some(Ended::Reread(reason)),
                // Live: the attempt the engine asks for has already succeeded.
                Some(Ask::LastAttempt) => continue,
                None => {
                    asks_open = false;
                    continue;
                }
            },
        };
        match ended {
            Some(e) => return (e, Some(session), true),
            None => {
                resync_at = Instant::now() + timing.resync;
                info!("periodic full resync");
                health.update(|h| h.resyncs += 1);
                if let Err(e) = read_and_send(peer, &mut session, tx, contact, health).await {
                    return (e, Some(session), true);
                }
            }
        }
    }
}

async fn read_and_send<P: Peer>(
    peer: &P,
    session: &mut P::Session,
    tx: &mpsc::Sender<Observation>,
    contact: &Contact,
    health: &Health,
) -> Result<(), Ended<P::Error>> {
    let inv = peer.read(session).await.map_err(Ended::Failed)?;
    contact.mark(false);
    let Inventory { endpoint, facts, rejected } = inv;
    health.update(|h| {
        h.state = LinkState::Live;
        h.last_error = None;
        h.attempt = 0;
        h.next_attempt_ms = None;
        h.last_contact_ms = Some(unix_ms());
    });
    tx.send(Observation::Inventory { endpoint, facts, rejected }).await.map_err(|_| Ended::Closed)
}

async fn logout<P: Peer>(peer: &P, timing: &Timing, session: Option<P::Session>, health: &Health) {
    let Some(s) = session else { return };
    if tokio::time::timeout(timing.logout, peer.logout(s)).await.is_err() {
        tracing::debug!("logout timed out");
    }
    health.update(|h| h.logouts += 1);
}

#[cfg(test)]
mod tests {
    //! The driver's rules against a scripted peer, on paused time.
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0:?}")]
    struct E(Class);

    /// What the peer does at each step, in order; when a script runs out the step hangs.
    #[derive(Default)]
    struct Script {
        logins: Mutex<VecDeque<Result<(), Class>>>,
        /// Each follow step: wait this long, then answer (`Ok`) or fail.
        follows: Mutex<VecDeque<(Duration, Result<(), Class>)>>,
        login_count: AtomicU32,
        logout_count: AtomicU32,
    }

    struct Fake(Arc<Script>);

    impl Peer for Fake {
        type Session = ();
        type Error = E;
        const PROTOCOL: &'static str = "fake";

        fn class(e: &E) -> Class {
            e.0
        }

        fn endpoint(&self) -> String {
            "fake://peer".into()
        }

        async fn login(&self) -> Result<(), E> {
            self.0.login_count.fetch_add(1, Ordering::SeqCst);
            let next = self.0.logins.lock().unwrap().pop_front();
            match next {
                Some(r) => r.map_err(E),
                None => std::future::pending().await,
            }
        }

        async fn read(&self, _: &mut ()) -> Result<Inventory, E> {
            Ok(Inventory { endpoint: "fake://peer".into(), facts: vec![], rejected: vec![] })
        }

        async fn follow(&self, _: &mut (), out: &Follow) -> Result<Infallible, E> {
            loop {
                let next = self.0.follows.lock().unwrap().pop_front();
                let Some((after, r)) = next else { return std::future::pending().await };
                tokio::time::sleep(after).await;
                match r {
                    Ok(()) => out.answered(),
                    Err(c) => return Err(E(c)),
                }
                tokio::task::yield_now().await;
            }
        }

        async fn logout(&self, _: ()) {
            self.0.logout_count.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn timing() -> Timing {
        Timing {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            grace: Duration::from_secs(100),
            fatal_retry: Duration::from_secs(300),
            resync: Duration::from_secs(3600),
            logout: Duration::from_secs(1),
        }
    }

    struct Running {
        script: Arc<Script>,
        rx: mpsc::Receiver<Observation>,
        asks: mpsc::Sender<Ask>,
        health: Arc<Health>,
    }

    fn start(script: Script, timing: Timing) -> Running {
        let script = Arc::new(script);
        let (tx, rx) = mpsc::channel(16);
        let (asks, asks_rx) = mpsc::channel(4);
        let health = Health::new("fake://peer");
        tokio::spawn(run(Fake(script.clone()), timing, Link { observations: tx, asks: asks_rx }, health.clone()));
        Running { script, rx, asks, health }
    }

    fn script(logins: &[Result<(), Class>], follows: &[Result<(), Class>]) -> Script {
        let follows = follows.iter().map(|r| (Duration::ZERO, *r)).collect();
        Script {
            logins: Mutex::new(logins.iter().copied().collect()),
            follows: Mutex::new(follows),
            ..Script::default()
        }
    }

    /// The next observation and how long (paused time) it took to come.
    async fn next(r: &mut Running) -> (Observation, Duration) {
        let t = Instant::now();
        let o = tokio::time::timeout(Duration::from_secs(3600), r.rx.recv()).await.expect("an observation").unwrap();
        (o, t.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failed_attempt_is_reported_even_before_any_inventory() {
        let mut r = start(script(&[Err(Class::Transport)], &[]), timing());
        let (o, _) = next(&mut r).await;
        assert!(matches!(o, Observation::Disconnected { silent_ms: 0, .. }), "{o:?}");
        assert_eq!(r.health.get().state, LinkState::Retrying);
    }

    #[tokio::test(start_paused = true)]
    async fn while_lost_attempts_are_at_most_a_tenth_of_the_grace_apart() {
        let mut r = start(script(&[Err(Class::Transport); 12], &[]), timing());
        let mut gaps = Vec::new();
        for _ in 0..12 {
            let (o, took) = next(&mut r).await;
            assert!(matches!(o, Observation::Disconnected { .. }));
            gaps.push(took);
        }
        // Backoff 1, 2, 4, 8, 16, 32, 60 s would follow; the grace of 100 s caps it at 10 s.
        assert!(gaps.iter().all(|g| *g <= Duration::from_secs(10)), "{gaps:?}");
        assert!(gaps[6..].iter().all(|g| *g >= Duration::from_secs(5)), "the backoff still grows: {gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_last_attempt_ask_ends_the_wait_at_once() {
        let mut t = timing();
        t.grace = Duration::from_secs(1000);
        let mut r = start(script(&[Err(Class::Transport); 8], &[]), t);
        for _ in 0..6 {
            next(&mut r).await;
        }
        // The backoff is now 32-64 s; the ask makes the next attempt immediate.
        r.asks.send(Ask::LastAttempt).await.unwrap();
        let (_, took) = next(&mut r).await;
        assert_eq!(took, Duration::ZERO, "at once: no (virtual) time passes");
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_retry_on_the_slow_schedule_and_show_as_failing() {
        let mut r = start(script(&[Err(Class::Fatal), Err(Class::Fatal), Ok(())], &[]), timing());
        next(&mut r).await;
        assert_eq!(r.health.get().state, LinkState::Failing);
        let (_, took) = next(&mut r).await;
        assert_eq!(took, Duration::from_secs(300));
        let (o, took) = next(&mut r).await;
        assert!(matches!(o, Observation::Inventory { .. }), "{o:?}");
        assert_eq!(took, Duration::from_secs(300));
        assert_eq!(r.health.get().state, LinkState::Live);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_dropped_after_steady_state_logs_in_again_at_once_without_a_loss() {
        let mut r = start(script(&[Ok(()), Ok(())], &[Ok(()), Err(Class::SessionGone)]), timing());
        assert!(matches!(next(&mut r).await.0, Observation::Inventory { .. }));
        let (o, took) = next(&mut r).await;
        assert!(matches!(o, Observation::Inventory { .. }), "no Disconnected: {o:?}");
        assert_eq!(took, Duration::ZERO, "at once: no (virtual) time passes");
        assert_eq!(r.script.logout_count.load(Ordering::SeqCst), 1, "the dropped session was logged out");
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_dropped_before_steady_state_back_off_and_each_is_logged_out() {
        // Every follow fails at once: no steady state, so the backoff grows (a storm is one
        // login per backoff step) and nothing is reported lost (each read succeeded).
        let logins = [Ok(()); 6];
        let follows = [Err(Class::SessionGone); 5];
        let mut r = start(script(&logins, &follows), timing());
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let (o, took) = next(&mut r).await;
            assert!(matches!(o, Observation::Inventory { .. }), "{o:?}");
            gaps.push(took);
        }
        assert!(gaps[5] >= Duration::from_secs(8), "growing backoff: {gaps:?}");
        assert_eq!(r.script.login_count.load(Ordering::SeqCst), 6);
        assert_eq!(r.script.logout_count.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reread_ask_drops_the_session_and_reads_again_after_the_backoff() {
        let mut r = start(script(&[Ok(()), Ok(())], &[Ok(())]), timing());
        assert!(matches!(next(&mut r).await.0, Observation::Inventory { .. }));
        r.asks.send(Ask::Reread { reason: "inventory came back empty".into() }).await.unwrap();
        let (o, took) = next(&mut r).await;
        assert!(matches!(o, Observation::Inventory { .. }), "{o:?}");
        assert!(took >= Duration::from_millis(500) && took <= Duration::from_secs(1), "{took:?}");
        assert_eq!(r.script.logout_count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loss_carries_how_long_the_peer_was_silent() {
        let s = script(&[Ok(())], &[]);
        *s.follows.lock().unwrap() =
            [(Duration::ZERO, Ok(())), (Duration::from_secs(7), Err(Class::Transport))].into_iter().collect();
        let mut r = start(s, timing());
        assert!(matches!(next(&mut r).await.0, Observation::Inventory { .. }));
        let (o, took) = next(&mut r).await;
        assert_eq!(took, Duration::from_secs(7));
        let Observation::Disconnected { silent_ms, .. } = o else { panic!("{o:?}") };
        assert_eq!(silent_ms, 7_000, "silent since the last answer");
        assert_eq!(r.health.get().losses, 1);
    }
}
