//! AWS KMS keys: `aws-kms://alias/NAME` (versioned, managed) and `aws-kms://KEY-ID-OR-ARN`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use sealkit_core::provider::{
    GeneratedDataKey, KeyAdmin, KeyEncryption, KeyMetadata, KeyVersionInfo, VersionState,
    refuse_retiring_primary, version_not_found,
};
use sealkit_core::{
    DataKey, EncryptionContext, Error, KeyRef, KeyUri, KeyVersion, Result, WrappedKey,
};

use crate::AwsSettings;
use crate::error::map;

/// The URI scheme of KMS keys.
pub const SCHEME: &str = "aws-kms";
const PROVIDER: &str = SCHEME;
/// How long a version's enabled/disabled state is trusted before asking KMS again.
const STATE_TTL: Duration = Duration::from_secs(30);

/// What a key URI names.
enum Target<'a> {
    /// `alias/NAME`: versions are `alias/NAME/vN`.
    Managed(&'a str),
    /// A key id or ARN that Sealkit does not manage.
    Unmanaged(&'a str),
}

fn target(key: &KeyUri) -> Result<Target<'_>> {
    if key.scheme() != SCHEME {
        return Err(Error::invalid_input(format!(
            "{key} is not an {SCHEME}:// key"
        )));
    }
    match key.path().strip_prefix("alias/") {
        Some(name) if !name.is_empty() && !name.contains("/v") => Ok(Target::Managed(name)),
        Some(_) => Err(Error::invalid_input(format!(
            "{key}: name the key, not a version alias"
        ))),
        None => Ok(Target::Unmanaged(key.path())),
    }
}

/// Whether `NAME/vN` is a version alias (after `alias/`).
fn is_version_alias(rest: &str) -> bool {
    rest.rsplit_once("/v")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The versions of a managed key, from its aliases.
#[derive(Clone, Debug, Default)]
struct Versions {
    by_version: BTreeMap<u64, String>,
    primary: Option<u64>,
}

impl Versions {
    fn version_of(&self, key_id: &str) -> Option<u64> {
        // KMS answers with key ARNs (`arn:…:key/UUID`); aliases point at bare ids.
        let id = key_id.rsplit('/').next().unwrap_or(key_id);
        self.by_version
            .iter()
            .find(|(_, k)| k.as_str() == id)
            .map(|(v, _)| *v)
    }
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// AWS KMS as a Sealkit key provider. See the crate docs.
pub struct AwsKms {
    settings: AwsSettings,
    client: tokio::sync::OnceCell<Client>,
    versions: Mutex<HashMap<String, Versions>>,
    states: Mutex<HashMap<String, (bool, Instant)>>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// A provider with `settings`; the SDK configuration loads on first use.
    pub fn new(settings: AwsSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::OnceCell::new(),
            versions: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(&self.settings.load().await) })
            .await
    }

    /// Reads the version aliases of `name` (one paginated `ListAliases`).
    async fn load_versions(&self, name: &str) -> Result<Versions> {
        let client = self.client().await;
        let prefix = format!("alias/{name}/v");
        let primary_alias = format!("alias/{name}");
        let mut versions = Versions::default();
        let mut primary_target = None;
        let mut pages = client.list_aliases().into_paginator().items().send();
        while let Some(alias) = pages.next().await {
            let alias = alias.map_err(|e| map(PROVIDER, e, "ListAliases"))?;
            let (Some(alias_name), Some(target)) = (alias.alias_name(), alias.target_key_id())
            else {
                continue;
            };
            if alias_name == primary_alias {
                primary_target = Some(target.to_string());
            } else if let Some(v) = alias_name
                .strip_prefix(&prefix)
                .and_then(|v| v.parse().ok())
            {
                versions.by_version.insert(v, target.to_string());
            }
        }
        versions.primary = primary_target
            .as_deref()
            .and_then(|t| versions.version_of(t));
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), versions.clone());
        Ok(versions)
    }

    async fn versions(&self, name: &str) -> Result<Versions> {
        if let Some(v) = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(v.clone());
        }
        self.load_versions(name).await
    }

    /// The version of the key that KMS says it used, reloading the aliases once if unknown.
    async fn version_for(&self, key: &KeyUri, used_key_id: Option<&str>) -> Result<KeyVersion> {
        match target(key)? {
            Target::Unmanaged(_) => Ok(KeyVersion::number(1)),
            Target::Managed(name) => {
                let id = used_key_id.unwrap_or_default();
                if let Some(v) = self.versions(name).await?.version_of(id) {
                    return Ok(KeyVersion::number(v));
                }
                self.load_versions(name)
                    .await?
                    .version_of(id)
                    .map(KeyVersion::number)
                    .ok_or_else(|| {
                        Error::misconfigured(format!(
                            "{key}: KMS used key {id}, which no alias/{name}/vN names"
                        ))
                    })
            }
        }
    }

    /// The KMS key id that decrypts `wrapped` (the version's alias for managed keys).
    fn decrypt_key_id(wrapped: &WrappedKey) -> Result<String> {
        match target(&wrapped.key.uri)? {
            Target::Unmanaged(id) => Ok(id.to_string()),
            Target::Managed(name) => {
                let v = wrapped
                    .key
                    .version
                    .as_number()
                    .ok_or(Error::InvalidCiphertext)?;
                Ok(format!("alias/{name}/v{v}"))
            }
        }
    }

    /// Refuses disabled versions. KMS refuses them too; checking first also holds where an
    /// emulator does not (moto decrypts with disabled keys).
    async fn ensure_enabled(&self, key_id: &str, what: &str) -> Result<()> {
        let cached = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key_id)
            .copied();
        let enabled = match cached {
            Some((enabled, at)) if at.elapsed() < STATE_TTL => enabled,
            _ => {
                let described = self
                    .client()
                    .await
                    .describe_key()
                    .key_id(key_id)
                    .send()
                    .await
                    .map_err(|e| map(PROVIDER, e, what))?;
                let enabled = described.key_metadata().and_then(|m| m.key_state())
                    == Some(&KeyState::Enabled);
                self.states
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key_id.to_string(), (enabled, Instant::now()));
                enabled
            }
        };
        if enabled {
            Ok(())
        } else {
            Err(Error::key_disabled(what))
        }
    }

    fn forget(&self, name: &str) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn wrapped(
        &self,
        key: &KeyUri,
        version: KeyVersion,
        blob: Option<&Blob>,
    ) -> Result<WrappedKey> {
        let bytes = blob
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| Error::unavailable(PROVIDER, "KMS returned no ciphertext"))?;
        Ok(WrappedKey::new(KeyRef::new(key.clone(), version), bytes))
    }

    fn managed(key: &KeyUri) -> Result<&str> {
        match target(key)? {
            Target::Managed(name) => Ok(name),
            Target::Unmanaged(_) => Err(Error::invalid_input(format!(
                "{key}: Sealkit administers versioned keys named aws-kms://alias/NAME; administer other keys in AWS"
            ))),
        }
    }
}

#[async_trait]
impl KeyEncryption for AwsKms {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn generate_data_key(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey> {
        let what = format!("GenerateDataKey with {key}");
        let out = self
            .client()
            .await
            .generate_data_key()
            .key_id(key.path())
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &what))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| Error::unavailable(PROVIDER, "KMS returned no plaintext"))?;
        let dek = DataKey::from_slice(plaintext.as_ref())?;
        let version = self.version_for(key, out.key_id()).await?;
        Ok(GeneratedDataKey::new(
            dek,
            self.wrapped(key, version, out.ciphertext_blob())?,
        ))
    }

    async fn wrap(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let what = format!("Encrypt with {key}");
        let out = self
            .client()
            .await
            .encrypt()
            .key_id(key.path())
            .plaintext(Blob::new(dek.expose().to_vec()))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &what))?;
        let version = self.version_for(key, out.key_id()).await?;
        self.wrapped(key, version, out.ciphertext_blob())
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let key_id = Self::decrypt_key_id(wrapped)?;
        let what = format!("Decrypt with {}", wrapped.key);
        self.ensure_enabled(&key_id, &what).await?;
        let out = self
            .client()
            .await
            .decrypt()
            .key_id(&key_id)
            .ciphertext_blob(Blob::new(wrapped.bytes.clone()))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &what))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| Error::unavailable(PROVIDER, "KMS returned no plaintext"))?;
        DataKey::from_slice(plaintext.as_ref())
    }

    /// `ReEncrypt`: KMS decrypts under the old version and encrypts under `target`'s primary
    /// without the DEK leaving it.
    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        target_key: &KeyUri,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let source = Self::decrypt_key_id(wrapped)?;
        let what = format!("ReEncrypt {} to {target_key}", wrapped.key);
        self.ensure_enabled(&source, &what).await?;
        let ctx = context_map(context);
        let out = self
            .client()
            .await
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.bytes.clone()))
            .source_key_id(&source)
            .set_source_encryption_context(Some(ctx.clone()))
            .destination_key_id(target_key.path())
            .set_destination_encryption_context(Some(ctx))
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &what))?;
        let version = self.version_for(target_key, out.key_id()).await?;
        self.wrapped(target_key, version, out.ciphertext_blob())
    }

    async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        match target(key)? {
            Target::Unmanaged(id) => {
                let what = format!("DescribeKey {key}");
                let described = self
                    .client()
                    .await
                    .describe_key()
                    .key_id(id)
                    .send()
                    .await
                    .map_err(|e| map(PROVIDER, e, &what))?;
                let meta = described
                    .key_metadata()
                    .ok_or_else(|| Error::not_found(PROVIDER, key.to_string()))?;
                let state = if meta.key_state() == Some(&KeyState::Enabled) {
                    VersionState::Enabled
                } else {
                    VersionState::Disabled
                };
                let created = meta.creation_date().map(|d| d.secs().max(0) as u64);
                Ok(KeyMetadata::new(
                    key.clone(),
                    KeyVersion::number(1),
                    vec![KeyVersionInfo::new(KeyVersion::number(1), state, created)],
                ))
            }
            Target::Managed(name) => {
                let versions = self.load_versions(name).await?;
                let primary = versions.primary.ok_or_else(|| {
                    Error::not_found(
                        PROVIDER,
                        format!("key {key} (alias/{name} and alias/{name}/vN)"),
                    )
                })?;
                let client = self.client().await;
                let mut infos = Vec::with_capacity(versions.by_version.len());
                for (v, id) in &versions.by_version {
                    let described = client
                        .describe_key()
                        .key_id(id)
                        .send()
                        .await
                        .map_err(|e| map(PROVIDER, e, &format!("DescribeKey {key}#v{v}")))?;
                    let meta = described.key_metadata();
                    let state = match meta.and_then(|m| m.key_state()) {
                        Some(KeyState::Enabled) => VersionState::Enabled,
                        Some(KeyState::PendingDeletion) => VersionState::Destroyed,
                        _ => VersionState::Disabled,
                    };
                    let created = meta
                        .and_then(|m| m.creation_date())
                        .map(|d| d.secs().max(0) as u64);
                    infos.push(KeyVersionInfo::new(KeyVersion::number(*v), state, created));
                }
                Ok(KeyMetadata::new(
                    key.clone(),
                    KeyVersion::number(primary),
                    infos,
                ))
            }
        }
    }

    /// Forgets the version aliases and version states read so far.
    fn refresh(&self) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl AwsKms {
    /// Creates version `v` of `name` and its alias; returns the new KMS key id.
    async fn create_version(&self, name: &str, v: u64) -> Result<String> {
        let client = self.client().await;
        let created = client
            .create_key()
            .description(format!("Sealkit key {name}, version {v}"))
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("CreateKey for alias/{name}/v{v}")))?;
        let id = created
            .key_metadata()
            .map(|m| m.key_id().to_string())
            .ok_or_else(|| Error::unavailable(PROVIDER, "CreateKey returned no key id"))?;
        client
            .create_alias()
            .alias_name(format!("alias/{name}/v{v}"))
            .target_key_id(&id)
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("CreateAlias alias/{name}/v{v}")))?;
        Ok(id)
    }
}

#[async_trait]
impl KeyAdmin for AwsKms {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let name = Self::managed(key)?;
        if self.load_versions(name).await?.primary.is_some() {
            return Err(Error::already_exists(
                PROVIDER,
                format!("key {key} (use `sealkit keys rotate` to add a version)"),
            ));
        }
        let id = self.create_version(name, 1).await?;
        self.client()
            .await
            .create_alias()
            .alias_name(format!("alias/{name}"))
            .target_key_id(&id)
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("CreateAlias alias/{name}")))?;
        self.forget(name);
        tracing::info!(key = %key, "AWS KMS key created");
        self.key_metadata(key).await
    }

    async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        let name = Self::managed(key)?;
        let versions = self.load_versions(name).await?;
        if versions.primary.is_none() {
            return Err(Error::not_found(PROVIDER, format!("key {key}")));
        }
        let next = versions.by_version.keys().max().copied().unwrap_or(0) + 1;
        let id = self.create_version(name, next).await?;
        self.client()
            .await
            .update_alias()
            .alias_name(format!("alias/{name}"))
            .target_key_id(&id)
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("UpdateAlias alias/{name}")))?;
        self.forget(name);
        tracing::info!(key = %key, version = next, "AWS KMS key rotated");
        Ok(KeyVersion::number(next))
    }

    async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        Ok(self.key_metadata(key).await?.versions)
    }

    /// The keys Sealkit manages (`alias/NAME`, whose versions are `alias/NAME/vN`); a
    /// `prefix` matches the whole path, `alias/` included.
    async fn list_keys(&self, prefix: Option<&str>) -> Result<Vec<KeyUri>> {
        let mut pages = self
            .client()
            .await
            .list_aliases()
            .into_paginator()
            .items()
            .send();
        let mut keys = Vec::new();
        while let Some(alias) = pages.next().await {
            let alias = alias.map_err(|e| map(PROVIDER, e, "ListAliases"))?;
            let Some(name) = alias.alias_name() else {
                continue;
            };
            let managed = name.strip_prefix("alias/").is_some_and(|rest| {
                !rest.starts_with("aws/")
                    && !is_version_alias(rest)
                    && alias.target_key_id().is_some()
            });
            if managed && prefix.is_none_or(|p| name.starts_with(p)) {
                keys.push(KeyUri::parse(&format!("{SCHEME}://{name}"))?);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Schedules the deletion of every version's KMS key (after the settings' window, 30 days
    /// by default) and removes the key's aliases at once, so nothing new is sealed under it.
    /// Returns the earliest deletion date.
    async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>> {
        let client = self.client().await;
        let (key_ids, aliases) = match target(key)? {
            Target::Managed(name) => {
                let versions = self.load_versions(name).await?;
                if versions.primary.is_none() && versions.by_version.is_empty() {
                    return Err(Error::not_found(PROVIDER, format!("key {key}")));
                }
                let mut aliases: Vec<String> = versions
                    .by_version
                    .keys()
                    .map(|v| format!("alias/{name}/v{v}"))
                    .collect();
                aliases.push(format!("alias/{name}"));
                (
                    versions.by_version.into_values().collect::<Vec<_>>(),
                    aliases,
                )
            }
            Target::Unmanaged(id) => (vec![id.to_string()], Vec::new()),
        };
        let mut earliest: Option<u64> = None;
        for id in &key_ids {
            let scheduled = client
                .schedule_key_deletion()
                .key_id(id)
                .pending_window_in_days(self.settings.deletion_window_days())
                .send()
                .await
                .map_err(|e| map(PROVIDER, e, &format!("ScheduleKeyDeletion of {key} ({id})")))?;
            if let Some(date) = scheduled.deletion_date() {
                let secs = u64::try_from(date.secs()).unwrap_or(0);
                earliest = Some(earliest.map_or(secs, |e| e.min(secs)));
            }
        }
        for alias in &aliases {
            client
                .delete_alias()
                .alias_name(alias)
                .send()
                .await
                .map_err(|e| map(PROVIDER, e, &format!("DeleteAlias {alias}")))?;
        }
        if let Target::Managed(name) = target(key)? {
            self.forget(name);
        }
        tracing::warn!(key = %key, deletion_unix = ?earliest, "AWS KMS key scheduled for deletion");
        Ok(earliest)
    }

    async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let name = Self::managed(key)?;
        let key_ref = KeyRef::new(key.clone(), version.clone());
        let versions = self.load_versions(name).await?;
        let n = version
            .as_number()
            .ok_or_else(|| version_not_found(PROVIDER, &key_ref))?;
        let id = versions
            .by_version
            .get(&n)
            .ok_or_else(|| version_not_found(PROVIDER, &key_ref))?;
        refuse_retiring_primary(&key_ref, versions.primary == Some(n), state)?;
        let client = self.client().await;
        let what = format!("changing {key_ref}");
        match state {
            VersionState::Enabled => client
                .enable_key()
                .key_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map(PROVIDER, e, &what))?,
            VersionState::Disabled => client
                .disable_key()
                .key_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map(PROVIDER, e, &what))?,
            VersionState::Destroyed => client
                .schedule_key_deletion()
                .key_id(id)
                .pending_window_in_days(7)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map(PROVIDER, e, &what))?,
            _ => return Err(Error::invalid_input("unknown version state")),
        }
        self.forget(name);
        Ok(())
    }
}
