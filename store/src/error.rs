//! The store's errors. Each names what failed and where (a sequence number when one is known).

use crate::Seq;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed (IO, sled corruption). Retryable only if the cause is transient
    /// (disk full, IO error); corruption is not.
    #[error("log database error while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: sled::Error,
    },
    /// Another process holds the database (sled allows one at a time). Retryable once that
    /// process has stopped.
    #[error("the database {} is in use by another process (a running netfold agent?)", path.display())]
    InUse { path: std::path::PathBuf },
    /// A record's payload does not decode. Not retryable: the stored bytes are bad.
    #[error("record {seq} does not decode: {reason}")]
    Decode { seq: Seq, reason: String },
    /// A record was written in a storage format this build does not read. Not retryable.
    #[error("record {seq} has storage format {found}, this build reads format {expected}")]
    Format { seq: Seq, found: u8, expected: u8 },
    /// A record's checksum does not match its bytes: it was damaged on disk. Not retryable.
    #[error("record {seq} is corrupt: its checksum does not match its bytes")]
    Corrupt { seq: Seq },
    /// A record is shorter than its header. Not retryable.
    #[error("record {seq} is truncated: {len} bytes, the header alone needs {need}")]
    Truncated { seq: Seq, len: usize, need: usize },
    /// A record's `prev` is not the hash of the record before it: the log was altered. Not
    /// retryable.
    #[error("record {seq} breaks the hash chain: its prev does not match record {}", seq - 1)]
    Chain { seq: Seq },
    /// A sequence number at or below the head has no record (a gap). Not retryable.
    #[error("record {seq} is missing (the log head is {head})")]
    Missing { seq: Seq, head: Seq },
    /// A key in the log tree is not an 8-byte sequence number. Not retryable.
    #[error("the log holds a key that is not a sequence number after record {after}")]
    BadKey { after: Seq },
    /// A record could not be encoded for appending; nothing was written. Not retryable.
    #[error("record {index} of the batch cannot be encoded: {reason}")]
    Encode { index: usize, reason: String },
    /// The log's writer has stopped (the log is shutting down or a previous write failed
    /// fatally). Not retryable on this handle: reopen the log.
    #[error("the log is closed: {0}")]
    Closed(String),
    /// A stored snapshot or checkpoint is malformed. Not retryable.
    #[error("{what} is malformed: {reason}")]
    Meta { what: String, reason: String },
}

impl Error {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sled::Error) -> Error {
        move |source| Error::Db { context, source }
    }
}
