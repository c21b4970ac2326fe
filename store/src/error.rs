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
    /// A file operation outside sled failed (syncing sled's files, the head anchor, copying
    /// the database for reading). Retryable if the cause is transient (disk full, IO error).
    #[error("{context} ({}): {source}", path.display())]
    Io {
        context: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file system holding the database has too little free space for a write: refused
    /// before sled was asked to write (ADR 0001). Retryable once space is freed.
    #[error("no space to write to the database in {}: {free} bytes free, {need} needed", path.display())]
    NoSpace { path: std::path::PathBuf, free: u64, need: u64 },
    /// The log has lost records that were acknowledged (its head anchor is ahead of it, or the
    /// anchored record was replaced). Not retryable: `netfold run --accept-loss` records the
    /// loss and continues.
    #[error("{0}")]
    Lost(Loss),
    /// The database is being reopened after an IO error, or cannot be yet (still no space).
    /// Retryable.
    #[error("the log database is unavailable: {0}")]
    Unavailable(String),
    /// The log was opened read-only (on a private copy); appends are refused. Not retryable.
    #[error("the database holds no log `{0}`: nothing was ever appended to it")]
    NoLog(String),
    #[error("the log `{0}` was opened read-only: appending is refused")]
    ReadOnly(String),
    /// A record could not be read from the database (sled failed to load it: a damaged or
    /// missing file). Not retryable.
    #[error("the records after seq {after} cannot be read: {source}")]
    Unreadable {
        after: Seq,
        #[source]
        source: sled::Error,
    },
    /// PostgreSQL failed (ADR 0008). Retryable when the connection failed or the server said
    /// the operation may succeed later (SQLSTATE classes 08, 40, 53, 57); an error during a
    /// commit leaves the outcome unknown (the records may be in the log: see the ADR).
    /// The text carries the server's message (a `tokio_postgres::Error` alone says only "db
    /// error"), so it is not also given as the error's source.
    #[error("PostgreSQL error while {context}: {}", pg_text(error))]
    Pg { context: &'static str, error: tokio_postgres::Error },
    /// The same PostgreSQL failure as reported to the other appenders of a failed group
    /// commit. Retryable as the original was.
    #[error("PostgreSQL error while {context}: {text}")]
    PgShared { context: &'static str, text: String, retryable: bool },
    /// The PostgreSQL schema could not be brought up to date (store/migrations). Not retryable
    /// without an operator: the text says which migration failed.
    #[error("cannot migrate the PostgreSQL schema: {0}")]
    Migrate(String),
    /// An append or a table write made under a lease that is no longer held with that token
    /// (taken over by another holder, expired or released): nothing was written. Not retryable
    /// with this token: the holder must take the lease again (a new token) first (ADR 0009).
    #[error("the lease `{lease}` is no longer held with token {token}: the write was refused")]
    Fenced { lease: String, token: u64 },
    /// A copy's target already holds data. Not retryable: copy into an empty database.
    #[error("{0}")]
    NotEmpty(String),
    /// The directory holds no sled database. Not retryable.
    #[error("{} holds no netfold database (no `db` file)", path.display())]
    NotAStore { path: std::path::PathBuf },
}

/// How a log lost acknowledged records, found against its head anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The log ends before the anchored head: records `found + 1 ..= acknowledged` are gone.
    Truncated { log: String, found: Seq, acknowledged: Seq },
    /// The log reaches the anchored head but its record there is not the acknowledged one:
    /// the log was rolled back and written again.
    Rewritten { log: String, seq: Seq },
}

impl Loss {
    /// The last acknowledged sequence number.
    pub fn acknowledged(&self) -> Seq {
        match self {
            Loss::Truncated { acknowledged, .. } => *acknowledged,
            Loss::Rewritten { seq, .. } => *seq,
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Truncated { log, found, acknowledged } => write!(
                f,
                "the log `{log}` ends at seq {found} but seq {acknowledged} was acknowledged: records {}..={acknowledged} are lost",
                found + 1
            ),
            Loss::Rewritten { log, seq } => write!(
                f,
                "record {seq} of the log `{log}` is not the record acknowledged as seq {seq}: the log was rolled back and written again"
            ),
        }
    }
}

impl Error {
    /// Whether retrying the same operation later can succeed (disk full, IO error, a database
    /// being reopened or held by a process that may stop).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Db { source: sled::Error::Io(_), .. }
                | Error::Io { .. }
                | Error::NoSpace { .. }
                | Error::InUse { .. }
                | Error::Unavailable(_)
                | Error::PgShared { retryable: true, .. }
        ) || matches!(self, Error::Pg { error, .. } if pg_retryable(error))
    }

    pub(crate) fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |error| Error::Pg { context, error }
    }

    /// The same failure again, for the other requests of a failed group commit (errors are not
    /// `Clone`); it stays retryable if the original was.
    pub(crate) fn again(&self) -> Error {
        match self {
            Error::Pg { context, error } => {
                Error::PgShared { context, text: pg_text(error), retryable: pg_retryable(error) }
            }
            Error::PgShared { context, text, retryable } => {
                Error::PgShared { context, text: text.clone(), retryable: *retryable }
            }
            Error::Unavailable(text) => Error::Unavailable(text.clone()),
            Error::Meta { what, reason } => Error::Meta { what: what.clone(), reason: reason.clone() },
            Error::Fenced { lease, token } => Error::Fenced { lease: lease.clone(), token: *token },
            other => Error::Unavailable(other.to_string()),
        }
    }

    pub(crate) fn db(context: &'static str) -> impl FnOnce(sled::Error) -> Error {
        move |source| Error::Db { context, source }
    }
}

/// What PostgreSQL said: the server's severity, SQLSTATE, message, detail and hint; or the
/// client's error with its cause (a refused connection, a closed socket).
fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            for (what, more) in [("detail", db.detail()), ("hint", db.hint())] {
                if let Some(more) = more {
                    text.push_str(&format!(" ({what}: {more})"));
                }
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Whether a PostgreSQL error may go away on its own: the connection failed, or the server's
/// SQLSTATE is of class 08 (connection), 40 (transaction rollback: serialization, deadlock),
/// 53 (insufficient resources) or 57 (operator intervention: shutting down, cancelled).
fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => e.is_closed() || e.as_db_error().is_none(),
        Some(code) => ["08", "40", "53", "57"].iter().any(|class| code.code().starts_with(class)),
    }
}
