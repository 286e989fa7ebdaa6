//! Sealkit: envelope encryption of application data under keys held in a key-management
//! service.
//!
//! A [`Keyring`] seals each field with a data key (DEK) under AES-256-GCM or
//! XChaCha20-Poly1305 and wraps the DEK with a master key (KEK) that stays in the KMS. The
//! envelope records which key and version wrapped it, so [`Keyring::open`] routes to the right
//! provider by itself, and it is bound to an [`EncryptionContext`] (table, column, row id…):
//! a ciphertext moved to another row, or altered, fails to open.
//!
//! Providers are chosen à la carte by features; the default, `local`, pulls no cloud SDK.
//! Each compiled-in provider is one entry of [`providers::builtin`]. A keyring is built from a
//! [`Config`] alone ([`Keyring::builder`], which reads no environment variable), or from the
//! environment on request ([`Keyring::from_env`], [`Config::from_env`]).
//!
//! ```no_run
//! # async fn demo() -> sealkit::Result<()> {
//! use sealkit::{Config, EncryptionContext, Keyring, KeyUri};
//! let mut config = Config::default();
//! config.default_key = Some(KeyUri::parse("local://customers")?);
//! let keyring = Keyring::builder(config).build()?;
//! keyring.create_key(&KeyUri::parse("local://customers")?).await?;
//! let ctx = EncryptionContext::parse("table=customers,column=email,id=42")?;
//! let sealed = keyring.seal(b"alice@example.com", &ctx).await?;
//! assert_eq!(keyring.open(&sealed, &ctx).await?, b"alice@example.com");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod audit;
mod cache;
pub mod config;
mod health;
mod keyring;
pub mod metrics_names;
pub mod providers;
pub mod random;
mod resilience;
pub mod secrets;

pub use config::{Config, DekConfig, Layout, Mode, SecretConfig};
pub use health::HealthReport;
pub use keyring::{DekRewrapReport, Keyring, KeyringBuilder, KeyringStats, RewrapOutcome};
pub use resilience::CircuitState;
#[doc(inline)]
pub use sealkit_core::{
    Algorithm, DataKey, EncryptionContext, Error, ErrorKind, KeyRef, KeyUri, KeyVersion, Result,
    WrappedKey,
};

/// The core crate, for provider implementors and advanced use.
pub use sealkit_core as core;

/// The local provider.
#[cfg(feature = "local")]
#[doc(inline)]
pub use sealkit_local as local;

/// The AWS KMS / Secrets Manager provider.
#[cfg(feature = "aws")]
#[doc(inline)]
pub use sealkit_aws as aws;

/// The Vault / OpenBao provider.
#[cfg(feature = "vault")]
#[doc(inline)]
pub use sealkit_vault as vault;

/// The Google Cloud provider (Cloud KMS keys, Secret Manager secrets).
#[cfg(feature = "gcp")]
#[doc(inline)]
pub use sealkit_gcp as gcp;

/// The Azure provider (Key Vault keys and secrets).
#[cfg(feature = "azure")]
#[doc(inline)]
pub use sealkit_azure as azure;
