//! Sealing small fields through the facade (cached DEK, local provider) against the bare core
//! `seal` in the same run, and KMS calls per 100,000 sealed fields with default caching.

use criterion::{Criterion, criterion_group, criterion_main};
use sealkit::audit::{
    AuditEvent, AuditFileOptions, AuditKey, AuditSink, JsonlAuditSink, Operation,
};
use sealkit::random::OsRandom;
use sealkit::{Config, EncryptionContext, KeyUri, Keyring};
use sealkit_benches::time_in_task;
use sealkit_core::{Algorithm, DataKey, DekCipher, KeyRef, WrappedKey, default_backend};
use std::hint::black_box;

/// Operations per timed burst in the audited benchmarks (about 3 MB of queued events).
const AUDIT_BURST: u64 = 20_000;

fn bench(c: &mut Criterion) {
    let rt = sealkit_benches::runtime(1);
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
    // Compact envelopes: the same key, its DEKs in an SQLite DEK store (read once per DEK;
    // a seal reserves a block of 65,536 messages from the store now and then).
    let deks_home = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse("local://bench").unwrap());
    config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
    config.deks.store = Some(format!(
        "sqlite:{}",
        deks_home.path().join("deks.db").display()
    ));
    config.deks.layout = sealkit::Layout::Compact;
    let compact = rt.block_on(Keyring::builder(config).build_async()).unwrap();
    let sealed_compact = rt.block_on(compact.seal(&field, &ctx)).unwrap();
    let (kc, sealed_compact_ref) = (&compact, &sealed_compact);
    group.bench_function("facade_seal_compact", |b| {
        b.iter_custom(|iters| {
            time_in_task(&rt, iters, move || async move {
                kc.seal(field_ref, ctx_ref).await.unwrap()
            })
        })
    });
    group.bench_function("facade_open_compact", |b| {
        b.iter_custom(|iters| {
            time_in_task(&rt, iters, move || async move {
                kc.open(sealed_compact_ref, ctx_ref).await.unwrap()
            })
        })
    });
    // Envelope overhead per plaintext size: printed, not timed.
    for size in [0usize, 16, 64, 256, 1024, 4096, 65536] {
        let plaintext = vec![0x61u8; size];
        let full = rt.block_on(keyring.seal(&plaintext, &ctx)).unwrap().len() - size;
        let small = rt.block_on(compact.seal(&plaintext, &ctx)).unwrap().len() - size;
        let share = |overhead: usize| 100.0 * overhead as f64 / (size + overhead) as f64;
        println!(
            "envelope_overhead plaintext={size} full={full} ({:.1} % of the envelope) compact={small} ({:.1} %)",
            share(full),
            share(small)
        );
    }

    // The same keyring with a MAC-chained audit file recording every seal and open (the
    // default when a file is configured): the caller's cost of auditing.
    let audit_home = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.default_key = Some(KeyUri::parse("local://bench").unwrap());
    config
        .provider("local")
        .set("home", home.path().to_str().unwrap());
    config.audit.path = Some(audit_home.path().join("audit.jsonl"));
    let audited = Keyring::builder(config)
        .with_audit_key(AuditKey::from_bytes([0xA5; 32]))
        .build()
        .unwrap();
    let audited_ref = &audited;
    // The caller's cost: bursts of AUDIT_BURST operations, timed, with the writer thread
    // draining the queue between them, untimed (an application whose average rate the writer
    // sustains: see `audit_record_written`).
    let in_bursts = |iters: u64, op: &dyn Fn(u64) -> std::time::Duration| {
        let (mut total, mut left) = (std::time::Duration::ZERO, iters);
        while left > 0 {
            let n = left.min(AUDIT_BURST);
            total += op(n);
            audited_ref.flush_audit().unwrap();
            left -= n;
        }
        total
    };
    group.bench_function("facade_seal_audited", |b| {
        b.iter_custom(|iters| {
            in_bursts(iters, &|n| {
                time_in_task(&rt, n, move || async move {
                    audited_ref.seal(field_ref, ctx_ref).await.unwrap()
                })
            })
        })
    });
    group.bench_function("facade_open_audited", |b| {
        b.iter_custom(|iters| {
            in_bursts(iters, &|n| {
                time_in_task(&rt, n, move || async move {
                    audited_ref.open(sealed_ref, ctx_ref).await.unwrap()
                })
            })
        })
    });
    // Sustained: sealing without pause, as fast as one core can, so that the writer's
    // throughput bounds the rate.
    group.bench_function("facade_seal_audited_sustained", |b| {
        b.iter_custom(|iters| {
            time_in_task(&rt, iters, move || async move {
                audited_ref.seal(field_ref, ctx_ref).await.unwrap()
            })
        })
    });
    // Everything a record costs, the writer thread's MAC and append included: records
    // queued, then flushed (one fsync per batch of iterations).
    let sink = JsonlAuditSink::open(
        audit_home.path().join("sink.jsonl"),
        &AuditKey::from_bytes([0xA5; 32]),
        AuditFileOptions::default(),
    )
    .unwrap();
    let mut event = AuditEvent::new("bench", Operation::Seal);
    event.key = Some("local://bench");
    event.key_version = Some("1");
    event.context = Some(&ctx);
    // The caller's part alone: bursts of records queued, timed; the writer drains, untimed.
    group.bench_function("audit_record_queued", |b| {
        b.iter_custom(|iters| {
            let (mut total, mut left) = (std::time::Duration::ZERO, iters);
            while left > 0 {
                let n = left.min(AUDIT_BURST);
                let started = std::time::Instant::now();
                for _ in 0..n {
                    sink.record(&event);
                }
                total += started.elapsed();
                sink.flush().unwrap();
                left -= n;
            }
            total
        })
    });
    group.bench_function("audit_record_written", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            for _ in 0..iters {
                sink.record(&event);
            }
            sink.flush().unwrap();
            started.elapsed()
        })
    });
    group.finish();
    drop(audited);
    let audit_log = std::fs::metadata(audit_home.path().join("audit.jsonl")).unwrap();
    println!("audit_log_bytes_after_bench: {}", audit_log.len());

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
