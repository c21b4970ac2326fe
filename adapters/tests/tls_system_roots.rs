//! System CA roots are trusted beside the bundled webpki roots, and `ca_file` adds to them: a CA
//! installed in a private trust store (`SSL_CERT_FILE` or `SSL_CERT_DIR`, which rustls-native-certs
//! reads instead of the system store, as OpenSSL does) makes its servers acceptable; without it
//! they are refused.
//!
//! One test in its own binary: it sets `SSL_CERT_FILE` for the process, which no other test
//! here may see.

#[path = "support/tls_peer.rs"]
mod tls_peer;

use adapters::common::TlsOptions;
use tls_peer::{ca, get, leaf, serve};

#[tokio::test]
async fn a_ca_in_the_system_store_is_trusted_and_ca_file_adds_another() {
    let enterprise = ca("netfold test enterprise CA");
    let vcenter = leaf(&["127.0.0.1"], Some(&enterprise));
    let vc = format!("https://{}/sdk", serve(vec![vcenter.der()], &vcenter.key).await);
    let lab = ca("netfold test lab CA");
    let esxi = leaf(&["127.0.0.1"], Some(&lab));
    let host = format!("https://{}/sdk", serve(vec![esxi.der()], &esxi.key).await);

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("system-roots.pem");
    std::fs::write(&store, enterprise.pem()).unwrap();
    let lab_file = dir.path().join("lab-ca.pem");
    std::fs::write(&lab_file, lab.pem()).unwrap();
    let with_lab = TlsOptions { ca_file: Some(lab_file), ..Default::default() };

    // Empty private store: neither CA is known.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    std::env::set_var("SSL_CERT_FILE", &empty);
    let e = get(&TlsOptions::default(), &vc).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "the enterprise CA is not trusted yet: {e}");
    assert_eq!(get(&with_lab, &host).await.unwrap(), "ok", "ca_file alone");

    // The enterprise CA installed in the private store.
    std::env::set_var("SSL_CERT_FILE", &store);
    assert_eq!(get(&TlsOptions::default(), &vc).await.unwrap(), "ok", "a CA from the system store");
    let e = get(&TlsOptions::default(), &host).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "the lab CA is not in the store: {e}");
    assert_eq!(get(&with_lab, &vc).await.unwrap(), "ok", "ca_file keeps the system roots");
    assert_eq!(get(&with_lab, &host).await.unwrap(), "ok", "and adds its own");

    // A private trust directory holding the lab CA only.
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("lab.pem"), lab.pem()).unwrap();
    std::env::remove_var("SSL_CERT_FILE");
    std::env::set_var("SSL_CERT_DIR", &certs);
    assert_eq!(get(&TlsOptions::default(), &host).await.unwrap(), "ok", "a CA from SSL_CERT_DIR");
    let e = get(&TlsOptions::default(), &vc).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "the enterprise CA is not in that directory: {e}");
}
