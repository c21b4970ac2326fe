//! TLS options shared by every HTTPS adapter: certificates are verified by default; a CA file
//! can be added; `insecure` turns verification off and is warned about at every connect.

use std::path::PathBuf;

use serde::Deserialize;

use super::http::HttpError;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// A PEM file of CA certificates trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Only for labs; logged as a warning at every connect.
    #[serde(default)]
    pub insecure: bool,
}

impl TlsOptions {
    /// Applies these options to a reqwest client builder. A `ca_file` that cannot be read, or
    /// holds no PEM certificate, is an error.
    pub fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, HttpError> {
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|source| HttpError::CaFile { path: path.clone(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| HttpError::CaFileParse { path: path.clone(), reason: e.to_string() })?;
            if certs.is_empty() {
                return Err(HttpError::CaFileParse {
                    path: path.clone(),
                    reason: "no `-----BEGIN CERTIFICATE-----` block".into(),
                });
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(b)
    }

    /// Logs the insecure-TLS warning when it applies; adapters call this at every connect.
    pub fn warn_if_insecure(&self, endpoint: &str) {
        if self.insecure {
            tracing::warn!(endpoint, "TLS certificate verification is disabled (insecure = true)");
        }
    }
}
