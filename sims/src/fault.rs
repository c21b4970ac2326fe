//! What both simulators share: the faults a test can switch on to see how netfold handles a
//! peer that misbehaves while it stays reachable (the network faults — refused, hung, slow,
//! cut — are a TCP proxy's job, not the simulator's).

use serde::{Deserialize, Serialize};

/// A misbehaviour of the simulated hypervisor, until set back to [`Fault::None`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Full reads return no objects (XenAPI `*.get_all_records` → `{}`; vSphere
    /// `RetrievePropertiesEx` → no `objects`, a new filter's first `WaitForUpdatesEx` → an
    /// update set without objects, and following it reports nothing), as a broken or
    /// half-started server does.
    Hollow,
    /// XenAPI only: one `VM.get_all_records` record is a string, not a struct.
    Garbage,
    /// Full-read replies are padded past [`OVERSIZE_BYTES`] (vSphere: `RetrieveProperties*`
    /// and a new filter's first `WaitForUpdatesEx`).
    Oversize,
    /// Every follow call fails: XenAPI `event.from` → `SESSION_INVALID`; vSphere
    /// `WaitForUpdatesEx` from a version (not a new filter's first) → a `SystemError` fault.
    FailFollow,
}

/// How large an [`Fault::Oversize`] reply is.
pub const OVERSIZE_BYTES: usize = 2 << 20;

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("`{s}` is not a fault; allowed: none, hollow, garbage, oversize, fail-follow"))
    }
}

/// Logins and logouts a simulator served (a storm shows here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub logins: u64,
    pub logouts: u64,
    /// Sessions open now.
    pub sessions: u64,
}
