//! A 64-byte seal + open round trip through Sealkit's facade (full and compact envelopes)
//! beside `tink-aead` 0.3 (`KmsEnvelopeAead` over a local AES-256-GCM "remote" AEAD),
//! `envelopers` 0.8 (`EnvelopeCipher` over a caching `SimpleKeyProvider`), and the floor: a
//! bare `ring` AES-256-GCM seal and open with one key and a random nonce, no envelope at all
//! — in one binary and one run.
//!
//! Every library wraps with a local key (no network), binds the same associated data where it
//! can, and is given generous caching where it has any; peers' records are kept in memory (no
//! serialisation), which favours them. Run: `cargo xtask bench --peers`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use envelopers::{Aes256Gcm, CacheOptions, CachingKeyWrapper, EnvelopeCipher, SimpleKeyProvider};
use sealkit::{Config, EncryptionContext, KeyUri, Keyring};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let field = [0x61u8; 64];
    let ctx = EncryptionContext::parse("table=customers,column=email,id=123456").unwrap();
    let aad = ctx.canonical_bytes().to_vec();
    let mut group = c.benchmark_group("round_trip_64B");

    // Sealkit: local provider, default caching (one DEK for the run).
    let home = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.default_key = Some(sealkit::KeyUri::parse("local://bench").unwrap());
    config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
    let keyring = Keyring::builder(config).build().unwrap();
    rt.block_on(keyring.create_key(&KeyUri::parse("local://bench").unwrap())).unwrap();
    group.bench_function("sealkit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let sealed = keyring.seal(&field, &ctx).await.unwrap();
                    black_box(keyring.open(&sealed, &ctx).await.unwrap());
                }
                started.elapsed()
            })
        })
    });

    // Sealkit, compact envelopes: the DEK store in an SQLite file.
    let deks = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.default_key = Some(sealkit::KeyUri::parse("local://bench").unwrap());
    config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
    config.deks.store = Some(format!("sqlite:{}", deks.path().join("deks.db").display()));
    config.deks.layout = sealkit::Layout::Compact;
    let compact = rt.block_on(Keyring::builder(config).build_async()).unwrap();
    group.bench_function("sealkit-compact", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let sealed = compact.seal(&field, &ctx).await.unwrap();
                    black_box(compact.open(&sealed, &ctx).await.unwrap());
                }
                started.elapsed()
            })
        })
    });

    // The floor: ring AES-256-GCM with one key, a random 96-bit nonce per message (from the
    // same buffered OS randomness Sealkit uses), the same associated data; no key management,
    // no envelope.
    {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        use sealkit::core::SecureRandom;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
        let rng = sealkit::random::OsRandom;
        group.bench_function("ring-aes-gcm-floor", |b| {
            b.iter(|| {
                let mut nonce = [0u8; 12];
                rng.fill(&mut nonce).unwrap();
                let mut buf = field.to_vec();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad),
                    &mut buf,
                )
                .unwrap();
                let opened = key
                    .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut buf)
                    .unwrap();
                black_box(opened.len())
            })
        });
    }

    // tink-aead: a fresh DEK per message, wrapped by the "remote" AEAD (here a local one).
    tink_aead::init();
    let kh = tink_core::keyset::Handle::new(&tink_aead::aes256_gcm_key_template()).unwrap();
    let remote = tink_aead::new(&kh).unwrap();
    let tink = tink_aead::KmsEnvelopeAead::new(tink_aead::aes256_gcm_key_template(), remote);
    group.bench_function("tink-aead", |b| {
        b.iter(|| {
            use tink_core::Aead;
            let sealed = tink.encrypt(&field, &aad).unwrap();
            black_box(tink.decrypt(&sealed, &aad).unwrap())
        })
    });

    // envelopers: caching key wrapper with bounds as generous as Sealkit's defaults.
    let provider: SimpleKeyProvider<Aes256Gcm> = SimpleKeyProvider::init([7u8; 16]);
    let options = CacheOptions::default()
        .with_max_age(Duration::from_secs(300))
        .with_max_messages(1_000_000)
        .with_max_bytes(1 << 30)
        .with_max_entries(1_000);
    let cipher: EnvelopeCipher<_> = EnvelopeCipher::init(CachingKeyWrapper::new(provider, options));
    group.bench_function("envelopers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let record = cipher.encrypt(&field).await.unwrap();
                    black_box(cipher.decrypt(&record).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
