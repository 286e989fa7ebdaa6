//! Sealing small fields through the facade (cached DEK, local provider) against the bare core
//! `seal` in the same run, and KMS calls per 100,000 sealed fields with default caching.

use criterion::{Criterion, criterion_group, criterion_main};
use sealkit::random::OsRandom;
use sealkit::{Config, EncryptionContext, KeyUri, Keyring};
use sealkit_benches::time_in_task;
use sealkit_core::{Algorithm, DataKey, DekCipher, KeyRef, WrappedKey, default_backend};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse("local://bench").unwrap());
    config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
    let keyring = Keyring::builder(config).build().unwrap();
    rt.block_on(keyring.create_key(&KeyUri::parse("local://bench").unwrap()))
        .unwrap();
    let ctx = EncryptionContext::parse("table=customers,column=email,id=123456").unwrap();
    let field = [0x61u8; 64];

    let wrapped = WrappedKey::new(KeyRef::parse("local://bench", "1").unwrap(), vec![0x5A; 60]);
    let cipher = DekCipher::new(
        default_backend(),
        Algorithm::Aes256Gcm,
        &DataKey::from_bytes([7; 32]),
    )
    .unwrap()
    .with_wrapped_key(&wrapped)
    .unwrap();

    let mut group = c.benchmark_group("field64");
    group.bench_function("core_seal", |b| {
        b.iter(|| black_box(cipher.seal(&OsRandom, &ctx, &field).unwrap()))
    });
    // Each batch of iterations runs inside one task (`time_in_task`), as an application awaits
    // inside its own task: the executor's per-`block_on` cost is not part of a seal.
    let sealed = rt.block_on(keyring.seal(&field, &ctx)).unwrap();
    let (k, field_ref, ctx_ref, sealed_ref) = (&keyring, &field, &ctx, &sealed);
    group.bench_function("facade_seal", |b| {
        b.iter_custom(|iters| {
            time_in_task(&rt, iters, move || async move {
                k.seal(field_ref, ctx_ref).await.unwrap()
            })
        })
    });
    group.bench_function("facade_round_trip", |b| {
        b.iter_custom(|iters| {
            time_in_task(&rt, iters, move || async move {
                let s = k.seal(field_ref, ctx_ref).await.unwrap();
                k.open(&s, ctx_ref).await.unwrap()
            })
        })
    });
    group.bench_function("facade_open", |b| {
        b.iter_custom(|iters| {
            time_in_task(&rt, iters, move || async move {
                k.open(sealed_ref, ctx_ref).await.unwrap()
            })
        })
    });
    group.finish();

    // KMS calls per 100,000 sealed fields (one scope) with default caching: printed, not timed.
    let fresh_home = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse("local://count").unwrap());
    config
        .provider("local")
        .set("home", fresh_home.path().to_str().unwrap());
    let counting = Keyring::builder(config).build().unwrap();
    rt.block_on(async {
        counting
            .create_key(&KeyUri::parse("local://count").unwrap())
            .await
            .unwrap();
        let before = counting.stats().kms_calls;
        for id in 0..100_000u64 {
            let ctx =
                EncryptionContext::parse(&format!("table=customers,column=email,id={id}")).unwrap();
            counting.seal(&field, &ctx).await.unwrap();
        }
        println!(
            "kms_calls_per_100000_fields_default_cache: {}",
            counting.stats().kms_calls - before
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
