//! The fast backend on `ring`.

use alloc::boxed::Box;

use ::ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use super::{AeadBackend, PreparedAead};
use crate::{Algorithm, Error, Result};

/// Assembly-optimised AEADs from `ring`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingBackend;

impl AeadBackend for RingBackend {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn prepare(&self, algorithm: Algorithm, key: &[u8; 32]) -> Result<Box<dyn PreparedAead>> {
        Ok(match algorithm {
            Algorithm::Aes256Gcm => Box::new(RingAesGcm(less_safe_key(&AES_256_GCM, key)?)),
            Algorithm::XChaCha20Poly1305 => Box::new(RingXChaCha(Zeroizing::new(*key))),
        })
    }
}

fn less_safe_key(alg: &'static ::ring::aead::Algorithm, key: &[u8]) -> Result<LessSafeKey> {
    let key = UnboundKey::new(alg, key).map_err(|_| Error::invalid_input("bad AEAD key length"))?;
    Ok(LessSafeKey::new(key))
}

struct RingAesGcm(LessSafeKey);

fn nonce12(nonce: &[u8]) -> Result<Nonce> {
    Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::invalid_input("bad nonce length"))
}

fn seal(key: &LessSafeKey, nonce: Nonce, aad: &[u8], buffer: &mut [u8]) -> Result<[u8; 16]> {
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), buffer)
        .map_err(|_| Error::invalid_input("message too long for the AEAD"))?;
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

fn open(
    key: &LessSafeKey,
    nonce: Nonce,
    aad: &[u8],
    buffer: &mut [u8],
    tag: &[u8; 16],
) -> Result<()> {
    key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), buffer, 0..)
        .map(|_| ())
        .map_err(|_| Error::InvalidCiphertext)
}

impl PreparedAead for RingAesGcm {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Aes256Gcm
    }

    fn seal_in_place(&self, nonce: &[u8], aad: &[u8], buffer: &mut [u8]) -> Result<[u8; 16]> {
        seal(&self.0, nonce12(nonce)?, aad, buffer)
    }

    fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<()> {
        let nonce = nonce12(nonce).map_err(|_| Error::InvalidCiphertext)?;
        open(&self.0, nonce, aad, buffer, tag)
    }
}

/// XChaCha20-Poly1305 = HChaCha20 subkey from the first 16 nonce bytes, then
/// ChaCha20-Poly1305 (RFC 8439) with nonce `0⁴ ‖ nonce[16..24]`.
struct RingXChaCha(Zeroizing<[u8; 32]>);

impl RingXChaCha {
    fn subkey(&self, nonce: &[u8]) -> Result<(LessSafeKey, Nonce)> {
        if nonce.len() != 24 {
            return Err(Error::invalid_input("bad nonce length"));
        }
        let mut key = chacha20::Key::from(*self.0);
        let mut input = [0u8; 16];
        input.copy_from_slice(&nonce[..16]);
        let mut subkey = chacha20::hchacha::<chacha20::R20>(&key, &input.into());
        key.as_mut_slice().zeroize();
        let prepared = less_safe_key(&CHACHA20_POLY1305, subkey.as_slice());
        subkey.as_mut_slice().zeroize();
        let mut tail = [0u8; 12];
        tail[4..].copy_from_slice(&nonce[16..]);
        Ok((prepared?, Nonce::assume_unique_for_key(tail)))
    }
}

impl PreparedAead for RingXChaCha {
    fn algorithm(&self) -> Algorithm {
        Algorithm::XChaCha20Poly1305
    }

    fn seal_in_place(&self, nonce: &[u8], aad: &[u8], buffer: &mut [u8]) -> Result<[u8; 16]> {
        let (key, nonce) = self.subkey(nonce)?;
        seal(&key, nonce, aad, buffer)
    }

    fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<()> {
        let (key, nonce) = self.subkey(nonce).map_err(|_| Error::InvalidCiphertext)?;
        open(&key, nonce, aad, buffer, tag)
    }
}
