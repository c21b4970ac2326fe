//! Where a `HOST_IS_SLAVE [master]` redirect may lead: the trust decision, pure.
//!
//! A pool member that is not the master answers every call with `HOST_IS_SLAVE` and the
//! master's address. Following it blindly lets any peer that can answer one call move the
//! adapter — and the root password it logs in with — to a host of its choosing, or from a
//! pinned `https://` to cleartext. So a redirect is followed only when:
//! - it keeps the scheme of the URL in use (xapi names the master by address alone; a full
//!   URL is accepted only with the same scheme, and never with credentials or a path);
//! - it leads to an address the pool itself lists: the `address` of a pool member the adapter
//!   has read (`host.get_all_records`), or the configured URL's own host and port.
//!
//! The TLS policy is kept by construction: the adapter connects to the new URL with the same
//! [`crate::common::TlsOptions`] (the configured CA, hostname verification), so the master's
//! certificate must be valid for the address it was reached at.

use std::net::Ipv6Addr;

use crate::common::url::{parse_endpoint, redact, Url};

/// A redirect that was not followed. The adapter stays with the URL it had, backs off and
/// reports the pool as disconnected: never retryable by following it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("HOST_IS_SLAVE names master `{master}`, which is not an address: {reason}")]
    Unparsable { master: String, reason: String },
    #[error(
        "HOST_IS_SLAVE names master `{master}` with scheme `{to}` while the pool is reached over `{from}`: a \
         redirect never changes the scheme"
    )]
    SchemeChange { master: String, from: String, to: String },
    #[error("HOST_IS_SLAVE names master `{master}` with credentials or a path: refused")]
    NotAnAddress { master: String },
    #[error(
        "HOST_IS_SLAVE names master `{master}`, which is neither the configured host nor the address of a pool \
         member netfold has read ({known}): refused; if the pool master really moved there, configure its URL"
    )]
    NotInPool { master: String, known: String },
}

/// The URL to follow `master` to, or why not. `current` is the URL in use; `known` holds the
/// configured URL and the `host.address` of every pool member read (bare addresses, URLs or
/// `host:port`).
pub fn follow(current: &str, master: &str, known: &[String]) -> Result<Url, Error> {
    let shown = || redact(master);
    let current = Url::parse(current).map_err(|e| Error::Unparsable { master: shown(), reason: e.to_string() })?;
    let scheme = current.scheme();
    let candidate = with_scheme(scheme, master).map_err(|(to, _)| Error::SchemeChange {
        master: shown(),
        from: scheme.to_string(),
        to,
    })?;
    let url = parse_endpoint(&candidate, scheme == "http")
        .map_err(|e| Error::Unparsable { master: shown(), reason: e.to_string() })?;
    if !url.path().trim_end_matches('/').is_empty() || url.query().is_some() {
        return Err(Error::NotAnAddress { master: shown() });
    }
    let target = endpoint(&url);
    let trusted = known.iter().filter_map(|k| with_scheme(scheme, k).ok()).filter_map(|k| Url::parse(&k).ok());
    if trusted.map(|k| endpoint(&k)).any(|k| k == target) {
        Ok(url)
    } else {
        let known: Vec<String> = known.iter().map(|k| redact(k)).collect();
        Err(Error::NotInPool { master: shown(), known: known.join(", ") })
    }
}

/// `scheme://address` for a bare address (an IPv6 literal bracketed); a URL with another
/// scheme is `Err((its scheme, text))`.
fn with_scheme(scheme: &str, address: &str) -> Result<String, (String, String)> {
    let a = address.trim();
    if let Some((s, _)) = a.split_once("://") {
        return if s.eq_ignore_ascii_case(scheme) { Ok(a.to_string()) } else { Err((s.to_string(), a.to_string())) };
    }
    if a.parse::<Ipv6Addr>().is_ok() {
        return Ok(format!("{scheme}://[{a}]"));
    }
    Ok(format!("{scheme}://{a}"))
}

/// What two URLs must share to be the same endpoint: host and port.
fn endpoint(u: &Url) -> (Option<String>, Option<u16>) {
    (u.host_str().map(str::to_ascii_lowercase), u.port_or_known_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["https://xen-a.lab".into(), "10.0.0.1".into(), "10.0.0.2".into(), "fe80::1".into()]
    }

    #[test]
    fn a_pool_member_is_followed_with_the_same_scheme() {
        assert_eq!(follow("https://xen-a.lab", "10.0.0.2", &known()).unwrap().as_str(), "https://10.0.0.2/");
        assert_eq!(follow("https://10.0.0.2", "xen-a.lab", &known()).unwrap().as_str(), "https://xen-a.lab/");
        assert_eq!(follow("https://xen-a.lab", "fe80::1", &known()).unwrap().as_str(), "https://[fe80::1]/");
        let local = vec!["http://127.0.0.1:4000".to_string(), "127.0.0.1:4001".to_string()];
        assert_eq!(
            follow("http://127.0.0.1:4000", "127.0.0.1:4001", &local).unwrap().as_str(),
            "http://127.0.0.1:4001/"
        );
    }

    #[test]
    fn a_scheme_change_is_refused() {
        let e = follow("https://xen-a.lab", "http://10.0.0.2", &known()).unwrap_err();
        assert!(matches!(e, Error::SchemeChange { .. }), "{e}");
        assert!(e.to_string().contains("never changes the scheme"), "{e}");
    }

    #[test]
    fn an_address_the_pool_does_not_list_is_refused() {
        let e = follow("https://xen-a.lab", "203.0.113.9", &known()).unwrap_err();
        assert!(matches!(e, Error::NotInPool { .. }), "{e}");
        // Same host, another port: another endpoint.
        assert!(follow("https://xen-a.lab", "10.0.0.2:8443", &known()).is_err());
        let local = vec!["http://127.0.0.1:4000".to_string()];
        assert!(follow("http://127.0.0.1:4000", "127.0.0.2:4000", &local).is_err());
    }

    #[test]
    fn credentials_paths_and_garbage_are_refused_without_echoing_secrets() {
        let e = follow("https://xen-a.lab", "https://root:pw@10.0.0.2", &known()).unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
        assert!(follow("https://xen-a.lab", "https://10.0.0.2/evil", &known()).is_err());
        assert!(follow("https://xen-a.lab", "[::1", &known()).is_err());
        assert!(follow("https://xen-a.lab", "", &known()).is_err());
    }
}
