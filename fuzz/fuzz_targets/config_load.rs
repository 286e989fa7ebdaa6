//! Loads arbitrary text as a Sealkit configuration: no input may panic; every refusal is a
//! configuration error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit::{Config, ErrorKind};

fuzz_target!(|text: &str| {
    if let Err(e) = Config::from_toml(text) {
        assert_eq!(e.kind(), ErrorKind::Misconfigured, "{e}");
    }
});
