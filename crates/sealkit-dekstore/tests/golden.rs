//! The stored row format, pinned by a golden row (`tests/data/row-v1.json`, specified in
//! docs/format.md): a store writes exactly its columns, reads it back unchanged, and its id is
//! the one derived from its DEK.

use sealkit_core::dek_store::{DekRecord, DekState, DekStore};
use sealkit_core::{Algorithm, DataKey, DekCipher, KeyRef, KeyUri, WrappedKey, default_backend};
use sealkit_dekstore::SqliteDekStore;

fn golden() -> serde_json::Value {
    serde_json::from_str(include_str!("data/row-v1.json")).unwrap()
}

fn text<'a>(g: &'a serde_json::Value, field: &str) -> &'a str {
    g[field].as_str().unwrap()
}

#[tokio::test]
async fn the_golden_row_is_written_and_read_as_specified() {
    let g = golden();
    let dek: [u8; 32] = hex::decode(text(&g, "dek")).unwrap().try_into().unwrap();
    let cipher = DekCipher::new(
        default_backend(),
        Algorithm::Aes256Gcm,
        &DataKey::from_bytes(dek),
    )
    .unwrap();
    assert_eq!(
        hex::encode(cipher.dek_id()),
        text(&g, "id"),
        "the id is derived from the DEK"
    );

    let wraps: Vec<serde_json::Value> = serde_json::from_str(text(&g, "wraps")).unwrap();
    let wrapped = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(wraps[0]["wrapped"].as_str().unwrap())
            .unwrap()
    };
    let mut record = DekRecord::new(
        cipher.dek_id(),
        KeyUri::parse(text(&g, "key_uri")).unwrap(),
        text(&g, "scope").to_string(),
        Algorithm::Aes256Gcm,
        vec![WrappedKey::new(
            KeyRef::parse("local://customers", "1").unwrap(),
            wrapped,
        )],
        g["message_limit"].as_u64().unwrap(),
    );
    record.subject = Some(text(&g, "subject").to_string());
    record.created_unix = g["created"].as_i64().unwrap();
    record.reserved = g["reserved"].as_u64().unwrap();
    record.used = g["used"].as_u64().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = SqliteDekStore::open(path.to_str().unwrap(), "sealkit_deks").unwrap();
    store.prepare().await.unwrap();
    store.insert(&record).await.unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let row = conn
        .query_row(
            "SELECT hex(id), key_uri, scope, subject, algorithm, wraps, created, message_limit, reserved, state, used FROM sealkit_deks",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, i64>(10)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0.to_lowercase(), text(&g, "id"));
    assert_eq!(row.1, text(&g, "key_uri"));
    assert_eq!(row.2, text(&g, "scope"));
    assert_eq!(row.3, text(&g, "subject"));
    assert_eq!(row.4, g["algorithm"].as_i64().unwrap());
    assert_eq!(
        row.5,
        text(&g, "wraps"),
        "wraps are stored byte for byte as specified"
    );
    assert_eq!(row.6, g["created"].as_i64().unwrap());
    assert_eq!(row.7, g["message_limit"].as_i64().unwrap());
    assert_eq!(row.8, g["reserved"].as_i64().unwrap());
    assert_eq!(row.9, text(&g, "state"));
    assert_eq!(row.10, g["used"].as_i64().unwrap());
    assert_eq!(store.get(&record.id).await.unwrap(), Some(record.clone()));
    assert_eq!(record.state, DekState::Active);
}
