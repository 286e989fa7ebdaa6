//! Seal/open latency per provider against its local peer (OpenBao, moto, the Cloud KMS and
//! Key Vault test peers), with and without DEK caching, and
//! KMS calls per 10,000 seals. Peers come from `cargo xtask peers up` (`target/peers/peers.env`
//! is read when the variables are not set); a provider whose peer is absent is skipped.
//! Run: `cargo xtask bench providers`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sealkit::config::CacheConfig;
use sealkit::{Config, EncryptionContext, KeyUri, Keyring};
use sealkit_benches::{peer, time_in_task};

struct Subject {
    name: &'static str,
    key: String,
    builder: Box<dyn Fn(Config) -> Keyring>,
}

fn subjects() -> Vec<Subject> {
    let mut out = vec![Subject {
        name: "local",
        key: "local://bench".into(),
        builder: Box::new(|c| Keyring::builder(c).build().unwrap()),
    }];
    if let (Some(addr), Some(token)) = (
        peer("SEALKIT_TEST_VAULT_ADDR"),
        peer("SEALKIT_TEST_VAULT_TOKEN"),
    ) {
        out.push(Subject {
            name: "vault",
            key: format!("vault-transit://transit/bench-{}", std::process::id()),
            builder: Box::new(move |c| {
                let vault = sealkit::vault::VaultSettings::new(
                    addr.clone(),
                    sealkit::vault::VaultAuth::Token(token.clone().into()),
                );
                Keyring::builder(c)
                    .with_managed_provider(Arc::new(sealkit::vault::VaultTransit::new(vault)))
                    .build()
                    .unwrap()
            }),
        });
    } else {
        eprintln!("skipped vault: OpenBao is not running (cargo xtask peers up)");
    }
    if let Some(endpoint) = peer("SEALKIT_TEST_AWS_ENDPOINT") {
        out.push(Subject {
            name: "aws",
            key: format!("aws-kms://alias/bench-{}", std::process::id()),
            builder: Box::new(move |c| {
                let settings = sealkit::aws::AwsSettings::default()
                    .with_region("us-east-1")
                    .with_endpoint(endpoint.clone())
                    .with_static_credentials("testing", "testing");
                Keyring::builder(c)
                    .with_managed_provider(Arc::new(sealkit::aws::AwsKms::new(settings)))
                    .build()
                    .unwrap()
            }),
        });
    } else {
        eprintln!("skipped aws: moto is not running (cargo xtask peers up)");
    }
    if let Some(endpoint) = peer("SEALKIT_TEST_GCP_KMS_ENDPOINT") {
        out.push(Subject {
            name: "gcp",
            key: format!(
                "gcp-kms://projects/bench/locations/global/keyRings/bench/cryptoKeys/k-{}",
                std::process::id()
            ),
            builder: Box::new(move |c| {
                let settings = sealkit::gcp::GcpSettings::default()
                    .with_project("bench")
                    .with_kms_endpoint(endpoint.clone());
                Keyring::builder(c)
                    .with_managed_provider(Arc::new(sealkit::gcp::GcpKms::new(settings)))
                    .build()
                    .unwrap()
            }),
        });
    } else {
        eprintln!("skipped gcp: the Cloud KMS test peer is not running (cargo xtask peers up)");
    }
    match peer("SEALKIT_TEST_AZURE_KV_DIR").and_then(|dir| azure_settings(&dir)) {
        Some(settings) => out.push(Subject {
            name: "azure",
            key: format!(
                "azure-kv://bench.vault.azure.net/keys/k-{}",
                std::process::id()
            ),
            builder: Box::new(move |c| {
                Keyring::builder(c)
                    .with_managed_provider(Arc::new(sealkit::azure::AzureKeyVault::new(
                        settings.clone(),
                    )))
                    .build()
                    .unwrap()
            }),
        }),
        None => {
            eprintln!(
                "skipped azure: the Key Vault test peer is not running (cargo xtask peers up)"
            )
        }
    }
    out
}

/// Client-secret settings for the Key Vault test peer whose files are in `dir`.
fn azure_settings(dir: &str) -> Option<sealkit::azure::AzureSettings> {
    let dir = std::path::Path::new(dir);
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("credentials.json")).ok()?).ok()?;
    let authority = creds["authority_host"].as_str()?.to_string();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    Some(
        sealkit::azure::AzureSettings::new(sealkit::azure::SignIn::ClientSecret {
            tenant_id: text(&creds["tenant_id"])?,
            client_id: text(&creds["app"]["client_id"])?,
            secret: text(&creds["app"]["client_secret"])?.into(),
        })
        .with_connect_to(authority.trim_start_matches("https://"))
        .with_authority_host(authority)
        .with_ca_file(dir.join("ca.pem")),
    )
}

fn bench(c: &mut Criterion) {
    let rt = sealkit_benches::runtime(2);
    let home = tempfile::tempdir().unwrap();
    let field = [0x61u8; 64];
    let ctx = EncryptionContext::parse("table=customers,column=email,id=1").unwrap();
    for subject in subjects() {
        let config = |cache: CacheConfig| {
            let mut config = Config::default();
            config.default_key = Some(KeyUri::parse(&subject.key).unwrap());
            config
                .provider("local")
                .set("home", home.path().to_str().unwrap());
            config.cache = cache;
            config
        };
        let cached = (subject.builder)(config(CacheConfig::default()));
        let uncached = (subject.builder)(config(CacheConfig::disabled()));
        rt.block_on(cached.create_key(&KeyUri::parse(&subject.key).unwrap()))
            .unwrap();
        let sealed = rt.block_on(cached.seal(&field, &ctx)).unwrap();
        let mut group = c.benchmark_group(format!("provider/{}", subject.name));
        group.sample_size(20);
        for (label, keyring) in [("cached", &cached), ("uncached", &uncached)] {
            let (field, ctx, sealed) = (&field, &ctx, &sealed);
            group.bench_function(format!("seal_{label}"), |b| {
                b.iter_custom(|iters| {
                    time_in_task(&rt, iters, move || async move {
                        keyring.seal(field, ctx).await.unwrap()
                    })
                })
            });
            group.bench_function(format!("open_{label}"), |b| {
                b.iter_custom(|iters| {
                    time_in_task(&rt, iters, move || async move {
                        keyring.open(sealed, ctx).await.unwrap()
                    })
                })
            });
        }
        group.finish();
        // KMS calls per 10,000 seals, with default caching and without.
        for (label, keyring) in [("cached", &cached), ("uncached", &uncached)] {
            let before = keyring.stats().kms_calls;
            rt.block_on(async {
                for id in 0..10_000u32 {
                    let ctx =
                        EncryptionContext::parse(&format!("table=customers,column=email,id={id}"))
                            .unwrap();
                    keyring.seal(&field, &ctx).await.unwrap();
                }
            });
            println!(
                "kms_calls_per_10000_seals provider={} cache={label}: {}",
                subject.name,
                keyring.stats().kms_calls - before
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
