//! Key administration through the keyring: audited, metered, and keeping the caches right.

use std::time::Duration;

use sealkit_core::provider::{KeyMetadata, KeyVersionInfo, VersionState};
use sealkit_core::{KeyRef, KeyUri, KeyVersion};

use super::Keyring;
use crate::Result;
use crate::audit::Operation;

impl Keyring {
    /// Describes a key.
    pub async fn key_metadata(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let provider = self.provider(key.scheme())?.clone();
        self.kms_call(key.scheme(), Operation::DescribeKey, || {
            provider.key_metadata(key)
        })
        .await
    }

    /// Creates a key.
    pub async fn create_key(&self, key: &KeyUri) -> Result<KeyMetadata> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::CreateKey, || admin.create_key(key))
            .await;
        self.audit(
            Operation::CreateKey,
            result.as_ref().ok().map(|m| m.primary_ref()).as_ref(),
            Some(key),
            None,
            result.as_ref().err(),
        );
        result
    }

    /// Rotates a key; new seals use the new version at once (sealing DEKs under the old
    /// version are dropped from the cache).
    pub async fn rotate_key(&self, key: &KeyUri) -> Result<KeyVersion> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::RotateKey, || admin.rotate_key(key))
            .await;
        let key_ref = result
            .as_ref()
            .ok()
            .map(|v| KeyRef::new(key.clone(), v.clone()));
        self.audit(
            Operation::RotateKey,
            key_ref.as_ref(),
            Some(key),
            None,
            result.as_ref().err(),
        );
        if result.is_ok() {
            self.retire_sealers(self.inner.seal_cache.retain(|e| &e.key.uri != key));
            if let Some(deks) = &self.inner.deks {
                self.retire_sealers(deks.sealers.retain(|e| &e.key.uri != key));
            }
            self.forget_primary(key);
        }
        result
    }

    /// Rotates each key whose newest version is older than its period; returns the keys
    /// rotated with their new versions. Run it on a schedule (cron, a Kubernetes CronJob).
    pub async fn rotate_due(
        &self,
        periods: &[(KeyUri, Duration)],
    ) -> Result<Vec<(KeyUri, KeyVersion)>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rotated = Vec::new();
        for (key, period) in periods {
            let newest = self
                .list_versions(key)
                .await?
                .iter()
                .filter_map(|v| v.created_unix)
                .max();
            let due = match newest {
                Some(created) => now.saturating_sub(created) >= period.as_secs(),
                None => true,
            };
            if due {
                let version = self.rotate_key(key).await?;
                tracing::info!(key = %key, version = %version, "scheduled rotation");
                rotated.push((key.clone(), version));
            }
        }
        Ok(rotated)
    }

    /// Has the provider rotate `key` by itself every `period`, where it can.
    pub async fn set_rotation_period(&self, key: &KeyUri, period: Option<Duration>) -> Result<()> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::SetRotationPeriod, || {
                admin.set_rotation_period(key, period)
            })
            .await;
        self.audit(
            Operation::SetRotationPeriod,
            None,
            Some(key),
            None,
            result.as_ref().err(),
        );
        result
    }

    /// Lists a key's versions.
    pub async fn list_versions(&self, key: &KeyUri) -> Result<Vec<KeyVersionInfo>> {
        let admin = self.admin(key)?.clone();
        self.kms_call(key.scheme(), Operation::DescribeKey, || {
            admin.list_versions(key)
        })
        .await
    }

    /// Enables, disables or destroys a version; cached DEKs under it are dropped.
    pub async fn set_version_state(
        &self,
        key: &KeyUri,
        version: &KeyVersion,
        state: VersionState,
    ) -> Result<()> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::SetVersionState, || {
                admin.set_version_state(key, version, state)
            })
            .await;
        let key_ref = KeyRef::new(key.clone(), version.clone());
        self.audit(
            Operation::SetVersionState,
            Some(&key_ref),
            None,
            None,
            result.as_ref().err(),
        );
        if result.is_ok() && state != VersionState::Enabled {
            self.retire_sealers(self.inner.seal_cache.retain(|e| e.key != key_ref));
            self.inner.open_cache.retain(|e| e.key != key_ref);
        }
        result
    }

    /// The keys of the provider serving `scheme://` keys, optionally those whose name starts
    /// with `prefix` (see each provider's [`KeyAdmin::list_keys`]).
    ///
    /// [`KeyAdmin::list_keys`]: sealkit_core::provider::KeyAdmin::list_keys
    pub async fn list_keys(&self, scheme: &str, prefix: Option<&str>) -> Result<Vec<KeyUri>> {
        let admin = self.admin_for(scheme)?.clone();
        self.kms_call(scheme, Operation::ListKeys, || admin.list_keys(prefix))
            .await
    }

    /// Deletes `key` with every version (scheduled where the service schedules it: returns
    /// when it takes effect, seconds since the Unix epoch). Data under the key becomes
    /// unrecoverable once it is gone. Cached DEKs under it are dropped at once.
    pub async fn delete_key(&self, key: &KeyUri) -> Result<Option<u64>> {
        let admin = self.admin(key)?.clone();
        let result = self
            .kms_call(key.scheme(), Operation::DeleteKey, || admin.delete_key(key))
            .await;
        self.audit(
            Operation::DeleteKey,
            None,
            Some(key),
            None,
            result.as_ref().err(),
        );
        if result.is_ok() {
            self.retire_sealers(self.inner.seal_cache.retain(|e| &e.key.uri != key));
            self.inner.open_cache.retain(|e| &e.key.uri != key);
            self.forget_primary(key);
        }
        result
    }

    /// Forgets every cached data key and key state (sealing and opening DEKs, primary
    /// versions, and what each provider caches), so that a key change made elsewhere —
    /// another process rotating or disabling a version — applies at once instead of within
    /// the freshness bound (docs/configuration.md).
    pub fn refresh(&self) {
        self.retire_sealers(self.inner.seal_cache.retain(|_| false));
        self.inner.open_cache.retain(|_| false);
        self.inner
            .primaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for provider in self.inner.providers.values() {
            provider.refresh();
        }
    }
}
