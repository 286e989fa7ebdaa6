//! Golden envelope vectors for `sealkit-core`'s tests.

use sealkit_core::random::FixedRandom;
use sealkit_core::{
    Algorithm, DataKey, DekCipher, EncryptionContext, KeyRef, WrappedKey, default_backend,
};
use serde_json::json;

const GOLDEN: &str = "crates/sealkit-core/tests/data/golden-v1.json";

struct Case {
    name: &'static str,
    algorithm: Algorithm,
    compact: bool,
    key_uri: &'static str,
    key_version: &'static str,
    wrapped_len: usize,
    context: &'static str,
    plaintext: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let case = |name, algorithm, compact, plaintext: &[u8]| Case {
        name,
        algorithm,
        compact,
        key_uri: "local://customers",
        key_version: "1",
        wrapped_len: 60,
        context: "table=customers,column=email,id=42",
        plaintext: plaintext.to_vec(),
    };
    vec![
        case("aes-gcm-full-empty", Algorithm::Aes256Gcm, false, b""),
        case(
            "aes-gcm-full-email",
            Algorithm::Aes256Gcm,
            false,
            b"alice@example.com",
        ),
        case(
            "aes-gcm-compact",
            Algorithm::Aes256Gcm,
            true,
            b"+1 555 0100",
        ),
        case(
            "xchacha-full",
            Algorithm::XChaCha20Poly1305,
            false,
            b"alice@example.com",
        ),
        case(
            "xchacha-compact",
            Algorithm::XChaCha20Poly1305,
            true,
            b"secret note",
        ),
        Case {
            name: "aes-gcm-full-gcp-long-uri",
            key_uri: "gcp-kms://projects/acme-prod/locations/europe-west1/keyRings/app/cryptoKeys/pii",
            key_version: "17",
            wrapped_len: 113,
            context: "tenant=t-001,table=orders,column=notes,id=90071992547409",
            plaintext: (0..1000u32).map(|i| (i * 7) as u8).collect(),
            ..case("", Algorithm::Aes256Gcm, false, b"")
        },
        Case {
            name: "xchacha-full-azure-rsa",
            key_uri: "azure-kv://acme.vault.azure.net/keys/pii",
            key_version: "0f3c9a1be2d44c5f8a7b6c5d4e3f2a1b",
            wrapped_len: 512,
            context: "table=users,column=name,id=7,note=ünïcödé",
            plaintext: "Zoë Łukasz 山田".as_bytes().to_vec(),
            ..case("", Algorithm::XChaCha20Poly1305, false, b"")
        },
    ]
}

fn generate() -> Result<String, String> {
    let mut out = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let seed = 1000 + i as u64;
        let mut dek = [0u8; 32];
        for (j, b) in dek.iter_mut().enumerate() {
            *b = (seed as u8).wrapping_mul(31).wrapping_add(j as u8);
        }
        let dek = DataKey::from_bytes(dek);
        let key = KeyRef::parse(case.key_uri, case.key_version).map_err(|e| e.to_string())?;
        let wrapped = WrappedKey::new(key, (0..case.wrapped_len).map(|j| j as u8 ^ 0x5c).collect());
        let context = EncryptionContext::parse(case.context).map_err(|e| e.to_string())?;
        let cipher = DekCipher::new(default_backend(), case.algorithm, &dek)
            .and_then(|c| c.with_wrapped_key(&wrapped))
            .map_err(|e| e.to_string())?;
        let rng = FixedRandom::new(seed);
        let envelope = if case.compact {
            cipher.seal_compact(&rng, &context, &case.plaintext)
        } else {
            cipher.seal(&rng, &context, &case.plaintext)
        }
        .map_err(|e| e.to_string())?;
        out.push(json!({
            "name": case.name,
            "algorithm": case.algorithm.as_str(),
            "layout": if case.compact { "compact" } else { "full" },
            "dek": hex::encode(dek.expose()),
            "key_uri": case.key_uri,
            "key_version": case.key_version,
            "context": case.context,
            "plaintext": hex::encode(&case.plaintext),
            "commitment": match cipher.commitment() {
                Some(c) if !case.compact => hex::encode(c),
                _ => hex::encode(cipher.dek_id()),
            },
            "envelope": hex::encode(&envelope),
        }));
    }
    serde_json::to_string_pretty(&out)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// Writes the golden vectors, or with `check` fails when the committed file differs.
pub(crate) fn run(check: bool) -> Result<(), String> {
    let path = crate::util::root().join(GOLDEN);
    let fresh = generate()?;
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != fresh {
            return Err(format!(
                "{GOLDEN} is out of date: the envelope format or its generator changed. If the \
                 change is intended and old ciphertexts still open, run `cargo xtask codegen` and \
                 commit; otherwise the change breaks stored data."
            ));
        }
        println!("codegen: {GOLDEN} is up to date");
    } else {
        std::fs::write(&path, fresh).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("codegen: wrote {GOLDEN}");
    }
    Ok(())
}
