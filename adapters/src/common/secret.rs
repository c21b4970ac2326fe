//! Secrets (passwords, tokens): read from an environment variable or a file, never from inline
//! config, and redacted from every `Debug`/`Display`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// A secret value. Its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from: exactly one of an environment variable or a file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl SecretSource {
    pub fn env(var: impl Into<String>) -> Self {
        Self { password_env: Some(var.into()), password_file: None }
    }

    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self { password_env: None, password_file: Some(path.into()) }
    }

    /// Reads the secret. A file's trailing newline is dropped.
    pub fn load(&self) -> Result<Secret, SecretError> {
        match (&self.password_env, &self.password_file) {
            (Some(var), None) => std::env::var(var).map(Secret).map_err(|_| SecretError::EnvUnset(var.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|source| SecretError::File { path: path.clone(), source }),
            (Some(_), Some(_)) => Err(SecretError::Both),
            (None, None) => Err(SecretError::Neither),
        }
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
    #[error("both password_env and password_file are given: choose one")]
    Both,
    #[error("no password source: set password_env (an environment variable) or password_file")]
    Neither,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_in_debug_and_display() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(SecretSource::file(&p).load().unwrap().expose(), "s3cret");
    }

    #[test]
    fn unset_env_names_the_variable() {
        let e = SecretSource::env("NETFOLD_TEST_SURELY_UNSET").load().unwrap_err();
        assert!(e.to_string().contains("NETFOLD_TEST_SURELY_UNSET"));
    }
}
