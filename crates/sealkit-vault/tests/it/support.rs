//! Connecting to the OpenBao peer.

use sealkit_conformance::peers::vault_peer;
use sealkit_vault::{VaultAuth, VaultSettings};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// The root-token configuration of the OpenBao peer, or `None` (test skips) without it.
pub(crate) fn root_config() -> Option<VaultSettings> {
    let (addr, token) = vault_peer()?;
    Some(VaultSettings::new(addr, VaultAuth::Token(token.into())))
}

/// A raw client with the root token, to set up policies, mounts and secrets.
pub(crate) fn root_client() -> Option<VaultClient> {
    let (addr, token) = vault_peer()?;
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        .build()
        .unwrap();
    Some(VaultClient::new(settings).unwrap())
}
