//! What every adapter shares: secrets that are never logged, TLS options, an HTTP client with
//! timeouts and a response size limit, and endpoint URLs parsed, checked and redacted.

mod http;
mod secret;
mod tls;
pub mod url;

pub use http::{read_limited, HttpClient, HttpError, Timeouts};
pub use secrecy::{ExposeSecret, SecretString};
pub use secret::{SecretError, SecretSource, INLINE_PASSWORD_REFUSED};
pub use tls::{Thumbprint, ThumbprintMismatch, TlsOptions};
