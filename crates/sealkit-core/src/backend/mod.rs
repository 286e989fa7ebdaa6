//! AEAD backends: where the block-cipher work happens.
//!
//! A backend turns a 256-bit key into a [`PreparedAead`] (key schedule computed once), which
//! then seals and opens in place. Two backends ship, producing identical bytes:
//!
//! - [`RingBackend`] (feature `ring`, the default): assembly AES-GCM and ChaCha20-Poly1305 from
//!   `ring`; XChaCha20 is built from `chacha20`'s HChaCha20 plus `ring`'s ChaCha20-Poly1305.
//!   About 3× faster for AES-256-GCM on CPUs with AES-NI/CLMUL. `ring` does not zeroize its
//!   expanded key schedules on drop.
//! - [`RustCryptoBackend`]: pure Rust (`aes-gcm`, `chacha20poly1305`), with key schedules
//!   zeroized on drop.

use alloc::boxed::Box;
use core::fmt::Debug;

use crate::{Algorithm, Result};

mod rustcrypto;
pub use rustcrypto::RustCryptoBackend;

#[cfg(feature = "ring")]
mod ring;
#[cfg(feature = "ring")]
pub use self::ring::RingBackend;

/// A source of AEAD implementations.
pub trait AeadBackend: Send + Sync + Debug {
    /// A short name for reports and benchmarks (`ring`, `rustcrypto`).
    fn name(&self) -> &'static str;

    /// Expands `key` for `algorithm`.
    fn prepare(&self, algorithm: Algorithm, key: &[u8; 32]) -> Result<Box<dyn PreparedAead>>;
}

/// An AEAD with its key schedule computed, ready for many messages.
pub trait PreparedAead: Send + Sync {
    /// The suite it implements.
    fn algorithm(&self) -> Algorithm;

    /// Encrypts `buffer` in place and returns the 16-byte tag.
    fn seal_in_place(&self, nonce: &[u8], aad: &[u8], buffer: &mut [u8]) -> Result<[u8; 16]>;

    /// Decrypts `buffer` in place after checking `tag`; on failure `buffer` holds no plaintext
    /// the caller may use.
    fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<()>;
}

/// The backend Sealkit uses unless told otherwise: `ring` when the `ring` feature is on,
/// otherwise RustCrypto.
pub fn default_backend() -> &'static dyn AeadBackend {
    #[cfg(feature = "ring")]
    {
        &RingBackend
    }
    #[cfg(not(feature = "ring"))]
    {
        &RustCryptoBackend
    }
}

/// Every backend compiled into this build, for tests and benchmarks.
#[allow(clippy::vec_init_then_push)] // the pushes depend on features
pub fn all_backends() -> alloc::vec::Vec<&'static dyn AeadBackend> {
    let mut backends: alloc::vec::Vec<&'static dyn AeadBackend> = alloc::vec::Vec::new();
    #[cfg(feature = "ring")]
    backends.push(&RingBackend);
    backends.push(&RustCryptoBackend);
    backends
}
