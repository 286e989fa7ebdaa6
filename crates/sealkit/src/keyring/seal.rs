//! Sealing: the cached-DEK fast path and the provider slow path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sealkit_core::legacy;
use sealkit_core::provider::GeneratedDataKey;
use sealkit_core::{DekCipher, EncryptionContext, KeyUri};

use super::Keyring;
use crate::audit::Operation;
use crate::cache::{CoarseInstant, LATENCY_SAMPLE, SealEntry, SealKey, SwapCache};
use crate::config::Mode;
use crate::metrics_names as m;
use crate::random::OsRandom;
use crate::{Error, Result};

impl Keyring {
    /// Seals `plaintext` under the default key, bound to `context`.
    pub async fn seal(&self, plaintext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>> {
        let key = self.default_key_required()?;
        self.seal_with(key, plaintext, context).await
    }

    /// Seals `plaintext` under `key`, bound to `context`.
    pub async fn seal_with(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        if self.inner.mode == Mode::Legacy {
            let (format, legacy_key) = self.legacy()?;
            let result = legacy::seal(format, legacy_key, &OsRandom, plaintext, b"");
            self.audit(
                Operation::Seal,
                None,
                None,
                Some(context),
                result.as_ref().err(),
            );
            return result;
        }
        if self.compact_for(key) {
            return self.seal_compact(key, plaintext, context).await;
        }
        self.seal_full(key, plaintext, context).await
    }

    /// Seals `plaintext` under `key` as a full-layout (self-contained) envelope, whatever the
    /// configured layout: the export format.
    pub async fn seal_full(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let now = CoarseInstant::now();
        if let Some(result) = self.seal_cached(key, plaintext, context, now) {
            return result;
        }
        // The slow path is boxed so that the future of every seal stays small.
        Box::pin(self.seal_fresh(key, plaintext, context, now)).await
    }

    /// Seals with the cached DEK for `context`, if one is cached and within its bounds; `None`
    /// on a miss (a stale entry is dropped).
    #[inline]
    pub(super) fn seal_cached(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Option<Result<Vec<u8>>> {
        self.seal_cached_in(&self.inner.seal_cache, key, plaintext, context, now)
    }

    /// [`Self::seal_cached`] with the sealers of `cache` (full or compact).
    #[inline]
    pub(super) fn seal_cached_in(
        &self,
        cache: &SwapCache<SealEntry>,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Option<Result<Vec<u8>>> {
        let cache_key = SealKey::new(key, context, &self.inner.dek_scope);
        let hit = cache.with(&cache_key, |entry| {
            if !entry.admit(&self.inner.cache, plaintext.len(), now) {
                return None;
            }
            match self.seal_with_entry(entry, key, plaintext, context) {
                Err(Error::MessageBudgetExhausted) => None,
                result => Some(result),
            }
        });
        match hit {
            Some(Some(result)) => {
                self.inner.seal_hit_metric.increment(1);
                Some(result)
            }
            // Stale: too old, too many bytes or messages.
            Some(None) => {
                self.retire_sealers(cache.remove(&cache_key));
                None
            }
            None => None,
        }
    }

    /// Seals with a fresh DEK, caching it. A DEK can be exhausted by other tasks between its
    /// creation and our seal: retried a few times.
    pub(super) async fn seal_fresh(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Vec<u8>> {
        self.seal_fresh_in(&self.inner.seal_cache, false, key, plaintext, context, now)
            .await
    }

    /// [`Self::seal_fresh`] with the sealers of `cache`, making compact sealers (a block of a
    /// stored DEK's budget) if `compact`.
    pub(super) async fn seal_fresh_in(
        &self,
        cache: &SwapCache<SealEntry>,
        compact: bool,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Vec<u8>> {
        let cache_key = SealKey::new(key, context, &self.inner.dek_scope);
        for attempt in 0..3 {
            if attempt > 0
                && let Some(result) = self.seal_cached_in(cache, key, plaintext, context, now)
            {
                return result;
            }
            self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::DEK_CACHE_MISSES_TOTAL, "cache" => "seal").increment(1);
            let entry = if compact {
                self.new_compact_sealer(key, context, now).await?
            } else {
                self.new_sealer(key, context, now).await?
            };
            entry
                .bytes
                .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
            self.retire_sealers(cache.insert(&cache_key, entry.clone()));
            match self.seal_with_entry(&entry, key, plaintext, context) {
                Err(Error::MessageBudgetExhausted) => self.retire_sealers(cache.remove(&cache_key)),
                result => return result,
            }
        }
        Err(Error::MessageBudgetExhausted)
    }

    /// Accounts for sealing-cache entries that left the cache.
    pub(super) fn retire_sealers(&self, dropped: Vec<Arc<SealEntry>>) {
        let hits: u64 = dropped.iter().map(|entry| entry.hits()).sum();
        self.inner
            .retired_seal_hits
            .fetch_add(hits, Ordering::Relaxed);
        self.note_dek_use(&dropped);
    }

    /// Seals with a cached or fresh DEK, recording metrics and the audit event.
    pub(super) fn seal_with_entry(
        &self,
        entry: &SealEntry,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        // Latency is sampled (1 in LATENCY_SAMPLE) to keep clock reads off the hot path;
        // provider calls on misses are always timed.
        let timer = entry
            .cipher
            .budget()
            .used()
            .is_multiple_of(LATENCY_SAMPLE)
            .then(Instant::now);
        let result = if entry.compact {
            entry.cipher.seal_compact(&OsRandom, context, plaintext)
        } else {
            entry.cipher.seal(&OsRandom, context, plaintext)
        };
        match &result {
            Ok(_) => {
                entry.encrypted.increment(1);
                if let Some(started) = timer {
                    entry.duration.record(started.elapsed().as_secs_f64());
                }
            }
            // An exhausted budget is not a failure: the caller fetches a fresh DEK.
            Err(Error::MessageBudgetExhausted) => return result,
            Err(e) => self.count_error(Operation::Seal, key.scheme(), e),
        }
        self.audit(
            Operation::Seal,
            Some(&entry.key),
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    /// A weak handle on the sealing DEK cached for `context` under the default key, to
    /// observe that eviction drops the key (feature `test-util`; not API-stable).
    #[cfg(feature = "test-util")]
    pub fn weak_seal_cipher(
        &self,
        context: &EncryptionContext,
    ) -> Option<std::sync::Weak<DekCipher>> {
        let key = self.inner.default_key.as_ref()?;
        let entry =
            self.inner
                .seal_cache
                .get(&SealKey::new(key, context, &self.inner.dek_scope))?;
        Some(Arc::downgrade(&entry.cipher))
    }

    /// A fresh DEK for `scope`, generated and wrapped under `key` by its provider (a KMS
    /// call, audited).
    pub(super) async fn generate_dek(
        &self,
        key: &KeyUri,
        scope: &EncryptionContext,
    ) -> Result<GeneratedDataKey> {
        let provider = self.provider(key.scheme())?.clone();
        let generated = self
            .kms_call(key.scheme(), Operation::GenerateDataKey, || {
                provider.generate_data_key(key, scope)
            })
            .await;
        self.audit(
            Operation::GenerateDataKey,
            generated.as_ref().ok().map(|g| &g.wrapped.key),
            Some(key),
            Some(scope),
            generated.as_ref().err(),
        );
        generated
    }

    pub(super) async fn new_sealer(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Arc<SealEntry>> {
        let generated = self.generate_dek(key, &self.scope_of(context)).await?;
        let cipher = Arc::new(
            DekCipher::new(
                self.inner.backend,
                self.inner.algorithm,
                &generated.plaintext,
            )?
            .with_wrapped_key(&generated.wrapped)?
            .with_message_limit(self.inner.max_messages)?,
        );
        let wrapped = &generated.wrapped;
        // Prime the open cache: data sealed now is often read back soon.
        let open_entry = self.open_entry(cipher.clone(), wrapped, now);
        self.inner.open_cache.insert(
            self.open_cache_key(self.inner.algorithm, &wrapped.bytes, &wrapped.key, context)
                .to_vec(),
            open_entry,
        );
        Ok(SealEntry::new(cipher, wrapped.key.clone(), now, false))
    }

    /// Seals many fields under the default key; fields sharing a DEK scope share one DEK.
    pub async fn seal_batch(&self, items: &[(&[u8], &EncryptionContext)]) -> Result<Vec<Vec<u8>>> {
        let key = self.default_key_required()?.clone();
        let mut out = Vec::with_capacity(items.len());
        for (plaintext, context) in items {
            out.push(self.seal_with(&key, plaintext, context).await?);
        }
        Ok(out)
    }
}
