//! Unit tests of the caches.

use super::*;

fn scope() -> Vec<String> {
    vec!["tenant".into(), "table".into(), "column".into()]
}

fn context(text: &str) -> EncryptionContext {
    EncryptionContext::parse(text).unwrap()
}

fn uri(text: &str) -> KeyUri {
    KeyUri::parse(text).unwrap()
}

/// Bytes made by a key's parts, hashed and matched the way a lookup does.
fn bytes(key: &impl KeyParts) -> Box<[u8]> {
    let bytes = key.to_bytes();
    assert!(key.matches(&bytes));
    bytes
}

#[test]
fn seal_keys_use_only_the_scope_pairs() {
    let scope = scope();
    let (a, b) = (uri("local://a"), uri("local://b"));
    let row1 = context("table=customers,column=email,id=1");
    let row2 = context("id=2,column=email,table=customers");
    let other_column = context("table=customers,column=phone,id=1");
    let key = |u, c| bytes(&SealKey::new(u, c, &scope));

    assert_eq!(key(&a, &row1), key(&a, &row2));
    assert_eq!(
        SealKey::new(&a, &row1, &scope).key_hash(),
        SealKey::new(&a, &row2, &scope).key_hash()
    );
    assert_ne!(key(&a, &row1), key(&a, &other_column));
    assert_ne!(key(&a, &row1), key(&b, &row1));
    // No scope pair at all: the key alone.
    let (unscoped, other_unscoped) = (context("id=7"), context("id=8"));
    assert_eq!(key(&a, &unscoped), key(&a, &other_unscoped));
    assert_ne!(key(&a, &unscoped), key(&a, &row1));
}

#[test]
fn a_prefix_or_an_extension_of_a_stored_key_does_not_match() {
    let scope = scope();
    let a = uri("local://a");
    let stored_context = context("table=t,column=c");
    let stored = bytes(&SealKey::new(&a, &stored_context, &scope));
    for other in ["table=t", "table=t,column=c,tenant=x", "table=t,column=cc"] {
        let other = context(other);
        assert!(!SealKey::new(&a, &other, &scope).matches(&stored));
    }
}

#[test]
fn swap_cache_finds_replaces_evicts_in_order_and_removes() {
    let scope = scope();
    let a = uri("local://a");
    let contexts: Vec<_> = (0..4)
        .map(|i| context(&format!("table=t{i},column=c")))
        .collect();
    let key = |i: usize| SealKey::new(&a, &contexts[i], &scope);
    let cache = SwapCache::new(3);

    let values = |dropped: Vec<Arc<usize>>| dropped.iter().map(|v| **v).collect::<Vec<_>>();

    for i in 0..3 {
        assert!(cache.insert(&key(i), Arc::new(i)).is_empty());
    }
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.with(&key(1), |v| *v), Some(1));
    assert_eq!(values(cache.insert(&key(1), Arc::new(10))), [1]);
    assert_eq!(cache.get(&key(1)).as_deref(), Some(&10));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.sum(|v| *v as u64), 12);

    // The oldest insertion goes first.
    assert_eq!(values(cache.insert(&key(3), Arc::new(3))), [0]);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&key(0)).is_none());
    assert!(cache.get(&key(3)).is_some());

    assert_eq!(values(cache.remove(&key(2))), [2]);
    assert!(cache.remove(&key(2)).is_empty());
    assert!(cache.get(&key(2)).is_none());
    assert_eq!(cache.len(), 2);
    assert_eq!(values(cache.retain(|v| *v != 10)), [10]);
    assert!(cache.get(&key(1)).is_none());
    assert_eq!(cache.len(), 1);

    // Evictions follow the remaining order, with no trace of removed keys.
    for i in [0, 1] {
        assert!(cache.insert(&key(i), Arc::new(i)).is_empty());
    }
    assert_eq!(values(cache.insert(&key(2), Arc::new(2))), [3]);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&key(3)).is_none());
}

#[test]
fn a_zero_capacity_cache_holds_nothing() {
    let scope = scope();
    let a = uri("local://a");
    let ctx = context("table=t");
    let cache = SwapCache::new(0);
    cache.insert(&SealKey::new(&a, &ctx, &scope), Arc::new(1));
    assert_eq!(cache.len(), 0);
}
