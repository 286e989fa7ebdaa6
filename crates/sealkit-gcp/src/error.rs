//! Mapping of Google Cloud client errors onto the core's kinds.

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use sealkit_core::{Error, error_chain};

/// Maps a client error for `what` (e.g. "secret version projects/p/secrets/db/versions/3").
pub(crate) fn map(provider: &str, error: GaxError, what: &str) -> Error {
    map_kind(provider, &error, what).with_source(error)
}

fn map_kind(provider: &str, error: &GaxError, what: &str) -> Error {
    if let Some(status) = error.status() {
        let detail = format!("{what}: {}: {}", status.code, status.message);
        return from_code(provider, status.code, what, detail);
    }
    if error.is_authentication() {
        return Error::permission_denied(
            provider,
            format!(
                "{what}: no usable credentials: {}; set GOOGLE_APPLICATION_CREDENTIALS or run \
                 gcloud auth application-default login",
                error_chain(error)
            ),
        );
    }
    if let Some(http) = error.http_status_code() {
        let detail = format!("{what}: HTTP {http}: {}", error_chain(error));
        // Some front ends (gRPC gateways) answer `{"code": N, "message": …}` with the gRPC
        // code instead of Google's error body.
        let code = error
            .http_payload()
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
            .and_then(|body| body.get("code").and_then(serde_json::Value::as_i64))
            .and_then(|code| i32::try_from(code).ok())
            .map(Code::from)
            .unwrap_or(match http {
                404 => Code::NotFound,
                401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                429 => Code::ResourceExhausted,
                500..=599 => Code::Unavailable,
                _ => Code::InvalidArgument,
            });
        return from_code(provider, code, what, detail);
    }
    Error::unavailable(provider, format!("{what}: {}", error_chain(error)))
}

fn from_code(provider: &str, code: Code, what: &str, detail: String) -> Error {
    match code {
        Code::NotFound => Error::not_found(provider, what.to_string()),
        Code::PermissionDenied | Code::Unauthenticated => {
            let role = if provider == "gcp-kms" {
                "roles/cloudkms.cryptoKeyEncrypterDecrypter on the key"
            } else {
                "roles/secretmanager.secretAccessor on the secret"
            };
            Error::permission_denied(provider, format!("{detail}; grant {role}"))
        }
        Code::ResourceExhausted => Error::throttled(provider, detail),
        Code::Unavailable | Code::DeadlineExceeded | Code::Internal | Code::Aborted => {
            Error::unavailable(provider, detail)
        }
        // Disabled or destroyed versions answer FAILED_PRECONDITION.
        Code::FailedPrecondition => Error::key_disabled(what),
        Code::AlreadyExists => Error::already_exists(provider, what),
        _ => Error::invalid_input(detail),
    }
}
