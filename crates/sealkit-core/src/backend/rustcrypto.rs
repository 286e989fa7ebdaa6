//! The pure-Rust backend on RustCrypto's `aes-gcm` and `chacha20poly1305`.

use alloc::boxed::Box;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;

use super::{AeadBackend, PreparedAead};
use crate::{Algorithm, Error, Result};

/// Pure-Rust AEADs from the RustCrypto project. Key schedules are zeroized on drop.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCryptoBackend;

impl AeadBackend for RustCryptoBackend {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn prepare(&self, algorithm: Algorithm, key: &[u8; 32]) -> Result<Box<dyn PreparedAead>> {
        let key = Array::from(*key);
        Ok(match algorithm {
            Algorithm::Aes256Gcm => Box::new(Suite {
                algorithm,
                aead: Aes256Gcm::new(&key),
            }),
            Algorithm::XChaCha20Poly1305 => Box::new(Suite {
                algorithm,
                aead: XChaCha20Poly1305::new(&key),
            }),
        })
    }
}

struct Suite<A> {
    algorithm: Algorithm,
    aead: A,
}

impl<A: AeadInOut + Send + Sync> PreparedAead for Suite<A> {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn seal_in_place(&self, nonce: &[u8], aad: &[u8], buffer: &mut [u8]) -> Result<[u8; 16]> {
        let nonce = Array::try_from(nonce).map_err(|_| Error::invalid_input("bad nonce length"))?;
        let tag = self
            .aead
            .encrypt_inout_detached(&nonce, aad, buffer.into())
            .map_err(|_| Error::invalid_input("message too long for the AEAD"))?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<()> {
        let nonce = Array::try_from(nonce).map_err(|_| Error::InvalidCiphertext)?;
        let tag = Array::try_from(&tag[..]).map_err(|_| Error::InvalidCiphertext)?;
        self.aead
            .decrypt_inout_detached(&nonce, aad, buffer.into(), &tag)
            .map_err(|_| Error::InvalidCiphertext)
    }
}
