//! What every adapter shares: secrets that are never logged, TLS options, an HTTP client with
//! timeouts and a response size limit.

mod http;
mod secret;
mod tls;

pub use http::{read_limited, HttpClient, HttpError, Timeouts};
pub use secret::{Secret, SecretError, SecretSource, INLINE_PASSWORD_REFUSED};
pub use tls::TlsOptions;
