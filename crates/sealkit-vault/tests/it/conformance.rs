//! The shared provider suite against OpenBao Transit.

use sealkit_conformance::peers::unique;
use sealkit_core::KeyUri;
use sealkit_vault::VaultTransit;

use crate::support::root_config;

#[tokio::test]
async fn transit_passes_the_conformance_suite() {
    let Some(config) = root_config() else { return };
    let transit = VaultTransit::new(config);
    let key = KeyUri::parse(&format!("vault-transit://transit/{}", unique("conf"))).unwrap();
    sealkit_conformance::run_all(&transit, &transit, &key).await;
}

#[tokio::test]
async fn existing_non_derived_keys_bind_the_context_as_associated_data() {
    let Some(config) = root_config() else { return };
    let client = crate::support::root_client().unwrap();
    let name = unique("plain");
    vaultrs::transit::key::create(&client, "transit", &name, None)
        .await
        .unwrap();
    let transit = VaultTransit::new(config);
    let key = KeyUri::parse(&format!("vault-transit://transit/{name}")).unwrap();
    use sealkit_core::provider::KeyEncryption;
    let ctx = |t: &str| sealkit_core::EncryptionContext::from_pairs([("table", t)]).unwrap();
    let g = transit.generate_data_key(&key, &ctx("a")).await.unwrap();
    assert_eq!(
        transit
            .unwrap(&g.wrapped, &ctx("a"))
            .await
            .unwrap()
            .expose(),
        g.plaintext.expose()
    );
    assert!(matches!(
        transit.unwrap(&g.wrapped, &ctx("b")).await,
        Err(sealkit_core::Error::InvalidCiphertext)
    ));
    // Rewrap without server-side support for associated data still keeps the DEK.
    vaultrs::transit::key::rotate(&client, "transit", &name)
        .await
        .unwrap();
    let moved = transit.rewrap(&g.wrapped, &key, &ctx("a")).await.unwrap();
    assert_eq!(moved.key.version.as_str(), "2");
    assert_eq!(
        transit.unwrap(&moved, &ctx("a")).await.unwrap().expose(),
        g.plaintext.expose()
    );
}
