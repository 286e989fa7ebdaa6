//! Mapping of Azure client errors onto the core's kinds.

use azure_core::error::ErrorKind as AzureKind;
use azure_core::http::StatusCode;
use sealkit_core::{Error, error_chain};

/// Maps a client error for `what` (e.g. "wrapKey with azure-kv://v.vault.azure.net/keys/k").
pub(crate) fn map(provider: &str, error: azure_core::Error, what: &str) -> Error {
    map_kind(provider, &error, what).with_source(error)
}

fn role(provider: &str) -> &'static str {
    if provider == crate::keys::SCHEME {
        "the Key Vault Crypto User role (or an access policy with get, wrapKey and unwrapKey) on the vault"
    } else {
        "the Key Vault Secrets User role (or an access policy with get) on the vault"
    }
}

fn map_kind(provider: &str, error: &azure_core::Error, what: &str) -> Error {
    let detail = format!("{what}: {}", error_chain(error));
    match error.kind() {
        AzureKind::HttpResponse {
            status, error_code, ..
        } => match *status {
            StatusCode::NotFound => Error::not_found(provider, what.to_string()),
            StatusCode::Unauthorized => Error::permission_denied(
                provider,
                format!("{detail}; check the sign-in (AZURE_TENANT_ID, AZURE_CLIENT_ID, …)"),
            ),
            StatusCode::Forbidden => {
                // Key Vault answers 403 both for a missing permission and for an object
                // that is disabled, expired or not yet valid.
                let text = detail.to_ascii_lowercase();
                if text.contains("disabled")
                    || text.contains("expired")
                    || text.contains("not yet valid")
                {
                    Error::key_disabled(what.to_string())
                } else {
                    Error::permission_denied(
                        provider,
                        format!("{detail}; grant {}", role(provider)),
                    )
                }
            }
            StatusCode::Conflict => Error::already_exists(provider, what.to_string()),
            StatusCode::TooManyRequests => Error::throttled(provider, detail),
            s if u16::from(s) >= 500 => Error::unavailable(provider, detail),
            _ => {
                let code = error_code.as_deref().unwrap_or("BadParameter");
                Error::invalid_input(format!("{detail} ({code})"))
            }
        },
        AzureKind::Credential => {
            // A token endpoint that cannot be reached is an outage, not a refusal.
            if detail.contains("failed to execute `reqwest` request") {
                Error::unavailable(
                    provider,
                    format!("{detail}; Microsoft Entra ID is unreachable"),
                )
            } else {
                Error::permission_denied(
                    provider,
                    format!(
                        "{detail}; check the sign-in (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or the managed identity)"
                    ),
                )
            }
        }
        _ => Error::unavailable(provider, detail),
    }
}
