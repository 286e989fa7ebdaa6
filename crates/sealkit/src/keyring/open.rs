//! Opening: envelopes through the unwrap cache, and legacy ciphertexts in `hybrid` and
//! `legacy` modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sealkit_core::envelope::KeySlot;
use sealkit_core::legacy::{self, LegacyFormat};
use sealkit_core::{
    Algorithm, DataKey, DekCipher, EncryptionContext, Envelope, EnvelopeLayout, KeyRef, WrappedKey,
};

use super::Keyring;
use crate::audit::Operation;
use crate::cache::{CacheKey, CoarseInstant, LATENCY_SAMPLE, OpenEntry, within_age};
use crate::config::Mode;
use crate::metrics_names as m;
use crate::{Error, Result};

impl Keyring {
    pub(super) fn legacy(&self) -> Result<(LegacyFormat, &DataKey)> {
        self.inner.legacy.as_ref().map(|(f, k)| (*f, k.key())).ok_or_else(|| {
            Error::misconfigured("legacy data needs the legacy master key (legacy.key_env, default ENCRYPTION_MASTER_KEY)")
        })
    }

    pub(super) fn open_cache_key(
        &self,
        algorithm: Algorithm,
        wrapped: &[u8],
        key: &KeyRef,
        context: &EncryptionContext,
    ) -> CacheKey {
        self.slot_cache_key(
            algorithm,
            wrapped,
            key.uri.as_str(),
            key.version.as_str(),
            context,
        )
    }

    /// The open-cache key: everything the cached cipher is built from — the algorithm, the
    /// wrapped DEK, its key and version, and the DEK scope the wrap is bound to.
    pub(super) fn slot_cache_key(
        &self,
        algorithm: Algorithm,
        wrapped: &[u8],
        uri: &str,
        version: &str,
        context: &EncryptionContext,
    ) -> CacheKey {
        let mut out = CacheKey::new();
        out.push_field(&[algorithm.code()]);
        out.push_field(wrapped);
        out.push_field(uri.as_bytes());
        out.push_field(version.as_bytes());
        self.scope_key(&mut out, context);
        out
    }

    pub(super) fn open_entry(
        &self,
        cipher: Arc<DekCipher>,
        wrapped: &WrappedKey,
        now: CoarseInstant,
    ) -> Arc<OpenEntry> {
        let key = &wrapped.key;
        let (scheme, version) = (key.scheme().to_string(), key.version.to_string());
        Arc::new(OpenEntry {
            cipher,
            key: key.clone(),
            wrapped: wrapped.clone(),
            created: now,
            opened: AtomicU64::new(0),
            decrypted: metrics::counter!(m::DECRYPT_TOTAL, "provider" => scheme.clone(), "key_version" => version),
            duration: metrics::histogram!(m::OPERATION_DURATION, "operation" => "open", "provider" => scheme),
        })
    }

    /// The cipher for an envelope's DEK: from the cache, or unwrapped by its provider. A
    /// fresh cipher is not cached yet: the caller caches it with [`Self::cache_opener`] once
    /// the envelope authenticates, so no crafted envelope can put a cipher in the cache that
    /// genuine envelopes of the same DEK would then meet.
    pub(super) async fn cipher_for(
        &self,
        envelope: &Envelope<'_>,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<(Arc<OpenEntry>, Option<CacheKey>)> {
        let KeySlot::Wrapped {
            uri,
            version,
            wrapped,
            ..
        } = envelope.slot()
        else {
            return Err(Error::misconfigured(
                "compact envelopes need a DEK store, which this keyring does not have; seal with the full layout",
            ));
        };
        // The cache key comes from the envelope's borrowed slot: a hit validates and copies
        // nothing (the cached cipher's commitment check covers the slot bytes).
        let cache_key = self.slot_cache_key(envelope.algorithm(), wrapped, uri, version, context);
        if let Some(entry) = self.inner.open_cache.get(cache_key.as_slice()) {
            if within_age(&self.inner.cache, entry.created, now) {
                self.inner.open_cache_hits.fetch_add(1, Ordering::Relaxed);
                self.inner.open_hit_metric.increment(1);
                return Ok((entry, None));
            }
            self.inner.open_cache.remove(cache_key.as_slice());
        }
        self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::DEK_CACHE_MISSES_TOTAL, "cache" => "open").increment(1);
        let wrapped = envelope
            .wrapped_key()
            .ok_or_else(|| Error::misconfigured("no wrapped key"))??;
        let scheme = wrapped.key.scheme().to_string();
        let provider = self.provider(&scheme)?.clone();
        let scope = self.scope_of(context);
        let dek = self
            .kms_call(&scheme, Operation::Unwrap, || {
                provider.unwrap(&wrapped, &scope)
            })
            .await;
        self.audit(
            Operation::Unwrap,
            Some(&wrapped.key),
            None,
            Some(&scope),
            dek.as_ref().err(),
        );
        let dek = dek?;
        let cipher = DekCipher::new(self.inner.backend, envelope.algorithm(), &dek)?
            .with_wrapped_key(&wrapped)?;
        Ok((
            self.open_entry(Arc::new(cipher), &wrapped, now),
            Some(cache_key),
        ))
    }

    /// Caches a cipher [`Self::cipher_for`] unwrapped, once its envelope authenticated.
    pub(super) fn cache_opener(&self, key: Option<CacheKey>, entry: &Arc<OpenEntry>) {
        if let Some(key) = key {
            self.inner.open_cache.insert(key.to_vec(), entry.clone());
        }
    }

    /// Opens a ciphertext bound to `context`: an envelope under any registered provider and
    /// key version, or (in `hybrid` and `legacy` modes) a legacy ciphertext.
    pub async fn open(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>> {
        let now = CoarseInstant::now();
        let parsed = if Envelope::looks_like(ciphertext) {
            Some(Envelope::parse(ciphertext))
        } else {
            None
        };
        match (parsed, self.inner.mode) {
            (Some(Ok(envelope)), _) => {
                let result = self.open_envelope(&envelope, context, now).await;
                if result.is_err() && self.inner.mode != Mode::Kms && self.inner.legacy.is_some() {
                    // One legacy ciphertext in 2^24 starts like an envelope; try it as legacy.
                    if let Ok(plain) = self.open_legacy(ciphertext, context) {
                        return Ok(plain);
                    }
                }
                result
            }
            (parsed, Mode::Kms) => {
                let e = match parsed {
                    Some(Err(e)) => e,
                    _ => not_an_envelope(),
                };
                self.count_error(Operation::Open, "envelope", &e);
                self.audit(Operation::Open, None, None, Some(context), Some(&e));
                Err(e)
            }
            _ => self.open_legacy(ciphertext, context),
        }
    }

    pub(super) async fn open_envelope(
        &self,
        envelope: &Envelope<'_>,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Vec<u8>> {
        if envelope.layout() == EnvelopeLayout::Compact {
            return self.open_compact(envelope, context, now).await;
        }
        let (entry, uncached) = match self.cipher_for(envelope, context, now).await {
            Ok(found) => found,
            Err(e) => {
                self.audit(
                    Operation::Open,
                    envelope.key_ref().and_then(Result::ok).as_ref(),
                    None,
                    Some(context),
                    Some(&e),
                );
                return Err(e);
            }
        };
        let timer =
            (entry.opened.fetch_add(1, Ordering::Relaxed) % LATENCY_SAMPLE == 0).then(Instant::now);
        let result = entry.cipher.open(envelope, context);
        match &result {
            Ok(_) => {
                self.cache_opener(uncached, &entry);
                entry.decrypted.increment(1);
                if let Some(started) = timer {
                    entry.duration.record(started.elapsed().as_secs_f64());
                }
            }
            Err(e) => self.count_error(Operation::Open, entry.key.scheme(), e),
        }
        self.audit(
            Operation::Open,
            Some(&entry.key),
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    pub(super) fn open_legacy(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let result = self
            .legacy()
            .and_then(|(format, key)| legacy::open(format, key, ciphertext, b""));
        let outcome = match &result {
            Ok(_) => {
                self.inner.legacy_opens.fetch_add(1, Ordering::Relaxed);
                "success"
            }
            Err(e) => {
                self.count_error(Operation::OpenLegacy, "legacy", e);
                "failure"
            }
        };
        metrics::counter!(m::LEGACY_OPENS_TOTAL, "outcome" => outcome).increment(1);
        self.audit(
            Operation::OpenLegacy,
            None,
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    /// Opens many ciphertexts; envelopes sharing a DEK cost one unwrap.
    pub async fn open_batch(&self, items: &[(&[u8], &EncryptionContext)]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(items.len());
        for (ciphertext, context) in items {
            out.push(self.open(ciphertext, context).await?);
        }
        Ok(out)
    }
}

/// The error for input that is not an envelope at all, in `kms` mode.
pub(super) fn not_an_envelope() -> Error {
    Error::invalid_input(
        "the ciphertext is not a Sealkit envelope; if it is legacy data, open it in mode \"hybrid\" (with the legacy key)",
    )
}
