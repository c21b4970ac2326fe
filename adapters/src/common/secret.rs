//! Secrets (passwords, tokens): read from an environment variable or a file, never from inline
//! config, into a [`SecretString`] (secrecy: zeroed on drop, `Debug` redacted, no `Display`).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// Where a secret comes from: exactly one of an environment variable or a file.
///
/// In config: `password = { password_env = "VAR" }` or `password = { password_file = "/path" }`.
/// A password written inline (`password = "..."`) is refused with a message saying how to
/// pass it instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSource {
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// What refusing an inline password says (the config error adds file, line and key).
pub const INLINE_PASSWORD_REFUSED: &str = "a password written inline in the config file is refused: \
put it in an environment variable and write `password = { password_env = \"VAR\" }`, \
or in a file readable only by netfold and write `password = { password_file = \"/path\" }`";

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            password_env: Option<String>,
            password_file: Option<PathBuf>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Table(Table),
            Inline(#[allow(dead_code)] String), // matched to be refused, never read
        }
        match Form::deserialize(d) {
            Ok(Form::Table(t)) => Ok(SecretSource { password_env: t.password_env, password_file: t.password_file }),
            Ok(Form::Inline(_)) => Err(serde::de::Error::custom(INLINE_PASSWORD_REFUSED)),
            Err(_) => Err(serde::de::Error::custom(
                "expected `{ password_env = \"VAR\" }` or `{ password_file = \"/path\" }`",
            )),
        }
    }
}

impl SecretSource {
    pub fn env(var: impl Into<String>) -> Self {
        Self { password_env: Some(var.into()), password_file: None }
    }

    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self { password_env: None, password_file: Some(path.into()) }
    }

    /// Reads the secret. A file's trailing newline is dropped.
    pub fn load(&self) -> Result<SecretString, SecretError> {
        match (&self.password_env, &self.password_file) {
            (Some(var), None) if var.is_empty() => Err(SecretError::EmptyName("password_env")),
            (None, Some(path)) if path.as_os_str().is_empty() => Err(SecretError::EmptyName("password_file")),
            (Some(var), None) => {
                std::env::var(var).map(SecretString::from).map_err(|_| SecretError::EnvUnset(var.clone()))
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|mut s| {
                    s.truncate(s.trim_end_matches(['\r', '\n']).len());
                    SecretString::from(s)
                })
                .map_err(|source| SecretError::File { path: path.clone(), source }),
            (Some(_), Some(_)) => Err(SecretError::Both),
            (None, None) => Err(SecretError::Neither),
        }
    }
}

impl SecretSource {
    /// A `password_file` readable by its group or by others: the mode bits, when they allow
    /// that. `None` for an environment variable or a private file (checked by `stat`, so a file
    /// that cannot be read is reported by [`SecretSource::load`], not here).
    pub fn readable_by_others(&self) -> Option<(PathBuf, u32)> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.password_file.as_ref()?;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| (path.clone(), mode))
    }
}

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` (password_env) is not set")]
    EnvUnset(String),
    #[error("cannot read password_file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty: name an environment variable or a file")]
    EmptyName(&'static str),
    #[error("both password_env and password_file are given: choose one")]
    Both,
    #[error("no password source: set password_env (an environment variable) or password_file")]
    Neither,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn a_loaded_secret_is_redacted_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        let s = SecretSource::file(&p).load().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(SecretSource::file(&p).load().unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn inline_passwords_are_refused_with_directions() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // read only through Debug in the assertion
        struct C {
            password: SecretSource,
        }
        let e = toml::from_str::<C>("password = \"hunter2\"").unwrap_err();
        // The message alone (the config loader adds file, line and key without quoting the
        // line, which would echo the password).
        let m = e.message();
        assert!(m.contains("refused") && m.contains("password_env"), "{m}");
        assert!(!m.contains("hunter2"), "the refused password is not echoed: {m}");
        assert!(e.span().is_some());
        let ok: C = toml::from_str("password = { password_env = \"VC_PW\" }").unwrap();
        assert_eq!(ok.password, SecretSource::env("VC_PW"));
    }

    #[test]
    fn group_or_world_readable_files_are_found_and_empty_names_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SecretSource::file(&p).readable_by_others(), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(SecretSource::file(&p).readable_by_others(), Some((p.clone(), 0o644)));
        assert!(SecretSource::env("X").readable_by_others().is_none());
        assert!(SecretSource::file("").load().unwrap_err().to_string().contains("password_file is empty"));
    }

    #[test]
    fn unset_env_names_the_variable() {
        let e = SecretSource::env("NETFOLD_TEST_SURELY_UNSET").load().unwrap_err();
        assert!(e.to_string().contains("NETFOLD_TEST_SURELY_UNSET"));
    }
}
