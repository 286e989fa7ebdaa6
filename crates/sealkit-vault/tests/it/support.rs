//! Connecting to the OpenBao peer.

use sealkit_conformance::peers::peer_env;
use sealkit_vault::{VaultAuth, VaultConfig};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// The root-token configuration of the OpenBao peer, or `None` (test skips) without it.
pub(crate) fn root_config() -> Option<VaultConfig> {
    let addr = peer_env("SEALKIT_TEST_VAULT_ADDR", "OpenBao")?;
    let token = peer_env("SEALKIT_TEST_VAULT_TOKEN", "OpenBao")?;
    Some(VaultConfig::new(addr, VaultAuth::Token(token.into())))
}

/// A raw client with the root token, to set up policies, mounts and secrets.
pub(crate) fn root_client() -> Option<VaultClient> {
    let addr = peer_env("SEALKIT_TEST_VAULT_ADDR", "OpenBao")?;
    let token = peer_env("SEALKIT_TEST_VAULT_TOKEN", "OpenBao")?;
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        .build()
        .unwrap();
    Some(VaultClient::new(settings).unwrap())
}
