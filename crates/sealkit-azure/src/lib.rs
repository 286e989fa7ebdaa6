//! Sealkit's Azure provider: Key Vault keys ([`AzureKeyVault`],
//! `azure-kv://VAULT-HOST/keys/NAME`) and Key Vault secrets ([`AzureSecrets`],
//! `azure-kv-secrets:VAULT-HOST/NAME`), with Microsoft's official clients
//! (`azure_security_keyvault_keys`, `azure_security_keyvault_secrets`, `azure_identity`) over
//! rustls.
//!
//! Sign-in ([`SignIn`]) is a client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET`), workload identity (`AZURE_FEDERATED_TOKEN_FILE`) or a managed
//! identity (App Service's `IDENTITY_ENDPOINT`, else the VM's IMDS). See
//! `docs/providers/azure.md` for the roles and the test peer's differences from the service.
#![forbid(unsafe_code)]

mod client;
mod error;
mod keys;
mod secrets;
mod settings;

pub use keys::{AzureKeyVault, KEY_BITS, SCHEME};
pub use secrets::{AzureSecrets, SOURCE};
pub use settings::{
    AzureSettings, CA_FILE_VARIABLE, CONNECT_TO_VARIABLE, PROVIDER, SignIn, VAULT_VARIABLE,
};
