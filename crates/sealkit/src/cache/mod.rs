//! Bounded data-key caches. Entries hold only keys derived from the DEK (inside
//! [`DekCipher`]), which are zeroized when the last reference is dropped on eviction.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sealkit_core::{DekCipher, EncryptionContext, KeyRef, KeyUri, WrappedKey};

use crate::config::CacheConfig;

/// A DEK in use for sealing.
pub(crate) struct SealEntry {
    pub(crate) cipher: Arc<DekCipher>,
    pub(crate) key: KeyRef,
    pub(crate) created: CoarseInstant,
    pub(crate) bytes: AtomicU64,
    /// Whether it seals compact envelopes (its budget is a block reserved from the DEK store).
    pub(crate) compact: bool,
    /// Messages of its budget already reported to the DEK store as used (compact only).
    pub(crate) reported: AtomicU64,
    pub(crate) encrypted: metrics::Counter,
    pub(crate) duration: metrics::Histogram,
}

/// A DEK unwrapped for opening.
pub(crate) struct OpenEntry {
    pub(crate) cipher: Arc<DekCipher>,
    pub(crate) key: KeyRef,
    pub(crate) wrapped: WrappedKey,
    pub(crate) created: CoarseInstant,
    pub(crate) opened: AtomicU64,
    pub(crate) decrypted: metrics::Counter,
    pub(crate) duration: metrics::Histogram,
}

/// A cache key whose buffer is reused from a per-thread pool, so that a cache hit allocates
/// nothing. Fields are length-prefixed, so distinct field lists never collide.
pub(crate) struct CacheKey {
    buf: Vec<u8>,
}

thread_local! {
    static KEY_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl CacheKey {
    pub(crate) fn new() -> Self {
        let buf = KEY_BUFFERS
            .with(|pool| pool.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(256));
        Self { buf }
    }

    /// Appends `len ‖ bytes` (u32 big-endian length).
    pub(crate) fn push_field(&mut self, bytes: &[u8]) {
        push_field(&mut self.buf, bytes);
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

/// Appends `len ‖ bytes` (u32 big-endian length) to a cache key.
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Drop for CacheKey {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= 4096 {
            buf.clear();
            // A few buffers per thread suffice (nesting is shallow); drop the rest.
            let _ = KEY_BUFFERS.try_with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < 4 {
                    pool.push(buf);
                }
            });
        }
    }
}

/// The clock of cache ages: `CLOCK_MONOTONIC_COARSE` (a few milliseconds of resolution, a
/// few nanoseconds to read), since every cache hit reads it.
pub(crate) type CoarseInstant = coarsetime::Instant;

/// Whether an entry created at `created` is still within the configured age at `now`.
pub(crate) fn within_age(config: &CacheConfig, created: CoarseInstant, now: CoarseInstant) -> bool {
    now.duration_since(created).as_millis() < config.max_age_secs.saturating_mul(1000)
}

/// Latency of cache hits is sampled, 1 in this many, to keep clock reads off the hot path.
pub(crate) const LATENCY_SAMPLE: u64 = 16;

/// FxHash-style hasher for cache keys the application controls (key URIs and DEK scopes).
/// Much cheaper than SipHash on short keys; not used where an attacker picks the key bytes.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        // The tail in at most three steps (4, 2, 1 bytes).
        let mut tail = chunks.remainder();
        if let Some((word, rest)) = tail.split_first_chunk::<4>() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(u32::from_le_bytes(*word))).wrapping_mul(K);
            tail = rest;
        }
        if let Some((word, rest)) = tail.split_first_chunk::<2>() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(u16::from_le_bytes(*word))).wrapping_mul(K);
            tail = rest;
        }
        if let Some(&b) = tail.first() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map with insertion-ordered eviction and an age limit.
pub(crate) struct BoundedCache<V, S = std::collections::hash_map::RandomState> {
    map: RwLock<HashMap<Vec<u8>, Arc<V>, S>>,
    order: Mutex<VecDeque<Vec<u8>>>,
    capacity: usize,
}

impl<V, S: std::hash::BuildHasher + Default> BoundedCache<V, S> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::default()),
            order: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<V>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Inserts, evicting the oldest entries beyond capacity. A zero capacity caches nothing.
    pub(crate) fn insert(&self, key: Vec<u8>, value: Arc<V>) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        if map.insert(key.clone(), value).is_none() {
            order.push_back(key);
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub(crate) fn remove(&self, key: &[u8]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.remove(key).is_some() {
            self.order
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|k| k != key);
        }
    }

    /// Drops every entry matching `pred`.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, v| keep(v));
        self.order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| map.contains_key(k));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl SealEntry {
    /// A sealer for `cipher`, the DEK wrapped under `key`, made `now`; `compact` if it seals
    /// compact envelopes (its budget a block reserved from the DEK store).
    pub(crate) fn new(
        cipher: Arc<DekCipher>,
        key: KeyRef,
        now: CoarseInstant,
        compact: bool,
    ) -> Arc<Self> {
        use crate::metrics_names as m;
        let (scheme, version) = (key.scheme().to_string(), key.version.to_string());
        Arc::new(Self {
            cipher,
            key,
            created: now,
            bytes: AtomicU64::new(0),
            compact,
            reported: AtomicU64::new(0),
            encrypted: metrics::counter!(m::ENCRYPT_TOTAL, "provider" => scheme.clone(), "key_version" => version),
            duration: metrics::histogram!(m::OPERATION_DURATION, "operation" => "seal", "provider" => scheme),
        })
    }

    /// Messages sealed since the last report, marked reported.
    pub(crate) fn unreported_use(&self) -> u64 {
        let used = self.cipher.budget().used();
        used.saturating_sub(self.reported.swap(used, Ordering::Relaxed))
    }

    /// Seals served by this entry from the cache: all but the first, which the miss that
    /// created the entry made.
    pub(crate) fn hits(&self) -> u64 {
        self.cipher.budget().used().saturating_sub(1)
    }

    /// Whether the entry may seal `len` more bytes now (and reserves them if so).
    pub(crate) fn admit(&self, config: &CacheConfig, len: usize, now: CoarseInstant) -> bool {
        if !within_age(config, self.created, now) {
            return false;
        }
        let len = len as u64;
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        before.saturating_add(len) <= config.max_bytes
    }
}

/// The bytes that identify a cache entry, given as parts so that a lookup hashes and
/// compares them where they lie instead of first copying them into one buffer. The parts'
/// concatenation must be unambiguous (self-delimiting parts).
pub(crate) trait KeyParts {
    /// Calls `part` on each part in order until it returns `false`; returns whether every part
    /// was accepted.
    fn each_part(&self, part: impl FnMut(&[u8]) -> bool) -> bool;

    /// Hash of the parts (the same parts always hash alike; nothing else is promised).
    fn key_hash(&self) -> u64 {
        use std::hash::Hasher;
        let mut hasher = FastHasher::default();
        self.each_part(|bytes| {
            hasher.write(bytes);
            true
        });
        hasher.finish()
    }

    /// Whether the parts, concatenated, equal `stored`.
    fn matches(&self, stored: &[u8]) -> bool {
        let mut rest = stored;
        self.each_part(|bytes| match rest.split_at_checked(bytes.len()) {
            Some((head, tail)) if head == bytes => {
                rest = tail;
                true
            }
            _ => false,
        }) && rest.is_empty()
    }

    /// The parts concatenated.
    fn to_bytes(&self) -> Box<[u8]> {
        let mut out = Vec::with_capacity(128);
        self.each_part(|bytes| {
            out.extend_from_slice(bytes);
            true
        });
        out.into_boxed_slice()
    }
}

/// One entry of a [`SwapCache`].
struct Slot<V> {
    hash: u64,
    key: Box<[u8]>,
    value: Arc<V>,
}

impl<V> Clone for Slot<V> {
    fn clone(&self) -> Self {
        Self {
            hash: self.hash,
            key: self.key.clone(),
            value: Arc::clone(&self.value),
        }
    }
}

type SlotTable<V> = hashbrown::HashTable<Slot<V>>;

/// A copy-on-write map for the sealing cache: reads (every seal) take no lock and touch no
/// shared counter; writes (a new DEK, an eviction, a rotation — rare) copy the map. Bounded and
/// evicted in insertion order like [`BoundedCache`]. Keys are looked up by their parts
/// ([`KeyParts`]), so a hit builds no key.
pub(crate) struct SwapCache<V> {
    table: arc_swap::ArcSwap<SlotTable<V>>,
    order: Mutex<VecDeque<(u64, Box<[u8]>)>>,
    capacity: usize,
}

impl<V> SwapCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            table: arc_swap::ArcSwap::from_pointee(SlotTable::new()),
            order: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Runs `f` on the slot for `key`, without locking.
    #[inline]
    fn lookup<R>(&self, key: &impl KeyParts, f: impl FnOnce(&Slot<V>) -> R) -> Option<R> {
        let hash = key.key_hash();
        let table = self.table.load();
        table
            .find(hash, |slot| slot.hash == hash && key.matches(&slot.key))
            .map(f)
    }

    /// Runs `f` on the entry for `key`, without locking.
    #[inline]
    pub(crate) fn with<R>(&self, key: &impl KeyParts, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.lookup(key, |slot| f(&slot.value))
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn get(&self, key: &impl KeyParts) -> Option<Arc<V>> {
        self.lookup(key, |slot| Arc::clone(&slot.value))
    }

    /// Applies `change` to a copy of the table and publishes it (writers take turns). Returns
    /// the entries `change` dropped.
    fn update(
        &self,
        change: impl FnOnce(&mut SlotTable<V>, &mut VecDeque<(u64, Box<[u8]>)>, &mut Vec<Arc<V>>),
    ) -> Vec<Arc<V>> {
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = SlotTable::clone(&self.table.load());
        let mut dropped = Vec::new();
        change(&mut table, &mut order, &mut dropped);
        self.table.store(Arc::new(table));
        dropped
    }

    /// Inserts (or replaces), evicting the oldest entries beyond capacity. A zero capacity
    /// caches nothing. Returns the entries replaced or evicted.
    pub(crate) fn insert(&self, key: &impl KeyParts, value: Arc<V>) -> Vec<Arc<V>> {
        if self.capacity == 0 {
            return Vec::new();
        }
        let capacity = self.capacity;
        let hash = key.key_hash();
        let bytes = key.to_bytes();
        self.update(|table, order, dropped| {
            match table.find_entry(hash, |slot| slot.hash == hash && slot.key == bytes) {
                Ok(mut occupied) => {
                    dropped.push(std::mem::replace(&mut occupied.get_mut().value, value));
                }
                Err(_) => {
                    let slot = Slot {
                        hash,
                        key: bytes.clone(),
                        value,
                    };
                    table.insert_unique(hash, slot, |slot| slot.hash);
                    order.push_back((hash, bytes));
                }
            }
            while table.len() > capacity {
                let Some((old_hash, old)) = order.pop_front() else {
                    break;
                };
                if let Ok(occupied) =
                    table.find_entry(old_hash, |slot| slot.hash == old_hash && slot.key == old)
                {
                    dropped.push(occupied.remove().0.value);
                }
            }
        })
    }

    /// Removes the entry for `key`; returns it.
    pub(crate) fn remove(&self, key: &impl KeyParts) -> Vec<Arc<V>> {
        if self.lookup(key, |_| ()).is_none() {
            return Vec::new();
        }
        let hash = key.key_hash();
        let bytes = key.to_bytes();
        self.update(|table, order, dropped| {
            if let Ok(occupied) =
                table.find_entry(hash, |slot| slot.hash == hash && slot.key == bytes)
            {
                dropped.push(occupied.remove().0.value);
            }
            order.retain(|(h, k)| !(*h == hash && *k == bytes));
        })
    }

    /// Drops every entry `keep` refuses; returns them.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&V) -> bool) -> Vec<Arc<V>> {
        self.update(|table, order, dropped| {
            table.retain(|slot| {
                let kept = keep(&slot.value);
                if !kept {
                    dropped.push(Arc::clone(&slot.value));
                }
                kept
            });
            order.retain(|(hash, key)| {
                table
                    .find(*hash, |slot| slot.hash == *hash && slot.key == *key)
                    .is_some()
            });
        })
    }

    /// Sums `f` over the entries.
    pub(crate) fn sum(&self, mut f: impl FnMut(&V) -> u64) -> u64 {
        self.table.load().iter().map(|slot| f(&slot.value)).sum()
    }

    /// Runs `f` on every entry, without locking or copying the table.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&V)) {
        self.table.load().iter().for_each(|slot| f(&slot.value));
    }

    pub(crate) fn len(&self) -> usize {
        self.table.load().len()
    }
}

/// The sealing-cache key of a context under a key: the key URI and the context's DEK-scope
/// pairs, read in place from the context's canonical encoding.
pub(crate) struct SealKey<'a> {
    uri_len: [u8; 4],
    uri: &'a [u8],
    context: &'a EncryptionContext,
    scope: &'a [String],
}

impl<'a> SealKey<'a> {
    pub(crate) fn new(
        uri: &'a KeyUri,
        context: &'a EncryptionContext,
        scope: &'a [String],
    ) -> Self {
        let uri = uri.as_str().as_bytes();
        Self {
            uri_len: (uri.len() as u32).to_be_bytes(),
            uri,
            context,
            scope,
        }
    }
}

impl KeyParts for SealKey<'_> {
    #[inline]
    fn each_part(&self, mut part: impl FnMut(&[u8]) -> bool) -> bool {
        if !part(&self.uri_len) || !part(self.uri) {
            return false;
        }
        // Canonical encoding: `u16 count ‖ (u8 key_len ‖ key ‖ u16 value_len ‖ value)*`; each
        // pair's bytes delimit themselves, so they are parts as they are.
        let encoded = self.context.canonical_bytes();
        let mut at = 2;
        while let Some(&key_len) = encoded.get(at) {
            let key_end = at + 1 + usize::from(key_len);
            let (Some(key), Some(value_len)) = (
                encoded.get(at + 1..key_end),
                encoded.get(key_end..key_end + 2),
            ) else {
                return false;
            };
            let end = key_end + 2 + usize::from(u16::from_be_bytes([value_len[0], value_len[1]]));
            let Some(pair) = encoded.get(at..end) else {
                return false;
            };
            if self.scope.iter().any(|name| name.as_bytes() == key) && !part(pair) {
                return false;
            }
            at = end;
        }
        true
    }
}

#[cfg(test)]
mod tests;
