//! Sealing and opening with a data key in hand: key derivation, commitment, nonce budget.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{KeySlot, compact_prefix, full_prefix};
use crate::{
    AeadBackend, Algorithm, DataKey, EncryptionContext, Envelope, Error, PreparedAead, Result,
    SecureRandom, WrappedKey,
};

/// Length of the key commitment in full-layout envelopes, in bytes.
pub const COMMITMENT_LEN: usize = 32;
/// Length of the DEK id in compact-layout envelopes, in bytes (a prefix of the commitment).
pub const DEK_ID_LEN: usize = 16;

const HKDF_SALT: &[u8] = b"sealkit/v1/envelope";
const INFO_AEAD_KEY: &[u8] = b"sealkit/v1/aead-key";
const INFO_COMMITMENT: &[u8] = b"sealkit/v1/key-commitment";
/// Associated data up to this size is assembled on the stack.
const STACK_AAD: usize = 512;

/// How many messages a data key may still seal.
///
/// Counting is atomic, so one key can be shared between threads; a seal that would exceed the
/// limit fails with [`Error::MessageBudgetExhausted`] and the caller fetches a fresh DEK.
#[derive(Debug)]
pub struct MessageBudget {
    used: AtomicU64,
    limit: u64,
}

impl MessageBudget {
    fn new(limit: u64) -> Self {
        Self { used: AtomicU64::new(0), limit }
    }

    fn take(&self) -> Result<()> {
        // fetch_add never wraps in practice: the limit is at most 2^48.
        if self.used.fetch_add(1, Ordering::Relaxed) < self.limit {
            Ok(())
        } else {
            self.used.fetch_sub(1, Ordering::Relaxed);
            Err(Error::MessageBudgetExhausted)
        }
    }

    /// Messages sealed so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).min(self.limit)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Messages left.
    pub fn remaining(&self) -> u64 {
        self.limit - self.used()
    }
}

/// A data key prepared for one algorithm: the AEAD subkey and the key commitment, derived once
/// with HKDF-SHA256, plus the envelope header it writes and its message budget.
///
/// The DEK itself is not kept: only the derived AEAD key schedule and the commitment.
pub struct DekCipher {
    algorithm: Algorithm,
    aead: Box<dyn PreparedAead>,
    commitment: [u8; COMMITMENT_LEN],
    full_prefix: Option<Vec<u8>>,
    compact_prefix: Vec<u8>,
    budget: MessageBudget,
}

impl fmt::Debug for DekCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekCipher")
            .field("algorithm", &self.algorithm)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl DekCipher {
    /// Derives the AEAD key and the commitment from `dek` for `algorithm`.
    pub fn new(backend: &dyn AeadBackend, algorithm: Algorithm, dek: &DataKey) -> Result<Self> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), dek.expose());
        let mut aead_key = Zeroizing::new([0u8; 32]);
        let mut commitment = [0u8; COMMITMENT_LEN];
        let code = [algorithm.code()];
        hk.expand_multi_info(&[INFO_AEAD_KEY, &code], aead_key.as_mut())
            .and_then(|()| hk.expand_multi_info(&[INFO_COMMITMENT, &code], &mut commitment))
            .map_err(|_| Error::invalid_input("HKDF output length"))?;
        let aead = backend.prepare(algorithm, &aead_key)?;
        let mut dek_id = [0u8; DEK_ID_LEN];
        dek_id.copy_from_slice(&commitment[..DEK_ID_LEN]);
        Ok(Self {
            algorithm,
            aead,
            commitment,
            full_prefix: None,
            compact_prefix: compact_prefix(algorithm, &dek_id),
            budget: MessageBudget::new(algorithm.max_messages()),
        })
    }

    /// Records the wrapped form of this DEK, which full-layout envelopes carry.
    pub fn with_wrapped_key(mut self, wrapped: &WrappedKey) -> Result<Self> {
        self.full_prefix = Some(full_prefix(self.algorithm, wrapped, &self.commitment)?);
        Ok(self)
    }

    /// Lowers the message budget below the algorithm's hard cap.
    pub fn with_message_limit(mut self, limit: u64) -> Result<Self> {
        if limit == 0 || limit > self.algorithm.max_messages() {
            return Err(Error::invalid_input(alloc::format!(
                "message limit must be between 1 and {} for {}",
                self.algorithm.max_messages(),
                self.algorithm
            )));
        }
        self.budget = MessageBudget::new(limit);
        Ok(self)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key commitment (public: it reveals nothing about the key).
    pub fn commitment(&self) -> &[u8; COMMITMENT_LEN] {
        &self.commitment
    }

    /// The DEK id written by compact envelopes: the first 16 bytes of the commitment.
    pub fn dek_id(&self) -> [u8; DEK_ID_LEN] {
        let mut id = [0u8; DEK_ID_LEN];
        id.copy_from_slice(&self.commitment[..DEK_ID_LEN]);
        id
    }

    /// The message budget.
    pub fn budget(&self) -> &MessageBudget {
        &self.budget
    }

    /// Seals `plaintext` as a full-layout envelope bound to `context`.
    ///
    /// Requires [`DekCipher::with_wrapped_key`].
    pub fn seal(
        &self,
        rng: &dyn SecureRandom,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let prefix = self.full_prefix.as_deref().ok_or_else(|| {
            Error::misconfigured("full-layout sealing needs the wrapped DEK (with_wrapped_key)")
        })?;
        self.seal_with_prefix(prefix, rng, context, plaintext)
    }

    /// Seals `plaintext` as a compact-layout envelope (DEK id instead of the wrapped DEK).
    pub fn seal_compact(
        &self,
        rng: &dyn SecureRandom,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.seal_with_prefix(&self.compact_prefix, rng, context, plaintext)
    }

    fn seal_with_prefix(
        &self,
        prefix: &[u8],
        rng: &dyn SecureRandom,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.budget.take()?;
        let nonce_len = self.algorithm.nonce_len();
        let header_len = prefix.len() + nonce_len;
        let mut out = Vec::with_capacity(header_len + plaintext.len() + Algorithm::TAG_LEN);
        out.extend_from_slice(prefix);
        out.resize(header_len, 0);
        rng.fill(&mut out[prefix.len()..])?;
        out.extend_from_slice(plaintext);
        let (header, body) = out.split_at_mut(header_len);
        let tag = with_aad(header, context, |aad| {
            self.aead.seal_in_place(&header[prefix.len()..], aad, body)
        })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens an envelope sealed under this DEK with the same context.
    ///
    /// Fails with the opaque [`Error::InvalidCiphertext`] on a wrong key (commitment mismatch),
    /// wrong context, or any altered byte.
    pub fn open(&self, envelope: &Envelope<'_>, context: &EncryptionContext) -> Result<Vec<u8>> {
        let committed = match envelope.slot() {
            KeySlot::Wrapped { commitment, .. } => commitment.ct_eq(&self.commitment),
            KeySlot::DekId(id) => id.ct_eq(&self.commitment[..DEK_ID_LEN]),
        };
        if envelope.algorithm() != self.algorithm || !bool::from(committed) {
            return Err(Error::InvalidCiphertext);
        }
        let mut out = envelope.ciphertext().to_vec();
        let opened = with_aad(envelope.header(), context, |aad| {
            self.aead.open_in_place(envelope.nonce(), aad, &mut out, envelope.tag())
        });
        match opened {
            Ok(()) => Ok(out),
            Err(_) => {
                out.zeroize();
                Err(Error::InvalidCiphertext)
            }
        }
    }
}

/// Runs `f` with the associated data `header ‖ context`, assembled on the stack when small.
fn with_aad<T>(
    header: &[u8],
    context: &EncryptionContext,
    f: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    let ctx = context.canonical_bytes();
    let len = header.len() + ctx.len();
    if len <= STACK_AAD {
        let mut buf = [0u8; STACK_AAD];
        buf[..header.len()].copy_from_slice(header);
        buf[header.len()..len].copy_from_slice(ctx);
        f(&buf[..len])
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(header);
        buf.extend_from_slice(ctx);
        f(&buf)
    }
}
