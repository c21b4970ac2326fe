//! `tls = { thumbprint = "sha256:…" }` against a local rustls server: the pinned certificate is
//! accepted whatever its issuer and names; another certificate is refused with the fingerprint
//! seen in the error; a peer presenting the pinned certificate without its private key fails
//! the handshake (the signature is still verified). VMware's own vcsim is the other peer of
//! these rules (tests/vcsim.rs at the workspace root).

#[path = "support/tls_peer.rs"]
mod tls_peer;

use adapters::common::{Thumbprint, TlsOptions};
use tls_peer::{get, leaf, serve};

fn pinned(t: Thumbprint) -> TlsOptions {
    TlsOptions { thumbprint: Some(t.to_string()), ..Default::default() }
}

#[tokio::test]
async fn the_pinned_certificate_is_accepted_without_a_chain_or_a_matching_name() {
    // Self-signed, and for a name that is not the one dialled.
    let id = leaf(&["esxi-07.lab.invalid"], None);
    let addr = serve(vec![id.der()], &id.key).await;
    let url = format!("https://{addr}/sdk");
    let default = get(&TlsOptions::default(), &url).await.unwrap_err();
    assert!(default.contains("invalid peer certificate"), "refused without the pin: {default}");
    assert_eq!(get(&pinned(Thumbprint::of(&id.der())), &url).await.unwrap(), "ok");
    // Lowercase without colons is the same pin.
    let bare = Thumbprint::of(&id.der()).to_string().replace(':', "").replace("sha256", "sha256:").to_lowercase();
    let tls = TlsOptions { thumbprint: Some(bare), ..Default::default() };
    assert_eq!(get(&tls, &url).await.unwrap(), "ok");
}

#[tokio::test]
async fn another_certificate_is_refused_naming_the_thumbprint_seen() {
    let id = leaf(&["127.0.0.1"], None);
    let other = leaf(&["127.0.0.1"], None);
    let addr = serve(vec![id.der()], &id.key).await;
    let e = get(&pinned(Thumbprint::of(&other.der())), &format!("https://{addr}/")).await.unwrap_err();
    let seen = Thumbprint::of(&id.der()).to_string();
    assert!(e.contains(&format!("has thumbprint {seen}")), "{e}");
    assert!(e.contains(&format!("not the configured {}", Thumbprint::of(&other.der()))), "{e}");
}

#[tokio::test]
async fn the_pinned_certificate_without_its_key_fails_the_handshake() {
    let id = leaf(&["127.0.0.1"], None);
    let impostor = leaf(&["127.0.0.1"], None);
    // Presents `id`'s certificate, signs with another key.
    let addr = serve(vec![id.der()], &impostor.key).await;
    let e = get(&pinned(Thumbprint::of(&id.der())), &format!("https://{addr}/")).await.unwrap_err();
    assert!(e.to_lowercase().contains("signature"), "the handshake signature is checked: {e}");
}

#[test]
fn a_bad_thumbprint_is_refused_when_the_client_is_built() {
    let tls = TlsOptions { thumbprint: Some("sha1:AB:CD".into()), ..Default::default() };
    let e = adapters::common::HttpClient::new(
        &tls,
        &adapters::common::Timeouts::flat(std::time::Duration::from_secs(1)),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("thumbprint `sha1:AB:CD` is refused") && e.contains("sha256:"), "{e}");
}
