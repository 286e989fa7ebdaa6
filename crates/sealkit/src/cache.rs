//! Bounded data-key caches. Entries hold only keys derived from the DEK (inside
//! [`DekCipher`]), which are zeroized when the last reference is dropped on eviction.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use sealkit_core::{DekCipher, KeyRef, WrappedKey};

use crate::config::CacheConfig;

/// A DEK in use for sealing.
pub(crate) struct SealEntry {
    pub(crate) cipher: Arc<DekCipher>,
    pub(crate) key: KeyRef,
    pub(crate) created: Instant,
    pub(crate) bytes: AtomicU64,
    pub(crate) encrypted: metrics::Counter,
    pub(crate) duration: metrics::Histogram,
}

/// A DEK unwrapped for opening.
pub(crate) struct OpenEntry {
    pub(crate) cipher: Arc<DekCipher>,
    pub(crate) key: KeyRef,
    pub(crate) wrapped: WrappedKey,
    pub(crate) created: Instant,
    pub(crate) decrypted: metrics::Counter,
    pub(crate) duration: metrics::Histogram,
}

/// A map with insertion-ordered eviction and an age limit.
pub(crate) struct BoundedCache<V> {
    map: RwLock<HashMap<Vec<u8>, Arc<V>>>,
    order: Mutex<VecDeque<Vec<u8>>>,
    capacity: usize,
}

impl<V> BoundedCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
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
    pub(crate) fn admit(&self, config: &CacheConfig, len: usize, now: Instant) -> bool {
        if now.duration_since(self.created) >= config.max_age() {
            return false;
        }
        let len = len as u64;
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        before.saturating_add(len) <= config.max_bytes
    }
}
