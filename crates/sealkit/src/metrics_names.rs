//! Metric names (Prometheus style), recorded through the `metrics` crate.

/// Seals, by `provider` and `key_version`.
pub const ENCRYPT_TOTAL: &str = "sealkit_crypto_encrypt_total";
/// Opens, by `provider` and `key_version`.
pub const DECRYPT_TOTAL: &str = "sealkit_crypto_decrypt_total";
/// Latency of seal/open/key operations, by `operation` and `provider`.
pub const OPERATION_DURATION: &str = "sealkit_crypto_operation_duration_seconds";
/// Failures, by `operation`, `provider` and `error_type`.
pub const ERRORS_TOTAL: &str = "sealkit_crypto_errors_total";
/// Calls to a provider (KMS), by `provider` and `operation`.
pub const KMS_CALLS_TOTAL: &str = "sealkit_kms_calls_total";
/// Data-key cache hits, by `cache` (`seal` or `open`).
pub const DEK_CACHE_HITS_TOTAL: &str = "sealkit_dek_cache_hits_total";
/// Data-key cache misses, by `cache`.
pub const DEK_CACHE_MISSES_TOTAL: &str = "sealkit_dek_cache_misses_total";
/// Counter: legacy (pre-envelope) ciphertexts opened in `hybrid` or `legacy` mode, by
/// outcome. Watch it fall to zero before switching to `kms` mode: a legacy value carries no
/// context, so while legacy reads happen a value copied between rows still opens.
pub const LEGACY_OPENS_TOTAL: &str = "sealkit_legacy_opens_total";
/// Counter: DEK-store reads (a compact envelope's DEK not in this process's cache, or the
/// active DEK of a scope looked up), by `outcome`.
pub const DEK_STORE_READS_TOTAL: &str = "sealkit_dek_store_reads_total";
/// Counter: blocks of a stored DEK's message budget reserved by this process, by `outcome`
/// (`granted`, or `exhausted` when the DEK had none left and a new one was made).
pub const DEK_RESERVATIONS_TOTAL: &str = "sealkit_dek_reservations_total";
/// Counter: stored DEKs retired (`budget` spent, or made before the key `rotated`) or
/// `shredded`, by `reason`.
pub const DEK_RETIREMENTS_TOTAL: &str = "sealkit_dek_retirements_total";
