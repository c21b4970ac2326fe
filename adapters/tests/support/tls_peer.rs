//! A TLS peer for the trust tests: certificates made with rcgen (a CA and a leaf it signs, or a
//! self-signed one), and a tiny HTTPS server on 127.0.0.1 that answers every request `200 ok`
//! with whatever certificate and key it is given — even a key that is not the certificate's.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate and its key.
pub struct Identity {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Identity {
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

/// A CA certificate named `name`.
pub fn ca(name: &str) -> Identity {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    Identity { cert: params.self_signed(&key).unwrap(), key }
}

/// A server certificate for `names`, signed by `issuer` (self-signed when `None`).
pub fn leaf(names: &[&str], issuer: Option<&Identity>) -> Identity {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = match issuer {
        Some(ca) => params.signed_by(&key, &ca.cert, &ca.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Identity { cert, key }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serves HTTPS on 127.0.0.1 presenting `chain`, signing the handshake with `key` (not checked
/// against the certificate: a peer may present a certificate it holds no key for).
pub async fn serve(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> SocketAddr {
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let resolver = Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer))));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut buf = vec![0; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// The whole error chain, one cause per `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `GET url` through netfold's HTTP client built with `tls`: the body, or the error chain.
pub async fn get(tls: &adapters::common::TlsOptions, url: &str) -> Result<String, String> {
    let t = adapters::common::Timeouts::flat(std::time::Duration::from_secs(10));
    let http = adapters::common::HttpClient::new(tls, &t, 1 << 16).map_err(|e| chain(&e))?;
    let resp = http.client.get(url).send().await.map_err(|e| chain(&e))?;
    resp.text().await.map_err(|e| chain(&e))
}
