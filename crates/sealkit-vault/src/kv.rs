//! Secrets from the KV engine (v1 or v2).

use async_trait::async_trait;
use sealkit_core::provider::{Secret, SecretSource};
use sealkit_core::{Error, Result};
use serde_json::Value;
use vaultrs::client::VaultClient;

use crate::VaultSettings;
use crate::error::map;

/// The KV engine version of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvVersion {
    /// KV v1: one value per path, no versions.
    V1,
    /// KV v2: versioned values.
    V2,
}

/// A Vault KV mount as a [`SecretSource`].
///
/// A secret's name is `PATH` or `PATH#FIELD` (field default `value`) within the source's mount;
/// a source made with [`VaultKv::any_mount`] takes the mount as the name's first segment
/// (`secret/app/db#password`). A version selects a KV v2 version (`3`); KV v1 refuses versions.
pub struct VaultKv {
    config: VaultSettings,
    client: tokio::sync::OnceCell<VaultClient>,
    mount: String,
    version: KvVersion,
    label: String,
}

impl std::fmt::Debug for VaultKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKv")
            .field("mount", &self.mount)
            .field("version", &self.version)
            .finish()
    }
}

impl VaultKv {
    /// Any KV mount of that version: the mount is the first segment of each secret's name.
    pub fn any_mount(config: VaultSettings, version: KvVersion) -> Self {
        Self::new(config, "", version)
    }

    /// The KV `mount` of the Vault `config` describes; it connects on first use.
    pub fn new(config: VaultSettings, mount: &str, version: KvVersion) -> Self {
        let label = match version {
            KvVersion::V1 => "vault-kv1",
            KvVersion::V2 => "vault-kv2",
        };
        Self {
            config,
            client: tokio::sync::OnceCell::new(),
            mount: mount.to_string(),
            version,
            label: label.into(),
        }
    }

    async fn client(&self) -> Result<&VaultClient> {
        self.client.get_or_try_init(|| self.config.connect()).await
    }
}

#[async_trait]
impl SecretSource for VaultKv {
    fn name(&self) -> &str {
        &self.label
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        let (path, field) = name.split_once('#').unwrap_or((name, "value"));
        let (mount, path) = if self.mount.is_empty() {
            path.split_once('/').ok_or_else(|| {
                Error::invalid_input(format!("secret name {name:?} must be MOUNT/PATH"))
            })?
        } else {
            (self.mount.as_str(), path)
        };
        let what = format!("secret {mount}/{path}");
        let data: Value = match (self.version, version) {
            (KvVersion::V1, Some(_)) => {
                return Err(Error::invalid_input(format!(
                    "{what}: KV v1 keeps no versions"
                )));
            }
            (KvVersion::V1, None) => vaultrs::kv1::get(self.client().await?, mount, path).await,
            (KvVersion::V2, None) => vaultrs::kv2::read(self.client().await?, mount, path).await,
            (KvVersion::V2, Some(v)) => {
                let n = v.parse().map_err(|_| {
                    Error::invalid_input(format!("{what}: version {v:?} is not a number"))
                })?;
                vaultrs::kv2::read_version(self.client().await?, mount, path, n).await
            }
        }
        .map_err(|e| map(e, &what))?;
        let value = data.get(field).ok_or_else(|| {
            Error::not_found(self.label.clone(), format!("field {field:?} of {what}"))
        })?;
        let bytes = match value {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        Ok(Secret::new(bytes, version.map(str::to_string)))
    }
}
