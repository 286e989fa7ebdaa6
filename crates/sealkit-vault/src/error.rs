//! Mapping of Vault errors onto the core's kinds.

use sealkit_core::Error;
use vaultrs::error::ClientError;

const PROVIDER: &str = "vault";

/// Maps a Vault client error for `what` (e.g. "decrypt with vault-transit://transit/pii") to
/// the core's kinds, with a message that says what to do.
pub(crate) fn map(error: ClientError, what: &str) -> Error {
    match error {
        ClientError::APIError { code, errors } => {
            let detail = errors.join("; ");
            let lower = detail.to_lowercase();
            match code {
                403 => Error::permission_denied(
                    PROVIDER,
                    format!(
                        "{what}: permission denied ({detail}); the token's policy needs `update` on this path"
                    ),
                ),
                404 => Error::not_found(PROVIDER, what.to_string()),
                429 => Error::throttled(PROVIDER, format!("{what}: {detail}")),
                500..=599 => Error::unavailable(PROVIDER, format!("{what}: HTTP {code}: {detail}")),
                _ if lower.contains("not found")
                    || lower.contains("no existing key")
                    || lower.contains("encryption key not found") =>
                {
                    Error::not_found(PROVIDER, what.to_string())
                }
                _ if lower.contains("disallowed by policy") || lower.contains("too old") => {
                    Error::key_disabled(what).with_source(detail)
                }
                _ if lower.contains("already exists") => Error::already_exists(PROVIDER, what),
                _ if lower.contains("check-and-set") => Error::unavailable(
                    PROVIDER,
                    format!(
                        "{what}: it changed while being written ({detail}); run the command again"
                    ),
                ),
                _ if lower.contains("message authentication failed")
                    || lower.contains("invalid ciphertext")
                    || lower.contains("unable to decrypt")
                    || lower.contains("illegal base64")
                    || lower.contains("invalid version") =>
                {
                    Error::InvalidCiphertext
                }
                _ => Error::invalid_input(format!("{what}: Vault answered HTTP {code}: {detail}")),
            }
        }
        ClientError::RestClientError { source } => {
            Error::unavailable(PROVIDER, format!("{what}: {source}")).with_source(source)
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            Error::unavailable(PROVIDER, format!("{what}: empty response"))
        }
        other => Error::other(PROVIDER, what).with_source(other),
    }
}
