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
    /// The log lost acknowledged records: it is shorter than its head anchor says, or its
    /// anchored record was replaced. `first` is the first damaged record found in what is left
    /// (if any); `discarded` the blob files sled dropped when it opened. Not retryable.
    #[error("{}", lost_text(.loss, .first.as_deref(), .discarded))]
    Lost { loss: store::Loss, first: Option<String>, discarded: Vec<String> },
    /// Snapshot + tail and a full fold disagree: the projector is not deterministic or the
    /// snapshot was altered. Not retryable.
    #[error("replay is not deterministic: the snapshot at record {snapshot} plus the tail differs from a full fold")]
    NotDeterministic { snapshot: u64 },
}

fn lost_text(loss: &store::Loss, first: Option<&str>, discarded: &[String]) -> String {
    let mut out = String::new();
    if let Some(first) = first {
        out.push_str(first);
        out.push_str("; and ");
    }
    out.push_str(&loss.to_string());
    if !discarded.is_empty() {
        out.push_str(&format!(
            " (sled discarded blob file(s) {} of db/blobs when it opened: a damaged or missing blob, and those written after it)",
            discarded.join(", ")
        ));
    }
    out
}
