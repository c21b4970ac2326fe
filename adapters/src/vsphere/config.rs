//! Configuration of one vSphere endpoint (vCenter or a standalone ESXi host): where, who, how the
//! password is read, TLS, timeouts, paging and the topology refresh interval.
//!
//! ```toml
//! url = "https://vc-east.example/sdk"
//! user = "netfold@vsphere.local"
//! password = { password_env = "NETFOLD_VC_EAST_PASSWORD" }
//! tls = { ca_file = "/etc/netfold/vc-east-ca.pem" }
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::error::{Error, Result};
use crate::common::{SecretSource, TlsOptions};

/// One vSphere endpoint. Unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SDK URL, `https://HOST/sdk` (a URL without a path gets `/sdk`).
    pub url: String,
    pub user: String,
    /// Where the password comes from: `{ password_env = "VAR" }` or `{ password_file = "PATH" }`.
    pub password: SecretSource,
    #[serde(default)]
    pub tls: TlsOptions,
    /// Timeout of every HTTP request, connect included.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `maxWaitSeconds` of each `WaitForUpdatesEx`; must stay below the request timeout.
    #[serde(default = "defaults::wait_max_seconds")]
    pub wait_max_seconds: u32,
    /// `maxObjects` per `RetrievePropertiesEx` page and `maxObjectUpdates` per update set.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// How often `QueryNetworkHint` (CDP/LLDP) is re-read per host.
    #[serde(default = "defaults::topology_refresh_ms")]
    pub topology_refresh_ms: u64,
    /// First reconnect delay; doubles up to `backoff_max_ms`, with jitter.
    #[serde(default = "defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Largest response body accepted. Replies are paged (`page_size` objects per
    /// `RetrievePropertiesEx` page and per update set), so the default (64 MiB) holds a page of
    /// 500 objects at up to ~130 KiB of SOAP each (a VM's device list is the largest property).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
}

mod defaults {
    pub fn request_timeout_ms() -> u64 {
        60_000
    }
    pub fn wait_max_seconds() -> u32 {
        30
    }
    pub fn page_size() -> u32 {
        500
    }
    pub fn topology_refresh_ms() -> u64 {
        300_000
    }
    pub fn backoff_initial_ms() -> u64 {
        1_000
    }
    pub fn backoff_max_ms() -> u64 {
        60_000
    }
    pub fn max_body_bytes() -> usize {
        64 << 20
    }
}

impl Config {
    /// A config with every default, for code (the simulator's tests, the demo).
    pub fn new(url: impl Into<String>, user: impl Into<String>, password: SecretSource) -> Self {
        Self {
            url: url.into(),
            user: user.into(),
            password,
            tls: TlsOptions::default(),
            request_timeout_ms: defaults::request_timeout_ms(),
            wait_max_seconds: defaults::wait_max_seconds(),
            page_size: defaults::page_size(),
            topology_refresh_ms: defaults::topology_refresh_ms(),
            backoff_initial_ms: defaults::backoff_initial_ms(),
            backoff_max_ms: defaults::backoff_max_ms(),
            max_body_bytes: defaults::max_body_bytes(),
        }
    }

    /// Checks the values make sense together; says which does not.
    pub fn validate(&self) -> Result<()> {
        crate::common::url::parse_endpoint(&self.sdk_url(), true).map_err(|e| Error::Config(format!("url {e}")))?;
        if self.user.is_empty() {
            return Err(Error::Config("user is empty".into()));
        }
        if self.wait_max_seconds == 0 || u64::from(self.wait_max_seconds) * 1000 >= self.request_timeout_ms {
            return Err(Error::Config(format!(
                "wait_max_seconds ({}) must be at least 1 and below request_timeout_ms ({} ms)",
                self.wait_max_seconds, self.request_timeout_ms
            )));
        }
        if self.max_body_bytes < 4096 {
            return Err(Error::Config("max_body_bytes must be at least 4096".into()));
        }
        if self.page_size == 0 {
            return Err(Error::Config("page_size must be at least 1".into()));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return Err(Error::Config("backoff_initial_ms must be at least 1 and not above backoff_max_ms".into()));
        }
        if self.topology_refresh_ms == 0 {
            return Err(Error::Config("topology_refresh_ms must be at least 1".into()));
        }
        Ok(())
    }

    /// The SDK endpoint URL (`…/sdk`): a URL without a path gets `/sdk`. Text that is not a URL
    /// is returned as given, for [`Config::validate`] to refuse.
    pub fn sdk_url(&self) -> String {
        match crate::common::url::Url::parse(self.url.trim()) {
            Ok(mut u) => {
                if u.path().trim_end_matches('/').is_empty() {
                    u.set_path("/sdk");
                }
                u.as_str().trim_end_matches('/').to_string()
            }
            Err(_) => self.url.clone(),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn topology_refresh(&self) -> Duration {
        Duration::from_millis(self.topology_refresh_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_toml_with_defaults() {
        let c: Config = toml_like(r#"{"url":"https://vc.lab","user":"u","password":{"password_env":"VC_PW"}}"#);
        assert_eq!(c.sdk_url(), "https://vc.lab/sdk");
        for (given, sdk) in [
            ("https://[::1]", "https://[::1]/sdk"),
            ("https://vc.lab:8443/", "https://vc.lab:8443/sdk"),
            ("http://127.0.0.1:4000/custom/sdk", "http://127.0.0.1:4000/custom/sdk"),
        ] {
            assert_eq!(Config::new(given, "u", SecretSource::env("X")).sdk_url(), sdk);
        }
        assert_eq!(c.page_size, 500);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<Config, _> =
            serde_json::from_str(r#"{"url":"https://vc","user":"u","password":{"password_env":"X"},"pasword":"x"}"#);
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn wait_must_stay_below_timeout() {
        let mut c = Config::new("https://vc/sdk", "u", SecretSource::env("X"));
        c.request_timeout_ms = 2_000;
        c.wait_max_seconds = 2;
        assert!(c.validate().unwrap_err().to_string().contains("wait_max_seconds"));
    }

    fn toml_like(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }
}
