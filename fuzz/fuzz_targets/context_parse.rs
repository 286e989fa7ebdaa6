//! Parses arbitrary text as an encryption context: no input may panic, and what parses has one
//! canonical form (printing and parsing again gives the same context and bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_core::EncryptionContext;

fuzz_target!(|text: &str| {
    if let Ok(ctx) = EncryptionContext::parse(text) {
        let again = EncryptionContext::parse(&ctx.to_string()).expect("a printed context parses");
        assert_eq!(again.canonical_bytes(), ctx.canonical_bytes());
    }
});
