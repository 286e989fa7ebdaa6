//! Google Cloud KMS as a key provider (`gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K`),
//! with Google's official client (`google-cloud-kms-v1`).
//!
//! DEKs are made locally (the OS random source) and wrapped by `Encrypt` under the key's
//! primary version, with the DEK scope's canonical bytes as `additionalAuthenticatedData`.
//! Every CRC32C is sent (plaintext, AAD, ciphertext) and every one the service returns is
//! checked, so a payload corrupted on the way fails instead of wrapping garbage. Versions are
//! Cloud KMS crypto-key versions. Cloud KMS has no server-side re-encrypt: a rewrap is
//! `Decrypt` + `Encrypt`.

use async_trait::async_trait;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::{
    CryptoKeyVersionAlgorithm, CryptoKeyVersionState,
};
use google_cloud_kms_v1::model::{CryptoKey, CryptoKeyVersion, CryptoKeyVersionTemplate, KeyRing};
use sealkit_core::provider::{
    GeneratedDataKey, KeyAdmin, KeyEncryption, KeyMetadata, KeyVersionInfo, VersionState,
    refuse_retiring_primary, version_not_found,
};
use sealkit_core::{
    DataKey, EncryptionContext, Error, KeyRef, KeyUri, KeyVersion, Result, WrappedKey,
};
use zeroize::Zeroizing;

use crate::GcpSettings;
use crate::error::map;

/// The key URI scheme.
pub const SCHEME: &str = "gcp-kms";
const PROVIDER: &str = "gcp-kms";

/// Google Cloud KMS symmetric keys (`ENCRYPT_DECRYPT`, `GOOGLE_SYMMETRIC_ENCRYPTION`).
pub struct GcpKms {
    settings: GcpSettings,
    client: tokio::sync::OnceCell<KeyManagementService>,
}

impl std::fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpKms")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The crypto key resource name a `gcp-kms://` URI names.
fn key_name(key: &KeyUri) -> Result<&str> {
    let path = key.path();
    let parts: Vec<&str> = path.split('/').collect();
    let shape = [
        "projects",
        "",
        "locations",
        "",
        "keyRings",
        "",
        "cryptoKeys",
        "",
    ];
    let ok = key.scheme() == SCHEME
        && parts.len() == shape.len()
        && parts.iter().zip(shape).all(|(part, want)| {
            if want.is_empty() {
                !part.is_empty()
            } else {
                *part == want
            }
        });
    if ok {
        Ok(path)
    } else {
        Err(Error::invalid_input(format!(
            "{key} is not a Cloud KMS key: write gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K"
        )))
    }
}

/// A version's number from its resource name (`…/cryptoKeyVersions/3`).
fn version_of(name: &str) -> Result<KeyVersion> {
    name.rsplit_once("/cryptoKeyVersions/")
        .map(|(_, v)| v)
        .ok_or_else(|| {
            Error::unavailable(
                PROVIDER,
                format!("the response names no key version ({name:?})"),
            )
        })
        .and_then(KeyVersion::new)
}

fn crc(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

/// Checks a returned CRC32C against the data it covers.
fn check_crc(what: &str, data: &[u8], returned: Option<i64>) -> Result<()> {
    match returned {
        Some(c) if c == crc(data) => Ok(()),
        Some(_) => Err(Error::unavailable(
            PROVIDER,
            format!(
                "{what}: the CRC32C of the response does not match its data (corrupted on the way); retry"
            ),
        )),
        None => Err(Error::unavailable(
            PROVIDER,
            format!("{what}: the response carries no CRC32C to check"),
        )),
    }
}

fn state_of(state: &CryptoKeyVersionState) -> VersionState {
    match state {
        CryptoKeyVersionState::Enabled => VersionState::Enabled,
        CryptoKeyVersionState::Disabled => VersionState::Disabled,
        _ => VersionState::Destroyed,
    }
}

/// A version that no longer holds key material, or soon will not.
fn is_gone(state: &CryptoKeyVersionState) -> bool {
    matches!(
        state,
        CryptoKeyVersionState::Destroyed | CryptoKeyVersionState::DestroyScheduled
    )
}

impl GcpKms {
    /// A provider with `settings`; the client is built on first use.
    pub fn new(settings: GcpSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The client. Retries are left to the caller (the facade retries with backoff, under
    /// its own timeouts).
    async fn client(&self) -> Result<&KeyManagementService> {
        self.client
            .get_or_try_init(|| async {
                let mut builder = KeyManagementService::builder()
                    .with_retry_policy(NeverRetry)
                    .with_attempt_timeout(self.settings.timeout());
                if let Some(endpoint) = self.settings.kms_endpoint() {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_credentials(self.endpoint_credentials()?);
                }
                builder.build().await.map_err(|e| {
                    Error::misconfigured(format!(
                        "cannot build the Cloud KMS client: {e}; check the Application Default \
                         Credentials (GOOGLE_APPLICATION_CREDENTIALS)"
                    ))
                })
            })
            .await
    }

    /// The credentials for an endpoint override: the service-account key file when one is
    /// set, else none (anonymous).
    fn endpoint_credentials(&self) -> Result<google_cloud_auth::credentials::Credentials> {
        let Some(path) = self.settings.credentials_file() else {
            return Ok(google_cloud_auth::credentials::anonymous::Builder::new().build());
        };
        let unreadable = |detail: String| {
            Error::misconfigured(format!(
                "the service-account key file {}: {detail}",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let key: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| unreadable("not JSON".into()))?;
        google_cloud_auth::credentials::service_account::Builder::new(key)
            .build()
            .map_err(|e| unreadable(e.to_string()))
    }

    async fn crypto_key(&self, key: &KeyUri) -> Result<CryptoKey> {
        let name = key_name(key)?;
        self.client()
            .await?
            .get_crypto_key()
            .set_name(name)
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("key {key}")))
    }

    /// Every version of `key`, oldest first.
    async fn versions(&self, key: &KeyUri) -> Result<Vec<CryptoKeyVersion>> {
        use google_cloud_gax::paginator::ItemPaginator as _;
        let name = key_name(key)?;
        let mut items = self
            .client()
            .await?
            .list_crypto_key_versions()
            .set_parent(name)
            .by_item();
        let mut out = Vec::new();
        while let Some(v) = items.next().await {
            out.push(v.map_err(|e| map(PROVIDER, e, &format!("versions of {key}")))?);
        }
        out.sort_by_key(|v| version_of(&v.name).ok().and_then(|v| v.as_number()));
        Ok(out)
    }

    /// The key if it still has a version holding key material: a key whose versions are all
    /// destroyed (or scheduled to be) is deleted, as far as Sealkit is concerned.
    async fn live_key(&self, key: &KeyUri) -> Result<(CryptoKey, Vec<CryptoKeyVersion>)> {
        let crypto_key = self.crypto_key(key).await?;
        let versions = self.versions(key).await?;
        if versions.iter().all(|v| is_gone(&v.state)) {
            return Err(Error::not_found(
                PROVIDER,
                format!("key {key} (every version is destroyed or scheduled for destruction)"),
            ));
        }
        Ok((crypto_key, versions))
    }

    async fn create_version(&self, key: &KeyUri) -> Result<KeyVersion> {
        let name = key_name(key)?;
        let version = self
            .client()
            .await?
            .create_crypto_key_version()
            .set_parent(name)
            .set_crypto_key_version(CryptoKeyVersion::new())
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("a new version of {key}")))?;
        let number = version_of(&version.name)?;
        self.client()
            .await?
            .update_crypto_key_primary_version()
            .set_name(name)
            .set_crypto_key_version_id(number.as_str())
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("making {key}#v{number} primary")))?;
        Ok(number)
    }

    /// `Encrypt` of `dek` under the primary version of `key`, with every CRC32C checked.
    async fn encrypt(
        &self,
        key: &KeyUri,
        dek: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let name = key_name(key)?;
        let aad = context.canonical_bytes();
        let what = format!("Encrypt with {key}");
        let out = self
            .client()
            .await?
            .encrypt()
            .set_name(name)
            .set_plaintext(dek.expose().to_vec())
            .set_plaintext_crc32c(crc(dek.expose()))
            .set_additional_authenticated_data(aad.to_vec())
            .set_additional_authenticated_data_crc32c(crc(aad))
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &what))?;
        if !out.verified_plaintext_crc32c || !out.verified_additional_authenticated_data_crc32c {
            return Err(Error::unavailable(
                PROVIDER,
                format!("{what}: the service did not verify the request's CRC32C; retry"),
            ));
        }
        check_crc(&what, &out.ciphertext, out.ciphertext_crc32c)?;
        let version = version_of(&out.name)?;
        Ok(WrappedKey::new(
            KeyRef::new(key.clone(), version),
            out.ciphertext.to_vec(),
        ))
    }
}

#[async_trait]
impl KeyEncryption for GcpKms {
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
        let wrapped = self.encrypt(key, &dek, context).await?;
        Ok(GeneratedDataKey::new(dek, wrapped))
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
        let key = &wrapped.key;
        let name = key_name(&key.uri)?;
        let aad = context.canonical_bytes();
        let what = format!("Decrypt with {key}");
        let out = self
            .client()
            .await?
            .decrypt()
            .set_name(name)
            .set_ciphertext(wrapped.bytes.clone())
            .set_ciphertext_crc32c(crc(&wrapped.bytes))
            .set_additional_authenticated_data(aad.to_vec())
            .set_additional_authenticated_data_crc32c(crc(aad))
            .send()
            .await
            .map_err(|e| match map(PROVIDER, e, &what) {
                // Cloud KMS answers INVALID_ARGUMENT for a ciphertext that does not decrypt
                // (another AAD, altered bytes): that is a failed authentication.
                Error::InvalidInput { .. } => Error::InvalidCiphertext,
                other => other,
            })?;
        let plaintext = Zeroizing::new(out.plaintext.to_vec());
        check_crc(&what, &plaintext, out.plaintext_crc32c)?;
        DataKey::from_slice(&plaintext)
    }

    async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let (crypto_key, versions) = self.live_key(key).await?;
        let primary = crypto_key
            .primary
            .as_ref()
            .map(|p| version_of(&p.name))
            .transpose()?
            .ok_or_else(|| {
                Error::misconfigured(format!("Cloud KMS key {key} has no primary version"))
            })?;
        let versions = versions
            .iter()
            .map(|v| {
                Ok(KeyVersionInfo::new(
                    version_of(&v.name)?,
                    state_of(&v.state),
                    v.create_time.as_ref().map(|t| t.seconds().max(0) as u64),
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KeyMetadata::new(key.clone(), primary, versions))
    }
}

#[async_trait]
impl KeyAdmin for GcpKms {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let name = key_name(key)?;
        let (ring, key_id) = name
            .rsplit_once("/cryptoKeys/")
            .ok_or_else(|| Error::invalid_input(format!("{key} names no crypto key")))?;
        let (location, ring_id) = ring
            .rsplit_once("/keyRings/")
            .ok_or_else(|| Error::invalid_input(format!("{key} names no key ring")))?;
        let client = self.client().await?;
        // The key ring, if it is new (key rings cannot be deleted; one that exists is used).
        match client
            .create_key_ring()
            .set_parent(location)
            .set_key_ring_id(ring_id)
            .set_key_ring(KeyRing::new())
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => match map(PROVIDER, e, &format!("key ring {ring}")) {
                Error::AlreadyExists { .. } => {}
                other => return Err(other),
            },
        }
        client
            .create_crypto_key()
            .set_parent(ring)
            .set_crypto_key_id(key_id)
            .set_crypto_key(
                CryptoKey::new()
                    .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
                    .set_version_template(
                        CryptoKeyVersionTemplate::new()
                            .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption),
                    ),
            )
            .send()
            .await
            .map_err(|e| map(PROVIDER, e, &format!("key {key}")))?;
        self.key_metadata(key).await
    }

    async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        self.live_key(key).await?;
        self.create_version(key).await
    }

    async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        Ok(self.key_metadata(key).await?.versions)
    }

    async fn list_keys(&self, prefix: Option<&str>) -> Result<Vec<KeyUri>> {
        use google_cloud_gax::paginator::ItemPaginator as _;
        let location = self.settings.kms_location().ok_or_else(|| {
            Error::misconfigured(
                "listing Cloud KMS keys needs a project: set GOOGLE_CLOUD_PROJECT (and SEALKIT_GCP_KMS_LOCATION, default global)",
            )
        })?;
        let client = self.client().await?;
        let mut rings = client.list_key_rings().set_parent(&location).by_item();
        let mut out = Vec::new();
        while let Some(ring) = rings.next().await {
            let ring = ring.map_err(|e| map(PROVIDER, e, &format!("key rings of {location}")))?;
            let mut keys = client.list_crypto_keys().set_parent(&ring.name).by_item();
            while let Some(k) = keys.next().await {
                let k = k.map_err(|e| map(PROVIDER, e, &format!("keys of {}", ring.name)))?;
                if prefix.is_some_and(|p| !k.name.starts_with(p)) {
                    continue;
                }
                let uri = KeyUri::parse(&format!("{SCHEME}://{}", k.name))?;
                // A key whose versions are all destroyed is deleted for Sealkit.
                if k.primary.as_ref().is_some_and(|p| !is_gone(&p.state))
                    || self.live_key(&uri).await.is_ok()
                {
                    out.push(uri);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Cloud KMS keeps key names forever and destroys versions after a delay: deleting a key
    /// schedules every live version's destruction and returns when the last takes effect.
    /// From then on the key is not found (nor listed); its versions can be restored until
    /// that time (`gcloud kms keys versions restore`).
    async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>> {
        let (_, versions) = self.live_key(key).await?;
        let client = self.client().await?;
        let mut when = None;
        for v in versions.iter().filter(|v| !is_gone(&v.state)) {
            let destroyed = client
                .destroy_crypto_key_version()
                .set_name(&v.name)
                .send()
                .await
                .map_err(|e| map(PROVIDER, e, &format!("destroying {}", v.name)))?;
            let at = destroyed.destroy_time.map(|t| t.seconds().max(0) as u64);
            when = when.max(at);
        }
        Ok(when)
    }

    async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let key_ref = KeyRef::new(key.clone(), version.clone());
        let meta = self.key_metadata(key).await?;
        if !meta.versions.iter().any(|v| &v.version == version) {
            return Err(version_not_found(PROVIDER, &key_ref));
        }
        refuse_retiring_primary(&key_ref, &meta.primary == version, state)?;
        let name = format!("{}/cryptoKeyVersions/{version}", key_name(key)?);
        let client = self.client().await?;
        let what = format!("changing {key_ref}");
        match state {
            VersionState::Destroyed => client
                .destroy_crypto_key_version()
                .set_name(&name)
                .send()
                .await
                .map(|_| ()),
            state => {
                let target = if state == VersionState::Enabled {
                    CryptoKeyVersionState::Enabled
                } else {
                    CryptoKeyVersionState::Disabled
                };
                client
                    .update_crypto_key_version()
                    .set_crypto_key_version(
                        CryptoKeyVersion::new().set_name(&name).set_state(target),
                    )
                    .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
                    .send()
                    .await
                    .map(|_| ())
            }
        }
        .map_err(|e| map(PROVIDER, e, &what))
    }

    async fn set_rotation_period(
        &self,
        key: &KeyUri,
        period: Option<std::time::Duration>,
    ) -> Result<()> {
        let name = key_name(key)?;
        let mut crypto_key = CryptoKey::new().set_name(name);
        if let Some(period) = period {
            let secs = period.as_secs() as i64;
            let next = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
                + secs;
            crypto_key = crypto_key
                .set_rotation_period(google_cloud_wkt::Duration::clamp(secs, 0))
                .set_next_rotation_time(google_cloud_wkt::Timestamp::clamp(next, 0));
        }
        self.client()
            .await?
            .update_crypto_key()
            .set_crypto_key(crypto_key)
            .set_update_mask(
                google_cloud_wkt::FieldMask::default()
                    .set_paths(["rotation_period", "next_rotation_time"]),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map(PROVIDER, e, &format!("the rotation period of {key}")))
    }
}
