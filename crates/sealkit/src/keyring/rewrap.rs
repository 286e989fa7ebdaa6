//! Rewrapping: a new key slot for an envelope's DEK, the data ciphertext untouched.

use std::sync::Arc;

use sealkit_core::{DekCipher, EncryptionContext, Envelope, KeyUri, KeyVersion, WrappedKey};

use super::{Keyring, RewrapOutcome};
use crate::audit::Operation;
use crate::cache::CoarseInstant;
use crate::{Error, Result};

impl Keyring {
    /// Re-wraps an envelope's DEK under the primary version of `target` (default: the
    /// envelope's own key, i.e. after a rotation). Only the key slot changes: the nonce,
    /// ciphertext and tag are copied, and no data is decrypted. The new wrapped DEK is
    /// unwrapped once and checked against the envelope's commitment before it is used, so a
    /// faulty rewrap can never produce an envelope that does not open.
    pub async fn rewrap(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        target: Option<&KeyUri>,
    ) -> Result<RewrapOutcome> {
        let now = CoarseInstant::now();
        if !Envelope::looks_like(ciphertext) {
            // Not an envelope at all (as `open` says): invalid input, not a damaged envelope.
            return Err(super::open::not_an_envelope());
        }
        let envelope = Envelope::parse(ciphertext)?;
        let (old, uncached) = self.cipher_for(&envelope, context, now).await?;
        // The slot must be the one this DEK committed to before anything is cached or
        // rewrapped (the data itself is not decrypted by a rewrap).
        old.cipher.verify_commitment(&envelope)?;
        self.cache_opener(uncached, &old);
        let target = target.unwrap_or(&old.key.uri).clone();
        let primary = self.primary_version(&target, now).await?;
        if old.key.uri == target && old.key.version == primary {
            return Ok(RewrapOutcome::AlreadyCurrent);
        }
        // One rewrap per distinct (old wrapped DEK, scope, target primary): cache the result.
        let mut cache_key = self.open_cache_key(
            envelope.algorithm(),
            envelope.wrapped_bytes().unwrap_or_default(),
            &old.key,
            context,
        );
        cache_key.push_field(b"rewrap");
        cache_key.push_field(target.as_str().as_bytes());
        cache_key.push_field(primary.as_str().as_bytes());
        let new = match self.inner.open_cache.get(cache_key.as_slice()) {
            Some(entry) => entry,
            None => {
                let wrapped = envelope.wrapped_key().ok_or_else(|| {
                    Error::invalid_input("compact envelopes are rewrapped in their DEK store")
                })??;
                let scope = self.scope_of(context);
                let provider = self.provider(wrapped.key.scheme())?.clone();
                let target_provider = self.provider(target.scheme())?.clone();
                let rewrapped = if wrapped.key.scheme() == target.scheme() {
                    self.kms_call(target.scheme(), Operation::Rewrap, || {
                        provider.rewrap(&wrapped, &target, &scope)
                    })
                    .await
                } else {
                    let dek = self
                        .kms_call(wrapped.key.scheme(), Operation::Unwrap, || {
                            provider.unwrap(&wrapped, &scope)
                        })
                        .await?;
                    self.kms_call(target.scheme(), Operation::Rewrap, || {
                        target_provider.wrap(&target, &dek, &scope)
                    })
                    .await
                };
                self.audit(
                    Operation::Rewrap,
                    rewrapped.as_ref().ok().map(|w| &w.key),
                    Some(&target),
                    Some(&scope),
                    rewrapped.as_ref().err(),
                );
                let rewrapped: WrappedKey = rewrapped?;
                let dek = self
                    .kms_call(target.scheme(), Operation::Unwrap, || {
                        target_provider.unwrap(&rewrapped, &scope)
                    })
                    .await?;
                let cipher = DekCipher::new(self.inner.backend, envelope.algorithm(), &dek)?
                    .with_wrapped_key(&rewrapped)?;
                if cipher.dek_id() != old.cipher.dek_id() {
                    return Err(Error::other(
                        target.scheme(),
                        "rewrap returned a different data key; nothing was changed",
                    ));
                }
                let entry = self.open_entry(Arc::new(cipher), &rewrapped, now);
                self.inner
                    .open_cache
                    .insert(cache_key.to_vec(), entry.clone());
                self.inner.open_cache.insert(
                    self.open_cache_key(
                        envelope.algorithm(),
                        &rewrapped.bytes,
                        &rewrapped.key,
                        context,
                    )
                    .to_vec(),
                    entry.clone(),
                );
                entry
            }
        };
        Ok(RewrapOutcome::Rewrapped(
            new.cipher.rewrap_envelope(&envelope, &new.wrapped)?,
        ))
    }

    /// The primary version of `key`, as new seals use it: cached for up to a minute (or the
    /// cache's age limit), forgotten when this keyring rotates the key.
    pub async fn current_version(&self, key: &KeyUri) -> Result<KeyVersion> {
        self.primary_version(key, CoarseInstant::now()).await
    }

    /// The primary version of `key`, cached for up to a minute (and forgotten on rotation).
    pub(super) async fn primary_version(
        &self,
        key: &KeyUri,
        now: CoarseInstant,
    ) -> Result<KeyVersion> {
        let ttl_ms = self.inner.cache.max_age_secs.min(60) * 1000;
        if let Some((version, at)) = self
            .inner
            .primaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            && now.duration_since(*at).as_millis() < ttl_ms
        {
            return Ok(version.clone());
        }
        let primary = self.key_metadata(key).await?.primary;
        self.inner
            .primaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (primary.clone(), now));
        Ok(primary)
    }

    /// Forgets the cached primary version of `key` (after a rotation or deletion).
    pub(super) fn forget_primary(&self, key: &KeyUri) {
        self.inner
            .primaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
