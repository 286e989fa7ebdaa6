//! Azure Key Vault as a key provider (`azure-kv://VAULT-HOST/keys/NAME`), with Microsoft's
//! official client (`azure_security_keyvault_keys`).
//!
//! DEKs are made locally (the OS random source) and wrapped by the vault with RSA-OAEP-256
//! under the key's latest version. RSA-OAEP has no associated data, so the DEK scope is bound
//! on the client side: the wrapped payload is `0x01 || SHA-256(label || scope) || DEK`
//! (docs/format.md), and unwrapping checks the scope tag in constant time, so a wrapped DEK
//! moved to another scope fails as a tampered one does. Versions are Key Vault's 32-hex ids.

use async_trait::async_trait;
use azure_core::http::RequestContent;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, EncryptionAlgorithm, KeyAttributes, KeyClientGetKeyOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyClientWrapKeyOptions, KeyOperation,
    KeyOperationParameters, KeyRotationPolicy, KeyRotationPolicyAction, KeyType, LifetimeAction,
    LifetimeActionTrigger, LifetimeActionType, UpdateKeyPropertiesParameters,
};
use futures::TryStreamExt;
use sealkit_core::provider::{
    GeneratedDataKey, KeyAdmin, KeyEncryption, KeyMetadata, KeyVersionInfo, VersionState,
    refuse_retiring_primary, version_not_found,
};
use sealkit_core::{
    DataKey, EncryptionContext, Error, KeyRef, KeyUri, KeyVersion, Result, WrappedKey, ct_eq_bytes,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::AzureSettings;
use crate::client::{Clients, SharedClients};
use crate::error::map;

/// The key URI scheme.
pub const SCHEME: &str = "azure-kv";
/// The size of keys `create_key` makes.
pub const KEY_BITS: i32 = 3072;
/// The first byte of a wrapped payload.
const PAYLOAD_VERSION: u8 = 1;
/// The label hashed before the scope in the payload's scope tag.
const SCOPE_LABEL: &[u8] = b"sealkit azure-kv dek scope v1\0";
const PAYLOAD_LEN: usize = 1 + 32 + 32;
/// The tag that marks a version Sealkit destroyed (disabled, every `key_op` removed).
const DESTROYED_TAG: &str = "sealkit-destroyed";

/// Azure Key Vault RSA keys (`wrapKey`/`unwrapKey` with RSA-OAEP-256).
pub struct AzureKeyVault {
    clients: std::sync::Arc<SharedClients>,
}

impl std::fmt::Debug for AzureKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKeyVault")
            .field("settings", self.clients.settings())
            .finish_non_exhaustive()
    }
}

/// The vault host and key name an `azure-kv://` URI names.
fn key_parts(key: &KeyUri) -> Result<(&str, &str)> {
    let parts = (key.scheme() == SCHEME)
        .then(|| key.path().split_once("/keys/"))
        .flatten()
        .filter(|(host, name)| {
            !host.is_empty()
                && !host.contains('/')
                && (1..=127).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    parts.ok_or_else(|| {
        Error::invalid_input(format!(
            "{key} is not a Key Vault key: write azure-kv://VAULT-HOST/keys/NAME (NAME: letters, digits and '-')"
        ))
    })
}

/// The version at the end of a `kid` (`https://v.vault.azure.net/keys/k/0123…`).
fn version_of(kid: Option<&str>) -> Result<KeyVersion> {
    let kid = kid.unwrap_or_default();
    kid.rsplit('/')
        .next()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::unavailable(
                SCHEME,
                format!("the response names no key version ({kid:?})"),
            )
        })
        .and_then(KeyVersion::new)
}

/// The 32-byte tag that binds a wrapped DEK to its scope.
fn scope_tag(context: &EncryptionContext) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(SCOPE_LABEL);
    hash.update(context.canonical_bytes());
    hash.finalize().into()
}

/// `0x01 || scope tag || DEK`, the bytes the vault wraps.
fn payload(dek: &DataKey, context: &EncryptionContext) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(PAYLOAD_LEN));
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(&scope_tag(context));
    out.extend_from_slice(dek.expose());
    out
}

/// The DEK of an unwrapped payload, if its scope tag matches `context`.
fn open_payload(payload: &[u8], context: &EncryptionContext) -> Result<DataKey> {
    if payload.len() != PAYLOAD_LEN || payload[0] != PAYLOAD_VERSION {
        return Err(Error::InvalidCiphertext);
    }
    if !ct_eq_bytes(&payload[1..33], &scope_tag(context)) {
        return Err(Error::InvalidCiphertext);
    }
    DataKey::from_slice(&payload[33..])
}

fn unix(t: Option<azure_core::time::OffsetDateTime>) -> Option<u64> {
    t.map(|t| t.unix_timestamp().max(0) as u64)
}

fn content<T>(value: T) -> Result<RequestContent<T>>
where
    T: TryInto<RequestContent<T>, Error = azure_core::Error>,
{
    value
        .try_into()
        .map_err(|e| Error::other(SCHEME, format!("cannot encode the request: {e}")))
}

impl AzureKeyVault {
    /// A provider with `settings`; the clients are built on first use.
    pub fn new(settings: AzureSettings) -> Self {
        Self::sharing(SharedClients::new(settings))
    }

    /// A provider on clients shared with the secrets half.
    pub(crate) fn sharing(clients: std::sync::Arc<SharedClients>) -> Self {
        Self { clients }
    }

    async fn clients(&self) -> Result<&Clients> {
        self.clients.get().await
    }

    async fn wrap_under(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let (host, name) = key_parts(key)?;
        let client = self.clients().await?.keys(host)?;
        let mut params = KeyOperationParameters::default();
        params.algorithm = Some(EncryptionAlgorithm::RsaOaep256);
        params.value = Some(payload(dek, context).to_vec());
        let what = format!("wrapKey with {key}");
        let out = client
            .wrap_key(name, content(params)?, None::<KeyClientWrapKeyOptions<'_>>)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map(SCHEME, e, &what))?;
        let version = version_of(out.kid.as_deref())?;
        let bytes = out.result.ok_or_else(|| {
            Error::unavailable(
                SCHEME,
                format!("{what}: the response carries no wrapped key"),
            )
        })?;
        Ok(WrappedKey::new(KeyRef::new(key.clone(), version), bytes))
    }

    /// Every version of `key` (oldest first, the latest last among equal times) and the
    /// latest's id.
    async fn versions(&self, key: &KeyUri) -> Result<(KeyVersion, Vec<KeyVersionInfo>)> {
        let (host, name) = key_parts(key)?;
        let client = self.clients().await?.keys(host)?;
        let what = format!("key {key}");
        let latest = client
            .get_key(name, None::<KeyClientGetKeyOptions<'_>>)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map(SCHEME, e, &what))?;
        let primary = version_of(latest.key.as_ref().and_then(|k| k.kid.as_deref()))?;
        let mut pager = client
            .list_key_properties_versions(name, None)
            .map_err(|e| map(SCHEME, e, &what))?;
        let mut versions = Vec::new();
        while let Some(item) = pager.try_next().await.map_err(|e| map(SCHEME, e, &what))? {
            let attributes = item.attributes.unwrap_or_default();
            let destroyed = item
                .tags
                .as_ref()
                .is_some_and(|t| t.contains_key(DESTROYED_TAG));
            let state = if destroyed {
                VersionState::Destroyed
            } else if attributes.enabled == Some(false) {
                VersionState::Disabled
            } else {
                VersionState::Enabled
            };
            versions.push(KeyVersionInfo::new(
                version_of(item.kid.as_deref())?,
                state,
                unix(attributes.created),
            ));
        }
        versions.sort_by_key(|v| (v.created_unix, v.version == primary));
        Ok((primary, versions))
    }
}

#[async_trait]
impl KeyEncryption for AzureKeyVault {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn generate_data_key(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| Error::unavailable("os-random", e.to_string()))?;
        let dek = DataKey::from_bytes(*bytes);
        let wrapped = self.wrap_under(key, &dek, context).await?;
        Ok(GeneratedDataKey::new(dek, wrapped))
    }

    async fn wrap(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        self.wrap_under(key, dek, context).await
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let key = &wrapped.key;
        let (host, name) = key_parts(&key.uri)?;
        let client = self.clients().await?.keys(host)?;
        let mut params = KeyOperationParameters::default();
        params.algorithm = Some(EncryptionAlgorithm::RsaOaep256);
        params.value = Some(wrapped.bytes.clone());
        let what = format!("unwrapKey with {key}");
        let out = client
            .unwrap_key(name, key.version.as_str(), content(params)?, None)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| match map(SCHEME, e, &what) {
                // Key Vault answers 400 BadParameter for bytes that do not decrypt.
                Error::InvalidInput { .. } => Error::InvalidCiphertext,
                other => other,
            })?;
        let plaintext = Zeroizing::new(out.result.unwrap_or_default());
        open_payload(&plaintext, context)
    }

    async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let (primary, versions) = self.versions(key).await?;
        Ok(KeyMetadata::new(key.clone(), primary, versions))
    }
}

#[async_trait]
impl KeyAdmin for AzureKeyVault {
    fn scheme(&self) -> &str {
        SCHEME
    }

    /// An RSA 3072 key whose `key_ops` are `wrapKey` and `unwrapKey` only. A name in use,
    /// or soft-deleted and not yet purged, is `AlreadyExists` (Key Vault would add a version
    /// to a live key; Sealkit rotates for that).
    async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let (host, name) = key_parts(key)?;
        match self.key_metadata(key).await {
            Ok(_) => return Err(Error::already_exists(SCHEME, format!("key {key}"))),
            Err(e) if e.kind() == sealkit_core::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let client = self.clients().await?.keys(host)?;
        let mut params = CreateKeyParameters::default();
        params.kty = Some(KeyType::Rsa);
        params.key_size = Some(KEY_BITS);
        params.key_ops = Some(vec![KeyOperation::WrapKey, KeyOperation::UnwrapKey]);
        client
            .create_key(name, content(params)?, None)
            .await
            .map_err(|e| match map(SCHEME, e, &format!("key {key}")) {
                Error::AlreadyExists { .. } => Error::already_exists(
                    SCHEME,
                    format!("key {key} (soft-deleted: recover or purge it first)"),
                ),
                other => other,
            })?;
        self.key_metadata(key).await
    }

    async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        let (host, name) = key_parts(key)?;
        let client = self.clients().await?.keys(host)?;
        let rotated = client
            .rotate_key(name, None)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map(SCHEME, e, &format!("rotating {key}")))?;
        version_of(rotated.key.as_ref().and_then(|k| k.kid.as_deref()))
    }

    async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        Ok(self.versions(key).await?.1)
    }

    /// The keys of the vault a prefix names (`VAULT-HOST/keys/…`), else of the configured
    /// vault (`SEALKIT_AZURE_VAULT`).
    async fn list_keys(&self, prefix: Option<&str>) -> Result<Vec<KeyUri>> {
        let host = match prefix.and_then(|p| p.split('/').next()).filter(|h| !h.is_empty()) {
            Some(host) => host.to_string(),
            None => self.clients.settings().vault().map(str::to_string).ok_or_else(|| {
                Error::misconfigured(
                    "listing Key Vault keys needs a vault: set SEALKIT_AZURE_VAULT (myvault.vault.azure.net)",
                )
            })?,
        };
        let client = self.clients().await?.keys(&host)?;
        let what = format!("keys of vault {host}");
        let mut pager = client
            .list_key_properties(None)
            .map_err(|e| map(SCHEME, e, &what))?;
        let mut out = Vec::new();
        while let Some(item) = pager.try_next().await.map_err(|e| map(SCHEME, e, &what))? {
            let Some(name) = item.kid.as_deref().and_then(|k| k.rsplit('/').next()) else {
                continue;
            };
            let uri = KeyUri::parse(&format!("{SCHEME}://{host}/keys/{name}"))?;
            if prefix.is_none_or(|p| uri.path().starts_with(p)) {
                out.push(uri);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Soft delete: the key is gone (not found, not listed) and recoverable until its
    /// scheduled purge date, which is returned.
    async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>> {
        let (host, name) = key_parts(key)?;
        let client = self.clients().await?.keys(host)?;
        let deleted = client
            .delete_key(name, None)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map(SCHEME, e, &format!("deleting {key}")))?;
        Ok(unix(deleted.scheduled_purge_date))
    }

    /// Enables or disables a version. Key Vault cannot destroy one version: `Destroyed`
    /// disables it for good, removing every `key_op` and tagging it `sealkit-destroyed`;
    /// its key material is destroyed when the whole key is deleted and purged.
    async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let key_ref = KeyRef::new(key.clone(), version.clone());
        let (primary, versions) = self.versions(key).await?;
        let Some(current) = versions.iter().find(|v| &v.version == version) else {
            return Err(version_not_found(SCHEME, &key_ref));
        };
        refuse_retiring_primary(&key_ref, &primary == version, state)?;
        if current.state == VersionState::Destroyed && state != VersionState::Destroyed {
            return Err(Error::invalid_input(format!(
                "{key_ref} is destroyed and stays so"
            )));
        }
        let (host, name) = key_parts(key)?;
        let client = self.clients().await?.keys(host)?;
        let mut attributes = KeyAttributes::default();
        attributes.enabled = Some(state == VersionState::Enabled);
        let mut params = UpdateKeyPropertiesParameters::default();
        params.key_attributes = Some(attributes);
        if state == VersionState::Destroyed {
            params.key_ops = Some(Vec::new());
            params.tags = Some([(DESTROYED_TAG.to_string(), "true".to_string())].into());
        }
        let options = KeyClientUpdateKeyPropertiesOptions {
            key_version: Some(version.as_str().to_string()),
            ..Default::default()
        };
        client
            .update_key_properties(name, content(params)?, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| map(SCHEME, e, &format!("changing {key_ref}")))
    }

    /// Key Vault's rotation policy: a `Rotate` action `P{days}D` after each version is
    /// created (whole days, at least 7, as the service requires), plus the default `Notify`
    /// 30 days before expiry; `None` keeps only the notification.
    async fn set_rotation_period(
        &self,
        key: &KeyUri,
        period: Option<std::time::Duration>,
    ) -> Result<()> {
        let (host, name) = key_parts(key)?;
        let notify = {
            let mut trigger = LifetimeActionTrigger::default();
            trigger.time_before_expiry = Some("P30D".into());
            let mut action = LifetimeActionType::default();
            action.type_prop = Some(KeyRotationPolicyAction::Notify);
            let mut a = LifetimeAction::default();
            a.trigger = Some(trigger);
            a.action = Some(action);
            a
        };
        let mut actions = vec![notify];
        if let Some(period) = period {
            let days = period.as_secs().div_ceil(86_400);
            if days < 7 {
                return Err(Error::invalid_input(format!(
                    "Key Vault rotates at most every 7 days; {} s is shorter",
                    period.as_secs()
                )));
            }
            let mut trigger = LifetimeActionTrigger::default();
            trigger.time_after_create = Some(format!("P{days}D"));
            let mut action = LifetimeActionType::default();
            action.type_prop = Some(KeyRotationPolicyAction::Rotate);
            let mut a = LifetimeAction::default();
            a.trigger = Some(trigger);
            a.action = Some(action);
            actions.push(a);
        }
        let mut policy = KeyRotationPolicy::default();
        policy.lifetime_actions = Some(actions);
        let client = self.clients().await?.keys(host)?;
        client
            .update_key_rotation_policy(name, content(policy)?, None)
            .await
            .map(|_| ())
            .map_err(|e| map(SCHEME, e, &format!("the rotation policy of {key}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(row: &str) -> EncryptionContext {
        EncryptionContext::parse(&format!("table=users,column=email,id={row}")).unwrap()
    }

    #[test]
    fn the_payload_binds_the_dek_to_its_scope() {
        let dek = DataKey::from_bytes([7u8; 32]);
        let sealed = payload(&dek, &ctx("1"));
        assert_eq!(sealed.len(), PAYLOAD_LEN);
        assert_eq!(
            open_payload(&sealed, &ctx("1")).unwrap().expose(),
            dek.expose()
        );
        assert!(matches!(
            open_payload(&sealed, &ctx("2")),
            Err(Error::InvalidCiphertext)
        ));
        for cut in [0, 1, 33, PAYLOAD_LEN - 1] {
            assert!(open_payload(&sealed[..cut], &ctx("1")).is_err());
        }
        let mut other_version = sealed.to_vec();
        other_version[0] = 2;
        assert!(open_payload(&other_version, &ctx("1")).is_err());
    }

    proptest::proptest! {
        /// Whatever a vault returns from `unwrapKey`, opening it never panics, and anything
        /// but this scope's payload is `InvalidCiphertext`.
        #[test]
        fn any_unwrapped_bytes_open_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..130)) {
            let dek = DataKey::from_bytes([7u8; 32]);
            let genuine = payload(&dek, &ctx("1"));
            match open_payload(&bytes, &ctx("1")) {
                Ok(_) => proptest::prop_assert_eq!(bytes.as_slice(), genuine.as_slice()),
                Err(e) => proptest::prop_assert!(matches!(e, Error::InvalidCiphertext)),
            }
        }
    }

    #[test]
    fn uris_name_a_vault_host_and_a_key() {
        let uri = KeyUri::parse("azure-kv://myvault.vault.azure.net/keys/payments-kek").unwrap();
        assert_eq!(
            key_parts(&uri).unwrap(),
            ("myvault.vault.azure.net", "payments-kek")
        );
        for bad in [
            "azure-kv://myvault.vault.azure.net/secrets/x",
            "azure-kv:///keys/x",
            "azure-kv://v/keys/bad_name",
            "azure-kv://v/keys/",
            "azure-kv://a/b/keys/x",
            "gcp-kms://v/keys/x",
        ] {
            let uri = KeyUri::parse(bad).unwrap();
            assert!(key_parts(&uri).is_err(), "{bad}");
        }
    }
}
