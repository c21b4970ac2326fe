//! Replay's errors: each says what could not be read or checked, and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory holds no netfold database. Not retryable.
    #[error("{0} is not a netfold data directory (no db/ inside): check --data-dir")]
    NoData(PathBuf),
    /// The database could not be opened (in use by a running agent, damaged, unreadable).
    /// Retryable once the other process has stopped.
    #[error("cannot open the netfold database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: store::Error,
    },
    /// The log has a bad record; the store error names its sequence number. Not retryable.
    #[error("{0}")]
    Log(#[source] store::Error),
    /// A snapshot does not decode. Not retryable (delete it: the log alone is the truth).
    #[error("snapshot at record {seq} does not decode: {reason}")]
    Snapshot { seq: u64, reason: String },
    /// Snapshot + tail and a full fold disagree: the projector is not deterministic or the
    /// snapshot was altered. Not retryable.
    #[error("replay is not deterministic: the snapshot at record {snapshot} plus the tail differs from a full fold")]
    NotDeterministic { snapshot: u64 },
}
