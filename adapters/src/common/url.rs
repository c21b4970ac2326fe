//! Endpoint URLs of hypervisors and switches: parsed with `reqwest::Url` (the `url` crate, so
//! IPv6 literals, ports and percent-encoding follow the WHATWG rules), checked for what netfold
//! refuses (another scheme, no host, credentials in the URL, cleartext unless allowed), and
//! redacted before they are printed.
//!
//! Every adapter config and the binary's config validation call [`parse_endpoint`], so
//! `config check` and `run` refuse the same URLs with the same words.

pub use reqwest::Url;

/// Why an endpoint URL is refused. Never retryable: the configuration must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{url}` is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("`{url}` has scheme `{scheme}`; expected https:// (or http:// with allow_plaintext = true)")]
    Scheme { url: String, scheme: String },
    #[error("`{url}` names no host")]
    NoHost { url: String },
    #[error(
        "`{url}` holds a user name or password; give them as `user` and `password` (password_env or \
         password_file), never in the URL"
    )]
    Credentials { url: String },
    #[error(
        "`{url}` is cleartext http://: the password would cross the network unencrypted; use https://, or set \
         `allow_plaintext = true` on this entry (a lab or simulator only)"
    )]
    Plaintext { url: String },
}

/// Parses an `http(s)://` endpoint. `http://` is accepted only when `allow_plaintext`.
pub fn parse_endpoint(text: &str, allow_plaintext: bool) -> Result<Url, UrlError> {
    let url = Url::parse(text.trim()).map_err(|e| UrlError::Parse { url: redact(text), reason: e.to_string() })?;
    let shown = || redact_url(&url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials { url: shown() });
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_plaintext => {}
        "http" => return Err(UrlError::Plaintext { url: shown() }),
        other => return Err(UrlError::Scheme { url: shown(), scheme: other.to_string() }),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost { url: shown() });
    }
    Ok(url)
}

/// `host:port` of a parsed endpoint (IPv6 literals bracketed), for a TCP connect.
pub fn socket_target(url: &Url) -> Option<String> {
    let port = url.port_or_known_default()?;
    Some(format!("{}:{port}", url.host_str()?))
}

/// A URL for printing: user name and password replaced by `***`, query and fragment dropped
/// (they may carry tokens).
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let had_userinfo = !u.username().is_empty() || u.password().is_some();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let s = u.to_string();
    match (had_userinfo, s.split_once("://")) {
        (true, Some((scheme, rest))) => format!("{scheme}://***@{rest}"),
        _ => s,
    }
}

/// Any text that may be a URL, for printing: URLs with a host as [`redact_url`]; other text
/// (`u:p@10.0.0.1` is a URL of scheme `u` to the parser) loses everything up to the last `@` of its authority, and its query.
pub fn redact(text: &str) -> String {
    if let Ok(u) = Url::parse(text.trim()) {
        if u.has_host() {
            return redact_url(&u);
        }
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, text),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match scheme {
        Some(s) => format!("{s}://{authority}{path}"),
        None => format!("{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_literals_with_and_without_a_port_parse() {
        let u = parse_endpoint("https://[::1]/sdk", false).unwrap();
        assert_eq!(socket_target(&u).as_deref(), Some("[::1]:443"));
        let u = parse_endpoint("https://[fe80::2]:8443", false).unwrap();
        assert_eq!(socket_target(&u).as_deref(), Some("[fe80::2]:8443"));
        let u = parse_endpoint("http://127.0.0.1:4000", true).unwrap();
        assert_eq!(socket_target(&u).as_deref(), Some("127.0.0.1:4000"));
    }

    #[test]
    fn malformed_urls_are_refused_naming_the_reason() {
        let e = parse_endpoint("https://[::1/sdk", false).unwrap_err().to_string();
        assert!(e.contains("`https://[::1/sdk` is not a URL") && e.contains("IPv6"), "{e}");
        let e = parse_endpoint("https://vc:99999/sdk", false).unwrap_err().to_string();
        assert!(e.contains("invalid port number"), "{e}");
        let e = parse_endpoint("ftp://switch", false).unwrap_err().to_string();
        assert!(e.contains("scheme `ftp`"), "{e}");
        assert!(matches!(parse_endpoint("vc.example/sdk", false), Err(UrlError::Parse { .. })));
    }

    #[test]
    fn cleartext_needs_the_opt_in() {
        let e = parse_endpoint("http://xen.lab", false).unwrap_err().to_string();
        assert!(e.contains("cleartext") && e.contains("allow_plaintext = true"), "{e}");
        assert!(parse_endpoint("http://xen.lab", true).is_ok());
    }

    #[test]
    fn credentials_in_a_url_are_refused_and_never_printed() {
        for text in ["http://admin:secret@xen.lab", "https://admin:secret@[::1]:443/sdk", "https://admin@vc"] {
            let e = parse_endpoint(text, true).unwrap_err();
            assert!(matches!(e, UrlError::Credentials { .. }), "{e}");
            let shown = e.to_string();
            assert!(!shown.contains("secret") && !shown.contains("admin"), "{shown}");
            assert!(shown.contains("***@"), "{shown}");
        }
    }

    #[test]
    fn redaction_covers_text_that_does_not_parse() {
        assert_eq!(redact("https://admin:pw@[::1/sdk?token=x"), "https://***@[::1/sdk");
        assert_eq!(redact("https://vc.lab/sdk?t=1#f"), "https://vc.lab/sdk");
        assert_eq!(redact("u:p@10.0.0.1"), "***@10.0.0.1");
        assert_eq!(redact("http://a:b@h:1/"), "http://***@h:1/");
    }
}
