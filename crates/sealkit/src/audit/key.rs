//! The audit key: the 32-byte HMAC key that chains the audit log. It is never written to the
//! log; it comes from a secret source (an environment variable, or a `[secrets.NAME]` chain).

use base64::Engine;
use hmac::KeyInit;
use hmac::Mac;
use sealkit_core::DataKey;
use sealkit_core::legacy::key_from_base64;
use zeroize::Zeroizing;

use super::record::HmacSha256;
use crate::{Error, Result};

/// The key that MACs audit records and checkpoints. Debug shows only its [`id`](Self::id).
#[derive(Clone)]
pub struct AuditKey {
    key: DataKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey").field("id", &self.id()).finish()
    }
}

impl AuditKey {
    /// The key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: DataKey::from_bytes(bytes),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice())
            .map_err(|e| Error::unavailable("os-random", format!("getrandom failed: {e}")))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Decodes base64 of 32 bytes (`sealkit audit new-key` makes one); `source` names where
    /// the text came from, for messages (the value never appears in one).
    pub fn from_base64(source: &str, text: &str) -> Result<Self> {
        Ok(Self {
            key: key_from_base64("audit key", source, text)?,
        })
    }

    /// The key as base64, to store in a secret manager.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.key.expose()))
    }

    /// A public identifier of the key (16 hex digits of an HMAC of a fixed label), written in
    /// checkpoints so that a verifier holding another key says so.
    pub fn id(&self) -> String {
        let mut mac = self.keyed();
        mac.update(b"sealkit audit key id");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The HMAC state keyed with this key.
    pub(super) fn keyed(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(self.key.expose())
            .expect("HMAC takes a key of any length")
    }
}
