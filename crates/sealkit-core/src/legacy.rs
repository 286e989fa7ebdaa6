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

pub use crate::legacy_key::{LegacyKey, key_from_base64};

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

/// Fernet tokens (the `cryptography` package's `Fernet`): base64url of
/// `0x80 ‖ timestamp (u64 BE) ‖ IV (16) ‖ AES-128-CBC ciphertext ‖ HMAC-SHA256 (32)`, under a
/// 32-byte key whose first half signs and second half encrypts. The HMAC is checked (in
/// constant time) before anything is decrypted; the timestamp is not checked (no clock here:
/// a TTL policy belongs to the caller).
pub mod fernet {
    use alloc::vec::Vec;

    use aes::Aes128;
    use base64::Engine;
    use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
    use hmac::{KeyInit, Mac};
    use sha2::Sha256;

    use crate::{DataKey, Error, Result, SecureRandom};

    type HmacSha256 = hmac::Hmac<Sha256>;

    fn engine() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::URL_SAFE
    }

    /// Whether `data` looks like a Fernet token (base64url text starting with version 0x80).
    pub fn looks_like(data: &[u8]) -> bool {
        data.starts_with(b"gAAAAA")
            && data
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    }

    fn mac(key: &DataKey, signed: &[u8]) -> Result<HmacSha256> {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&key.expose()[..16])
            .map_err(|_| Error::InvalidCiphertext)?;
        mac.update(signed);
        Ok(mac)
    }

    /// Decrypts a Fernet token.
    pub fn open(key: &DataKey, token: &[u8]) -> Result<Vec<u8>> {
        let raw = engine()
            .decode(token)
            .map_err(|_| Error::MalformedEnvelope {
                reason: "Fernet token is not base64url",
            })?;
        if raw.len() < 1 + 8 + 16 + 16 + 32 || raw[0] != 0x80 || (raw.len() - 57) % 16 != 0 {
            return Err(Error::MalformedEnvelope {
                reason: "not a version-0x80 Fernet token",
            });
        }
        let (signed, tag) = raw.split_at(raw.len() - 32);
        mac(key, signed)?
            .verify_slice(tag)
            .map_err(|_| Error::InvalidCiphertext)?;
        let iv = &signed[9..25];
        let mut body = signed[25..].to_vec();
        let decryptor = cbc::Decryptor::<Aes128>::new_from_slices(&key.expose()[16..], iv)
            .map_err(|_| Error::InvalidCiphertext)?;
        let len = decryptor
            .decrypt_padded::<Pkcs7>(&mut body)
            .map_err(|_| Error::InvalidCiphertext)?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// Creates a Fernet token (to build test data); `timestamp` is seconds since the epoch.
    pub fn seal(
        key: &DataKey,
        rng: &dyn SecureRandom,
        timestamp: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut iv = [0u8; 16];
        rng.fill(&mut iv)?;
        let mut body = plaintext.to_vec();
        body.resize(plaintext.len() + 16 - plaintext.len() % 16, 0);
        let encryptor = cbc::Encryptor::<Aes128>::new_from_slices(&key.expose()[16..], &iv)
            .map_err(|_| Error::invalid_input("bad key"))?;
        let len = encryptor
            .encrypt_padded::<Pkcs7>(&mut body, plaintext.len())
            .map_err(|_| Error::invalid_input("padding"))?
            .len();
        body.truncate(len);
        let mut signed = alloc::vec![0x80u8];
        signed.extend_from_slice(&timestamp.to_be_bytes());
        signed.extend_from_slice(&iv);
        signed.extend_from_slice(&body);
        let tag = mac(key, &signed)?.finalize().into_bytes();
        signed.extend_from_slice(&tag);
        Ok(engine().encode(&signed).into_bytes())
    }
}

/// Vault Transit ciphertexts, `vault:vN:BASE64`: parsed here, decrypted by the Vault provider.
pub mod vault {
    /// Whether `data` starts like a Transit ciphertext.
    pub fn looks_like(data: &[u8]) -> bool {
        parse(data).is_some()
    }

    /// The key version and the text of a Transit ciphertext.
    pub fn parse(data: &[u8]) -> Option<(u64, &str)> {
        let text = core::str::from_utf8(data).ok()?;
        let rest = text.strip_prefix("vault:v")?;
        let (version, body) = rest.split_once(':')?;
        let version = version.parse().ok()?;
        let body_ok = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        body_ok.then_some((version, text))
    }
}

/// What a stored value is, as far as its bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detected {
    /// A Sealkit envelope (magic, version and structure parse).
    Envelope,
    /// A Fernet token.
    Fernet,
    /// A Vault Transit ciphertext.
    VaultTransit,
}

/// Detects a value's format where that is unambiguous: Sealkit envelopes, Fernet tokens and
/// Vault Transit ciphertexts carry markers. Raw AES-GCM layouts and plaintext carry none, so
/// they are never guessed: `None` means "declare the column's format".
pub fn detect(data: &[u8]) -> Option<Detected> {
    if crate::Envelope::looks_like(data) && crate::Envelope::parse(data).is_ok() {
        Some(Detected::Envelope)
    } else if fernet::looks_like(data) {
        Some(Detected::Fernet)
    } else if vault::looks_like(data) {
        Some(Detected::VaultTransit)
    } else {
        None
    }
}
