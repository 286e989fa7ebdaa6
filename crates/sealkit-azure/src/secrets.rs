//! Key Vault secrets as a secret source: `azure-kv-secrets:VAULT-HOST/NAME[@VERSION][#FIELD]`,
//! or `NAME` in the configured vault (`SEALKIT_AZURE_VAULT`).

use async_trait::async_trait;
use azure_security_keyvault_secrets::models::{SecretClientGetSecretOptions, SetSecretParameters};
use sealkit_core::provider::{
    Secret, SecretSource, secret_field, split_secret_field, with_secret_field,
};
use sealkit_core::{Error, Result};
use secrecy::ExposeSecret;

use crate::AzureSettings;
use crate::client::{Clients, SharedClients};
use crate::error::map;

/// The source's name (`azure-kv-secrets:` references).
pub const SOURCE: &str = "azure-kv-secrets";

/// Azure Key Vault secrets. Values are text (Key Vault stores strings); a version is Key
/// Vault's 32-hex id, the latest when none is given.
pub struct AzureSecrets {
    clients: std::sync::Arc<SharedClients>,
}

impl std::fmt::Debug for AzureSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSecrets")
            .field("settings", self.clients.settings())
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl AzureSecrets {
    /// A source with `settings`; the clients are built on first use.
    pub fn new(settings: AzureSettings) -> Self {
        Self::sharing(SharedClients::new(settings))
    }

    /// A source on clients shared with the keys half.
    pub(crate) fn sharing(clients: std::sync::Arc<SharedClients>) -> Self {
        Self { clients }
    }

    async fn clients(&self) -> Result<&Clients> {
        self.clients.get().await
    }

    /// The vault host and secret name of `VAULT-HOST/NAME` or `NAME` (in the configured
    /// vault).
    pub fn locate<'a>(&'a self, name: &'a str) -> Result<(&'a str, &'a str)> {
        let (host, secret) = match name.split_once('/') {
            Some((host, secret)) => (host, secret),
            None => (
                self.clients.settings().vault().ok_or_else(|| {
                    Error::misconfigured(format!(
                        "secret {name} names no vault; set SEALKIT_AZURE_VAULT or write VAULT-HOST/{name}"
                    ))
                })?,
                name,
            ),
        };
        if host.is_empty() || !valid_name(secret) {
            return Err(Error::invalid_input(format!(
                "{name:?} is not a Key Vault secret: write VAULT-HOST/NAME (NAME: letters, digits and '-')"
            )));
        }
        Ok((host, secret))
    }
}

#[async_trait]
impl SecretSource for AzureSecrets {
    fn name(&self) -> &str {
        SOURCE
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        let (name, field) = split_secret_field(name);
        let (host, secret) = self.locate(name)?;
        if let Some(v) = version
            && !(!v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(Error::invalid_input(format!(
                "{v:?} is not a Key Vault secret version (32 hex digits)"
            )));
        }
        let what = match version {
            Some(v) => format!("secret {host}/{secret} version {v}"),
            None => format!("secret {host}/{secret}"),
        };
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_string),
            ..Default::default()
        };
        let found = self
            .clients()
            .await?
            .secrets(host)?
            .get_secret(secret, Some(options))
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map(SOURCE, e, &what))?;
        let value = found.value.unwrap_or_default().into_bytes();
        let value = match field {
            Some(field) => secret_field(SOURCE, &what, &value, field)?,
            None => value,
        };
        let version = found
            .id
            .as_deref()
            .and_then(|id| id.rsplit('/').next())
            .map(str::to_string);
        Ok(Secret::new(value, version))
    }

    /// Sets a new version (creating the secret if needed); `NAME#FIELD` sets one field of a
    /// JSON object secret and keeps the others. Values must be UTF-8 text.
    async fn put_secret(&self, name: &str, value: &[u8]) -> Result<Option<String>> {
        let (id, field) = split_secret_field(name);
        let (host, secret) = self.locate(id)?;
        let body = match field {
            None => value.to_vec(),
            Some(field) => {
                let current = match self.get_secret(id, None).await {
                    Ok(s) => Some(s),
                    Err(e) if e.kind() == sealkit_core::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                let bytes = current.as_ref().map(|s| s.value.expose_secret().as_slice());
                with_secret_field(&format!("secret {host}/{secret}"), bytes, field, value)?
            }
        };
        let text = String::from_utf8(body).map_err(|_| {
            Error::invalid_input(format!(
                "Key Vault secrets hold text; the value for {host}/{secret} is not UTF-8 (encode it, e.g. base64)"
            ))
        })?;
        let mut params = SetSecretParameters::default();
        params.value = Some(text);
        let params = params
            .try_into()
            .map_err(|e| Error::other(SOURCE, format!("cannot encode the request: {e}")))?;
        let set = self
            .clients()
            .await?
            .secrets(host)?
            .set_secret(secret, params, None)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map(SOURCE, e, &format!("setting secret {host}/{secret}")))?;
        Ok(set
            .id
            .as_deref()
            .and_then(|id| id.rsplit('/').next())
            .map(str::to_string))
    }
}
