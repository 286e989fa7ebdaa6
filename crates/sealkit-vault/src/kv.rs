//! Secrets from the KV engine (v1 or v2).

use async_trait::async_trait;
use sealkit_core::provider::{Secret, SecretSource};
use sealkit_core::{Error, Result};
use serde_json::{Map, Value};
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

    /// The mount, path and field (default `value`) a secret name denotes.
    fn locate<'a>(&'a self, name: &'a str) -> Result<(&'a str, &'a str, &'a str)> {
        let (path, field) = name.split_once('#').unwrap_or((name, "value"));
        let (mount, path) = if self.mount.is_empty() {
            path.split_once('/').ok_or_else(|| {
                Error::invalid_input(format!("secret name {name:?} must be MOUNT/PATH"))
            })?
        } else {
            (self.mount.as_str(), path)
        };
        Ok((mount, path, field))
    }

    /// The fields at `path` now, or none if nothing is stored there.
    async fn current_fields(
        &self,
        mount: &str,
        path: &str,
        what: &str,
    ) -> Result<Map<String, Value>> {
        let client = self.client().await?;
        let read: std::result::Result<Value, _> = match self.version {
            KvVersion::V1 => vaultrs::kv1::get(client, mount, path).await,
            KvVersion::V2 => vaultrs::kv2::read(client, mount, path).await,
        };
        match read.map_err(|e| map(e, what)) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err(Error::invalid_input(format!("{what} does not hold fields"))),
            Err(e) if e.kind() == sealkit_core::ErrorKind::NotFound => Ok(Map::new()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl SecretSource for VaultKv {
    fn name(&self) -> &str {
        &self.label
    }

    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret> {
        let (mount, path, field) = self.locate(name)?;
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

    /// Sets one field (default `value`) at the path, keeping the others. KV v2 writes a new
    /// version with check-and-set, so a concurrent writer's change is never overwritten.
    async fn put_secret(&self, name: &str, value: &[u8]) -> Result<Option<String>> {
        let (mount, path, field) = self.locate(name)?;
        let what = format!("secret {mount}/{path}");
        let text = std::str::from_utf8(value).map_err(|_| {
            Error::invalid_input(format!(
                "the value for {what} is not text; Vault KV fields hold text (store binary values as base64)"
            ))
        })?;
        let client = self.client().await?;
        match self.version {
            KvVersion::V1 => {
                let mut fields = self.current_fields(mount, path, &what).await?;
                fields.insert(field.to_string(), Value::String(text.to_string()));
                let fields: std::collections::HashMap<&str, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                vaultrs::kv1::set(client, mount, path, &fields)
                    .await
                    .map_err(|e| map(e, &what))?;
                Ok(None)
            }
            KvVersion::V2 => {
                let current = match vaultrs::kv2::read_metadata(client, mount, path).await {
                    Ok(meta) => meta.current_version,
                    Err(e) => match map(e, &what) {
                        e if e.kind() == sealkit_core::ErrorKind::NotFound => 0,
                        e => return Err(e),
                    },
                };
                let mut fields = self.current_fields(mount, path, &what).await?;
                fields.insert(field.to_string(), Value::String(text.to_string()));
                let cas = u32::try_from(current).unwrap_or(u32::MAX);
                let written = vaultrs::kv2::set_with_options(
                    client,
                    mount,
                    path,
                    &fields,
                    vaultrs::api::kv2::requests::SetSecretRequestOptions { cas },
                )
                .await
                .map_err(|e| map(e, &what))?;
                Ok(Some(written.version.to_string()))
            }
        }
    }
}
