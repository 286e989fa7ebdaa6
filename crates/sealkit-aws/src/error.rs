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
        SdkError::DispatchFailure(_) if lacks_credentials(&error_chain(&error)) => {
            Error::misconfigured(format!(
                "{what}: no AWS credentials were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a web identity, or run with an instance or task role): {}",
                error_chain(&error)
            ))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Error::unavailable(provider, format!("{what}: {}", error_chain(&error)))
        }
        _ => Error::misconfigured(format!("{what}: {}", error_chain(&error))),
    };
    mapped.with_source(error)
}

/// Whether a dispatch failure is the credential chain finding nothing: a configuration problem
/// that waiting does not fix (the SDK reports it only as text).
fn lacks_credentials(chain: &str) -> bool {
    chain.contains("no credentials found in chain")
        || chain.contains("the credential provider was not enabled")
}

#[cfg(test)]
mod tests {
    use aws_sdk_kms::error::{ErrorMetadata, SdkError};
    use aws_sdk_kms::operation::create_alias::CreateAliasError;
    use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError;
    use aws_sdk_kms::types::error::{AlreadyExistsException, DisabledException};
    use sealkit_core::Error;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    #[test]
    fn disabled_keys_name_the_key_and_keep_the_sdk_message_as_the_source() {
        let disabled = DisabledException::builder()
            .message("arn:aws:kms:us-east-1:1:key/k is disabled.")
            .meta(meta(
                "DisabledException",
                "arn:aws:kms:us-east-1:1:key/k is disabled.",
            ))
            .build();
        let error = SdkError::service_error(GenerateDataKeyError::DisabledException(disabled), ());
        match super::map("aws-kms", error, "GenerateDataKey with aws-kms://alias/pii") {
            Error::KeyDisabled { key, source } => {
                assert_eq!(key, "GenerateDataKey with aws-kms://alias/pii");
                let source = source.expect("the SDK error is kept");
                assert!(
                    sealkit_core::error_chain(source.as_ref()).contains("is disabled"),
                    "{source}"
                );
            }
            other => panic!("expected KeyDisabled, got {other:?}"),
        }
    }

    #[test]
    fn already_exists_is_its_own_kind() {
        let exists = AlreadyExistsException::builder()
            .message("alias/pii already exists")
            .meta(meta("AlreadyExistsException", "alias/pii already exists"))
            .build();
        let error = SdkError::service_error(CreateAliasError::AlreadyExistsException(exists), ());
        let mapped = super::map("aws-kms", error, "CreateAlias alias/pii");
        assert!(matches!(mapped, Error::AlreadyExists { .. }), "{mapped:?}");
        assert!(std::error::Error::source(&mapped).is_some());
    }
}
