//! Bounded data-key caches. Entries hold only keys derived from the DEK (inside
//! [`DekCipher`]), which are zeroized when the last reference is dropped on eviction.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sealkit_core::{DekCipher, KeyRef, WrappedKey};

use crate::config::CacheConfig;

/// A DEK in use for sealing.
pub(crate) struct SealEntry {
    pub(crate) cipher: Arc<DekCipher>,
    pub(crate) key: KeyRef,
    pub(crate) created: CoarseInstant,
    pub(crate) bytes: AtomicU64,
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
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`FastHasher`]s.
pub(crate) type FastState = std::hash::BuildHasherDefault<FastHasher>;

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

/// A copy-on-write map for the sealing cache: reads (every seal) take no lock and touch no
/// shared counter; writes (a new DEK, an eviction, a rotation — rare) copy the map. Bounded and
/// evicted in insertion order like [`BoundedCache`].
pub(crate) struct SwapCache<V> {
    map: arc_swap::ArcSwap<HashMap<Vec<u8>, Arc<V>, FastState>>,
    order: Mutex<VecDeque<Vec<u8>>>,
    capacity: usize,
}

impl<V> SwapCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: arc_swap::ArcSwap::from_pointee(HashMap::default()),
            order: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Runs `f` on the entry for `key`, without locking.
    pub(crate) fn with<R>(&self, key: &[u8], f: impl FnOnce(&V) -> R) -> Option<R> {
        self.map.load().get(key).map(|v| f(v))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<V>> {
        self.map.load().get(key).cloned()
    }

    /// Applies `change` to a copy of the map and publishes it (writers take turns).
    fn update(
        &self,
        change: impl FnOnce(&mut HashMap<Vec<u8>, Arc<V>, FastState>, &mut VecDeque<Vec<u8>>),
    ) {
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = HashMap::clone(&self.map.load());
        change(&mut map, &mut order);
        self.map.store(Arc::new(map));
    }

    /// Inserts, evicting the oldest entries beyond capacity. A zero capacity caches nothing.
    pub(crate) fn insert(&self, key: Vec<u8>, value: Arc<V>) {
        if self.capacity == 0 {
            return;
        }
        let capacity = self.capacity;
        self.update(|map, order| {
            if map.insert(key.clone(), value).is_none() {
                order.push_back(key);
            }
            while map.len() > capacity {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
        });
    }

    pub(crate) fn remove(&self, key: &[u8]) {
        if self.map.load().contains_key(key) {
            self.update(|map, order| {
                map.remove(key);
                order.retain(|k| k != key);
            });
        }
    }

    /// Drops every entry `keep` refuses.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.update(|map, order| {
            map.retain(|_, v| keep(v));
            order.retain(|k| map.contains_key(k));
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}
