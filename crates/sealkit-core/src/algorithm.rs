//! The AEAD suites an envelope can use.

use core::fmt;

/// An AEAD suite for sealing data under a data key.
///
/// Both suites use a 256-bit key and a 128-bit tag. The byte value is the algorithm's code in
/// the envelope header and never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256 in Galois/Counter Mode with a random 96-bit nonce.
    Aes256Gcm,
    /// XChaCha20-Poly1305 with a random 192-bit nonce.
    XChaCha20Poly1305,
}

impl Algorithm {
    /// Length of the AEAD key, in bytes.
    pub const KEY_LEN: usize = 32;
    /// Length of the authentication tag, in bytes.
    pub const TAG_LEN: usize = 16;

    /// The algorithm's code in the envelope header.
    pub const fn code(self) -> u8 {
        match self {
            Self::Aes256Gcm => 0x01,
            Self::XChaCha20Poly1305 => 0x02,
        }
    }

    /// Looks an algorithm up by its header code.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x01 => Some(Self::Aes256Gcm),
            0x02 => Some(Self::XChaCha20Poly1305),
            _ => None,
        }
    }

    /// Length of the nonce, in bytes.
    pub const fn nonce_len(self) -> usize {
        match self {
            Self::Aes256Gcm => 12,
            Self::XChaCha20Poly1305 => 24,
        }
    }

    /// The largest number of messages one data key may seal with random nonces.
    ///
    /// AES-GCM with random 96-bit nonces must stay at or below 2^32 messages per key (NIST SP
    /// 800-38D §8.3); XChaCha20's 192-bit nonces make collisions negligible far beyond that, so
    /// its hard cap is 2^48.
    pub const fn max_messages(self) -> u64 {
        match self {
            Self::Aes256Gcm => 1 << 32,
            Self::XChaCha20Poly1305 => 1 << 48,
        }
    }

    /// The stable, lower-case name used in configuration and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "aes-256-gcm",
            Self::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Algorithm {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "aes-256-gcm" | "aes256gcm" | "aes-gcm" => Ok(Self::Aes256Gcm),
            "xchacha20-poly1305" | "xchacha20poly1305" | "xchacha" => Ok(Self::XChaCha20Poly1305),
            _ => Err(crate::Error::invalid_input(alloc::format!(
                "unknown algorithm {s:?}; use \"aes-256-gcm\" or \"xchacha20-poly1305\""
            ))),
        }
    }
}
