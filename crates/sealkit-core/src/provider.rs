//! The traits that key-management and secret-store providers implement.
//!
//! Definitions only: implementations live in the provider crates (`sealkit-local`,
//! `sealkit-vault`, …). Traits are async through `async-trait` so that they can be used as
//! `dyn` objects; an implementation must never block the executor.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Debug;

use async_trait::async_trait;
use secrecy::SecretBox;

use crate::{DataKey, EncryptionContext, Error, KeyRef, KeyUri, KeyVersion, Result, WrappedKey};

/// A fresh data key and its wrapped form.
#[derive(Debug)]
#[non_exhaustive]
pub struct GeneratedDataKey {
    /// The plaintext DEK (zeroized on drop).
    pub plaintext: DataKey,
    /// The DEK wrapped under the master key.
    pub wrapped: WrappedKey,
}

impl GeneratedDataKey {
    /// Pairs a DEK with its wrapped form.
    pub fn new(plaintext: DataKey, wrapped: WrappedKey) -> Self {
        Self { plaintext, wrapped }
    }
}

/// The state of a master-key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionState {
    /// Usable for wrapping (if primary) and unwrapping.
    Enabled,
    /// Refuses every operation until enabled again.
    Disabled,
    /// Key material deleted; data under it is unrecoverable.
    Destroyed,
}

impl VersionState {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Destroyed => "destroyed",
        }
    }
}

/// One version of a master key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyVersionInfo {
    /// The version.
    pub version: KeyVersion,
    /// Its state.
    pub state: VersionState,
    /// Creation time, seconds since the Unix epoch, where the provider reports it.
    pub created_unix: Option<u64>,
}

impl KeyVersionInfo {
    /// Describes a version.
    pub fn new(version: KeyVersion, state: VersionState, created_unix: Option<u64>) -> Self {
        Self {
            version,
            state,
            created_unix,
        }
    }
}

/// What a provider reports about a master key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyMetadata {
    /// The key.
    pub uri: KeyUri,
    /// The version new wraps use.
    pub primary: KeyVersion,
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionInfo>,
}

impl KeyMetadata {
    /// Describes a key.
    pub fn new(uri: KeyUri, primary: KeyVersion, versions: Vec<KeyVersionInfo>) -> Self {
        Self {
            uri,
            primary,
            versions,
        }
    }

    /// The primary version as a [`KeyRef`].
    pub fn primary_ref(&self) -> KeyRef {
        KeyRef::new(self.uri.clone(), self.primary.clone())
    }
}

/// Wrapping and unwrapping of data keys under master keys that stay in the provider.
///
/// `context` is bound to the wrapped key where the service supports associated data (AWS
/// encryption context, Vault/GCP AAD); unwrapping with a different context must fail.
#[async_trait]
pub trait KeyEncryption: Send + Sync + Debug {
    /// The URI scheme this provider serves (`local`, `vault-transit`, `aws-kms`, …).
    fn scheme(&self) -> &str;

    /// Generates a fresh DEK and wraps it under the primary version of `key`.
    async fn generate_data_key(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey>;

    /// Wraps an existing DEK under the primary version of `key`.
    async fn wrap(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey>;

    /// Unwraps a DEK. Fails with [`Error::InvalidCiphertext`] on a wrong context or altered
    /// bytes, [`Error::KeyDisabled`] when the version is disabled.
    async fn unwrap(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey>;

    /// Re-wraps a DEK under the primary version of `target` (often the same key after a
    /// rotation). The default unwraps then wraps; services with a server-side rewrap (Vault
    /// `rewrap`, AWS `ReEncrypt`) override it so the DEK never leaves the service.
    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        target: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let dek = self.unwrap(wrapped, context).await?;
        self.wrap(target, &dek, context).await
    }

    /// Describes a master key.
    async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata>;

    /// Forgets what the provider caches about keys (loaded key files, version states), so
    /// that the next call sees changes made elsewhere at once. The default caches nothing.
    fn refresh(&self) {}
}

/// Administration of master keys.
#[async_trait]
pub trait KeyAdmin: Send + Sync + Debug {
    /// The URI scheme of the keys this administers (the same as its [`KeyEncryption::scheme`]
    /// where one value implements both).
    fn scheme(&self) -> &str;

    /// Creates a key with version 1; [`Error::AlreadyExists`] if it exists.
    async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata>;

    /// Adds a new version and makes it primary; returns the new version.
    async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion>;

    /// Lists versions, oldest first.
    async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>>;

    /// The keys this provider holds (those Sealkit can address), sorted; with a `prefix`, only
    /// the keys whose name (the URI after `scheme://`) starts with it.
    async fn list_keys(&self, prefix: Option<&str>) -> Result<Vec<KeyUri>>;

    /// Deletes a key with every version. Where the service schedules deletion (AWS KMS: 7 to
    /// 30 days), returns when it takes effect, in seconds since the Unix epoch, and the key can
    /// be restored until then; `None` means it is gone now. [`Error::NotSupported`] where the
    /// service cannot delete keys. Data under the key becomes unrecoverable.
    async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>>;

    /// Enables, disables or destroys a version. The primary version cannot be disabled.
    async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()>;

    /// Has the provider rotate the key by itself every `period` (`None` turns it off), where
    /// the provider can (Vault's `auto_rotate_period`). The default is
    /// [`Error::NotSupported`]: schedule `sealkit keys rotate-due` instead.
    async fn set_rotation_period(
        &self,
        key: &KeyUri,
        period: Option<core::time::Duration>,
    ) -> Result<()> {
        let _ = (key, period);
        Err(Error::not_supported(
            self.scheme(),
            "set_rotation_period (schedule `sealkit keys rotate-due` instead)",
        ))
    }
}

/// A secret value (password, legacy key…), zeroized on drop and never printed.
pub type SecretBytes = SecretBox<Vec<u8>>;

/// A secret fetched from a store, with the version it came from.
#[derive(Debug)]
#[non_exhaustive]
pub struct Secret {
    /// The value.
    pub value: SecretBytes,
    /// The version the store served, where it reports one.
    pub version: Option<String>,
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: Vec<u8>, version: Option<String>) -> Self {
        Self {
            value: SecretBox::new(Box::new(value)),
            version,
        }
    }
}

/// A secret name split at its `#FIELD` suffix: `("app/db", Some("password"))` for
/// `app/db#password`, `(name, None)` without one.
pub fn split_secret_field(name: &str) -> (&str, Option<&str>) {
    match name.split_once('#') {
        Some((id, field)) => (id, Some(field)),
        None => (name, None),
    }
}

/// The field `field` of a secret holding a JSON object (`ID#FIELD` in a secret reference): a
/// top-level key, or a dotted path into nested objects (`db.password`). A string field gives its
/// text, any other JSON value its JSON text. `provider` and `what` name the secret in errors.
pub fn secret_field(provider: &str, what: &str, value: &[u8], field: &str) -> Result<Vec<u8>> {
    let json: serde_json::Value = serde_json::from_slice(value).map_err(|_| {
        Error::invalid_input(alloc::format!(
            "{what} is not JSON, so it has no field {field:?}"
        ))
    })?;
    let found = json.get(field).or_else(|| {
        field
            .split('.')
            .try_fold(&json, |node, part| node.get(part))
    });
    match found {
        Some(serde_json::Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(other) => Ok(alloc::string::ToString::to_string(other).into_bytes()),
        None => Err(Error::not_found(
            provider,
            alloc::format!("field {field:?} of {what}"),
        )),
    }
}

/// `current` (a JSON object secret, or nothing yet) with `field` set to `value` (text), its other
/// fields kept: what writing `ID#FIELD` stores.
pub fn with_secret_field(
    what: &str,
    current: Option<&[u8]>,
    field: &str,
    value: &[u8],
) -> Result<Vec<u8>> {
    let text = core::str::from_utf8(value).map_err(|_| {
        Error::invalid_input(alloc::format!(
            "the value for field {field:?} of {what} is not text; a JSON field holds text (store binary values as base64)"
        ))
    })?;
    let mut object = match current {
        None => serde_json::Map::new(),
        Some(bytes) => match serde_json::from_slice(bytes) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(Error::invalid_input(alloc::format!(
                    "{what} is not a JSON object, so field {field:?} cannot be set in it; write the whole secret (no #FIELD)"
                )));
            }
        },
    };
    object.insert(field.into(), serde_json::Value::String(text.into()));
    Ok(alloc::string::ToString::to_string(&serde_json::Value::Object(object)).into_bytes())
}

/// A store of secrets (Vault KV, AWS Secrets Manager, env vars, files…).
#[async_trait]
pub trait SecretSource: Send + Sync + Debug {
    /// A short name for logs (`env`, `file`, `vault-kv`, `aws-secrets`, …).
    fn name(&self) -> &str;

    /// Fetches a secret; `version` selects one where the store keeps versions.
    async fn get_secret(&self, name: &str, version: Option<&str>) -> Result<Secret>;

    /// Stores `value` as the newest version of secret `name`, creating the secret where the
    /// store needs that, and returns the version the store reports. For `ID#FIELD` names the
    /// field of a JSON object secret is set and its other fields kept. Stores that cannot be
    /// written (environment variables) answer [`Error::NotSupported`].
    async fn put_secret(&self, name: &str, value: &[u8]) -> Result<Option<String>> {
        let _ = (name, value);
        Err(Error::not_supported(self.name(), "put_secret"))
    }
}

/// Convenience: an [`Error::NotFound`] for a key version.
pub fn version_not_found(provider: &str, key: &KeyRef) -> Error {
    Error::not_found(provider, alloc::format!("key version {key}"))
}

/// Refuses to move the primary version of a key out of [`VersionState::Enabled`]: new data is
/// sealed under it, so the key must be rotated first. Any version may be enabled.
pub fn refuse_retiring_primary(key: &KeyRef, is_primary: bool, state: VersionState) -> Result<()> {
    if is_primary && state != VersionState::Enabled {
        return Err(Error::invalid_input(alloc::format!(
            "{key} is the primary version; rotate the key before disabling it"
        )));
    }
    Ok(())
}
