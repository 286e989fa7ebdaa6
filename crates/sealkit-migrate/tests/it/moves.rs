//! Provider → provider: local key store → Vault Transit or Google Cloud KMS, then the old
//! provider retired.

use std::sync::Arc;

use sealkit::vault::{VaultAuth, VaultSettings, VaultTransit};
use sealkit::{Config, EncryptionContext, KeyUri, Keyring};
use sealkit_conformance::peers::{unique, vault_peer};
use sealkit_migrate::decode::VaultTransitDecoder;
use sealkit_migrate::{ColumnSpec, JobSpec, Migrator, SqliteStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_to_vault_then_retire_the_local_provider() {
    let Some((addr, token)) = vault_peer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vault = || {
        Arc::new(VaultTransit::new(VaultSettings::new(
            addr.clone(),
            VaultAuth::Token(token.clone().into()),
        )))
    };
    let mut config = Config::default();
    config
        .provider("local")
        .set("home", dir.path().to_str().unwrap());
    // During the move both providers are configured: old and new envelopes both open.
    let both = Keyring::builder(config.clone())
        .with_managed_provider(vault())
        .build()
        .unwrap();
    let old = KeyUri::parse("local://pii").unwrap();
    let new = KeyUri::parse(&format!("vault-transit://transit/{}", unique("moved"))).unwrap();
    both.create_key(&old).await.unwrap();
    both.create_key(&new).await.unwrap();

    let path = dir.path().join("app.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE people (id INTEGER PRIMARY KEY, ssn BLOB)")
        .unwrap();
    for id in 1..=500i64 {
        let ctx = EncryptionContext::parse(&format!("table=people,column=ssn,id={id}")).unwrap();
        let sealed = both
            .seal_with(&old, format!("000-00-{id:04}").as_bytes(), &ctx)
            .await
            .unwrap();
        db.execute(
            "INSERT INTO people VALUES (?1, ?2)",
            rusqlite::params![id, sealed],
        )
        .unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    let spec = JobSpec::new(
        "local-to-vault",
        "people",
        "id",
        vec!["ssn=envelope".parse::<ColumnSpec>().unwrap()],
        new.clone(),
    )
    .unwrap();
    let job = Migrator::new(both.clone(), spec.clone(), store.clone());
    let calls = both.stats().kms_calls;
    assert_eq!(job.run("w1", &quiet).await.unwrap().migrated, 500);
    assert!(
        both.stats().kms_calls - calls < 20,
        "one unwrap + wrap + check per distinct DEK"
    );
    // Cut-over check: every value opens under the new provider.
    assert_eq!(job.verify().await.unwrap().problem_count, 0);

    // Retire the old provider: a keyring with Vault only opens everything.
    let vault_only = Keyring::builder(config)
        .with_managed_provider(vault())
        .without_configured_providers()
        .build()
        .unwrap();
    assert_eq!(vault_only.schemes(), vec!["vault-transit"]);
    let mut stmt = db
        .prepare("SELECT id, ssn FROM people ORDER BY id")
        .unwrap();
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, value) in rows {
        let ctx = EncryptionContext::parse(&format!("table=people,column=ssn,id={id}")).unwrap();
        assert_eq!(
            vault_only.open(&value, &ctx).await.unwrap(),
            format!("000-00-{id:04}").as_bytes()
        );
    }
}

fn quiet(_: &sealkit_migrate::Counts) {}

/// Values an application encrypted with Vault Transit directly (`vault:vN:…`) become envelopes.
#[cfg(feature = "vault")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_ciphertexts_are_migrated_to_envelopes() {
    use base64::Engine;
    let Some((addr, token)) = vault_peer() else {
        return;
    };
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(&addr)
        .token(&token)
        .build()
        .unwrap();
    let client = vaultrs::client::VaultClient::new(settings).unwrap();
    let legacy_name = unique("app-legacy");
    vaultrs::transit::key::create(&client, "transit", &legacy_name, None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, token TEXT)")
        .unwrap();
    for id in 1..=50i64 {
        let plaintext = base64::engine::general_purpose::STANDARD.encode(format!("tok-{id}"));
        let ct =
            vaultrs::transit::data::encrypt(&client, "transit", &legacy_name, &plaintext, None)
                .await
                .unwrap()
                .ciphertext;
        db.execute(
            "INSERT INTO accounts VALUES (?1, ?2)",
            rusqlite::params![id, ct],
        )
        .unwrap();
    }
    let vault = Arc::new(VaultTransit::new(VaultSettings::new(
        addr.clone(),
        VaultAuth::Token(token.clone().into()),
    )));
    let mut config = Config::default();
    config
        .provider("local")
        .set("home", dir.path().to_str().unwrap());
    let keyring = Keyring::builder(config).build().unwrap();
    let target = KeyUri::parse("local://accounts").unwrap();
    keyring.create_key(&target).await.unwrap();
    let column: ColumnSpec = format!("token=vault-transit:transit/{legacy_name}")
        .parse()
        .unwrap();
    let decoder = VaultTransitDecoder::new(
        vault,
        KeyUri::parse(&format!("vault-transit://transit/{legacy_name}")).unwrap(),
    );
    let source = column.source.clone();
    let spec = JobSpec::new("vault-legacy", "accounts", "id", vec![column], target).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    let job = Migrator::new(keyring.clone(), spec, store).with_decoder(&source, Arc::new(decoder));
    let plan = job.plan().await.unwrap();
    assert_eq!(
        plan.formats["token"]["vault-transit"], 50,
        "detected by its marker"
    );
    assert_eq!(job.run("w1", &quiet).await.unwrap().migrated, 50);
    assert_eq!(job.verify().await.unwrap().problem_count, 0);
    let value: Vec<u8> = db
        .query_row("SELECT token FROM accounts WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    let ctx = EncryptionContext::parse("table=accounts,column=token,id=7").unwrap();
    assert_eq!(keyring.open(&value, &ctx).await.unwrap(), b"tok-7");
}

/// Provider → provider onto Google Cloud KMS (its test peer): a job moves local-key envelopes
/// to a `gcp-kms://` key, verify proves the cut-over, a rotation rewrap job moves them to the
/// new primary, and a keyring with Cloud KMS alone opens everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_to_google_cloud_kms_then_rotate() {
    let Some(endpoint) = sealkit_conformance::peers::peer_env(
        "SEALKIT_TEST_GCP_KMS_ENDPOINT",
        "the Cloud KMS test peer",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let project = unique("move");
    let gcp = || {
        Arc::new(sealkit::gcp::GcpKms::new(
            sealkit::gcp::GcpSettings::default()
                .with_project(&project)
                .with_kms_endpoint(endpoint.clone()),
        ))
    };
    let mut config = Config::default();
    config
        .provider("local")
        .set("home", dir.path().to_str().unwrap());
    let both = Keyring::builder(config.clone())
        .with_managed_provider(gcp())
        .build()
        .unwrap();
    let old = KeyUri::parse("local://pii").unwrap();
    let new = KeyUri::parse(&format!(
        "gcp-kms://projects/{project}/locations/global/keyRings/app/cryptoKeys/pii"
    ))
    .unwrap();
    both.create_key(&old).await.unwrap();
    both.create_key(&new).await.unwrap();
    let path = dir.path().join("app.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE people (id INTEGER PRIMARY KEY, ssn BLOB)")
        .unwrap();
    let ctx =
        |id: i64| EncryptionContext::parse(&format!("table=people,column=ssn,id={id}")).unwrap();
    for id in 1..=200i64 {
        let sealed = both
            .seal_with(&old, format!("000-00-{id:04}").as_bytes(), &ctx(id))
            .await
            .unwrap();
        db.execute(
            "INSERT INTO people VALUES (?1, ?2)",
            rusqlite::params![id, sealed],
        )
        .unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    let spec = JobSpec::new(
        "local-to-gcp",
        "people",
        "id",
        vec!["ssn=envelope".parse::<ColumnSpec>().unwrap()],
        new.clone(),
    )
    .unwrap();
    let job = Migrator::new(both.clone(), spec.clone(), store.clone());
    assert_eq!(job.run("w1", &quiet).await.unwrap().migrated, 200);
    assert_eq!(
        job.verify().await.unwrap().problem_count,
        0,
        "cut-over proof"
    );

    // A KEK rotation at Cloud KMS: a rewrap job moves every DEK to the new primary.
    both.rotate_key(&new).await.unwrap();
    let mut rotate = spec.clone();
    rotate.job = "gcp-rotate".into();
    let job = Migrator::new(both.clone(), rotate, store.clone());
    assert_eq!(job.run("w1", &quiet).await.unwrap().migrated, 200);
    assert_eq!(job.verify().await.unwrap().problem_count, 0);

    let gcp_only = Keyring::builder(config)
        .with_managed_provider(gcp())
        .without_configured_providers()
        .build()
        .unwrap();
    let mut stmt = db.prepare("SELECT id, ssn FROM people").unwrap();
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, value) in rows {
        assert_eq!(
            gcp_only.open(&value, &ctx(id)).await.unwrap(),
            format!("000-00-{id:04}").as_bytes()
        );
    }
}
