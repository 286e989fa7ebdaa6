//! Criterion benchmarks of Sealkit live in `benches/`; run them with `cargo xtask bench`.
