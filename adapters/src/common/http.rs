//! The one HTTP client every adapter uses: reqwest with a request timeout, TLS options and a
//! limit on response size (read in chunks, refused as soon as it is exceeded).

use std::path::PathBuf;
use std::time::Duration;

use super::TlsOptions;

/// An HTTP transport failure. All are retryable except the CA-file, thumbprint and size errors.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable PEM certificate: {reason}")]
    CaFileParse { path: PathBuf, reason: String },
    #[error("thumbprint `{text}` is refused: {reason}")]
    Thumbprint { text: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("response from {url} exceeds the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
}

impl HttpError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HttpError::Request { .. })
    }
}

/// The three bounds on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The longest the peer may send nothing while a reply is awaited or read (liveness: a hung
    /// peer fails within it); also the TCP keepalive idle time.
    pub liveness: Duration,
    /// The whole request.
    pub request: Duration,
}

impl Timeouts {
    /// One bound for everything (connect capped at 10 s): for peers with no long polls.
    pub fn flat(d: Duration) -> Self {
        Self { connect: d.min(Duration::from_secs(10)), liveness: d, request: d }
    }
}

/// A configured reqwest client plus the limits adapters enforce.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pub client: reqwest::Client,
    pub max_body: usize,
}

impl HttpClient {
    /// A client with these timeouts on every request and `max_body` bytes per response.
    pub fn new(tls: &TlsOptions, t: &Timeouts, max_body: usize) -> Result<Self, HttpError> {
        let b = reqwest::Client::builder()
            .timeout(t.request)
            .connect_timeout(t.connect)
            .read_timeout(t.liveness)
            .tcp_keepalive(t.liveness);
        let client = tls.apply(b)?.build().map_err(HttpError::Build)?;
        Ok(Self { client, max_body })
    }
}

/// Reads a response body, failing once it exceeds `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, HttpError> {
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(HttpError::TooLarge { url, limit });
    }
    // Sized once when the length is announced (within the limit), so a large reply is not
    // copied through doublings.
    let mut body = Vec::with_capacity(resp.content_length().map_or(0, |n| n as usize));
    while let Some(chunk) = resp.chunk().await.map_err(|source| HttpError::Request { url: url.clone(), source })? {
        if body.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge { url, limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
