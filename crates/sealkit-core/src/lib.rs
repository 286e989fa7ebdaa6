#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`Envelope`] / [`DekCipher`]: the v1 wire format and sealing/opening with a data key in hand
//!   (see `docs/format.md` in the repository for the byte-by-byte specification).
//! - [`backend`]: the AEAD backends (`ring`, RustCrypto) behind [`AeadBackend`].
//! - [`EncryptionContext`]: the canonical, mandatory associated data.
//! - [`DataKey`], [`KeyUri`], [`KeyVersion`], [`KeyRef`], [`WrappedKey`]: key types.
//! - [`provider`]: the traits that KMS and secret-store providers implement; [`registry`]: a
//!   provider described as one value.
//! - [`dek_store`]: the store compact-layout envelopes find their data keys in.
//! - [`legacy`]: decoders for pre-envelope formats (for hybrid mode and migrations).
#![no_std]
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs, clippy::exhaustive_enums)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod algorithm;
pub mod backend;
mod context;
pub mod dek_store;
pub mod envelope;
mod error;
mod key;
pub mod legacy;
mod legacy_key;
pub mod provider;
pub mod random;
pub mod registry;
mod seal;

pub use algorithm::Algorithm;
pub use backend::{AeadBackend, PreparedAead, default_backend};
pub use context::{ContextBuilder, EncryptionContext};
pub use envelope::{COMMITMENT_LEN, DEK_ID_LEN, Envelope, EnvelopeLayout, FORMAT_VERSION, MAGIC};
pub use error::{BoxedSource, Error, ErrorKind, Result, error_chain};
pub use key::{DataKey, KeyRef, KeyUri, KeyVersion, WrappedKey};
pub use random::SecureRandom;
pub use seal::{DekCipher, MessageBudget, ct_eq_bytes};
