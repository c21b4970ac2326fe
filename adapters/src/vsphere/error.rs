//! The one error type of the vSphere adapter: codec, transport, SOAP faults, configuration and
//! simulator control. Each variant says whether retrying can help ([`Error::is_retryable`]).

use crate::common::{HttpError, SecretError};

/// Anything that can go wrong talking to vCenter (or in the simulator's control API).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The XML is not well formed or not a SOAP envelope. Not retryable as such (the peer is
    /// broken), but the run loop treats it as a lost session and reconnects.
    #[error("malformed SOAP response ({what}): {reason}")]
    Malformed { what: String, reason: String },
    /// A well-formed response that lacks what the call must return.
    #[error("unexpected SOAP response to {call}: {reason}")]
    Unexpected { call: String, reason: String },
    /// The response is not XML (`Content-Type` is not `text/xml`), e.g. an HTML error page.
    #[error("response from {url} has content type `{content_type}`, expected text/xml (HTTP status {status})")]
    ContentType { url: String, content_type: String, status: u16 },
    /// An HTTP status that is neither 200 nor a SOAP fault (500). Retryable.
    #[error("HTTP status {status} from {url}")]
    Status { url: String, status: u16 },
    /// Transport failure (timeout, refused, TLS, body too large). Retryable except `TooLarge`.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// `InvalidLogin`: the user name or password is wrong. Fatal: never retried in a loop.
    #[error("vCenter {url} refused the login of user `{user}`: incorrect user name or password")]
    InvalidLogin { url: String, user: String },
    /// `NotAuthenticated`: the session is gone (expired, dropped server-side). Log in again.
    #[error("vCenter session is not authenticated (expired or dropped): {message}")]
    NotAuthenticated { message: String },
    /// Any other SOAP fault, with the fault type from `detail` when present.
    #[error("SOAP fault {fault_type} from {call}: {message}")]
    Fault { call: String, fault_type: String, message: String },
    /// The configuration is invalid. Fatal.
    #[error("invalid vSphere configuration: {0}")]
    Config(String),
    /// The password could not be read. Fatal.
    #[error("vSphere password: {0}")]
    Secret(#[from] SecretError),
}

impl Error {
    /// Whether the run loop should reconnect and try again (with backoff).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http(e) => e.is_retryable(),
            Error::Malformed { .. }
            | Error::Unexpected { .. }
            | Error::ContentType { .. }
            | Error::Status { .. }
            | Error::NotAuthenticated { .. }
            | Error::Fault { .. } => true,
            Error::InvalidLogin { .. } | Error::Config(_) | Error::Secret(_) => false,
        }
    }

    /// The message with every underlying cause (`…: …: invalid peer certificate: UnknownIssuer`),
    /// for operators: transport errors keep their real cause several sources deep.
    pub fn chain(&self) -> String {
        crate::driver::chain(self)
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Malformed { what: what.into(), reason: reason.to_string() }
    }

    pub(crate) fn unexpected(call: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unexpected { call: call.into(), reason: reason.into() }
    }
}

/// `Result` with the vSphere [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
