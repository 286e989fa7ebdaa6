//! Integration tests of `sealkit-core` (one binary, many modules).

mod envelope;
mod golden;
mod legacy;
mod wycheproof_vectors;
