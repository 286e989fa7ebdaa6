//! A legacy master key: the base64 32-byte AES key an application kept in an environment
//! variable. Reading the variable is the caller's business (the core does no I/O).

use alloc::format;
use alloc::string::{String, ToString};

use base64::Engine;
use zeroize::Zeroizing;

use crate::{DataKey, Error, Result};

/// A 32-byte AES key that an application kept in an environment variable, base64-encoded.
///
/// Validated when decoded; error messages name where it came from and the problem, never
/// the value.
#[derive(Debug, Clone)]
pub struct LegacyKey {
    source: String,
    key: DataKey,
}

impl LegacyKey {
    /// The variable most applications used.
    pub const DEFAULT_ENV: &'static str = "ENCRYPTION_MASTER_KEY";

    /// Validates a base64 key; `source` names where it came from, for messages.
    pub fn from_base64(source: &str, text: &str) -> Result<Self> {
        Ok(Self {
            source: source.to_string(),
            key: key_from_base64("legacy master key", source, text)?,
        })
    }

    /// Wraps raw key bytes (tests, secret stores).
    pub fn from_key(source: &str, key: DataKey) -> Self {
        Self {
            source: source.to_string(),
            key,
        }
    }

    /// Where the key came from (the variable name), for logs.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The key.
    pub fn key(&self) -> &DataKey {
        &self.key
    }
}

/// Decodes a 32-byte key kept as base64 text (the legacy master key, the audit key). `what`
/// and `source` name the key and where it came from in errors, which never hold the value.
pub fn key_from_base64(what: &str, source: &str, text: &str) -> Result<DataKey> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::misconfigured(format!(
            "the {what} in {source} is empty; it must hold base64 of 32 bytes"
        )));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = Zeroizing::new(engine.decode(text).map_err(|_| {
        Error::misconfigured(format!(
            "the {what} in {source} is not valid base64; it must hold base64 of 32 bytes"
        ))
    })?);
    if bytes.len() != DataKey::LEN {
        return Err(Error::misconfigured(format!(
            "the {what} in {source} decodes to {} bytes; AES-256 needs exactly 32",
            bytes.len()
        )));
    }
    DataKey::from_slice(&bytes)
}
