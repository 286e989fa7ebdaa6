//! Envelope seal/open per backend, algorithm and size, beside the raw AEAD call of the same
//! backend and size in the same run, so the envelope's own overhead shows as a ratio.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkit::random::OsRandom;
use sealkit_core::backend::all_backends;
use sealkit_core::{
    Algorithm, DataKey, DekCipher, EncryptionContext, Envelope, KeyRef, SecureRandom, WrappedKey,
};
use std::hint::black_box;

const SIZES: [usize; 5] = [32, 256, 4096, 65536, 1 << 20];

fn bench(c: &mut Criterion) {
    let ctx = EncryptionContext::parse("table=customers,column=notes,id=123456").unwrap();
    let wrapped = WrappedKey::new(
        KeyRef::parse("local://customers", "1").unwrap(),
        vec![0x5A; 60],
    );
    let dek = DataKey::from_bytes([7; 32]);
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::XChaCha20Poly1305] {
        for backend in all_backends() {
            let mut group = c.benchmark_group(format!("{}/{}", algorithm, backend.name()));
            let raw = backend.prepare(algorithm, &[9; 32]).unwrap();
            let cipher = DekCipher::new(backend, algorithm, &dek)
                .unwrap()
                .with_wrapped_key(&wrapped)
                .unwrap();
            for size in SIZES {
                let plaintext = vec![0xA5u8; size];
                group.throughput(Throughput::Bytes(size as u64));
                group.bench_with_input(BenchmarkId::new("raw_seal", size), &plaintext, |b, pt| {
                    let mut nonce = vec![0u8; algorithm.nonce_len()];
                    b.iter(|| {
                        OsRandom.fill(&mut nonce).unwrap();
                        let mut buf = Vec::with_capacity(pt.len() + 16);
                        buf.extend_from_slice(pt);
                        let tag = raw
                            .seal_in_place(&nonce, ctx.canonical_bytes(), &mut buf)
                            .unwrap();
                        buf.extend_from_slice(&tag);
                        black_box(buf)
                    })
                });
                group.bench_with_input(
                    BenchmarkId::new("envelope_seal", size),
                    &plaintext,
                    |b, pt| b.iter(|| black_box(cipher.seal(&OsRandom, &ctx, pt).unwrap())),
                );
                let mut nonce = vec![0u8; algorithm.nonce_len()];
                OsRandom.fill(&mut nonce).unwrap();
                let mut sealed_raw = plaintext.clone();
                let tag = raw
                    .seal_in_place(&nonce, ctx.canonical_bytes(), &mut sealed_raw)
                    .unwrap();
                group.bench_with_input(BenchmarkId::new("raw_open", size), &sealed_raw, |b, ct| {
                    b.iter(|| {
                        let mut buf = ct.clone();
                        raw.open_in_place(&nonce, ctx.canonical_bytes(), &mut buf, &tag)
                            .unwrap();
                        black_box(buf)
                    })
                });
                let envelope = cipher.seal(&OsRandom, &ctx, &plaintext).unwrap();
                group.bench_with_input(
                    BenchmarkId::new("envelope_open", size),
                    &envelope,
                    |b, env| {
                        b.iter(|| {
                            let parsed = Envelope::parse(env).unwrap();
                            black_box(cipher.open(&parsed, &ctx).unwrap())
                        })
                    },
                );
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
