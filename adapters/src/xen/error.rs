//! The XenAPI adapter's one error type, and what each failure means for the run loop.
//!
//! [`Error::recovery`] is the pure policy the run loop follows: re-login, follow the master,
//! re-read everything, reconnect after a backoff, or stop.

use crate::common::{HttpError, SecretError};

use super::codec::CodecError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A XenAPI adapter failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (bad URL, timeouts out of order). Not retryable.
    #[error("invalid XenAPI configuration: {0}")]
    Config(String),
    /// The password could not be read. Not retryable.
    #[error("cannot read the XenAPI password: {0}")]
    Secret(#[from] SecretError),
    /// Transport failure (connect, TLS, timeout, body limit). Retryable except size/CA errors.
    #[error("XenAPI call {method} to {url}: {source}")]
    Http {
        method: String,
        url: String,
        #[source]
        source: HttpError,
    },
    /// The server answered with an HTTP error status. Retryable.
    #[error("XenAPI call {method} to {url}: HTTP {status}")]
    Status { method: String, url: String, status: u16 },
    /// The body was not xapi's XML-RPC. Retryable as a reconnect (a proxy may have answered).
    #[error("XenAPI call {method} to {url}: bad response: {source}")]
    Codec {
        method: String,
        url: String,
        #[source]
        source: CodecError,
    },
    /// xapi refused the user name or password. Not retried automatically: fix the credentials.
    #[error("XenAPI login to {url} as `{user}` failed: SESSION_AUTHENTICATION_FAILED (check user and password)")]
    AuthenticationFailed { url: String, user: String },
    /// xapi returned `Status: Failure`; `code` is the XenAPI error code. Retryability depends on
    /// the code (see [`Error::recovery`]).
    #[error("XenAPI call {method} failed: {code} {params:?}")]
    Api { method: String, code: String, params: Vec<String> },
    /// A result did not have the shape XenAPI documents (wrong type, missing member).
    #[error("XenAPI call {method}: unexpected result: {why}")]
    Shape { method: String, why: String },
    /// A `HOST_IS_SLAVE` redirect leads outside the configured trust (another scheme, a host
    /// the pool does not list): not followed. Retried on the slow schedule.
    #[error("XenAPI redirect refused: pool member {from} answered HOST_IS_SLAVE: {refused}")]
    Redirect {
        from: String,
        #[source]
        refused: super::redirect::Error,
    },
    /// The observation receiver is gone: the adapter stops.
    #[error("the observation channel is closed")]
    ChannelClosed,
}

/// What the run loop does after an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Log in again at once and send a fresh inventory (`SESSION_INVALID`).
    Relogin,
    /// Reconnect to the pool master at this address (`HOST_IS_SLAVE`).
    FollowMaster(String),
    /// The event token is unusable: read everything again (`EVENT_FROM_TOKEN_PARSE_FAILURE`,
    /// `EVENTS_LOST`, `HANDLE_INVALID`).
    Reread,
    /// Transport trouble: report `Disconnected`, back off, reconnect.
    Reconnect,
    /// Stop and return the error (bad credentials or configuration).
    Stop,
}

impl Error {
    pub(crate) fn api(method: &str, desc: Vec<String>) -> Self {
        let mut it = desc.into_iter();
        let code = it.next().unwrap_or_else(|| "UNKNOWN_ERROR".to_string());
        // SESSION_INVALID names the session ref, a credential: it never reaches a log line.
        let params = if code == "SESSION_INVALID" { it.map(|_| "***".to_string()).collect() } else { it.collect() };
        Error::Api { method: method.to_string(), code, params }
    }

    /// The XenAPI error code, when xapi returned one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::AuthenticationFailed { .. } => Some("SESSION_AUTHENTICATION_FAILED"),
            _ => None,
        }
    }

    /// The run loop's policy for this error.
    pub fn recovery(&self) -> Recovery {
        match self {
            Error::Config(_)
            | Error::Secret(_)
            | Error::AuthenticationFailed { .. }
            | Error::Redirect { .. }
            | Error::ChannelClosed => Recovery::Stop,
            Error::Http { source, .. } if !source.is_retryable() => Recovery::Stop,
            Error::Http { .. } | Error::Status { .. } | Error::Codec { .. } | Error::Shape { .. } => {
                Recovery::Reconnect
            }
            Error::Api { code, params, .. } => match code.as_str() {
                "SESSION_INVALID" => Recovery::Relogin,
                "HOST_IS_SLAVE" => match params.first() {
                    Some(master) if !master.is_empty() => Recovery::FollowMaster(master.clone()),
                    _ => Recovery::Reconnect,
                },
                "EVENT_FROM_TOKEN_PARSE_FAILURE" | "EVENTS_LOST" | "HANDLE_INVALID" => Recovery::Reread,
                "SESSION_AUTHENTICATION_FAILED" => Recovery::Stop,
                _ => Recovery::Reconnect,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(desc: &[&str]) -> Error {
        Error::api("event.from", desc.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn each_xenapi_code_has_its_recovery() {
        assert_eq!(api(&["SESSION_INVALID", "OpaqueRef:1"]).recovery(), Recovery::Relogin);
        assert_eq!(api(&["HOST_IS_SLAVE", "10.0.0.1"]).recovery(), Recovery::FollowMaster("10.0.0.1".into()));
        assert_eq!(api(&["EVENT_FROM_TOKEN_PARSE_FAILURE", "x"]).recovery(), Recovery::Reread);
        assert_eq!(api(&["HANDLE_INVALID", "VM", "OpaqueRef:2"]).recovery(), Recovery::Reread);
        assert_eq!(api(&["SESSION_AUTHENTICATION_FAILED"]).recovery(), Recovery::Stop);
        assert_eq!(api(&["INTERNAL_ERROR", "boom"]).recovery(), Recovery::Reconnect);
        assert_eq!(api(&[]).code(), Some("UNKNOWN_ERROR"));
    }

    #[test]
    fn session_refs_never_appear_in_error_text() {
        let e = api(&["SESSION_INVALID", "OpaqueRef:secret-session"]);
        assert!(!e.to_string().contains("secret-session"), "{e}");
        assert!(e.to_string().contains("SESSION_INVALID"));
    }
}
