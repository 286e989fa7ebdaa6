//! Decoders: one per source format, each opening a stored legacy value into plaintext.
//!
//! The job looks a column's decoder up by its declared [`SourceFormat`]. The legacy key gives
//! decoders for `aes-gcm-iv16`, `aes-gcm-nonce12` and `fernet`; `plaintext` needs none;
//! `vault-transit:MOUNT/NAME` columns take a [`VaultTransitDecoder`] (feature `vault`); an
//! application's own format plugs in through [`Migrator::with_decoder`](crate::Migrator).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sealkit::core::legacy::{self, LegacyFormat, fernet};
use sealkit::{DataKey, Error, Result};
use zeroize::Zeroizing;

use crate::spec::SourceFormat;

/// Opens one stored value of a legacy format. Errors are the core's kinds: a value that
/// does not open is [`Error::InvalidCiphertext`]; an unreachable service is retryable.
#[async_trait]
pub trait Decoder: Send + Sync + std::fmt::Debug {
    /// The plaintext of `value`.
    async fn decode(&self, value: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// AES-256-GCM under the legacy key, in one of the raw layouts.
#[derive(Debug, Clone)]
pub struct AesGcmDecoder {
    format: LegacyFormat,
    key: DataKey,
}

impl AesGcmDecoder {
    /// Values of `format` under `key`.
    pub fn new(format: LegacyFormat, key: DataKey) -> Self {
        Self { format, key }
    }
}

#[async_trait]
impl Decoder for AesGcmDecoder {
    async fn decode(&self, value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        legacy::open(self.format, &self.key, value, b"").map(Zeroizing::new)
    }
}

/// Fernet tokens under the legacy key (its 32 bytes are the Fernet key).
#[derive(Debug, Clone)]
pub struct FernetDecoder {
    key: DataKey,
}

impl FernetDecoder {
    /// Tokens under `key`.
    pub fn new(key: DataKey) -> Self {
        Self { key }
    }
}

#[async_trait]
impl Decoder for FernetDecoder {
    async fn decode(&self, value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        fernet::open(&self.key, value).map(Zeroizing::new)
    }
}

/// Unencrypted values, as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaintextDecoder;

#[async_trait]
impl Decoder for PlaintextDecoder {
    async fn decode(&self, value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(value.to_vec()))
    }
}

/// Transit ciphertexts (`vault:vN:…`) that an application encrypted with Vault directly,
/// decrypted by Vault (feature `vault`).
#[cfg(feature = "vault")]
#[derive(Debug, Clone)]
pub struct VaultTransitDecoder {
    transit: Arc<sealkit::vault::VaultTransit>,
    key: sealkit::KeyUri,
}

#[cfg(feature = "vault")]
impl VaultTransitDecoder {
    /// Ciphertexts of the Transit `key` (`vault-transit://MOUNT/NAME`), through `transit`.
    pub fn new(transit: Arc<sealkit::vault::VaultTransit>, key: sealkit::KeyUri) -> Self {
        Self { transit, key }
    }
}

#[cfg(feature = "vault")]
#[async_trait]
impl Decoder for VaultTransitDecoder {
    async fn decode(&self, value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let text = legacy::vault::parse(value)
            .map(|(_, t)| t)
            .ok_or(Error::InvalidCiphertext)?;
        self.transit.decrypt_data(&self.key, text, None).await
    }
}

/// The decoders of a job, by source format.
#[derive(Debug, Clone)]
pub(crate) struct Decoders {
    by_format: HashMap<String, Arc<dyn Decoder>>,
}

impl Default for Decoders {
    fn default() -> Self {
        let mut d = Self {
            by_format: HashMap::new(),
        };
        d.insert(&SourceFormat::Plaintext, Arc::new(PlaintextDecoder));
        d
    }
}

impl Decoders {
    pub(crate) fn insert(&mut self, format: &SourceFormat, decoder: Arc<dyn Decoder>) {
        self.by_format.insert(format.to_string(), decoder);
    }

    /// The decoders the legacy key gives.
    pub(crate) fn add_legacy_key(&mut self, key: &DataKey) {
        for format in [LegacyFormat::AesGcmIv16, LegacyFormat::AesGcmNonce12] {
            self.insert(
                &SourceFormat::Legacy(format),
                Arc::new(AesGcmDecoder::new(format, key.clone())),
            );
        }
        self.insert(
            &SourceFormat::Fernet,
            Arc::new(FernetDecoder::new(key.clone())),
        );
    }

    /// The decoder for `format`, or an error that says what to supply.
    pub(crate) fn get(&self, format: &SourceFormat) -> Result<&dyn Decoder> {
        if let Some(decoder) = self.by_format.get(&format.to_string()) {
            return Ok(decoder.as_ref());
        }
        Err(Error::misconfigured(match format {
            SourceFormat::Legacy(_) | SourceFormat::Fernet => format!(
                "{format} columns need the legacy key (ENCRYPTION_MASTER_KEY or --legacy-key-env)"
            ),
            SourceFormat::VaultTransit(_) => format!(
                "{format} columns need Vault (VAULT_ADDR and VAULT_TOKEN) and sealkit-migrate's `vault` feature"
            ),
            _ => format!("no decoder for {format} columns"),
        }))
    }
}
