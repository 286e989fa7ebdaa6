//! Sealing and opening with a data key in hand: key derivation, commitment, nonce budget.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{
    COMMITMENT_LEN, DEK_ID_LEN, FIXED_HEADER_LEN, KeySlot, compact_prefix, full_prefix, key_slot,
    with_prefix,
};
use crate::{
    AeadBackend, Algorithm, DataKey, EncryptionContext, Envelope, Error, PreparedAead, Result,
    SecureRandom, WrappedKey,
};

const HKDF_SALT: &[u8] = b"sealkit/v1/envelope";
const INFO_AEAD_KEY: &[u8] = b"sealkit/v1/aead-key";
const INFO_COMMIT_KEY: &[u8] = b"sealkit/v1/commit-key";
const INFO_DEK_ID: &[u8] = b"sealkit/v1/dek-id";
const INFO_SLOT: &[u8] = b"sealkit/v1/key-slot";
/// Associated data up to this size is assembled on the stack.
const STACK_AAD: usize = 256;

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
        Self {
            used: AtomicU64::new(0),
            limit,
        }
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

/// A data key prepared for one algorithm: the AEAD subkey and the commitment key, derived
/// once with HKDF-SHA256, plus the envelope header it writes and its message budget.
///
/// The DEK itself is not kept, only keys derived from it.
pub struct DekCipher {
    algorithm: Algorithm,
    aead: Arc<dyn PreparedAead>,
    commit_key: Zeroizing<[u8; 32]>,
    dek_id: [u8; DEK_ID_LEN],
    full: Option<FullSlot>,
    compact_prefix: Vec<u8>,
    budget: MessageBudget,
}

/// The key slot this cipher writes in full-layout envelopes, with its commitment.
#[derive(Clone)]
struct FullSlot {
    slot: Vec<u8>,
    commitment: [u8; COMMITMENT_LEN],
    prefix: Vec<u8>,
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
    /// Derives the AEAD key, the commitment key and the DEK id from `dek` for `algorithm`.
    pub fn new(backend: &dyn AeadBackend, algorithm: Algorithm, dek: &DataKey) -> Result<Self> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), dek.expose());
        let mut aead_key = Zeroizing::new([0u8; 32]);
        let mut commit_key = Zeroizing::new([0u8; 32]);
        let mut dek_id = [0u8; DEK_ID_LEN];
        let code = [algorithm.code()];
        hk.expand_multi_info(&[INFO_AEAD_KEY, &code], aead_key.as_mut())
            .and_then(|()| hk.expand_multi_info(&[INFO_COMMIT_KEY, &code], commit_key.as_mut()))
            .and_then(|()| hk.expand_multi_info(&[INFO_DEK_ID, &code], &mut dek_id))
            .map_err(|_| Error::invalid_input("HKDF output length"))?;
        let aead = Arc::from(backend.prepare(algorithm, &aead_key)?);
        Ok(Self {
            algorithm,
            aead,
            commit_key,
            dek_id,
            full: None,
            compact_prefix: compact_prefix(algorithm, &dek_id),
            budget: MessageBudget::new(algorithm.max_messages()),
        })
    }

    /// Records the wrapped form of this DEK, which full-layout envelopes carry.
    pub fn with_wrapped_key(mut self, wrapped: &WrappedKey) -> Result<Self> {
        let slot = key_slot(wrapped)?;
        let commitment = self.slot_commitment(&slot)?;
        let prefix = full_prefix(self.algorithm, &slot, &commitment);
        self.full = Some(FullSlot {
            slot,
            commitment,
            prefix,
        });
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

    /// The same DEK with a fresh budget of `limit` messages, sharing the prepared AEAD: for
    /// a process that reserved another block of a stored DEK's shared budget.
    pub fn with_fresh_budget(&self, limit: u64) -> Result<Self> {
        Self {
            algorithm: self.algorithm,
            aead: self.aead.clone(),
            commit_key: self.commit_key.clone(),
            dek_id: self.dek_id,
            full: self.full.clone(),
            compact_prefix: self.compact_prefix.clone(),
            budget: MessageBudget::new(self.algorithm.max_messages()),
        }
        .with_message_limit(limit)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key commitment written in full-layout envelopes (after
    /// [`DekCipher::with_wrapped_key`]); public, it reveals nothing about the key.
    pub fn commitment(&self) -> Option<&[u8; COMMITMENT_LEN]> {
        self.full.as_ref().map(|f| &f.commitment)
    }

    /// The DEK id written in compact-layout envelopes.
    pub fn dek_id(&self) -> [u8; DEK_ID_LEN] {
        self.dek_id
    }

    /// The message budget.
    pub fn budget(&self) -> &MessageBudget {
        &self.budget
    }

    /// HMAC-SHA256 of a key slot under the commitment key (HKDF-Expand with the slot as info).
    fn slot_commitment(&self, slot: &[u8]) -> Result<[u8; COMMITMENT_LEN]> {
        let hk = Hkdf::<Sha256>::from_prk(self.commit_key.as_ref())
            .map_err(|_| Error::invalid_input("commitment key length"))?;
        let mut out = [0u8; COMMITMENT_LEN];
        hk.expand_multi_info(&[INFO_SLOT, slot], &mut out)
            .map_err(|_| Error::invalid_input("HKDF output length"))?;
        Ok(out)
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
        let full = self.full.as_ref().ok_or_else(|| {
            Error::misconfigured("full-layout sealing needs the wrapped DEK (with_wrapped_key)")
        })?;
        self.seal_with_prefix(&full.prefix, FIXED_HEADER_LEN, rng, context, plaintext)
    }

    /// Seals `plaintext` as a compact-layout envelope (DEK id instead of the wrapped DEK).
    pub fn seal_compact(
        &self,
        rng: &dyn SecureRandom,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let fixed = self.compact_prefix.len();
        self.seal_with_prefix(&self.compact_prefix, fixed, rng, context, plaintext)
    }

    fn seal_with_prefix(
        &self,
        prefix: &[u8],
        fixed_len: usize,
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
        let nonce = &header[prefix.len()..];
        let tag = with_aad(&header[..fixed_len], nonce, context, |aad| {
            self.aead.seal_in_place(nonce, aad, body)
        })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Checks that `envelope` was sealed under this DEK: the commitment over its key slot
    /// (full) or its DEK id (compact), in constant time.
    pub fn verify_commitment(&self, envelope: &Envelope<'_>) -> Result<()> {
        let committed = match envelope.slot() {
            KeySlot::Wrapped { commitment, .. } => match &self.full {
                Some(full) if full.slot == envelope.key_slot_bytes() => {
                    ct_eq(commitment, &full.commitment)
                }
                _ => ct_eq(
                    commitment,
                    &self.slot_commitment(envelope.key_slot_bytes())?,
                ),
            },
            KeySlot::DekId(id) => ct_eq(id, &self.dek_id),
        };
        if envelope.algorithm() == self.algorithm && committed {
            Ok(())
        } else {
            Err(Error::InvalidCiphertext)
        }
    }

    /// Opens an envelope sealed under this DEK with the same context.
    ///
    /// Fails with the opaque [`Error::InvalidCiphertext`] on a wrong key (commitment mismatch),
    /// wrong context, or any altered byte.
    pub fn open(&self, envelope: &Envelope<'_>, context: &EncryptionContext) -> Result<Vec<u8>> {
        self.verify_commitment(envelope)?;
        let mut out = envelope.ciphertext().to_vec();
        let opened = with_aad(envelope.fixed_header(), envelope.nonce(), context, |aad| {
            self.aead
                .open_in_place(envelope.nonce(), aad, &mut out, envelope.tag())
        });
        match opened {
            Ok(()) => Ok(out),
            Err(_) => {
                out.zeroize();
                Err(Error::InvalidCiphertext)
            }
        }
    }

    /// Replaces the key slot of a full-layout envelope sealed under this DEK with `wrapped`
    /// (the same DEK wrapped anew, e.g. after a KEK rotation). The nonce, ciphertext and tag
    /// are copied unchanged; no data is decrypted.
    pub fn rewrap_envelope(
        &self,
        envelope: &Envelope<'_>,
        wrapped: &WrappedKey,
    ) -> Result<Vec<u8>> {
        if envelope.layout() != crate::EnvelopeLayout::Full {
            return Err(Error::invalid_input(
                "compact envelopes hold no wrapped DEK: rewrap the DEK in its store instead",
            ));
        }
        self.verify_commitment(envelope)?;
        let slot = key_slot(wrapped)?;
        let commitment = self.slot_commitment(&slot)?;
        Ok(with_prefix(
            envelope,
            &full_prefix(self.algorithm, &slot, &commitment),
        ))
    }
}

/// Compares two equal-length byte strings without data-dependent branches or early exit:
/// 64-bit words are XORed and ORed together, and only the final accumulator is tested.
/// (Cheaper than `subtle`'s byte-wise `Choice` chain on the 16- and 32-byte values compared
/// here; the `black_box` keeps the compiler from turning the fold into an early-exit loop.)
fn ct_eq<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let mut acc = 0u64;
    let (wa, ra) = a.as_chunks::<8>();
    let (wb, rb) = b.as_chunks::<8>();
    for (x, y) in wa.iter().zip(wb) {
        acc |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in ra.iter().zip(rb) {
        acc |= u64::from(x ^ y);
    }
    core::hint::black_box(acc) == 0
}

/// Compares two byte strings in time that depends only on their lengths (which it does not
/// hide): for secrets and MACs whose contents must not leak through timing.
pub fn ct_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u8;
    for (x, y) in a.iter().zip(b) {
        acc |= x ^ y;
    }
    core::hint::black_box(acc) == 0
}

/// Runs `f` with the associated data `fixed ‖ nonce ‖ context`, assembled on the stack when small.
fn with_aad<T>(
    fixed: &[u8],
    nonce: &[u8],
    context: &EncryptionContext,
    f: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    let ctx = context.canonical_bytes();
    let len = fixed.len() + nonce.len() + ctx.len();
    if len <= STACK_AAD {
        let mut buf = [0u8; STACK_AAD];
        buf[..fixed.len()].copy_from_slice(fixed);
        buf[fixed.len()..fixed.len() + nonce.len()].copy_from_slice(nonce);
        buf[fixed.len() + nonce.len()..len].copy_from_slice(ctx);
        f(&buf[..len])
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(fixed);
        buf.extend_from_slice(nonce);
        buf.extend_from_slice(ctx);
        f(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::{ct_eq, ct_eq_bytes};

    #[test]
    fn ct_eq_bytes_compares_contents_and_lengths() {
        assert!(ct_eq_bytes(b"", b""));
        assert!(ct_eq_bytes(b"same value", b"same value"));
        assert!(!ct_eq_bytes(b"same value", b"same valuf"));
        assert!(!ct_eq_bytes(b"short", b"shorter"));
        let base = [0x5Au8; 37];
        for i in 0..base.len() {
            let mut other = base;
            other[i] ^= 0x01;
            assert!(!ct_eq_bytes(&base, &other), "byte {i}");
        }
    }

    #[test]
    fn ct_eq_detects_a_difference_in_every_byte_and_bit() {
        let a = [0x5Au8; 32];
        assert!(ct_eq(&a, &a));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!ct_eq(&a, &b), "byte {i} bit {bit}");
            }
        }
        let (x, mut y) = ([1u8; 16], [1u8; 16]);
        assert!(ct_eq(&x, &y));
        y[15] = 0;
        assert!(!ct_eq(&x, &y));
    }
}

#[cfg(test)]
mod wiping_tests {
    use sha2::digest::block_api::CoreProxy;

    /// The states that derive the AEAD and commitment keys wipe themselves when dropped (the
    /// `zeroize` features of `sha2` and `hmac`): SHA-256 and the two SHA-256 cores an HMAC
    /// (and so HKDF) holds, keyed by the inner and outer pads.
    #[test]
    fn key_derivation_states_are_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<sha2::Sha256>();
        wiped_on_drop::<<sha2::Sha256 as CoreProxy>::Core>();
    }
}
