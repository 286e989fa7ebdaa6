//! Parses arbitrary bytes as an envelope and, when they parse, tries to open them: no input may
//! panic, and nothing but the one committed key may open anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_core::legacy::{self, LegacyFormat};
use sealkit_core::{Algorithm, DataKey, DekCipher, EncryptionContext, Envelope, default_backend};

fuzz_target!(|data: &[u8]| {
    let ctx = EncryptionContext::parse("table=t,column=c,id=1").expect("static context");
    if let Ok(envelope) = Envelope::parse(data) {
        let _ = envelope.key_ref();
        let _ = envelope.wrapped_key();
        let dek = DataKey::from_bytes([0; 32]);
        for algorithm in [Algorithm::Aes256Gcm, Algorithm::XChaCha20Poly1305] {
            let cipher = DekCipher::new(default_backend(), algorithm, &dek).expect("cipher");
            assert!(
                cipher.open(&envelope, &ctx).is_err(),
                "a random envelope opened"
            );
        }
    }
    let key = DataKey::from_bytes([0; 32]);
    let _ = legacy::open(LegacyFormat::AesGcmIv16, &key, data, b"");
    let _ = legacy::open(LegacyFormat::AesGcmNonce12, &key, data, b"");
    let _ = legacy::fernet::open(&key, data);
    let _ = legacy::vault::parse(data);
    let _ = legacy::detect(data);
});
