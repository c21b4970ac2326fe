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
use crate::common::{SecretSource, Timeouts, TlsOptions};
use crate::driver::Timing;

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
    /// How long a TCP + TLS connect may take.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Liveness: the longest vCenter may send nothing while netfold waits for a reply; a hung
    /// peer is lost within it. Must exceed `wait_max_seconds` (vCenter is silent that long
    /// when nothing changes).
    #[serde(default = "defaults::liveness_secs")]
    pub liveness_secs: u64,
    /// The longest one whole request may take (a large inventory page streams for a while).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `maxWaitSeconds` of each `WaitForUpdatesEx`; must stay below the liveness bound.
    #[serde(default = "defaults::wait_max_seconds")]
    pub wait_max_seconds: u32,
    /// `maxObjectUpdates` per update set (the inventory read is a new filter's first update
    /// sets) and `maxObjects` per `RetrievePropertiesEx` page (an object re-read whole).
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// How often `QueryNetworkHint` (CDP/LLDP) is re-read per host.
    #[serde(default = "defaults::topology_refresh_ms")]
    pub topology_refresh_ms: u64,
    /// First reconnect delay; doubles up to `backoff_max_ms`, with jitter (while lost, at most
    /// a tenth of the grace period apart).
    #[serde(default = "defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Between attempts after an error retrying soon cannot fix (wrong password, a reply over
    /// `max_body_bytes`).
    #[serde(default = "defaults::fatal_retry_secs")]
    pub fatal_retry_secs: u64,
    /// Between full re-reads of a live session (a missed update stream is repaired).
    #[serde(default = "defaults::resync_secs")]
    pub resync_secs: u64,
    /// Largest response body accepted; for `RetrievePropertiesEx` and `WaitForUpdatesEx`, which
    /// are read object by object as they arrive, the largest single object (and the largest
    /// remainder of the reply), so a server that ignores `page_size` (vcsim) is still read.
    /// The default (64 MiB) holds any object (a VM's device list, the largest property, stays
    /// far below 1 MiB) and a page of 500 objects at up to ~130 KiB of SOAP each.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn liveness_secs() -> u64 {
        15
    }
    pub fn request_timeout_ms() -> u64 {
        300_000
    }
    pub fn wait_max_seconds() -> u32 {
        10
    }
    pub fn fatal_retry_secs() -> u64 {
        300
    }
    pub fn resync_secs() -> u64 {
        600
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
            connect_timeout_ms: defaults::connect_timeout_ms(),
            liveness_secs: defaults::liveness_secs(),
            request_timeout_ms: defaults::request_timeout_ms(),
            wait_max_seconds: defaults::wait_max_seconds(),
            page_size: defaults::page_size(),
            topology_refresh_ms: defaults::topology_refresh_ms(),
            backoff_initial_ms: defaults::backoff_initial_ms(),
            backoff_max_ms: defaults::backoff_max_ms(),
            fatal_retry_secs: defaults::fatal_retry_secs(),
            resync_secs: defaults::resync_secs(),
            max_body_bytes: defaults::max_body_bytes(),
        }
    }

    /// Checks the values make sense together; says which does not.
    pub fn validate(&self) -> Result<()> {
        crate::common::url::parse_endpoint(&self.sdk_url(), true).map_err(|e| Error::Config(format!("url {e}")))?;
        if self.user.is_empty() {
            return Err(Error::Config("user is empty".into()));
        }
        if !(1..=3600).contains(&self.liveness_secs) {
            return Err(Error::Config(format!("liveness_secs ({}) must be in 1..=3600", self.liveness_secs)));
        }
        if self.wait_max_seconds == 0 || u64::from(self.wait_max_seconds) + 2 > self.liveness_secs {
            return Err(Error::Config(format!(
                "wait_max_seconds ({}) must be at least 1 and at least 2 s below liveness_secs ({})",
                self.wait_max_seconds, self.liveness_secs
            )));
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms < self.liveness_secs * 1000 {
            return Err(Error::Config(format!(
                "connect_timeout_ms ({}) must be at least 1 and request_timeout_ms ({}) at least liveness_secs ({}) × 1000",
                self.connect_timeout_ms, self.request_timeout_ms, self.liveness_secs
            )));
        }
        if self.fatal_retry_secs == 0 || self.resync_secs == 0 {
            return Err(Error::Config("fatal_retry_secs and resync_secs must be at least 1".into()));
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

    /// The HTTP client's timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            liveness: Duration::from_secs(self.liveness_secs),
            request: Duration::from_millis(self.request_timeout_ms),
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

    pub fn topology_refresh(&self) -> Duration {
        Duration::from_millis(self.topology_refresh_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_toml_with_defaults() {
        let c: Config =
            toml::from_str("url = \"https://vc.lab\"\nuser = \"u\"\npassword = { password_env = \"VC_PW\" }\n")
                .unwrap();
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
        let r = toml::from_str::<Config>(
            "url = \"https://vc\"\nuser = \"u\"\npassword = { password_env = \"X\" }\npasword = \"x\"\n",
        );
        assert!(r.unwrap_err().to_string().contains("unknown field `pasword`"));
    }

    #[test]
    fn wait_must_stay_below_timeout() {
        let mut c = Config::new("https://vc/sdk", "u", SecretSource::env("X"));
        c.liveness_secs = 3;
        c.wait_max_seconds = 2;
        assert!(c.validate().unwrap_err().to_string().contains("wait_max_seconds"));
        c.wait_max_seconds = 1;
        c.validate().unwrap();
    }
}
