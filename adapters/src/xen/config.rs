//! The XenAPI adapter's configuration (one TOML table per pool), validated before use.

use std::time::Duration;

use serde::Deserialize;

use crate::common::{SecretSource, TlsOptions};

use super::error::{Error, Result};

/// One XenServer / XCP-ng pool.
///
/// ```toml
/// url = "https://xen217.lab"
/// user = "root"
/// password = { password_env = "XEN217_PASSWORD" }
/// tls = { ca_file = "/etc/netfold/xen-ca.pem" }
/// call_timeout_ms = 10000
/// event_timeout_secs = 30
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
    /// Timeout of every call except `event.from` (milliseconds).
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// The `timeout` argument of `event.from` (seconds): how long xapi holds a poll open when
    /// nothing changes. The HTTP timeout of that call is this plus `call_timeout_ms`.
    #[serde(default = "default_event_timeout_secs")]
    pub event_timeout_secs: f64,
    /// Largest response accepted (bytes). `get_all_records` is not paged, so `VM.get_all_records`
    /// of the whole pool is the largest reply: the default (256 MiB) holds the 50,000 VMs
    /// netfold targets at about 5 KiB per record as xapi encodes it.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// First reconnect delay (milliseconds); doubles per failure up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

fn default_call_timeout_ms() -> u64 {
    10_000
}
fn default_event_timeout_secs() -> f64 {
    30.0
}
fn default_max_body_bytes() -> usize {
    256 << 20
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

impl Config {
    /// A config with defaults for everything but the endpoint and credentials.
    pub fn new(url: impl Into<String>, user: impl Into<String>, password: SecretSource) -> Self {
        Self {
            url: url.into(),
            user: user.into(),
            password,
            tls: TlsOptions::default(),
            call_timeout_ms: default_call_timeout_ms(),
            event_timeout_secs: default_event_timeout_secs(),
            max_body_bytes: default_max_body_bytes(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// The HTTP timeout of an `event.from` call: always longer than the poll itself.
    pub fn event_http_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.event_timeout_secs) + self.call_timeout()
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        crate::common::url::parse_endpoint(&self.url, true).map_err(|e| Error::Config(format!("url {e}")))?;
        if self.user.is_empty() {
            return Err(Error::Config("user is empty".into()));
        }
        if self.call_timeout_ms == 0 {
            return Err(Error::Config("call_timeout_ms must be > 0".into()));
        }
        if !(self.event_timeout_secs.is_finite() && self.event_timeout_secs > 0.0 && self.event_timeout_secs <= 3600.0)
        {
            return Err(Error::Config(format!("event_timeout_secs {} must be in (0, 3600]", self.event_timeout_secs)));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(Error::Config("reconnect_min_ms must be > 0 and <= reconnect_max_ms".into()));
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
        let c: Config = toml_like(r#"{"url":"https://x","user":"root","password":{"password_env":"P"}}"#).unwrap();
        assert_eq!(c.call_timeout_ms, 10_000);
        assert!(c.event_http_timeout() > Duration::from_secs(30));
        c.validate().unwrap();
        assert!(toml_like(r#"{"url":"https://x","user":"root","password":{"password_env":"P"},"pasword":1}"#).is_err());
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

    fn toml_like(json: &str) -> serde_json::Result<Config> {
        serde_json::from_str(json)
    }
}
