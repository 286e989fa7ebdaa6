//! Envelope properties: round trips, tamper detection, truncation, wrong key/context/version.

use proptest::prelude::*;
use sealkit_core::backend::all_backends;
use sealkit_core::random::FixedRandom;
use sealkit_core::{
    Algorithm, DataKey, DekCipher, EncryptionContext, Envelope, EnvelopeLayout, Error, KeyRef,
    WrappedKey, default_backend,
};

const ALGORITHMS: [Algorithm; 2] = [Algorithm::Aes256Gcm, Algorithm::XChaCha20Poly1305];

fn ctx(id: &str) -> EncryptionContext {
    EncryptionContext::builder()
        .with("table", "customers")
        .with("column", "email")
        .with("id", id)
        .build()
        .unwrap()
}

fn cipher(algorithm: Algorithm, key_byte: u8, version: &str) -> DekCipher {
    let wrapped = WrappedKey::new(
        KeyRef::parse("local://customers", version).unwrap(),
        vec![0xAB; 40],
    );
    DekCipher::new(
        default_backend(),
        algorithm,
        &DataKey::from_bytes([key_byte; 32]),
    )
    .unwrap()
    .with_wrapped_key(&wrapped)
    .unwrap()
}

#[test]
fn overhead_is_as_documented() {
    let rng = FixedRandom::new(1);
    let c = cipher(Algorithm::Aes256Gcm, 1, "1");
    // 69 fixed + |"local://customers"| (17) + |"1"| (1) + 40-byte wrapped DEK = 127.
    assert_eq!(c.seal(&rng, &ctx("1"), b"").unwrap().len(), 127);
    assert_eq!(c.seal_compact(&rng, &ctx("1"), b"").unwrap().len(), 49);
    let x = cipher(Algorithm::XChaCha20Poly1305, 1, "1");
    assert_eq!(x.seal(&rng, &ctx("1"), b"").unwrap().len(), 139);
    assert_eq!(x.seal_compact(&rng, &ctx("1"), b"").unwrap().len(), 61);
}

#[test]
fn backends_produce_identical_envelopes() {
    let dek = DataKey::from_bytes([5; 32]);
    let wrapped = WrappedKey::new(KeyRef::parse("local://k", "7").unwrap(), vec![1, 2, 3]);
    for algorithm in ALGORITHMS {
        let outputs: Vec<Vec<u8>> = all_backends()
            .into_iter()
            .map(|b| {
                let c = DekCipher::new(b, algorithm, &dek)
                    .unwrap()
                    .with_wrapped_key(&wrapped)
                    .unwrap();
                c.seal(&FixedRandom::new(42), &ctx("9"), &[0x5A; 1000])
                    .unwrap()
            })
            .collect();
        assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{algorithm}");
        // And each backend opens what the other sealed.
        for b in all_backends() {
            let c = DekCipher::new(b, algorithm, &dek).unwrap();
            let env = Envelope::parse(&outputs[0]).unwrap();
            assert_eq!(c.open(&env, &ctx("9")).unwrap(), vec![0x5A; 1000]);
        }
    }
}

#[test]
fn parse_exposes_the_header_fields() {
    let c = cipher(Algorithm::Aes256Gcm, 1, "12");
    let sealed = c.seal(&FixedRandom::new(1), &ctx("1"), b"x").unwrap();
    let env = Envelope::parse(&sealed).unwrap();
    assert_eq!(env.layout(), EnvelopeLayout::Full);
    assert_eq!(env.algorithm(), Algorithm::Aes256Gcm);
    assert_eq!(
        env.key_ref().unwrap().unwrap().to_string(),
        "local://customers#v12"
    );
    assert_eq!(env.wrapped_bytes().unwrap(), &[0xAB; 40][..]);
    assert!(Envelope::looks_like(&sealed));
}

#[test]
fn rewrap_replaces_the_key_slot_and_keeps_the_ciphertext() {
    let rng = FixedRandom::new(3);
    let c = cipher(Algorithm::Aes256Gcm, 1, "1");
    let sealed = c.seal(&rng, &ctx("5"), b"data").unwrap();
    let env = Envelope::parse(&sealed).unwrap();
    let new_wrapped = WrappedKey::new(
        KeyRef::parse("local://customers", "2").unwrap(),
        vec![0xCD; 60],
    );
    let rewrapped = c.rewrap_envelope(&env, &new_wrapped).unwrap();
    let renv = Envelope::parse(&rewrapped).unwrap();
    assert_eq!(renv.key_ref().unwrap().unwrap().version.as_str(), "2");
    assert_eq!(renv.nonce(), env.nonce());
    assert_eq!(renv.ciphertext(), env.ciphertext());
    assert_eq!(renv.tag(), env.tag());
    assert_eq!(c.open(&renv, &ctx("5")).unwrap(), b"data");
    // A cipher built from the new slot opens it too; the old slot no longer matches it.
    let c2 = DekCipher::new(
        default_backend(),
        Algorithm::Aes256Gcm,
        &DataKey::from_bytes([1; 32]),
    )
    .unwrap()
    .with_wrapped_key(&new_wrapped)
    .unwrap();
    assert_eq!(c2.open(&renv, &ctx("5")).unwrap(), b"data");
    // Another DEK cannot rewrap (commitment check), and compact envelopes are refused.
    assert!(
        cipher(Algorithm::Aes256Gcm, 2, "1")
            .rewrap_envelope(&env, &new_wrapped)
            .is_err()
    );
    let compact = c.seal_compact(&rng, &ctx("5"), b"data").unwrap();
    assert!(
        c.rewrap_envelope(&Envelope::parse(&compact).unwrap(), &new_wrapped)
            .is_err()
    );
}

#[test]
fn message_budget_is_enforced() {
    let c = cipher(Algorithm::Aes256Gcm, 1, "1")
        .with_message_limit(3)
        .unwrap();
    let rng = FixedRandom::new(1);
    for _ in 0..3 {
        c.seal(&rng, &ctx("1"), b"a").unwrap();
    }
    assert!(matches!(
        c.seal(&rng, &ctx("1"), b"a"),
        Err(Error::MessageBudgetExhausted)
    ));
    assert!(matches!(
        c.seal_compact(&rng, &ctx("1"), b"a"),
        Err(Error::MessageBudgetExhausted)
    ));
    assert_eq!(c.budget().remaining(), 0);
    assert!(
        cipher(Algorithm::Aes256Gcm, 1, "1")
            .with_message_limit((1 << 32) + 1)
            .is_err()
    );
    assert!(
        cipher(Algorithm::Aes256Gcm, 1, "1")
            .with_message_limit(0)
            .is_err()
    );
}

#[test]
fn empty_and_duplicate_contexts_are_refused() {
    assert!(EncryptionContext::builder().build().is_err());
    assert!(
        EncryptionContext::builder()
            .with("a", "1")
            .with("a", "2")
            .build()
            .is_err()
    );
    assert!(EncryptionContext::builder().with("", "1").build().is_err());
    assert!(EncryptionContext::parse("table=t,column").is_err());
}

#[test]
fn context_encoding_is_order_independent_and_unambiguous() {
    let a = EncryptionContext::from_pairs([("a", "1"), ("b", "2")]).unwrap();
    let b = EncryptionContext::from_pairs([("b", "2"), ("a", "1")]).unwrap();
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    // Shifting bytes between key and value, or between pairs, changes the encoding.
    let c = EncryptionContext::from_pairs([("a", "12"), ("b", "")]).unwrap();
    let d = EncryptionContext::from_pairs([("ab", "1")]).unwrap();
    assert_ne!(a.canonical_bytes(), c.canonical_bytes());
    assert_ne!(c.canonical_bytes(), d.canonical_bytes());
    assert_eq!(
        EncryptionContext::parse("table=t, id=42")
            .unwrap()
            .to_string(),
        "id=42,table=t"
    );
}

#[test]
fn debug_output_never_shows_key_material() {
    let dek = DataKey::from_bytes([0x42; 32]);
    let text = format!("{dek:?} {:?}", cipher(Algorithm::Aes256Gcm, 0x42, "1"));
    assert!(
        !text.contains("42, 42") && !text.contains("0x42") && !text.contains("424242"),
        "{text}"
    );
    assert!(text.contains("REDACTED"));
}

fn arb_context() -> impl Strategy<Value = EncryptionContext> {
    prop::collection::btree_map("[a-z_]{1,12}", ".{0,24}", 1..5)
        .prop_map(|m| EncryptionContext::from_pairs(m).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_any_plaintext_and_context(
        alg in prop::sample::select(ALGORITHMS.to_vec()),
        compact in any::<bool>(),
        // Sizes up to 1 MiB; most cases small, some large.
        len in prop_oneof![0usize..300, 0usize..(1 << 20)],
        fill in any::<u8>(),
        context in arb_context(),
        seed in any::<u64>(),
    ) {
        let c = cipher(alg, 9, "3");
        let plaintext = vec![fill; len];
        let rng = FixedRandom::new(seed);
        let sealed = if compact { c.seal_compact(&rng, &context, &plaintext) } else { c.seal(&rng, &context, &plaintext) }.unwrap();
        let env = Envelope::parse(&sealed).unwrap();
        prop_assert_eq!(c.open(&env, &context).unwrap(), plaintext);
    }

    #[test]
    fn any_flipped_bit_fails_to_open(
        alg in prop::sample::select(ALGORITHMS.to_vec()),
        compact in any::<bool>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        bit in any::<prop::sample::Index>(),
    ) {
        let c = cipher(alg, 9, "3");
        let context = ctx("7");
        let rng = FixedRandom::new(1);
        let mut sealed = if compact { c.seal_compact(&rng, &context, &plaintext) } else { c.seal(&rng, &context, &plaintext) }.unwrap();
        let i = bit.index(sealed.len() * 8);
        sealed[i / 8] ^= 1 << (i % 8);
        let opened = Envelope::parse(&sealed).and_then(|env| c.open(&env, &context));
        prop_assert!(opened.is_err());
    }

    #[test]
    fn every_truncation_is_an_error(
        alg in prop::sample::select(ALGORITHMS.to_vec()),
        compact in any::<bool>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let c = cipher(alg, 9, "3");
        let context = ctx("7");
        let rng = FixedRandom::new(1);
        let sealed = if compact { c.seal_compact(&rng, &context, &plaintext) } else { c.seal(&rng, &context, &plaintext) }.unwrap();
        for n in 0..sealed.len() {
            let opened = Envelope::parse(&sealed[..n]).and_then(|env| c.open(&env, &context));
            prop_assert!(opened.is_err(), "truncation to {} opened", n);
        }
    }

    #[test]
    fn other_context_key_or_version_fails(
        alg in prop::sample::select(ALGORITHMS.to_vec()),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        other_id in "[0-9]{1,6}",
    ) {
        prop_assume!(other_id != "7");
        let c = cipher(alg, 9, "3");
        let sealed = c.seal(&FixedRandom::new(1), &ctx("7"), &plaintext).unwrap();
        let env = Envelope::parse(&sealed).unwrap();
        prop_assert!(matches!(c.open(&env, &ctx(&other_id)), Err(Error::InvalidCiphertext)));
        // A different DEK fails on the commitment.
        prop_assert!(matches!(cipher(alg, 10, "3").open(&env, &ctx("7")), Err(Error::InvalidCiphertext)));
        // Re-labelling the key version (a header byte) fails authentication.
        let relabelled = String::from_utf8_lossy(&sealed).contains("local://customers");
        prop_assert!(relabelled);
        let mut moved = sealed.clone();
        let pos = 6 + "local://customers".len() + 1;
        moved[pos] = b'4';
        let env = Envelope::parse(&moved).unwrap();
        prop_assert!(c.open(&env, &ctx("7")).is_err());
    }

    #[test]
    fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Envelope::parse(&bytes);
        let mut prefixed = b"SK\x01\x01\x01".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = Envelope::parse(&prefixed).map(|e| e.key_ref());
    }
}
