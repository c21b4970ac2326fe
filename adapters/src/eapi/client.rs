//! The eAPI transport: `POST /command-api` with basic auth through the shared
//! [`crate::common::HttpClient`] (timeouts, TLS options, response size limit). The only module of
//! the eAPI adapter that does IO.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::{read_limited, ExposeSecret as _, HttpClient, SecretString};

use super::{codec, Error, Result};

/// A connection to one switch's eAPI endpoint.
pub struct Client {
    http: HttpClient,
    url: String,
    username: String,
    password: SecretString,
    next_id: AtomicU64,
}

impl Client {
    /// `base` is the switch's address (`https://tor1`, `http://127.0.0.1:8080`); the path
    /// `/command-api` is appended.
    pub fn new(http: HttpClient, base: &str, username: String, password: SecretString) -> Self {
        let url = format!("{}/command-api", base.trim_end_matches('/'));
        Self { http, url, username, password, next_id: AtomicU64::new(1) }
    }

    /// Runs `cmds` in order (eAPI stops at the first failure) and returns one result per command.
    pub async fn run_cmds(&self, cmds: &[String]) -> Result<Vec<serde_json::Value>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let resp = self
            .http
            .client
            .post(&self.url)
            .basic_auth(&self.username, Some(self.password.expose_secret()))
            .json(&codec::run_cmds(&id, cmds))
            .send()
            .await
            .map_err(|source| Error::Http(crate::common::HttpError::Request { url: self.url.clone(), source }))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::Auth { url: self.url.clone(), status: status.as_u16() });
        }
        if !status.is_success() {
            return Err(Error::Status { url: self.url.clone(), status: status.as_u16() });
        }
        let body = read_limited(resp, self.http.max_body).await.map_err(Error::Http)?;
        codec::parse_reply(&body, cmds)
    }
}
