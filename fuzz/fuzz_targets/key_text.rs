//! Key URIs, versions and base64 legacy keys from arbitrary text: no input may panic, and a
//! parsed URI prints back to what parses to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_core::KeyUri;
use sealkit_core::legacy::LegacyKey;

fuzz_target!(|text: &str| {
    if let Ok(uri) = KeyUri::parse(text) {
        assert_eq!(
            KeyUri::parse(uri.as_str()).expect("a printed URI parses"),
            uri
        );
    }
    let _ = KeyUri::parse_with_version(text);
    if let Err(e) = LegacyKey::from_base64("FUZZ", text) {
        // Errors name the source, never the value (unless the value is part of the fixed
        // wording of a message, as a fuzzer will try).
        let templates: Vec<String> = ["", "!!!!", "AAAA"]
            .iter()
            .filter_map(|t| LegacyKey::from_base64("FUZZ", t).err())
            .map(|e| e.to_string())
            .collect();
        let echoed = e.to_string().contains(text);
        assert!(
            text.len() <= 8 || !echoed || templates.iter().any(|t| t.contains(text)),
            "{e}"
        );
    }
});
