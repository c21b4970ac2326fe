//! Where netfold's records live in a data directory: the database path and the names of the
//! logs and tables in it. The store owns these names (it writes them); the agent, the audit
//! commands and replay read them from here, so there is one place a layout change is made.

use std::path::{Path, PathBuf};

/// The sled database inside a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// The log of hypervisor events (the truth the projector folds).
pub const EVENTS_LOG: &str = "events";
/// The log of what netfold did to switches (intents, outcomes, drift repairs).
pub const SWITCH_AUDIT_LOG: &str = "switch-audit";
/// The table holding the policy the agent folds with.
pub const META_TABLE: &str = "meta";
/// The key of the policy in [`META_TABLE`].
pub const POLICY_KEY: &[u8] = b"policy";
/// The reconciler's ownership ledger: the VLAN memberships netfold added and may remove.
pub const LEDGER_TABLE: &str = "ledger";
