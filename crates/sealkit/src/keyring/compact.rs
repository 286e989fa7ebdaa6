//! Compact envelopes through a DEK store: sealing with a stored DEK whose message budget is
//! shared by every process, opening by DEK id through a bounded cache, rewrapping and dual
//! wrapping the stored DEKs (no data row written), and crypto-shredding a subject's DEKs.

use std::sync::Arc;

use sealkit_core::dek_store::{DekCount, DekId, DekRecord, DekState, DekStore};
use sealkit_core::envelope::KeySlot;
use sealkit_core::{DekCipher, EncryptionContext, Envelope, KeyRef, KeyUri, WrappedKey};

use super::Keyring;
use crate::audit::Operation;
use crate::cache::{BoundedCache, CoarseInstant, SealEntry, SwapCache, within_age};
use crate::config::{DekConfig, Layout};
use crate::metrics_names as m;
use crate::{Error, Result};

/// A keyring's DEK store and what it caches from it.
pub(crate) struct Deks {
    pub(crate) store: Arc<dyn DekStore>,
    layout: Layout,
    compact_keys: Vec<KeyUri>,
    subject: Option<String>,
    block: u64,
    limit: u64,
    /// Compact sealers by key and scope (each holds one reserved block of a stored DEK).
    pub(crate) sealers: SwapCache<SealEntry>,
    /// Stored DEKs unwrapped in this process, by id: each is read from the store once.
    ciphers: BoundedCache<StoredDek>,
    /// Messages sealed by retired compact sealers and not yet reported to the store, by DEK.
    unreported: std::sync::Mutex<Vec<(DekId, u64)>>,
}

/// A stored DEK unwrapped in this process.
struct StoredDek {
    cipher: Arc<DekCipher>,
    /// The wrap that opened it.
    key: KeyRef,
    subject: Option<String>,
    created: CoarseInstant,
}

impl Deks {
    pub(crate) fn new(
        store: Arc<dyn DekStore>,
        config: &DekConfig,
        max_messages: u64,
        capacity: (usize, usize),
    ) -> Self {
        Self {
            store,
            layout: config.layout,
            compact_keys: config.compact_keys.clone(),
            subject: config.subject.clone(),
            block: config.reserve_block.max(1),
            limit: config.message_limit.unwrap_or(max_messages).max(1),
            sealers: SwapCache::new(capacity.0),
            ciphers: BoundedCache::new(capacity.1),
            unreported: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Whether new envelopes under `key` are compact.
    pub(crate) fn compact_for(&self, key: &KeyUri) -> bool {
        self.layout == Layout::Compact || self.compact_keys.contains(key)
    }
}

/// A DEK scope as stored: the JSON object of its pairs (sorted by key).
pub(crate) fn scope_json(scope: &EncryptionContext) -> String {
    let map: serde_json::Map<String, serde_json::Value> = scope
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A stored scope back as a context.
fn scope_from_json(text: &str, id: &DekId) -> Result<EncryptionContext> {
    let corrupt = || {
        Error::invalid_input(format!(
            "the DEK store row of DEK {} has an unreadable scope; restore the table from a backup",
            hex::encode(id)
        ))
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| corrupt())?;
    let pairs: Vec<(String, String)> = map
        .into_iter()
        .map(|(k, v)| v.as_str().map(|v| (k, v.to_string())).ok_or_else(corrupt))
        .collect::<Result<_>>()?;
    EncryptionContext::from_pairs(pairs)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What a rewrap of stored DEKs did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DekRewrapReport {
    /// DEKs looked at (those with a wrap under the source key).
    pub deks: u64,
    /// DEKs whose wraps were replaced or extended.
    pub rewrapped: u64,
    /// DEKs already wrapped as asked.
    pub current: u64,
    /// DEKs another process changed meanwhile (left for the next run).
    pub conflicts: u64,
}

impl Keyring {
    fn deks(&self) -> Result<&Deks> {
        self.inner.deks.as_ref().ok_or_else(|| {
            Error::misconfigured(
                "compact envelopes need a DEK store: set [deks] store (or SEALKIT_DEK_STORE) to the application's database",
            )
        })
    }

    /// The DEK store, when the keyring has one.
    pub fn dek_store(&self) -> Option<&Arc<dyn DekStore>> {
        self.inner.deks.as_ref().map(|d| &d.store)
    }

    /// Whether new envelopes under `key` get the compact layout.
    pub(super) fn compact_for(&self, key: &KeyUri) -> bool {
        self.inner
            .deks
            .as_ref()
            .is_some_and(|deks| deks.compact_for(key))
    }

    /// Seals `plaintext` under `key` as a compact envelope (a 16-byte DEK id instead of the
    /// wrapped DEK, which the DEK store holds), whatever the configured layout.
    pub async fn seal_compact(
        &self,
        key: &KeyUri,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let deks = self.deks()?;
        let now = CoarseInstant::now();
        if let Some(result) = self.seal_cached_in(&deks.sealers, key, plaintext, context, now) {
            return result;
        }
        Box::pin(self.seal_fresh_in(&deks.sealers, true, key, plaintext, context, now)).await
    }

    /// A compact sealer for `key` and `context`'s scope: a block of the scope's active stored
    /// DEK's budget, or a new DEK when it has none left.
    pub(super) async fn new_compact_sealer(
        &self,
        key: &KeyUri,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Arc<SealEntry>> {
        let deks = self.deks()?;
        self.report_dek_use(deks).await;
        let scope = self.scope_of(context);
        let scope_text = scope_json(&scope);
        let algorithm = self.inner.algorithm;
        let active = deks.store.active(key, &scope_text, algorithm).await;
        read_metric(&active);
        let primary = self.current_version(key).await?;
        match active? {
            Some(record)
                if record
                    .wraps
                    .first()
                    .is_some_and(|w| w.key.version == primary) =>
            {
                let granted = deks.store.reserve(&record.id, deks.block).await?;
                if granted > 0 {
                    metrics::counter!(m::DEK_RESERVATIONS_TOTAL, "outcome" => "granted")
                        .increment(1);
                    let stored = self.stored_cipher(&record, now).await?;
                    let cipher = Arc::new(stored.cipher.with_fresh_budget(granted)?);
                    return Ok(SealEntry::new(cipher, stored.key.clone(), now, true));
                }
                metrics::counter!(m::DEK_RESERVATIONS_TOTAL, "outcome" => "exhausted").increment(1);
                metrics::counter!(m::DEK_RETIREMENTS_TOTAL, "reason" => "budget").increment(1);
            }
            Some(record) => {
                // Made before the key rotated (and not rewrapped since): new data goes under
                // a new DEK of the primary version, as with the full layout.
                deks.store.retire(&record.id).await?;
                metrics::counter!(m::DEK_RETIREMENTS_TOTAL, "reason" => "rotated").increment(1);
            }
            None => {}
        }
        // A new DEK: generated and wrapped by the provider, stored with its first block
        // reserved.
        let generated = self.generate_dek(key, &scope).await?;
        let cipher = DekCipher::new(self.inner.backend, algorithm, &generated.plaintext)?;
        let first = deks.block.min(deks.limit);
        let mut record = DekRecord::new(
            cipher.dek_id(),
            key.clone(),
            scope_text,
            algorithm,
            vec![generated.wrapped.clone()],
            deks.limit,
        );
        record.subject = self.subject_of(&scope);
        record.created_unix = now_unix();
        record.reserved = first;
        if first >= deks.limit {
            record.state = DekState::Retired;
        }
        deks.store.insert(&record).await?;
        let cipher = Arc::new(cipher);
        deks.ciphers.insert(
            record.id.to_vec(),
            Arc::new(StoredDek {
                cipher: cipher.clone(),
                key: generated.wrapped.key.clone(),
                subject: record.subject.clone(),
                created: now,
            }),
        );
        let sealing = Arc::new(cipher.with_fresh_budget(first)?);
        Ok(SealEntry::new(sealing, generated.wrapped.key, now, true))
    }

    /// Notes the messages retired compact sealers used, to report to the store.
    pub(super) fn note_dek_use(&self, dropped: &[Arc<SealEntry>]) {
        let Some(deks) = self.inner.deks.as_ref() else {
            return;
        };
        let used: Vec<(DekId, u64)> = dropped
            .iter()
            .filter(|e| e.compact)
            .map(|e| (e.cipher.dek_id(), e.unreported_use()))
            .filter(|(_, n)| *n > 0)
            .collect();
        if !used.is_empty() {
            deks.unreported
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(used);
        }
    }

    /// Reports noted use to the store (best effort: the shared budget rests on reservations;
    /// `used` is what operators read).
    async fn report_dek_use(&self, deks: &Deks) {
        let pending =
            std::mem::take(&mut *deks.unreported.lock().unwrap_or_else(|e| e.into_inner()));
        for (id, messages) in pending {
            if let Err(e) = deks.store.record_use(&id, messages).await {
                tracing::warn!(dek = %hex::encode(id), error = %e, "could not record a DEK's use");
            }
        }
    }

    /// Reports to the DEK store how many messages this process has sealed under each stored
    /// DEK (including blocks still in use), so that `sealkit deks list` shows it. Call it
    /// before the process exits; a process that does not leaves its blocks counted as
    /// reserved only.
    pub async fn flush_dek_use(&self) {
        let Some(deks) = self.inner.deks.as_ref() else {
            return;
        };
        let mut live = Vec::new();
        deks.sealers
            .for_each(|e| live.push((e.cipher.dek_id(), e.unreported_use())));
        deks.unreported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(live.into_iter().filter(|(_, n)| *n > 0));
        self.report_dek_use(deks).await;
    }

    /// The subject a scope names (`tenant=42`), when `[deks] subject` is set and the scope
    /// has it.
    fn subject_of(&self, scope: &EncryptionContext) -> Option<String> {
        let field = self.inner.deks.as_ref()?.subject.as_deref()?;
        scope.get(field).map(|value| format!("{field}={value}"))
    }

    /// The cipher of stored DEK `id` if this process has it within the cache's age bound (an
    /// older one is dropped).
    fn cached_cipher(&self, deks: &Deks, id: &DekId, now: CoarseInstant) -> Option<Arc<StoredDek>> {
        let found = deks.ciphers.get(id)?;
        if within_age(&self.inner.cache, found.created, now) {
            return Some(found);
        }
        deks.ciphers.remove(id);
        None
    }

    /// A stored DEK's cipher: from this process's cache, or unwrapped from its row. The
    /// unwrapped key must derive the row's id (compared in constant time): a row whose wraps
    /// were swapped for another's, or altered, is refused.
    async fn stored_cipher(
        &self,
        record: &DekRecord,
        now: CoarseInstant,
    ) -> Result<Arc<StoredDek>> {
        let deks = self.deks()?;
        if let Some(found) = self.cached_cipher(deks, &record.id, now) {
            return Ok(found);
        }
        if record.state == DekState::Shredded {
            return Err(shredded(record));
        }
        let scope = scope_from_json(&record.scope, &record.id)?;
        let mut last = None;
        // Any wrap whose provider this keyring has opens the DEK (dual wraps during a move).
        for wrap in &record.wraps {
            let scheme = wrap.key.scheme().to_string();
            let Ok(provider) = self.provider(&scheme).cloned() else {
                continue;
            };
            let dek = self
                .kms_call(&scheme, Operation::Unwrap, || provider.unwrap(wrap, &scope))
                .await;
            self.audit(
                Operation::Unwrap,
                Some(&wrap.key),
                None,
                Some(&scope),
                dek.as_ref().err(),
            );
            let dek = match dek {
                Ok(dek) => dek,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let cipher = DekCipher::new(self.inner.backend, record.algorithm, &dek)?;
            if !sealkit_core::ct_eq_bytes(&cipher.dek_id(), &record.id) {
                tracing::error!(
                    dek = %hex::encode(record.id),
                    "a DEK store row unwraps to a key with another id: the row was altered or swapped for another"
                );
                return Err(Error::InvalidCiphertext);
            }
            let stored = Arc::new(StoredDek {
                cipher: Arc::new(cipher),
                key: wrap.key.clone(),
                subject: record.subject.clone(),
                created: now,
            });
            deks.ciphers.insert(record.id.to_vec(), stored.clone());
            return Ok(stored);
        }
        Err(last.unwrap_or_else(|| {
            Error::misconfigured(format!(
                "DEK {} is wrapped only under keys whose providers this keyring lacks ({})",
                hex::encode(record.id),
                record
                    .wraps
                    .iter()
                    .map(|w| w.key.uri.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }))
    }

    /// Opens a compact envelope: its DEK by id from this process's cache or the store.
    pub(super) async fn open_compact(
        &self,
        envelope: &Envelope<'_>,
        context: &EncryptionContext,
        now: CoarseInstant,
    ) -> Result<Vec<u8>> {
        let KeySlot::DekId(id) = envelope.slot() else {
            return Err(Error::invalid_input("not a compact envelope"));
        };
        let stored = match self.compact_cipher(id, now).await {
            Ok(stored) => stored,
            Err(e) => {
                self.count_error(Operation::Open, "dek-store", &e);
                self.audit(Operation::Open, None, None, Some(context), Some(&e));
                return Err(e);
            }
        };
        let result = stored.cipher.open(envelope, context);
        if let Err(e) = &result {
            self.count_error(Operation::Open, stored.key.scheme(), e);
        }
        self.audit(
            Operation::Open,
            Some(&stored.key),
            None,
            Some(context),
            result.as_ref().err(),
        );
        result
    }

    /// The cipher of the stored DEK `id`: cached, or read from the store and unwrapped.
    async fn compact_cipher(&self, id: &DekId, now: CoarseInstant) -> Result<Arc<StoredDek>> {
        let deks = self.deks()?;
        if let Some(found) = self.cached_cipher(deks, id, now) {
            return Ok(found);
        }
        let record = deks.store.get(id).await;
        read_metric(&record);
        let record = record?.ok_or_else(|| {
            Error::not_found(
                deks.store.describe(),
                format!("DEK {} (named by a compact envelope)", hex::encode(id)),
            )
        })?;
        self.stored_cipher(&record, now).await
    }

    /// Crypto-shreds every stored DEK of `subject` (`tenant=42`): their wraps are destroyed in
    /// the store and dropped from this process's caches, so the subject's compact values
    /// never open again (other processes drop theirs within the cache's age bound). Returns
    /// how many DEKs were shredded.
    pub async fn shred(&self, subject: &str) -> Result<u64> {
        let deks = self.deks()?;
        let context = subject
            .split_once('=')
            .and_then(|(k, v)| EncryptionContext::from_pairs([(k, v)]).ok())
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "subject {subject:?} is not FIELD=VALUE, e.g. tenant=42"
                ))
            })?;
        let result = deks.store.shred(subject).await;
        self.audit(
            Operation::ShredDeks,
            None,
            None,
            Some(&context),
            result.as_ref().err(),
        );
        let shredded = result?;
        deks.ciphers
            .retain(|d| d.subject.as_deref() != Some(subject));
        self.retire_sealers(deks.sealers.retain(|_| false));
        metrics::counter!(m::DEK_RETIREMENTS_TOTAL, "reason" => "shredded").increment(shredded);
        Ok(shredded)
    }

    /// Rewraps the stored DEKs that have a wrap under `from` so that they are wrapped under
    /// `to`'s primary version — a KEK rotation (`to == from`) or a provider move — without
    /// touching a data row: the cost is one provider call or two per DEK. With `keep_old`, the
    /// old wrap stays beside the new one (dual wrap: either provider opens the DEK) until
    /// [`Keyring::drop_dek_wraps`] removes it after the cut-over.
    pub async fn rewrap_deks(
        &self,
        from: &KeyUri,
        to: &KeyUri,
        keep_old: bool,
    ) -> Result<DekRewrapReport> {
        let deks = self.deks()?;
        let primary = self.current_version(to).await?;
        let mut report = DekRewrapReport::default();
        let mut after = None;
        loop {
            let page = deks.store.list(after.as_ref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for record in page.iter().filter(|r| r.state != DekState::Shredded) {
                let Some(old) = record.wraps.iter().find(|w| &w.key.uri == from) else {
                    continue;
                };
                report.deks += 1;
                if record
                    .wraps
                    .iter()
                    .any(|w| &w.key.uri == to && w.key.version == primary)
                    && (keep_old || from == to || record.wraps.len() == 1)
                {
                    report.current += 1;
                    continue;
                }
                let scope = scope_from_json(&record.scope, &record.id)?;
                let new = self.wrap_for(old, to, &scope).await?;
                let mut wraps: Vec<WrappedKey> = vec![new];
                wraps.extend(
                    record
                        .wraps
                        .iter()
                        .filter(|w| &w.key.uri != to && (keep_old || &w.key.uri != from))
                        .cloned(),
                );
                if deks
                    .store
                    .replace_wraps(&record.id, &record.wraps, &wraps)
                    .await?
                {
                    report.rewrapped += 1;
                    deks.ciphers.remove(&record.id);
                } else {
                    report.conflicts += 1;
                }
            }
        }
        self.retire_sealers(deks.sealers.retain(|_| false));
        Ok(report)
    }

    /// The DEK of `old` wrapped under `to`'s primary version: the provider's own rewrap when
    /// both are the same provider, else unwrap and wrap.
    async fn wrap_for(
        &self,
        old: &WrappedKey,
        to: &KeyUri,
        scope: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let target = self.provider(to.scheme())?.clone();
        let result = if old.key.scheme() == to.scheme() {
            self.kms_call(to.scheme(), Operation::Rewrap, || {
                target.rewrap(old, to, scope)
            })
            .await
        } else {
            let source = self.provider(old.key.scheme())?.clone();
            let dek = self
                .kms_call(old.key.scheme(), Operation::Unwrap, || {
                    source.unwrap(old, scope)
                })
                .await?;
            self.kms_call(to.scheme(), Operation::Rewrap, || {
                target.wrap(to, &dek, scope)
            })
            .await
        };
        self.audit(
            Operation::Rewrap,
            result.as_ref().ok().map(|w| &w.key),
            Some(to),
            Some(scope),
            result.as_ref().err(),
        );
        result
    }

    /// Removes the wraps under `key` from stored DEKs that have another wrap (after a
    /// provider move's cut-over proof). Returns how many DEKs lost a wrap.
    pub async fn drop_dek_wraps(&self, key: &KeyUri) -> Result<u64> {
        let deks = self.deks()?;
        let mut dropped = 0;
        let mut after = None;
        loop {
            let page = deks.store.list(after.as_ref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for record in &page {
                let kept: Vec<WrappedKey> = record
                    .wraps
                    .iter()
                    .filter(|w| &w.key.uri != key)
                    .cloned()
                    .collect();
                if kept.is_empty() || kept.len() == record.wraps.len() {
                    continue;
                }
                if deks
                    .store
                    .replace_wraps(&record.id, &record.wraps, &kept)
                    .await?
                {
                    dropped += 1;
                    deks.ciphers.remove(&record.id);
                }
            }
        }
        Ok(dropped)
    }

    /// Stored DEK counts by key, version and state.
    pub async fn dek_stats(&self) -> Result<Vec<DekCount>> {
        self.deks()?.store.stats().await
    }
}

fn shredded(record: &DekRecord) -> Error {
    Error::Shredded {
        subject: record
            .subject
            .clone()
            .unwrap_or_else(|| format!("DEK {}", hex::encode(record.id))),
    }
}

/// Counts a DEK-store read by outcome.
fn read_metric<T>(result: &Result<T>) {
    let outcome = if result.is_ok() { "success" } else { "failure" };
    metrics::counter!(m::DEK_STORE_READS_TOTAL, "outcome" => outcome).increment(1);
}
