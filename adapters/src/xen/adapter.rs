//! The XenAPI protocol steps the session [`crate::driver`] runs: log in (following
//! `HOST_IS_SLAVE` to the pool master), mark the resume point with `event.inject`, read every
//! class with `get_all_records`, then follow `event.from` and report exact deltas.
//!
//! ```text
//!  login ─(HOST_IS_SLAVE [master] → login at the master, at most 3 hops)─> event.inject
//!    ──> get_all_records ×8 ──> Inventory ──> event.from loop ──> Delta ...
//! ```
//! A record that does not have the shape of xapi's data model fails the read (the driver
//! retries); it is never taken for the object's deletion. What each XenAPI error means for the
//! driver is [`super::Error::recovery`].

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use engine::Observation;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::common::SecretString;
use crate::driver::{self, Class, Follow, Health, Inventory, Peer};

use super::client::{Client, Session as XenSession};
use super::config::Config;
use super::error::{Error, Recovery, Result};
use super::mapping::{Facts, Mirror, CLASSES};

/// `HOST_IS_SLAVE` redirects followed within one login before giving up on the attempt.
const MAX_REDIRECTS: u32 = 3;

/// The XenAPI adapter for one pool.
pub struct Adapter {
    config: Config,
    password: SecretString,
    /// Where the last login succeeded (the master, after a redirect); tried first next time.
    current: Mutex<String>,
    /// Where a `HOST_IS_SLAVE` redirect may lead: the configured URL and the `host.address` of
    /// every pool member read so far ([`super::redirect::follow`]).
    trusted: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("url", &self.config.url).field("user", &self.config.user).finish()
    }
}

/// One logged-in session: the pool's mirror, its facts and the `event.from` token.
pub struct Session {
    xen: XenSession,
    mirror: Mirror,
    facts: Facts,
    token: String,
}

impl Adapter {
    /// Validates the config and reads the password (once; it is never logged).
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let password = config.password.load()?;
        let trusted = Mutex::new([config.url.clone()].into());
        Ok(Self { current: Mutex::new(config.url.clone()), trusted, config, password })
    }

    /// Runs the adapter with the engine's link until the engine drops it; never stops on an
    /// error (see [`driver`]). `grace`: the pool's grace period.
    pub async fn run(self, link: engine::runtime::Link, grace: Duration, health: std::sync::Arc<Health>) {
        let timing = self.config.timing(grace);
        driver::run(self, timing, link, health).await
    }

    /// Runs the adapter into a plain channel (no asks from the engine), for tools and tests.
    pub async fn run_into(self, tx: mpsc::Sender<Observation>) {
        let (_asks_tx, asks) = mpsc::channel(1);
        let health = Health::new(&self.config.url);
        self.run(engine::runtime::Link { observations: tx, asks }, engine::config::DEFAULT_GRACE, health).await
    }

    fn current(&self) -> String {
        lock(&self.current).clone()
    }

    fn client(&self, url: &str) -> Result<Client> {
        let c = &self.config;
        c.tls.warn_if_insecure(url);
        Client::new(url, &c.tls, &c.timeouts(), c.max_body_bytes)
    }

    /// Opens a session reading the event timeout the config gives.
    async fn open(&self, url: &str) -> Result<XenSession> {
        XenSession::login(self.client(url)?, &self.config.user, &self.password).await
    }
}

impl Peer for Adapter {
    type Session = Session;
    type Error = Error;
    const PROTOCOL: &'static str = "XenAPI";

    fn class(e: &Error) -> Class {
        match e.recovery() {
            // A master change answers the old master's session with HOST_IS_SLAVE: log in again
            // (the login follows the redirect).
            Recovery::Relogin | Recovery::Reread | Recovery::FollowMaster(_) => Class::SessionGone,
            Recovery::Reconnect => Class::Transport,
            Recovery::Stop => Class::Fatal,
        }
    }

    fn endpoint(&self) -> String {
        self.config.url.clone()
    }

    async fn login(&self) -> Result<Session> {
        let mut url = self.current();
        let mut hops = 0;
        let xen = loop {
            match self.open(&url).await {
                Ok(s) => break s,
                Err(e) => match e.recovery() {
                    Recovery::FollowMaster(master) if hops < MAX_REDIRECTS => {
                        hops += 1;
                        let known: Vec<String> = lock(&self.trusted).iter().cloned().collect();
                        // Followed only to the pool's own members with the same scheme and TLS
                        // policy; otherwise the attempt fails (and shows in health).
                        let to = super::redirect::follow(&url, &master, &known)
                            .map_err(|refused| Error::Redirect { from: url.clone(), refused })?;
                        let to = to.as_str().trim_end_matches('/').to_string();
                        info!(from = %url, to = %to, "XenAPI pool member is not the master; following HOST_IS_SLAVE");
                        url = to;
                    }
                    // Back to the configured URL next time: the pool may have a new master.
                    _ => {
                        *lock(&self.current) = self.config.url.clone();
                        return Err(e);
                    }
                },
            }
        };
        *lock(&self.current) = url;
        debug!("logged in");
        Ok(Session { xen, mirror: Mirror::default(), facts: Facts::default(), token: String::new() })
    }

    async fn read(&self, s: &mut Session) -> Result<Inventory> {
        // Mark "now" in the event stream before reading, so event.from resumes without a gap.
        // Without a pool object (or event.inject) the empty token re-delivers every object.
        s.token = match s.xen.get_all("pool").await?.first() {
            Some(pool) => match s.xen.event_inject("pool", pool).await {
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
            let method = format!("{class}.get_all_records");
            for (r, rec) in s.xen.get_all_records(class).await? {
                mirror.upsert(class, &r, &rec).map_err(|bad| unreadable(&method, bad))?;
            }
        }
        lock(&self.trusted).extend(mirror.addresses());
        let facts = Facts::full(&mut mirror);
        let rejected = facts.rejected();
        info!(facts = facts.len(), rejected = rejected.len(), "XenAPI inventory read");
        let inventory =
            Inventory { endpoint: s.xen.url().to_string(), facts: facts.all().cloned().collect(), rejected };
        s.mirror = mirror;
        s.facts = facts;
        Ok(inventory)
    }

    async fn follow(&self, s: &mut Session, out: &Follow) -> Result<Infallible> {
        loop {
            let batch = s.xen.event_from(&CLASSES, &s.token, self.config.event_timeout_secs).await?;
            out.answered();
            s.token = batch.token;
            if batch.events.is_empty() {
                continue;
            }
            for e in &batch.events {
                s.mirror.apply(e).map_err(|bad| unreadable("event.from", bad))?;
            }
            let (changes, fresh) = s.facts.update(&mut s.mirror);
            debug!(events = batch.events.len(), changes = changes.len(), rejected = fresh.len(), "event batch");
            out.delta(changes, fresh).await;
        }
    }

    async fn logout(&self, s: Session) {
        if let Err(e) = s.xen.logout().await {
            debug!(error = %e, "XenAPI logout failed");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A record that does not read: the whole read fails (and is retried), nothing is removed.
fn unreadable(method: &str, bad: engine::Rejected) -> Error {
    Error::Shape { method: method.to_string(), why: format!("{}: {}", bad.what, bad.why) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, params: &[&str]) -> Error {
        Error::api("event.from", std::iter::once(code).chain(params.iter().copied()).map(String::from).collect())
    }

    #[test]
    fn each_xenapi_failure_has_its_driver_class() {
        assert_eq!(Adapter::class(&api("SESSION_INVALID", &["OpaqueRef:x"])), Class::SessionGone);
        assert_eq!(Adapter::class(&api("EVENTS_LOST", &[])), Class::SessionGone);
        assert_eq!(Adapter::class(&api("INTERNAL_ERROR", &["boom"])), Class::Transport);
        let auth = Error::AuthenticationFailed { url: "http://a:1".into(), user: "root".into() };
        assert_eq!(Adapter::class(&auth), Class::Fatal);
        let shape = unreadable(
            "VM.get_all_records",
            engine::Rejected { what: "vm OpaqueRef:1".into(), why: "the record is not a struct".into() },
        );
        assert_eq!(Adapter::class(&shape), Class::Transport);
        assert!(shape.to_string().contains("the record is not a struct"), "{shape}");
    }
}
