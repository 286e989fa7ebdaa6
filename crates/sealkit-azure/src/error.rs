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
    // What the service or the client said, without `what` (a key named `disabled-…` must not
    // turn a refusal into a disabled key).
    let said = error_chain(error);
    let detail = format!("{what}: {said}");
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
                let text = said.to_ascii_lowercase();
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
            if said.contains("failed to execute `reqwest` request") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(message: &str) -> azure_core::Error {
        azure_core::Error::with_message(
            AzureKind::HttpResponse {
                status: StatusCode::Forbidden,
                error_code: Some("Forbidden".into()),
                raw_response: None,
            },
            message.to_string(),
        )
    }

    #[test]
    fn a_403_is_a_disabled_key_only_when_the_service_says_so() {
        let what = "wrapKey with azure-kv://v.vault.azure.net/keys/disabled-accounts";
        let refused = map(
            crate::keys::SCHEME,
            forbidden("does not have keys wrapKey permission on key vault 'v'"),
            what,
        );
        assert_eq!(
            refused.kind(),
            sealkit_core::ErrorKind::PermissionDenied,
            "{refused}"
        );
        assert!(
            refused.to_string().contains("Key Vault Crypto User"),
            "{refused}"
        );
        let disabled = map(
            crate::keys::SCHEME,
            forbidden("Operation wrapKey is not allowed on a disabled key."),
            what,
        );
        assert_eq!(
            disabled.kind(),
            sealkit_core::ErrorKind::KeyDisabled,
            "{disabled}"
        );
    }
}
