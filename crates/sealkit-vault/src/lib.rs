//! Sealkit's provider for HashiCorp Vault and OpenBao.
//!
//! - [`VaultTransit`]: `vault-transit://MOUNT/NAME` keys in the Transit engine. Data keys are
//!   wrapped by Transit `encrypt`/`datakey` and unwrapped by `decrypt`; the DEK scope is bound
//!   as the key-derivation `context` (keys Sealkit creates are `derived`) or as
//!   `associated_data` (existing non-derived keys). Rewrap uses Transit's server-side
//!   `rewrap`, so the DEK never leaves Vault. Admin: create (derived AES-256-GCM96), rotate,
//!   list versions, `min_decryption_version` to disable old versions, `trim` to destroy them.
//! - [`VaultKv`]: secrets from KV v1 or v2 (by version), as `path#field`.
//!
//! Configuration: [`VaultSettings::from_env`] reads `VAULT_ADDR`, `VAULT_TOKEN`,
//! `VAULT_NAMESPACE` and, for AppRole, `VAULT_ROLE_ID`/`VAULT_SECRET_ID`
//! (`SEALKIT_VAULT_APPROLE_MOUNT`, default `approle`); `SEALKIT_VAULT_ADDR` overrides the
//! address. See `docs/providers/vault.md` for policies and Kubernetes/JWT auth.
#![forbid(unsafe_code)]

mod error;
mod kv;
mod settings;
mod transit;

pub use kv::{KvVersion, VaultKv};
pub use settings::{PROVIDER, VaultAuth, VaultSettings};
pub use transit::{SCHEME, VaultTransit};
