//! The adapter's run loop: log in, read the pool, report an `Inventory`, then follow
//! `event.from` and report exact `Delta`s; recover from every XenAPI failure by policy.
//!
//! ```text
//!  login ──> event.inject ──> get_all_records ×8 ──> Inventory ──> event.from loop ──> Delta ...
//!    ^                                                 │ error
//!    └──── Relogin / Reread / FollowMaster(addr) <─────┤
//!    └──── backoff (capped, jittered) <── Disconnected ┘ transport loss
//! ```
//! The policy is [`Retry::step`] over [`super::Error::recovery`]; the delay is [`Backoff`]; all
//! three are pure.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{Fact, FactKey, Observation, Rejected};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn, Instrument};

use crate::common::Secret;

use super::client::{Client, Session};
use super::config::Config;
use super::error::{Error, Recovery, Result};
pub use engine::backoff::Backoff;

use super::mapping::{Facts, Mirror, CLASSES};

/// What the run loop does after a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Connect to `url` after `delay` (zero: at once), first reporting `disconnected` if set.
    Connect { url: String, delay: Duration, disconnected: Option<String> },
    /// Give up: report `disconnected` if set, then return the error.
    Stop { disconnected: Option<String> },
    /// The observation channel is closed: return `Ok`.
    Done,
}

/// The run loop's pure state machine: where to connect next, how many failures in a row, and
/// whether the engine currently believes the pool is connected (so `Disconnected` is reported
/// once per outage). [`Retry::step`] is the only transition; it does no IO and reads no clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    url: String,
    backoff: Backoff,
    /// Failures since the last inventory (the backoff exponent).
    attempt: u32,
    /// `HOST_IS_SLAVE` redirects since the last inventory.
    redirects: u32,
    /// An inventory was reported and no `Disconnected` since.
    live: bool,
    /// Where a `HOST_IS_SLAVE` redirect may lead: the configured URL and the pool members'
    /// addresses read so far ([`super::redirect::follow`]).
    trusted: std::collections::BTreeSet<String>,
    /// The last redirect refused, until the run loop takes it to log it.
    refused: Option<super::redirect::Error>,
}

/// Redirects followed at once before `HOST_IS_SLAVE` ping-pong is backed off.
const MAX_QUICK_REDIRECTS: u32 = 3;

impl Retry {
    pub fn new(url: &str, backoff: Backoff) -> Self {
        let trusted = [url.to_string()].into();
        Self { url: url.to_string(), backoff, attempt: 0, redirects: 0, live: false, trusted, refused: None }
    }

    /// Adds the `host.address` of pool members read on a connection to the redirect trust.
    pub fn learn_pool(&mut self, addresses: impl IntoIterator<Item = String>) {
        self.trusted.extend(addresses);
    }

    fn known(&self) -> Vec<String> {
        self.trusted.iter().cloned().collect()
    }

    /// The redirect [`Retry::step`] last refused, once.
    pub fn take_refused(&mut self) -> Option<super::redirect::Error> {
        self.refused.take()
    }

    /// The endpoint to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection ended with `error`; `reported` says whether it had sent an inventory.
    /// `jitter ∈ [0, 1]` is the random draw for the backoff.
    pub fn step(&mut self, error: &Error, reported: bool, jitter: f64) -> Next {
        if reported {
            self.live = true;
            self.attempt = 0;
            self.redirects = 0;
        }
        if matches!(error, Error::ChannelClosed) {
            return Next::Done;
        }
        let mut disconnected = None;
        let pause = match error.recovery() {
            Recovery::Stop => {
                let disconnected = std::mem::take(&mut self.live).then(|| error.to_string());
                return Next::Stop { disconnected };
            }
            Recovery::FollowMaster(master) => match super::redirect::follow(&self.url, &master, &self.known()) {
                Ok(url) => {
                    self.url = url.as_str().trim_end_matches('/').to_string();
                    self.redirects += 1;
                    self.redirects > MAX_QUICK_REDIRECTS
                }
                // Not followed: stay, back off, and let the engine know the pool is not served.
                Err(refused) => {
                    if std::mem::take(&mut self.live) {
                        disconnected = Some(refused.to_string());
                    }
                    self.refused = Some(refused);
                    true
                }
            },
            // At once when the connection had got going; otherwise back off (no hot loop).
            Recovery::Relogin | Recovery::Reread => !reported,
            Recovery::Reconnect => {
                if std::mem::take(&mut self.live) {
                    disconnected = Some(error.to_string());
                }
                true
            }
        };
        let delay = if pause {
            let d = self.backoff.delay(self.attempt, jitter);
            self.attempt = self.attempt.saturating_add(1);
            d
        } else {
            Duration::ZERO
        };
        Next::Connect { url: self.url.clone(), delay, disconnected }
    }
}

/// The XenAPI adapter for one pool.
pub struct Adapter {
    config: Config,
    password: Secret,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("url", &self.config.url).field("user", &self.config.user).finish()
    }
}

/// How far one connection got before it ended.
struct Ended {
    error: Error,
    /// An `Inventory` was sent on this connection.
    reported: bool,
    /// The `host.address` of the pool members read on this connection.
    pool: Vec<String>,
}

impl Adapter {
    /// Validates the config and reads the password (once; it is never logged).
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let password = config.password.load()?;
        Ok(Self { config, password })
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.config.reconnect_min_ms),
            Duration::from_millis(self.config.reconnect_max_ms),
        )
    }

    /// Runs until `tx` is closed (returns `Ok`) or a failure that retrying cannot fix (bad
    /// credentials, unusable config, a response over the size limit: returns the error).
    pub async fn run(self, tx: mpsc::Sender<Observation>) -> Result<()> {
        let mut retry = Retry::new(&self.config.url, self.backoff());
        loop {
            let url = retry.url().to_string();
            let span = tracing::info_span!("xen_session", endpoint = %url);
            let Ended { error, reported, pool } = self.connection(&url, &tx).instrument(span).await;
            retry.learn_pool(pool);
            let next = retry.step(&error, reported, rand::random::<f64>());
            if let Some(refused) = retry.take_refused() {
                error!(endpoint = %url, error = %refused, "XenAPI redirect refused");
            }
            match next {
                Next::Done => return Ok(()),
                Next::Stop { disconnected } => {
                    error!(endpoint = %url, error = %error, "XenAPI adapter stopped");
                    if let Some(reason) = disconnected {
                        let _ = tx.send(Observation::Disconnected { reason }).await;
                    }
                    return Err(error);
                }
                Next::Connect { url: to, delay, disconnected } => {
                    match error.recovery() {
                        Recovery::Reconnect => warn!(from = %url, to = %to, error = %error, "XenAPI connection lost"),
                        recovery => {
                            info!(from = %url, to = %to, error = %error, ?recovery, "XenAPI session restarting")
                        }
                    }
                    if let Some(reason) = disconnected {
                        if tx.send(Observation::Disconnected { reason }).await.is_err() {
                            return Ok(());
                        }
                    }
                    if !delay.is_zero() {
                        debug!(delay_ms = delay.as_millis() as u64, "backing off");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = tx.closed() => return Ok(()),
                        }
                    }
                }
            }
        }
    }

    /// One connection: login, full read, inventory, then events until something fails.
    async fn connection(&self, url: &str, tx: &mpsc::Sender<Observation>) -> Ended {
        let mut reported = false;
        let mut pool = Vec::new();
        let error = match self.connection_inner(url, tx, &mut reported, &mut pool).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        Ended { error, reported, pool }
    }

    async fn connection_inner(
        &self,
        url: &str,
        tx: &mpsc::Sender<Observation>,
        reported: &mut bool,
        pool: &mut Vec<String>,
    ) -> Result<std::convert::Infallible> {
        let c = &self.config;
        c.tls.warn_if_insecure(url);
        let client = Client::new(url, &c.tls, c.call_timeout(), c.event_http_timeout(), c.max_body_bytes)?;
        let session = Session::login(client, &c.user, &self.password).await?;
        debug!("logged in");
        // Mark "now" in the event stream before reading, so event.from resumes without a gap.
        // Without a pool object (or event.inject) the empty token re-delivers every object.
        let mut token = match session.get_all("pool").await?.first() {
            Some(pool) => match session.event_inject("pool", pool).await {
                Ok(t) => t,
                // A xapi without event.inject: the empty token re-delivers every object, which
                // the mirror absorbs without a change.
                Err(e) if e.code() == Some("MESSAGE_METHOD_UNKNOWN") => String::new(),
                Err(e) => return Err(e),
            },
            None => String::new(),
        };
        let mut mirror = Mirror::default();
        for class in CLASSES {
            for (r, rec) in session.get_all_records(class).await? {
                mirror.upsert(class, &r, &rec);
            }
        }
        *pool = mirror.addresses();
        let mut facts = Facts::full(&mut mirror);
        let rejected = facts.rejected();
        info!(facts = facts.len(), rejected = rejected.len(), "XenAPI inventory read");
        send(tx, Observation::Inventory { endpoint: url.to_string(), facts: facts.all().cloned().collect(), rejected })
            .await?;
        *reported = true;
        loop {
            let batch = session.event_from(&CLASSES, &token, c.event_timeout_secs).await?;
            token = batch.token;
            if batch.events.is_empty() {
                continue;
            }
            for e in &batch.events {
                mirror.apply(e);
            }
            if batch.events.iter().any(|e| e.class == "host") {
                *pool = mirror.addresses();
            }
            let (changes, fresh) = facts.update(&mut mirror);
            debug!(events = batch.events.len(), changes = changes.len(), rejected = fresh.len(), "event batch");
            if !changes.is_empty() || !fresh.is_empty() {
                send(tx, Observation::Delta { changes, rejected: fresh }).await?;
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<Observation>, o: Observation) -> Result<()> {
    tx.send(o).await.map_err(|_| Error::ChannelClosed)
}

/// The facts of an inventory, keyed (used by tests and callers that diff).
pub fn keyed(facts: &[Fact]) -> BTreeMap<FactKey, Fact> {
    facts.iter().map(|f| (f.key(), f.clone())).collect()
}

/// Rejections sorted for comparison.
pub fn sorted(mut r: Vec<Rejected>) -> Vec<Rejected> {
    r.sort_by(|a, b| (&a.what, &a.why).cmp(&(&b.what, &b.why)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> Error {
        Error::Status { method: "event.from".into(), url: "http://a".into(), status: 502 }
    }

    fn api(code: &str, params: &[&str]) -> Error {
        Error::api("event.from", std::iter::once(code).chain(params.iter().copied()).map(String::from).collect())
    }

    fn retry() -> Retry {
        Retry::new("http://a:1", Backoff::new(Duration::from_millis(100), Duration::from_secs(1)))
    }

    fn delay(n: &Next) -> Duration {
        match n {
            Next::Connect { delay, .. } => *delay,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_disconnected_per_outage_and_capped_growing_delays() {
        let mut r = retry();
        let first = r.step(&transport(), true, 1.0);
        assert!(matches!(&first, Next::Connect { disconnected: Some(_), .. }), "{first:?}");
        let delays: Vec<Duration> = std::iter::once(delay(&first))
            .chain((0..5).map(|_| {
                let n = r.step(&transport(), false, 1.0);
                assert!(matches!(n, Next::Connect { disconnected: None, .. }), "reported once: {n:?}");
                delay(&n)
            }))
            .collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        // Back: the next outage is reported again and starts from the shortest delay.
        let n = r.step(&transport(), true, 1.0);
        assert_eq!(
            n,
            Next::Connect {
                url: "http://a:1".into(),
                delay: Duration::from_millis(100),
                disconnected: Some(transport().to_string())
            }
        );
    }

    #[test]
    fn session_invalid_reconnects_at_once_but_never_hot_loops() {
        let mut r = retry();
        let n = r.step(&api("SESSION_INVALID", &["OpaqueRef:x"]), true, 1.0);
        assert_eq!(n, Next::Connect { url: "http://a:1".into(), delay: Duration::ZERO, disconnected: None });
        // Failing again before any inventory: backed off.
        assert!(delay(&r.step(&api("SESSION_INVALID", &[]), false, 1.0)) > Duration::ZERO);
        assert!(delay(&r.step(&api("EVENT_FROM_TOKEN_PARSE_FAILURE", &["t"]), false, 1.0)) > Duration::ZERO);
    }

    #[test]
    fn host_is_slave_follows_the_master_and_ping_pong_is_backed_off() {
        let mut r = retry();
        r.learn_pool(["10.0.0.2:1".to_string(), "a:1".to_string()]);
        for i in 0..MAX_QUICK_REDIRECTS {
            let n = r.step(&api("HOST_IS_SLAVE", &[if i % 2 == 0 { "10.0.0.2:1" } else { "a:1" }]), false, 1.0);
            assert_eq!(delay(&n), Duration::ZERO);
        }
        assert_eq!(r.url(), "http://10.0.0.2:1");
        let n = r.step(&api("HOST_IS_SLAVE", &["a:1"]), false, 1.0);
        assert!(delay(&n) > Duration::ZERO, "{n:?}");
        assert_eq!(r.url(), "http://a:1");
    }

    #[test]
    fn a_redirect_outside_the_pool_is_refused_backed_off_and_reported_once() {
        let mut r = retry();
        r.learn_pool(["10.0.0.2:1".to_string()]);
        let n = r.step(&api("HOST_IS_SLAVE", &["203.0.113.9:1"]), true, 1.0);
        let Next::Connect { url, delay, disconnected } = n else { panic!("{n:?}") };
        assert_eq!(url, "http://a:1", "stays where it was");
        assert!(delay > Duration::ZERO);
        let reason = disconnected.expect("the engine learns the pool is not served");
        assert!(reason.contains("203.0.113.9") && reason.contains("refused"), "{reason}");
        assert!(matches!(r.take_refused(), Some(crate::xen::redirect::Error::NotInPool { .. })));
        assert!(r.take_refused().is_none());
        let n = r.step(&api("HOST_IS_SLAVE", &["https://10.0.0.2:1"]), false, 1.0);
        assert!(matches!(n, Next::Connect { disconnected: None, .. }), "{n:?}");
        assert!(matches!(r.take_refused(), Some(crate::xen::redirect::Error::SchemeChange { .. })));
    }

    #[test]
    fn bad_credentials_stop_and_a_closed_channel_ends() {
        let mut r = retry();
        let auth = Error::AuthenticationFailed { url: "http://a:1".into(), user: "root".into() };
        assert_eq!(r.step(&auth, false, 0.5), Next::Stop { disconnected: None });
        let mut r = retry();
        assert!(matches!(r.step(&transport(), true, 0.5), Next::Connect { .. }));
        r.step(&api("SESSION_INVALID", &[]), true, 0.5);
        assert!(matches!(r.step(&auth, false, 0.5), Next::Stop { disconnected: Some(_) }));
        assert_eq!(retry().step(&Error::ChannelClosed, true, 0.5), Next::Done);
    }
}
