//! TLS options shared by every HTTPS adapter: certificates are verified by default against the
//! bundled webpki roots and the system's (`rustls-native-certs`: the OS store, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` when set); a CA file can be added; a `thumbprint` pins one
//! certificate by its SHA-256 fingerprint instead (a standalone ESXi host or vcsim with a
//! self-signed certificate); `insecure` turns verification off and is warned about at every
//! connect.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
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
    /// Trust exactly the certificate with this SHA-256 fingerprint (`sha256:AB:CD:…`, as govc's
    /// `GOVC_TLS_KNOWN_HOSTS` and vSphere's `ThumbprintSHA256` show it), whatever its issuer or
    /// names; the handshake's signature is still verified against it. Excludes `ca_file` and
    /// `insecure`. Checked by [`TlsOptions::apply`], so a bad one is an error naming the entry.
    pub thumbprint: Option<String>,
}

impl TlsOptions {
    /// Applies these options to a reqwest client builder. A `ca_file` that cannot be read, or
    /// holds no PEM certificate, is an error.
    pub fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, HttpError> {
        if let Some(pinned) = self.pinned()? {
            return Ok(b.use_preconfigured_tls(pinned_config(pinned)));
        }
        for der in self.ca_certificates()? {
            let cert = reqwest::Certificate::from_der(&der).map_err(|e| self.ca_refused(e.to_string()))?;
            b = b.add_root_certificate(cert);
        }
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(b)
    }

    /// The certificates in `ca_file` (none without one): an error when it cannot be read, a
    /// block does not parse, or it holds no `CERTIFICATE` block.
    fn ca_certificates(&self) -> Result<Vec<CertificateDer<'static>>, HttpError> {
        use rustls::pki_types::pem::PemObject as _;
        let Some(path) = &self.ca_file else { return Ok(Vec::new()) };
        let pem = std::fs::read(path).map_err(|source| HttpError::CaFile { path: path.clone(), source })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.ca_refused(e.to_string()))?;
        if certs.is_empty() {
            return Err(self.ca_refused("no `-----BEGIN CERTIFICATE-----` block".into()));
        }
        Ok(certs)
    }

    fn ca_refused(&self, reason: String) -> HttpError {
        HttpError::CaFileParse { path: self.ca_file.clone().unwrap_or_default(), reason }
    }

    /// The pinned certificate's fingerprint, when `thumbprint` is set: an error when it is not
    /// `sha256:` and 32 hex bytes, or when `ca_file` or `insecure` is set beside it. Reads no file.
    pub fn pinned(&self) -> Result<Option<Thumbprint>, HttpError> {
        let Some(text) = &self.thumbprint else { return Ok(None) };
        let refuse = |reason: String| HttpError::Thumbprint { text: text.clone(), reason };
        let pinned = text.parse::<Thumbprint>().map_err(refuse)?;
        if self.ca_file.is_some() || self.insecure {
            let reason = "a pinned certificate is trusted by its fingerprint alone: remove `ca_file` and `insecure`";
            return Err(refuse(reason.into()));
        }
        Ok(Some(pinned))
    }

    /// These options as a rustls client configuration, for a connection that is not made by
    /// reqwest (the PostgreSQL store): the same trust — bundled webpki roots, the system's,
    /// `ca_file`'s — or the pinned certificate, or none with `insecure`; no ALPN. Errors as
    /// [`TlsOptions::apply`].
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, HttpError> {
        if let Some(pinned) = self.pinned()? {
            let mut c = pinned_config(pinned);
            c.alpn_protocols.clear();
            return Ok(c);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        if self.insecure {
            let verifier = Arc::new(Pinned { pinned: None, provider });
            return Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot read is skipped, as reqwest skips it.
            let _ = roots.add(cert);
        }
        for c in self.ca_certificates()? {
            roots.add(c).map_err(|e| self.ca_refused(e.to_string()))?;
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    /// Logs the insecure-TLS warning when it applies; adapters call this at every connect.
    pub fn warn_if_insecure(&self, endpoint: &str) {
        if self.insecure {
            tracing::warn!(endpoint, "TLS certificate verification is disabled (insecure = true)");
        }
    }
}

/// A SHA-256 certificate fingerprint. Written `sha256:` and 32 hex bytes, colons between them
/// optional, either case; shown as `sha256:AB:CD:…`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Thumbprint(pub [u8; 32]);

impl Thumbprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Thumbprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Thumbprint(out)
    }
}

impl FromStr for Thumbprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let hex = match s.split_once(':') {
            Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
            _ => return Err("expected `sha256:` followed by the fingerprint's 32 bytes in hex (sha256:AB:CD:…)".into()),
        };
        let digits: String = hex.chars().filter(|&c| c != ':').collect();
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!("`{bad}` is not a hex digit"));
        }
        if digits.len() != 64 {
            return Err(format!("{} hex digits; a SHA-256 fingerprint has 64 (32 bytes)", digits.len()));
        }
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Thumbprint(out))
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256")?;
        self.0.iter().try_for_each(|b| write!(f, ":{b:02X}"))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A peer whose certificate is not the pinned one: the handshake fails with this inside
/// rustls's `InvalidCertificate`, so the adapter's error chain shows the fingerprint it saw.
#[derive(Clone, thiserror::Error)]
#[error("the peer's certificate has thumbprint {seen}, not the configured {pinned}")]
pub struct ThumbprintMismatch {
    pub seen: Thumbprint,
    pub pinned: Thumbprint,
}

impl fmt::Debug for ThumbprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A client config that trusts the one certificate whose fingerprint is `pinned`.
fn pinned_config(pinned: Thumbprint) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { pinned: Some(pinned), provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts the end-entity certificate whose SHA-256 fingerprint is the pinned one — no chain,
/// name or validity-period check, as govc and pyVmomi do for a thumbprint — or, with no pin
/// (`insecure = true` outside reqwest), any certificate; either way it verifies the handshake
/// signature against that certificate's key, so the peer must hold its private key.
#[derive(Debug)]
struct Pinned {
    pinned: Option<Thumbprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pinned) = self.pinned else { return Ok(ServerCertVerified::assertion()) };
        let seen = Thumbprint::of(end_entity);
        if seen == pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = ThumbprintMismatch { seen, pinned };
            Err(CertificateError::Other(OtherError(Arc::new(mismatch))).into())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_with_or_without_colons_and_print_as_vsphere_does() {
        let colons = "sha256:".to_string() + &["ab"; 32].join(":");
        let t: Thumbprint = colons.parse().unwrap();
        assert_eq!(t, Thumbprint([0xAB; 32]));
        assert_eq!(("SHA256:".to_string() + &"Ab".repeat(32)).parse::<Thumbprint>().unwrap(), t);
        assert_eq!(t.to_string(), "sha256:".to_string() + &["AB"; 32].join(":"));
    }

    #[test]
    fn bad_thumbprints_say_what_is_wrong() {
        let e = "AB:CD".parse::<Thumbprint>().unwrap_err();
        assert!(e.contains("sha256:"), "{e}");
        let e = "sha256:AB:CD".parse::<Thumbprint>().unwrap_err();
        assert!(e.contains("4 hex digits") && e.contains("64"), "{e}");
        let e = ("sha256:".to_string() + &"zz".repeat(32)).parse::<Thumbprint>().unwrap_err();
        assert!(e.contains("`z` is not a hex digit"), "{e}");
        let pin = TlsOptions {
            thumbprint: Some(format!("sha256:{}", "00".repeat(32))),
            insecure: true,
            ..Default::default()
        };
        let e = pin.apply(reqwest::Client::builder()).unwrap_err().to_string();
        assert!(e.contains("remove `ca_file` and `insecure`"), "{e}");
    }
}
