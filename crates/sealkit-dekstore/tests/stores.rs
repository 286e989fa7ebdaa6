//! Both stores, SQLite and the PostgreSQL peer: reservations from many connections at once
//! never grant more than a DEK's budget; wraps change only by compare-and-swap; shredding
//! destroys every wrap of a subject's DEKs and no other.

use std::sync::Arc;

use sealkit_conformance::peers::{peer_env, unique};
use sealkit_core::dek_store::{DekRecord, DekState, DekStore};
use sealkit_core::{Algorithm, KeyRef, KeyUri, WrappedKey};
use sealkit_dekstore::open_dek_store;

/// Fresh stores on every database this run has, each opened `connections` times.
async fn stores(
    dir: &tempfile::TempDir,
    connections: usize,
) -> Vec<(&'static str, Vec<Arc<dyn DekStore>>)> {
    let table = unique("deks").replace('-', "_");
    let sqlite = format!("sqlite:{}", dir.path().join("deks.db").display());
    let mut dbs = vec![("sqlite", sqlite)];
    if let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") {
        dbs.push(("postgres", url));
    }
    let mut out = Vec::new();
    for (name, db) in dbs {
        let mut opened = Vec::new();
        for _ in 0..connections {
            opened.push(open_dek_store(&db, &table).await.unwrap());
        }
        out.push((name, opened));
    }
    out
}

fn record(id: u8, subject: Option<&str>, limit: u64) -> DekRecord {
    let wrap = WrappedKey::new(KeyRef::parse("local://k", "1").unwrap(), vec![id; 40]);
    let mut r = DekRecord::new(
        [id; 16],
        KeyUri::parse("local://k").unwrap(),
        r#"{"column":"c","table":"t"}"#.into(),
        Algorithm::Aes256Gcm,
        vec![wrap],
        limit,
    );
    r.subject = subject.map(str::to_string);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_from_many_connections_never_exceed_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    for (name, connections) in stores(&dir, 4).await {
        connections[0].insert(&record(1, None, 1000)).await.unwrap();
        let mut tasks = Vec::new();
        for store in connections.clone() {
            tasks.push(tokio::spawn(async move {
                let mut granted = 0;
                loop {
                    let n = store.reserve(&[1; 16], 7).await.unwrap();
                    if n == 0 {
                        return granted;
                    }
                    granted += n;
                }
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(
            total, 1000,
            "{name}: exactly the budget, across connections"
        );
        let r = connections[1].get(&[1; 16]).await.unwrap().unwrap();
        assert_eq!((r.reserved, r.state), (1000, DekState::Retired), "{name}");
        let k = KeyUri::parse("local://k").unwrap();
        assert!(
            connections[2]
                .active(&k, &r.scope, Algorithm::Aes256Gcm)
                .await
                .unwrap()
                .is_none(),
            "{name}: a spent DEK is no longer active"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wraps_change_by_compare_and_swap_and_shredding_is_per_subject() {
    let dir = tempfile::tempdir().unwrap();
    for (name, connections) in stores(&dir, 1).await {
        let store = &connections[0];
        for (id, subject) in [(1, "tenant=1"), (2, "tenant=1"), (3, "tenant=2")] {
            store.insert(&record(id, Some(subject), 10)).await.unwrap();
        }
        let old = record(3, None, 10).wraps;
        let new = vec![WrappedKey::new(
            KeyRef::parse("local://k", "2").unwrap(),
            vec![9; 40],
        )];
        assert!(
            store.replace_wraps(&[3; 16], &old, &new).await.unwrap(),
            "{name}"
        );
        assert!(
            !store.replace_wraps(&[3; 16], &old, &new).await.unwrap(),
            "{name}: stale"
        );
        assert_eq!(
            store.get(&[3; 16]).await.unwrap().unwrap().wraps,
            new,
            "{name}"
        );

        assert_eq!(store.shred("tenant=1").await.unwrap(), 2, "{name}");
        for id in [1, 2] {
            let r = store.get(&[id; 16]).await.unwrap().unwrap();
            assert_eq!((r.state, r.wraps.len()), (DekState::Shredded, 0), "{name}");
            assert_eq!(store.reserve(&[id; 16], 1).await.unwrap(), 0, "{name}");
        }
        let kept = store.get(&[3; 16]).await.unwrap().unwrap();
        assert_eq!(kept.state, DekState::Active, "{name}");
        assert!(
            !store.replace_wraps(&[1; 16], &[], &new).await.unwrap(),
            "{name}: a shredded DEK gets no wraps back"
        );
        let stats = store.stats().await.unwrap();
        assert_eq!(
            stats.iter().map(|c| c.count).sum::<u64>(),
            3,
            "{name}: {stats:?}"
        );
    }
}
