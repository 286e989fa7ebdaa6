//! Compact envelopes through the DEK store, on SQLite and on the PostgreSQL peer: round trips
//! across processes, rotation and provider moves that write no data row, a message budget
//! shared by two processes, crypto-shredding, dual wraps, and store rows tampered with.

use std::collections::HashSet;
use std::path::Path;

use sealkit::config::Layout;
use sealkit::core::Envelope;
use sealkit::core::envelope::KeySlot;
use sealkit::{Config, EncryptionContext, ErrorKind, Keyring};
use sealkit_conformance::peers::{peer_env, unique};

use crate::support::*;

/// A database a DEK table lives in.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

/// One DEK table on one database.
struct Store {
    db: Db,
    table: String,
}

impl Store {
    /// A fresh table on every database this run has: SQLite always, PostgreSQL when its peer
    /// is up.
    fn all() -> Vec<Self> {
        let table = || unique("deks").replace('-', "_");
        let mut out = vec![Self {
            db: Db::Sqlite(tempfile::tempdir().unwrap()),
            table: table(),
        }];
        if let Some(url) = peer_env("SEALKIT_TEST_PG_URL", "PostgreSQL") {
            out.push(Self {
                db: Db::Postgres(url),
                table: table(),
            });
        }
        out
    }

    fn name(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    fn location(&self) -> String {
        match &self.db {
            Db::Sqlite(dir) => format!("sqlite:{}", dir.path().join("app.db").display()),
            Db::Postgres(url) => url.clone(),
        }
    }

    /// A keyring — a process of its own: its own caches and store connection — sealing
    /// compact envelopes under local keys in `home`.
    async fn keyring(&self, home: &Path, tune: impl FnOnce(&mut Config)) -> Keyring {
        let mut cfg = config(home, "local://customers");
        cfg.deks.store = Some(self.location());
        cfg.deks.table = self.table.clone();
        cfg.deks.layout = Layout::Compact;
        tune(&mut cfg);
        Keyring::builder(cfg).build_async().await.unwrap()
    }

    /// Runs `sql` against the database (the tests' hands on the raw rows).
    async fn execute(&self, sql: &str) {
        match &self.db {
            Db::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join("app.db"))
                    .unwrap()
                    .execute_batch(sql)
                    .unwrap();
            }
            Db::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// The hex id in SQL: a blob literal on SQLite, bytea on PostgreSQL.
    fn id_literal(&self, id: &[u8; 16]) -> String {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        match self.db {
            Db::Sqlite(_) => format!("x'{hex}'"),
            Db::Postgres(_) => format!("'\\x{hex}'::bytea"),
        }
    }
}

fn dek_id(sealed: &[u8]) -> [u8; 16] {
    match Envelope::parse(sealed).unwrap().slot() {
        KeySlot::DekId(id) => *id,
        other => panic!("not compact: {other:?}"),
    }
}

fn tenant_ctx(tenant: u32, id: u32) -> EncryptionContext {
    EncryptionContext::parse(&format!("tenant={tenant},table=t,column=c,id={id}")).unwrap()
}

/// Compact envelopes cost 49 bytes with AES-256-GCM; another process opens them by reading
/// each DEK from the store once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_envelopes_round_trip_across_processes() {
    for store in Store::all() {
        let name = store.name();
        let home = tempfile::tempdir().unwrap();
        let writer = store.keyring(home.path(), |_| {}).await;
        writer.create_key(&uri("local://customers")).await.unwrap();
        let mut sealed = Vec::new();
        for id in 0..100 {
            let c = ctx("customers", "email", id);
            let s = writer.seal(&[7u8; 64], &c).await.unwrap();
            assert_eq!(s.len(), 64 + 49, "{name}");
            sealed.push((c, s));
        }
        assert_eq!(
            sealed
                .iter()
                .map(|(_, s)| dek_id(s))
                .collect::<HashSet<_>>()
                .len(),
            1,
            "{name}: one DEK for one scope"
        );
        let reader = store.keyring(home.path(), |_| {}).await;
        for (c, s) in &sealed {
            assert_eq!(reader.open(s, c).await.unwrap(), [7u8; 64], "{name}");
        }
        assert_eq!(
            reader.stats().kms_calls,
            1,
            "{name}: one unwrap for 100 opens"
        );
        // Bound to its context like any envelope.
        let err = reader
            .open(&sealed[0].1, &ctx("customers", "email", 999))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCiphertext, "{name}");
        // A full-layout keyring without a store says what it lacks.
        let plain = keyring(home.path(), "local://customers");
        let err = plain.open(&sealed[0].1, &sealed[0].0).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Misconfigured, "{name}: {err}");
        assert!(err.to_string().contains("DEK store"), "{name}: {err}");
    }
}

/// A KEK rotation rewraps the stored DEKs only: every data value stays byte-for-byte the same
/// and opens in a new process after the old version is disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rewraps_deks_and_writes_no_data_row() {
    for store in Store::all() {
        let name = store.name();
        let home = tempfile::tempdir().unwrap();
        let key = uri("local://customers");
        let k = store.keyring(home.path(), |_| {}).await;
        k.create_key(&key).await.unwrap();
        let mut data = Vec::new();
        for id in 0..60 {
            // Three columns: three DEKs.
            let c = ctx("customers", ["email", "phone", "name"][id as usize % 3], id);
            data.push((c.clone(), k.seal(b"value", &c).await.unwrap()));
        }
        let before: Vec<Vec<u8>> = data.iter().map(|(_, s)| s.clone()).collect();
        let old = k.current_version(&key).await.unwrap();
        let new = k.rotate_key(&key).await.unwrap();
        let calls = k.stats().kms_calls;
        let report = k.rewrap_deks(&key, &key, false).await.unwrap();
        assert_eq!(
            (report.deks, report.rewrapped),
            (3, 3),
            "{name}: {report:?}"
        );
        assert_eq!(
            k.stats().kms_calls - calls,
            1 + 3,
            "{name}: the new primary's lookup, then one rewrap per DEK"
        );
        let again = k.rewrap_deks(&key, &key, false).await.unwrap();
        assert_eq!((again.rewrapped, again.current), (0, 3), "{name}");
        k.set_version_state(&key, &old, sealkit::core::provider::VersionState::Disabled)
            .await
            .unwrap();
        let fresh = store.keyring(home.path(), |_| {}).await;
        for ((c, s), b) in data.iter().zip(&before) {
            assert_eq!(s, b, "{name}: data unchanged");
            assert_eq!(fresh.open(s, c).await.unwrap(), b"value", "{name}");
        }
        let stats = fresh.dek_stats().await.unwrap();
        assert!(
            stats.iter().all(|s| s.version == new.to_string()),
            "{name}: {stats:?}"
        );
    }
}

/// A provider move with dual wraps: while a DEK carries both wraps, a process with either
/// provider opens it; after the old wraps are dropped only the new provider does. No data
/// value changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_wraps_open_under_either_provider_during_a_move() {
    for store in Store::all() {
        let name = store.name();
        let old_home = tempfile::tempdir().unwrap();
        let new_home = tempfile::tempdir().unwrap();
        let (old_key, new_key) = (uri("local://customers"), uri("local-b://customers"));
        let (location, table) = (store.location(), store.table.clone());
        let both = || {
            let mut cfg = config(old_home.path(), "local://customers");
            cfg.deks.store = Some(location.clone());
            cfg.deks.table = table.clone();
            cfg.deks.layout = Layout::Compact;
            Keyring::builder(cfg)
                .with_managed_provider(extra_store(new_home.path(), "local-b"))
                .build_async()
        };
        let k = both().await.unwrap();
        k.create_key(&old_key).await.unwrap();
        k.create_key(&new_key).await.unwrap();
        let c = ctx("customers", "email", 1);
        let sealed = k.seal(b"moved", &c).await.unwrap();
        let report = k.rewrap_deks(&old_key, &new_key, true).await.unwrap();
        assert_eq!(report.rewrapped, 1, "{name}");

        // Either provider alone opens it.
        let only_old = store.keyring(old_home.path(), |_| {}).await;
        assert_eq!(
            only_old.open(&sealed, &c).await.unwrap(),
            b"moved",
            "{name}"
        );
        let mut cfg = Config::default();
        cfg.deks.store = Some(store.location());
        cfg.deks.table = store.table.clone();
        let only_new = Keyring::builder(cfg.clone())
            .with_managed_provider(extra_store(new_home.path(), "local-b"))
            .build_async()
            .await
            .unwrap();
        assert_eq!(
            only_new.open(&sealed, &c).await.unwrap(),
            b"moved",
            "{name}"
        );

        // The cut-over: the old wraps go; the old provider alone no longer opens it.
        assert_eq!(k.drop_dek_wraps(&old_key).await.unwrap(), 1, "{name}");
        let only_old = store.keyring(old_home.path(), |_| {}).await;
        let err = only_old.open(&sealed, &c).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Misconfigured, "{name}: {err}");
        let only_new = Keyring::builder(cfg)
            .with_managed_provider(extra_store(new_home.path(), "local-b"))
            .build_async()
            .await
            .unwrap();
        assert_eq!(
            only_new.open(&sealed, &c).await.unwrap(),
            b"moved",
            "{name}"
        );
    }
}

/// Two processes share one DEK's budget through the store: with a budget of 10 messages and
/// blocks of 3, no DEK seals more than 10 values between them, the first DEK is used by both,
/// and spent DEKs are retired for new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_dek_budget_and_retire_it_at_the_limit() {
    for store in Store::all() {
        let name = store.name();
        let home = tempfile::tempdir().unwrap();
        let tiny = |cfg: &mut Config| {
            cfg.deks.message_limit = Some(10);
            cfg.deks.reserve_block = 3;
        };
        let a = store.keyring(home.path(), tiny).await;
        a.create_key(&uri("local://customers")).await.unwrap();
        let b = store.keyring(home.path(), tiny).await;
        let mut uses: std::collections::HashMap<[u8; 16], (u32, HashSet<char>)> =
            std::collections::HashMap::new();
        for i in 0..24u64 {
            let (who, k) = if i % 2 == 0 { ('a', &a) } else { ('b', &b) };
            let c = ctx("customers", "email", i);
            let sealed = k.seal(b"x", &c).await.unwrap();
            let entry = uses.entry(dek_id(&sealed)).or_default();
            entry.0 += 1;
            entry.1.insert(who);
            assert_eq!(b.open(&sealed, &c).await.unwrap(), b"x", "{name}");
        }
        assert!(
            uses.values().all(|(n, _)| *n <= 10),
            "{name}: a DEK sealed more than its budget: {uses:?}"
        );
        assert!(
            uses.len() >= 3,
            "{name}: 24 messages need 3 DEKs of 10: {uses:?}"
        );
        assert!(
            uses.values().any(|(_, who)| who.len() == 2),
            "{name}: both processes sealed under one DEK: {uses:?}"
        );
        // Each process reports what it sealed: the stored counts add up to the 24 seals.
        a.flush_dek_use().await;
        b.flush_dek_use().await;
        let stored = a.dek_store().unwrap().list(None, 100).await.unwrap();
        assert_eq!(
            stored.iter().map(|r| r.used).sum::<u64>(),
            24,
            "{name}: {stored:?}"
        );
        assert!(
            stored
                .iter()
                .all(|r| r.used <= r.reserved && r.reserved <= 10),
            "{name}"
        );
        let stats = a.dek_stats().await.unwrap();
        let retired: u64 = stats
            .iter()
            .filter(|s| s.state == sealkit::core::dek_store::DekState::Retired)
            .map(|s| s.count)
            .sum();
        assert!(retired >= 2, "{name}: {stats:?}");
    }
}

/// Shredding one subject: its values fail with the distinct "shredded" error, in this process
/// and in a new one, while every other subject's values open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shredding_a_subject_leaves_the_others_readable() {
    for store in Store::all() {
        let name = store.name();
        let home = tempfile::tempdir().unwrap();
        let by_tenant = |cfg: &mut Config| cfg.deks.subject = Some("tenant".into());
        let k = store.keyring(home.path(), by_tenant).await;
        k.create_key(&uri("local://customers")).await.unwrap();
        let mut sealed = Vec::new();
        for tenant in [41, 42, 43] {
            for id in 0..5 {
                let c = tenant_ctx(tenant, id);
                sealed.push((tenant, c.clone(), k.seal(b"pii", &c).await.unwrap()));
            }
        }
        assert_eq!(k.shred("tenant=42").await.unwrap(), 1, "{name}");
        assert_eq!(
            k.shred("tenant=42").await.unwrap(),
            0,
            "{name}: already shredded"
        );
        let fresh = store.keyring(home.path(), by_tenant).await;
        for keyring in [&k, &fresh] {
            for (tenant, c, s) in &sealed {
                let opened = keyring.open(s, c).await;
                if *tenant == 42 {
                    let err = opened.unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::Shredded, "{name}: {err}");
                    assert!(err.to_string().contains("tenant=42"), "{name}: {err}");
                } else {
                    assert_eq!(opened.unwrap(), b"pii", "{name}");
                }
            }
        }
        // A new value for the shredded subject gets a new DEK.
        let c = tenant_ctx(42, 99);
        let s = k.seal(b"new", &c).await.unwrap();
        assert_eq!(fresh.open(&s, &c).await.unwrap(), b"new", "{name}");
        let err = store
            .keyring(home.path(), |_| {})
            .await
            .shred("tenant")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}");
    }
}

/// A store row swapped for another (wraps and scope) or with altered wraps is refused: the
/// unwrapped key must derive the row's id, and the wrap is bound to the row's scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_swapped_store_rows_are_refused() {
    for store in Store::all() {
        let name = store.name();
        let home = tempfile::tempdir().unwrap();
        let k = store.keyring(home.path(), |_| {}).await;
        k.create_key(&uri("local://customers")).await.unwrap();
        let (ca, cb) = (ctx("customers", "email", 1), ctx("customers", "phone", 1));
        let (sa, sb) = (
            k.seal(b"a", &ca).await.unwrap(),
            k.seal(b"b", &cb).await.unwrap(),
        );
        let (ia, ib) = (
            store.id_literal(&dek_id(&sa)),
            store.id_literal(&dek_id(&sb)),
        );
        let t = &store.table;
        // Row A takes row B's wraps and scope: it unwraps, to a key with B's id.
        store
            .execute(&format!(
                "UPDATE {t} SET wraps = (SELECT wraps FROM {t} WHERE id = {ib}),
                 scope = (SELECT scope FROM {t} WHERE id = {ib}) WHERE id = {ia}"
            ))
            .await;
        let fresh = store.keyring(home.path(), |_| {}).await;
        let err = fresh.open(&sa, &ca).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCiphertext, "{name}: {err}");
        assert_eq!(fresh.open(&sb, &cb).await.unwrap(), b"b", "{name}");
        // Row B's scope edited: its wrap no longer unwraps.
        store
            .execute(&format!(
                "UPDATE {t} SET scope = '{{\"column\":\"email\",\"table\":\"customers\"}}' WHERE id = {ib}"
            ))
            .await;
        let fresh = store.keyring(home.path(), |_| {}).await;
        let err = fresh.open(&sb, &cb).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCiphertext, "{name}: {err}");
        // An envelope naming a DEK the store lacks.
        let mut unknown = sb.clone();
        unknown[5] ^= 1;
        let err = fresh.open(&unknown, &cb).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{name}: {err}");
    }
}

/// Compact sealing without a DEK store is a configuration error that says what to set.
#[tokio::test]
async fn compact_without_a_store_is_refused_clearly() {
    let home = tempfile::tempdir().unwrap();
    let mut cfg = config(home.path(), "local://customers");
    cfg.deks.layout = Layout::Compact;
    let err = Keyring::builder(cfg).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misconfigured);
    assert!(err.to_string().contains("[deks] store"), "{err}");
    let k = keyring(home.path(), "local://customers");
    let err = k
        .seal_compact(&uri("local://customers"), b"x", &ctx("t", "c", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misconfigured);
}

/// After a rotation, new values get a new DEK under the primary version even before the
/// stored DEKs are rewrapped (the scope's old active DEK retires); old values still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_retires_the_active_dek_for_new_values() {
    for store in Store::all() {
        let name = store.name();
        let home = tempfile::tempdir().unwrap();
        let key = uri("local://customers");
        let k = store.keyring(home.path(), |_| {}).await;
        k.create_key(&key).await.unwrap();
        let c = ctx("customers", "email", 1);
        let before = k.seal(b"old", &c).await.unwrap();
        let new_version = k.rotate_key(&key).await.unwrap();
        // Another process (no cached sealer) seals after the rotation.
        let other = store.keyring(home.path(), |_| {}).await;
        let after = other.seal(b"new", &c).await.unwrap();
        assert_ne!(dek_id(&before), dek_id(&after), "{name}: a new DEK");
        let stored = other
            .dek_store()
            .unwrap()
            .get(&dek_id(&after))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.wraps[0].key.version, new_version, "{name}");
        let old = other
            .dek_store()
            .unwrap()
            .get(&dek_id(&before))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            old.state,
            sealkit::core::dek_store::DekState::Retired,
            "{name}"
        );
        assert_eq!(other.open(&before, &c).await.unwrap(), b"old", "{name}");
        assert_eq!(other.open(&after, &c).await.unwrap(), b"new", "{name}");
    }
}
