//! The local provider of Sealkit: master keys (KEKs) kept as files, and legacy master keys
//! read from environment variables.
//!
//! - [`LocalKeyStore`] implements [`KeyEncryption`](sealkit_core::provider::KeyEncryption) and
//!   [`KeyAdmin`](sealkit_core::provider::KeyAdmin) for `local://NAME` keys stored under a
//!   directory (`$SEALKIT_HOME/keys`, default `./.sealkit/keys`), one JSON file per key with
//!   numbered versions. Files are written atomically (temporary file, fsync, rename, fsync of
//!   the directory) with mode 0600, so a crash mid-rotation leaves either the old or the new
//!   key file, never a torn one. Key material may be sealed by a passphrase (argon2id).
//! - [`PROVIDER`] describes the provider for the facade's registry; [`LocalSettings`] holds
//!   its settings (`SEALKIT_HOME`, `SEALKIT_PASSPHRASE`).
//!
//! The local store suits development, tests and single-host deployments; the KEK sits on the
//! same disk as the application, so it does not give the separation a KMS gives.
#![forbid(unsafe_code)]

mod error;
mod settings;
pub mod store;

pub use settings::{LocalSettings, PROVIDER};
pub use store::{LocalKeyStore, RECHECK_INTERVAL, SCHEME};

pub(crate) use error::io_error;

/// Fills `dest` from the operating system's generator.
pub(crate) fn os_random(dest: &mut [u8]) -> sealkit_core::Result<()> {
    getrandom::fill(dest).map_err(|e| {
        sealkit_core::Error::unavailable("os-random", format!("getrandom failed: {e}"))
    })
}
