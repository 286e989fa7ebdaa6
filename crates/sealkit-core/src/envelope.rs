//! The v1 envelope wire format: parsing (borrowed, allocation-free) and header encoding.
//!
//! ```text
//! full layout                         compact layout
//! 0   2  magic "SK"                   0   2  magic "SK"
//! 2   1  format version (1)           2   1  format version (1)
//! 3   1  layout (1 = full)            3   1  layout (2 = compact)
//! 4   1  algorithm                    4   1  algorithm
//! 5   1  U: key URI length            5  16  DEK id (HKDF of the DEK)
//! 6   U  key URI (UTF-8)              21  N  nonce
//! .   1  V: key version length        .   *  ciphertext
//! .   V  key version (ASCII)          .  16  tag
//! .   2  W: wrapped DEK length (BE)
//! .   W  wrapped DEK
//! .  32  key commitment
//! .   N  nonce (12 or 24)
//! .   *  ciphertext
//! .  16  tag
//! ```
//!
//! Everything before the ciphertext is the *header*, and every header byte is authenticated:
//!
//! - the AEAD's associated data is `fixed ‖ nonce ‖ context.canonical_bytes()`, where `fixed`
//!   is bytes 0..5 (full) or 0..21 (compact, so the DEK id is included);
//! - the *key slot* of a full envelope (URI, version, wrapped DEK: bytes 5 up to the
//!   commitment) is authenticated by the key commitment, an HMAC-SHA256 of the slot under a key
//!   derived from the DEK, which is checked in constant time after unwrapping. Any other DEK, or
//!   any altered slot byte, fails the check.
//!
//! Keeping the key slot out of the AEAD's associated data is what lets a KEK rotation rewrap
//! the DEK and replace the slot and commitment without touching the ciphertext or tag.

use alloc::vec::Vec;

use crate::key::{KeyRef, KeyUri, KeyVersion, WrappedKey};
use crate::{Algorithm, Error, Result};

/// The two magic bytes that open every envelope.
pub const MAGIC: [u8; 2] = *b"SK";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the key commitment in full-layout envelopes, in bytes.
pub const COMMITMENT_LEN: usize = 32;
/// Length of the DEK id in compact-layout envelopes, in bytes.
pub const DEK_ID_LEN: usize = 16;
/// Magic, format version, layout and algorithm: the fixed start of every header.
pub(crate) const FIXED_HEADER_LEN: usize = MAGIC.len() + 3;

/// How an envelope names its data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeLayout {
    /// The envelope carries the key reference and the wrapped DEK: self-contained.
    Full,
    /// The envelope carries only a 16-byte DEK id; the wrapped DEK is stored once elsewhere.
    Compact,
}

impl EnvelopeLayout {
    /// The layout's header code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Full => 0x01,
            Self::Compact => 0x02,
        }
    }
}

/// How a parsed envelope identifies its data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySlot<'a> {
    /// Full layout: master key, version, wrapped DEK and key commitment.
    Wrapped {
        /// The master key URI.
        uri: &'a str,
        /// The master key version.
        version: &'a str,
        /// The wrapped DEK.
        wrapped: &'a [u8],
        /// The DEK's commitment.
        commitment: &'a [u8; COMMITMENT_LEN],
    },
    /// Compact layout: the DEK id.
    DekId(&'a [u8; DEK_ID_LEN]),
}

/// A parsed envelope, borrowing from the input bytes.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    algorithm: Algorithm,
    slot: KeySlot<'a>,
    fixed: &'a [u8],
    slot_bytes: &'a [u8],
    header: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8; 16],
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(Error::MalformedEnvelope { reason: what })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
}

impl<'a> Envelope<'a> {
    /// Smallest possible envelope (compact, AES-GCM, empty plaintext).
    pub const MIN_LEN: usize = FIXED_HEADER_LEN + DEK_ID_LEN + 12 + 16;

    /// Whether `bytes` starts like a v1 envelope (magic and version). Cheap; not a validation.
    pub fn looks_like(bytes: &[u8]) -> bool {
        bytes.len() >= 3 && bytes[..2] == MAGIC && bytes[2] == FORMAT_VERSION
    }

    /// Parses an envelope. Never panics; every structural fault is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(2, "shorter than the magic bytes")? != MAGIC {
            return Err(Error::MalformedEnvelope {
                reason: "wrong magic bytes",
            });
        }
        let version = r.byte("missing format version")?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedFormat { version });
        }
        let layout = r.byte("missing layout")?;
        let algorithm =
            Algorithm::from_code(r.byte("missing algorithm")?).ok_or(Error::MalformedEnvelope {
                reason: "unknown algorithm code",
            })?;
        let slot_start = r.pos;
        let mut slot_end = r.pos;
        let slot = match layout {
            0x01 => {
                let u = r.byte("missing key URI length")? as usize;
                let uri = core::str::from_utf8(r.take(u, "truncated key URI")?).map_err(|_| {
                    Error::MalformedEnvelope {
                        reason: "key URI is not UTF-8",
                    }
                })?;
                if uri.is_empty() {
                    return Err(Error::MalformedEnvelope {
                        reason: "empty key URI",
                    });
                }
                let v = r.byte("missing key version length")? as usize;
                let version =
                    core::str::from_utf8(r.take(v, "truncated key version")?).map_err(|_| {
                        Error::MalformedEnvelope {
                            reason: "key version is not UTF-8",
                        }
                    })?;
                if version.is_empty() {
                    return Err(Error::MalformedEnvelope {
                        reason: "empty key version",
                    });
                }
                let w = r.take(2, "missing wrapped key length")?;
                let w = u16::from_be_bytes([w[0], w[1]]) as usize;
                if w == 0 || w > WrappedKey::MAX_LEN {
                    return Err(Error::MalformedEnvelope {
                        reason: "bad wrapped key length",
                    });
                }
                let wrapped = r.take(w, "truncated wrapped key")?;
                slot_end = r.pos;
                let commitment = r.take(COMMITMENT_LEN, "truncated key commitment")?;
                KeySlot::Wrapped {
                    uri,
                    version,
                    wrapped,
                    commitment: commitment
                        .try_into()
                        .map_err(|_| Error::MalformedEnvelope {
                            reason: "truncated key commitment",
                        })?,
                }
            }
            0x02 => {
                let id = r.take(DEK_ID_LEN, "truncated DEK id")?;
                KeySlot::DekId(id.try_into().map_err(|_| Error::MalformedEnvelope {
                    reason: "truncated DEK id",
                })?)
            }
            _ => {
                return Err(Error::MalformedEnvelope {
                    reason: "unknown layout code",
                });
            }
        };
        let fixed = if layout == 0x01 {
            &bytes[..slot_start]
        } else {
            &bytes[..r.pos]
        };
        let slot_bytes = &bytes[slot_start..slot_end];
        let nonce = r.take(algorithm.nonce_len(), "truncated nonce")?;
        let header = &bytes[..r.pos];
        let rest = &bytes[r.pos..];
        if rest.len() < Algorithm::TAG_LEN {
            return Err(Error::MalformedEnvelope {
                reason: "truncated ciphertext or tag",
            });
        }
        let (ciphertext, tag) = rest.split_at(rest.len() - Algorithm::TAG_LEN);
        let tag = tag.try_into().map_err(|_| Error::MalformedEnvelope {
            reason: "truncated ciphertext or tag",
        })?;
        Ok(Self {
            algorithm,
            slot,
            fixed,
            slot_bytes,
            header,
            nonce,
            ciphertext,
            tag,
        })
    }

    /// The AEAD suite.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The layout.
    pub fn layout(&self) -> EnvelopeLayout {
        match self.slot {
            KeySlot::Wrapped { .. } => EnvelopeLayout::Full,
            KeySlot::DekId(_) => EnvelopeLayout::Compact,
        }
    }

    /// How the envelope names its data key.
    pub fn slot(&self) -> KeySlot<'a> {
        self.slot
    }

    /// The wrapped DEK bytes (full layout only).
    pub fn wrapped_bytes(&self) -> Option<&'a [u8]> {
        match self.slot {
            KeySlot::Wrapped { wrapped, .. } => Some(wrapped),
            KeySlot::DekId(_) => None,
        }
    }

    /// The master key reference, validated (full layout only).
    pub fn key_ref(&self) -> Option<Result<KeyRef>> {
        match self.slot {
            KeySlot::Wrapped { uri, version, .. } => Some(
                KeyUri::parse(uri)
                    .and_then(|u| Ok(KeyRef::new(u, KeyVersion::new(version)?)))
                    .map_err(|_| Error::MalformedEnvelope {
                        reason: "invalid key reference",
                    }),
            ),
            KeySlot::DekId(_) => None,
        }
    }

    /// The wrapped DEK with its key reference (full layout only).
    pub fn wrapped_key(&self) -> Option<Result<WrappedKey>> {
        let bytes = self.wrapped_bytes()?;
        Some(
            self.key_ref()?
                .map(|key| WrappedKey::new(key, bytes.to_vec())),
        )
    }

    /// The fixed header fields bound as associated data (magic, version, layout, algorithm and,
    /// in compact envelopes, the DEK id).
    pub fn fixed_header(&self) -> &'a [u8] {
        self.fixed
    }

    /// The key slot of a full envelope (URI, version, wrapped DEK, with their length prefixes);
    /// empty for compact envelopes.
    pub fn key_slot_bytes(&self) -> &'a [u8] {
        self.slot_bytes
    }

    /// The header: every byte before the ciphertext.
    pub fn header(&self) -> &'a [u8] {
        self.header
    }

    /// The nonce.
    pub fn nonce(&self) -> &'a [u8] {
        self.nonce
    }

    /// The ciphertext, without the tag.
    pub fn ciphertext(&self) -> &'a [u8] {
        self.ciphertext
    }

    /// The authentication tag.
    pub fn tag(&self) -> &'a [u8; 16] {
        self.tag
    }
}

/// Encodes the key slot of a full-layout envelope.
pub(crate) fn key_slot(wrapped: &WrappedKey) -> Result<Vec<u8>> {
    let uri = wrapped.key.uri.as_str().as_bytes();
    let version = wrapped.key.version.as_str().as_bytes();
    let w = wrapped.bytes.len();
    if w == 0 || w > WrappedKey::MAX_LEN {
        return Err(Error::invalid_input("wrapped key must be 1 to 4096 bytes"));
    }
    let mut out = Vec::with_capacity(4 + uri.len() + version.len() + w);
    out.push(uri.len() as u8);
    out.extend_from_slice(uri);
    out.push(version.len() as u8);
    out.extend_from_slice(version);
    out.extend_from_slice(&(w as u16).to_be_bytes());
    out.extend_from_slice(&wrapped.bytes);
    Ok(out)
}

/// `envelope` with its header up to the nonce replaced by `prefix`: the nonce, ciphertext and
/// tag are copied as they are (a rewrap changes the key slot only).
pub(crate) fn with_prefix(envelope: &Envelope<'_>, prefix: &[u8]) -> Vec<u8> {
    let body = envelope.ciphertext().len() + Algorithm::TAG_LEN;
    let mut out = Vec::with_capacity(prefix.len() + envelope.nonce().len() + body);
    out.extend_from_slice(prefix);
    out.extend_from_slice(envelope.nonce());
    out.extend_from_slice(envelope.ciphertext());
    out.extend_from_slice(envelope.tag());
    out
}

/// Writes the header of a full-layout envelope up to (not including) the nonce.
pub(crate) fn full_prefix(
    algorithm: Algorithm,
    slot: &[u8],
    commitment: &[u8; COMMITMENT_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_HEADER_LEN + slot.len() + COMMITMENT_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(EnvelopeLayout::Full.code());
    out.push(algorithm.code());
    out.extend_from_slice(slot);
    out.extend_from_slice(commitment);
    out
}

/// Writes the header of a compact-layout envelope up to (not including) the nonce.
pub(crate) fn compact_prefix(algorithm: Algorithm, dek_id: &[u8; DEK_ID_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_HEADER_LEN + DEK_ID_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(EnvelopeLayout::Compact.code());
    out.push(algorithm.code());
    out.extend_from_slice(dek_id);
    out
}
