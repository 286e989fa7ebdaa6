//! Mapping of AWS SDK errors onto the core's kinds.

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use sealkit_core::{Error, error_chain};

/// Maps an SDK error for `what` (e.g. "Decrypt with aws-kms://alias/pii#v2").
pub(crate) fn map<E, R>(provider: &str, error: SdkError<E, R>, what: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let mapped = match &error {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or("");
            let detail = format!("{what}: {code}: {message}");
            match code {
                "NotFoundException" | "ResourceNotFoundException" => {
                    Error::not_found(provider, what.to_string())
                }
                "DisabledException" | "KMSInvalidStateException" => Error::key_disabled(what),
                "InvalidCiphertextException" | "IncorrectKeyException" => Error::InvalidCiphertext,
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException" => Error::permission_denied(
                    provider,
                    format!(
                        "{detail}; grant the missing kms:/secretsmanager: action in the IAM policy"
                    ),
                ),
                "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => {
                    Error::throttled(provider, detail)
                }
                "KMSInternalException"
                | "DependencyTimeoutException"
                | "InternalServiceError"
                | "InternalFailure"
                | "ServiceUnavailable" => Error::unavailable(provider, detail),
                "AlreadyExistsException" | "ResourceExistsException" => {
                    Error::already_exists(provider, what)
                }
                _ => Error::invalid_input(detail),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Error::unavailable(provider, format!("{what}: {}", error_chain(&error)))
        }
        _ => Error::misconfigured(format!("{what}: {}", error_chain(&error))),
    };
    mapped.with_source(error)
}
