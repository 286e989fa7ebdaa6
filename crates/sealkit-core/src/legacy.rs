//! Decoders (and, for tests and migrations, encoders) of pre-envelope ciphertext formats that
//! applications used with a master key from an environment variable.
//!
//! These formats carry no key reference and no context: they are read only in `legacy` and
//! `hybrid` modes and during migration, and are never written by new code paths except to
//! build test data.

use alloc::vec::Vec;
use core::fmt;

use aes_gcm::AesGcm;
use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use zeroize::Zeroize;

use crate::{DataKey, Error, Result, SecureRandom};

/// A legacy ciphertext layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LegacyFormat {
    /// AES-256-GCM as `16-byte IV ‖ ciphertext ‖ 16-byte tag` (a common hand-rolled layout,
    /// e.g. Node.js `crypto.createCipheriv('aes-256-gcm', key, randomBytes(16))`).
    AesGcmIv16,
    /// AES-256-GCM as `12-byte nonce ‖ ciphertext ‖ 16-byte tag`.
    AesGcmNonce12,
}

impl LegacyFormat {
    /// The stable configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AesGcmIv16 => "aes-gcm-iv16",
            Self::AesGcmNonce12 => "aes-gcm-nonce12",
        }
    }

    /// Bytes added to the plaintext.
    pub const fn overhead(self) -> usize {
        match self {
            Self::AesGcmIv16 => 32,
            Self::AesGcmNonce12 => 28,
        }
    }

    const fn iv_len(self) -> usize {
        match self {
            Self::AesGcmIv16 => 16,
            Self::AesGcmNonce12 => 12,
        }
    }
}

impl fmt::Display for LegacyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for LegacyFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "aes-gcm-iv16" => Ok(Self::AesGcmIv16),
            "aes-gcm-nonce12" => Ok(Self::AesGcmNonce12),
            _ => Err(Error::invalid_input(alloc::format!(
                "unknown legacy format {s:?}; use \"aes-gcm-iv16\" or \"aes-gcm-nonce12\""
            ))),
        }
    }
}

fn run<N: aes_gcm::aead::array::ArraySize>(
    key: &DataKey,
    iv: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag: Option<&[u8]>,
) -> Result<Option<[u8; 16]>> {
    let cipher = AesGcm::<Aes256, N>::new(&Array::from(*key.expose()));
    let iv = Array::<u8, N>::try_from(iv).map_err(|_| Error::InvalidCiphertext)?;
    match tag {
        Some(tag) => {
            let tag = Array::try_from(tag).map_err(|_| Error::InvalidCiphertext)?;
            cipher
                .decrypt_inout_detached(&iv, aad, buf.into(), &tag)
                .map_err(|_| Error::InvalidCiphertext)?;
            Ok(None)
        }
        None => {
            let tag = cipher
                .encrypt_inout_detached(&iv, aad, buf.into())
                .map_err(|_| Error::invalid_input("message too long"))?;
            let mut out = [0u8; 16];
            out.copy_from_slice(&tag);
            Ok(Some(out))
        }
    }
}

/// Opens a legacy ciphertext. `aad` is whatever associated data the legacy code used (usually
/// none). Fails with [`Error::InvalidCiphertext`] on a wrong key or altered bytes and with
/// [`Error::MalformedEnvelope`] when the input is too short for the format.
pub fn open(format: LegacyFormat, key: &DataKey, data: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let iv_len = format.iv_len();
    if data.len() < format.overhead() {
        return Err(Error::MalformedEnvelope {
            reason: "shorter than the legacy format's IV and tag",
        });
    }
    let (iv, rest) = data.split_at(iv_len);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let mut out = ct.to_vec();
    let result = match format {
        LegacyFormat::AesGcmIv16 => run::<U16>(key, iv, aad, &mut out, Some(tag)),
        LegacyFormat::AesGcmNonce12 => run::<U12>(key, iv, aad, &mut out, Some(tag)),
    };
    match result {
        Ok(_) => Ok(out),
        Err(e) => {
            out.zeroize();
            Err(e)
        }
    }
}

/// Seals in a legacy format (to build test data and to model the code being migrated from).
pub fn seal(
    format: LegacyFormat,
    key: &DataKey,
    rng: &dyn SecureRandom,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    let iv_len = format.iv_len();
    let mut out = Vec::with_capacity(plaintext.len() + format.overhead());
    out.resize(iv_len, 0);
    rng.fill(&mut out)?;
    out.extend_from_slice(plaintext);
    let (iv, body) = out.split_at_mut(iv_len);
    let tag = match format {
        LegacyFormat::AesGcmIv16 => run::<U16>(key, iv, aad, body, None)?,
        LegacyFormat::AesGcmNonce12 => run::<U12>(key, iv, aad, body, None)?,
    };
    out.extend_from_slice(&tag.unwrap_or_default());
    Ok(out)
}
