//! Secrets: where they come from (a file or an environment variable) and a
//! value that never prints.

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from. Reading it is the shell's job ([`SecretSource::load`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trimmed of trailing newlines) is the secret.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// A secret value that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl SecretSource {
    /// Reads the secret. An empty or blank one is an error, never "no secret":
    /// an empty token file must not switch the API's bearer check off.
    pub fn load(&self) -> Result<Secret, String> {
        let secret = match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?,
            SecretSource::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable {name} is not set"))?,
        };
        if secret.0.trim().is_empty() {
            return Err(match self {
                SecretSource::File(path) => format!("secret file {} is empty", path.display()),
                SecretSource::Env(name) => format!("environment variable {name} is empty"),
            });
        }
        Ok(secret)
    }
}
