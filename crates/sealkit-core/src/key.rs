//! Key types: data keys (secret), key URIs, versions, references and wrapped keys.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroize;

use crate::{Error, Result};

/// A 256-bit data encryption key (DEK).
///
/// The bytes live in a [`secrecy::SecretBox`]: they are zeroized on drop and never appear in
/// `Debug` output. Reading them requires an explicit [`DataKey::expose`].
pub struct DataKey(SecretBox<[u8; 32]>);

impl DataKey {
    /// Length of a data key, in bytes.
    pub const LEN: usize = 32;

    /// Takes ownership of raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = bytes;
        let key = Self(SecretBox::new(alloc::boxed::Box::new(bytes)));
        bytes.zeroize();
        key
    }

    /// Copies a key from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let mut key = SecretBox::new(alloc::boxed::Box::new([0u8; 32]));
        if bytes.len() != Self::LEN {
            return Err(Error::invalid_input(alloc::format!(
                "a data key must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        secrecy::ExposeSecretMut::expose_secret_mut(&mut key).copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// Draws a fresh key from `rng`.
    pub fn generate(rng: &dyn crate::SecureRandom) -> Result<Self> {
        let mut key = SecretBox::new(alloc::boxed::Box::new([0u8; 32]));
        rng.fill(secrecy::ExposeSecretMut::expose_secret_mut(&mut key))?;
        Ok(Self(key))
    }

    /// The raw key bytes. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl Clone for DataKey {
    fn clone(&self) -> Self {
        Self(SecretBox::new(alloc::boxed::Box::new(*self.expose())))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// The URI naming a master key (KEK) at a provider, without a version.
///
/// Schemes: `local://NAME`, `vault-transit://MOUNT/NAME`, `aws-kms://KEY-ID-OR-ARN`,
/// `gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K`, `azure-kv://HOST/keys/NAME`.
/// A URI is at most 255 bytes, has a lower-case scheme and a non-empty path, and contains no
/// whitespace, control characters or `#` (the version separator).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyUri {
    text: String,
    scheme_len: usize,
}

impl KeyUri {
    /// Largest accepted URI, in bytes (it is length-prefixed by one byte in envelopes).
    pub const MAX_LEN: usize = 255;

    /// Parses and validates a key URI.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_input(alloc::format!(
                "key URI {text:?} {why}; expected SCHEME://PATH such as local://customers"
            ))
        };
        if text.len() > Self::MAX_LEN {
            return Err(bad("is longer than 255 bytes"));
        }
        let Some(scheme_len) = text.find("://") else {
            return Err(bad("has no scheme"));
        };
        let scheme = &text[..scheme_len];
        let path = &text[scheme_len + 3..];
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'+');
        if !scheme_ok {
            return Err(bad("has an invalid scheme"));
        }
        if path.is_empty() {
            return Err(bad("has an empty path"));
        }
        if path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(bad("contains whitespace, a control character or '#'"));
        }
        Ok(Self {
            text: text.to_string(),
            scheme_len,
        })
    }

    /// Parses `URI` or `URI#vN` (a pinned version), as the CLI accepts.
    pub fn parse_with_version(text: &str) -> Result<(Self, Option<KeyVersion>)> {
        match text.rsplit_once('#') {
            Some((uri, version)) => {
                let version = version.strip_prefix('v').unwrap_or(version);
                Ok((Self::parse(uri)?, Some(KeyVersion::new(version)?)))
            }
            None => Ok((Self::parse(text)?, None)),
        }
    }

    /// The scheme, which selects the provider (`local`, `vault-transit`, …).
    pub fn scheme(&self) -> &str {
        &self.text[..self.scheme_len]
    }

    /// Everything after `://`.
    pub fn path(&self) -> &str {
        &self.text[self.scheme_len + 3..]
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyUri({})", self.text)
    }
}

impl core::str::FromStr for KeyUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// A master-key version as the provider names it: `3` for local, Vault and GCP keys, a
/// 32-hex-digit id for Azure. 1 to 64 bytes of `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(String);

impl KeyVersion {
    /// Largest accepted version, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a version string.
    pub fn new(text: &str) -> Result<Self> {
        let ok = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(Error::invalid_input(alloc::format!(
                "key version {text:?} must be 1 to 64 characters of letters, digits, '.', '_' or '-'"
            )))
        }
    }

    /// A numeric version (`1`, `2`, …).
    pub fn number(n: u64) -> Self {
        Self(n.to_string())
    }

    /// The version as a number, when it is one.
    pub fn as_number(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    /// The version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A master key at one version: what an envelope records about the key that wrapped its DEK.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRef {
    /// The master key.
    pub uri: KeyUri,
    /// The version that wrapped the DEK.
    pub version: KeyVersion,
}

impl KeyRef {
    /// Builds a reference from a URI and a version.
    pub fn new(uri: KeyUri, version: KeyVersion) -> Self {
        Self { uri, version }
    }

    /// Parses a URI and a version.
    pub fn parse(uri: &str, version: &str) -> Result<Self> {
        Ok(Self::new(KeyUri::parse(uri)?, KeyVersion::new(version)?))
    }

    /// The provider scheme.
    pub fn scheme(&self) -> &str {
        self.uri.scheme()
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#v{}", self.uri, self.version)
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({self})")
    }
}

/// A data key encrypted ("wrapped") under a master key: safe to store beside the data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    /// The master key and version that wrapped it.
    pub key: KeyRef,
    /// The provider's ciphertext of the DEK (opaque to Sealkit).
    pub bytes: Vec<u8>,
}

impl WrappedKey {
    /// Largest wrapped key accepted, in bytes (an RSA-4096 OAEP block is 512).
    pub const MAX_LEN: usize = 4096;

    /// Pairs provider ciphertext with the key that produced it.
    pub fn new(key: KeyRef, bytes: Vec<u8>) -> Self {
        Self { key, bytes }
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key", &self.key)
            .field("len", &self.bytes.len())
            .finish()
    }
}
