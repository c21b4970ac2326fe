//! The XenAPI adapter's configuration (one TOML table per pool), validated before use.

use std::time::Duration;

use serde::Deserialize;

use crate::common::{SecretSource, Timeouts, TlsOptions};
use crate::driver::Timing;

use super::error::{Error, Result};

/// One XenServer / XCP-ng pool.
///
/// ```toml
/// url = "https://xen217.lab"
/// user = "root"
/// password = { password_env = "XEN217_PASSWORD" }
/// tls = { ca_file = "/etc/netfold/xen-ca.pem" }
/// connect_timeout_ms = 5000
/// liveness_secs = 15
/// event_timeout_secs = 10
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The pool master (or any member: `HOST_IS_SLAVE` is followed), `http(s)://host[:port]`.
    pub url: String,
    pub user: String,
    pub password: SecretSource,
    #[serde(default)]
    pub tls: TlsOptions,
    /// How long a TCP + TLS connect may take (milliseconds).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Liveness: the longest xapi may send nothing while a reply is awaited; a hung pool is
    /// lost within it. Must exceed `event_timeout_secs` by at least 2 s.
    #[serde(default = "default_liveness_secs")]
    pub liveness_secs: u64,
    /// The longest one whole call may take (milliseconds; `get_all_records` of a big pool
    /// streams for a while). `event.from` gets `event_timeout_secs` on top.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// The `timeout` argument of `event.from` (seconds): how long xapi holds a poll open when
    /// nothing changes.
    #[serde(default = "default_event_timeout_secs")]
    pub event_timeout_secs: f64,
    /// Largest response accepted (bytes). `get_all_records` is not paged, so `VM.get_all_records`
    /// of the whole pool is the largest reply: the default (256 MiB) holds the 50,000 VMs
    /// netfold targets at about 5 KiB per record as xapi encodes it.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// First reconnect delay (milliseconds); doubles per failure up to `backoff_max_ms` (while
    /// lost, attempts are at most a tenth of the grace period apart).
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Between attempts after an error retrying soon cannot fix (wrong password, a reply over
    /// `max_body_bytes`), seconds.
    #[serde(default = "default_fatal_retry_secs")]
    pub fatal_retry_secs: u64,
    /// Between full re-reads of a live session, seconds.
    #[serde(default = "default_resync_secs")]
    pub resync_secs: u64,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_liveness_secs() -> u64 {
    15
}
fn default_call_timeout_ms() -> u64 {
    300_000
}
fn default_event_timeout_secs() -> f64 {
    10.0
}
fn default_max_body_bytes() -> usize {
    256 << 20
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_fatal_retry_secs() -> u64 {
    300
}
fn default_resync_secs() -> u64 {
    600
}

impl Config {
    /// A config with defaults for everything but the endpoint and credentials.
    pub fn new(url: impl Into<String>, user: impl Into<String>, password: SecretSource) -> Self {
        Self {
            url: url.into(),
            user: user.into(),
            password,
            tls: TlsOptions::default(),
            connect_timeout_ms: default_connect_timeout_ms(),
            liveness_secs: default_liveness_secs(),
            call_timeout_ms: default_call_timeout_ms(),
            event_timeout_secs: default_event_timeout_secs(),
            max_body_bytes: default_max_body_bytes(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            fatal_retry_secs: default_fatal_retry_secs(),
            resync_secs: default_resync_secs(),
        }
    }

    /// The HTTP client's timeouts (`request`: one call other than `event.from`).
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            liveness: Duration::from_secs(self.liveness_secs),
            request: Duration::from_millis(self.call_timeout_ms),
        }
    }

    /// The session driver's schedule, for a hypervisor with this grace period.
    pub fn timing(&self, grace: Duration) -> Timing {
        Timing::from_knobs(
            self.backoff_initial_ms,
            self.backoff_max_ms,
            self.fatal_retry_secs,
            self.resync_secs,
            self.connect_timeout_ms,
            grace,
        )
    }

    /// How long the engine waits for a last attempt before expiry.
    pub fn last_attempt_window(&self) -> Duration {
        Timing::last_attempt_window(&self.timeouts())
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        crate::common::url::parse_endpoint(&self.url, true).map_err(|e| Error::Config(format!("url {e}")))?;
        if self.user.is_empty() {
            return Err(Error::Config("user is empty".into()));
        }
        if self.call_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(Error::Config("call_timeout_ms and connect_timeout_ms must be > 0".into()));
        }
        if !(1..=3600).contains(&self.liveness_secs) {
            return Err(Error::Config(format!("liveness_secs {} must be in 1..=3600", self.liveness_secs)));
        }
        if !(self.event_timeout_secs.is_finite()
            && self.event_timeout_secs > 0.0
            && self.event_timeout_secs + 2.0 <= self.liveness_secs as f64)
        {
            return Err(Error::Config(format!(
                "event_timeout_secs {} must be above 0 and at least 2 s below liveness_secs ({})",
                self.event_timeout_secs, self.liveness_secs
            )));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return Err(Error::Config("backoff_initial_ms must be > 0 and <= backoff_max_ms".into()));
        }
        if self.fatal_retry_secs == 0 || self.resync_secs == 0 {
            return Err(Error::Config("fatal_retry_secs and resync_secs must be at least 1".into()));
        }
        if self.max_body_bytes < 4096 {
            return Err(Error::Config("max_body_bytes must be at least 4096".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_defaults_parses_and_unknown_keys_are_refused() {
        const MINIMAL: &str = "url = \"https://x\"\nuser = \"root\"\npassword = { password_env = \"P\" }\n";
        let c: Config = toml::from_str(MINIMAL).unwrap();
        assert_eq!(c.call_timeout_ms, 300_000);
        assert!(c.timeouts().liveness > Duration::from_secs_f64(c.event_timeout_secs));
        c.validate().unwrap();
        let err = toml::from_str::<Config>(&format!("{MINIMAL}pasword = 1\n")).unwrap_err().to_string();
        assert!(err.contains("unknown field `pasword`"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = Config::new("ftp://x", "root", SecretSource::env("P"));
        assert!(c.validate().unwrap_err().to_string().contains("scheme `ftp`"));
        c.url = "https://root:pw@x".into();
        assert!(!c.validate().unwrap_err().to_string().contains("pw"));
        c.url = "http://x".into();
        c.event_timeout_secs = 0.0;
        assert!(c.validate().unwrap_err().to_string().contains("event_timeout_secs"));
    }
}
