//! Transit keys: `vault-transit://MOUNT/NAME`.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use base64::Engine;
use sealkit_core::provider::{
    GeneratedDataKey, KeyAdmin, KeyEncryption, KeyMetadata, KeyVersionInfo, VersionState,
    refuse_retiring_primary, version_not_found,
};
use sealkit_core::{
    DataKey, EncryptionContext, Error, KeyRef, KeyUri, KeyVersion, Result, WrappedKey,
};
use vaultrs::api::transit::KeyType;
use vaultrs::api::transit::requests::{
    CreateKeyRequest, DataKeyType, DecryptDataRequest, EncryptDataRequest, GenerateDataKeyRequest,
    RewrapDataRequest, UpdateKeyConfigurationRequest,
};
use vaultrs::api::transit::responses::ReadKeyData;
use vaultrs::client::VaultClient;
use zeroize::Zeroizing;

use crate::VaultSettings;
use crate::error::map;

/// The URI scheme of Transit keys.
pub const SCHEME: &str = "vault-transit";

/// The mount `list_keys` reads without a prefix.
const DEFAULT_MOUNT: &str = "transit";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// What Sealkit needs to know about a Transit key before using it.
#[derive(Clone, Copy, Debug)]
struct KeyInfo {
    derived: bool,
}

/// Vault Transit as a Sealkit key provider. See the crate docs.
pub struct VaultTransit {
    config: VaultSettings,
    client: tokio::sync::OnceCell<VaultClient>,
    keys: RwLock<HashMap<String, KeyInfo>>,
}

impl std::fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTransit")
            .field("address", &self.config.address())
            .finish_non_exhaustive()
    }
}

/// `MOUNT/NAME` from a key URI (the mount may contain slashes).
fn split(key: &KeyUri) -> Result<(&str, &str)> {
    if key.scheme() != SCHEME {
        return Err(Error::invalid_input(format!(
            "{key} is not a {SCHEME}:// key"
        )));
    }
    key.path()
        .rsplit_once('/')
        .filter(|(m, n)| !m.is_empty() && !n.is_empty())
        .ok_or_else(|| Error::invalid_input(format!("{key}: expected {SCHEME}://MOUNT/NAME")))
}

/// The key version of a Transit ciphertext (`vault:v3:…` → 3).
fn ciphertext_version(ciphertext: &str) -> Result<u64> {
    ciphertext
        .strip_prefix("vault:v")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(v, _)| v.parse().ok())
        .ok_or(Error::InvalidCiphertext)
}

/// A DEK wrapped by `key` as the Transit ciphertext `ciphertext`, at the version it names.
fn wrapped_key(key: &KeyUri, ciphertext: String) -> Result<WrappedKey> {
    let version = ciphertext_version(&ciphertext)?;
    Ok(WrappedKey::new(
        KeyRef::new(key.clone(), KeyVersion::number(version)),
        ciphertext.into_bytes(),
    ))
}

fn decode_dek(plaintext_b64: &str) -> Result<DataKey> {
    let bytes = Zeroizing::new(
        b64()
            .decode(plaintext_b64)
            .map_err(|_| Error::InvalidCiphertext)?,
    );
    DataKey::from_slice(&bytes)
}

impl VaultTransit {
    /// A provider for `config`; it connects (and logs in) on first use.
    pub fn new(config: VaultSettings) -> Self {
        Self {
            config,
            client: tokio::sync::OnceCell::new(),
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// The client, logging in on first use.
    async fn client(&self) -> Result<&VaultClient> {
        self.client.get_or_try_init(|| self.config.connect()).await
    }

    async fn info(&self, key: &KeyUri) -> Result<KeyInfo> {
        if let Some(info) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key.as_str())
        {
            return Ok(*info);
        }
        let (mount, name) = split(key)?;
        let read = vaultrs::transit::key::read(self.client().await?, mount, name)
            .await
            .map_err(|e| map(e, &format!("reading {key}")))?;
        let info = KeyInfo {
            derived: read.derived,
        };
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.as_str().to_string(), info);
        Ok(info)
    }

    /// Decrypts a Transit ciphertext of application data (`vault:vN:…`), as legacy data that
    /// an application encrypted with Transit directly is migrated into envelopes. `context` is
    /// the derivation context the data was encrypted with, if the key is derived.
    pub async fn decrypt_data(
        &self,
        key: &KeyUri,
        ciphertext: &str,
        context: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (mount, name) = split(key)?;
        let mut opts = DecryptDataRequest::builder();
        if let Some(context) = context {
            opts.context(b64().encode(context));
        }
        let reply = vaultrs::transit::data::decrypt(
            self.client().await?,
            mount,
            name,
            ciphertext,
            Some(&mut opts),
        )
        .await
        .map_err(|e| map(e, &format!("decrypt data with {key}")))?;
        Ok(Zeroizing::new(
            b64()
                .decode(reply.plaintext)
                .map_err(|_| Error::InvalidCiphertext)?,
        ))
    }

    /// The context or associated data for a key, as base64.
    fn binding(context: &EncryptionContext) -> String {
        b64().encode(context.canonical_bytes())
    }

    async fn encrypt(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let (mount, name) = split(key)?;
        let info = self.info(key).await?;
        let plaintext = Zeroizing::new(b64().encode(dek.expose()));
        let mut opts = EncryptDataRequest::builder();
        if info.derived {
            opts.context(Self::binding(context));
        } else {
            opts.associated_data(Self::binding(context));
        }
        let reply = vaultrs::transit::data::encrypt(
            self.client().await?,
            mount,
            name,
            &plaintext,
            Some(&mut opts),
        )
        .await
        .map_err(|e| map(e, &format!("encrypt with {key}")))?;
        wrapped_key(key, reply.ciphertext)
    }
}

#[async_trait]
impl KeyEncryption for VaultTransit {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn generate_data_key(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey> {
        let (mount, name) = split(key)?;
        if !self.info(key).await?.derived {
            // `datakey` has no associated data: generate locally and bind it through `encrypt`.
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::fill(bytes.as_mut())
                .map_err(|e| Error::unavailable("os-random", e.to_string()))?;
            let dek = DataKey::from_bytes(*bytes);
            let wrapped = self.encrypt(key, &dek, context).await?;
            return Ok(GeneratedDataKey::new(dek, wrapped));
        }
        let mut opts = GenerateDataKeyRequest::builder();
        opts.context(Self::binding(context)).bits(256u16);
        let reply = vaultrs::transit::generate::data_key(
            self.client().await?,
            mount,
            name,
            DataKeyType::Plaintext,
            Some(&mut opts),
        )
        .await
        .map_err(|e| map(e, &format!("datakey with {key}")))?;
        let plaintext = Zeroizing::new(reply.plaintext.unwrap_or_default());
        let dek = decode_dek(&plaintext)?;
        Ok(GeneratedDataKey::new(
            dek,
            wrapped_key(key, reply.ciphertext)?,
        ))
    }

    async fn wrap(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        self.encrypt(key, dek, context).await
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let key = &wrapped.key.uri;
        let (mount, name) = split(key)?;
        let ciphertext =
            std::str::from_utf8(&wrapped.bytes).map_err(|_| Error::InvalidCiphertext)?;
        if Some(ciphertext_version(ciphertext)?) != wrapped.key.version.as_number() {
            return Err(Error::InvalidCiphertext);
        }
        let info = self.info(key).await?;
        let mut opts = DecryptDataRequest::builder();
        if info.derived {
            opts.context(Self::binding(context));
        } else {
            opts.associated_data(Self::binding(context));
        }
        let reply = vaultrs::transit::data::decrypt(
            self.client().await?,
            mount,
            name,
            ciphertext,
            Some(&mut opts),
        )
        .await
        .map_err(|e| map(e, &format!("decrypt with {}", wrapped.key)))?;
        decode_dek(&Zeroizing::new(reply.plaintext))
    }

    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        target: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let info = self.info(target).await?;
        if &wrapped.key.uri != target || !info.derived {
            // Another key, or associated data (which Transit's rewrap does not take).
            let dek = self.unwrap(wrapped, context).await?;
            return self.wrap(target, &dek, context).await;
        }
        let (mount, name) = split(target)?;
        let ciphertext =
            std::str::from_utf8(&wrapped.bytes).map_err(|_| Error::InvalidCiphertext)?;
        let mut opts = RewrapDataRequest::builder();
        opts.context(Self::binding(context));
        let reply = vaultrs::transit::data::rewrap(
            self.client().await?,
            mount,
            name,
            ciphertext,
            Some(&mut opts),
        )
        .await
        .map_err(|e| map(e, &format!("rewrap with {target}")))?;
        wrapped_key(target, reply.ciphertext)
    }

    async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let (mount, name) = split(key)?;
        let read = vaultrs::transit::key::read(self.client().await?, mount, name)
            .await
            .map_err(|e| map(e, &format!("reading {key}")))?;
        self.keys.write().unwrap_or_else(|e| e.into_inner()).insert(
            key.as_str().to_string(),
            KeyInfo {
                derived: read.derived,
            },
        );
        let ReadKeyData::Symmetric(versions) = read.keys else {
            return Err(Error::misconfigured(format!(
                "{key} is not a symmetric key; Sealkit needs aes256-gcm96 or chacha20-poly1305"
            )));
        };
        let mut numbers: Vec<(u64, u64)> = versions
            .iter()
            .filter_map(|(v, t)| v.parse().ok().map(|v| (v, *t)))
            .collect();
        numbers.sort_unstable();
        let primary = numbers
            .last()
            .map(|(v, _)| *v)
            .ok_or_else(|| Error::not_found("vault", format!("versions of {key}")))?;
        // Transit lists only versions at or above `min_decryption_version`; the ones below it are
        // disabled (or, once trimmed, destroyed: `bao read transit/keys/NAME` shows
        // `min_available_version`). They are reported as disabled, without a creation time.
        let floor = read.min_decryption_version.max(1);
        let mut infos: Vec<KeyVersionInfo> = (1..floor)
            .filter(|v| !numbers.iter().any(|(n, _)| n == v))
            .map(|v| KeyVersionInfo::new(KeyVersion::number(v), VersionState::Disabled, None))
            .collect();
        infos.extend(numbers.iter().map(|(v, t)| {
            let state = if *v < floor {
                VersionState::Disabled
            } else {
                VersionState::Enabled
            };
            KeyVersionInfo::new(KeyVersion::number(*v), state, Some(*t))
        }));
        Ok(KeyMetadata::new(
            key.clone(),
            KeyVersion::number(primary),
            infos,
        ))
    }

    /// Forgets what was read about keys (whether each is derived).
    fn refresh(&self) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[async_trait]
impl KeyAdmin for VaultTransit {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let (mount, name) = split(key)?;
        if self.key_metadata(key).await.is_ok() {
            return Err(Error::already_exists(
                "vault",
                format!("key {key} (use `sealkit keys rotate` to add a version)"),
            ));
        }
        let mut opts = CreateKeyRequest::builder();
        opts.derived(true).key_type(KeyType::Aes256Gcm96);
        vaultrs::transit::key::create(self.client().await?, mount, name, Some(&mut opts))
            .await
            .map_err(|e| map(e, &format!("creating {key}")))?;
        self.key_metadata(key).await
    }

    async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        let (mount, name) = split(key)?;
        vaultrs::transit::key::rotate(self.client().await?, mount, name)
            .await
            .map_err(|e| map(e, &format!("rotating {key}")))?;
        Ok(self.key_metadata(key).await?.primary)
    }

    async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        Ok(self.key_metadata(key).await?.versions)
    }

    /// The keys of one Transit mount: `prefix` is `MOUNT` or `MOUNT/NAME-PREFIX`; without
    /// one, the mount `transit`.
    async fn list_keys(&self, prefix: Option<&str>) -> Result<Vec<KeyUri>> {
        let (mount, name_prefix) = match prefix {
            None => (DEFAULT_MOUNT, ""),
            Some(p) => p.rsplit_once('/').unwrap_or((p, "")),
        };
        let names = match vaultrs::transit::key::list(self.client().await?, mount).await {
            Ok(list) => list.keys,
            // Vault answers 404 for a mount without keys.
            Err(vaultrs::error::ClientError::APIError { code: 404, .. }) => Vec::new(),
            Err(e) => return Err(map(e, &format!("listing the keys of {mount}/"))),
        };
        let mut keys = names
            .iter()
            .filter(|name| name.starts_with(name_prefix))
            .map(|name| KeyUri::parse(&format!("{SCHEME}://{mount}/{name}")))
            .collect::<Result<Vec<_>>>()?;
        keys.sort();
        Ok(keys)
    }

    /// Transit deletes at once (no schedule): `deletion_allowed` is set on the key, then the
    /// key is deleted.
    async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>> {
        let (mount, name) = split(key)?;
        let client = self.client().await?;
        let mut opts = UpdateKeyConfigurationRequest::builder();
        opts.deletion_allowed(true);
        vaultrs::transit::key::update(client, mount, name, Some(&mut opts))
            .await
            .map_err(|e| map(e, &format!("allowing the deletion of {key}")))?;
        vaultrs::transit::key::delete(client, mount, name)
            .await
            .map_err(|e| map(e, &format!("deleting {key}")))?;
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key.as_str());
        Ok(None)
    }

    /// Transit's `auto_rotate_period` (at least one hour; `None` turns it off).
    async fn set_rotation_period(
        &self,
        key: &KeyUri,
        period: Option<std::time::Duration>,
    ) -> Result<()> {
        let (mount, name) = split(key)?;
        let value = match period {
            Some(p) if p.as_secs() < 3600 => {
                return Err(Error::invalid_input(
                    "Vault's auto_rotate_period must be at least one hour",
                ));
            }
            Some(p) => format!("{}s", p.as_secs()),
            None => "0".to_string(),
        };
        let mut opts = UpdateKeyConfigurationRequest::builder();
        opts.auto_rotate_period(value);
        vaultrs::transit::key::update(self.client().await?, mount, name, Some(&mut opts))
            .await
            .map_err(|e| map(e, &format!("configuring {key}")))
    }

    /// Transit disables versions by a floor, `min_decryption_version`: disabling version N
    /// disables every version up to N; enabling N lowers the floor to N. Destroying N trims
    /// every version up to N (after disabling them).
    async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let (mount, name) = split(key)?;
        let key_ref = KeyRef::new(key.clone(), version.clone());
        let n = version
            .as_number()
            .ok_or_else(|| version_not_found("vault", &key_ref))?;
        let meta = self.key_metadata(key).await?;
        if !meta.versions.iter().any(|v| v.version == *version) {
            return Err(version_not_found("vault", &key_ref));
        }
        refuse_retiring_primary(&key_ref, meta.primary == *version, state)?;
        let floor = match state {
            VersionState::Enabled => n,
            _ => n + 1,
        };
        let mut opts = UpdateKeyConfigurationRequest::builder();
        opts.min_decryption_version(floor);
        vaultrs::transit::key::update(self.client().await?, mount, name, Some(&mut opts))
            .await
            .map_err(|e| map(e, &format!("configuring {key}")))?;
        if state == VersionState::Destroyed {
            // Transit trims only below `min_encryption_version`, which is unset (0) on a
            // fresh key: pin it to the primary first (new data uses the primary anyway).
            let primary = meta
                .primary
                .as_number()
                .ok_or_else(|| version_not_found("vault", &key_ref))?;
            let mut pin = UpdateKeyConfigurationRequest::builder();
            pin.min_encryption_version(primary);
            vaultrs::transit::key::update(self.client().await?, mount, name, Some(&mut pin))
                .await
                .map_err(|e| map(e, &format!("configuring {key}")))?;
            vaultrs::transit::key::trim(self.client().await?, mount, name, floor)
                .await
                .map_err(|e| map(e, &format!("trimming {key}")))?;
        }
        Ok(())
    }
}
